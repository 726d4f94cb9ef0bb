//! One function per command; each opens the store, calls `keygate-control`, prints the result.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use keygate_control::Store;
use keygate_control::keys::{self, CreateKey};
use keygate_control::{plans, usage};
use keygate_functions::FunctionHost;
use keygate_gateway::Gateway;
use keygate_limits::clock::Clock;
use keygate_store::SqliteStore;
use keygate_types::model::{NewUsagePlan, UsagePlan, UsagePlanPatch};
use keygate_types::plan::{Quota, Throttle};
use tokio::net::TcpListener;

use crate::cli::{
    Cli, Command, KeysCommand, LimitArgs, PlansCommand, ServiceArgs, UsageArgs, UsageCommand,
};
use crate::output;

/// Base URL printed for endpoints when the command does not itself listen.
const DEFAULT_BASE_URL: &str = "http://127.0.0.1:4000";

pub(crate) async fn run(cli: Cli) -> Result<()> {
    let data_dir = cli.data_dir;
    match cli.command {
        Command::Up { service, listen } => {
            let listener = bind(listen.listen).await?;
            let base = format!("http://{}", listener.local_addr()?);
            let store = open(&data_dir).await?;
            let report = deploy(&store, &service, &data_dir, &base).await?;
            output::deploy_report(&report, false)?;
            serve(store, listener).await
        }
        Command::Deploy { service, json } => {
            let store = open(&data_dir).await?;
            let base = std::env::var("KEYGATE_URL").unwrap_or_else(|_| DEFAULT_BASE_URL.to_owned());
            let report = deploy(&store, &service, &data_dir, &base).await?;
            output::deploy_report(&report, json)
        }
        Command::Serve { listen } => {
            let listener = bind(listen.listen).await?;
            let store = open(&data_dir).await?;
            serve(store, listener).await
        }
        Command::Info { service, json } => {
            let store = open(&data_dir).await?;
            let loaded = load(&service)?;
            let base = std::env::var("KEYGATE_URL").unwrap_or_else(|_| DEFAULT_BASE_URL.to_owned());
            let info = keygate_control::info::info(
                &store,
                &loaded.definition.service,
                &loaded.definition.stage,
                &base,
            )
            .await?;
            output::info(&info, json)
        }
        Command::Keys(cmd) => {
            let store = open(&data_dir).await?;
            run_keys(&store, cmd).await
        }
        Command::Plans(cmd) => {
            let store = open(&data_dir).await?;
            run_plans(&store, cmd).await
        }
        Command::Usage(args) => {
            let store = open(&data_dir).await?;
            run_usage(&store, args).await
        }
    }
}

/// Builds the throttle and quota a create or update asks for. `current` fills in the parts the
/// flags leave out (for updates).
fn limits(a: &LimitArgs, current: Option<&UsagePlan>) -> Result<(Option<Throttle>, Option<Quota>)> {
    let cur_t = current.and_then(|p| p.throttle);
    let throttle = match (a.rate, a.burst, cur_t) {
        (None, None, _) => None,
        (Some(r), Some(b), _) => Some(Throttle { rate_limit: r, burst_limit: b }),
        (Some(r), None, Some(t)) => Some(Throttle { rate_limit: r, ..t }),
        (None, Some(b), Some(t)) => Some(Throttle { burst_limit: b, ..t }),
        _ => bail!("a throttle needs both --rate and --burst"),
    };
    let cur_q = current.and_then(|p| p.quota);
    let quota = match (a.quota_limit, a.quota_period, cur_q) {
        (None, None, _) if a.quota_offset.is_none() => None,
        (l, p, Some(q)) => Some(Quota {
            limit: l.unwrap_or(q.limit),
            period: p.unwrap_or(q.period),
            offset: a.quota_offset.unwrap_or(q.offset),
        }),
        (Some(limit), Some(period), None) => {
            Some(Quota { limit, period, offset: a.quota_offset.unwrap_or(0) })
        }
        _ => bail!("a quota needs both --quota-limit and --quota-period"),
    };
    Ok((throttle, quota))
}

async fn run_usage(store: &Store, args: UsageArgs) -> Result<()> {
    if let Some(UsageCommand::SetRemaining { plan, key, remaining, json }) = args.command {
        let now = keygate_limits::clock::SystemClock.now_unix_ms();
        let grant = usage::set_remaining(store, &plan, &key, remaining, now).await?;
        if json {
            return output::json(&serde_json::json!({
                "usagePlanId": grant.plan_id,
                "keyId": grant.key_id,
                "periodStart": grant.period_start,
                "remaining": remaining,
            }));
        }
        println!(
            "API key {} may make {remaining} more requests in usage plan {} this period (from {})",
            grant.key_id, grant.plan_id, grant.period_start
        );
        return Ok(());
    }
    // clap enforces these without a subcommand.
    let (Some(plan), Some(from), Some(to)) = (args.plan, args.from, args.to) else {
        bail!("--plan, --from and --to are required");
    };
    let from = usage::parse_day(&from, "--from")?;
    let to = usage::parse_day(&to, "--to")?;
    let report = usage::report(store, &plan, args.key.as_deref(), from, to).await?;
    output::usage(&report, args.json)
}

