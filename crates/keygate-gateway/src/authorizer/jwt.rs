//! JWT authorizers (a Cognito user pool's, or any issuer's): the token verified against the
//! issuer's JSON Web Keys, no function run.
//!
//! The keys are fetched on first need (from the JWKS URL through the gateway's upstream client,
//! or read from a file), kept, and fetched again when a token names a key id they lack (a
//! rotation), at most once per [`REFETCH_EVERY`] so that tokens with made-up key ids cannot make
//! keygate hammer the issuer. Only RSA and EC keys are taken and only their signature
//! algorithms accepted: `alg: none`, HMAC (a public key used as a shared secret) and a header
//! algorithm that is not the key's are refused. Checked: the signature, `exp` and `nbf` (with
//! [`LEEWAY_SECS`]), `iss`, the audience (`aud`, or an access token's `client_id`), a Cognito
//! token's `token_use`, and the scopes.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use keygate_types::Jwt;
use serde_json::{Map, Value};

use crate::upstream::{Target, Upstream};

/// Seconds of clock difference allowed for `exp` and `nbf`.
pub const LEEWAY_SECS: u64 = 5;
/// Least time between two fetches of the keys for unknown key ids.
pub const REFETCH_EVERY: Duration = Duration::from_secs(2);
/// Longest a fetch of the keys may take (requests wait for it).
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// The signature algorithms accepted (asymmetric only).
const ALGORITHMS: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
];

/// A token's claims, as the function sees them (`requestContext.authorizer.claims`).
pub type Claims = Map<String, Value>;

/// Why a token was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reject {
    /// The token is not good (401).
    Token(&'static str),
    /// The keys cannot be had (500): keygate cannot decide.
    Keys,
}

/// One key of the set.
struct Key {
    kid: Option<String>,
    /// The key's own `alg`, when it says one.
    alg: Option<Algorithm>,
    /// RSA (`true`) or EC.
    rsa: bool,
    key: DecodingKey,
}

/// The keys as last fetched.
struct Keys(Vec<Key>);

impl Keys {
    /// The key a token's header names (`kid`); without one, the only key.
    fn find(&self, kid: Option<&str>) -> Option<&Key> {
        match kid {
            Some(kid) => self.0.iter().find(|k| k.kid.as_deref() == Some(kid)),
            None if self.0.len() == 1 => self.0.first(),
            None => None,
        }
    }
}

/// Verifies tokens for one JWT authorizer.
pub(crate) struct Verifier {
    settings: Jwt,
    /// The JWKS URL parsed (`None` for a file).
    target: Option<Target>,
    keys: Mutex<Option<Arc<Keys>>>,
    /// When the keys were last fetched; held while fetching, so one fetch runs at a time.
    fetched: tokio::sync::Mutex<Option<Instant>>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier").field("issuer", &self.settings.issuer).finish_non_exhaustive()
    }
}

impl Verifier {
    pub(crate) fn new(settings: Jwt) -> Self {
        let url = settings.jwks.starts_with("https://") || settings.jwks.starts_with("http://");
        let target = if url { Target::fixed(&settings.jwks, false) } else { None };
        Self { settings, target, keys: Mutex::new(None), fetched: tokio::sync::Mutex::new(None) }
    }

    /// Verifies `token` (an optional `Bearer ` before it is dropped): its claims, or why not.
    pub(crate) async fn verify(&self, upstream: &Upstream, token: &str) -> Result<Claims, Reject> {
        let token = token.strip_prefix("Bearer ").unwrap_or(token).trim();
        let header =
            jsonwebtoken::decode_header(token).map_err(|_| Reject::Token("jwt_malformed"))?;
        if !ALGORITHMS.contains(&header.alg) {
            return Err(Reject::Token("jwt_algorithm"));
        }
        let keys = self.keys_for(upstream, header.kid.as_deref()).await?;
        let key = keys.find(header.kid.as_deref()).ok_or(Reject::Token("jwt_unknown_key"))?;
        let rsa_alg = !matches!(header.alg, Algorithm::ES256 | Algorithm::ES384);
        if key.rsa != rsa_alg || key.alg.is_some_and(|alg| alg != header.alg) {
            return Err(Reject::Token("jwt_algorithm"));
        }
        let s = &self.settings;
        let mut validation = Validation::new(header.alg);
        validation.leeway = LEEWAY_SECS;
        validation.validate_nbf = true;
        validation.set_issuer(&[&s.issuer]);
        validation.set_required_spec_claims(&["exp", "iss"]);
        // A Cognito access token has no `aud`: its audience is checked below.
        if s.audience.is_empty() || s.cognito {
            validation.validate_aud = false;
        } else {
            validation.set_audience(&s.audience);
        }
        let claims = jsonwebtoken::decode::<Claims>(token, &key.key, &validation)
            .map_err(|e| {
                tracing::debug!(issuer = %s.issuer, error = ?e.kind(), "JWT refused");
                Reject::Token("jwt_invalid")
            })?
            .claims;
        let text = |name: &str| claims.get(name).and_then(Value::as_str);
        if s.cognito {
            // As API Gateway's COGNITO_USER_POOLS: an ID token unless scopes are asked for,
            // then an access token.
            let (token_use, audience) =
                if s.scopes.is_empty() { ("id", "aud") } else { ("access", "client_id") };
            if text("token_use") != Some(token_use) {
                return Err(Reject::Token("jwt_token_use"));
            }
            if !s.audience.is_empty()
                && !text(audience).is_some_and(|a| s.audience.iter().any(|x| x == a))
            {
                return Err(Reject::Token("jwt_audience"));
            }
        }
        if !s.scopes.is_empty() {
            let granted = text("scope").unwrap_or_default();
            if !granted.split_whitespace().any(|g| s.scopes.iter().any(|w| w == g)) {
                return Err(Reject::Token("jwt_scope"));
            }
        }
        Ok(claims)
    }

