//! Debian nginx (`/usr/sbin/nginx`) as a child process, for forward-auth tests
//! (`auth_request` in front of an upstream, asking the gateway's `/oauth2/auth`).
//!
//! [`Nginx::start`] writes the given `http { ... }` body into a complete config in a fresh
//! tempdir — its own prefix, pid file, error and access logs and temp dirs, `daemon off;`,
//! `master_process off;` (one process, so killing its pid stops everything) — starts
//! `nginx -p <dir> -c <dir>/nginx.conf -e <dir>/error.log` and waits (bounded) until its
//! port accepts connections. `@LISTEN@` in the server text is replaced by
//! `127.0.0.1:<port>`. The process is killed on drop; if the test is panicking, the
//! error log is printed.
//!
//! [`nginx_available`] says whether the binary is there; tests skip (with a message)
//! when it is not, except in CI (`CI=true`), where a missing nginx is a failure.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use super::process::{wait_for_listener, Listening};

/// The Debian package's binary (`apt-get install nginx`; `.ci/run` installs it).
pub const NGINX_BIN: &str = "/usr/sbin/nginx";

/// How long nginx may take to accept connections.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// `true` if nginx is installed. If not: panics in CI (`CI=true`), else prints why the
/// caller is skipping and returns `false`.
pub fn nginx_available(test: &str) -> bool {
    if Path::new(NGINX_BIN).exists() {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{NGINX_BIN} is missing; CI must install nginx (see .ci/run)");
    }
    eprintln!("SKIPPED {test}: {NGINX_BIN} is not installed (apt-get install nginx)");
    false
}

/// A running nginx. Killed (SIGKILL) on drop.
pub struct Nginx {
    child: Child,
    addr: SocketAddr,
    dir: TempDir,
}

impl Nginx {
    /// Starts nginx listening on `addr` with `server_block` (one or more `server { ... }`
    /// blocks; `@LISTEN@` becomes `addr`) inside the generated `http { ... }`. Returns
    /// `Err` with the error log if nginx exits before it is ready (e.g. the port was taken
    /// in the meantime); panics if it neither exits nor listens within 20 s.
    pub async fn start(addr: SocketAddr, server_block: &str) -> Result<Nginx, String> {
        let dir = tempfile::tempdir().expect("nginx tempdir");
        let d = dir.path().display().to_string();
        for sub in ["client_body", "proxy", "fastcgi", "uwsgi", "scgi", "logs"] {
            std::fs::create_dir_all(dir.path().join(sub)).expect("nginx temp dir");
        }
        let server = server_block.replace("@LISTEN@", &addr.to_string());
        let config = format!(
            r#"daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log info;

events {{
    worker_connections 256;
}}

http {{
    access_log {d}/access.log;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    default_type application/octet-stream;

{server}
}}
"#
        );
        let config_path = dir.path().join("nginx.conf");
        std::fs::write(&config_path, &config).expect("write nginx.conf");
        let error_log = dir.path().join("error.log");
        let stdio_log = std::fs::File::create(dir.path().join("stdio.log")).expect("stdio.log");
        let child = Command::new(NGINX_BIN)
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&config_path)
            .arg("-e")
            .arg(&error_log)
            .stdin(Stdio::null())
            .stdout(Stdio::from(stdio_log.try_clone().expect("clone log")))
            .stderr(Stdio::from(stdio_log))
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {NGINX_BIN}: {e}"));
        let mut nginx = Nginx { child, addr, dir };

        match wait_for_listener(&mut nginx.child, addr, READY_TIMEOUT).await {
            Listening::Yes => Ok(nginx),
            Listening::Exited(status) => Err(format!(
                "nginx exited with {status} before listening\nconfig:\n{config}\n----- logs -----\n{}",
                nginx.logs()
            )),
            Listening::TimedOut => {
                let logs = nginx.logs();
                drop(nginx);
                panic!("nginx did not listen on {addr} within {READY_TIMEOUT:?}\n{logs}");
            }
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>`, no trailing slash.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn url_for(&self, path: &str) -> String {
        format!("{}{path}", self.url())
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("nginx.conf")
    }

    /// nginx's stdout/stderr, error log and access log so far.
    pub fn logs(&self) -> String {
        let read = |name: &str| {
            let bytes = std::fs::read(self.dir.path().join(name)).unwrap_or_default();
            String::from_utf8_lossy(&bytes).into_owned()
        };
        format!(
            "--- stdio ---\n{}--- error.log ---\n{}--- access.log ---\n{}",
            read("stdio.log"),
            read("error.log"),
            read("access.log")
        )
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            eprintln!("----- nginx ({}) -----\n{}\n-----", self.addr, self.logs());
        }
    }
}
