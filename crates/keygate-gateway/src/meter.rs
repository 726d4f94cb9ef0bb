//! Usage-plan enforcement on the hot path: throttles and quotas per (key, plan), in memory.
//!
//! Order, as API Gateway applies it: the throttle (the method throttle of the plan's API stage
//! when one is set for the method, which overrides the plan throttle for that method only; else
//! the plan throttle), then the quota. A request is admitted only if both allow it, and only
//! then does it consume anything: refused requests cost nothing, so a client retrying while
//! refused is not locked out longer.
//!
//! The state of each (key, plan) lives in a [`KeyPlan`] that outlives table rebuilds (the
//! registry in [`Meter`]), so a plan change keeps the tokens and usage counted so far. Admitted
//! requests are also recorded per UTC day as *pending* usage, which [`Meter::flush`] moves to
//! the store in the background (at most a second behind) and once more on shutdown.
//!
//! One short `std::sync::Mutex` per (key, plan) guards its buckets and counters: uncontended
//! unless one key is used from many connections at once, never held across an `.await`.
//!
//! A gateway with many keys in use holds one [`KeyPlan`] per (key, plan) used, so its layout is
//! kept small: ids shared (`Arc<str>`, one allocation per key, one per plan), the registry a
//! table of pointers, and per-day counts and grants in short vectors (one day, mostly) rather
//! than maps whose first entry costs a node of a dozen.

use std::collections::{HashMap, HashSet};
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use keygate_limits::bucket::{BucketLimits, Decision, TokenBucket};
use keygate_limits::calendar::{Date, QuotaWindow};
use keygate_limits::clock::{Clock, Nanos};
use keygate_limits::headers::{BurstInfo, QuotaInfo};
use keygate_limits::quota::{QuotaDecision, check_quota};
use keygate_store::ConfigStore;
use keygate_types::model::DailyUsage;
use keygate_types::plan::Quota;

/// The limits that apply to one key on one API stage through one plan.
#[derive(Debug, Clone, Default)]
pub struct StageLimits {
    pub throttle: Option<BucketLimits>,
    pub quota: Option<Quota>,
    /// The plan's method throttles that can apply to each route of the stage (by the route's
    /// index in its stage table), most specific first: resolved when the table is built, so a
    /// request only scans a few entries (see [`StageLimits::method_throttle`]).
    pub routes: Vec<Box<[MethodThrottle]>>,
    /// The plan's policy while a shared limiter does not answer (`None`: the node's).
    pub fallback: Option<keygate_types::plan::Fallback>,
}

/// One method throttle of a plan's API stage, as it applies to a route.
#[derive(Debug, Clone)]
pub struct MethodThrottle {
    /// The plan's key for it (`/candidates/GET`, `/candidates/ANY`, `/*/*`): the name of its
    /// bucket among the key's counters.
    pub key: Arc<str>,
    /// The method part of the key, upper case: a method, `ANY` or `*`.
    pub method: Box<str>,
    pub limits: BucketLimits,
}

impl StageLimits {
    /// The method throttle of a request with `method` on the route at `route`, if any: the
    /// route's path with that method, else with `ANY`, else with `*`, then the same for the
    /// path `/*` (entries are stored in that order).
    pub fn method_throttle(&self, route: usize, method: &str) -> Option<&MethodThrottle> {
        self.routes.get(route)?.iter().find(|m| {
            &*m.method == "ANY" || &*m.method == "*" || m.method.eq_ignore_ascii_case(method)
        })
    }

