//! The Redis session store (issue 13), what it keeps and where: a dump of every key and
//! value holds no token, email, subject, IdP session id or cookie, and every key carries
//! the prefix (a custom one, and the default); a 3-master Redis Cluster and a sentinel
//! setup with a manual failover; session-secret rotation (SIGHUP) keeps Redis sessions;
//! `cache_ttl = "0s"` (no L1) works; without `store` the sessions stay in memory.
//!
//! Replicas, refresh and outages are in `tests/redis.rs`.

mod common;

use std::time::{Duration, Instant};

use futures_util::future::join_all;
use reqwest::{Method, StatusCode};
use serde_json::json;

use common::idp::IdpBuilder;
use common::login::{random_hex, Browser, SESSION_COOKIE};
use common::mock_idp::MockIdp;
use common::redis::{
    assert_login_required, assert_session_alive, browser_with_cookie, cookie_id_hex, mock_fleet,
    mock_login, upstream_bearer, Dump, Fleet, RedisCluster, RedisSentinel, RedisServer,
    ReplicaSettings,
};
use common::InProcessGateway;

const ALICE: &str = "alice";

fn node_idp(idp: IdpBuilder) -> IdpBuilder {
    idp.users(&json!({ "alice": { "email": "alice@corp.test" } }))
}

/// Asserts that no entry of `dump` contains any of `needles` (what, value), in its key or
/// its value; lists every hit.
fn assert_nowhere(dump: &Dump, needles: &[(String, String)]) {
    let mut hits = Vec::new();
    for (what, needle) in needles {
        for hit in dump.containing(needle.as_bytes()) {
            hits.push(format!("{what} ({needle}) in the {hit}"));
        }
    }
    assert!(
        hits.is_empty(),
        "the Redis dump reveals:\n{}\ndump:\n{}",
        hits.join("\n"),
        dump.summary()
    );
}

/// Every key starts with `prefix` and expires (no key without a TTL); session keys
/// (`<prefix>s:`) expire within the absolute timeout `absolute`.
fn assert_keys_prefixed_and_expiring(dump: &Dump, prefix: &str, absolute: Duration) {
    assert!(!dump.is_empty(), "nothing in Redis");
    for entry in &dump.entries {
        let key = entry.key_text();
        assert!(
            key.starts_with(prefix),
            "key {key} lacks the prefix {prefix}\n{}",
            dump.summary()
        );
        assert!(
            entry.pttl_ms > 0,
            "key {key} never expires\n{}",
            dump.summary()
        );
        if key.starts_with(&format!("{prefix}s:")) {
            assert!(
                entry.pttl_ms as u128 <= absolute.as_millis(),
                "session key {key} outlives the absolute timeout\n{}",
                dump.summary()
            );
        }
    }
    assert!(
        !dump.keys_with_prefix(&format!("{prefix}s:")).is_empty(),
        "no session key ({prefix}s:...) in Redis\n{}",
        dump.summary()
    );
}

