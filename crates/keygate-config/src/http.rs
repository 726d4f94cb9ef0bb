//! `events:` of a function: `- http:` events (short `GET path` and long map forms), their CORS
//! settings and integrations, and the check that no route is declared twice. Other event types
//! are noted as ignored.

use keygate_types::{Cors, HttpEvent, HttpMethod, Integration};

use crate::ctx::{Ctx, Route, Section};
use crate::diag::{FieldPath, Mark, suggest};
use crate::path;
use crate::yaml::{Entry, Node, Value, quote};

const METHODS: &str = "GET, POST, PUT, PATCH, DELETE, HEAD, OPTIONS, ANY";

/// `http` event keys Serverless knows that keygate does not use.
const HTTP_IGNORED: &[&str] = &[
    "connectionId",
    "connectionType",
    "contentHandling",
    "description",
    "documentation",
    "methodResponses",
    "operationId",
    "reqValidatorName",
    "response",
    "statusCodes",
    "summary",
    "swaggerTags",
    "timeoutInMillis",
];

/// The keys of an http event.
const HTTP: Section = Section {
    what: "key in an http event",
    used: &["path", "method", "private", "cors", "integration", "request", "authorizer", "async"],
    ignored: HTTP_IGNORED,
};

/// The keys of an http event's `request`.
const REQUEST: Section = Section {
    what: "key in request",
    used: &["uri", "tlsConfig"],
    ignored: &[
        "contentHandling",
        "method",
        "parameters",
        "passThrough",
        "schema",
        "schemas",
        "template",
    ],
};

/// The keys of `request.tlsConfig` (API Gateway's integration `tlsConfig`).
const TLS_CONFIG: Section =
    Section { what: "key in tlsConfig", used: &["insecureSkipVerification"], ignored: &[] };

/// The event types Serverless defines: keygate serves `http` and notes the others as ignored.
const EVENTS: Section = Section {
    what: "event type",
    used: &["http", "stream"],
    ignored: &[
        "activemq",
        "alb",
        "alexaSkill",
        "alexaSmartHome",
        "cloudFront",
        "cloudwatchEvent",
        "cloudwatchLog",
        "cognitoUserPool",
        "eventBridge",
        "httpApi",
        "iot",
        "iotFleetProvisioning",
        "kafka",
        "msk",
        "rabbitmq",
        "s3",
        "schedule",
        "sns",
        "sqs",
        "websocket",
    ],
};

/// What `private:` says of a route.
enum Private {
    No,
    Yes,
    /// `private: report`: checked, not enforced (would-be refusals recorded).
    Report,
}

