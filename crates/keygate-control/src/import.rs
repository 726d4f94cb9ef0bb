//! Importing API keys from a CSV file in AWS's format (`Name` and `Key` required; `Description`,
//! `Enabled`, `UsagePlanIds` optional; header names case-insensitive, any column order, unknown
//! columns ignored, a quoted comma list of plan ids).
//!
//! Quoting is strict: a quoted field must close on its own line (an unterminated quote is an
//! error on its line, not a field swallowing the rows after it). Files must be UTF-8.
//!
//! Every row is checked first; bad rows become warnings with their line numbers. With
//! `fail_on_warnings` any warning imports nothing; without it the good rows are imported. Either
//! way the import is one transaction: all the good rows or none.

use std::collections::{HashMap, HashSet};

use keygate_types::model::NewApiKey;
use keygate_types::{ApiKeyValue, KeyDigest};
use serde::Serialize;

use keygate_store::Change;

use crate::{Error, Result, Store};

/// What an import did, in AWS's response shape.
#[derive(Debug, Clone, Serialize)]
pub struct ImportResult {
    pub ids: Vec<String>,
    pub warnings: Vec<String>,
}

/// The outcome of the checks of one CSV row that need no store lookup.
enum Checked {
    Warning(String),
    Row(Candidate),
}

/// A row that passed those checks; its value and plans are checked against the store next.
struct Candidate {
    line: u64,
    digest: KeyDigest,
    /// The raw `UsagePlanIds` field.
    plans: String,
    key: NewApiKey,
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

/// The text of a CSV file's bytes: UTF-8, with or without a byte order mark.
///
/// # Errors
/// [`Error::Invalid`] naming the line: UTF-16 (Excel's "Unicode text") is refused with how to
/// save the file instead, and so is any other byte sequence that is not UTF-8.
pub fn decode(bytes: &[u8]) -> Result<&str> {
    let utf16 = bytes.starts_with(&[0xff, 0xfe])
        || bytes.starts_with(&[0xfe, 0xff])
        || (bytes.len() >= 2 && (bytes[0] == 0 || bytes[1] == 0));
    if utf16 {
        return Err(Error::Invalid(
            "line 1: the file is UTF-16, which keygate does not read: save it as UTF-8 \
             (\"CSV UTF-8\")"
                .to_owned(),
        ));
    }
    let bytes = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes);
    std::str::from_utf8(bytes).map_err(|e| {
        let good = &bytes[..e.valid_up_to()];
        let line = 1 + good.iter().filter(|&&b| b == b'\n').count();
        let column = 1 + good.len() - good.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        Error::Invalid(format!(
            "line {line}, column {column}: the file is not UTF-8: save it as UTF-8 (\"CSV UTF-8\")"
        ))
    })
}

/// Strict quoting: a field that opens with `"` must close on its own line. A CSV reader would
/// otherwise read on to the next `"`, however many lines later, and the rows in between (their
/// key values included) would end up inside one field.
///
/// # Errors
/// [`Error::Invalid`] naming the line of the unterminated quote.
fn check_quotes(text: &str) -> Result<()> {
    for (i, line) in text.split('\n').enumerate() {
        let line = line.strip_suffix('\r').unwrap_or(line).as_bytes();
        let mut at = 0;
        while at < line.len() {
            // `at` is the start of a field: only a quote there opens a quoted field.
            if line[at] == b'"' {
                at += 1;
                loop {
                    match line.get(at) {
                        None => {
                            return Err(Error::Invalid(format!(
                                "line {}: a quoted field is not closed on its line (unterminated \
                                 \"); fields cannot span lines: close the quote, and write a \
                                 quote inside a field as \"\"",
                                i + 1
                            )));
                        }
                        Some(b'"') if line.get(at + 1) == Some(&b'"') => at += 2,
                        Some(b'"') => {
                            at += 1;
                            break;
                        }
                        Some(_) => at += 1,
                    }
                }
            }
            match line[at.min(line.len())..].iter().position(|&b| b == b',') {
                Some(comma) => at += comma + 1,
                None => break,
            }
        }
    }
    Ok(())
}

