//! A route's Lambda authorizer at request time: the identity read from the request, the answer
//! taken from the cache or from the function, and the policy applied to the request's method
//! ARN. Runs in [`crate::Gateway::admit`] before the key check, as on API Gateway; routes
//! without an authorizer never reach it.
//!
//! Fail closed at every step: a missing identity or a token that fails the validation
//! expression is a 401 without calling the function; an answer the gateway cannot evaluate, a
//! function that fails or times out, or an authorizer whose function is gone is a 500
//! (`AuthorizerConfigurationException`); only an `Allow` that covers the method lets the
//! request on.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use keygate_functions::{FunctionHost, FunctionRef, InvokeError};
use keygate_http::Request;
use keygate_types::response::GatewayError;
use keygate_types::{Authorizer, AuthorizerKind, ServiceDefinition};

use super::jwt::{Reject, Verifier};
use super::{Answer, AnswerCache, Authorized, Decision, identity, method_arn, token_event};
use crate::upstream::Upstream;

/// Answers kept per authorizer at most (the least used go first).
pub const MAX_CACHED_ANSWERS: u64 = 10_000;

/// The account id in method ARNs (the one the proxy event's `requestContext.accountId` has).
const ACCOUNT: &str = "000000000000";

/// The error message with which an authorizer asks for a 401 (`callback("Unauthorized")`,
/// `throw new Error("Unauthorized")`, `raise Exception("Unauthorized")`).
const UNAUTHORIZED: &str = "Unauthorized";

/// A route's authorizer, resolved when the table is built.
#[derive(Debug)]
pub(crate) struct RouteAuthorizer {
    decl: Authorizer,
    /// The authorizer's function in the route's definition; `None` when it has none of that
    /// name (a snapshot the config would refuse today): every request gets a 500.
    function: Option<usize>,
    /// `identityValidationExpression`, anchored; `Err` when it does not compile (500 too).
    validation: Option<Result<regex::Regex, ()>>,
    /// Shared by every route of the deployment with the same authorizer, so a cached policy
    /// applies to every method it covers.
    cache: Arc<AnswerCache>,
    /// A JWT authorizer's verifier (its keys shared by every route with the same settings).
    jwt: Option<Arc<Verifier>>,
}

impl RouteAuthorizer {
    pub(crate) fn new(
        decl: &Authorizer,
        definition: &ServiceDefinition,
        api_id: &str,
        deployment_id: &str,
        caches: &Caches,
    ) -> Self {
        let function = definition.functions.iter().position(|f| f.name == decl.function);
        let validation = decl
            .validation
            .as_ref()
            .map(|expr| regex::Regex::new(&format!("^(?:{expr})$")).map_err(|_| ()));
        let id = CacheId {
            api_id: api_id.to_owned(),
            deployment_id: deployment_id.to_owned(),
            stage: definition.stage.clone(),
            decl: decl.clone(),
        };
        let jwt = decl.jwt.as_ref().map(|jwt| caches.verifier(jwt));
        Self { decl: decl.clone(), function, validation, cache: caches.get(id), jwt }
    }
}

/// Why a request did not pass its authorizer: the gateway's answer and the access log's reason.
#[derive(Debug)]
pub(crate) struct Refusal {
    pub(crate) error: GatewayError,
    pub(crate) reason: &'static str,
}

fn refuse<T>(error: GatewayError, reason: &'static str) -> Result<T, Refusal> {
    Err(Refusal { error, reason })
}

/// The request as the authorizer step needs it.
pub(crate) struct Ask<'a> {
    pub(crate) req: &'a Request,
    /// The path after the stage.
    pub(crate) path: &'a str,
    pub(crate) resource: &'a str,
    pub(crate) params: &'a [(String, String)],
    pub(crate) peer: SocketAddr,
    pub(crate) api_id: &'a str,
    pub(crate) deployment_id: &'a str,
    pub(crate) definition: &'a ServiceDefinition,
}

