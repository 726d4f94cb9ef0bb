//! The in-memory table the data plane serves from: routes per stage and the key index.
//!
//! Built from a [`GatewaySnapshot`] whenever the store's version moves and swapped in atomically,
//! so a request never reads the store (architecture invariant: no per-request SQL).
//!
//! The key index is laid out for millions of keys (docs/benchmarks.md): the snapshot's packed
//! [`KeySet`] records are kept as they are, and a `hashbrown::HashTable` of 4-byte record indexes,
//! hashed by the digest's first bytes (SHA-256 output is uniform), finds a presented value. The
//! usage plans a key belongs to are interned, resolved once per plan combination into the API
//! stages they grant, and API stages are numbered so the per-request check compares integers.
//! Rate and quota counters are attached to a key the first time it is used.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use hashbrown::HashTable;
use keygate_limits::bucket::BucketLimits;
use keygate_types::keyset::KeyRecord;
use keygate_types::model::{GatewaySnapshot, UsagePlan};
use keygate_types::{HttpEvent, KeyDigest, ServiceDefinition};

use crate::meter::{KeyPlan, Meter, StageLimits};
use crate::router::{AddError, Router};

/// One routable method of a deployed stage.
#[derive(Debug)]
pub struct Route {
    pub api_id: String,
    pub stage: String,
    /// The table's number for (`api_id`, `stage`), what key grants are matched against.
    pub api_stage: u32,
    pub deployment_id: String,
    /// The deployment's definition (shared by all its routes).
    pub definition: Arc<ServiceDefinition>,
    pub event: HttpEvent,
    /// What the route runs.
    pub(crate) target: crate::integrate::Target,
    /// Its requests' counters and histograms.
    pub(crate) metrics: crate::metrics::RouteMetrics,
    /// Its Lambda authorizer, run before the key check.
    pub(crate) authorizer: Option<crate::authorizer::RouteAuthorizer>,
}

/// The routes of one stage name (across APIs).
#[derive(Debug, Default)]
pub struct StageTable {
    pub router: Router,
    pub routes: Vec<Route>,
    /// Where keys may read their own standing (`custom.keygate.keyIntrospection`), by path;
    /// usually none.
    pub(crate) introspection: Vec<Introspection>,
}

/// A deployment's key introspection path on its stage.
#[derive(Debug)]
pub(crate) struct Introspection {
    /// The path under the stage, e.g. `/.keygate/key`.
    pub(crate) path: String,
    /// The API stage whose plan grants are shown.
    pub(crate) api_stage: u32,
}

impl StageTable {
    /// The key introspection answering on `path`, if any.
    pub(crate) fn introspection(&self, path: &str) -> Option<&Introspection> {
        self.introspection.iter().find(|i| i.path == path)
    }

    /// The CORS settings of a resource, given its `routes`: the first route's that has any.
    pub(crate) fn cors_of(&self, routes: &[usize]) -> Option<&keygate_types::Cors> {
        routes.iter().find_map(|&r| self.routes[r].event.cors.as_ref())
    }

    /// The answer to a browser's preflight (`OPTIONS`, no key) `req` to the resource of
    /// `routes`, when that resource has CORS settings: its methods, as Serverless's OPTIONS mock
    /// lists them.
    pub(crate) fn preflight(
        &self,
        routes: &[usize],
        req: &keygate_http::Request,
    ) -> Option<keygate_http::Response> {
        let (cors, origin) = crate::respond::cors_origin(self.cors_of(routes), req)?;
        let methods: Vec<_> = routes.iter().map(|&r| self.routes[r].event.method).collect();
        Some(crate::respond::preflight(cors, &methods, origin.as_ref()))
    }
}

/// A key's access to one API stage through one usage plan, with the limits that apply. Shared by
/// every key with the same plans.
#[derive(Debug)]
pub struct Grant {
    pub plan_id: Arc<str>,
    pub api_stage: u32,
    /// Position of the plan in the key's (sorted) plan list, which is also the position of the
    /// key's counters for that plan.
    plan_pos: usize,
    pub limits: Arc<StageLimits>,
}

