//! Printing results: human text by default, JSON with `--json`.

use anyhow::Result;
use keygate_control::DeployReport;
use keygate_control::Store;
use keygate_control::info::Info;
use keygate_types::ApiKeyValue;
use keygate_types::model::{ApiKey, UsagePlan};
use serde::Serialize;

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

pub(crate) fn json<T: Serialize>(v: &T) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
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
        println!(
            "  {} - {}{}",
            e.method,
            e.url,
            if e.private { "  (api key required)" } else { "" }
        );
    }
    println!("functions:");
    for f in &r.functions {
        println!("  {f}");
    }
    if !r.api_keys.is_empty() {
        let plans: Vec<&str> = r.usage_plans.iter().map(|p| p.name.as_str()).collect();
        println!("api keys (usage plan {}):", plans.join(", "));
        for k in &r.api_keys {
            match &k.value {
                Some(v) => {
                    println!("  {}: {v}  (new: shown once, keygate keeps only a digest)", k.name)
                }
                None => println!("  {} ({}): existing key, value not shown", k.name, k.id),
            }
        }
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
    println!("api: {} (deployment {})", i.api_id, i.deployment_id);
    println!("api keys:");
    for k in &i.api_keys {
        println!(
            "  {}: {}…  ({}{})",
            k.name,
            k.prefix,
            k.id,
            if k.enabled { "" } else { ", disabled" }
        );
    }
    println!("endpoint{}:", if i.endpoints.len() == 1 { "" } else { "s" });
    for e in &i.endpoints {
        println!("  {} - {}", e.method, e.url);
    }
    println!("functions:");
    for f in &i.functions {
        println!("  {f}");
    }
    Ok(())
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
    println!("created API key {} ({})", k.name, k.id);
    println!("value: {}", value.expose());
    println!("(shown once: keygate keeps only a digest of it)");
    Ok(())
}

pub(crate) fn key(k: &ApiKey, as_json: bool) -> Result<()> {
    if as_json {
        return json(k);
    }
    println!("id: {}", k.id);
    println!("name: {}", k.name);
    println!("enabled: {}", k.enabled);
    println!("prefix: {}…", k.prefix);
    if let Some(d) = &k.description {
        println!("description: {d}");
    }
    if let Some(c) = &k.customer_id {
        println!("customerId: {c}");
    }
    println!("createdDate: {}", k.created_date);
    println!("lastUpdatedDate: {}", k.last_updated_date);
    Ok(())
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
            k.name,
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
    let keys = store.list_plan_keys(&p.id).await?;
    if as_json {
        return json(&PlanWithKeys {
            plan: p,
            key_ids: keys.iter().map(|k| k.id.clone()).collect(),
        });
    }
    println!("id: {}", p.id);
    println!("name: {}", p.name);
    if let Some(d) = &p.description {
        println!("description: {d}");
    }
    match &p.throttle {
        Some(t) => println!("throttle: {} req/s, burst {}", t.rate_limit, t.burst_limit),
        None => println!("throttle: none"),
    }
    match &p.quota {
        Some(q) => println!("quota: {} per {} (offset {})", q.limit, q.period, q.offset),
        None => println!("quota: none"),
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
        println!("  {} ({})", k.name, k.id);
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
            p.name,
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
    println!("usage plan {} from {} to {}", r.usage_plan_id, r.start_date, r.end_date);
    for (key, days) in &r.values {
        println!("key {key}:");
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

pub(crate) fn audit(entries: &[keygate_types::model::AuditEntry], as_json: bool) -> Result<()> {
    if as_json {
        return json(&entries);
    }
    for e in entries {
        println!("{:>6}  {}  {:<24}  {:<32}  {}", e.seq, e.time, e.actor, e.action, e.target);
    }
    Ok(())
}
