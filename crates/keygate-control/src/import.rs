//! Importing API keys from a CSV file in AWS's format (`Name` and `Key` required; `Description`,
//! `Enabled`, `UsagePlanIds` optional; header names case-insensitive, any column order, unknown
//! columns ignored, a quoted comma list of plan ids).
//!
//! Every row is checked first; bad rows become warnings with their line numbers. With
//! `fail_on_warnings` any warning imports nothing; without it the good rows are imported. Either
//! way the import is one transaction: all the good rows or none.

use std::collections::HashSet;

use keygate_types::ApiKeyValue;
use keygate_types::model::NewApiKey;
use serde::Serialize;

use crate::{Error, Result, Store};

/// What an import did, in AWS's response shape.
#[derive(Debug, Clone, Serialize)]
pub struct ImportResult {
    pub ids: Vec<String>,
    pub warnings: Vec<String>,
}

/// AWS allows a list of plan ids in single quotes (`'a,b'`), which a CSV parser splits at the
/// comma: put those fields back together.
fn rejoin_single_quoted(record: &csv::StringRecord, col: Option<usize>) -> Vec<String> {
    let mut fields: Vec<String> = record.iter().map(str::to_owned).collect();
    let Some(col) = col else { return fields };
    if fields.get(col).is_some_and(|f| f.starts_with('\'') && !(f.len() > 1 && f.ends_with('\'')))
        && let Some(end) = (col + 1..fields.len()).find(|&j| fields[j].ends_with('\''))
    {
        let joined = fields[col..=end].join(",");
        fields.splice(col..=end, [joined]);
    }
    fields
}

/// Imports keys from CSV text.
///
/// # Errors
/// [`Error::Invalid`] when the header lacks `Name` or `Key`, the file is not CSV, or
/// `fail_on_warnings` is set and a row is bad (the message lists the warnings).
pub async fn import(store: &Store, csv_text: &str, fail_on_warnings: bool) -> Result<ImportResult> {
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .flexible(true)
        .from_reader(csv_text.as_bytes());
    let headers =
        reader.headers().map_err(|e| Error::Invalid(format!("the file is not CSV: {e}")))?.clone();
    let col = |name: &str| headers.iter().position(|h| h.eq_ignore_ascii_case(name));
    let (Some(name_col), Some(key_col)) = (col("name"), col("key")) else {
        return Err(Error::Invalid(
            "the CSV header must have the columns Name and Key (Description, Enabled and \
             UsagePlanIds are optional)"
                .to_owned(),
        ));
    };
    let (desc_col, enabled_col, plans_col) =
        (col("description"), col("enabled"), col("usageplanids"));

    let existing_names: HashSet<String> =
        store.list_keys().await?.into_iter().map(|k| k.name).collect();
    let mut seen_names = HashSet::new();
    let mut seen_values = HashSet::new();
    let mut rows = Vec::new();
    let mut warnings = Vec::new();
    for record in reader.records() {
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                let line = e.position().map_or(0, |p| p.line());
                warnings.push(format!("line {line}: not a valid CSV row ({e})"));
                continue;
            }
        };
        let line = record.position().map_or(0, |p| p.line());
        let record = rejoin_single_quoted(&record, plans_col);
        let field = |c: Option<usize>| c.and_then(|c| record.get(c)).map_or("", |v| v.trim());
        let name = field(Some(name_col));
        if name.is_empty() {
            warnings.push(format!("line {line}: Name is empty"));
            continue;
        }
        let value = match ApiKeyValue::parse(field(Some(key_col))) {
            Ok(v) => v,
            Err(e) => {
                warnings.push(format!("line {line}: Key: {e}"));
                continue;
            }
        };
        let enabled = match field(enabled_col).to_ascii_lowercase().as_str() {
            "" | "true" => true,
            "false" => false,
            other => {
                warnings.push(format!("line {line}: Enabled must be true or false, not {other:?}"));
                continue;
            }
        };
        if existing_names.contains(name) || !seen_names.insert(name.to_owned()) {
            warnings.push(format!("line {line}: an API key named {name:?} already exists"));
            continue;
        }
        let digest = value.digest();
        if !seen_values.insert(digest) || store.key_digest_exists(&digest).await? {
            warnings.push(format!("line {line}: another API key already has this Key value"));
            continue;
        }
        let mut plan_ids = Vec::new();
        let mut bad_plan = None;
        for p in field(plans_col).trim_matches(|c| c == '"' || c == '\'').split(',') {
            let p = p.trim();
            if p.is_empty() {
                continue;
            }
            match store.get_plan(p).await? {
                Some(plan) => plan_ids.push(plan.id),
                None => bad_plan = Some(p.to_owned()),
            }
        }
        if let Some(p) = bad_plan {
            warnings.push(format!("line {line}: usage plan {p} not found"));
            continue;
        }
        let description = Some(field(desc_col)).filter(|d| !d.is_empty()).map(str::to_owned);
        rows.push((
            NewApiKey {
                name: name.to_owned(),
                value,
                description,
                customer_id: None,
                enabled,
                expires: None,
            },
            plan_ids,
        ));
    }
    if fail_on_warnings && !warnings.is_empty() {
        return Err(Error::Invalid(format!(
            "nothing imported (failonwarnings): {}",
            warnings.join("; ")
        )));
    }
    let created = if rows.is_empty() { Vec::new() } else { store.import_keys(rows).await? };
    Ok(ImportResult { ids: created.into_iter().map(|k| k.id).collect(), warnings })
}
