//! `- stream:` events: a function fed with a DynamoDB table's stream records, as Lambda's event
//! source mapping does (the seed series' next post: an email when a candidate is inserted).
//!
//! The ARN names the table: `Fn::GetAtt: [Table, StreamArn]` (or `!GetAtt Table.StreamArn`)
//! for a table of `resources`, checked once the resources are read ([`Ctx::check_streams`]), or
//! a literal stream ARN for a table created elsewhere. Kinesis streams are not served (noted).

use keygate_types::{StreamEvent, StreamTable, TableSpec};

use crate::ctx::{Ctx, Section};
use crate::diag::{FieldPath, Mark};
use crate::yaml::{Node, Value, quote};

const STREAM: Section = Section {
    what: "key of a stream event",
    used: &["type", "arn", "batchSize", "startingPosition", "enabled", "maximumRetryAttempts"],
    ignored: &[
        "batchWindow",
        "maximumRecordAgeInSeconds",
        "bisectBatchOnFunctionError",
        "destinations",
        "parallelizationFactor",
        "tumblingWindowInSeconds",
        "functionResponseType",
        "filterPatterns",
        "consumer",
        "startingPositionTimestamp",
    ],
};

/// A `Ref`/`Fn::GetAtt` of a table in an environment value, resolved once `resources` is read.
pub(crate) struct TableRef {
    marker: String,
    logical_id: String,
    attribute: Option<String>,
    mark: Mark,
    path: FieldPath,
}

/// A `Fn::GetAtt` of a stream event, checked against `resources` once they are read.
pub(crate) struct StreamRef {
    pub(crate) logical_id: String,
    pub(crate) mark: Mark,
    pub(crate) path: FieldPath,
}