    /// Orders and keeps the entries of `throttles` (`(key, limits)` as the plan has them) that
    /// apply to a route with path `path`: see [`StageLimits::method_throttle`].
    pub fn throttles_for(
        path: &str,
        throttles: &[(Arc<str>, BucketLimits)],
    ) -> Box<[MethodThrottle]> {
        let mut found: Vec<(u8, MethodThrottle)> = throttles
            .iter()
            .filter_map(|(key, limits)| {
                let (p, method) = key.rsplit_once('/')?;
                let p = if p.is_empty() { "/" } else { p };
                let path_rank = if p == path {
                    0
                } else if p == "/*" {
                    3
                } else {
                    return None;
                };
                let method_rank = match method {
                    "ANY" => 1,
                    "*" => 2,
                    _ => 0,
                };
                let entry = MethodThrottle {
                    key: Arc::clone(key),
                    method: method.to_ascii_uppercase().into_boxed_str(),
                    limits: *limits,
                };
                Some((path_rank + method_rank, entry))
            })
            .collect();
        found.sort_by_key(|(rank, _)| *rank);
        found.into_iter().map(|(_, m)| m).collect()
    }
}

/// What the meter decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// Admitted; the values of the `RateLimit-Policy` and `RateLimit` headers, if any limit
    /// applies.
    Allowed { headers: Option<RateLimitValues> },
    /// Over a throttle (429 Too Many Requests); `Retry-After` seconds, if waiting helps.
    Throttled { retry_after: Option<u64> },
    /// Over the quota (429 Limit Exceeded); seconds until the period ends.
    QuotaExceeded { retry_after: u64 },
}

/// The `RateLimit-Policy` and `RateLimit` values of one admitted request, built in one buffer
/// (one allocation per request instead of one per part and header).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitValues {
    buf: String,
    /// Where `RateLimit` starts in `buf`.
    split: usize,
}

impl RateLimitValues {
    pub(crate) fn new(burst: Option<&BurstInfo>, quota: Option<&QuotaInfo>) -> Option<Self> {
        let mut buf = String::with_capacity(96);
        if !keygate_limits::headers::write_ratelimit_policy(&mut buf, burst, quota) {
            return None;
        }
        let split = buf.len();
        keygate_limits::headers::write_ratelimit(&mut buf, burst, quota);
        Some(Self { buf, split })
    }

    /// The `RateLimit-Policy` value.
    pub fn policy(&self) -> &str {
        &self.buf[..self.split]
    }

    /// The `RateLimit` value.
    pub fn ratelimit(&self) -> &str {
        &self.buf[self.split..]
    }

    /// Both values as one shared buffer, split without copying: (`RateLimit-Policy`,
    /// `RateLimit`).
    pub fn into_bytes(self) -> (bytes::Bytes, bytes::Bytes) {
        let mut all = bytes::Bytes::from(self.buf);
        let policy = all.split_to(self.split);
        (policy, all)
    }
}

/// Requests by UTC day, ordered by day: a short vector (one day, mostly), allocated for one
/// entry at first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct DayCounts(Vec<(Date, u64)>);

impl DayCounts {
    fn add(&mut self, day: Date, n: u64) {
        match self.0.binary_search_by_key(&day, |&(d, _)| d) {
            Ok(i) => self.0[i].1 += n,
            Err(i) => {
                if self.0.capacity() == 0 {
                    self.0.reserve_exact(1);
                }
                self.0.insert(i, (day, n));
            }
        }
    }

    /// The requests of `start` and the days after it.
    fn since(&self, start: Date) -> u64 {
        let from = self.0.partition_point(|&(d, _)| d < start);
        self.0[from..].iter().map(|&(_, n)| n).sum()
    }

    #[cfg(test)]
    fn total(&self) -> u64 {
        self.0.iter().map(|&(_, n)| n).sum()
    }

