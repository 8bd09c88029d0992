//! Forward-auth (`GET /oauth2/auth`) of the real `portcullis` binary against the node
//! test IdP (`tests/idp`): asked directly with nginx's `X-Original-URL` and Traefik's
//! `X-Forwarded-Host/-Uri/-Method`, and for real behind Debian nginx (`auth_request`).
//!
//! Every test starts its own IdP and gateway on loopback ports chosen at run time. The
//! IdP must know the redirect URI (the gateway's, or nginx's when nginx fronts it) before
//! it starts, so three port candidates are registered and the first one that binds is
//! used.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use reqwest::header::ACCEPT;
use reqwest::{Method, StatusCode};
use serde_json::Value;

use common::direct::{gateway_toml, port_candidates, start_idp, users, Direct};
use common::gateway::wait_for_readyz;
use common::idp::Idp;
use common::login::{query_param, random_hex, Browser, Hop, NAVIGATION_ACCEPT, SESSION_COOKIE};
use common::nginx::{nginx_available, Nginx};
use common::{raw_request, wait_until, EchoUpstream, Gateway};

/// How the proxy in front describes the original request.
#[derive(Debug, Clone, Copy)]
enum Original<'a> {
    /// nginx: `X-Original-URL: <url>`.
    Nginx(&'a str),
    /// Traefik: `X-Forwarded-Host`, `X-Forwarded-Uri`, optional `X-Forwarded-Method`.
    Traefik {
        host: &'a str,
        uri: &'a str,
        method: Option<&'a str>,
    },
}

/// `GET /oauth2/auth` as the proxy would send it, with the browser's cookies.
async fn ask(browser: &Browser, gateway: &Gateway, original: Original<'_>) -> Hop {
    let mut request = browser
        .request(Method::GET, &gateway.url_for("/oauth2/auth"))
        .header(ACCEPT, NAVIGATION_ACCEPT);
    match original {
        Original::Nginx(url) => request = request.header("x-original-url", url),
        Original::Traefik { host, uri, method } => {
            request = request
                .header("x-forwarded-host", host)
                .header("x-forwarded-uri", uri);
            if let Some(method) = method {
                request = request.header("x-forwarded-method", method);
            }
        }
    }
    browser.send(request).await
}

fn assert_no_store(hop: &Hop) {
    assert_eq!(hop.header("cache-control"), Some("no-store"), "{hop}");
    assert_eq!(
        hop.header("x-content-type-options"),
        Some("nosniff"),
        "{hop}"
    );
}

