//! Printing results: human text by default, JSON with `--json`.
//!
//! JSON field names are camelCase, and dates are RFC 3339 in UTC (`2025-06-01T12:00:00Z`) in
//! text and in JSON alike: the store keeps epoch seconds (audit times: milliseconds), as AWS's own
//! API returns them, and only the admin API shows those.

use anyhow::Result;
use keygate_control::DeployReport;
use keygate_control::Store;
use keygate_control::info::{Info, ServedStage};
use keygate_types::ApiKeyValue;
use keygate_types::model::{ApiKey, UsagePlan};
use serde::Serialize;
use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// `text` (a name or description a user gave) as it may be printed on a terminal: control
/// characters, which keygate refuses in new input but older data may hold, are escaped
/// (`\u{1b}`), so that printing cannot drive the terminal.
pub(crate) fn shown(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// JSON fields holding epoch seconds, shown as RFC 3339.
const DATE_FIELDS: &[&str] =
    &["createdDate", "lastUpdatedDate", "lastUsedDate", "revokedDate", "deployedDate", "expires"];

/// Epoch seconds as RFC 3339 in UTC, e.g. `2025-06-01T12:00:00Z`.
pub(crate) fn date(unix_secs: i64) -> String {
    OffsetDateTime::from_unix_timestamp(unix_secs)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| unix_secs.to_string())
}

/// Epoch milliseconds as RFC 3339 in UTC with milliseconds, e.g. `2025-06-01T12:00:00.250Z`.
fn date_ms(unix_ms: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(unix_ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| unix_ms.to_string())
}

