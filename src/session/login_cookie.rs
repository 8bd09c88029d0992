//! The login in progress (state, PKCE verifier, nonce, return path) lives in a short-lived
//! encrypted cookie, one per `state`, so several tabs can log in at once and unauthenticated
//! traffic cannot fill server memory. Sealed with the `cookie` crate's private jar
//! (AES-256-GCM, the cookie name bound as associated data) under keys derived from
//! `session.secret`; the first seals, all open.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use cookie::{Cookie, CookieJar, Key, SameSite};
use http::header::{HeaderMap, HeaderValue};

use super::crypto::Keyring;
use super::find_cookie;

/// How many characters of `state` go into the cookie name: enough to tell tabs apart.
const STATE_CHARS_IN_NAME: usize = 16;
/// The `state` the gateway issues: 32 random bytes, base64url without padding.
const STATE_LEN: usize = 43;

/// Whether `state` has exactly the form the gateway issues. Checked before any use, so a
/// crafted `state` (`a;Domain=evil`) never reaches a cookie name or a lookup.
pub fn is_issued_state(state: &str) -> bool {
    state.len() == STATE_LEN
        && state
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

pub struct LoginCookies {
    /// Swapped whole on a secret reload.
    keys: RwLock<Arc<Vec<Key>>>,
    secure: bool,
    max_age: Duration,
}

impl LoginCookies {
    pub fn new(keyring: &Keyring, secure: bool, max_age: Duration) -> Self {
        LoginCookies {
            keys: RwLock::new(Arc::new(derive_keys(keyring))),
            secure,
            max_age,
        }
    }

    /// Replaces the keys (SIGHUP reload).
    pub fn set_keyring(&self, keyring: &Keyring) {
        let keys = Arc::new(derive_keys(keyring));
        match self.keys.write() {
            Ok(mut k) => *k = keys,
            Err(poisoned) => *poisoned.into_inner() = keys,
        }
    }

    fn keys(&self) -> Arc<Vec<Key>> {
        match self.keys.read() {
            Ok(k) => k.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn prefix(&self) -> &'static str {
        if self.secure {
            "__Host-portcullis-login-"
        } else {
            "portcullis-login-"
        }
    }

    pub fn is_login_cookie(&self, name: &str) -> bool {
        name.starts_with(self.prefix())
    }

    /// The cookie name for an issued `state` (base64url, so safe in a name); `None` for
    /// anything else.
    fn name_for(&self, state: &str) -> Option<String> {
        is_issued_state(state)
            .then(|| format!("{}{}", self.prefix(), &state[..STATE_CHARS_IN_NAME]))
    }

    fn build(&self, name: String, value: String, max_age: Duration) -> Cookie<'static> {
        Cookie::build((name, value))
            .path("/")
            .http_only(true)
            .secure(self.secure)
            .same_site(SameSite::Lax)
            .max_age(cookie::time::Duration::seconds(max_age.as_secs() as i64))
            .build()
    }

    /// The `Set-Cookie` value holding `payload` sealed, bound to `state`.
    pub fn seal(&self, state: &str, payload: String) -> Option<HeaderValue> {
        let keys = self.keys();
        let key = keys.first()?;
        let name = self.name_for(state)?;
        let mut jar = CookieJar::new();
        jar.private_mut(key)
            .add(self.build(name.clone(), payload, self.max_age));
        let sealed = jar.get(&name)?;
        HeaderValue::from_str(&sealed.to_string()).ok()
    }

    /// The payload sealed for `state`, if the request carries a cookie that opens.
    pub fn open(&self, headers: &HeaderMap, state: &str) -> Option<String> {
        let name = self.name_for(state)?;
        let value = find_cookie(headers, &name)?;
        let mut jar = CookieJar::new();
        jar.add_original(Cookie::new(name.clone(), value.to_string()));
        self.keys()
            .iter()
            .find_map(|key| jar.private(key).get(&name))
            .map(|c| c.value().to_string())
    }

    /// A `Set-Cookie` value that removes the login cookie for `state`.
    pub fn clear(&self, state: &str) -> Option<HeaderValue> {
        let cookie = self.build(self.name_for(state)?, String::new(), Duration::ZERO);
        HeaderValue::from_str(&cookie.to_string()).ok()
    }
}

fn derive_keys(keyring: &Keyring) -> Vec<Key> {
    (0..keyring.len())
        .filter_map(|i| {
            let mut material = [0u8; 64];
            keyring.derive(i, b"login cookie", &mut material)?;
            Some(Key::from(&material))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;

    fn cookies(secrets: &[&str]) -> LoginCookies {
        let ring = Keyring::new(&secrets.iter().map(|s| Secret::new(*s)).collect::<Vec<_>>());
        LoginCookies::new(&ring, true, Duration::from_secs(600))
    }

    const A: &str = "0123456789abcdef0123456789abcdef";
    const STATE: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";

    #[test]
    fn sealed_payload_opens_only_for_its_state() {
        let c = cookies(&[A]);
        let set = c.seal(STATE, "payload".into()).unwrap();
        let text = set.to_str().unwrap();
        assert!(text.starts_with("__Host-portcullis-login-abcdefghijklmnop="));
        assert!(!text.contains("payload"));
        assert!(text.contains("HttpOnly") && text.contains("Secure"));
        let req = crate::session::test_cookie_request(&set);
        assert_eq!(c.open(&req, STATE).as_deref(), Some("payload"));
        assert_eq!(c.open(&req, "zzzzzzzzzzzzzzzzzzzz"), None);
    }

    #[test]
    fn tampered_or_foreign_cookie_does_not_open() {
        let c = cookies(&[A]);
        let set = c.seal(STATE, "payload".into()).unwrap();
        let other = cookies(&["ffffffffffffffffffffffffffffffffffff"]);
        assert_eq!(
            other.open(&crate::session::test_cookie_request(&set), STATE),
            None
        );
        let tampered = set.to_str().unwrap().replacen('=', "=A", 1);
        let tampered = HeaderValue::from_str(&tampered).unwrap();
        assert_eq!(
            c.open(&crate::session::test_cookie_request(&tampered), STATE),
            None
        );
    }

    #[test]
    fn only_issued_states_name_a_cookie() {
        let c = cookies(&[A]);
        for bad in [
            "a;Domain=evil",
            "abcdefghijklmnopqrstuvwxyz0123456789ABCDEF",
            "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGH",
            "abcdefghijklmnopqrstuvwxyz0123456789ABCDE;G",
            "abcdefghijklmnopqrstuvwxyz0123456789ABCDE=G",
            "",
        ] {
            assert!(!is_issued_state(bad), "{bad:?}");
            assert!(c.clear(bad).is_none() && c.seal(bad, "x".into()).is_none());
        }
        assert!(is_issued_state(STATE));
    }
}