/// 202 for `user` with the `X-Auth-Request-*` identity headers; returns the response.
fn assert_accepted(hop: &Hop, user: &str) -> Hop {
    assert_eq!(hop.status, StatusCode::ACCEPTED, "{user} must pass\n{hop}");
    assert!(hop.body.is_empty(), "202 with a body\n{hop}");
    assert_no_store(hop);
    let u = &users()[user];
    assert_eq!(hop.header("x-auth-request-user"), Some(user), "{hop}");
    assert_eq!(
        hop.header("x-auth-request-email"),
        u["email"].as_str(),
        "{hop}"
    );
    let groups: Vec<&str> = u["groups"]
        .as_array()
        .map(|g| g.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if groups.is_empty() {
        // Present and empty: a proxy told to copy it copies nothing (caddy#6610).
        assert_eq!(hop.header("x-auth-request-groups"), Some(""), "{hop}");
    } else {
        assert_eq!(
            hop.header("x-auth-request-groups"),
            Some(groups.join(",").as_str()),
            "{hop}"
        );
    }
    hop.clone()
}

/// 202 without an identity (a public route or skipped path, asked without a session):
/// every identity header present and empty, so a proxy copying them copies nothing.
fn assert_accepted_anonymous(hop: &Hop) {
    assert_eq!(hop.status, StatusCode::ACCEPTED, "{hop}");
    for name in [
        "x-auth-request-user",
        "x-auth-request-email",
        "x-auth-request-groups",
    ] {
        assert_eq!(hop.header(name), Some(""), "{name}\n{hop}");
    }
    assert!(
        hop.header("x-auth-request-access-token")
            .unwrap_or("")
            .is_empty(),
        "{hop}"
    );
}

/// Not signed in. nginx (`X-Original-URL`) gets 401: `auth_request` cannot relay a
/// redirect. Traefik and Caddy (`X-Forwarded-Uri`) relay the answer, so a browser
/// navigation (a described GET or HEAD with the `ask` helper's Accept) is sent to log in
/// and back to the original target.
fn assert_login_required(hop: &Hop, original: Original<'_>) {
    match original {
        Original::Traefik { uri, method, .. }
            if method.is_some_and(|m| m == "GET" || m == "HEAD") =>
        {
            assert_eq!(hop.status, StatusCode::FOUND, "{hop}");
            let rd: String = url::form_urlencoded::byte_serialize(uri.as_bytes()).collect();
            assert_eq!(
                hop.location_raw(),
                format!("/oauth2/start?rd={rd}"),
                "{hop}"
            );
            assert!(hop.header("x-auth-request-user").is_none(), "{hop}");
            assert_no_store(hop);
        }
        _ => assert_unauthorized(hop),
    }
}

/// 401, never a redirect (the proxy in front decides what a browser sees).
fn assert_unauthorized(hop: &Hop) {
    assert_eq!(hop.status, StatusCode::UNAUTHORIZED, "{hop}");
    assert!(hop.header("location").is_none(), "{hop}");
    assert!(hop.header("x-auth-request-user").is_none(), "{hop}");
    assert_no_store(hop);
}

fn assert_forbidden(hop: &Hop) {
    assert_eq!(hop.status, StatusCode::FORBIDDEN, "{hop}");
    assert!(hop.header("location").is_none(), "{hop}");
    assert!(hop.header("x-auth-request-user").is_none(), "{hop}");
    assert!(hop.header("x-auth-request-access-token").is_none(), "{hop}");
    assert!(hop.header("authorization").is_none(), "{hop}");
    assert_no_store(hop);
}

/// `(sub, route)` of the `policy_deny` audit events in the gateway's JSON log.
fn deny_events(gateway: &Gateway) -> Vec<(String, String)> {
    gateway
        .log_text()
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|e| e["event"] == "policy_deny")
        .map(|e| {
            (
                e["sub"].as_str().unwrap_or("").to_string(),
                e["route"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

async fn wait_deny_event(gateway: &Gateway, sub: &str, route: &str) {
    let want = (sub.to_string(), route.to_string());
    wait_until(
        &format!("policy_deny for {sub} on {route}"),
        Duration::from_secs(10),
        || {
            let found = deny_events(gateway).contains(&want);
            async move { found.then_some(()) }
        },
    )
    .await;
}

// ----- direct ------------------------------------------------------------------------

/// No `[[route]]` at all: `[oidc]` + `[session]` + `[policy]` are enough. The `[policy]`
/// defaults decide; with `pass_access_token` and `set_authorization` the 202 carries the
/// IdP's access token twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_auth_without_routes_uses_the_policy_defaults() {
    let stack = Direct::start(
        "[policy]\nallow_domains = [\"corp.test\"]\n\n\
         [forward_auth]\npass_access_token = true\nset_authorization = true\n",
    )
    .await;
    let gw = &stack.gateway;
    let nginx_style = Original::Nginx("https://app.corp.test/dash/board?x=1");
    let traefik_style = Original::Traefik {
        host: "app.corp.test",
        uri: "/dash/board?x=1",
        method: Some("GET"),
    };

    // Not signed in: 401 for nginx, even for a browser-like Accept; Traefik relays a
    // redirect to log in.
    let anonymous = Browser::new();
    for original in [nginx_style, traefik_style] {
        assert_login_required(&ask(&anonymous, gw, original).await, original);
    }
    // A client cannot sign itself in with headers.
    let forged = anonymous
        .send(
            anonymous
                .request(Method::GET, &gw.url_for("/oauth2/auth"))
                .header("x-original-url", "https://app.corp.test/")
                .header("x-auth-request-user", "boss")
                .header("x-forwarded-user", "boss")
                .header("authorization", "Bearer not-a-token"),
        )
        .await;
    assert_unauthorized(&forged);

    // Allowed by `[policy]`: identity + both token headers, the IdP's access token for boss
    // (live at the IdP: introspection says active, boss's, issued to the gateway).
    let boss = stack.login("boss").await;
    for original in [nginx_style, traefik_style] {
        let hop = assert_accepted(&ask(&boss, gw, original).await, "boss");
        let token = hop
            .header("x-auth-request-access-token")
            .unwrap_or_else(|| panic!("pass_access_token: no token header\n{hop}"));
        assert_eq!(
            hop.header("authorization"),
            Some(format!("Bearer {token}").as_str()),
            "set_authorization\n{hop}"
        );
        stack
            .idp
            .assert_token_active(token, "gateway", Some(&stack.client_secret), "boss")
            .await;
    }
    // HEAD works too (some proxies probe with it).
    let head = boss
        .send(
            boss.request(Method::HEAD, &gw.url_for("/oauth2/auth"))
                .header("x-original-url", "https://app.corp.test/"),
        )
        .await;
    assert_eq!(head.status, StatusCode::ACCEPTED, "{head}");

    // Denied by `[policy]`: 403, no identity, no token, an audit event.
    let eve = stack.login("eve").await;
    for original in [nginx_style, traefik_style] {
        assert_forbidden(&ask(&eve, gw, original).await);
    }
    wait_deny_event(gw, "eve", "forward_auth").await;

    // The session is the only credential: without the cookie boss is nobody.
    boss.remove_cookie(SESSION_COOKIE);
    assert_login_required(&ask(&boss, gw, nginx_style).await, nginx_style);
}

/// With routes, the route matching the original host + path decides (first match wins,
/// host ports ignored), the `[policy]` defaults apply where none matches; public routes
/// and skipped paths pass without a session; the original path is normalized first.
/// Without `[forward_auth]` options no token is handed out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_auth_applies_the_matching_route() {
    let upstream = EchoUpstream::start().await;
    let u = upstream.url();
    let stack = Direct::start(&format!(
        r#"[policy]
allow_domains = ["corp.test"]

[[route]]
host = "admin.corp.test"
path = "/"
upstream = "{u}"
allow_groups = ["admins"]
allow_domains = []

[[route]]
path = "/public"
upstream = "{u}"
public = true

[[route]]
path = "/api"
upstream = "{u}"
skip_auth_paths = ["/api/health"]
methods = ["GET"]
"#
    ))
    .await;
    let gw = &stack.gateway;
    let admin_host = Original::Nginx("https://admin.corp.test/users?page=2");
    let admin_host_port = Original::Nginx("http://admin.corp.test:8443/users");
    let admin_traefik = Original::Traefik {
        host: "admin.corp.test",
        uri: "/users",
        method: Some("GET"),
    };
    let app_host = Original::Nginx("https://app.corp.test/home");
    let app_traefik = Original::Traefik {
        host: "app.corp.test",
        uri: "/home",
        method: None,
    };

    // cara: corp.test (the default admits her), no admins group (the admin host denies).
    let cara = stack.login("cara").await;
    for original in [app_host, app_traefik] {
        let hop = assert_accepted(&ask(&cara, gw, original).await, "cara");
        assert!(
            hop.header("x-auth-request-access-token").is_none(),
            "pass_access_token is off\n{hop}"
        );
        assert!(
            hop.header("authorization").is_none(),
            "set_authorization is off\n{hop}"
        );
    }
    for original in [admin_host, admin_host_port, admin_traefik] {
        assert_forbidden(&ask(&cara, gw, original).await);
    }
    wait_deny_event(gw, "cara", "route[0]").await;

    // ann: other.test (the default denies), admins (the admin host admits).
    let ann = stack.login("ann").await;
    for original in [admin_host, admin_host_port, admin_traefik] {
        assert_accepted(&ask(&ann, gw, original).await, "ann");
    }
    for original in [app_host, app_traefik] {
        assert_forbidden(&ask(&ann, gw, original).await);
    }
    wait_deny_event(gw, "ann", "forward_auth").await;
    // The `/api` route inherits the default: ann is denied there too, cara passes.
    let api = Original::Nginx("https://app.corp.test/api/items");
    assert_forbidden(&ask(&ann, gw, api).await);
    assert_accepted(&ask(&cara, gw, api).await, "cara");
    wait_deny_event(gw, "ann", "route[2]").await;

    // Without a session: public route and skipped GET pass, nothing else.
    let anonymous = Browser::new();
    for original in [
        Original::Nginx("https://app.corp.test/public/page"),
        Original::Traefik {
            host: "app.corp.test",
            uri: "/public/a/../b?x=1",
            method: Some("POST"),
        },
        Original::Traefik {
            host: "app.corp.test",
            uri: "/api/health?verbose=1",
            method: Some("GET"),
        },
        Original::Traefik {
            host: "app.corp.test",
            uri: "/api/./health",
            method: Some("GET"),
        },
    ] {
        assert_accepted_anonymous(&ask(&anonymous, gw, original).await);
    }
    for original in [
        Original::Traefik {
            host: "app.corp.test",
            uri: "/api/health",
            method: Some("POST"),
        },
        Original::Nginx("https://app.corp.test/api/healthz"),
        Original::Nginx("https://app.corp.test/api/health/x"),
        Original::Nginx("https://app.corp.test/api/items"),
        Original::Nginx("https://app.corp.test/"),
        // Normalization: these are not under /public.
        Original::Nginx("https://app.corp.test/public/../secret"),
        Original::Nginx("https://app.corp.test/public/%2e%2e/secret"),
        Original::Nginx("https://app.corp.test/publicity"),
        Original::Traefik {
            host: "app.corp.test",
            uri: "/public/../secret",
            method: Some("GET"),
        },
        Original::Traefik {
            host: "app.corp.test",
            uri: "/public/%2e%2e/secret",
            method: None,
        },
        Original::Traefik {
            host: "app.corp.test",
            uri: "//public/..//secret",
            method: None,
        },
        // The public route is not public on another path of the admin host's route.
        Original::Nginx("https://admin.corp.test/public/x"),
    ] {
        assert_login_required(&ask(&anonymous, gw, original).await, original);
    }
    // A path servers read differently (nginx decodes %2F) is refused outright: no route's
    // exemption can apply to it.
    let ambiguous = ask(
        &anonymous,
        gw,
        Original::Nginx("https://app.corp.test/public%2F..%2Fsecret"),
    )
    .await;
    assert_eq!(ambiguous.status, StatusCode::BAD_REQUEST, "{ambiguous}");
    assert!(ambiguous.header("x-auth-request-user").is_none());
    // Forward-auth never proxies anything.
    assert!(upstream.received().is_empty(), "{:?}", upstream.received());
}

/// A gateway with a public landing page `/` and a protected `/admin` (GET health checks
/// exempt), asked about anonymous requests.
async fn landing_page_stack(upstream: &EchoUpstream) -> Direct {
    let u = upstream.url();
    Direct::start(&format!(
        r#"[[route]]
path = "/admin"
upstream = "{u}"
skip_auth_paths = ["/admin/health"]
methods = ["GET"]

[[route]]
path = "/"
upstream = "{u}"
public = true
"#
    ))
    .await
}

/// A forward-auth request whose original URL cannot be read must not be taken for `/`:
/// when `/` is a public route, that opens every protected path to anyone. Behind nginx
/// the URL is `$scheme://$http_host$request_uri`, and the client picks `Host`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_auth_fails_closed_on_an_unusable_original_url() {
    let upstream = EchoUpstream::start().await;
    let stack = landing_page_stack(&upstream).await;
    let gw = &stack.gateway;
    let anonymous = Browser::new();
    // Sanity: the protected path is protected, the landing page is public.
    let admin = Original::Nginx("http://app.test/admin/x");
    assert_login_required(&ask(&anonymous, gw, admin).await, admin);
    assert_accepted_anonymous(&ask(&anonymous, gw, Original::Nginx("http://app.test/")).await);

    let mut failures = Vec::new();
    for url in [
        "/admin/x",
        "http://[app/admin/x",
        "http://app%/admin/x",
        "http://app|x/admin/x",
        "http://app test/admin/x",
    ] {
        let hop = ask(&anonymous, gw, Original::Nginx(url)).await;
        if hop.status.is_success() {
            failures.push(format!("X-Original-URL: {url:?} -> {}", hop.status));
        }
    }
    // No description of the original request at all.
    let bare = anonymous
        .send(anonymous.request(Method::GET, &gw.url_for("/oauth2/auth")))
        .await;
    if bare.status.is_success() {
        failures.push(format!(
            "no X-Original-URL / X-Forwarded-Uri -> {}",
            bare.status
        ));
    }
    assert!(
        failures.is_empty(),
        "forward-auth admitted anonymous requests it could not place (evaluated as `/`, \
         the public route):\n{}",
        failures.join("\n")
    );
}

/// `methods` limits `skip_auth_paths` to the listed methods; a forward-auth request that
/// does not say its method (nginx sends no `X-Forwarded-Method` unless configured, and
/// its auth subrequest is always a GET) must not be assumed to be a GET.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_auth_without_a_method_gets_no_method_bound_exemption() {
    let upstream = EchoUpstream::start().await;
    let stack = landing_page_stack(&upstream).await;
    let gw = &stack.gateway;
    let anonymous = Browser::new();
    let health = |method| Original::Traefik {
        host: "app.test",
        uri: "/admin/health",
        method,
    };
    assert_accepted_anonymous(&ask(&anonymous, gw, health(Some("GET"))).await);
    assert_unauthorized(&ask(&anonymous, gw, health(Some("POST"))).await);
    for (what, original) in [
        ("Traefik headers without X-Forwarded-Method", health(None)),
        (
            "X-Original-URL without X-Forwarded-Method",
            Original::Nginx("http://app.test/admin/health"),
        ),
    ] {
        let hop = ask(&anonymous, gw, original).await;
        assert_eq!(
            hop.status,
            StatusCode::UNAUTHORIZED,
            "{what}: the method is unknown, yet the GET-only exemption of /admin/health \
             was applied (behind nginx this lets POST/PUT/DELETE through without a login)\n{hop}"
        );
    }
}

/// Each proxy sets its own description of the original request and passes the client's
/// other headers through (nginx's `proxy_pass`; Traefik copies all request headers by
/// default). So behind Traefik a client can add `X-Original-URL`, and behind nginx
/// `X-Forwarded-Uri`: a description the client added must not win over the proxy's.
/// Two descriptions that disagree cannot both be the proxy's, so they must not pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_auth_client_cannot_override_the_proxy_description() {
    let upstream = EchoUpstream::start().await;
    let stack = landing_page_stack(&upstream).await;
    let gw = &stack.gateway;
    let anonymous = Browser::new();
    let ask_with = |headers: &'static [(&'static str, &'static str)]| {
        let mut request = anonymous.request(Method::GET, &gw.url_for("/oauth2/auth"));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        anonymous.send(request)
    };

    // nginx's X-Original-URL names /admin/x; the client adds Traefik-style headers for `/`.
    let behind_nginx = ask_with(&[
        ("x-original-url", "http://app.test/admin/x"),
        ("x-forwarded-host", "app.test"),
        ("x-forwarded-uri", "/"),
        ("x-forwarded-method", "GET"),
    ])
    .await;
    assert!(
        !behind_nginx.status.is_success(),
        "a client-added X-Forwarded-Uri overrode nginx's X-Original-URL\n{behind_nginx}"
    );

    // Traefik's X-Forwarded-* name /admin/x; the client adds `X-Original-URL` for `/`.
    let behind_traefik = ask_with(&[
        ("x-forwarded-host", "app.test"),
        ("x-forwarded-uri", "/admin/x"),
        ("x-forwarded-method", "GET"),
        ("x-original-url", "http://app.test/"),
    ])
    .await;
    assert!(
        !behind_traefik.status.is_success(),
        "a client-added X-Original-URL overrode Traefik's X-Forwarded-Uri: an anonymous \
         request for /admin/x was approved as `/`\n{behind_traefik}"
    );
}

