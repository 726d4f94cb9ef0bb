//! keygate data plane: serves deployed stages behind API keys.
//!
//! Request path, in order (each step may answer on its own). Steps 2 to 4 run on the head alone
//! ([`Gateway::admit`]), before the server reads any body byte, so a request without a route or
//! a key never has its body buffered; only an admitted request's body is read (at most 10 MB:
//! 413; a declared length over it is refused before step 2), then step 5 runs
//! ([`Gateway::call`]):
//! 1. request id (`x-amzn-RequestId` on every response) and one access-log line per request;
//! 2. stage and route lookup in the in-memory [`table::Table`] (no match: 403 Missing
//!    Authentication Token; `OPTIONS` on a CORS resource: preflight answered here, no key);
//! 3. key check on private routes: `x-api-key` digest looked up in the table; missing, unknown,
//!    disabled or not on this API stage: 403 Forbidden;
//! 4. usage plan: throttles and quota of the key's plan (429); an admitted request is counted
//!    even if its body then never arrives;
//! 5. integration: lambda-proxy through [`keygate_functions::FunctionHost`], http-proxy through
//!    a pooled client, or mock.
//!
//! Layout: [`router`] matches paths, [`table`] is the snapshot the gateway serves from,
//! `integrate` runs a route's integration (one module per integration, each called with one
//! `Call`), `event` builds lambda-proxy events and maps responses, `respond` makes AWS gateway
//! responses, [`metrics`] counts requests for Prometheus (handles made at table build), `upstream` is the http-proxy client (on `keygate_http`'s wire pieces), this file
//! holds [`Gateway`] and [`serve`] (on `keygate_http`'s server).
//!
//! Architecture invariants: no store access per request (the table is refreshed in the
//! background when the store's version moves); key values are never logged.

pub mod access;
pub mod authorizer;
pub mod client;
pub mod limiter;
pub mod meter;
pub mod metrics;
pub mod router;
pub mod table;

#[doc(hidden)]
pub mod event;
mod integrate;
mod introspect;
pub mod report;
mod respond;
mod rotation;
pub mod tally;
mod upstream;
mod upstream_tls;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use keygate_functions::FunctionHost;
use keygate_http::{Admit, Request, Response};
use keygate_limits::clock::Clock;
use keygate_store::ConfigStore;
use keygate_types::health::Health;
use keygate_types::response::GatewayError;
use keygate_types::{ApiKeySource, HttpMethod};
use tokio::net::TcpListener;

use crate::access::{AccessLog, Finished};
use crate::limiter::{Ask, Limiter};
use crate::meter::{Admission, Meter};
use crate::metrics::{KeyDecision, Metrics};
use crate::router::Lookup;
use crate::table::{Route, Table};

/// Largest request body accepted (API Gateway's payload limit).
pub const MAX_REQUEST_BODY: usize = 10 * 1024 * 1024;
/// How often the gateway asks the store whether anything changed.
pub const REFRESH_INTERVAL: Duration = Duration::from_millis(250);
/// How often admitted usage is written to the store (so it is at most this far behind).
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(500);
/// How often the usage the flushes appended is folded into the store's daily counters (reads
/// see it either way; folding writes each key's counter once for many flushes).
pub const FOLD_INTERVAL: Duration = Duration::from_secs(15);

