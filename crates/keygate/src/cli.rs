//! Command-line arguments. The flags are a contract: scripts and later issues rely on them.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// keygate: deploy a serverless.yml and serve its functions behind API keys.
#[derive(Debug, Parser)]
#[command(name = "keygate", version, about, propagate_version = true)]
pub(crate) struct Cli {
    /// Directory holding keygate's state (the embedded SQLite store and staged artifacts).
    #[arg(long, global = true, env = "KEYGATE_DATA_DIR", default_value = ".keygate")]
    pub(crate) data_dir: PathBuf,

    /// The store, when it is not the embedded one in --data-dir: a PostgreSQL database
    /// (`postgres://user:password@host:5432/database`, libpq parameters such as `sslmode`
    /// allowed) that several keygate nodes share. The data directory still holds each node's
    /// staged code, function logs and master key.
    #[arg(
        long,
        global = true,
        env = "KEYGATE_DATABASE_URL",
        hide_env_values = true,
        value_name = "URL"
    )]
    pub(crate) database_url: Option<String>,

    /// More detail on stderr (as `sls -v`): commands log at `info`, servers at `debug` for
    /// keygate's own crates. `RUST_LOG`, when set, decides instead.
    #[arg(short = 'v', long, global = true)]
    pub(crate) verbose: bool,

    /// A keygate.toml whose settings are the defaults of the flags with an environment variable
    /// (`listen = "0.0.0.0:4000"`, `tls-cert = "/etc/keygate/cert.pem"`, ...): a flag, then its
    /// variable, then the file, then keygate's default. `keygate config settings` lists them.
    #[arg(long, global = true, env = "KEYGATE_CONFIG", value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,

    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Deploy a service, then serve it in the foreground (the main job).
    Up {
        #[command(flatten)]
        service: ServiceArgs,
        #[command(flatten)]
        listen: ListenArgs,
        #[command(flatten)]
        functions: FunctionArgs,
        #[command(flatten)]
        dynamodb: DynamoArgs,
    },
    /// Create or upgrade the store's schema (the embedded store, or --database-url's database)
    /// and say so. Every command does this on first use; run it once before starting several
    /// nodes on a new PostgreSQL version of keygate. A database migrated by a newer keygate is
    /// refused.
    Migrate,
    /// Deploy a service to a stage: snapshot its definition, create its keys and usage plan.
    Deploy {
        #[command(flatten)]
        service: ServiceArgs,
        #[command(flatten)]
        dynamodb: DynamoArgs,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Serve every deployed stage.
    Serve {
        #[command(flatten)]
        listen: ListenArgs,
        #[command(flatten)]
        functions: FunctionArgs,
        #[command(flatten)]
        dynamodb: DynamoArgs,
    },
    /// Invoke a function once with an event and print its result (like `sls invoke local`):
    /// the code in the service directory, run as deployed functions run.
    Invoke {
        #[command(flatten)]
        service: ServiceArgs,
        /// The function: its key under `functions:`.
        #[arg(short = 'f', long)]
        function: String,
        /// The event, as JSON (default `{}`).
        #[arg(short = 'd', long, conflicts_with = "path")]
        data: Option<String>,
        /// A file holding the event as JSON.
        #[arg(short = 'p', long, value_name = "FILE")]
        path: Option<PathBuf>,
        #[command(flatten)]
        functions: FunctionArgs,
        #[command(flatten)]
        dynamodb: DynamoArgs,
    },
    /// Print a function's log lines (its output with request ids, and Lambda's START, END and
    /// REPORT lines), as kept by the keygate serving from this data directory (like `sls logs`).
    Logs {
        #[command(flatten)]
        service: ServiceArgs,
        /// The function: its key under `functions:`.
        #[arg(short = 'f', long)]
        function: String,
        /// Keep printing new lines as they come (until Ctrl-C).
        #[arg(short = 't', long)]
        tail: bool,
        /// Only lines from this long ago on: e.g. 30s, 5m, 2h, 1d.
        #[arg(long, value_name = "DURATION")]
        since: Option<String>,
    },
    /// Stop serving a stage of a service and delete its tables, except those with
    /// `DeletionPolicy: Retain` (like `sls remove`). Keys and usage plans are kept unless --keys.
    Remove {
        #[command(flatten)]
        service: ServiceArgs,
        #[command(flatten)]
        dynamodb: DynamoArgs,
        /// Also delete the keys the service declares and the usage plans that covered only this
        /// stage (their values are gone for good).
        #[arg(long)]
        keys: bool,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show what is deployed for a service and stage (like `serverless info`).
    Info {
        #[command(flatten)]
        service: ServiceArgs,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Manage API keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Manage usage plans: throttle, quota, their keys and API stages.
    #[command(subcommand)]
    Plans(PlansCommand),
    /// Admin API access: SigV4 credentials and bearer tokens.
    #[command(subcommand)]
    Admin(AdminCommand),
    /// The audit log: every change, who made it and when (never a key value or secret).
    Audit {
        #[arg(long)]
        json: bool,
    },
    /// Requests per key and day with the quota remaining (AWS get-usage); `set-remaining`
    /// changes the quota left in the current period (AWS update-usage).
    Usage(UsageArgs),
    /// Report-only enforcement (`private: report`): who keys and plans would refuse.
    #[command(subcommand)]
    Enforcement(EnforcementCommand),
    /// keygate.toml: check a file, or list the settings it may hold.
    #[command(subcommand)]
    Config(ConfigCommand),
}

#[derive(Debug, Subcommand)]
pub(crate) enum EnforcementCommand {
    /// The clients that routes in report mode (`private: report`, or `custom.keygate.enforcement:
    /// report`) let through although their key check or usage plan would have refused them,
    /// grouped by client: who would break if those routes became `private: true`.
    Report {
        /// Only this stage.
        #[arg(long, short = 's')]
        stage: Option<String>,
        /// How far back: e.g. 30m, 2h, 7d.
        #[arg(long, default_value = "24h", value_name = "DURATION")]
        since: String,
        #[arg(long)]
        json: bool,
    },
    /// Switch a deployed stage's key checks without a deploy: `report` (its private routes let
    /// everything through and record what they would refuse), `enforce` (its report-only
    /// routes refuse), or `deployed` (as the files deployed say). Running gateways follow
    /// within a second; deploys keep the switch.
    Set {
        /// report, enforce or deployed.
        #[arg(value_parser = ["report", "enforce", "deployed"])]
        mode: String,
        /// The stage.
        #[arg(long, short = 's')]
        stage: String,
        /// Only this service (default: every service deployed to the stage).
        #[arg(long)]
        service: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum ConfigCommand {
    /// Checks a keygate.toml (default: the --config file): every setting known, every value
    /// accepted by its flag's parser, TLS files usable. Exits non-zero with file:line:column
    /// errors otherwise.
    Check {
        /// The file (default: --config, or KEYGATE_CONFIG).
        file: Option<PathBuf>,
    },
    /// Lists the settings a keygate.toml may hold, their environment variables and meaning.
    Settings,
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub(crate) struct UsageArgs {
    #[command(subcommand)]
    pub(crate) command: Option<UsageCommand>,
    /// Usage plan id or name.
    #[arg(long, required = true)]
    pub(crate) plan: Option<String>,
    /// Only this key (id or name).
    #[arg(long)]
    pub(crate) key: Option<String>,
    /// First day, YYYY-MM-DD (UTC); default: the first day of the current period (the quota's,
    /// else the calendar month).
    #[arg(long)]
    pub(crate) from: Option<String>,
    /// Last day, YYYY-MM-DD (UTC), inclusive; default: today.
    #[arg(long)]
    pub(crate) to: Option<String>,
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Subcommand)]
pub(crate) enum UsageCommand {
    /// Set the quota remaining for a key in the current period; gateways apply it within a second.
    SetRemaining {
        /// Usage plan id or name.
        #[arg(long)]
        plan: String,
        /// Key id or name.
        #[arg(long)]
        key: String,
        /// Requests the key may still make in this period.
        remaining: u64,
        #[arg(long)]
        json: bool,
    },
}

impl Command {
    /// Whether the command works on what a deploy made, and so refuses a data directory with
    /// no keygate data rather than create one. Deploying, serving and invoking may start from
    /// nothing, and so may making keys, plans, credentials and tokens (as on AWS).
    pub(crate) fn needs_data(&self) -> bool {
        match self {
            Self::Up { .. } | Self::Deploy { .. } | Self::Serve { .. } | Self::Invoke { .. } => {
                false
            }
            Self::Config(_) | Self::Migrate => false,
            Self::Keys(cmd) => !cmd.creates(),
            Self::Plans(cmd) => !cmd.creates(),
            Self::Admin(cmd) => !cmd.creates(),
            Self::Logs { .. }
            | Self::Remove { .. }
            | Self::Info { .. }
            | Self::Audit { .. }
            | Self::Usage(_)
            | Self::Enforcement(_) => true,
        }
    }

    /// Whether the command runs a server (and so logs at `info` by default).
    pub(crate) fn is_server(&self) -> bool {
        matches!(self, Self::Up { .. } | Self::Serve { .. })
    }
}

#[derive(Debug, Args)]
pub(crate) struct ServiceArgs {
    /// The service's serverless.yml (default: serverless.yml, else serverless.yaml, in the
    /// current directory, as `sls` finds it).
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
    /// Stage to deploy (default: provider.stage from the file, else `dev`).
    #[arg(long, short = 's')]
    pub(crate) stage: Option<String>,
    /// Region (the `opt:region` variable; default: provider.region from the file, else
    /// `us-east-1`).
    #[arg(long, short = 'r')]
    pub(crate) region: Option<String>,
    /// Report keys that neither keygate nor Serverless knows as notes instead of refusing the
    /// file (as `configValidationMode: warn` does). An unknown runtime, and a key that looks like
    /// a misspelt auth setting (`privat`), are still refused.
    #[arg(long)]
    pub(crate) allow_unknown: bool,
}

#[derive(Debug, Args)]
pub(crate) struct ListenArgs {
    /// Address the gateway listens on (port 0 picks a free port; the address is printed).
    #[arg(long, default_value = "127.0.0.1:4000", env = "KEYGATE_LISTEN")]
    pub(crate) listen: SocketAddr,
    /// Address of the admin API (AWS API Gateway's paths; SigV4 or bearer token required).
    /// Default: 127.0.0.1:4001, or a free port when --listen has port 0.
    #[arg(long, env = "KEYGATE_ADMIN_LISTEN")]
    pub(crate) admin_listen: Option<SocketAddr>,
    /// Region that SigV4 requests to the admin API must be signed for (`aws --region`).
    #[arg(long, default_value = "us-east-1", env = "KEYGATE_ADMIN_REGION")]
    pub(crate) admin_region: String,
    /// A path the traffic listener answers with the process's readiness (200 ready, 503 not),
    /// for load balancers that probe the traffic port, e.g. `/_keygate/ready`. Off by default;
    /// it is answered before routing, so pick one no stage uses.
    #[arg(long, env = "KEYGATE_READY_PATH", value_parser = ready_path)]
    pub(crate) ready_path: Option<String>,
    /// Serve HTTPS on both listeners with this certificate chain (PEM, the server's certificate
    /// first, then intermediates); needs --tls-key. Both files are read again on SIGHUP: a
    /// renewed certificate is served to new connections, open ones keep theirs.
    #[arg(long, env = "KEYGATE_TLS_CERT", value_name = "FILE", requires = "tls_key")]
    pub(crate) tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM: PKCS#8, RSA or SEC1 EC).
    #[arg(long, env = "KEYGATE_TLS_KEY", value_name = "FILE", requires = "tls_cert")]
    pub(crate) tls_key: Option<PathBuf>,
    /// With --tls-cert, serve HTTP/1.1 only on the traffic listener. By default a client that
    /// offers HTTP/2 in the TLS handshake (ALPN `h2`) gets it; the admin listener is HTTP/1.1.
    #[arg(long, env = "KEYGATE_NO_HTTP2")]
    pub(crate) no_http2: bool,
    /// Write the access log (one line per request) to FILE instead of stderr: appended to,
    /// created with mode 0640, reopened on SIGHUP (for logrotate).
    #[arg(long, env = "KEYGATE_ACCESS_LOG", value_name = "FILE", conflicts_with = "no_access_log")]
    pub(crate) access_log: Option<PathBuf>,
    /// The access log's format: `text` (keygate's log-line shape) or `json` (one object per
    /// line, with API Gateway's `$context` names: requestId, httpMethod, resourcePath, status,
    /// apiKeyId, responseLength, ...).
    #[arg(
        long,
        env = "KEYGATE_ACCESS_LOG_FORMAT",
        value_name = "text|json",
        default_value = "text"
    )]
    pub(crate) access_log_format: keygate_gateway::access::Format,
    /// Turn the access log off (so does a RUST_LOG that leaves out `keygate::access` at info,
    /// such as RUST_LOG=warn).
    #[arg(long, env = "KEYGATE_NO_ACCESS_LOG")]
    pub(crate) no_access_log: bool,
    /// Share usage-plan throttles and quotas among every node through this Redis
    /// (`redis://[:password@]host:6379[/db]`, `rediss://` for TLS): a plan's limits then hold in
    /// total across the nodes that name it, not per node. Without it each node counts alone.
    #[arg(long, env = "KEYGATE_REDIS_URL", hide_env_values = true, value_name = "URL")]
    pub(crate) redis_url: Option<String>,
    /// A load balancer (address or network, repeatable or comma-separated) whose
    /// `X-Forwarded-For` names the client: the access log's address and a function's
    /// `sourceIp` then are the client's, not the balancer's. Anyone else's header is ignored.
    #[arg(
        long,
        env = "KEYGATE_TRUSTED_PROXIES",
        value_name = "CIDR",
        value_delimiter = ',',
        value_parser = keygate_gateway::client::TrustedProxies::parse
    )]
    pub(crate) trusted_proxy: Vec<keygate_gateway::client::IpNet>,
    /// The CA certificate(s), PEM, that signed a `rediss://` Redis's certificate, when the
    /// system does not trust it (a private CA). Needs a rediss:// URL.
    #[arg(long, env = "KEYGATE_REDIS_CA", value_name = "FILE")]
    pub(crate) redis_ca: Option<std::path::PathBuf>,
    /// What decides limits while --redis-url's Redis does not answer (within 100 ms): `local`
    /// (each node applies the plans' limits alone until Redis is back) or `refuse` (a request
    /// under a throttle or quota gets 429). A warning says which is in force. A plan's own
    /// setting (`keygate plans update PLAN --redis-unavailable ...`) takes precedence.
    #[arg(
        long,
        env = "KEYGATE_REDIS_UNAVAILABLE",
        value_name = "local|refuse",
        default_value = "local"
    )]
    pub(crate) redis_unavailable: keygate_types::plan::Fallback,
}

