//! UTC calendar math for quota periods, and the [`Date`] of usage reports (`YYYY-MM-DD`, from
//! `keygate-types`, where stored records use it too).
//!
//! Quota periods follow Amazon API Gateway, in UTC:
//!
//! - `DAY` starts at 00:00 UTC (`offset` must be 0).
//! - `WEEK` starts on Sunday 00:00 UTC, shifted by `offset` days (0-6; 1 = Monday).
//! - `MONTH` starts on day `1 + offset` of the month at 00:00 UTC (0-27; 27 = the 28th, which
//!   every month has, so a period start is never invalid).
//!
//! An `offset` above [`QuotaPeriod::max_offset`] is clamped to it (validation belongs to the
//! config layer; the algorithm stays total).
//!
//! Dates are converted with Howard Hinnant's `days_from_civil` / `civil_from_days` algorithms
//! (proleptic Gregorian calendar, exact for every `i64` of milliseconds), so leap years (2000
//! and 2024 are, 2100 is not), month ends, year ends and instants before 1970 need no special
//! cases. Instants are UTC unix milliseconds (`i64`); results saturate at the ends of `i64`.

pub use keygate_types::date::{DAY_MS, Date};
use keygate_types::date::{civil_from_days, day_number, day_start_ms, days_from_civil, weekday};
use keygate_types::plan::{Quota, QuotaPeriod};

/// The UTC date containing `unix_ms` (the day a request counts for in daily usage).
pub fn day_of(unix_ms: i64) -> Date {
    Date::from_unix_ms(unix_ms)
}

/// Unix ms of the start of the quota period containing `unix_ms` (see the
/// [module docs](self) for the periods; `offset` is clamped to `period.max_offset()`).
pub fn period_start(unix_ms: i64, period: QuotaPeriod, offset: u32) -> i64 {
    day_start_ms(period_days(day_number(unix_ms), period, offset).0)
}

/// Unix ms of the end of the quota period containing `unix_ms`, which is the start of the next
/// one (exclusive: `unix_ms < period_end(unix_ms, ..)` always, up to saturation).
pub fn period_end(unix_ms: i64, period: QuotaPeriod, offset: u32) -> i64 {
    QuotaWindow::containing(unix_ms, period, offset).end_ms
}

/// First day of the period containing day `days`, and first day of the next period.
fn period_days(days: i64, period: QuotaPeriod, offset: u32) -> (i64, i64) {
    let offset = offset.min(period.max_offset());
    match period {
        QuotaPeriod::Day => (days, days + 1),
        QuotaPeriod::Week => {
            let start = days - i64::from((weekday(days) + 7 - offset) % 7);
            (start, start + 7)
        }
        QuotaPeriod::Month => {
            // The period starts on day `first` (1-28, which every month has) of this month if
            // that day has come, else of the previous month; it ends on that day a month later.
            let (y, m, d) = civil_from_days(days);
            let first = 1 + offset;
            let prev = |y: i64, m: u32| if m == 1 { (y - 1, 12) } else { (y, m - 1) };
            let next = |y: i64, m: u32| if m == 12 { (y + 1, 1) } else { (y, m + 1) };
            let ((sy, sm), (ey, em)) =
                if d >= first { ((y, m), next(y, m)) } else { (prev(y, m), (y, m)) };
            (days_from_civil(sy, sm, first), days_from_civil(ey, em, first))
        }
    }
}

/// One quota period: `[start_ms, end_ms)` in UTC unix milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct QuotaWindow {
    pub start_ms: i64,
    pub end_ms: i64,
}

impl QuotaWindow {
    /// The period of `period`/`offset` containing `unix_ms`.
    pub fn containing(unix_ms: i64, period: QuotaPeriod, offset: u32) -> Self {
        let (start, end) = period_days(day_number(unix_ms), period, offset);
        Self { start_ms: day_start_ms(start), end_ms: day_start_ms(end) }
    }

    /// The period of `quota` containing `unix_ms`.
    pub fn for_quota(unix_ms: i64, quota: &Quota) -> Self {
        Self::containing(unix_ms, quota.period, quota.offset)
    }

    pub fn contains(&self, unix_ms: i64) -> bool {
        (self.start_ms..self.end_ms).contains(&unix_ms)
    }

    /// Length in seconds (86 400 for a day; 2 419 200 to 2 678 400 for a month).
    pub fn len_secs(&self) -> u64 {
        (self.end_ms.saturating_sub(self.start_ms) / 1000).max(0) as u64
    }

    /// Whole seconds from `unix_ms` until the period ends, rounded up (0 once it has ended).
    pub fn secs_until_end(&self, unix_ms: i64) -> u64 {
        let ms = self.end_ms.saturating_sub(unix_ms).max(0) as u64;
        ms.div_ceil(1000)
    }

