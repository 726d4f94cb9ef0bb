//! One function per command; each opens the store, calls `keygate-control`, prints the result.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use keygate_control::keys::{self, CreateKey};
use keygate_control::{ConfigStore, ListQuery, Listed, Store};
use keygate_control::{plans, usage};
use keygate_functions::{FunctionHost, FunctionUsers, HostOptions, IdRange, RunAs};
use keygate_gateway::Gateway;
use keygate_limits::clock::Clock;
use keygate_types::model::{NewUsagePlan, UsagePlan, UsagePlanPatch};
use keygate_types::plan::{Quota, Throttle};
use tokio::net::TcpListener;

use keygate_control::admin::{self, MasterKey};

use crate::cli::{
    AdminCommand, Cli, Command, CredentialsCommand, FunctionArgs, KeysCommand, LimitArgs,
    PlansCommand, ServiceArgs, TokenCommand, UsageArgs, UsageCommand,
};
use crate::dynamodb::Dynamo;
use crate::function_log;
use crate::output;
use crate::stream_pollers::{self, StreamPollers};
use crate::watchdog::{self, Watchdog};

/// Base URL printed for endpoints when the command does not itself listen.
const DEFAULT_BASE_URL: &str = "http://127.0.0.1:4000";

pub(crate) async fn run(cli: Cli) -> Result<()> {
    // Absolute, because stored paths (staged artifacts) must not depend on the working directory
    // of whoever reads them: function processes run in the service's directory.
    let data_dir = std::path::absolute(&cli.data_dir)
        .with_context(|| format!("invalid --data-dir {}", cli.data_dir.display()))?;
    let at = StoreAt { data_dir: data_dir.clone(), url: cli.database_url.clone() };
    if cli.command.needs_data() && at.url.is_none() {
        require_data(&data_dir)?;
    }
    match cli.command {
        Command::Up { service, listen, functions, dynamodb } => {
            let (host, watchdog, watch) =
                function_host(&functions, Some(file_log(&data_dir)?), &data_dir)?;
            let mut dynamo = Dynamo::new(&dynamodb, &data_dir).watched_by(watch);
            let listener = bind(listen.listen).await?;
            let admin = bind(listen.admin()).await?;
            let base = format!("http://{}", listener.local_addr()?);
            let store = open(&at).await?;
            let audited = Store::new(Arc::clone(&store), cli_actor());
            let report =
                match deploy(&audited, &service, &data_dir, &base, &mut dynamo, false).await {
                    Ok(report) => report,
                    Err(e) => {
                        dynamo.stop().await;
                        return Err(e);
                    }
                };
            output::deploy_report(&report, false)?;
            serve(store, host, watchdog, dynamo, &data_dir, listener, admin, &listen).await
        }
        Command::Deploy { service, dynamodb, json } => {
            let store = open_audited(&at).await?;
            let base = std::env::var("KEYGATE_URL").unwrap_or_else(|_| DEFAULT_BASE_URL.to_owned());
            let mut dynamo = Dynamo::new(&dynamodb, &data_dir);
            let report = deploy(&store, &service, &data_dir, &base, &mut dynamo, true).await;
            dynamo.stop().await;
            output::deploy_report(&report?, json)
        }
        Command::Serve { listen, functions, dynamodb } => {
            let (host, watchdog, watch) =
                function_host(&functions, Some(file_log(&data_dir)?), &data_dir)?;
            let dynamo = Dynamo::new(&dynamodb, &data_dir).watched_by(watch);
            let listener = bind(listen.listen).await?;
            let admin = bind(listen.admin()).await?;
            let created = at.url.is_none() && !keygate_control::has_store(&data_dir);
            let store = open(&at).await?;
            let base = format!("http://{}", listener.local_addr()?);
            output::served(
                &keygate_control::info::served(&Store::new(Arc::clone(&store), cli_actor()), &base)
                    .await?,
                &data_dir,
                created,
            );
            serve(store, host, watchdog, dynamo, &data_dir, listener, admin, &listen).await
        }
        Command::Invoke { service, function, data, path, functions, dynamodb } => {
            invoke(&service, &function, data, path, &functions, &dynamodb, &data_dir).await
        }
        Command::Logs { service, function, tail, since } => {
            let loaded = load(&service)?;
            let spec = find_function(&loaded, &function)?;
            let since_ms =
                since.as_deref().map(function_log::parse_since).transpose()?.unwrap_or(0);
            let dir = data_dir.join("logs");
            let name = spec.function_name.clone();
            tokio::task::spawn_blocking(move || function_log::print(&dir, &name, since_ms, tail))
                .await?
        }
        Command::Remove { service, dynamodb, keys, json } => {
            let store = open_audited(&at).await?;
            let loaded = load(&service)?;
            let def = &loaded.definition;
            let mut dynamo = Dynamo::new(&dynamodb, &data_dir);
            // The deployed stage's tables decide; the file's are the best guess before reading it.
            let deployed = keygate_control::info::deployed_definitions(&store).await?;
            let has_tables = deployed
                .iter()
                .find(|d| d.service == def.service && d.stage == def.stage)
                .is_some_and(|d| d.tables.iter().any(|t| !t.retain));
            let client =
                if has_tables { Some(dynamo.client(&def.region, true).await) } else { None };
            let result = match client.transpose() {
                Ok(client) => keygate_control::remove::remove(
                    &store,
                    &def.service,
                    &def.stage,
                    client.as_ref(),
                    keys,
                )
                .await
                .map_err(anyhow::Error::from),
                Err(e) => Err(e),
            };
            dynamo.stop().await;
            output::remove_report(&result?, json)
        }
        Command::Info { service, json } => {
            let store = open_audited(&at).await?;
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
            let store = open_audited(&at).await?;
            run_keys(&store, cmd).await
        }
        Command::Plans(cmd) => {
            let store = open_audited(&at).await?;
            run_plans(&store, cmd).await
        }
        Command::Admin(cmd) => {
            let store = open_audited(&at).await?;
            run_admin(&store, &data_dir, cmd).await
        }
        Command::Migrate => {
            open(&at).await?;
            println!("keygate's schema is up to date in {}", at.describe());
            Ok(())
        }
        Command::Audit { json } => {
            let store = open_audited(&at).await?;
            let mut entries = Vec::new();
            let mut after = 0;
            loop {
                let page = store.list_audit(after, 1000).await?;
                let Some(last) = page.last() else { break };
                after = last.seq;
                entries.extend(page);
            }
            output::audit(&entries, json)
        }
        Command::Usage(args) => {
            let store = open_audited(&at).await?;
            run_usage(&store, args).await
        }
        Command::Enforcement(crate::cli::EnforcementCommand::Set {
            mode,
            stage,
            service,
            json,
        }) => {
            let store = open_audited(&at).await?;
            let switch = mode.parse::<keygate_types::Enforcement>().ok();
            let switched =
                keygate_control::enforcement::set(&store, &stage, service.as_deref(), switch)
                    .await?;
            if json {
                return output::json(&serde_json::json!({
                    "stage": stage,
                    "enforcement": mode,
                    "services": switched,
                }));
            }
            let what = match switch {
                Some(keygate_types::Enforcement::Report) => {
                    "private routes now let every request through and record what they would refuse"
                }
                Some(keygate_types::Enforcement::Enforce) => "report-only routes now refuse",
                None => "key checks are as deployed again",
            };
            for s in &switched {
                println!(
                    "{} stage {}: {what} (running gateways within 1 s)",
                    output::shown(s),
                    output::shown(&stage)
                );
            }
            Ok(())
        }
        Command::Enforcement(crate::cli::EnforcementCommand::Report { stage, since, json }) => {
            let store = open_audited(&at).await?;
            let since_secs = i64::try_from(function_log::parse_since(&since)? / 1000)?;
            let clients =
                keygate_control::enforcement::by_client(&store, stage.as_deref(), since_secs)
                    .await?;
            output::would_refuse(&clients, since_secs, stage.as_deref(), json)
        }
        Command::Config(crate::cli::ConfigCommand::Check { file }) => {
            let Some(path) = file.or(cli.config) else {
                bail!(
                    "no file to check: give one (`keygate config check keygate.toml`) or --config"
                );
            };
            use clap::CommandFactory;
            let checked = crate::config_file::check(&path, &crate::cli::Cli::command());
            match checked {
                Ok(summary) => {
                    println!("{summary}");
                    Ok(())
                }
                Err(errors) => bail!("{errors}"),
            }
        }
        Command::Config(crate::cli::ConfigCommand::Settings) => {
            use clap::CommandFactory;
            for (key, (env, help)) in crate::config_file::known(&crate::cli::Cli::command()) {
                println!("{key:<24} {env:<32} {help}");
            }
            Ok(())
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
    // clap enforces this without a subcommand.
    let Some(plan) = args.plan else { bail!("--plan is required") };
    let now = keygate_limits::clock::SystemClock.now_unix_ms();
    let (start, today) = usage::current_period(store, &plan, now).await?;
    let from = args.from.map(|d| usage::parse_day(&d, "--from")).transpose()?.unwrap_or(start);
    let to = args.to.map(|d| usage::parse_day(&d, "--to")).transpose()?.unwrap_or(today);
    let report = usage::report(store, &plan, args.key.as_deref(), from, to).await?;
    output::usage(&report, args.json)
}

async fn run_plans(store: &Store, cmd: PlansCommand) -> Result<()> {
    match cmd {
        PlansCommand::Create { name, description, limits: l, json } => {
            let (throttle, quota) = limits(&l, None)?;
            let fallback = l.redis_unavailable.and_then(|f| f.0);
            let plan = NewUsagePlan { name, description, throttle, quota, fallback };
            let p = plans::create(store, plan, Vec::new()).await?;
            output::plan(store, &p, json).await
        }
        PlansCommand::List { list } => {
            let json = list.json;
            let all = listed(&list, |q| async move { plans::list(store, &q).await }).await?;
            output::plans(&all, json)
        }
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
                fallback: l.redis_unavailable.map(|f| f.0),
            };
            let p = plans::update(store, &current.id, patch).await?;
            output::plan(store, &p, json).await
        }
        PlansCommand::WhatIf { plan, quota_limit, quota_period, quota_offset, days, json } => {
            let quota = keygate_types::plan::Quota {
                limit: quota_limit,
                period: quota_period,
                offset: quota_offset,
            };
            let now = keygate_limits::clock::SystemClock.now_unix_ms();
            let today = keygate_limits::calendar::Date::from_unix_ms(now);
            let outcome = keygate_control::whatif::quota(store, &plan, quota, days, today).await?;
            output::what_if(&outcome, json)
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
            expires,
            json,
        } => {
            let now = keygate_limits::clock::SystemClock.now_unix_ms() / 1000;
            let expires = expires.map(|e| keys::parse_expiry(&e, now)).transpose()?.flatten();
            let (key, value) = keys::create(
                store,
                CreateKey {
                    name,
                    value,
                    description,
                    customer_id,
                    enabled: !disabled,
                    usage_plan,
                    expires,
                },
            )
            .await?;
            output::created_key(&key, &value, json)
        }
        KeysCommand::Rotate { key, grace, retire_when_idle, json } => {
            let grace = keys::parse_duration(&grace)?;
            let idle = retire_when_idle.as_deref().map(keys::parse_duration).transpose()?;
            let (key, value) = keys::rotate(store, &key, grace, idle).await?;
            output::rotated_key(&key, &value, keys::old_values_end(&key, grace), json)
        }
        KeysCommand::RevokeOld { key, json } => {
            let (key, n) = keys::revoke_old(store, &key).await?;
            if json {
                return output::json(&serde_json::json!({
                    "id": key.id,
                    "name": key.name,
                    "revokedOldValues": n,
                }));
            }
            match n {
                0 => println!(
                    "API key {} ({}) has no older value that still works",
                    output::shown(&key.name),
                    key.id
                ),
                n => println!(
                    "ended {n} older value{} of API key {} ({}); running gateways refuse {} within 1 s",
                    if n == 1 { "" } else { "s" },
                    output::shown(&key.name),
                    key.id,
                    if n == 1 { "it" } else { "them" }
                ),
            }
            Ok(())
        }
        KeysCommand::Import { file, fail_on_warnings, json } => {
            let bytes =
                std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let text = keygate_control::import::decode(&bytes)
                .with_context(|| format!("cannot import {}", file.display()))?;
            let result = keygate_control::import::import(store, text, fail_on_warnings).await?;
            if json {
                return output::json(&result);
            }
            println!("imported {} API key(s): {}", result.ids.len(), result.ids.join(", "));
            for w in &result.warnings {
                eprintln!("warning: {w}");
            }
            Ok(())
        }
        KeysCommand::Expire { key, when, json } => {
            let now = keygate_limits::clock::SystemClock.now_unix_ms() / 1000;
            output::key(
                &keys::set_expiry(store, &key, keys::parse_expiry(&when, now)?).await?,
                &[],
                json,
            )
        }
        KeysCommand::List { list } => {
            let json = list.json;
            let all = listed(&list, |q| async move { keys::list(store, &q, None).await }).await?;
            output::keys(&all, json)
        }
        KeysCommand::Get { key, json } => {
            let key = keys::find(store, &key).await?;
            let now = keygate_limits::clock::SystemClock.now_unix_ms().div_euclid(1000);
            let old = keys::old_values(store, &key.id, now).await?;
            output::key(&key, &old, json)
        }
        KeysCommand::Enable { key, json } => {
            let k = keys::set_enabled(store, &key, true).await?;
            output::key_changed(&k, "enabled", "accept", json)
        }
        KeysCommand::Disable { key, json } => {
            let k = keys::set_enabled(store, &key, false).await?;
            output::key_changed(&k, "disabled", "refuse", json)
        }
        KeysCommand::Delete { key, json } => {
            let k = keys::delete(store, &key).await?;
            output::key_changed(&k, "deleted", "refuse", json)
        }
    }
}