/// For the fuzz targets (`fuzz/`) only: every step of an import that needs no store (decoding,
/// quoting, rows, fields, key values), on any bytes.
#[doc(hidden)]
pub fn fuzz_parse(data: &[u8]) {
    let Ok(text) = decode(data) else { return };
    if check_quotes(text).is_err() {
        return;
    }
    let mut reader =
        csv::ReaderBuilder::new().trim(csv::Trim::All).flexible(true).from_reader(text.as_bytes());
    let Ok(headers) = reader.headers().cloned() else { return };
    let plans_col = headers.iter().position(|h| h.eq_ignore_ascii_case("usageplanids"));
    for record in reader.records().flatten() {
        for field in rejoin_single_quoted(&record, plans_col) {
            let _ = ApiKeyValue::parse(&field);
        }
    }
}

/// Imports keys from CSV text.
///
/// # Errors
/// [`Error::Invalid`] when the header lacks `Name` or `Key`, the file is not CSV, a quoted field
/// is not closed on its line, or `fail_on_warnings` is set and a row is bad (the message lists
/// the warnings).
pub async fn import(store: &Store, csv_text: &str, fail_on_warnings: bool) -> Result<ImportResult> {
    let csv_text = csv_text.strip_prefix('\u{feff}').unwrap_or(csv_text);
    check_quotes(csv_text)?;
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

    // First pass: every check that needs no store lookup, in file order. A row passing them all
    // is kept with its value digest, so the digests can be looked up in the store at once.
    let mut seen_names = HashSet::new();
    let mut checked = Vec::new();
    for record in reader.records() {
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                let line = e.position().map_or(0, |p| p.line());
                checked.push(Checked::Warning(format!("line {line}: not a valid CSV row ({e})")));
                continue;
            }
        };
        let line = record.position().map_or(0, |p| p.line());
        let record = rejoin_single_quoted(&record, plans_col);
        let field = |c: Option<usize>| c.and_then(|c| record.get(c)).map_or("", |v| v.trim());
        let name = field(Some(name_col));
        if name.is_empty() {
            checked.push(Checked::Warning(format!("line {line}: Name is empty")));
            continue;
        }
        let texts = crate::keys::check_text("Name", name)
            .and_then(|()| crate::keys::check_text("Description", field(desc_col)));
        if let Err(e) = texts {
            checked.push(Checked::Warning(format!("line {line}: {e}")));
            continue;
        }
        let value = match ApiKeyValue::parse(field(Some(key_col))) {
            Ok(v) => v,
            Err(e) => {
                checked.push(Checked::Warning(format!("line {line}: Key: {e}")));
                continue;
            }
        };
        let enabled = match field(enabled_col).to_ascii_lowercase().as_str() {
            "" | "true" => true,
            "false" => false,
            other => {
                checked.push(Checked::Warning(format!(
                    "line {line}: Enabled must be true or false, not {other:?}"
                )));
                continue;
            }
        };
        if !seen_names.insert(name.to_owned()) {
            checked.push(Checked::Warning(format!(
                "line {line}: an API key named {name:?} already exists"
            )));
            continue;
        }
        let digest = value.digest();
        let description = Some(field(desc_col)).filter(|d| !d.is_empty()).map(str::to_owned);
        checked.push(Checked::Row(Candidate {
            line,
            digest,
            plans: field(plans_col).to_owned(),
            key: NewApiKey {
                name: name.to_owned(),
                value,
                description,
                customer_id: None,
                enabled,
                expires: None,
            },
        }));
    }

    // One bulk lookup of names and one of values instead of queries per row.
    let candidates = || {
        checked.iter().filter_map(|c| match c {
            Checked::Row(r) => Some(r),
            Checked::Warning(_) => None,
        })
    };
    let digests: Vec<KeyDigest> = candidates().map(|r| r.digest).collect();
    let names: Vec<&str> = candidates().map(|r| r.key.name.as_str()).collect();
    let (existing_values, existing_names) = if digests.is_empty() {
        (HashSet::new(), HashSet::new())
    } else {
        (store.existing_key_digests(&digests).await?, store.existing_key_names(&names).await?)
    };

    // Second pass, in file order again: duplicate values, then usage plans (each plan id is
    // looked up once per import).
    let mut seen_values = HashSet::new();
    let mut plan_cache: HashMap<String, Option<String>> = HashMap::new();
    let mut rows = Vec::new();
    let mut warnings = Vec::new();
    for c in checked {
        let row = match c {
            Checked::Warning(w) => {
                warnings.push(w);
                continue;
            }
            Checked::Row(row) => row,
        };
        let Candidate { line, digest, plans, key } = row;
        if existing_names.contains(&key.name) {
            warnings.push(format!("line {line}: an API key named {:?} already exists", key.name));
            continue;
        }
        if !seen_values.insert(digest) || existing_values.contains(&digest) {
            warnings.push(format!("line {line}: another API key already has this Key value"));
            continue;
        }
        let mut plan_ids = Vec::new();
        let mut bad_plan = None;
        for p in plans.trim_matches(|c| c == '"' || c == '\'').split(',') {
            let p = p.trim();
            if p.is_empty() {
                continue;
            }
            let found = match plan_cache.get(p) {
                Some(found) => found.clone(),
                None => {
                    let found = store.get_plan(p).await?.map(|plan| plan.id);
                    plan_cache.insert(p.to_owned(), found.clone());
                    found
                }
            };
            match found {
                Some(id) => plan_ids.push(id),
                None => bad_plan = Some(p.to_owned()),
            }
        }
        if let Some(p) = bad_plan {
            warnings.push(format!("line {line}: usage plan {p} not found"));
            continue;
        }
        rows.push((key, plan_ids));
    }
    if fail_on_warnings && !warnings.is_empty() {
        return Err(Error::Invalid(format!(
            "nothing imported (failonwarnings): {}",
            warnings.join("; ")
        )));
    }
    // A new key in one plan (or none) can break no rule; the rest are checked, and the rows
    // copied for a retry only then (an import can be a million rows).
    let created = if rows.is_empty() {
        Vec::new()
    } else if rows.iter().all(|(_, plan_ids)| plan_ids.len() <= 1) {
        store.apply(Change::ImportKeys(rows)).await?.into_keys()?
    } else {
        crate::apply_checked!(store, {
            // Rows share few plan sets: each set is checked once.
            let mut checked: Vec<&[String]> = Vec::new();
            for (key, plan_ids) in &rows {
                if plan_ids.len() > 1 && !checked.contains(&plan_ids.as_slice()) {
                    crate::rules::plans_may_share_a_key(store, &key.name, plan_ids).await?;
                    checked.push(plan_ids);
                }
            }
            Change::ImportKeys(rows.clone())
        })
        .into_keys()?
    };
    Ok(ImportResult { ids: created.into_iter().map(|k| k.id).collect(), warnings })
}

