//! `[oidc]`: the identity provider and how the gateway signs in at it as a client.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::ser::SerializeStruct;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use url::Url;

use super::parse::{self, choice_serde, Choice};
use super::{show, ConfigError};
use crate::client_key::ClientKey;
use crate::secret::Secret;

#[derive(Debug, Clone)]
pub struct OidcConfig {
    pub issuer: Url,
    pub client_id: String,
    /// `None` for a public client (no client authentication at the token endpoint).
    pub client_secret: Option<Secret>,
    pub scopes: Vec<String>,
    pub groups_claim: String,
    /// Audience of API clients' own JWT access tokens (routes with `accept_bearer`).
    pub api_audience: Option<String>,
    /// Extra parameters for the authorization request (e.g. Google's
    /// `access_type = "offline"`); never the ones the login flow itself sets.
    pub extra_authorize_params: BTreeMap<String, String>,
    /// Claims named by any `allow_claims` rule; kept in sessions for the policy.
    pub policy_claims: Vec<String>,
    /// Forces the client authentication method; `None` picks from discovery.
    pub token_endpoint_auth_method: Option<TokenAuthMethod>,
    /// The key for `private_key_jwt`, parsed (and so checked) when the config is read.
    pub client_key: Option<Arc<ClientKey>>,
    /// When to ask the userinfo endpoint for claims the ID token lacks.
    pub userinfo: UserinfoMode,
    pub discovery_retry_max: Duration,
}

/// `oidc.userinfo`: when the gateway calls the IdP's userinfo endpoint (OIDC Core §5.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UserinfoMode {
    /// At login, when the ID token lacks a claim the gateway needs.
    #[default]
    Auto,
    /// At login and after every refresh.
    Always,
    Never,
}

impl Choice for UserinfoMode {
    const CHOICES: &'static [(&'static str, Self)] = &[
        ("auto", UserinfoMode::Auto),
        ("always", UserinfoMode::Always),
        ("never", UserinfoMode::Never),
    ];
}

/// How a confidential client authenticates at the token endpoint (RFC 8414 §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenAuthMethod {
    ClientSecretBasic,
    ClientSecretPost,
    /// RFC 7523 client assertion signed with `oidc.client_key_file`.
    PrivateKeyJwt,
    /// A public client: no client authentication.
    None,
}

impl Choice for TokenAuthMethod {
    const CHOICES: &'static [(&'static str, Self)] = &[
        ("client_secret_basic", TokenAuthMethod::ClientSecretBasic),
        ("client_secret_post", TokenAuthMethod::ClientSecretPost),
        ("private_key_jwt", TokenAuthMethod::PrivateKeyJwt),
        ("none", TokenAuthMethod::None),
    ];
}

impl TokenAuthMethod {
    pub fn as_str(self) -> &'static str {
        self.word()
    }
}

choice_serde!(UserinfoMode, TokenAuthMethod);

/// Shown under the file's keys: the secret redacted, the key by its file and kid.
impl Serialize for OidcConfig {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut out = s.serialize_struct("oidc", 13)?;
        out.serialize_field("issuer", self.issuer.as_str())?;
        out.serialize_field("client_id", &self.client_id)?;
        match &self.client_secret {
            Some(_) => out.serialize_field("client_secret", show::REDACTED)?,
            None => out.skip_field("client_secret")?,
        }
        out.serialize_field("scopes", &self.scopes)?;
        out.serialize_field("groups_claim", &self.groups_claim)?;
        match &self.api_audience {
            Some(aud) => out.serialize_field("api_audience", aud)?,
            None => out.skip_field("api_audience")?,
        }
        match self.token_endpoint_auth_method {
            Some(m) => out.serialize_field("token_endpoint_auth_method", &m)?,
            None => out.skip_field("token_endpoint_auth_method")?,
        }
        match self.client_key.as_deref().and_then(ClientKey::file) {
            Some(file) => out.serialize_field("client_key_file", file)?,
            None => out.skip_field("client_key_file")?,
        }
        match self.client_key.as_deref() {
            Some(key) => out.serialize_field("client_key_id", key.kid())?,
            None => out.skip_field("client_key_id")?,
        }
        out.serialize_field("userinfo", &self.userinfo)?;
        let duration = humantime::format_duration(self.discovery_retry_max).to_string();
        out.serialize_field("discovery_retry_max", &duration)?;
        out.serialize_field("extra_authorize_params", &self.extra_authorize_params)?;
        out.end()
    }
}