/// Where the store is: the embedded one in the data directory, or the database
/// `--database-url` names.
struct StoreAt {
    data_dir: PathBuf,
    url: Option<String>,
}

impl StoreAt {
    /// For messages: the data directory, or the URL without its password.
    fn describe(&self) -> String {
        match &self.url {
            Some(url) => keygate_control::redact_url(url),
            None => self.data_dir.display().to_string(),
        }
    }
}

/// The store as the CLI's user: every change is recorded in the audit log as `cli:<user>`.
async fn open_audited(at: &StoreAt) -> Result<Store> {
    Ok(Store::new(open(at).await?, cli_actor()))
}

/// The audit log's name for changes made with the CLI.
fn cli_actor() -> String {
    format!("cli:{}", user())
}

/// Who runs the CLI: `$USER`, else the name of the process's uid (`$USER` is unset under cron,
/// systemd and many containers), else `uid-<n>`.
fn user() -> String {
    if let Some(u) = std::env::var("USER").ok().filter(|u| !u.is_empty()) {
        return u;
    }
    if let Ok(u) = whoami::username() {
        return u;
    }
    #[cfg(unix)]
    if let Ok(m) = std::fs::metadata("/proc/self") {
        return format!("uid-{}", std::os::unix::fs::MetadataExt::uid(&m));
    }
    "unknown".to_owned()
}

