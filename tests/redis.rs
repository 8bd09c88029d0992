//! The Redis session store (issue 13) with replicas: two gateways on one real
//! `redis-server` share sessions, sign-outs and back-channel logouts at once; refresh is
//! single-flight across both (also when the IdP is slower than the refresh lock); both
//! replicas restart without logging anyone out; Redis going away gives 503s (never a 500
//! or a login redirect) and coming back with its data resumes the same sessions; a gateway
//! started with Redis down becomes ready when Redis comes up.
//!
//! Logins go through the node test IdP (`tests/idp`) as it ships; the slow refresh uses the
//! in-process [`MockIdp`] (token-endpoint delay, counted refresh grants). Replicas run
//! in-process, except for the restart test (processes). The store's keys, its dump and
//! the cluster and sentinel setups are in `tests/redis_store.rs`.

mod common;

use std::time::{Duration, Instant};

use futures_util::future::join_all;
use reqwest::header::{ACCEPT, COOKIE};
use reqwest::StatusCode;
use serde_json::{json, Value};

use common::idp::IdpBuilder;
use common::login::{Browser, SESSION_COOKIE};
use common::mock_idp::MockIdp;
use common::redis::{
    assert_login_required, assert_session_alive, browser_with_cookie, mock_fleet, mock_login,
    upstream_bearer, Fleet, RedisServer, ReplicaSettings, PUBLIC_PREFIX,
};
use common::wait_until;

const ALICE: &str = "alice";
const BOB: &str = "bob";

/// `USERS_JSON`: alice has an email of her own; bob gets the defaults.
fn users() -> Value {
    json!({ "alice": { "email": "alice@corp.test" } })
}

/// The node IdP with `users()` and, if given, a short access-token lifetime (seconds).
fn idp_with(access_token_ttl: Option<u64>) -> impl Fn(IdpBuilder) -> IdpBuilder {
    move |idp: IdpBuilder| {
        let idp = idp.users(&users());
        match access_token_ttl {
            Some(ttl) => idp.env("ACCESS_TOKEN_TTL", ttl.to_string()),
            None => idp,
        }
    }
}

/// A long L1, so that only the pub/sub invalidation can explain a replica dropping a
/// session it had cached.
const LONG_L1: &str = "cache_ttl = \"60s\"\n";

