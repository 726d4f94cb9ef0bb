//! A service's tables on a DynamoDB engine: `CreateTable` from a [`TableSpec`], adoption of an
//! existing table whose key schema matches (a redeploy, or a table kept by `DeletionPolicy:
//! Retain`: the seed's "candidate-dev already exists" does not happen), deletion.

use keygate_types::{IndexSpec, KeySchema, TableSpec};
use serde_json::{Value, json};

use crate::client::{Client, Error};

/// What [`ensure`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Created,
    /// The table existed with the same key schema and was kept, data and all.
    Adopted,
}

/// Why a table cannot be made ready.
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    #[error(
        "table {table} exists with the key schema {existing}, but {logical_id} declares {declared}; \
         keygate does not change a table's keys (DynamoDB cannot): delete the table (`aws dynamodb \
         delete-table --table-name {table} --endpoint-url {endpoint}`) or give the resource \
         another TableName"
    )]
    KeyMismatch {
        table: String,
        logical_id: String,
        existing: String,
        declared: String,
        endpoint: String,
    },
    #[error(transparent)]
    DynamoDb(#[from] Error),
}

fn key_schema_json(key: &KeySchema) -> Value {
    let mut out = vec![json!({"AttributeName": key.hash, "KeyType": "HASH"})];
    if let Some(range) = &key.range {
        out.push(json!({"AttributeName": range, "KeyType": "RANGE"}));
    }
    Value::Array(out)
}

fn throughput_json((read, write): (u64, u64)) -> Value {
    json!({"ReadCapacityUnits": read, "WriteCapacityUnits": write})
}

fn index_json(index: &IndexSpec, table_throughput: Option<(u64, u64)>, global: bool) -> Value {
    let mut projection = json!({"ProjectionType": index.projection});
    if !index.non_key_attributes.is_empty() {
        projection["NonKeyAttributes"] = json!(index.non_key_attributes);
    }
    let mut out = json!({
        "IndexName": index.name,
        "KeySchema": key_schema_json(&index.key),
        "Projection": projection,
    });
    // A global index of a provisioned table needs its own throughput: the table's by default.
    if global && let Some(t) = index.provisioned.or(table_throughput) {
        out["ProvisionedThroughput"] = throughput_json(t);
    }
    out
}

/// The `CreateTable` input for `table`.
pub fn create_request(table: &TableSpec) -> Value {
    let attributes: Vec<Value> = table
        .attributes
        .iter()
        .map(|(name, ty)| json!({"AttributeName": name, "AttributeType": ty}))
        .collect();
    let mut request = json!({
        "TableName": table.table_name,
        "AttributeDefinitions": attributes,
        "KeySchema": key_schema_json(&table.key),
    });
    match table.provisioned {
        Some(t) => {
            request["BillingMode"] = json!("PROVISIONED");
            request["ProvisionedThroughput"] = throughput_json(t);
        }
        None => request["BillingMode"] = json!("PAY_PER_REQUEST"),
    }
    if let Some(view) = &table.stream_view_type {
        request["StreamSpecification"] = json!({"StreamEnabled": true, "StreamViewType": view});
    }
    if !table.global_indexes.is_empty() {
        request["GlobalSecondaryIndexes"] =
            table.global_indexes.iter().map(|i| index_json(i, table.provisioned, true)).collect();
    }
    if !table.local_indexes.is_empty() {
        request["LocalSecondaryIndexes"] =
            table.local_indexes.iter().map(|i| index_json(i, None, false)).collect();
    }
    request
}

