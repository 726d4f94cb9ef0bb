//! The shared limiter (`--redis-url`): every node decides in one Redis, so a plan's throttle and
//! quota hold in total across nodes.
//!
//! One Lua script ([`SCRIPT`]) per request decides and commits atomically on the server: the
//! bucket (GCRA, as [`keygate_limits::bucket`], in microseconds of Redis's own clock, so nodes'
//! clocks do not matter to the throttle), then the quota count of the period; it writes only
//! when both allow, so only admitted requests count. Requests from many connections go down one
//! multiplexed connection (redis-rs pipelines them).
//!
//! Keys, per (plan, key), all in one hash slot (`{plan:key}`), so a Redis Cluster can hold them:
//! `keygate:{P:K}:t` the plan throttle's `z` (when the bucket was last empty), `keygate:{P:K}:m:
//! /path/METHOD` a method throttle's, `keygate:{P:K}:q:<period start ms>` the quota count. A
//! bucket's key expires once the bucket would be full again, a quota's a day after its period.
//! A quota count Redis does not hold (a new period, or a Redis that lost its data) starts from
//! the usage this node knows for the period: the store's, as loaded, plus what it counted since.
//!
//! When Redis does not answer within [`TIMEOUT`] (down, unreachable, or slow), the request is
//! decided by the [`Fallback`] policy (the plan's, else
//! the node's `--redis-unavailable`), and so is every request of the next [`PAUSE`]
//! (no request waits on a Redis already known to be down); one warning says so, one more
//! when Redis answers again.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use keygate_limits::bucket::BucketLimits;
use keygate_limits::calendar::QuotaWindow;
use keygate_limits::clock::Clock;
use keygate_limits::headers::{BurstInfo, QuotaInfo};
use keygate_limits::quota::allowance;
use keygate_types::plan::Fallback;

use super::{Ask, Limiter, Local, Stats, Used, Verdict};
use crate::meter::{Admission, KeyPlan, Lease, MethodThrottle, RateLimitValues, StageLimits};

/// Longest a request waits for Redis.
pub const TIMEOUT: Duration = Duration::from_millis(100);
/// After Redis failed to answer, how long requests go straight to the [`Fallback`] policy
/// before Redis is asked again.
pub const PAUSE: Duration = Duration::from_secs(1);

/// The decision and commit, atomic on the server, for up to `want` requests at once (a lease).
/// KEYS: the bucket, the quota count. ARGV: [1] the bucket's interval in µs (0: no throttle),
/// [2] its capacity, [3] the quota's allowance (-1: no quota), [4] the count to start from when
/// Redis has none, [5] when that count expires (unix ms), [6] `want`, [7] quota units of an
/// earlier lease given back. Returns `{verdict, refill µs, quota remaining, granted}`: verdict 1
/// admitted `granted` (1..=want) requests (refill: what the bucket holds after them; quota
/// remaining after them), 0 throttled (refill: µs until a token), 2 over quota.
const SOURCE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local allowance = tonumber(ARGV[3])
local n = tonumber(ARGV[6])
local avail = 0
if interval > 0 then
  local window = interval * tonumber(ARGV[2])
  local last = redis.call('GET', KEYS[1])
  if last then
    avail = math.min(math.max(now - tonumber(last), 0), window)
  else
    avail = window
  end
  local can = math.floor(avail / interval)
  if can < 1 then
    return {0, interval - avail, 0, 0}
  end
  if can < n then n = can end
end
local used = 0
if allowance >= 0 then
  local stored = redis.call('GET', KEYS[2])
  if stored then
    used = math.max(tonumber(stored) - tonumber(ARGV[7]), 0)
  else
    used = tonumber(ARGV[4])
  end
  local left = allowance - used
  if left < 1 then
    if stored and tonumber(ARGV[7]) > 0 then
      redis.call('SET', KEYS[2], string.format('%d', used), 'PXAT', ARGV[5])
    end
    return {2, 0, 0, 0}
  end
  if left < n then n = left end
end
if interval > 0 then
  local ttl = math.ceil(interval * tonumber(ARGV[2]) / 1000) + 1000
  redis.call('SET', KEYS[1], string.format('%d', now - avail + n * interval), 'PX', ttl)
end
if allowance >= 0 then
  redis.call('SET', KEYS[2], string.format('%d', used + n), 'PXAT', ARGV[5])
  return {1, avail - n * interval, allowance - used - n, n}
end
return {1, avail - n * interval, 0, n}
";

