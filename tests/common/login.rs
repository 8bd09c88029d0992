//! A browser-like HTTP client for driving logins hop by hop.
//!
//! [`Browser`] is a reqwest client that never follows redirects, with its own cookie jar
//! that behaves like a browser's for loopback hosts: cookies are per host (not per
//! port), `Path` scoped, `Secure` ones only over https, `Max-Age=0` deletes. Every
//! request returns a [`Hop`] (status, headers, body, URL) so each step can be asserted.
//! Tests can read, replace, tamper with or delete cookies.
//!
//! The flow through the gateway and the node test IdP (`tests/idp`):
//!
//! ```text
//! GET gateway/path            -> 302 /oauth2/start?rd=/path          [begin_login]
//! GET /oauth2/start?rd=/path  -> 302 IdP /auth?...  + login cookie
//! GET IdP /auth               -> 303 /interaction/<uid>               [idp_open]
//! GET /interaction/<uid>      -> 200 login form
//! POST login form             -> 303 /auth/<uid> -> 303 /interaction/<uid2>   [idp_finish]
//! POST consent form           -> 303 /auth/<uid2> -> 303 gateway /oauth2/callback?code&state&iss
//! GET /oauth2/callback        -> 302 /path + session cookie           [callback]
//! GET /path                   -> upstream
//! GET /oauth2/sign_out?rd=/x  -> 302 IdP /session/end?...              [idp_end_session]
//! POST /session/end/confirm   -> 303 gateway /x
//! ```

use std::sync::Mutex;

use cookie::Cookie;
use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, COOKIE, LOCATION, SET_COOKIE};
use reqwest::{Method, RequestBuilder, StatusCode};
use scraper::{Html, Selector};
use url::Url;

use super::upstream::Echoed;

/// The `Accept` header of a browser navigation.
pub const NAVIGATION_ACCEPT: &str =
    "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";

/// Name of the session cookie without TLS (`cookie_secure = false`).
pub const SESSION_COOKIE: &str = "portcullis";

/// Prefix of the login-in-progress cookies without TLS.
pub const LOGIN_COOKIE_PREFIX: &str = "portcullis-login-";

/// At most this many redirects/pages inside the IdP before giving up.
const MAX_IDP_HOPS: usize = 20;

/// One request and its complete response.
#[derive(Debug, Clone)]
pub struct Hop {
    pub method: Method,
    pub url: Url,
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Hop {
    /// A response header (first value) as a string; `None` if absent or not visible ASCII.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Whether this is a redirect (3xx with `Location`).
    pub fn is_redirect(&self) -> bool {
        self.status.is_redirection() && self.headers.contains_key(LOCATION)
    }

    /// The `Location` header exactly as sent.
    pub fn location_raw(&self) -> &str {
        self.header("location").unwrap_or_else(|| {
            panic!(
                "{} {}: no (visible-ASCII) Location header\n{self}",
                self.method, self.url
            )
        })
    }

    /// Asserts a redirect and returns its target resolved against this request's URL.
    pub fn location(&self) -> Url {
        assert!(
            self.is_redirect(),
            "{} {}: expected a redirect\n{self}",
            self.method,
            self.url
        );
        self.url
            .join(self.location_raw())
            .unwrap_or_else(|e| panic!("bad Location {:?}: {e}", self.location_raw()))
    }

    /// Every `Set-Cookie` of the response, parsed.
    pub fn set_cookies(&self) -> Vec<Cookie<'static>> {
        self.headers
            .get_all(SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(|v| {
                Cookie::parse(v.to_string())
                    .unwrap_or_else(|e| panic!("unparsable Set-Cookie {v:?}: {e}"))
            })
            .collect()
    }

    /// The `Set-Cookie` for `name`, if any.
    pub fn set_cookie(&self, name: &str) -> Option<Cookie<'static>> {
        self.set_cookies().into_iter().find(|c| c.name() == name)
    }

