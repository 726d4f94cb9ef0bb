//! From the spanned tree to a [`ServiceDefinition`]: the top level, `provider` and `functions`.
//!
//! [`Ctx`] (in `ctx.rs`) walks the document key by key, resolving variables only in the values it
//! uses, and collects every problem it finds plus the notes (deprecations, ignored keys). This
//! module reads the top level and calls the `http` events in `http.rs`, the API keys in `keys.rs`
//! and the usage plans in `plans.rs`, each a further `impl Ctx` block; none of them imports this
//! module.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use keygate_types::{ApiKeySource, FunctionSpec, Runtime, RuntimeKind, ServiceDefinition};

use crate::LoadOptions;
use crate::ctx::{Ctx, Section};
use crate::diag::{Diag, FieldPath, Mark, suggest};
use crate::keys::KeyRecord;
use crate::vars::Resolver;
use crate::yaml::{Entry, Node, Value, int_value, quote};

/// Top-level keys Serverless knows that keygate does not use.
const TOP_IGNORED: &[&str] = &[
    "app",
    "enableLocalInstallationFallback",
    "build",
    "console",
    "dashboard",
    "deprecationNotificationMode",
    "disabledDeprecations",
    "frameworkVersion",
    "layers",
    "license",
    "org",
    "outputs",
    "params",
    "plugins",
    "stages",
    "stepFunctions",
    "unresolvedVariablesNotificationMode",
    "useDotenv",
    "variablesResolutionMode",
];

/// `provider` keys Serverless knows that keygate does not use.
const PROVIDER_IGNORED: &[&str] = &[
    "capacityProviders",
    "alb",
    "apiName",
    "architecture",
    "cfnRole",
    "cloudFront",
    "deploymentBucket",
    "deploymentMethod",
    "deploymentPrefix",
    "disableRollback",
    "ecr",
    "ephemeralStorageSize",
    "eventBridge",
    "httpApi",
    "iam",
    "iamManagedPolicies",
    "iamRoleStatements",
    "kmsKeyArn",
    "lambdaHashingVersion",
    "layers",
    "logRetentionInDays",
    "logDataProtectionPolicy",
    "logs",
    "notificationArns",
    "profile",
    "role",
    "rolePermissionsBoundary",
    "rollbackConfiguration",
    "runtimeManagement",
    "s3",
    "stackName",
    "stackParameters",
    "stackPolicy",
    "stackTags",
    "tags",
    "tracing",
    "versionFunctions",
    "vpc",
    "vpcEndpointIds",
    "websocketsApiName",
    "websocketsApiRouteSelectionExpression",
    "websocketsDescription",
];

/// `provider.apiGateway` keys keygate does not use.
const API_GATEWAY_IGNORED: &[&str] = &[
    "binaryMediaTypes",
    "description",
    "disableDefaultEndpoint",
    "metrics",
    "minimumCompressionSize",
    "request",
    "restApiId",
    "restApiResources",
    "restApiRootResourceId",
    "shouldStartNameWithService",
    "timeoutInMillis",
    "websocketApiId",
];

const TOP: Section = Section {
    what: "top-level key",
    used: &[
        "service",
        "provider",
        "functions",
        "resources",
        "package",
        "configValidationMode",
        "custom",
    ],
    ignored: TOP_IGNORED,
};

const PROVIDER: Section = Section {
    what: "key in provider",
    used: &[
        "name",
        "runtime",
        "stage",
        "region",
        "environment",
        "memorySize",
        "timeout",
        "apiGateway",
        "apiKeys",
        "usagePlan",
        "resourcePolicy",
        "endpointType",
    ],
    ignored: PROVIDER_IGNORED,
};

const API_GATEWAY: Section = Section {
    what: "key in provider.apiGateway",
    used: &["apiKeys", "usagePlan", "apiKeySourceType", "resourcePolicy"],
    ignored: API_GATEWAY_IGNORED,
};

const FUNCTION: Section = Section {
    what: "key in a function",
    used: &[
        "handler",
        "runtime",
        "environment",
        "timeout",
        "memorySize",
        "description",
        "reservedConcurrency",
        "capacityProvider",
        "name",
        "package",
        "events",
    ],
    ignored: FUNCTION_IGNORED,
};

const CAPACITY_PROVIDER: Section = Section {
    what: "key in capacityProvider",
    used: &["name", "maxConcurrency"],
    ignored: &["memoryPerVCpu", "scaling"],
};

const PACKAGE: Section = Section {
    what: "key in package",
    used: &["artifact", "patterns", "include", "exclude"],
    ignored: &["individually", "excludeDevDependencies"],
};

const SERVICE_PACKAGE: Section = Section {
    what: "key in package",
    used: &["patterns", "include", "exclude"],
    ignored: &["artifact", "individually", "excludeDevDependencies"],
};

