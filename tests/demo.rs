//! `portcullis demo` as a newcomer runs it: the real binary with its embedded development
//! provider and sample dashboard, driven by a browser-like HTTP client and by headless
//! Chromium; plus what operators read off it: `/metrics` and JSON logs.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::login::{Browser, Hop};
use reqwest::{Method, StatusCode};
use scraper::{Html, Selector};
use url::Url;

/// A running `portcullis demo`; killed on drop.
struct Demo {
    child: Child,
    url: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Demo {
    async fn start() -> Demo {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("demo.log");
        let addr = common::free_addr();
        let child = Command::new(common::bin())
            .args([
                "demo",
                "--listen",
                &addr.to_string(),
                "--log-format",
                "json",
            ])
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).expect("log file"))
            .stderr(std::fs::File::create(dir.path().join("demo.err")).expect("err file"))
            .spawn()
            .expect("spawn portcullis demo");
        let url = format!("http://{addr}");
        let client = common::http::client();
        let ready = format!("{url}/readyz");
        common::wait_until("the demo to be ready", Duration::from_secs(20), || {
            let client = client.clone();
            let ready = ready.clone();
            async move {
                match client.get(&ready).send().await {
                    Ok(r) if r.status() == StatusCode::OK => Some(()),
                    _ => None,
                }
            }
        })
        .await;
        Demo {
            child,
            url,
            log,
            _dir: dir,
        }
    }

    /// Everything the demo printed: the banner on stdout, JSON logs on stderr.
    fn output(&self) -> (String, String) {
        let out = std::fs::read_to_string(&self.log).unwrap_or_default();
        let err = std::fs::read_to_string(self.log.with_file_name("demo.err")).unwrap_or_default();
        (out, err)
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Fields of an HTML form, for submitting it like a browser would.
fn form_fields(html: &str) -> (String, Vec<(String, String)>) {
    let doc = Html::parse_document(html);
    let form = doc
        .select(&Selector::parse("form").unwrap())
        .next()
        .expect("a form on the page");
    let action = form.value().attr("action").unwrap_or("").to_string();
    let fields = form
        .select(&Selector::parse("input").unwrap())
        .filter_map(|i| {
            let name = i.value().attr("name")?;
            Some((
                name.to_string(),
                i.value().attr("value").unwrap_or("").to_string(),
            ))
        })
        .collect();
    (action, fields)
}

/// Whole login through the embedded provider; returns every hop and the final page.
async fn log_in(browser: &Browser, demo: &Demo, user: &str) -> (Vec<Hop>, Hop) {
    let mut hops = Vec::new();
    let first = browser
        .navigate(&format!("{}/reports?month=11", demo.url))
        .await;
    assert_eq!(first.status, StatusCode::FOUND);
    assert!(first.location_raw().starts_with("/oauth2/start?rd="));
    let start = browser.follow(&first).await;
    let authorize = start.location();
    assert_eq!(
        common::login::query_param(&authorize, "code_challenge_method").as_deref(),
        Some("S256")
    );
    let form_page = browser.navigate(authorize.as_str()).await;
    assert_eq!(form_page.status, StatusCode::OK, "{}", form_page.body);
    let (action, mut fields) = form_fields(&form_page.body);
    for (name, value) in fields.iter_mut() {
        if name == "login" {
            *value = user.to_string();
        }
    }
    let action = authorize.join(&action).expect("form action URL");
    let submitted = browser
        .send(browser.request(Method::POST, action.as_str()).form(&fields))
        .await;
    assert_eq!(submitted.status, StatusCode::FOUND, "{}", submitted.body);
    let callback = browser.follow(&submitted).await;
    assert_eq!(callback.status, StatusCode::FOUND, "{}", callback.body);
    assert_eq!(callback.location_raw(), "/reports?month=11");
    let page = browser.follow(&callback).await;
    hops.extend([first, start, form_page, submitted, callback]);
    (hops, page)
}

fn looks_like_jwt(text: &str) -> bool {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.'))
        .any(|w| w.starts_with("eyJ") && w.split('.').count() == 3 && w.len() > 60)
}

#[tokio::test]
async fn demo_login_shows_dashboard_with_claims_not_the_token() {
    let demo = Demo::start().await;
    let (out, _) = demo.output();
    assert!(
        out.contains(&format!("open {}/", demo.url)),
        "banner: {out}"
    );

    let browser = Browser::new();
    let (_, page) = log_in(&browser, &demo, "grace").await;
    assert_eq!(page.status, StatusCode::OK);
    let text = page.body.as_str();
    assert!(text.contains("Demo dashboard"));
    // Identity headers the gateway set, as the upstream saw them.
    assert!(
        text.contains("<th>x-forwarded-user</th><td>grace</td>"),
        "{text}"
    );
    assert!(text.contains("grace@example.com"));
    // The bearer token's decoded claims, never the token itself.
    assert!(
        text.contains("&quot;sub&quot;: &quot;grace&quot;"),
        "{text}"
    );
    assert!(text.contains("portcullis-demo-api"));
    assert!(!looks_like_jwt(text), "the dashboard shows a raw JWT");
    assert!(text.contains("/reports"));

    // Signed in: the API side works too, and sign-out ends it.
    let me = browser
        .api_get(&format!("{}/oauth2/userinfo", demo.url))
        .await;
    assert_eq!(me.json()["sub"], "grace");
    let out = browser
        .navigate(&format!("{}/oauth2/sign_out", demo.url))
        .await;
    assert_eq!(out.status, StatusCode::FOUND);
    let after = browser.api_get(&format!("{}/reports", demo.url)).await;
    assert_eq!(after.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn demo_in_chromium_with_screenshot() {
    if !std::path::Path::new("/usr/bin/chromium").exists()
        && std::env::var("CI").as_deref() != Ok("true")
    {
        eprintln!("skipping: /usr/bin/chromium is not installed (apt-get install chromium)");
        return;
    }
    let demo = Demo::start().await;
    let artifacts = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts");
    std::fs::create_dir_all(&artifacts).expect("artifacts dir");
    let shot = artifacts.join("demo-chromium.png");
    let _ = std::fs::remove_file(&shot);
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/idp/login-flow.mjs");
    let (url, shot_path) = (demo.url.clone(), shot.clone());
    // login-flow.mjs bounds itself (30 s overall).
    let output = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg(&script)
            .arg(&url)
            .arg("heidi")
            .arg(&shot_path)
            .stdin(Stdio::null())
            .output()
    })
    .await
    .expect("join")
    .expect("run node");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "login-flow failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let result: serde_json::Value =
        serde_json::from_str(stdout.lines().last().unwrap_or("{}")).expect("json line");
    let final_url = Url::parse(result["final_url"].as_str().unwrap_or("")).expect("final url");
    assert_eq!(final_url.origin(), Url::parse(&demo.url).unwrap().origin());
    let body = result["body_text"].as_str().unwrap_or("");
    assert!(
        body.contains("Demo dashboard") && body.contains("heidi"),
        "{body}"
    );
    let png = std::fs::read(&shot).expect("screenshot written");
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
}

#[tokio::test]
async fn demo_refuses_to_listen_beyond_loopback() {
    let port = common::free_port();
    let output = Command::new(common::bin())
        .args(["demo", "--listen", &format!("0.0.0.0:{port}")])
        .stdin(Stdio::null())
        .output()
        .expect("run demo");
    assert!(!output.status.success());
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(err.contains("loopback"), "{err}");
    assert!(!err.contains("panicked"));
}

/// Parses the Prometheus text format strictly enough to catch a broken exposition:
/// `# TYPE/HELP/UNIT` comments, `name{labels} value` samples, ending in `# EOF`.
fn parse_metrics(text: &str) -> Vec<(String, f64)> {
    assert!(text.ends_with("# EOF\n"), "exposition must end with # EOF");
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (series, value) = l
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("bad sample line {l:?}"));
            let name = series.split('{').next().unwrap_or("");
            assert!(
                !name.is_empty()
                    && name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
                "bad metric name in {l:?}"
            );
            if let Some(labels) = series.strip_prefix(name) {
                assert!(
                    labels.is_empty() || (labels.starts_with('{') && labels.ends_with('}')),
                    "bad labels in {l:?}"
                );
            }
            let value: f64 = value
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {l:?}"));
            (series.to_string(), value)
        })
        .collect()
}

