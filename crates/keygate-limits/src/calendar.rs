//! UTC calendar math for quota periods, and the [`Date`] of usage reports (`YYYY-MM-DD`).
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

use std::fmt;
use std::str::FromStr;

use keygate_types::plan::{Quota, QuotaPeriod};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::Error;

/// Milliseconds in a day. UTC as computers keep it (unix time) has no leap seconds.
pub const DAY_MS: i64 = 86_400_000;

/// Days since 1970-01-01 of the proleptic Gregorian date `y-m-d` (`m` 1-12, `d` 1-31).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    // Years start in March, so the leap day is the last day of the year.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400); // [0, 399]
    let mp = i64::from((m + 9) % 12); // March = 0
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1; // [0, 365]
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy; // [0, 146096]
    era * 146_097 + doe - 719_468
}

/// The date of day `z` since 1970-01-01: `(year, month 1-12, day 1-31)`.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11], March = 0
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32; // [1, 31]
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32; // [1, 12]
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

fn is_leap(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

/// Days in `month` (1-12) of `year`.
fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// The day (since 1970-01-01) containing `unix_ms`.
fn day_number(unix_ms: i64) -> i64 {
    unix_ms.div_euclid(DAY_MS)
}

/// Unix ms of 00:00 UTC of day `days`, saturating.
fn day_start_ms(days: i64) -> i64 {
    days.saturating_mul(DAY_MS)
}

/// Day of the week of day `days`, Sunday = 0 (1970-01-01 was a Thursday).
fn weekday(days: i64) -> u32 {
    (days + 4).rem_euclid(7) as u32
}

/// A UTC calendar date. Displays and parses as `YYYY-MM-DD`; serializes as that string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Date {
    // Field order gives the chronological `Ord`.
    year: i32,
    month: u8,
    day: u8,
}

impl Date {
    /// The date `year-month-day`.
    ///
    /// # Errors
    ///
    /// [`Error::DateMonth`] or [`Error::DateDay`] when that day does not exist.
    pub fn new(year: i32, month: u32, day: u32) -> crate::Result<Self> {
        let input = || format!("{year:04}-{month:02}-{day:02}");
        if !(1..=12).contains(&month) {
            return Err(Error::DateMonth { input: input(), month });
        }
        if day == 0 || day > days_in_month(i64::from(year), month) {
            return Err(Error::DateDay { input: input(), year, month, day });
        }
        Ok(Self { year, month: month as u8, day: day as u8 })
    }

    /// The UTC date containing the instant `unix_ms`.
    pub fn from_unix_ms(unix_ms: i64) -> Self {
        Self::from_days(day_number(unix_ms))
    }

    /// The date `days` days after 1970-01-01 (every `i64` day count of an `i64` of milliseconds
    /// has a year that fits an `i32`).
    fn from_days(days: i64) -> Self {
        let (y, m, d) = civil_from_days(days);
        Self { year: y as i32, month: m as u8, day: d as u8 }
    }

    /// Days since 1970-01-01 (negative before).
    pub fn days_since_epoch(self) -> i64 {
        days_from_civil(i64::from(self.year), u32::from(self.month), u32::from(self.day))
    }

    /// Unix ms of 00:00 UTC on this date.
    pub fn start_unix_ms(self) -> i64 {
        day_start_ms(self.days_since_epoch())
    }

    pub fn year(self) -> i32 {
        self.year
    }

    /// 1-12.
    pub fn month(self) -> u32 {
        u32::from(self.month)
    }

    /// 1-31.
    pub fn day(self) -> u32 {
        u32::from(self.day)
    }

    /// Day of the week, Sunday = 0 … Saturday = 6.
    pub fn weekday(self) -> u32 {
        weekday(self.days_since_epoch())
    }

    /// The date `n` days later (earlier when negative).
    pub fn add_days(self, n: i64) -> Self {
        Self::from_days(self.days_since_epoch() + n)
    }
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if (0..=9999).contains(&self.year) {
            write!(f, "{:04}-{:02}-{:02}", self.year, self.month, self.day)
        } else {
            // ISO 8601 expanded years; never produced for instants between years 0 and 9999.
            write!(f, "{:+05}-{:02}-{:02}", self.year, self.month, self.day)
        }
    }
}

impl FromStr for Date {
    type Err = Error;

    /// Parses exactly `YYYY-MM-DD` (ASCII digits, four-digit year).
    fn from_str(s: &str) -> crate::Result<Self> {
        let format_err = || Error::DateFormat { input: s.to_owned() };
        let b = s.as_bytes();
        let digits = |r: std::ops::Range<usize>| {
            b[r].iter()
                .try_fold(0u32, |n, &c| c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0')))
        };
        if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
            return Err(format_err());
        }
        let (Some(year), Some(month), Some(day)) = (digits(0..4), digits(5..7), digits(8..10))
        else {
            return Err(format_err());
        };
        // Re-label the errors of `new` with the caller's text.
        Date::new(year as i32, month, day).map_err(|e| match e {
            Error::DateMonth { month, .. } => Error::DateMonth { input: s.to_owned(), month },
            Error::DateDay { year, month, day, .. } => {
                Error::DateDay { input: s.to_owned(), year, month, day }
            }
            other => other,
        })
    }
}

