//! A UTC calendar [`Date`] (`YYYY-MM-DD`): the day of daily usage and the first day of a quota
//! period, in stored records and reports. Dates are converted with Howard Hinnant's
//! `days_from_civil` / `civil_from_days` algorithms (proleptic Gregorian calendar, exact for every
//! `i64` of milliseconds), so leap years, month ends, year ends and instants before 1970 need no
//! special cases. The quota periods built on them are `keygate_limits::calendar`'s.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a text or numbers are not a date.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DateError {
    /// The text is not of the form `YYYY-MM-DD` (four-digit year, two-digit month and day).
    DateFormat { input: String },
    /// The month is not 01-12.
    DateMonth { input: String, month: u32 },
    /// The day does not exist in that month.
    DateDay { input: String, year: i32, month: u32, day: u32 },
}

impl fmt::Display for DateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::DateFormat { input } => write!(f, "invalid date {input:?}: expected YYYY-MM-DD"),
            Self::DateMonth { input, month } => {
                write!(f, "invalid date {input:?}: month {month} is not 01-12")
            }
            Self::DateDay { input, year, month, day } => write!(
                f,
                "invalid date {input:?}: day {day} does not exist in {year:04}-{month:02}"
            ),
        }
    }
}

impl std::error::Error for DateError {}

/// Milliseconds in a day. UTC as computers keep it (unix time) has no leap seconds.
pub const DAY_MS: i64 = 86_400_000;

/// Days since 1970-01-01 of the proleptic Gregorian date `y-m-d` (`m` 1-12, `d` 1-31).
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
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
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
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
pub fn day_number(unix_ms: i64) -> i64 {
    unix_ms.div_euclid(DAY_MS)
}

/// Unix ms of 00:00 UTC of day `days`, saturating.
pub fn day_start_ms(days: i64) -> i64 {
    days.saturating_mul(DAY_MS)
}

/// Day of the week of day `days`, Sunday = 0 (1970-01-01 was a Thursday).
pub fn weekday(days: i64) -> u32 {
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
    /// [`DateError::DateMonth`] or [`DateError::DateDay`] when that day does not exist.
    pub fn new(year: i32, month: u32, day: u32) -> Result<Self, DateError> {
        let input = || format!("{year:04}-{month:02}-{day:02}");
        if !(1..=12).contains(&month) {
            return Err(DateError::DateMonth { input: input(), month });
        }
        if day == 0 || day > days_in_month(i64::from(year), month) {
            return Err(DateError::DateDay { input: input(), year, month, day });
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
    type Err = DateError;

    /// Parses exactly `YYYY-MM-DD` (ASCII digits, four-digit year).
    fn from_str(s: &str) -> Result<Self, DateError> {
        let format_err = || DateError::DateFormat { input: s.to_owned() };
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
            DateError::DateMonth { month, .. } => {
                DateError::DateMonth { input: s.to_owned(), month }
            }
            DateError::DateDay { year, month, day, .. } => {
                DateError::DateDay { input: s.to_owned(), year, month, day }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn date(s: &str) -> Date {
        s.parse().unwrap()
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
        assert!(matches!(Date::new(2024, 2, 30), Err(DateError::DateDay { day: 30, .. })));
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