#[tokio::test]
async fn metrics_count_a_login_and_a_proxied_request() {
    let demo = Demo::start().await;
    let scrape = || async {
        let r = common::http::client()
            .get(format!("{}/metrics", demo.url))
            .send()
            .await
            .expect("scrape");
        assert_eq!(r.status(), StatusCode::OK);
        parse_metrics(&r.text().await.expect("body"))
    };
    let value = |samples: &[(String, f64)], series: &str| {
        samples
            .iter()
            .find(|(s, _)| s == series)
            .map_or(0.0, |(_, v)| *v)
    };
    let before = scrape().await;
    let browser = Browser::new();
    let (_, page) = log_in(&browser, &demo, "ivan").await;
    assert_eq!(page.status, StatusCode::OK);
    let after = scrape().await;
    for (series, delta) in [
        (
            "portcullis_logins_total{result=\"started\",reason=\"ok\"}",
            1.0,
        ),
        (
            "portcullis_logins_total{result=\"completed\",reason=\"ok\"}",
            1.0,
        ),
        (
            "portcullis_requests_total{route=\"route[0]\",class=\"2xx\"}",
            1.0,
        ),
        (
            "portcullis_upstream_duration_seconds_count{route=\"route[0]\"}",
            1.0,
        ),
    ] {
        assert_eq!(
            value(&after, series) - value(&before, series),
            delta,
            "{series}"
        );
    }
    assert!(value(&after, "portcullis_sessions_active") >= 1.0);
    // No user data in labels.
    assert!(!after.iter().any(|(s, _)| s.contains("ivan")));
}

#[tokio::test]
async fn json_logs_have_one_valid_line_per_request_and_no_secrets() {
    let demo = Demo::start().await;
    let browser = Browser::new();
    let (hops, page) = log_in(&browser, &demo, "judy").await;
    assert_eq!(page.status, StatusCode::OK);
    let session = browser.cookie("portcullis").expect("session cookie");
    let code = hops
        .iter()
        .filter(|h| h.is_redirect())
        .find_map(|h| common::login::query_param(&h.location(), "code"))
        .expect("the authorization code");
    // Give the log writer a moment to flush the last line.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (_, err) = demo.output();
    let mut request_ids = Vec::new();
    for line in err.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        if v["message"] == "request" {
            for field in [
                "method",
                "path",
                "route",
                "status",
                "latency_ms",
                "request_id",
            ] {
                assert!(!v[field].is_null(), "access line without {field}: {line}");
            }
            request_ids.push(v["request_id"].as_str().unwrap_or("").to_string());
        }
    }
    // Gateway requests made by log_in: /reports, /oauth2/start, /oauth2/callback, /reports
    // (the provider's pages are not the gateway's), plus /readyz polls during start-up.
    let gateway_requests = request_ids.len();
    assert!(gateway_requests >= 4, "{err}");
    let mut unique = request_ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), request_ids.len(), "request ids repeat");
    assert!(!err.contains(&session), "session cookie value logged");
    assert!(!err.contains(&code), "authorization code logged");
    assert!(!looks_like_jwt(&err), "a token was logged");
}
