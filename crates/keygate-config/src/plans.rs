//! Usage plans: `provider.apiGateway.usagePlan` (and the deprecated `provider.usagePlan`).
//!
//! As Serverless compiles them, the value is either one map `{quota, throttle}`, giving the plan
//! `<service>-<stage>`, or a list of single-key maps `[{free: {...}}, {paid: {...}}]`, giving one
//! plan `<service>-<name>-<stage>` per item. `quota` is `{limit, period, offset}` and `throttle`
//! `{rateLimit, burstLimit}`; neither takes other properties. Numbers may come from variables as
//! numeric strings. What was declared ([`Declared`]) is kept so `keys.rs` can check API key groups
//! against the plan names.
//!
//! Behaviour beyond Serverless's schema: `period` is case-insensitive, `rateLimit` may be
//! fractional (AWS stores a double), `offset` is checked against the period (see
//! [`QuotaPeriod::max_offset`]), and a `throttle` needs both `rateLimit` and `burstLimit` (AWS
//! would accept either alone; keygate does not guess the other).

use keygate_types::plan::{Quota, QuotaPeriod, Throttle, UsagePlanDecl};

use crate::ctx::Ctx;
use crate::diag::{FieldPath, Mark, did_you_mean, suggest};
use crate::yaml::{Entry, Node, Value, int_value, is_number, quote};

/// Where the current form of `usagePlan` is written, for messages.
const CURRENT_PATH: &str = "provider.apiGateway.usagePlan";

/// What `usagePlan` declares, as far as API key groups are concerned.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Declared {
    /// No `usagePlan`, or an empty one (`usagePlan:` with nothing, `[]`).
    Nothing,
    /// The single-map form: one plan without a name.
    Single,
    /// The list form. `names` holds every plan name written, in file order, including plans whose
    /// settings are wrong (those are reported already). `complete` is false when an item could
    /// not be read at all (e.g. an unresolved variable), so its name is unknown.
    Named { names: Vec<String>, complete: bool },
    /// `usagePlan` itself could not be read (already reported): key groups are not checked.
    Unknown,
}

/// The plans of the file and what key groups are checked against.
pub(crate) struct Plans {
    pub(crate) decls: Vec<UsagePlanDecl>,
    pub(crate) declared: Declared,
    /// Where `usagePlan` is written (`provider.apiGateway.usagePlan` or the deprecated
    /// `provider.usagePlan`).
    pub(crate) path: String,
}

impl Plans {
    /// No `usagePlan` in the file.
    pub(crate) fn none() -> Self {
        Self { decls: Vec::new(), declared: Declared::Nothing, path: CURRENT_PATH.to_owned() }
    }
}

/// A number as YAML or a variable writes it (`12`, `0x1F`, `0.5`, `1e3`), when it is one.
fn number(text: &str) -> Option<f64> {
    if !is_number(text) {
        return None;
    }
    // Whole numbers as YAML reads them (hex and octal included); the rest as decimals. `.inf`
    // and `.nan` do not parse, and are not wanted.
    int_value(text).map(|i| i as f64).or_else(|| text.parse::<f64>().ok())
}