// ----- real nginx ----------------------------------------------------------------------

/// The nginx `server` block: `auth_request` against the gateway, identity headers from
/// its 202 onto the upstream request, 401 → login, `/oauth2/` proxied to the gateway.
/// nginx's auth subrequest is always a GET, so the original method goes in
/// `X-Forwarded-Method` (the gateway needs it for `methods`-bound exemptions).
fn nginx_server(gateway: SocketAddr, upstream: SocketAddr) -> String {
    nginx_recipe()
        .replace("listen 80;", "listen @LISTEN@;")
        .replace("127.0.0.1:4180", &gateway.to_string())
        .replace("127.0.0.1:8080", &upstream.to_string())
}

/// The README's nginx recipe, as the tests run it.
fn nginx_recipe() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/nginx/portcullis.conf");
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// IdP + gateway (forward-auth only, no routes) + echo upstream, with nginx in front on
/// the gateway's public URL.
struct Fronted {
    idp: Idp,
    gateway: Gateway,
    upstream: EchoUpstream,
    nginx: Nginx,
}

impl Fronted {
    async fn start(rest: &str) -> Fronted {
        let upstream = EchoUpstream::start_named("behind-nginx").await;
        let secret = format!("client-secret-{}", random_hex(16));
        let ports = port_candidates();
        let idp = start_idp(&secret, &ports).await;
        for port in &ports {
            let public_url = format!("http://127.0.0.1:{port}");
            let toml = gateway_toml("@LISTEN@", &public_url, idp.issuer(), &secret, rest);
            let gateway = Gateway::start(&toml).await;
            wait_for_readyz(&gateway).await;
            let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
            match Nginx::start(addr, &nginx_server(gateway.addr(), upstream.addr())).await {
                Ok(nginx) => {
                    return Fronted {
                        idp,
                        gateway,
                        upstream,
                        nginx,
                    }
                }
                Err(e) if e.contains("in use") => {
                    eprintln!("nginx port {port} was taken; trying the next candidate");
                }
                Err(e) => panic!("{e}"),
            }
        }
        panic!("none of the nginx ports {ports:?} could be bound");
    }