// ----- two replicas, one Redis ---------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_from_one_replica_works_on_the_other_and_sign_out_ends_it_on_both() {
    let redis = RedisServer::start().await;
    let fleet = Fleet::start(
        2,
        ReplicaSettings::new(redis.store_toml(LONG_L1)),
        idp_with(None),
    )
    .await;
    let (a, b) = (fleet.url(0), fleet.url(1));

    let browser = Browser::new();
    let login = browser.login(&a, "/start", ALICE).await;
    assert_eq!(login.landing.echo().upstream, "a");
    let token = upstream_bearer(&login.landing);
    fleet.assert_token_active(&token, ALICE).await;

    // The same cookie on B: the same session, forwarded with the same access token, with no
    // second login at the IdP. Twice, so B holds the session in its L1.
    for _ in 0..2 {
        let via_b = assert_session_alive(&b, &browser, ALICE, "b").await;
        assert_eq!(via_b, token, "B forwarded another token than the session's");
    }
    assert_eq!(fleet.idp.code_exchanges().await, 1);

    // The login's `state` was consumed fleet-wide: the callback replayed at B with a copy
    // of the login cookie is refused before B asks the IdP for the code.
    let replay = Browser::new();
    replay.set_cookie(
        &login.started.login_cookie_name,
        &login.started.login_cookie_value,
    );
    let mut at_b = login.idp.redirect.clone();
    at_b.set_port(Some(fleet.ports[1])).unwrap();
    let replayed = replay.callback(&at_b).await;
    assert!(
        replayed.set_cookie(SESSION_COOKIE).is_none() && replayed.status.is_client_error(),
        "a callback replayed at the other replica must be refused\n{replayed}"
    );
    assert_eq!(
        fleet.idp.code_exchanges().await,
        1,
        "B sent the used code to the IdP: consumed login states are not shared"
    );

    // Sign out through A; B (which has the session in its L1 for 60 s) refuses the old
    // cookie at once, and so does A.
    let out = browser
        .navigate(&fleet.url_for(0, "/oauth2/sign_out?rd=/x"))
        .await;
    assert_eq!(out.status, StatusCode::FOUND, "{out}");
    let cleared = out
        .set_cookie(SESSION_COOKIE)
        .expect("sign-out clears the cookie");
    assert_eq!(cleared.value(), "", "{out}");
    let b_before = fleet.upstreams[1].received().len();
    let copy = browser_with_cookie(&login.session_cookie);
    assert_login_required(&copy.api_get(&fleet.url_for(1, "/whoami")).await);
    assert_login_required(&copy.api_get(&fleet.url_for(0, "/whoami")).await);
    assert_eq!(
        fleet.upstreams[1].received().len(),
        b_before,
        "B forwarded a request of a signed-out session"
    );
    let dump = redis.dump().await;
    assert!(
        dump.keys_with_prefix("portcullis:s:").is_empty(),
        "the signed-out session is still in Redis:\n{}",
        dump.summary()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backchannel_logout_delivered_to_one_replica_ends_the_session_used_through_the_other() {
    let redis = RedisServer::start().await;
    let fleet = Fleet::start(
        2,
        ReplicaSettings::new(redis.store_toml(LONG_L1)),
        idp_with(None),
    )
    .await;
    let (a, b) = (fleet.url(0), fleet.url(1));
    let alice = Browser::new();
    let bob = Browser::new();
    alice.login(&a, "/start", ALICE).await;
    bob.login(&a, "/start", BOB).await;
    assert_session_alive(&a, &alice, ALICE, "a").await;
    assert_session_alive(&b, &alice, ALICE, "b").await;

    // The IdP sends its logout tokens for alice to B (the fleet's back-channel URI).
    let result = fleet
        .idp_hook("backchannel_logout", &[("sub", ALICE)])
        .await;
    let sent = result["sent"].as_array().expect("sent").clone();
    assert!(!sent.is_empty(), "the IdP sent no logout token: {result}");
    for s in &sent {
        assert_eq!(s["status"], 200, "B refused a real logout token: {s}");
    }

    // At once: alice's session is over on A (which cached it) and on B; bob's is not.
    assert_login_required(&alice.api_get(&format!("{a}/whoami")).await);
    assert_login_required(&alice.api_get(&format!("{b}/whoami")).await);
    assert_session_alive(&a, &bob, BOB, "a").await;

    // The logout token's `jti` is used fleet-wide: replayed at A it is refused.
    for s in &sent {
        let token = s["logout_token"].as_str().unwrap();
        let replayed = bob
            .send(
                bob.request(
                    reqwest::Method::POST,
                    &format!("{a}/oauth2/backchannel-logout"),
                )
                .form(&[("logout_token", token)]),
            )
            .await;
        assert_eq!(
            replayed.status,
            StatusCode::BAD_REQUEST,
            "a logout token replayed at the other replica was accepted\n{replayed}"
        );
    }

    // A new login of alice after the logout is not affected by it, on either replica.
    alice.login(&a, "/start", ALICE).await;
    assert_session_alive(&b, &alice, ALICE, "b").await;
    assert_session_alive(&a, &alice, ALICE, "a").await;
}

// ----- refresh: single flight across the fleet ------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_concurrent_requests_on_both_replicas_refresh_once() {
    // Access tokens live 5 s; the gateway refreshes one that expires within 2 s.
    let redis = RedisServer::start().await;
    let settings = ReplicaSettings {
        refresh_before: "2s".into(),
        ..ReplicaSettings::new(redis.store_toml(""))
    };
    let fleet = Fleet::start(2, settings, idp_with(Some(5))).await;
    let browser = Browser::new();
    let login = browser.login(&fleet.url(0), "/start", ALICE).await;
    let logged_in = Instant::now();
    let old_token = upstream_bearer(&login.landing);
    assert_eq!(
        assert_session_alive(&fleet.url(1), &browser, ALICE, "b").await,
        old_token
    );
    assert_eq!(fleet.refresh_grants().await, 0);

    // Stale from 3 s after the login, expired only after 5 s.
    tokio::time::sleep_until((logged_in + Duration::from_millis(3200)).into()).await;
    let client = common::client();
    let cookie = format!("{SESSION_COOKIE}={}", login.session_cookie);
    let requests = (0..100).map(|i| {
        client
            .get(fleet.url_for(i % 2, &format!("/call/{i}")))
            .header(COOKIE, &cookie)
            .header(ACCEPT, "application/json")
            .send()
    });
    let mut tokens = Vec::new();
    for (i, result) in join_all(requests).await.into_iter().enumerate() {
        let resp = result.unwrap_or_else(|e| panic!("request {i}: {e}"));
        let status = resp.status();
        let body = resp.bytes().await.expect("body");
        assert_eq!(
            status,
            StatusCode::OK,
            "request {i}: {}",
            String::from_utf8_lossy(&body)
        );
        let echo = common::Echoed::parse(&body);
        assert_eq!(
            echo.upstream,
            ["a", "b"][i % 2],
            "request {i} forwarded by the wrong replica"
        );
        let authorization = echo.header("authorization").expect("Authorization");
        tokens.push(authorization.strip_prefix("Bearer ").unwrap().to_string());
    }
    let refreshed_at = Instant::now();

    assert_eq!(
        fleet.refresh_grants().await,
        1,
        "100 requests on one stale session over two replicas must share ONE refresh"
    );
    assert_eq!(fleet.idp.token_errors("invalid_grant").await, 0);
    let new_token = tokens[0].clone();
    assert_ne!(new_token, old_token, "forwarded with the old token");
    assert!(
        tokens.iter().all(|t| *t == new_token),
        "every request must be forwarded with the one new token"
    );
    fleet.assert_token_active(&new_token, ALICE).await;
    // What each upstream received (not only what came back): 50 calls each, all with it.
    for (i, upstream) in fleet.upstreams.iter().enumerate() {
        let calls: Vec<_> = upstream
            .received()
            .into_iter()
            .filter(|r| r.path.starts_with("/call/"))
            .collect();
        assert_eq!(
            calls.len(),
            50,
            "replica {i} forwarded {} calls",
            calls.len()
        );
        for call in &calls {
            assert_eq!(
                call.header_all("authorization"),
                vec![format!("Bearer {new_token}").as_str()]
            );
        }
    }

    // Stored for both: the next requests use it with no other refresh ...
    assert_eq!(
        assert_session_alive(&fleet.url(1), &browser, ALICE, "b").await,
        new_token
    );
    assert_eq!(
        assert_session_alive(&fleet.url(0), &browser, ALICE, "a").await,
        new_token
    );
    assert_eq!(fleet.refresh_grants().await, 1);
    // ... and so is the rotated refresh token: the next refresh, through B, succeeds
    // (replaying the used one would make the IdP revoke the grant).
    tokio::time::sleep_until((refreshed_at + Duration::from_millis(3200)).into()).await;
    let third = assert_session_alive(&fleet.url(1), &browser, ALICE, "b").await;
    assert_ne!(third, new_token);
    assert_eq!(fleet.refresh_grants().await, 2);
    assert_eq!(fleet.idp.token_errors("invalid_grant").await, 0);
}

