//! The deployed services' `- stream:` events (Lambda's event source mappings) while keygate
//! serves: one poller per (function, table), kept in line with what is deployed. At start and
//! whenever the store's version moves (a `keygate deploy` or `remove` beside the serving keygate,
//! an admin API change), the deployed definitions are read again: pollers of mappings no longer
//! deployed, or whose function changed, are stopped (each resumes from its checkpoint when
//! started again), new ones are started, and the DynamoDB engine is started when a service
//! declares its first table or stream, so a redeploy that adds the seed series' stream function
//! needs no restart.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use keygate_control::Store;
use keygate_dynamodb::streams::{self, Invoke, Mapping};
use keygate_functions::FunctionHost;
use keygate_types::ServiceDefinition;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::dynamodb::Dynamo;
use crate::function_log;

/// How often the store's version is looked at for a changed deployment.
const CHECK_EVERY: Duration = Duration::from_secs(1);
/// How long starting the stream mappings may wait for each to hold its position in its stream.
const ENABLE_WAIT: Duration = Duration::from_secs(10);

/// One running poller.
struct Poller {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Poller {
    async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// The running pollers, by what they were started from (the mapping and the function's whole
/// spec, as JSON: a changed function gets a new poller that invokes the new code).
pub(crate) struct StreamPollers {
    running: HashMap<String, Poller>,
    functions: FunctionHost,
    dir: PathBuf,
}

/// One mapping as deployed, before it runs.
struct Wanted {
    mapping: Mapping,
    region: String,
    invoke: Invoke,
}

impl StreamPollers {
    pub(crate) fn new(functions: FunctionHost, data_dir: &Path) -> Self {
        Self { running: HashMap::new(), functions, dir: data_dir.join("streams") }
    }

    /// Starts and stops pollers so that exactly the enabled stream events of `definitions` run.
    /// Stops come first, so a mapping's checkpoint is never read by two pollers at once.
    pub(crate) async fn reconcile(
        &mut self,
        definitions: &[ServiceDefinition],
        dynamo: &mut Dynamo,
    ) -> Result<()> {
        let mut wanted = self.wanted(definitions);
        let gone: Vec<String> =
            self.running.keys().filter(|k| !wanted.contains_key(*k)).cloned().collect();
        for key in gone {
            if let Some(poller) = self.running.remove(&key) {
                poller.stop().await;
            }
        }
        wanted.retain(|key, _| !self.running.contains_key(key));
        if wanted.is_empty() {
            return Ok(());
        }
        {
            use std::os::unix::fs::DirBuilderExt;
            let _ = std::fs::DirBuilder::new().mode(0o700).create(&self.dir);
        }
        let mut starting = Vec::new();
        for (key, Wanted { mapping, region, invoke }) in wanted {
            let client = dynamo.client(&region, false).await?;
            tracing::info!(
                function = %mapping.function_name,
                table = %mapping.table_name,
                "starting the stream mapping"
            );
            let (stop, stopped) = watch::channel(false);
            let (enabled_tx, enabled_rx) = watch::channel(false);
            let task = streams::spawn_reporting(client, mapping, invoke, stopped, enabled_tx);
            starting.push(enabled_rx);
            self.running.insert(key, Poller { stop, task });
        }
        // Until each new mapping holds its position, a record written with `LATEST` would be
        // missed: `serve` starts answering requests only once they do (bounded; said if not).
        let all = async {
            for mut enabled in starting {
                let _ = enabled.wait_for(|e| *e).await;
            }
        };
        if tokio::time::timeout(ENABLE_WAIT, all).await.is_err() {
            tracing::warn!(
                "a stream mapping has no position in its stream after {}s; with LATEST, records \
                 written before it has one are not read",
                ENABLE_WAIT.as_secs()
            );
        }
        Ok(())
    }

    /// Stops every poller (before the functions stop: no new invocation starts meanwhile).
    pub(crate) async fn stop(&mut self) {
        for (_, poller) in self.running.drain() {
            poller.stop().await;
        }
    }

