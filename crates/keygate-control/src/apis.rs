//! REST API operations beyond `deploy`: changing a method's key requirement (AWS UpdateMethod on
//! `apiKeyRequired`) and deploying the API's current definition to a stage (AWS
//! CreateDeployment).

use keygate_store::Change;
use keygate_types::HttpMethod;
use keygate_types::model::Deployment;

use crate::{Error, Result, Store};

/// Sets whether `method` on the resource `path` of the API's current definition requires an API
/// key. Deployed stages change at the next deployment, as on AWS.
///
/// # Errors
/// [`Error::NotFound`] when the API or that method does not exist.
pub async fn set_key_required(
    store: &Store,
    api_id: &str,
    path: &str,
    method: HttpMethod,
    required: bool,
) -> Result<()> {
    let mut definition = store
        .get_api_definition(api_id)
        .await?
        .ok_or_else(|| Error::NotFound(format!("REST API {api_id} not found")))?;
    let mut found = false;
    for e in definition.functions.iter_mut().flat_map(|f| f.events.iter_mut()) {
        if e.path == path && e.method == method {
            // apiKeyRequired says it outright: enforced, or not checked at all (no report mode).
            (e.private, e.report) = (required, false);
            found = true;
        }
    }
    if !found {
        return Err(Error::NotFound(format!("REST API {api_id} has no method {method} on {path}")));
    }
    store.apply(Change::PutApiDefinition { api_id: api_id.to_owned(), definition }).await?;
    Ok(())
}

/// Deploys the API's current definition to `stage` (created if new).
///
/// # Errors
/// [`Error::Invalid`] for a stage name AWS would refuse, [`Error::NotFound`] for an unknown API.
pub async fn create_deployment(store: &Store, api_id: &str, stage: &str) -> Result<Deployment> {
    check_stage_name(stage)?;
    let change = Change::CreateDeployment { api_id: api_id.to_owned(), stage: stage.to_owned() };
    Ok(store.apply(change).await?.into_deployment()?)
}

/// A stage name as AWS accepts it: 1-128 letters, digits, `-` or `_`.
///
/// # Errors
/// [`Error::Invalid`] saying so.
pub fn check_stage_name(stage: &str) -> Result<()> {
    if stage.is_empty()
        || stage.len() > 128
        || !stage.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
    {
        return Err(Error::Invalid(
            "stageName must be 1-128 letters, digits, '-' or '_'".to_owned(),
        ));
    }
    Ok(())
}
