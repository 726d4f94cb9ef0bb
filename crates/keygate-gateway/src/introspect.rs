//! Key introspection (`custom.keygate.keyIntrospection`): a client sends its key to
//! `GET /{stage}/.keygate/key` (or the path the service chose) and reads its own standing on
//! that API stage: the key's id and name, its usage plan with the throttle and quota that
//! apply, the quota used and remaining in the current period and when it resets, and when the
//! value stops working (the key's expiry, or the end of a rotation's grace period). What the
//! `RateLimit` headers say, as JSON, without spending anything: the request is not counted, not
//! throttled and not written to usage. Never the value.
//!
//! A key that would be refused on the stage's private routes (none, unknown, disabled, expired,
//! in no plan of the stage) gets the same 403 `Forbidden` they would. The key's name comes from
//! the store (the table holds no names): when the store does not answer within
//! [`STORE_TIMEOUT`], the answer leaves it and the key's own expiry out rather than fail.

use std::time::Duration;

use bytes::Bytes;
use keygate_http::{Request, Response};
use keygate_limits::calendar::QuotaWindow;
use keygate_limits::quota::allowance;
use keygate_types::response::GatewayError;
use serde_json::{Value, json};

use crate::table::{Introspection, Table};

/// Longest the answer waits for the key's name from the store.
const STORE_TIMEOUT: Duration = Duration::from_secs(2);

/// The answer to an introspection request, why (the access log's reason) and the key id when
/// the value is a known key's.
pub(crate) struct Answer<'t> {
    pub(crate) res: Response,
    pub(crate) reason: &'static str,
    pub(crate) key_id: Option<&'t str>,
}

impl crate::Gateway {
    /// Answers `req` on the introspection path `at` of `stage`.
    pub(crate) async fn introspect<'t>(
        &self,
        table: &'t Table,
        stage: &str,
        at: &Introspection,
        req: &Request,
    ) -> Answer<'t> {
        let forbidden = |reason, key_id| Answer {
            res: crate::respond::error(GatewayError::Forbidden, None),
            reason,
            key_id,
        };
        let mut values = req.headers.get_all("x-api-key");
        let presented = values.next().filter(|v| !v.is_empty());
        if values.next().is_some() {
            return forbidden("several_keys", None);
        }
        let Some(presented) = presented else { return forbidden("missing_key", None) };
        let now_ms = self.clock.now_unix_ms();
        let auth = match table.authorize(presented, at.api_stage, now_ms.div_euclid(1000)) {
            Ok(auth) => auth,
            Err(denied) => return forbidden(denied.reason(), denied.key_id()),
        };
        let key_id = auth.key_id();
        let stored = match tokio::time::timeout(STORE_TIMEOUT, self.store.get_key(key_id)).await {
            Ok(Ok(key)) => key,
            Ok(Err(e)) => {
                tracing::warn!(key = key_id, error = %e, "key introspection: cannot read the key's name");
                None
            }
            Err(_) => {
                tracing::warn!(key = key_id, "key introspection: the store did not answer in time");
                None
            }
        };
        let limits = &auth.grant.limits;
        let quota = match limits.quota {
            None => Value::Null,
            Some(q) => {
                let window = QuotaWindow::for_quota(now_ms, &q);
                let counters = auth.counters();
                let extra = counters.grant(window.start_date());
                let used = self.limiter.quota_used(counters, &window).await;
                let remaining = allowance(q.limit, extra).saturating_sub(used);
                json!({
                    "limit": q.limit,
                    "period": q.period,
                    "offset": q.offset,
                    "used": used,
                    "remaining": remaining,
                    "resetsAt": rfc3339(window.end_ms.div_euclid(1000)),
                    "resetsInSeconds": window.secs_until_end(now_ms),
                })
            }
        };
        let plan = auth.plan();
        let throttle = plan.and_then(|p| p.throttle.as_ref());
        let value_expires = auth.value_expires();
        let mut body = json!({
            "id": key_id,
            "stage": stage,
            "usagePlan": {
                "id": &*auth.grant.plan_id,
                "name": plan.map(|p| p.name.as_str()),
                "throttle": throttle,
                "quota": quota,
            },
            "valueExpiresAt": value_expires.map(rfc3339),
        });
        if let Some(key) = stored {
            body["name"] = json!(key.name);
            body["expiresAt"] = json!(key.expires.map(rfc3339));
            // A value that stops working before the key does is an old value of a rotation.
            let rotated = value_expires.is_some_and(|v| key.expires.is_none_or(|k| v < k));
            body["rotationDeadline"] = json!(value_expires.filter(|_| rotated).map(rfc3339));
        }
        let mut res = Response::new(http::StatusCode::OK, Bytes::from(body.to_string()));
        res.headers.push_static("content-type", "application/json");
        res.headers.push_static("cache-control", "no-store");
        Answer { res, reason: "key_introspection", key_id: Some(key_id) }
    }
}

/// Unix seconds as RFC 3339 in UTC (`2026-12-08T00:00:00Z`).
fn rfc3339(unix_secs: i64) -> String {
    let (days, secs) = (unix_secs.div_euclid(86_400), unix_secs.rem_euclid(86_400));
    let (y, m, d) = keygate_types::date::civil_from_days(days);
    let (h, min, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
    format!("{y:04}-{m:02}-{d:02}T{h:02}:{min:02}:{s:02}Z")
}

#[cfg(test)]
mod tests {
    #[test]
    fn rfc3339_is_utc_to_the_second() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::rfc3339(1_795_824_000), "2026-11-28T00:00:00Z");
        assert_eq!(super::rfc3339(1_795_824_000 + 86_399), "2026-11-28T23:59:59Z");
    }
}
