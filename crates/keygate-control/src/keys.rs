//! API key operations: create (generated or custom value), find by id or name, enable, disable,
//! delete, rotate (and end rotated-out values). The value is returned only by [`create`] and
//! [`rotate`]; afterwards only its digest exists.

use keygate_types::ApiKeyValue;
use keygate_types::model::{ApiKey, ApiKeyPatch, NewApiKey};

use keygate_store::Change;

use crate::{Error, Result, Store};

/// Longest key name accepted (AWS's limit).
pub const MAX_NAME_LEN: usize = 1024;

/// Input of [`create`].
#[derive(Debug, Clone, Default)]
pub struct CreateKey {
    pub name: String,
    /// A custom value; generated when `None`.
    pub value: Option<String>,
    pub description: Option<String>,
    pub customer_id: Option<String>,
    pub enabled: bool,
    /// Usage plan (id or name) to add the key to.
    pub usage_plan: Option<String>,
    /// Unix seconds after which the key is refused.
    pub expires: Option<i64>,
}

/// Creates a key and returns it with its value, which is never available again.
///
/// # Errors
/// [`Error::Invalid`] for a bad name or value, [`Error::NotFound`] for an unknown plan,
/// [`Error::Conflict`] for a taken name or value.
pub async fn create(store: &Store, input: CreateKey) -> Result<(ApiKey, ApiKeyValue)> {
    check_name(&input.name)?;
    check_optional_text("description", input.description.as_deref())?;
    check_optional_text("customer id", input.customer_id.as_deref())?;
    let value = match &input.value {
        Some(v) => ApiKeyValue::parse(v).map_err(|e| Error::Invalid(format!("value: {e}")))?,
        None => ApiKeyValue::generate(),
    };
    let mut plan_ids = Vec::new();
    if let Some(p) = &input.usage_plan {
        let plan = match store.get_plan(p).await? {
            Some(plan) => plan,
            None => store.get_plan_by_name(p).await?.ok_or_else(|| {
                Error::NotFound(format!(
                    "usage plan {p:?} not found (give a plan id or name; `keygate info` shows them)"
                ))
            })?,
        };
        plan_ids.push(plan.id);
    }
    let key = NewApiKey {
        name: input.name,
        value: value.clone(),
        description: input.description,
        customer_id: input.customer_id,
        enabled: input.enabled,
        expires: input.expires,
    };
    let key = crate::apply_checked!(store, {
        crate::rules::plans_may_share_a_key(store, &key.name, &plan_ids).await?;
        Change::CreateKey { key: key.clone(), plan_ids: plan_ids.clone() }
    })
    .into_key()?;
    Ok((key, value))
}

/// Refuses control characters (C0 such as NUL, BEL, ESC, tab and newline; DEL; C1) in a name,
/// description or customer id: printed raw by `keys list` they would drive the terminal
/// (colours, a cleared screen, a hidden line), and no key needs them.
///
/// # Errors
/// [`Error::Invalid`] naming the field, the character and where it is.
pub fn check_text(field: &str, value: &str) -> Result<()> {
    match value.chars().enumerate().find(|(_, c)| c.is_control()) {
        None => Ok(()),
        Some((at, c)) => Err(Error::Invalid(format!(
            "the {field} has a control character (U+{:04X}) at character {}: names, \
             descriptions and customer ids must be printable text",
            u32::from(c),
            at + 1
        ))),
    }
}

fn check_optional_text(field: &str, value: Option<&str>) -> Result<()> {
    value.map_or(Ok(()), |v| check_text(field, v))
}

/// Updates a key's name, description, customer id, enabled flag or expiry, after checking the
/// new texts as [`create`] does. Running gateways pick the change up within a second.
///
/// # Errors
/// [`Error::Invalid`] for a bad name or text, [`Error::NotFound`] for an unknown key,
/// [`Error::Conflict`] for a taken name.
pub async fn update(store: &Store, id_or_name: &str, patch: ApiKeyPatch) -> Result<ApiKey> {
    if let Some(name) = &patch.name {
        check_name(name)?;
    }
    check_optional_text("description", patch.description.as_ref().and_then(Option::as_deref))?;
    check_optional_text("customer id", patch.customer_id.as_ref().and_then(Option::as_deref))?;
    let key = find(store, id_or_name).await?;
    Ok(store.apply(Change::UpdateKey { id: key.id, patch }).await?.into_key()?)
}

