//! API key declarations: `provider.apiGateway.apiKeys` (and the deprecated `provider.apiKeys`).
//!
//! Entries are a name string, a map `{name, value, description, customerId, enabled}`, or a
//! usage-plan group `{<plan>: [entries...]}` whose keys join the plan of that short name. As in
//! Serverless (`API_GATEWAY_KEY_WITHOUT_USAGE_PLAN`), a group must name a plan of the list form of
//! `usagePlan`; and since a key may belong to only one plan per API stage, with a list of plans
//! every key must be grouped. Values are checked with [`ApiKeyValue::parse`]; no message here
//! ever contains a value.

use keygate_types::ApiKeyValue;
use keygate_types::service::ApiKeyDecl;

use crate::ctx::Ctx;
use crate::diag::{FieldPath, Mark, did_you_mean};
use crate::plans::{Declared, Plans};
use crate::yaml::{Entry, Node, Value, quote};

const PROPERTIES: &[&str] = &["name", "value", "description", "customerId", "enabled"];

/// One declared key with where it was declared.
pub(crate) struct KeyRecord {
    name: Option<String>,
    value: Option<ApiKeyValue>,
    value_mark: Mark,
    description: Option<String>,
    customer_id: Option<String>,
    enabled: bool,
    /// The short name of the plan group the key is listed under.
    plan: Option<String>,
    field: FieldPath,
    mark: Mark,
}

