//! keygate's limit algorithms: the usage-plan **throttle** (a token bucket, implemented as GCRA)
//! and **quota** (requests per UTC calendar period), plus the values of the `RateLimit`,
//! `RateLimit-Policy` and `Retry-After` response headers.
//!
//! This crate is **pure**: no IO, no async runtime, no global state in the algorithms. Time is
//! always **injected**: every decision takes `now` as an argument — a monotonic [`Nanos`] for
//! buckets, UTC unix milliseconds (`i64`) for quotas. The [`Clock`] trait, with [`SystemClock`]
//! for production and [`ManualClock`] for tests, is only a convenience for callers; nothing in
//! the algorithms reads it.
//!
//! | module | owns |
//! |---|---|
//! | [`clock`] (from `keygate-types`) | [`Nanos`], [`Clock`], [`SystemClock`], [`ManualClock`] |
//! | [`bucket`] | [`BucketLimits`], [`TokenBucket`], [`Decision`] |
//! | [`calendar`] | [`Date`], [`period_start`], [`period_end`], [`QuotaWindow`] |
//! | [`quota`] | [`check_quota`], [`allowance`], [`QuotaDecision`] |
//! | [`headers`] | `RateLimit-Policy`, `RateLimit`, `Retry-After` values |
//!
//! A typical gateway request path, per API key:
//!
//! ```
//! use keygate_limits::{BucketLimits, Clock, Decision, ManualClock, QuotaDecision, TokenBucket,
//!     check_quota};
//! use keygate_types::plan::{Quota, QuotaPeriod, Throttle};
//!
//! let clock = ManualClock::new();
//! let limits = BucketLimits::from_throttle(&Throttle { rate_limit: 10.0, burst_limit: 5 });
//! let quota = Quota { limit: 1000, period: QuotaPeriod::Month, offset: 0 };
//! let (mut bucket, used) = (TokenBucket::new(limits), 0);
//!
//! match bucket.try_acquire(clock.now_mono()) {
//!     Decision::Allowed { .. } => {}
//!     Decision::Limited { retry_after } => panic!("429, retry in {retry_after:?}"),
//! }
//! match check_quota(&quota, used, 0, clock.now_unix_ms()) {
//!     QuotaDecision::Allowed { remaining } => assert_eq!(remaining, 999),
//!     QuotaDecision::Exceeded { retry_after_secs } => panic!("429, retry in {retry_after_secs}s"),
//! }
//! ```
//!
//! Note the order: a request refused by the throttle must not count against the quota, so check
//! the bucket first (refusals do not consume tokens either).

pub mod bucket;
pub mod calendar;
pub mod headers;
pub mod quota;

pub use bucket::{BucketLimits, BucketState, Decision, NEVER, TokenBucket};
pub use calendar::{Date, QuotaWindow, day_of, period_end, period_start};
/// The clock lives in `keygate-types` (the admin API uses it too); re-exported where the limiters
/// always had it.
pub use keygate_types::clock;
pub use keygate_types::clock::{Clock, ManualClock, Nanos, SystemClock};
pub use quota::{QuotaDecision, allowance, check_quota};

/// Errors of this crate: only parsing a date can fail; every decision is total. The date and its
/// errors live in `keygate-types` (stored records use them too).
pub use keygate_types::date::DateError as Error;

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