    /// The keys, holding `kid` when they can: fetched when there are none yet, and again for
    /// an unknown `kid` when the last fetch is [`REFETCH_EVERY`] old.
    async fn keys_for(&self, upstream: &Upstream, kid: Option<&str>) -> Result<Arc<Keys>, Reject> {
        let held = || self.keys.lock().unwrap_or_else(PoisonError::into_inner).clone();
        if let Some(keys) = held()
            && keys.find(kid).is_some()
        {
            return Ok(keys);
        }
        let mut fetched = self.fetched.lock().await;
        // Another request may have fetched them meanwhile.
        let current = held();
        if let Some(keys) = &current
            && keys.find(kid).is_some()
        {
            return Ok(Arc::clone(keys));
        }
        // Fetched (or tried) a moment ago: what is held decides, without asking again, so
        // neither made-up key ids nor a down issuer make a fetch per request.
        if fetched.is_some_and(|at| at.elapsed() < REFETCH_EVERY) {
            return current.ok_or(Reject::Keys);
        }
        *fetched = Some(Instant::now());
        let fetch = tokio::time::timeout(FETCH_TIMEOUT, self.fetch(upstream));
        match fetch.await.unwrap_or_else(|_| Err("no answer within 5 s".to_owned())) {
            Ok(keys) => {
                let keys = Arc::new(keys);
                *self.keys.lock().unwrap_or_else(PoisonError::into_inner) = Some(Arc::clone(&keys));
                Ok(keys)
            }
            Err(why) => {
                tracing::warn!(jwks = %self.settings.jwks, "cannot read the JWT authorizer's keys: {why}");
                // The keys held still decide; without any, nothing can be decided.
                current.ok_or(Reject::Keys)
            }
        }
    }

    /// Reads the key set from its URL or file.
    async fn fetch(&self, upstream: &Upstream) -> Result<Keys, String> {
        let body = match &self.target {
            Some(target) => {
                let request = keygate_http::Request::build(
                    "GET",
                    "/",
                    &[("accept", b"application/json".as_slice())],
                )
                .ok_or("cannot make the request")?;
                let res = upstream
                    .forward(&self.settings.jwks, "", Some(target), false, &[], &request)
                    .await
                    .map_err(|e| format!("{e:?}"))?;
                if res.status != http::StatusCode::OK {
                    return Err(format!("answered {}", res.status));
                }
                res.body.to_vec()
            }
            None if self.settings.jwks.contains("://") => {
                return Err("not an http(s) URL".to_owned());
            }
            None => tokio::fs::read(&self.settings.jwks).await.map_err(|e| e.to_string())?,
        };
        let set: JwkSet =
            serde_json::from_slice(&body).map_err(|e| format!("not a JSON Web Key Set: {e}"))?;
        let mut keys = Vec::new();
        for jwk in &set.keys {
            let rsa = match &jwk.algorithm {
                AlgorithmParameters::RSA(_) => true,
                AlgorithmParameters::EllipticCurve(_) => false,
                // Shared secrets and other kinds are never taken from a key set.
                _ => continue,
            };
            // Keys for encryption, or for an algorithm that is no signature's, sign nothing.
            if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
                continue;
            }
            let alg = match jwk.common.key_algorithm.map(signature_algorithm) {
                None => None,
                Some(Some(alg)) => Some(alg),
                Some(None) => continue,
            };
            let Ok(key) = DecodingKey::from_jwk(jwk) else { continue };
            keys.push(Key { kid: jwk.common.key_id.clone(), alg, rsa, key });
        }
        if keys.is_empty() {
            return Err("the set holds no RSA or EC key".to_owned());
        }
        Ok(Keys(keys))
    }
}

/// A key's `alg` as a signature algorithm (`None` for encryption algorithms and the like).
fn signature_algorithm(alg: KeyAlgorithm) -> Option<Algorithm> {
    Some(match alg {
        KeyAlgorithm::RS256 => Algorithm::RS256,
        KeyAlgorithm::RS384 => Algorithm::RS384,
        KeyAlgorithm::RS512 => Algorithm::RS512,
        KeyAlgorithm::PS256 => Algorithm::PS256,
        KeyAlgorithm::PS384 => Algorithm::PS384,
        KeyAlgorithm::PS512 => Algorithm::PS512,
        KeyAlgorithm::ES256 => Algorithm::ES256,
        KeyAlgorithm::ES384 => Algorithm::ES384,
        _ => return None,
    })
}
