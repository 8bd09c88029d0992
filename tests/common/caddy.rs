//! Debian Caddy (`/usr/bin/caddy`, 2.6) as a child process, for the forward_auth recipe:
//! [`Caddy::start`] runs the given Caddyfile with the environment it reads (`{$NAME}`
//! placeholders), its admin endpoint off and its data and config dirs in a fresh tempdir,
//! and waits (bounded) until its port accepts connections. Killed on drop; its log is
//! printed if the test is panicking.
//!
//! [`caddy_available`] says whether the binary is there; tests skip (with a message) when
//! it is not, except in CI (`CI=true`), where a missing Caddy is a failure.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use super::process::{wait_for_listener, Listening};

pub const CADDY_BIN: &str = "/usr/bin/caddy";

const READY_TIMEOUT: Duration = Duration::from_secs(20);

pub fn caddy_available(test: &str) -> bool {
    if Path::new(CADDY_BIN).exists() {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{CADDY_BIN} is missing; CI must install caddy (see .ci/run)");
    }
    eprintln!("SKIPPED {test}: {CADDY_BIN} is not installed (apt-get install caddy)");
    false
}

pub struct Caddy {
    child: Child,
    addr: SocketAddr,
    dir: TempDir,
}

impl Caddy {
    /// Serves `caddyfile` with `env`; `addr` is where its site listens. `Err` when Caddy
    /// exits first (e.g. the port was taken), with its log.
    pub async fn start(
        addr: SocketAddr,
        caddyfile: &Path,
        env: &[(&str, String)],
    ) -> Result<Caddy, String> {
        let dir = tempfile::tempdir().expect("caddy tempdir");
        let log = std::fs::File::create(dir.path().join("caddy.log")).expect("caddy.log");
        let mut command = Command::new(CADDY_BIN);
        command
            .args(["run", "--adapter", "caddyfile", "--config"])
            .arg(caddyfile)
            .env("CADDY_ADMIN", "off")
            .env("XDG_DATA_HOME", dir.path())
            .env("XDG_CONFIG_HOME", dir.path())
            .env("HOME", dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().expect("clone log")))
            .stderr(Stdio::from(log));
        for (key, value) in env {
            command.env(key, value);
        }
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {CADDY_BIN}: {e}"));
        let mut caddy = Caddy { child, addr, dir };
        match wait_for_listener(&mut caddy.child, addr, READY_TIMEOUT).await {
            Listening::Yes => Ok(caddy),
            Listening::Exited(status) => Err(format!(
                "caddy exited with {status} before listening\n{}",
                caddy.log()
            )),
            Listening::TimedOut => {
                let log = caddy.log();
                drop(caddy);
                panic!("caddy did not listen on {addr} within {READY_TIMEOUT:?}\n{log}");
            }
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn url_for(&self, path: &str) -> String {
        format!("{}{path}", self.url())
    }

    pub fn log(&self) -> String {
        let bytes = std::fs::read(self.dir.path().join("caddy.log")).unwrap_or_default();
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

impl Drop for Caddy {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            eprintln!("----- caddy log -----\n{}\n-----", self.log());
        }
    }
}