static SCRIPT: LazyLock<::redis::Script> = LazyLock::new(|| ::redis::Script::new(SOURCE));

/// The shared limiter. Cheap to clone.
#[derive(Clone)]
pub struct Redis {
    inner: Arc<Inner>,
}

struct Inner {
    conn: ConnectionManager,
    /// The URL without its password, for messages.
    shown: String,
    clock: Arc<dyn Clock>,
    /// The node's policy while Redis does not answer (a plan's own wins).
    policy: Fallback,
    /// Monotonic ns until which Redis is not asked (0: ask).
    paused_until: AtomicU64,
    /// Whether Redis is known to be down (for the warning when it is back).
    down: AtomicBool,
    round_trips: AtomicU64,
    fallback_local: AtomicU64,
    fallback_refuse: AtomicU64,
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redis").field("url", &self.inner.shown).finish_non_exhaustive()
    }
}

/// Why a Redis URL cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("--redis-url {shown}: {source}")]
pub struct UrlError {
    shown: String,
    source: ::redis::RedisError,
}

impl Redis {
    /// A limiter on the Redis at `url` (`redis://[user:password@]host[:port][/db]`, or
    /// `rediss://` for TLS, the server verified against the system's root certificates).
    /// Connects lazily: a node starts while Redis is down, and decides by `policy` until it
    /// answers.
    ///
    /// # Errors
    /// A URL redis-rs cannot read (the message shows it without its password).
    pub fn new(url: &str, clock: Arc<dyn Clock>, policy: Fallback) -> Result<Self, UrlError> {
        Self::with_ca(url, None, clock, policy)
    }

    /// [`Redis::new`], with `ca` (PEM certificates) instead of the system's roots to verify a
    /// `rediss://` server: a private CA's. Refused with a `redis://` URL (a CA for a connection
    /// without TLS is a mistake that would send the limits in clear).
    ///
    /// # Errors
    /// A URL redis-rs cannot read, or `ca` with a URL without TLS.
    pub fn with_ca(
        url: &str,
        ca: Option<Vec<u8>>,
        clock: Arc<dyn Clock>,
        policy: Fallback,
    ) -> Result<Self, UrlError> {
        let shown = keygate_store::redact_url(url);
        let error = |source| UrlError { shown: shown.clone(), source };
        let client = match ca {
            None => ::redis::Client::open(url).map_err(error)?,
            Some(_) if !url.starts_with("rediss://") => {
                let kind = ::redis::ErrorKind::InvalidClientConfig;
                let why = "a CA certificate (--redis-ca) needs a rediss:// URL (TLS)";
                return Err(error(::redis::RedisError::from((kind, why))));
            }
            Some(ca) => {
                let certs = ::redis::TlsCertificates { client_tls: None, root_cert: Some(ca) };
                ::redis::Client::build_with_tls(url, certs).map_err(error)?
            }
        };
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(TIMEOUT))
            .set_response_timeout(Some(TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(TIMEOUT);
        let conn = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|source| UrlError { shown: shown.clone(), source })?;
        let inner = Inner {
            conn,
            shown,
            clock,
            policy,
            paused_until: AtomicU64::new(0),
            down: AtomicBool::new(false),
            round_trips: AtomicU64::new(0),
            fallback_local: AtomicU64::new(0),
            fallback_refuse: AtomicU64::new(0),
        };
        Ok(Self { inner: Arc::new(inner) })
    }
}

/// What one request asks the script.
struct Call {
    bucket_key: String,
    quota_key: String,
    /// The throttle that applies (method or plan), if any.
    throttle: Option<BucketLimits>,
    /// The quota, its period and its allowance in it.
    quota: Option<(keygate_types::plan::Quota, QuotaWindow, u64)>,
    seed: u64,
    /// Requests to take at once (the lease's size, this one included).
    want: u32,
    /// Quota units of this node's last lease it did not use, given back.
    returned: u64,
    /// The bucket's identity in a [`Lease`].
    bucket: Option<Arc<str>>,
}

