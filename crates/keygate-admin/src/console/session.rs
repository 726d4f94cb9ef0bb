//! Console sessions: a random id in an HttpOnly, SameSite=Strict cookie, mapped in memory to the
//! admin token that signed in and the session's CSRF token. The map holds the id's digest, not
//! the id, and the token's digest, not the token: every request checks that the token is still
//! active, so revoking a token ends its sessions at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use keygate_types::clock::Clock;
use keygate_types::model::{ALPHANUMERIC, AdminToken, random_string};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Name of the session cookie.
pub(crate) const COOKIE: &str = "keygate_console";

/// Sessions held at once; at the cap the oldest are ended first (only a valid admin token can
/// make one, so this bounds a token holder's mistakes, not an attacker).
const MAX_SESSIONS: usize = 10_000;

/// One signed-in browser.
#[derive(Debug, Clone)]
pub(crate) struct Session {
    /// The admin token's id: the actor in the audit log is `console:<token id>`.
    pub(crate) token_id: String,
    /// The admin token's digest, checked against the store on every request.
    pub(crate) token_digest: Vec<u8>,
    /// Every state-changing form carries it; compared in constant time.
    pub(crate) csrf: String,
    /// UTC unix milliseconds after which the session is gone.
    expires_ms: i64,
}

impl Session {
    /// Whether `presented` is this session's CSRF token.
    pub(crate) fn csrf_matches(&self, presented: &str) -> bool {
        bool::from(self.csrf.as_bytes().ct_eq(presented.as_bytes()))
    }
}

/// The console's sessions (in this process: a node's sessions are its own).
pub struct Sessions {
    by_digest: Mutex<HashMap<[u8; 32], Session>>,
    ttl: Duration,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions").field("ttl", &self.ttl).finish_non_exhaustive()
    }
}

fn digest(id: &str) -> [u8; 32] {
    Sha256::digest(id.as_bytes()).into()
}

impl Sessions {
    /// Now by the sessions' clock (unix milliseconds): the time every console page works with.
    pub(crate) fn now_unix_ms(&self) -> i64 {
        self.clock.now_unix_ms()
    }

    /// Sessions that last `ttl` from sign-in, timed by `clock`.
    pub fn new(ttl: Duration, clock: Arc<dyn Clock>) -> Self {
        Self { by_digest: Mutex::new(HashMap::new()), ttl, clock }
    }

    /// How long a session lasts.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Starts a session for `token`; returns the cookie value (never stored).
    pub(crate) fn start(&self, token: &AdminToken) -> String {
        let id = random_string(43, ALPHANUMERIC);
        let now = self.clock.now_unix_ms();
        let ttl_ms = i64::try_from(self.ttl.as_millis()).unwrap_or(i64::MAX);
        let session = Session {
            token_id: token.id.clone(),
            token_digest: token.digest.clone(),
            csrf: random_string(43, ALPHANUMERIC),
            expires_ms: now.saturating_add(ttl_ms),
        };
        let mut map = self.by_digest.lock().unwrap_or_else(PoisonError::into_inner);
        map.retain(|_, s| s.expires_ms > now);
        while map.len() >= MAX_SESSIONS {
            let Some(oldest) = map.iter().min_by_key(|(_, s)| s.expires_ms).map(|(k, _)| *k) else {
                break;
            };
            map.remove(&oldest);
        }
        map.insert(digest(&id), session);
        id
    }

    /// The live session of a cookie value; an expired one is ended.
    pub(crate) fn get(&self, id: &str) -> Option<Session> {
        let key = digest(id);
        let now = self.clock.now_unix_ms();
        let mut map = self.by_digest.lock().unwrap_or_else(PoisonError::into_inner);
        match map.get(&key) {
            Some(s) if s.expires_ms > now => Some(s.clone()),
            Some(_) => {
                map.remove(&key);
                None
            }
            None => None,
        }
    }

    /// Ends the session of a cookie value (sign-out).
    pub(crate) fn end(&self, id: &str) {
        self.by_digest.lock().unwrap_or_else(PoisonError::into_inner).remove(&digest(id));
    }
}

/// The session cookie's value in a `Cookie` header, if any.
pub(crate) fn cookie_value(headers: &http::HeaderMap) -> Option<&str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value)
}

/// The `Set-Cookie` value that starts a session (`Secure` when the console is served over TLS).
pub(crate) fn set_cookie(id: &str, ttl: Duration, secure: bool) -> String {
    format!(
        "{COOKIE}={id}; Path=/; Max-Age={}; HttpOnly; SameSite=Strict{}",
        ttl.as_secs(),
        if secure { "; Secure" } else { "" }
    )
}

/// The `Set-Cookie` value that removes the session cookie.
pub(crate) fn clear_cookie(secure: bool) -> String {
    format!(
        "{COOKIE}=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict{}",
        if secure { "; Secure" } else { "" }
    )
}

#[cfg(test)]
mod tests {
    use keygate_types::clock::ManualClock;

    use super::*;

    fn token() -> AdminToken {
        AdminToken {
            id: "tok1".to_owned(),
            digest: vec![1, 2, 3],
            prefix: "kgt_abcd".to_owned(),
            description: None,
            created_date: 0,
            revoked_date: None,
        }
    }

    #[test]
    fn a_session_lives_until_its_ttl_and_ends_at_sign_out() {
        let clock = Arc::new(ManualClock::new());
        let sessions = Sessions::new(Duration::from_secs(60), Arc::clone(&clock) as Arc<dyn Clock>);
        let id = sessions.start(&token());
        let s = sessions.get(&id).expect("a fresh session");
        assert_eq!(s.token_id, "tok1");
        assert!(s.csrf_matches(&s.csrf.clone()) && !s.csrf_matches("") && !s.csrf_matches("x"));
        assert!(sessions.get("another id").is_none());
        clock.advance(Duration::from_secs(59));
        assert!(sessions.get(&id).is_some());
        clock.advance(Duration::from_secs(1));
        assert!(sessions.get(&id).is_none(), "expired at its ttl");
        let again = sessions.start(&token());
        assert_ne!(again, id);
        sessions.end(&again);
        assert!(sessions.get(&again).is_none());
    }

    #[test]
    fn the_cookie_is_found_among_others_and_is_strict() {
        let mut h = http::HeaderMap::new();
        h.append(http::header::COOKIE, "a=1; keygate_console=abc; b=2".parse().unwrap());
        assert_eq!(cookie_value(&h), Some("abc"));
        let c = set_cookie("abc", Duration::from_secs(3600), false);
        assert!(c.contains("HttpOnly") && c.contains("SameSite=Strict") && !c.contains("Secure"));
        assert!(set_cookie("abc", Duration::from_secs(1), true).ends_with("; Secure"));
    }
}