impl Ctx<'_> {
    /// `private:`: `true`, `false` (YAML booleans, or those words from a variable, as
    /// [`Ctx::boolean`]) or `report`. Anything else is an error: `private: yes` locks nothing by
    /// accident.
    fn private(&mut self, node: &Node, path: &FieldPath) -> Option<Private> {
        let from_variable = matches!(node.value, Value::Template(_));
        let v = self.expand(node, path);
        match &v.value {
            Value::Bool(b) if v.tag.is_none() => Some(if *b { Private::Yes } else { Private::No }),
            Value::Str(s) if v.tag.is_none() && s == "report" => Some(Private::Report),
            Value::Str(s) if from_variable && s.eq_ignore_ascii_case("true") => Some(Private::Yes),
            Value::Str(s) if from_variable && s.eq_ignore_ascii_case("false") => Some(Private::No),
            Value::Invalid => None,
            _ => {
                self.mismatch(&v, path, "true or false (a YAML boolean, unquoted), or report");
                None
            }
        }
    }

    /// The `http` events of `events:`; other event types are noted and skipped.
    pub(crate) fn events(&mut self, node: &Node, path: &FieldPath) -> Vec<HttpEvent> {
        let mut out = Vec::new();
        let Some(items) =
            self.list(node, path, "a list of events such as `- http: GET candidates`")
        else {
            return out;
        };
        for (i, item) in items.iter().enumerate() {
            let ipath = path.index(i);
            let v = self.expand(item, &ipath);
            let entry = match &v.value {
                Value::Map(entries) if entries.len() == 1 => entries[0].clone(),
                Value::Map(entries) if entries.iter().any(|e| e.key == "http") => {
                    let keys: Vec<&str> = entries.iter().map(|e| e.key.as_str()).collect();
                    self.error(
                        v.mark,
                        &ipath,
                        format!(
                            "one event has the keys {}; put the http settings under `http:` \
                             (indent them further than `http`) and start each event with its \
                             own `-`",
                            keys.join(", ")
                        ),
                    );
                    continue;
                }
                Value::Invalid => continue,
                _ => {
                    let found = v.describe();
                    self.error(
                        v.mark,
                        &ipath,
                        format!(
                            "expected an event such as `- http: GET candidates`, found {found}"
                        ),
                    );
                    continue;
                }
            };
            if entry.key == "http" {
                self.http_declared += 1;
                if let Some(ev) = self.http(&entry, &ipath.key("http")) {
                    out.push(ev);
                }
            } else if entry.key == "stream" {
                if let Some(ev) = self.stream_event(&entry.value, &ipath.key("stream")) {
                    self.pending_streams.push(ev);
                }
            } else if EVENTS.ignored.contains(&entry.key.as_str()) {
                self.other_events.push(format!("{} ({ipath})", entry.key));
            } else {
                // `- htpp: GET x` would drop a route without a word.
                self.unknown(&entry.key, entry.key_mark, &ipath.key(&entry.key), &EVENTS);
            }
        }
        out
    }

    fn method(&mut self, text: &str, mark: Mark, path: &FieldPath) -> Option<HttpMethod> {
        let m = HttpMethod::parse(text);
        if m.is_none() {
            self.error(mark, path, format!("expected one of {METHODS}, found {}", quote(text)));
        }
        m
    }

    fn route_path(&mut self, text: &str, mark: Mark, path: &FieldPath) -> Option<path::RoutePath> {
        match path::parse(text) {
            Ok(p) => Some(p),
            Err(message) => {
                self.error(mark, path, message);
                None
            }
        }
    }

    /// One `http:` event; `entry` is the `http: ...` pair and `path` its field path.
    fn http(&mut self, entry: &Entry, path: &FieldPath) -> Option<HttpEvent> {
        let v = self.expand(&entry.value, path);
        let event = match &v.value {
            Value::Str(s) => {
                let parts: Vec<&str> = s.split_whitespace().collect();
                let [method, route] = parts.as_slice() else {
                    self.error(
                        v.mark,
                        path,
                        format!(
                            "expected `METHOD path` (e.g. `GET candidates`) or a map with path \
                            and method, found {}",
                            quote(s)
                        ),
                    );
                    return None;
                };
                let method = self.method(method, v.mark, path);
                let route = self.route_path(route, v.mark, path);
                let (route, method) = (route?, method?);
                let event = HttpEvent {
                    path: route.path.clone(),
                    method,
                    private: false,
                    report: false,
                    cors: None,
                    integration: Integration::LambdaProxy,
                    authorizer: None,
                };
                (route.shape, event)
            }
            Value::Map(entries) if v.tag.is_none() => {
                self.http_long(entries, entry.key_mark, path)?
            }
            Value::Invalid => return None,
            _ => {
                let found = v.describe();
                self.error(
                    v.mark,
                    path,
                    format!(
                        "expected `METHOD path` (e.g. `GET candidates`) or a map with path and \
                        method, found {found}"
                    ),
                );
                return None;
            }
        };
        let (shape, event) = event;
        let method = event.method;
        if let Some(prev) = self.routes.get(&(shape.clone(), method)) {
            let message = format!(
                "the route {method} {} is already declared at {} (line {}); declare each method \
                 and path once",
                event.path, prev.field, prev.line
            );
            self.error(entry.key_mark, path, message);
            return None;
        }
        self.routes
            .insert((shape, method), Route { field: path.to_string(), line: entry.key_mark.line });
        Some(event)
    }

    /// The long form `http: {path, method, ...}`: the route's shape (see [`path::RoutePath`])
    /// and the event.
    fn http_long(
        &mut self,
        entries: &[Entry],
        key_mark: Mark,
        path: &FieldPath,
    ) -> Option<(String, HttpEvent)> {
        let mut route = None;
        let mut method = None;
        let (mut private, mut report) = (false, false);
        let mut cors = None;
        let mut integration: Option<(String, Mark, FieldPath)> = None;
        let mut uri: Option<(String, Mark, FieldPath)> = None;
        let mut skip_verification: Option<(bool, Mark, FieldPath)> = None;
        let mut authorizer = None;
        let mut ok = true;
        let (mut has_path, mut has_method) = (false, false);
        for e in entries {
            let p = path.key(&e.key);
            match e.key.as_str() {
                "path" => {
                    has_path = true;
                    let v = self.expand(&e.value, &p);
                    // A number such as `path: 2024` is a path too.
                    let text = self.text(&v, &p, "a path such as candidates/{id}");
                    route = text.and_then(|t| self.route_path(&t, v.mark, &p));
                    ok &= route.is_some();
                }
                "method" => {
                    has_method = true;
                    let v = self.expand(&e.value, &p);
                    method = self
                        .string(&v, &p, &format!("one of {METHODS}"))
                        .and_then(|m| self.method(&m, v.mark, &p));
                    ok &= method.is_some();
                }
                "private" => {
                    (private, report) = match self.private(&e.value, &p) {
                        Some(Private::Yes) => (true, false),
                        Some(Private::Report) => (false, true),
                        Some(Private::No) | None => (false, false),
                    };
                }
                "cors" => cors = self.cors(&e.value, &p),
                "integration" => {
                    integration = self
                        .string(&e.value, &p, "lambda-proxy, http-proxy or mock")
                        .map(|s| (s, e.value.mark, p));
                }
                "request" => {
                    for r in self.map(&e.value, &p, "a map of request settings").unwrap_or_default()
                    {
                        let rp = p.key(&r.key);
                        if r.key == "uri" {
                            uri =
                                self.string(&r.value, &rp, "a URL").map(|s| (s, r.value.mark, rp));
                        } else if r.key == "tlsConfig" {
                            let settings = self.map(&r.value, &rp, "a map of TLS settings");
                            for t in settings.unwrap_or_default() {
                                let tp = rp.key(&t.key);
                                if t.key == "insecureSkipVerification" {
                                    skip_verification =
                                        self.boolean(&t.value, &tp).map(|b| (b, t.value.mark, tp));
                                } else {
                                    self.other_key(&t.key, t.key_mark, &tp, &TLS_CONFIG);
                                }
                            }
                        } else {
                            self.other_key(&r.key, r.key_mark, &rp, &REQUEST);
                        }
                    }
                }
                "authorizer" => {
                    authorizer = self.authorizer(&e.value, e.key_mark, &p);
                    ok &= authorizer.is_some();
                }
                "async" => {
                    if self.boolean(&e.value, &p) == Some(true) {
                        self.error(
                            e.value.mark,
                            &p,
                            "async: true (an event invocation through the non-proxy lambda \
                            integration) \
                             is not supported by keygate yet; remove it",
                        );
                        ok = false;
                    }
                }
                k => self.other_key(k, e.key_mark, &p, &HTTP),
            }
        }
        if !has_path {
            self.error(
                key_mark,
                &path.key("path"),
                "missing; expected the route path, e.g. `path: candidates/{id}`",
            );
        }
        if !has_method {
            self.error(
                key_mark,
                &path.key("method"),
                format!("missing; expected one of {METHODS}"),
            );
        }
        let integration = match integration {
            None => {
                if let Some((_, _, p)) = uri.take() {
                    self.ignore(&p);
                }
                Some(Integration::LambdaProxy)
            }
            Some((kind, mark, p)) => self.integration(&kind, mark, &p, uri.take(), key_mark, path),
        };
        // Only an https:// http-proxy upstream has a certificate to verify.
        let integration = match (integration, skip_verification) {
            (Some(Integration::HttpProxy { uri, .. }), Some((skip, _, _)))
                if uri.starts_with("https://") =>
            {
                Some(Integration::HttpProxy { uri, insecure_skip_verification: skip })
            }
            (integration, Some((_, mark, p))) => {
                self.error(
                    mark,
                    &p,
                    "tlsConfig applies only to an http-proxy integration whose request.uri starts \
                     with https://; remove it",
                );
                ok = false;
                integration
            }
            (integration, None) => integration,
        };
        if !ok {
            return None;
        }
        let route = route?;
        let event = HttpEvent {
            path: route.path,
            method: method?,
            private,
            report,
            cors,
            integration: integration?,
            authorizer,
        };
        Some((route.shape, event))
    }

    fn integration(
        &mut self,
        kind: &str,
        mark: Mark,
        path: &FieldPath,
        uri: Option<(String, Mark, FieldPath)>,
        key_mark: Mark,
        event: &FieldPath,
    ) -> Option<Integration> {
        match kind.to_ascii_lowercase().as_str() {
            "lambda-proxy" | "aws-proxy" | "aws_proxy" => {
                if let Some((_, _, p)) = uri {
                    self.ignore(&p);
                }
                Some(Integration::LambdaProxy)
            }
            "mock" => {
                if let Some((_, _, p)) = uri {
                    self.ignore(&p);
                }
                Some(Integration::Mock)
            }
            "http-proxy" | "http_proxy" => {
                let Some((uri, umark, upath)) = uri else {
                    self.error(
                        key_mark,
                        &event.key("request").key("uri"),
                        "missing; an http-proxy integration needs `request: {uri: https://...}`",
                    );
                    return None;
                };
                let host = uri.strip_prefix("http://").or_else(|| uri.strip_prefix("https://"));
                if host.is_none_or(str::is_empty) {
                    self.error(
                        umark,
                        &upath,
                        format!(
                            "expected a URL starting with http:// or https://, found {}",
                            quote(&uri)
                        ),
                    );
                    return None;
                }
                Some(Integration::HttpProxy { uri, insecure_skip_verification: false })
            }
            "lambda" | "aws" => {
                self.error(
                    mark,
                    path,
                    format!(
                        "the `{kind}` integration (non-proxy, with request and response \
                        templates) is not \
                         supported by keygate yet; use lambda-proxy (the default)"
                    ),
                );
                None
            }
            "http" => {
                self.error(
                    mark,
                    path,
                    "the `http` integration (non-proxy, with request and response templates) is \
                    not \
                     supported by keygate yet; use http-proxy",
                );
                None
            }
            _ => {
                self.error(
                    mark,
                    path,
                    format!(
                        "expected one of lambda-proxy, http-proxy, mock, found {}",
                        quote(kind)
                    ),
                );
                None
            }
        }
    }

    /// `cors: true | false | {...}`; a map starts from Serverless's `cors: true` defaults.
    fn cors(&mut self, node: &Node, path: &FieldPath) -> Option<Cors> {
        let v = self.expand(node, path);
        let entries = match &v.value {
            Value::Bool(true) => return Some(Cors::default()),
            Value::Bool(false) | Value::Null | Value::Invalid => return None,
            Value::Str(_) => return self.boolean(&v, path).filter(|b| *b).map(|_| Cors::default()),
            Value::Map(entries) => entries.clone(),
            _ => {
                self.mismatch_cors(&v, path);
                return None;
            }
        };
        let mut cors = Cors::default();
        let mut origin_key: Option<&str> = None;
        for e in &entries {
            let p = path.key(&e.key);
            match e.key.as_str() {
                "origin" | "origins" => {
                    if let Some(first) = origin_key {
                        self.error(
                            e.key_mark,
                            &p,
                            format!(
                                "use either origin or origins, not both (`{first}` is \
                             already given)"
                            ),
                        );
                        continue;
                    }
                    origin_key = Some(if e.key == "origin" { "origin" } else { "origins" });
                    let comma = e.key == "origin";
                    if let Some(o) = self.strings(&e.value, &p, "a list of origins", comma) {
                        cors.origins = o;
                    }
                }
                "headers" => {
                    if let Some(h) = self.strings(&e.value, &p, "a list of headers or '*'", true) {
                        cors.headers = h;
                    }
                }
                "methods" => {
                    if let Some(ms) = self.strings(&e.value, &p, "a list of methods", true) {
                        let mut out = Vec::new();
                        for m in ms {
                            match HttpMethod::parse(&m) {
                                Some(method) => out.push(method.as_str().to_owned()),
                                None => self.error(
                                    e.value.mark,
                                    &p,
                                    format!("expected methods from {METHODS}, found {}", quote(&m)),
                                ),
                            }
                        }
                        cors.methods = out;
                    }
                }
                "allowCredentials" => {
                    if let Some(b) = self.boolean(&e.value, &p) {
                        cors.allow_credentials = b;
                    }
                }
                "maxAge" => {
                    cors.max_age = self
                        .integer(
                            &e.value,
                            &p,
                            "a number of seconds of at least \
                         1",
                            1..=i64::from(u32::MAX),
                        )
                        .map(|n| n as u32);
                }
                "cacheControl" => {
                    cors.cache_control = self.text(
                        &e.value,
                        &p,
                        "a Cache-Control \
                value",
                    )
                }
                other => {
                    let known = [
                        "origin",
                        "origins",
                        "headers",
                        "methods",
                        "allowCredentials",
                        "maxAge",
                        "cacheControl",
                    ];
                    let guess = suggest(other, known)
                        .map_or_else(String::new, |g| format!("did you mean `{g}`? "));
                    self.error(
                        e.key_mark,
                        &p,
                        format!(
                            "unknown CORS setting `{other}`; {guess}expected origin, origins, \
                             headers, methods, allowCredentials, maxAge or cacheControl"
                        ),
                    );
                }
            }
        }
        Some(cors)
    }

    fn mismatch_cors(&mut self, v: &Node, path: &FieldPath) {
        let found = v.describe();
        self.error(
            v.mark,
            path,
            format!("expected true, false or a map of CORS settings, found {found}"),
        );
    }
}