impl Limiter for Redis {
    fn admit(&self, ask: Ask<'_>) -> Verdict {
        let Ask { counters, limits, method_throttle, mono, unix_ms } = ask;
        let inner = &self.inner;
        if mono.0 < inner.paused_until.load(Ordering::Relaxed) {
            return inner.fallback(ask);
        }
        let throttle = match method_throttle {
            Some(m) => Some(m.limits),
            None => limits.throttle,
        };
        if throttle.is_some_and(|t| t.is_blocked()) {
            // Nothing is ever admitted: no need to ask.
            return Verdict::Ready(Admission::Throttled { retry_after: None });
        }
        if throttle.is_none() && limits.quota.is_none() {
            counters.record_admitted(unix_ms);
            return Verdict::Ready(Admission::Allowed { headers: None });
        }
        let quota = limits.quota.map(|q| {
            let window = QuotaWindow::for_quota(unix_ms, &q);
            let extra = counters.grant(window.start_date());
            (q, window, allowance(q.limit, extra))
        });
        let bucket: Option<Arc<str>> = method_throttle.map(|m| Arc::clone(&m.key));
        let period = quota.as_ref().map(|(_, w, _)| w.start_ms);
        // This node's lease first: no round trip while it lasts. A spent, void or other
        // bucket's lease is dropped, its quota units going back with this round trip.
        let miss = match counters.take_from_lease(bucket.as_ref(), period, mono.0, unix_ms) {
            Ok((refill, quota_remaining, left)) => {
                let headers =
                    headers(throttle, quota.as_ref(), refill, quota_remaining, left, unix_ms);
                return Verdict::Ready(Admission::Allowed { headers });
            }
            Err(miss) => miss,
        };
        let (key_id, plan_id) = counters.ids();
        let tag = format!("keygate:{{{plan_id}:{key_id}}}");
        let bucket_key = match method_throttle {
            Some(m) => format!("{tag}:m:{}", m.key),
            None => format!("{tag}:t"),
        };
        let quota_key = match &quota {
            Some((_, w, _)) => format!("{tag}:q:{}", w.start_ms),
            None => format!("{tag}:q"),
        };
        let seed = quota.as_ref().map_or(0, |(_, w, _)| counters.known_usage(w));
        // A lease only for a key in use: a cold key's first request takes nothing ahead.
        let want =
            if miss.warm { lease_size(throttle, quota.as_ref().map(|(_, _, a)| *a)) } else { 1 };
        let returned = miss.returned;
        let call = Call { bucket_key, quota_key, throttle, quota, seed, want, returned, bucket };
        // Owned copies for the fallback, should Redis not answer.
        let fallback = OwnedAsk {
            limits: StageLimits {
                throttle: limits.throttle,
                quota: limits.quota,
                routes: Vec::new(),
                fallback: limits.fallback,
            },
            method_throttle: method_throttle.cloned(),
        };
        let inner = Arc::clone(inner);
        let counters = counters.to_owned();
        Verdict::Pending(Box::pin(async move {
            match tokio::time::timeout(TIMEOUT, inner.ask(&call)).await {
                Ok(Ok(reply)) => {
                    inner.answered();
                    inner.admission(&call, &reply, counters.get(), unix_ms)
                }
                failed => {
                    let why = match failed {
                        Ok(Err(e)) => e.to_string(),
                        _ => format!("no answer within {} ms", TIMEOUT.as_millis()),
                    };
                    inner.failed(&why);
                    let now = inner.clock.now_mono();
                    let ask = Ask {
                        counters: counters.get(),
                        limits: &fallback.limits,
                        method_throttle: fallback.method_throttle.as_ref(),
                        mono: now,
                        unix_ms,
                    };
                    inner.fallback(ask).resolve().await
                }
            }
        }))
    }

    /// The period's count in Redis (every node's admissions, and the units of their leases not
    /// used yet, less this node's), else this node's own count when Redis holds none or does
    /// not answer within [`TIMEOUT`].
    fn quota_used(&self, counters: KeyPlan<'_>, window: &QuotaWindow) -> Used {
        let known = counters.known_usage(window);
        let inner = &self.inner;
        if inner.clock.now_mono().0 < inner.paused_until.load(Ordering::Relaxed) {
            return Box::pin(std::future::ready(known));
        }
        let (key_id, plan_id) = counters.ids();
        let key = format!("keygate:{{{plan_id}:{key_id}}}:q:{}", window.start_ms);
        let period = Some(window.start_ms);
        let leased = counters.with_lease(|lease| match lease {
            Some(l) if l.period == period => u64::from(l.units),
            _ => 0,
        });
        let mut conn = inner.conn.clone();
        Box::pin(async move {
            let mut cmd = ::redis::cmd("GET");
            let get = cmd.arg(&key).query_async::<Option<u64>>(&mut conn);
            match tokio::time::timeout(TIMEOUT, get).await {
                Ok(Ok(Some(stored))) => stored.saturating_sub(leased),
                _ => known,
            }
        })
    }

