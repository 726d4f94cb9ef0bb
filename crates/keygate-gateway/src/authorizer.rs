//! What a Lambda authorizer answers, and what it allows (issue 18's first part).
//!
//! An authorizer function returns a principal id, an IAM policy document, an optional
//! `context` and, for `apiKeySourceType: AUTHORIZER`, the API key to meter the request with
//! (`usageIdentifierKey`). API Gateway evaluates the policy against the request's method ARN
//! (`arn:aws:execute-api:{region}:{account}:{apiId}/{stage}/{METHOD}/{path}`): an explicit
//! `Deny` that matches wins, then an `Allow` that matches; no match is a deny. A cached answer
//! is applied to every method its policy covers, so the policy is kept parsed.
//!
//! Fail closed: anything keygate cannot evaluate exactly (a `Condition`, `NotAction`,
//! `NotResource`, an effect other than `Allow`/`Deny`, a `context` value that is not a string,
//! number or boolean, a missing principal id) makes the whole answer [`BadAnswer`], which the
//! gateway turns into API Gateway's 500 `AuthorizerConfigurationException`, never into access.

mod jwt;
mod run;

use std::sync::Arc;
use std::time::Duration;

use keygate_http::Fields;
use keygate_types::authorizer::{IdentitySource, Source};
use serde_json::{Map, Value};

/// A Lambda authorizer's answer, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// `principalId`, passed to the function in `requestContext.authorizer.principalId`.
    pub principal_id: String,
    pub policy: Policy,
    /// `context`: each value a string, number or boolean (API Gateway passes them as strings).
    pub context: Map<String, Value>,
    /// `usageIdentifierKey`: the API key value, for `apiKeySourceType: AUTHORIZER`.
    pub usage_identifier_key: Option<String>,
}

pub(crate) use run::{Ask, Refusal, RouteAuthorizer, authorize};
pub use run::{Caches, MAX_CACHED_ANSWERS};

pub use jwt::{Claims, LEEWAY_SECS, REFETCH_EVERY};

/// What an authorizer let through: the function sees it in `requestContext.authorizer`.
#[derive(Debug, Clone)]
pub enum Authorized {
    /// A Lambda authorizer's answer (`principalId`, `context`, `usageIdentifierKey`).
    Lambda {
        answer: Arc<Answer>,
        /// How long the authorizer took (`integrationLatency`; 0 for a cached answer).
        latency_ms: u64,
    },
    /// A JWT authorizer's verified token (`claims`).
    Jwt(Arc<Claims>),
}

impl Authorized {
    /// The API key a Lambda authorizer named (`usageIdentifierKey`).
    pub fn usage_identifier_key(&self) -> Option<&str> {
        match self {
            Self::Lambda { answer, .. } => answer.usage_identifier_key.as_deref(),
            Self::Jwt(_) => None,
        }
    }
}

/// Why an authorizer's answer cannot be used (API Gateway: 500, `AuthorizerConfigurationException`).
/// Says what is wrong, for the function's author; never repeats values from the answer, which
/// may hold a key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the authorizer's answer {0}")]
pub struct BadAnswer(String);

fn bad(why: impl Into<String>) -> BadAnswer {
    BadAnswer(why.into())
}

/// An IAM policy document: its statements, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    statements: Vec<Statement>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Effect {
    Allow,
    Deny,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Statement {
    effect: Effect,
    /// Action patterns (`execute-api:Invoke`, `execute-api:*`, `*`), matched without case.
    actions: Vec<String>,
    /// Resource patterns (method ARNs with `*` and `?`), matched with case.
    resources: Vec<String>,
}

/// What a policy says of one method ARN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// A matching `Allow` and no matching `Deny`.
    Allow,
    /// A matching `Deny` (API Gateway: 403 "User is not authorized to access this resource
    /// with an explicit deny").
    ExplicitDeny,
    /// No statement matches (API Gateway: 403 "User is not authorized to access this
    /// resource").
    ImplicitDeny,
}

/// The action an authorizer's policy must allow for a request to pass (`execute-api:Invoke`),
/// in lower case: IAM compares actions without case.
const INVOKE: &str = "execute-api:invoke";

