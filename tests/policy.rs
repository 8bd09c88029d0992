//! Access policy of the real `portcullis` binary against the node test IdP
//! (`tests/idp`, oidc-provider): per-route rules (`allow_emails`, `allow_domains`,
//! `allow_groups`, `allow_claims`) with `[policy]` defaults inherited key by key, public
//! routes, `skip_auth_paths` + `methods`, path-normalization bypass attempts sent byte for
//! byte, the open-redirect table for `rd`, and the security headers of the gateway's own
//! pages.
//!
//! Every test starts its own IdP, echo upstreams (one per route, named after it, so the
//! echo tells which route served a request) and gateway on loopback ports chosen at run
//! time. The IdP must know the gateway's redirect URI before it starts: the in-process
//! gateway's listener is bound first; for the tests that read the audit log, which need
//! the `portcullis` process, three port candidates are registered and the first one that
//! binds is used.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use reqwest::header::ACCEPT;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use common::gateway::{try_start_gateway, wait_for_readyz, GatewayListener};
use common::idp::{Idp, IdpBuilder};
use common::login::{random_hex, Browser, Hop, NAVIGATION_ACCEPT, SESSION_COOKIE};
use common::{
    free_port, raw_request, wait_until, EchoUpstream, Echoed, Gateway, GatewayAddr,
    InProcessGateway, RawResponse,
};

// ----- users and routes ------------------------------------------------------------------

/// `USERS_JSON`: each user is admitted by exactly the rules the matrix below expects.
fn users() -> Value {
    json!({
        "boss": { "email": "boss@corp.test" },
        "eve":  { "email": "eve@eng.test" },
        "ann":  { "email": "ann@other.test", "groups": ["admins"] },
        "dan":  { "email": "dan@other.test", "department": "eng" },
        "mal":  { "email": "mal@other.test", "groups": ["users"], "department": "sales" },
        // Same address as boss in other letter case: emails and domains compare
        // case-insensitively.
        "caps": { "email": "BOSS@Corp.TEST" },
        // A subdomain of an allowed domain is not the domain.
        "sub":  { "email": "sub@sub.eng.test" },
        // A list-valued claim passes when any item matches.
        "lia":  { "email": "lia@other.test", "department": ["sales", "eng"] },
        // Groups in another claim, for `oidc.groups_claim = "roles"`.
        "rob":  { "email": "rob@other.test", "roles": ["admins", "ops"] },
    })
}

/// `[policy]` for every stack: routes that set no `allow_domains` inherit this.
const GLOBAL_POLICY: &str = "[policy]\nallow_domains = [\"corp.test\"]\n";

/// The routes, in file order (`route[i]` in logs is the index here); each has its own
/// echo upstream named after it. The catch-all `/` is last and protected.
const ROUTES: &[(&str, &str, &str)] = &[
    ("public", "/public", "public = true\n"),
    (
        "admin",
        "/admin",
        "allow_emails = [\"boss@corp.test\"]\nallow_domains = []\n\
         skip_auth_paths = [\"/admin/health\"]\nmethods = [\"GET\"]\n",
    ),
    // One rule kind per route; `allow_domains = []` replaces the inherited `[policy]`
    // domain so only the route's own rule counts.
    (
        "email",
        "/email",
        "allow_emails = [\"Boss@Corp.Test\"]\nallow_domains = []\n",
    ),
    // Replaces the `[policy]` key of the same name (corp.test no longer counts).
    ("domain", "/domain", "allow_domains = [\"ENG.test\"]\n"),
    (
        "group",
        "/group",
        "allow_groups = [\"admins\"]\nallow_domains = []\n",
    ),
    (
        "claim",
        "/claim",
        "allow_claims = { department = [\"eng\"] }\nallow_domains = []\n",
    ),
    // Sets nothing: inherits `allow_domains = ["corp.test"]`.
    ("inherit", "/inherit", ""),
    // Sets only `allow_groups`: inherits the domain key too (key by key), so corp.test
    // users OR admins pass.
    ("mixed", "/mixed", "allow_groups = [\"admins\"]\n"),
    // No rule after inheritance: any signed-in user.
    ("open", "/open", "allow_domains = []\n"),
    // `methods` without `skip_auth_paths`: OPTIONS needs no login, everything else does.
    (
        "preflight",
        "/preflight",
        "methods = [\"OPTIONS\"]\nallow_domains = []\n",
    ),
    ("catchall", "/", ""),
];

/// Routes the matrix probes, and which users each admits.
const MATRIX: &[(&str, &[&str])] = &[
    ("boss", &["admin", "email", "inherit", "mixed", "open"]),
    ("eve", &["domain", "open"]),
    ("ann", &["group", "mixed", "open"]),
    ("dan", &["claim", "open"]),
    ("mal", &["open"]),
    ("caps", &["admin", "email", "inherit", "mixed", "open"]),
    ("sub", &["open"]),
    ("lia", &["claim", "open"]),
];

