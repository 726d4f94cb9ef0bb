//! Traffic-aware rotation: the requests sent with a value a rotation replaced (still in its
//! grace period), tallied by value and client and written beside the usage, so `keygate keys
//! get` shows who still sends it; and the retirement of old values whose `--retire-when-idle`
//! time passed without a request, which any serving gateway makes (an audited change; every
//! gateway then refuses the value within a second).

use std::net::IpAddr;

use keygate_types::KeyDigest;
use keygate_types::model::OldValueUse;

use crate::tally::{Counts, Tallies};

/// A client of an old value.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Use {
    digest: KeyDigest,
    client: IpAddr,
    user_agent: String,
}

/// Uses of old values not written yet.
#[derive(Debug, Default)]
pub(crate) struct OldValueUses {
    tallies: Tallies<Use>,
}

impl OldValueUses {
    /// One request with the old value `digest` from `client`.
    pub(crate) fn record(
        &self,
        digest: KeyDigest,
        client: IpAddr,
        user_agent: Option<&[u8]>,
        unix_secs: i64,
    ) {
        let user_agent = crate::report::user_agent(user_agent);
        self.tallies.record(Use { digest, client, user_agent }, unix_secs);
    }

    /// Takes what is pending, as the store's rows.
    pub(crate) fn take(&self) -> Vec<OldValueUse> {
        self.tallies
            .take()
            .into_iter()
            .map(|(u, c)| OldValueUse {
                digest: u.digest,
                client: u.client.to_string(),
                user_agent: u.user_agent,
                count: c.count,
                first_seen: c.first_seen,
                last_seen: c.last_seen,
            })
            .collect()
    }

    /// Puts rows a write could not store back, to try again.
    pub(crate) fn restore(&self, rows: Vec<OldValueUse>) {
        for r in rows {
            let Ok(client) = r.client.parse() else { continue };
            let counts =
                Counts { count: r.count, first_seen: r.first_seen, last_seen: r.last_seen };
            self.tallies.add(Use { digest: r.digest, client, user_agent: r.user_agent }, counts);
        }
    }
}