fn master_key(data_dir: &Path) -> Result<MasterKey> {
    let env = std::env::var(admin::MASTER_KEY_ENV).ok();
    Ok(MasterKey::load(data_dir, env.as_deref())?)
}

async fn run_admin(store: &Store, data_dir: &Path, cmd: AdminCommand) -> Result<()> {
    match cmd {
        AdminCommand::Credentials(CredentialsCommand::Create { description, json }) => {
            let c = admin::create_credential(store, &master_key(data_dir)?, description).await?;
            if json {
                return output::json(&c);
            }
            println!("access key id:     {}", c.access_key_id);
            println!("secret access key: {}", c.secret_access_key);
            println!(
                "(shown once; use them as an AWS profile with --endpoint-url of the admin API)"
            );
            Ok(())
        }
        AdminCommand::Credentials(CredentialsCommand::List { json }) => {
            let list = store.list_admin_credentials().await?;
            if json {
                return output::json(&list);
            }
            for c in &list {
                let state = if c.revoked_date.is_some() { "revoked" } else { "active" };
                println!(
                    "{}  {state}  {}",
                    c.access_key_id,
                    output::shown(c.description.as_deref().unwrap_or(""))
                );
            }
            Ok(())
        }
        AdminCommand::Credentials(CredentialsCommand::Revoke { access_key_id }) => {
            admin::revoke_credential(store, &access_key_id).await?;
            println!("revoked {access_key_id}");
            Ok(())
        }
        AdminCommand::Token(TokenCommand::Create { description, json }) => {
            let t = admin::create_token(store, description).await?;
            if json {
                return output::json(&t);
            }
            println!("token: {}", t.token);
            println!("(id {}; shown once: send it as `Authorization: Bearer <token>`)", t.id);
            Ok(())
        }
        AdminCommand::Token(TokenCommand::List { json }) => {
            let list = store.list_admin_tokens().await?;
            if json {
                return output::json(&list);
            }
            for t in &list {
                let state = if t.revoked_date.is_some() { "revoked" } else { "active" };
                println!("{}  {}…  {state}", t.id, t.prefix);
            }
            Ok(())
        }
        AdminCommand::Token(TokenCommand::Revoke { id }) => {
            admin::revoke_token(store, &id).await?;
            println!("revoked token {id}");
            Ok(())
        }
    }
}

