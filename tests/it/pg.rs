//! A private PostgreSQL cluster for one test, from Debian's `postgresql` package (`.ci/run`
//! installs it): `initdb` into a temporary directory, the server on a unix socket in it and
//! no TCP port at all, stopped, killed and restarted by the test. PostgreSQL refuses to run
//! as root, so under root (CI) the cluster belongs to a unix user the test creates.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::users::TestUser;

pub struct Pg {
    _t: tempfile::TempDir,
    pub data: PathBuf,
    pub sock: PathBuf,
    bin: PathBuf,
    user: Option<TestUser>,
    /// With TLS: the loopback TCP port it also listens on (its socket is named after it).
    pub port: Option<u16>,
}

/// The server's programs: `pg_config --bindir` when it is on PATH, else the newest of
/// Debian's `/usr/lib/postgresql/N/bin`.
fn bindir() -> PathBuf {
    if let Ok(o) = Command::new("pg_config").arg("--bindir").output()
        && o.status.success()
    {
        let p = PathBuf::from(String::from_utf8_lossy(&o.stdout).trim());
        if p.join("initdb").exists() {
            return p;
        }
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_string_lossy().parse::<u32>().ok()?;
            let b = e.path().join("bin");
            b.join("initdb").exists().then_some((v, b))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, b)| b).expect(
        "PostgreSQL's server is not installed (Debian: apt-get install postgresql; .ci/run does it)",
    )
}

impl Pg {
    /// A new cluster, running; `None` (saying so) only where a needed unix user cannot be
    /// made (not root: then the cluster is the caller's own and it always runs).
    pub fn start() -> Self {
        Self::start_with(None)
    }

    /// A cluster that also listens on a loopback TCP port with TLS only there
    /// (`hostssl`), presenting `cert` and `key` (PEM).
    pub fn start_tls(cert: &str, key: &str) -> Self {
        Self::start_with(Some((cert, key)))
    }

    fn start_with(tls: Option<(&str, &str)>) -> Self {
        let t = tempfile::tempdir().unwrap();
        // The cluster's user must reach its directory.
        std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let user = if nix::unistd::geteuid().is_root() {
            Some(TestUser::create("pg", &["-U"]).unwrap())
        } else {
            None
        };
        let data = t.path().join("data");
        let sock = t.path().join("sock");
        std::fs::create_dir(&sock).unwrap();
        if let Some(u) = &user {
            nix::unistd::chown(
                &sock,
                Some(nix::unistd::Uid::from_raw(u.uid)),
                Some(nix::unistd::Gid::from_raw(u.gid)),
            )
            .unwrap();
            std::fs::create_dir(&data).unwrap();
            nix::unistd::chown(
                &data,
                Some(nix::unistd::Uid::from_raw(u.uid)),
                Some(nix::unistd::Gid::from_raw(u.gid)),
            )
            .unwrap();
        }
        let port = tls.map(|_| {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        });
        let pg = Pg {
            data,
            sock,
            bin: bindir(),
            user,
            _t: t,
            port,
        };
        let o = pg
            .tool("initdb")
            .args([
                "-U",
                "scopehold",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
                "-D",
            ])
            .arg(&pg.data)
            .output()
            .unwrap();
        assert!(o.status.success(), "initdb: {}", text(&o));
        if let Some((cert, key)) = tls {
            for (name, pem) in [("server.crt", cert), ("server.key", key)] {
                let p = pg.data.join(name);
                std::fs::write(&p, pem).unwrap();
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
                if let Some(u) = &pg.user {
                    nix::unistd::chown(
                        &p,
                        Some(nix::unistd::Uid::from_raw(u.uid)),
                        Some(nix::unistd::Gid::from_raw(u.gid)),
                    )
                    .unwrap();
                }
            }
            // TCP connections must be TLS: a plain one is refused by the server itself.
            std::fs::write(
                pg.data.join("pg_hba.conf"),
                "local all all trust\nhostssl all all 127.0.0.1/32 trust\nhostnossl all all 0.0.0.0/0 reject\n",
            )
            .unwrap();
        }
        pg.start_again();
        pg
    }

    fn tool(&self, name: &str) -> Command {
        let p = self.bin.join(name);
        let mut c = match &self.user {
            Some(u) => u.command(&p),
            None => Command::new(&p),
        };
        c.env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("LC_ALL", "C");
        c
    }

    /// Starts the server (again), waiting until it accepts connections.
    pub fn start_again(&self) {
        let o = self
            .tool("pg_ctl")
            .arg("-D")
            .arg(&self.data)
            .arg("-l")
            .arg(self.data.join("server.log"))
            .arg("-o")
            .arg(match self.port {
                None => format!(
                    "-k {} -c listen_addresses='' -c max_connections=50",
                    self.sock.display()
                ),
                Some(port) => format!(
                    "-k {} -p {port} -c listen_addresses=127.0.0.1 -c max_connections=50 -c ssl=on",
                    self.sock.display()
                ),
            })
            .args(["-w", "-t", "60", "start"])
            .output()
            .unwrap();
        assert!(o.status.success(), "pg_ctl start: {}", text(&o));
    }

    /// Stops the server (fast: sessions are ended, as an operator's restart does).
    pub fn stop(&self) {
        let o = self
            .tool("pg_ctl")
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "fast", "-w", "stop"])
            .output()
            .unwrap();
        assert!(o.status.success(), "pg_ctl stop: {}", text(&o));
    }

    /// `postgres://` URL of the cluster's `postgres` database as the `scopehold` role.
    pub fn url(&self) -> String {
        format!(
            "postgres://scopehold@/postgres?host={}&port={}",
            self.sock.display(),
            self.port.unwrap_or(5432)
        )
    }

    /// The TLS listener's URL (a cluster made by [`Pg::start_tls`]).
    pub fn tls_url(&self) -> String {
        format!(
            "postgres://scopehold@127.0.0.1:{}/postgres?sslmode=require",
            self.port.expect("a TLS cluster")
        )
    }

    /// Runs `sql` with psql; its output, unaligned and without headers.
    pub fn sql(&self, sql: &str) -> String {
        let o = Command::new(self.bin.join("psql"))
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .arg("-h")
            .arg(&self.sock)
            .args(["-p", &self.port.unwrap_or(5432).to_string()])
            .args([
                "-U",
                "scopehold",
                "-d",
                "postgres",
                "-v",
                "ON_ERROR_STOP=1",
                "-Atc",
                sql,
            ])
            .output()
            .unwrap();
        assert!(o.status.success(), "psql {sql}: {}", text(&o));
        String::from_utf8(o.stdout).unwrap().trim().to_string()
    }

    #[allow(dead_code)]
    pub fn data_dir(&self) -> &Path {
        &self.data
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        let _ = self
            .tool("pg_ctl")
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "-w", "stop"])
            .output();
    }
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}
