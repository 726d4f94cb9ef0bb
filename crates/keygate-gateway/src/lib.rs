//! keygate data plane: serves deployed stages behind API keys.
//!
//! Request path, in order (each step may answer on its own), after the server has read the
//! whole body (at most 10 MB: 413):
//! 1. request id (`x-amzn-RequestId` on every response) and one access-log line per request;
//! 2. stage and route lookup in the in-memory [`table::Table`] (no match: 403 Missing
//!    Authentication Token; `OPTIONS` on a CORS resource: preflight answered here, no key);
//! 3. key check on private routes: `x-api-key` digest looked up in the table; missing, unknown,
//!    disabled or not on this API stage: 403 Forbidden;
//! 4. integration: lambda-proxy through [`keygate_functions::FunctionHost`], http-proxy through
//!    a pooled client, or mock.
//!
//! Layout: [`router`] matches paths, [`table`] is the snapshot the gateway serves from, `event`
//! builds lambda-proxy events and maps responses, `respond` makes AWS gateway responses,
//! `upstream` is the http-proxy client (on `keygate_http`'s wire pieces), this file holds
//! [`Gateway`] and [`serve`] (on `keygate_http`'s server).
//!
//! Architecture invariants: no store access per request (the table is refreshed in the
//! background when the store's version moves); key values are never logged.

pub mod meter;
pub mod router;
pub mod table;

#[doc(hidden)]
pub mod event;
mod respond;
mod upstream;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use keygate_functions::{FunctionHost, FunctionRef, InvokeError};
use keygate_http::{Request, Response};
use keygate_limits::clock::Clock;
use keygate_store::ConfigStore;
use keygate_types::response::GatewayError;
use keygate_types::{HttpMethod, Integration};
use tokio::net::TcpListener;

use crate::meter::{Admission, Meter};
use crate::respond::CorsOrigin;
use crate::router::Lookup;
use crate::table::Table;

/// Largest request body accepted (API Gateway's payload limit).
pub const MAX_REQUEST_BODY: usize = 10 * 1024 * 1024;
/// How often the gateway asks the store whether anything changed.
pub const REFRESH_INTERVAL: Duration = Duration::from_millis(250);
/// How often admitted usage is written to the store (so it is at most this far behind).
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(500);
/// How long a client may take to send a request head (idle keep-alive included) or go without
/// sending body bytes.
pub const READ_TIMEOUT: Duration = Duration::from_secs(30);
/// How long open connections may take to finish after shutdown starts.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// The data plane's shared state. Cheap to share behind an `Arc`.
pub struct Gateway {
    table: ArcSwap<Table>,
    store: Arc<dyn ConfigStore>,
    functions: FunctionHost,
    upstream: upstream::Upstream,
    meter: Arc<Meter>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("version", &self.table.load().version)
            .finish_non_exhaustive()
    }
}

impl Gateway {
    /// Loads the first table from the store.
    ///
    /// # Errors
    /// The store's error when the snapshot cannot be read.
    pub async fn new(
        store: Arc<dyn ConfigStore>,
        functions: FunctionHost,
        clock: Arc<dyn Clock>,
    ) -> Result<Arc<Self>, keygate_store::Error> {
        let meter = Arc::new(Meter::new(clock));
        let snapshot = load_snapshot(&*store).await?;
        let quota_plans: Vec<&str> =
            snapshot.plans.iter().filter(|p| p.quota.is_some()).map(|p| p.id.as_str()).collect();
        meter.load_recent(&*store, &quota_plans).await?;
        let table = build_table(snapshot, &meter).await;
        Ok(Arc::new(Self {
            table: ArcSwap::from_pointee(table),
            store,
            functions,
            upstream: upstream::Upstream::new(),
            meter,
        }))
    }

    /// The table currently served.
    pub fn table(&self) -> Arc<Table> {
        self.table.load_full()
    }

    /// Reloads the table if the store changed. Returns whether it did.
    ///
    /// # Errors
    /// The store's error; the current table stays in service.
    pub async fn refresh(&self) -> Result<bool, keygate_store::Error> {
        let current = self.table.load().version;
        if self.store.version().await? == current {
            return Ok(false);
        }
        let table = build_table(load_snapshot(&*self.store).await?, &self.meter).await;
        tracing::debug!(version = table.version, "gateway table reloaded");
        self.table.store(Arc::new(table));
        Ok(true)
    }