/// Commands that work on what a deploy made refuse a data directory without a store, rather
/// than create an empty one where they were run (the wrong directory, most often) and report
/// nothing.
fn require_data(data_dir: &Path) -> Result<()> {
    if keygate_control::has_store(data_dir) {
        return Ok(());
    }
    bail!(
        "no keygate data in {}: deploy first (keygate deploy), or pass --data-dir / set \
         KEYGATE_DATA_DIR to the data directory of the keygate you mean",
        data_dir.display()
    )
}

/// The store itself: for the gateway, and for a [`Store`] handle naming who acts.
async fn open(at: &StoreAt) -> Result<Arc<dyn ConfigStore>> {
    let store = match &at.url {
        Some(url) => keygate_control::open_url(url).await,
        None => keygate_control::open(&at.data_dir).await,
    };
    store.with_context(|| format!("cannot open the store in {}", at.describe()))
}

async fn bind(addr: std::net::SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr}"))
}

fn load(service: &ServiceArgs) -> Result<keygate_config::Loaded> {
    let env = |name: &str| std::env::var(name).ok();
    let opts = keygate_config::LoadOptions {
        stage: service.stage.clone(),
        region: service.region.clone(),
        env: &env,
        allow_unknown: service.allow_unknown,
    };
    let config = config_file(service)?;
    match keygate_config::load(&config, &opts) {
        Ok(loaded) => Ok(loaded),
        // Every diagnostic on its own line; the first is the cause.
        Err(e) => bail!("{e}"),
    }
}

/// `-c FILE`, else `serverless.yml`, else `serverless.yaml` in the current directory.
fn config_file(service: &ServiceArgs) -> Result<PathBuf> {
    if let Some(config) = &service.config {
        return Ok(config.clone());
    }
    for name in ["serverless.yml", "serverless.yaml"] {
        if Path::new(name).is_file() {
            // Said, as `sls` users know which file they are in, but a script may not.
            let here = std::env::current_dir().unwrap_or_default();
            eprintln!("note: using {}", here.join(name).display());
            return Ok(PathBuf::from(name));
        }
    }
    let here = std::env::current_dir().map(|d| d.display().to_string()).unwrap_or_default();
    bail!(
        "no serverless.yml (or serverless.yaml) in {here}: run keygate in the service's \
         directory, or name the file with -c FILE"
    )
}