/// The `provided.*` runtimes, for "did you mean" suggestions.
const RUNTIMES_PROVIDED: &[&str] = &["provided", "provided.al2", "provided.al2023"];

/// Lambda runtime families keygate knows but does not run (nor accept).
const RUNTIMES_OTHER: &[&str] = &["java", "dotnet", "ruby", "go1", "python2", "nodejs", "python"];

/// Whether keygate runs `runtime` (see [`Runtime::parse`]).
fn runtime_accepted(runtime: &str) -> bool {
    Runtime::parse(runtime).is_some()
}

/// Why `runtime` is refused, if it is. Refused even with `--allow-unknown`: a function keygate
/// cannot run would answer every request with a 502.
fn runtime_problem(runtime: &str) -> Option<String> {
    if runtime_accepted(runtime) {
        return None;
    }
    let supported = "keygate runs provided, provided.al2 and provided.al2023 (a `bootstrap` \
                     executable, e.g. a Rust or Go function), nodejsN.x (on the machine's `node`) \
                     and python3.N (on the machine's `python3`)";
    // Close spellings: the runtimes keygate runs, and Node.js/Python with the version given.
    let version = runtime.find(|c: char| c.is_ascii_digit()).map_or("", |i| &runtime[i..]);
    let guesses = [format!("nodejs{version}"), format!("python{version}")];
    let candidates = RUNTIMES_PROVIDED
        .iter()
        .copied()
        .chain(guesses.iter().map(String::as_str).filter(|g| runtime_accepted(g)));
    if let Some(guess) = suggest(runtime, candidates) {
        return Some(format!(
            "unknown runtime {}; did you mean `{guess}`? {supported}",
            quote(runtime)
        ));
    }
    if RUNTIMES_OTHER.iter().any(|f| runtime.starts_with(f)) {
        return Some(format!("the runtime {} is not supported; {supported}", quote(runtime)));
    }
    Some(format!("unknown runtime {}; {supported}", quote(runtime)))
}

/// `maxConcurrency` of a Lambda Managed Instances function that does not set it: the defaults
/// Serverless documents per runtime (Node.js 64, Java and .NET 32, Python 16), and 16 for the
/// others (`provided.*`, where AWS documents none).
fn default_max_concurrency(runtime: Option<&Runtime>) -> u32 {
    match runtime.map(Runtime::kind) {
        Some(RuntimeKind::Node) => 64,
        Some(RuntimeKind::Python) | Some(RuntimeKind::Provided) | None => 16,
    }
}

/// Function keys Serverless knows that keygate does not use.
const FUNCTION_IGNORED: &[&str] = &[
    "alarms",
    "architecture",
    "awsKmsKeyArn",
    "condition",
    "dependsOn",
    "destinations",
    "disableLogs",
    "environmentFile",
    "ephemeralStorageSize",
    "fileSystemConfig",
    "iamRoleStatements",
    "iamRoleStatementsInherit",
    "iamRoleStatementsName",
    "image",
    "kmsKeyArn",
    "layers",
    "logDataProtectionPolicy",
    "logRetentionInDays",
    "logs",
    "maximumEventAge",
    "maximumRetryAttempts",
    "onError",
    "provisionedConcurrency",
    "role",
    "runtimeManagement",
    "snapStart",
    "tags",
    "tracing",
    "url",
    "versionFunction",
    "vpc",
];

/// The default function timeout in seconds (Serverless's).
const DEFAULT_TIMEOUT: u32 = 6;
/// The default function memory in MB (Serverless's).
const DEFAULT_MEMORY: u32 = 1024;

/// What the loader produced: the definition (meaningful only without diagnostics), problems and
/// notes.
pub(crate) struct Built {
    pub(crate) definition: ServiceDefinition,
    pub(crate) diags: Vec<Diag>,
    pub(crate) notes: Vec<String>,
}

/// Function defaults taken from `provider`.
#[derive(Default)]
struct Defaults {
    runtime: Option<Runtime>,
    /// `provider.runtime` is written but refused (already reported).
    runtime_refused: bool,
    environment: BTreeMap<String, String>,
    memory: Option<u32>,
    timeout: Option<u32>,
}

/// What `provider:` gives the rest of the file.
#[derive(Default)]
struct Provider {
    defaults: Defaults,
    stage: Option<String>,
    region: Option<String>,
    /// The `apiKeys:` list to read, with its path.
    keys: Option<(Node, FieldPath)>,
    /// The `usagePlan:` to read, with its path.
    plan: Option<(Node, FieldPath)>,
    /// `apiGateway.apiKeySourceType: AUTHORIZER`, where it is written.
    keys_from_authorizer: Option<(Mark, FieldPath)>,
}

