//! Configuration handling of the real binary: `check-config` (effective config with
//! secrets redacted; invalid config = one line on stderr naming the key, exit code 2,
//! no panic), env and CLI overrides, and `run` refusing a bad config.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{bin, free_port, Gateway, SelfSignedCert};

/// A tempdir holding a config file (and any files it refers to).
struct ConfigDir {
    dir: tempfile::TempDir,
}

/// What a finished `portcullis` invocation printed.
#[derive(Debug)]
struct Outcome {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl ConfigDir {
    fn new() -> Self {
        ConfigDir {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, contents).expect("write file");
        path
    }

    /// Runs `portcullis <args...> --config <dir>/portcullis.toml` with `config`, waiting
    /// at most 20 s.
    fn run(&self, args: &[&str], config: &str, envs: &[(&str, &str)]) -> Outcome {
        let config_path = self.write("portcullis.toml", config);
        let mut cmd = Command::new(bin());
        cmd.args(args).arg("--config").arg(&config_path);
        run_command(cmd, self.dir.path(), envs)
    }

    fn check_config(&self, config: &str, envs: &[(&str, &str)]) -> Outcome {
        self.run(&["check-config"], config, envs)
    }
}

/// Runs `cmd` with stdout/stderr to files in `dir` (no pipe deadlocks), bounded by 20 s.
fn run_command(mut cmd: Command, dir: &Path, envs: &[(&str, &str)]) -> Outcome {
    let stdout_path = dir.join("stdout.txt");
    let stderr_path = dir.join("stderr.txt");
    for (key, _) in std::env::vars() {
        if key.starts_with("PORTCULLIS") || key == "RUST_LOG" || key == "RUST_BACKTRACE" {
            cmd.env_remove(key);
        }
    }
    cmd.env("NO_COLOR", "1")
        .envs(envs.iter().copied())
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout_path).unwrap())
        .stderr(std::fs::File::create(&stderr_path).unwrap());
    let mut child = cmd.spawn().expect("spawn portcullis");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "portcullis did not exit within 20 s; stdout:\n{}\nstderr:\n{}",
                std::fs::read_to_string(&stdout_path).unwrap_or_default(),
                std::fs::read_to_string(&stderr_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Outcome {
        code: status.code(),
        stdout: String::from_utf8_lossy(&std::fs::read(&stdout_path).unwrap()).into_owned(),
        stderr: String::from_utf8_lossy(&std::fs::read(&stderr_path).unwrap()).into_owned(),
    }
}

/// A minimal valid config: one public route. The listen address is never bound by
/// `check-config`; it is still a port picked at run time.
fn valid_config() -> String {
    let port = free_port();
    format!(
        r#"[server]
listen = "127.0.0.1:{port}"
public_url = "http://127.0.0.1:{port}"
upstream_timeout = "30s"

[log]
format = "text"
filter = "info"

[[route]]
path = "/"
upstream = "http://127.0.0.1:{upstream}"
public = true
"#,
        upstream = free_port()
    )
}

const SESSION_SECRET: &str = "0123456789abcdef0123456789abcdef-SESSION-SECRET";

/// A valid config with `[oidc]` (confidential client, `client_secret`) and `[session]`
/// and a non-public route. Nothing listens on the issuer's port; check-config must not
/// need it.
fn oidc_config(client_secret_line: &str) -> String {
    let port = free_port();
    format!(
        r#"[server]
listen = "127.0.0.1:{port}"
public_url = "http://127.0.0.1:{port}"

[oidc]
issuer = "http://127.0.0.1:{issuer}"
client_id = "gateway"
{client_secret_line}

[session]
secret = "{SESSION_SECRET}"
cookie_secure = false

[[route]]
path = "/"
upstream = "http://127.0.0.1:{upstream}"
public = false
"#,
        issuer = free_port(),
        upstream = free_port()
    )
}

/// Exit code 2, exactly one line on stderr mentioning one of `mentions`, no panic.
fn assert_rejected(outcome: &Outcome, mentions: &[&str]) {
    let context = format!(
        "exit code {:?}\nstdout:\n{}\nstderr:\n{}",
        outcome.code, outcome.stdout, outcome.stderr
    );
    assert_eq!(
        outcome.code,
        Some(2),
        "invalid config must exit 2\n{context}"
    );
    for forbidden in ["panicked", "RUST_BACKTRACE"] {
        assert!(
            !outcome.stderr.contains(forbidden) && !outcome.stdout.contains(forbidden),
            "output contains {forbidden:?}\n{context}"
        );
    }
    assert!(
        mentions.iter().any(|m| outcome.stderr.contains(m)),
        "stderr should name one of {mentions:?}\n{context}"
    );
    assert_eq!(
        outcome.stderr.trim().lines().count(),
        1,
        "stderr should be one line naming the key and the reason\n{context}"
    );
}

