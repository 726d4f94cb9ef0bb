//! `custom.keygate`: keygate's own settings in a serverless.yml (Serverless leaves `custom` to
//! plugins and tools). Other `custom` keys are noted as ignored; a key under `custom.keygate`
//! that keygate does not know is an error, as anywhere else.
//!
//! ```yaml
//! custom:
//!   keygate:
//!     redisUnavailable: refuse        # every plan of the service, or per plan:
//!     # redisUnavailable: {free: local, paid: refuse}
//!     keyIntrospection: true          # GET /{stage}/.keygate/key; or a path: /me/key
//!     enforcement: report             # every `private: true` route as `private: report`
//! ```

use keygate_types::plan::Fallback;
use keygate_types::{DEFAULT_INTROSPECTION_PATH, ServiceDefinition};

use crate::ctx::Ctx;
use crate::diag::{FieldPath, Mark, suggest};
use crate::yaml::{Node, Value, quote};

/// The keys of `custom.keygate`.
const KEYS: &[&str] = &["enforcement", "keyIntrospection", "redisUnavailable"];

/// `custom.keygate`, read.
#[derive(Default)]
pub(crate) struct Custom {
    redis_unavailable: Option<RedisUnavailable>,
    /// `keyIntrospection`: the path when on, with where it was written.
    introspection: Option<(String, Mark, FieldPath)>,
    /// `enforcement: report`: the service's private routes report instead of refusing.
    report_only: bool,
}

/// `redisUnavailable`: one policy for every plan, or one per plan's short name.
enum RedisUnavailable {
    All(Fallback),
    PerPlan(Vec<(String, Fallback, Mark, FieldPath)>),
}

