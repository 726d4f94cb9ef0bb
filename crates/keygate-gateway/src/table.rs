//! The in-memory table the data plane serves from: routes per stage and the key index.
//!
//! Built from a [`GatewaySnapshot`] whenever the store's version moves and swapped in atomically,
//! so a request never reads the store (architecture invariant: no per-request SQL).

use std::collections::HashMap;
use std::sync::Arc;

use keygate_types::model::GatewaySnapshot;
use keygate_types::{HttpEvent, KeyDigest, ServiceDefinition};

use keygate_limits::bucket::BucketLimits;

use crate::meter::{KeyPlan, Meter, StageLimits};
use crate::router::{AddError, Router};

/// One routable method of a deployed stage.
#[derive(Debug)]
pub struct Route {
    pub api_id: String,
    pub stage: String,
    pub deployment_id: String,
    /// The deployment's definition (shared by all its routes).
    pub definition: Arc<ServiceDefinition>,
    /// Index of the function in `definition.functions`.
    pub function: usize,
    pub event: HttpEvent,
}

/// The routes of one stage name (across APIs).
#[derive(Debug, Default)]
pub struct StageTable {
    pub router: Router,
    pub routes: Vec<Route>,
}

/// What the gateway knows of a key.
#[derive(Debug)]
pub struct KeyEntry {
    pub id: String,
    pub enabled: bool,
    /// Unix seconds from which this value is refused (expiry, or end of a rotation's grace).
    pub expires: Option<i64>,
    /// The API stages of the usage plans the key belongs to.
    pub grants: Vec<Grant>,
}

/// A key's access to one API stage through one usage plan, with the limits that apply and the
/// key's counters in that plan.
#[derive(Debug)]
pub struct Grant {
    pub plan_id: String,
    pub api_id: String,
    pub stage: String,
    pub limits: Arc<StageLimits>,
    pub meter: Arc<KeyPlan>,
}

impl KeyEntry {
    /// The grant through which the key may call `api_id`'s `stage`, if any (AWS: a key works
    /// only on the stages of its usage plans, and is in at most one plan per stage).
    pub fn grant_for(&self, api_id: &str, stage: &str, now_unix_secs: i64) -> Option<&Grant> {
        if !self.enabled || self.expires.is_some_and(|e| now_unix_secs >= e) {
            return None;
        }
        self.grants.iter().find(|g| g.api_id == api_id && g.stage == stage)
    }
}

impl Table {
    /// The key check of a private route: the entry and grant of the presented `x-api-key` value
    /// if it is known, enabled, not expired and granted `api_id`'s `stage`. One SHA-256 and one
    /// hash lookup; no store access.
    pub fn authorize(
        &self,
        presented: &[u8],
        api_id: &str,
        stage: &str,
        now_unix_secs: i64,
    ) -> Option<(&KeyEntry, &Grant)> {
        if presented.is_empty() {
            return None;
        }
        let entry = self.keys.get(&KeyDigest::of(presented))?;
        entry.grant_for(api_id, stage, now_unix_secs).map(|g| (entry, g))
    }
}

/// The whole data-plane table.
#[derive(Debug, Default)]
pub struct Table {
    pub version: i64,
    pub stages: HashMap<String, StageTable>,
    pub keys: HashMap<KeyDigest, KeyEntry>,
}

impl Table {
    /// Builds the table, attaching each key's counters from `meter` (created when new: they are
    /// returned so the caller can seed them from the store before serving). Routes that clash
    /// (two APIs deployed to the same stage name with the same method and path) keep the first
    /// and log the rest.
    pub fn build(snapshot: GatewaySnapshot, meter: &Meter) -> (Self, Vec<Arc<KeyPlan>>) {
        let mut stages: HashMap<String, StageTable> = HashMap::new();
        for deployed in snapshot.stages.iter().cloned() {
            let definition = Arc::new(deployed.definition);
            let table = stages.entry(deployed.stage.clone()).or_default();
            for (fi, f) in definition.functions.iter().enumerate() {
                for e in &f.events {
                    let idx = table.routes.len();
                    match table.router.add(&e.path, e.method, idx) {
                        Ok(()) => table.routes.push(Route {
                            api_id: deployed.api_id.clone(),
                            stage: deployed.stage.clone(),
                            deployment_id: deployed.deployment_id.clone(),
                            definition: Arc::clone(&definition),
                            function: fi,
                            event: e.clone(),
                        }),
                        Err(AddError::Duplicate(other)) => tracing::warn!(
                            stage = %deployed.stage,
                            method = %e.method,
                            path = %e.path,
                            api = %deployed.api_id,
                            other_api = %table.routes[other].api_id,
                            "route is served by another API on this stage; ignored"
                        ),
                    }
                }
            }
        }
        // The limits of every (plan, api, stage), shared by the plan's keys.
        let mut limits: HashMap<(&str, &str, &str), Arc<StageLimits>> = HashMap::new();
        for p in &snapshot.plans {
            for s in &p.api_stages {
                let l = StageLimits {
                    throttle: p.throttle.as_ref().map(BucketLimits::from_throttle),
                    quota: p.quota,
                    methods: s
                        .throttle
                        .iter()
                        .map(|(k, t)| (k.clone(), BucketLimits::from_throttle(t)))
                        .collect(),
                };
                limits.insert((&p.id, &s.api_id, &s.stage), Arc::new(l));
            }
        }
        let mut fresh = Vec::new();
        let mut keys = HashMap::with_capacity(snapshot.keys.len());
        for k in &snapshot.keys {
            let grants = k
                .stages
                .iter()
                .map(|(plan_id, api_id, stage)| {
                    let (meter, new) = meter.get_or_create(&k.id, plan_id);
                    if new {
                        fresh.push(Arc::clone(&meter));
                    }
                    Grant {
                        plan_id: plan_id.clone(),
                        api_id: api_id.clone(),
                        stage: stage.clone(),
                        limits: limits
                            .get(&(plan_id.as_str(), api_id.as_str(), stage.as_str()))
                            .cloned()
                            .unwrap_or_default(),
                        meter,
                    }
                })
                .collect();
            keys.insert(
                k.digest,
                KeyEntry { id: k.id.clone(), enabled: k.enabled, expires: k.expires, grants },
            );
        }
        meter.set_grants(&snapshot.grants);
        (Self { version: snapshot.version, stages, keys }, fresh)
    }
}