    fn iter(&self) -> impl Iterator<Item = (Date, u64)> + '_ {
        self.0.iter().copied()
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[derive(Debug, Default)]
struct Counters {
    bucket: Option<TokenBucket>,
    /// Method throttles' buckets, by the throttle's key (shared with the table's limits).
    methods: Vec<(Arc<str>, TokenBucket)>,
    /// The quota period `used` counts in.
    window: Option<QuotaWindow>,
    used: u64,
    /// Usage grants by period start day (AWS update-usage).
    grants: Grants,
    /// Admitted requests not yet written to the store, by UTC day.
    pending: DayCounts,
    /// Usage already in the store for recent days, used to seed `used` when a period opens.
    stored: DayCounts,
    /// Unix seconds of the last admitted request not yet written to the store.
    last_used: Option<i64>,
    /// Whether this is in the meter's list of counters to flush.
    queued: bool,
    /// Admissions a shared limiter granted ahead of requests (none with the in-process one).
    lease: Option<Box<Lease>>,
}

/// Admissions a shared limiter ([`crate::limiter::redis`]) granted this node ahead of its
/// requests: `units` more requests of one bucket and quota period, usable until `until`.
#[derive(Debug, Clone, Default)]
pub struct Lease {
    /// The bucket the units were taken from: a method throttle's key, or `None` for the plan
    /// throttle (or none).
    pub bucket: Option<Arc<str>>,
    /// The quota period's start (unix ms) the units count in, if the plan has a quota.
    pub period: Option<i64>,
    /// Requests left in the lease.
    pub units: u32,
    /// Monotonic ns after which the lease is void.
    pub until: u64,
    /// The shared bucket's refill time when the lease was granted (for `RateLimit`).
    pub refill: Duration,
    /// The shared quota's remaining count when the lease was granted (for `RateLimit`).
    pub quota_remaining: u64,
}

/// The counters of one key in one plan.
#[derive(Debug)]
pub struct KeyPlan {
    pub key_id: Arc<str>,
    pub plan_id: Arc<str>,
    counters: Mutex<Counters>,
    /// The meter's list of counters with usage to write, which this joins on its first admitted
    /// request after a flush.
    dirty: Arc<Mutex<Vec<Arc<KeyPlan>>>>,
}

impl KeyPlan {
    fn lock(&self) -> std::sync::MutexGuard<'_, Counters> {
        self.counters.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Decides one request at `now` under `limits` and the request's method throttle, if any,
    /// and, if admitted, counts it.
    pub fn admit(
        self: &Arc<Self>,
        limits: &StageLimits,
        method_throttle: Option<&MethodThrottle>,
        mono: Nanos,
        unix_ms: i64,
    ) -> Admission {
        let mut c = self.lock();
        // Check everything on copies first; commit only when all allow.
        let mut method = method_throttle.map(|m| {
            let mut b = c
                .methods
                .iter()
                .find(|(k, _)| **k == *m.key)
                .map_or_else(|| TokenBucket::new(m.limits), |(_, b)| b.clone());
            b.update_limits(m.limits);
            b
        });
        if let Some(b) = method.as_mut()
            && let Decision::Limited { retry_after } = b.try_acquire(mono)
        {
            return Admission::Throttled { retry_after: retry_secs(retry_after) };
        }
        // A method throttle overrides the plan throttle for its method.
        let mut plan = if method.is_some() {
            None
        } else {
            limits.throttle.map(|l| {
                let mut b = c.bucket.clone().unwrap_or_else(|| TokenBucket::new(l));
                b.update_limits(l);
                b
            })
        };
        let mut burst = None;
        if let Some(b) = method.as_ref() {
            burst = Some(BurstInfo::new(&b.limits(), &b.state(mono)));
        }
        if let Some(b) = plan.as_mut() {
            match b.try_acquire(mono) {
                Decision::Limited { retry_after } => {
                    return Admission::Throttled { retry_after: retry_secs(retry_after) };
                }
                Decision::Allowed { .. } => {
                    burst = Some(BurstInfo::new(&b.limits(), &b.state(mono)))
                }
            }
        }
        let mut quota_info = None;
        if let Some(q) = &limits.quota {
            let window = QuotaWindow::for_quota(unix_ms, q);
            if c.window != Some(window) {
                // A new period (or the first request): count what the store and this process
                // already recorded for its days.
                let start = window.start_date();
                let seeded = c.stored.since(start) + c.pending.since(start);
                c.window = Some(window);
                c.used = seeded;
            }
            let extra = grant_of(&c.grants, window.start_date());
            match check_quota(q, c.used, extra, unix_ms) {
                QuotaDecision::Exceeded { retry_after_secs } => {
                    return Admission::QuotaExceeded { retry_after: retry_after_secs };
                }
                QuotaDecision::Allowed { remaining } => {
                    // The policy is the configured limit; a grant shows in `remaining`.
                    quota_info = Some(QuotaInfo::new(q.limit, remaining, &window, unix_ms));
                }
            }
        }
        // Admitted: commit.
        if let (Some(b), Some(m)) = (method, method_throttle) {
            match c.methods.iter_mut().find(|(k, _)| **k == *m.key) {
                Some((_, slot)) => *slot = b,
                None => c.methods.push((Arc::clone(&m.key), b)),
            }
        }
        if let Some(b) = plan {
            c.bucket = Some(b);
        }
        self.count(&mut c, unix_ms);
        Admission::Allowed { headers: RateLimitValues::new(burst.as_ref(), quota_info.as_ref()) }
    }