    /// The whole login through nginx, starting logged out at `path` (which must have no
    /// query: nginx's `rd=$request_uri` is not encoded). Returns the callback's response.
    async fn login_through_nginx(&self, browser: &Browser, path: &str, user: &str) -> Hop {
        let entry = browser.navigate(&self.nginx.url_for(path)).await;
        assert_eq!(entry.status, StatusCode::FOUND, "{entry}");
        assert_eq!(
            entry.location().as_str(),
            self.nginx.url_for(&format!("/oauth2/start?rd={path}")),
            "nginx's @login\n{entry}"
        );
        let start = browser.follow(&entry).await;
        assert_eq!(start.status, StatusCode::FOUND, "{start}");
        let authorize = start.location();
        assert!(
            authorize.as_str().starts_with(self.idp.issuer()),
            "/oauth2/start through nginx must go to the IdP\n{start}"
        );
        assert_eq!(
            query_param(&authorize, "redirect_uri").as_deref(),
            Some(self.nginx.url_for("/oauth2/callback").as_str()),
            "the redirect URI is on nginx (the gateway's public_url)"
        );
        let idp = browser.idp_sign_in(&authorize, user).await;
        assert_eq!(
            idp.redirect.origin(),
            url::Url::parse(&self.nginx.url()).unwrap().origin(),
            "the IdP must return to nginx"
        );
        let callback = browser.callback(&idp.redirect).await;
        assert_eq!(callback.status, StatusCode::FOUND, "{callback}");
        assert!(
            callback.set_cookie(SESSION_COOKIE).is_some(),
            "no session cookie through nginx\n{callback}"
        );
        callback
    }
}

