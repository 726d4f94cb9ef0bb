//! The usage-plan throttle: a token bucket of capacity `burst_limit` refilled at `rate_limit`
//! tokens per second, starting full, implemented as GCRA (the generic cell rate algorithm).
//!
//! # GCRA in one paragraph
//!
//! Each token takes the *emission interval* `T = 1 s / rate` to refill; a full bucket of `B`
//! tokens takes the *window* `B·T`. Instead of a token count and a last-refill time, the bucket
//! keeps one number, `z`: the (virtual) instant at which the bucket was last empty. At `now` it
//! has accumulated `avail = min(now - z, B·T)` of refill time, i.e. `floor(avail / T)` whole
//! tokens. A request is admitted iff `avail ≥ T`, and then `z = now - avail + T` (one token's
//! worth of time spent). This is GCRA with the theoretical arrival time `tat = z + B·T`, written
//! so that the stored value does not depend on the limits (see below). Refusals write nothing,
//! so a client hammering while refused is not locked out any longer than one that waits. All
//! arithmetic is in integer nanoseconds: no float drift, however long the process runs; the only
//! rounding is `T` itself, to the nanosecond.
//!
//! # Limits are passed per call
//!
//! The state is only `z`; the limits ([`BucketLimits`], derived once per plan from its
//! [`Throttle`]) are an argument of every decision. When a plan's throttle changes, callers just
//! pass the new limits, and the bucket continues from the refill time it has accumulated, capped
//! by the new burst: an empty bucket stays empty and refills at the new rate (a retry is never
//! more than one new interval away), a bucket full for a while stays full, a bucket holding more
//! than the new burst is clamped to it, and raising the burst hands out no tokens by itself (the
//! bucket refills towards the new capacity). A partly filled bucket keeps its refill *time*, so
//! its token count scales with the rate change. No reset and no migration step are needed, and
//! nothing is written except on admission.
//!
//! `now` values from concurrent callers may arrive slightly out of order (a caller read the clock,
//! then lost the CPU). A late, older `now` sees less accumulated time, so it can only be refused
//! sooner, never admitted wrongly, except that on a full bucket the token is taken "as of" its
//! older timestamp, which is when the request did arrive.
//!
//! # Burst 0 and rate 0 block everything
//!
//! A bucket of capacity 0 can never hold the one token a request needs, and a bucket that never
//! refills would admit one burst per process lifetime, an accident of restart timing. So
//! `burst_limit == 0` or `rate_limit <= 0` (or NaN) gives [`BucketLimits::is_blocked`] limits:
//! every request is [`Decision::Limited`] with `retry_after == NEVER` ([`Duration::MAX`]), and
//! callers should send no `Retry-After` then. A zero throttle is thus read as "shut this traffic
//! off", never as "allow a trickle" (the alternative, `max(burst, 1)` when the rate is positive,
//! would silently admit traffic the plan says to refuse).

use std::time::Duration;

use keygate_types::plan::Throttle;

use crate::clock::Nanos;

/// `retry_after` of a request that no amount of waiting will admit (blocked limits).
pub const NEVER: Duration = Duration::MAX;

/// Upper bound on a bucket's window (`capacity × interval`), 2^62 ns ≈ 146 years. Limits beyond
/// it are clamped (a bucket that takes over a century to refill is indistinguishable from one
/// that takes 146 years).
const MAX_WINDOW_NS: u64 = 1 << 62;

/// Internally, instants are shifted by one maximal window, so that the initial state `z = 0` is
/// at least a full window before any `now`: a new bucket starts full even at `Nanos::ZERO`.
/// `Nanos` below 2^63 (292 years after the clock's origin) never saturate.
#[inline]
fn shifted(now: Nanos) -> u64 {
    now.0.saturating_add(MAX_WINDOW_NS)
}

/// Outcome of asking a bucket for one token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Admitted; `remaining` whole tokens are left after this request.
    Allowed { remaining: u32 },
    /// Refused, and nothing was consumed. `retry_after` is the time until one token is
    /// available (exact to the nanosecond, if nobody else takes it first), or [`NEVER`] for
    /// blocked limits.
    Limited { retry_after: Duration },
}

impl Decision {
    pub fn is_allowed(&self) -> bool {
        matches!(self, Decision::Allowed { .. })
    }