/// Authorization request parameters the PKCE login sets itself.
const RESERVED_AUTHORIZE_PARAMS: [&str; 9] = [
    "response_type",
    "client_id",
    "redirect_uri",
    "scope",
    "state",
    "nonce",
    "code_challenge",
    "code_challenge_method",
    "response_mode",
];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOidc {
    #[serde(default, deserialize_with = "parse::http_url")]
    issuer: Option<Url>,
    #[serde(default, deserialize_with = "client_id")]
    client_id: Option<String>,
    client_secret: Option<String>,
    client_secret_file: Option<PathBuf>,
    #[serde(default, deserialize_with = "scopes")]
    scopes: Option<Vec<String>>,
    groups_claim: Option<String>,
    api_audience: Option<String>,
    token_endpoint_auth_method: Option<TokenAuthMethod>,
    client_key_file: Option<PathBuf>,
    client_key_id: Option<String>,
    userinfo: Option<UserinfoMode>,
    #[serde(default, deserialize_with = "authorize_params")]
    extra_authorize_params: Option<BTreeMap<String, String>>,
    #[serde(default, deserialize_with = "parse::duration")]
    discovery_retry_max: Option<Duration>,
}

fn client_id<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    parse::text(d, |id| match id {
        "" => Err("missing".to_string()),
        id => Ok(id.to_string()),
    })
}

fn scopes<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    let scopes = Vec::<String>::deserialize(d)?;
    if scopes.iter().any(|s| s == "openid") {
        Ok(Some(scopes))
    } else {
        Err(serde::de::Error::custom("must include \"openid\""))
    }
}

fn authorize_params<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<BTreeMap<String, String>>, D::Error> {
    let params = BTreeMap::<String, String>::deserialize(d)?;
    match params
        .keys()
        .find(|k| RESERVED_AUTHORIZE_PARAMS.contains(&k.as_str()))
    {
        Some(reserved) => Err(serde::de::Error::custom(format!(
            "{reserved:?} is set by the login flow itself and cannot be overridden"
        ))),
        None => Ok(Some(params)),
    }
}

/// `[oidc]` from the file.
pub(super) fn read(value: config::Value) -> Result<OidcConfig, ConfigError> {
    parse::section::<RawOidc>("oidc", value)?.validate()
}

impl RawOidc {
    fn validate(self) -> Result<OidcConfig, ConfigError> {
        let issuer = self
            .issuer
            .ok_or_else(|| ConfigError::new("oidc.issuer", "missing"))?;
        let client_id = self
            .client_id
            .ok_or_else(|| ConfigError::new("oidc.client_id", "missing"))?;
        let client_secret = read_secret(self.client_secret, self.client_secret_file.as_deref())?;
        let client_key = self
            .client_key_file
            .map(|path| read_client_key(path, self.client_key_id))
            .transpose()?;
        check_client_auth(
            self.token_endpoint_auth_method,
            client_secret.is_some(),
            client_key.is_some(),
        )?;
        let api_audience = self.api_audience.filter(|a| !a.is_empty());
        if api_audience.as_deref() == Some(client_id.as_str()) {
            return Err(ConfigError::new(
                "oidc.api_audience",
                "must differ from oidc.client_id (else ID tokens would pass as API tokens)",
            ));
        }
        Ok(OidcConfig {
            issuer,
            client_id,
            client_secret,
            scopes: self.scopes.unwrap_or_else(|| {
                ["openid", "email", "profile", "offline_access"]
                    .map(String::from)
                    .to_vec()
            }),
            groups_claim: self.groups_claim.unwrap_or_else(|| "groups".to_string()),
            api_audience,
            token_endpoint_auth_method: self.token_endpoint_auth_method,
            client_key,
            userinfo: self.userinfo.unwrap_or_default(),
            extra_authorize_params: self.extra_authorize_params.unwrap_or_default(),
            policy_claims: Vec::new(),
            discovery_retry_max: self.discovery_retry_max.unwrap_or(Duration::from_secs(30)),
        })
    }
}

/// The client secret, inline or from a file (trailing newline trimmed); never both.
fn read_secret(inline: Option<String>, file: Option<&Path>) -> Result<Option<Secret>, ConfigError> {
    match (inline, file) {
        (Some(_), Some(_)) => Err(ConfigError::new(
            "oidc.client_secret",
            "set either oidc.client_secret or oidc.client_secret_file, not both",
        )),
        (Some(value), None) => Ok(Some(Secret::new(value))),
        (None, Some(path)) => {
            let text = parse::read_file("oidc.client_secret_file", path)?;
            Ok(Some(Secret::new(text.trim_end_matches(['\r', '\n']))))
        }
        (None, None) => Ok(None),
    }
}