/// Replaces the epoch numbers of [`DATE_FIELDS`] (anywhere in `v`) with RFC 3339 strings.
fn iso_dates(v: &mut Value) {
    match v {
        Value::Object(map) => {
            for (k, field) in map.iter_mut() {
                match field {
                    Value::Number(n) if DATE_FIELDS.contains(&k.as_str()) => {
                        if let Some(secs) = n.as_i64() {
                            *field = Value::String(date(secs));
                        }
                    }
                    other => iso_dates(other),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(iso_dates),
        _ => {}
    }
}

/// The error and its causes on one line.
pub(crate) fn error_chain(e: &anyhow::Error) -> String {
    let mut s = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !s.contains(&c) {
            s.push_str(": ");
            s.push_str(&c);
        }
    }
    s
}

/// Prints `v` as pretty JSON, its dates as RFC 3339.
pub(crate) fn json<T: Serialize>(v: &T) -> Result<()> {
    let mut v = serde_json::to_value(v)?;
    iso_dates(&mut v);
    println!("{}", serde_json::to_string_pretty(&v)?);
    Ok(())
}

pub(crate) fn deploy_report(r: &DeployReport, as_json: bool) -> Result<()> {
    if as_json {
        return json(r);
    }
    for note in &r.notes {
        eprintln!("note: {note}");
    }
    println!(
        "Deployed {} to stage {} (api {}, deployment {})",
        r.service, r.stage, r.api_id, r.deployment_id
    );
    println!("endpoint{}:", if r.endpoints.len() == 1 { "" } else { "s" });
    for e in &r.endpoints {
        println!("  {} - {}{}", e.method, e.url, guards(e));
    }
    println!("functions:");
    for f in &r.functions {
        println!("  {}", f.function_name);
    }
    if !r.tables.is_empty() {
        println!("tables:");
        for t in &r.tables {
            println!(
                "  {} ({}): {}{}",
                t.table_name,
                t.logical_id,
                t.status,
                if t.retain { ", kept by `keygate remove` (DeletionPolicy: Retain)" } else { "" }
            );
        }
    }
    if !r.api_keys.is_empty() {
        let plans: Vec<_> = r.usage_plans.iter().map(|p| shown(&p.name)).collect();
        println!("api keys (usage plan {}):", plans.join(", "));
        for k in &r.api_keys {
            match &k.value {
                Some(v) => {
                    println!(
                        "  {}: {v}  (new: shown once, keygate keeps only a digest)",
                        shown(&k.name)
                    )
                }
                None => println!("  {} ({}): existing key, value not shown", shown(&k.name), k.id),
            }
        }
    }
    Ok(())
}

pub(crate) fn remove_report(
    r: &keygate_control::remove::RemoveReport,
    as_json: bool,
) -> Result<()> {
    if as_json {
        return json(r);
    }
    println!("Removed stage {} of {}: its routes are no longer served", r.stage, r.service);
    for t in &r.deleted_tables {
        println!("  table {t}: deleted");
    }
    for t in &r.retained_tables {
        println!("  table {t}: kept (DeletionPolicy: Retain)");
    }
    if r.deleted_keys.is_empty() && r.deleted_plans.is_empty() {
        println!("  api keys and usage plans: kept (remove --keys deletes them)");
    }
    for k in &r.deleted_keys {
        println!("  api key {k}: deleted");
    }
    for p in &r.deleted_plans {
        println!("  usage plan {p}: deleted");
    }
    Ok(())
}

pub(crate) fn info(i: &Info, as_json: bool) -> Result<()> {
    if as_json {
        return json(i);
    }
    println!("service: {}", i.service);
    println!("stage: {}", i.stage);
    println!("region: {}", i.region);
    println!("api: {} (deployment {}, {})", i.api_id, i.deployment_id, date(i.deployed_date));
    println!("api keys:");
    for k in &i.api_keys {
        println!(
            "  {}: {}…  ({}{})",
            shown(&k.name),
            k.prefix,
            k.id,
            if k.enabled { "" } else { ", disabled" }
        );
    }
    println!("endpoint{}:", if i.endpoints.len() == 1 { "" } else { "s" });
    for e in &i.endpoints {
        println!("  {} - {}{}", e.method, e.url, guards(e));
    }
    println!("functions:");
    for f in &i.functions {
        println!("  {}: {}", f.name, f.function_name);
    }
    if !i.tables.is_empty() {
        println!("tables:");
        for t in &i.tables {
            let stream = t.stream.as_deref().map(|s| format!(", stream {s}")).unwrap_or_default();
            let retain = if t.retain { ", DeletionPolicy: Retain" } else { "" };
            println!("  {} ({}): {}{stream}{retain}", t.table_name, t.logical_id, t.key);
        }
    }
    Ok(())
}

/// What `serve` serves, printed before it listens; a warning on stderr when that is nothing.
pub(crate) fn served(stages: &[ServedStage], data_dir: &std::path::Path, created: bool) {
    if stages.is_empty() {
        let how = if created { "it did not exist and was created empty" } else { "it is empty" };
        eprintln!(
            "warning: nothing is deployed in {} ({how}): every request gets 403 until \
             `keygate deploy -c <serverless.yml>` deploys a service there (or give --data-dir)",
            data_dir.display()
        );
        return;
    }
    println!("serving from {}:", data_dir.display());
    for s in stages {
        println!(
            "{} stage {} (api {}, deployment {}):",
            s.service, s.stage, s.api_id, s.deployment_id
        );
        for e in &s.endpoints {
            println!("  {} - {}{}", e.method, e.url, guards(e));
        }
    }
}

/// What guards an endpoint, as deploy and info print it after its URL.
fn guards(e: &keygate_control::deploy::Endpoint) -> String {
    let key = match (e.private, e.report) {
        (true, _) => Some("api key required"),
        (false, true) => Some("api key: report only, nothing refused"),
        (false, false) => None,
    };
    match (key, &e.authorizer) {
        (Some(k), Some(a)) => format!("  (authorizer {a}, {k})"),
        (None, Some(a)) => format!("  (authorizer {a})"),
        (Some(k), None) => format!("  ({k})"),
        (None, None) => String::new(),
    }
}

/// A key with its value, as `keys create` prints it: the only time the value is shown.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CreatedKey<'a> {
    #[serde(flatten)]
    key: &'a ApiKey,
    value: &'a str,
}

pub(crate) fn created_key(k: &ApiKey, value: &ApiKeyValue, as_json: bool) -> Result<()> {
    if as_json {
        return json(&CreatedKey { key: k, value: value.expose() });
    }
    println!("created API key {} ({})", shown(&k.name), k.id);
    println!("value: {}", value.expose());
    println!("(shown once: keygate keeps only a digest of it)");
    if let Some(e) = k.expires {
        println!("expires: {}", date(e));
    }
    Ok(())
}

/// A rotated key with its new value and until when older values work (`null`: not at all).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RotatedKey<'a> {
    #[serde(flatten)]
    key: &'a ApiKey,
    value: &'a str,
    old_values_work_until: Option<String>,
}