/// The function log of a server: `<data dir>/logs`, read by `keygate logs`.
fn file_log(data_dir: &Path) -> Result<Arc<dyn keygate_functions::FunctionLog>> {
    Ok(Arc::new(function_log::FileLog::start(&data_dir.join("logs"))?))
}

/// The function `name` of the loaded file, or what the file has.
fn find_function<'a>(
    loaded: &'a keygate_config::Loaded,
    name: &str,
) -> Result<&'a keygate_types::FunctionSpec> {
    let functions = &loaded.definition.functions;
    functions.iter().find(|f| f.name == name).with_context(|| {
        let names: Vec<&str> = functions.iter().map(|f| f.name.as_str()).collect();
        format!("no function {name:?} in the service; it has: {}", names.join(", "))
    })
}

/// `keygate invoke`: stages the function's code as a deploy would, runs it once on a function
/// host of its own (with the service's DynamoDB when it declares tables), prints the result
/// (stdout) and the function's log lines (stderr).
async fn invoke(
    service: &ServiceArgs,
    function: &str,
    data: Option<String>,
    path: Option<PathBuf>,
    functions: &FunctionArgs,
    dynamodb: &crate::cli::DynamoArgs,
    data_dir: &Path,
) -> Result<()> {
    let loaded = load(service)?;
    find_function(&loaded, function)?;
    let event: serde_json::Value = match (&data, &path) {
        (Some(text), _) => serde_json::from_str(text).context("--data is not JSON")?,
        (None, Some(file)) => {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("cannot read the event file {}", file.display()))?;
            serde_json::from_str(&text)
                .with_context(|| format!("{} is not JSON", file.display()))?
        }
        (None, None) => serde_json::json!({}),
    };
    let mut definition = loaded.definition;
    keygate_control::deploy::stage_function(
        &mut definition,
        function,
        &loaded.places,
        &data_dir.join("artifacts"),
    )?;
    let (host, watchdog, watch) =
        function_host(functions, Some(Arc::new(function_log::StderrLog)), data_dir)?;
    let mut dynamo = Dynamo::new(dynamodb, data_dir).watched_by(watch);
    let result = async {
        if !definition.tables.is_empty() {
            dynamo.endpoint(true).await?;
            host.set_service_env(dynamo.function_env());
        }
        let spec = definition.functions.iter().find(|f| f.name == function).context("staged")?;
        let f = keygate_functions::FunctionRef::of(&definition, spec);
        Ok::<_, anyhow::Error>(host.invoke(&f, bytes::Bytes::from(event.to_string())).await)
    }
    .await;
    host.shutdown().await;
    dynamo.stop().await;
    if let Some(watchdog) = watchdog {
        let _ = tokio::task::spawn_blocking(move || watchdog.finish()).await;
    }
    match result? {
        Ok(body) => {
            let text = match serde_json::from_slice::<serde_json::Value>(&body) {
                Ok(json) => serde_json::to_string_pretty(&json)?,
                Err(_) => String::from_utf8_lossy(&body).into_owned(),
            };
            println!("{text}");
            Ok(())
        }
        Err(keygate_functions::InvokeError::FunctionError { error_type, message }) => {
            let error = serde_json::json!({"errorType": error_type, "errorMessage": message});
            println!("{}", serde_json::to_string_pretty(&error)?);
            bail!("function {function} failed: {error_type}: {message}")
        }
        Err(e) => bail!("function {function}: {e}"),
    }
}

/// Deploys the service; its tables go to `dynamo` (with `reuse`, the engine of a keygate
/// serving this data directory when there is one).
async fn deploy(
    store: &Store,
    service: &ServiceArgs,
    data_dir: &Path,
    base_url: &str,
    dynamo: &mut Dynamo,
    reuse: bool,
) -> Result<keygate_control::DeployReport> {
    let loaded = load(service)?;
    let client = if loaded.definition.tables.is_empty() {
        None
    } else {
        Some(dynamo.client(&loaded.definition.region, reuse).await?)
    };
    let report = keygate_control::deploy(
        store,
        loaded.definition,
        loaded.notes,
        &loaded.places,
        &data_dir.join("artifacts"),
        base_url,
        client.as_ref(),
    )
    .await?;
    Ok(report)
}

