//! Usage-plan settings: throttle (token bucket) and quota (requests per calendar period), as
//! Amazon API Gateway defines them. Values only; the algorithms live in `keygate-limits`.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Token-bucket throttle: steady `rate_limit` requests per second (may be fractional), bucket
/// capacity `burst_limit`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Throttle {
    pub rate_limit: f64,
    pub burst_limit: u32,
}

/// What decides a plan's limits while the shared limiter (Redis, `--redis-url`) does not answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Fallback {
    /// Each node applies the plan's limits alone.
    Local,
    /// Requests under the plan's limits get 429.
    Refuse,
}

impl std::str::FromStr for Fallback {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "local" => Ok(Self::Local),
            "refuse" => Ok(Self::Refuse),
            _ => Err(format!("{s:?} is not `local` or `refuse`")),
        }
    }
}

impl Fallback {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Local => "local",
            Self::Refuse => "refuse",
        }
    }
}

/// Quota period, in UTC calendar terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum QuotaPeriod {
    Day,
    Week,
    Month,
}

impl QuotaPeriod {
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_uppercase().as_str() {
            "DAY" => Some(Self::Day),
            "WEEK" => Some(Self::Week),
            "MONTH" => Some(Self::Month),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Day => "DAY",
            Self::Week => "WEEK",
            Self::Month => "MONTH",
        }
    }

    /// Largest valid `offset` for the period: DAY 0; WEEK 0-6 (days after Sunday the week starts);
    /// MONTH 0-27 (days after the 1st the month starts).
    pub fn max_offset(self) -> u32 {
        match self {
            Self::Day => 0,
            Self::Week => 6,
            Self::Month => 27,
        }
    }
}

impl fmt::Display for QuotaPeriod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// At most `limit` requests per period. `offset` shifts the period start (see
/// [`QuotaPeriod::max_offset`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Quota {
    pub limit: u64,
    pub period: QuotaPeriod,
    #[serde(default)]
    pub offset: u32,
}

/// A usage plan declared in `provider.apiGateway.usagePlan`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UsagePlanDecl {
    /// The plan's full name: `<service>-<stage>` for the single-object form,
    /// `<service>-<name>-<stage>` for a named plan of the list form.
    pub name: String,
    /// The short name as written in the list form (`free`, `paid`); `None` for the single form.
    pub short_name: Option<String>,
    pub throttle: Option<Throttle>,
    pub quota: Option<Quota>,
    /// `custom.keygate.redisUnavailable`: what decides the plan's limits while Redis does not
    /// answer (`None`: the yml does not say; the plan keeps what it has).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<Fallback>,
}