    fn stats(&self) -> Option<Stats> {
        let i = &self.inner;
        Some(Stats {
            up: !i.down.load(Ordering::Relaxed),
            round_trips: i.round_trips.load(Ordering::Relaxed),
            fallback_local: i.fallback_local.load(Ordering::Relaxed),
            fallback_refuse: i.fallback_refuse.load(Ordering::Relaxed),
        })
    }

    fn describe(&self) -> String {
        let policy = match self.inner.policy {
            Fallback::Local => "each node applies the limits alone, unless a plan says otherwise",
            Fallback::Refuse => "requests under a limit get 429, unless a plan says otherwise",
        };
        format!(
            "redis at {} (shared by every node; while it is unavailable, {policy})",
            self.inner.shown
        )
    }
}

struct OwnedAsk {
    limits: StageLimits,
    method_throttle: Option<MethodThrottle>,
}

impl Inner {
    async fn ask(&self, call: &Call) -> ::redis::RedisResult<Vec<i64>> {
        self.round_trips.fetch_add(1, Ordering::Relaxed);
        let (interval_us, capacity) = match call.throttle {
            Some(t) => (interval_us(&t), t.capacity()),
            None => (0, 0),
        };
        let (allowance, expire_at) = match &call.quota {
            // Kept a day past the period: a late node still finds the period's count.
            Some((_, w, allowance)) => {
                (i64::try_from(*allowance).unwrap_or(i64::MAX), w.end_ms + 86_400_000)
            }
            None => (-1, 0),
        };
        let mut conn = self.conn.clone();
        SCRIPT
            .key(&call.bucket_key)
            .key(&call.quota_key)
            .arg(interval_us)
            .arg(capacity)
            .arg(allowance)
            .arg(call.seed)
            .arg(expire_at)
            .arg(call.want)
            .arg(call.returned)
            .invoke_async(&mut conn)
            .await
    }

    fn admission(
        &self,
        call: &Call,
        reply: &[i64],
        counters: KeyPlan<'_>,
        unix_ms: i64,
    ) -> Admission {
        let (verdict, refill_us, remaining, granted) = match reply {
            [v, r, q, n, ..] => (*v, *r, *q, *n),
            _ => (-1, 0, 0, 0),
        };
        match verdict {
            1 if granted >= 1 => {
                counters.record_admitted(unix_ms);
                let refill = Duration::from_micros(refill_us.max(0).unsigned_abs());
                let quota_remaining = remaining.max(0).unsigned_abs();
                let left = u32::try_from(granted - 1).unwrap_or(0).min(call.want);
                if left > 0 {
                    let until = self.clock.now_mono().0.saturating_add(nanos(LEASE_TTL));
                    let period = call.quota.as_ref().map(|(_, w, _)| w.start_ms);
                    counters.with_lease(|slot| match slot.as_mut() {
                        // Another request's lease of the same kind, granted meanwhile: one pool.
                        Some(l) if l.bucket == call.bucket && l.period == period => {
                            l.units = l.units.saturating_add(left);
                            (l.until, l.refill, l.quota_remaining) =
                                (until, refill, quota_remaining);
                        }
                        _ => {
                            *slot = Some(Lease {
                                bucket: call.bucket.clone(),
                                period,
                                units: left,
                                until,
                                refill,
                                quota_remaining,
                            });
                        }
                    });
                }
                let headers = headers(
                    call.throttle,
                    call.quota.as_ref(),
                    refill,
                    quota_remaining,
                    left,
                    unix_ms,
                );
                Admission::Allowed { headers }
            }
            0 => {
                let wait = Duration::from_micros(refill_us.max(1).unsigned_abs());
                Admission::Throttled {
                    retry_after: Some(keygate_limits::headers::retry_after_secs(wait)),
                }
            }
            2 => {
                let end = call.quota.as_ref().map_or(1, |(_, w, _)| w.secs_until_end(unix_ms));
                Admission::QuotaExceeded { retry_after: end.max(1) }
            }
            _ => {
                // Not the script's answer (another program's key?): refuse, never admit.
                tracing::error!(?reply, "unexpected answer from the Redis limiter; refused");
                Admission::Throttled { retry_after: Some(1) }
            }
        }
    }

