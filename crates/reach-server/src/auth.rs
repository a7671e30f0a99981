//! Who is calling: issuing and checking access tokens, hashing secrets, and
//! the signing keys behind them. Reach signs its own tokens (HS256 with a key
//! kept in the database, shared by every node) and can also accept JWTs from
//! one external OIDC issuer, checked against its JWKS.
//!
//! This module never logs a token or a secret, and never trusts a token's
//! algorithm header beyond the algorithms allowed for its issuer.

pub mod admit;
pub mod extract;
pub mod oidc;
pub mod permissions;
pub mod secrets;
pub mod session_cookie;
pub mod verified;

use std::collections::BTreeSet;

use anyhow::Context;
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use admit::{AdmitError, Admitted, admit};

use crate::store::{App, Identities, Scope, User};
use crate::time::Micros;

/// Audience of the tokens Reach issues: Defender's resource identifier.
pub const AUDIENCE: &str = "https://api.securitycenter.microsoft.com";

/// The caller of an API request, after its token was checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The caller's tenant.
    pub tenant_id: String,
    /// Client id of the app, or None for a user.
    pub app_id: Option<String>,
    /// Shown as `requestor`: the app's name or the user's name.
    pub name: String,
    /// Roles (apps) or delegated scopes (users).
    pub roles: BTreeSet<String>,
    /// Tokens Reach issued: the app's or user's token generation at issue,
    /// checked against the account on every call (`admit`). None for an
    /// external issuer's tokens, which that issuer revokes.
    pub generation: Option<u64>,
    /// The machines the caller may see and act on (its device groups).
    pub scope: Scope,
}

impl Principal {
    /// Whether the caller holds any of `roles`.
    pub fn has_any(&self, roles: &[&str]) -> bool {
        roles.iter().any(|r| self.roles.contains(*r))
    }

    /// Key for per-caller rate limits.
    pub fn rate_key(&self) -> String {
        match &self.app_id {
            Some(id) => format!("app:{id}"),
            None => format!("user:{}:{}", self.tenant_id, self.name),
        }
    }

    /// The caller as the audit trail names it.
    pub fn actor(&self) -> crate::audit::Actor {
        match &self.app_id {
            Some(id) => crate::audit::Actor::app(id, &self.name),
            None => crate::audit::Actor::user(&self.name),
        }
    }
}

/// Claims of tokens Reach issues, shaped like Entra ID's app tokens.
#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    iss: String,
    aud: String,
    sub: String,
    iat: u64,
    nbf: u64,
    exp: u64,
    tid: String,
    appid: String,
    app_displayname: String,
    #[serde(default)]
    roles: Vec<String>,
    idtyp: String,
    /// Users: their roles as delegated scopes, space-separated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    scp: Option<String>,
    /// Users: the name shown as requestor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    /// The app's or user's token generation when issued (a Reach claim).
    #[serde(default)]
    rgen: u64,
}

/// The app id user tokens name (the console signs users in).
pub const CONSOLE_APP_ID: &str = "reach-console";

/// Signing keys, created once in the database and shared by every node
/// that uses it, so tokens and download links issued by one node are valid
/// on all of them.
pub struct Keys {
    jwt: Vec<u8>,
    /// HMAC key of result download links.
    pub link: Vec<u8>,
}

impl Keys {
    /// The server's signing keys, made on first start and shared by every node through the store.
    pub async fn load_or_create(store: &dyn Identities) -> anyhow::Result<Self> {
        Ok(Self {
            jwt: shared_key(store, "jwt-signing").await?,
            link: shared_key(store, "download-link").await?,
        })
    }
}

async fn shared_key(store: &dyn Identities, name: &str) -> anyhow::Result<Vec<u8>> {
    let mut fresh = vec![0u8; 32];
    rand::rng().fill_bytes(&mut fresh);
    let stored = store
        .secret(name, &hex::encode(&fresh), crate::time::Micros::now())
        .await
        .with_context(|| format!("loading the {name} key"))?;
    hex::decode(stored.trim()).with_context(|| format!("the stored {name} key is not hex"))
}

/// Why a token was refused. Shown to the caller; never contains the token.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct TokenError(pub String);

/// Issues and checks tokens: Reach's own, and an external issuer's (OIDC).
pub struct Authenticator {
    keys: Keys,
    issuer: String,
    lifetime_secs: u64,
    oidc: Option<oidc::Oidc>,
    /// Reach's tokens already verified on this node.
    verified: verified::Verified,
}

/// Seconds a token's times may be off (`exp`, `nbf`).
const LEEWAY_SECS: u64 = 5;