#[cfg(test)]
mod tests {

    use super::*;

    #[test]
    fn an_unterminated_quote_is_an_error_on_its_line() {
        let text = "Name,Key,Description\na,KeyValue0123456789abcdefghij,\"oops\nb,KeyValue0123456789abcdefghik,x\n";
        let e = check_quotes(text).unwrap_err().to_string();
        assert!(e.contains("line 2") && e.contains("unterminated"), "{e}");
        assert!(check_quotes("a,\"b\"\"").is_err());
    }

    #[test]
    fn well_formed_quotes_pass() {
        for ok in [
            "Name,Key\na,b\n",
            "Name,Key,Description\r\na,b,\"x, \"\"y\"\"\"\r\n",
            "a,b\"c,d\n",
            "a,\"b\"c,\"\"\n",
            "",
        ] {
            assert!(check_quotes(ok).is_ok(), "{ok:?}");
        }
    }

    #[test]
    fn utf16_and_bad_utf8_name_the_line() {
        let utf16: Vec<u8> = [0xff, 0xfe]
            .into_iter()
            .chain("Name".encode_utf16().flat_map(u16::to_le_bytes))
            .collect();
        let e = decode(&utf16).unwrap_err().to_string();
        assert!(e.contains("line 1") && e.contains("UTF-16"), "{e}");
        let no_bom: Vec<u8> = "Name".encode_utf16().flat_map(u16::to_le_bytes).collect();
        assert!(decode(&no_bom).unwrap_err().to_string().contains("UTF-16"));
        let e = decode(b"Name,Key\nab\xffc,d\n").unwrap_err().to_string();
        assert!(e.contains("line 2, column 3"), "{e}");
        assert_eq!(decode(b"\xef\xbb\xbfName,Key\n").unwrap(), "Name,Key\n");
    }

    #[tokio::test]
    async fn rows_after_an_unterminated_quote_are_not_swallowed_into_a_description() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(crate::open(dir.path()).await.unwrap(), "test:import");
        let text = "Name,Key,Description\na,KeyValue0123456789abcdefghij,\"oops\n\
                    b,KeyValue0123456789abcdefghik,x\n";
        let e = import(&store, text, false).await.unwrap_err().to_string();
        assert!(e.contains("line 2"), "{e}");
        assert!(store.list_keys(keygate_store::Page::first(10), None).await.unwrap().is_empty());
    }
}