pub(crate) fn rotated_key(
    k: &ApiKey,
    value: &ApiKeyValue,
    old_until: Option<i64>,
    as_json: bool,
) -> Result<()> {
    if as_json {
        return json(&RotatedKey {
            key: k,
            value: value.expose(),
            old_values_work_until: old_until.map(date),
        });
    }
    println!("rotated API key {} ({})", shown(&k.name), k.id);
    println!("value: {}", value.expose());
    println!("(shown once: keygate keeps only a digest of it)");
    match old_until {
        Some(t) => println!(
            "older values work until {} (end them now with `keygate keys revoke-old {}`)",
            date(t),
            k.id
        ),
        None => println!("older values no longer work (running gateways refuse them within 1 s)"),
    }
    Ok(())
}

/// The one line a change to a key prints: what was done and when gateways apply it.
pub(crate) fn key_changed(k: &ApiKey, what: &str, effect: &str, as_json: bool) -> Result<()> {
    if as_json {
        return json(k);
    }
    println!(
        "{what} API key {} ({}); running gateways {effect} it within 1 s",
        shown(&k.name),
        k.id
    );
    Ok(())
}

pub(crate) fn key(k: &ApiKey, old: &[keygate_types::model::OldValue], as_json: bool) -> Result<()> {
    if as_json {
        let mut v = serde_json::to_value(k)?;
        if !old.is_empty() {
            v["oldValues"] = old.iter().map(old_value_json).collect();
        }
        return json(&v);
    }
    println!("id: {}", k.id);
    println!("name: {}", shown(&k.name));
    println!("enabled: {}", k.enabled);
    println!("prefix: {}…", k.prefix);
    if let Some(d) = &k.description {
        println!("description: {}", shown(d));
    }
    if let Some(c) = &k.customer_id {
        println!("customerId: {c}");
    }
    println!("createdDate: {}", date(k.created_date));
    println!("lastUpdatedDate: {}", date(k.last_updated_date));
    if let Some(e) = k.expires {
        println!("expires: {}", date(e));
    }
    if let Some(u) = k.last_used_date {
        println!("lastUsedDate: {}", date(u));
    }
    for o in old {
        let prefix =
            o.prefix.as_deref().map_or_else(|| "an older value".to_owned(), |p| format!("{p}…"));
        let idle = o.retire_idle.map(|s| format!(", or once unused for {s} s")).unwrap_or_default();
        println!("old value {prefix}: works until {}{idle}", date(o.expires));
        if o.uses.is_empty() {
            println!("  no request has used it since the rotation");
        }
        for u in &o.uses {
            let agent = if u.user_agent.is_empty() { "-".into() } else { shown(&u.user_agent) };
            println!(
                "  still sent by {}  {agent}: {} request(s), last {}",
                shown(&u.client),
                u.count,
                date(u.last_seen)
            );
        }
    }
    Ok(())
}

/// A rotated-out value as `keys get --json` shows it.
fn old_value_json(o: &keygate_types::model::OldValue) -> serde_json::Value {
    serde_json::json!({
        "prefix": o.prefix,
        "worksUntil": date(o.expires),
        "rotatedAt": o.rotated_at.map(date),
        "retireWhenIdleSeconds": o.retire_idle,
        "lastUsed": o.uses.iter().map(|u| u.last_seen).max().map(date),
        "clients": o.uses.iter().map(|u| serde_json::json!({
            "client": u.client,
            "userAgent": u.user_agent,
            "requests": u.count,
            "firstSeen": date(u.first_seen),
            "lastSeen": date(u.last_seen),
        })).collect::<Vec<_>>(),
    })
}

pub(crate) fn keys(list: &[ApiKey], as_json: bool) -> Result<()> {
    if as_json {
        return json(&list);
    }
    if list.is_empty() {
        println!("no API keys");
    }
    for k in list {
        println!(
            "{}  {:<30}  {}…  {}",
            k.id,
            shown(&k.name),
            k.prefix,
            if k.enabled { "enabled" } else { "disabled" }
        );
    }
    Ok(())
}