/// The function host, with the user functions run as (`--function-user`), and the watchdog
/// that kills its function processes if keygate dies without stopping them (none if it cannot
/// be started: a warning is logged and keygate serves on).
fn function_host(
    args: &FunctionArgs,
    function_log: Option<Arc<dyn keygate_functions::FunctionLog>>,
    data_dir: &Path,
) -> Result<(FunctionHost, Option<Watchdog>, Option<keygate_dynamodb::PidWatch>)> {
    let ids = IdRange::parse(&args.function_ids).map_err(anyhow::Error::msg)?;
    let users = FunctionUsers::for_host(args.function_user.as_deref(), ids)?;
    // What isolation holds, said once (docs/security.md, "Functions").
    match &users {
        FunctionUsers::PerFunction(ids) => {
            let (first, last) = ids.bounds();
            tracing::info!(
                "each function runs as a uid of its own (from {first}-{last}), with a group per \
                 service stage: functions cannot trace, signal or read each other's processes"
            );
        }
        FunctionUsers::Shared(RunAs { uid: 0, .. }) => tracing::warn!(
            "functions run as root (--function-user): they can read keygate's data directory \
             and reach each other's processes"
        ),
        FunctionUsers::Shared(RunAs { uid, gid }) => tracing::warn!(
            uid,
            gid,
            "every function runs as uid {uid} (--function-user): functions cannot read \
             keygate's data, but can trace and signal each other's processes (and read their \
             events); unset --function-user to give each function a uid of its own"
        ),
        FunctionUsers::Own => tracing::info!(
            "keygate does not run as root, so functions run as its own user: they cannot read \
             keygate's memory, but can read files of that user and trace, signal and read each \
             other's processes (and their events); run keygate as root to give each function a \
             uid of its own"
        ),
    }
    let (watchdog, group_watch) = watchdog::spawn().unzip();
    let group_watch_for_engine = group_watch.clone();
    // The DynamoDB engine's process groups are watched as the functions' are, and spared by
    // the reaper, which would otherwise take a child in a group of its own for a function's.
    let watch: Option<keygate_dynamodb::PidWatch> = Some(Arc::new(move |pid, started| {
        keygate_functions::spare_process(pid, started);
        if let Some(groups) = &group_watch_for_engine {
            if started { groups.started(pid) } else { groups.stopped(pid) }
        }
    }));
    let host = FunctionHost::new(HostOptions {
        users,
        group_watch,
        function_log,
        state_root: Some(data_dir.join("state")),
        ..HostOptions::default()
    });
    Ok((host, watchdog, watch))
}