/// How long the IdP takes to answer the slow refresh: longer than any initial lock time a
/// sane store would pick (the lock is renewed while the refresh runs).
const SLOW_REFRESH: Duration = Duration::from_secs(12);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_slower_than_the_lock_time_still_happens_once() {
    let redis = RedisServer::start().await;
    let idp = MockIdp::start().await;
    let settings = ReplicaSettings {
        refresh_before: "2s".into(),
        ..ReplicaSettings::new(redis.store_toml(""))
    };
    let (_upstreams, replicas) = mock_fleet(&idp, 2, &settings).await;
    let (a, b) = (replicas[0].url(), replicas[1].url());
    // The login's access token lives 3 s (stale after 1 s); the refreshed one 5 minutes.
    idp.set_access_token_ttl(3);
    let browser = Browser::new();
    let (_, cookie) = mock_login(&a, &idp, &browser, "slow-user").await;
    idp.set_access_token_ttl(300);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    idp.set_refresh_delay(SLOW_REFRESH);

    let client = common::http::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("client");
    let cookie = format!("{SESSION_COOKIE}={cookie}");
    let get = |url: String| {
        let request = client
            .get(url)
            .header(COOKIE, &cookie)
            .header(ACCEPT, "application/json")
            .send();
        tokio::spawn(request)
    };
    // A starts the refresh ...
    let mut pending: Vec<_> = (0..5).map(|i| get(format!("{a}/first/{i}"))).collect();
    let arrivals = &idp;
    wait_until(
        "the refresh to reach the IdP",
        Duration::from_secs(10),
        || async move { (arrivals.refresh_arrivals() >= 1).then_some(()) },
    )
    .await;
    let started = Instant::now();
    // ... and while it runs, requests keep coming to both replicas: at 2, 4, ..., 10 s into
    // it, so whatever the lock's initial time below 10 s, some arrive after it would have
    // expired unrenewed.
    for step in 1..=5u64 {
        tokio::time::sleep_until((started + Duration::from_secs(2 * step)).into()).await;
        pending.push(get(format!("{b}/during/{step}")));
        pending.push(get(format!("{a}/during/{step}")));
        assert_eq!(
            idp.refresh_arrivals(),
            1,
            "a second refresh reached the IdP {:?} into the first",
            started.elapsed()
        );
    }
    let mut forwarded = Vec::new();
    for task in pending {
        let resp = task.await.expect("task").expect("request");
        let status = resp.status();
        let body = resp.bytes().await.expect("body");
        assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
        let echo = common::Echoed::parse(&body);
        forwarded.push(
            echo.header("authorization")
                .expect("Authorization")
                .to_string(),
        );
    }
    assert_eq!(
        idp.refresh_arrivals(),
        1,
        "the refresh happened more than once"
    );
    assert_eq!(
        idp.refresh_replays(),
        0,
        "a used refresh token was sent again"
    );
    let refreshed = idp
        .issued()
        .into_iter()
        .filter(|t| t.grant_type == "refresh_token")
        .collect::<Vec<_>>();
    assert_eq!(refreshed.len(), 1);
    let expected = format!("Bearer {}", refreshed[0].access_token);
    assert!(
        forwarded.iter().all(|t| *t == expected),
        "every request must be forwarded with the refreshed token: {forwarded:?}"
    );
    // The lock was released (compare-and-delete), not left to expire.
    let dump = redis.dump().await;
    assert!(
        dump.keys_with_prefix("portcullis:lock:").is_empty(),
        "the refresh lock is still held after the refresh:\n{}",
        dump.summary()
    );
    // B reads the new session from Redis: no refresh of its own.
    let hop = browser.api_get(&format!("{b}/after")).await;
    assert_eq!(upstream_bearer(&hop), refreshed[0].access_token);
    assert_eq!(idp.refresh_arrivals(), 1);
}