    /// The enabled stream events of `definitions`, by key.
    fn wanted(&self, definitions: &[ServiceDefinition]) -> HashMap<String, Wanted> {
        let mut wanted = HashMap::new();
        for def in definitions {
            for f in &def.functions {
                for s in f.streams.iter().filter(|s| s.enabled) {
                    let table_name = match &s.table {
                        keygate_types::StreamTable::Resource(id) => def
                            .tables
                            .iter()
                            .find(|t| t.logical_id == *id)
                            .map(|t| t.table_name.clone()),
                        keygate_types::StreamTable::Name(name) => Some(name.clone()),
                    };
                    let Some(table_name) = table_name else { continue };
                    let key = serde_json::json!({
                        "function": f,
                        "stream": s,
                        "table": table_name,
                        "baseDir": def.base_dir,
                        "region": def.region,
                        "service": def.service,
                        "stage": def.stage,
                    })
                    .to_string();
                    let checkpoint = self.dir.join(format!(
                        "{}.json",
                        function_log::file_of(
                            Path::new(""),
                            &format!("{}--{table_name}", f.function_name)
                        )
                        .file_stem()
                        .map(|s| s.to_string_lossy().into_owned())
                        .unwrap_or_default()
                    ));
                    let mapping = Mapping {
                        function_name: f.function_name.clone(),
                        table_name,
                        batch_size: s.batch_size,
                        starting_position: s.starting_position.clone(),
                        maximum_retry_attempts: s.maximum_retry_attempts,
                        region: def.region.clone(),
                        checkpoint,
                    };
                    let host = self.functions.clone();
                    let target = Arc::new((
                        f.clone(),
                        def.base_dir.clone(),
                        def.region.clone(),
                        def.service.clone(),
                        def.stage.clone(),
                    ));
                    let invoke: Invoke = Arc::new(move |event| {
                        let host = host.clone();
                        let target = Arc::clone(&target);
                        Box::pin(async move {
                            let (spec, base_dir, region, service, stage) = &*target;
                            let f = keygate_functions::FunctionRef {
                                spec,
                                base_dir,
                                region,
                                service,
                                stage,
                            };
                            host.invoke(&f, bytes::Bytes::from(event))
                                .await
                                .map(|_| ())
                                .map_err(|e| e.to_string())
                        })
                    });
                    wanted.insert(key, Wanted { mapping, region: def.region.clone(), invoke });
                }
            }
        }
        wanted
    }
}

/// Whether a service of `definitions` declares a table or a stream event (so the functions need
/// the DynamoDB engine).
pub(crate) fn needs_dynamodb(definitions: &[ServiceDefinition]) -> bool {
    definitions
        .iter()
        .any(|d| !d.tables.is_empty() || d.functions.iter().any(|f| !f.streams.is_empty()))
}

/// Follows the store until `stopped`: on every change of its version, starts the DynamoDB engine
/// if the deployed services now need it and reconciles the pollers. Returns the engine and the
/// pollers, stopped, for the caller to shut down in order. A failure is logged and tried again
/// at the next check (the serving gateway is never stopped by it).
pub(crate) async fn follow(
    store: Store,
    mut dynamo: Dynamo,
    mut pollers: StreamPollers,
    mut version: i64,
    mut stopped: watch::Receiver<bool>,
) -> Dynamo {
    loop {
        tokio::select! {
            _ = stopped.wait_for(|s| *s) => break,
            () = tokio::time::sleep(CHECK_EVERY) => {}
        }
        let now = match store.version().await {
            Ok(now) => now,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the store's version for stream events");
                continue;
            }
        };
        if now == version {
            continue;
        }
        match update(&store, &mut dynamo, &mut pollers).await {
            Ok(()) => version = now,
            Err(e) => tracing::warn!(
                error = %format!("{e:#}"),
                "cannot start the stream events of the deployed services; trying again"
            ),
        }
    }
    pollers.stop().await;
    dynamo
}

async fn update(store: &Store, dynamo: &mut Dynamo, pollers: &mut StreamPollers) -> Result<()> {
    let definitions = keygate_control::info::deployed_definitions(store).await?;
    if needs_dynamodb(&definitions) && dynamo.function_env().is_empty() {
        let endpoint = dynamo.endpoint(false).await?;
        tracing::info!(%endpoint, "DynamoDB engine started for a newly deployed table");
        pollers.functions.set_service_env(dynamo.function_env());
    }
    pollers.reconcile(&definitions, dynamo).await
}