impl Ctx<'_> {
    /// Reads `custom:` (`node`, at `path`).
    pub(crate) fn custom(&mut self, node: &Node, path: &FieldPath) -> Custom {
        let mut out = Custom::default();
        let entries = self.map(node, path, "a map of settings").unwrap_or_default();
        // Without keygate's own settings the whole section is someone else's.
        let ours = entries.iter().any(|e| e.key == "keygate");
        for e in entries {
            let p = path.key(&e.key);
            if e.key != "keygate" {
                self.ignore(if ours { &p } else { path });
                continue;
            }
            for k in self.map(&e.value, &p, "keygate's settings (a map)").unwrap_or_default() {
                let kp = p.key(&k.key);
                match k.key.as_str() {
                    "redisUnavailable" => {
                        out.redis_unavailable = self.redis_unavailable(&k.value, &kp)
                    }
                    "enforcement" => {
                        let what = "enforce or report";
                        match self.string(&k.value, &kp, what).as_deref() {
                            Some("report") => out.report_only = true,
                            Some("enforce") | None => {}
                            Some(other) => {
                                let message = format!("expected {what}, found {}", quote(other));
                                self.error(k.value.mark, &kp, message);
                            }
                        }
                    }
                    "keyIntrospection" => {
                        out.introspection = self
                            .introspection(&k.value, &kp)
                            .map(|path| (path, k.value.mark, kp.clone()));
                    }
                    other => {
                        let hint = suggest(other, KEYS.iter().copied())
                            .map(|g| format!(" (did you mean `{g}`?)"))
                            .unwrap_or_default();
                        let message = format!(
                            "unknown key in custom.keygate{hint}; expected one of {}",
                            KEYS.join(", ")
                        );
                        self.error(k.key_mark, &kp, message);
                    }
                }
            }
        }
        out
    }

    fn redis_unavailable(&mut self, node: &Node, path: &FieldPath) -> Option<RedisUnavailable> {
        let v = self.expand(node, path);
        match &v.value {
            Value::Map(entries) if v.tag.is_none() => {
                let mut plans = Vec::new();
                for e in entries {
                    let p = path.key(&e.key);
                    if let Some(policy) = self.fallback(&e.value, &p) {
                        plans.push((e.key.clone(), policy, e.key_mark, p));
                    }
                }
                Some(RedisUnavailable::PerPlan(plans))
            }
            _ => self.fallback(node, path).map(RedisUnavailable::All),
        }
    }

    /// `keyIntrospection`: `true` (the default path), `false`, or a path of its own.
    fn introspection(&mut self, node: &Node, path: &FieldPath) -> Option<String> {
        const WHAT: &str = "true, false or a path such as /.keygate/key";
        let from_variable = matches!(node.value, Value::Template(_));
        let v = self.expand(node, path);
        let text = match &v.value {
            Value::Bool(true) if v.tag.is_none() => return Some(DEFAULT_INTROSPECTION_PATH.into()),
            Value::Bool(false) if v.tag.is_none() => return None,
            Value::Str(s) if from_variable && s.eq_ignore_ascii_case("true") => {
                return Some(DEFAULT_INTROSPECTION_PATH.into());
            }
            Value::Str(s) if from_variable && s.eq_ignore_ascii_case("false") => return None,
            Value::Str(s) if v.tag.is_none() => s.clone(),
            Value::Invalid => return None,
            _ => {
                self.mismatch(&v, path, WHAT);
                return None;
            }
        };
        let literal = |c: char| c.is_ascii_alphanumeric() || "-._~/".contains(c);
        if text.len() < 2
            || text.len() > 256
            || !text.starts_with('/')
            || text.ends_with('/')
            || text.contains("//")
            || !text.chars().all(literal)
        {
            let message = format!(
                "expected {WHAT} (a literal path: letters, digits, `-._~` and `/`, starting \
                 with `/`, no `{{parameters}}`), found {}",
                quote(&text)
            );
            self.error(v.mark, path, message);
            return None;
        }
        Some(text)
    }

    fn fallback(&mut self, node: &Node, path: &FieldPath) -> Option<Fallback> {
        let text = self.string(node, path, "local or refuse")?;
        match text.parse() {
            Ok(policy) => Some(policy),
            Err(_) => {
                let message = format!("expected local or refuse, found {}", quote(&text));
                self.error(node.mark, path, message);
                None
            }
        }
    }

    /// Gives the service what `custom.keygate` says of it; a plan name that is not one of the
    /// service's, or an introspection path that is also a route of the service, is an error.
    pub(crate) fn apply_custom(&mut self, custom: Custom, definition: &mut ServiceDefinition) {
        if custom.report_only {
            definition.switch(Some(keygate_types::Enforcement::Report));
        }
        if let Some((at, mark, path)) = custom.introspection {
            let events = definition.functions.iter().flat_map(|f| &f.events);
            match events.clone().find(|e| e.path.trim_end_matches('/') == at) {
                Some(e) => {
                    let message = format!(
                        "key introspection's path {} is also a route of the service ({} {}): \
                         choose another path, e.g. `keyIntrospection: {DEFAULT_INTROSPECTION_PATH}`",
                        quote(&at),
                        e.method,
                        e.path
                    );
                    self.error(mark, &path, message);
                }
                None => definition.key_introspection = Some(at),
            }
        }
        let plans = &mut definition.usage_plans[..];
        match custom.redis_unavailable {
            None => {}
            Some(RedisUnavailable::All(policy)) => {
                for plan in plans.iter_mut() {
                    plan.fallback = Some(policy);
                }
            }
            Some(RedisUnavailable::PerPlan(list)) => {
                for (name, policy, mark, path) in list {
                    match plans.iter_mut().find(|p| p.short_name.as_deref() == Some(&name)) {
                        Some(plan) => plan.fallback = Some(policy),
                        None => {
                            let named: Vec<&str> =
                                plans.iter().filter_map(|p| p.short_name.as_deref()).collect();
                            let message = if named.is_empty() {
                                format!(
                                    "no usage plan named {} (the service's plan has no name: \
                                     write `redisUnavailable: local` or `refuse` for it)",
                                    quote(&name)
                                )
                            } else {
                                format!(
                                    "no usage plan named {} in provider.apiGateway.usagePlan (it \
                                     has {})",
                                    quote(&name),
                                    named.join(", ")
                                )
                            };
                            self.error(mark, &path, message);
                        }
                    }
                }
            }
        }
    }
}