    /// `Set-Cookie` headers whose name starts with `prefix`.
    pub fn set_cookies_starting_with(&self, prefix: &str) -> Vec<Cookie<'static>> {
        self.set_cookies()
            .into_iter()
            .filter(|c| c.name().starts_with(prefix))
            .collect()
    }

    /// Asserts 200 and parses the body as the echo upstream's JSON.
    pub fn echo(&self) -> Echoed {
        assert_eq!(
            self.status,
            StatusCode::OK,
            "{} {}: expected the upstream's echo\n{self}",
            self.method,
            self.url
        );
        Echoed::parse(self.body.as_bytes())
    }

    /// The body as JSON (panics if it is not).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| {
            panic!(
                "{} {}: body is not JSON ({e})\n{self}",
                self.method, self.url
            )
        })
    }
}

impl std::fmt::Display for Hop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "--- {} {} -> {}", self.method, self.url, self.status)?;
        for (name, value) in &self.headers {
            writeln!(f, "{name}: {}", String::from_utf8_lossy(value.as_bytes()))?;
        }
        let body: String = self.body.chars().take(2000).collect();
        write!(f, "\n{body}")
    }
}

#[derive(Debug, Clone)]
struct StoredCookie {
    name: String,
    value: String,
    host: String,
    path: String,
    secure: bool,
}

/// A browser without JavaScript: a cookie jar, no automatic redirects.
pub struct Browser {
    client: reqwest::Client,
    jar: Mutex<Vec<StoredCookie>>,
}

impl Default for Browser {
    fn default() -> Self {
        Self::new()
    }
}

impl Browser {
    pub fn new() -> Self {
        Browser {
            client: super::http::client(),
            jar: Mutex::new(Vec::new()),
        }
    }

    /// A request builder; send it with [`Browser::send`] so cookies are attached and kept.
    pub fn request(&self, method: Method, url: &str) -> RequestBuilder {
        self.client.request(method, url)
    }

    /// Sends `request` with the jar's cookies for its URL (appended to any `Cookie` header
    /// the test set itself), stores the response's cookies, reads the whole body.
    pub async fn send(&self, request: RequestBuilder) -> Hop {
        let mut request = request.build().expect("build request");
        let url = request.url().clone();
        let method = request.method().clone();
        if let Some(jar_cookies) = self.cookie_header(&url) {
            let merged = match request.headers().get(COOKIE).and_then(|v| v.to_str().ok()) {
                Some(own) => format!("{own}; {jar_cookies}"),
                None => jar_cookies,
            };
            request.headers_mut().insert(
                COOKIE,
                HeaderValue::from_str(&merged).expect("cookie header"),
            );
        }
        let resp = self
            .client
            .execute(request)
            .await
            .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp
            .text()
            .await
            .unwrap_or_else(|e| panic!("{method} {url}: reading the body: {e}"));
        let hop = Hop {
            method,
            url,
            status,
            headers,
            body,
        };
        self.store_cookies(&hop);
        hop
    }

    /// A top-level navigation: `GET` with a browser's `Accept`.
    pub async fn navigate(&self, url: &str) -> Hop {
        // As a browser sends it for a URL the user typed or a bookmark (Fetch Metadata):
        // the gateway's sign-out only acts on those and on same-origin navigations.
        self.send(
            self.request(Method::GET, url)
                .header(ACCEPT, NAVIGATION_ACCEPT)
                .header("sec-fetch-site", "none"),
        )
        .await
    }

    /// An API call: `GET` with `Accept: application/json`.
    pub async fn api_get(&self, url: &str) -> Hop {
        self.send(
            self.request(Method::GET, url)
                .header(ACCEPT, "application/json"),
        )
        .await
    }

    /// Navigates to where `hop` redirects.
    pub async fn follow(&self, hop: &Hop) -> Hop {
        self.navigate(hop.location().as_str()).await
    }

    // ----- cookie jar ---------------------------------------------------------------