impl Authenticator {
    /// An authenticator issuing tokens as `issuer`, valid for `lifetime_secs`.
    pub fn new(keys: Keys, issuer: String, lifetime_secs: u64, oidc: Option<oidc::Oidc>) -> Self {
        Self {
            keys,
            issuer,
            lifetime_secs,
            oidc,
            verified: verified::Verified::default(),
        }
    }

    /// The key that signs download links.
    pub fn link_key(&self) -> &[u8] {
        &self.keys.link
    }

    /// Seconds a token Reach issues is valid.
    pub fn lifetime_secs(&self) -> u64 {
        self.lifetime_secs
    }

    /// Issues an access token for a client app.
    pub fn issue(&self, app: &App) -> anyhow::Result<String> {
        let now = jsonwebtoken::get_current_timestamp();
        let claims = Claims {
            iss: self.issuer.clone(),
            aud: AUDIENCE.to_string(),
            sub: app.client_id.clone(),
            iat: now,
            nbf: now,
            exp: now + self.lifetime_secs,
            tid: app.tenant_id.clone(),
            appid: app.client_id.clone(),
            app_displayname: app.name.clone(),
            roles: app.roles.clone(),
            idtyp: "app".to_string(),
            scp: None,
            name: None,
            rgen: app.token_generation,
        };
        self.sign(&claims)
    }

    /// Issues an access token for a console user: delegated scopes, the
    /// user's name as requestor.
    pub fn issue_user(&self, user: &User) -> anyhow::Result<String> {
        let now = jsonwebtoken::get_current_timestamp();
        let claims = Claims {
            iss: self.issuer.clone(),
            aud: AUDIENCE.to_string(),
            sub: format!("user:{}", user.name),
            iat: now,
            nbf: now,
            exp: now + self.lifetime_secs,
            tid: user.tenant_id.clone(),
            appid: CONSOLE_APP_ID.to_string(),
            app_displayname: "Reach console".to_string(),
            roles: Vec::new(),
            idtyp: "user".to_string(),
            scp: Some(user.roles.join(" ")),
            name: Some(user.name.clone()),
            rgen: user.token_generation,
        };
        self.sign(&claims)
    }

    fn sign(&self, claims: &Claims) -> anyhow::Result<String> {
        Ok(jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            claims,
            &EncodingKey::from_secret(&self.keys.jwt),
        )?)
    }

    /// Checks a bearer token: Reach's own, or the configured OIDC issuer's.
    pub async fn verify(&self, token: &str) -> Result<Principal, TokenError> {
        let now_secs = Micros::now().0.div_euclid(1_000_000).max(0) as u64;
        if let Some(principal) = self.verified.get(token, now_secs) {
            return Ok(principal);
        }
        let issuer = unverified_issuer(token)?;
        if let Some(oidc) = &self.oidc
            && issuer == oidc.issuer()
        {
            return oidc.verify(token).await;
        }
        if issuer != self.issuer {
            return Err(TokenError(format!(
                "Tokens from issuer '{issuer}' are not accepted"
            )));
        }
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud"]);
        validation.validate_nbf = true;
        validation.leeway = LEEWAY_SECS;
        let data = jsonwebtoken::decode::<Claims>(
            token,
            &DecodingKey::from_secret(&self.keys.jwt),
            &validation,
        )
        .map_err(describe_jwt_error)?;
        let claims = data.claims;
        if claims.exp.saturating_sub(claims.iat) > self.lifetime_secs {
            return Err(TokenError(
                "The access token's lifetime is longer than this server issues".into(),
            ));
        }
        // Valid until `exp` plus the leeway, as `decode` just judged it.
        let until = claims.exp.saturating_add(LEEWAY_SECS);
        let principal = principal_of(claims)?;
        self.verified.put(token, &principal, until, now_secs);
        Ok(principal)
    }
}

/// The caller a verified token of Reach's names.
fn principal_of(claims: Claims) -> Result<Principal, TokenError> {
    if claims.idtyp == "user" {
        let name = claims
            .name
            .ok_or_else(|| TokenError("The user token names no user".into()))?;
        return Ok(Principal {
            tenant_id: claims.tid,
            app_id: None,
            name,
            roles: claims
                .scp
                .unwrap_or_default()
                .split_whitespace()
                .map(String::from)
                .collect(),
            generation: Some(claims.rgen),
            scope: Scope::All,
        });
    }
    Ok(Principal {
        tenant_id: claims.tid,
        app_id: Some(claims.appid),
        name: claims.app_displayname,
        roles: claims.roles.into_iter().collect(),
        generation: Some(claims.rgen),
        scope: Scope::All,
    })
}