/// How long a client may take to send a whole request head (idle keep-alive included).
pub const READ_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a client may take to send a whole request body, from the end of its head (not
/// pushed back by each byte): a 10 MB body at ~1.4 Mbit/s.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a client may take to read a whole answer; one that does not is dropped.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Most client connections open at once; past it the gateway stops accepting until one closes
/// (each takes a file descriptor: keep `RLIMIT_NOFILE` above this plus the function processes'
/// and upstream connections).
pub const MAX_CONNECTIONS: usize = 10_000;
/// Most connections open at once from one client address (issue 25, finding 4): one client
/// holding idle connections cannot take every slot. Clients behind one load balancer share it.
pub const MAX_CONNECTIONS_PER_CLIENT: usize = 512;
/// Most request-body bytes held at once (bodies read and not yet answered); a body that does
/// not fit gets a 503 with `Retry-After` without being read. 25 bodies of the largest size.
pub const MAX_BUFFERED: usize = 25 * MAX_REQUEST_BODY;
/// How long open connections may take to finish after shutdown starts.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// The data plane's shared state. Cheap to share behind an `Arc`.
pub struct Gateway {
    table: ArcSwap<Table>,
    store: Arc<dyn ConfigStore>,
    functions: FunctionHost,
    upstream: upstream::Upstream,
    meter: Arc<Meter>,
    /// Decides usage-plan limits (in this process unless `Options::limiter` says otherwise).
    limiter: Arc<dyn Limiter>,
    /// Written at load and on every refresh; read by the readiness endpoints.
    health: Arc<Health>,
    clock: Arc<dyn Clock>,
    /// The traffic listener's opt-in readiness path (`--ready-path`), answered before routing.
    ready_path: Option<String>,
    metrics: Arc<Metrics>,
    /// Where each request's access-log line goes (`None`: off).
    access: Option<AccessLog>,
    /// Whose `X-Forwarded-For` names the client (`--trusted-proxy`).
    trusted_proxies: client::TrustedProxies,
    /// The authorizers' answer caches and JWT verifiers, kept across table builds.
    caches: Arc<authorizer::Caches>,
    /// Report-only routes' would-be refusals not written yet.
    reports: report::Reports,
    /// Requests with rotated-out values not written yet.
    old_value_uses: rotation::OldValueUses,
}

/// What a serving process shares with its gateway beyond the store: readiness, the opt-in
/// readiness path, the metrics (registered in the registry the admin API serves) and the access
/// log.
#[derive(Debug, Clone)]
pub struct Options {
    pub health: Arc<Health>,
    pub ready_path: Option<String>,
    pub metrics: Arc<Metrics>,
    pub access_log: Option<AccessLog>,
    /// Where usage-plan limits are decided ([`limiter::Local`] unless set).
    pub limiter: Arc<dyn Limiter>,
    /// The load balancers whose `X-Forwarded-For` names the client (none unless set).
    pub trusted_proxies: client::TrustedProxies,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            health: Arc::new(Health::new()),
            ready_path: None,
            limiter: Arc::new(limiter::Local),
            metrics: Metrics::unregistered(),
            access_log: None,
            trusted_proxies: client::TrustedProxies::default(),
        }
    }
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
        Self::with_options(store, functions, clock, Options::default()).await
    }

    /// [`Gateway::new`], reporting its readiness to `opts.health` (shared with the admin API's
    /// `/readyz`), answering GET `opts.ready_path` on the traffic listener with it, and counting
    /// requests in `opts.metrics` and logging each in `opts.access_log`.
    ///
    /// # Errors
    /// The store's error when the snapshot cannot be read.
    pub async fn with_options(
        store: Arc<dyn ConfigStore>,
        functions: FunctionHost,
        clock: Arc<dyn Clock>,
        opts: Options,
    ) -> Result<Arc<Self>, keygate_store::Error> {
        let Options { health, ready_path, metrics, access_log, limiter, trusted_proxies } = opts;
        let meter = Arc::new(Meter::new(Arc::clone(&clock)));
        let snapshot = load_snapshot(&*store).await?;
        let quota_plans: Vec<&str> =
            snapshot.plans.iter().filter(|p| p.quota.is_some()).map(|p| p.id.as_str()).collect();
        meter.load_recent(&*store, &quota_plans).await?;
        let caches = Arc::new(authorizer::Caches::default());
        let table = match build_table(snapshot, &meter, &metrics, &caches).await {
            Ok(table) => table,
            // Nothing to serve yet: as if the build had run on this task.
            Err(RefreshError::Build(panic)) => std::panic::resume_unwind(panic),
            Err(RefreshError::Store(e)) => return Err(e),
        };
        health.table_loaded(table.version);
        health.store_answered(clock.now_unix_ms());
        metrics.refreshed(clock.now_unix_ms(), table.version);
        Ok(Arc::new(Self {
            table: ArcSwap::from_pointee(table),
            store,
            functions,
            upstream: upstream::Upstream::new(),
            meter,
            limiter,
            health,
            clock,
            ready_path,
            metrics,
            access: access_log,
            trusted_proxies,
            caches,
            reports: report::Reports::default(),
            old_value_uses: rotation::OldValueUses::default(),
        }))
    }

    /// Where usage-plan limits are decided.
    pub fn limiter(&self) -> &dyn Limiter {
        &*self.limiter
    }

    /// The table currently served.
    pub fn table(&self) -> Arc<Table> {
        self.table.load_full()
    }

    /// Reloads the table if the store changed. Returns whether it did.
    ///
    /// # Errors
    /// The store's error, or a panic while building the table; the current table stays in
    /// service, and the next refresh tries again.
    pub async fn refresh(&self) -> Result<bool, RefreshError> {
        let refreshed = self.reload().await;
        match &refreshed {
            Ok(_) => {
                let now = self.clock.now_unix_ms();
                self.health.store_answered(now);
                self.metrics.refreshed(now, self.table.load().version);
            }
            Err(RefreshError::Store(_)) => {
                self.health.store_failed();
                self.metrics.refresh_failed();
            }
            Err(RefreshError::Build(_)) => {}
        }
        refreshed
    }

    async fn reload(&self) -> Result<bool, RefreshError> {
        let current = self.table.load().version;
        if self.store.version().await? == current {
            return Ok(false);
        }
        let table = build_table(
            load_snapshot(&*self.store).await?,
            &self.meter,
            &self.metrics,
            &self.caches,
        )
        .await?;
        tracing::debug!(version = table.version, "gateway table reloaded");
        self.health.table_loaded(table.version);
        self.table.store(Arc::new(table));
        Ok(true)
    }

    /// The process's readiness now (also what `/readyz` reports).
    pub fn readiness(&self) -> keygate_types::health::Readiness {
        self.health.readiness(self.clock.now_unix_ms())
    }

    /// Writes pending usage to the store.
    ///
    /// # Errors
    /// The store's error; the usage stays pending.
    pub async fn flush_usage(&self) -> Result<usize, keygate_store::Error> {
        let written = self.meter.flush(&*self.store).await?;
        self.flush_reports().await?;
        Ok(written)
    }

    /// Writes report-only routes' pending would-be refusals to the store.
    ///
    /// # Errors
    /// The store's error; the tallies stay pending (as far as [`tally::MAX_PENDING`] allows).
    async fn flush_reports(&self) -> Result<(), keygate_store::Error> {
        let rows = self.reports.take();
        if !rows.is_empty()
            && let Err(e) = self.store.add_would_refuse(&rows).await
        {
            self.reports.restore(rows);
            return Err(e);
        }
        let uses = self.old_value_uses.take();
        if !uses.is_empty()
            && let Err(e) = self.store.add_old_value_uses(&uses).await
        {
            self.old_value_uses.restore(uses);
            return Err(e);
        }
        Ok(())
    }

    /// Whether the table being served accepts any value a rotation replaced (whose uses this
    /// gateway records, and which `--retire-when-idle` may retire).
    pub fn has_old_values(&self) -> bool {
        self.table.load().has_old_values()
    }

    /// Folds the usage appended so far into the store's daily counters.
    ///
    /// # Errors
    /// The store's error; nothing is lost (the log stays for the next fold).
    pub async fn fold_usage(&self) -> Result<u64, keygate_store::Error> {
        let started = std::time::Instant::now();
        let rows = self.store.fold_usage().await?;
        tracing::debug!(rows, took_ms = started.elapsed().as_millis() as u64, "usage folded");
        Ok(rows)
    }

    /// Writes pending usage every [`FLUSH_INTERVAL`] and, beside it, folds it every
    /// [`FOLD_INTERVAL`], until the gateway is dropped (or the task aborted). A fold at a million
    /// keys may take seconds; flushes go on meanwhile.
    pub fn spawn_flush(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let weak: Weak<Self> = Arc::downgrade(self);
        let flush = every(FLUSH_INTERVAL, weak.clone(), |gw| async move {
            if let Err(e) = gw.flush_usage().await {
                tracing::warn!(error = %e, "cannot write usage to the store; keeping it pending");
            }
        });
        let fold = every(FOLD_INTERVAL, weak, |gw| async move {
            if let Err(e) = gw.fold_usage().await {
                tracing::warn!(error = %e, "cannot fold usage in the store; will try again");
            }
        });
        tokio::spawn(async move {
            tokio::join!(flush, fold);
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
            // A backend that notifies changes (PostgreSQL) wakes the loop at once; the tick
            // stays, for a missed notification and for backends without one.
            let mut changes = weak.upgrade().and_then(|gw| gw.store.change_signal());
            loop {
                match changes.as_mut() {
                    Some(signal) => tokio::select! {
                        _ = tick.tick() => {}
                        moved = signal.changed() => {
                            if moved.is_err() {
                                changes = None;
                            }
                        }
                    },
                    None => {
                        tick.tick().await;
                    }
                }
                let Some(gw) = weak.upgrade() else { return };
                match gw.refresh().await {
                    Ok(_) if failing => {
                        tracing::info!("store reachable again");
                        failing = false;
                    }
                    Ok(_) => {}
                    // Not the store: a bug. Said every time, since every retry builds again.
                    Err(e @ RefreshError::Build(_)) => {
                        tracing::error!(error = %e, "serving the last table; retrying on the next tick");
                    }
                    Err(e) if !failing => {
                        tracing::warn!(error = %e, "cannot refresh from the store; serving the last table");
                        failing = true;
                    }
                    Err(_) => {}
                }
            }
        })
    }

    /// Handles one request whose body is already read: [`Gateway::admit`] on its head, then
    /// [`Gateway::call`]. The server does the two apart, reading the body in between.
    pub async fn handle(&self, req: Request, peer: SocketAddr) -> Response {
        match self.admit(&req, peer).await {
            Admit::Proceed(admitted) => self.call(req, admitted, peer).await,
            Admit::Respond(res) => res,
        }
    }

    /// Everything decided on a request's head, before its body is read: the stage and route
    /// (no match: 403 Missing Authentication Token; a CORS preflight is answered here), the key
    /// check on a private route (403 Forbidden) and the usage plan's limits (429). A refusal
    /// gets its request id and access-log line here; an admission carries the table, the route
    /// and the key on to [`Gateway::call`], so nothing is looked up twice.
    pub async fn admit(&self, head: &Request, peer: SocketAddr) -> Admit<Admitted> {
        let started = Instant::now();
        let peer = self.trusted_proxies.client(&head.headers, peer);
        if let Some(path) = &self.ready_path
            && head.path() == path.as_str()
            && head.method == http::Method::GET
        {
            return Admit::Respond(self.ready_response());
        }
        let table = self.table.load_full();
        match self.decide(&table, head, peer).await {
            Ok(Decision { stage, route, params, key, rate_headers, authorized, would_refuse }) => {
                if key.is_some() && !would_refuse {
                    self.metrics.key_decision(KeyDecision::Allowed);
                }
                Admit::Proceed(Admitted {
                    started,
                    client: peer,
                    table,
                    stage,
                    route,
                    params,
                    key,
                    rate_headers,
                    authorized,
                })
            }
            Err(refused) => {
                let at = Instant::now();
                let took = at - started;
                self.count_refusal(&refused, took);
                Admit::Respond(self.finish(refused, head, Some(peer.ip()), at, took))
            }
        }
    }

    /// Counts a request answered before its integration: by its route when it had one, and the
    /// key decision it was.
    fn count_refusal(&self, refused: &Refused<'_>, took: Duration) {
        let status = refused.res.status.as_u16();
        match refused.route {
            Some(route) => route.metrics.answered(status, took, None),
            None => self.metrics.unrouted(status, took),
        }
        let decision = match refused.reason {
            "missing_key" | "several_keys" | "unknown_key" | "bad_checksum" | "disabled_key"
            | "expired_key" | "key_not_in_plan" => Some(KeyDecision::Forbidden),
            "throttled" => Some(KeyDecision::Throttled),
            "quota_exceeded" => Some(KeyDecision::QuotaExceeded),
            _ => None,
        };
        if let Some(d) = decision {
            self.metrics.key_decision(d);
        }
    }

    /// Gives an answer made on the head alone its request id and access-log line.
    fn finish(
        &self,
        refused: Refused<'_>,
        head: &Request,
        ip: Option<std::net::IpAddr>,
        at: Instant,
        took: Duration,
    ) -> Response {
        let Refused { mut res, key_id, reason, hint, route } = refused;
        let mut id_buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
        let request_id = new_request_id(&mut id_buf);
        set_request_id(&mut res, request_id);
        self.log(&Finished {
            at,
            request_id,
            method: &head.method,
            path: head.path(),
            ip,
            route: route.map(|r| r.event.path.as_str()),
            key_id,
            status: res.status.as_u16(),
            latency: took,
            integration: None,
            bytes: res.body.len(),
            reason,
            hint,
        });
        res
    }

    /// Gives an answer the server asked for (the body could not be read) its request id and an
    /// access-log line.
    fn refused_before_routing(&self, res: Response, head: &Request) -> Response {
        let reason = if res.status == http::StatusCode::PAYLOAD_TOO_LARGE {
            "body_too_large"
        } else {
            "busy"
        };
        let refused = Refused { res, key_id: None, reason, hint: None, route: None };
        self.finish(refused, head, None, Instant::now(), Duration::ZERO)
    }

    /// Queues the access-log line of a request, when the log is on (never blocks).
    fn log(&self, finished: &Finished<'_>) {
        if let Some(log) = &self.access {
            log.record(finished);
        }
    }

    /// The opt-in readiness path's answer: 200 when ready, else 503, with the readiness as JSON.
    fn ready_response(&self) -> Response {
        let readiness = self.readiness();
        let status = if readiness.is_ready() {
            http::StatusCode::OK
        } else {
            http::StatusCode::SERVICE_UNAVAILABLE
        };
        let mut res = Response::new(status, Bytes::from(readiness.to_json()));
        res.headers.push_static("content-type", "application/json");
        res.headers.push_static("cache-control", "no-store");
        res
    }

    /// Runs the integration of a request [`Gateway::admit`] let through.
    /// The client's address is the one [`Gateway::admit`] found (behind trusted balancers, from
    /// `X-Forwarded-For`); `_peer` is the connection's, as the server passes it.
    pub async fn call(&self, req: Request, admitted: Admitted, _peer: SocketAddr) -> Response {
        let Admitted {
            started,
            client: peer,
            table,
            stage,
            route,
            params,
            key,
            rate_headers,
            authorized,
        } = admitted;
        let route = &table.stage_at(stage).routes[route];
        let key_id = key.map(|index| table.key_id_at(index));
        let (_, path) = split_stage(req.path());
        let cors = respond::cors_origin(route.event.cors.as_ref(), &req);
        let mut id_buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
        let request_id = new_request_id(&mut id_buf);
        let call = integrate::Call {
            route,
            params: &params,
            req: &req,
            path,
            peer,
            request_id,
            key_id,
            cors,
            authorized: authorized.as_ref(),
        };
        let integration_started = Instant::now();
        let mut res = integrate::run(self, &call).await;
        // One clock read gives both the integration's time and the request's.
        let at = Instant::now();
        let integration = at - integration_started;
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
        set_request_id(&mut res, request_id);
        let took = at - started;
        self.log(&Finished {
            at,
            request_id,
            method: &req.method,
            path: req.path(),
            ip: Some(peer.ip()),
            route: Some(&route.event.path),
            key_id,
            status: res.status.as_u16(),
            latency: took,
            integration: Some(integration),
            bytes: res.body.len(),
            reason: ADMITTED,
            hint: None,
        });
        route.metrics.answered(res.status.as_u16(), took, Some(integration));
        res
    }

    /// Routes `req`, runs the route's authorizer, checks its key and counts it against its usage
    /// plan: the route to run, or the answer and why (with the key id, when the value presented
    /// is a known key's). `client`: the client's address.
    async fn decide<'t>(
        &self,
        table: &'t Table,
        req: &Request,
        client: SocketAddr,
    ) -> Result<Decision, Refused<'t>> {
        let refuse =
            |res, reason| Err(Refused { res, key_id: None, reason, hint: None, route: None });
        let (stage, path) = split_stage(req.path());
        let Some((stage_at, stage_table)) = table.stage(stage) else {
            let res = respond::error(GatewayError::MissingAuthenticationToken, None);
            return refuse(res, "no_such_stage");
        };
        // Key introspection, when the stage has it, before the routes (a deploy refuses a
        // route on its path; a parameter route such as `/{proxy+}` would otherwise take it).
        if !stage_table.introspection.is_empty()
            && req.method == http::Method::GET
            && let Some(at) = stage_table.introspection(path)
        {
            let answer = self.introspect(table, stage, at, req).await;
            let introspect::Answer { res, reason, key_id } = answer;
            return Err(Refused { res, key_id, reason, hint: None, route: None });
        }
        let found = match stage_table.router.lookup(path, req.method.as_str()) {
            Lookup::Found(m) => m,
            Lookup::NoMethod { routes } => {
                if req.method == http::Method::OPTIONS
                    && let Some(res) = stage_table.preflight(&routes, req)
                {
                    return refuse(res, "cors_preflight");
                }
                let cors = respond::cors_origin(stage_table.cors_of(&routes), req);
                let res = respond::error(GatewayError::MissingAuthenticationToken, cors);
                return refuse(res, "method_not_allowed");
            }
            Lookup::NotFound => {
                let res = respond::error(GatewayError::MissingAuthenticationToken, None);
                return refuse(res, "no_such_route");
            }
        };
        let route = &stage_table.routes[found.route];
        // A browser's preflight to a CORS resource whose method is ANY: on AWS, Serverless gives
        // every CORS resource an OPTIONS mock method, which ANY does not take over and which
        // needs no key. (A declared `options` method matched exactly and stays the user's.)
        if req.method == http::Method::OPTIONS
            && route.event.method == HttpMethod::Any
            && let Some(res) = stage_table.preflight(&stage_table.router.routes_at(path), req)
        {
            return refuse(res, "cors_preflight");
        }
        let mut decision = Decision {
            stage: stage_at,
            route: found.route,
            params: found.params,
            key: None,
            rate_headers: None,
            authorized: None,
            would_refuse: false,
        };
        // Refusals from here on carry the route's CORS headers.
        let cors_origin = || respond::cors_origin(route.event.cors.as_ref(), req);
        // The authorizer runs before the key check, as on API Gateway.
        if let Some(authorizer) = &route.authorizer {
            let ask = authorizer::Ask {
                req,
                path,
                resource: &route.event.path,
                params: &decision.params,
                peer: client,
                api_id: &route.api_id,
                deployment_id: &route.deployment_id,
                definition: &route.definition,
            };
            match authorizer::authorize(&self.functions, &self.upstream, authorizer, &ask).await {
                Ok(authorized) => decision.authorized = Some(authorized),
                Err(authorizer::Refusal { error, reason }) => {
                    let res = respond::error(error, cors_origin());
                    return Err(Refused {
                        res,
                        key_id: None,
                        reason,
                        hint: None,
                        route: Some(route),
                    });
                }
            }
        }
        if !route.event.private && !route.event.report {
            return Ok(decision);
        }
        match self.check_key(table, route, req, client, &mut decision).await {
            Ok(()) => Ok(decision),
            // Report-only: what enforcement would refuse is let through and recorded (`private`
            // wins over `report`, should a snapshot ever have both).
            Err(refused) if !route.event.private => {
                self.would_refuse(route, &refused, req, client);
                decision.would_refuse = true;
                Ok(decision)
            }
            Err(refused) => Err(refused),
        }
    }

    /// Records a request a report-only route let through that `refused` says enforcement
    /// would have refused.
    fn would_refuse(
        &self,
        route: &Route,
        refused: &Refused<'_>,
        req: &Request,
        client: SocketAddr,
    ) {
        self.metrics.would_refuse(refused.reason);
        self.reports.record(&report::Seen {
            api_id: &route.api_id,
            stage: &route.stage,
            method: req.method.as_str(),
            path: &route.event.path,
            reason: refused.reason,
            key_id: refused.key_id,
            client: client.ip(),
            user_agent: req.headers.get("user-agent"),
            unix_secs: self.clock.now_unix_ms().div_euclid(1000),
        });
    }

    /// The key check of a private (or report-only) route and its usage plan's limits, with
    /// `decision` given the key and its `RateLimit` values; the refusal otherwise.
    async fn check_key<'t>(
        &self,
        table: &'t Table,
        route: &'t Route,
        req: &Request,
        client: SocketAddr,
        decision: &mut Decision,
    ) -> Result<(), Refused<'t>> {
        let cors_origin = || respond::cors_origin(route.event.cors.as_ref(), req);
        // The key check: digest the presented value and look it up; no store access.
        let from_authorizer = route.definition.api_key_source == ApiKeySource::Authorizer;
        // (An Arc's count, and only where the key comes from the authorizer.)
        let authorized = if from_authorizer { decision.authorized.clone() } else { None };
        let presented = if from_authorizer {
            // `apiKeySourceType: AUTHORIZER`: the authorizer's `usageIdentifierKey` or none.
            authorized.as_ref().and_then(|a| a.usage_identifier_key()).map(str::as_bytes)
        } else {
            let mut values = req.headers.get_all("x-api-key");
            let presented = values.next();
            // Two keys: which one is checked and which one the function sees could differ (its
            // event shows the last). Refused, as a bad key is.
            if values.next().is_some() {
                let res = respond::error(GatewayError::Forbidden, cors_origin());
                let reason = "several_keys";
                return Err(Refused { res, key_id: None, reason, hint: None, route: Some(route) });
            }
            presented
        };
        let presented = presented.filter(|v| !v.is_empty());
        let clock = self.meter.clock();
        let now_ms = clock.now_unix_ms();
        let authorized = match presented {
            Some(v) => table.authorize(v, route.api_stage, now_ms / 1000).map_err(Some),
            None => Err(None),
        };
        let auth = match authorized {
            Ok(auth) => auth,
            Err(denied) => {
                let res = respond::error(GatewayError::Forbidden, cors_origin());
                let (reason, key_id) =
                    denied.map_or(("missing_key", None), |d| (d.reason(), d.key_id()));
                // A key sent the way other APIs take tokens: said in the log, never its value.
                let hint = (denied.is_none()
                    && route.authorizer.is_none()
                    && req.headers.get("authorization").is_some())
                .then_some(AUTHORIZATION_HINT);
                return Err(Refused { res, key_id, reason, hint, route: Some(route) });
            }
        };
        let grant = auth.grant;
        let key_id = auth.key_id();
        decision.key = Some(auth.index());
        if let Some(digest) = auth.old_value() {
            let client = client.ip();
            let user_agent = req.headers.get("user-agent");
            self.old_value_uses.record(digest, client, user_agent, now_ms.div_euclid(1000));
        }

        // Usage plan: method throttle, plan throttle, quota (no store access either). The
        // route's method throttles were resolved when the table was built.
        let method_throttle = grant.limits.method_throttle(decision.route, req.method.as_str());
        let limited = |err, retry_after| {
            let res = respond::limited(err, retry_after, cors_origin());
            let reason = refusal_reason(err);
            Err(Refused { res, key_id: Some(key_id), reason, hint: None, route: Some(route) })
        };
        let ask = Ask {
            counters: auth.counters(),
            limits: &grant.limits,
            method_throttle,
            mono: clock.now_mono(),
            unix_ms: now_ms,
        };
        match self.limiter.admit(ask).resolve().await {
            Admission::Allowed { headers } => decision.rate_headers = headers,
            Admission::Throttled { retry_after } => {
                return limited(GatewayError::TooManyRequests, retry_after);
            }
            Admission::QuotaExceeded { retry_after } => {
                return limited(GatewayError::LimitExceeded, Some(retry_after));
            }
        }
        Ok(())
    }

    /// Writes the last pending usage and stops every function process. Call after the server
    /// has drained, so every admitted request is counted.
    pub async fn shutdown(&self) {
        if let Err(e) = self.flush_usage().await {
            tracing::error!(error = %e, "cannot write the last usage to the store; it is lost");
        } else if let Err(e) = self.fold_usage().await {
            tracing::warn!(error = %e, "cannot fold usage in the store; the next start will");
        }
        self.functions.shutdown().await;
    }
}