/// nginx `auth_request` in front of an upstream, the gateway answering `/oauth2/auth` and
/// running the login behind nginx's `/oauth2/`: logged out → 302 to login → full login
/// through nginx → the upstream sees the user's `X-Auth-Request-*`; a denied user gets
/// nginx's 403 and the upstream never sees them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_auth_request_end_to_end() {
    if !nginx_available("nginx_auth_request_end_to_end") {
        return;
    }
    let stack = Fronted::start("[policy]\nallow_domains = [\"corp.test\"]\n").await;
    let nginx = &stack.nginx;

    // Logged out: nginx turns the gateway's 401 into the login redirect; the upstream
    // is not asked.
    let boss = Browser::new();
    let callback = stack
        .login_through_nginx(&boss, "/dashboard/page", "boss")
        .await;
    assert_eq!(callback.location_raw(), "/dashboard/page", "{callback}");
    assert!(
        stack.upstream.received().is_empty(),
        "the upstream saw a logged-out request: {:?}",
        stack.upstream.received()
    );

    // Signed in: the upstream behind nginx sees who it is (forged values overwritten).
    let landing = boss
        .send(
            boss.request(Method::GET, callback.location().as_str())
                .header(ACCEPT, NAVIGATION_ACCEPT)
                .header("x-auth-request-user", "mallory")
                .header("x-auth-request-email", "mallory@corp.test"),
        )
        .await;
    let echo = landing.echo();
    assert_eq!(echo.upstream, "behind-nginx");
    assert_eq!(echo.path, "/dashboard/page");
    assert_eq!(echo.header("x-auth-request-user"), Some("boss"));
    assert_eq!(echo.header("x-auth-request-email"), Some("boss@corp.test"));
    assert_eq!(echo.header("x-auth-request-groups"), Some("admins,eng"));

    // API-style and non-GET requests pass the same check.
    let api = boss
        .send(
            boss.request(Method::POST, &nginx.url_for("/api/items?x=1"))
                .header(ACCEPT, "application/json")
                .body("{\"a\":1}"),
        )
        .await;
    let echo = api.echo();
    assert_eq!(echo.method, "POST");
    assert_eq!(echo.path, "/api/items?x=1");
    assert_eq!(echo.body_len, 7, "the request body reaches the upstream");
    assert_eq!(echo.header("x-auth-request-user"), Some("boss"));

    // Each of those requests was checked by the gateway's /oauth2/auth (via nginx's
    // internal location; clients cannot call it through nginx).
    stack
        .gateway
        .wait_for_log("forward-auth checks", Duration::from_secs(10), |log| {
            log.matches("\"path\":\"/oauth2/auth\"").count() >= 3
        })
        .await;
    let direct = boss.navigate(&nginx.url_for("/oauth2/auth")).await;
    assert_eq!(
        direct.status,
        StatusCode::NOT_FOUND,
        "`internal;`\n{direct}"
    );
    // The check endpoints are not published through nginx: /oauth2/ext_authz goes to the
    // app like any path (after the check), so no answer with the bearer reaches a client.
    for path in ["/oauth2/ext_authz/dashboard", "/oauth2/ext_authz"] {
        let hop = boss.navigate(&nginx.url_for(path)).await;
        assert_eq!(hop.echo().upstream, "behind-nginx", "{hop}");
        assert!(hop.header("authorization").is_none(), "{hop}");
    }

    // A user the policy denies: nginx answers 403 itself, the upstream never sees eve.
    let seen_before = stack.upstream.received().len();
    let eve = Browser::new();
    let callback = stack.login_through_nginx(&eve, "/dashboard", "eve").await;
    let denied = eve.follow(&callback).await;
    assert_eq!(denied.status, StatusCode::FORBIDDEN, "{denied}");
    assert!(
        denied.header("x-upstream-name").is_none(),
        "the 403 came from the upstream\n{denied}"
    );
    let denied_api = eve.api_get(&nginx.url_for("/api/items")).await;
    assert_eq!(denied_api.status, StatusCode::FORBIDDEN, "{denied_api}");
    assert_eq!(
        stack.upstream.received().len(),
        seen_before,
        "the upstream saw a denied user: {:?}",
        stack.upstream.received()
    );
    wait_deny_event(&stack.gateway, "eve", "forward_auth").await;

    // Sign-out through nginx ends the session: the next request is a login redirect.
    let sign_out = boss.navigate(&nginx.url_for("/oauth2/sign_out?rd=/")).await;
    assert_eq!(sign_out.status, StatusCode::FOUND, "{sign_out}");
    let after = boss.navigate(&nginx.url_for("/dashboard/page")).await;
    assert_eq!(after.status, StatusCode::FOUND, "{after}");
    assert_eq!(
        after.location().as_str(),
        nginx.url_for("/oauth2/start?rd=/dashboard/page")
    );
}

