//! `authorizer:` of an http event: a Lambda authorizer (`authorizer: fnName` or a map), read
//! into [`Authorizer`]. Every key in it is an auth setting, so an unknown one is an error even
//! with `--allow-unknown`, and what keygate cannot enforce is refused, never skipped.

use keygate_types::{Authorizer, AuthorizerKind, FunctionSpec, IdentitySource, Jwt};

use crate::ctx::Ctx;
use crate::diag::{FieldPath, Mark, suggest};
use crate::yaml::{Node, Value, quote};

/// The keys of an `authorizer:` map: Serverless's, then keygate's for JWT authorizers
/// (`issuerUrl`, `audience` as httpApi's JWT authorizers say them; `jwks`).
const KEYS: &[&str] = &[
    "name",
    "arn",
    "type",
    "identitySource",
    "identityValidationExpression",
    "resultTtlInSeconds",
    "managedExternally",
    "claims",
    "scopes",
    "issuerUrl",
    "audience",
    "jwks",
];

/// Why an authorizer named by a non-Cognito ARN is refused.
const BY_ARN: &str = "an authorizer given by a function ARN (a function outside this service) is \
                      not run by keygate; name a function of this service";

/// The prefix of a Cognito user pool's ARN.
const COGNITO_ARN: &str = "arn:aws:cognito-idp:";

/// What an authorizer's `type:` (or its ARN) makes it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Type {
    Token,
    Request,
    Cognito,
    Jwt,
}