/// Runs `step` with the gateway every `period` (first after one period), until it is dropped.
async fn every<F, Fut>(period: Duration, weak: Weak<Gateway>, step: F)
where
    F: Fn(Arc<Gateway>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(gw) = weak.upgrade() else { return };
        step(gw).await;
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

/// Why [`Gateway::refresh`] kept the current table.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RefreshError {
    /// The store could not be read.
    #[error(transparent)]
    Store(#[from] keygate_store::Error),
    /// Building the table from the snapshot panicked (a bug); the panic's payload.
    #[error("building the gateway table panicked: {}", panic_message(.0))]
    Build(Box<dyn std::any::Any + Send>),
}

/// The text of a panic's payload, when it has one.
#[allow(clippy::borrowed_box, reason = "a `&Box<dyn Any>` would coerce to `&dyn Any` of the box")]
fn panic_message(payload: &Box<dyn std::any::Any + Send>) -> &str {
    let payload: &(dyn std::any::Any + Send) = &**payload;
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("no message")
}

/// Builds a table on the blocking pool: with a million keys it takes CPU time that would
/// otherwise stall every connection served by this thread.
///
/// # Errors
/// [`RefreshError::Build`] when the build panicked (the panic is caught at the blocking task's
/// `JoinError`, so the refresh loop lives on).
async fn build_table(
    snapshot: keygate_types::model::GatewaySnapshot,
    meter: &Arc<Meter>,
    metrics: &Arc<Metrics>,
    caches: &Arc<authorizer::Caches>,
) -> Result<Table, RefreshError> {
    let meter = Arc::clone(meter);
    let metrics = Arc::clone(metrics);
    let caches = Arc::clone(caches);
    let started = Instant::now();
    let keys = snapshot.keys.len();
    let build = move || {
        #[cfg(test)]
        tests::maybe_panic();
        Table::build(snapshot, &meter, &metrics, &caches)
    };
    match tokio::task::spawn_blocking(build).await {
        Ok(table) => {
            tracing::debug!(keys, millis = started.elapsed().as_millis() as u64, "table built");
            Ok(table)
        }
        Err(e) if e.is_panic() => Err(RefreshError::Build(e.into_panic())),
        // Cancelled: only when the runtime shuts down.
        Err(e) => Err(RefreshError::Build(Box::new(e.to_string()))),
    }
}

/// Reads the store's snapshot, logging how long it took (at debug level).
async fn load_snapshot(
    store: &dyn keygate_store::SnapshotReads,
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

/// Serves `listener` (HTTPS with `tls`) until `shutdown` completes, then lets open connections
/// finish for up to [`DRAIN_TIMEOUT`].
pub async fn serve(
    listener: TcpListener,
    gateway: Arc<Gateway>,
    tls: Option<keygate_http::Tls>,
    shutdown: impl Future<Output = ()>,
) {
    let options = keygate_http::Options {
        max_body: MAX_REQUEST_BODY,
        read_timeout: Some(READ_TIMEOUT),
        body_timeout: Some(BODY_TIMEOUT),
        write_timeout: Some(WRITE_TIMEOUT),
        max_connections: MAX_CONNECTIONS,
        max_per_client: MAX_CONNECTIONS_PER_CLIENT,
        max_buffered: MAX_BUFFERED,
        drain: DRAIN_TIMEOUT,
        // HTTP/2 too when `tls` offers it (`Tls::offering_http2`).
        tls,
        read_after_peer_gone: false,
    };
    keygate_http::serve(listener, gateway, options, shutdown).await;
}

/// What [`Gateway::admit`] found, carried to [`Gateway::call`]: the table it was decided on
/// (a route and a key are numbers into it), the client's address, the route, its path
/// parameters, the key that passed the check and the rate-limit header values of the admission.
pub struct Admitted {
    started: Instant,
    /// The client's address: the connection's peer, or behind a trusted balancer the address
    /// it forwarded (read once, here).
    client: SocketAddr,
    table: Arc<Table>,
    stage: u32,
    route: usize,
    params: Vec<(String, String)>,
    key: Option<u32>,
    rate_headers: Option<meter::RateLimitValues>,
    /// What the route's authorizer let through.
    authorized: Option<authorizer::Authorized>,
}

impl std::fmt::Debug for Admitted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admitted")
            .field("stage", &self.stage)
            .field("route", &self.route)
            .finish_non_exhaustive()
    }
}