    /// The decision while Redis is unavailable.
    fn fallback(&self, ask: Ask<'_>) -> Verdict {
        match ask.limits.fallback.unwrap_or(self.policy) {
            Fallback::Local => {
                self.fallback_local.fetch_add(1, Ordering::Relaxed);
                Local.admit(ask)
            }
            Fallback::Refuse => {
                self.fallback_refuse.fetch_add(1, Ordering::Relaxed);
                Verdict::Ready(Admission::Throttled { retry_after: Some(1) })
            }
        }
    }

    fn failed(&self, why: &str) {
        let until = self.clock.now_mono().0.saturating_add(PAUSE.as_nanos() as u64);
        self.paused_until.store(until, Ordering::Relaxed);
        if !self.down.swap(true, Ordering::Relaxed) {
            let policy = match self.policy {
                Fallback::Local => {
                    "each node applies the plans' limits alone until it is back (plans that \
                     say `refuse`: 429)"
                }
                Fallback::Refuse => {
                    "limited requests get 429 until it is back (plans that say `local`: each \
                     node applies them alone)"
                }
            };
            tracing::warn!(redis = %self.shown, error = %why, "the Redis limiter is unavailable: {policy}");
        }
    }

    fn answered(&self) {
        if self.down.swap(false, Ordering::Relaxed) {
            tracing::warn!(redis = %self.shown, "the Redis limiter answers again: limits are shared by every node");
        }
    }
}

/// A lease takes at most this much of a plan's rate...
pub const LEASE_SPAN: Duration = Duration::from_millis(10);
/// ... and is used within this long; what is left then is void (its quota units go back).
pub const LEASE_TTL: Duration = Duration::from_millis(100);

/// How many requests one round trip takes at once: [`LEASE_SPAN`] of the throttle's rate, at
/// most a 16th of its burst and a 1,000th of the quota's allowance, at least 1 (exact: every
/// request asks Redis, as for any plan below 100 requests/s).
pub fn lease_size(throttle: Option<BucketLimits>, quota_allowance: Option<u64>) -> u32 {
    let mut n = u64::MAX;
    if let Some(t) = throttle {
        let per_span = nanos(LEASE_SPAN) / nanos(t.interval()).max(1);
        n = n.min(per_span).min(u64::from(t.capacity()) / 16);
    }
    if let Some(allowance) = quota_allowance {
        n = n.min(allowance / 1000);
    }
    u32::try_from(n.max(1)).unwrap_or(u32::MAX)
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// The `RateLimit` values of an admission: the shared bucket and quota as Redis reported them
/// (`refill`, `quota_remaining`), plus the `left` requests this node holds in its lease.
fn headers(
    throttle: Option<BucketLimits>,
    quota: Option<&(keygate_types::plan::Quota, QuotaWindow, u64)>,
    refill: Duration,
    quota_remaining: u64,
    left: u32,
    unix_ms: i64,
) -> Option<RateLimitValues> {
    let burst = throttle.map(|t| {
        let mut state = t.state_after(refill);
        state.available = state.available.saturating_add(left).min(t.capacity());
        BurstInfo::new(&t, &state)
    });
    let quota = quota.map(|(q, w, _)| {
        QuotaInfo::new(q.limit, quota_remaining.saturating_add(u64::from(left)), w, unix_ms)
    });
    RateLimitValues::new(burst.as_ref(), quota.as_ref())
}

/// The bucket's interval in whole microseconds (Redis's clock), at least 1.
fn interval_us(limits: &BucketLimits) -> u64 {
    let ns = limits.interval().as_nanos();
    u64::try_from(ns.div_ceil(1000)).unwrap_or(u64::MAX).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_is_ten_ms_of_the_rate_a_16th_of_the_burst_a_1000th_of_the_quota() {
        let t = |rate, burst| Some(BucketLimits::new(rate, burst));
        assert_eq!(lease_size(t(0.001, 50), None), 1, "slow plans ask Redis every time");
        assert_eq!(lease_size(t(99.0, 10_000), None), 1);
        assert_eq!(lease_size(t(1_000_000.0, 1_000_000), None), 10_000);
        assert_eq!(lease_size(t(1_000.0, 1_600), None), 10);
        assert_eq!(lease_size(t(1_000.0, 32), None), 2, "a 16th of the burst");
        assert_eq!(lease_size(None, Some(100_000)), 100);
        assert_eq!(lease_size(None, Some(30)), 1);
        assert_eq!(lease_size(t(1_000_000.0, 1_000_000), Some(5_000)), 5, "the smaller");
    }
}
