//! Tokens from one external OpenID Connect issuer (for example Entra ID),
//! checked against the issuer's JWKS: signature (asymmetric algorithms only,
//! so a public key can never be used as an HMAC secret), issuer, audience,
//! expiry and not-before. Permissions come from `roles` (app tokens) or `scp`
//! (delegated user tokens).
//!
//! Keys are cached; an unknown `kid` refreshes the set, at most once a minute.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use tokio::sync::Mutex;

use super::{Principal, TokenError, describe_jwt_error};
use crate::config;

const REFRESH_AT_MOST_EVERY: Duration = Duration::from_secs(60);
const ACCEPTED: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// An external issuer whose tokens the API accepts (its keys fetched and cached).
pub struct Oidc {
    config: config::Oidc,
    http: reqwest::Client,
    cache: Mutex<Cache>,
}

#[derive(Default)]
struct Cache {
    keys: Option<JwkSet>,
    fetched: Option<Instant>,
}

#[derive(Debug, Deserialize)]
struct Claims {
    #[serde(default)]
    roles: Vec<String>,
    #[serde(default)]
    scp: Option<String>,
    #[serde(default)]
    appid: Option<String>,
    #[serde(default)]
    azp: Option<String>,
    #[serde(default)]
    app_displayname: Option<String>,
    #[serde(default)]
    upn: Option<String>,
    #[serde(default)]
    preferred_username: Option<String>,
    #[serde(default)]
    unique_name: Option<String>,
    #[serde(default)]
    sub: Option<String>,
    #[serde(default)]
    tid: Option<String>,
}

impl Oidc {
    /// The issuer `config` names.
    pub fn new(config: config::Oidc) -> Self {
        Self {
            config,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("HTTP client builds"),
            cache: Mutex::new(Cache::default()),
        }
    }

    /// The issuer's URL.
    pub fn issuer(&self) -> &str {
        &self.config.issuer
    }

    async fn key(&self, kid: Option<&str>) -> Result<DecodingKey, TokenError> {
        let mut cache = self.cache.lock().await;
        let find = |set: &JwkSet| match kid {
            Some(kid) => set.find(kid).cloned(),
            None if set.keys.len() == 1 => set.keys.first().cloned(),
            None => None,
        };
        if let Some(jwk) = cache.keys.as_ref().and_then(find) {
            return DecodingKey::from_jwk(&jwk).map_err(describe_jwt_error);
        }
        let may_refresh = cache
            .fetched
            .is_none_or(|at| at.elapsed() >= REFRESH_AT_MOST_EVERY);
        if may_refresh {
            cache.fetched = Some(Instant::now());
            match self.fetch().await {
                Ok(set) => cache.keys = Some(set),
                Err(err) => {
                    tracing::warn!(jwks.url = %self.config.jwks_url, error = %err, "fetching the OIDC issuer's keys failed");
                }
            }
        }
        let jwk =
            cache.keys.as_ref().and_then(find).ok_or_else(|| {
                TokenError("The access token was signed by an unknown key".into())
            })?;
        DecodingKey::from_jwk(&jwk).map_err(describe_jwt_error)
    }

    async fn fetch(&self) -> anyhow::Result<JwkSet> {
        Ok(self
            .http
            .get(&self.config.jwks_url)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?)
    }

    /// Checks a token the issuer signed and maps its claims to a caller.
    pub async fn verify(&self, token: &str) -> Result<Principal, TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(describe_jwt_error)?;
        if !ACCEPTED.contains(&header.alg) {
            return Err(TokenError(
                "The access token's algorithm is not accepted".into(),
            ));
        }
        let key = self.key(header.kid.as_deref()).await?;
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[&self.config.issuer]);
        validation.set_audience(&self.config.audiences);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.validate_nbf = true;
        validation.leeway = 30;
        let claims = jsonwebtoken::decode::<Claims>(token, &key, &validation)
            .map_err(describe_jwt_error)?
            .claims;
        let mut roles: BTreeSet<String> = claims.roles.into_iter().collect();
        if let Some(scp) = &claims.scp {
            roles.extend(scp.split_whitespace().map(String::from));
        }
        let user = claims
            .upn
            .or(claims.preferred_username)
            .or(claims.unique_name);
        let app_id = claims.appid.or(claims.azp);
        let (app_id, name) = match (claims.scp.is_some(), user) {
            (true, Some(user)) => (None, user),
            _ => {
                let name = claims
                    .app_displayname
                    .or_else(|| app_id.clone())
                    .or(claims.sub)
                    .unwrap_or_else(|| "unknown".into());
                (app_id.or_else(|| Some(name.clone())), name)
            }
        };
        let tenant_id = if self.config.tenant_id.is_empty() {
            claims
                .tid
                .ok_or_else(|| TokenError("The access token has no tenant (tid) claim".into()))?
        } else {
            self.config.tenant_id.clone()
        };
        Ok(Principal {
            tenant_id,
            app_id,
            name,
            roles,
            // The issuer revokes its own tokens; its callers see every machine.
            generation: None,
            scope: crate::store::Scope::All,
        })
    }
}
