//! Child processes other than the gateway (e.g. the node test IdP, which prints
//! `IDP_READY http://127.0.0.1:<port>` when it is ready).

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Sends a signal (`"TERM"`, `"INT"`, `"KILL"`, ...) to `pid` with `kill(1)`.
pub fn signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{signal} {pid} failed: {status}");
}

/// Polls `child` until it exits or `timeout` passes.
pub async fn wait_exit(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A child process whose stdout and stderr are captured into memory. Killed on drop;
/// if the test is panicking, its output is printed (the test harness shows it).
pub struct ChildProcess {
    name: String,
    child: Child,
    output: Arc<Mutex<String>>,
}

impl ChildProcess {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the process wrote to stdout and stderr so far (interleaved by line).
    pub fn output(&self) -> String {
        self.output.lock().unwrap().clone()
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        signal(self.pid(), "TERM");
    }

    /// Waits (bounded) for the process to exit.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        wait_exit(&mut self.child, timeout).await
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "----- output of {} (pid {}) -----\n{}\n-----",
                self.name,
                self.child.id(),
                self.output()
            );
        }
    }
}

fn pump(
    stream: impl Read + Send + 'static,
    output: Arc<Mutex<String>>,
    prefix: Option<(String, tokio::sync::mpsc::UnboundedSender<String>)>,
) {
    std::thread::spawn(move || {
        let mut ready = prefix;
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            {
                let mut out = output.lock().unwrap();
                out.push_str(&line);
                out.push('\n');
            }
            if let Some((prefix, tx)) = &ready {
                if let Some(rest) = line.trim_start().strip_prefix(prefix.as_str()) {
                    let _ = tx.send(rest.trim().to_string());
                    ready = None;
                }
            }
        }
    });
}

/// Spawns `cmd` (stdin closed, stdout and stderr captured) and waits until a stdout line
/// starts with `prefix`; returns the process and the rest of that line, trimmed.
/// Panics with the captured output if the process exits first or `timeout` passes.
///
/// ```ignore
/// let mut cmd = Command::new("node");
/// cmd.arg("tests/idp/server.js");
/// let (idp, url) = spawn_and_wait_for_line(cmd, "IDP_READY", Duration::from_secs(30)).await;
/// ```
pub async fn spawn_and_wait_for_line(
    cmd: Command,
    prefix: &str,
    timeout: Duration,
) -> (ChildProcess, String) {
    try_spawn_and_wait_for_line(cmd, prefix, timeout)
        .await
        .unwrap_or_else(|why| panic!("{why}"))
}

/// Like [`spawn_and_wait_for_line`], but reports a failure instead of panicking (the
/// process is killed), so a caller can try again.
pub async fn try_spawn_and_wait_for_line(
    mut cmd: Command,
    prefix: &str,
    timeout: Duration,
) -> Result<(ChildProcess, String), String> {
    let name = format!("{:?}", cmd.get_program());
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {name}: {e}"));
    let output = Arc::new(Mutex::new(String::new()));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    pump(
        child.stdout.take().unwrap(),
        output.clone(),
        Some((prefix.to_string(), tx)),
    );
    pump(child.stderr.take().unwrap(), output.clone(), None);
    let process = ChildProcess {
        name: name.clone(),
        child,
        output,
    };
    match tokio::time::timeout(timeout, rx.recv()).await {
        Ok(Some(rest)) => Ok((process, rest)),
        Ok(None) => Err(format!(
            "{name} closed stdout before printing {prefix:?}; output:\n{}",
            process.output()
        )),
        Err(_) => Err(format!(
            "{name} did not print {prefix:?} within {timeout:?}; output:\n{}",
            process.output()
        )),
    }
}

/// How a child server's start ended.
pub enum Listening {
    Yes,
    /// It exited first (e.g. its port was taken).
    Exited(ExitStatus),
    TimedOut,
}

/// Waits (bounded) until `addr` accepts connections or `child` exits.
pub async fn wait_for_listener(
    child: &mut Child,
    addr: std::net::SocketAddr,
    timeout: Duration,
) -> Listening {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Listening::Exited(status);
        }
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Listening::Yes;
        }
        if Instant::now() >= deadline {
            return Listening::TimedOut;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}
