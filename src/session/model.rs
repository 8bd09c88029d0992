//! What a session holds: who the user is and the tokens the gateway uses on their behalf.
//! Only ever stored sealed (see `crypto`); tokens are `Secret`s, so `Debug` redacts them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::secret::Secret;

use crate::clock::UnixTime;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Session {
    /// `sub` of the ID token (OIDC Core §2).
    pub sub: String,
    pub email: Option<String>,
    pub name: Option<String>,
    /// From the configured groups claim.
    #[serde(default)]
    pub groups: Vec<String>,
    /// The IdP's session id (`sid`), for back-channel logout.
    #[serde(default)]
    pub sid: Option<String>,
    pub access_token: Secret,
    /// When the access token expires, if the IdP said (`expires_in`).
    pub access_expires_at: Option<UnixTime>,
    pub refresh_token: Option<Secret>,
    /// Kept for RP-initiated logout (`id_token_hint`).
    pub id_token: Option<Secret>,
    pub created_at: UnixTime,
    pub last_seen: UnixTime,
    /// Claims the policies look at (`allow_claims`), as strings.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub claims: BTreeMap<String, Vec<String>>,
    /// Login time in milliseconds, to order it against back-channel logouts precisely.
    #[serde(default)]
    pub created_ms: u64,
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.expose())
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret::new)
    }
}