    /// The value of cookie `name` (any host/path), if the jar has one.
    pub fn cookie(&self, name: &str) -> Option<String> {
        let jar = self.jar.lock().unwrap();
        jar.iter().find(|c| c.name == name).map(|c| c.value.clone())
    }

    /// Names of all cookies in the jar.
    pub fn cookie_names(&self) -> Vec<String> {
        let jar = self.jar.lock().unwrap();
        jar.iter().map(|c| c.name.clone()).collect()
    }

    /// Names of the cookies starting with `prefix`.
    pub fn cookies_starting_with(&self, prefix: &str) -> Vec<(String, String)> {
        let jar = self.jar.lock().unwrap();
        jar.iter()
            .filter(|c| c.name.starts_with(prefix))
            .map(|c| (c.name.clone(), c.value.clone()))
            .collect()
    }

    /// Sets (or replaces) a cookie for `127.0.0.1`, `Path=/`, as if the site had set it.
    pub fn set_cookie(&self, name: &str, value: &str) {
        self.remove_cookie(name);
        self.jar.lock().unwrap().push(StoredCookie {
            name: name.to_string(),
            value: value.to_string(),
            host: "127.0.0.1".to_string(),
            path: "/".to_string(),
            secure: false,
        });
    }

    /// Deletes every cookie named `name`.
    pub fn remove_cookie(&self, name: &str) {
        self.jar.lock().unwrap().retain(|c| c.name != name);
    }

    /// The `Cookie` header a browser would send to `url`: most specific path first.
    fn cookie_header(&self, url: &Url) -> Option<String> {
        let host = url.host_str()?;
        let path = url.path();
        let jar = self.jar.lock().unwrap();
        let mut matching: Vec<&StoredCookie> = jar
            .iter()
            .filter(|c| c.host == host && path_matches(&c.path, path))
            .filter(|c| !c.secure || url.scheme() == "https")
            .collect();
        matching.sort_by_key(|c| std::cmp::Reverse(c.path.len()));
        if matching.is_empty() {
            return None;
        }
        let pairs: Vec<String> = matching
            .iter()
            .map(|c| format!("{}={}", c.name, c.value))
            .collect();
        Some(pairs.join("; "))
    }

    fn store_cookies(&self, hop: &Hop) {
        let Some(host) = hop.url.host_str() else {
            return;
        };
        let mut jar = self.jar.lock().unwrap();
        for cookie in hop.set_cookies() {
            let path = cookie
                .path()
                .filter(|p| p.starts_with('/'))
                .map(str::to_string)
                .unwrap_or_else(|| default_path(hop.url.path()));
            jar.retain(|c| !(c.name == cookie.name() && c.host == host && c.path == path));
            let expired = cookie.max_age().is_some_and(|age| age.whole_seconds() <= 0)
                || cookie
                    .expires_datetime()
                    .is_some_and(|at| at <= cookie::time::OffsetDateTime::now_utc());
            if !expired {
                jar.push(StoredCookie {
                    name: cookie.name().to_string(),
                    value: cookie.value().to_string(),
                    host: host.to_string(),
                    path,
                    secure: cookie.secure().unwrap_or(false),
                });
            }
        }
    }

    // ----- the login flow ----------------------------------------------------------

    /// Navigates to `gateway_url + path` without a session, asserts the gateway sends the
    /// browser to `/oauth2/start?rd=<path>`, follows that, and returns the login that began.
    pub async fn begin_login(&self, gateway_url: &str, path: &str) -> StartedLogin {
        let entry = self.navigate(&format!("{gateway_url}{path}")).await;
        assert_eq!(
            entry.status,
            StatusCode::FOUND,
            "a browser without a session must be sent to log in\n{entry}"
        );
        let expected: String = url::form_urlencoded::byte_serialize(path.as_bytes()).collect();
        assert_eq!(
            entry.location_raw(),
            format!("/oauth2/start?rd={expected}"),
            "the gateway must send the browser to /oauth2/start with the original path"
        );
        let start = self.follow(&entry).await;
        StartedLogin::from_start(Some(entry), start)
    }