// ---------------------------------------------------------------------------------
// check-config: valid input
// ---------------------------------------------------------------------------------

#[test]
fn check_config_prints_effective_config_and_exits_zero() {
    let dir = ConfigDir::new();
    let config = valid_config();
    let outcome = dir.check_config(&config, &[]);
    assert_eq!(outcome.code, Some(0), "{outcome:#?}");
    assert!(
        outcome.stdout.contains("upstream_timeout") && outcome.stdout.contains("127.0.0.1"),
        "check-config should print the effective config: {outcome:#?}"
    );
}

#[test]
fn env_override_shows_in_effective_config() {
    let dir = ConfigDir::new();
    let outcome = dir.check_config(
        &valid_config(),
        &[("PORTCULLIS__SERVER__UPSTREAM_TIMEOUT", "5s")],
    );
    assert_eq!(outcome.code, Some(0), "{outcome:#?}");
    let at = outcome
        .stdout
        .find("upstream_timeout")
        .unwrap_or_else(|| panic!("no upstream_timeout in output: {}", outcome.stdout));
    let around: String = outcome.stdout[at..].chars().take(40).collect();
    assert!(
        around.contains("5s") && !around.contains("30s"),
        "env override not applied: {around:?}\n{}",
        outcome.stdout
    );
}

#[test]
fn check_config_redacts_secrets() {
    let dir = ConfigDir::new();
    let outcome = dir.check_config(&oidc_config("client_secret = \"s3cr3t-value\""), &[]);
    assert_eq!(outcome.code, Some(0), "{outcome:#?}");
    for secret in ["s3cr3t-value", SESSION_SECRET] {
        assert!(
            !outcome.stdout.contains(secret) && !outcome.stderr.contains(secret),
            "check-config printed the secret {secret:?}: {outcome:#?}"
        );
    }
    assert!(
        outcome.stdout.contains("client_id") || outcome.stdout.contains("gateway"),
        "the [oidc] section should still be shown: {}",
        outcome.stdout
    );
}

#[test]
fn check_config_redacts_secrets_from_env() {
    let dir = ConfigDir::new();
    let outcome = dir.check_config(
        &oidc_config(""),
        &[("PORTCULLIS__OIDC__CLIENT_SECRET", "env-s3cr3t-value")],
    );
    assert_eq!(outcome.code, Some(0), "{outcome:#?}");
    assert!(
        !outcome.stdout.contains("env-s3cr3t-value") && !outcome.stderr.contains("env-s3cr3t"),
        "check-config printed the secret from env: {outcome:#?}"
    );
}

#[test]
fn client_secret_is_read_from_file_and_redacted() {
    let dir = ConfigDir::new();
    let secret_path = dir.write("client_secret", "file-s3cr3t-value\n");
    let config = oidc_config(&format!(
        "client_secret_file = \"{}\"",
        secret_path.display()
    ));
    let outcome = dir.check_config(&config, &[]);
    assert_eq!(outcome.code, Some(0), "{outcome:#?}");
    assert!(
        !outcome.stdout.contains("file-s3cr3t-value"),
        "check-config printed the secret read from file: {}",
        outcome.stdout
    );
}

// ---------------------------------------------------------------------------------
// check-config: invalid input
// ---------------------------------------------------------------------------------

#[test]
fn unknown_key_is_rejected_naming_it() {
    let dir = ConfigDir::new();
    let config = valid_config().replace("upstream_timeout = \"30s\"", "lisen = \"127.0.0.1:1\"");
    assert_rejected(&dir.check_config(&config, &[]), &["lisen"]);
}

#[test]
fn unknown_key_in_route_is_rejected_naming_it() {
    let dir = ConfigDir::new();
    let config = valid_config().replace("public = true", "public = true\nupstreem = \"x\"");
    assert_rejected(&dir.check_config(&config, &[]), &["upstreem"]);
}

