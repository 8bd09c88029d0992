//! `portcullis demo`: the whole product in one process, no external services. An embedded
//! development OpenID provider and a sample dashboard run on loopback ports, and the real
//! gateway (the production code path: same config, discovery, OIDC client and sessions)
//! runs in front of the dashboard.

mod dashboard;
pub(crate) mod idp;

use std::collections::HashMap;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::Request;
use tokio::net::TcpListener;

use crate::config::{CliOverrides, Config};
use crate::errors::BoxError;

/// Largest form body the demo provider reads.
const MAX_FORM: usize = 64 * 1024;

/// Runs the demo until Ctrl-C. `listen` is the gateway's address (loopback only).
pub async fn run(listen: SocketAddr, overrides: &CliOverrides) -> Result<(), BoxError> {
    if !listen.ip().is_loopback() {
        return Err(format!(
            "demo: refusing to listen on {listen}: the embedded identity provider signs anyone in, so the demo binds to loopback only (use 127.0.0.1 or [::1])"
        )
        .into());
    }
    let loopback = SocketAddr::new(listen.ip(), 0);
    let gateway_listener = TcpListener::bind(listen)
        .await
        .map_err(|e| format!("demo: cannot listen on {listen}: {e}"))?;
    let idp_listener = TcpListener::bind(loopback).await?;
    let dashboard_listener = TcpListener::bind(loopback).await?;
    let gateway_addr = gateway_listener.local_addr()?;
    let url = |a: SocketAddr| format!("http://{a}");
    let public_url = url(gateway_addr);
    let issuer = url(idp_listener.local_addr()?);

    let client_secret = random_secret();
    let provider = idp::DevIdp::new(
        issuer.clone(),
        "portcullis-demo".into(),
        client_secret.clone(),
        format!("{public_url}/oauth2/callback"),
    )?;
    let dashboard_addr = dashboard_listener.local_addr()?;
    crate::server::spawn_plain(idp_listener, move |req| provider.clone().handle(req));
    crate::server::spawn_plain(
        dashboard_listener,
        |req| async move { dashboard::handle(&req) },
    );

    let toml = format!(
        r#"
[server]
listen = "{gateway_addr}"
public_url = "{public_url}"
[oidc]
issuer = "{issuer}"
client_id = "portcullis-demo"
client_secret = "{client_secret}"
[session]
secret = "{session_secret}"
cookie_secure = false
[[route]]
path = "/"
upstream = "http://{dashboard}"
"#,
        session_secret = random_secret(),
        dashboard = dashboard_addr,
    );
    let config = Config::from_toml_with_env(&toml, overrides)?;
    // Held while the demo serves: the log writer is a background thread (telemetry.rs).
    let _log = crate::telemetry::init(&config.log);
    println!("\nportcullis demo is running: open {public_url}/ in a browser.");
    println!(
        "It sends you to a built-in identity provider ({issuer}), where any name signs in, then shows the dashboard behind the gateway with what it received. Ctrl-C stops it.\n"
    );
    crate::serve_on(gateway_listener, config, None).await
}

fn random_secret() -> String {
    let mut b = [0u8; 32];
    let _ = aws_lc_rs::rand::fill(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Reads a small request body as text.
async fn read_body(req: Request<Incoming>) -> Option<String> {
    let bytes: Bytes = Limited::new(req.into_body(), MAX_FORM)
        .collect()
        .await
        .ok()?
        .to_bytes();
    String::from_utf8(bytes.to_vec()).ok()
}

/// `application/x-www-form-urlencoded` (or a query string) into a map; last value wins.
fn form(text: &str) -> HashMap<String, String> {
    url::form_urlencoded::parse(text.as_bytes())
        .into_owned()
        .collect()
}
