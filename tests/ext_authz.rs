//! Envoy external authorization against the real `portcullis` binary and the node test IdP:
//! the HTTP check (`/oauth2/ext_authz`) with requests built as Envoy's HTTP client builds
//! them from the README's recipe (`deploy/envoy/envoy-http.yaml`: its `path_prefix` and
//! `allowed_headers`), and the gRPC `Authorization/Check` (`server.ext_authz_grpc_listen`)
//! with a tonic client sending CheckRequests as Envoy does. Both answer the same cases
//! the same way: allowed, the root path, public with a forged identity header, browser,
//! API and POST without a session, denied by policy, an expired access token refreshed once
//! for concurrent checks, and a peer outside `server.trusted_proxies`.
//!
//! There is no Envoy package to run here; the recipe file is read so the checks carry
//! exactly the headers Envoy would forward with it.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use envoy_types::ext_authz::v3::pb::{CheckRequest, CheckResponse, HttpResponse};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Request};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::AttributeContext;
use reqwest::header::{CONTENT_LENGTH, HOST};
use reqwest::Method;

use common::direct::Direct;
use common::free_port;
use common::login::{Browser, NAVIGATION_ACCEPT, SESSION_COOKIE};

const RECIPE_HTTP: &str = "deploy/envoy/envoy-http.yaml";
const RECIPE_GRPC: &str = "deploy/envoy/envoy-grpc.yaml";
const API_ACCEPT: &str = "application/json";

/// The identity headers portcullis sets upstream on an allowed check.
const IDENTITY: [&str; 4] = [
    "authorization",
    "x-forwarded-user",
    "x-forwarded-email",
    "x-forwarded-groups",
];

fn recipe(path: &str) -> String {
    let path = format!("{}/{path}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The `- exact: <name>` patterns of the recipe's list `key:` (indentation-scoped).
fn recipe_list(text: &str, key: &str) -> Vec<String> {
    let mut lines = text.lines().skip_while(|l| l.trim() != format!("{key}:"));
    let Some(head) = lines.next() else {
        panic!("the recipe has no {key}")
    };
    let indent = head.len() - head.trim_start().len();
    lines
        .take_while(|l| l.len() - l.trim_start().len() > indent)
        .filter_map(|l| l.trim().strip_prefix("- exact: ").map(str::to_owned))
        .collect()
}

fn recipe_value<'t>(text: &'t str, key: &str) -> &'t str {
    text.lines()
        .find_map(|l| l.trim().strip_prefix(&format!("{key}: ")))
        .unwrap_or_else(|| panic!("the recipe has no {key}"))
}

/// The IdP's users (tests/common/direct.rs): boss is in `admins`, cara is in no group.
/// `/admin` is for admins, `/public` for anyone, every other path for any signed-in user.
fn routes(upstream: &str) -> String {
    format!(
        r#"[[route]]
path = "/admin"
upstream = "{upstream}"
allow_groups = ["admins"]

[[route]]
path = "/public"
upstream = "{upstream}"
public = true

[[route]]
path = "/"
upstream = "{upstream}"
"#
    )
}

struct Stack {
    direct: Direct,
    grpc_port: u16,
    /// The recipe's `path_prefix` and the headers it lets Envoy forward to the check.
    prefix: String,
    allowed: Vec<String>,
}

impl Stack {
    async fn start(server: &str, session: &str, idp_env: &[(&'static str, &'static str)]) -> Stack {
        let http = recipe(RECIPE_HTTP);
        let prefix = recipe_value(&http, "path_prefix").to_string();
        let allowed = recipe_list(&http, "allowed_headers");
        let grpc_port = free_port();
        // Routes need an upstream; the checks never reach it.
        let rest = format!("{session}\n{}", routes("http://127.0.0.1:9"));
        let server = format!("ext_authz_grpc_listen = \"127.0.0.1:{grpc_port}\"\n{server}");
        let env = idp_env.to_vec();
        let direct = Direct::start_full(&server, &rest, move |mut idp| {
            for (k, v) in &env {
                idp = idp.env(*k, *v);
            }
            idp
        })
        .await;
        Stack {
            direct,
            grpc_port,
            prefix,
            allowed,
        }
    }

    async fn default() -> Stack {
        Stack::start("", "", &[]).await
    }
}

/// One original request, as the client sent it to Envoy.
#[derive(Clone)]
struct Original {
    method: &'static str,
    target: &'static str,
    host: &'static str,
    headers: Vec<(&'static str, &'static str)>,
}