impl Ctx<'_> {
    /// Reads one `apiKeys:` list into `out`, checking its groups against `plans`.
    pub(crate) fn api_keys(
        &mut self,
        node: &Node,
        path: &FieldPath,
        plans: &Plans,
        out: &mut Vec<KeyRecord>,
    ) {
        let what = "a list of API keys (names or maps with name and value)";
        let Some(items) = self.list(node, path, what) else { return };
        for (i, item) in items.iter().enumerate() {
            let ipath = path.index(i);
            let v = self.expand(item, &ipath);
            match &v.value {
                Value::Map(entries)
                    if entries.len() == 1 && !PROPERTIES.contains(&entries[0].key.as_str()) =>
                {
                    let group = &entries[0];
                    let gpath = ipath.key(&group.key);
                    self.key_group(group, &gpath, plans);
                    let Some(keys) = self.group_keys(&group.value, &gpath) else { continue };
                    for (j, key) in keys.iter().enumerate() {
                        let kpath = gpath.index(j);
                        let kv = self.expand(key, &kpath);
                        if let Value::Map(es) = &kv.value
                            && es.len() == 1
                            && !PROPERTIES.contains(&es[0].key.as_str())
                        {
                            self.error(
                                kv.mark,
                                &kpath,
                                "usage-plan groups cannot be nested; list the plan's keys directly",
                            );
                            continue;
                        }
                        if let Some(mut r) = self.api_key(&kv, &kpath) {
                            r.plan = Some(group.key.clone());
                            out.push(r);
                        }
                    }
                }
                Value::Invalid => {}
                _ => {
                    self.ungrouped_key(v.mark, &ipath, plans);
                    if let Some(r) = self.api_key(&v, &ipath) {
                        out.push(r);
                    }
                }
            }
        }
    }

    /// The keys of a group. Never shows what was found instead of a list: `- myKey: <value>`
    /// (a name and a value written as a group) must not put the value in a message.
    fn group_keys(&mut self, node: &Node, path: &FieldPath) -> Option<Vec<Node>> {
        let v = self.expand(node, path);
        match v.value {
            Value::Seq(items) if v.tag.is_none() => Some(items),
            Value::Null => Some(Vec::new()),
            Value::Invalid => None,
            _ => {
                let message = format!(
                    "expected a list of the plan's API keys, found {}; a key with a value is \
                     written `- name: ...` with `value: ...` on the next line",
                    v.kind()
                );
                self.error(v.mark, path, message);
                None
            }
        }
    }

    /// Checks that the group `{<plan>: [...]}` names a plan of the list form of `usagePlan`.
    fn key_group(&mut self, group: &Entry, path: &FieldPath, plans: &Plans) {
        let name = group.key.as_str();
        let why = match &plans.declared {
            Declared::Unknown => return,
            Declared::Named { names, complete } => {
                if names.iter().any(|n| n == name) || !complete {
                    return;
                }
                let list = if names.is_empty() { "none".to_owned() } else { names.join(", ") };
                format!("declared plans: {list}")
            }
            Declared::Single => format!(
                "{} declares one plan without a name; to group keys, declare named plans as a \
                 list, e.g. `- {name}: {{quota: ..., throttle: ...}}`",
                plans.path
            ),
            Declared::Nothing => format!(
                "no usage plans are declared; declare named plans as a list under {}, e.g. \
                 `- {name}: {{quota: ..., throttle: ...}}`",
                plans.path
            ),
        };
        self.error(
            group.key_mark,
            path,
            format!("API key group {} names no usage plan; {why}", quote(name)),
        );
    }

    /// With a list of plans every key must be in a group: a key may belong to only one plan per
    /// API stage, and nothing says which one an ungrouped key joins.
    fn ungrouped_key(&mut self, mark: Mark, path: &FieldPath, plans: &Plans) {
        let Declared::Named { names, .. } = &plans.declared else { return };
        let Some(first) = names.first() else { return };
        let message = format!(
            "this key is not listed under a usage plan, but {} declares named plans ({}); a key \
             may belong to only one plan per API stage, so list each key under its plan, e.g. \
             `- {first}: [...]`",
            plans.path,
            names.join(", ")
        );
        self.error(mark, path, message);
    }

    /// One key: a name or a map of properties.
    fn api_key(&mut self, v: &Node, path: &FieldPath) -> Option<KeyRecord> {
        let mut rec = KeyRecord {
            name: None,
            value: None,
            value_mark: v.mark,
            description: None,
            customer_id: None,
            enabled: true,
            plan: None,
            field: path.clone(),
            mark: v.mark,
        };
        match &v.value {
            Value::Str(name) => rec.name = Some(name.clone()),
            Value::Map(entries) => {
                let mut ok = true;
                for e in entries {
                    ok &= self.key_property(e, path, &mut rec);
                }
                if !ok {
                    return None;
                }
            }
            Value::Invalid => return None,
            _ => {
                self.error(
                    v.mark,
                    path,
                    format!(
                        "expected a key name or a map with name, value, description, customerId \
                         and enabled, found {}",
                        v.kind()
                    ),
                );
                return None;
            }
        }
        if let Some(name) = &rec.name
            && (name.is_empty() || name.chars().count() > 1024)
        {
            let n = name.chars().count();
            self.error(
                v.mark,
                path,
                format!("an API key name must be 1 to 1024 characters long, this one has {n}"),
            );
            return None;
        }
        Some(rec)
    }

    /// Reads one property of a key map into `rec`; false when it is wrong.
    fn key_property(&mut self, e: &Entry, path: &FieldPath, rec: &mut KeyRecord) -> bool {
        let p = path.key(&e.key);
        match e.key.as_str() {
            "name" => {
                rec.name = self.string(&e.value, &p, "a key name");
                rec.name.is_some()
            }
            "value" => {
                let v = self.expand(&e.value, &p);
                rec.value_mark = v.mark;
                // Never describe the content: it is a secret.
                let text = match &v.value {
                    Value::Str(s) if v.tag.is_none() => Some(s.clone()),
                    Value::Num(s) => Some(s.clone()),
                    Value::Invalid => return false,
                    _ => None,
                };
                let Some(text) = text else {
                    self.error(
                        v.mark,
                        &p,
                        format!("expected the key value as a string, found {}", v.kind()),
                    );
                    return false;
                };
                match ApiKeyValue::parse(&text) {
                    Ok(value) => {
                        rec.value = Some(value);
                        true
                    }
                    Err(e) => {
                        self.error(v.mark, &p, e.to_string());
                        false
                    }
                }
            }
            "description" => {
                rec.description = self.text(&e.value, &p, "a description");
                rec.description.is_some()
            }
            "customerId" => {
                rec.customer_id = self.text(&e.value, &p, "a customer id");
                rec.customer_id.is_some()
            }
            "enabled" => match self.boolean(&e.value, &p) {
                Some(b) => {
                    rec.enabled = b;
                    true
                }
                None => false,
            },
            other => {
                self.error(
                    e.key_mark,
                    &p,
                    format!(
                        "unknown API key property {}; {}a key has only name, value, description, \
                         customerId and enabled",
                        quote(other),
                        did_you_mean(
                            other,
                            &["name", "value", "description", "customerId", "enabled"]
                        )
                    ),
                );
                false
            }
        }
    }

    /// Checks names and values are unique and names unnamed keys `<service>-<stage>-key<N>`.
    pub(crate) fn finish_keys(
        &mut self,
        records: Vec<KeyRecord>,
        service: &str,
        stage: &str,
    ) -> Vec<ApiKeyDecl> {
        let mut out: Vec<ApiKeyDecl> = Vec::new();
        let mut seen: Vec<(String, String, Option<ApiKeyValue>)> = Vec::new();
        let mut unnamed = Vec::new();
        for (i, rec) in records.into_iter().enumerate() {
            let name = match rec.name {
                Some(n) => n,
                None => {
                    unnamed.push(rec.field.to_string());
                    format!("{service}-{stage}-key{}", i + 1)
                }
            };
            if let Some((_, field, _)) = seen.iter().find(|(n, _, _)| *n == name) {
                let message = format!(
                    "the API key name {} is already used by {field}; key names must be unique",
                    quote(&name)
                );
                self.error(rec.mark, &rec.field, message);
                continue;
            }
            if let Some(value) = &rec.value
                && let Some((_, field, _)) = seen.iter().find(|(_, _, v)| v.as_ref() == Some(value))
            {
                let message = format!(
                    "this key has the same value as {field}; every key needs its own value"
                );
                self.error(rec.value_mark, &rec.field.key("value"), message);
                continue;
            }
            seen.push((name.clone(), rec.field.to_string(), rec.value.clone()));
            out.push(ApiKeyDecl {
                name,
                value: rec.value,
                description: rec.description,
                customer_id: rec.customer_id,
                enabled: rec.enabled,
                usage_plan: rec.plan,
            });
        }
        if !unnamed.is_empty() {
            self.note(format!(
                "API keys without a name ({}) are named <service>-<stage>-key<N> by their \
                position; \
                 give them a name so reordering the list does not rename them",
                unnamed.join(", ")
            ));
        }
        out
    }
}