impl Answer {
    /// Reads an authorizer function's answer (its JSON result).
    ///
    /// # Errors
    /// An answer API Gateway would refuse, or one with parts keygate cannot evaluate exactly.
    pub fn parse(body: &[u8]) -> Result<Self, BadAnswer> {
        let value: Value =
            serde_json::from_slice(body).map_err(|_| bad("is not JSON (an object expected)"))?;
        let Value::Object(mut answer) = value else { return Err(bad("is not a JSON object")) };
        let principal_id = match answer.remove("principalId") {
            Some(Value::String(id)) => id,
            // A number or a boolean is taken as its text.
            Some(Value::Number(n)) => n.to_string(),
            Some(Value::Bool(b)) => b.to_string(),
            Some(_) => return Err(bad("has a principalId that is not a string")),
            None => return Err(bad("has no principalId")),
        };
        let policy = match answer.remove("policyDocument") {
            Some(doc) => Policy::parse(doc)?,
            None => return Err(bad("has no policyDocument")),
        };
        let context = match answer.remove("context") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(context)) => {
                for (name, value) in &context {
                    if !matches!(value, Value::String(_) | Value::Number(_) | Value::Bool(_)) {
                        return Err(bad(format!(
                            "has a context value that is not a string, number or boolean \
                             (context.{name}; API Gateway accepts no objects or arrays there)"
                        )));
                    }
                }
                context
            }
            Some(_) => return Err(bad("has a context that is not an object")),
        };
        let usage_identifier_key = match answer.remove("usageIdentifierKey") {
            None | Some(Value::Null) => None,
            Some(Value::String(key)) => Some(key),
            Some(_) => return Err(bad("has a usageIdentifierKey that is not a string")),
        };
        Ok(Self { principal_id, policy, context, usage_identifier_key })
    }
}

