//! `authorizer:` of an http event: a Lambda authorizer (`authorizer: fnName` or a map), read
//! into [`Authorizer`]. Every key in it is an auth setting, so an unknown one is an error even
//! with `--allow-unknown`, and what keygate cannot enforce is refused, never skipped.

use keygate_types::{Authorizer, AuthorizerKind, FunctionSpec, IdentitySource};

use crate::ctx::Ctx;
use crate::diag::{FieldPath, Mark, suggest};
use crate::yaml::{Node, Value, quote};

/// The keys of an `authorizer:` map that Serverless defines.
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
];

/// Why an authorizer named by ARN is refused.
const BY_ARN: &str = "an authorizer given by ARN (a Cognito user pool or a function outside \
                      this service) is not run by keygate yet; name a function of this service";

impl Ctx<'_> {
    /// Reads `authorizer:` at `path` (`key_mark`: where the key is written).
    pub(crate) fn authorizer(
        &mut self,
        node: &Node,
        key_mark: Mark,
        path: &FieldPath,
    ) -> Option<Authorizer> {
        let v = self.expand(node, path);
        // The short form names the function and leaves the rest to API Gateway's defaults.
        let (entries, mut function) = match v.value {
            Value::Str(name) if v.tag.is_none() => {
                (Vec::new(), Some(self.function_name(&name, v.mark, path)?))
            }
            Value::Map(entries) if v.tag.is_none() => (entries, None),
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
        let mut kind = AuthorizerKind::Token;
        let mut identity = None;
        let mut validation = None;
        let mut ttl_secs = Authorizer::DEFAULT_TTL_SECS;
        for e in &entries {
            let p = path.key(&e.key);
            match e.key.as_str() {
                "name" => {
                    function = self
                        .string(&e.value, &p, "a function name")
                        .and_then(|name| self.function_name(&name, e.value.mark, &p));
                    ok &= function.is_some();
                }
                "type" => match self.string(&e.value, &p, "token or request").as_deref() {
                    Some(t) if t.eq_ignore_ascii_case("token") => kind = AuthorizerKind::Token,
                    Some(t) if t.eq_ignore_ascii_case("request") => kind = AuthorizerKind::Request,
                    Some(t) => {
                        self.error(
                            e.value.mark,
                            &p,
                            format!(
                                "{} authorizers are not run by keygate yet (Lambda authorizers \
                                 of type token or request are); protect the route with \
                                 `private: true` and API keys instead",
                                quote(t)
                            ),
                        );
                        ok = false;
                    }
                    None => ok = false,
                },
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
                "managedExternally" => self.ignore(&p),
                "arn" => {
                    self.error(e.key_mark, &p, format!("{BY_ARN} with `name:`"));
                    ok = false;
                }
                "claims" | "scopes" => {
                    self.error(
                        e.key_mark,
                        &p,
                        format!(
                            "{} applies to Cognito authorizers, which keygate does not run yet; \
                             remove it",
                            e.key
                        ),
                    );
                    ok = false;
                }
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
        if function.is_none() && ok {
            self.error(key_mark, &path.key("name"), "missing; the authorizer function's name");
            ok = false;
        }
        if let (AuthorizerKind::Request, Some((_, mark, p))) = (kind, &validation) {
            self.error(
                *mark,
                p,
                "identityValidationExpression applies only to authorizers of type token; remove \
                 it",
            );
            ok = false;
        }
        if !ok {
            return None;
        }
        Some(Authorizer {
            function: function?,
            kind,
            identity_source: identity.unwrap_or_else(IdentitySource::authorization_header),
            validation: validation.map(|(expr, _, _)| expr),
            ttl_secs,
        })
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
        // Checked once every function is read.
        self.authorizer_refs.push(AuthorizerRef {
            function: name.to_owned(),
            mark,
            path: path.clone(),
        });
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
