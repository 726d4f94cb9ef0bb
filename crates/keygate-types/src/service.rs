//! The validated service definition: what a `serverless.yml` means to keygate.
//!
//! `keygate-config` builds these from YAML; a deployment stores them as an immutable JSON snapshot,
//! so every type here is serde-serialisable and stable on disk.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::key::ApiKeyValue;
use crate::plan::UsagePlanDecl;
use crate::runtime::Runtime;

/// A whole service after variables are resolved and every field is validated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceDefinition {
    /// `service:`; becomes the API (REST API) name.
    pub service: String,
    /// The stage this definition was resolved for (`--stage`, else `provider.stage`, else `dev`).
    pub stage: String,
    /// `provider.region` (default `us-east-1`).
    pub region: String,
    /// Absolute directory of the `serverless.yml`; function processes run with it as their working
    /// directory (as serverless-offline does), so relative paths in `environment` resolve there.
    pub base_dir: PathBuf,
    /// Functions in file order.
    pub functions: Vec<FunctionSpec>,
    /// Keys declared under `provider.apiGateway.apiKeys` (or the deprecated `provider.apiKeys`).
    pub api_keys: Vec<ApiKeyDecl>,
    /// Plans from `provider.apiGateway.usagePlan`. Empty when none is declared; deploy then
    /// creates the plan `<service>-<stage>` without limits if there are keys, as Serverless does.
    pub usage_plans: Vec<UsagePlanDecl>,
    /// DynamoDB tables declared under `resources.Resources` (`Type: AWS::DynamoDB::Table`), in
    /// file order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tables: Vec<TableSpec>,
    /// `provider.apiGateway.apiKeySourceType`: where private routes take their API key from.
    #[serde(default, skip_serializing_if = "ApiKeySource::is_header")]
    pub api_key_source: ApiKeySource,
    /// `custom.keygate.keyIntrospection`: the path under the stage (`/.keygate/key` by default)
    /// where a client sends its key to read its own plan, limits and quota standing; `None`
    /// (the default): off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_introspection: Option<String>,
}

/// An operator's switch for a deployed stage's key checks (`keygate enforcement set`, the
/// console), kept across deploys until switched back; without one, the yml decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Enforcement {
    /// Every private route of the stage is report-only (`private: report`).
    Report,
    /// Every report-only route of the stage is private (`private: true`).
    Enforce,
}

impl Enforcement {
    /// Its name as the CLI and the store write it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Report => "report",
            Self::Enforce => "enforce",
        }
    }
}

impl std::str::FromStr for Enforcement {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "report" => Ok(Self::Report),
            "enforce" => Ok(Self::Enforce),
            _ => Err(()),
        }
    }
}

impl ServiceDefinition {
    /// The definition as a stage with `switch` serves it: its routes' key checks switched.
    pub fn switched(mut self, switch: Option<Enforcement>) -> Self {
        self.switch(switch);
        self
    }

    /// Switches the routes' key checks in place ([`switched`](Self::switched)).
    pub fn switch(&mut self, switch: Option<Enforcement>) {
        let events = self.functions.iter_mut().flat_map(|f| &mut f.events);
        match switch {
            None => {}
            Some(Enforcement::Report) => {
                for e in events.filter(|e| e.private) {
                    (e.private, e.report) = (false, true);
                }
            }
            Some(Enforcement::Enforce) => {
                for e in events.filter(|e| e.report) {
                    (e.private, e.report) = (true, false);
                }
            }
        }
    }
}

/// The path key introspection answers on when `keyIntrospection: true`.
pub const DEFAULT_INTROSPECTION_PATH: &str = "/.keygate/key";

/// Where a private route's API key comes from (`apiKeySourceType`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum ApiKeySource {
    /// The `x-api-key` header (API Gateway's default).
    #[default]
    Header,
    /// The route's Lambda authorizer's `usageIdentifierKey`.
    Authorizer,
}

impl ApiKeySource {
    pub fn is_header(&self) -> bool {
        *self == Self::Header
    }
}

/// One `AWS::DynamoDB::Table` of `resources.Resources`, validated: what keygate creates (or
/// adopts) on its DynamoDB engine at deploy. Names and enum values are DynamoDB's own words
/// (`S`, `HASH`, `PAY_PER_REQUEST`, `NEW_AND_OLD_IMAGES`), checked by `keygate-config`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TableSpec {
    /// The resource's logical id (what `Ref` and `Fn::GetAtt` name).
    pub logical_id: String,
    /// `Properties.TableName`, else `<service>-<stage>-<logicalId>` (CloudFormation would add a
    /// random suffix; a local table keeps a stable name).
    pub table_name: String,
    /// `DeletionPolicy: Retain` (or `Snapshot`, which a local engine cannot take): `keygate
    /// remove` keeps the table.
    pub retain: bool,
    /// `AttributeDefinitions`: name and type (`S`, `N` or `B`).
    pub attributes: Vec<(String, String)>,
    /// `KeySchema`.
    pub key: KeySchema,
    /// `BillingMode: PROVISIONED` with `ProvisionedThroughput` (read, write units); `None`:
    /// `PAY_PER_REQUEST`.
    pub provisioned: Option<(u64, u64)>,
    /// `StreamSpecification.StreamViewType`, when the table has a stream.
    pub stream_view_type: Option<String>,
    /// `GlobalSecondaryIndexes`.
    pub global_indexes: Vec<IndexSpec>,
    /// `LocalSecondaryIndexes`.
    pub local_indexes: Vec<IndexSpec>,
}