    /// `Some(retry_after)` when limited, `None` when allowed.
    pub fn retry_after(&self) -> Option<Duration> {
        match *self {
            Decision::Allowed { .. } => None,
            Decision::Limited { retry_after } => Some(retry_after),
        }
    }
}

/// A plan's throttle in the form the algorithm uses: emission interval in nanoseconds and
/// capacity. Cheap to copy; compute it once per plan, not per request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BucketLimits {
    /// Nanoseconds to refill one token; `0` only when blocked.
    interval_ns: u64,
    /// Bucket capacity in tokens; `0` means blocked.
    capacity: u32,
}

impl BucketLimits {
    /// Limits for `rate_limit` tokens per second (fractional rates welcome: `0.5` is one token
    /// every 2 s) and a capacity of `burst_limit` tokens.
    ///
    /// `burst_limit == 0`, `rate_limit <= 0` or NaN give [blocked](Self::is_blocked) limits.
    /// Rates above 10^9/s are taken as 10^9/s (one token per nanosecond); the interval is
    /// rounded to the nearest nanosecond, and the window is capped at ~146 years.
    pub fn new(rate_limit: f64, burst_limit: u32) -> Self {
        if burst_limit == 0 || rate_limit.is_nan() || rate_limit <= 0.0 {
            return Self::blocked();
        }
        // `as` saturates (and +inf / 1e9 → 0 → clamped to 1 ns).
        let interval_ns = ((1e9 / rate_limit).round() as u64).clamp(1, MAX_WINDOW_NS);
        let max_capacity = u32::try_from(MAX_WINDOW_NS / interval_ns).unwrap_or(u32::MAX);
        Self { interval_ns, capacity: burst_limit.min(max_capacity) }
    }

    /// Limits of a usage plan's throttle.
    pub fn from_throttle(throttle: &Throttle) -> Self {
        Self::new(throttle.rate_limit, throttle.burst_limit)
    }

    /// Limits that admit nothing.
    pub const fn blocked() -> Self {
        Self { interval_ns: 0, capacity: 0 }
    }

    /// True when no request can ever be admitted (burst 0 or rate 0).
    pub fn is_blocked(&self) -> bool {
        self.capacity == 0
    }

    /// Bucket capacity in tokens (0 when blocked).
    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    /// Time to refill one token ([`NEVER`] when blocked).
    pub fn interval(&self) -> Duration {
        if self.is_blocked() { NEVER } else { Duration::from_nanos(self.interval_ns) }
    }

    /// Time to refill the whole bucket ([`NEVER`] when blocked).
    pub fn window(&self) -> Duration {
        if self.is_blocked() { NEVER } else { Duration::from_nanos(self.window_ns()) }
    }

    /// The state of a bucket under these limits that has accumulated `refill` of refill time
    /// (capped by the window): for a bucket kept elsewhere (a shared counter that reports it).
    pub fn state_after(&self, refill: Duration) -> BucketState {
        let refill = u64::try_from(refill.as_nanos()).unwrap_or(u64::MAX);
        state_of(0, self, refill)
    }

    fn window_ns(&self) -> u64 {
        // ≤ MAX_WINDOW_NS by construction of `capacity`.
        u64::from(self.capacity) * self.interval_ns
    }
}

/// A bucket's state at some instant, for response headers. Reading it never consumes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BucketState {
    /// Whole tokens available now.
    pub available: u32,
    /// Time until `available` grows by one: zero when the bucket is full, [`NEVER`] when blocked.
    pub next_token: Duration,
    /// Time until the bucket is full: zero when full, [`NEVER`] when blocked.
    pub until_full: Duration,
}

/// One GCRA step from state `z` at (shifted) `now`: the decision and, when admitted, the new `z`.
#[inline]
fn step(z: u64, limits: &BucketLimits, now: u64) -> (Decision, Option<u64>) {
    if limits.is_blocked() {
        return (Decision::Limited { retry_after: NEVER }, None);
    }
    let t = limits.interval_ns;
    let window = limits.window_ns();
    let avail = now.saturating_sub(z).min(window);
    if avail < t {
        // `z + t - now`, also when a racing caller's older `now` is before `z`.
        let retry_after = z.saturating_add(t).saturating_sub(now);
        return (Decision::Limited { retry_after: Duration::from_nanos(retry_after) }, None);
    }
    let remaining = if avail == window {
        // A full bucket, the common case for a key that is not hammering: skip the division.
        limits.capacity - 1
    } else {
        // `(avail - t) / t < capacity`, so the cast cannot truncate.
        ((avail - t) / t) as u32
    };
    (Decision::Allowed { remaining }, Some(now - avail + t))
}

