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

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use smallvec::SmallVec;
use std::time::Duration;

use keygate_limits::bucket::{BucketLimits, Decision, TokenBucket};
use keygate_limits::calendar::{Date, QuotaWindow};
use keygate_limits::clock::{Clock, Nanos};
use keygate_limits::headers::{BurstInfo, QuotaInfo};
use keygate_limits::quota::{QuotaDecision, check_quota};
use keygate_store::{UsageCounters, UsageReads};
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

    fn iter(&self) -> impl Iterator<Item = (Date, u64)> + '_ {
        self.0.iter().copied()
    }
}

/// A UTC day as days since 1970-01-01: 4 bytes in a slot, where a [`Date`] takes 8.
type DayNo = i32;

/// No day: no quota period seen yet, no usage known.
const NO_DAY: DayNo = DayNo::MIN;

fn day_no_of(unix_ms: i64) -> DayNo {
    let days = keygate_types::date::day_number(unix_ms);
    DayNo::try_from(days).unwrap_or(if days < 0 { NO_DAY + 1 } else { DayNo::MAX })
}

fn day_no(day: Date) -> DayNo {
    day_no_of(day.start_unix_ms())
}

fn date_of(day: DayNo) -> Date {
    Date::from_unix_ms(keygate_types::date::day_start_ms(i64::from(day)))
}

/// A key id as a slot holds it: inline up to 11 bytes (keygate's and AWS's ids have 10), longer
/// ones in the slot's [`Rare`] part.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SmallId {
    bytes: [u8; 11],
    len: u8,
}

impl SmallId {
    /// The `len` of an id kept in [`Rare::long_id`].
    const LONG: u8 = u8::MAX;

    fn new(id: &str) -> Self {
        let mut bytes = [0; 11];
        match bytes.get_mut(..id.len()) {
            Some(inline) => {
                inline.copy_from_slice(id.as_bytes());
                Self { bytes, len: id.len() as u8 }
            }
            None => Self { bytes, len: Self::LONG },
        }
    }

    fn as_str(&self) -> Option<&str> {
        let bytes = self.bytes.get(..usize::from(self.len))?;
        std::str::from_utf8(bytes).ok()
    }
}

/// A key id read from a slot.
#[derive(Debug, Clone)]
pub enum KeyId {
    Inline(SmallId),
    Long(Arc<str>),
}

impl std::ops::Deref for KeyId {
    type Target = str;

    fn deref(&self) -> &str {
        match self {
            Self::Inline(id) => id.as_str().unwrap_or_default(),
            Self::Long(id) => id,
        }
    }
}

impl std::fmt::Display for KeyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self)
    }
}

/// The counters of one (key, plan), laid out small (64 bytes): a gateway with a million keys in
/// use holds a million of them. What most pairs never need (method throttles, usage grants,
/// usage of earlier days, a shared limiter's lease, a long key id) is in [`Rare`], allocated on
/// first need.
#[derive(Debug)]
struct Counters {
    id: SmallId,
    /// The plan's number in [`Slots::plans`].
    plan: u32,
    /// The plan throttle's bucket ([`TokenBucket::raw`]; 0 is full).
    bucket: u64,
    /// Requests counted in the quota period that starts on day `window`.
    used: u64,
    rare: Option<Box<Rare>>,
    /// The first day of the quota period `used` counts in ([`NO_DAY`]: none yet).
    window: DayNo,
    /// The latest day with known usage ([`NO_DAY`]: none), its requests (stored before this
    /// process started, or counted by it), and how many of them are not written yet.
    day: DayNo,
    day_used: u32,
    day_pending: u32,
    /// Unix seconds of the last admitted request not yet written (0: none).
    last_used: u32,
    /// Whether this is in the list of counters to flush.
    queued: bool,
}

/// The parts of [`Counters`] few pairs need.
#[derive(Debug, Default)]
struct Rare {
    /// The key id, when longer than a [`SmallId`] holds.
    long_id: Option<Arc<str>>,
    /// Method throttles' buckets ([`TokenBucket::raw`]), by the throttle's key (shared with
    /// the table's limits).
    methods: Vec<(Arc<str>, u64)>,
    /// Usage grants by period start day (AWS update-usage).
    grants: Grants,
    /// Days before `day` with known usage, oldest first: (day, requests, not yet written).
    older: Vec<(DayNo, u64, u64)>,
    /// Admissions a shared limiter granted ahead of requests (none with the in-process one).
    lease: Option<Lease>,
}