impl Ctx<'_> {
    /// Reads `authorizer:` at `path` (`key_mark`: where the key is written).
    pub(crate) fn authorizer(
        &mut self,
        node: &Node,
        key_mark: Mark,
        path: &FieldPath,
    ) -> Option<Authorizer> {
        let v = self.expand(node, path);
        // The short form names the function (or a Cognito user pool by ARN) and leaves the
        // rest to API Gateway's defaults.
        let mut name: Option<(String, Mark, FieldPath)> = None;
        let mut pool: Option<(String, String)> = None;
        let entries = match v.value {
            Value::Str(text) if v.tag.is_none() => {
                if text.starts_with(COGNITO_ARN) {
                    pool = Some(self.user_pool(&text, v.mark, path)?);
                } else {
                    name = Some((self.function_name(&text, v.mark, path)?, v.mark, path.clone()));
                }
                Vec::new()
            }
            Value::Map(entries) if v.tag.is_none() => entries,
            Value::Invalid => return None,
            _ => {
                self.mismatch(
                    &v,
                    path,
                    "the name of a function of this service, or a map with name",
                );
                return None;
            }
        };
        let mut ok = true;
        let mut kind: Option<(Type, Mark, FieldPath)> = None;
        let mut identity = None;
        let mut validation = None;
        let mut ttl_secs = Authorizer::DEFAULT_TTL_SECS;
        // JWT settings, each with where it is written (to refuse it on a Lambda authorizer).
        let mut scopes: Option<(Vec<String>, Mark, FieldPath)> = None;
        let mut issuer: Option<(String, Mark, FieldPath)> = None;
        let mut audience: Option<(Vec<String>, Mark, FieldPath)> = None;
        let mut jwks: Option<(String, Mark, FieldPath)> = None;
        for e in &entries {
            let p = path.key(&e.key);
            match e.key.as_str() {
                "name" => match self.string(&e.value, &p, "a function name") {
                    Some(text) if !text.trim().is_empty() => {
                        name = Some((text, e.value.mark, p));
                    }
                    Some(_) => {
                        self.error(e.value.mark, &p, "empty; the authorizer function's name");
                        ok = false;
                    }
                    None => ok = false,
                },
                "type" => {
                    let what = "token, request, COGNITO_USER_POOLS or jwt";
                    match self.string(&e.value, &p, what).as_deref() {
                        Some(t) => match t.to_ascii_lowercase().as_str() {
                            "token" => kind = Some((Type::Token, e.value.mark, p)),
                            "request" => kind = Some((Type::Request, e.value.mark, p)),
                            "cognito_user_pools" => kind = Some((Type::Cognito, e.value.mark, p)),
                            "jwt" => kind = Some((Type::Jwt, e.value.mark, p)),
                            "aws_iam" => {
                                self.function_name(t, e.value.mark, &p);
                                ok = false;
                            }
                            _ => {
                                let message = format!("expected {what}, found {}", quote(t));
                                self.error(e.value.mark, &p, message);
                                ok = false;
                            }
                        },
                        None => ok = false,
                    }
                }
                "identitySource" => {
                    match self.string(
                        &e.value,
                        &p,
                        "mapping expressions such as method.request.header.Authorization",
                    ) {
                        Some(text) => match IdentitySource::parse(&text) {
                            Ok(source) => identity = Some(source),
                            Err(why) => {
                                self.error(e.value.mark, &p, why);
                                ok = false;
                            }
                        },
                        None => ok = false,
                    }
                }
                "identityValidationExpression" => {
                    match self.string(&e.value, &p, "a regular expression") {
                        Some(expr) => match regex::Regex::new(&format!("^(?:{expr})$")) {
                            Ok(_) => validation = Some((expr, e.value.mark, p.clone())),
                            Err(why) => {
                                // The parser's message ends with its one-line reason.
                                let why = why.to_string();
                                let why = why.lines().last().unwrap_or_default();
                                let why = why.trim_start_matches("error: ");
                                self.error(
                                    e.value.mark,
                                    &p,
                                    format!("is not a regular expression keygate can read: {why}"),
                                );
                                ok = false;
                            }
                        },
                        None => ok = false,
                    }
                }
                "resultTtlInSeconds" => {
                    let max = i64::from(Authorizer::MAX_TTL_SECS);
                    match self.integer(&e.value, &p, "whole seconds from 0 to 3600", 0..=max) {
                        Some(secs) => ttl_secs = u32::try_from(secs).unwrap_or(0),
                        None => ok = false,
                    }
                }
                // `claims` picks the claims API Gateway passes on; keygate passes all.
                "managedExternally" | "claims" => self.ignore(&p),
                "arn" => match self.string(&e.value, &p, "a Cognito user pool's ARN") {
                    Some(arn) if arn.starts_with(COGNITO_ARN) => {
                        pool = self.user_pool(&arn, e.value.mark, &p);
                        ok &= pool.is_some();
                    }
                    Some(_) => {
                        self.error(e.value.mark, &p, format!("{BY_ARN} with `name:`"));
                        ok = false;
                    }
                    None => ok = false,
                },
                "scopes" => match self.strings(&e.value, &p, "a list of scopes", false) {
                    Some(list) => scopes = Some((list, e.key_mark, p)),
                    None => ok = false,
                },
                "issuerUrl" => match self.string(&e.value, &p, "the issuer's URL") {
                    Some(url) => match issuer_problem(&url) {
                        None => issuer = Some((url, e.key_mark, p)),
                        Some(why) => {
                            self.error(e.value.mark, &p, why);
                            ok = false;
                        }
                    },
                    None => ok = false,
                },
                "audience" => match self.strings(&e.value, &p, "a list of audiences", true) {
                    Some(list) => audience = Some((list, e.key_mark, p)),
                    None => ok = false,
                },
                "jwks" => match self.string(&e.value, &p, "the keys' URL or file") {
                    Some(place)
                        if place.starts_with("https://") || place.starts_with("http://") =>
                    {
                        match issuer_problem(&place) {
                            None => jwks = Some((place, e.key_mark, p)),
                            Some(why) => {
                                self.error(e.value.mark, &p, why.replace("issuer", "JWKS"));
                                ok = false;
                            }
                        }
                    }
                    Some(place) if !place.trim().is_empty() => jwks = Some((place, e.key_mark, p)),
                    Some(_) => {
                        self.error(e.value.mark, &p, "empty; a URL or a file of JSON Web Keys");
                        ok = false;
                    }
                    None => ok = false,
                },
                other => {
                    let hint = suggest(other, KEYS.iter().copied())
                        .map(|g| format!(" (did you mean `{g}`?)"))
                        .unwrap_or_default();
                    self.error(
                        e.key_mark,
                        &p,
                        format!(
                            "unknown key in authorizer{hint}; expected one of {}",
                            KEYS.join(", ")
                        ),
                    );
                    ok = false;
                }
            }
        }
        // A user pool's ARN makes a Cognito authorizer (Serverless infers the type from it).
        let ty = match (&kind, &pool) {
            (Some((t, ..)), _) => *t,
            (None, Some(_)) => Type::Cognito,
            (None, None) => Type::Token,
        };
        if !ok {
            return None;
        }
        let type_at = kind.map(|(_, mark, p)| (mark, p));
        let identity_source = identity.unwrap_or_else(IdentitySource::authorization_header);
        let validation_text = validation.as_ref().map(|(expr, ..)| expr.clone());
        match ty {
            Type::Token | Type::Request => {
                let kind =
                    if ty == Type::Token { AuthorizerKind::Token } else { AuthorizerKind::Request };
                // What only a JWT authorizer has.
                let jwt_only = [
                    scopes.map(|(_, m, p)| (m, p)),
                    issuer.map(|(_, m, p)| (m, p)),
                    audience.map(|(_, m, p)| (m, p)),
                    jwks.map(|(_, m, p)| (m, p)),
                ];
                for (mark, p) in jwt_only.into_iter().flatten() {
                    let message = "applies to JWT and Cognito authorizers only; remove it";
                    self.error(mark, &p, message);
                    ok = false;
                }
                if pool.is_some() {
                    let (mark, p) = type_at.unwrap_or_else(|| (key_mark, path.clone()));
                    self.error(mark, &p, "a Cognito user pool's ARN needs type COGNITO_USER_POOLS");
                    ok = false;
                }
                let Some((function, mark, p)) = name else {
                    if ok {
                        self.error(
                            key_mark,
                            &path.key("name"),
                            "missing; the authorizer function's name",
                        );
                    }
                    return None;
                };
                let function = self.function_name(&function, mark, &p)?;
                // Checked once every function is read.
                self.authorizer_refs.push(AuthorizerRef {
                    function: function.clone(),
                    mark,
                    path: p,
                });
                if let (AuthorizerKind::Request, Some((_, mark, p))) = (kind, &validation) {
                    self.error(
                        *mark,
                        p,
                        "identityValidationExpression applies only to authorizers of type token; \
                         remove it",
                    );
                    ok = false;
                }
                ok.then_some(Authorizer {
                    function,
                    kind,
                    identity_source,
                    validation: validation_text,
                    ttl_secs,
                    jwt: None,
                })
            }
            Type::Cognito | Type::Jwt => {
                let issuer = match (ty, pool, issuer) {
                    (Type::Cognito, Some((region, id)), None) => {
                        format!("https://cognito-idp.{region}.amazonaws.com/{id}")
                    }
                    (Type::Cognito, None, _) => {
                        self.error(key_mark, &path.key("arn"), "missing; the user pool's ARN");
                        return None;
                    }
                    (Type::Cognito, Some(_), Some((_, mark, p))) => {
                        let message = "a Cognito authorizer's issuer is its user pool; remove it";
                        self.error(mark, &p, message);
                        return None;
                    }
                    (_, _, Some((url, ..))) => url,
                    (_, _, None) => {
                        self.error(
                            key_mark,
                            &path.key("issuerUrl"),
                            "missing; the URL of the tokens' issuer (their `iss`)",
                        );
                        return None;
                    }
                };
                let jwks = jwks.map_or_else(
                    || format!("{}/.well-known/jwks.json", issuer.trim_end_matches('/')),
                    |(place, ..)| place,
                );
                let name = name.map_or_else(
                    || if ty == Type::Cognito { "cognito" } else { "jwt" }.to_owned(),
                    |(n, ..)| n,
                );
                Some(Authorizer {
                    function: name,
                    kind: AuthorizerKind::Jwt,
                    identity_source,
                    validation: validation_text,
                    ttl_secs,
                    jwt: Some(Jwt {
                        issuer,
                        jwks,
                        audience: audience.map(|(a, ..)| a).unwrap_or_default(),
                        scopes: scopes.map(|(s, ..)| s).unwrap_or_default(),
                        cognito: ty == Type::Cognito,
                    }),
                })
            }
        }
    }

    /// `arn:aws:cognito-idp:{region}:{account}:userpool/{poolId}`: the region and pool id.
    fn user_pool(&mut self, arn: &str, mark: Mark, path: &FieldPath) -> Option<(String, String)> {
        let parts: Vec<&str> = arn.split(':').collect();
        let pool = parts.get(5).and_then(|r| r.strip_prefix("userpool/"));
        match (parts.len(), parts.get(3), pool) {
            (6, Some(region), Some(id)) if !region.is_empty() && !id.is_empty() => {
                Some(((*region).to_owned(), id.to_owned()))
            }
            _ => {
                let message = format!(
                    "expected a user pool's ARN, \
                     arn:aws:cognito-idp:REGION:ACCOUNT:userpool/POOL_ID, found {}",
                    quote(arn)
                );
                self.error(mark, path, message);
                None
            }
        }
    }

    /// A function name as an authorizer names it.
    fn function_name(&mut self, name: &str, mark: Mark, path: &FieldPath) -> Option<String> {
        if name.starts_with("arn:") {
            self.error(mark, path, BY_ARN);
            return None;
        }
        if name.eq_ignore_ascii_case("aws_iam") {
            self.error(
                mark,
                path,
                "AWS_IAM authorization (SigV4-signed requests checked against IAM policies) is \
                 not run by keygate; protect the route with `private: true` and API keys",
            );
            return None;
        }
        if name.trim().is_empty() {
            self.error(mark, path, "empty; the authorizer function's name");
            return None;
        }
        Some(name.to_owned())
    }

    /// Every authorizer names a function of this service (`functions:`).
    pub(crate) fn check_authorizers(&mut self, functions: &[FunctionSpec]) {
        for r in std::mem::take(&mut self.authorizer_refs) {
            if functions.iter().any(|f| f.name == r.function) {
                continue;
            }
            let names = functions.iter().map(|f| f.name.as_str());
            let hint = suggest(&r.function, names.clone())
                .map(|g| format!(" (did you mean `{g}`?)"))
                .unwrap_or_default();
            let known: Vec<&str> = names.collect();
            let message = format!(
                "no function {} in this service's functions{hint}; an authorizer names a function \
                 declared under `functions:` (it has {})",
                quote(&r.function),
                known.join(", ")
            );
            self.error(r.mark, &r.path, message);
        }
    }
}

/// An authorizer's function, as written: checked against `functions:` once all are read.
pub(crate) struct AuthorizerRef {
    function: String,
    mark: Mark,
    path: FieldPath,
}

/// Why an issuer (or JWKS) URL cannot be used: keys fetched over plain HTTP could be swapped
/// on the way, so `http://` is for this machine only.
fn issuer_problem(url: &str) -> Option<String> {
    if url.starts_with("https://") {
        return None;
    }
    if let Some(rest) = url.strip_prefix("http://") {
        let host = rest.split(['/', '?']).next().unwrap_or_default();
        let host = host.rsplit_once(':').map_or(host, |(h, _)| h);
        if matches!(host, "127.0.0.1" | "localhost" | "[::1]") {
            return None;
        }
        return Some(format!(
            "the issuer {} is plain http on another machine, so its keys could be swapped on \
             the way; use https:// (http:// is accepted for 127.0.0.1 and localhost only)",
            quote(url)
        ));
    }
    Some(format!("expected an https:// URL, found {}", quote(url)))
}