    /// Writes pending usage to the store.
    ///
    /// # Errors
    /// The store's error; the usage stays pending.
    pub async fn flush_usage(&self) -> Result<usize, keygate_store::Error> {
        self.meter.flush(&*self.store).await
    }

    /// Writes pending usage every [`FLUSH_INTERVAL`] until the gateway is dropped.
    pub fn spawn_flush(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let weak: Weak<Self> = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(FLUSH_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(gw) = weak.upgrade() else { return };
                if let Err(e) = gw.flush_usage().await {
                    tracing::warn!(error = %e, "cannot write usage to the store; keeping it pending");
                }
            }
        })
    }

    /// Refreshes every [`REFRESH_INTERVAL`] until the gateway is dropped, so changes made by any
    /// keygate process (CLI, another node) reach this one within a second.
    pub fn spawn_refresh(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let weak: Weak<Self> = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(REFRESH_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut failing = false;
            loop {
                tick.tick().await;
                let Some(gw) = weak.upgrade() else { return };
                match gw.refresh().await {
                    Ok(_) if failing => {
                        tracing::info!("store reachable again");
                        failing = false;
                    }
                    Ok(_) => {}
                    Err(e) if !failing => {
                        tracing::warn!(error = %e, "cannot refresh from the store; serving the last table");
                        failing = true;
                    }
                    Err(_) => {}
                }
            }
        })
    }

    /// Handles one request.
    pub async fn handle(&self, req: Request, peer: SocketAddr) -> Response {
        let started = Instant::now();
        // The method and path are copied for the access log only when that log is on.
        let mut id_buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
        let request_id = new_request_id(&mut id_buf);
        let access = tracing::enabled!(target: "keygate::access", tracing::Level::INFO)
            .then(|| (req.method.clone(), req.path().to_owned()));
        let table = self.table.load_full();
        let mut key_id = None;
        let mut res = self.dispatch(&table, &req, peer, request_id, &mut key_id).await;
        set_request_id(&mut res, request_id);
        if let Some((method, path)) = access {
            tracing::info!(
                target: "keygate::access",
                request_id,
                method = %method,
                path,
                status = res.status.as_u16(),
                key_id = key_id.unwrap_or("-"),
                micros = started.elapsed().as_micros() as u64,
            );
        }
        res
    }

    async fn dispatch<'t>(
        &self,
        table: &'t Table,
        req: &Request,
        peer: SocketAddr,
        request_id: &str,
        key_id: &mut Option<&'t str>,
    ) -> Response {
        let full_path = req.path();
        // `/{stage}/{path}`: the stage is the first segment, the rest is the resource path.
        let trimmed = full_path.strip_prefix('/').unwrap_or(full_path);
        let (stage, path) = match trimmed.find('/') {
            Some(i) => (&trimmed[..i], &trimmed[i..]),
            None => (trimmed, "/"),
        };
        let Some(stage_table) = table.stages.get(stage) else {
            return respond::error(GatewayError::MissingAuthenticationToken, None);
        };
        // Read only for CORS routes; shares the request's bytes.
        let origin = || req.headers.get("origin").map(|o| req.headers.share(o));
        let found = match stage_table.router.lookup(path, req.method.as_str()) {
            Lookup::Found(m) => m,
            Lookup::NoMethod { routes } => {
                let cors_route =
                    routes.iter().find_map(|&r| stage_table.routes[r].event.cors.as_ref());
                if let Some(cors) = cors_route {
                    let origin = origin();
                    if req.method == http::Method::OPTIONS {
                        let methods: Vec<HttpMethod> =
                            routes.iter().map(|&r| stage_table.routes[r].event.method).collect();
                        return respond::preflight(cors, &methods, origin.as_ref());
                    }
                    return respond::error(
                        GatewayError::MissingAuthenticationToken,
                        Some((cors, origin.as_ref())),
                    );
                }
                return respond::error(GatewayError::MissingAuthenticationToken, None);
            }
            Lookup::NotFound => {
                return respond::error(GatewayError::MissingAuthenticationToken, None);
            }
        };
        let route = &stage_table.routes[found.route];
        let origin = route.event.cors.as_ref().and_then(|_| origin());
        let cors: CorsOrigin<'_> = route.event.cors.as_ref().map(|c| (c, origin.as_ref()));

        // The key check: digest the presented value and look it up; no store access.
        let mut rate_headers: Option<meter::RateLimitValues> = None;
        if route.event.private {
            let presented = req.headers.get("x-api-key");
            let clock = self.meter.clock();
            let now_ms = clock.now_unix_ms();
            let Some(auth) =
                presented.and_then(|v| table.authorize(v, route.api_stage, now_ms / 1000))
            else {
                return respond::error(GatewayError::Forbidden, cors);
            };
            let grant = auth.grant;
            *key_id = Some(auth.key_id());

            // Usage plan: method throttle, plan throttle, quota (no store access either).
            let method_key = if grant.limits.methods.is_empty() {
                String::new()
            } else {
                let exact = format!("{}/{}", route.event.path, req.method);
                if grant.limits.methods.contains_key(&exact) {
                    exact
                } else {
                    format!("{}/ANY", route.event.path)
                }
            };
            match auth.counters().admit(
                &grant.limits,
                &method_key,
                clock.now_mono(),
                clock.now_unix_ms(),
            ) {
                Admission::Allowed { headers } => rate_headers = headers,
                Admission::Throttled { retry_after } => {
                    return respond::limited(GatewayError::TooManyRequests, retry_after, cors);
                }
                Admission::QuotaExceeded { retry_after } => {
                    return respond::limited(GatewayError::LimitExceeded, Some(retry_after), cors);
                }
            }
        }

        let mut res =
            self.integrate(route, &found.params, req, path, peer, request_id, *key_id, cors).await;
        if let Some(values) = rate_headers {
            let h = &mut res.headers;
            // The gateway's own figures replace any the integration sent.
            h.retain(|n, _| {
                !n.eq_ignore_ascii_case(b"ratelimit-policy")
                    && !n.eq_ignore_ascii_case(b"ratelimit")
            });
            // One buffer becomes both header values without another copy; digits and `;=,`.
            let (policy, ratelimit) = values.into_bytes();
            h.push_value("ratelimit-policy", policy);
            h.push_value("ratelimit", ratelimit);
        }
        res
    }

    /// Runs the route's integration.
    #[allow(clippy::too_many_arguments, reason = "one call site; a struct would only rename them")]
    async fn integrate(
        &self,
        route: &table::Route,
        params: &[(String, String)],
        req: &Request,
        path: &str,
        peer: SocketAddr,
        request_id: &str,
        key_id: Option<&str>,
        cors: CorsOrigin<'_>,
    ) -> Response {
        let def = &route.definition;
        match &route.event.integration {
            Integration::Mock => {
                let mut res = Response::new(http::StatusCode::OK, Bytes::new());
                res.headers.push_static("content-type", "application/json");
                res
            }
            Integration::HttpProxy { uri } => {
                match self.upstream.forward(uri, route.proxy_target.as_ref(), params, req).await {
                    Ok(res) => res,
                    Err(e) => respond::error(e, cors),
                }
            }
            Integration::LambdaProxy => {
                let spec = &def.functions[route.function];
                let event = event::build(&event::EventInput {
                    method: req.method.as_str(),
                    path,
                    stage: &route.stage,
                    resource: &route.event.path,
                    headers: &req.headers,
                    query: req.query(),
                    params,
                    body: &req.body,
                    peer,
                    request_id,
                    api_id: &route.api_id,
                    deployment_id: &route.deployment_id,
                    // The value as presented (the route is private when a key id is known).
                    api_key: key_id.and_then(|id| {
                        let v = std::str::from_utf8(req.headers.get("x-api-key")?).ok()?;
                        Some((v, id))
                    }),
                    time: time::OffsetDateTime::now_utc(),
                });
                let f = FunctionRef { spec, base_dir: &def.base_dir, region: &def.region };
                let raw = match self.functions.invoke(&f, event).await {
                    Ok(raw) => raw,
                    Err(InvokeError::Timeout) => {
                        tracing::warn!(function = %spec.name, request_id, "function timed out");
                        return respond::error(GatewayError::EndpointRequestTimedOut, cors);
                    }
                    Err(e) => {
                        tracing::warn!(function = %spec.name, request_id, error = %e, "function failed");
                        return respond::error(GatewayError::InternalServerError, cors);
                    }
                };
                match event::parse_response(&raw) {
                    Ok(p) => {
                        let mut headers = p.headers;
                        // Framing is the server's; the request id the gateway's.
                        headers.retain(|n, _| {
                            !n.eq_ignore_ascii_case(b"content-length")
                                && !n.eq_ignore_ascii_case(b"transfer-encoding")
                                && !n.eq_ignore_ascii_case(respond::X_AMZN_REQUEST_ID.as_bytes())
                        });
                        Response { status: p.status, headers, body: p.body }
                    }
                    Err(why) => {
                        tracing::warn!(
                            function = %spec.name,
                            request_id,
                            "Execution failed due to configuration error: Malformed Lambda proxy response: {why}"
                        );
                        respond::error(GatewayError::InternalServerError, cors)
                    }
                }
            }
        }
    }

    /// Writes the last pending usage and stops every function process. Call after the server
    /// has drained, so every admitted request is counted.
    pub async fn shutdown(&self) {
        if let Err(e) = self.flush_usage().await {
            tracing::error!(error = %e, "cannot write the last usage to the store; it is lost");
        }
        self.functions.shutdown().await;
    }
}