impl Ctx<'_> {
    /// One `- stream:` event (`entry_value` is what follows `stream:`); `None` when it is not
    /// served (Kinesis, noted) or wrong (reported).
    pub(crate) fn stream_event(&mut self, node: &Node, path: &FieldPath) -> Option<StreamEvent> {
        let v = self.expand(node, path);
        let mut event = StreamEvent {
            table: StreamTable::Name(String::new()),
            batch_size: 10,
            starting_position: "TRIM_HORIZON".to_owned(),
            enabled: true,
            maximum_retry_attempts: None,
        };
        let arn = match &v.value {
            // `- stream: arn:aws:dynamodb:...`
            Value::Str(_) => v.clone(),
            Value::Map(entries) if v.tag.is_none() && !entries.iter().any(|e| e.key == "arn") => {
                // `- stream: {Fn::GetAtt: [...]}` is an ARN too.
                if entries.len() == 1 && entries[0].key.starts_with("Fn::") {
                    v.clone()
                } else {
                    self.error(
                        v.mark,
                        &path.key("arn"),
                        "missing; e.g. `arn: {Fn::GetAtt: [CandidatesDynamoDbTable, StreamArn]}`",
                    );
                    return None;
                }
            }
            Value::Map(entries) if v.tag.is_none() => {
                let mut arn = None;
                for e in entries {
                    let p = path.key(&e.key);
                    match e.key.as_str() {
                        "type" => match self.string(&e.value, &p, "dynamodb").as_deref() {
                            Some("dynamodb") => {}
                            Some("kinesis") => {
                                self.other_events.push(format!("kinesis stream ({path})"));
                                return None;
                            }
                            Some(other) => {
                                let message = format!(
                                    "expected dynamodb (keygate reads DynamoDB streams), found {}",
                                    quote(other)
                                );
                                self.error(e.value.mark, &p, message);
                                return None;
                            }
                            None => return None,
                        },
                        "arn" => arn = Some(e.value.clone()),
                        "batchSize" => {
                            let n = self.integer(
                                &e.value,
                                &p,
                                "a whole number from 1 to 10000",
                                1..=10_000,
                            );
                            event.batch_size = n? as u32;
                        }
                        "startingPosition" => {
                            let s = self.string(&e.value, &p, "TRIM_HORIZON or LATEST")?;
                            if !matches!(s.as_str(), "TRIM_HORIZON" | "LATEST") {
                                let message = format!(
                                    "expected TRIM_HORIZON or LATEST, found {} (AT_TIMESTAMP is for \
                                     Kinesis)",
                                    quote(&s)
                                );
                                self.error(e.value.mark, &p, message);
                                return None;
                            }
                            event.starting_position = s;
                        }
                        "enabled" => event.enabled = self.boolean(&e.value, &p)?,
                        "maximumRetryAttempts" => {
                            let n = self.integer(
                                &e.value,
                                &p,
                                "-1 (retry until it succeeds) or 0 to 10000",
                                -1..=10_000,
                            )?;
                            event.maximum_retry_attempts = u32::try_from(n).ok();
                        }
                        k => self.other_key(k, e.key_mark, &p, &STREAM),
                    }
                }
                arn?
            }
            Value::Invalid => return None,
            _ if v.tag.is_some() => v.clone(),
            _ => {
                self.mismatch(&v, path, "a stream ARN, or a map with type: dynamodb and arn");
                return None;
            }
        };
        event.table = self.stream_table(&arn, &path.key("arn"))?;
        Some(event)
    }

    /// The table a stream ARN names: `Fn::GetAtt: [Id, StreamArn]`, `!GetAtt Id.StreamArn`, or
    /// `arn:aws:dynamodb:<region>:<account>:table/<name>/stream/<label>`.
    fn stream_table(&mut self, node: &Node, path: &FieldPath) -> Option<StreamTable> {
        let expected = "a DynamoDB stream ARN: `Fn::GetAtt: [Table, StreamArn]` for a table of \
                        resources, or arn:aws:dynamodb:REGION:ACCOUNT:table/NAME/stream/LABEL";
        let get_att = match (&node.tag, &node.value) {
            (Some(tag), value) if tag == "!GetAtt" => Some(value.clone()),
            (None, Value::Map(entries)) if entries.len() == 1 && entries[0].key == "Fn::GetAtt" => {
                Some(entries[0].value.value.clone())
            }
            _ => None,
        };
        if let Some(target) = get_att {
            let parts: Option<(String, String)> = match &target {
                Value::Str(s) => s.split_once('.').map(|(a, b)| (a.to_owned(), b.to_owned())),
                Value::Seq(items) if items.len() == 2 => match (&items[0].value, &items[1].value) {
                    (Value::Str(a), Value::Str(b)) => Some((a.clone(), b.clone())),
                    _ => None,
                },
                _ => None,
            };
            return match parts {
                Some((id, attribute)) if attribute == "StreamArn" => {
                    self.stream_refs.push(StreamRef {
                        logical_id: id.clone(),
                        mark: node.mark,
                        path: path.clone(),
                    });
                    Some(StreamTable::Resource(id))
                }
                Some((_, attribute)) => {
                    let message = format!(
                        "Fn::GetAtt gives {} here, which is not a stream; use StreamArn",
                        quote(&attribute)
                    );
                    self.error(node.mark, path, message);
                    None
                }
                None => {
                    self.mismatch(node, path, expected);
                    None
                }
            };
        }
        let v = self.expand(node, path);
        let Value::Str(arn) = &v.value else {
            self.mismatch(&v, path, expected);
            return None;
        };
        let name = arn
            .strip_prefix("arn:")
            .and_then(|rest| rest.split(':').nth(4))
            .and_then(|resource| resource.strip_prefix("table/"))
            .and_then(|rest| rest.split_once("/stream/"))
            .map(|(name, _)| name)
            .filter(|name| !name.is_empty());
        match name {
            Some(name) if arn.starts_with("arn:aws:dynamodb:") => {
                Some(StreamTable::Name(name.to_owned()))
            }
            _ => {
                self.mismatch(&v, path, expected);
                None
            }
        }
    }

    /// `Ref: Table` or `Fn::GetAtt: [Table, Arn]` (also `!Ref`, `!GetAtt Table.Arn`) as an
    /// environment value: a marker now, the table's name or ARN once `resources` is read
    /// ([`Ctx::resolve_table_refs`]). `None` for any other value.
    pub(crate) fn table_ref(&mut self, node: &Node, path: &FieldPath) -> Option<String> {
        let (function, target) = match (&node.tag, &node.value) {
            (Some(tag), value) if tag == "!Ref" || tag == "!GetAtt" => {
                (tag.trim_start_matches('!').to_owned(), value.clone())
            }
            (None, Value::Map(entries))
                if entries.len() == 1
                    && matches!(entries[0].key.as_str(), "Ref" | "Fn::GetAtt") =>
            {
                (
                    entries[0].key.trim_start_matches("Fn::").to_owned(),
                    entries[0].value.value.clone(),
                )
            }
            _ => return None,
        };
        let parts = match (&function[..], &target) {
            ("Ref", Value::Str(id)) => Some((id.clone(), None)),
            ("GetAtt", Value::Str(s)) => {
                s.split_once('.').map(|(a, b)| (a.to_owned(), Some(b.to_owned())))
            }
            ("GetAtt", Value::Seq(items)) if items.len() == 2 => {
                match (&items[0].value, &items[1].value) {
                    (Value::Str(a), Value::Str(b)) => Some((a.clone(), Some(b.clone()))),
                    _ => None,
                }
            }
            _ => None,
        };
        let Some((logical_id, attribute)) = parts else {
            self.mismatch(node, path, "`Ref: <table>` or `Fn::GetAtt: [<table>, Arn]`");
            return Some(String::new());
        };
        let marker = format!("\u{0}table-ref:{}", self.table_refs.len());
        self.table_refs.push(TableRef {
            marker: marker.clone(),
            logical_id,
            attribute,
            mark: node.mark,
            path: path.clone(),
        });
        Some(marker)
    }

    /// Replaces the markers of [`Ctx::table_ref`] in every function's environment: `Ref` gives
    /// the table's name, `Fn::GetAtt [T, Arn]` its ARN in the service's region.
    pub(crate) fn resolve_table_refs(&mut self, definition: &mut keygate_types::ServiceDefinition) {
        let refs = std::mem::take(&mut self.table_refs);
        let mut values: Vec<(String, String)> = Vec::new();
        for r in refs {
            let Some(table) = definition.tables.iter().find(|t| t.logical_id == r.logical_id)
            else {
                let message = format!(
                    "{}; keygate resolves Ref and Fn::GetAtt to its tables only",
                    no_such_table(&r.logical_id, &definition.tables)
                );
                self.error(r.mark, &r.path, message);
                continue;
            };
            let value = match r.attribute.as_deref() {
                None => table.table_name.clone(),
                Some("Arn") => format!(
                    "arn:aws:dynamodb:{}:000000000000:table/{}",
                    definition.region, table.table_name
                ),
                Some(other) => {
                    let message = format!(
                        "Fn::GetAtt {} of a table is not known before the table exists; use Ref \
                         (its name) or Arn",
                        quote(other)
                    );
                    self.error(r.mark, &r.path, message);
                    continue;
                }
            };
            values.push((r.marker, value));
        }
        for f in &mut definition.functions {
            for value in f.environment.values_mut() {
                if let Some((_, resolved)) = values.iter().find(|(m, _)| m == value) {
                    *value = resolved.clone();
                }
            }
        }
    }

    /// Every `Fn::GetAtt` of a stream event names a table of `resources` that has a stream.
    pub(crate) fn check_streams(&mut self, tables: &[TableSpec]) {
        for r in std::mem::take(&mut self.stream_refs) {
            match tables.iter().find(|t| t.logical_id == r.logical_id) {
                None => self.error(r.mark, &r.path, no_such_table(&r.logical_id, tables)),
                Some(t) if t.stream_view_type.is_none() => {
                    let message = format!(
                        "the table {} has no stream; add `StreamSpecification: {{StreamViewType: \
                         NEW_AND_OLD_IMAGES}}` to its Properties",
                        r.logical_id
                    );
                    self.error(r.mark, &r.path, message);
                }
                Some(_) => {}
            }
        }
    }
}

/// `no DynamoDB table "X" in resources.Resources (it has A, B)`.
fn no_such_table(logical_id: &str, tables: &[TableSpec]) -> String {
    let known: Vec<&str> = tables.iter().map(|t| t.logical_id.as_str()).collect();
    let has =
        if known.is_empty() { String::new() } else { format!(" (it has {})", known.join(", ")) };
    format!("no DynamoDB table {} in resources.Resources{has}", quote(logical_id))
}
