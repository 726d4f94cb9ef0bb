//! DynamoDB stream events: what Lambda's event source mapping does for a `- stream:` event.
//!
//! One poller task per mapping (function, table) reads the table's stream shard by shard, in
//! order (a parent shard before its children), and invokes the function with batches of up to
//! `batchSize` records in Lambda's event shape (`{"Records": [...]}`, each record with
//! `eventSourceARN`). A batch that fails is retried, with backoff, until it succeeds or its
//! `maximumRetryAttempts` are spent (then it is skipped, with a warning); records after it wait,
//! so order per shard holds. After each handled batch the last sequence number is written to a
//! checkpoint file, so a restarted keygate resumes where it stopped instead of re-reading from
//! the stream's start or losing what came in meanwhile. The first start reads from
//! `startingPosition`: `TRIM_HORIZON`, or `LATEST`, which keygate takes as the end of every
//! shard at that moment and saves (`position_latest`), so records written while keygate is down
//! are read after a restart even when none had been read before. An idle shard is polled every
//! 250 ms.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::watch;

use crate::client::Client;

/// How long an idle shard waits before it is read again.
const IDLE_POLL: Duration = Duration::from_millis(250);
/// Backoff between retries of a failed batch, doubling up to the cap.
const RETRY_FIRST: Duration = Duration::from_millis(500);
const RETRY_CAP: Duration = Duration::from_secs(30);

/// Invokes the function with one event; `Err` (the function's error) makes the batch retried.
pub type Invoke =
    Arc<dyn Fn(Vec<u8>) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + Sync>;

/// One stream event of a function.
#[derive(Debug, Clone)]
pub struct Mapping {
    /// `AWS_LAMBDA_FUNCTION_NAME`, for messages.
    pub function_name: String,
    pub table_name: String,
    pub batch_size: u32,
    /// `TRIM_HORIZON` or `LATEST`, for a shard never read before.
    pub starting_position: String,
    /// `None`: retry until it succeeds.
    pub maximum_retry_attempts: Option<u32>,
    /// The service's region, in records (`awsRegion`) and ARNs, as on AWS.
    pub region: String,
    /// Where the position is kept between runs.
    pub checkpoint: PathBuf,
}

/// What a mapping has read: per shard, the last sequence number handled, and the closed shards
/// read to their end.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct Checkpoint {
    /// The stream the positions belong to (a table deleted and made again has a new one).
    stream_arn: String,
    positions: BTreeMap<String, String>,
    finished: Vec<String>,
    /// Set once the mapping has its first position: from then on a shard without a position is
    /// read from its start (with `LATEST`, the records before the first position are behind the
    /// position saved for them).
    #[serde(default)]
    started: bool,
}

/// Starts the poller of `mapping`; it ends when `stop` turns true.
pub fn spawn(
    client: Client,
    mapping: Mapping,
    invoke: Invoke,
    stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    spawn_reporting(client, mapping, invoke, stop, watch::channel(false).0)
}

/// [`spawn`], turning `enabled` true once the poller holds its first position in the stream
/// (from then on, with `LATEST`, every record written is read).
pub fn spawn_reporting(
    client: Client,
    mapping: Mapping,
    invoke: Invoke,
    stop: watch::Receiver<bool>,
    enabled: watch::Sender<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut stop_wait = stop.clone();
        tokio::select! {
            () = poll(&client, &mapping, &invoke, &stop, &enabled) => {}
            _ = stop_wait.wait_for(|s| *s) => {}
        }
    })
}

