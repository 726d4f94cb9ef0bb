//! Where a request's usage-plan limits are decided: the [`Limiter`] trait.
//!
//! The gateway asks its limiter once for every request a key passed on a private route, on the
//! request's head ([`crate::Gateway::admit`]), with the key's counters in its plan
//! ([`KeyPlan`]), the limits that apply and the time. The limiter decides throttle and quota in
//! one step and, when it admits the request, counts it: in its own state and in the key's
//! [`KeyPlan`], whose pending usage the gateway writes to the store (usage reports therefore sum
//! every node's admitted requests, whatever limiter decided them).
//!
//! | limiter | where the counters live | exact across nodes |
//! |---|---|---|
//! | [`Local`] (the default) | this process ([`crate::meter`]) | no: each node counts alone |
//! | [`redis::Redis`] (`--redis-url`) | Redis, one script per request | yes |
//!
//! A limiter answers at once ([`Verdict::Ready`]) or after asking a server
//! ([`Verdict::Pending`]); the in-process one never allocates or waits.

pub mod redis;

use std::future::Future;
use std::pin::Pin;

use keygate_limits::calendar::QuotaWindow;
use keygate_limits::clock::Nanos;

use crate::meter::{Admission, KeyPlan, MethodThrottle, StageLimits};

/// One request to decide.
#[derive(Debug, Clone, Copy)]
pub struct Ask<'a> {
    /// The key's counters in its plan (ids, usage to record, local state).
    pub counters: KeyPlan<'a>,
    /// The plan's throttle and quota on the route's API stage.
    pub limits: &'a StageLimits,
    /// The plan's method throttle for the request's route and method, which takes the place of
    /// the plan throttle when there is one.
    pub method_throttle: Option<&'a MethodThrottle>,
    /// This process's monotonic clock.
    pub mono: Nanos,
    /// UTC unix milliseconds (quota periods and usage days).
    pub unix_ms: i64,
}

/// What [`Limiter::quota_used`] answers, when it can.
pub type Used = Pin<Box<dyn Future<Output = u64> + Send>>;

/// A limiter's answer.
pub enum Verdict {
    /// Decided.
    Ready(Admission),
    /// Decided when this completes (it never fails: a limiter that cannot reach its server
    /// answers by its failure policy).
    Pending(Pin<Box<dyn Future<Output = Admission> + Send>>),
}

impl Verdict {
    /// The admission, waiting for it if need be.
    pub async fn resolve(self) -> Admission {
        match self {
            Verdict::Ready(admission) => admission,
            Verdict::Pending(pending) => pending.await,
        }
    }
}

impl std::fmt::Debug for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Verdict::Ready(a) => f.debug_tuple("Ready").field(a).finish(),
            Verdict::Pending(_) => f.write_str("Pending"),
        }
    }
}

/// Decides usage-plan limits: throttle (the method throttle when one applies, else the plan's)
/// then quota; a request is admitted only when both allow it, and only an admitted request
/// counts (against every limit and in the key's usage).
pub trait Limiter: std::fmt::Debug + Send + Sync + 'static {
    fn admit(&self, ask: Ask<'_>) -> Verdict;

    /// How many requests of the quota period `window` the key has used in its plan, counting
    /// nothing (key introspection). By default this process's count: the store's usage as
    /// loaded, plus what it admitted since.
    fn quota_used(&self, counters: KeyPlan<'_>, window: &QuotaWindow) -> Used {
        Box::pin(std::future::ready(counters.known_usage(window)))
    }

    /// What it is, for the log line at start (`in-process`, `redis at redis://host:6379`).
    fn describe(&self) -> String;

    /// A shared limiter's figures for `/metrics` (`None`: in-process, nothing to report).
    fn stats(&self) -> Option<Stats> {
        None
    }
}

/// A shared limiter's figures, read at each scrape.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Whether its server answered the last time it was asked.
    pub up: bool,
    /// Round trips to its server (each decides one request or takes a lease).
    pub round_trips: u64,
    /// Requests decided by the `local` policy while the server did not answer.
    pub fallback_local: u64,
    /// Requests refused by the `refuse` policy while the server did not answer.
    pub fallback_refuse: u64,
}

/// The in-process limiter: each (key, plan)'s buckets and quota count in its [`KeyPlan`], under
/// its lock. Exact on one node; N nodes each admit a plan's full limits.
#[derive(Debug, Default, Clone, Copy)]
pub struct Local;

impl Limiter for Local {
    fn admit(&self, ask: Ask<'_>) -> Verdict {
        Verdict::Ready(ask.counters.admit(ask.limits, ask.method_throttle, ask.mono, ask.unix_ms))
    }

    fn describe(&self) -> String {
        "in-process (limits are per node)".to_owned()
    }
}