// ----- restarts -------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_replicas_restarted_keep_every_session() {
    let redis = RedisServer::start().await;
    let mut fleet = Fleet::start_process(
        2,
        ReplicaSettings::new(redis.store_toml("")),
        idp_with(None),
    )
    .await;
    let alice = Browser::new();
    let bob = Browser::new();
    let alice_login = alice.login(&fleet.url(0), "/start", ALICE).await;
    let bob_login = bob.login(&fleet.url(1), "/start", BOB).await;
    let alice_token = upstream_bearer(&alice_login.landing);
    let bob_token = upstream_bearer(&bob_login.landing);

    // A rolling deploy (A stops cleanly) and a crash (B is killed): nothing in memory is left.
    fleet.restart(0, false).await;
    fleet.restart(1, true).await;

    for (i, name) in ["a", "b"].iter().enumerate() {
        assert_eq!(
            assert_session_alive(&fleet.url(i), &alice, ALICE, name).await,
            alice_token
        );
        assert_eq!(
            assert_session_alive(&fleet.url(i), &bob, BOB, name).await,
            bob_token
        );
    }
    assert_eq!(fleet.idp.code_exchanges().await, 2, "nobody logs in again");
    assert_eq!(
        alice.cookie(SESSION_COOKIE),
        Some(alice_login.session_cookie)
    );
}

// ----- Redis unavailable -----------------------------------------------------------------------