async fn run_plans(store: &Store, cmd: PlansCommand) -> Result<()> {
    match cmd {
        PlansCommand::Create { name, description, limits: l, json } => {
            let (throttle, quota) = limits(&l, None)?;
            let p =
                plans::create(store, NewUsagePlan { name, description, throttle, quota }).await?;
            output::plan(store, &p, json).await
        }
        PlansCommand::List { json } => output::plans(&store.list_plans().await?, json),
        PlansCommand::Get { plan, json } => {
            output::plan(store, &plans::find(store, &plan).await?, json).await
        }
        PlansCommand::Update {
            plan,
            name,
            description,
            limits: l,
            no_throttle,
            no_quota,
            json,
        } => {
            let current = plans::find(store, &plan).await?;
            let (throttle, quota) = limits(&l, Some(&current))?;
            let patch = UsagePlanPatch {
                name,
                description: description.map(Some),
                throttle: if no_throttle { Some(None) } else { throttle.map(Some) },
                quota: if no_quota { Some(None) } else { quota.map(Some) },
            };
            let p = plans::update(store, &current.id, patch).await?;
            output::plan(store, &p, json).await
        }
        PlansCommand::Delete { plan, json } => {
            let p = plans::delete(store, &plan).await?;
            if json {
                output::json(&p)
            } else {
                println!("deleted usage plan {} ({})", p.name, p.id);
                Ok(())
            }
        }
        PlansCommand::AddKey { plan, key, json } => {
            let (p, _) = plans::add_key(store, &plan, &key).await?;
            output::plan(store, &p, json).await
        }
        PlansCommand::RemoveKey { plan, key, json } => {
            let (p, _) = plans::remove_key(store, &plan, &key).await?;
            output::plan(store, &p, json).await
        }
        PlansCommand::AddStage { plan, api, stage, method_throttle, json } => {
            let mut throttles = BTreeMap::new();
            for t in &method_throttle {
                let (k, v) = plans::parse_method_throttle(t)?;
                throttles.insert(k, v);
            }
            let p = plans::add_stage(store, &plan, &api, &stage, throttles).await?;
            output::plan(store, &p, json).await
        }
        PlansCommand::RemoveStage { plan, api, stage, json } => {
            let p = plans::remove_stage(store, &plan, &api, &stage).await?;
            output::plan(store, &p, json).await
        }
    }
}

async fn run_keys(store: &Store, cmd: KeysCommand) -> Result<()> {
    match cmd {
        KeysCommand::Create {
            name,
            value,
            description,
            customer_id,
            disabled,
            usage_plan,
            json,
        } => {
            let (key, value) = keys::create(
                store,
                CreateKey { name, value, description, customer_id, enabled: !disabled, usage_plan },
            )
            .await?;
            output::created_key(&key, &value, json)
        }
        KeysCommand::List { json } => output::keys(&store.list_keys().await?, json),
        KeysCommand::Get { key, json } => output::key(&keys::find(store, &key).await?, json),
        KeysCommand::Enable { key, json } => {
            output::key(&keys::set_enabled(store, &key, true).await?, json)
        }
        KeysCommand::Disable { key, json } => {
            output::key(&keys::set_enabled(store, &key, false).await?, json)
        }
        KeysCommand::Delete { key, json } => {
            let deleted = keys::delete(store, &key).await?;
            if json {
                output::key(&deleted, true)
            } else {
                println!("deleted API key {} ({})", deleted.name, deleted.id);
                Ok(())
            }
        }
    }
}

async fn open(data_dir: &Path) -> Result<Store> {
    let store = SqliteStore::open(data_dir)
        .await
        .with_context(|| format!("cannot open the store in {}", data_dir.display()))?;
    Ok(Arc::new(store))
}

async fn bind(addr: std::net::SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr}"))
}

fn load(service: &ServiceArgs) -> Result<keygate_config::Loaded> {
    let env = |name: &str| std::env::var(name).ok();
    let opts = keygate_config::LoadOptions { stage: service.stage.clone(), env: &env };
    match keygate_config::load(&service.config, &opts) {
        Ok(loaded) => Ok(loaded),
        // Every diagnostic on its own line; the first is the cause.
        Err(e) => bail!("{e}"),
    }
}

async fn deploy(
    store: &Store,
    service: &ServiceArgs,
    data_dir: &Path,
    base_url: &str,
) -> Result<keygate_control::DeployReport> {
    let loaded = load(service)?;
    let report = keygate_control::deploy(
        store,
        loaded.definition,
        loaded.notes,
        &data_dir.join("artifacts"),
        base_url,
    )
    .await?;
    Ok(report)
}

/// Serves until SIGINT or SIGTERM, then drains connections and stops function processes.
async fn serve(store: Store, listener: TcpListener) -> Result<()> {
    let addr = listener.local_addr()?;
    let clock = Arc::new(keygate_limits::clock::SystemClock);
    let gateway = Gateway::new(store, FunctionHost::default(), clock)
        .await
        .context("cannot read the deployed stages from the store")?;
    let refresh = gateway.spawn_refresh();
    let flush = gateway.spawn_flush();
    println!("keygate listening on http://{addr}");
    tracing::info!(%addr, "gateway listening");
    keygate_gateway::serve(listener, Arc::clone(&gateway), shutdown_signal()).await;
    refresh.abort();
    flush.abort();
    // After the drain: every admitted request is counted before the usage is written.
    gateway.shutdown().await;
    tracing::info!("gateway stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down");
}