impl Rare {
    fn is_empty(&self) -> bool {
        self.long_id.is_none()
            && self.methods.is_empty()
            && self.grants.is_empty()
            && self.older.is_empty()
            && self.lease.is_none()
    }
}

impl Counters {
    const EMPTY: Self = Self {
        id: SmallId { bytes: [0; 11], len: 0 },
        plan: 0,
        bucket: 0,
        used: 0,
        rare: None,
        window: NO_DAY,
        day: NO_DAY,
        day_used: 0,
        day_pending: 0,
        last_used: 0,
        queued: false,
    };

    fn new(key_id: &str, plan: u32) -> Self {
        let id = SmallId::new(key_id);
        let mut c = Self { id, plan, ..Self::EMPTY };
        if id.len == SmallId::LONG {
            c.rare().long_id = Some(Arc::from(key_id));
        }
        c
    }

    fn rare(&mut self) -> &mut Rare {
        self.rare.get_or_insert_with(Box::default)
    }

    fn key_id(&self) -> &str {
        match self.id.as_str() {
            Some(id) => id,
            None => self.rare.as_ref().and_then(|r| r.long_id.as_deref()).unwrap_or_default(),
        }
    }

    fn is(&self, key_id: &str, plan: u32) -> bool {
        self.plan == plan && self.key_id() == key_id
    }

    fn grant(&self, start: DayNo) -> i64 {
        self.rare.as_ref().map_or(0, |r| grant_of(&r.grants, start))
    }

    /// Adds `used` requests to the known usage of `day`, `pending` of them not written yet.
    fn add_known(&mut self, day: DayNo, used: u64, pending: u64) {
        let narrow = |n: u64| u32::try_from(n).unwrap_or(u32::MAX);
        if day == self.day {
            self.day_used = self.day_used.saturating_add(narrow(used));
            self.day_pending = self.day_pending.saturating_add(narrow(pending));
        } else if self.day == NO_DAY || day > self.day {
            if self.day != NO_DAY {
                let latest = (self.day, u64::from(self.day_used), u64::from(self.day_pending));
                self.rare().older.push(latest);
            }
            (self.day, self.day_used, self.day_pending) = (day, narrow(used), narrow(pending));
        } else {
            let older = &mut self.rare().older;
            match older.binary_search_by_key(&day, |&(d, _, _)| d) {
                Ok(i) => {
                    older[i].1 = older[i].1.saturating_add(used);
                    older[i].2 = older[i].2.saturating_add(pending);
                }
                Err(i) => older.insert(i, (day, used, pending)),
            }
        }
    }

    /// The known requests of `start` and the days after it.
    fn known_since(&self, start: DayNo) -> u64 {
        let latest = if self.day != NO_DAY && self.day >= start { self.day_used } else { 0 };
        let older = self.rare.as_ref().map_or(0, |r| {
            r.older.iter().filter(|&&(d, _, _)| d >= start).map(|&(_, n, _)| n).sum()
        });
        u64::from(latest) + older
    }

    /// Drops a shared limiter's lease that holds no quota units once it is void (it has nothing
    /// to give back: its throttle tokens lapse), so that a key used once does not keep one.
    /// Whether such a lease is still live at `mono` (the flush comes back for it).
    fn expire_lease(&mut self, mono: u64) -> bool {
        let Some(rare) = self.rare.as_deref_mut() else { return false };
        match &rare.lease {
            // Its quota units go back with the key's next request.
            None | Some(Lease { period: Some(_), .. }) => false,
            Some(lease) if mono < lease.until => true,
            Some(_) => {
                rare.lease = None;
                if rare.is_empty() {
                    self.rare = None;
                }
                false
            }
        }
    }

