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
//! decided by the [`Unavailable`] policy, and so is every request of the next [`PAUSE`]
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

use super::{Ask, Limiter, Local, Verdict};
use crate::meter::{Admission, KeyPlan, MethodThrottle, RateLimitValues, StageLimits};

/// Longest a request waits for Redis.
pub const TIMEOUT: Duration = Duration::from_millis(100);
/// After Redis failed to answer, how long requests go straight to the [`Unavailable`] policy
/// before Redis is asked again.
pub const PAUSE: Duration = Duration::from_secs(1);

/// What decides a request while Redis cannot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Unavailable {
    /// The plan's limits, counted by this node alone (a plan's rate per node while it lasts).
    #[default]
    Local,
    /// 429 Too Many Requests with `Retry-After: 1`.
    Refuse,
}

impl std::str::FromStr for Unavailable {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "local" => Ok(Self::Local),
            "refuse" => Ok(Self::Refuse),
            other => Err(format!("{other:?} is not `local` or `refuse`")),
        }
    }
}

/// The decision and commit, atomic on the server. KEYS: the bucket, the quota count. ARGV:
/// the bucket's interval in µs (0: no throttle) and capacity, the quota's allowance (-1: no
/// quota), the count to start from when Redis has none, and when that count expires (unix
/// ms). Returns `{verdict, refill µs, quota remaining}`: verdict 1 admitted (refill: what the
/// bucket holds after this request), 0 throttled (refill: µs until a token), 2 over quota.
const SOURCE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local allowance = tonumber(ARGV[3])
local z, avail
if interval > 0 then
  local window = interval * tonumber(ARGV[2])
  local last = redis.call('GET', KEYS[1])
  if last then
    avail = math.min(math.max(now - tonumber(last), 0), window)
  else
    avail = window
  end
  if avail < interval then
    return {0, interval - avail, 0}
  end
  z = now - avail + interval
end
local used = 0
if allowance >= 0 then
  used = tonumber(redis.call('GET', KEYS[2]) or ARGV[4])
  if used >= allowance then
    return {2, 0, 0}
  end
end
if z then
  local ttl = math.ceil(interval * tonumber(ARGV[2]) / 1000) + 1000
  redis.call('SET', KEYS[1], string.format('%d', z), 'PX', ttl)
end
if allowance >= 0 then
  redis.call('SET', KEYS[2], string.format('%d', used + 1), 'PXAT', ARGV[5])
  return {1, (avail or 0) - interval, allowance - used - 1}
end
return {1, (avail or 0) - interval, 0}
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
    unavailable: Unavailable,
    /// Monotonic ns until which Redis is not asked (0: ask).
    paused_until: AtomicU64,
    /// Whether Redis is known to be down (for the warning when it is back).
    down: AtomicBool,
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
    /// A limiter on the Redis at `url` (`redis://[user:password@]host[:port][/db]`; `rediss://`
    /// for TLS is not built in). Connects lazily: a node starts while Redis is down, and decides
    /// by `unavailable` until it answers.
    ///
    /// # Errors
    /// A URL redis-rs cannot read (the message shows it without its password).
    pub fn new(
        url: &str,
        clock: Arc<dyn Clock>,
        unavailable: Unavailable,
    ) -> Result<Self, UrlError> {
        let shown = keygate_store::redact_url(url);
        let client = ::redis::Client::open(url)
            .map_err(|source| UrlError { shown: shown.clone(), source })?;
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
            unavailable,
            paused_until: AtomicU64::new(0),
            down: AtomicBool::new(false),
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
        let tag = format!("keygate:{{{}:{}}}", counters.plan_id, counters.key_id);
        let bucket_key = match method_throttle {
            Some(m) => format!("{tag}:m:{}", m.key),
            None => format!("{tag}:t"),
        };
        let quota = limits.quota.map(|q| {
            let window = QuotaWindow::for_quota(unix_ms, &q);
            let extra = counters.grant(window.start_date());
            (q, window, allowance(q.limit, extra))
        });
        let quota_key = match &quota {
            Some((_, w, _)) => format!("{tag}:q:{}", w.start_ms),
            None => format!("{tag}:q"),
        };
        let seed = quota.as_ref().map_or(0, |(_, w, _)| counters.known_usage(w));
        let call = Call { bucket_key, quota_key, throttle, quota, seed };
        // Owned copies for the fallback, should Redis not answer.
        let fallback = Fallback {
            limits: StageLimits {
                throttle: limits.throttle,
                quota: limits.quota,
                routes: Vec::new(),
            },
            method_throttle: method_throttle.cloned(),
        };
        let inner = Arc::clone(inner);
        let counters = Arc::clone(counters);
        Verdict::Pending(Box::pin(async move {
            match tokio::time::timeout(TIMEOUT, inner.ask(&call)).await {
                Ok(Ok(reply)) => {
                    inner.answered();
                    inner.admission(&call, &reply, &counters, unix_ms)
                }
                failed => {
                    let why = match failed {
                        Ok(Err(e)) => e.to_string(),
                        _ => format!("no answer within {} ms", TIMEOUT.as_millis()),
                    };
                    inner.failed(&why);
                    let now = inner.clock.now_mono();
                    let ask = Ask {
                        counters: &counters,
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

    fn describe(&self) -> String {
        let policy = match self.inner.unavailable {
            Unavailable::Local => "each node applies the limits alone",
            Unavailable::Refuse => "requests under a limit get 429",
        };
        format!(
            "redis at {} (shared by every node; while it is unavailable, {policy})",
            self.inner.shown
        )
    }
}

struct Fallback {
    limits: StageLimits,
    method_throttle: Option<MethodThrottle>,
}

impl Inner {
    async fn ask(&self, call: &Call) -> ::redis::RedisResult<Vec<i64>> {
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
            .invoke_async(&mut conn)
            .await
    }

    fn admission(
        &self,
        call: &Call,
        reply: &[i64],
        counters: &Arc<KeyPlan>,
        unix_ms: i64,
    ) -> Admission {
        let (verdict, refill_us, remaining) = match reply {
            [v, r, q, ..] => (*v, *r, *q),
            _ => (-1, 0, 0),
        };
        match verdict {
            1 => {
                counters.record_admitted(unix_ms);
                let refill = Duration::from_micros(refill_us.max(0).unsigned_abs());
                let burst = call.throttle.map(|t| BurstInfo::new(&t, &t.state_after(refill)));
                let quota = call.quota.as_ref().map(|(q, w, _)| {
                    QuotaInfo::new(q.limit, remaining.max(0).unsigned_abs(), w, unix_ms)
                });
                Admission::Allowed { headers: RateLimitValues::new(burst.as_ref(), quota.as_ref()) }
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
        match self.unavailable {
            Unavailable::Local => Local.admit(ask),
            Unavailable::Refuse => Verdict::Ready(Admission::Throttled { retry_after: Some(1) }),
        }
    }

    fn failed(&self, why: &str) {
        let until = self.clock.now_mono().0.saturating_add(PAUSE.as_nanos() as u64);
        self.paused_until.store(until, Ordering::Relaxed);
        if !self.down.swap(true, Ordering::Relaxed) {
            let policy = match self.unavailable {
                Unavailable::Local => "each node applies the plans' limits alone until it is back",
                Unavailable::Refuse => "limited requests get 429 until it is back",
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

/// The bucket's interval in whole microseconds (Redis's clock), at least 1.
fn interval_us(limits: &BucketLimits) -> u64 {
    let ns = limits.interval().as_nanos();
    u64::try_from(ns.div_ceil(1000)).unwrap_or(u64::MAX).max(1)
}