// ----- the dump ---------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dump_reveals_no_token_email_sub_sid_or_cookie_and_every_key_has_the_custom_prefix() {
    let redis = RedisServer::start().await;
    let prefix = format!("acme-gw-{}:", random_hex(3));
    let idp = MockIdp::start().await;
    let settings = ReplicaSettings {
        refresh_before: "2s".into(),
        absolute_timeout: "2h".into(),
        ..ReplicaSettings::new(redis.store_toml(&format!("redis_key_prefix = \"{prefix}\"\n")))
    };
    let (_upstreams, replicas) = mock_fleet(&idp, 2, &settings).await;
    let (a, b) = (replicas[0].url(), replicas[1].url());
    let users: Vec<String> = (0..3)
        .map(|i| format!("dump-user{i}-{}", random_hex(4)))
        .collect();
    let mut cookies = Vec::new();
    let mut states = Vec::new();

    // user0: logs in through A with a 3 s token, is used through B, refreshed.
    idp.set_access_token_ttl(3);
    let user0 = Browser::new();
    let (started, cookie) = mock_login(&a, &idp, &user0, &users[0]).await;
    idp.set_access_token_ttl(300);
    states.push(started.state);
    cookies.push(cookie);
    assert_session_alive(&b, &user0, &users[0], "b").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_session_alive(&b, &user0, &users[0], "b").await;
    assert_eq!(idp.refresh_requests(), 1, "user0's session was refreshed");

    // user1: logs in through B, then a back-channel logout (sub + sid) delivered to A.
    let user1 = Browser::new();
    let (started, cookie) = mock_login(&b, &idp, &user1, &users[1]).await;
    states.push(started.state);
    cookies.push(cookie);
    let sid1 = idp.sid_of(&users[1]).expect("user1's sid");
    let logout = idp.sign(
        "logout+jwt",
        &idp.logout_claims(Some(&users[1]), Some(&sid1)),
    );
    let hop = user1
        .send(
            user1
                .request(Method::POST, &format!("{a}/oauth2/backchannel-logout"))
                .form(&[("logout_token", logout.as_str())]),
        )
        .await;
    assert_eq!(hop.status, StatusCode::OK, "{hop}");
    assert_login_required(&user1.api_get(&format!("{b}/whoami")).await);

    // user2: logs in through A and signs out through B.
    let user2 = Browser::new();
    let (started, cookie) = mock_login(&a, &idp, &user2, &users[2]).await;
    states.push(started.state);
    cookies.push(cookie);
    let out = user2.navigate(&format!("{b}/oauth2/sign_out?rd=/x")).await;
    assert_eq!(out.status, StatusCode::FOUND, "{out}");

    let dump = redis.dump().await;
    assert_keys_prefixed_and_expiring(&dump, &prefix, Duration::from_secs(2 * 3600));
    let mut needles = Vec::new();
    for tokens in idp.issued() {
        needles.push(("an access token".to_string(), tokens.access_token));
        needles.push(("a refresh token".to_string(), tokens.refresh_token));
        needles.push(("an ID token".to_string(), tokens.id_token));
    }
    for user in &users {
        needles.push(("a sub".to_string(), user.clone()));
        needles.push(("an email".to_string(), format!("{user}@corp.test")));
        if let Some(sid) = idp.sid_of(user) {
            needles.push(("an IdP session id".to_string(), sid));
        }
    }
    for cookie in &cookies {
        needles.push(("a session cookie".to_string(), cookie.clone()));
        needles.push(("a session id in hex".to_string(), cookie_id_hex(cookie)));
    }
    for state in &states {
        needles.push(("a login state".to_string(), state.clone()));
    }
    for field in ["access_token", "refresh_token", "id_token", "email"] {
        needles.push(("a field name of the session".to_string(), field.to_string()));
    }
    assert_nowhere(&dump, &needles);
    assert!(
        dump.keys_with_prefix("portcullis:").is_empty(),
        "keys under the default prefix although another was configured"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dump_reveals_no_token_email_sub_or_cookie_and_every_key_has_the_default_prefix() {
    let redis = RedisServer::start().await;
    let user = format!("carol-{}", random_hex(4));
    let email = format!("{user}@mail.corp.test");
    let settings = ReplicaSettings::new(redis.store_toml(""));
    let fleet = Fleet::start(2, settings, |idp: IdpBuilder| {
        idp.users(&json!({ user.clone(): { "email": email.clone() } }))
    })
    .await;
    let browser = Browser::new();
    let login = browser.login(&fleet.url(0), "/start", &user).await;
    let token = assert_session_alive(&fleet.url(1), &browser, &user, "b").await;
    // The email reached the gateway (it sends it upstream), so it was in the session.
    let hop = browser.api_get(&fleet.url_for(1, "/whoami")).await;
    assert_eq!(
        hop.echo().header("x-forwarded-email"),
        Some(email.as_str()),
        "{hop}"
    );
    // A second session of the same user, signed out again, and a back-channel logout of
    // the first: markers and used jtis go to Redis too.
    let other = Browser::new();
    let other_login = other.login(&fleet.url(1), "/start", &user).await;
    let result = fleet
        .idp_hook("backchannel_logout", &[("sub", &user)])
        .await;
    assert!(
        !result["sent"].as_array().expect("sent").is_empty(),
        "{result}"
    );

    let dump = redis.dump().await;
    assert_keys_prefixed_and_expiring(&dump, "portcullis:", Duration::from_secs(24 * 3600));
    let mut needles = vec![
        ("the access token".to_string(), token.clone()),
        ("the sub".to_string(), user.clone()),
        ("the email".to_string(), email.clone()),
        ("a login state".to_string(), login.started.state.clone()),
        (
            "a login state".to_string(),
            other_login.started.state.clone(),
        ),
    ];
    for cookie in [&login.session_cookie, &other_login.session_cookie] {
        needles.push(("a session cookie".to_string(), cookie.clone()));
        needles.push(("a session id in hex".to_string(), cookie_id_hex(cookie)));
    }
    for sent in result["sent"].as_array().unwrap() {
        if let Some(sid) = sent["sid"].as_str() {
            needles.push(("an IdP session id".to_string(), sid.to_string()));
        }
    }
    assert_nowhere(&dump, &needles);
}

// ----- cluster and sentinel ----------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_twenty_users_log_in_use_and_sign_out() {
    let cluster = RedisCluster::start().await;
    let settings = ReplicaSettings::new(cluster.store_toml(""));
    let fleet = Fleet::start(2, settings, node_idp).await;
    let users: Vec<String> = (0..20).map(|i| format!("user{i:02}")).collect();
    let browsers: Vec<Browser> = users.iter().map(|_| Browser::new()).collect();

    // Logins through A and B alternately, five at a time; each is used through the other.
    let mut cookies = vec![String::new(); users.len()];
    for batch in (0..users.len()).collect::<Vec<_>>().chunks(5) {
        let logins = batch.iter().map(|&i| {
            let (users, browsers, fleet) = (&users, &browsers, &fleet);
            async move {
                let login = browsers[i]
                    .login(&fleet.url(i % 2), "/start", &users[i])
                    .await;
                let token = upstream_bearer(&login.landing);
                let other = 1 - i % 2;
                let via_other = assert_session_alive(
                    &fleet.url(other),
                    &browsers[i],
                    &users[i],
                    ["a", "b"][other],
                )
                .await;
                assert_eq!(
                    via_other, token,
                    "{}: another token on the other replica",
                    users[i]
                );
                (i, login.session_cookie)
            }
        });
        for (i, cookie) in join_all(logins).await {
            cookies[i] = cookie;
        }
    }
    let dump = cluster.dump().await;
    let sessions: Vec<_> = dump
        .entries
        .iter()
        .filter(|e| e.key_text().starts_with("portcullis:s:"))
        .collect();
    assert_eq!(
        sessions.len(),
        20,
        "one session key per user\n{}",
        dump.summary()
    );
    let mut nodes: Vec<u16> = sessions.iter().map(|e| e.port).collect();
    nodes.sort();
    nodes.dedup();
    assert!(
        nodes.len() >= 2,
        "all 20 sessions sit on one master: the keys share a hash slot\n{}",
        dump.summary()
    );
    for entry in &dump.entries {
        assert!(
            entry.key_text().starts_with("portcullis:"),
            "{}",
            dump.summary()
        );
    }

    // Each signs out through the replica they logged in on; the other refuses the cookie.
    for (i, browser) in browsers.iter().enumerate() {
        let out = browser
            .navigate(&fleet.url_for(i % 2, "/oauth2/sign_out?rd=/x"))
            .await;
        assert_eq!(out.status, StatusCode::FOUND, "{}: {out}", users[i]);
        let copy = browser_with_cookie(&cookies[i]);
        assert_login_required(&copy.api_get(&fleet.url_for(1 - i % 2, "/whoami")).await);
    }
    let dump = cluster.dump().await;
    assert!(
        dump.keys_with_prefix("portcullis:s:").is_empty(),
        "signed-out sessions left in the cluster\n{}",
        dump.summary()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_failover_keeps_sessions_working() {
    let sentinel = RedisSentinel::start().await;
    let old_master = sentinel.master_port().await;
    let settings = ReplicaSettings::new(sentinel.store_toml(""));
    let fleet = Fleet::start(1, settings, node_idp).await;
    let url = fleet.url(0);
    let alice = Browser::new();
    let login = alice.login(&url, "/start", ALICE).await;
    let token = assert_session_alive(&url, &alice, ALICE, "a").await;

    let new_master = sentinel.failover().await;
    assert_ne!(new_master, old_master);

    // The session keeps working: while the gateway follows the switch a request may get a
    // 503, never a 401 or a login redirect; within 15 s it is served again.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let hop = alice.api_get(&format!("{url}/whoami")).await;
        match hop.status {
            StatusCode::OK => {
                assert_eq!(upstream_bearer(&hop), token);
                break;
            }
            StatusCode::SERVICE_UNAVAILABLE if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            _ => panic!("alice's session after the failover\n{hop}"),
        }
    }
    // Writes go to the new master: a new login is stored there, a sign-out deletes there.
    let bob = Browser::new();
    let bob_login = bob.login(&url, "/start", "bob").await;
    assert_session_alive(&url, &bob, "bob", "a").await;
    let before = sentinel
        .dump(new_master)
        .await
        .keys_with_prefix("portcullis:s:");
    assert_eq!(
        before.len(),
        2,
        "alice's and bob's sessions on the new master: {before:?}\nnew master {new_master}:\n{}old master {old_master}:\n{}",
        sentinel.dump(new_master).await.summary(),
        sentinel.dump(old_master).await.summary()
    );
    let out = alice
        .navigate(&fleet.url_for(0, "/oauth2/sign_out?rd=/x"))
        .await;
    assert_eq!(out.status, StatusCode::FOUND, "{out}");
    assert_login_required(
        &browser_with_cookie(&login.session_cookie)
            .api_get(&format!("{url}/whoami"))
            .await,
    );
    let after = sentinel
        .dump(new_master)
        .await
        .keys_with_prefix("portcullis:s:");
    assert_eq!(
        after.len(),
        1,
        "alice's session deleted on the new master: {after:?}"
    );
    assert_session_alive(
        &url,
        &browser_with_cookie(&bob_login.session_cookie),
        "bob",
        "a",
    )
    .await;
}

// ----- secret rotation, no L1, the default store -------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_rotation_by_sighup_keeps_redis_sessions() {
    let redis = RedisServer::start().await;
    let (old, new) = (random_hex(32), random_hex(32));
    let settings = ReplicaSettings {
        secrets: vec![old.clone()],
        ..ReplicaSettings::new(redis.store_toml(""))
    };
    let mut fleet = Fleet::start_process(1, settings.clone(), node_idp).await;
    let url = fleet.url(0);
    let browser = Browser::new();
    let login = browser.login(&url, "/start", ALICE).await;
    let token = assert_session_alive(&url, &browser, ALICE, "a").await;

    // The new secret first, the old one kept: the session opens and is re-sealed.
    let rotated = ReplicaSettings {
        secrets: vec![new.clone(), old.clone()],
        ..settings.clone()
    };
    fleet.reload(0, rotated).await;
    assert_eq!(
        assert_session_alive(&url, &browser, ALICE, "a").await,
        token
    );
    // The old secret retired: still the same session.
    fleet
        .reload(
            0,
            ReplicaSettings {
                secrets: vec![new.clone()],
                ..settings.clone()
            },
        )
        .await;
    assert_eq!(
        assert_session_alive(&url, &browser, ALICE, "a").await,
        token
    );
    assert_eq!(
        browser.cookie(SESSION_COOKIE),
        Some(login.session_cookie.clone())
    );

    // What Redis holds is sealed under the new secret (not only what the process has in its
    // L1): a fresh replica that knows only the new secret opens it.
    let fresh = InProcessGateway::start(&common::redis::replica_toml(
        "@PORT@",
        fleet.idp.issuer(),
        &fleet.upstreams[0].url(),
        &ReplicaSettings {
            secrets: vec![new],
            ..settings.clone()
        },
    ))
    .await;
    common::gateway::wait_for_readyz(&fresh).await;
    assert_eq!(
        assert_session_alive(
            &fresh.url(),
            &browser_with_cookie(&login.session_cookie),
            ALICE,
            "a"
        )
        .await,
        token
    );
    // Control: with no secret the session could open with, it is gone.
    fleet
        .reload(
            0,
            ReplicaSettings {
                secrets: vec![random_hex(32)],
                ..settings
            },
        )
        .await;
    assert_login_required(&browser.api_get(&format!("{url}/whoami")).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_l1_cache_ttl_zero_replicas_share_refresh_and_sign_out() {
    let redis = RedisServer::start().await;
    let settings = ReplicaSettings {
        refresh_before: "2s".into(),
        ..ReplicaSettings::new(redis.store_toml("cache_ttl = \"0s\"\n"))
    };
    let fleet = Fleet::start(2, settings, |idp: IdpBuilder| {
        node_idp(idp).env("ACCESS_TOKEN_TTL", "4")
    })
    .await;
    let browser = Browser::new();
    let login = browser.login(&fleet.url(0), "/start", ALICE).await;
    let token = upstream_bearer(&login.landing);
    assert_eq!(
        assert_session_alive(&fleet.url(1), &browser, ALICE, "b").await,
        token
    );
    // Stale after 2 s: B refreshes, A uses B's new token.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let refreshed = assert_session_alive(&fleet.url(1), &browser, ALICE, "b").await;
    assert_ne!(refreshed, token);
    assert_eq!(
        assert_session_alive(&fleet.url(0), &browser, ALICE, "a").await,
        refreshed
    );
    assert_eq!(fleet.refresh_grants().await, 1);
    // Sign out through B; A refuses.
    let out = browser
        .navigate(&fleet.url_for(1, "/oauth2/sign_out?rd=/x"))
        .await;
    assert_eq!(out.status, StatusCode::FOUND, "{out}");
    assert_login_required(
        &browser_with_cookie(&login.session_cookie)
            .api_get(&fleet.url_for(0, "/whoami"))
            .await,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_store_or_with_store_memory_sessions_stay_in_the_process() {
    let redis = RedisServer::start().await;
    // `store` unset: two replicas with the same secrets do not share sessions.
    let unset = Fleet::start(2, ReplicaSettings::new(""), node_idp).await;
    let browser = Browser::new();
    let login = browser.login(&unset.url(0), "/start", ALICE).await;
    assert_session_alive(&unset.url(0), &browser, ALICE, "a").await;
    assert_login_required(
        &browser_with_cookie(&login.session_cookie)
            .api_get(&unset.url_for(1, "/whoami"))
            .await,
    );
    // `store = "memory"` explicitly, with a Redis URL that would work: Redis is not used.
    let memory = Fleet::start(
        1,
        ReplicaSettings::new(format!(
            "store = \"memory\"\nredis_url = \"{}\"\n",
            redis.url()
        )),
        node_idp,
    )
    .await;
    let browser = Browser::new();
    browser.login(&memory.url(0), "/start", ALICE).await;
    assert_session_alive(&memory.url(0), &browser, ALICE, "a").await;
    let dump = redis.dump().await;
    assert!(
        dump.is_empty(),
        "store = \"memory\" wrote to Redis:\n{}",
        dump.summary()
    );
}