/// What a combination of usage plans grants: plan ids in order, and one grant per API stage.
#[derive(Debug)]
struct PlanSet {
    plan_ids: Vec<Arc<str>>,
    grants: Vec<Grant>,
}

/// Why [`Table::authorize`] refused a presented key; the key's id where the value is known (an
/// id is no secret: the access log shows it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied<'t> {
    /// No key has this value (or it is empty).
    Unknown,
    /// A value of the self-checking form whose checksum is wrong: refused before any lookup.
    BadChecksum,
    Disabled(&'t str),
    Expired(&'t str),
    /// The key is in no usage plan that covers the route's API stage.
    NotInPlan(&'t str),
}

impl<'t> Denied<'t> {
    /// The access log's `reason`.
    pub fn reason(self) -> &'static str {
        match self {
            Self::Unknown => "unknown_key",
            Self::BadChecksum => "bad_checksum",
            Self::Disabled(_) => "disabled_key",
            Self::Expired(_) => "expired_key",
            Self::NotInPlan(_) => "key_not_in_plan",
        }
    }

    /// The refused key's id, when its value is known.
    pub fn key_id(self) -> Option<&'t str> {
        match self {
            Self::Unknown | Self::BadChecksum => None,
            Self::Disabled(id) | Self::Expired(id) | Self::NotInPlan(id) => Some(id),
        }
    }
}

/// A key value that passed the key check on a route's API stage.
#[derive(Debug, Clone, Copy)]
pub struct Authorized<'t> {
    table: &'t Table,
    index: u32,
    pub grant: &'t Grant,
}

impl<'t> Authorized<'t> {
    /// Where the key value is in the table (for [`Table::key_id_at`]).
    pub(crate) fn index(&self) -> u32 {
        self.index
    }

    /// The id of the key (never its value).
    pub fn key_id(&self) -> &'t str {
        self.table.key_id(self.index)
    }

    /// The digest of the value, when it is one a rotation replaced (its uses are recorded).
    pub fn old_value(&self) -> Option<KeyDigest> {
        let r = &self.table.records[self.index as usize];
        r.old.then_some(r.digest)
    }

    /// Unix seconds from which this value is refused (the key's expiry or the end of its
    /// rotation grace), `None`: never.
    pub fn value_expires(&self) -> Option<i64> {
        let expires = self.table.records[self.index as usize].expires;
        (expires != i64::MAX).then_some(expires)
    }

    /// The usage plan of the grant, as the store has it.
    pub fn plan(&self) -> Option<&'t UsagePlan> {
        self.table.plans.get(&*self.grant.plan_id)
    }

    /// The key's counters in the grant's plan, created on first use.
    pub fn counters(&self) -> KeyPlan<'t> {
        let t = self.table;
        let link = match self.grant.plan_pos {
            0 => t.links.get(self.index as usize),
            pos => t.more_links.get(&self.index).and_then(|links| links.get(pos - 1)),
        };
        // Acquire: the slot was made before its number was published.
        if let Some(index) = link.map(|l| l.load(Ordering::Acquire)).filter(|&i| i != UNLINKED) {
            return t.meter.slot(index);
        }
        let record = &t.records[self.index as usize];
        let plan = &t.plan_sets[record.plans as usize].plan_ids[self.grant.plan_pos];
        let (counters, _) = t.meter.get_or_create(t.key_id(self.index), plan);
        if let Some(link) = link {
            link.store(counters.index(), Ordering::Release);
        }
        counters
    }
}