    /// Counts one request another limiter admitted at `unix_ms`: in the usage written to the
    /// store and in this process's own quota count.
    pub fn record_admitted(self: &Arc<Self>, unix_ms: i64) {
        let mut c = self.lock();
        self.count(&mut c, unix_ms);
    }

    fn count(self: &Arc<Self>, c: &mut Counters, unix_ms: i64) {
        c.used += 1;
        c.pending.add(Date::from_unix_ms(unix_ms), 1);
        c.last_used = Some(unix_ms.div_euclid(1000));
        if !c.queued {
            c.queued = true;
            locked(&self.dirty).push(Arc::clone(self));
        }
    }

    /// The requests of `window` this process knows of (stored before it started, then counted
    /// by it): where a shared counter that lost its value starts again.
    pub fn known_usage(&self, window: &QuotaWindow) -> u64 {
        let c = self.lock();
        let start = window.start_date();
        if c.window == Some(*window) {
            return c.used;
        }
        c.stored.since(start) + c.pending.since(start)
    }

    /// One request from the key's lease, when it is usable for `bucket` and quota `period` at
    /// `mono`: counted as admitted at `unix_ms`, with what the lease held when granted (refill,
    /// quota remaining) and the units left. Otherwise the lease is dropped and `Err` has the
    /// quota units it still held for `period` (to give back). One lock either way.
    pub fn take_from_lease(
        self: &Arc<Self>,
        bucket: Option<&Arc<str>>,
        period: Option<i64>,
        mono: u64,
        unix_ms: i64,
    ) -> Result<(Duration, u64, u32), u64> {
        let mut c = self.lock();
        let usable = c.lease.as_deref().is_some_and(|l| {
            l.units > 0 && mono < l.until && l.bucket.as_ref() == bucket && l.period == period
        });
        if !usable {
            return Err(match c.lease.take() {
                Some(old) if old.period.is_some() && old.period == period => u64::from(old.units),
                _ => 0,
            });
        }
        let Some(lease) = c.lease.as_deref_mut() else { return Err(0) };
        lease.units -= 1;
        let held = (lease.refill, lease.quota_remaining, lease.units);
        self.count(&mut c, unix_ms);
        Ok(held)
    }

    /// Runs `f` on the key's lease slot, under the counters' lock (keep `f` short).
    pub fn with_lease<R>(&self, f: impl FnOnce(&mut Option<Box<Lease>>) -> R) -> R {
        f(&mut self.lock().lease)
    }