    /// The first day of the period (how usage grants name their period).
    pub fn start_date(&self) -> Date {
        Date::from_unix_ms(self.start_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `YYYY-MM-DDTHH:MM:SS.mmmZ` (or without `.mmm`) to unix ms; tests only.
    fn ms(s: &str) -> i64 {
        let date: Date = s[..10].parse().unwrap();
        let (h, m, sec): (i64, i64, i64) =
            (s[11..13].parse().unwrap(), s[14..16].parse().unwrap(), s[17..19].parse().unwrap());
        let milli: i64 = if s.len() > 20 { s[20..23].parse().unwrap() } else { 0 };
        date.start_unix_ms() + ((h * 60 + m) * 60 + sec) * 1000 + milli
    }

    fn date(s: &str) -> Date {
        s.parse().unwrap()
    }

    /// The period of `(period, offset)` containing `at` is `[start, end)` (both dates, 00:00 UTC).
    #[track_caller]
    fn check(at: &str, period: QuotaPeriod, offset: u32, start: &str, end: &str) {
        let t = ms(at);
        let (want_start, want_end) = (date(start).start_unix_ms(), date(end).start_unix_ms());
        let got = (period_start(t, period, offset), period_end(t, period, offset));
        assert_eq!(
            got,
            (want_start, want_end),
            "{at} {period} offset {offset}: got [{}, {}), want [{start}, {end})",
            day_of(got.0),
            day_of(got.1),
        );
        let window = QuotaWindow::containing(t, period, offset);
        assert_eq!((window.start_ms, window.end_ms), got);
        assert!(window.contains(t));
        assert!(!window.contains(window.end_ms));
        assert_eq!(window.start_date(), date(start));
        // Every instant of the window maps to the same window.
        assert_eq!(QuotaWindow::containing(window.start_ms, period, offset), window);
        assert_eq!(QuotaWindow::containing(window.end_ms - 1, period, offset), window);
    }

    use QuotaPeriod::{Day, Month, Week};

    #[test]
    fn day_periods() {
        check("2024-02-29T23:59:59.999Z", Day, 0, "2024-02-29", "2024-03-01");
        check("2024-03-01T00:00:00.000Z", Day, 0, "2024-03-01", "2024-03-02");
        check("2024-02-28T12:00:00Z", Day, 0, "2024-02-28", "2024-02-29");
        check("2100-02-28T08:00:00Z", Day, 0, "2100-02-28", "2100-03-01"); // 2100 is not leap
        check("2000-02-28T08:00:00Z", Day, 0, "2000-02-28", "2000-02-29"); // 2000 is
        check("2024-12-31T23:59:59Z", Day, 0, "2024-12-31", "2025-01-01");
        check("1970-01-01T00:00:00.000Z", Day, 0, "1970-01-01", "1970-01-02");
        check("1969-12-31T23:59:59.999Z", Day, 0, "1969-12-31", "1970-01-01");
        // A DAY offset is meaningless and clamped to 0.
        check("2026-11-25T10:00:00Z", Day, 3, "2026-11-25", "2026-11-26");
    }

    #[test]
    fn week_periods_for_every_offset() {
        // Wednesday 2026-11-25: the week starts on the last `offset` weekday on or before it.
        let cases = [
            (0, "2026-11-22", "2026-11-29"), // Sunday
            (1, "2026-11-23", "2026-11-30"), // Monday
            (2, "2026-11-24", "2026-12-01"), // Tuesday
            (3, "2026-11-25", "2026-12-02"), // Wednesday: today
            (4, "2026-11-19", "2026-11-26"), // Thursday: last week's
            (5, "2026-11-20", "2026-11-27"),
            (6, "2026-11-21", "2026-11-28"), // Saturday
        ];
        for (offset, start, end) in cases {
            check("2026-11-25T13:14:15Z", Week, offset, start, end);
            assert_eq!(date(start).weekday(), offset);
        }
        // Boundaries: the last ms of Saturday vs Sunday 00:00.
        check("2026-11-28T23:59:59.999Z", Week, 0, "2026-11-22", "2026-11-29");
        check("2026-11-29T00:00:00.000Z", Week, 0, "2026-11-29", "2026-12-06");
        // Across a year end, and before 1970 (1970-01-01 was a Thursday).
        check("2025-01-01T00:00:00Z", Week, 0, "2024-12-29", "2025-01-05");
        check("1970-01-01T00:00:00Z", Week, 0, "1969-12-28", "1970-01-04");
        check("1970-01-01T00:00:00Z", Week, 4, "1970-01-01", "1970-01-08");
        check("1969-12-31T23:59:59.999Z", Week, 4, "1969-12-25", "1970-01-01");
        // Offsets above 6 are clamped.
        check("2026-11-25T13:14:15Z", Week, 9, "2026-11-21", "2026-11-28");
    }

    #[test]
    fn month_periods() {
        check("2024-12-31T23:59:59Z", Month, 0, "2024-12-01", "2025-01-01");
        check("2025-01-01T00:00:00Z", Month, 0, "2025-01-01", "2025-02-01");
        check("2024-02-29T23:59:59.999Z", Month, 0, "2024-02-01", "2024-03-01");
        check("2100-02-15T00:00:00Z", Month, 0, "2100-02-01", "2100-03-01");
        check("1970-01-01T00:00:00Z", Month, 0, "1970-01-01", "1970-02-01");
        check("1969-12-31T23:59:59.999Z", Month, 0, "1969-12-01", "1970-01-01");
        // Offset 27: months start on the 28th.
        check("2025-03-05T10:00:00Z", Month, 27, "2025-02-28", "2025-03-28");
        check("2025-03-28T00:00:00Z", Month, 27, "2025-03-28", "2025-04-28");
        check("2025-03-27T23:59:59.999Z", Month, 27, "2025-02-28", "2025-03-28");
        check("2024-02-29T12:00:00Z", Month, 27, "2024-02-28", "2024-03-28");
        check("2025-01-10T00:00:00Z", Month, 27, "2024-12-28", "2025-01-28"); // year end
        check("2024-12-31T00:00:00Z", Month, 27, "2024-12-28", "2025-01-28");
        // Offset 14: the 15th.
        check("2025-07-14T23:00:00Z", Month, 14, "2025-06-15", "2025-07-15");
        check("2025-07-15T00:00:00Z", Month, 14, "2025-07-15", "2025-08-15");
        // Offsets above 27 are clamped.
        check("2025-03-30T00:00:00Z", Month, 30, "2025-03-28", "2025-04-28");
    }

    #[test]
    fn windows_tile_the_timeline() {
        // Every day from 1968 to 2104, for weeks with every offset and months with three: each
        // instant lies in its window, the window starts on the right weekday / day of month, and
        // consecutive windows meet exactly.
        let configs =
            (0..7).map(|o| (Week, o)).chain([(Month, 0), (Month, 13), (Month, 27), (Day, 0)]);
        let (first, last) =
            (date("1968-01-01").start_unix_ms(), date("2104-12-31").start_unix_ms());
        for (period, offset) in configs {
            let mut window = QuotaWindow::containing(first, period, offset);
            let mut t = first;
            while t <= last {
                // Probe early and late in each day.
                for probe in [t, t + DAY_MS - 1] {
                    if !window.contains(probe) {
                        let next = QuotaWindow::containing(probe, period, offset);
                        assert_eq!(next.start_ms, window.end_ms, "{period} {offset} at {probe}");
                        window = next;
                    }
                    assert!(window.contains(probe));
                }
                let start = window.start_date();
                match period {
                    Week => assert_eq!(start.weekday(), offset),
                    Month => assert_eq!(start.day(), offset + 1),
                    Day => assert_eq!(window.len_secs(), 86_400),
                }
                t += DAY_MS;
            }
        }
    }

    #[test]
    fn window_lengths_and_seconds_until_end() {
        let feb = QuotaWindow::containing(ms("2024-02-10T00:00:00Z"), Month, 0);
        assert_eq!(feb.len_secs(), 29 * 86_400);
        let feb = QuotaWindow::containing(ms("2100-02-10T00:00:00Z"), Month, 0);
        assert_eq!(feb.len_secs(), 28 * 86_400);
        let day = QuotaWindow::containing(ms("2024-02-10T23:59:58.500Z"), Day, 0);
        assert_eq!(day.len_secs(), 86_400);
        assert_eq!(day.secs_until_end(ms("2024-02-10T23:59:58.500Z")), 2);
        assert_eq!(day.secs_until_end(ms("2024-02-10T23:59:59.999Z")), 1);
        assert_eq!(day.secs_until_end(day.end_ms), 0);
        assert_eq!(day.secs_until_end(day.end_ms + 5_000), 0);
        let q = Quota { limit: 5, period: Week, offset: 1 };
        assert_eq!(QuotaWindow::for_quota(ms("2026-11-25T00:00:00Z"), &q).len_secs(), 7 * 86_400);
    }

    #[test]
    fn day_of_instants() {
        assert_eq!(day_of(0), date("1970-01-01"));
        assert_eq!(day_of(-1), date("1969-12-31"));
        assert_eq!(day_of(ms("2024-02-29T23:59:59.999Z")), date("2024-02-29"));
        assert_eq!(day_of(ms("2024-02-29T23:59:59.999Z") + 1), date("2024-03-01"));
        assert_eq!(day_of(1_764_892_800_000), date("2025-12-05"));
        // The ends of i64 neither panic nor overflow.
        for t in [i64::MIN, i64::MAX] {
            let d = day_of(t);
            let _ = d.to_string();
            for p in [Day, Week, Month] {
                let w = QuotaWindow::containing(t, p, p.max_offset());
                assert!(w.start_ms <= w.end_ms);
            }
        }
    }
}