/// Serves traffic and the admin API until SIGINT or SIGTERM, then drains connections, writes
/// the last usage and stops function processes.
#[allow(clippy::too_many_arguments)]
async fn serve(
    store: Arc<dyn ConfigStore>,
    functions: FunctionHost,
    watchdog: Option<Watchdog>,
    mut dynamo: Dynamo,
    data_dir: &Path,
    listener: TcpListener,
    admin: TcpListener,
    listen: &crate::cli::ListenArgs,
) -> Result<()> {
    // Read first: a certificate or a log file that cannot be used stops keygate before anything
    // starts.
    let tls = match (&listen.tls_cert, &listen.tls_key) {
        (Some(cert), Some(key)) => Some(keygate_http::Tls::load(cert, key)?),
        _ => None,
    };
    let (access_log, access_writer) = start_access_log(listen)?.unzip();
    // The deployed services' tables and stream events: their engine runs as long as the gateway.
    // Reads, and the admin API's changes (each request acts as its authenticated caller).
    let control = Store::new(Arc::clone(&store), "keygate:serve");
    let retiring = control.clone();
    // Read before the definitions: a change made in between is seen by the stream follower.
    let version = control.version().await?;
    let definitions = keygate_control::info::deployed_definitions(&control).await?;
    let tables: Vec<&str> =
        definitions.iter().flat_map(|d| d.tables.iter().map(|t| t.table_name.as_str())).collect();
    // Said now rather than as a 502 on each function's first request.
    if let Some(who) = functions.users().probe() {
        let staged = definitions.iter().flat_map(|d| &d.functions).filter_map(|f| {
            let runs = !f.streams.is_empty()
                || f.events
                    .iter()
                    .any(|e| e.integration == keygate_types::Integration::LambdaProxy);
            f.artifact.as_deref().filter(|_| runs)
        });
        for artifact in staged {
            keygate_functions::check_reachable(artifact, who).map_err(anyhow::Error::msg)?;
        }
    }
    if stream_pollers::needs_dynamodb(&definitions) {
        let endpoint = match dynamo.endpoint(false).await {
            Ok(endpoint) => endpoint,
            Err(e) => {
                dynamo.stop().await;
                return Err(e.context("cannot start the DynamoDB engine for the deployed tables"));
            }
        };
        println!(
            "keygate tables ({}) on {}{endpoint}",
            tables.join(", "),
            if dynamo.runs_engine() { "DynamoDB Local at " } else { "" }
        );
    }
    functions.set_service_env(dynamo.function_env());
    let mut pollers = StreamPollers::new(functions.clone(), data_dir);
    if let Err(e) = pollers.reconcile(&definitions, &mut dynamo).await {
        pollers.stop().await;
        dynamo.stop().await;
        return Err(e);
    }
    let (streams_stop, streams_stopped) = tokio::sync::watch::channel(false);
    let streams = tokio::spawn(stream_pollers::follow(
        control.clone(),
        dynamo,
        pollers,
        version,
        streams_stopped,
    ));
    let addr = listener.local_addr()?;
    let admin_addr = admin.local_addr()?;
    // Written by the gateway once its table is loaded: `/readyz` is 503 until then.
    let health = Arc::new(keygate_types::health::Health::new());
    let clock = Arc::new(keygate_limits::clock::SystemClock);
    let limiter: Arc<dyn keygate_gateway::limiter::Limiter> = match &listen.redis_url {
        Some(url) => {
            let ca = match &listen.redis_ca {
                Some(path) => Some(std::fs::read(path).map_err(|e| {
                    anyhow::anyhow!("cannot read --redis-ca {}: {e}", path.display())
                })?),
                None => None,
            };
            Arc::new(keygate_gateway::limiter::redis::Redis::with_ca(
                url,
                ca,
                Arc::clone(&clock) as _,
                listen.redis_unavailable,
            )?)
        }
        None => Arc::new(keygate_gateway::limiter::Local),
    };
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = keygate_gateway::metrics::Metrics::register(&mut registry);
    keygate_gateway::metrics::LimiterMetrics::register(&mut registry, Arc::clone(&limiter));
    keygate_gateway::metrics::LogDrops::register(
        &mut registry,
        access_log.as_ref().map(keygate_gateway::access::AccessLog::dropped_counter),
        crate::log_lines_dropped,
    );
    keygate_gateway::metrics::FunctionMetrics::register(&mut registry, functions.clone());
    let admin_state = Arc::new(keygate_admin::AdminState {
        store: control,
        master: master_key(data_dir)?,
        region: listen.admin_region.clone(),
        // Under TLS the session cookie is `Secure`.
        console: keygate_admin::console::Console::new(
            keygate_admin::console::DEFAULT_SESSION_TTL,
            Arc::new(keygate_limits::clock::SystemClock),
            tls.is_some(),
        ),
        health: Arc::clone(&health),
        metrics: Arc::new(registry),
    });
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let admin_tls = tls.clone();
    let admin_task = tokio::spawn(async move {
        let mut rx = stop_rx;
        let stopped = async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        let limits = keygate_admin::ServeLimits::default();
        if let Err(e) =
            keygate_admin::serve_with(admin, admin_state, stopped, limits, admin_tls).await
        {
            tracing::error!(error = %e, "admin API failed");
        }
    });
    // Only with a file to reopen or a certificate to reload: otherwise SIGHUP keeps its meaning
    // (a closed terminal stops `keygate up`).
    let log_file = access_log.clone().filter(|_| listen.access_log.is_some());
    let reload =
        (log_file.is_some() || tls.is_some()).then(|| reload_on_hangup(log_file, tls.clone()));
    let options = keygate_gateway::Options {
        health,
        ready_path: listen.ready_path.clone(),
        metrics,
        access_log,
        limiter,
        trusted_proxies: keygate_gateway::client::TrustedProxies::new(listen.trusted_proxy.clone()),
    };
    let gateway = Gateway::with_options(store, functions, clock, options)
        .await
        .context("cannot read the deployed stages from the store")?;
    let refresh = gateway.spawn_refresh();
    let flush = gateway.spawn_flush();
    let retire = spawn_retire_idle(&gateway, retiring);
    let shutdown = shutdown_signal();
    let scheme = if tls.is_some() { "https" } else { "http" };
    if listen.redis_url.is_some() {
        println!("keygate limits: {}", gateway.limiter().describe());
    }
    println!("keygate listening on {scheme}://{addr}");
    println!("keygate admin listening on {scheme}://{admin_addr}");
    println!(
        "keygate console on {scheme}://{admin_addr}/ (sign in with a token from `keygate admin \
         token create`)"
    );
    tracing::info!(%addr, %admin_addr, "gateway listening");
    let traffic_tls = match &tls {
        Some(tls) if !listen.no_http2 => Some(tls.offering_http2()),
        other => other.clone(),
    };
    keygate_gateway::serve(listener, Arc::clone(&gateway), traffic_tls, shutdown).await;
    let _ = stop_tx.send(true);
    let _ = admin_task.await;
    refresh.abort();
    flush.abort();
    retire.abort();
    if let Some(reload) = reload {
        reload.abort();
    }
    // Stream pollers first: no new invocation starts while the functions are stopped.
    let _ = streams_stop.send(true);
    let dynamo = streams.await.context("the stream events' task failed")?;
    // After the drain: every admitted request is counted before the usage is written.
    gateway.shutdown().await;
    dynamo.stop().await;
    if let Some(watchdog) = watchdog {
        // Every function group is stopped: the watchdog finds none left.
        let _ = tokio::task::spawn_blocking(move || watchdog.finish()).await;
    }
    if let Some(writer) = access_writer {
        // The last requests' lines, written before keygate says it stopped.
        let wait = std::time::Duration::from_secs(5);
        let _ = tokio::task::spawn_blocking(move || writer.finish(wait)).await;
    }
    tracing::info!("gateway stopped");
    Ok(())
}