const MATRIX_ROUTES: &[&str] = &[
    "admin", "email", "domain", "group", "claim", "inherit", "mixed", "open",
];

fn user_email(user: &str) -> String {
    users()[user]["email"].as_str().unwrap().to_string()
}

/// `route[i]` for a route name of [`ROUTES`].
fn route_id(name: &str) -> String {
    let index = ROUTES
        .iter()
        .position(|(n, _, _)| *n == name)
        .unwrap_or_else(|| panic!("no route {name}"));
    format!("route[{index}]")
}

// ----- the stack -----------------------------------------------------------------------

/// The IdP, the upstreams and the gateway: in-process unless a test needs its log.
struct Stack<G = InProcessGateway> {
    idp: Idp,
    gateway: G,
    upstreams: BTreeMap<&'static str, EchoUpstream>,
    /// The gateway's client secret at the IdP (client `gateway`), for introspection.
    client_secret: String,
}

fn gateway_toml(
    port: u16,
    issuer: &str,
    secret: &str,
    oidc_extra: &str,
    upstreams: &BTreeMap<&str, EchoUpstream>,
) -> String {
    let mut routes = String::new();
    for (name, path, extra) in ROUTES {
        routes.push_str(&format!(
            "[[route]]\npath = \"{path}\"\nupstream = \"{}\"\n{extra}\n",
            upstreams[name].url()
        ));
    }
    format!(
        r#"[server]
listen = "127.0.0.1:{port}"
public_url = "http://127.0.0.1:{port}"
allowed_redirect_hosts = ["app.example.com", "*.corp.test"]

[log]
format = "json"
filter = "info"

[oidc]
issuer = "{issuer}"
client_id = "gateway"
client_secret = "{secret}"
scopes = ["openid", "email", "profile", "offline_access"]
{oidc_extra}

[session]
secret = "{session_secret}"
cookie_secure = false

{GLOBAL_POLICY}
{routes}"#,
        session_secret = random_hex(32),
    )
}

/// One echo upstream per route, named after it.
async fn route_upstreams() -> BTreeMap<&'static str, EchoUpstream> {
    let mut upstreams = BTreeMap::new();
    for (name, _, _) in ROUTES {
        upstreams.insert(*name, EchoUpstream::start_named(name).await);
    }
    upstreams
}

/// The IdP with [`users`] and the client `gateway` (`secret`) redirecting to `ports`.
async fn start_idp(secret: &str, ports: &[u16]) -> Idp {
    let mut idp: IdpBuilder = Idp::builder()
        .users(&users())
        .client("gateway", Some(secret));
    for port in ports {
        idp = idp.redirect_uri(format!("http://127.0.0.1:{port}/oauth2/callback"));
    }
    idp.start().await
}

impl Stack {
    async fn start() -> Stack {
        Self::start_with("").await
    }

    /// With extra `[oidc]` keys.
    async fn start_with(oidc_extra: &str) -> Stack {
        let upstreams = route_upstreams().await;
        let listener = GatewayListener::bind().await;
        let secret = format!("client-secret-{}", random_hex(16));
        let idp = start_idp(&secret, &[listener.port()]).await;
        let toml = gateway_toml(
            listener.port(),
            idp.issuer(),
            &secret,
            oidc_extra,
            &upstreams,
        );
        let gateway = InProcessGateway::builder(&toml)
            .listener(listener)
            .start()
            .await;
        wait_for_readyz(&gateway).await;
        Stack {
            idp,
            gateway,
            upstreams,
            client_secret: secret,
        }
    }
}

impl Stack<Gateway> {
    /// The gateway as a `portcullis` process, for tests that read its log.
    async fn start_process() -> Self {
        let upstreams = route_upstreams().await;
        let mut ports = vec![free_port()];
        while ports.len() < 3 {
            let port = free_port();
            if !ports.contains(&port) {
                ports.push(port);
            }
        }
        let secret = format!("client-secret-{}", random_hex(16));
        let idp = start_idp(&secret, &ports).await;
        for port in ports.iter().copied() {
            let toml = gateway_toml(port, idp.issuer(), &secret, "", &upstreams);
            if let Some(gateway) = try_start_gateway(&toml).await {
                return Stack {
                    idp,
                    gateway,
                    upstreams,
                    client_secret: secret,
                };
            }
        }
        panic!("none of the gateway ports {ports:?} could be bound");
    }
}

impl<G: GatewayAddr> Stack<G> {
    fn url(&self) -> String {
        self.gateway.url()
    }

    fn url_for(&self, path: &str) -> String {
        self.gateway.url_for(path)
    }

    fn upstream(&self, name: &str) -> &EchoUpstream {
        &self.upstreams[name]
    }

    /// Signs `user` in (landing on `/open`, which admits everyone) and returns the browser
    /// holding the session.
    async fn login(&self, user: &str) -> Browser {
        let browser = Browser::new();
        let done = browser.login(&self.url(), "/open", user).await;
        let echo = done.landing.echo();
        assert_eq!(echo.upstream, "open");
        assert_eq!(echo.header("x-forwarded-user"), Some(user));
        browser
    }