/// A new request id: a v4 UUID (AWS's format), formatted on the caller's stack.
fn new_request_id(buf: &mut [u8; uuid::fmt::Hyphenated::LENGTH]) -> &str {
    uuid::Uuid::new_v4().hyphenated().encode_lower(buf)
}

/// Sets `x-amzn-RequestId` on a response (integrations' own are left out when their answer is
/// read).
fn set_request_id(res: &mut Response, request_id: &str) {
    // A UUID: a valid header value.
    let id = Bytes::copy_from_slice(request_id.as_bytes());
    res.headers.push_value(respond::X_AMZN_REQUEST_ID, id);
}

/// Builds a table on the blocking pool: with a million keys it takes CPU time that would
/// otherwise stall every connection served by this thread.
async fn build_table(snapshot: keygate_types::model::GatewaySnapshot, meter: &Arc<Meter>) -> Table {
    let meter = Arc::clone(meter);
    let started = Instant::now();
    let keys = snapshot.keys.len();
    match tokio::task::spawn_blocking(move || Table::build(snapshot, &meter)).await {
        Ok(table) => {
            tracing::debug!(keys, millis = started.elapsed().as_millis() as u64, "table built");
            table
        }
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

/// Reads the store's snapshot, logging how long it took (at debug level).
async fn load_snapshot(
    store: &dyn ConfigStore,
) -> Result<keygate_types::model::GatewaySnapshot, keygate_store::Error> {
    let started = Instant::now();
    let snapshot = store.snapshot().await?;
    tracing::debug!(
        keys = snapshot.keys.len(),
        millis = started.elapsed().as_millis() as u64,
        "snapshot read"
    );
    Ok(snapshot)
}

/// Serves `listener` until `shutdown` completes, then lets open connections finish for up to
/// [`DRAIN_TIMEOUT`].
pub async fn serve(
    listener: TcpListener,
    gateway: Arc<Gateway>,
    shutdown: impl Future<Output = ()>,
) {
    let options = keygate_http::Options {
        max_body: MAX_REQUEST_BODY,
        read_timeout: Some(READ_TIMEOUT),
        drain: DRAIN_TIMEOUT,
    };
    keygate_http::serve(listener, gateway, options, shutdown).await;
}

impl keygate_http::Service for Gateway {
    fn call(&self, req: Request, peer: SocketAddr) -> impl Future<Output = Response> + Send {
        self.handle(req, peer)
    }

    fn too_large(&self, _head: &Request) -> Response {
        let mut res = respond::error(GatewayError::RequestTooLarge, None);
        let mut id_buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
        let request_id = new_request_id(&mut id_buf);
        set_request_id(&mut res, request_id);
        tracing::info!(
            target: "keygate::access",
            request_id,
            status = res.status.as_u16(),
            "request refused before routing"
        );
        res
    }
}