/// Reads and parses `oidc.client_key_file`, so a key that would fail at the first login
/// fails at start instead, naming the key.
fn read_client_key(path: PathBuf, kid: Option<String>) -> Result<Arc<ClientKey>, ConfigError> {
    let key = "oidc.client_key_file";
    let pem = std::fs::read(&path)
        .map_err(|e| ConfigError::new(key, format!("cannot read {}: {e}", path.display())))?;
    let client_key = ClientKey::from_pem(&pem, kid)
        .map_err(|why| ConfigError::new(key, format!("{}: {why}", path.display())))?;
    Ok(Arc::new(client_key.with_file(path)))
}

/// The client authentication settings must agree: a secret for the secret methods, a key
/// for `private_key_jwt`, neither for `none`.
fn check_client_auth(
    method: Option<TokenAuthMethod>,
    has_secret: bool,
    has_key: bool,
) -> Result<(), ConfigError> {
    let key = "oidc.token_endpoint_auth_method";
    match method {
        Some(TokenAuthMethod::PrivateKeyJwt) if !has_key => Err(ConfigError::new(
            "oidc.client_key_file",
            "missing: token_endpoint_auth_method = \"private_key_jwt\" needs the client's private key",
        )),
        Some(TokenAuthMethod::PrivateKeyJwt) if has_secret => Err(ConfigError::new(
            "oidc.client_secret",
            "set, but token_endpoint_auth_method = \"private_key_jwt\" signs with client_key_file instead",
        )),
        Some(m @ (TokenAuthMethod::ClientSecretBasic | TokenAuthMethod::ClientSecretPost))
            if !has_secret =>
        {
            Err(ConfigError::new(
                "oidc.client_secret",
                format!("missing: {key} = {:?} needs a client secret", m.as_str()),
            ))
        }
        Some(TokenAuthMethod::None) if has_secret => Err(ConfigError::new(
            "oidc.client_secret",
            "set, but token_endpoint_auth_method = \"none\" is a public client",
        )),
        Some(m) if has_key && m != TokenAuthMethod::PrivateKeyJwt => Err(ConfigError::new(
            "oidc.client_key_file",
            format!("set, but {key} = {:?} does not use it", m.as_str()),
        )),
        None if has_key => Err(ConfigError::new(
            key,
            "missing: set it to \"private_key_jwt\" to sign in with client_key_file",
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::config::{CliOverrides, Config};

    /// A config with `[oidc]` plus `extra` keys in it, and a `[session]`.
    fn with_oidc(extra: &str) -> Result<Config, ConfigError> {
        Config::from_toml_with_env(
            &format!(
                "[oidc]\nissuer = \"http://127.0.0.1:1\"\nclient_id = \"c\"\n{extra}\n[session]\nsecret = \"0123456789abcdef0123456789abcdef\"\ncookie_secure = false\n"
            ),
            &CliOverrides::default(),
        )
    }

    /// A fresh P-256 private key as PKCS#8 PEM.
    pub(crate) fn p256_pem() -> String {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let der = aws_lc_rs::signature::EcdsaKeyPair::generate_pkcs8(
            &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &rng,
        )
        .unwrap();
        let b64 = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, der.as_ref());
        format!("-----BEGIN PRIVATE KEY-----\n{b64}\n-----END PRIVATE KEY-----\n")
    }

    #[test]
    fn userinfo_defaults_to_auto_and_takes_the_three_modes() {
        assert_eq!(
            with_oidc("").unwrap().oidc.unwrap().userinfo,
            UserinfoMode::Auto
        );
        for (text, mode) in [
            ("always", UserinfoMode::Always),
            ("never", UserinfoMode::Never),
        ] {
            let cfg = with_oidc(&format!("userinfo = \"{text}\"\n")).unwrap();
            assert_eq!(cfg.oidc.unwrap().userinfo, mode);
        }
    }

    #[test]
    fn bad_enum_values_list_the_accepted_ones() {
        let err = with_oidc("token_endpoint_auth_method = \"x\"\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "oidc.token_endpoint_auth_method: expected one of client_secret_basic, client_secret_post, private_key_jwt, none, got \"x\""
        );
        let err = with_oidc("userinfo = \"sometimes\"\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "oidc.userinfo: expected one of auto, always, never, got \"sometimes\""
        );
        for (word, method) in TokenAuthMethod::CHOICES {
            assert_eq!(method.as_str(), *word);
            assert_eq!(TokenAuthMethod::from_word(word), Ok(*method));
        }
    }

    #[test]
    fn private_key_jwt_needs_a_key_that_parses() {
        let method = "token_endpoint_auth_method = \"private_key_jwt\"\n";
        let err = with_oidc(method).unwrap_err();
        assert_eq!(err.key, "oidc.client_key_file", "{err}");

        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk.pem");
        std::fs::write(
            &junk,
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        let err = with_oidc(&format!("{method}client_key_file = {:?}\n", junk)).unwrap_err();
        assert_eq!(err.key, "oidc.client_key_file", "{err}");
        assert!(err.to_string().contains("junk.pem"), "{err}");

        let missing = dir.path().join("absent.pem");
        let err = with_oidc(&format!("{method}client_key_file = {:?}\n", missing)).unwrap_err();
        assert_eq!(err.key, "oidc.client_key_file", "{err}");

        let good = dir.path().join("client.pem");
        std::fs::write(&good, p256_pem()).unwrap();
        let cfg = with_oidc(&format!(
            "{method}client_key_file = {:?}\nclient_key_id = \"k1\"\n",
            good
        ))
        .unwrap();
        let key = cfg.oidc.unwrap().client_key.unwrap();
        assert_eq!((key.alg(), key.kid()), ("ES256", "k1"));
        assert_eq!(key.file(), Some(good.as_path()));

        // A key without the method, or a secret with it, is a contradiction.
        let err = with_oidc(&format!("client_key_file = {:?}\n", good)).unwrap_err();
        assert_eq!(err.key, "oidc.token_endpoint_auth_method", "{err}");
        let err = with_oidc(&format!(
            "{method}client_key_file = {:?}\nclient_secret = \"s\"\n",
            good
        ))
        .unwrap_err();
        assert_eq!(err.key, "oidc.client_secret", "{err}");
    }

    #[test]
    fn secret_methods_need_a_secret_and_none_refuses_one() {
        let err = with_oidc("token_endpoint_auth_method = \"client_secret_post\"\n").unwrap_err();
        assert_eq!(err.key, "oidc.client_secret", "{err}");
        let err = with_oidc("token_endpoint_auth_method = \"none\"\nclient_secret = \"s\"\n")
            .unwrap_err();
        assert_eq!(err.key, "oidc.client_secret", "{err}");
        assert!(with_oidc("token_endpoint_auth_method = \"none\"\n").is_ok());
    }

    #[test]
    fn client_secret_inline_or_from_a_file_never_both() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("secret");
        std::fs::write(&file, "from-file\r\n").unwrap();
        let cfg = with_oidc(&format!("client_secret_file = {file:?}\n")).unwrap();
        assert_eq!(
            cfg.oidc.unwrap().client_secret.unwrap().expose(),
            "from-file"
        );
        let err = with_oidc(&format!(
            "client_secret = \"x\"\nclient_secret_file = {file:?}\n"
        ))
        .unwrap_err();
        assert_eq!(err.key, "oidc.client_secret", "{err}");
        let err = with_oidc("client_secret_file = \"/nonexistent\"\n").unwrap_err();
        assert_eq!(err.key, "oidc.client_secret_file", "{err}");
    }

    #[test]
    fn extra_authorize_params_cannot_override_the_flow() {
        let ok = with_oidc("extra_authorize_params = { access_type = \"offline\" }\n").unwrap();
        assert_eq!(
            ok.oidc.unwrap().extra_authorize_params["access_type"],
            "offline"
        );
        let err = with_oidc("extra_authorize_params = { code_challenge_method = \"plain\" }\n")
            .unwrap_err();
        assert_eq!(err.key, "oidc.extra_authorize_params");
    }

    #[test]
    fn required_and_checked_keys() {
        let load = |t: &str| Config::from_toml_with_env(t, &CliOverrides::default());
        let session =
            "[session]\nsecret = \"0123456789abcdef0123456789abcdef\"\ncookie_secure = false\n";
        let err = load(&format!("[oidc]\nclient_id = \"c\"\n{session}")).unwrap_err();
        assert_eq!(err.key, "oidc.issuer", "{err}");
        let err = load(&format!(
            "[oidc]\nissuer = \"http://127.0.0.1:1\"\nclient_id = \"\"\n{session}"
        ))
        .unwrap_err();
        assert_eq!(err.to_string(), "oidc.client_id: missing");
        let err = with_oidc("scopes = [\"email\"]\n").unwrap_err();
        assert_eq!(err.key, "oidc.scopes", "{err}");
        let err = with_oidc("api_audience = \"c\"\n").unwrap_err();
        assert_eq!(err.key, "oidc.api_audience", "{err}");
        let err = with_oidc("discovery_retry_max = \"soon\"\n").unwrap_err();
        assert_eq!(err.key, "oidc.discovery_retry_max", "{err}");
    }
}