    /// Every request path any upstream received, with the upstream's name.
    fn all_received(&self) -> Vec<(String, String)> {
        self.upstreams
            .iter()
            .flat_map(|(name, u)| {
                u.received()
                    .into_iter()
                    .map(move |r| (name.to_string(), r.path))
            })
            .collect()
    }
}

/// The gateway's JSON log lines.
fn log_events(gateway: &Gateway) -> Vec<Value> {
    gateway
        .log_text()
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .collect()
}

/// `(sub, route)` of every `policy_deny` audit event so far.
fn deny_events(gateway: &Gateway) -> Vec<(String, String)> {
    log_events(gateway)
        .iter()
        .filter(|e| e["event"] == "policy_deny")
        .map(|e| {
            (
                e["sub"].as_str().unwrap_or("").to_string(),
                e["route"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

// ----- shared assertions ---------------------------------------------------------------

fn assert_security_headers(what: &str, headers: &reqwest::header::HeaderMap) {
    let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    assert_eq!(
        get("cache-control"),
        Some("no-store"),
        "{what}: Cache-Control"
    );
    assert_eq!(
        get("x-content-type-options"),
        Some("nosniff"),
        "{what}: X-Content-Type-Options"
    );
    let is_html = get("content-type").is_some_and(|t| t.starts_with("text/html"));
    if is_html {
        let csp = get("content-security-policy")
            .unwrap_or_else(|| panic!("{what}: an HTML page without Content-Security-Policy"));
        assert!(csp.contains("default-src"), "{what}: weak CSP {csp:?}");
    }
}

/// A signed-in user refused: 403, never a redirect; HTML for a browser, JSON otherwise.
fn assert_forbidden(hop: &Hop, html: bool) {
    assert_eq!(
        hop.status,
        StatusCode::FORBIDDEN,
        "a denied user must get 403\n{hop}"
    );
    assert!(
        hop.header("location").is_none(),
        "403 with a Location\n{hop}"
    );
    assert!(
        hop.header("x-upstream-name").is_none(),
        "the 403 came from an upstream\n{hop}"
    );
    assert_security_headers(&format!("403 for {}", hop.url), &hop.headers);
    let content_type = hop.header("content-type").unwrap_or_default();
    if html {
        assert!(
            content_type.starts_with("text/html"),
            "a browser gets an HTML 403 page\n{hop}"
        );
        assert!(hop.body.contains("403"), "the page says 403\n{hop}");
    } else {
        assert!(
            content_type.starts_with("application/json"),
            "an API client gets a JSON 403\n{hop}"
        );
        assert_eq!(hop.json()["error"], "forbidden", "{hop}");
    }
}

/// Not signed in, API style: 401 JSON with `WWW-Authenticate`, never a redirect.
fn assert_unauthorized(hop: &Hop) {
    assert_eq!(hop.status, StatusCode::UNAUTHORIZED, "{hop}");
    assert!(
        hop.header("location").is_none(),
        "401 with a Location\n{hop}"
    );
    assert!(
        hop.header("www-authenticate").is_some(),
        "401 without WWW-Authenticate\n{hop}"
    );
    assert_security_headers(&format!("401 for {}", hop.url), &hop.headers);
    assert_eq!(hop.json()["error"], "unauthorized", "{hop}");
}

fn form_encode(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

// ----- the policy matrix ---------------------------------------------------------------

/// Every user against every rule kind, as a browser (HTML) and as an API client (JSON).
/// Allowed: the route's own upstream answers and sees the user. Denied: 403, the
/// upstream never sees the request, and the log has a `policy_deny` audit event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_matrix_by_rule_kind() {
    let stack = Stack::start_process().await;
    let mut denied_probes: Vec<String> = Vec::new();
    let mut expected_denials: BTreeSet<(String, String)> = BTreeSet::new();
    let mut denial_count = 0usize;

    for (user, allowed) in MATRIX {
        let browser = stack.login(user).await;
        let email = user_email(user);
        for route in MATRIX_ROUTES {
            let admitted = allowed.contains(route);
            for (kind, html) in [("page", true), ("api", false)] {
                let probe = format!("{user}-{route}-{kind}");
                let url = stack.url_for(&format!("/{route}/x?probe={probe}"));
                let hop = if html {
                    browser.navigate(&url).await
                } else {
                    browser.api_get(&url).await
                };
                if admitted {
                    assert_eq!(
                        hop.status,
                        StatusCode::OK,
                        "{user} must pass {route}\n{hop}"
                    );
                    let echo = hop.echo();
                    assert_eq!(echo.upstream, *route, "served by the wrong upstream");
                    assert_eq!(echo.path, format!("/{route}/x?probe={probe}"));
                    assert_eq!(echo.header("x-forwarded-user"), Some(*user));
                    assert_eq!(echo.header("x-forwarded-email"), Some(email.as_str()));
                    let authorization = echo.header("authorization").unwrap_or_default();
                    assert!(
                        authorization.starts_with("Bearer "),
                        "no bearer upstream: {authorization:?}"
                    );
                    assert!(
                        !echo
                            .header("cookie")
                            .unwrap_or_default()
                            .contains(SESSION_COOKIE),
                        "the session cookie reached the upstream"
                    );
                } else {
                    assert_forbidden(&hop, html);
                    denied_probes.push(probe);
                    expected_denials.insert((user.to_string(), route_id(route)));
                    denial_count += 1;
                }
            }
        }
        // A denied POST is a JSON 403 as well (and never a login redirect).
        if !allowed.contains(&"email") {
            let probe = format!("{user}-email-post");
            let hop = browser
                .send(
                    browser
                        .request(
                            Method::POST,
                            &stack.url_for(&format!("/email/x?probe={probe}")),
                        )
                        .header(ACCEPT, "application/json")
                        .body("payload"),
                )
                .await;
            assert_forbidden(&hop, false);
            denied_probes.push(probe);
            denial_count += 1;
        }
    }

    // The upstreams never saw a denied request.
    let received = stack.all_received();
    for probe in &denied_probes {
        let needle = format!("probe={probe}");
        let leaked: Vec<_> = received
            .iter()
            .filter(|(_, p)| p.ends_with(&needle))
            .collect();
        assert!(
            leaked.is_empty(),
            "denied request reached upstream: {leaked:?}"
        );
    }

    // One audit event per denial, naming the user and the route.
    let events = wait_until(
        "a policy_deny event per denial",
        Duration::from_secs(10),
        || {
            let events = deny_events(&stack.gateway);
            async move { (events.len() >= denial_count).then_some(events) }
        },
    )
    .await;
    assert_eq!(events.len(), denial_count, "policy_deny events: {events:?}");
    let seen: BTreeSet<(String, String)> = events.into_iter().collect();
    for denial in &expected_denials {
        assert!(
            seen.contains(denial),
            "no policy_deny event for {denial:?}; saw {seen:?}"
        );
    }
}

/// No session: a browser navigating to a protected route is sent to log in, anything
/// else gets 401; public routes pass without login and with client-sent identity
/// headers stripped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logged_out_requests_and_public_routes() {
    let stack = Stack::start().await;
    let browser = Browser::new();
    for route in MATRIX_ROUTES.iter().chain(&["preflight"]) {
        let path = format!("/{route}/x?a=1&b=2");
        let hop = browser.navigate(&stack.url_for(&path)).await;
        assert_eq!(hop.status, StatusCode::FOUND, "{hop}");
        assert_eq!(
            hop.location_raw(),
            format!("/oauth2/start?rd={}", form_encode(&path)),
            "{hop}"
        );
        assert_security_headers(&format!("login redirect for {path}"), &hop.headers);
        assert_unauthorized(&browser.api_get(&stack.url_for(&path)).await);
        let post = browser
            .send(
                browser
                    .request(Method::POST, &stack.url_for(&path))
                    .header(ACCEPT, NAVIGATION_ACCEPT)
                    .body("x"),
            )
            .await;
        assert_unauthorized(&post);
    }
    for route in MATRIX_ROUTES {
        assert!(
            stack.upstream(route).received().is_empty(),
            "{route}'s upstream saw a logged-out request"
        );
    }

    // Public: no login, and the client cannot assert an identity.
    let forged = [
        ("x-forwarded-user", "boss"),
        ("x-forwarded-email", "boss@corp.test"),
        ("x-forwarded-groups", "admins"),
        ("x-auth-request-user", "boss"),
        ("x-auth-request-email", "boss@corp.test"),
    ];
    for (method, accept) in [("GET", NAVIGATION_ACCEPT), ("POST", "application/json")] {
        let mut request = browser
            .request(
                Method::from_bytes(method.as_bytes()).unwrap(),
                &stack.url_for("/public/page?q=1"),
            )
            .header(ACCEPT, accept);
        for (name, value) in forged {
            request = request.header(name, value);
        }
        let hop = browser.send(request).await;
        let echo = hop.echo();
        assert_eq!(echo.upstream, "public");
        assert_eq!(echo.method, method);
        assert_eq!(echo.path, "/public/page?q=1");
        for (name, _) in forged {
            assert!(
                echo.header_all(name).is_empty(),
                "client-sent {name} reached the public upstream: {:?}",
                echo.header_all(name)
            );
        }
    }
    // `/publicity` is not under `/public` (segment-aware prefix): the catch-all, protected.
    let hop = browser.api_get(&stack.url_for("/publicity")).await;
    assert_unauthorized(&hop);
}

/// `skip_auth_paths` are anchored regexes on the normalized path and apply only to the
/// listed `methods`; `methods` alone exempts those methods.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skip_auth_paths_are_anchored_and_method_bound() {
    let stack = Stack::start().await;
    let addr = stack.gateway.addr();
    let admin = stack.upstream("admin");

    // Passes without login, with forged identity stripped.
    for (target, upstream_path) in [
        ("/admin/health", "/admin/health"),
        ("/admin/health?full=1", "/admin/health?full=1"),
        ("/admin/./health", "/admin/health"),
        ("/admin/x/../health", "/admin/health"),
        ("//admin//health", "/admin/health"),
        ("/admin/%68ealth", "/admin/health"),
    ] {
        let resp = raw_request(
            addr,
            "GET",
            target,
            &[("x-forwarded-user", "boss"), ("accept", "application/json")],
            "",
        )
        .await;
        assert_eq!(resp.status, 200, "GET {target}: {}", resp.text());
        let echo = Echoed::parse(&resp.body);
        assert_eq!(echo.upstream, "admin", "GET {target}");
        assert_eq!(echo.path, upstream_path, "GET {target}");
        assert!(
            echo.header_all("x-forwarded-user").is_empty(),
            "forged identity on a skipped path"
        );
        assert!(echo.header_all("authorization").is_empty());
    }
    let allowed = admin.received().len();

    // Everything else on /admin needs a login.
    for (method, target) in [
        ("POST", "/admin/health"),
        ("PUT", "/admin/health"),
        ("DELETE", "/admin/health"),
        ("OPTIONS", "/admin/health"),
        ("GET", "/admin/healthz"),
        ("GET", "/admin/health/"),
        ("GET", "/admin/health/x"),
        ("GET", "/admin/health;x"),
        ("GET", "/admin/health/../secret"),
        ("GET", "/admin/health%3F"),
        ("GET", "/admin/xhealth"),
        ("GET", "/admin/secret?/admin/health"),
        ("GET", "/admin"),
    ] {
        let resp = raw_request(addr, method, target, &[("accept", "application/json")], "").await;
        assert_eq!(
            resp.status,
            401,
            "{method} {target} must need a login: {}",
            resp.text()
        );
    }
    // A browser navigation to a non-skipped path is sent to log in.
    let resp = raw_request(
        addr,
        "GET",
        "/admin/healthz",
        &[("accept", NAVIGATION_ACCEPT)],
        "",
    )
    .await;
    assert_eq!(resp.status, 302);
    assert_eq!(
        resp.header("location"),
        Some("/oauth2/start?rd=%2Fadmin%2Fhealthz")
    );
    assert_eq!(
        admin.received().len(),
        allowed,
        "a request that needs a login reached the admin upstream: {:?}",
        admin.received()
    );

    // `methods` without `skip_auth_paths`: OPTIONS passes, the rest need a login.
    let resp = raw_request(addr, "OPTIONS", "/preflight/x", &[], "").await;
    assert_eq!(resp.status, 200, "OPTIONS /preflight/x: {}", resp.text());
    assert_eq!(Echoed::parse(&resp.body).upstream, "preflight");
    for method in ["GET", "POST", "HEAD"] {
        let resp = raw_request(addr, method, "/preflight/x", &[], "").await;
        assert_eq!(resp.status, 401, "{method} /preflight/x");
    }
    assert_eq!(stack.upstream("preflight").received().len(), 1);
}

/// `allow_groups` reads the claim named by `oidc.groups_claim`: with `"roles"`, rob's
/// roles make him an admin and ann's `groups` claim counts for nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_come_from_the_configured_claim() {
    let stack = Stack::start_with("groups_claim = \"roles\"").await;
    let rob = stack.login("rob").await;
    let echo = rob.api_get(&stack.url_for("/group/x")).await.echo();
    assert_eq!(echo.upstream, "group");
    assert_eq!(echo.header("x-forwarded-user"), Some("rob"));
    assert_eq!(echo.header("x-forwarded-groups"), Some("admins,ops"));
    assert_forbidden(&rob.api_get(&stack.url_for("/claim/x")).await, false);

    let ann = stack.login("ann").await;
    assert_forbidden(&ann.api_get(&stack.url_for("/group/x")).await, false);
    assert_forbidden(&ann.navigate(&stack.url_for("/mixed/x")).await, true);
    assert!(stack.upstream("mixed").received().is_empty());
}

// ----- path-normalization bypass attempts ----------------------------------------------

/// What a bypass attempt must end in.
#[derive(Debug, Clone, Copy)]
enum Want {
    /// A login (401 without `Accept: text/html`) on this route.
    Login(&'static str),
    /// Served by this route's upstream with exactly this path (the normalized path
    /// really belongs there).
    Served(&'static str, &'static str),
    /// Refused before routing (400 `ambiguous_path`): servers would read it differently.
    Refused,
}

/// Raw request-targets (sent byte for byte, no session) that try to reach the protected
/// `/admin` upstream through the public route or around the prefix match. None does;
/// the access log shows which route took each one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_tricks_never_reach_the_admin_upstream() {
    use Want::{Login, Refused, Served};
    let stack = Stack::start_process().await;
    let addr = stack.gateway.addr();
    let absolute = format!("http://{addr}/public/../admin");
    let attempts: Vec<(&str, Want)> = vec![
        ("/public/../admin", Login("admin")),
        ("/public/%2e%2e/admin", Login("admin")),
        ("/public/%2E%2E/admin", Login("admin")),
        ("/public/.%2e/admin", Login("admin")),
        ("/public/%2e./admin", Login("admin")),
        ("/public/../../admin", Login("admin")),
        ("/public/./../admin", Login("admin")),
        ("/public;/../admin", Login("admin")),
        ("/public/%2e%2e/admin?x=/public", Login("admin")),
        ("/PUBLIC/../admin", Login("admin")),
        ("//admin", Login("admin")),
        ("///admin//x", Login("admin")),
        ("/admin;x", Login("admin")),
        ("/admin;x/secret", Login("admin")),
        ("/%61dmin", Login("admin")),
        ("/%61%64%6D%69%6E/x", Login("admin")),
        ("/admin/./", Login("admin")),
        ("/./admin", Login("admin")),
        ("/admin/../admin/x", Login("admin")),
        (absolute.as_str(), Login("admin")),
        // Not the admin route at all: `/ADMIN` (case-sensitive), `;` inside a segment.
        ("/ADMIN", Login("catchall")),
        ("/Admin/secret", Login("catchall")),
        ("/admin%3bx", Login("catchall")),
        ("/adminx", Login("catchall")),
        ("/public/x/../y", Served("public", "/public/y")),
        // Encoded separators, backslashes, `;` on dot segments, control characters: some
        // upstreams decode or strip them, so they are refused before routing.
        ("/admin%2f", Refused),
        ("/admin%2F..%2Fpublic", Refused),
        ("/%2Fadmin", Refused),
        ("/admin%00", Refused),
        ("/public\\..\\admin", Refused),
        ("/admin\\x", Refused),
        ("/public%2F..%2Fadmin", Refused),
        ("/public%2f%2e%2e%2fadmin", Refused),
        ("/public/%2e%2e%2fadmin", Refused),
        ("/public/..%2Fadmin", Refused),
        ("/public/..;/admin", Refused),
    ];

    let mut ids = Vec::new();
    for (i, (target, want)) in attempts.iter().enumerate() {
        let id = format!("bypass-{i}-{}", random_hex(4));
        let resp = raw_request(
            addr,
            "GET",
            target,
            &[
                ("x-request-id", id.as_str()),
                ("accept", "application/json"),
                ("x-forwarded-user", "boss"),
            ],
            "",
        )
        .await;
        match want {
            Login(_) => assert_unauthorized_raw(target, &resp),
            Refused => {
                assert_eq!(resp.status, 400, "GET {target}: {}", resp.text());
                assert!(
                    resp.text().contains("ambiguous_path"),
                    "GET {target}: {}",
                    resp.text()
                );
                assert!(
                    resp.header("x-upstream-name").is_none(),
                    "GET {target} reached an upstream"
                );
            }
            Served(upstream, path) => {
                assert_eq!(resp.status, 200, "GET {target}: {}", resp.text());
                let echo = Echoed::parse(&resp.body);
                assert_eq!(echo.upstream, *upstream, "GET {target}");
                assert_eq!(echo.path, *path, "GET {target}");
                assert!(echo.header_all("x-forwarded-user").is_empty());
            }
        }
        // As a browser: a login redirect that returns to the original target.
        if let Login(_) = want {
            let resp = raw_request(addr, "GET", target, &[("accept", NAVIGATION_ACCEPT)], "").await;
            assert_eq!(resp.status, 302, "browser GET {target}: {}", resp.text());
            let location = resp.header("location").unwrap_or_default();
            assert!(
                location.starts_with("/oauth2/start?rd="),
                "browser GET {target}: Location {location:?}"
            );
        }
        ids.push((id, *target, *want));
    }

    assert!(
        stack.upstream("admin").received().is_empty(),
        "the admin upstream was reached without a login: {:?}",
        stack.upstream("admin").received()
    );
    assert!(stack.upstream("catchall").received().is_empty());

    // Which route took each request, from the access log.
    let last = ids.last().unwrap().0.clone();
    stack
        .gateway
        // Its access line, not just its audit line: that one is logged first, and log
        // lines reach the file from a background writer, after the response.
        .wait_for_log("the last bypass request", Duration::from_secs(10), |log| {
            log.lines()
                .any(|l| l.contains(&last) && l.contains("\"message\":\"request\""))
        })
        .await;
    let events = log_events(&stack.gateway);
    for (id, target, want) in &ids {
        let line = events
            .iter()
            .find(|e| e["request_id"] == id.as_str() && e["message"] == "request")
            .unwrap_or_else(|| panic!("no access log line for {target} ({id})"));
        let (route, status) = match want {
            Login(route) => (Some(route_id(route)), 401),
            Served(route, _) => (Some(route_id(route)), 200),
            // Refused before routing, or (an encoded slash) by the route it would take.
            Refused => (None, 400),
        };
        if let Some(route) = route {
            assert_eq!(line["route"], route.as_str(), "{target}: {line}");
        }
        assert_eq!(line["status"], status, "{target}: {line}");
    }
}

fn assert_unauthorized_raw(target: &str, resp: &RawResponse) {
    assert_eq!(
        resp.status,
        401,
        "GET {target} without a session must be 401: {} {}",
        resp.status,
        resp.text()
    );
    assert!(
        resp.header("x-upstream-name").is_none(),
        "GET {target} reached an upstream"
    );
}

// ----- open redirects ------------------------------------------------------------------

/// `rd` values that must never leave the gateway's origin (allowed hosts:
/// `app.example.com`, `*.corp.test`).
const HOSTILE_RD: &[&str] = &[
    "//evil.test",
    "//evil.test/path",
    "///evil.test",
    "/\\evil.test",
    "\\\\evil.test",
    "\\/evil.test",
    "/\\/evil.test",
    "https:evil.test",
    "https:/evil.test",
    "http:evil.test",
    "https:\\\\evil.test",
    "javascript:alert(1)",
    "JavaScript:alert(document.domain)",
    "javascript://app.example.com/%0aalert(1)",
    "data:text/html,<script>alert(1)</script>",
    "vbscript:msgbox(1)",
    "https://evil.test",
    "HTTPS://EVIL.TEST",
    "https://evil.test/app.example.com",
    "https://evil.test?app.example.com",
    "https://evil.test#app.example.com",
    "https://app.example.com@evil.test",
    "https://app.example.com:443@evil.test/",
    "https://a.corp.test@evil.test/",
    "https://app.example.com.evil.test",
    "https://app.example.com%2eevil.test/",
    "https://evil.test%23.app.example.com/",
    "https://evil.test\\@app.example.com/",
    "https://a.corp.test.evil.test/",
    "https://corp.test/",
    "https://evilcorp.test/",
    "ftp://app.example.com/",
    "//app.example.com/",
    "http://\u{430}pp.example.com/",
    "/\t/evil.test",
    "/\n/evil.test",
    "\t//evil.test",
    " //evil.test",
    "/%09/evil.test",
    "%2F%2Fevil.test",
    "/%2Fevil.test",
    "/%5Cevil.test",
    "%5C%5Cevil.test",
    "/%0d%0aSet-Cookie:%20x=1",
    "/\r\nSet-Cookie: x=1",
    "https://app.example.com\r\nSet-Cookie: x=1",
    "evil.test",
    "",
];

/// `rd` values that are kept, with the `Location` they produce.
const GOOD_RD: &[(&str, &str)] = &[
    ("/x?y=1", "/x?y=1"),
    ("/a/b?c=d&e=f", "/a/b?c=d&e=f"),
    ("https://app.example.com/x", "https://app.example.com/x"),
    ("https://a.corp.test/", "https://a.corp.test/"),
    ("http://b.a.corp.test/p?q=1", "http://b.a.corp.test/p?q=1"),
];

/// A hostile `rd` never becomes the post-login or post-logout destination: the login
/// still starts (302 to the IdP) and ends on `/`; sign-out goes to `/`. Good targets are
/// kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_redirects_are_refused() {
    let stack = Stack::start().await;
    let client = common::client();
    let authorize_prefix = format!("{}/auth?", stack.idp.issuer());

    let sign_out_location = |rd: &'static str| {
        let url = stack.url_for(&format!("/oauth2/sign_out?rd={}", form_encode(rd)));
        let client = client.clone();
        async move {
            let resp = client
                .get(&url)
                .header("sec-fetch-site", "same-origin")
                .send()
                .await
                .expect("GET /oauth2/sign_out");
            assert_eq!(resp.status(), StatusCode::FOUND, "sign_out rd={rd:?}");
            resp.headers()
                .get("location")
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                .unwrap_or_default()
        }
    };

    assert!(HOSTILE_RD.len() >= 30);
    for rd in HOSTILE_RD {
        // The login begins normally (the target is only used at the end).
        let started = Browser::new().start_login(&stack.url(), rd).await;
        assert!(
            started
                .authorize_url
                .as_str()
                .starts_with(&authorize_prefix),
            "rd={rd:?}: /oauth2/start went to {}",
            started.authorize_url
        );
        assert_eq!(
            sign_out_location(rd).await,
            "/",
            "sign_out must not redirect to rd={rd:?}"
        );
    }
    for (rd, location) in GOOD_RD {
        assert_eq!(sign_out_location(rd).await, *location, "sign_out rd={rd:?}");
    }

    // A repeated `rd` (parameter pollution) is refused, never half-honoured.
    for query in ["rd=/ok&rd=%2F%2Fevil.test", "rd=%2F%2Fevil.test&rd=/ok"] {
        for endpoint in ["/oauth2/start", "/oauth2/sign_out"] {
            let resp = raw_request(
                stack.gateway.addr(),
                "GET",
                &format!("{endpoint}?{query}"),
                &[],
                "",
            )
            .await;
            let location = resp.header("location").unwrap_or_default();
            assert!(
                resp.status == 400 || location == "/" || location.starts_with(&authorize_prefix),
                "{endpoint}?{query}: {} Location {location:?}",
                resp.status
            );
            assert!(!location.contains("evil"), "{endpoint}?{query}: {location}");
        }
    }

    // The whole login for a handful: the callback's Location is the validated target.
    let browser = Browser::new();
    let full: Vec<(&str, &str)> = [
        "//evil.test",
        "/\\evil.test",
        "https://app.example.com@evil.test",
        "javascript:alert(1)",
        "http://\u{430}pp.example.com/",
        "/\t/evil.test",
        "%2F%2Fevil.test",
        "https://evil.test/app.example.com",
    ]
    .into_iter()
    .map(|rd| (rd, "/"))
    .chain([
        ("/x?y=1", "/x?y=1"),
        ("https://a.corp.test/", "https://a.corp.test/"),
    ])
    .collect();
    for (rd, want) in full {
        let started = browser.start_login(&stack.url(), rd).await;
        let idp = browser.idp_sign_in(&started.authorize_url, "boss").await;
        let callback = browser.callback(&idp.redirect).await;
        assert_eq!(callback.status, StatusCode::FOUND, "rd={rd:?}\n{callback}");
        assert!(
            callback.set_cookie(SESSION_COOKIE).is_some(),
            "rd={rd:?}: no session\n{callback}"
        );
        assert_eq!(
            callback.location_raw(),
            want,
            "after login with rd={rd:?}\n{callback}"
        );
    }
}