/// The whole data-plane table.
#[derive(Debug)]
pub struct Table {
    pub version: i64,
    /// Stage numbers by name, looked up per request (foldhash: see `router`).
    stage_numbers: HashMap<String, u32, foldhash::fast::RandomState>,
    /// The stages, by number: a request admitted on its head keeps the number, so its route is
    /// found again without another hash lookup.
    stages: Vec<StageTable>,
    /// Every accepted key value, indexed by `by_digest`.
    records: Vec<KeyRecord>,
    /// The key ids `records` point into.
    ids: String,
    by_digest: HashTable<u32>,
    plan_sets: Vec<PlanSet>,
    /// Each record's counters in its first plan: a slot number of the meter's, [`UNLINKED`]
    /// until the key's first use (4 bytes a key, where a pointer to a list would take 24).
    links: Vec<AtomicU32>,
    /// The same for the other plans of the records in several, by record.
    more_links: HashMap<u32, Box<[AtomicU32]>, foldhash::fast::RandomState>,
    meter: Arc<Meter>,
    api_stages: HashMap<(String, String), u32>,
    /// Whether a value of the self-checking form with a bad checksum is refused without a
    /// lookup: unless the store may hold a value of that form which is not self-checking.
    checks_values: bool,
    /// Whether any record is a value a rotation replaced.
    old_values: bool,
    /// The usage plans by id, as the store has them (names and declared limits, for key
    /// introspection; the limits enforced are the grants').
    plans: HashMap<String, UsagePlan>,
}

/// A record not linked to its counters yet.
const UNLINKED: u32 = u32::MAX;

/// The hash of a digest: its first eight bytes (SHA-256 output is uniform, and presented values
/// only look up, so nobody can fill a bucket).
fn digest_hash(d: &KeyDigest) -> u64 {
    let b = d.as_bytes();
    u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
}

