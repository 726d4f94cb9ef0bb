//! Report-only enforcement (`private: report`): the requests a report-only route let through
//! that its key check or usage plan would have refused, tallied in memory by hour, route,
//! reason, key and client, and written to the store with the usage (`keygate enforcement
//! report` reads them back, grouped by client).
//!
//! Bounded: see [`crate::tally`].

use std::net::IpAddr;

use keygate_types::model::WouldRefuse;

use crate::tally::{Counts, Tallies};
/// The reasons a key check or a usage plan refuses with (the access log's).
const REASONS: &[&str] = &[
    "missing_key",
    "several_keys",
    "unknown_key",
    "bad_checksum",
    "disabled_key",
    "expired_key",
    "key_not_in_plan",
    "throttled",
    "quota_exceeded",
];
/// Characters of a `User-Agent` kept.
const USER_AGENT_LEN: usize = 256;

/// One would-be refusal, as [`Reports::record`] takes it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Seen<'a> {
    pub(crate) api_id: &'a str,
    pub(crate) stage: &'a str,
    pub(crate) method: &'a str,
    pub(crate) path: &'a str,
    pub(crate) reason: &'static str,
    pub(crate) key_id: Option<&'a str>,
    pub(crate) client: IpAddr,
    pub(crate) user_agent: Option<&'a [u8]>,
    pub(crate) unix_secs: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Tally {
    hour: i64,
    api_id: String,
    stage: String,
    method: String,
    path: String,
    reason: &'static str,
    key_id: Option<String>,
    client: IpAddr,
    user_agent: String,
}

/// The would-be refusals not written yet.
#[derive(Debug, Default)]
pub struct Reports {
    tallies: Tallies<Tally>,
}

impl Reports {
    /// Tallies one would-be refusal.
    pub(crate) fn record(&self, seen: &Seen<'_>) {
        let tally = Tally {
            hour: seen.unix_secs - seen.unix_secs.rem_euclid(3600),
            api_id: seen.api_id.to_owned(),
            stage: seen.stage.to_owned(),
            method: seen.method.to_owned(),
            path: seen.path.to_owned(),
            reason: seen.reason,
            key_id: seen.key_id.map(str::to_owned),
            client: seen.client,
            user_agent: user_agent(seen.user_agent),
        };
        self.tallies.record(tally, seen.unix_secs);
    }

    /// Takes what is pending, as the store's rows.
    pub(crate) fn take(&self) -> Vec<WouldRefuse> {
        self.tallies
            .take()
            .into_iter()
            .map(|(t, c)| WouldRefuse {
                hour: t.hour,
                api_id: t.api_id,
                stage: t.stage,
                method: t.method,
                path: t.path,
                reason: t.reason.to_owned(),
                key_id: t.key_id,
                client: t.client.to_string(),
                user_agent: t.user_agent,
                count: c.count,
                first_seen: c.first_seen,
                last_seen: c.last_seen,
            })
            .collect()
    }

    /// Puts rows a write could not store back (as far as there is room), to try again.
    pub(crate) fn restore(&self, rows: Vec<WouldRefuse>) {
        for r in rows {
            let Ok(client) = r.client.parse() else { continue };
            let Some(&reason) = REASONS.iter().find(|&&x| x == r.reason) else { continue };
            let tally = Tally {
                hour: r.hour,
                api_id: r.api_id,
                stage: r.stage,
                method: r.method,
                path: r.path,
                reason,
                key_id: r.key_id,
                client,
                user_agent: r.user_agent,
            };
            let counts =
                Counts { count: r.count, first_seen: r.first_seen, last_seen: r.last_seen };
            self.tallies.add(tally, counts);
        }
    }

    /// Would-be refusals not tallied because the tally was full.
    pub fn dropped(&self) -> u64 {
        self.tallies.dropped()
    }
}

/// A client's `User-Agent` as kept: at most [`USER_AGENT_LEN`] characters, lossy UTF-8.
pub(crate) fn user_agent(value: Option<&[u8]>) -> String {
    value.map_or_else(String::new, |ua| {
        String::from_utf8_lossy(ua).chars().take(USER_AGENT_LEN).collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(reason: &'static str, client: &str, at: i64) -> Seen<'static> {
        Seen {
            api_id: "a",
            stage: "dev",
            method: "GET",
            path: "/c",
            reason,
            key_id: None,
            client: client.parse().unwrap(),
            user_agent: Some(b"curl/8"),
            unix_secs: at,
        }
    }

    #[test]
    fn tallies_by_hour_and_client_and_stay_bounded() {
        let r = Reports::default();
        r.record(&seen("missing_key", "10.0.0.1", 7200 + 5));
        r.record(&seen("missing_key", "10.0.0.1", 7200 + 9));
        r.record(&seen("missing_key", "10.0.0.1", 10_800));
        r.record(&seen("unknown_key", "10.0.0.2", 7200));
        let mut rows = r.take();
        rows.sort_by_key(|w| (w.hour, w.client.clone()));
        let got: Vec<_> = rows
            .iter()
            .map(|w| (w.hour, w.client.as_str(), w.count, w.first_seen, w.last_seen))
            .collect();
        assert_eq!(
            got,
            [
                (7200, "10.0.0.1", 2, 7205, 7209),
                (7200, "10.0.0.2", 1, 7200, 7200),
                (10_800, "10.0.0.1", 1, 10_800, 10_800)
            ]
        );
        assert!(r.take().is_empty());
        // A failed write puts its rows back.
        r.restore(rows);
        assert_eq!(r.take().iter().map(|w| w.count).sum::<u64>(), 4);
        // Bounded.
        for i in 0..crate::tally::MAX_PENDING + 5 {
            let client = format!("10.1.{}.{}", i / 256, i % 256);
            r.record(&Seen {
                client: client.parse().unwrap(),
                ..seen("missing_key", "10.0.0.1", 1)
            });
        }
        assert_eq!(r.dropped(), 5);
        assert_eq!(r.take().len(), crate::tally::MAX_PENDING);
    }
}
