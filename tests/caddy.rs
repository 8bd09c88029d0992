//! A real Caddy (Debian's 2.6) running the README's recipe (`deploy/caddy/Caddyfile`) in
//! front of the echo upstream, with `forward_auth` asking the `portcullis` binary's
//! `/oauth2/auth`: a browser without a session is sent to log in through Caddy and comes
//! back to the page it asked for; signed in, the upstream gets the bearer and the
//! identity; an API call without a session gets 401; and no listed header ever reaches the
//! upstream as Caddy's literal placeholder text (caddy#6610), for a user without groups
//! or on a public route.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;

use reqwest::header::ACCEPT;
use reqwest::{Method, StatusCode};

use common::caddy::{caddy_available, Caddy};
use common::chromium::{chromium, login_in_chromium};
use common::direct::{gateway_toml, port_candidates, start_idp};
use common::gateway::wait_for_readyz;
use common::login::{random_hex, Browser, NAVIGATION_ACCEPT};
use common::upstream::Echoed;
use common::{EchoUpstream, Gateway};

fn recipe() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("deploy/caddy/Caddyfile")
}

struct Stack {
    idp: common::idp::Idp,
    client_secret: String,
    gateway: Gateway,
    upstream: EchoUpstream,
    caddy: Caddy,
}

impl Stack {
    /// The IdP knows Caddy's callback; the gateway's public URL is Caddy's.
    async fn start() -> Stack {
        let upstream = EchoUpstream::start_named("behind-caddy").await;
        let secret = format!("client-secret-{}", random_hex(16));
        let ports = port_candidates();
        let idp = start_idp(&secret, &ports).await;
        let rest = format!(
            "[policy]\nallow_domains = [\"corp.test\"]\n\n\
             [forward_auth]\nset_authorization = true\n\n\
             [[route]]\npath = \"/public\"\nupstream = \"{}\"\npublic = true\n",
            upstream.url()
        );
        for port in &ports {
            let public_url = format!("http://127.0.0.1:{port}");
            let toml = gateway_toml("@LISTEN@", &public_url, idp.issuer(), &secret, &rest);
            let gateway = Gateway::start(&toml).await;
            wait_for_readyz(&gateway).await;
            let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
            let env = [
                ("SITE", public_url.clone()),
                ("PORTCULLIS", gateway.addr().to_string()),
                ("APP", upstream.addr().to_string()),
            ];
            match Caddy::start(addr, &recipe(), &env).await {
                Ok(caddy) => {
                    return Stack {
                        idp,
                        client_secret: secret,
                        gateway,
                        upstream,
                        caddy,
                    }
                }
                Err(e) if e.contains("address already in use") => {
                    eprintln!("caddy port {port} was taken; trying the next candidate");
                }
                Err(e) => panic!("{e}"),
            }
        }
        panic!("none of the caddy ports {ports:?} could be bound");
    }
}