impl Table {
    /// Builds the table. Routes that clash (two APIs deployed to the same stage name with the
    /// same method and path) keep the first and log the rest. CPU-bound (about a second for a
    /// million keys): run it off the async threads.
    pub fn build(
        snapshot: GatewaySnapshot,
        meter: &Arc<Meter>,
        metrics: &crate::metrics::Metrics,
        caches: &crate::authorizer::Caches,
    ) -> Self {
        let mut api_stages: HashMap<(String, String), u32> = HashMap::new();
        let mut number = |api: &str, stage: &str| -> u32 {
            let next = u32::try_from(api_stages.len()).unwrap_or(u32::MAX);
            *api_stages.entry((api.to_owned(), stage.to_owned())).or_insert(next)
        };
        let mut stage_numbers: HashMap<String, u32, foldhash::fast::RandomState> =
            HashMap::default();
        let mut stages: Vec<StageTable> = Vec::new();
        for deployed in snapshot.stages {
            let api_stage = number(&deployed.api_id, &deployed.stage);
            // Served as the stage's switch (`keygate enforcement set`) says, if it has one.
            let definition = Arc::new(deployed.definition.switched(deployed.enforcement));
            let next = u32::try_from(stages.len()).expect("fewer than 2^32 stages");
            let at = *stage_numbers.entry(deployed.stage.clone()).or_insert(next);
            if at == next {
                stages.push(StageTable::default());
            }
            let table = &mut stages[at as usize];
            if let Some(path) = &definition.key_introspection {
                match table.introspection(path) {
                    None => {
                        table.introspection.push(Introspection { path: path.clone(), api_stage })
                    }
                    Some(_) => tracing::warn!(
                        stage = %deployed.stage,
                        path = %path,
                        api = %deployed.api_id,
                        "key introspection path is served by another API on this stage; ignored"
                    ),
                }
            }
            for (fi, f) in definition.functions.iter().enumerate() {
                for e in &f.events {
                    let idx = table.routes.len();
                    match table.router.add(&e.path, e.method, idx) {
                        Ok(()) => table.routes.push(Route {
                            api_id: deployed.api_id.clone(),
                            stage: deployed.stage.clone(),
                            api_stage,
                            deployment_id: deployed.deployment_id.clone(),
                            definition: Arc::clone(&definition),
                            event: e.clone(),
                            target: crate::integrate::Target::of(&e.integration, fi),
                            metrics: metrics.route(
                                &definition.service,
                                &deployed.stage,
                                &e.path,
                                e.method.as_str(),
                            ),
                            authorizer: e.authorizer.as_ref().map(|a| {
                                crate::authorizer::RouteAuthorizer::new(
                                    a,
                                    &definition,
                                    &deployed.api_id,
                                    &deployed.deployment_id,
                                    caches,
                                )
                            }),
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
        // What each plan grants: its API stages with their limits.
        let mut by_plan: HashMap<&str, Vec<(u32, Arc<StageLimits>)>> = HashMap::new();
        for p in &snapshot.plans {
            let grants = by_plan.entry(p.id.as_str()).or_default();
            for s in &p.api_stages {
                // Method throttles resolved per route of this API stage, once, here.
                let throttles: Vec<(Arc<str>, BucketLimits)> = s
                    .throttle
                    .iter()
                    .map(|(k, t)| (Arc::from(k.as_str()), BucketLimits::from_throttle(t)))
                    .collect();
                let routes = match stage_numbers.get(&s.stage) {
                    Some(&at) if !throttles.is_empty() => stages[at as usize]
                        .routes
                        .iter()
                        .map(|r| match r.api_id == s.api_id {
                            true => StageLimits::throttles_for(&r.event.path, &throttles),
                            false => Box::default(),
                        })
                        .collect(),
                    _ => Vec::new(),
                };
                let l = StageLimits {
                    throttle: p.throttle.as_ref().map(BucketLimits::from_throttle),
                    quota: p.quota,
                    routes,
                    fallback: p.fallback,
                };
                grants.push((number(&s.api_id, &s.stage), Arc::new(l)));
            }
        }
        let (records, ids, sets) = snapshot.keys.into_parts();
        let plan_sets: Vec<PlanSet> = sets
            .into_iter()
            .map(|plans| {
                let mut grants = Vec::new();
                for (plan_pos, plan) in plans.iter().enumerate() {
                    let plan_id: Arc<str> = Arc::from(plan.as_str());
                    for (api_stage, limits) in by_plan.get(plan.as_str()).into_iter().flatten() {
                        grants.push(Grant {
                            plan_id: Arc::clone(&plan_id),
                            api_stage: *api_stage,
                            plan_pos,
                            limits: Arc::clone(limits),
                        });
                    }
                }
                PlanSet { plan_ids: plans.iter().map(|p| Arc::from(p.as_str())).collect(), grants }
            })
            .collect();
        let mut by_digest = HashTable::with_capacity(records.len());
        for (i, r) in records.iter().enumerate() {
            let i = u32::try_from(i).expect("fewer than 2^32 key values");
            by_digest.insert_unique(digest_hash(&r.digest), i, |&j| {
                digest_hash(&records[j as usize].digest)
            });
        }
        let links =
            std::iter::repeat_with(|| AtomicU32::new(UNLINKED)).take(records.len()).collect();
        let mut more_links: HashMap<u32, Box<[AtomicU32]>, _> = HashMap::default();
        for (i, r) in records.iter().enumerate() {
            let plans = plan_sets.get(r.plans as usize).map_or(0, |s| s.plan_ids.len());
            if plans > 1 {
                let i = u32::try_from(i).expect("fewer than 2^32 key values");
                let rest = std::iter::repeat_with(|| AtomicU32::new(UNLINKED)).take(plans - 1);
                more_links.insert(i, rest.collect());
            }
        }
        meter.set_grants(&snapshot.grants);
        let plans = snapshot.plans.into_iter().map(|p| (p.id.clone(), p)).collect();
        Self {
            plans,
            checks_values: !snapshot.lookalikes,
            old_values: records.iter().any(|r| r.old),
            version: snapshot.version,
            stage_numbers,
            stages,
            records,
            ids,
            by_digest,
            plan_sets,
            links,
            more_links,
            meter: Arc::clone(meter),
            api_stages,
        }
    }

    /// The key check of a private route (the refusal says why, for the access log; the answer
    /// is the same 403 whatever the reason, as on AWS): the presented `x-api-key` value is
    /// known, enabled, not expired and one of its usage plans grants `api_stage`. One SHA-256
    /// and one hash probe; no store access, no allocation. A value of the self-checking form
    /// with a wrong checksum (a typo, a guess) is refused before either.
    pub fn authorize(
        &self,
        presented: &[u8],
        api_stage: u32,
        now_unix_secs: i64,
    ) -> Result<Authorized<'_>, Denied<'_>> {
        if presented.is_empty() {
            return Err(Denied::Unknown);
        }
        if self.checks_values && keygate_types::key::fails_checksum(presented) {
            return Err(Denied::BadChecksum);
        }
        let digest = KeyDigest::of(presented);
        let &index = self
            .by_digest
            .find(digest_hash(&digest), |&i| self.records[i as usize].digest == digest)
            .ok_or(Denied::Unknown)?;
        let r = &self.records[index as usize];
        if !r.enabled {
            return Err(Denied::Disabled(self.key_id(index)));
        }
        if now_unix_secs >= r.expires {
            return Err(Denied::Expired(self.key_id(index)));
        }
        let grant = self.plan_sets[r.plans as usize]
            .grants
            .iter()
            .find(|g| g.api_stage == api_stage)
            .ok_or_else(|| Denied::NotInPlan(self.key_id(index)))?;
        Ok(Authorized { table: self, index, grant })
    }

    /// The stage named `name` and its number (for [`Table::stage_at`]).
    pub fn stage(&self, name: &str) -> Option<(u32, &StageTable)> {
        let &at = self.stage_numbers.get(name)?;
        Some((at, &self.stages[at as usize]))
    }

    /// The stage numbered `at` by [`Table::stage`].
    ///
    /// # Panics
    /// When `at` is not a number this table gave.
    pub fn stage_at(&self, at: u32) -> &StageTable {
        &self.stages[at as usize]
    }

    /// The id of the key value at `index` (as [`Authorized::index`] gave it).
    pub(crate) fn key_id_at(&self, index: u32) -> &str {
        self.key_id(index)
    }

    /// The table's number for an API stage (what [`Table::authorize`] takes), if any route or
    /// plan names it.
    pub fn api_stage(&self, api_id: &str, stage: &str) -> Option<u32> {
        self.api_stages.get(&(api_id.to_owned(), stage.to_owned())).copied()
    }

    /// Whether any value a rotation replaced is accepted (counted when the table was built).
    pub fn has_old_values(&self) -> bool {
        self.old_values
    }

    /// Number of accepted key values.
    pub fn key_count(&self) -> usize {
        self.records.len()
    }

    fn key_id(&self, index: u32) -> &str {
        let r = &self.records[index as usize];
        // Records index `ids` as they were built by the store.
        keygate_types::keyset::KeySet::id_in(&self.ids, r)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::path::PathBuf;

    use keygate_types::keyset::KeySet;
    use keygate_types::model::{ApiStage, DeployedStage, UsagePlan};
    use keygate_types::{FunctionSpec, HttpMethod, Integration};

    use super::*;
    use crate::router::Lookup;

    pub(crate) fn definition(service: &str, stage: &str, paths: &[&str]) -> ServiceDefinition {
        ServiceDefinition {
            service: service.into(),
            stage: stage.into(),
            region: "us-east-1".into(),
            base_dir: PathBuf::from("/tmp"),
            functions: vec![FunctionSpec {
                name: "f".into(),
                function_name: format!("{service}-{stage}-f"),
                handler: "h".into(),
                runtime: keygate_types::Runtime::provided_al2023(),
                environment: Default::default(),
                timeout_secs: 6,
                memory_size: 1024,
                description: None,
                reserved_concurrency: None,
                max_concurrency: None,
                artifact: None,
                package_patterns: vec![],
                events: paths
                    .iter()
                    .map(|p| HttpEvent {
                        path: (*p).into(),
                        method: HttpMethod::Get,
                        private: true,
                        report: false,
                        cors: None,
                        integration: Integration::Mock,
                        authorizer: None,
                    })
                    .collect(),
                streams: vec![],
            }],
            api_keys: vec![],
            usage_plans: vec![],
            tables: vec![],
            api_key_source: Default::default(),
            key_introspection: None,
        }
    }

    fn deployed(api: &str, stage: &str, paths: &[&str]) -> DeployedStage {
        DeployedStage {
            api_id: api.into(),
            stage: stage.into(),
            deployment_id: format!("d-{api}"),
            definition: definition(api, stage, paths),
            enforcement: None,
        }
    }

    fn plan(id: &str, api: &str, stage: &str) -> UsagePlan {
        UsagePlan {
            id: id.into(),
            name: id.into(),
            description: None,
            throttle: None,
            quota: None,
            api_stages: vec![ApiStage {
                api_id: api.into(),
                stage: stage.into(),
                throttle: Default::default(),
            }],
            fallback: None,
        }
    }

    /// Two APIs deployed to the stage `dev`; keys: `live` in plan p1 (api-a/dev), `off`
    /// (disabled), `ends` (expires at 1000), `loner` (no plan), and an old value of `live`
    /// kept by a rotation until 500.
    fn table() -> Table {
        let mut keys = KeySet::with_capacity(8, 64);
        keys.push("live", KeyDigest::of(b"live-value"), true, None, &["p1"]);
        keys.push("off", KeyDigest::of(b"off-value"), false, None, &["p1"]);
        keys.push("ends", KeyDigest::of(b"ends-value"), true, Some(1000), &["p1"]);
        keys.push("loner", KeyDigest::of(b"loner-value"), true, None, &[]);
        let live = keys.records()[0];
        keys.push_alias(&live, KeyDigest::of(b"old-live-value"), Some(500));
        build(keys, false)
    }

    /// The table of [`table`]'s stages and plan with `keys`.
    fn build(keys: KeySet, lookalikes: bool) -> Table {
        let snapshot = GatewaySnapshot {
            version: 7,
            stages: vec![
                deployed("api-a", "dev", &["/shared", "/a-only"]),
                deployed("api-b", "dev", &["/shared", "/b-only"]),
            ],
            keys,
            plans: vec![plan("p1", "api-a", "dev")],
            grants: vec![],
            lookalikes,
        };
        let clock = Arc::new(keygate_limits::clock::SystemClock);
        Table::build(
            snapshot,
            &Arc::new(Meter::new(clock)),
            &crate::metrics::Metrics::unregistered(),
            &crate::authorizer::Caches::default(),
        )
    }

    #[test]
    fn authorize_says_why_a_value_is_refused() {
        let t = table();
        let a = t.api_stage("api-a", "dev").unwrap();
        let b = t.api_stage("api-b", "dev").unwrap();
        assert_ne!(a, b);
        let ok = t.authorize(b"live-value", a, 100).unwrap();
        assert_eq!((ok.key_id(), &*ok.grant.plan_id), ("live", "p1"));
        assert_eq!(t.authorize(b"", a, 100).unwrap_err(), Denied::Unknown);
        assert_eq!(t.authorize(b"nobody", a, 100).unwrap_err(), Denied::Unknown);
        assert_eq!(t.authorize(b"off-value", a, 100).unwrap_err(), Denied::Disabled("off"));
        assert_eq!(t.authorize(b"loner-value", a, 100).unwrap_err(), Denied::NotInPlan("loner"));
        // Plan p1 covers api-a/dev only: the same stage name of another API is not granted.
        assert_eq!(t.authorize(b"live-value", b, 100).unwrap_err(), Denied::NotInPlan("live"));
        let reasons: Vec<&str> = [Denied::Unknown, Denied::Disabled("x"), Denied::Expired("x")]
            .iter()
            .map(|d| d.reason())
            .collect();
        assert_eq!(reasons, ["unknown_key", "disabled_key", "expired_key"]);
        assert_eq!(Denied::Unknown.key_id(), None);
    }

    /// A generated value with one character wrong is refused by its checksum, before the
    /// lookup ([`Denied::BadChecksum`] comes from nowhere else); other forms are looked up. While
    /// the store may hold a value of the self-checking form that is not self-checking, every
    /// value is looked up, and that one works.
    #[test]
    fn self_checking_values_with_a_bad_checksum_are_refused_before_the_lookup() {
        use keygate_types::ApiKeyValue;
        let generated = ApiKeyValue::generate();
        let value = generated.expose().as_bytes().to_vec();
        let mut typo = value.clone();
        typo[20] = if typo[20] == b'x' { b'y' } else { b'x' };
        let lookalike = format!("kgk1{}", "A".repeat(36)).into_bytes();
        let aws = b"Sd8fJk2lQp4ZxY7uN0vB1mC3rT5wE9aH6gL8kJ2d";
        let keyset = |with_lookalike: bool| {
            let mut keys = KeySet::with_capacity(3, 32);
            keys.push("gen", generated.digest(), true, None, &["p1"]);
            keys.push("aws", KeyDigest::of(aws), true, None, &["p1"]);
            if with_lookalike {
                keys.push("look", KeyDigest::of(&lookalike), true, None, &["p1"]);
            }
            keys
        };

        let t = build(keyset(false), false);
        let a = t.api_stage("api-a", "dev").unwrap();
        assert_eq!(t.authorize(&value, a, 1).unwrap().key_id(), "gen");
        assert_eq!(t.authorize(&typo, a, 1).unwrap_err(), Denied::BadChecksum);
        assert_eq!(t.authorize(&lookalike, a, 1).unwrap_err(), Denied::BadChecksum);
        assert_eq!(t.authorize(aws, a, 1).unwrap().key_id(), "aws", "imported values work");
        assert_eq!(t.authorize(&aws[..39], a, 1).unwrap_err(), Denied::Unknown);
        assert_eq!(
            (Denied::BadChecksum.reason(), Denied::BadChecksum.key_id()),
            ("bad_checksum", None)
        );

        let t = build(keyset(true), true);
        let a = t.api_stage("api-a", "dev").unwrap();
        assert_eq!(t.authorize(&lookalike, a, 1).unwrap().key_id(), "look");
        assert_eq!(t.authorize(&typo, a, 1).unwrap_err(), Denied::Unknown, "looked up");
        assert_eq!(t.authorize(&value, a, 1).unwrap().key_id(), "gen");
    }

    /// A key expiring at second 1000 works through second 999 and is refused from 1000 on; a
    /// rotated-out value is the same key until its own end.
    #[test]
    fn expiry_is_exclusive_at_its_second() {
        let t = table();
        let a = t.api_stage("api-a", "dev").unwrap();
        assert_eq!(t.authorize(b"ends-value", a, 999).unwrap().key_id(), "ends");
        assert_eq!(t.authorize(b"ends-value", a, 1000).unwrap_err(), Denied::Expired("ends"));
        assert_eq!(t.authorize(b"ends-value", a, 1001).unwrap_err(), Denied::Expired("ends"));
        assert_eq!(t.authorize(b"old-live-value", a, 499).unwrap().key_id(), "live");
        let old = t.authorize(b"old-live-value", a, 500).unwrap_err();
        assert_eq!(old, Denied::Expired("live"));
        assert_eq!(t.authorize(b"live-value", a, i64::MAX - 1).unwrap().key_id(), "live");
        assert_eq!(t.key_count(), 5);
    }

    /// Two APIs on one stage name: a route both declare is served by the first deployed, each
    /// API's other routes by their own, and each route keeps its own API stage for the key check.
    #[test]
    fn two_apis_with_the_same_route_on_one_stage() {
        let t = table();
        let (_, dev) = t.stage("dev").unwrap();
        let route = |path: &str| match dev.router.lookup(path, "GET") {
            Lookup::Found(m) => &dev.routes[m.route],
            other => panic!("{path}: {other:?}"),
        };
        assert_eq!(route("/shared").api_id, "api-a", "the first deployment keeps the route");
        assert_eq!(route("/a-only").api_id, "api-a");
        assert_eq!(route("/b-only").api_id, "api-b");
        assert_eq!(route("/b-only").api_stage, t.api_stage("api-b", "dev").unwrap());
        assert_eq!(dev.routes.len(), 3, "the clashing route is not added twice");
        assert!(t.stage("prod").is_none());
        assert_eq!(t.version, 7);
    }
}