/// The `iss` claim, read without checking anything: only to pick the verifier.
fn unverified_issuer(token: &str) -> Result<String, TokenError> {
    #[derive(Deserialize)]
    struct Iss {
        iss: Option<String>,
    }
    let payload = token
        .split('.')
        .nth(1)
        .ok_or_else(|| TokenError("The access token is not a JWT".into()))?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .map_err(|_| TokenError("The access token is not a JWT".into()))?;
    let iss: Iss = serde_json::from_slice(&bytes)
        .map_err(|_| TokenError("The access token is not a JWT".into()))?;
    iss.iss
        .ok_or_else(|| TokenError("The access token has no issuer".into()))
}

pub(crate) fn describe_jwt_error(err: jsonwebtoken::errors::Error) -> TokenError {
    use jsonwebtoken::errors::ErrorKind;
    let why = match err.kind() {
        ErrorKind::ExpiredSignature => "The access token has expired",
        ErrorKind::ImmatureSignature => "The access token is not valid yet",
        ErrorKind::InvalidSignature => "The access token's signature is invalid",
        ErrorKind::InvalidAudience => "The access token is for another audience",
        ErrorKind::InvalidIssuer => "The access token is from another issuer",
        ErrorKind::InvalidAlgorithm => "The access token's algorithm is not accepted",
        ErrorKind::MissingRequiredClaim(_) => "The access token lacks a required claim",
        _ => "The access token is invalid",
    };
    TokenError(why.to_string())
}

/// Hex SHA-256, for high-entropy secrets (agent credentials, enrollment
/// tokens) that need no slow hash.
pub fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// A random secret of `bytes` bytes, URL-safe base64 without padding.
pub fn random_secret(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf)
}

/// Compares two byte strings in time independent of where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn authenticator() -> Authenticator {
        let key = || {
            let mut key = vec![0u8; 32];
            rand::rng().fill_bytes(&mut key);
            key
        };
        let keys = Keys {
            jwt: key(),
            link: key(),
        };
        Authenticator::new(keys, "reach".into(), 3599, None)
    }

    fn app() -> App {
        App {
            client_id: "c1".into(),
            tenant_id: "t1".into(),
            name: "Automation".into(),
            secret_hash: String::new(),
            roles: vec!["Machine.Read.All".into()],
            disabled: false,
            token_generation: 0,
            device_groups: Vec::new(),
        }
    }

    #[tokio::test]
    async fn issued_tokens_verify_and_tampered_ones_do_not() {
        let auth = authenticator();
        let token = auth.issue(&app()).unwrap();
        let principal = auth.verify(&token).await.unwrap();
        assert_eq!(principal.name, "Automation");
        assert!(principal.has_any(&["Machine.Read.All"]));

        let mut parts: Vec<String> = token.split('.').map(String::from).collect();
        parts[2] = format!("{}A", &parts[2][..parts[2].len() - 1]);
        let tampered = parts.join(".");
        if tampered != token {
            assert!(auth.verify(&tampered).await.is_err());
        }
        let other = authenticator().issue(&app()).unwrap();
        assert_eq!(
            auth.verify(&other).await.unwrap_err().0,
            "The access token's signature is invalid"
        );
    }

    #[tokio::test]
    async fn user_tokens_carry_scopes_and_the_users_name() {
        let auth = authenticator();
        let user = User {
            name: "Dana Analyst".into(),
            tenant_id: "t1".into(),
            password_hash: String::new(),
            roles: vec!["Machine.LiveResponse".into(), "Machine.Read".into()],
            disabled: false,
            token_generation: 0,
            device_groups: Vec::new(),
        };
        let principal = auth.verify(&auth.issue_user(&user).unwrap()).await.unwrap();
        assert_eq!(principal.name, "Dana Analyst");
        assert_eq!(principal.app_id, None);
        assert!(principal.has_any(&["Machine.Read"]));
        assert!(!principal.has_any(&["Library.Manage"]));
        assert_eq!(principal.rate_key(), "user:t1:Dana Analyst");
    }

    #[tokio::test]
    async fn alg_none_is_refused() {
        let auth = authenticator();
        let token = auth.issue(&app()).unwrap();
        let payload = token.split('.').nth(1).unwrap();
        let header = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(br#"{"alg":"none","typ":"JWT"}"#);
        assert!(auth.verify(&format!("{header}.{payload}.")).await.is_err());
    }
}