async fn poll(
    client: &Client,
    m: &Mapping,
    invoke: &Invoke,
    stop: &watch::Receiver<bool>,
    reported: &watch::Sender<bool>,
) {
    let mut warned = false;
    loop {
        if *stop.borrow() {
            return;
        }
        match poll_stream(client, m, invoke, reported).await {
            Ok(()) => warned = false,
            Err(e) => {
                if !warned {
                    tracing::warn!(
                        target: "keygate::dynamodb",
                        function = %m.function_name,
                        table = %m.table_name,
                        error = %e,
                        "cannot read the table's stream; retrying"
                    );
                    warned = true;
                }
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    }
}

/// Reads every shard of the table's current stream once through (the open one until it
/// closes, which on DynamoDB Local is never); returns to look for new shards.
async fn poll_stream(
    client: &Client,
    m: &Mapping,
    invoke: &Invoke,
    reported: &watch::Sender<bool>,
) -> Result<(), String> {
    let table = crate::tables::describe(client, &m.table_name)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("no table {}", m.table_name))?;
    let stream_arn = table["LatestStreamArn"]
        .as_str()
        .ok_or_else(|| format!("the table {} has no stream", m.table_name))?
        .to_owned();
    let mut checkpoint = load_checkpoint(m, &stream_arn);
    let description = client
        .call_streams("DescribeStream", &json!({"StreamArn": stream_arn}))
        .await
        .map_err(|e| e.to_string())?;
    let shards = description["StreamDescription"]["Shards"].as_array().cloned().unwrap_or_default();
    if !checkpoint.started {
        if m.starting_position == "LATEST" {
            position_latest(client, &stream_arn, &shards, &mut checkpoint).await?;
        }
        checkpoint.started = true;
        save_checkpoint(m, &checkpoint);
    }
    for shard in ordered(&shards) {
        let id = shard["ShardId"].as_str().unwrap_or_default().to_owned();
        if id.is_empty() || checkpoint.finished.contains(&id) {
            continue;
        }
        read_shard(client, m, invoke, &stream_arn, &id, &mut checkpoint, reported).await?;
        checkpoint.finished.push(id);
        save_checkpoint(m, &checkpoint);
    }
    tokio::time::sleep(IDLE_POLL).await;
    Ok(())
}

/// Shards with their parents first.
fn ordered(shards: &[Value]) -> Vec<&Value> {
    let mut out: Vec<&Value> = Vec::new();
    let mut left: Vec<&Value> = shards.iter().collect();
    while !left.is_empty() {
        let before = left.len();
        left.retain(|s| {
            let parent = s["ParentShardId"].as_str();
            let ready = parent.is_none_or(|p| {
                !shards.iter().any(|o| o["ShardId"].as_str() == Some(p))
                    || out.iter().any(|o| o["ShardId"].as_str() == Some(p))
            });
            if ready {
                out.push(s);
            }
            !ready
        });
        if left.len() == before {
            out.append(&mut left);
        }
    }
    out
}

/// Reads one shard until it is closed, invoking the function with each batch.
async fn read_shard(
    client: &Client,
    m: &Mapping,
    invoke: &Invoke,
    stream_arn: &str,
    shard: &str,
    checkpoint: &mut Checkpoint,
    reported: &watch::Sender<bool>,
) -> Result<(), String> {
    let mut request = json!({"StreamArn": stream_arn, "ShardId": shard});
    match checkpoint.positions.get(shard) {
        Some(seq) => {
            request["ShardIteratorType"] = json!("AFTER_SEQUENCE_NUMBER");
            request["SequenceNumber"] = json!(seq);
        }
        // No position: everything in the shard is after the mapping's start (`position_latest`
        // left the shards that were there at a `LATEST` start with one, or finished).
        None => request["ShardIteratorType"] = json!("TRIM_HORIZON"),
    }
    let answer =
        client.call_streams("GetShardIterator", &request).await.map_err(|e| e.to_string())?;
    let mut iterator = answer["ShardIterator"].as_str().map(str::to_owned);
    // Said once the first position is taken, as Lambda's mapping turns `Enabled`: with `LATEST`,
    // what is written from here on is read (what came before this line is not).
    if !*reported.borrow() && iterator.is_some() {
        tracing::info!(
            target: "keygate::dynamodb",
            function = %m.function_name,
            table = %m.table_name,
            from = request["ShardIteratorType"].as_str().unwrap_or_default(),
            "stream mapping enabled: reading the table's stream"
        );
        reported.send_replace(true);
    }
    while let Some(current) = iterator {
        let records = client
            .call_streams(
                "GetRecords",
                &json!({"ShardIterator": current, "Limit": m.batch_size.min(1000)}),
            )
            .await
            .map_err(|e| e.to_string())?;
        iterator = records["NextShardIterator"].as_str().map(str::to_owned);
        let batch = records["Records"].as_array().cloned().unwrap_or_default();
        if batch.is_empty() {
            if iterator.is_some() {
                tokio::time::sleep(IDLE_POLL).await;
            }
            continue;
        }
        for chunk in batch.chunks(m.batch_size.max(1) as usize) {
            let last = chunk
                .last()
                .and_then(|r| r["dynamodb"]["SequenceNumber"].as_str())
                .unwrap_or_default()
                .to_owned();
            deliver(m, invoke, stream_arn, chunk).await;
            checkpoint.positions.insert(shard.to_owned(), last);
            save_checkpoint(m, checkpoint);
        }
    }
    Ok(())
}

/// `LATEST`, the first time a mapping starts: every shard there now is read to its current end
/// without delivering anything, and that end saved (a closed shard as finished, an open one as
/// the sequence number of its last record; an empty open shard needs none). DynamoDB's own
/// `LATEST` iterator has no position to save, so a keygate stopped before the first record
/// would have lost, once restarted, what was written meanwhile; from this checkpoint it reads
/// every record written after the start.
async fn position_latest(
    client: &Client,
    stream_arn: &str,
    shards: &[Value],
    checkpoint: &mut Checkpoint,
) -> Result<(), String> {
    for shard in ordered(shards) {
        let Some(id) = shard["ShardId"].as_str().filter(|id| !id.is_empty()) else { continue };
        let request =
            json!({"StreamArn": stream_arn, "ShardId": id, "ShardIteratorType": "TRIM_HORIZON"});
        let answer =
            client.call_streams("GetShardIterator", &request).await.map_err(|e| e.to_string())?;
        let iterator = answer["ShardIterator"].as_str().map(str::to_owned);
        let (open, last) = skip_to_end(client, iterator).await?;
        if !open {
            checkpoint.finished.push(id.to_owned());
        } else if let Some(last) = last {
            checkpoint.positions.insert(id.to_owned(), last);
        }
    }
    Ok(())
}

/// Reads a shard from `iterator` to its current end without delivering anything: whether the
/// shard is still open, and the sequence number of the last record passed, if any.
async fn skip_to_end(
    client: &Client,
    mut iterator: Option<String>,
) -> Result<(bool, Option<String>), String> {
    let mut last = None;
    while let Some(current) = iterator {
        let records = client
            .call_streams("GetRecords", &json!({"ShardIterator": current, "Limit": 1000}))
            .await
            .map_err(|e| e.to_string())?;
        let next = records["NextShardIterator"].as_str().map(str::to_owned);
        let batch = records["Records"].as_array().map_or(&[][..], Vec::as_slice);
        match batch.last() {
            Some(record) => {
                last = record["dynamodb"]["SequenceNumber"].as_str().map(str::to_owned);
                iterator = next;
            }
            // Nothing more for now: the end of an open shard.
            None => return Ok((next.is_some(), last)),
        }
    }
    // A closed shard read to its end: nothing follows in it.
    Ok((false, last))
}

/// Invokes the function with `records` until it succeeds or the retries are spent.
async fn deliver(m: &Mapping, invoke: &Invoke, stream_arn: &str, records: &[Value]) {
    let event = event(m, stream_arn, records);
    let body = serde_json::to_vec(&event).unwrap_or_default();
    let mut attempt = 0u32;
    let mut backoff = RETRY_FIRST;
    loop {
        match invoke(body.clone()).await {
            Ok(()) => return,
            Err(e) => {
                if m.maximum_retry_attempts.is_some_and(|max| attempt >= max) {
                    tracing::warn!(
                        target: "keygate::dynamodb",
                        function = %m.function_name,
                        table = %m.table_name,
                        records = records.len(),
                        error = %e,
                        "a batch of stream records failed {} times; skipping it (maximumRetryAttempts)",
                        attempt + 1
                    );
                    return;
                }
                tracing::warn!(
                    target: "keygate::dynamodb",
                    function = %m.function_name,
                    table = %m.table_name,
                    records = records.len(),
                    error = %e,
                    "a batch of stream records failed; retrying it"
                );
                attempt += 1;
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(RETRY_CAP);
            }
        }
    }
}

/// Lambda's DynamoDB stream event for `records` (as `GetRecords` gives them).
pub fn event(m: &Mapping, stream_arn: &str, records: &[Value]) -> Value {
    let source_arn = aws_arn(stream_arn, &m.region);
    let records: Vec<Value> = records
        .iter()
        .map(|r| {
            let mut r = r.clone();
            r["awsRegion"] = json!(m.region);
            r["eventSourceARN"] = json!(source_arn);
            // A TTL delete, as DynamoDB Local names it, is a REMOVE.
            if r["eventName"] == "UNKNOWN_TO_SDK_VERSION" {
                r["eventName"] = json!("REMOVE");
            }
            r
        })
        .collect();
    json!({ "Records": records })
}

/// DynamoDB Local's `arn:aws:dynamodb:ddblocal:000000000000:...` with the service's region, as
/// the function would see it on AWS.
fn aws_arn(arn: &str, region: &str) -> String {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    if parts.len() == 6 && parts[3] == "ddblocal" {
        format!("{}:{}:{}:{region}:{}:{}", parts[0], parts[1], parts[2], parts[4], parts[5])
    } else {
        arn.to_owned()
    }
}

fn load_checkpoint(m: &Mapping, stream_arn: &str) -> Checkpoint {
    std::fs::read(&m.checkpoint)
        .ok()
        .and_then(|bytes| serde_json::from_slice::<Checkpoint>(&bytes).ok())
        .filter(|c| c.stream_arn == stream_arn)
        .map(|mut c| {
            // Written before `started` existed: a position means it had started.
            c.started |= !c.positions.is_empty() || !c.finished.is_empty();
            c
        })
        .unwrap_or_else(|| Checkpoint {
            stream_arn: stream_arn.to_owned(),
            ..Checkpoint::default()
        })
}

fn save_checkpoint(m: &Mapping, checkpoint: &Checkpoint) {
    let Ok(bytes) = serde_json::to_vec(checkpoint) else { return };
    // Written beside and renamed: a crash never leaves half a checkpoint.
    let tmp = m.checkpoint.with_extension("tmp");
    if let Some(dir) = m.checkpoint.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    if std::fs::write(&tmp, bytes).is_ok() {
        let _ = std::fs::rename(&tmp, &m.checkpoint);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapping() -> Mapping {
        Mapping {
            function_name: "svc-dev-notify".to_owned(),
            table_name: "candidate-dev".to_owned(),
            batch_size: 10,
            starting_position: "LATEST".to_owned(),
            maximum_retry_attempts: None,
            region: "us-east-1".to_owned(),
            checkpoint: PathBuf::from("/nonexistent/cp.json"),
        }
    }

    #[test]
    fn records_become_lambdas_event() {
        let arn = "arn:aws:dynamodb:ddblocal:000000000000:table/candidate-dev/stream/2026-12-05T19:17:22.217";
        let record = json!({
            "eventID": "1", "eventName": "INSERT", "eventVersion": "1.1",
            "eventSource": "aws:dynamodb", "awsRegion": "ddblocal",
            "dynamodb": {"Keys": {"id": {"S": "a"}}, "NewImage": {"id": {"S": "a"}},
                         "SequenceNumber": "100", "SizeBytes": 10, "StreamViewType": "NEW_AND_OLD_IMAGES"},
        });
        let ttl = json!({"eventName": "UNKNOWN_TO_SDK_VERSION", "dynamodb": {}});
        let event = event(&mapping(), arn, &[record, ttl]);
        let first = &event["Records"][0];
        assert_eq!(first["awsRegion"], "us-east-1");
        assert_eq!(
            first["eventSourceARN"],
            "arn:aws:dynamodb:us-east-1:000000000000:table/candidate-dev/stream/2026-12-05T19:17:22.217"
        );
        assert_eq!(first["dynamodb"]["NewImage"]["id"]["S"], "a");
        assert_eq!(event["Records"][1]["eventName"], "REMOVE");
    }

    #[test]
    fn parent_shards_come_first() {
        let shards = vec![
            json!({"ShardId": "c", "ParentShardId": "b"}),
            json!({"ShardId": "b", "ParentShardId": "a"}),
            json!({"ShardId": "a", "ParentShardId": "gone"}),
        ];
        let ids: Vec<&str> =
            ordered(&shards).iter().map(|s| s["ShardId"].as_str().unwrap()).collect();
        assert_eq!(ids, ["a", "b", "c"]);
    }
}