/// A plan with the ids of its keys, as `plans get` shows it.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PlanWithKeys<'a> {
    #[serde(flatten)]
    plan: &'a UsagePlan,
    key_ids: Vec<String>,
}

pub(crate) async fn plan(store: &Store, p: &UsagePlan, as_json: bool) -> Result<()> {
    let keys = keygate_control::plans::all_keys(store, &p.id).await?;
    if as_json {
        return json(&PlanWithKeys {
            plan: p,
            key_ids: keys.iter().map(|k| k.id.clone()).collect(),
        });
    }
    println!("id: {}", p.id);
    println!("name: {}", shown(&p.name));
    if let Some(d) = &p.description {
        println!("description: {}", shown(d));
    }
    match &p.throttle {
        Some(t) => println!("throttle: {} req/s, burst {}", t.rate_limit, t.burst_limit),
        None => println!("throttle: none"),
    }
    match &p.quota {
        Some(q) => println!("quota: {} per {} (offset {})", q.limit, q.period, q.offset),
        None => println!("quota: none"),
    }
    if let Some(f) = p.fallback {
        println!("while Redis does not answer: {}", f.as_str());
    }
    println!("api stages:");
    for s in &p.api_stages {
        println!("  {}/{}", s.api_id, s.stage);
        for (m, t) in &s.throttle {
            println!("    {m}: {} req/s, burst {}", t.rate_limit, t.burst_limit);
        }
    }
    println!("keys:");
    for k in &keys {
        println!("  {} ({})", shown(&k.name), k.id);
    }
    Ok(())
}

pub(crate) fn plans(list: &[UsagePlan], as_json: bool) -> Result<()> {
    if as_json {
        return json(&list);
    }
    if list.is_empty() {
        println!("no usage plans");
    }
    for p in list {
        let throttle = p.throttle.map(|t| format!("{}/s burst {}", t.rate_limit, t.burst_limit));
        let quota = p.quota.map(|q| format!("{}/{}", q.limit, q.period));
        println!(
            "{}  {:<30}  throttle {:<18}  quota {}",
            p.id,
            shown(&p.name),
            throttle.as_deref().unwrap_or("-"),
            quota.as_deref().unwrap_or("-")
        );
    }
    Ok(())
}

pub(crate) fn usage(r: &keygate_control::usage::UsageReport, as_json: bool) -> Result<()> {
    if as_json {
        return json(r);
    }
    println!(
        "usage plan {} ({}) from {} to {}",
        shown(&r.usage_plan_name),
        r.usage_plan_id,
        r.start_date,
        r.end_date
    );
    if r.values.is_empty() {
        println!("no API keys in the plan");
    }
    for (key, days) in &r.values {
        match r.key_names.get(key) {
            Some(name) => println!("key {} ({key}):", shown(name)),
            None => println!("key {key} (deleted):"),
        }
        let mut day = r.start_date.parse::<keygate_limits::calendar::Date>()?;
        for (used, remaining) in days {
            match remaining {
                Some(rem) => println!("  {day}  used {used:>8}  remaining {rem}"),
                None => println!("  {day}  used {used:>8}"),
            }
            day = day.add_days(1);
        }
    }
    Ok(())
}

/// An audit entry as the CLI shows it: `time` as RFC 3339 (the store keeps milliseconds).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct AuditLine<'a> {
    seq: i64,
    time: String,
    actor: &'a str,
    action: &'a str,
    target: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<&'a str>,
}

pub(crate) fn audit(entries: &[keygate_types::model::AuditEntry], as_json: bool) -> Result<()> {
    let lines: Vec<AuditLine<'_>> = entries
        .iter()
        .map(|e| AuditLine {
            seq: e.seq,
            time: date_ms(e.time),
            actor: &e.actor,
            action: &e.action,
            target: &e.target,
            detail: e.detail.as_deref(),
        })
        .collect();
    if as_json {
        return json(&lines);
    }
    for e in &lines {
        println!("{:>6}  {}  {:<24}  {:<32}  {}", e.seq, e.time, e.actor, e.action, e.target);
    }
    Ok(())
}