impl Ctx<'_> {
    /// Reads `usagePlan` (given with its path) into plan declarations named after `service` and
    /// `stage`.
    pub(crate) fn usage_plans(
        &mut self,
        plan: Option<&(Node, FieldPath)>,
        service: &str,
        stage: &str,
    ) -> Plans {
        let Some((node, path)) = plan else { return Plans::none() };
        let mut out =
            Plans { decls: Vec::new(), declared: Declared::Unknown, path: path.to_string() };
        let v = self.expand(node, path);
        match v.value {
            Value::Null => out.declared = Declared::Nothing,
            Value::Seq(items) if items.is_empty() && v.tag.is_none() => {
                out.declared = Declared::Nothing;
            }
            Value::Map(entries) if v.tag.is_none() => {
                let (throttle, quota) = self.plan_settings(&entries, path, true);
                out.decls.push(UsagePlanDecl {
                    name: format!("{service}-{stage}"),
                    short_name: None,
                    throttle,
                    quota,
                    fallback: None,
                });
                out.declared = Declared::Single;
            }
            Value::Seq(items) if v.tag.is_none() => {
                out.declared = self.named_plans(&items, path, service, stage, &mut out.decls);
            }
            Value::Invalid => {}
            _ => {
                let found = v.describe();
                self.error(
                    v.mark,
                    path,
                    format!(
                        "expected a usage plan (a map with quota and throttle) or a list of named \
                         plans (e.g. `- free: {{quota: {{limit: 1000, period: MONTH}}}}`), found \
                         {found}"
                    ),
                );
            }
        }
        out
    }

    /// The list form: one `- <name>: {quota, throttle}` per item.
    fn named_plans(
        &mut self,
        items: &[Node],
        path: &FieldPath,
        service: &str,
        stage: &str,
        decls: &mut Vec<UsagePlanDecl>,
    ) -> Declared {
        let mut names: Vec<(String, FieldPath)> = Vec::new();
        let mut complete = true;
        for (i, item) in items.iter().enumerate() {
            let ipath = path.index(i);
            let what = "a named plan such as `free: {quota: ..., throttle: ...}`";
            let Some(entries) = self.map(item, &ipath, what) else {
                complete = false;
                continue;
            };
            let entry = match entries.as_slice() {
                [entry] => entry,
                [] => {
                    self.error(
                        item.mark,
                        &ipath,
                        "expected a named plan such as `free: {quota: ..., throttle: ...}`, found \
                         nothing",
                    );
                    continue;
                }
                more => {
                    let keys: Vec<&str> = more.iter().map(|e| e.key.as_str()).collect();
                    let settings = keys.iter().any(|k| matches!(*k, "quota" | "throttle"));
                    let hint = if settings {
                        "; for one plan without a name, write usagePlan as a map (without `-`)"
                    } else {
                        ""
                    };
                    self.error(
                        more[0].key_mark,
                        &ipath,
                        format!(
                            "each item names one plan (`- free: {{quota: ..., throttle: ...}}`), \
                             this one has the keys {}{hint}",
                            keys.join(", ")
                        ),
                    );
                    continue;
                }
            };
            if !self.plan_name(entry, &ipath, &names) {
                continue;
            }
            let ppath = ipath.key(&entry.key);
            names.push((entry.key.clone(), ipath.clone()));
            let what = "the plan's settings (a map with quota and throttle)";
            let Some(settings) = self.map(&entry.value, &ppath, what) else { continue };
            let (throttle, quota) = self.plan_settings(&settings, &ppath, false);
            decls.push(UsagePlanDecl {
                name: format!("{service}-{}-{stage}", entry.key),
                short_name: Some(entry.key.clone()),
                throttle,
                quota,
                fallback: None,
            });
        }
        Declared::Named { names: names.into_iter().map(|(n, _)| n).collect(), complete }
    }

    /// Checks the name of the plan of the list item at `ipath`; false when it cannot be used.
    fn plan_name(
        &mut self,
        entry: &Entry,
        ipath: &FieldPath,
        seen: &[(String, FieldPath)],
    ) -> bool {
        let name = entry.key.as_str();
        let path = &ipath.key(name);
        if name.trim().is_empty() {
            self.error(
                entry.key_mark,
                ipath,
                "a usage plan name cannot be empty; name the plan, e.g. `- free: {...}`",
            );
            return false;
        }
        if matches!(name, "quota" | "throttle") {
            self.error(
                entry.key_mark,
                path,
                format!(
                    "{} is a usage plan setting, not a plan name; for one plan without a name \
                     write usagePlan as a map `{{quota, throttle}}` (without `-`), for named \
                     plans write `- free: {{quota: ..., throttle: ...}}`",
                    quote(name)
                ),
            );
            return false;
        }
        if let Some((_, first)) = seen.iter().find(|(n, _)| n == name) {
            self.error(
                entry.key_mark,
                path,
                format!(
                    "the usage plan {} is already declared at {first}; plan names must be unique",
                    quote(name)
                ),
            );
            return false;
        }
        true
    }

    /// The settings of one plan: `quota` and `throttle`, nothing else.
    fn plan_settings(
        &mut self,
        entries: &[Entry],
        path: &FieldPath,
        single: bool,
    ) -> (Option<Throttle>, Option<Quota>) {
        let mut throttle = None;
        let mut quota = None;
        // A single map with neither setting, e.g. `usagePlan: {free: {...}}`, was probably meant
        // as the list form.
        let list_hint =
            single && !entries.iter().any(|e| matches!(e.key.as_str(), "quota" | "throttle"));
        for e in entries {
            let p = path.key(&e.key);
            match e.key.as_str() {
                "quota" => quota = self.quota(e, &p),
                "throttle" => throttle = self.throttle(e, &p),
                other => {
                    let hint = if let Some(g) = suggest(other, ["quota", "throttle"]) {
                        format!(" (did you mean `{g}`?)")
                    } else if list_hint && matches!(e.value.value, Value::Map(_) | Value::Null) {
                        " (to declare named plans, write a list: `- free: {quota: ..., \
                         throttle: ...}`)"
                            .to_owned()
                    } else {
                        String::new()
                    };
                    self.error(
                        e.key_mark,
                        &p,
                        format!(
                            "unknown usage plan property {}; a usage plan has only quota and \
                             throttle{hint}",
                            quote(other)
                        ),
                    );
                }
            }
        }
        (throttle, quota)
    }

    /// `quota: {limit, period, offset}`; `limit` and `period` are required.
    fn quota(&mut self, entry: &Entry, path: &FieldPath) -> Option<Quota> {
        let what = "a quota (a map with limit, period and offset)";
        let entries = self.map(&entry.value, path, what)?;
        let mut ok = true;
        let (mut has_limit, mut has_period) = (false, false);
        let mut limit = None;
        let mut period = None;
        let mut offset: Option<(u32, Mark, FieldPath)> = None;
        for q in &entries {
            let p = path.key(&q.key);
            match q.key.as_str() {
                "limit" => {
                    has_limit = true;
                    let what = "a whole number of requests of at least 0";
                    limit = self.integer(&q.value, &p, what, 0..=i64::MAX).map(|n| n as u64);
                }
                "period" => {
                    has_period = true;
                    period = self.period(&q.value, &p);
                }
                "offset" => {
                    let v = self.expand(&q.value, &p);
                    let what = "a whole number of at least 0";
                    match self.integer(&v, &p, what, 0..=i64::from(u32::MAX)) {
                        Some(n) => offset = Some((n as u32, v.mark, p)),
                        None => ok = false,
                    }
                }
                other => {
                    ok = false;
                    self.error(
                        q.key_mark,
                        &p,
                        format!(
                            "unknown quota setting {}; {}a quota has only limit, period and \
                             offset",
                            quote(other),
                            did_you_mean(other, &["limit", "period", "offset"])
                        ),
                    );
                }
            }
        }
        if !has_limit {
            self.error(
                entry.key_mark,
                &path.key("limit"),
                "missing; a quota needs limit, the number of requests allowed per period",
            );
        }
        if !has_period {
            self.error(
                entry.key_mark,
                &path.key("period"),
                "missing; a quota needs period: DAY, WEEK or MONTH",
            );
        }
        let period = period?;
        let offset = match offset {
            Some((n, mark, p)) if n > period.max_offset() => {
                self.error(mark, &p, offset_message(period, n));
                return None;
            }
            Some((n, _, _)) => n,
            None => 0,
        };
        if !ok {
            return None;
        }
        Some(Quota { limit: limit?, period, offset })
    }

    /// `DAY`, `WEEK` or `MONTH`, in any case.
    fn period(&mut self, node: &Node, path: &FieldPath) -> Option<QuotaPeriod> {
        let v = self.expand(node, path);
        let parsed = match &v.value {
            Value::Str(s) if v.tag.is_none() => QuotaPeriod::parse(s),
            Value::Invalid => return None,
            _ => None,
        };
        if parsed.is_none() {
            self.mismatch(&v, path, "DAY, WEEK or MONTH");
        }
        parsed
    }

    /// `throttle: {rateLimit, burstLimit}`; keygate needs both.
    fn throttle(&mut self, entry: &Entry, path: &FieldPath) -> Option<Throttle> {
        let what = "a throttle (a map with rateLimit and burstLimit)";
        let entries = self.map(&entry.value, path, what)?;
        let mut ok = true;
        let (mut has_rate, mut has_burst) = (false, false);
        let mut rate = None;
        let mut burst = None;
        for t in &entries {
            let p = path.key(&t.key);
            match t.key.as_str() {
                "rateLimit" => {
                    has_rate = true;
                    rate = self.rate(&t.value, &p);
                }
                "burstLimit" => {
                    has_burst = true;
                    let what = "a whole number of requests from 0 to 4294967295";
                    burst =
                        self.integer(&t.value, &p, what, 0..=i64::from(u32::MAX)).map(|n| n as u32);
                }
                other => {
                    ok = false;
                    self.error(
                        t.key_mark,
                        &p,
                        format!(
                            "unknown throttle setting {}; {}a throttle has only rateLimit and \
                             burstLimit",
                            quote(other),
                            did_you_mean(other, &["rateLimit", "burstLimit"])
                        ),
                    );
                }
            }
        }
        let both = "a throttle needs both rateLimit (the steady rate, in requests per second) \
                    and burstLimit (how many requests may arrive at once); keygate does not \
                    guess one from the other";
        if !has_rate {
            self.error(entry.key_mark, &path.key("rateLimit"), format!("missing; {both}"));
        }
        if !has_burst {
            self.error(entry.key_mark, &path.key("burstLimit"), format!("missing; {both}"));
        }
        if !ok {
            return None;
        }
        Some(Throttle { rate_limit: rate?, burst_limit: burst? })
    }

    /// `rateLimit`: a finite number of at least 0, fractions allowed (also as a numeric string,
    /// as variables give them).
    fn rate(&mut self, node: &Node, path: &FieldPath) -> Option<f64> {
        let v = self.expand(node, path);
        let n = match &v.value {
            Value::Num(n) => number(n),
            Value::Str(s) if v.tag.is_none() => number(s.trim()),
            Value::Invalid => return None,
            _ => None,
        };
        match n {
            // `+ 0.0` turns -0 into 0.
            Some(n) if n.is_finite() && n >= 0.0 => Some(n + 0.0),
            _ => {
                let what = "a number of requests per second of at least 0 (fractions such as 0.5 \
                            are allowed)";
                self.mismatch(&v, path, what);
                None
            }
        }
    }
}