    /// `GET /oauth2/start?rd=<rd>` directly (`rd` is sent form-encoded as given).
    pub async fn start_login(&self, gateway_url: &str, rd: &str) -> StartedLogin {
        let rd: String = url::form_urlencoded::byte_serialize(rd.as_bytes()).collect();
        let start = self
            .navigate(&format!("{gateway_url}/oauth2/start?rd={rd}"))
            .await;
        StartedLogin::from_start(None, start)
    }

    /// Opens `url` at the IdP and follows its redirects until it shows a page or sends the
    /// browser elsewhere (back to the client).
    pub async fn idp_open(&self, url: &Url) -> IdpStep {
        let origin = url.origin();
        let mut hop = self.navigate(url.as_str()).await;
        for _ in 0..MAX_IDP_HOPS {
            if !hop.is_redirect() {
                assert_eq!(
                    hop.status,
                    StatusCode::OK,
                    "the IdP answered with an error page\n{hop}"
                );
                return IdpStep::Page(hop);
            }
            let next = hop.location();
            if next.origin() != origin {
                return IdpStep::Left(next);
            }
            hop = self.navigate(next.as_str()).await;
        }
        panic!("more than {MAX_IDP_HOPS} hops inside the IdP; last:\n{hop}");
    }

    /// Continues at the IdP from `step`: signs in as `user` on the login form, approves
    /// the consent form, until the IdP sends the browser back. Returns where it sends it
    /// (the gateway's callback URL, not followed) and which pages were shown.
    pub async fn idp_finish(&self, mut step: IdpStep, user: &str) -> IdpOutcome {
        let mut pages = Vec::new();
        for _ in 0..MAX_IDP_HOPS {
            let page = match step {
                IdpStep::Left(url) => {
                    return IdpOutcome {
                        redirect: url,
                        pages,
                    }
                }
                IdpStep::Page(page) => page,
            };
            let form = HtmlForm::first_in(&page);
            let prompt = form.field("prompt").unwrap_or_default().to_string();
            let mut fields = form.fields.clone();
            match prompt.as_str() {
                "login" => {
                    set_field(&mut fields, "login", user);
                    set_field(&mut fields, "password", "any password");
                    pages.push(IdpPage::Login);
                }
                "consent" => pages.push(IdpPage::Consent),
                other => panic!("unexpected IdP form (prompt {other:?})\n{page}"),
            }
            let posted = self
                .send(
                    self.request(Method::POST, form.action.as_str())
                        .header(ACCEPT, NAVIGATION_ACCEPT)
                        .form(&fields),
                )
                .await;
            assert!(
                posted.is_redirect(),
                "the IdP did not accept the {prompt} form\n{posted}"
            );
            step = self.idp_open(&posted.location()).await;
        }
        panic!("the IdP showed more than {MAX_IDP_HOPS} pages");
    }

    /// Signs in at the IdP from the authorization URL; see [`Browser::idp_finish`].
    pub async fn idp_sign_in(&self, authorize_url: &Url, user: &str) -> IdpOutcome {
        let step = self.idp_open(authorize_url).await;
        self.idp_finish(step, user).await
    }

    /// Opens the authorization URL and presses "Cancel" on the IdP's login page; returns
    /// where the IdP sends the browser (the callback with `error=access_denied`).
    pub async fn idp_cancel(&self, authorize_url: &Url) -> Url {
        let IdpStep::Page(page) = self.idp_open(authorize_url).await else {
            panic!("the IdP did not show its login page");
        };
        let document = Html::parse_document(&page.body);
        let selector = Selector::parse("a[href]").unwrap();
        let abort = document
            .select(&selector)
            .filter_map(|a| a.value().attr("href"))
            .find(|href| href.contains("/abort"))
            .unwrap_or_else(|| panic!("no cancel link on the IdP's login page\n{page}"));
        let abort = page.url.join(abort).expect("abort URL");
        match self.idp_open(&abort).await {
            IdpStep::Left(url) => url,
            IdpStep::Page(page) => panic!("cancel did not leave the IdP\n{page}"),
        }
    }