/// What every function is read against.
struct Service<'s> {
    name: &'s str,
    stage: &'s str,
    base_dir: &'s Path,
    defaults: &'s Defaults,
    /// The service-wide `package.patterns` (with `include`/`exclude`), in order.
    patterns: &'s [String],
}

impl Ctx<'_> {
    /// A `runtime` value: one keygate runs or accepts, else an error (even with
    /// `--allow-unknown`).
    fn runtime(&mut self, node: &Node, path: &FieldPath) -> Option<Runtime> {
        let v = self.expand(node, path);
        let runtime = self.string(&v, path, "a runtime such as provided.al2023")?;
        match runtime_problem(&runtime) {
            None => Runtime::parse(&runtime),
            Some(message) => {
                self.error(v.mark, path, message);
                None
            }
        }
    }

    /// An `environment` map: names of letters, digits and `_`; scalar values become text.
    fn environment(&mut self, node: &Node, path: &FieldPath) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        let Some(entries) = self.map(node, path, "a map of environment variables") else {
            return out;
        };
        for e in entries {
            let p = path.key(&e.key);
            let mut chars = e.key.chars();
            let ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
                && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !ok {
                self.error(
                    e.key_mark,
                    &p,
                    format!(
                        "{} is not a valid environment variable name; use letters, digits and `_`, \
                         starting with a letter",
                        quote(&e.key)
                    ),
                );
                continue;
            }
            if let Some(marker) = self.table_ref(&e.value, &p) {
                out.insert(e.key, marker);
                continue;
            }
            if let Some(v) = self.text(&e.value, &p, "a string, number or boolean") {
                out.insert(e.key, v);
            }
        }
        out
    }

    fn memory(&mut self, node: &Node, path: &FieldPath) -> Option<u32> {
        self.integer(node, path, "a memory size in MB from 128 to 10240", 128..=10240)
            .map(|n| n as u32)
    }

    fn timeout(&mut self, node: &Node, path: &FieldPath) -> Option<u32> {
        self.integer(node, path, "a timeout in whole seconds from 1 to 900", 1..=900)
            .map(|n| n as u32)
    }

    /// `apiKeySourceType`: `HEADER` (API Gateway's default, the `x-api-key` header) or
    /// `AUTHORIZER` (the key is the route's authorizer's `usageIdentifierKey`); `true` for
    /// `AUTHORIZER`.
    fn api_key_source(&mut self, node: &Node, path: &FieldPath) -> bool {
        let Some(source) = self.string(node, path, "HEADER or AUTHORIZER") else { return false };
        match source.to_ascii_uppercase().as_str() {
            "HEADER" => false,
            "AUTHORIZER" => true,
            _ => {
                let message = format!("expected HEADER or AUTHORIZER, found {}", quote(&source));
                self.error(node.mark, path, message);
                false
            }
        }
    }

    /// With `apiKeySourceType: AUTHORIZER`, a private route takes its key from its authorizer:
    /// one without an authorizer would refuse every request, which is a mistake to say at
    /// deploy rather than a 403 to find later.
    fn check_keys_from_authorizer(
        &mut self,
        functions: &[FunctionSpec],
        mark: Mark,
        path: &FieldPath,
    ) {
        let bare: Vec<String> = functions
            .iter()
            .flat_map(|f| f.events.iter().map(move |e| (f, e)))
            .filter(|(_, e)| e.private && e.authorizer.is_none())
            .map(|(f, e)| format!("{} {} ({})", e.method, e.path, f.name))
            .collect();
        if bare.is_empty() {
            return;
        }
        let message = format!(
            "AUTHORIZER takes each private route's API key from its authorizer's \
             usageIdentifierKey, and {} {} no authorizer, so every request to {} would get 403; \
             add an `authorizer:` to {} or set apiKeySourceType to HEADER",
            bare.join(", "),
            if bare.len() == 1 { "has" } else { "have" },
            if bare.len() == 1 { "it" } else { "them" },
            if bare.len() == 1 { "it" } else { "each" },
        );
        self.error(mark, path, message);
    }

    /// `resourcePolicy` restricts who may call the API (source IPs, VPCs, accounts); keygate
    /// cannot evaluate it, and ignoring it would open the API to everyone: an error.
    fn resource_policy(&mut self, key_mark: Mark, path: &FieldPath) {
        self.error(
            key_mark,
            path,
            "keygate does not evaluate API Gateway resource policies, so it cannot enforce this \
             one and would serve the API to every caller it restricts; remove resourcePolicy \
             and restrict callers with API keys (`private: true`) and the address keygate \
             listens on (--listen)",
        );
    }

    /// `endpointType`: `REGIONAL` and `EDGE` change nothing here; `PRIVATE` (reachable only from
    /// a VPC) keygate cannot enforce: it serves wherever `--listen` says, so an error.
    fn endpoint_type(&mut self, node: &Node, path: &FieldPath) {
        let Some(kind) = self.string(node, path, "REGIONAL, EDGE or PRIVATE") else { return };
        match kind.to_ascii_uppercase().as_str() {
            "REGIONAL" | "EDGE" => {}
            "PRIVATE" => self.error(
                node.mark,
                path,
                "keygate cannot make an API reachable from a VPC only: it serves it on the \
                 address it listens on (--listen, 127.0.0.1 by default); remove endpointType: \
                 PRIVATE and choose that address instead",
            ),
            _ => self.error(
                node.mark,
                path,
                format!("expected REGIONAL, EDGE or PRIVATE, found {}", quote(&kind)),
            ),
        }
    }

    fn service(&mut self, entry: &Entry) -> Option<String> {
        let path = FieldPath::root().key("service");
        let v = self.expand(&entry.value, &path);
        let (name, mark, name_path) = match &v.value {
            Value::Map(entries) => {
                let mut name = None;
                for e in entries {
                    let p = path.key(&e.key);
                    if e.key == "name" {
                        name = self
                            .string(&e.value, &p, "the service name")
                            .map(|n| (n, e.value.mark));
                    } else {
                        self.ignore(&p);
                    }
                }
                let Some((name, mark)) = name else {
                    self.error(
                        entry.key_mark,
                        &path.key("name"),
                        "missing; name the service, e.g. `service: candidate-service`",
                    );
                    return None;
                };
                (name, mark, path.key("name"))
            }
            _ => (self.string(&v, &path, "the service name")?, v.mark, path),
        };
        let mut chars = name.chars();
        let ok = name.len() >= 2
            && chars.next().is_some_and(|c| c.is_ascii_alphabetic())
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '-');
        if !ok {
            self.error(
                mark,
                &name_path,
                format!(
                    "expected a service name of letters, digits and `-` that starts with a \
                    letter, found {}",
                    quote(&name)
                ),
            );
            return None;
        }
        Some(name)
    }

    /// `provider:`: the function defaults, stage, region, API keys and usage plan.
    fn provider(&mut self, entry: &Entry) -> Provider {
        let mut out = Provider::default();
        let path = FieldPath::root().key("provider");
        let Some(entries) =
            self.map(&entry.value, &path, "the provider settings (a map with name: aws, ...)")
        else {
            return out;
        };
        let mut has_name = false;
        // (value, path, key position) of provider.apiKeys / provider.usagePlan (deprecated).
        let mut old_keys = None;
        let mut old_plan = None;
        let mut keys = None;
        let mut plan = None;
        for e in entries {
            let p = path.key(&e.key);
            match e.key.as_str() {
                "name" => {
                    has_name = true;
                    if let Some(name) = self.string(&e.value, &p, "\"aws\"")
                        && name != "aws"
                    {
                        let message = format!(
                            "expected \"aws\", found {}; keygate runs AWS-style (Lambda and API \
                             Gateway) services only",
                            quote(&name)
                        );
                        self.error(e.value.mark, &p, message);
                    }
                }
                "runtime" => {
                    out.defaults.runtime = self.runtime(&e.value, &p);
                    out.defaults.runtime_refused = out.defaults.runtime.is_none();
                }
                "stage" => {
                    let stage = self.string(&e.value, &p, "a stage name such as dev");
                    match stage {
                        Some(s) if stage_ok(&s) => out.stage = Some(s),
                        Some(s) => {
                            let message = format!(
                                "expected a stage name of letters, digits, `-` and `_`, found {}",
                                quote(&s)
                            );
                            self.error(e.value.mark, &p, message);
                        }
                        None => {}
                    }
                }
                "region" => out.region = self.string(&e.value, &p, "a region such as us-east-1"),
                "environment" => out.defaults.environment = self.environment(&e.value, &p),
                "memorySize" => out.defaults.memory = self.memory(&e.value, &p),
                "timeout" => out.defaults.timeout = self.timeout(&e.value, &p),
                "apiKeys" => old_keys = Some((e.value, p, e.key_mark)),
                "usagePlan" => old_plan = Some((e.value, p, e.key_mark)),
                "apiGateway" => {
                    let what = "the API Gateway settings (a map)";
                    for g in self.map(&e.value, &p, what).unwrap_or_default() {
                        let gp = p.key(&g.key);
                        match g.key.as_str() {
                            "apiKeys" => keys = Some((g.value, gp)),
                            "usagePlan" => plan = Some((g.value, gp)),
                            "apiKeySourceType" => {
                                if self.api_key_source(&g.value, &gp) {
                                    out.keys_from_authorizer = Some((g.value.mark, gp));
                                }
                            }
                            "resourcePolicy" => self.resource_policy(g.key_mark, &gp),
                            k => self.other_key(k, g.key_mark, &gp, &API_GATEWAY),
                        }
                    }
                }
                "resourcePolicy" => self.resource_policy(e.key_mark, &p),
                "endpointType" => self.endpoint_type(&e.value, &p),
                k => self.other_key(k, e.key_mark, &p, &PROVIDER),
            }
        }
        if !has_name {
            self.error(entry.key_mark, &path.key("name"), "missing; set `name: aws`");
        }
        if let Some((node, p, mark)) = old_keys {
            self.note(
                "provider.apiKeys is deprecated: move it under provider.apiGateway.apiKeys \
                 (Serverless v3 removed provider.apiKeys; keygate still accepts it)"
                    .to_owned(),
            );
            if keys.is_some() {
                let message = "API keys are declared both here and under \
                               provider.apiGateway.apiKeys; keep only provider.apiGateway.apiKeys";
                self.error(mark, &p, message);
            } else {
                keys = Some((node, p));
            }
        }
        if let Some((node, p, mark)) = old_plan {
            self.note(
                "provider.usagePlan is deprecated: move it under provider.apiGateway.usagePlan \
                 (Serverless v3 removed provider.usagePlan; keygate still accepts it)"
                    .to_owned(),
            );
            if plan.is_some() {
                let message = "a usage plan is declared both here and under \
                               provider.apiGateway.usagePlan; keep only \
                               provider.apiGateway.usagePlan";
                self.error(mark, &p, message);
            } else {
                plan = Some((node, p));
            }
        }
        out.keys = keys;
        out.plan = plan;
        out
    }

    /// `functions:`, a map of functions (or, as Serverless also accepts, a list of such maps).
    fn functions(&mut self, entry: &Entry, svc: &Service<'_>) -> Vec<FunctionSpec> {
        let path = FieldPath::root().key("functions");
        let v = self.expand(&entry.value, &path);
        let mut entries: Vec<Entry> = Vec::new();
        match v.value {
            Value::Map(es) => entries = es,
            Value::Null | Value::Invalid => {}
            Value::Seq(items) => {
                for (i, item) in items.iter().enumerate() {
                    let more = self.map(item, &path.index(i), "a map of functions");
                    for e in more.unwrap_or_default() {
                        match entries.iter().find(|f| f.key == e.key) {
                            Some(first) => {
                                let message = format!(
                                    "the function `{}` is already defined on line {}",
                                    e.key, first.key_mark.line
                                );
                                self.error(e.key_mark, &path.key(&e.key), message);
                            }
                            None => entries.push(e),
                        }
                    }
                }
            }
            _ => {
                let found = v.describe();
                self.error(v.mark, &path, format!("expected a map of functions, found {found}"));
            }
        }
        entries.iter().filter_map(|e| self.function(&e.key, e.key_mark, &e.value, svc)).collect()
    }

    fn function(
        &mut self,
        name: &str,
        name_mark: Mark,
        node: &Node,
        svc: &Service<'_>,
    ) -> Option<FunctionSpec> {
        let defaults = svc.defaults;
        let path = FieldPath::root().key("functions").key(name);
        if name.is_empty()
            || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            self.error(
                name_mark,
                &path,
                format!(
                    "{} is not a valid function name; use letters, digits, `-` and `_`",
                    quote(name)
                ),
            );
        }
        let entries =
            self.map(node, &path, "the function's settings (a map with handler, events, ...)")?;
        let mut handler = None;
        let mut runtime = None;
        let mut environment = BTreeMap::new();
        let mut timeout = None;
        let mut memory = None;
        let mut description = None;
        let mut reserved = None;
        let mut max_concurrency = None;
        let mut function_name = None;
        let mut artifact = None;
        let mut patterns = Vec::new();
        let mut events = Vec::new();
        let mut has_handler = false;
        for e in &entries {
            let p = path.key(&e.key);
            match e.key.as_str() {
                "handler" => {
                    has_handler = true;
                    handler = self.string(&e.value, &p, "a handler such as api/candidates.submit");
                    if handler.as_deref() == Some("") {
                        self.error(
                            e.value.mark,
                            &p,
                            "expected a handler such as \
                         api/candidates.submit, found an empty string",
                        );
                        handler = None;
                    }
                }
                "runtime" => runtime = self.runtime(&e.value, &p),
                "environment" => environment = self.environment(&e.value, &p),
                "timeout" => timeout = self.timeout(&e.value, &p),
                "memorySize" => memory = self.memory(&e.value, &p),
                "description" => description = self.text(&e.value, &p, "a description"),
                "reservedConcurrency" => reserved = self.reserved(&e.value, &p),
                "capacityProvider" => max_concurrency = self.capacity_provider(&e.value, &p),
                "name" => function_name = self.string(&e.value, &p, "a function name"),
                "package" => {
                    let (a, p) = self.package(&e.value, &p, svc.base_dir);
                    artifact = a;
                    patterns = p;
                }
                "events" => events = self.events(&e.value, &p),
                k => self.other_key(k, e.key_mark, &p, &FUNCTION),
            }
        }
        if !has_handler {
            self.error(
                name_mark,
                &path.key("handler"),
                "missing; every function needs a handler, e.g. `handler: api/candidates.submit`",
            );
        }
        let streams = std::mem::take(&mut self.pending_streams);
        let runtime = runtime.or_else(|| defaults.runtime.clone());
        if runtime.is_none()
            && !defaults.runtime_refused
            && !entries.iter().any(|e| e.key == "runtime")
        {
            self.error(
                name_mark,
                &path.key("runtime"),
                format!(
                    "missing; set provider.runtime or functions.{name}.runtime (e.g. \
                     provided.al2023)"
                ),
            );
        }
        let mut env = defaults.environment.clone();
        env.extend(environment);
        let max_concurrency = max_concurrency
            .map(|n: Option<u32>| n.unwrap_or_else(|| default_max_concurrency(runtime.as_ref())));
        Some(FunctionSpec {
            name: name.to_owned(),
            function_name: function_name
                .unwrap_or_else(|| format!("{}-{}-{name}", svc.name, svc.stage)),
            handler: handler?,
            runtime: runtime?,
            environment: env,
            timeout_secs: timeout.or(defaults.timeout).unwrap_or(DEFAULT_TIMEOUT),
            memory_size: memory.or(defaults.memory).unwrap_or(DEFAULT_MEMORY),
            description,
            reserved_concurrency: reserved,
            max_concurrency,
            artifact,
            package_patterns: svc.patterns.iter().cloned().chain(patterns).collect(),
            events,
            streams,
        })
    }

    fn reserved(&mut self, node: &Node, path: &FieldPath) -> Option<u32> {
        let v = self.expand(node, path);
        let zero = match &v.value {
            Value::Num(n) => int_value(n) == Some(0),
            Value::Str(s) => int_value(s.trim()) == Some(0),
            _ => false,
        };
        if zero {
            self.error(
                v.mark,
                path,
                "0 would disable the function (every invocation is throttled); remove \
                 reservedConcurrency or set it to at least 1",
            );
            return None;
        }
        self.integer(&v, path, "a whole number of at least 1", 1..=i64::from(u32::MAX))
            .map(|n| n as u32)
    }

    /// `capacityProvider`: Lambda Managed Instances. A name or ARN (a string, or an intrinsic such
    /// as `!GetAtt`) or a map with `name`, `maxConcurrency` (1–1600), `memoryPerVCpu` and
    /// `scaling`. keygate runs no EC2 capacity: what it takes from this is that the function's
    /// processes take several invocations at once. `Some(None)`: the runtime's default
    /// concurrency.
    fn capacity_provider(&mut self, node: &Node, path: &FieldPath) -> Option<Option<u32>> {
        let v = self.expand(node, path);
        match &v.value {
            Value::Invalid => return None,
            Value::Map(_) if v.tag.is_none() => {}
            Value::Null => {
                self.mismatch(
                    &v,
                    path,
                    "a capacity provider name, or a map with name and maxConcurrency",
                );
                return None;
            }
            _ => return Some(None),
        }
        let entries = self.map(&v, path, "a map with name and maxConcurrency")?;
        let mut max = None;
        let mut named = false;
        for e in &entries {
            let p = path.key(&e.key);
            match e.key.as_str() {
                "name" => named = true,
                "maxConcurrency" => {
                    max = self
                        .integer(&e.value, &p, "a whole number from 1 to 1600", 1..=1600)
                        .map(|n| n as u32);
                }
                k => self.other_key(k, e.key_mark, &p, &CAPACITY_PROVIDER),
            }
        }
        if !named {
            self.error(
                v.mark,
                &path.key("name"),
                "missing; name the capacity provider (a key of provider.capacityProviders, or an \
                 ARN), e.g. `name: default`",
            );
            return None;
        }
        Some(max)
    }

    /// A function's `package`: `artifact`, made absolute against the file's directory (not
    /// checked to exist), and its patterns.
    fn package(
        &mut self,
        node: &Node,
        path: &FieldPath,
        base_dir: &Path,
    ) -> (Option<PathBuf>, Vec<String>) {
        let Some(entries) = self.map(node, path, "a map with artifact or patterns") else {
            return (None, Vec::new());
        };
        let mut artifact = None;
        for e in &entries {
            if e.key != "artifact" {
                continue;
            }
            let p = path.key(&e.key);
            if let Some(a) = self.string(&e.value, &p, "the path of a zip file") {
                if a.is_empty() {
                    self.error(
                        e.value.mark,
                        &p,
                        "expected the path of a zip file, found an empty string",
                    );
                } else {
                    artifact = Some(absolute(base_dir, Path::new(&a)));
                }
            }
        }
        let patterns = self.package_patterns(node, path, &PACKAGE);
        (artifact, patterns)
    }

    /// `patterns` (globs over paths relative to the service directory, `!` to exclude, applied
    /// in order as Serverless applies them), with the deprecated `include` (as patterns) and
    /// `exclude` (as `!` patterns) before them.
    fn package_patterns(
        &mut self,
        node: &Node,
        path: &FieldPath,
        section: &Section,
    ) -> Vec<String> {
        let Some(entries) = self.map(node, path, "a map with patterns") else { return Vec::new() };
        let (mut include, mut exclude, mut patterns) = (Vec::new(), Vec::new(), Vec::new());
        for e in &entries {
            let p = path.key(&e.key);
            let list = |cx: &mut Self| cx.strings(&e.value, &p, "a list of glob patterns", false);
            match e.key.as_str() {
                "patterns" => patterns = list(self).unwrap_or_default(),
                "include" => include = list(self).unwrap_or_default(),
                "exclude" => {
                    exclude = list(self)
                        .unwrap_or_default()
                        .into_iter()
                        .map(|x| format!("!{x}"))
                        .collect();
                }
                "artifact" if section.used.contains(&"artifact") => {}
                k => self.other_key(k, e.key_mark, &p, section),
            }
        }
        for pattern in patterns.iter().chain(&include) {
            let glob = pattern.strip_prefix('!').unwrap_or(pattern);
            if glob.is_empty() || glob.starts_with('/') || glob.split('/').any(|s| s == "..") {
                let message = format!(
                    "{} is not a pattern keygate takes: a glob relative to the service directory, \
                     `!` before it to leave files out (e.g. `!node_modules/aws-sdk/**`)",
                    quote(pattern)
                );
                self.error(node.mark, &path.key("patterns"), message);
            }
        }
        exclude.into_iter().chain(include).chain(patterns).collect()
    }
}