/// How often a server looks for rotated-out key values idle for their `--retire-when-idle`
/// time (only while its gateway accepts old values).
const RETIRE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// Retires, every [`RETIRE_INTERVAL`], the rotated-out values no request has used for their
/// `--retire-when-idle` time: this gateway's uses written first, then the change made through
/// keygate-control (audited as `actor`) and served at once; other gateways reload within 1 s.
fn spawn_retire_idle(gateway: &Arc<Gateway>, store: Store) -> tokio::task::JoinHandle<()> {
    let gateway = Arc::downgrade(gateway);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(RETIRE_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(gateway) = gateway.upgrade() else { return };
            if !gateway.has_old_values() {
                continue;
            }
            let retired = async {
                gateway.flush_usage().await?;
                let now = keygate_limits::clock::SystemClock.now_unix_ms().div_euclid(1000);
                anyhow::Ok(keys::retire_idle(&store, now).await?)
            };
            match retired.await {
                Ok(0) => {}
                Ok(n) => {
                    tracing::info!(
                        values = n,
                        "retired rotated-out key values idle for their --retire-when-idle time"
                    );
                    if let Err(e) = gateway.refresh().await {
                        tracing::warn!(error = %e, "cannot reload after retiring old key values");
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot retire idle old key values; will try again")
                }
            }
        }
    })
}

/// The access log `listen` asks for: `None` when it is off (`--no-access-log`, or a `RUST_LOG`
/// that leaves out `keygate::access` at info, as `RUST_LOG=warn` does).
fn start_access_log(
    listen: &crate::cli::ListenArgs,
) -> Result<Option<(keygate_gateway::access::AccessLog, keygate_gateway::access::Writer)>> {
    use keygate_gateway::access::{AccessLog, Destination};
    if listen.no_access_log || !tracing::enabled!(target: "keygate::access", tracing::Level::INFO) {
        return Ok(None);
    }
    let destination = listen.access_log.clone().map_or(Destination::Stderr, Destination::File);
    let started = AccessLog::start(destination, listen.access_log_format)?;
    Ok(Some(started))
}

/// On each SIGHUP: reopens the access-log file (after logrotate moved it) and reads the TLS
/// certificate and key again (a failed read keeps the pair served so far, and says why). The
/// handler replaces SIGHUP's default action (exit) for the rest of the process: installed only
/// when there is a file or a certificate.
fn reload_on_hangup(
    log: Option<keygate_gateway::access::AccessLog>,
    tls: Option<keygate_http::Tls>,
) -> tokio::task::JoinHandle<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let hangup = signal(SignalKind::hangup());
    tokio::spawn(async move {
        let Ok(mut hangup) = hangup else {
            tracing::warn!("cannot handle SIGHUP: nothing will be reloaded");
            return;
        };
        while hangup.recv().await.is_some() {
            if let Some(log) = &log {
                tracing::info!("SIGHUP: reopening the access log");
                log.reopen();
            }
            if let Some(tls) = &tls {
                match tls.reload() {
                    Ok(()) => tracing::info!("SIGHUP: TLS certificate reloaded"),
                    Err(e) => tracing::error!(
                        error = %e,
                        "SIGHUP: cannot reload the TLS certificate; serving the one loaded before"
                    ),
                }
            }
        }
    })
}

/// Resolves on SIGINT or SIGTERM. The handlers are installed by this call, before any await: a
/// signal sent right after keygate says it listens must stop it gracefully, not kill it.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let interrupt = signal(SignalKind::interrupt());
    let terminate = signal(SignalKind::terminate());
    async move {
        let wait = |s: std::io::Result<tokio::signal::unix::Signal>| async move {
            match s {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending().await,
            }
        };
        tokio::select! {
            () = wait(interrupt) => {},
            () = wait(terminate) => {},
        }
        tracing::info!("shutting down");
    }
}

/// What a list command asked for: one page (`--limit`; the next page's position goes to stderr)
/// or every page, fetched 500 at a time: the store seeks to each page's start.
async fn listed<T, Fut>(
    args: &crate::cli::ListArgs,
    mut fetch: impl FnMut(ListQuery) -> Fut,
) -> Result<Vec<T>>
where
    Fut: std::future::Future<Output = keygate_control::Result<Listed<T>>>,
{
    let limit = args.limit.unwrap_or(keygate_control::MAX_PAGE);
    let query = ListQuery::new(limit, args.position.as_deref(), args.name.clone())?;
    if args.limit.is_none() {
        return Ok(keygate_control::every_page(query, fetch).await?);
    }
    let page = fetch(query).await?;
    if let Some(position) = page.position() {
        eprintln!("more: --position {position}");
    }
    Ok(page.items)
}