/// Runs `authorizer` for the request: what it let through, or the refusal. `upstream` fetches
/// a JWT authorizer's keys.
pub(crate) async fn authorize(
    functions: &FunctionHost,
    upstream: &Upstream,
    authorizer: &RouteAuthorizer,
    ask: &Ask<'_>,
) -> Result<Authorized, Refusal> {
    let req = ask.req;
    let Some(values) = identity(&authorizer.decl.identity_source, &req.headers, req.query()) else {
        return refuse(GatewayError::Unauthorized, "authorizer_identity_missing");
    };
    if authorizer.decl.kind != AuthorizerKind::Request {
        match &authorizer.validation {
            Some(Ok(expr)) if !expr.is_match(&values[0]) => {
                return refuse(GatewayError::Unauthorized, "authorizer_token_invalid");
            }
            Some(Err(())) => {
                return refuse(GatewayError::AuthorizerFailure, "authorizer_misconfigured");
            }
            _ => {}
        }
    }
    if authorizer.decl.kind == AuthorizerKind::Jwt {
        // A JWT authorizer without its settings (a snapshot the config would not write)
        // decides nothing: never a function of the same name.
        let Some(verifier) = &authorizer.jwt else {
            return refuse(GatewayError::AuthorizerFailure, "authorizer_misconfigured");
        };
        return match verifier.verify(upstream, &values[0]).await {
            Ok(claims) => Ok(Authorized::Jwt(Arc::new(claims))),
            Err(Reject::Token(reason)) => refuse(GatewayError::Unauthorized, reason),
            Err(Reject::Keys) => refuse(GatewayError::AuthorizerFailure, "jwt_keys_unavailable"),
        };
    }
    let def = ask.definition;
    let arn =
        method_arn(&def.region, ACCOUNT, ask.api_id, &def.stage, req.method.as_str(), ask.path);
    let key = AnswerCache::key(&values);
    let (answer, latency_ms) = match authorizer.cache.get(&key) {
        Some(answer) => (answer, 0),
        None => {
            let started = Instant::now();
            let answer = Arc::new(call(functions, authorizer, ask, &values[0], &arn).await?);
            authorizer.cache.insert(key, Arc::clone(&answer));
            (answer, started.elapsed().as_millis() as u64)
        }
    };
    match answer.policy.decide(&arn) {
        Decision::Allow => Ok(Authorized::Lambda { answer, latency_ms }),
        Decision::ExplicitDeny => refuse(GatewayError::ExplicitDeny, "authorizer_denied"),
        Decision::ImplicitDeny => refuse(GatewayError::ImplicitDeny, "authorizer_not_allowed"),
    }
}

/// Invokes the authorizer's function with the TOKEN or REQUEST event and reads its answer.
async fn call(
    functions: &FunctionHost,
    authorizer: &RouteAuthorizer,
    ask: &Ask<'_>,
    token: &str,
    arn: &str,
) -> Result<Answer, Refusal> {
    let def = ask.definition;
    let Some(spec) = authorizer.function.map(|i| &def.functions[i]) else {
        tracing::warn!(
            function = %authorizer.decl.function,
            "the route's authorizer names a function the deployment does not have"
        );
        return refuse(GatewayError::AuthorizerFailure, "authorizer_misconfigured");
    };
    let event = match authorizer.decl.kind {
        AuthorizerKind::Token => Bytes::from(token_event(token, arn)),
        // Decided by its verifier before any function is looked at.
        AuthorizerKind::Jwt => {
            return refuse(GatewayError::AuthorizerFailure, "authorizer_misconfigured");
        }
        AuthorizerKind::Request => {
            let req = ask.req;
            crate::event::build(&crate::event::EventInput {
                method: req.method.as_str(),
                path: ask.path,
                stage: &def.stage,
                resource: ask.resource,
                headers: &req.headers,
                query: req.query(),
                params: ask.params,
                body: &[],
                peer: ask.peer,
                request_id: &uuid::Uuid::new_v4().to_string(),
                api_id: ask.api_id,
                deployment_id: ask.deployment_id,
                api_key: None,
                time: time::OffsetDateTime::now_utc(),
                authorizer: None,
                authorizer_request: Some(arn),
            })
        }
    };
    let f = FunctionRef::of(def, spec);
    let function = spec.name.as_str();
    match functions.invoke(&f, event).await {
        Ok(raw) => Answer::parse(&raw).or_else(|why| {
            tracing::warn!(function, "authorizer: {why}");
            refuse(GatewayError::AuthorizerFailure, "authorizer_bad_answer")
        }),
        Err(InvokeError::FunctionError { message, .. }) if message == UNAUTHORIZED => {
            refuse(GatewayError::Unauthorized, "authorizer_unauthorized")
        }
        Err(InvokeError::Timeout) => {
            tracing::warn!(function, "authorizer timed out");
            refuse(GatewayError::AuthorizerFailure, "authorizer_failed")
        }
        Err(e) => {
            // The error type only: an authorizer's message may repeat the token it was given.
            let kind = match &e {
                InvokeError::FunctionError { error_type, .. } => error_type.as_str(),
                InvokeError::Crashed(_) => "crashed",
                InvokeError::InitFailed(_) => "init failed",
                _ => "cannot run",
            };
            tracing::warn!(function, error = kind, "authorizer failed");
            refuse(GatewayError::AuthorizerFailure, "authorizer_failed")
        }
    }
}