fn state_of(z: u64, limits: &BucketLimits, now: u64) -> BucketState {
    if limits.is_blocked() {
        return BucketState { available: 0, next_token: NEVER, until_full: NEVER };
    }
    let t = limits.interval_ns;
    let window = limits.window_ns();
    let avail = now.saturating_sub(z).min(window);
    let next_token = if avail == window { 0 } else { t - avail % t };
    BucketState {
        available: (avail / t) as u32,
        next_token: Duration::from_nanos(next_token),
        until_full: Duration::from_nanos(window - avail),
    }
}

/// A token bucket for one owner (`&mut self`), carrying its own limits; share it behind a lock
/// (the gateway decides throttle and quota under one per-key lock).
#[derive(Debug, Clone)]
pub struct TokenBucket {
    limits: BucketLimits,
    /// `z`, in shifted nanoseconds.
    empty_at: u64,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(limits: BucketLimits) -> Self {
        Self { limits, empty_at: 0 }
    }

    /// Takes one token if there is one. Refusals consume nothing.
    #[inline]
    pub fn try_acquire(&mut self, now: Nanos) -> Decision {
        let (decision, new) = step(self.empty_at, &self.limits, shifted(now));
        if let Some(z) = new {
            self.empty_at = z;
        }
        decision
    }

    /// The state at `now`, without taking anything.
    pub fn state(&self, now: Nanos) -> BucketState {
        state_of(self.empty_at, &self.limits, shifted(now))
    }

    pub fn limits(&self) -> BucketLimits {
        self.limits
    }

    /// Continues with new limits from the refill time accumulated so far, capped by the new
    /// burst. See the [module docs](self).
    pub fn update_limits(&mut self, limits: BucketLimits) {
        self.limits = limits;
    }

    /// A bucket in the state [`TokenBucket::raw`] gave, under `limits`: for callers that keep
    /// many buckets and their limits apart (`0` is a full bucket, as [`TokenBucket::new`]).
    pub fn from_raw(limits: BucketLimits, raw: u64) -> Self {
        Self { limits, empty_at: raw }
    }

