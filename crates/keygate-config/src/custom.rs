//! `custom.keygate`: keygate's own settings in a serverless.yml (Serverless leaves `custom` to
//! plugins and tools). Other `custom` keys are noted as ignored; a key under `custom.keygate`
//! that keygate does not know is an error, as anywhere else.
//!
//! ```yaml
//! custom:
//!   keygate:
//!     redisUnavailable: refuse        # every plan of the service, or per plan:
//!     # redisUnavailable: {free: local, paid: refuse}
//! ```

use keygate_types::plan::{Fallback, UsagePlanDecl};

use crate::ctx::Ctx;
use crate::diag::{FieldPath, Mark, suggest};
use crate::yaml::{Node, Value, quote};

/// The keys of `custom.keygate`.
const KEYS: &[&str] = &["redisUnavailable"];

/// `custom.keygate`, read.
#[derive(Default)]
pub(crate) struct Custom {
    redis_unavailable: Option<RedisUnavailable>,
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

    /// Gives the service's plans what `custom.keygate` says of them; a plan name that is not
    /// one of the service's is an error.
    pub(crate) fn apply_custom(&mut self, custom: Custom, plans: &mut [UsagePlanDecl]) {
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