/// nginx's `@login` passes `$request_uri` unencoded as `rd`; a request for `//evil.test`
/// must still end on the gateway's own origin after the login.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_login_never_returns_to_another_host() {
    if !nginx_available("nginx_login_never_returns_to_another_host") {
        return;
    }
    let stack = Fronted::start("").await;
    let nginx = &stack.nginx;

    // The raw request line `GET //evil.test/x` (a URL library would reinterpret it).
    let entry = raw_request(
        nginx.addr(),
        "GET",
        "//evil.test/x",
        &[("accept", NAVIGATION_ACCEPT)],
        "",
    )
    .await;
    assert_eq!(entry.status, 302, "{}", entry.text());
    assert_eq!(
        entry
            .header("location")
            .map(|l| l.ends_with("/oauth2/start?rd=//evil.test/x")),
        Some(true),
        "nginx's @login: {:?}",
        entry.header("location")
    );

    let browser = Browser::new();
    let start = browser
        .navigate(&nginx.url_for("/oauth2/start?rd=//evil.test/x"))
        .await;
    assert_eq!(start.status, StatusCode::FOUND, "{start}");
    let idp = browser.idp_sign_in(&start.location(), "boss").await;
    let callback = browser.callback(&idp.redirect).await;
    assert_eq!(callback.status, StatusCode::FOUND, "{callback}");
    assert_eq!(callback.location_raw(), "/", "{callback}");
    assert!(stack.upstream.received().is_empty());

    // Signed in now: the upstream behind nginx gets the request with the identity.
    let landing = browser.navigate(&nginx.url_for("/")).await;
    assert_eq!(landing.echo().header("x-auth-request-user"), Some("boss"));
}