/// A table's or an index's key: the partition (`HASH`) attribute and the optional sort
/// (`RANGE`) attribute.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeySchema {
    pub hash: String,
    pub range: Option<String>,
}

/// A secondary index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IndexSpec {
    pub name: String,
    pub key: KeySchema,
    /// `ALL`, `KEYS_ONLY` or `INCLUDE`.
    pub projection: String,
    /// `NonKeyAttributes` of an `INCLUDE` projection.
    pub non_key_attributes: Vec<String>,
    /// A global index's `ProvisionedThroughput` on a provisioned table.
    pub provisioned: Option<(u64, u64)>,
}

impl TableSpec {
    /// The key schema as a line for messages: `id (S, HASH), createdAt (N, RANGE)`.
    pub fn describe_key(&self) -> String {
        let ty = |name: &str| {
            self.attributes.iter().find(|(n, _)| n == name).map_or("?", |(_, t)| t.as_str())
        };
        let mut out = format!("{} ({}, HASH)", self.key.hash, ty(&self.key.hash));
        if let Some(range) = &self.key.range {
            out.push_str(&format!(", {range} ({}, RANGE)", ty(range)));
        }
        out
    }
}

/// One declared API key. A bare string in the yml is a key *name* (AWS generates the value).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiKeyDecl {
    pub name: String,
    /// A custom value; `None` means keygate generates one on first deploy. Never serialised, so a
    /// deployment snapshot holds no secret.
    #[serde(skip)]
    pub value: Option<ApiKeyValue>,
    pub description: Option<String>,
    pub customer_id: Option<String>,
    /// Default `true`, as Serverless.
    pub enabled: bool,
    /// The short name of the plan group the key was declared under (`apiKeys: [{free: [...]}]`);
    /// `None` for an ungrouped key, which joins the one plan of the stage (with a list of plans,
    /// keys must be grouped: a key may be in only one plan per API stage).
    pub usage_plan: Option<String>,
}

/// One function and the HTTP events that route to it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionSpec {
    /// The key under `functions:`.
    pub name: String,
    /// `<service>-<stage>-<name>` unless `name:` overrides it; exported as `AWS_LAMBDA_FUNCTION_NAME`.
    pub function_name: String,
    pub handler: String,
    /// Function runtime, else the provider's.
    pub runtime: Runtime,
    /// Provider environment merged with the function's (function wins).
    pub environment: BTreeMap<String, String>,
    /// Seconds; default 6.
    pub timeout_secs: u32,
    /// MB; default 1024.
    pub memory_size: u32,
    pub description: Option<String>,
    /// Concurrent invocations of the function (AWS's reserved concurrency); `None`: the host's
    /// default.
    pub reserved_concurrency: Option<u32>,
    /// Invocations one process takes at once: `capacityProvider.maxConcurrency` (Lambda Managed
    /// Instances' `PerExecutionEnvironmentMaxConcurrency`, exported as
    /// `AWS_LAMBDA_MAX_CONCURRENCY`). `None`: one at a time, as classic Lambda.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrency: Option<u32>,
    /// `package.artifact` resolved against the yml's directory (absolute). `None` when the function
    /// has no artifact; invoking it then fails with a 502 and a logged cause.
    pub artifact: Option<PathBuf>,
    /// `package.patterns` of the service then of the function (with `include`/`exclude`): which
    /// files of the service directory a Node.js or Python function's code holds.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub package_patterns: Vec<String>,
    pub events: Vec<HttpEvent>,
    /// `- stream:` events on a DynamoDB table's stream.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub streams: Vec<StreamEvent>,
}

/// One `- stream:` event: the function is invoked with batches of a DynamoDB table's stream
/// records (Lambda's event source mapping).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StreamEvent {
    /// The table whose stream is read.
    pub table: StreamTable,
    /// Records per invocation at most (`batchSize`, 1-10,000; Serverless's default 10).
    pub batch_size: u32,
    /// Where reading starts the first time (`startingPosition`): `TRIM_HORIZON` (the oldest
    /// record kept, Serverless's default) or `LATEST`. Later, reading resumes after the last
    /// record handled.
    pub starting_position: String,
    /// `enabled: false` keeps the mapping but reads nothing.
    pub enabled: bool,
    /// `maximumRetryAttempts`: retries of a failing batch before it is skipped; `None`: until it
    /// succeeds (AWS: until the records expire).
    pub maximum_retry_attempts: Option<u32>,
}