/// The answer to a request that needs a session while the store is unreachable: 503 with a
/// `Retry-After` and a body that says so; not a 500, not a redirect to log in, and the
/// session cookie is left alone (the user keeps their place).
fn assert_store_unavailable(hop: &common::login::Hop) {
    assert_eq!(hop.status, StatusCode::SERVICE_UNAVAILABLE, "{hop}");
    let retry = hop
        .header("retry-after")
        .unwrap_or_else(|| panic!("503 without Retry-After\n{hop}"));
    let seconds: u64 = retry
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("Retry-After {retry:?} is not delay-seconds\n{hop}"));
    assert!((1..=300).contains(&seconds), "Retry-After {seconds}\n{hop}");
    assert!(hop.header("location").is_none(), "{hop}");
    assert!(
        hop.set_cookie(SESSION_COOKIE).is_none(),
        "the session cookie must not be touched while the store is down\n{hop}"
    );
    assert!(!hop.body.trim().is_empty(), "503 without a body\n{hop}");
    assert!(!hop.body.contains("\"upstream\""), "{hop}");
}

async fn status_of(url: &str) -> StatusCode {
    common::client()
        .get(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
        .status()
}

async fn wait_for_status(url: &str, want: StatusCode, timeout: Duration) {
    wait_until(&format!("GET {url} = {want}"), timeout, || async move {
        (status_of(url).await == want).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_gives_503_and_restarted_with_its_data_the_same_sessions_work() {
    let mut redis = RedisServer::start().await;
    // No L1, so every request needs Redis.
    let settings = ReplicaSettings::new(redis.store_toml("cache_ttl = \"0s\"\n"));
    let fleet = Fleet::start(1, settings, idp_with(None)).await;
    let url = fleet.url(0);
    let browser = Browser::new();
    let login = browser.login(&url, "/start", ALICE).await;
    let token = assert_session_alive(&url, &browser, ALICE, "a").await;

    redis.kill();
    let upstream_before = fleet.upstreams[0].received().len();
    let started = Instant::now();
    let api = browser.api_get(&format!("{url}/whoami")).await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the 503 took {:?} (redis_timeout is 500 ms)",
        started.elapsed()
    );
    assert_store_unavailable(&api);
    let page = browser.navigate(&format!("{url}/page")).await;
    assert_store_unavailable(&page);
    assert_eq!(
        fleet.upstreams[0].received().len(),
        upstream_before,
        "a request that needed the session reached the upstream"
    );
    wait_for_status(
        &fleet.url_for(0, "/readyz"),
        StatusCode::SERVICE_UNAVAILABLE,
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(
        status_of(&fleet.url_for(0, "/healthz")).await,
        StatusCode::OK
    );
    let public = browser
        .api_get(&fleet.url_for(0, &format!("{PUBLIC_PREFIX}/x")))
        .await;
    assert_eq!(public.status, StatusCode::OK, "{public}");
    assert!(public.echo().header("authorization").is_none());

    // Redis comes back with its data (AOF): ready again, and the same session works,
    // without restarting the gateway or logging in again.
    redis.restart().await;
    wait_for_status(
        &fleet.url_for(0, "/readyz"),
        StatusCode::OK,
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(
        assert_session_alive(&url, &browser, ALICE, "a").await,
        token
    );
    assert_eq!(browser.cookie(SESSION_COOKIE), Some(login.session_cookie));
    assert_eq!(fleet.idp.code_exchanges().await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_started_with_redis_down_is_alive_not_ready_until_redis_is_up() {
    let mut redis = RedisServer::start().await;
    redis.kill();
    // The harness returns once /healthz answers 200.
    let fleet = Fleet::start_unready(
        1,
        ReplicaSettings::new(redis.store_toml("")),
        idp_with(None),
    )
    .await;
    let readyz = fleet.url_for(0, "/readyz");
    // Discovery loads in milliseconds; for 3 s the answer stays 503, because of Redis.
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        assert_eq!(status_of(&readyz).await, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            status_of(&fleet.url_for(0, "/healthz")).await,
            StatusCode::OK
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let public = Browser::new()
        .api_get(&fleet.url_for(0, &format!("{PUBLIC_PREFIX}/x")))
        .await;
    assert_eq!(public.status, StatusCode::OK, "{public}");

    redis.restart().await;
    wait_for_status(&readyz, StatusCode::OK, Duration::from_secs(20)).await;
    let browser = Browser::new();
    browser.login(&fleet.url(0), "/start", ALICE).await;
    assert_session_alive(&fleet.url(0), &browser, ALICE, "a").await;
    let dump = redis.dump().await;
    assert_eq!(
        dump.keys_with_prefix("portcullis:s:").len(),
        1,
        "the login's session is in Redis:\n{}",
        dump.summary()
    );
}
