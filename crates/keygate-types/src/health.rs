//! Whether a keygate process is ready to serve: its routing table is loaded and its store
//! answered recently. The gateway writes it (at load and on every refresh); the admin API's
//! `/readyz` and the traffic listener's opt-in readiness path read it. Atomics only: reading it
//! costs a request nothing.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

/// How long after the store last answered a process still counts as ready (the gateway asks it
/// every 250 ms).
pub const STORE_STALE_MS: i64 = 5_000;

/// A process's readiness, shared between the gateway and the listeners that report it.
#[derive(Debug)]
pub struct Health {
    /// The version of the table served; -1 before the first is loaded.
    table_version: AtomicI64,
    /// UTC unix ms of the store's last answer; 0 before the first.
    store_ok_ms: AtomicI64,
    /// The last refresh could not reach the store.
    store_failing: AtomicBool,
}

impl Default for Health {
    fn default() -> Self {
        Self {
            table_version: AtomicI64::new(-1),
            store_ok_ms: AtomicI64::new(0),
            store_failing: AtomicBool::new(false),
        }
    }
}

/// What [`Health::readiness`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Readiness {
    /// The version of the table served, once one is loaded.
    pub table_version: Option<i64>,
    /// Milliseconds since the store last answered, once it has.
    pub store_age_ms: Option<i64>,
    /// Whether the last refresh could not reach the store.
    pub store_failing: bool,
}

impl Readiness {
    /// Ready: a table is loaded and the store answered within [`STORE_STALE_MS`].
    pub fn is_ready(&self) -> bool {
        self.table_version.is_some()
            && !self.store_failing
            && self.store_age_ms.is_some_and(|age| age <= STORE_STALE_MS)
    }

    /// Why the process is not ready, if it is not.
    pub fn reason(&self) -> Option<&'static str> {
        if self.table_version.is_none() {
            Some("the routing table is not loaded yet")
        } else if self.store_failing {
            Some("the store cannot be reached (serving the last table)")
        } else if !self.is_ready() {
            Some("the store has not answered for over 5 seconds")
        } else {
            None
        }
    }

    /// The JSON body both readiness endpoints answer with.
    pub fn to_json(&self) -> String {
        let mut out =
            format!("{{\"status\":\"{}\"", if self.is_ready() { "ready" } else { "not ready" });
        if let Some(v) = self.table_version {
            out.push_str(&format!(",\"tableVersion\":{v}"));
        }
        if let Some(age) = self.store_age_ms {
            out.push_str(&format!(",\"storeAnsweredMsAgo\":{age}"));
        }
        if let Some(reason) = self.reason() {
            out.push_str(&format!(",\"reason\":\"{reason}\""));
        }
        out.push('}');
        out
    }
}

impl Health {
    /// A process with nothing loaded yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// A table of `version` is now served.
    pub fn table_loaded(&self, version: i64) {
        self.table_version.store(version.max(0), Ordering::Release);
    }

    /// The store answered at `now_unix_ms`.
    pub fn store_answered(&self, now_unix_ms: i64) {
        self.store_ok_ms.store(now_unix_ms, Ordering::Release);
        self.store_failing.store(false, Ordering::Release);
    }

    /// The store could not be reached.
    pub fn store_failed(&self) {
        self.store_failing.store(true, Ordering::Release);
    }

    /// Readiness at `now_unix_ms`.
    pub fn readiness(&self, now_unix_ms: i64) -> Readiness {
        let version = self.table_version.load(Ordering::Acquire);
        let ok = self.store_ok_ms.load(Ordering::Acquire);
        Readiness {
            table_version: (version >= 0).then_some(version),
            store_age_ms: (ok > 0).then(|| now_unix_ms.saturating_sub(ok).max(0)),
            store_failing: self.store_failing.load(Ordering::Acquire),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_once_loaded_and_while_the_store_answers() {
        let h = Health::new();
        let r = h.readiness(1_000);
        assert!(!r.is_ready());
        assert_eq!(r.reason(), Some("the routing table is not loaded yet"));
        assert!(r.to_json().starts_with(r#"{"status":"not ready""#), "{}", r.to_json());
        h.table_loaded(7);
        h.store_answered(1_000);
        let r = h.readiness(1_200);
        assert!(r.is_ready(), "{r:?}");
        assert_eq!(r.to_json(), r#"{"status":"ready","tableVersion":7,"storeAnsweredMsAgo":200}"#);
        h.store_failed();
        assert_eq!(
            h.readiness(1_300).reason(),
            Some("the store cannot be reached (serving the last table)")
        );
        h.store_answered(2_000);
        assert!(h.readiness(2_000 + STORE_STALE_MS).is_ready());
        assert!(!h.readiness(2_001 + STORE_STALE_MS).is_ready());
    }
}
