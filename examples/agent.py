#!/usr/bin/env python3
"""A minimal ScopeHold agent in Python, standard library only.

    SCOPEHOLD_TOKEN=shk_... python3 examples/agent.py openai/prod demo

Resolves one key over the daemon's unix socket and uses it without printing it. The socket
is found as the `scopehold` CLI finds it: $SCOPEHOLD_SOCKET, else
$XDG_RUNTIME_DIR/scopehold/scopehold.sock, else scopehold.sock in the state directory
($SCOPEHOLD_HOME, else $XDG_DATA_HOME/scopehold, else ~/.local/share/scopehold). Without
SCOPEHOLD_TOKEN the daemon takes the caller for the member of its uid, if there is one.
"""
import http.client
import json
import os
import socket
import sys


def env(name):
    """A variable's value, or None when it is unset or empty (as the CLI treats them)."""
    v = os.environ.get(name)
    return v if v else None


def state_dir():
    if env("SCOPEHOLD_HOME"):
        return env("SCOPEHOLD_HOME")
    if env("XDG_DATA_HOME"):
        return os.path.join(env("XDG_DATA_HOME"), "scopehold")
    if env("HOME"):
        return os.path.join(env("HOME"), ".local", "share", "scopehold")
    raise SystemExit("scopehold: neither SCOPEHOLD_SOCKET, SCOPEHOLD_HOME, XDG_DATA_HOME nor HOME is set")


def socket_path():
    """The daemon's socket, exactly as src/daemon/mod.rs `socket_path` finds it."""
    if env("SCOPEHOLD_SOCKET"):
        return env("SCOPEHOLD_SOCKET")
    if env("XDG_RUNTIME_DIR"):
        return os.path.join(env("XDG_RUNTIME_DIR"), "scopehold", "scopehold.sock")
    return os.path.join(state_dir(), "scopehold.sock")


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("scopehold")
        self.path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self.path)


def resolve(secret, project):
    path = socket_path()
    conn = UnixHTTPConnection(path)
    body = json.dumps({"secret": secret, "project": project})
    headers = {"Content-Type": "application/json"}
    token = env("SCOPEHOLD_TOKEN")
    if token:
        headers["Authorization"] = "Bearer " + token
    try:
        conn.request("POST", "/v1/resolve", body, headers)
        resp = conn.getresponse()
        raw = resp.read()
    except OSError as e:
        raise SystemExit(f"scopehold: cannot reach the daemon at {path}: {e} (is `scopehold daemon` running?)")
    answer = json.loads(raw)
    if resp.status != 200:
        err = answer.get("error", {})
        raise SystemExit(f"scopehold: {resp.status} {err.get('code')}: {err.get('message')}")
    return answer


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit("usage: agent.py PROVIDER/NAME PROJECT")
    secret, project = sys.argv[1], sys.argv[2]
    a = resolve(secret, project)
    # Use the key (here: only its length; an agent would send it to the provider).
    print(f"resolved {secret} version {a['version']} ({len(a['value'])} bytes), audit event {a['event']}")