#[test]
fn route_without_upstream_is_rejected() {
    let dir = ConfigDir::new();
    let config: String = valid_config()
        .lines()
        .filter(|l| !l.starts_with("upstream ="))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_rejected(&dir.check_config(&config, &[]), &["upstream"]);
}

#[test]
fn malformed_upstream_url_is_rejected() {
    let dir = ConfigDir::new();
    for bad in ["not a url", "http//127.0.0.1:8080", "ftp://127.0.0.1/"] {
        let config = replace_upstream(&valid_config(), bad);
        assert_rejected(
            &dir.check_config(&config, &[]),
            &["route[0].upstream", "upstream"],
        );
    }
}

fn replace_upstream(config: &str, value: &str) -> String {
    config
        .lines()
        .map(|l| {
            if l.starts_with("upstream =") {
                format!("upstream = \"{value}\"\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect()
}

#[test]
fn bad_duration_is_rejected_naming_the_key() {
    let dir = ConfigDir::new();
    let config = valid_config().replace("\"30s\"", "\"ten\"");
    assert_rejected(&dir.check_config(&config, &[]), &["upstream_timeout"]);
}

#[test]
fn bad_duration_from_env_is_rejected_naming_the_key() {
    let dir = ConfigDir::new();
    let outcome = dir.check_config(
        &valid_config(),
        &[("PORTCULLIS__SERVER__UPSTREAM_TIMEOUT", "ten")],
    );
    assert_rejected(&outcome, &["upstream_timeout", "UPSTREAM_TIMEOUT"]);
}

#[test]
fn unreadable_secret_file_is_rejected() {
    let dir = ConfigDir::new();
    let config = oidc_config("client_secret_file = \"/nonexistent\"");
    assert_rejected(&dir.check_config(&config, &[]), &["client_secret_file"]);
}

#[test]
fn unparsable_tls_certificate_is_rejected() {
    let dir = ConfigDir::new();
    let cert = dir.write("bad-cert.pem", "this is not a certificate\n");
    let key = dir.write("key.pem", SelfSignedCert::generate().key_pem);
    let config = valid_config().replace(
        "upstream_timeout = \"30s\"",
        &format!(
            "tls_cert_file = \"{}\"\ntls_key_file = \"{}\"",
            cert.display(),
            key.display()
        ),
    );
    assert_rejected(&dir.check_config(&config, &[]), &["tls_cert_file"]);
}

#[test]
fn non_public_route_without_oidc_is_rejected() {
    let dir = ConfigDir::new();
    let config = valid_config().replace("public = true", "public = false");
    assert_rejected(&dir.check_config(&config, &[]), &["oidc", "public"]);
}

/// A config with problems in several sections. With the `config` crate's tables as hash
/// maps, which of them a run named changed from run to run.
#[test]
fn the_same_bad_config_names_the_same_key_every_run() {
    let dir = ConfigDir::new();
    let config = valid_config()
        .replace(
            "upstream_timeout = \"30s\"",
            "lisen = 1\nupstream_timeout = \"ten\"\nconnect_timeout = \"x\"",
        )
        .replace("format = \"text\"", "format = \"xml\"\nlevel = 1")
        .replace("public = true", "public = true\nupstreem = 1");
    let first = dir.check_config(&config, &[]);
    assert_rejected(&first, &["server.lisen: unknown key"]);
    for _ in 0..20 {
        let again = dir.check_config(&config, &[]);
        assert_eq!(again.stderr, first.stderr, "{again:#?}");
    }
}

#[test]
fn of_two_bad_keys_the_first_in_the_file_is_named() {
    let dir = ConfigDir::new();
    let (duration, unknown) = ("upstream_timeout = \"ten\"", "lisen = 1");
    for (first, second, named) in [
        (duration, unknown, "server.upstream_timeout: "),
        (unknown, duration, "server.lisen: "),
    ] {
        let config =
            valid_config().replace("upstream_timeout = \"30s\"", &format!("{first}\n{second}"));
        let outcome = dir.check_config(&config, &[]);
        assert_rejected(&outcome, &[named]);
    }
    // Across sections: the route's problem comes before the log's in this file.
    let config = valid_config()
        .replace("format = \"text\"", "format = \"xml\"")
        .replace("[log]", "[[route]]\nupstream = \"ftp://x/\"\n\n[log]");
    assert_rejected(&dir.check_config(&config, &[]), &["route[0].upstream: "]);
}

#[test]
fn an_invalid_enum_value_lists_the_accepted_values() {
    let dir = ConfigDir::new();
    let config = oidc_config("token_endpoint_auth_method = \"x\"");
    let outcome = dir.check_config(&config, &[]);
    assert_rejected(
        &outcome,
        &["oidc.token_endpoint_auth_method: expected one of client_secret_basic, client_secret_post, private_key_jwt, none, got \"x\""],
    );
}

#[test]
fn check_config_output_is_a_config_that_check_config_accepts() {
    let dir = ConfigDir::new();
    let first = dir.check_config(&valid_config(), &[]);
    assert_eq!(first.code, Some(0), "{first:#?}");
    let again = dir.check_config(&first.stdout, &[]);
    assert_eq!(again.code, Some(0), "{again:#?}");
    assert_eq!(again.stdout, first.stdout);
}

#[test]
fn invalid_toml_is_rejected_without_panic() {
    let dir = ConfigDir::new();
    let outcome = dir.check_config("[server\nlisten = ", &[]);
    assert_eq!(outcome.code, Some(2), "{outcome:#?}");
    assert!(!outcome.stderr.contains("panicked"), "{outcome:#?}");
}

#[test]
fn missing_config_file_is_an_error_without_panic() {
    let dir = ConfigDir::new();
    let mut cmd = Command::new(bin());
    cmd.arg("check-config")
        .arg("--config")
        .arg(dir.path("does-not-exist.toml"));
    let outcome = run_command(cmd, dir.dir.path(), &[]);
    assert_ne!(outcome.code, Some(0), "{outcome:#?}");
    assert!(outcome.code.is_some(), "killed by a signal: {outcome:#?}");
    assert!(!outcome.stderr.contains("panicked"), "{outcome:#?}");
    assert!(
        outcome.stderr.contains("does-not-exist.toml"),
        "the error should name the file: {outcome:#?}"
    );
}

// ---------------------------------------------------------------------------------
// run
// ---------------------------------------------------------------------------------

#[test]
fn run_refuses_invalid_config_with_exit_code_2() {
    let dir = ConfigDir::new();
    let config = valid_config().replace("upstream_timeout = \"30s\"", "lisen = \"127.0.0.1:1\"");
    let outcome = dir.run(&["run"], &config, &[]);
    assert_eq!(outcome.code, Some(2), "{outcome:#?}");
    let all = format!("{}{}", outcome.stdout, outcome.stderr);
    assert!(all.contains("lisen"), "{outcome:#?}");
    assert!(!all.contains("panicked"), "{outcome:#?}");
}

#[test]
fn version_flag_prints_the_version() {
    let dir = ConfigDir::new();
    let mut cmd = Command::new(bin());
    cmd.arg("--version");
    let outcome = run_command(cmd, dir.dir.path(), &[]);
    assert_eq!(outcome.code, Some(0), "{outcome:#?}");
    assert!(
        outcome.stdout.contains(env!("CARGO_PKG_VERSION")),
        "{outcome:#?}"
    );
}

fn serving_config(listen_port: u16) -> String {
    format!(
        r#"[server]
listen = "127.0.0.1:{listen_port}"
public_url = "http://127.0.0.1:{listen_port}"

[[route]]
path = "/"
upstream = "http://127.0.0.1:{upstream}"
public = true
"#,
        upstream = free_port()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_flag_overrides_configured_address() {
    let configured = free_port();
    let flag: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let gw = Gateway::builder(&serving_config(configured))
        .arg("--listen")
        .arg(flag.to_string())
        .ready_addr(flag)
        .start()
        .await;
    assert_eq!(gw.addr(), flag);
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", configured)).is_err(),
        "the configured address should not be bound when --listen overrides it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn env_overrides_listen_address() {
    let configured = free_port();
    let env_addr: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let gw = Gateway::builder(&serving_config(configured))
        .env("PORTCULLIS__SERVER__LISTEN", env_addr.to_string())
        .ready_addr(env_addr)
        .start()
        .await;
    assert_eq!(gw.addr(), env_addr);
    assert!(std::net::TcpStream::connect(("127.0.0.1", configured)).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_invocation_without_run_serves() {
    let mut gw = Gateway::builder(&serving_config(free_port()))
        .without_subcommand()
        .start()
        .await;
    let status = gw.stop().await;
    assert!(status.success(), "exit after SIGTERM: {status}");
}
