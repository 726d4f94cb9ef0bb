//! Values of the rate-limit response headers, as strings (no HTTP types here):
//!
//! - `RateLimit-Policy` and `RateLimit`, in the structured-field form of
//!   draft-ietf-httpapi-ratelimit-headers-11 (May 2026): each header is an SF List of Items whose
//!   value is the policy name as an SF String, with Integer parameters. A policy item has
//!   `q` (quota units, here requests) and `w` (window, seconds); a service-limit item has `r`
//!   (available quota) and `t` (seconds within which no more than `r` can be used).
//! - `Retry-After` in delay-seconds, rounded up, at least 1.
//!
//! keygate describes a usage plan as up to two policies, named `"burst"` (the throttle) and
//! `"quota"` (the period quota); a plan without one of them omits that item, and a plan with
//! neither sends neither header:
//!
//! ```text
//! RateLimit-Policy: "burst";q=10;w=1, "quota";q=1000;w=2592000
//! RateLimit: "burst";r=9;t=1, "quota";r=999;t=1209600
//! ```
//!
//! For `"burst"`, `q` is the bucket capacity and `w=1`: the draft has no token-bucket form, and
//! the capacity is what a client may send at once. `t` is the time until the next token (0 when
//! the bucket is full, omitted when it never refills). For `"quota"`, `w` is the length of the
//! current period (a month's varies from 28 to 31 days) and `t` the time until it ends.

use std::time::Duration;

use crate::bucket::{BucketLimits, BucketState, NEVER};
use crate::calendar::QuotaWindow;

/// Header names, as the draft and RFC 9110 spell them.
pub const RATELIMIT_POLICY: &str = "RateLimit-Policy";
pub const RATELIMIT: &str = "RateLimit";
pub const RETRY_AFTER: &str = "Retry-After";

/// Policy names keygate uses.
pub const BURST_POLICY: &str = "burst";
pub const QUOTA_POLICY: &str = "quota";

/// Largest Integer a structured field may carry (RFC 9651 §3.3.1: 15 digits).
const SF_INTEGER_MAX: u64 = 999_999_999_999_999;

/// The throttle's part of the headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BurstInfo {
    /// Bucket capacity (`q`).
    pub capacity: u32,
    /// Whole tokens available (`r`).
    pub remaining: u32,
    /// Time until one more token (`t`, rounded up); [`NEVER`] omits `t`.
    pub next_token: Duration,
}

impl BurstInfo {
    /// From a bucket's limits and its state (e.g. `TokenBucket::state` right after the
    /// decision).
    pub fn new(limits: &BucketLimits, state: &BucketState) -> Self {
        Self {
            capacity: limits.capacity(),
            remaining: state.available,
            next_token: state.next_token,
        }
    }
}

/// The quota's part of the headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaInfo {
    /// Requests the policy allows per period (`q`): the plan's configured limit (a grant from
    /// update-usage changes `remaining`, not the policy).
    pub limit: u64,
    /// Requests left in the period (`r`).
    pub remaining: u64,
    /// Period length in seconds (`w`).
    pub window_secs: u64,
    /// Seconds until the period ends, rounded up (`t`).
    pub reset_secs: u64,
}

impl QuotaInfo {
    /// For the period `window` at `now_ms`, `remaining` of `limit` left.
    pub fn new(limit: u64, remaining: u64, window: &QuotaWindow, now_ms: i64) -> Self {
        Self {
            limit,
            remaining,
            window_secs: window.len_secs(),
            reset_secs: window.secs_until_end(now_ms),
        }
    }
}

fn sf_int(n: u64) -> u64 {
    n.min(SF_INTEGER_MAX)
}

/// Appends the throttle's and the quota's parts (those that apply) to `out`, separated by `, `;
/// false (nothing written) when neither applies.
fn write_parts(
    out: &mut String,
    burst: Option<&BurstInfo>,
    quota: Option<&QuotaInfo>,
    write_burst: impl FnOnce(&mut String, &BurstInfo),
    write_quota: impl FnOnce(&mut String, &QuotaInfo),
) -> bool {
    if let Some(b) = burst {
        write_burst(out, b);
    }
    if let Some(q) = quota {
        if burst.is_some() {
            out.push_str(", ");
        }
        write_quota(out, q);
    }
    burst.is_some() || quota.is_some()
}

/// Appends `RateLimit-Policy` to `out`; false (nothing written) when there is neither throttle
/// nor quota. Writing into the caller's buffer lets the gateway build both header values in one
/// allocation per request.
pub fn write_ratelimit_policy(
    out: &mut String,
    burst: Option<&BurstInfo>,
    quota: Option<&QuotaInfo>,
) -> bool {
    write_parts(
        out,
        burst,
        quota,
        |out, b| push_item(out, BURST_POLICY, &[("q", u64::from(b.capacity)), ("w", 1)]),
        |out, q| {
            let window = sf_int(q.window_secs.max(1));
            push_item(out, QUOTA_POLICY, &[("q", sf_int(q.limit)), ("w", window)]);
        },
    )
}

/// Appends `RateLimit` to `out`; false (nothing written) when there is neither throttle nor
/// quota.
pub fn write_ratelimit(
    out: &mut String,
    burst: Option<&BurstInfo>,
    quota: Option<&QuotaInfo>,
) -> bool {
    write_parts(
        out,
        burst,
        quota,
        |out, b| {
            let remaining = ("r", u64::from(b.remaining));
            if b.next_token == NEVER {
                push_item(out, BURST_POLICY, &[remaining]);
            } else {
                push_item(out, BURST_POLICY, &[remaining, ("t", sf_int(ceil_secs(b.next_token)))]);
            }
        },
        |out, q| {
            push_item(
                out,
                QUOTA_POLICY,
                &[("r", sf_int(q.remaining)), ("t", sf_int(q.reset_secs))],
            );
        },
    )
}