impl Serialize for Date {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Date {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

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
    fn civil_conversion_round_trips() {
        // Every day from 1600 to 2500, against an independent day-by-day walk.
        let mut expected = Date::new(1600, 1, 1).unwrap();
        let first = expected.days_since_epoch();
        for days in first..first + 900 * 366 {
            let d = Date::from_days(days);
            assert_eq!(d, expected, "day {days}");
            assert_eq!(d.days_since_epoch(), days);
            expected = if expected.day() < days_in_month(expected.year().into(), expected.month()) {
                Date::new(expected.year(), expected.month(), expected.day() + 1).unwrap()
            } else if expected.month() < 12 {
                Date::new(expected.year(), expected.month() + 1, 1).unwrap()
            } else {
                Date::new(expected.year() + 1, 1, 1).unwrap()
            };
        }
        assert_eq!(Date::new(1970, 1, 1).unwrap().days_since_epoch(), 0);
        assert_eq!(Date::new(2000, 3, 1).unwrap().days_since_epoch(), 11_017);
        assert_eq!(Date::new(1970, 1, 1).unwrap().weekday(), 4);
        assert_eq!(date("2026-11-25").weekday(), 3);
        assert_eq!(date("2024-02-28").add_days(1), date("2024-02-29"));
        assert_eq!(date("2100-02-28").add_days(1), date("2100-03-01"));
        assert_eq!(date("2000-02-28").add_days(1), date("2000-02-29"));
        assert_eq!(date("1970-01-01").add_days(-1), date("1969-12-31"));
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

    #[test]
    fn date_display_and_parse() {
        let d = Date::new(2024, 2, 29).unwrap();
        assert_eq!(d.to_string(), "2024-02-29");
        assert_eq!("2024-02-29".parse::<Date>().unwrap(), d);
        assert_eq!((d.year(), d.month(), d.day()), (2024, 2, 29));
        assert_eq!(Date::new(7, 3, 4).unwrap().to_string(), "0007-03-04");
        assert_eq!(Date::from_days(days_from_civil(-1, 1, 1)).to_string(), "-0001-01-01");
        assert_eq!(Date::from_days(days_from_civil(10_000, 1, 1)).to_string(), "+10000-01-01");
        assert!(date("2024-01-31") < date("2024-02-01"));
        assert!(date("2023-12-31") < date("2024-01-01"));
    }

    #[test]
    fn date_parse_errors() {
        fn err(s: &str) -> String {
            s.parse::<Date>().unwrap_err().to_string()
        }
        let format = |s: &str| format!("invalid date {s:?}: expected YYYY-MM-DD");
        for s in [
            "",
            "2024-2-29",
            "2024/02/29",
            "24-02-29",
            "2024-02-29T00:00:00Z",
            " 2024-02-29",
            "2024-0a-01",
            "+024-02-01",
            "2024-02-+1",
            "２０２４-02-29",
        ] {
            assert_eq!(err(s), format(s), "{s:?}");
        }
        assert_eq!(err("2024-13-01"), "invalid date \"2024-13-01\": month 13 is not 01-12");
        assert_eq!(err("2024-00-10"), "invalid date \"2024-00-10\": month 0 is not 01-12");
        assert_eq!(
            err("2023-02-29"),
            "invalid date \"2023-02-29\": day 29 does not exist in 2023-02"
        );
        assert_eq!(
            err("2100-02-29"),
            "invalid date \"2100-02-29\": day 29 does not exist in 2100-02"
        );
        assert_eq!(
            err("2024-04-31"),
            "invalid date \"2024-04-31\": day 31 does not exist in 2024-04"
        );
        assert_eq!(
            err("2024-01-00"),
            "invalid date \"2024-01-00\": day 0 does not exist in 2024-01"
        );
        assert!("2000-02-29".parse::<Date>().is_ok());
        assert!(matches!(Date::new(2024, 2, 30), Err(Error::DateDay { day: 30, .. })));
    }

    #[test]
    fn date_serde_is_the_string() {
        let d = date("2025-03-28");
        assert_eq!(serde_json::to_string(&d).unwrap(), "\"2025-03-28\"");
        assert_eq!(serde_json::from_str::<Date>("\"2025-03-28\"").unwrap(), d);
        let e = serde_json::from_str::<Date>("\"2025-02-30\"").unwrap_err().to_string();
        assert!(e.contains("day 30 does not exist in 2025-02"), "{e}");
    }
}
