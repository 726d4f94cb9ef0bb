//! The in-memory table the data plane serves from: routes per stage and the key index.
//!
//! Built from a [`GatewaySnapshot`] whenever the store's version moves and swapped in atomically,
//! so a request never reads the store (architecture invariant: no per-request SQL).

use std::collections::HashMap;
use std::sync::Arc;

use keygate_types::model::GatewaySnapshot;
use keygate_types::{HttpEvent, KeyDigest, ServiceDefinition};

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
    /// `(api_id, stage)` pairs of the usage plans the key belongs to.
    pub stages: Vec<(String, String)>,
}

impl KeyEntry {
    /// Whether the key may call `api_id`'s `stage` (AWS: only stages of the key's usage plans).
    pub fn allows(&self, api_id: &str, stage: &str) -> bool {
        self.enabled && self.stages.iter().any(|(a, s)| a == api_id && s == stage)
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
    /// Builds the table. Routes that clash (two APIs deployed to the same stage name with the
    /// same method and path) keep the first and log the rest.
    pub fn build(snapshot: GatewaySnapshot) -> Self {
        let mut stages: HashMap<String, StageTable> = HashMap::new();
        for deployed in snapshot.stages {
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
        let keys = snapshot
            .keys
            .into_iter()
            .map(|k| {
                let entry = KeyEntry {
                    id: k.id,
                    enabled: k.enabled,
                    stages: k.stages.into_iter().map(|s| (s.api_id, s.stage)).collect(),
                };
                (k.digest, entry)
            })
            .collect();
        Self { version: snapshot.version, stages, keys }
    }
}