    /// RP-initiated logout at the IdP: loads `end_session_url`, confirms its logout form
    /// (`xsrf` + `logout=yes`, what the page's script does in a browser) and returns where
    /// the IdP sends the browser afterwards (the `post_logout_redirect_uri`, not loaded).
    pub async fn idp_end_session(&self, end_session_url: &Url) -> Url {
        let IdpStep::Page(page) = self.idp_open(end_session_url).await else {
            panic!("the IdP did not show its logout page");
        };
        let form = HtmlForm::first_in(&page);
        assert!(
            form.field("xsrf").is_some(),
            "no xsrf in the IdP's logout form\n{page}"
        );
        let mut fields = form.fields.clone();
        set_field(&mut fields, "logout", "yes");
        let confirmed = self
            .send(
                self.request(Method::POST, form.action.as_str())
                    .header(ACCEPT, NAVIGATION_ACCEPT)
                    .form(&fields),
            )
            .await;
        confirmed.location()
    }

    /// The gateway's callback, as the browser would load it.
    pub async fn callback(&self, callback_url: &Url) -> Hop {
        self.navigate(callback_url.as_str()).await
    }

    /// The whole login: begin at `gateway_url + path`, sign in as `user` at the IdP, load
    /// the callback (asserts 302 back to `path` with a new session cookie), then load
    /// `path` with the session.
    pub async fn login(&self, gateway_url: &str, path: &str, user: &str) -> CompletedLogin {
        let started = self.begin_login(gateway_url, path).await;
        let idp = self.idp_sign_in(&started.authorize_url, user).await;
        let callback = self.callback(&idp.redirect).await;
        assert_eq!(
            callback.status,
            StatusCode::FOUND,
            "callback did not complete the login\n{callback}"
        );
        assert_eq!(callback.location_raw(), path, "callback must return to rd");
        let session = callback
            .set_cookie(SESSION_COOKIE)
            .unwrap_or_else(|| panic!("callback set no session cookie\n{callback}"));
        let landing = self.follow(&callback).await;
        CompletedLogin {
            started,
            idp,
            callback,
            session_cookie: session.value().to_string(),
            landing,
        }
    }
}

/// A login begun at the gateway: the browser holds the login cookie and is about to go
/// to the IdP.
#[derive(Debug, Clone)]
pub struct StartedLogin {
    /// The 302 to `/oauth2/start` (when the login began with a navigation).
    pub entry: Option<Hop>,
    /// The `/oauth2/start` response (302 to the IdP).
    pub start: Hop,
    /// Where `/oauth2/start` sends the browser.
    pub authorize_url: Url,
    pub state: String,
    /// `portcullis-login-<first 16 chars of state>`.
    pub login_cookie_name: String,
    pub login_cookie_value: String,
}

impl StartedLogin {
    fn from_start(entry: Option<Hop>, start: Hop) -> Self {
        assert_eq!(
            start.status,
            StatusCode::FOUND,
            "/oauth2/start must redirect to the IdP\n{start}"
        );
        let authorize_url = start.location();
        let state = query_param(&authorize_url, "state")
            .unwrap_or_else(|| panic!("authorization URL without state: {authorize_url}"));
        let login_cookie_name = format!(
            "{LOGIN_COOKIE_PREFIX}{}",
            state.chars().take(16).collect::<String>()
        );
        let login_cookie = start.set_cookie(&login_cookie_name).unwrap_or_else(|| {
            panic!("/oauth2/start set no cookie named {login_cookie_name}\n{start}")
        });
        StartedLogin {
            entry,
            login_cookie_value: login_cookie.value().to_string(),
            start,
            authorize_url,
            state,
            login_cookie_name,
        }
    }
}