/// Which answers a cache holds: one authorizer (as declared) of one deployment of an API
/// stage. A redeploy starts with an empty cache, so a changed authorizer decides at once.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct CacheId {
    api_id: String,
    deployment_id: String,
    stage: String,
    decl: Authorizer,
}

/// The authorizers' answer caches and JWT verifiers, kept across table rebuilds (a key created
/// does not empty them): each table holds its own, and a rebuild finds the ones it shares here.
#[derive(Debug, Default)]
pub struct Caches {
    by_id: Mutex<HashMap<CacheId, Weak<AnswerCache>>>,
    verifiers: Mutex<HashMap<keygate_types::Jwt, Weak<Verifier>>>,
}

impl Caches {
    fn verifier(&self, jwt: &keygate_types::Jwt) -> Arc<Verifier> {
        shared(&self.verifiers, jwt.clone(), || Verifier::new(jwt.clone()))
    }

    fn get(&self, id: CacheId) -> Arc<AnswerCache> {
        let ttl = Duration::from_secs(u64::from(id.decl.ttl_secs));
        shared(&self.by_id, id, || AnswerCache::new(ttl, MAX_CACHED_ANSWERS))
    }
}

/// The value `map` holds for `key` while some table holds it, else a new one from `make`;
/// values no table holds any more go.
fn shared<K: std::hash::Hash + Eq, V>(
    map: &Mutex<HashMap<K, Weak<V>>>,
    key: K,
    make: impl FnOnce() -> V,
) -> Arc<V> {
    let mut map = map.lock().unwrap_or_else(PoisonError::into_inner);
    map.retain(|_, v| v.strong_count() > 0);
    if let Some(v) = map.get(&key).and_then(Weak::upgrade) {
        return v;
    }
    let v = Arc::new(make());
    map.insert(key, Arc::downgrade(&v));
    v
}

#[cfg(test)]
mod tests {
    use keygate_types::IdentitySource;

    use super::*;

    /// A snapshot could say JWT without the settings (the config never writes one): the
    /// request is refused, and a function that happens to bear the authorizer's name never runs.
    #[tokio::test]
    async fn a_jwt_authorizer_without_its_settings_refuses_and_runs_no_function() {
        let mut definition = crate::table::tests::definition("svc", "dev", &["/a"]);
        definition.functions[0].name = "pool".into();
        let decl = Authorizer {
            function: "pool".into(),
            kind: AuthorizerKind::Jwt,
            identity_source: IdentitySource::authorization_header(),
            validation: None,
            ttl_secs: 0,
            jwt: None,
        };
        let authorizer = RouteAuthorizer::new(&decl, &definition, "api", "dep", &Caches::default());
        let req = keygate_http::Request::build("GET", "/dev/a", &[("authorization", b"t")])
            .expect("a valid head");
        let ask = Ask {
            req: &req,
            path: "/a",
            resource: "/a",
            params: &[],
            peer: "127.0.0.1:1".parse().unwrap(),
            api_id: "api",
            deployment_id: "dep",
            definition: &definition,
        };
        let refused = authorize(&FunctionHost::default(), &Upstream::new(), &authorizer, &ask)
            .await
            .unwrap_err();
        assert_eq!(
            (refused.error, refused.reason),
            (GatewayError::AuthorizerFailure, "authorizer_misconfigured")
        );
    }
}