fn ready_path(s: &str) -> Result<String, String> {
    let ok = s.starts_with('/')
        && s.len() > 1
        && !s.contains(['?', '#'])
        && s.bytes().all(|b| b.is_ascii_graphic());
    if ok {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "{s:?} is not a path: give one starting with `/`, without `?` or `#`, e.g. \
             /_keygate/ready"
        ))
    }
}

impl ListenArgs {
    /// The admin API's address: as given, else 4001, else a free port when the traffic port is
    /// chosen freely too (so two `--listen 127.0.0.1:0` servers do not collide on 4001).
    pub(crate) fn admin(&self) -> SocketAddr {
        self.admin_listen.unwrap_or_else(|| {
            let port = if self.listen.port() == 0 { 0 } else { 4001 };
            SocketAddr::from(([127, 0, 0, 1], port))
        })
    }
}

#[derive(Debug, Args)]
pub(crate) struct FunctionArgs {
    /// One user for every function process when keygate runs as root (functions can then
    /// reach each other's processes). Unset, as root, each function runs as a uid of its own
    /// from --function-ids. Without root functions run as keygate's own user and this must be
    /// unset (or that user).
    #[arg(long, env = "KEYGATE_FUNCTION_USER", value_name = "NAME|UID[:GID]")]
    pub(crate) function_user: Option<String>,
    /// The ids keygate, as root, gives functions (a uid per function, a gid per service stage);
    /// ids of accounts and ids other keygates on this machine hold are skipped.
    #[arg(
        long,
        env = "KEYGATE_FUNCTION_IDS",
        value_name = "FIRST-LAST",
        default_value = "61184-65519"
    )]
    pub(crate) function_ids: String,
}