/// The table a stream event reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum StreamTable {
    /// `Fn::GetAtt: [LogicalId, StreamArn]`: a table of this service's `resources`.
    Resource(String),
    /// A literal stream ARN (`arn:aws:dynamodb:...:table/NAME/stream/...`): the table NAME.
    Name(String),
}

/// Where a function's settings are written in its `serverless.yml`, each as `file:line:column`:
/// problems found after loading (a missing artifact or handler file, a runtime the machine lacks)
/// point there. Each falls back to the function's own key when the setting is not written in the
/// function (a provider-wide runtime points at `provider.runtime`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FunctionPlaces {
    /// `package.artifact`, else the function.
    pub artifact: String,
    /// `handler`, else the function.
    pub handler: String,
    /// The function's `runtime`, else `provider.runtime`, else the function.
    pub runtime: String,
}

/// One `- http:` event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpEvent {
    /// Normalised path template: leading `/`, no trailing `/` (root is `/`), e.g. `/candidates/{id}`.
    pub path: String,
    pub method: HttpMethod,
    pub private: bool,
    /// `private: report` (or `custom.keygate.enforcement: report`): the key and the usage plan
    /// are checked as on a private route, but a request they would refuse is let through and
    /// recorded as a would-be refusal instead. Never set together with `private` (a snapshot
    /// that had both would be enforced: `private` wins).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub report: bool,
    pub cors: Option<Cors>,
    pub integration: Integration,
    /// `authorizer:`: a Lambda authorizer run before the key check. Absent from snapshots of
    /// routes without one (and of deployments made before authorizers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorizer: Option<crate::Authorizer>,
}

/// HTTP methods Serverless accepts for `http` events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum HttpMethod {
    Get,
    Post,
    Put,
    Patch,
    Delete,
    Head,
    Options,
    /// `any` / `*`: every method.
    Any,
}

impl HttpMethod {
    /// Parses a method as Serverless does: case-insensitive, `*` means ANY.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s.to_ascii_uppercase().as_str() {
            "GET" => Self::Get,
            "POST" => Self::Post,
            "PUT" => Self::Put,
            "PATCH" => Self::Patch,
            "DELETE" => Self::Delete,
            "HEAD" => Self::Head,
            "OPTIONS" => Self::Options,
            "ANY" | "*" => Self::Any,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Get => "GET",
            Self::Post => "POST",
            Self::Put => "PUT",
            Self::Patch => "PATCH",
            Self::Delete => "DELETE",
            Self::Head => "HEAD",
            Self::Options => "OPTIONS",
            Self::Any => "ANY",
        }
    }

    /// Whether a route declared with `self` serves a request with method `m`.
    pub fn matches(self, m: &str) -> bool {
        self == Self::Any || self.as_str().eq_ignore_ascii_case(m)
    }
}

impl fmt::Display for HttpMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// CORS settings of an event (`cors: true` gives [`Cors::default`], Serverless's defaults).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cors {
    /// Allowed origins; `*` allows any.
    pub origins: Vec<String>,
    pub headers: Vec<String>,
    /// Methods listed in the preflight answer; empty means "the methods of this path".
    pub methods: Vec<String>,
    pub allow_credentials: bool,
    pub max_age: Option<u32>,
    pub cache_control: Option<String>,
}

impl Default for Cors {
    fn default() -> Self {
        Self {
            origins: vec!["*".to_owned()],
            headers: [
                "Content-Type",
                "X-Amz-Date",
                "Authorization",
                "X-Api-Key",
                "X-Amz-Security-Token",
                "X-Amz-User-Agent",
                "X-Amzn-Trace-Id",
            ]
            .into_iter()
            .map(str::to_owned)
            .collect(),
            methods: Vec::new(),
            allow_credentials: false,
            max_age: None,
            cache_control: None,
        }
    }
}

/// How a route reaches its backend.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Integration {
    /// The function behind the event, with the REST payload 1.0 event (the default).
    LambdaProxy,
    /// Forward to `uri` (with `{proxy}` and path parameters substituted). An `https://`
    /// upstream's certificate is verified against the system's roots, unless
    /// `insecure_skip_verification` (API Gateway's `tlsConfig.insecureSkipVerification`): then a
    /// chain that ends at an unknown CA or a self-signed certificate is accepted, and the name,
    /// the validity dates and the signatures are still checked.
    HttpProxy {
        uri: String,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        insecure_skip_verification: bool,
    },
    /// Answer 200 with an empty body without calling anything, as API Gateway's MOCK does by default.
    Mock,
}