impl Policy {
    /// Reads a policy document (`{"Version": ..., "Statement": [...] | {...}}`).
    ///
    /// # Errors
    /// A document that is not one, or a statement keygate cannot evaluate exactly.
    pub fn parse(doc: Value) -> Result<Self, BadAnswer> {
        let Value::Object(mut doc) = doc else {
            return Err(bad("has a policyDocument that is not an object"));
        };
        let statements = match doc.remove("Statement") {
            Some(Value::Array(list)) => list,
            Some(one @ Value::Object(_)) => vec![one],
            Some(_) => return Err(bad("has a Statement that is neither a list nor an object")),
            None => return Err(bad("has a policyDocument without Statement")),
        };
        let statements = statements
            .into_iter()
            .enumerate()
            .map(|(i, s)| {
                Statement::parse(s).map_err(|why| bad(format!("has Statement[{i}] {why}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { statements })
    }

    /// What the policy says of `method_arn`: an explicit deny wins over any allow.
    pub fn decide(&self, method_arn: &str) -> Decision {
        let applies = |s: &&Statement| {
            s.actions.iter().any(|a| action_matches(a))
                && s.resources.iter().any(|r| glob(r, method_arn))
        };
        let mut allowed = false;
        for s in self.statements.iter().filter(applies) {
            match s.effect {
                Effect::Deny => return Decision::ExplicitDeny,
                Effect::Allow => allowed = true,
            }
        }
        if allowed { Decision::Allow } else { Decision::ImplicitDeny }
    }
}

impl Statement {
    fn parse(statement: Value) -> Result<Self, String> {
        let Value::Object(mut s) = statement else { return Err("is not an object".into()) };
        for unsupported in ["Condition", "NotAction", "NotResource", "NotPrincipal"] {
            if s.contains_key(unsupported) {
                return Err(format!(
                    "uses {unsupported}, which keygate does not evaluate (the request is refused \
                     rather than decided without it)"
                ));
            }
        }
        let effect = match s.remove("Effect") {
            Some(Value::String(e)) if e == "Allow" => Effect::Allow,
            Some(Value::String(e)) if e == "Deny" => Effect::Deny,
            Some(_) => return Err("has an Effect other than \"Allow\" or \"Deny\"".into()),
            None => return Err("has no Effect".into()),
        };
        let actions = strings(s.remove("Action"), "Action")?;
        let resources = strings(s.remove("Resource"), "Resource")?;
        Ok(Self { effect, actions, resources })
    }
}

/// A string or a list of strings, at least one.
fn strings(value: Option<Value>, field: &str) -> Result<Vec<String>, String> {
    let list = match value {
        Some(Value::String(one)) => vec![one],
        Some(Value::Array(list)) => list
            .into_iter()
            .map(|v| match v {
                Value::String(s) => Ok(s),
                _ => Err(format!("has a {field} list with an entry that is not a string")),
            })
            .collect::<Result<Vec<_>, _>>()?,
        Some(_) => return Err(format!("has a {field} that is neither a string nor a list")),
        None => return Err(format!("has no {field}")),
    };
    if list.is_empty() {
        return Err(format!("has an empty {field} list"));
    }
    Ok(list)
}

/// Whether an action pattern covers `execute-api:Invoke` (IAM compares actions without case).
fn action_matches(pattern: &str) -> bool {
    glob(&pattern.to_ascii_lowercase(), INVOKE)
}

/// IAM's wildcard match: `*` any run of characters (`/` and `:` included), `?` any one.
fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    // Greedy with backtracking to the last `*`: linear in practice, never exponential.
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, ti));
                pi += 1;
            }
            Some(&c) if c == '?' || c == t[ti] => {
                pi += 1;
                ti += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    pi = sp + 1;
                    ti = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// The method ARN API Gateway gives an authorizer (`methodArn`) and evaluates its policy
/// against: `arn:aws:execute-api:{region}:{account}:{api_id}/{stage}/{METHOD}/{path}`, the
/// path without its leading `/`.
pub fn method_arn(
    region: &str,
    account: &str,
    api_id: &str,
    stage: &str,
    method: &str,
    path: &str,
) -> String {
    let path = path.strip_prefix('/').unwrap_or(path);
    format!("arn:aws:execute-api:{region}:{account}:{api_id}/{stage}/{method}/{path}")
}

/// The identity's values in the request, in `source`'s order; `None` when one is missing or
/// empty (401 without calling the authorizer).
pub fn identity(
    source: &IdentitySource,
    headers: &Fields,
    query: Option<&str>,
) -> Option<Vec<String>> {
    source
        .sources()
        .iter()
        .map(|source| {
            let value = match source {
                Source::Header(name) => {
                    std::str::from_utf8(headers.get(name)?).ok()?.trim().to_owned()
                }
                // The last value of the name, as `queryStringParameters` has it.
                Source::Query(name) => form_urlencoded::parse(query?.as_bytes())
                    .filter(|(n, _)| n == name)
                    .last()?
                    .1
                    .into_owned(),
            };
            (!value.is_empty()).then_some(value)
        })
        .collect()
}

/// A TOKEN authorizer's event, as API Gateway sends it.
pub fn token_event(token: &str, method_arn: &str) -> Vec<u8> {
    let event = serde_json::json!({
        "type": "TOKEN",
        "authorizationToken": token,
        "methodArn": method_arn,
    });
    event.to_string().into_bytes()
}

/// An authorizer's answers by identity, each kept for the authorizer's `resultTtlInSeconds`
/// (API Gateway's default 300; 0 turns caching off) and applied to every method its policy
/// covers, as on API Gateway. Bounded in entries (the least used go first when full). Entries
/// are found by a SHA-256 of the identity's values, so the cache holds no token.
pub struct AnswerCache {
    /// `None`: caching is off.
    cache: Option<moka::sync::Cache<[u8; 32], Arc<Answer>>>,
}

impl AnswerCache {
    /// A cache for one authorizer (its `ttl_secs`, [`keygate_types::Authorizer::DEFAULT_TTL_SECS`] unless the
    /// yml says otherwise); `ttl` zero turns it off.
    pub fn new(ttl: Duration, max_entries: u64) -> Self {
        let cache = (!ttl.is_zero()).then(|| {
            moka::sync::Cache::builder().max_capacity(max_entries).time_to_live(ttl).build()
        });
        Self { cache }
    }

    /// The entry of an identity (its values in the identity source's order).
    pub fn key(values: &[String]) -> [u8; 32] {
        use sha2::{Digest, Sha256};
        let mut hash = Sha256::new();
        for value in values {
            // Length-prefixed, so ["ab", "c"] and ["a", "bc"] differ.
            hash.update((value.len() as u64).to_le_bytes());
            hash.update(value.as_bytes());
        }
        hash.finalize().into()
    }

    /// The answer kept for `key`, while its TTL lasts.
    pub fn get(&self, key: &[u8; 32]) -> Option<Arc<Answer>> {
        self.cache.as_ref()?.get(key)
    }

    /// Keeps `answer` for `key` (nothing when caching is off).
    pub fn insert(&self, key: [u8; 32], answer: Arc<Answer>) {
        if let Some(cache) = &self.cache {
            cache.insert(key, answer);
        }
    }
}

impl std::fmt::Debug for AnswerCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.cache {
            Some(cache) => write!(f, "AnswerCache({} entries)", cache.entry_count()),
            None => f.write_str("AnswerCache(off)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use keygate_types::Authorizer;
    use serde_json::json;

    use super::*;

    const ARN: &str = "arn:aws:execute-api:us-east-1:123456789012:abc123/dev/GET/candidates/42";

    fn answer(policy: Value) -> Result<Answer, BadAnswer> {
        let body = json!({"principalId": "user-1", "policyDocument": policy});
        Answer::parse(body.to_string().as_bytes())
    }

    fn decide(statements: Value) -> Decision {
        answer(json!({"Version": "2012-10-17", "Statement": statements}))
            .expect("a valid answer")
            .policy
            .decide(ARN)
    }

    fn allow(resource: Value) -> Value {
        json!({"Effect": "Allow", "Action": "execute-api:Invoke", "Resource": resource})
    }

    fn fields(pairs: &[(&str, &str)]) -> Fields {
        let pairs: Vec<(&str, &[u8])> = pairs.iter().map(|(n, v)| (*n, v.as_bytes())).collect();
        keygate_http::Request::build("GET", "/", &pairs).unwrap().headers
    }

    #[test]
    fn the_identity_is_read_from_headers_and_query_strings() {
        let source = IdentitySource::parse(
            "method.request.header.Authorization, method.request.querystring.token",
        )
        .unwrap();
        let headers = fields(&[("authorization", "Bearer abc")]);
        assert_eq!(
            identity(&source, &headers, Some("token=t%201&token=t2&x=1")),
            Some(vec!["Bearer abc".to_owned(), "t2".to_owned()]),
            "header without case, the query's last value, decoded"
        );
        assert_eq!(identity(&source, &headers, None), None, "no query string");
        assert_eq!(identity(&source, &headers, Some("token=")), None, "an empty value");
        assert_eq!(identity(&source, &fields(&[]), Some("token=a")), None, "no header");
        assert_eq!(identity(&source, &fields(&[("Authorization", " ")]), Some("token=a")), None);
        let default = IdentitySource::authorization_header();
        assert_eq!(identity(&default, &headers, None), Some(vec!["Bearer abc".to_owned()]));
    }

    #[test]
    fn the_token_event_has_api_gateways_fields() {
        let event: Value = serde_json::from_slice(&token_event("Bearer \"x\"", ARN)).unwrap();
        assert_eq!(
            event,
            json!({"type": "TOKEN", "authorizationToken": "Bearer \"x\"", "methodArn": ARN})
        );
    }

    fn allowed_answer() -> Arc<Answer> {
        Arc::new(answer(json!({"Statement": [allow(json!("*"))]})).unwrap())
    }

    #[test]
    fn answers_are_kept_by_identity_for_their_ttl() {
        let cache = AnswerCache::new(Duration::from_millis(300), 100);
        let alice = AnswerCache::key(&["Bearer alice".to_owned()]);
        let bob = AnswerCache::key(&["Bearer bob".to_owned()]);
        assert_ne!(alice, bob);
        assert_ne!(
            AnswerCache::key(&["ab".to_owned(), "c".to_owned()]),
            AnswerCache::key(&["a".to_owned(), "bc".to_owned()])
        );
        cache.insert(alice, allowed_answer());
        assert!(cache.get(&alice).is_some());
        assert!(cache.get(&bob).is_none());
        std::thread::sleep(Duration::from_millis(400));
        assert!(cache.get(&alice).is_none(), "past its TTL");
    }

    #[test]
    fn a_zero_ttl_keeps_nothing_and_the_cache_is_bounded() {
        let off = AnswerCache::new(Duration::ZERO, 100);
        let key = AnswerCache::key(&["t".to_owned()]);
        off.insert(key, allowed_answer());
        assert!(off.get(&key).is_none());
        assert_eq!(format!("{off:?}"), "AnswerCache(off)");
        let small = AnswerCache::new(Duration::from_secs(Authorizer::DEFAULT_TTL_SECS.into()), 10);
        for i in 0..1_000 {
            small.insert(AnswerCache::key(&[i.to_string()]), allowed_answer());
        }
        let inner = small.cache.as_ref().unwrap();
        inner.run_pending_tasks();
        assert!(inner.entry_count() <= 10, "{} entries", inner.entry_count());
    }

    #[test]
    fn the_method_arn_has_api_gateways_shape() {
        let arn = method_arn("us-east-1", "123456789012", "abc123", "dev", "GET", "/candidates/42");
        assert_eq!(arn, ARN);
        assert_eq!(
            method_arn("eu-west-1", "1", "a", "dev", "POST", "/"),
            "arn:aws:execute-api:eu-west-1:1:a/dev/POST/"
        );
    }

    #[test]
    fn wildcards_match_as_iam_matches_them() {
        assert!(glob(ARN, ARN));
        assert!(glob("*", ARN));
        assert!(glob("arn:aws:execute-api:us-east-1:123456789012:abc123/*", ARN));
        assert!(glob("arn:aws:execute-api:*:*:abc123/dev/*/candidates/*", ARN));
        assert!(glob(
            "arn:aws:execute-api:us-east-1:123456789012:abc123/dev/GET/candidates/4?",
            ARN
        ));
        assert!(glob("arn:aws:execute-api:us-east-1:123456789012:abc123/*/GET/*", ARN));
        assert!(!glob("arn:aws:execute-api:us-east-1:123456789012:abc123/dev/POST/*", ARN));
        assert!(!glob("arn:aws:execute-api:us-east-1:123456789012:abc123/dev/GET/candidates", ARN));
        assert!(!glob(
            "arn:aws:execute-api:us-east-1:123456789012:abc123/dev/GET/candidates/4",
            ARN
        ));
        assert!(
            !glob("arn:aws:execute-api:us-east-1:123456789012:abc123/dev/get/*", ARN),
            "resources keep their case"
        );
        assert!(!glob("?", ""));
        assert!(glob("*", ""));
        assert!(glob("a*b*c", "a-b-b-c"));
        assert!(!glob("a*b*c", "a-b-b-d"));
        // Many stars against a long text stay fast (no exponential backtracking).
        let long = "a".repeat(2_000);
        assert!(!glob(&format!("{}b", "*a".repeat(50)), &long));
    }

    #[test]
    fn an_explicit_deny_wins_and_no_match_denies() {
        assert_eq!(decide(json!([allow(json!(ARN))])), Decision::Allow);
        assert_eq!(decide(json!(allow(json!("*")))), Decision::Allow, "Statement as one object");
        let deny = json!({
            "Effect": "Deny", "Action": "execute-api:Invoke",
            "Resource": "arn:aws:execute-api:us-east-1:123456789012:abc123/dev/GET/*"
        });
        assert_eq!(decide(json!([allow(json!("*")), deny])), Decision::ExplicitDeny);
        let deny_first =
            json!([{"Effect": "Deny", "Action": "*", "Resource": ARN}, allow(json!("*"))]);
        assert_eq!(decide(deny_first), Decision::ExplicitDeny);
        let elsewhere =
            allow(json!("arn:aws:execute-api:us-east-1:123456789012:abc123/dev/POST/*"));
        assert_eq!(decide(json!([elsewhere])), Decision::ImplicitDeny);
        assert_eq!(decide(json!([])), Decision::ImplicitDeny);
        // A deny of another method leaves the allow standing.
        let other = json!({"Effect": "Deny", "Action": "execute-api:Invoke", "Resource": "arn:aws:execute-api:*:*:*/dev/DELETE/*"});
        assert_eq!(decide(json!([allow(json!("*")), other])), Decision::Allow);
    }

    #[test]
    fn actions_are_lists_or_strings_and_match_without_case() {
        let with = |action: Value| json!([{"Effect": "Allow", "Action": action, "Resource": "*"}]);
        assert_eq!(decide(with(json!("execute-api:*"))), Decision::Allow);
        assert_eq!(decide(with(json!("EXECUTE-API:invoke"))), Decision::Allow);
        assert_eq!(decide(with(json!(["s3:GetObject", "execute-api:Invoke"]))), Decision::Allow);
        assert_eq!(decide(with(json!("execute-api:ManageConnections"))), Decision::ImplicitDeny);
        assert_eq!(decide(with(json!("s3:*"))), Decision::ImplicitDeny);
        let resources = json!([{"Effect": "Allow", "Action": "*", "Resource": ["x", ARN]}]);
        assert_eq!(decide(resources), Decision::Allow);
    }

    #[test]
    fn answers_keygate_cannot_evaluate_exactly_are_refused() {
        let cases = [
            (
                json!({"Effect": "Allow", "Action": "*", "Resource": "*", "Condition": {}}),
                "Condition",
            ),
            (json!({"Effect": "Allow", "NotAction": "s3:*", "Resource": "*"}), "NotAction"),
            (json!({"Effect": "Deny", "Action": "*", "NotResource": "x"}), "NotResource"),
            (json!({"Effect": "allow", "Action": "*", "Resource": "*"}), "Effect"),
            (json!({"Action": "*", "Resource": "*"}), "no Effect"),
            (json!({"Effect": "Allow", "Resource": "*"}), "no Action"),
            (json!({"Effect": "Allow", "Action": "*"}), "no Resource"),
            (json!({"Effect": "Allow", "Action": [], "Resource": "*"}), "empty Action"),
            (json!({"Effect": "Allow", "Action": [1], "Resource": "*"}), "not a string"),
            (json!("Allow"), "not an object"),
        ];
        for (statement, why) in cases {
            let err = answer(json!({"Statement": [statement]})).unwrap_err();
            assert!(err.to_string().contains(why), "{err} should say {why}");
            assert!(err.to_string().contains("Statement[0]"), "{err}");
        }
        assert!(answer(json!({"Version": "2012-10-17"})).is_err(), "no Statement");
        assert!(answer(json!("Allow")).is_err());
    }

    #[test]
    fn the_answer_needs_a_principal_and_flat_context() {
        let policy = json!({"Statement": [allow(json!("*"))]});
        let parse = |v: Value| Answer::parse(v.to_string().as_bytes());
        let ok = parse(json!({
            "principalId": "user-1", "policyDocument": policy,
            "context": {"s": "v", "n": 1, "b": true}, "usageIdentifierKey": "k"
        }))
        .unwrap();
        assert_eq!(ok.principal_id, "user-1");
        assert_eq!(ok.context.len(), 3);
        assert_eq!(ok.usage_identifier_key.as_deref(), Some("k"));
        assert_eq!(
            parse(json!({"principalId": 7, "policyDocument": policy})).unwrap().principal_id,
            "7"
        );
        let no_principal = parse(json!({"policyDocument": policy})).unwrap_err();
        assert!(no_principal.to_string().contains("no principalId"));
        assert!(
            parse(json!({"principalId": "u"}))
                .unwrap_err()
                .to_string()
                .contains("no policyDocument")
        );
        let nested = parse(
            json!({"principalId": "u", "policyDocument": policy, "context": {"o": {"a": 1}}}),
        );
        assert!(nested.unwrap_err().to_string().contains("context.o"));
        let list =
            parse(json!({"principalId": "u", "policyDocument": policy, "context": {"l": [1]}}));
        assert!(list.is_err());
        let key =
            parse(json!({"principalId": "u", "policyDocument": policy, "usageIdentifierKey": 5}));
        assert!(key.is_err());
        assert!(Answer::parse(b"not json").is_err());
        assert!(Answer::parse(b"[]").is_err());
    }

    #[test]
    fn errors_never_repeat_the_answers_values() {
        let secret = "AKIAsecretvalue0123456789";
        let bad_key = Answer::parse(
            json!({"principalId": secret, "policyDocument": {"Statement": [{"Effect": secret, "Action": "*", "Resource": "*"}]}})
                .to_string()
                .as_bytes(),
        )
        .unwrap_err();
        assert!(!bad_key.to_string().contains(secret), "{bad_key}");
    }
}