fn get(target: &'static str, accept: &'static str) -> Original {
    Original {
        method: "GET",
        target,
        host: "app.corp.test",
        headers: vec![("accept", accept)],
    }
}

/// What either transport answered, normalized.
#[derive(Debug)]
struct Answer {
    status: u16,
    /// Allowed: the headers to set upstream. Denied: the headers for the client.
    headers: HashMap<String, String>,
    /// What Envoy must remove upstream (allowed answers; HTTP: every answer).
    removals: Vec<String>,
    body: String,
    /// gRPC: the CheckResponse's `google.rpc.Code`.
    rpc_code: Option<i32>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

#[derive(Clone, Copy, Debug)]
enum Transport {
    Http,
    Grpc,
}

const BOTH: [Transport; 2] = [Transport::Http, Transport::Grpc];

async fn check(stack: &Stack, browser: &Browser, via: Transport, original: &Original) -> Answer {
    match via {
        Transport::Http => http_check(stack, browser, original).await,
        Transport::Grpc => grpc_check(stack, browser, original).await,
    }
}

/// The HTTP check Envoy's HTTP client sends: original method, prefixed target, the
/// original Host, `Content-Length: 0`, only the recipe's allowed headers (the session
/// cookie among them), and Envoy's own `x-envoy-internal` / `x-forwarded-for`.
async fn http_check(stack: &Stack, browser: &Browser, original: &Original) -> Answer {
    let gateway = &stack.direct.gateway;
    let url = gateway.url_for(&format!("{}{}", stack.prefix, original.target));
    let method = Method::from_bytes(original.method.as_bytes()).expect("method");
    let mut request = browser
        .request(method, &url)
        .header(HOST, original.host)
        .header(CONTENT_LENGTH, "0")
        .header("x-envoy-internal", "true")
        .header("x-forwarded-for", "203.0.113.9")
        .header("x-forwarded-proto", "http");
    for (name, value) in &original.headers {
        if stack.allowed.iter().any(|a| a == name) {
            request = request.header(*name, *value);
        }
    }
    assert!(
        stack.allowed.iter().any(|a| a == "cookie"),
        "the recipe must allow the session cookie"
    );
    let hop = browser.send(request).await;
    let headers = hop
        .headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    Answer {
        status: hop.status.as_u16(),
        removals: split_list(hop.header("x-envoy-auth-headers-to-remove").unwrap_or("")),
        headers,
        body: hop.body.clone(),
        rpc_code: None,
    }
}

fn split_list(text: &str) -> Vec<String> {
    text.split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(str::to_owned)
        .collect()
}

/// A CheckRequest as Envoy builds it: every request header (pseudo-headers included) in
/// `headers`, with `path`, `host`, `method` and `scheme` set.
async fn grpc_check(stack: &Stack, browser: &Browser, original: &Original) -> Answer {
    let mut headers: HashMap<String, String> = original
        .headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    headers.insert(":authority".into(), original.host.into());
    headers.insert(":method".into(), original.method.into());
    headers.insert(":path".into(), original.target.into());
    headers.insert(":scheme".into(), "http".into());
    headers.insert("x-forwarded-proto".into(), "http".into());
    headers.insert("x-request-id".into(), "8a1d3c6e-grpc".into());
    if let Some(session) = browser.cookie(SESSION_COOKIE) {
        headers.insert("cookie".into(), format!("{SESSION_COOKIE}={session}"));
    }
    let request = CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(Request {
                http: Some(HttpRequest {
                    id: "8a1d3c6e-grpc".into(),
                    method: original.method.into(),
                    headers,
                    path: original.target.into(),
                    host: original.host.into(),
                    scheme: "http".into(),
                    protocol: "HTTP/1.1".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
    };
    let mut client = AuthorizationClient::connect(format!("http://127.0.0.1:{}", stack.grpc_port))
        .await
        .expect("connect to the gRPC ext_authz listener");
    let response: CheckResponse = client
        .check(request)
        .await
        .unwrap_or_else(|e| panic!("Check failed: {e}"))
        .into_inner();
    let rpc_code = response.status.as_ref().map(|s| s.code);
    let to_map = |options: &[envoy_types::ext_authz::v3::pb::HeaderValueOption]| {
        options
            .iter()
            .filter_map(|o| o.header.as_ref())
            .map(|h| (h.key.to_ascii_lowercase(), h.value.clone()))
            .collect::<HashMap<_, _>>()
    };
    match response.http_response {
        Some(HttpResponse::OkResponse(ok)) => {
            for option in &ok.headers {
                // Envoy sets (replaces) rather than appends.
                #[allow(deprecated)]
                let append = option.append.as_ref().map(|b| b.value);
                assert_eq!(append, Some(false), "{option:?}");
            }
            Answer {
                status: 200,
                headers: to_map(&ok.headers),
                removals: ok.headers_to_remove.clone(),
                body: String::new(),
                rpc_code,
            }
        }
        Some(HttpResponse::DeniedResponse(denied)) => Answer {
            status: denied.status.map_or(0, |s| s.code as u16),
            headers: to_map(&denied.headers),
            removals: Vec::new(),
            body: denied.body,
            rpc_code,
        },
        other => panic!("not an OK or denied CheckResponse: {other:?} (status {rpc_code:?})"),
    }
}

fn assert_allowed_as(
    answer: &Answer,
    via: Transport,
    user: &str,
    email: &str,
    groups: Option<&str>,
) {
    assert_eq!(answer.status, 200, "{via:?}: {answer:?}");
    if let Some(code) = answer.rpc_code {
        assert_eq!(code, 0, "{via:?}: {answer:?}");
    }
    assert_eq!(
        answer.header("x-forwarded-user"),
        Some(user),
        "{via:?}: {answer:?}"
    );
    assert_eq!(
        answer.header("x-forwarded-email"),
        Some(email),
        "{via:?}: {answer:?}"
    );
    assert_eq!(
        answer.header("x-forwarded-groups"),
        groups,
        "{via:?}: {answer:?}"
    );
    let bearer = answer.header("authorization").unwrap_or("");
    assert!(
        bearer.starts_with("Bearer ") && bearer.len() > 20,
        "{via:?}: {answer:?}"
    );
    // Envoy removes after it sets: what the answer sets is never listed.
    for set in answer.headers.keys() {
        assert!(
            !answer.removals.contains(set),
            "{via:?}: {set} both set and removed: {answer:?}"
        );
    }
    for forged in [
        "x-forwarded-preferred-username",
        "x-auth-request-user",
        "remote-user",
    ] {
        assert!(
            answer.removals.iter().any(|r| r == forged),
            "{via:?}: {forged} not removed: {answer:?}"
        );
    }
    if groups.is_none() {
        assert!(
            answer.removals.iter().any(|r| r == "x-forwarded-groups"),
            "{via:?}: a forged x-forwarded-groups would survive for a user without groups: {answer:?}"
        );
    }
}

fn assert_removes_every_identity_header(answer: &Answer, via: Transport) {
    for name in &IDENTITY[1..] {
        assert!(
            answer.removals.iter().any(|r| r == name),
            "{via:?}: {name} not listed for removal: {answer:?}"
        );
    }
}

fn assert_login_redirect(answer: &Answer, via: Transport, rd: &str) {
    assert_eq!(answer.status, 302, "{via:?}: {answer:?}");
    if let Some(code) = answer.rpc_code {
        assert_eq!(code, 16, "{via:?}: UNAUTHENTICATED expected: {answer:?}");
    }
    assert_eq!(
        answer.header("location"),
        Some(format!("/oauth2/start?rd={rd}").as_str()),
        "{via:?}: {answer:?}"
    );
    assert!(
        answer.header("authorization").is_none(),
        "{via:?}: {answer:?}"
    );
}

fn assert_unauthorized(answer: &Answer, via: Transport) {
    assert_eq!(answer.status, 401, "{via:?}: {answer:?}");
    assert_eq!(
        answer.header("www-authenticate"),
        Some("Bearer"),
        "{via:?}: {answer:?}"
    );
    assert!(answer.header("location").is_none(), "{via:?}: {answer:?}");
    assert!(answer.body.contains("unauthorized"), "{via:?}: {answer:?}");
}

fn assert_forbidden(answer: &Answer, via: Transport) {
    assert_eq!(answer.status, 403, "{via:?}: {answer:?}");
    if let Some(code) = answer.rpc_code {
        assert_eq!(code, 7, "{via:?}: PERMISSION_DENIED expected: {answer:?}");
    }
    assert!(answer.header("location").is_none(), "{via:?}: {answer:?}");
    for name in IDENTITY {
        assert!(
            answer.header(name).is_none(),
            "{via:?}: {name} on a denial: {answer:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_in_users_pass_with_bearer_and_identity_others_are_sent_to_log_in_or_refused() {
    let stack = Stack::default().await;
    let boss = stack.direct.login("boss").await;
    let cara = stack.direct.login("cara").await;
    let anonymous = Browser::new();
    let idp = &stack.direct.idp;

    for via in BOTH {
        // Allowed, on a nested path with a query and at the root.
        for target in ["/reports/q3?year=2026&x=1", "/"] {
            let answer = check(&stack, &boss, via, &get(target, NAVIGATION_ACCEPT)).await;
            assert_allowed_as(&answer, via, "boss", "boss@corp.test", Some("admins,eng"));
            let token = &answer.header("authorization").unwrap_or("")["Bearer ".len()..];
            idp.assert_token_active(token, "gateway", Some(&stack.direct.client_secret), "boss")
                .await;
        }
        let answer = check(&stack, &cara, via, &get("/reports", API_ACCEPT)).await;
        assert_allowed_as(&answer, via, "cara", "cara@corp.test", None);

        // The route's policy: /admin is for admins only.
        let answer = check(&stack, &boss, via, &get("/admin/users", NAVIGATION_ACCEPT)).await;
        assert_allowed_as(&answer, via, "boss", "boss@corp.test", Some("admins,eng"));
        let answer = check(&stack, &cara, via, &get("/admin/users", NAVIGATION_ACCEPT)).await;
        assert_forbidden(&answer, via);

        // No session: a browser navigation is sent to log in and back to the original
        // target; an API call or a POST gets 401.
        let answer = check(
            &stack,
            &anonymous,
            via,
            &get("/reports/q3?year=2026&x=1", NAVIGATION_ACCEPT),
        )
        .await;
        assert_login_redirect(&answer, via, "%2Freports%2Fq3%3Fyear%3D2026%26x%3D1");
        let answer = check(&stack, &anonymous, via, &get("/", NAVIGATION_ACCEPT)).await;
        assert_login_redirect(&answer, via, "%2F");
        let answer = check(&stack, &anonymous, via, &get("/reports", API_ACCEPT)).await;
        assert_unauthorized(&answer, via);
        let post = Original {
            method: "POST",
            ..get("/reports", NAVIGATION_ACCEPT)
        };
        let answer = check(&stack, &anonymous, via, &post).await;
        assert_unauthorized(&answer, via);
        if let Transport::Http = via {
            // Envoy applies removals only to allowed requests, but every answer lists them.
            assert_removes_every_identity_header(&answer, via);
        }
    }
}

/// A public route passes without identity, and the client's own identity headers are listed
/// for removal: Envoy copies only what the answer names, so they would otherwise reach the
/// upstream. Over gRPC Envoy sends every header, so a forged variant is listed by name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_public_route_passes_without_identity_and_forged_identity_is_removed() {
    let stack = Stack::default().await;
    let anonymous = Browser::new();
    let forged = Original {
        headers: vec![
            ("accept", NAVIGATION_ACCEPT),
            ("x-forwarded-user", "boss"),
            ("x-forwarded-groups", "admins"),
            ("x-auth-request-user", "boss"),
            ("x_forwarded_email", "boss@corp.test"),
        ],
        ..get("/public/docs?page=2", NAVIGATION_ACCEPT)
    };
    for via in BOTH {
        let answer = check(&stack, &anonymous, via, &forged).await;
        assert_eq!(answer.status, 200, "{via:?}: {answer:?}");
        for name in IDENTITY {
            assert!(
                answer.header(name).is_none(),
                "{via:?}: {name} set on a public route: {answer:?}"
            );
        }
        assert_removes_every_identity_header(&answer, via);
        assert!(
            answer.removals.iter().any(|r| r == "x-auth-request-user"),
            "{via:?}: {answer:?}"
        );
        // The client's own Authorization is theirs on a public route (as when proxied).
        assert!(
            !answer.removals.iter().any(|r| r == "authorization"),
            "{via:?}: {answer:?}"
        );
        if let Transport::Grpc = via {
            assert!(
                answer.removals.iter().any(|r| r == "x_forwarded_email"),
                "gRPC: the underscore variant the client sent is not listed: {answer:?}"
            );
        }
    }
}

/// An access token about to expire is refreshed once, however many checks arrive at once,
/// and every check passes with the new token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expiring_access_token_is_refreshed_once_for_concurrent_checks() {
    let stack = Stack::start("", "refresh_before = \"3s\"", &[("ACCESS_TOKEN_TTL", "5")]).await;
    let boss = stack.direct.login("boss").await;
    let idp = &stack.direct.idp;
    for via in BOTH {
        // The token now has less than refresh_before left.
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let before = idp.stats().await["token_requests"]["refresh_token"]
            .as_u64()
            .unwrap_or(0);
        let original = get("/reports", API_ACCEPT);
        let answers =
            futures_util::future::join_all((0..8).map(|_| check(&stack, &boss, via, &original)))
                .await;
        let after = idp.stats().await["token_requests"]["refresh_token"]
            .as_u64()
            .unwrap_or(0);
        assert_eq!(
            after,
            before + 1,
            "{via:?}: one refresh for 8 concurrent checks"
        );
        let bearers: Vec<&str> = answers
            .iter()
            .map(|a| a.header("authorization").unwrap_or(""))
            .collect();
        for answer in &answers {
            assert_allowed_as(answer, via, "boss", "boss@corp.test", Some("admins,eng"));
        }
        assert!(
            bearers.iter().all(|b| *b == bearers[0]),
            "{via:?}: {bearers:?}"
        );
        idp.assert_token_active(
            &bearers[0]["Bearer ".len()..],
            "gateway",
            Some(&stack.direct.client_secret),
            "boss",
        )
        .await;
    }
}

/// Only proxies in `server.trusted_proxies` are answered: the answers carry the user's
/// access token. Here loopback is not trusted, so the test's own checks are refused, and so
/// is a forward-auth check that would carry the token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_outside_trusted_proxies_get_403_and_no_token() {
    let stack = Stack::start(
        "trusted_proxies = [\"192.0.2.0/24\"]",
        "\n[forward_auth]\npass_access_token = true\n",
        &[],
    )
    .await;
    let boss = stack.direct.login("boss").await;
    for via in BOTH {
        let answer = check(&stack, &boss, via, &get("/reports", NAVIGATION_ACCEPT)).await;
        assert_forbidden(&answer, via);
        assert!(
            answer.body.contains("trusted_proxies"),
            "{via:?}: {answer:?}"
        );
    }
    let forward_auth = boss
        .send(boss.request(Method::GET, &stack.direct.gateway.url_for("/oauth2/auth")))
        .await;
    assert_eq!(forward_auth.status, 403, "{forward_auth}");
    assert!(
        forward_auth.header("x-auth-request-access-token").is_none(),
        "{forward_auth}"
    );
    assert!(
        forward_auth.header("x-auth-request-user").is_none(),
        "{forward_auth}"
    );
    let log = stack
        .direct
        .gateway
        .wait_for_log(
            "the untrusted checks' events",
            Duration::from_secs(10),
            |log| {
                log.matches("ext_authz_untrusted").count() >= 2
                    && log.contains("forward_auth_untrusted")
            },
        )
        .await;
    assert!(!log.contains("Bearer "), "{log}");
}

/// The recipes the README shows are these files, and they configure what the gateway
/// needs: the prefix, the headers the check must see, the identity headers Envoy copies
/// upstream, 503 on errors, and no check on the gateway's own /oauth2/ endpoints.
#[test]
fn the_readme_recipes_are_the_tested_files_and_set_what_the_checks_need() {
    let readme = recipe("README.md");
    for path in [RECIPE_HTTP, RECIPE_GRPC] {
        let text = recipe(path);
        assert!(
            readme.contains(text.trim_end()),
            "README does not show {path} as it is"
        );
        assert!(
            text.contains("status_on_error: { code: ServiceUnavailable }"),
            "{path}"
        );
        assert!(
            text.contains(
                "regex: \"/oauth2/(start|callback|sign_out|userinfo|backchannel-logout)\""
            ),
            "{path}: the login pages must reach portcullis unchecked"
        );
        assert!(
            !text.contains("match: { prefix: /oauth2"),
            "{path}: the check endpoints would be published"
        );
        assert!(
            text.contains("disabled: true"),
            "{path}: /oauth2/ must not be checked"
        );
        assert!(
            text.contains("headers_with_underscores_action: REJECT_REQUEST"),
            "{path}"
        );
    }
    let http = recipe(RECIPE_HTTP);
    assert_eq!(recipe_value(&http, "path_prefix"), "/oauth2/ext_authz");
    let allowed = recipe_list(&http, "allowed_headers");
    for needed in ["cookie", "authorization", "accept"] {
        assert!(
            allowed.iter().any(|a| a == needed),
            "{needed} not in {allowed:?}"
        );
    }
    assert_eq!(
        recipe_list(&http, "allowed_upstream_headers"),
        IDENTITY.to_vec()
    );
    let to_client = recipe_list(&http, "allowed_client_headers");
    for needed in ["location", "www-authenticate", "set-cookie"] {
        assert!(
            to_client.iter().any(|a| a == needed),
            "{needed} not in {to_client:?}"
        );
    }
    assert!(recipe(RECIPE_GRPC).contains("port_value: 9191"));
}
