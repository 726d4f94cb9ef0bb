//! Report-only enforcement (`private: report`): who the routes in report mode let through that
//! their key check or usage plan would have refused, grouped by client, so an open API can be
//! moved to keys knowing who would break. Gateways count the would-be refusals per hour, route,
//! reason and client; this reads them back. An operator may also switch a deployed stage's key
//! checks to report or enforce without a deploy ([`set`]); the switch outlives deploys.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::Serialize;

use keygate_store::Change;
use keygate_types::Enforcement;

use crate::{Error, Result, Store};

/// One client (address and user agent) that enforcement would refuse.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Client {
    pub client: String,
    pub user_agent: String,
    /// Requests that would have been refused.
    pub count: u64,
    /// The first and the last of them (unix seconds).
    pub first_seen: i64,
    pub last_seen: i64,
    /// Requests by what would have refused them (`missing_key`, `throttled`, ...).
    pub reasons: BTreeMap<String, u64>,
    /// The routes they went to.
    pub routes: Vec<Route>,
    /// The keys they sent, where the value sent is a known key's.
    pub keys: BTreeSet<String>,
}

/// A route of a [`Client`]'s would-be refused requests.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Route {
    /// The API's name (its id when it is gone).
    pub api: String,
    pub stage: String,
    pub method: String,
    pub path: String,
    pub count: u64,
}

/// A client: its address and user agent.
type Who = (String, String);
/// A route: API name, stage, path and method.
type RouteKey = (String, String, String, String);

/// The clients report-only routes let through since `since` (unix seconds) that enforcement
/// would refuse, of one stage or all: most requests first.
pub async fn by_client(store: &Store, stage: Option<&str>, since: i64) -> Result<Vec<Client>> {
    let rows = store.would_refuse(stage, since).await?;
    let names: HashMap<String, String> =
        store.list_apis().await?.into_iter().map(|a| (a.id, a.name)).collect();
    let mut clients: BTreeMap<Who, Client> = BTreeMap::new();
    let mut routes: BTreeMap<Who, BTreeMap<RouteKey, u64>> = BTreeMap::new();
    for r in rows {
        let who = (r.client.clone(), r.user_agent.clone());
        let c = clients.entry(who.clone()).or_insert_with(|| Client {
            client: r.client.clone(),
            user_agent: r.user_agent.clone(),
            count: 0,
            first_seen: r.first_seen,
            last_seen: r.last_seen,
            reasons: BTreeMap::new(),
            routes: Vec::new(),
            keys: BTreeSet::new(),
        });
        c.count += r.count;
        c.first_seen = c.first_seen.min(r.first_seen);
        c.last_seen = c.last_seen.max(r.last_seen);
        *c.reasons.entry(r.reason).or_default() += r.count;
        c.keys.extend(r.key_id);
        let api = names.get(&r.api_id).cloned().unwrap_or(r.api_id);
        *routes.entry(who).or_default().entry((api, r.stage, r.path, r.method)).or_default() +=
            r.count;
    }
    let mut out: Vec<Client> = clients
        .into_iter()
        .map(|(who, mut c)| {
            c.routes = routes
                .remove(&who)
                .unwrap_or_default()
                .into_iter()
                .map(|((api, stage, path, method), count)| Route {
                    api,
                    stage,
                    method,
                    path,
                    count,
                })
                .collect();
            c
        })
        .collect();
    out.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.client.cmp(&b.client)));
    Ok(out)
}

/// Switches the key checks of every service deployed to `stage` (or of `service` only):
/// `Some(Report)` makes their private routes report-only, `Some(Enforce)` their report-only
/// routes private, `None` hands them back to what was deployed. Gateways serve the switch within
/// a second; deploys keep it. Returns the services switched, by name.
///
/// # Errors
/// [`Error::NotFound`] when no service (or not `service`) is deployed to `stage`.
pub async fn set(
    store: &Store,
    stage: &str,
    service: Option<&str>,
    switch: Option<Enforcement>,
) -> Result<Vec<String>> {
    let mut switched = Vec::new();
    for api in store.list_apis().await? {
        if service.is_some_and(|s| s != api.name) {
            continue;
        }
        if !store.list_stages(&api.id).await?.iter().any(|s| s.name == stage) {
            continue;
        }
        let change = Change::SetStageEnforcement {
            api_id: api.id.clone(),
            stage: stage.to_owned(),
            enforcement: switch,
        };
        store.apply(change).await?;
        switched.push(api.name);
    }
    if switched.is_empty() {
        let what = service.map_or_else(|| "no service".to_owned(), |s| format!("service {s}"));
        let has = if service.is_some() { "has no" } else { "is deployed to" };
        return Err(Error::NotFound(format!(
            "{what} {has} stage {stage}{}; run `keygate deploy -c <file> --stage {stage}` first",
            if service.is_some() { " deployed" } else { "" }
        )));
    }
    switched.sort();
    Ok(switched)
}