    /// Takes the usage not written yet, by day, and forgets written days before `keep_from`.
    fn take_pending(&mut self, keep_from: DayNo) -> SmallVec<[(DayNo, u64); 1]> {
        let mut taken = SmallVec::new();
        if let Some(rare) = self.rare.as_deref_mut() {
            for (day, _, pending) in &mut rare.older {
                if *pending > 0 {
                    taken.push((*day, std::mem::take(pending)));
                }
            }
            rare.older.retain(|&(day, _, _)| day >= keep_from);
            if rare.is_empty() {
                self.rare = None;
            }
        }
        if self.day_pending > 0 {
            taken.push((self.day, u64::from(std::mem::take(&mut self.day_pending))));
        }
        taken
    }
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

/// Why [`KeyPlan::take_from_lease`] found no usable lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseMiss {
    /// Quota units the dropped lease held for the same period, to give back.
    pub returned: u64,
    /// Whether the key was admitted lately (in this or the previous second, and not yet
    /// written by a usage flush): only then is a lease worth taking. A key's first request in
    /// a while asks for itself alone, so keys used once strand no units and hold no lease, even
    /// while a long flush leaves many keys' last use unwritten.
    pub warm: bool,
}

/// How recent (whole seconds of the clock) a key's last admission must be for it to count as
/// warm ([`LeaseMiss::warm`]).
const WARM_SECS: u32 = 1;

/// Unix seconds as [`Counters::last_used`] keeps them.
fn unix_secs(unix_ms: i64) -> u32 {
    u32::try_from(unix_ms.div_euclid(1000)).unwrap_or(u32::MAX)
}

/// Slots per chunk of [`Slots`] (a chunk is about 1.2 MB).
const CHUNK: usize = 16_384;

/// Where every (key, plan)'s counters live: chunks of [`CHUNK`] slots, appended and never moved
/// or freed, so a slot's number is its address for the life of the process. A counter costs its
/// slot and its entry in the meter's registry, no allocation of its own.
pub struct Slots {
    chunks: boxcar::Vec<Box<[Mutex<Counters>]>>,
    /// Plan ids by number (a slot keeps the number).
    plans: RwLock<Vec<Arc<str>>>,
    /// Slots with usage to write: the flush visits only these.
    dirty: Mutex<Vec<u32>>,
}

impl Slots {
    fn slot(&self, index: u32) -> &Mutex<Counters> {
        let i = index as usize;
        &self.chunks[i / CHUNK][i % CHUNK]
    }

    fn plan_id(&self, plan: u32) -> Arc<str> {
        let plans = self.plans.read().unwrap_or_else(PoisonError::into_inner);
        plans.get(plan as usize).map_or_else(|| Arc::from(""), Arc::clone)
    }
}

/// The counters of one key in one plan (a slot of the meter's, borrowed).
#[derive(Clone, Copy)]
pub struct KeyPlan<'m> {
    slots: &'m Arc<Slots>,
    index: u32,
}

/// A [`KeyPlan`] for work that outlives the request's borrow (a shared limiter's answer).
#[derive(Clone)]
pub struct OwnedKeyPlan {
    slots: Arc<Slots>,
    index: u32,
}

impl OwnedKeyPlan {
    pub fn get(&self) -> KeyPlan<'_> {
        KeyPlan { slots: &self.slots, index: self.index }
    }
}

impl std::fmt::Debug for KeyPlan<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyPlan").field("slot", &self.index).finish_non_exhaustive()
    }
}

