#!/usr/bin/env bash
# Lays out the RustSec advisory database for `cargo deny --offline check`, from the snapshot
# committed beside this script. CI reaches only package registries, so it cannot fetch the
# database; the snapshot is the whole database (crates/, rust/) at the commit below, stored
# as one archive rather than 1,200 files.
#
#   .ci/advisory-db.sh DIR     # makes DIR/advisory-db-3157b0e258782691 (cargo-deny's name for
#                              # the default URL), a git repository whose HEAD carries the
#                              # snapshot's own date, so cargo-deny reports its true age
#
# To refresh (where github.com is reachable):
#   git clone https://github.com/rustsec/advisory-db /tmp/adb && cd /tmp/adb &&
#   git archive --format=tar HEAD crates rust LICENSE.txt | gzip -9n > .ci/rustsec-advisory-db.tar.gz
# then update SNAPSHOT_COMMIT, SNAPSHOT_DATE and SNAPSHOT_SHA256 below.
set -euo pipefail
SNAPSHOT_COMMIT=bf5c0d245a92671908518d7e765914d437954ed6
SNAPSHOT_DATE=2026-08-21T08:28:40+02:00
SNAPSHOT_SHA256=6554a3350b9cfd0525a20b2d08db52a26ede5d686729f6c00b4466e41030723f
here=$(cd "$(dirname "$0")" && pwd)
archive=$here/rustsec-advisory-db.tar.gz
echo "$SNAPSHOT_SHA256  $archive" | sha256sum -c --quiet -
db=$1/advisory-db-3157b0e258782691
rm -rf "$db"
mkdir -p "$db"
tar -xzf "$archive" -C "$db"
cd "$db"
git init -q
git add -A
GIT_AUTHOR_DATE=$SNAPSHOT_DATE GIT_COMMITTER_DATE=$SNAPSHOT_DATE \
  git -c user.name=scopehold-ci -c user.email=ci@scopehold.invalid \
  commit -q -m "rustsec/advisory-db snapshot $SNAPSHOT_COMMIT"
echo "advisory database: rustsec/advisory-db $SNAPSHOT_COMMIT of $SNAPSHOT_DATE"