/// Why `offset` is too large for `period`.
fn offset_message(period: QuotaPeriod, found: u32) -> String {
    let max = period.max_offset();
    match period {
        QuotaPeriod::Day => format!(
            "expected offset 0 for a DAY quota, found {found}; a day has no offset (it starts at \
             00:00 UTC)"
        ),
        QuotaPeriod::Week => format!(
            "expected an offset from 0 to {max} for a WEEK quota, found {found}; for WEEK the \
             offset is the weekday the week starts (0 = Sunday .. 6 = Saturday)"
        ),
        QuotaPeriod::Month => format!(
            "expected an offset from 0 to {max} for a MONTH quota, found {found}; for MONTH the \
             offset is the number of days after the 1st that the period starts (0-27)"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_as_yaml_and_variables_write_them() {
        assert_eq!(number("5"), Some(5.0));
        assert_eq!(number("0.5"), Some(0.5));
        assert_eq!(number(".5"), Some(0.5));
        assert_eq!(number("1e3"), Some(1000.0));
        assert_eq!(number("0x10"), Some(16.0));
        assert_eq!(number("-2"), Some(-2.0));
        for no in ["", "abc", "5x", "inf", "NaN", ".nan", ".inf", "1_000"] {
            assert!(number(no).is_none_or(|n| !n.is_finite()), "{no}");
        }
    }

    #[test]
    fn offset_messages_explain_the_period() {
        assert!(offset_message(QuotaPeriod::Week, 7).contains("0 = Sunday .. 6 = Saturday"));
        assert!(offset_message(QuotaPeriod::Month, 28).contains("from 0 to 27"));
        assert!(offset_message(QuotaPeriod::Day, 1).starts_with("expected offset 0"));
    }
}