#[derive(Debug, Args)]
pub(crate) struct DynamoArgs {
    /// The DynamoDB that holds the tables of `resources` (http://host:port: DynamoDB Local
    /// elsewhere, ScyllaDB Alternator, ...). Default: DynamoDB Local, run by keygate with its
    /// data in the data directory (installed with npm into keygate's cache on first need).
    #[arg(long, env = "KEYGATE_DYNAMODB_ENDPOINT", value_name = "URL")]
    pub(crate) dynamodb_endpoint: Option<String>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum AdminCommand {
    /// SigV4 credentials for `aws` and boto3 (access key id + secret).
    #[command(subcommand)]
    Credentials(CredentialsCommand),
    /// Bearer tokens for curl and scripts.
    #[command(subcommand)]
    Token(TokenCommand),
}

impl AdminCommand {
    /// Whether the command issues a credential or token (which may come before any deploy).
    pub(crate) fn creates(&self) -> bool {
        matches!(
            self,
            Self::Credentials(CredentialsCommand::Create { .. })
                | Self::Token(TokenCommand::Create { .. })
        )
    }
}

impl KeysCommand {
    /// Whether the command makes keys (which, as on AWS, may exist before any deploy).
    pub(crate) fn creates(&self) -> bool {
        matches!(self, Self::Create { .. } | Self::Import { .. })
    }
}

impl PlansCommand {
    /// Whether the command makes a usage plan (which may come before any deploy).
    pub(crate) fn creates(&self) -> bool {
        matches!(self, Self::Create { .. })
    }
}

#[derive(Debug, Subcommand)]
pub(crate) enum CredentialsCommand {
    /// Issue an access key id and secret (the secret is printed once).
    Create {
        #[arg(long)]
        description: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// List credentials (never their secrets).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Revoke a credential; requests signed with it are refused at once.
    Revoke { access_key_id: String },
}

#[derive(Debug, Subcommand)]
pub(crate) enum TokenCommand {
    /// Issue a bearer token (printed once).
    Create {
        #[arg(long)]
        description: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// List tokens (id and prefix only).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token.
    Revoke { id: String },
}

#[derive(Debug, Subcommand)]
pub(crate) enum KeysCommand {
    /// Create an API key. Its value is printed once; keygate keeps only a digest.
    Create {
        /// Unique name of the key.
        #[arg(long)]
        name: String,
        /// A custom value (20-128 letters and digits); generated when omitted.
        #[arg(long)]
        value: Option<String>,
        #[arg(long)]
        description: Option<String>,
        /// AWS Marketplace-style customer id, free text.
        #[arg(long)]
        customer_id: Option<String>,
        /// Create the key disabled.
        #[arg(long)]
        disabled: bool,
        /// Usage plan (id or name) to add the key to; the key works on that plan's stages.
        #[arg(long)]
        usage_plan: Option<String>,
        /// When the key stops working: +<duration> (e.g. +30d), YYYY-MM-DD[THH:MM:SSZ] (UTC) or
        /// unix seconds.
        #[arg(long)]
        expires: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Give a key a new value (printed once); the old one keeps working during the grace period,
    /// with the same plans and quota. Values replaced earlier end then at the latest.
    Rotate {
        /// Key id or name.
        key: String,
        /// How long the old value keeps working: e.g. 24h, 30m, 7d, 0 (default 24h). With 0 every
        /// older value is refused at once (for a leaked key).
        #[arg(long, default_value = "24h")]
        grace: String,
        /// Retire the old value before the grace period ends, once no request has used it for
        /// this long (e.g. 10m, 1h): `keys get` shows who still sends it meanwhile.
        #[arg(long, value_name = "DURATION")]
        retire_when_idle: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// End every value a rotation replaced, now; the current value keeps working.
    RevokeOld {
        /// Key id or name.
        key: String,
        #[arg(long)]
        json: bool,
    },
    /// Import keys from a CSV file in AWS's format (Name, Key; optional Description, Enabled,
    /// UsagePlanIds). Bad rows are reported with their line numbers; the good ones are imported
    /// in one transaction.
    Import {
        file: std::path::PathBuf,
        /// Import nothing if any row is bad.
        #[arg(long)]
        fail_on_warnings: bool,
        #[arg(long)]
        json: bool,
    },
    /// Set or clear a key's expiry.
    Expire {
        /// Key id or name.
        key: String,
        /// +<duration>, YYYY-MM-DD[THH:MM:SSZ] (UTC), unix seconds, or `never`.
        when: String,
        #[arg(long)]
        json: bool,
    },
    /// List API keys by name (values are never shown: only a prefix).
    List {
        #[command(flatten)]
        list: ListArgs,
    },
    /// Show one API key.
    Get {
        /// Key id or name.
        key: String,
        #[arg(long)]
        json: bool,
    },
    /// Enable a key.
    Enable {
        /// Key id or name.
        key: String,
        #[arg(long)]
        json: bool,
    },
    /// Disable a key; running gateways refuse it within a second.
    Disable {
        /// Key id or name.
        key: String,
        #[arg(long)]
        json: bool,
    },
    /// Delete a key for good.
    Delete {
        /// Key id or name.
        key: String,
        #[arg(long)]
        json: bool,
    },
}

/// Throttle and quota flags shared by `plans create` and `plans update`.
#[derive(Debug, Args)]
pub(crate) struct LimitArgs {
    /// Steady-state requests per second (fractions allowed, e.g. 0.5).
    #[arg(long, value_parser = non_negative_rate, allow_hyphen_values = true)]
    pub(crate) rate: Option<f64>,
    /// Bucket size: requests allowed in a burst.
    #[arg(long)]
    pub(crate) burst: Option<u32>,
    /// Requests allowed per quota period.
    #[arg(long)]
    pub(crate) quota_limit: Option<u64>,
    /// Quota period: DAY, WEEK or MONTH (UTC calendar periods).
    #[arg(long, value_parser = quota_period)]
    pub(crate) quota_period: Option<keygate_types::plan::QuotaPeriod>,
    /// WEEK: weekday the week starts on (0 = Sunday .. 6); MONTH: days after the 1st (0-27).
    #[arg(long)]
    pub(crate) quota_offset: Option<u32>,
    /// What decides this plan's limits while `serve --redis-url`'s Redis does not answer:
    /// `local` (each node applies them alone), `refuse` (429), or `node` (each node's own
    /// --redis-unavailable, the default).
    #[arg(long, value_name = "local|refuse|node", value_parser = fallback)]
    pub(crate) redis_unavailable: Option<PlanFallback>,
}

/// A plan's `--redis-unavailable`: its own policy, or `None` for the node's.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PlanFallback(pub(crate) Option<keygate_types::plan::Fallback>);

fn fallback(s: &str) -> Result<PlanFallback, String> {
    if s == "node" {
        return Ok(PlanFallback(None));
    }
    s.parse()
        .map(|f| PlanFallback(Some(f)))
        .map_err(|_| format!("{s:?} is not `local`, `refuse` or `node`"))
}

fn non_negative_rate(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|_| format!("{s:?} is not a number"))?;
    if !v.is_finite() || v < 0.0 {
        return Err(format!("{s} is not a rate: give requests per second, 0 or more"));
    }
    Ok(v)
}

fn quota_period(s: &str) -> Result<keygate_types::plan::QuotaPeriod, String> {
    keygate_types::plan::QuotaPeriod::parse(s)
        .ok_or_else(|| format!("{s:?} is not a quota period: use DAY, WEEK or MONTH"))
}

#[derive(Debug, Subcommand)]
pub(crate) enum PlansCommand {
    /// Create a usage plan.
    Create {
        #[arg(long)]
        name: String,
        #[arg(long)]
        description: Option<String>,
        #[command(flatten)]
        limits: LimitArgs,
        #[arg(long)]
        json: bool,
    },
    /// List usage plans by name.
    List {
        #[command(flatten)]
        list: ListArgs,
    },
    /// Show a usage plan with its stages and keys.
    Get {
        /// Plan id or name.
        plan: String,
        #[arg(long)]
        json: bool,
    },
    /// Change a plan's name, description, throttle or quota (usage counted so far is kept).
    Update {
        /// Plan id or name.
        plan: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        description: Option<String>,
        #[command(flatten)]
        limits: LimitArgs,
        /// Remove the plan's throttle.
        #[arg(long, conflicts_with_all = ["rate", "burst"])]
        no_throttle: bool,
        /// Remove the plan's quota.
        #[arg(long, conflicts_with_all = ["quota_limit", "quota_period", "quota_offset"])]
        no_quota: bool,
        #[arg(long)]
        json: bool,
    },
    /// Replay the plan's stored daily usage against a proposed quota: which keys would have
    /// been cut off (429 Limit Exceeded), on which days, for how many requests. Changes nothing.
    WhatIf {
        /// Plan id or name.
        plan: String,
        /// Requests allowed per period, proposed.
        #[arg(long)]
        quota_limit: u64,
        /// DAY, WEEK or MONTH (UTC calendar periods).
        #[arg(long, value_parser = quota_period)]
        quota_period: keygate_types::plan::QuotaPeriod,
        /// WEEK: weekday the week starts on (0 = Sunday .. 6); MONTH: days after the 1st (0-27).
        #[arg(long, default_value_t = 0)]
        quota_offset: u32,
        /// Days of history replayed, up to today.
        #[arg(long, default_value_t = 7)]
        days: i64,
        #[arg(long)]
        json: bool,
    },
    /// Delete a plan (its keys stay, but lose access to its stages).
    Delete {
        /// Plan id or name.
        plan: String,
        #[arg(long)]
        json: bool,
    },
    /// Add a key to a plan.
    AddKey {
        plan: String,
        /// Key id or name.
        key: String,
        #[arg(long)]
        json: bool,
    },
    /// Remove a key from a plan.
    RemoveKey {
        plan: String,
        /// Key id or name.
        key: String,
        #[arg(long)]
        json: bool,
    },
    /// Add a deployed API stage to a plan, optionally with per-method throttles.
    AddStage {
        plan: String,
        /// API id or service name.
        #[arg(long)]
        api: String,
        #[arg(long)]
        stage: String,
        /// Per-method throttle `<path>/<METHOD>=<rate>:<burst>`, e.g. `/candidates/GET=5:10`;
        /// repeatable.
        #[arg(long = "method-throttle", value_name = "PATH/METHOD=RATE:BURST")]
        method_throttle: Vec<String>,
        #[arg(long)]
        json: bool,
    },
    /// Remove an API stage from a plan.
    RemoveStage {
        plan: String,
        /// API id or service name.
        #[arg(long)]
        api: String,
        #[arg(long)]
        stage: String,
        #[arg(long)]
        json: bool,
    },
}

/// What a list command shows: everything by default, or one page.
#[derive(Debug, Args)]
pub(crate) struct ListArgs {
    /// Show one page of at most N (1-500); the position of the next page is printed on stderr.
    #[arg(long, value_name = "N")]
    pub(crate) limit: Option<u32>,
    /// Start after the page that printed this position.
    #[arg(long)]
    pub(crate) position: Option<String>,
    /// Only names that start with this.
    #[arg(long, value_name = "PREFIX")]
    pub(crate) name: Option<String>,
    #[arg(long)]
    pub(crate) json: bool,
}