/// `rel` against `base`, normalised lexically as Serverless's `path.resolve` does: `.` removed
/// and `..` taking off the component before it.
fn absolute(base: &Path, rel: &Path) -> PathBuf {
    let joined = if rel.is_absolute() { rel.to_path_buf() } else { base.join(rel) };
    let mut out = PathBuf::new();
    for c in joined.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push(c);
                }
            }
            _ => out.push(c),
        }
    }
    out
}

fn stage_ok(stage: &str) -> bool {
    !stage.is_empty()
        && stage.len() <= 128
        && stage.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// A region name as AWS spells them (`us-east-1`, `eu-central-2`, `us-gov-west-1`).
fn region_ok(region: &str) -> bool {
    !region.is_empty()
        && region.len() <= 32
        && region.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// Builds the service definition from the document root.
pub(crate) fn build(root: &Node, base_dir: PathBuf, opts: &LoadOptions<'_>) -> Built {
    let resolver = Resolver::new(root, opts.stage.as_deref(), opts.region.as_deref(), opts.env);
    let mut cx = Ctx::new(resolver, opts.allow_unknown);
    let mut definition = ServiceDefinition {
        service: String::new(),
        stage: String::new(),
        region: String::new(),
        base_dir,
        functions: Vec::new(),
        api_keys: Vec::new(),
        usage_plans: Vec::new(),
        tables: Vec::new(),
        api_key_source: Default::default(),
        key_introspection: None,
    };
    let top = FieldPath::root();
    let Value::Map(entries) = &root.value else {
        cx.error(
            root.mark,
            &top,
            format!(
                "expected the service settings as a map (service, provider, functions, ...), \
                 found {}",
                root.describe()
            ),
        );
        return cx.finish(definition);
    };

    // Serverless's own switch for unknown keys, read first since it decides how they count.
    if let Some(e) = entries.iter().find(|e| e.key == "configValidationMode") {
        let path = top.key("configValidationMode");
        match cx.string(&e.value, &path, "error, warn or off").as_deref() {
            Some("warn" | "off") => cx.allow_unknown = true,
            Some("error") | None => {}
            Some(other) => {
                let message = format!("expected error, warn or off, found {}", quote(other));
                cx.error(e.value.mark, &path, message);
            }
        }
    }

    let mut service = None;
    let mut provider = None;
    let mut functions = None;
    let mut resources = None;
    let mut package = None;
    let mut custom = crate::custom::Custom::default();
    for e in entries {
        match e.key.as_str() {
            "custom" => custom = cx.custom(&e.value, &top.key("custom")),
            "service" => service = Some(e),
            "provider" => provider = Some(e),
            "functions" => functions = Some(e),
            "resources" => resources = Some(e),
            "package" => package = Some(e),
            "configValidationMode" => {}
            k => cx.other_key(k, e.key_mark, &top.key(k), &TOP),
        }
    }

    let service = match service {
        Some(e) => cx.service(e),
        None => {
            cx.error(
                Mark::START,
                &top.key("service"),
                "missing; name the service, e.g. `service: candidate-service`",
            );
            None
        }
    };

    let provider = match provider {
        Some(e) => cx.provider(e),
        None => {
            cx.error(
                Mark::START,
                &top.key("provider"),
                "missing; expected `provider:` with `name: aws`",
            );
            Provider::default()
        }
    };
    let Provider { defaults, stage: provider_stage, region, keys, plan, keys_from_authorizer } =
        provider;

    if let Some(stage) = &opts.stage
        && !stage_ok(stage)
    {
        cx.error(
            Mark::START,
            &FieldPath::root().key("--stage"),
            format!(
                "expected a stage name of letters, digits, `-` and `_`, found {}",
                quote(stage)
            ),
        );
    }
    if let Some(region) = &opts.region
        && !region_ok(region)
    {
        cx.error(
            Mark::START,
            &FieldPath::root().key("--region"),
            format!("expected a region such as us-east-1, found {}", quote(region)),
        );
    }
    let region = opts.region.clone().or(region);
    let stage = opts.stage.clone().or(provider_stage).unwrap_or_else(|| "dev".to_owned());
    let service = service.unwrap_or_default();
    if let Some(e) = resources {
        definition.tables = cx.resources(&e.value, &service, &stage);
    }

    let patterns = match package {
        Some(e) => cx.package_patterns(&e.value, &top.key("package"), &SERVICE_PACKAGE),
        None => Vec::new(),
    };
    if let Some(entry) = functions {
        let base_dir = definition.base_dir.clone();
        let svc = Service {
            name: &service,
            stage: &stage,
            base_dir: &base_dir,
            defaults: &defaults,
            patterns: &patterns,
        };
        definition.functions = cx.functions(entry, &svc);
    }
    // Stream events name tables of `resources`; authorizers name functions.
    cx.check_streams(&definition.tables);
    cx.check_authorizers(&definition.functions);
    // A JWT authorizer's key file is named relative to the yml.
    let base_dir = definition.base_dir.clone();
    let jwts = definition.functions.iter_mut().flat_map(|f| &mut f.events);
    for jwt in jwts.filter_map(|e| e.authorizer.as_mut()?.jwt.as_mut()) {
        if !jwt.jwks.starts_with("https://") && !jwt.jwks.starts_with("http://") {
            jwt.jwks = absolute(&base_dir, Path::new(&jwt.jwks)).display().to_string();
        }
    }
    if let Some((mark, path)) = keys_from_authorizer {
        cx.check_keys_from_authorizer(&definition.functions, mark, &path);
        definition.api_key_source = ApiKeySource::Authorizer;
    }
    // Said only when nothing else is wrong: a broken file is fixed first, and a typo such as
    // `functons:` already has its own error.
    if cx.http_declared == 0 && cx.r.diags.is_empty() {
        let mark = functions.map_or(Mark::START, |e| e.key_mark);
        cx.error(
            mark,
            &top.key("functions"),
            "no function has an http event: nothing to serve; keygate serves `- http:` events, \
             e.g. `events: [{http: GET hello}]` under a function",
        );
    }

    let plans = cx.usage_plans(plan.as_ref(), &service, &stage);
    let mut records: Vec<KeyRecord> = Vec::new();
    if let Some((node, path)) = &keys {
        cx.api_keys(node, path, &plans, &mut records);
    }
    definition.api_keys = cx.finish_keys(records, &service, &stage);
    definition.usage_plans = plans.decls;
    cx.apply_custom(custom, &mut definition);

    definition.service = service;
    definition.stage = stage;
    definition.region = region.unwrap_or_else(|| "us-east-1".to_owned());
    cx.resolve_table_refs(&mut definition);
    cx.finish(definition)
}

impl Ctx<'_> {
    fn finish(self, definition: ServiceDefinition) -> Built {
        let (diags, notes) = self.into_findings();
        Built { definition, diags, notes }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn artifacts_become_absolute() {
        assert_eq!(
            absolute(Path::new("/srv/app"), Path::new("./dist/fn.zip")),
            PathBuf::from("/srv/app/dist/fn.zip")
        );
        assert_eq!(
            absolute(Path::new("/srv/app"), Path::new("/abs/x.zip")),
            PathBuf::from("/abs/x.zip")
        );
        assert_eq!(
            absolute(Path::new("/srv/app/x"), Path::new("../../target/bin")),
            PathBuf::from("/srv/target/bin")
        );
    }
}
