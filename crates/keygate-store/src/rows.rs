//! Rows both backends read alike (sqlx's `FromRow` decodes them from SQLite and PostgreSQL the
//! same way), and what they become.

use keygate_types::KeyDigest;
use keygate_types::model::{OldValueUse, WouldRefuse};

use crate::{Error, Result};

/// A `would_refuse` row.
#[derive(sqlx::FromRow)]
pub(crate) struct WouldRefuseRow {
    hour: i64,
    api_id: String,
    stage: String,
    method: String,
    path: String,
    reason: String,
    /// `''`: the value sent was no key's.
    key_id: String,
    client: String,
    user_agent: String,
    count: i64,
    first_seen: i64,
    last_seen: i64,
}

impl From<WouldRefuseRow> for WouldRefuse {
    fn from(r: WouldRefuseRow) -> Self {
        Self {
            hour: r.hour,
            api_id: r.api_id,
            stage: r.stage,
            method: r.method,
            path: r.path,
            reason: r.reason,
            key_id: (!r.key_id.is_empty()).then_some(r.key_id),
            client: r.client,
            user_agent: r.user_agent,
            count: u64::try_from(r.count).unwrap_or(0),
            first_seen: r.first_seen,
            last_seen: r.last_seen,
        }
    }
}

/// An `old_value_uses` row.
#[derive(sqlx::FromRow)]
pub(crate) struct OldValueUseRow {
    digest: Vec<u8>,
    client: String,
    user_agent: String,
    count: i64,
    first_seen: i64,
    last_seen: i64,
}

impl TryFrom<OldValueUseRow> for OldValueUse {
    type Error = Error;

    fn try_from(r: OldValueUseRow) -> Result<Self> {
        Ok(Self {
            digest: KeyDigest::from_slice(&r.digest)
                .ok_or_else(|| Error::corrupt("a stored key use is corrupt"))?,
            client: r.client,
            user_agent: r.user_agent,
            count: u64::try_from(r.count).unwrap_or(0),
            first_seen: r.first_seen,
            last_seen: r.last_seen,
        })
    }
}