impl<'m> KeyPlan<'m> {
    fn lock(&self) -> std::sync::MutexGuard<'m, Counters> {
        locked(self.slots.slot(self.index))
    }

    /// The slot's number (see [`Meter::slot`]).
    pub(crate) fn index(&self) -> u32 {
        self.index
    }

    pub fn to_owned(&self) -> OwnedKeyPlan {
        OwnedKeyPlan { slots: Arc::clone(self.slots), index: self.index }
    }

    /// The key's id and the plan's (one lock of the slot, released before the plans are read:
    /// the flush reads the plans, then locks slots).
    pub fn ids(&self) -> (KeyId, Arc<str>) {
        let (key_id, plan) = {
            let c = self.lock();
            let key_id = match c.id.len {
                SmallId::LONG => KeyId::Long(
                    c.rare
                        .as_ref()
                        .and_then(|r| r.long_id.clone())
                        .unwrap_or_else(|| Arc::from("")),
                ),
                _ => KeyId::Inline(c.id),
            };
            (key_id, c.plan)
        };
        (key_id, self.slots.plan_id(plan))
    }

    /// Decides one request at `now` under `limits` and the request's method throttle, if any,
    /// and, if admitted, counts it.
    pub fn admit(
        &self,
        limits: &StageLimits,
        method_throttle: Option<&MethodThrottle>,
        mono: Nanos,
        unix_ms: i64,
    ) -> Admission {
        let mut c = self.lock();
        // Check everything on copies first; commit only when all allow.
        let mut method = method_throttle.map(|m| {
            let raw = c
                .rare
                .as_ref()
                .and_then(|r| r.methods.iter().find(|(k, _)| **k == *m.key))
                .map_or(0, |&(_, raw)| raw);
            TokenBucket::from_raw(m.limits, raw)
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
            limits.throttle.map(|l| TokenBucket::from_raw(l, c.bucket))
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
            let start = day_no_of(window.start_ms);
            if c.window != start {
                // A new period (or the first request): count what the store and this process
                // already recorded for its days.
                c.used = c.known_since(start);
                c.window = start;
            }
            match check_quota(q, c.used, c.grant(start), unix_ms) {
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
            let methods = &mut c.rare().methods;
            match methods.iter_mut().find(|(k, _)| **k == *m.key) {
                Some((_, raw)) => *raw = b.raw(),
                None => methods.push((Arc::clone(&m.key), b.raw())),
            }
        }
        if let Some(b) = plan {
            c.bucket = b.raw();
        }
        self.count(&mut c, unix_ms);
        Admission::Allowed { headers: RateLimitValues::new(burst.as_ref(), quota_info.as_ref()) }
    }

    /// Counts one request another limiter admitted at `unix_ms`: in the usage written to the
    /// store and in this process's own quota count.
    pub fn record_admitted(&self, unix_ms: i64) {
        let mut c = self.lock();
        self.count(&mut c, unix_ms);
    }

    fn count(&self, c: &mut Counters, unix_ms: i64) {
        c.used = c.used.saturating_add(1);
        c.add_known(day_no_of(unix_ms), 1, 1);
        c.last_used = unix_secs(unix_ms).max(1);
        if !c.queued {
            c.queued = true;
            locked(&self.slots.dirty).push(self.index);
        }
    }

    /// The requests of `window` this process knows of (stored before it started, then counted
    /// by it): where a shared counter that lost its value starts again.
    pub fn known_usage(&self, window: &QuotaWindow) -> u64 {
        let c = self.lock();
        let start = day_no_of(window.start_ms);
        if c.window == start {
            return c.used;
        }
        c.known_since(start)
    }

    /// One request from the key's lease, when it is usable for `bucket` and quota `period` at
    /// `mono`: counted as admitted at `unix_ms`, with what the lease held when granted (refill,
    /// quota remaining) and the units left. Otherwise the lease is dropped and [`LeaseMiss`]
    /// says what it held and whether the key is warm. One lock either way.
    pub fn take_from_lease(
        &self,
        bucket: Option<&Arc<str>>,
        period: Option<i64>,
        mono: u64,
        unix_ms: i64,
    ) -> Result<(Duration, u64, u32), LeaseMiss> {
        let mut c = self.lock();
        let lease = c.rare.as_deref_mut().and_then(|r| r.lease.as_mut());
        let held = match lease {
            Some(l)
                if l.units > 0
                    && mono < l.until
                    && l.bucket.as_ref() == bucket
                    && l.period == period =>
            {
                l.units -= 1;
                (l.refill, l.quota_remaining, l.units)
            }
            _ => {
                let mut old = None;
                if let Some(rare) = c.rare.as_deref_mut() {
                    old = rare.lease.take();
                    if rare.is_empty() {
                        c.rare = None;
                    }
                }
                let returned = match old {
                    Some(old) if old.period.is_some() && old.period == period => {
                        u64::from(old.units)
                    }
                    _ => 0,
                };
                let since = unix_secs(unix_ms).saturating_sub(c.last_used);
                let warm = c.last_used != 0 && since <= WARM_SECS;
                return Err(LeaseMiss { returned, warm });
            }
        };
        self.count(&mut c, unix_ms);
        Ok(held)
    }

    /// Runs `f` on the key's lease slot, under the counters' lock (keep `f` short).
    pub fn with_lease<R>(&self, f: impl FnOnce(&mut Option<Lease>) -> R) -> R {
        f(&mut self.lock().rare().lease)
    }

    /// The usage grant (`extra`) of the period starting `start`, 0 without one.
    pub fn grant(&self, start: Date) -> i64 {
        self.lock().grant(day_no(start))
    }
}

fn grant_of(grants: &[(DayNo, i64)], start: DayNo) -> i64 {
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
    slots: Arc<Slots>,
    registry: Mutex<Registry>,
    /// Stored usage of recent days by (key, plan), for counters not created yet.
    recent: Mutex<PairMap<DayCounts>>,
    /// Usage grants by (key, plan) and period start, from the last snapshot.
    grants: Mutex<PairMap<Grants>>,
}

/// Usage grants (extra quota) by period start day.
type Grants = Vec<(DayNo, i64)>;

/// Values by key id, then plan id: looked up with borrowed ids, no allocation.
type PairMap<T> = HashMap<String, HashMap<String, T>>;

/// Which slot holds each (key, plan): slot numbers hashed by (key id, plan number), the ids
/// being in the slots themselves; and the plans' numbers.
#[derive(Default)]
struct Registry {
    table: hashbrown::HashTable<u32>,
    hasher: foldhash::fast::RandomState,
    plans: HashMap<Arc<str>, u32>,
    /// Slots handed out so far.
    len: u32,
}

impl Registry {
    fn find(&self, slots: &Slots, key_id: &str, plan_id: &str) -> Option<u32> {
        let plan = *self.plans.get(plan_id)?;
        let hash = self.hasher.hash_one((key_id, plan));
        self.table.find(hash, |&i| locked(slots.slot(i)).is(key_id, plan)).copied()
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
            slots: Arc::new(Slots {
                chunks: boxcar::Vec::new(),
                plans: RwLock::new(Vec::new()),
                dirty: Mutex::new(Vec::new()),
            }),
            registry: Mutex::new(Registry::default()),
            recent: Mutex::new(HashMap::new()),
            grants: Mutex::new(HashMap::new()),
        }
    }

    pub fn clock(&self) -> &dyn Clock {
        &*self.clock
    }

    fn registry(&self) -> std::sync::MutexGuard<'_, Registry> {
        locked(&self.registry)
    }

    /// The counters in slot `index` (a number [`KeyPlan::index`] gave).
    pub(crate) fn slot(&self, index: u32) -> KeyPlan<'_> {
        self.handle(index)
    }

    fn handle(&self, index: u32) -> KeyPlan<'_> {
        KeyPlan { slots: &self.slots, index }
    }

    /// The counters of `key_id` in `plan_id`, created on first use (seeded from the stored usage
    /// and the grants known), and whether they were just created.
    pub fn get_or_create(&self, key_id: &str, plan_id: &str) -> (KeyPlan<'_>, bool) {
        let mut reg = self.registry();
        if let Some(index) = reg.find(&self.slots, key_id, plan_id) {
            return (self.handle(index), false);
        }
        let plan = match reg.plans.get(plan_id) {
            Some(&plan) => plan,
            None => {
                let mut plans = self.slots.plans.write().unwrap_or_else(PoisonError::into_inner);
                let plan = u32::try_from(plans.len()).expect("fewer than 2^32 plans");
                let shared: Arc<str> = Arc::from(plan_id);
                plans.push(Arc::clone(&shared));
                reg.plans.insert(shared, plan);
                plan
            }
        };
        let index = reg.len;
        reg.len = index.checked_add(1).expect("fewer than 2^32 counters");
        if (index as usize).is_multiple_of(CHUNK) {
            let chunk = std::iter::repeat_with(|| Mutex::new(Counters::EMPTY)).take(CHUNK);
            self.slots.chunks.push(chunk.collect());
        }
        {
            let mut c = locked(self.slots.slot(index));
            *c = Counters::new(key_id, plan);
            let stored = locked(&self.recent).get_mut(key_id).and_then(|p| p.remove(plan_id));
            for (day, used) in stored.iter().flat_map(DayCounts::iter) {
                c.add_known(day_no(day), used, 0);
            }
            let grants = locked(&self.grants);
            if let Some(grants) = grants.get(key_id).and_then(|p| p.get(plan_id)) {
                c.rare().grants.clone_from(grants);
            }
        }
        let Registry { table, hasher, .. } = &mut *reg;
        let slots = &*self.slots;
        let hash = hasher.hash_one((key_id, plan));
        table.insert_unique(hash, index, |&i| {
            let c = locked(slots.slot(i));
            hasher.hash_one((c.key_id(), c.plan))
        });
        (self.handle(index), true)
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
        store: &dyn UsageReads,
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
            plans.retain(|plan, _| reg.find(&self.slots, key, plan).is_none());
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
            let start = day_no(g.period_start);
            match periods.iter_mut().find(|(d, _)| *d == start) {
                Some((_, extra)) => *extra = g.extra,
                None => periods.push((start, g.extra)),
            }
        }
        let reg = self.registry();
        let plans: Vec<Arc<str>> =
            self.slots.plans.read().unwrap_or_else(PoisonError::into_inner).clone();
        for index in 0..reg.len {
            let mut c = locked(self.slots.slot(index));
            let plan_id = plans.get(c.plan as usize).map_or("", |p| &**p);
            let periods = by_pair.get(c.key_id()).and_then(|plans| plans.get(plan_id));
            match (periods, c.rare.as_deref_mut()) {
                (Some(periods), _) => c.rare().grants.clone_from(periods),
                (None, Some(rare)) => {
                    rare.grants.clear();
                    if rare.is_empty() {
                        c.rare = None;
                    }
                }
                (None, None) => {}
            }
        }
        *locked(&self.grants) = by_pair;
    }

    /// Writes pending usage to the store, [`FLUSH_CHUNK`] counters per write (the serving
    /// threads run between chunks, instead of waiting for one big batch to be built). On failure
    /// the usage stays pending for the next try: nothing counted is lost while the process lives.
    ///
    /// # Errors
    /// The store's error.
    pub async fn flush(&self, store: &dyn UsageCounters) -> Result<usize, keygate_store::Error> {
        let states: Vec<u32> = std::mem::take(&mut *locked(&self.slots.dirty));
        let mut written = 0;
        for (i, chunk) in states.chunks(FLUSH_CHUNK).enumerate() {
            if let Err(e) = self.flush_chunk(store, chunk, &mut written).await {
                // The chunks not taken yet keep their usage and their place in the list.
                let rest = states.iter().skip((i + 1) * FLUSH_CHUNK);
                locked(&self.slots.dirty).extend(rest);
                return Err(e);
            }
        }
        Ok(written)
    }

    async fn flush_chunk(
        &self,
        store: &dyn UsageCounters,
        states: &[u32],
        written: &mut usize,
    ) -> Result<(), keygate_store::Error> {
        // Written days older than this are forgotten (no quota period reaches that far back).
        let keep_from = day_no_of(self.clock.now_unix_ms()).saturating_sub(SEED_DAYS as DayNo);
        let mono = self.clock.now_mono().0;
        let mut batch = Vec::new();
        let mut taken = Vec::new();
        let mut revisit = Vec::new();
        {
            let plans = self.slots.plans.read().unwrap_or_else(PoisonError::into_inner);
            for &index in states {
                let mut c = locked(self.slots.slot(index));
                c.queued = c.expire_lease(mono);
                if c.queued {
                    revisit.push(index);
                }
                let last_used = std::mem::take(&mut c.last_used);
                let pending = c.take_pending(keep_from);
                // The last use goes with the row of its own day: lastUsedDate is the latest.
                let last_used = (last_used > 0).then_some(i64::from(last_used));
                let last_day = last_used.map(|at| day_no_of(at.saturating_mul(1000)));
                for &(day, used) in &pending {
                    batch.push(DailyUsage {
                        plan_id: plans.get(c.plan as usize).map_or("", |p| &**p).to_owned(),
                        key_id: c.key_id().to_owned(),
                        day: date_of(day),
                        used,
                        last_used: last_used.filter(|_| last_day == Some(day)),
                    });
                }
                if !pending.is_empty() {
                    taken.push((index, pending, last_used));
                }
            }
        }
        if !revisit.is_empty() {
            locked(&self.slots.dirty).extend(revisit);
        }
        if batch.is_empty() {
            return Ok(());
        }
        match store.add_usage(&batch).await {
            Ok(()) => {
                *written += batch.len();
                Ok(())
            }
            Err(e) => {
                for (index, pending, last_used) in taken {
                    let mut c = locked(self.slots.slot(index));
                    for (day, used) in pending {
                        c.add_known(day, 0, used);
                    }
                    let restored = last_used.and_then(|at| u32::try_from(at).ok()).unwrap_or(0);
                    c.last_used = c.last_used.max(restored);
                    if !c.queued {
                        c.queued = true;
                        locked(&self.slots.dirty).push(index);
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
    fn only_a_key_admitted_in_the_last_second_or_two_is_warm() {
        let meter = Meter::new(Arc::new(ManualClock::new()));
        let (kp, _) = meter.get_or_create("k", "p");
        let at = NEAR_MIDNIGHT_MS - 10_000;
        let warm = |unix_ms| kp.take_from_lease(None, None, 0, unix_ms).unwrap_err().warm;
        assert!(!warm(at), "never admitted");
        kp.record_admitted(at);
        assert!(warm(at + 300));
        assert!(warm(at + 1_000), "the next second");
        // Not written by a flush yet (a long flush at a million keys), but long ago.
        assert!(!warm(at + 5_000));
        assert!(kp.lock().rare.is_none(), "a miss allocates nothing");
    }

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
        let c = kp.lock();
        let older: Vec<_> = c.rare.as_ref().map(|r| r.older.clone()).unwrap_or_default();
        assert_eq!(older.len(), 1, "the day before midnight: {older:?}");
        let pending = u64::from(c.day_pending) + older.iter().map(|&(_, _, p)| p).sum::<u64>();
        assert_eq!(pending, 4, "only admitted requests count");
        assert_eq!((c.day_used, older[0].1), (1, 3), "by day");
    }

    /// A gateway with a million keys in use holds a million counters: each is one slot, with
    /// nothing allocated for the common case (one plan, a plan throttle, a quota, usage of one
    /// day).
    #[test]
    fn a_counter_is_one_small_slot() {
        assert!(std::mem::size_of::<Mutex<Counters>>() <= 72);
        let meter = Meter::new(Arc::new(ManualClock::new()));
        let (kp, _) = meter.get_or_create("abcdefghij", "plan01");
        let l = limits(Some((100.0, 10)), Some(1000), &[]);
        assert!(allowed(&kp.admit(&l, None, Nanos(1_000_000_000), NEAR_MIDNIGHT_MS)));
        assert!(kp.lock().rare.is_none(), "nothing allocated besides the slot");
    }

    /// Ids longer than a slot holds inline, and many keys: each (key, plan) finds its own slot
    /// again, across chunks.
    #[test]
    fn counters_are_found_again_by_key_and_plan() {
        let meter = Meter::new(Arc::new(ManualClock::new()));
        let long = "a-key-id-longer-than-eleven-bytes";
        let (kp, fresh) = meter.get_or_create(long, "p");
        assert!(fresh);
        let (key_id, plan_id) = kp.ids();
        assert_eq!((&*key_id, &*plan_id), (long, "p"));
        let (again, fresh) = meter.get_or_create(long, "p");
        assert!(!fresh);
        assert_eq!(again.index(), kp.index());
        let (other_plan, fresh) = meter.get_or_create(long, "q");
        assert!(fresh && other_plan.index() != kp.index());
        let n = CHUNK + 10;
        for i in 0..n {
            let (kp, fresh) = meter.get_or_create(&format!("k{i}"), "p");
            assert!(fresh);
            kp.record_admitted(NEAR_MIDNIGHT_MS);
        }
        for i in (0..n).step_by(997) {
            let (kp, fresh) = meter.get_or_create(&format!("k{i}"), "p");
            assert!(!fresh);
            assert_eq!(&*kp.ids().0, format!("k{i}"));
            assert_eq!(kp.lock().day_pending, 1);
        }
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
