//! The gateway under test, two ways:
//!
//! - [`Gateway`]: the real `portcullis` binary as a child process — for tests that read
//!   its log (tracing output is process-wide, so only a process has a log of its own),
//!   send it signals, check its exit status or its command line, or measure its memory.
//! - [`InProcessGateway`]: the library's `serve_on` on this test's tokio runtime, on a
//!   listener bound to `127.0.0.1:0` before the config is written (so no port race) —
//!   for everything else; no process start-up. It stops when dropped.
//!
//! Both answer [`GatewayAddr`] (`url()`, `url_for()`, `addr()`), so a test switches by
//! changing its constructor.
//!
//! For the process:
//! //! The config is written to a fresh tempdir; stdout and stderr go to `gateway.log` in the
//! same tempdir. Placeholders in the config text are replaced before writing:
//!
//! - `@LISTEN@` — `127.0.0.1:<free port>` picked at run time,
//! - `@PORT@` — that port,
//! - `@PUBLIC_URL@` — `http(s)://127.0.0.1:<port>` (https when `tls_cert_file` is set),
//! - `@DIR@` — the tempdir (for cert files, secret files, ...).
//!
//! With `@LISTEN@` the harness retries on another port if the gateway reports the
//! address in use (the port was released between picking and binding). Without it, the
//! address is read from `listen = "..."` in `[server]`, or given with
//! [`GatewayBuilder::ready_addr`]. Readiness is `GET /healthz` answering 200, polled for
//! at most 20 s.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use std::panic::AssertUnwindSafe;

use futures_util::FutureExt;
use reqwest::StatusCode;

use super::{bin, free_port, process, wait_until};

/// Where a gateway serves: the same for [`Gateway`] and [`InProcessGateway`].
pub trait GatewayAddr {
    fn addr(&self) -> SocketAddr;

    /// `http` or `https`.
    fn scheme(&self) -> &'static str;

    /// `http://127.0.0.1:<port>` or `https://...`, no trailing slash.
    fn url(&self) -> String {
        format!("{}://{}", self.scheme(), self.addr())
    }

    /// `url() + path`.
    fn url_for(&self, path: &str) -> String {
        format!("{}{path}", self.url())
    }
}

/// Builder for a gateway process with extra arguments, environment or files.
pub struct GatewayBuilder {
    config: String,
    subcommand: Option<String>,
    args: Vec<String>,
    envs: Vec<(String, String)>,
    ready_addr: Option<SocketAddr>,
    https: Option<bool>,
    ready_timeout: Duration,
    dir: TempDir,
}