    /// The bucket's state without its limits (see [`TokenBucket::from_raw`]).
    pub fn raw(&self) -> u64 {
        self.empty_at
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{Clock, ManualClock};

    const MS: Duration = Duration::from_millis(1);

    fn limits(rate: f64, burst: u32) -> BucketLimits {
        BucketLimits::new(rate, burst)
    }

    fn allowed(remaining: u32) -> Decision {
        Decision::Allowed { remaining }
    }

    fn limited(retry_after: Duration) -> Decision {
        Decision::Limited { retry_after }
    }

    /// A client that tries every 100 µs for `secs` seconds (end inclusive); returns admissions.
    fn hammer(rate: f64, burst: u32, secs: u64) -> u32 {
        let clock = ManualClock::new();
        let mut bucket = TokenBucket::new(limits(rate, burst));
        let mut admitted = 0;
        for _ in 0..=secs * 10_000 {
            if bucket.try_acquire(clock.now_mono()).is_allowed() {
                admitted += 1;
            }
            clock.advance(Duration::from_micros(100));
        }
        admitted
    }

    #[test]
    fn continuous_client_gets_burst_plus_rate_times_seconds() {
        let n = hammer(20.0, 10, 3);
        assert!((69..=71).contains(&n), "rate 20 burst 10 over 3 s admitted {n}, want 70 ±1");
        let n = hammer(1000.0, 1, 3);
        assert!((2999..=3001).contains(&n), "rate 1000 burst 1 over 3 s admitted {n}");
        let n = hammer(3.0, 2, 3);
        assert!((10..=12).contains(&n), "rate 3 burst 2 over 3 s admitted {n}");
    }

    #[test]
    fn state_after_a_refill_time_counts_whole_tokens() {
        let l = limits(10.0, 5); // 100 ms per token, 500 ms window
        let st = l.state_after(Duration::from_millis(250));
        assert_eq!(st.available, 2);
        assert_eq!(st.next_token, Duration::from_millis(50));
        assert_eq!(st.until_full, Duration::from_millis(250));
        let full = l.state_after(Duration::from_secs(9));
        assert_eq!(
            (full.available, full.next_token, full.until_full),
            (5, Duration::ZERO, Duration::ZERO)
        );
        assert_eq!(BucketLimits::blocked().state_after(Duration::ZERO).available, 0);
    }

    #[test]
    fn starts_full_and_counts_down() {
        let mut b = TokenBucket::new(limits(1.0, 3));
        let now = Nanos(1_000);
        assert_eq!(b.try_acquire(now), allowed(2));
        assert_eq!(b.try_acquire(now), allowed(1));
        assert_eq!(b.try_acquire(now), allowed(0));
        assert_eq!(b.try_acquire(now), limited(Duration::from_secs(1)));
    }

    #[test]
    fn fractional_rate_half_a_request_per_second() {
        let mut b = TokenBucket::new(limits(0.5, 1));
        let t0 = Nanos::from_duration(Duration::from_secs(100));
        assert_eq!(b.try_acquire(t0), allowed(0));
        assert_eq!(b.try_acquire(t0), limited(Duration::from_secs(2)));
        assert_eq!(b.try_acquire(t0 + Duration::from_millis(1500)), limited(500 * MS));
        assert_eq!(
            b.try_acquire(t0 + Duration::from_nanos(1_999_999_999)),
            limited(Duration::from_nanos(1))
        );
        assert_eq!(b.try_acquire(t0 + Duration::from_secs(2)), allowed(0));
        let n = hammer(0.5, 1, 10);
        assert_eq!(n, 6, "t = 0, 2, 4, 6, 8, 10 s");
    }

    #[test]
    fn refused_requests_consume_nothing() {
        // Two clients on identical buckets, rate 10 (100 ms per token), burst 1. One hammers
        // every millisecond while refused; the other waits. Both get the next token at 100 ms.
        let (mut patient, mut hammering) =
            (TokenBucket::new(limits(10.0, 1)), TokenBucket::new(limits(10.0, 1)));
        assert!(patient.try_acquire(Nanos::ZERO).is_allowed());
        assert!(hammering.try_acquire(Nanos::ZERO).is_allowed());
        for ms in 1..100 {
            let now = Nanos::ZERO + ms * MS;
            assert_eq!(hammering.try_acquire(now), limited((100 - ms) * MS), "at {ms} ms");
        }
        let at = Nanos::ZERO + 100 * MS;
        assert_eq!(hammering.try_acquire(at), allowed(0));
        assert_eq!(patient.try_acquire(at), allowed(0));
    }

    #[test]
    fn retry_after_is_exactly_when_a_token_is_back() {
        let mut b = TokenBucket::new(limits(4.0, 2)); // 250 ms per token
        let t0 = Nanos(7);
        assert!(b.try_acquire(t0).is_allowed());
        assert!(b.try_acquire(t0).is_allowed());
        let now = t0 + 100 * MS;
        let Decision::Limited { retry_after } = b.try_acquire(now) else { panic!("should limit") };
        assert_eq!(retry_after, 150 * MS);
        assert!(!b.try_acquire(now + (retry_after - Duration::from_nanos(1))).is_allowed());
        assert_eq!(b.try_acquire(now + retry_after), allowed(0));
    }

    #[test]
    fn state_reports_tokens_next_token_and_full() {
        let mut b = TokenBucket::new(limits(4.0, 3)); // 250 ms per token, 750 ms window
        let t0 = Nanos(0);
        let full =
            BucketState { available: 3, next_token: Duration::ZERO, until_full: Duration::ZERO };
        assert_eq!(b.state(t0), full);
        for _ in 0..3 {
            b.try_acquire(t0);
        }
        assert_eq!(
            b.state(t0),
            BucketState { available: 0, next_token: 250 * MS, until_full: 750 * MS }
        );
        assert_eq!(
            b.state(t0 + 300 * MS),
            BucketState { available: 1, next_token: 200 * MS, until_full: 450 * MS }
        );
        assert_eq!(b.state(t0 + 500 * MS).available, 2);
        assert_eq!(b.state(t0 + 500 * MS).next_token, 250 * MS);
        assert_eq!(b.state(t0 + 10_000 * MS), full);
    }

    #[test]
    fn burst_zero_or_rate_zero_blocks_everything() {
        for l in [limits(10.0, 0), limits(0.0, 10), limits(-1.0, 10), limits(f64::NAN, 10)] {
            assert!(l.is_blocked(), "{l:?}");
            assert_eq!(l, BucketLimits::blocked());
            let mut b = TokenBucket::new(l);
            assert_eq!(b.try_acquire(Nanos(0)), limited(NEVER));
            assert_eq!(b.try_acquire(Nanos(u64::MAX / 2)), limited(NEVER));
            assert_eq!(b.state(Nanos(0)).available, 0);
            assert_eq!(b.state(Nanos(0)).next_token, NEVER);
        }
        assert_eq!(BucketLimits::blocked().interval(), NEVER);
        assert_eq!(BucketLimits::blocked().window(), NEVER);
    }

    #[test]
    fn extreme_limits_are_clamped_not_overflowed() {
        let fast = limits(f64::INFINITY, 5);
        assert_eq!(fast.interval(), Duration::from_nanos(1));
        assert_eq!(fast.capacity(), 5);
        let slow = limits(1e-12, u32::MAX);
        assert!(slow.window() <= Duration::from_nanos(MAX_WINDOW_NS));
        assert!(slow.capacity() >= 1);
        let mut b = TokenBucket::new(slow);
        let now = Nanos(1 << 62);
        for _ in 0..slow.capacity() {
            assert!(b.try_acquire(now).is_allowed());
        }
        assert!(!b.try_acquire(now).is_allowed());
        let huge_burst = limits(1e9, u32::MAX);
        assert_eq!(huge_burst.capacity(), u32::MAX);
    }

    #[test]
    fn limit_change_mid_way_continues_without_reset() {
        let slow = limits(1.0, 10); // 1 s per token, 10 s window
        let mut b = TokenBucket::new(slow);
        let t0 = Nanos(0);
        for _ in 0..10 {
            assert!(b.try_acquire(t0).is_allowed());
        }
        assert!(!b.try_acquire(t0).is_allowed());

        // A bigger bucket at the same rate hands out no tokens by itself.
        b.update_limits(limits(1.0, 15));
        assert_eq!(b.try_acquire(t0), limited(Duration::from_secs(1)));

        // A much faster rate: the empty bucket refills at the new rate, one token 10 ms later.
        b.update_limits(limits(100.0, 15));
        assert_eq!(b.try_acquire(t0), limited(10 * MS));
        assert_eq!(b.try_acquire(t0 + 10 * MS), allowed(0));
        assert_eq!(b.try_acquire(t0 + 160 * MS), allowed(14));

        // Shrinking the burst clamps the 14 tokens present to the new capacity of 2.
        b.update_limits(limits(100.0, 2));
        assert_eq!(b.state(t0 + 160 * MS).available, 2);
        assert_eq!(b.try_acquire(t0 + 160 * MS), allowed(1));
        assert_eq!(b.limits(), limits(100.0, 2));

        // A slower rate: the one token left (10 ms of refill time at 160 ms, 20 ms by 170 ms) is
        // a fifth of a token at the new 100 ms interval, so the next one comes 80 ms later.
        b.update_limits(limits(10.0, 2));
        assert_eq!(b.try_acquire(t0 + 170 * MS), limited(80 * MS));
    }

    #[test]
    fn an_older_now_from_a_racing_caller_is_refused_not_admitted() {
        let mut a = TokenBucket::new(limits(10.0, 1)); // 100 ms per token
        let t = Nanos::ZERO + Duration::from_secs(5);
        assert!(a.try_acquire(t).is_allowed());
        assert_eq!(a.try_acquire(t), limited(100 * MS));
        // A caller that read the clock 30 ms before `t` arrives after the admission at `t`.
        let earlier = Nanos(t.0 - 30_000_000);
        assert_eq!(a.try_acquire(earlier), limited(130 * MS));
        assert_eq!(a.state(earlier).available, 0);
        assert_eq!(a.try_acquire(t + 100 * MS), allowed(0));
    }

    #[test]
    fn decision_helpers() {
        assert!(allowed(3).is_allowed());
        assert_eq!(allowed(3).retry_after(), None);
        assert_eq!(limited(MS).retry_after(), Some(MS));
        assert_eq!(limits(2.0, 4).interval(), 500 * MS);
        assert_eq!(limits(2.0, 4).window(), 2000 * MS);
        assert_eq!(
            BucketLimits::from_throttle(&Throttle { rate_limit: 2.0, burst_limit: 4 }),
            limits(2.0, 4)
        );
    }
}