/// What [`Gateway::decide`] lets through (the parts of [`Admitted`] it finds).
struct Decision {
    stage: u32,
    route: usize,
    params: Vec<(String, String)>,
    key: Option<u32>,
    rate_headers: Option<meter::RateLimitValues>,
    authorized: Option<authorizer::Authorized>,
    /// A report-only route let the request through that enforcement would refuse.
    would_refuse: bool,
}

/// `/{stage}/{path}`: the stage is the first segment, the rest is the resource path.
fn split_stage(full_path: &str) -> (&str, &str) {
    let trimmed = full_path.strip_prefix('/').unwrap_or(full_path);
    match trimmed.find('/') {
        Some(i) => (&trimmed[..i], &trimmed[i..]),
        None => (trimmed, "/"),
    }
}

/// An answer made on the head alone, and why (the access log's `reason`).
struct Refused<'t> {
    res: Response,
    /// The key's id, when the value presented is a known key's.
    key_id: Option<&'t str>,
    /// `missing_key`, `several_keys`, `unknown_key`, `disabled_key`, `expired_key`,
    /// `key_not_in_plan`,
    /// `no_such_stage`, `no_such_route`, `method_not_allowed`, `throttled`, `quota_exceeded`,
    /// or `cors_preflight` (answered, not refused).
    reason: &'static str,
    /// What the client most likely did wrong, when it can be told.
    hint: Option<&'static str>,
    /// The route the request was for, once routed (its metrics count the refusal).
    route: Option<&'t Route>,
}