/// Where the browser is while at the IdP.
#[derive(Debug, Clone)]
pub enum IdpStep {
    /// The IdP shows a page (login or consent form).
    Page(Hop),
    /// The IdP redirected the browser off its origin (to the client's redirect URI).
    Left(Url),
}

/// The pages the IdP showed during a sign-in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdpPage {
    Login,
    Consent,
}

#[derive(Debug, Clone)]
pub struct IdpOutcome {
    /// Where the IdP sent the browser: the gateway's callback URL with code, state, iss.
    pub redirect: Url,
    pub pages: Vec<IdpPage>,
}

/// A completed login.
#[derive(Debug, Clone)]
pub struct CompletedLogin {
    pub started: StartedLogin,
    pub idp: IdpOutcome,
    /// The callback response (302 to rd, session cookie set).
    pub callback: Hop,
    /// The `portcullis` cookie's value.
    pub session_cookie: String,
    /// The response to following the callback's redirect (the upstream's answer).
    pub landing: Hop,
}

/// The first `<form>` of a page: absolute action URL and its named inputs' values.
struct HtmlForm {
    action: Url,
    fields: Vec<(String, String)>,
}

impl HtmlForm {
    fn first_in(page: &Hop) -> Self {
        let document = Html::parse_document(&page.body);
        let form_selector = Selector::parse("form").unwrap();
        let input_selector = Selector::parse("input[name]").unwrap();
        let form = document
            .select(&form_selector)
            .next()
            .unwrap_or_else(|| panic!("no form on the page\n{page}"));
        let action = form.value().attr("action").unwrap_or("");
        let action = page.url.join(action).expect("form action URL");
        let fields = form
            .select(&input_selector)
            .map(|input| {
                let name = input.value().attr("name").unwrap_or_default().to_string();
                let value = input.value().attr("value").unwrap_or_default().to_string();
                (name, value)
            })
            .collect();
        HtmlForm { action, fields }
    }

    fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

fn set_field(fields: &mut Vec<(String, String)>, name: &str, value: &str) {
    fields.retain(|(n, _)| n != name);
    fields.push((name.to_string(), value.to_string()));
}

/// RFC 6265 §5.1.4 path-match.
fn path_matches(cookie_path: &str, request_path: &str) -> bool {
    request_path == cookie_path
        || (request_path.starts_with(cookie_path)
            && (cookie_path.ends_with('/')
                || request_path.as_bytes().get(cookie_path.len()) == Some(&b'/')))
}

/// RFC 6265 §5.1.4 default-path.
fn default_path(request_path: &str) -> String {
    match request_path.rfind('/') {
        Some(0) | None => "/".to_string(),
        Some(i) => request_path[..i].to_string(),
    }
}

/// The (decoded) value of query parameter `name`; panics if it is repeated.
pub fn query_param(url: &Url, name: &str) -> Option<String> {
    let values: Vec<String> = url
        .query_pairs()
        .filter(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
        .collect();
    assert!(values.len() <= 1, "{name} repeated in {url}");
    values.into_iter().next()
}

/// `url` with query parameter `name` removed (`value: None`) or set to `value`; other
/// parameters keep their order.
pub fn with_query_param(url: &Url, name: &str, value: Option<&str>) -> Url {
    let mut pairs: Vec<(String, String)> = url
        .query_pairs()
        .filter(|(k, _)| k != name)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    if let Some(value) = value {
        pairs.push((name.to_string(), value.to_string()));
    }
    let mut out = url.clone();
    out.set_query(None);
    if !pairs.is_empty() {
        out.query_pairs_mut().extend_pairs(pairs);
    }
    out
}

/// `text` with one character replaced (another character of the base64url alphabet), at
/// `index` counted from the start.
pub fn flip_char(text: &str, index: usize) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    let c = chars[index];
    chars[index] = if c == 'A' { 'B' } else { 'A' };
    chars.into_iter().collect()
}

/// `n` random bytes as lowercase hex (aws-lc-rs CSPRNG).
pub fn random_hex(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    aws_lc_rs::rand::fill(&mut bytes).expect("random bytes");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