/// Route-based forward-auth behind nginx, where `/` is a public landing page and `/admin`
/// needs a login (GET health checks exempt): nothing reaches the upstream behind nginx
/// for a protected path without a session — not another method on the exempt path, not
/// a `Host` header that makes nginx's `X-Original-URL` unreadable (nginx accepts `[app`,
/// `app%`, `app|x`, ... as hosts; the client picks `Host`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_route_policy_cannot_be_bypassed() {
    if !nginx_available("nginx_route_policy_cannot_be_bypassed") {
        return;
    }
    // The gateway never proxies here; the routes only decide.
    let stack = Fronted::start(
        r#"[[route]]
path = "/admin"
upstream = "http://127.0.0.1:9"
skip_auth_paths = ["/admin/health"]
methods = ["GET"]

[[route]]
path = "/"
upstream = "http://127.0.0.1:9"
public = true
"#,
    )
    .await;
    let addr = stack.nginx.addr();
    let host = addr.to_string();
    let from_upstream = |resp: &common::RawResponse| resp.header("x-upstream-name").is_some();

    // Sanity: the landing page and the GET health check pass, /admin needs a login.
    for target in ["/", "/admin/health"] {
        let resp = raw_request(addr, "GET", target, &[], "").await;
        assert_eq!(resp.status, 200, "GET {target}: {}", resp.text());
        assert!(from_upstream(&resp));
    }
    let resp = raw_request(addr, "GET", "/admin/x", &[], "").await;
    assert_eq!(resp.status, 302, "GET /admin/x: {}", resp.text());

    // Other methods on the exempt path: a login (nginx passes X-Forwarded-Method).
    for method in ["POST", "PUT", "DELETE", "PATCH"] {
        let resp = raw_request(addr, method, "/admin/health", &[("host", &host)], "x").await;
        assert_eq!(
            resp.status,
            302,
            "{method} /admin/health without a session: {}",
            resp.text()
        );
        assert!(
            !from_upstream(&resp),
            "{method} /admin/health reached the upstream"
        );
    }

    // Hosts that nginx accepts but that make `$scheme://$http_host$request_uri` no URL.
    let mut leaks = Vec::new();
    for bad_host in ["[app", "app%", "app|x", "app^x", "app<x", "app\\x"] {
        let resp =
            common::http::try_raw_request(addr, "GET", "/admin/x", &[("host", bad_host)], "").await;
        if let Ok(resp) = resp {
            if from_upstream(&resp) {
                leaks.push(format!(
                    "GET /admin/x with Host: {bad_host:?} -> {} from the upstream",
                    resp.status
                ));
            }
        }
    }
    assert!(
        leaks.is_empty(),
        "anonymous requests reached the protected upstream behind nginx:\n{}",
        leaks.join("\n")
    );
}

/// The README shows the nginx recipe the tests run.
#[test]
fn the_readme_nginx_recipe_is_the_tested_file() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    assert!(
        readme.contains(nginx_recipe().trim_end()),
        "README does not show deploy/nginx/portcullis.conf as it is"
    );
}