/// The key schema of a `DescribeTable` answer's `Table`, as [`TableSpec::describe_key`] writes
/// it.
fn describe_existing(table: &Value) -> String {
    let ty = |name: &str| {
        table["AttributeDefinitions"]
            .as_array()
            .and_then(|a| a.iter().find(|d| d["AttributeName"] == name))
            .and_then(|d| d["AttributeType"].as_str())
            .unwrap_or("?")
            .to_owned()
    };
    table["KeySchema"]
        .as_array()
        .map(|keys| {
            keys.iter()
                .map(|k| {
                    let name = k["AttributeName"].as_str().unwrap_or("?");
                    format!("{name} ({}, {})", ty(name), k["KeyType"].as_str().unwrap_or("?"))
                })
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default()
}

/// The table's description (`DescribeTable`'s `Table`), or `None` if there is no such table.
pub async fn describe(client: &Client, name: &str) -> Result<Option<Value>, Error> {
    match client.call("DescribeTable", &json!({"TableName": name})).await {
        Ok(mut answer) => Ok(Some(answer["Table"].take())),
        Err(e) if e.kind() == Some("ResourceNotFoundException") => Ok(None),
        Err(e) => Err(e),
    }
}

/// Creates `table`, or adopts the existing table of that name when its key schema (names, types,
/// HASH/RANGE) is the one declared. Indexes, throughput and streams of an adopted table are left
/// as they are.
pub async fn ensure(client: &Client, table: &TableSpec) -> Result<Outcome, TableError> {
    if let Some(existing) = describe(client, &table.table_name).await? {
        let existing_key = describe_existing(&existing);
        let declared = table.describe_key();
        if existing_key != declared {
            return Err(TableError::KeyMismatch {
                table: table.table_name.clone(),
                logical_id: table.logical_id.clone(),
                existing: existing_key,
                declared,
                endpoint: client.endpoint().to_owned(),
            });
        }
        return Ok(Outcome::Adopted);
    }
    match client.call("CreateTable", &create_request(table)).await {
        Ok(_) => Ok(Outcome::Created),
        // Created by someone else between the two calls: judge it as an existing table.
        Err(e) if e.kind() == Some("ResourceInUseException") => {
            Box::pin(ensure(client, table)).await
        }
        Err(e) => Err(e.into()),
    }
}

/// Deletes the table; `false` if there was none.
pub async fn delete(client: &Client, name: &str) -> Result<bool, Error> {
    match client.call("DeleteTable", &json!({"TableName": name})).await {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == Some("ResourceNotFoundException") => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> TableSpec {
        TableSpec {
            logical_id: "CandidatesDynamoDbTable".to_owned(),
            table_name: "candidate-dev".to_owned(),
            retain: true,
            attributes: vec![
                ("id".to_owned(), "S".to_owned()),
                ("email".to_owned(), "S".to_owned()),
            ],
            key: KeySchema { hash: "id".to_owned(), range: None },
            provisioned: Some((1, 2)),
            stream_view_type: Some("NEW_AND_OLD_IMAGES".to_owned()),
            global_indexes: vec![IndexSpec {
                name: "byEmail".to_owned(),
                key: KeySchema { hash: "email".to_owned(), range: None },
                projection: "KEYS_ONLY".to_owned(),
                non_key_attributes: Vec::new(),
                provisioned: None,
            }],
            local_indexes: Vec::new(),
        }
    }

    #[test]
    fn a_table_spec_is_dynamodbs_create_table_input() {
        assert_eq!(
            create_request(&table()),
            json!({
                "TableName": "candidate-dev",
                "AttributeDefinitions": [
                    {"AttributeName": "id", "AttributeType": "S"},
                    {"AttributeName": "email", "AttributeType": "S"},
                ],
                "KeySchema": [{"AttributeName": "id", "KeyType": "HASH"}],
                "BillingMode": "PROVISIONED",
                "ProvisionedThroughput": {"ReadCapacityUnits": 1, "WriteCapacityUnits": 2},
                "StreamSpecification": {"StreamEnabled": true, "StreamViewType": "NEW_AND_OLD_IMAGES"},
                "GlobalSecondaryIndexes": [{
                    "IndexName": "byEmail",
                    "KeySchema": [{"AttributeName": "email", "KeyType": "HASH"}],
                    "Projection": {"ProjectionType": "KEYS_ONLY"},
                    "ProvisionedThroughput": {"ReadCapacityUnits": 1, "WriteCapacityUnits": 2},
                }],
            })
        );
    }

    #[test]
    fn an_existing_key_schema_reads_as_a_declared_one() {
        let existing = json!({
            "AttributeDefinitions": [{"AttributeName": "id", "AttributeType": "S"}],
            "KeySchema": [{"AttributeName": "id", "KeyType": "HASH"}],
        });
        assert_eq!(describe_existing(&existing), table().describe_key());
    }
}
