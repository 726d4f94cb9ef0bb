//! API key operations: create (generated or custom value), find by id or name, enable, disable,
//! delete. The value is returned only by [`create`]; afterwards only its digest exists.

use keygate_types::ApiKeyValue;
use keygate_types::model::{ApiKey, ApiKeyPatch, NewApiKey};

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
}

/// Creates a key and returns it with its value, which is never available again.
///
/// # Errors
/// [`Error::Invalid`] for a bad name or value, [`Error::NotFound`] for an unknown plan,
/// [`Error::Conflict`] for a taken name or value.
pub async fn create(store: &Store, input: CreateKey) -> Result<(ApiKey, ApiKeyValue)> {
    check_name(&input.name)?;
    let value = match &input.value {
        Some(v) => ApiKeyValue::parse(v).map_err(|e| Error::Invalid(format!("--value: {e}")))?,
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
    let key = store
        .create_key(
            NewApiKey {
                name: input.name,
                value: value.clone(),
                description: input.description,
                customer_id: input.customer_id,
                enabled: input.enabled,
            },
            &plan_ids,
        )
        .await?;
    Ok((key, value))
}

fn check_name(name: &str) -> Result<()> {
    if name.trim().is_empty() {
        return Err(Error::Invalid("an API key name must not be empty".to_owned()));
    }
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
    Ok(store
        .update_key(&key.id, ApiKeyPatch { enabled: Some(enabled), ..Default::default() })
        .await?)
}

/// Deletes a key for good.
///
/// # Errors
/// [`Error::NotFound`] for an unknown key.
pub async fn delete(store: &Store, id_or_name: &str) -> Result<ApiKey> {
    let key = find(store, id_or_name).await?;
    store.delete_key(&key.id).await?;
    Ok(key)
}