impl GatewayBuilder {
    pub fn new(config_toml: &str) -> Self {
        GatewayBuilder {
            config: config_toml.to_string(),
            subcommand: Some("run".to_string()),
            args: Vec::new(),
            envs: Vec::new(),
            ready_addr: None,
            https: None,
            ready_timeout: Duration::from_secs(20),
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    /// The tempdir the config will be written to (the same as `@DIR@`), so a test can
    /// put certificates or secret files there before starting.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Adds a command-line argument after `--config <file>`.
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Sets an environment variable for the gateway process.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.envs.push((key.into(), value.into()));
        self
    }

    /// Starts the binary as `portcullis --config <file>` (no `run` subcommand).
    pub fn without_subcommand(mut self) -> Self {
        self.subcommand = None;
        self
    }

    /// Polls readiness on this address instead of the configured listen address (for
    /// `--listen` / env overrides).
    pub fn ready_addr(mut self, addr: SocketAddr) -> Self {
        self.ready_addr = Some(addr);
        self
    }

    /// Forces the scheme used for readiness and [`Gateway::url`] (default: https iff the
    /// config or env sets `tls_cert_file`).
    pub fn https(mut self, https: bool) -> Self {
        self.https = Some(https);
        self
    }

    pub fn ready_timeout(mut self, timeout: Duration) -> Self {
        self.ready_timeout = timeout;
        self
    }

    /// Writes the config, spawns the gateway and waits for `/healthz`. Panics with the
    /// gateway's log if it exits or is not ready in time.
    pub async fn start(self) -> Gateway {
        let uses_placeholder = self.config.contains("@LISTEN@")
            || self.config.contains("@PORT@")
            || self.config.contains("@PUBLIC_URL@");
        let https = self.https.unwrap_or_else(|| {
            config_sets(&self.config, "tls_cert_file")
                || self
                    .envs
                    .iter()
                    .any(|(k, _)| k.eq_ignore_ascii_case("PORTCULLIS__SERVER__TLS_CERT_FILE"))
        });
        let scheme = if https { "https" } else { "http" };
        let config_path = self.dir.path().join("portcullis.toml");
        let log_path = self.dir.path().join("gateway.log");
        let attempts = if uses_placeholder { 3 } else { 1 };

        for attempt in 1..=attempts {
            let port = free_port();
            let listen = format!("127.0.0.1:{port}");
            let config = self
                .config
                .replace("@LISTEN@", &listen)
                .replace("@PORT@", &port.to_string())
                .replace("@PUBLIC_URL@", &format!("{scheme}://{listen}"))
                .replace("@DIR@", &self.dir.path().display().to_string());
            std::fs::write(&config_path, &config).expect("write config");

            let addr = match self.ready_addr {
                Some(addr) => addr,
                None => configured_listen(&config).unwrap_or_else(|| {
                    panic!("no listen address: use @LISTEN@ or ready_addr()\n{config}")
                }),
            };

            let log = std::fs::File::create(&log_path).expect("create gateway.log");
            let mut cmd = Command::new(bin());
            if let Some(sub) = &self.subcommand {
                cmd.arg(sub);
            }
            cmd.arg("--config").arg(&config_path).args(&self.args);
            for (key, _) in std::env::vars() {
                if key.starts_with("PORTCULLIS") || key == "RUST_LOG" {
                    cmd.env_remove(key);
                }
            }
            cmd.env("NO_COLOR", "1")
                .envs(self.envs.iter().map(|(k, v)| (k, v)))
                .stdin(Stdio::null())
                .stdout(Stdio::from(log.try_clone().expect("clone log file")))
                .stderr(Stdio::from(log));
            let child = cmd.spawn().expect("spawn portcullis");

            let mut gateway = Gateway {
                child,
                addr,
                scheme,
                log_path: log_path.clone(),
                config_path: config_path.clone(),
                dir: None,
            };
            match gateway.wait_ready(self.ready_timeout).await {
                Ok(()) => {
                    gateway.dir = Some(self.dir);
                    return gateway;
                }
                Err(reason) => {
                    let log = gateway.log_text();
                    let in_use = log.to_ascii_lowercase().contains("in use");
                    if uses_placeholder && in_use && attempt < attempts {
                        // Another process took the port between picking and binding.
                        drop(gateway);
                        continue;
                    }
                    // Keep the tempdir alive for the message, then fail.
                    let message = format!(
                        "gateway not ready: {reason}\nconfig:\n{config}\n----- gateway log -----\n{log}-----"
                    );
                    drop(gateway);
                    panic!("{message}");
                }
            }
        }
        unreachable!()
    }
}

/// Whether `key = ...` appears uncommented in the config text.
fn config_sets(config: &str, key: &str) -> bool {
    config.lines().any(|line| {
        let line = line.trim_start();
        line.strip_prefix(key)
            .is_some_and(|rest| rest.trim_start().starts_with('='))
    })
}

/// `listen = "..."` inside `[server]`.
fn configured_listen(config: &str) -> Option<SocketAddr> {
    let mut in_server = false;
    for line in config.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_server = line == "[server]";
            continue;
        }
        if !in_server {
            continue;
        }
        if let Some(rest) = line.strip_prefix("listen") {
            let value = rest.trim_start().strip_prefix('=')?.trim();
            return value.trim_matches('"').parse().ok();
        }
    }
    None
}