// ----- security headers ----------------------------------------------------------------

/// The gateway's own responses: no caching, no sniffing; HTML pages with a CSP; the
/// callback (its URL carries the code) with `Referrer-Policy: no-referrer`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_pages_carry_security_headers() {
    let stack = Stack::start().await;
    let browser = Browser::new();

    let started = browser.start_login(&stack.url(), "/open/x").await;
    assert_security_headers("/oauth2/start", &started.start.headers);

    let idp = browser.idp_sign_in(&started.authorize_url, "eve").await;
    let callback = browser.callback(&idp.redirect).await;
    assert_eq!(callback.status, StatusCode::FOUND, "{callback}");
    assert_security_headers("/oauth2/callback", &callback.headers);
    assert_eq!(
        callback.header("referrer-policy"),
        Some("no-referrer"),
        "{callback}"
    );

    // A callback that fails shows an HTML page, with the same headers.
    let failed = browser
        .navigate(&stack.url_for("/oauth2/callback?code=x&state=nope"))
        .await;
    assert!(failed.status.is_client_error(), "{failed}");
    assert!(
        failed
            .header("content-type")
            .is_some_and(|t| t.starts_with("text/html")),
        "{failed}"
    );
    assert_security_headers("failed callback", &failed.headers);
    assert_eq!(failed.header("referrer-policy"), Some("no-referrer"));

    // 403 pages (eve is not boss).
    let denied = browser.navigate(&stack.url_for("/email/x")).await;
    assert_forbidden(&denied, true);
    let denied = browser.api_get(&stack.url_for("/email/x")).await;
    assert_forbidden(&denied, false);

    // An allowed request reaches its upstream.
    let allowed = browser.navigate(&stack.url_for("/domain/x")).await;
    assert_eq!(allowed.echo().upstream, "domain");

    // 404 for an unknown own endpoint, as a page.
    let missing = browser.navigate(&stack.url_for("/oauth2/nope")).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND, "{missing}");
    assert_security_headers("/oauth2/nope", &missing.headers);

    // Sign-out redirect, and the logged-out 401/302.
    let anonymous = Browser::new();
    let sign_out = anonymous
        .navigate(&stack.url_for("/oauth2/sign_out?rd=/bye"))
        .await;
    assert_eq!(sign_out.status, StatusCode::FOUND, "{sign_out}");
    assert_security_headers("/oauth2/sign_out", &sign_out.headers);
    let login = anonymous.navigate(&stack.url_for("/email/x")).await;
    assert_eq!(login.status, StatusCode::FOUND);
    assert_security_headers("login redirect", &login.headers);
    assert_unauthorized(&anonymous.api_get(&stack.url_for("/email/x")).await);

    // The upstream saw eve's access token (live at the IdP: introspection says active,
    // eve's, issued to the gateway), not a gateway artefact.
    let echo = allowed.echo();
    let token = echo
        .header("authorization")
        .and_then(|a| a.strip_prefix("Bearer "))
        .expect("bearer upstream");
    stack
        .idp
        .assert_token_active(token, "gateway", Some(&stack.client_secret), "eve")
        .await;
}