/// `keygate plans what-if`: the keys a proposed quota would have cut off.
pub(crate) fn what_if(w: &keygate_control::whatif::WhatIf, as_json: bool) -> Result<()> {
    if as_json {
        return json(w);
    }
    let q = &w.quota;
    let offset = if q.offset > 0 { format!(" (offset {})", q.offset) } else { String::new() };
    println!(
        "usage plan {} ({}) with a quota of {} per {:?}{offset}, replayed over {} to {}:",
        shown(&w.usage_plan_name),
        w.usage_plan_id,
        q.limit,
        q.period,
        w.start_date,
        w.end_date
    );
    let cut: Vec<_> = w.keys.iter().filter(|k| k.cut_off > 0).collect();
    let refused: u64 = cut.iter().map(|k| k.cut_off).sum();
    println!(
        "{} of {} key(s) with usage would have been cut off (429 Limit Exceeded), {refused} \
         request(s) in all",
        cut.len(),
        w.keys.len()
    );
    for k in &w.keys {
        let name = k.key_name.as_deref().map_or_else(|| "(deleted)".into(), shown);
        let days = if k.cut_off_days.is_empty() {
            String::new()
        } else {
            format!(" on {} day(s): {}", k.cut_off_days.len(), k.cut_off_days.join(", "))
        };
        println!(
            "  {}  {:<30}  {} request(s), {} cut off{days}",
            k.key_id, name, k.requests, k.cut_off
        );
    }
    Ok(())
}

/// `keygate enforcement report`: the clients report-only routes would refuse, since `since`.
pub(crate) fn would_refuse(
    clients: &[keygate_control::enforcement::Client],
    since: i64,
    stage: Option<&str>,
    as_json: bool,
) -> Result<()> {
    if as_json {
        return json(&serde_json::json!({
            "since": date(since),
            "stage": stage,
            "clients": clients,
        }));
    }
    let scope = stage.map(|s| format!(" on stage {}", shown(s))).unwrap_or_default();
    if clients.is_empty() {
        println!(
            "nothing would have been refused{scope} since {} (routes with private: report)",
            date(since)
        );
        return Ok(());
    }
    let total: u64 = clients.iter().map(|c| c.count).sum();
    println!(
        "{total} request(s) from {} client(s) would have been refused{scope} since {} (routes \
         with private: report):",
        clients.len(),
        date(since)
    );
    for c in clients {
        let agent = if c.user_agent.is_empty() { "-".into() } else { shown(&c.user_agent) };
        println!();
        println!("{}  {agent}", shown(&c.client));
        let reasons: Vec<String> = c.reasons.iter().map(|(r, n)| format!("{r} {n}")).collect();
        println!(
            "  {} request(s), {} to {}: {}",
            c.count,
            date(c.first_seen),
            date(c.last_seen),
            reasons.join(", ")
        );
        for r in &c.routes {
            println!(
                "  {} /{}{}  ({}, {} request(s))",
                r.method,
                shown(&r.stage),
                shown(&r.path),
                shown(&r.api),
                r.count
            );
        }
        if !c.keys.is_empty() {
            let keys: Vec<String> = c.keys.iter().map(|k| shown(k).into_owned()).collect();
            println!("  keys: {}", keys.join(", "));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn control_characters_are_escaped_for_the_terminal() {
        use super::shown;
        assert_eq!(shown("partner-a"), "partner-a");
        assert!(matches!(shown("plain"), std::borrow::Cow::Borrowed(_)));
        assert_eq!(shown("red\x1b[31m key\x07\0"), "red\\u{1b}[31m key\\u{7}\\0");
        assert_eq!(format!("{:<8}|", shown("ab")), "ab      |");
    }

    use super::*;

    #[test]
    fn dates_are_rfc3339_in_utc() {
        assert_eq!(date(1_795_824_000), "2026-11-28T00:00:00Z");
        assert_eq!(date_ms(1_795_824_000_250), "2026-11-28T00:00:00.25Z");
        let mut v = serde_json::json!({
            "createdDate": 0, "name": "createdDate", "items": [{"expires": 86_400}],
            "count": 5
        });
        iso_dates(&mut v);
        assert_eq!(
            v,
            serde_json::json!({
                "createdDate": "1970-01-01T00:00:00Z", "name": "createdDate",
                "items": [{"expires": "1970-01-02T00:00:00Z"}], "count": 5
            })
        );
    }
}