/// A running gateway. Killed (SIGKILL) on drop unless already stopped; if the test is
/// panicking, the gateway's log is printed.
pub struct Gateway {
    child: Child,
    addr: SocketAddr,
    scheme: &'static str,
    log_path: PathBuf,
    config_path: PathBuf,
    dir: Option<TempDir>,
}

impl Gateway {
    /// Starts `portcullis run --config <file>` with this config (see module docs for
    /// placeholders) and waits until it serves `/healthz`.
    pub async fn start(config_toml: &str) -> Gateway {
        GatewayBuilder::new(config_toml).start().await
    }

    pub fn builder(config_toml: &str) -> GatewayBuilder {
        GatewayBuilder::new(config_toml)
    }

    /// `http://127.0.0.1:<port>` or `https://...`, no trailing slash.
    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme, self.addr)
    }

    /// `url() + path`.
    pub fn url_for(&self, path: &str) -> String {
        format!("{}{path}", self.url())
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// The tempdir holding the config and the log.
    pub fn dir(&self) -> &Path {
        self.config_path.parent().unwrap()
    }

    /// Everything the gateway wrote to stdout and stderr so far.
    pub fn log_text(&self) -> String {
        let bytes = std::fs::read(&self.log_path).unwrap_or_default();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// Polls the log until `predicate` holds for it (bounded); returns the log text.
    pub async fn wait_for_log(
        &self,
        what: &str,
        timeout: Duration,
        predicate: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let log = self.log_text();
            if predicate(&log) {
                return log;
            }
            if Instant::now() >= deadline {
                panic!("gateway log never showed {what} within {timeout:?}; log:\n{log}");
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Sends SIGTERM (graceful shutdown).
    pub fn terminate(&self) {
        process::signal(self.pid(), "TERM");
    }

    /// Waits (bounded) for the process to exit.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        process::wait_exit(&mut self.child, timeout).await
    }

    /// SIGTERM, then waits up to 40 s for the exit status (panics with the log if the
    /// gateway does not exit).
    pub async fn stop(&mut self) -> ExitStatus {
        if let Some(status) = self.child.try_wait().expect("try_wait") {
            return status;
        }
        self.terminate();
        match self.wait_exit(Duration::from_secs(40)).await {
            Some(status) => status,
            None => panic!(
                "gateway did not exit within 40 s of SIGTERM; log:\n{}",
                self.log_text()
            ),
        }
    }

    async fn wait_ready(&mut self, timeout: Duration) -> Result<(), String> {
        let url = self.url_for("/healthz");
        let mut exited = None;
        let ready = poll_healthz(&url, timeout, Duration::from_millis(50), || {
            exited = self.child.try_wait().expect("try_wait");
            exited.is_some()
        })
        .await?;
        match exited {
            Some(status) if !ready => Err(format!("gateway exited early with {status}")),
            _ => Ok(()), // ready (a gone() that said "exited" always set the status)
        }
    }
}

impl GatewayAddr for Gateway {
    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn scheme(&self) -> &'static str {
        self.scheme
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() && self.dir.is_some() {
            eprintln!(
                "----- gateway log ({}) -----\n{}\n-----",
                self.log_path.display(),
                self.log_text()
            );
        }
    }
}

/// Polls `/readyz` until OIDC discovery has loaded (bounded).
pub async fn wait_for_readyz(gateway: &impl GatewayAddr) {
    let client = super::client();
    let url = gateway.url_for("/readyz");
    wait_until("gateway /readyz = 200", Duration::from_secs(20), || {
        let request = client.get(&url).send();
        async move {
            match request.await {
                Ok(resp) if resp.status() == StatusCode::OK => Some(()),
                _ => None,
            }
        }
    })
    .await;
}

/// Starts a gateway (fixed port in `toml`) and waits until it is ready; `None` if the port
/// was taken in the meantime (any other failure panics as usual).
pub async fn try_start_gateway(toml: &str) -> Option<Gateway> {
    match AssertUnwindSafe(Gateway::start(toml)).catch_unwind().await {
        Ok(gateway) => {
            wait_for_readyz(&gateway).await;
            Some(gateway)
        }
        Err(panic) => {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            if message.to_ascii_lowercase().contains("in use") {
                eprintln!("the gateway's port was taken; starting again on another one");
                None
            } else {
                std::panic::resume_unwind(panic)
            }
        }
    }
}

// ----- the gateway in-process ------------------------------------------------------------

/// A loopback listener for an [`InProcessGateway`], bound before the gateway's config is
/// written, so the port can go into other configs first (an IdP's redirect URIs) and
/// nobody else can take it in between.
pub struct GatewayListener {
    listener: tokio::net::TcpListener,
    addr: SocketAddr,
}

impl GatewayListener {
    /// Binds `127.0.0.1:0`.
    pub async fn bind() -> Self {
        Self::bind_to("127.0.0.1:0".parse().unwrap()).await
    }

    pub async fn bind_to(addr: SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .unwrap_or_else(|e| panic!("bind {addr} for the in-process gateway: {e}"));
        let addr = listener.local_addr().expect("local_addr");
        GatewayListener { listener, addr }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }
}

/// Builder for an [`InProcessGateway`]: the same config text and placeholders as
/// [`GatewayBuilder`] (`@LISTEN@`, `@PORT@`, `@PUBLIC_URL@`, `@DIR@`), read with the
/// library's `Config::from_toml_with_env` (so `PORTCULLIS__*` variables of the test
/// process apply — the process harness removes them instead).
pub struct InProcessGatewayBuilder {
    config: String,
    listener: Option<GatewayListener>,
    https: Option<bool>,
    dir: TempDir,
}

impl InProcessGatewayBuilder {
    pub fn new(config_toml: &str) -> Self {
        InProcessGatewayBuilder {
            config: config_toml.to_string(),
            listener: None,
            https: None,
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    /// The tempdir that `@DIR@` names (for certificates or secret files); it lives as long
    /// as the gateway.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Serve on this listener (default: a fresh `127.0.0.1:0`, or the config's fixed
    /// `listen` address when it uses no placeholder).
    pub fn listener(mut self, listener: GatewayListener) -> Self {
        self.listener = Some(listener);
        self
    }

    /// Forces the scheme of [`GatewayAddr::url`] (default: https iff the config sets
    /// `tls_cert_file`).
    pub fn https(mut self, https: bool) -> Self {
        self.https = Some(https);
        self
    }

    /// Parses the config, spawns the gateway on the current tokio runtime and waits until
    /// it serves `/healthz`. Panics with the reason if the config is refused or the
    /// gateway stops or is not ready in time.
    pub async fn start(self) -> InProcessGateway {
        portcullis::install_crypto_provider();
        keep_signals_fatal();
        let uses_placeholder = self.config.contains("@LISTEN@")
            || self.config.contains("@PORT@")
            || self.config.contains("@PUBLIC_URL@");
        let listener = match self.listener {
            Some(listener) => listener,
            None if uses_placeholder => GatewayListener::bind().await,
            None => {
                let addr = configured_listen(&self.config).unwrap_or_else(|| {
                    panic!(
                        "no listen address: use @LISTEN@ or a listener()\n{}",
                        self.config
                    )
                });
                GatewayListener::bind_to(addr).await
            }
        };
        let https = self
            .https
            .unwrap_or_else(|| config_sets(&self.config, "tls_cert_file"));
        let scheme = if https { "https" } else { "http" };
        let addr = listener.addr;
        let config = self
            .config
            .replace("@LISTEN@", &addr.to_string())
            .replace("@PORT@", &addr.port().to_string())
            .replace("@PUBLIC_URL@", &format!("{scheme}://{addr}"))
            .replace("@DIR@", &self.dir.path().display().to_string());
        let parsed = portcullis::config::Config::from_toml_with_env(
            &config,
            &portcullis::config::CliOverrides::default(),
        )
        .unwrap_or_else(|e| panic!("the gateway refused its config: {e}\nconfig:\n{config}"));
        let task = tokio::spawn(async move {
            portcullis::serve_on(listener.listener, parsed, None)
                .await
                .map_err(|e| e.to_string())
        });
        let mut gateway = InProcessGateway {
            addr,
            scheme,
            task,
            _dir: self.dir,
        };
        if let Err(reason) = gateway.wait_ready(Duration::from_secs(20)).await {
            panic!("in-process gateway not ready: {reason}\nconfig:\n{config}");
        }
        gateway
    }
}

/// The gateway served by the library on this test's runtime. Aborted when dropped (and
/// in any case when the test's runtime ends).
pub struct InProcessGateway {
    addr: SocketAddr,
    scheme: &'static str,
    task: tokio::task::JoinHandle<Result<(), String>>,
    _dir: TempDir,
}

impl InProcessGateway {
    /// Starts the gateway with this config (see [`InProcessGatewayBuilder`]) and waits
    /// until it serves `/healthz`.
    pub async fn start(config_toml: &str) -> InProcessGateway {
        InProcessGatewayBuilder::new(config_toml).start().await
    }

    pub fn builder(config_toml: &str) -> InProcessGatewayBuilder {
        InProcessGatewayBuilder::new(config_toml)
    }

    /// `http://127.0.0.1:<port>` or `https://...`, no trailing slash.
    pub fn url(&self) -> String {
        GatewayAddr::url(self)
    }

    /// `url() + path`.
    pub fn url_for(&self, path: &str) -> String {
        GatewayAddr::url_for(self, path)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    async fn wait_ready(&mut self, timeout: Duration) -> Result<(), String> {
        let url = self.url_for("/healthz");
        let task = &self.task;
        if poll_healthz(&url, timeout, Duration::from_millis(20), || {
            task.is_finished()
        })
        .await?
        {
            return Ok(());
        }
        Err(match (&mut self.task).await {
            Ok(Ok(())) => "the gateway stopped serving".to_string(),
            Ok(Err(e)) => format!("the gateway failed: {e}"),
            Err(e) => format!("the gateway task ended: {e}"),
        })
    }
}

/// Polls `GET url` every `interval` until it answers 200 (`Ok(true)`), `gone()` says the
/// gateway has ended (`Ok(false)`), or `timeout` passes (`Err`, naming the last answer).
async fn poll_healthz(
    url: &str,
    timeout: Duration,
    interval: Duration,
    mut gone: impl FnMut() -> bool,
) -> Result<bool, String> {
    let client = super::http::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .expect("readiness client");
    let deadline = Instant::now() + timeout;
    let mut last;
    loop {
        if gone() {
            return Ok(false);
        }
        match client.get(url).send().await {
            Ok(resp) if resp.status() == StatusCode::OK => return Ok(true),
            Ok(resp) => last = format!("GET {url} answered {}", resp.status()),
            Err(e) => last = format!("GET {url} failed: {e}"),
        }
        if Instant::now() >= deadline {
            return Err(format!("not ready within {timeout:?} (last: {last})"));
        }
        tokio::time::sleep(interval).await;
    }
}

impl GatewayAddr for InProcessGateway {
    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn scheme(&self) -> &'static str {
        self.scheme
    }
}

impl Drop for InProcessGateway {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `serve_on` listens for SIGINT and SIGTERM to drain, and a tokio signal listener, once
/// registered, replaces the default action for the whole process: a test binary with an
/// in-process gateway would outlive Ctrl-C. A thread of our own listens too and ends the
/// process the way the default action would.
fn keep_signals_fatal() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("test-signals".to_string())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("signal runtime");
                runtime.block_on(async move {
                    use tokio::signal::unix::{signal, SignalKind};
                    let mut interrupt = signal(SignalKind::interrupt()).expect("SIGINT listener");
                    let mut terminate = signal(SignalKind::terminate()).expect("SIGTERM listener");
                    let _ = ready_tx.send(());
                    let code = tokio::select! {
                        _ = interrupt.recv() => 130,
                        _ = terminate.recv() => 143,
                    };
                    eprintln!("test process: signal received, exiting");
                    std::process::exit(code);
                });
            })
            .expect("spawn the signal thread");
        let _ = ready_rx.recv_timeout(Duration::from_secs(5));
    });
}