    /// The usage grant (`extra`) of the period starting `start`, 0 without one.
    pub fn grant(&self, start: Date) -> i64 {
        grant_of(&self.lock().grants, start)
    }
}

fn grant_of(grants: &[(Date, i64)], start: Date) -> i64 {
    grants.iter().find(|(d, _)| *d == start).map_or(0, |&(_, extra)| extra)
}

fn retry_secs(d: Duration) -> Option<u64> {
    (d != keygate_limits::bucket::NEVER).then(|| keygate_limits::headers::retry_after_secs(d))
}

/// The registry of (key, plan) counters and the clock they run on.
///
/// Counters exist only for keys that were used: a gateway with a million keys holds counters for
/// the few thousand in use, and [`Meter::flush`] walks only those. A new counter starts from the
/// usage stored before this process started ([`Meter::load_recent`]) and the usage grants of the
/// last snapshot; after that, every admitted request of the pair goes through it.
pub struct Meter {
    clock: Arc<dyn Clock>,
    states: Mutex<Registry>,
    /// Counters with usage not yet written: the flush visits only these.
    dirty: Arc<Mutex<Vec<Arc<KeyPlan>>>>,
    /// Stored usage of recent days by (key, plan), for counters not created yet.
    recent: Mutex<PairMap<DayCounts>>,
    /// Usage grants by (key, plan) and period start, from the last snapshot.
    grants: Mutex<PairMap<Grants>>,
}

/// Usage grants (extra quota) by period start day.
type Grants = Vec<(Date, i64)>;

/// Values by key id, then plan id: looked up with borrowed ids, no allocation.
type PairMap<T> = HashMap<String, HashMap<String, T>>;

/// Every [`KeyPlan`], found by its (key, plan) ids, which it holds itself (the table holds
/// pointers only), and the plan ids they share.
#[derive(Default)]
struct Registry {
    counters: hashbrown::HashTable<Arc<KeyPlan>>,
    hasher: foldhash::fast::RandomState,
    plan_ids: HashSet<Arc<str>>,
}

impl Registry {
    fn get(&self, key_id: &str, plan_id: &str) -> Option<&Arc<KeyPlan>> {
        self.counters.find(self.hasher.hash_one((key_id, plan_id)), |kp| {
            *kp.key_id == *key_id && *kp.plan_id == *plan_id
        })
    }

    /// Adds `kp`, whose pair is not in yet.
    fn insert(&mut self, kp: Arc<KeyPlan>) {
        let Self { counters, hasher, .. } = self;
        let hash = |kp: &Arc<KeyPlan>| hasher.hash_one((&*kp.key_id, &*kp.plan_id));
        counters.insert_unique(hash(&kp), kp, hash);
    }

    fn iter(&self) -> impl Iterator<Item = &Arc<KeyPlan>> {
        self.counters.iter()
    }
}

impl std::fmt::Debug for Meter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Meter").finish_non_exhaustive()
    }
}

/// Counters one store write of a flush takes at most.
pub(crate) const FLUSH_CHUNK: usize = 4096;

/// How far back stored usage is loaded to seed quota periods (the longest period is a month).
const SEED_DAYS: i64 = 32;

fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Meter {
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self {
            clock,
            states: Mutex::new(Registry::default()),
            dirty: Arc::new(Mutex::new(Vec::new())),
            recent: Mutex::new(HashMap::new()),
            grants: Mutex::new(HashMap::new()),
        }
    }

    pub fn clock(&self) -> &dyn Clock {
        &*self.clock
    }

    fn registry(&self) -> std::sync::MutexGuard<'_, Registry> {
        locked(&self.states)
    }

    /// The counters of `key_id` in `plan_id`, created on first use (seeded from the stored usage
    /// and the grants known), and whether they were just created.
    pub fn get_or_create(&self, key_id: &str, plan_id: &str) -> (Arc<KeyPlan>, bool) {
        let mut reg = self.registry();
        if let Some(kp) = reg.get(key_id, plan_id) {
            return (Arc::clone(kp), false);
        }
        let stored = locked(&self.recent)
            .get_mut(key_id)
            .and_then(|plans| plans.remove(plan_id))
            .unwrap_or_default();
        let grants = locked(&self.grants)
            .get(key_id)
            .and_then(|plans| plans.get(plan_id))
            .cloned()
            .unwrap_or_default();
        let plan_id = match reg.plan_ids.get(plan_id) {
            Some(shared) => Arc::clone(shared),
            None => {
                let shared: Arc<str> = Arc::from(plan_id);
                reg.plan_ids.insert(Arc::clone(&shared));
                shared
            }
        };
        let kp = Arc::new(KeyPlan {
            key_id: Arc::from(key_id),
            plan_id,
            counters: Mutex::new(Counters { stored, grants, ..Counters::default() }),
            dirty: Arc::clone(&self.dirty),
        });
        reg.insert(Arc::clone(&kp));
        (kp, true)
    }

    /// Loads the usage stored for the last [`SEED_DAYS`] days in the plans that have a quota
    /// (usage only matters to a quota), so counters created later continue each quota where it
    /// was. Call once before serving: afterwards every request this process admits is counted by
    /// the counters themselves.
    ///
    /// # Errors
    /// The store's error.
    pub async fn load_recent(
        &self,
        store: &dyn ConfigStore,
        quota_plans: &[&str],
    ) -> Result<(), keygate_store::Error> {
        let today = Date::from_unix_ms(self.clock.now_unix_ms());
        let (from, to) = (today.add_days(-SEED_DAYS), today);
        let mut recent: PairMap<DayCounts> = HashMap::new();
        for plan in quota_plans {
            for r in store.usage(Some(plan), None, from, to).await? {
                recent
                    .entry(r.key_id)
                    .or_default()
                    .entry(r.plan_id)
                    .or_default()
                    .add(r.day, r.used);
            }
        }
        let reg = self.registry();
        recent.retain(|key, plans| {
            plans.retain(|plan, _| reg.get(key, plan).is_none());
            !plans.is_empty()
        });
        *locked(&self.recent) = recent;
        Ok(())
    }

    /// Replaces every counter's usage grants (from a new snapshot).
    pub fn set_grants(&self, grants: &[keygate_types::model::UsageGrant]) {
        let mut by_pair: PairMap<Grants> = HashMap::new();
        for g in grants {
            let periods =
                by_pair.entry(g.key_id.clone()).or_default().entry(g.plan_id.clone()).or_default();
            match periods.iter_mut().find(|(d, _)| *d == g.period_start) {
                Some((_, extra)) => *extra = g.extra,
                None => periods.push((g.period_start, g.extra)),
            }
        }
        let reg = self.registry();
        for kp in reg.iter() {
            let periods = by_pair.get(&*kp.key_id).and_then(|plans| plans.get(&*kp.plan_id));
            kp.lock().grants = periods.cloned().unwrap_or_default();
        }
        *locked(&self.grants) = by_pair;
    }

    /// Writes pending usage to the store, [`FLUSH_CHUNK`] counters per write (the serving
    /// threads run between chunks, instead of waiting for one big batch to be built). On failure
    /// the usage stays pending for the next try: nothing counted is lost while the process lives.
    ///
    /// # Errors
    /// The store's error.
    pub async fn flush(&self, store: &dyn ConfigStore) -> Result<usize, keygate_store::Error> {
        let states: Vec<Arc<KeyPlan>> = std::mem::take(&mut *locked(&self.dirty));
        let mut written = 0;
        for (i, chunk) in states.chunks(FLUSH_CHUNK).enumerate() {
            if let Err(e) = self.flush_chunk(store, chunk, &mut written).await {
                // The chunks not taken yet keep their usage and their place in the list.
                locked(&self.dirty).extend(states.iter().skip((i + 1) * FLUSH_CHUNK).cloned());
                return Err(e);
            }
        }
        Ok(written)
    }

    async fn flush_chunk(
        &self,
        store: &dyn ConfigStore,
        states: &[Arc<KeyPlan>],
        written: &mut usize,
    ) -> Result<(), keygate_store::Error> {
        let mut batch = Vec::new();
        let mut taken = Vec::new();
        for kp in states {
            let (pending, last_used) = {
                let mut c = kp.lock();
                c.queued = false;
                (std::mem::take(&mut c.pending), c.last_used.take())
            };
            // The last use goes with the row of its own day: lastUsedDate is the latest of them.
            let last_day = last_used.map(|at| Date::from_unix_ms(at.saturating_mul(1000)));
            for (day, used) in pending.iter() {
                batch.push(DailyUsage {
                    plan_id: kp.plan_id.to_string(),
                    key_id: kp.key_id.to_string(),
                    day,
                    used,
                    last_used: last_used.filter(|_| last_day == Some(day)),
                });
            }
            if !pending.is_empty() {
                taken.push((Arc::clone(kp), pending, last_used));
            }
        }
        if batch.is_empty() {
            return Ok(());
        }
        match store.add_usage(&batch).await {
            Ok(()) => {
                for (kp, pending, _) in taken {
                    let mut c = kp.lock();
                    for (day, used) in pending.iter() {
                        c.stored.add(day, used);
                    }
                }
                *written += batch.len();
                Ok(())
            }
            Err(e) => {
                for (kp, pending, last_used) in taken {
                    let mut c = kp.lock();
                    for (day, used) in pending.iter() {
                        c.pending.add(day, used);
                    }
                    c.last_used = c.last_used.max(last_used);
                    if !c.queued {
                        c.queued = true;
                        locked(&self.dirty).push(Arc::clone(&kp));
                    }
                }
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use keygate_limits::clock::ManualClock;
    use keygate_types::plan::{QuotaPeriod, Throttle};

    use super::*;

    fn limits(
        throttle: Option<(f64, u32)>,
        quota: Option<u64>,
        methods: &[(&str, f64, u32)],
    ) -> StageLimits {
        StageLimits {
            throttle: throttle.map(|(r, b)| {
                BucketLimits::from_throttle(&Throttle { rate_limit: r, burst_limit: b })
            }),
            quota: quota.map(|limit| Quota { limit, period: QuotaPeriod::Day, offset: 0 }),
            // One route, at index 0, whose path is `/a`.
            routes: vec![StageLimits::throttles_for(
                "/a",
                &methods
                    .iter()
                    .map(|(k, r, b)| {
                        let t = Throttle { rate_limit: *r, burst_limit: *b };
                        (Arc::from(*k), BucketLimits::from_throttle(&t))
                    })
                    .collect::<Vec<_>>(),
            )],
            fallback: None,
        }
    }

    fn allowed(a: &Admission) -> bool {
        matches!(a, Admission::Allowed { .. })
    }

    // 2026-11-28T23:59:59Z
    const NEAR_MIDNIGHT_MS: i64 = 1_795_910_399_000;

    #[test]
    fn quota_is_exact_refusals_are_free_and_periods_roll_over() {
        let clock = ManualClock::starting_at(Nanos(1_000_000_000), NEAR_MIDNIGHT_MS);
        let meter = Meter::new(Arc::new(ManualClock::new()));
        let (kp, fresh) = meter.get_or_create("k", "p");
        assert!(fresh);
        let l = limits(None, Some(3), &[]);
        let admit = || kp.admit(&l, None, clock.now_mono(), clock.now_unix_ms());
        assert!((0..3).all(|_| allowed(&admit())));
        for _ in 0..10 {
            assert_eq!(admit(), Admission::QuotaExceeded { retry_after: 1 });
        }
        // Midnight UTC: a new period.
        clock.advance(Duration::from_secs(1));
        assert!(allowed(&admit()));
        let pending = kp.lock().pending.clone();
        assert_eq!(pending.total(), 4, "only admitted requests count: {pending:?}");
    }

    #[test]
    fn a_new_bucket_is_full_even_right_after_process_start() {
        // The monotonic clock starts near 0 when the process starts.
        let clock = ManualClock::starting_at(Nanos(1_000), NEAR_MIDNIGHT_MS);
        let meter = Meter::new(Arc::new(ManualClock::new()));
        let (kp, _) = meter.get_or_create("k", "p");
        let l = limits(Some((20.0, 10)), None, &[]);
        let n = (0..30)
            .filter(|_| allowed(&kp.admit(&l, None, clock.now_mono(), clock.now_unix_ms())))
            .count();
        assert_eq!(n, 10);
    }

    #[test]
    fn method_throttles_override_and_limit_changes_carry_over() {
        let clock = ManualClock::starting_at(Nanos(1_000_000_000), NEAR_MIDNIGHT_MS);
        let meter = Meter::new(Arc::new(ManualClock::new()));
        let (kp, _) = meter.get_or_create("k", "p");
        let l = limits(Some((1.0, 1)), None, &[("/a/GET", 100.0, 50)]);
        let admit = |l: &StageLimits, m: &str| {
            let throttle = if m.is_empty() { None } else { l.method_throttle(0, m) };
            kp.admit(l, throttle, clock.now_mono(), clock.now_unix_ms())
        };
        assert!((0..20).all(|_| allowed(&admit(&l, "GET"))));
        assert!(allowed(&admit(&l, "")));
        assert!(matches!(admit(&l, ""), Admission::Throttled { retry_after: Some(1) }));
        // Stricter limits take over at once; idle long enough, the new burst is available.
        let stricter = limits(Some((1.0, 1)), None, &[("/a/GET", 0.5, 2)]);
        assert!(!allowed(&admit(&stricter, "GET")));
        clock.advance(Duration::from_secs(5));
        let got: Vec<bool> = (0..3).map(|_| allowed(&admit(&stricter, "GET"))).collect();
        assert_eq!(got, [true, true, false]);
    }

    /// A route's method throttles, most specific first: its path with the request's method,
    /// then `ANY`, then `*`, then the same for `/*`; other paths never apply.
    #[test]
    fn the_most_specific_method_throttle_applies() {
        let t =
            |rate: f64| BucketLimits::from_throttle(&Throttle { rate_limit: rate, burst_limit: 1 });
        let plan: Vec<(Arc<str>, BucketLimits)> = [
            ("/*/*", 1.0),
            ("/*/POST", 2.0),
            ("/a/*", 3.0),
            ("/a/ANY", 4.0),
            ("/a/GET", 5.0),
            ("/b/GET", 6.0),
            ("//GET", 7.0),
        ]
        .into_iter()
        .map(|(k, r)| (Arc::from(k), t(r)))
        .collect();
        let limits = StageLimits {
            routes: vec![
                StageLimits::throttles_for("/a", &plan),
                StageLimits::throttles_for("/c", &plan),
                StageLimits::throttles_for("/", &plan),
                Box::default(),
            ],
            ..Default::default()
        };
        let key = |route: usize, method: &str| {
            limits.method_throttle(route, method).map(|m| m.key.to_string())
        };
        assert_eq!(key(0, "GET").as_deref(), Some("/a/GET"));
        assert_eq!(key(0, "get").as_deref(), Some("/a/GET"), "methods compare without case");
        assert_eq!(key(0, "DELETE").as_deref(), Some("/a/ANY"));
        assert_eq!(key(1, "POST").as_deref(), Some("/*/POST"));
        assert_eq!(key(1, "PUT").as_deref(), Some("/*/*"));
        assert_eq!(key(2, "GET").as_deref(), Some("//GET"), "the root resource");
        assert_eq!(key(3, "GET"), None, "a route of another API of the stage");
        assert_eq!(key(9, "GET"), None, "no such route");
        let without_any = StageLimits::throttles_for("/a", &plan[..3]);
        let keys: Vec<&str> = without_any.iter().map(|m| &*m.key).collect();
        assert_eq!(keys, ["/a/*", "/*/POST", "/*/*"]);
    }
}