/// No header the upstream got carries Caddy's unreplaced placeholder text.
fn assert_no_placeholder(echo: &Echoed) {
    for (name, values) in &echo.headers {
        for value in values {
            assert!(
                !value.contains("{http.") && !value.contains("{rp."),
                "{name}: {value:?} is Caddy's placeholder text: {echo:?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caddy_forward_auth_logs_in_returns_to_the_page_and_passes_identity() {
    if !caddy_available("caddy_forward_auth_logs_in_returns_to_the_page_and_passes_identity") {
        return;
    }
    let stack = Stack::start().await;
    let caddy = &stack.caddy;

    // No session: the browser is sent to log in (Caddy relays the gateway's 302), signs
    // in at the IdP, and the callback through Caddy brings it back to the original page.
    let boss = Browser::new();
    let login = boss
        .login(&caddy.url(), "/reports/q3?year=2026&x=1", "boss")
        .await;
    assert!(
        login
            .started
            .authorize_url
            .as_str()
            .starts_with(stack.idp.issuer()),
        "{}",
        login.started.authorize_url
    );
    let echo = login.landing.echo();
    assert_eq!(echo.upstream, "behind-caddy");
    assert_eq!(echo.path, "/reports/q3?year=2026&x=1");
    assert_eq!(echo.header("x-forwarded-user"), Some("boss"), "{echo:?}");
    assert_eq!(echo.header("x-forwarded-email"), Some("boss@corp.test"));
    assert_eq!(echo.header("x-forwarded-groups"), Some("admins,eng"));
    let bearer = echo.header("authorization").unwrap_or("");
    let token = bearer
        .strip_prefix("Bearer ")
        .unwrap_or_else(|| panic!("no bearer upstream: {echo:?}"));
    stack
        .idp
        .assert_token_active(token, "gateway", Some(&stack.client_secret), "boss")
        .await;
    assert_no_placeholder(&echo);

    // The check endpoints are not published through Caddy: they go to the app (checked)
    // like any path, so no answer carrying the bearer reaches a client.
    for path in ["/oauth2/auth", "/oauth2/ext_authz/reports"] {
        let hop = boss.navigate(&caddy.url_for(path)).await;
        assert_eq!(hop.echo().upstream, "behind-caddy", "{hop}");
        assert!(hop.header("authorization").is_none(), "{hop}");
        assert!(hop.header("x-auth-request-user").is_none(), "{hop}");
    }

    // Signed in, a client's own identity headers are replaced by the gateway's.
    let forged = boss
        .send(
            boss.request(Method::GET, &caddy.url_for("/reports"))
                .header(ACCEPT, NAVIGATION_ACCEPT)
                .header("x-forwarded-user", "mallory")
                .header("x-forwarded-groups", "root"),
        )
        .await
        .echo();
    assert_eq!(
        forged.header("x-forwarded-user"),
        Some("boss"),
        "{forged:?}"
    );
    assert_eq!(forged.header("x-forwarded-groups"), Some("admins,eng"));

    // A user without groups: the header is empty or absent, never Caddy's placeholder.
    let cara = Browser::new();
    let echo = cara.login(&caddy.url(), "/", "cara").await.landing.echo();
    assert_eq!(echo.header("x-forwarded-user"), Some("cara"), "{echo:?}");
    assert!(
        echo.header("x-forwarded-groups").unwrap_or("").is_empty(),
        "{echo:?}"
    );
    assert_no_placeholder(&echo);

    // A public route, anonymous, with forged identity: nothing of it reaches the upstream,
    // and neither does placeholder text.
    let anonymous = Browser::new();
    let public = anonymous
        .send(
            anonymous
                .request(Method::GET, &caddy.url_for("/public/docs"))
                .header(ACCEPT, NAVIGATION_ACCEPT)
                .header("x-forwarded-user", "mallory")
                .header("x-forwarded-email", "mallory@corp.test"),
        )
        .await
        .echo();
    for name in [
        "x-forwarded-user",
        "x-forwarded-email",
        "x-forwarded-groups",
        "authorization",
    ] {
        assert!(
            public.header(name).unwrap_or("").is_empty(),
            "{name}: {public:?}"
        );
    }
    assert_no_placeholder(&public);

    // An API call without a session: 401 from the gateway, relayed; the upstream is not
    // asked.
    let before = stack.upstream.received().len();
    let api = anonymous
        .send(
            anonymous
                .request(Method::GET, &caddy.url_for("/reports"))
                .header(ACCEPT, "application/json"),
        )
        .await;
    assert_eq!(api.status, StatusCode::UNAUTHORIZED, "{api}");
    assert_eq!(api.header("www-authenticate"), Some("Bearer"), "{api}");
    let post = anonymous
        .send(
            anonymous
                .request(Method::POST, &caddy.url_for("/reports"))
                .header(ACCEPT, NAVIGATION_ACCEPT)
                .body("x=1"),
        )
        .await;
    assert_eq!(post.status, StatusCode::UNAUTHORIZED, "{post}");
    assert_eq!(
        stack.upstream.received().len(),
        before,
        "the upstream saw a request without a session"
    );

    // Every request above was asked of the gateway by Caddy.
    stack
        .gateway
        .wait_for_log(
            "Caddy's checks",
            std::time::Duration::from_secs(10),
            |log| log.matches("\"path\":\"/oauth2/auth\"").count() >= 6,
        )
        .await;
}

/// The same login in a real browser: Chromium opens a page through Caddy, is sent to the
/// IdP, signs in, and ends on that page with the upstream seeing the user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caddy_forward_auth_browser_login_in_chromium() {
    let test = "caddy_forward_auth_browser_login_in_chromium";
    if !caddy_available(test) {
        return;
    }
    let Some(chromium) = chromium(test) else {
        return;
    };
    let stack = Stack::start().await;
    let start = stack.caddy.url_for("/reports/q3?year=2026");
    let login = login_in_chromium(&chromium, &start, "boss", "login-caddy-chromium.png").await;
    assert_eq!(
        login.final_url.as_str(),
        start,
        "back on the original page through Caddy"
    );
    assert_eq!(login.echo.upstream, "behind-caddy");
    assert_eq!(login.echo.path, "/reports/q3?year=2026");
    assert_eq!(
        login.echo.header("x-forwarded-user"),
        Some("boss"),
        "{:?}",
        login.echo
    );
    assert_eq!(login.echo.header("x-forwarded-groups"), Some("admins,eng"));
    assert!(
        login
            .echo
            .header("authorization")
            .unwrap_or("")
            .starts_with("Bearer "),
        "{:?}",
        login.echo
    );
    assert_no_placeholder(&login.echo);
}

/// The README shows the recipe this test runs.
#[test]
fn the_readme_caddy_recipe_is_the_tested_file() {
    let readme =
        std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("README.md"))
            .expect("README.md");
    let recipe = std::fs::read_to_string(recipe()).expect("Caddyfile");
    assert!(
        readme.contains(recipe.trim_end()),
        "README does not show deploy/caddy/Caddyfile as it is"
    );
}