fn check_name(name: &str) -> Result<()> {
    if name.trim().is_empty() {
        return Err(Error::Invalid("an API key name must not be empty".to_owned()));
    }
    check_text("name", name)?;
    if name.len() > MAX_NAME_LEN {
        return Err(Error::Invalid(format!(
            "an API key name may be at most {MAX_NAME_LEN} characters, this one has {}",
            name.len()
        )));
    }
    Ok(())
}

/// Finds a key by id, else by name.
///
/// # Errors
/// [`Error::NotFound`] when neither matches.
pub async fn find(store: &Store, id_or_name: &str) -> Result<ApiKey> {
    if let Some(k) = store.get_key(id_or_name).await? {
        return Ok(k);
    }
    store.get_key_by_name(id_or_name).await?.ok_or_else(|| {
        Error::NotFound(format!(
            "API key {id_or_name:?} not found (give a key id or name; `keygate keys list` shows them)"
        ))
    })
}

/// Enables or disables a key. Running gateways pick the change up within a second.
///
/// # Errors
/// [`Error::NotFound`] for an unknown key.
pub async fn set_enabled(store: &Store, id_or_name: &str, enabled: bool) -> Result<ApiKey> {
    let key = find(store, id_or_name).await?;
    let patch = ApiKeyPatch { enabled: Some(enabled), ..Default::default() };
    Ok(store.apply(Change::UpdateKey { id: key.id, patch }).await?.into_key()?)
}

/// Deletes a key for good.
///
/// # Errors
/// [`Error::NotFound`] for an unknown key.
pub async fn delete(store: &Store, id_or_name: &str) -> Result<ApiKey> {
    let key = find(store, id_or_name).await?;
    store.apply(Change::DeleteKey { id: key.id.clone() }).await?;
    Ok(key)
}

/// Parses a duration like `90s`, `30m`, `24h`, `7d` (or plain seconds).
///
/// # Errors
/// [`Error::Invalid`] saying the expected form.
pub fn parse_duration(s: &str) -> Result<i64> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: i64 = num.parse().map_err(|_| bad_duration(s))?;
    let mult = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(bad_duration(s)),
    };
    n.checked_mul(mult).ok_or_else(|| bad_duration(s))
}

fn bad_duration(s: &str) -> Error {
    Error::Invalid(format!(
        "{s:?} is not a duration: use a whole number with s, m, h or d, e.g. 24h or 7d"
    ))
}

/// Parses an expiry: `never`, unix seconds, `+<duration>` from `now`, or `YYYY-MM-DD[THH:MM:SSZ]`
/// (UTC).
///
/// # Errors
/// [`Error::Invalid`] saying the accepted forms.
pub fn parse_expiry(s: &str, now_unix_secs: i64) -> Result<Option<i64>> {
    let s = s.trim();
    if s.eq_ignore_ascii_case("never") {
        return Ok(None);
    }
    if let Some(d) = s.strip_prefix('+') {
        return Ok(Some(now_unix_secs.saturating_add(parse_duration(d)?)));
    }
    if let Ok(n) = s.parse::<i64>() {
        return Ok(Some(n));
    }
    let (date, time) = s.split_once('T').unwrap_or((s, "00:00:00Z"));
    let bad = || {
        Error::Invalid(format!(
            "{s:?} is not an expiry: use never, +<duration> (e.g. +30d), unix seconds, or \
             YYYY-MM-DD[THH:MM:SSZ] in UTC"
        ))
    };
    let day: keygate_limits::calendar::Date = date.parse().map_err(|_| bad())?;
    let t = time.strip_suffix('Z').ok_or_else(bad)?;
    let parts: Vec<i64> = t
        .split(':')
        .map(|p| p.parse::<i64>())
        .collect::<std::result::Result<_, _>>()
        .map_err(|_| bad())?;
    let [h, m, sec] = parts[..] else { return Err(bad()) };
    if !(0..24).contains(&h) || !(0..60).contains(&m) || !(0..60).contains(&sec) {
        return Err(bad());
    }
    Ok(Some(day.start_unix_ms() / 1000 + h * 3600 + m * 60 + sec))
}

