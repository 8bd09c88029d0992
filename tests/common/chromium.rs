//! A real browser login: Debian's Chromium driven by playwright-core
//! (`tests/idp/login-flow.mjs`) from a page behind the gateway (or a proxy in front of it),
//! through the test IdP's login form, back to that page.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use url::Url;

use super::process::spawn_and_wait_for_line;
use super::upstream::Echoed;

/// The Chromium binary, or `None` (with a SKIPPED line) when it is missing outside CI.
pub fn chromium(test: &str) -> Option<String> {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_string());
    if Path::new(&chromium).exists() {
        return Some(chromium);
    }
    assert_ne!(
        std::env::var("CI").as_deref(),
        Ok("true"),
        "{chromium} is missing; in CI the browser test must run"
    );
    eprintln!("SKIPPED {test}: {chromium} not found (CI != true)");
    None
}

/// Where the browser ended and the upstream's echo it shows.
pub struct BrowserLogin {
    pub final_url: Url,
    pub echo: Echoed,
}

/// Opens `start_url` in Chromium, signs in as `user` at the IdP and returns where the
/// browser ended; a screenshot goes to `target/test-artifacts/<screenshot>`.
pub async fn login_in_chromium(
    chromium: &str,
    start_url: &str,
    user: &str,
    screenshot: &str,
) -> BrowserLogin {
    let artifacts: PathBuf = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("target dir")
        .join("test-artifacts");
    std::fs::create_dir_all(&artifacts).expect("create target/test-artifacts");
    let screenshot = artifacts.join(screenshot);
    let _ = std::fs::remove_file(&screenshot);

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/idp/login-flow.mjs");
    let mut cmd = Command::new("node");
    cmd.arg(script)
        .arg(start_url)
        .arg(user)
        .arg(&screenshot)
        .env("CHROMIUM", chromium)
        .env("LOGIN_FLOW_TIMEOUT_MS", "45000");
    const PREFIX: &str = "{\"final_url\"";
    let (mut flow, rest) = spawn_and_wait_for_line(cmd, PREFIX, Duration::from_secs(60)).await;
    let status = flow
        .wait_exit(Duration::from_secs(20))
        .await
        .unwrap_or_else(|| panic!("login-flow.mjs did not exit:\n{}", flow.output()));
    assert!(
        status.success(),
        "login-flow.mjs: {status}\n{}",
        flow.output()
    );
    let result: Value = serde_json::from_str(&format!("{PREFIX}{rest}")).expect("result JSON");
    let final_url = Url::parse(result["final_url"].as_str().unwrap()).unwrap();
    // The page is the upstream's JSON echo (Chromium may add its JSON viewer's chrome).
    let body = result["body_text"].as_str().unwrap();
    let json = &body[body.find('{').expect("JSON in the page")..=body.rfind('}').unwrap()];
    let size = std::fs::metadata(&screenshot).map(|m| m.len()).unwrap_or(0);
    assert!(size > 0, "no screenshot at {}", screenshot.display());
    BrowserLogin {
        final_url,
        echo: Echoed::parse(json.as_bytes()),
    }
}
