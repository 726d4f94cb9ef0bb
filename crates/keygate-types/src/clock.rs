//! Time as keygate reads it: a monotonic [`Nanos`] instant for token buckets and UTC unix
//! milliseconds (`i64`) for quota periods, signatures and records. It lives here, below every
//! crate that needs it (the limiters, the gateway, the admin API), and `keygate-limits`
//! re-exports it.
//!
//! The limit algorithms never read a clock; they take `now` as an argument. [`Clock`] is the small
//! abstraction callers use to obtain `now`: [`SystemClock`] in production, [`ManualClock`] in
//! tests (settable and advanceable from any thread, so no test ever sleeps).

use std::ops::{Add, Sub};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A monotonic instant: nanoseconds since an arbitrary origin (for [`SystemClock`], the first
/// time any `SystemClock` was read in this process). `u64` nanoseconds last 584 years.
///
/// Only differences between two `Nanos` of the same clock mean anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Nanos(pub u64);

impl Nanos {
    /// The origin.
    pub const ZERO: Nanos = Nanos(0);

    /// The instant `d` after the origin (saturating at `u64::MAX` nanoseconds).
    pub fn from_duration(d: Duration) -> Self {
        Nanos(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
    }

    /// Nanoseconds since the origin.
    pub fn as_u64(self) -> u64 {
        self.0
    }

    /// Time since `earlier`; zero if `earlier` is later than `self`.
    pub fn saturating_duration_since(self, earlier: Nanos) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }
}

impl Add<Duration> for Nanos {
    type Output = Nanos;
    /// Saturating: a `Nanos` never wraps.
    fn add(self, rhs: Duration) -> Nanos {
        Nanos(self.0.saturating_add(Nanos::from_duration(rhs).0))
    }
}

impl Sub<Nanos> for Nanos {
    type Output = Duration;
    /// Saturating at zero, like [`Nanos::saturating_duration_since`].
    fn sub(self, rhs: Nanos) -> Duration {
        self.saturating_duration_since(rhs)
    }
}

/// Where callers get `now` from. Both readings must be cheap; neither may block.
pub trait Clock: Send + Sync {
    /// Monotonic time, for token buckets. Never goes backwards.
    fn now_mono(&self) -> Nanos;
    /// Wall-clock time as UTC unix milliseconds, for quota periods. May jump (NTP).
    fn now_unix_ms(&self) -> i64;
}

impl<C: Clock + ?Sized> Clock for &C {
    fn now_mono(&self) -> Nanos {
        (**self).now_mono()
    }
    fn now_unix_ms(&self) -> i64 {
        (**self).now_unix_ms()
    }
}

impl<C: Clock + ?Sized> Clock for std::sync::Arc<C> {
    fn now_mono(&self) -> Nanos {
        (**self).now_mono()
    }
    fn now_unix_ms(&self) -> i64 {
        (**self).now_unix_ms()
    }
}

/// The real clocks: [`Instant`] (relative to one process-wide origin, so every `SystemClock`
/// gives comparable [`Nanos`]) and [`SystemTime`].
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl SystemClock {
    fn origin() -> Instant {
        static ORIGIN: OnceLock<Instant> = OnceLock::new();
        *ORIGIN.get_or_init(Instant::now)
    }
}

impl Clock for SystemClock {
    fn now_mono(&self) -> Nanos {
        let origin = Self::origin();
        Nanos::from_duration(Instant::now().saturating_duration_since(origin))
    }

    fn now_unix_ms(&self) -> i64 {
        match SystemTime::now().duration_since(UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
            // A system clock set before 1970.
            Err(e) => i64::try_from(e.duration().as_millis()).map_or(i64::MIN, |ms| -ms),
        }
    }
}

/// A clock that moves only when told to. `Send + Sync`: share it (`&` or `Arc`) between test
/// threads and the code under test.
#[derive(Debug, Default)]
pub struct ManualClock {
    mono: AtomicU64,
    unix_ms: AtomicI64,
}

impl ManualClock {
    /// Monotonic time at [`Nanos::ZERO`], wall time at the unix epoch.
    pub fn new() -> Self {
        Self::default()
    }

    /// A clock reading `mono` and `unix_ms`.
    pub fn starting_at(mono: Nanos, unix_ms: i64) -> Self {
        Self { mono: AtomicU64::new(mono.0), unix_ms: AtomicI64::new(unix_ms) }
    }

    /// Moves both readings forward by `d` (wall time by whole milliseconds of `d`).
    pub fn advance(&self, d: Duration) {
        let nanos = Nanos::from_duration(d).0;
        // fetch_update never fails with a closure that always returns Some.
        let _ = self
            .mono
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |m| Some(m.saturating_add(nanos)));
        let ms = i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        let _ = self
            .unix_ms
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |w| Some(w.saturating_add(ms)));
    }

    /// Sets the monotonic reading. Tests may move it backwards to check robustness; real
    /// monotonic clocks never do.
    pub fn set_mono(&self, now: Nanos) {
        self.mono.store(now.0, Ordering::SeqCst);
    }

    /// Sets the wall-clock reading (UTC unix milliseconds).
    pub fn set_unix_ms(&self, unix_ms: i64) {
        self.unix_ms.store(unix_ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_mono(&self) -> Nanos {
        Nanos(self.mono.load(Ordering::SeqCst))
    }

    fn now_unix_ms(&self) -> i64 {
        self.unix_ms.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_told() {
        let clock = ManualClock::starting_at(Nanos(5), 1_000);
        assert_eq!(clock.now_mono(), Nanos(5));
        assert_eq!(clock.now_unix_ms(), 1_000);
        clock.advance(Duration::from_micros(1_500));
        assert_eq!(clock.now_mono(), Nanos(1_500_005));
        assert_eq!(clock.now_unix_ms(), 1_001);
        clock.set_mono(Nanos(7));
        clock.set_unix_ms(-3);
        let shared = std::sync::Arc::new(clock);
        assert_eq!(shared.now_mono(), Nanos(7));
        fn wall<C: Clock>(c: C) -> i64 {
            c.now_unix_ms()
        }
        assert_eq!(wall(&*shared), -3);
        assert_eq!(wall(shared), -3);
    }

    #[test]
    fn system_clock_is_monotonic_and_roughly_now() {
        let (a, b) = (SystemClock.now_mono(), SystemClock.now_mono());
        assert!(b >= a);
        // 2020-01-01 .. 2200-01-01: any machine running this test is in between.
        let ms = SystemClock.now_unix_ms();
        assert!((1_577_836_800_000..7_258_118_400_000).contains(&ms), "{ms}");
    }

    #[test]
    fn nanos_arithmetic_saturates() {
        assert_eq!(Nanos(u64::MAX - 1) + Duration::from_secs(1), Nanos(u64::MAX));
        assert_eq!(Nanos(3) - Nanos(5), Duration::ZERO);
        assert_eq!(Nanos(5) - Nanos(3), Duration::from_nanos(2));
        assert_eq!(Nanos::from_duration(Duration::MAX), Nanos(u64::MAX));
    }
}