/// Gives a key a new value, returned once. The old value keeps working for `grace_secs`, with
/// the same plans and the same quota counters; after that it is refused. Values replaced by
/// earlier rotations end then at the latest: with 0, every older value ends now.
///
/// # Errors
/// [`Error::NotFound`] for an unknown key, [`Error::Invalid`] for a negative grace.
pub async fn rotate(
    store: &Store,
    id_or_name: &str,
    grace_secs: i64,
    retire_idle: Option<i64>,
) -> Result<(ApiKey, ApiKeyValue)> {
    if grace_secs < 0 {
        return Err(Error::Invalid("the grace period cannot be negative".to_owned()));
    }
    match retire_idle {
        Some(idle) if idle < 1 => {
            return Err(Error::Invalid(
                "--retire-when-idle must be at least 1 second (e.g. 10m, 1h)".to_owned(),
            ));
        }
        Some(_) if grace_secs == 0 => {
            return Err(Error::Invalid(
                "--retire-when-idle needs a grace period (--grace): with none the old value \
                 stops at once"
                    .to_owned(),
            ));
        }
        _ => {}
    }
    let key = find(store, id_or_name).await?;
    let value = ApiKeyValue::generate();
    let change = Change::RotateKey { id: key.id, value: value.clone(), grace_secs, retire_idle };
    let key = store.apply(change).await?.into_key()?;
    Ok((key, value))
}

/// The values a rotation replaced that still work at `now` (unix seconds), with the clients
/// still sending them (what gateways have written, about a second behind).
///
/// # Errors
/// The store's error.
pub async fn old_values(
    store: &Store,
    key_id: &str,
    now: i64,
) -> Result<Vec<keygate_types::model::OldValue>> {
    Ok(store.old_values(key_id, now).await?)
}

/// Ends the rotated-out values whose `--retire-when-idle` time has passed without a request
/// (as far as gateways have written their uses), as this handle's actor; returns how many. Made
/// only when there are some, so a server calling it every second writes nothing otherwise.
///
/// # Errors
/// The store's error.
pub async fn retire_idle(store: &Store, now: i64) -> Result<u64> {
    if store.idle_old_values(now).await? == 0 {
        return Ok(0);
    }
    Ok(store.apply(Change::RetireIdleOldValues { now }).await?.into_count()?)
}

/// Until when the values a rotation replaced keep working (unix seconds): the grace period's end,
/// or the key's own expiry if that comes first. `None` when they stopped at once (`grace_secs`
/// 0). `key` is what [`rotate`] returned (its `last_updated_date` is the rotation time).
pub fn old_values_end(key: &ApiKey, grace_secs: i64) -> Option<i64> {
    if grace_secs <= 0 {
        return None;
    }
    let end = key.last_updated_date.saturating_add(grace_secs);
    Some(key.expires.map_or(end, |e| e.min(end)))
}

/// Ends every value a rotation replaced, now; the current value keeps working. Returns the key
/// and how many old values were still working.
///
/// # Errors
/// [`Error::NotFound`] for an unknown key.
pub async fn revoke_old(store: &Store, id_or_name: &str) -> Result<(ApiKey, u64)> {
    let key = find(store, id_or_name).await?;
    let n = store.apply(Change::RevokeOldValues { id: key.id.clone() }).await?.into_count()?;
    Ok((key, n))
}

/// Sets or clears a key's expiry.
///
/// # Errors
/// [`Error::NotFound`] for an unknown key.
pub async fn set_expiry(store: &Store, id_or_name: &str, expires: Option<i64>) -> Result<ApiKey> {
    let key = find(store, id_or_name).await?;
    let patch = ApiKeyPatch { expires: Some(expires), ..Default::default() };
    Ok(store.apply(Change::UpdateKey { id: key.id, patch }).await?.into_key()?)
}

/// One page of keys by name (`customer_id`: only that customer's).
///
/// # Errors
/// A store error.
pub async fn list(
    store: &Store,
    query: &crate::ListQuery,
    customer_id: Option<&str>,
) -> Result<crate::Listed<ApiKey>> {
    let items = store.list_keys(query.page(), customer_id).await?;
    Ok(crate::Listed::cut(query, items, |k| &k.name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_expiries_parse() {
        assert_eq!(parse_duration("24h").unwrap(), 86_400);
        assert_eq!(parse_duration("90").unwrap(), 90);
        assert!(parse_duration("1w").is_err() && parse_duration("h").is_err());
        assert_eq!(parse_expiry("never", 5).unwrap(), None);
        assert_eq!(parse_expiry("+1m", 5).unwrap(), Some(65));
        assert_eq!(parse_expiry("2026-11-28", 0).unwrap(), Some(1_795_824_000));
        assert_eq!(parse_expiry("2026-11-28T01:00:00Z", 0).unwrap(), Some(1_795_827_600));
        assert!(parse_expiry("2026-11-28T25:00:00Z", 0).is_err());
        assert!(parse_expiry("tomorrow", 0).is_err());
    }
}