/// The access log's `reason` of a request the gateway let through.
const ADMITTED: &str = "-";

const AUTHORIZATION_HINT: &str =
    "the request has an Authorization header but no x-api-key: API keys go in x-api-key";

/// The access log's `reason` of a usage-plan refusal.
fn refusal_reason(err: GatewayError) -> &'static str {
    match err {
        GatewayError::LimitExceeded => "quota_exceeded",
        _ => "throttled",
    }
}

impl keygate_http::Service for Gateway {
    type Admitted = Admitted;

    fn admit(
        &self,
        head: &Request,
        peer: SocketAddr,
    ) -> impl Future<Output = Admit<Admitted>> + Send {
        Gateway::admit(self, head, peer)
    }

    fn call(
        &self,
        req: Request,
        admitted: Admitted,
        peer: SocketAddr,
    ) -> impl Future<Output = Response> + Send {
        Gateway::call(self, req, admitted, peer)
    }

    fn too_large(&self, head: &Request) -> Response {
        self.refused_before_routing(respond::error(GatewayError::RequestTooLarge, None), head)
    }

    fn busy(&self, head: &Request) -> Response {
        let mut res = Response::new(
            http::StatusCode::SERVICE_UNAVAILABLE,
            Bytes::from_static(br#"{"message":"Service Unavailable"}"#),
        );
        res.headers.push_static("content-type", "application/json");
        res.headers.push_static("retry-after", "1");
        self.refused_before_routing(res, head)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use keygate_control::keys::{self, CreateKey};
    use keygate_store::{KeyReads, SqliteStore, UsageReads};

    use super::*;

    /// How many of the next table builds panic (tests that set it run one at a time: see
    /// `BUILDS`).
    static PANICS: AtomicUsize = AtomicUsize::new(0);
    /// Serialises the tests that build tables (a build in another test would take an injected
    /// panic meant for the test that set `PANICS`).
    static BUILDS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

    /// Called by every table build in tests: panics while `PANICS` is above zero.
    pub(super) fn maybe_panic() {
        if PANICS.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok() {
            panic!("injected table build failure");
        }
    }

    async fn gateway(dir: &std::path::Path) -> (Arc<Gateway>, Arc<SqliteStore>) {
        let store = Arc::new(SqliteStore::open(dir).await.unwrap());
        let clock = Arc::new(keygate_limits::clock::SystemClock);
        let gw = Gateway::new(store.clone(), FunctionHost::default(), clock).await.unwrap();
        (gw, store)
    }

    /// A new enabled key named `name`, in the plan `plan` (none when empty).
    fn key_in(name: &str, plan: &str) -> CreateKey {
        CreateKey {
            name: name.to_owned(),
            value: None,
            description: None,
            customer_id: None,
            enabled: true,
            usage_plan: Some(plan.to_owned()).filter(|p| !p.is_empty()),
            expires: None,
        }
    }

    /// Moves the store's version (a new key).
    async fn change(store: &Arc<SqliteStore>, name: &str) {
        let store = keygate_control::Store::new(Arc::clone(store) as _, "test:gateway");
        keys::create(&store, key_in(name, "")).await.unwrap();
    }

    #[tokio::test]
    async fn a_panicking_table_build_keeps_the_table_and_is_retried() {
        let _one = BUILDS.lock().await;
        let dir = tempfile::tempdir().unwrap();
        let (gw, store) = gateway(dir.path()).await;
        let before = gw.table().version;
        change(&store, "k1").await;
        PANICS.store(1, Ordering::SeqCst);
        let err = gw.refresh().await.expect_err("the build panicked");
        assert!(matches!(err, RefreshError::Build(_)), "{err:?}");
        assert!(err.to_string().contains("injected table build failure"), "{err}");
        assert_eq!(gw.table().version, before, "the last table stays in service");
        assert!(gw.refresh().await.unwrap(), "the next refresh builds again");
        assert!(gw.table().version > before);
    }

    #[tokio::test]
    async fn the_refresh_task_outlives_a_panicking_build() {
        let _one = BUILDS.lock().await;
        let dir = tempfile::tempdir().unwrap();
        let (gw, store) = gateway(dir.path()).await;
        let task = gw.spawn_refresh();
        let before = gw.table().version;
        // Two builds in a row fail; the task must stay alive and get the third one through.
        PANICS.store(2, Ordering::SeqCst);
        change(&store, "k1").await;
        let deadline = Instant::now() + Duration::from_secs(20);
        while gw.table().version == before {
            assert!(!task.is_finished(), "the refresh task ended");
            assert!(Instant::now() < deadline, "the table was never rebuilt");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        assert_eq!(PANICS.load(Ordering::SeqCst), 0, "both injected panics happened");
        assert!(!task.is_finished());
        task.abort();
    }

    /// A connection of its own to the store's file, to break it the way a full disk or a broken
    /// schema would.
    async fn raw(dir: &std::path::Path) -> sqlx::SqlitePool {
        let url = format!("sqlite://{}", dir.join(keygate_store::sqlite::DB_FILE).display());
        sqlx::SqlitePool::connect(&url).await.unwrap()
    }

    /// A store that cannot be read keeps the last table in service; once it can be read again,
    /// the next refresh loads what changed meanwhile.
    #[tokio::test]
    async fn a_failing_store_keeps_the_table_and_a_recovered_one_is_loaded() {
        let _one = BUILDS.lock().await; // Builds tables: no injected panic may hit them.
        let dir = tempfile::tempdir().unwrap();
        let (gw, store) = gateway(dir.path()).await;
        let before = gw.table().version;
        change(&store, "k1").await;
        let raw = raw(dir.path()).await;
        sqlx::query("ALTER TABLE meta RENAME TO meta_away").execute(&raw).await.unwrap();
        let err = gw.refresh().await.expect_err("the store cannot be read");
        assert!(matches!(err, RefreshError::Store(_)), "{err:?}");
        assert_eq!(gw.table().version, before, "the last table stays in service");
        assert_eq!(gw.table().key_count(), 0);
        sqlx::query("ALTER TABLE meta_away RENAME TO meta").execute(&raw).await.unwrap();
        assert!(gw.refresh().await.unwrap(), "the recovered store is loaded");
        assert!(gw.table().version > before);
        assert_eq!(gw.table().key_count(), 1, "with the key added while it failed");
    }

    /// [`gateway`], the store's control handle, and a plan `p` without limits.
    async fn gateway_with_plan(
        dir: &std::path::Path,
    ) -> (Arc<Gateway>, Arc<SqliteStore>, keygate_control::Store, keygate_types::model::UsagePlan)
    {
        let (gw, store) = gateway(dir).await;
        let control = keygate_control::Store::new(Arc::clone(&store) as _, "test:gateway");
        let plan = keygate_types::model::NewUsagePlan { name: "p".into(), ..Default::default() };
        let plan = keygate_control::plans::create(&control, plan, vec![]).await.unwrap();
        (gw, store, control, plan)
    }

    /// A shared limiter's lease without quota units is dropped by the flush once void (a key
    /// used once keeps no lease); a live one stays until a later flush finds it void; one with
    /// quota units stays for the key's next request to give them back.
    #[tokio::test]
    async fn flushes_drop_void_throttle_leases() {
        let _one = BUILDS.lock().await; // Builds tables: no injected panic may hit them.
        let dir = tempfile::tempdir().unwrap();
        let (gw, store, control, plan) = gateway_with_plan(dir.path()).await;
        let now = gw.meter.clock().now_mono().0;
        let now_ms = gw.meter.clock().now_unix_ms();
        let lease = |until, period| meter::Lease { units: 5, until, period, ..Default::default() };
        let mut counters = Vec::new();
        for (name, until, period) in
            [("live", now + 60_000_000_000, None), ("void", 0, None), ("quota", 0, Some(1))]
        {
            let (key, _) = keys::create(&control, key_in(name, &plan.id)).await.unwrap();
            let (kp, _) = gw.meter.get_or_create(&key.id, &plan.id);
            kp.with_lease(|l| *l = Some(lease(until, period)));
            kp.record_admitted(now_ms);
            counters.push(kp);
        }
        let has_lease = |kp: &meter::KeyPlan<'_>| kp.with_lease(|l| l.is_some());
        gw.meter.flush(&*store).await.unwrap();
        let [live, void, quota] = &counters[..] else { unreachable!() };
        assert!(has_lease(live) && !has_lease(void) && has_lease(quota));
        live.with_lease(|l| l.as_mut().unwrap().until = 0);
        gw.meter.flush(&*store).await.unwrap();
        assert!(!has_lease(live), "the flush came back for it");
        assert!(has_lease(quota));
    }

    /// Usage that cannot be written stays counted in memory and goes with the next flush:
    /// nothing admitted is lost while the process lives.
    #[tokio::test]
    async fn a_failed_usage_flush_keeps_its_counts_for_the_next() {
        let _one = BUILDS.lock().await; // Builds tables: no injected panic may hit them.
        let dir = tempfile::tempdir().unwrap();
        let (gw, store, control, plan) = gateway_with_plan(dir.path()).await;
        let (key, _) = keys::create(&control, key_in("k", &plan.id)).await.unwrap();
        let (counters, _) = gw.meter.get_or_create(&key.id, &plan.id);
        let limits = meter::StageLimits::default();
        let admit = |n: usize| {
            let clock = gw.meter.clock();
            for _ in 0..n {
                let admitted = counters.admit(&limits, None, clock.now_mono(), clock.now_unix_ms());
                assert!(matches!(admitted, Admission::Allowed { .. }));
            }
        };
        admit(3);
        let raw = raw(dir.path()).await;
        sqlx::query(
            "CREATE TRIGGER usage_fails BEFORE INSERT ON usage_log \
             BEGIN SELECT RAISE(ABORT, 'disk full'); END",
        )
        .execute(&raw)
        .await
        .unwrap();
        gw.flush_usage().await.expect_err("the usage cannot be written");
        let before = gw.meter.clock().now_unix_ms() / 1000;
        admit(2);
        gw.flush_usage().await.expect_err("still not");
        sqlx::query("DROP TRIGGER usage_fails").execute(&raw).await.unwrap();
        assert_eq!(gw.flush_usage().await.unwrap(), 1, "one row: today's usage of the key");
        let today = keygate_limits::calendar::Date::from_unix_ms(gw.meter.clock().now_unix_ms());
        let stored = store.usage(Some(&plan.id), Some(&key.id), today, today).await.unwrap();
        assert_eq!(stored.iter().map(|u| u.used).sum::<u64>(), 5, "{stored:?}");
        let now = gw.meter.clock().now_unix_ms() / 1000;
        let last_used = store.get_key(&key.id).await.unwrap().unwrap().last_used_date;
        let last_used = last_used.expect("the last use came through the failures too");
        assert!((before..=now).contains(&last_used), "{before} <= {last_used} <= {now}");
        assert_eq!(gw.flush_usage().await.unwrap(), 0, "nothing is written twice");
        assert_eq!(gw.fold_usage().await.unwrap(), 1, "the one row folded");
        let folded = store.usage(Some(&plan.id), Some(&key.id), today, today).await.unwrap();
        assert_eq!(folded, stored, "reads answer the same folded");
    }

    /// A flush of more counters than one write takes fails in its second write: the first
    /// write's usage is stored once, the rest stays pending and goes with the next flush.
    #[tokio::test]
    async fn a_flush_failing_halfway_keeps_the_rest_pending() {
        let _one = BUILDS.lock().await; // Builds tables: no injected panic may hit them.
        let dir = tempfile::tempdir().unwrap();
        let (gw, store, control, plan) = gateway_with_plan(dir.path()).await;
        let count = meter::FLUSH_CHUNK + 4;
        let mut csv = String::from("Name,Key,UsageplanIds\n");
        for i in 0..count {
            csv.push_str(&format!("k{i},value{i:0>30},{}\n", plan.id));
        }
        let ids = keygate_control::import::import(&control, &csv, true).await.unwrap().ids;
        assert_eq!(ids.len(), count);
        let limits = meter::StageLimits::default();
        let clock = gw.meter.clock();
        for id in &ids {
            let (counters, _) = gw.meter.get_or_create(id, &plan.id);
            let admitted = counters.admit(&limits, None, clock.now_mono(), clock.now_unix_ms());
            assert!(matches!(admitted, Admission::Allowed { .. }));
        }
        let raw = raw(dir.path()).await;
        let trigger = format!(
            "CREATE TRIGGER usage_fails BEFORE INSERT ON usage_log \
             WHEN (SELECT COUNT(*) FROM usage_log) >= {} \
             BEGIN SELECT RAISE(ABORT, 'disk full'); END",
            meter::FLUSH_CHUNK
        );
        sqlx::query(sqlx::AssertSqlSafe(trigger)).execute(&raw).await.unwrap();
        gw.flush_usage().await.expect_err("the second write fails");
        let stored = async || {
            let today = keygate_limits::calendar::Date::from_unix_ms(clock.now_unix_ms());
            let rows = store.usage(Some(&plan.id), None, today, today).await.unwrap();
            rows.iter().map(|u| u.used).sum::<u64>()
        };
        assert_eq!(stored().await, meter::FLUSH_CHUNK as u64, "the first write is stored");
        sqlx::query("DROP TRIGGER usage_fails").execute(&raw).await.unwrap();
        assert_eq!(gw.flush_usage().await.unwrap(), 4, "the rest, once");
        assert_eq!(stored().await, count as u64);
        assert_eq!(gw.flush_usage().await.unwrap(), 0, "nothing is written twice");
    }

    /// The gateway's own 503 (the server holds too many request bodies to read another): AWS's
    /// shape, a `Retry-After`, and a request id like every answer.
    #[tokio::test]
    async fn the_gateways_own_503_says_when_to_retry() {
        let _one = BUILDS.lock().await; // Builds tables: no injected panic may hit them.
        let dir = tempfile::tempdir().unwrap();
        let (gw, _) = gateway(dir.path()).await;
        let head = Request::build("POST", "/dev/upload", &[("content-length", b"1000")]).unwrap();
        let res = keygate_http::Service::busy(&*gw, &head);
        assert_eq!(res.status, http::StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(&res.body[..], br#"{"message":"Service Unavailable"}"#);
        assert_eq!(res.headers.get("retry-after"), Some(&b"1"[..]));
        assert_eq!(res.headers.get("content-type"), Some(&b"application/json"[..]));
        let id = res.headers.get(respond::X_AMZN_REQUEST_ID).expect("a request id");
        assert_eq!(id.len(), uuid::fmt::Hyphenated::LENGTH);
    }

    /// No per-request SQL: with the store unreadable, keyed requests are still checked and
    /// answered from the table in memory.
    #[tokio::test]
    async fn requests_are_served_while_the_store_cannot_be_read() {
        let _one = BUILDS.lock().await; // Builds tables: no injected panic may hit them.
        use keygate_control::plans;
        use keygate_types::model::NewUsagePlan;

        let dir = tempfile::tempdir().unwrap();
        let (gw, store) = gateway(dir.path()).await;
        let control = keygate_control::Store::new(Arc::clone(&store) as _, "test:gateway");
        let definition = crate::table::tests::definition("svc", "dev", &["/a"]);
        let places = std::collections::BTreeMap::new();
        let artifacts = dir.path().join("artifacts");
        let deployed = keygate_control::deploy(
            &control,
            definition,
            vec![],
            &places,
            &artifacts,
            "http://127.0.0.1",
            None,
        )
        .await
        .unwrap();
        let plan = NewUsagePlan { name: "p".into(), ..Default::default() };
        let stage = (deployed.api_id.clone(), "dev".to_owned(), Default::default());
        let plan = plans::create(&control, plan, vec![stage]).await.unwrap();
        let (_, value) = keys::create(&control, key_in("k", &plan.id)).await.unwrap();
        assert!(gw.refresh().await.unwrap());

        let raw = raw(dir.path()).await;
        for table in ["meta", "api_keys", "usage_plans", "stages"] {
            let sql = format!("ALTER TABLE {table} RENAME TO {table}_away");
            sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&raw).await.unwrap();
        }
        gw.refresh().await.expect_err("the store cannot be read");
        let peer: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let request = |key: &[u8]| Request::build("GET", "/dev/a", &[("x-api-key", key)]).unwrap();
        let ok = gw.handle(request(value.expose().as_bytes()), peer).await;
        assert_eq!(ok.status, http::StatusCode::OK, "{:?}", ok.body);
        let refused = gw.handle(request(b"not-a-key"), peer).await;
        assert_eq!(refused.status, http::StatusCode::FORBIDDEN);
    }
}