/// Appends one structured-field list item: the policy name as a string, then integer
/// parameters (`"burst";r=9;t=1`). Numbers go through `itoa`: `write!` went through `fmt` for
/// ~300 instructions a number, on every admitted request.
fn push_item(out: &mut String, name: &str, params: &[(&str, u64)]) {
    out.push('"');
    out.push_str(name);
    out.push('"');
    for (key, value) in params {
        out.push(';');
        out.push_str(key);
        out.push('=');
        out.push_str(itoa::Buffer::new().format(*value));
    }
}

/// The `RateLimit-Policy` value, or `None` when there is neither throttle nor quota.
pub fn ratelimit_policy(burst: Option<&BurstInfo>, quota: Option<&QuotaInfo>) -> Option<String> {
    let mut s = String::new();
    write_ratelimit_policy(&mut s, burst, quota).then_some(s)
}

/// The `RateLimit` value, or `None` when there is neither throttle nor quota.
pub fn ratelimit(burst: Option<&BurstInfo>, quota: Option<&QuotaInfo>) -> Option<String> {
    let mut s = String::new();
    write_ratelimit(&mut s, burst, quota).then_some(s)
}

fn ceil_secs(d: Duration) -> u64 {
    let secs = d.as_secs();
    if d.subsec_nanos() > 0 { secs.saturating_add(1) } else { secs }
}

/// `Retry-After` delay-seconds for a wait of `d`: rounded up, at least 1 (a client told 0 would
/// retry at once and be refused again). Saturates at `u64::MAX` for [`NEVER`]; send no
/// `Retry-After` then.
pub fn retry_after_secs(d: Duration) -> u64 {
    ceil_secs(d).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bucket::TokenBucket;
    use crate::calendar::Date;
    use crate::clock::Nanos;
    use keygate_types::plan::QuotaPeriod;

    #[track_caller]
    fn check(burst: Option<BurstInfo>, quota: Option<QuotaInfo>, policy: &str, limit: &str) {
        let got = (
            ratelimit_policy(burst.as_ref(), quota.as_ref()).unwrap_or_default(),
            ratelimit(burst.as_ref(), quota.as_ref()).unwrap_or_default(),
        );
        assert_eq!(got, (policy.to_owned(), limit.to_owned()));
    }

    fn burst(capacity: u32, remaining: u32, next_token: Duration) -> BurstInfo {
        BurstInfo { capacity, remaining, next_token }
    }

    fn quota(limit: u64, remaining: u64, window_secs: u64, reset_secs: u64) -> QuotaInfo {
        QuotaInfo { limit, remaining, window_secs, reset_secs }
    }

    #[test]
    fn header_values() {
        let ms = Duration::from_millis;
        check(None, None, "", "");
        check(Some(burst(10, 9, ms(50))), None, "\"burst\";q=10;w=1", "\"burst\";r=9;t=1");
        check(
            None,
            Some(quota(1000, 999, 2_592_000, 1_209_600)),
            "\"quota\";q=1000;w=2592000",
            "\"quota\";r=999;t=1209600",
        );
        check(
            Some(burst(10, 0, ms(2000))),
            Some(quota(1000, 0, 86_400, 61)),
            "\"burst\";q=10;w=1, \"quota\";q=1000;w=86400",
            "\"burst\";r=0;t=2, \"quota\";r=0;t=61",
        );
        // Full bucket: t=0. Blocked throttle: no t. Huge quota: capped to an SF Integer.
        check(Some(burst(5, 5, Duration::ZERO)), None, "\"burst\";q=5;w=1", "\"burst\";r=5;t=0");
        check(Some(burst(0, 0, NEVER)), None, "\"burst\";q=0;w=1", "\"burst\";r=0");
        check(
            None,
            Some(quota(u64::MAX, u64::MAX, 86_400, 1)),
            "\"quota\";q=999999999999999;w=86400",
            "\"quota\";r=999999999999999;t=1",
        );
    }

    #[test]
    fn infos_from_bucket_and_window() {
        let limits = BucketLimits::new(0.5, 3); // 2 s per token
        let mut b = TokenBucket::new(limits);
        b.try_acquire(Nanos(0));
        let info = BurstInfo::new(&limits, &b.state(Nanos::ZERO + Duration::from_millis(500)));
        assert_eq!(info, burst(3, 2, Duration::from_millis(1500)));
        assert_eq!(ratelimit(Some(&info), None).unwrap(), "\"burst\";r=2;t=2");

        let now = "2024-02-10".parse::<Date>().unwrap().start_unix_ms() + 1;
        let window = QuotaWindow::containing(now, QuotaPeriod::Month, 0);
        let info = QuotaInfo::new(500, 42, &window, now);
        assert_eq!(info, quota(500, 42, 29 * 86_400, 20 * 86_400));
    }

    #[test]
    fn retry_after_rounds_up_and_is_at_least_one() {
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_nanos(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_secs(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1001)), 2);
        assert_eq!(retry_after_secs(Duration::from_secs(59)), 59);
        assert_eq!(retry_after_secs(NEVER), u64::MAX);
    }
}
