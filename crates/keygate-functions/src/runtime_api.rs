//! The Lambda Runtime API (2018-06-01) served to one function process.
//!
//! Every process gets its own listener on `127.0.0.1:0` (the listener's address is the process's
//! `AWS_LAMBDA_RUNTIME_API`), and a connection is admitted only from that process or one of its
//! descendants ([`crate::peer`]; any other is closed without an answer and logged), so a request
//! that arrives here comes from that process and the host never has to guess whose answer it is.
//! Everything a process sends is untrusted input: a bad request gets a 4xx JSON error shaped like
//! the Runtime Interface Emulator's, never a panic.
//!
//! States, as in the RIE: *init* until the first `GET …/invocation/next`; then *ready* (waiting for
//! an event) and *busy* (one event handed out, until `POST …/{id}/response` or `…/{id}/error`
//! for exactly that request id). `POST …/init/error` is only accepted during init.
//!
//! A process of a Lambda Managed Instances function (`AWS_LAMBDA_MAX_CONCURRENCY` = N > 1) may
//! hold up to N events at once: it polls `/next` from N workers, and each `/response` or `/error`
//! names the request id it answers. A `/next` beyond N outstanding events is a state error.
//!
//! Queued delivery (keygate's own bootstraps for one-at-a-time functions, `KEYGATE_QUEUE_DEPTH`
//! = Q): the runtime keeps up to Q more `/next` polls open on a second connection, so that the
//! events waiting for the process are already in its socket when it finishes one, and one wakeup
//! of the process serves several. It runs them strictly one after another, in the order handed
//! out, and starts one only once the previous answer is written. So the host knows which event
//! may have started: the first handed out and unanswered ([`Start`]); the ones behind it have
//! not, and when the process dies they are run elsewhere. That judgement waits until every
//! connection of the dead process has been read to its end ([`RuntimeApi::drain`]), so that an
//! answer it wrote just before dying is seen. A `/next` beyond the Q + 1 outstanding events waits
//! for room instead of failing (the runtime polls ahead on another connection than it answers
//! on, so the two may arrive in either order).
//!
//! Event and response bodies pass through untouched and are never logged.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderValue, Method, StatusCode};
use keygate_http::{Fields, Request, Response};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};

use crate::peer;

/// Largest response a function may post (Lambda's synchronous payload limit, 6 MB).
pub(crate) const MAX_RESPONSE_BYTES: usize = 6 * 1024 * 1024;
/// Error messages are cut to this many bytes: they end up in logs and gateway answers.
const MAX_ERROR_MESSAGE_BYTES: usize = 8 * 1024;
const ERROR_TYPE_HEADER: &str = "lambda-runtime-function-error-type";

/// One event on its way to the process.
pub(crate) struct Invocation {
    pub(crate) request_id: String,
    pub(crate) event: Bytes,
    /// `Lambda-Runtime-Deadline-Ms`: Unix epoch milliseconds.
    pub(crate) deadline_ms: u64,
    pub(crate) trace_id: String,
    pub(crate) reply: oneshot::Sender<Outcome>,
    /// Set once the process may have started the event; one that never was may be retried on
    /// another process without running the handler twice.
    pub(crate) start: Arc<Start>,
}

/// When the runtime may have started an invocation: handed out with nothing ahead of it, or the
/// one ahead of it answered. Set once, never unset.
#[derive(Debug, Default)]
pub(crate) struct Start(OnceLock<std::time::Instant>);

impl Start {
    fn mark(&self) -> bool {
        self.0.set(std::time::Instant::now()).is_ok()
    }

    /// When the event may have started; `None`: it has not.
    pub(crate) fn at(&self) -> Option<std::time::Instant> {
        self.0.get().copied()
    }
}

/// What the runtime posted for an invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    Response(Bytes),
    Error { error_type: String, message: String },
}

/// Why a process can take no more invocations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Failure {
    /// The runtime posted `/runtime/init/error` (`"<errorType>: <errorMessage>"`).
    InitError(String),
    /// The process exited (or was killed).
    Exited(String),
}

/// The Runtime API state of one process.
pub(crate) struct RuntimeApi {
    /// The function's ARN, checked to be a header value.
    arn: Bytes,
    /// Events for the process. The pool hands a process at most `max_concurrency` events at once,
    /// so the channel has room for that many; `/next` takes the receiver's lock so that runtime
    /// workers polling at once get each event once.
    inbox: tokio::sync::Mutex<mpsc::Receiver<Invocation>>,
    /// Events the process may hold at once (`AWS_LAMBDA_MAX_CONCURRENCY`, 1 for classic Lambda,
    /// plus the queue depth with queued delivery).
    max_concurrency: usize,
    /// Queued delivery: the runtime runs its events one after another, in order.
    sequential: bool,
    /// Events are queued behind the one it runs while it answers faster than this on average.
    queue_behind: Duration,
    /// Signalled when an event is answered (room for a `/next` waiting for it).
    room: tokio::sync::Notify,
    state: Mutex<State>,
    /// Admitted connections still open.
    open: watch::Sender<usize>,
    /// Set once the process is dead and its connections were read to their end (or given up
    /// on): which events started is final.
    drained: watch::Sender<bool>,
    /// `START` lines, when the function has a log.
    log: Option<Arc<crate::output::OutputBudget>>,
    failure: watch::Sender<Option<Failure>>,
    /// Who may connect, known once the process has started ([`RuntimeApi::set_owner`]).
    owner: watch::Sender<Option<Owner>>,
    /// Connections refused since the last warning, and when that was: refusals are summed up
    /// at most every [`REFUSALS_EVERY`], so a connect flood is not a flood of log lines.
    refusals: Mutex<(u64, Option<std::time::Instant>)>,
}

/// How often refused Runtime API connections are reported (a count, not a line each).
const REFUSALS_EVERY: Duration = Duration::from_secs(10);

/// The process a Runtime API serves.
#[derive(Debug, Clone)]
pub(crate) struct Owner {
    /// The function process (it and its descendants may connect) and their uid.
    pub(crate) expected: crate::peer::Expected,
    /// The listener's address (`AWS_LAMBDA_RUNTIME_API`).
    pub(crate) listener: SocketAddr,
    /// `AWS_LAMBDA_FUNCTION_NAME`, for the warning about a refused connection.
    pub(crate) function: Arc<str>,
}

#[derive(Default)]
struct State {
    /// A `/next` has been received: init is over.
    initialized: bool,
    /// When the first `/next` came (the end of init, for `Init Duration`).
    initialized_at: Option<std::time::Instant>,
    /// The events handed out and not yet answered (at most `max_concurrency`), in the order
    /// handed out.
    current: Vec<Current>,
    /// How long the process took per event lately (an exponential average, microseconds), and
    /// over how many events.
    pace_us: u64,
    paced: u32,
}

struct Current {
    request_id: String,
    reply: oneshot::Sender<Outcome>,
    start: Arc<Start>,
}

/// A process "keeps up" once it has answered this many events at an average under its
/// `queue_behind`: events are then queued behind the one it runs.
const PACED_AFTER: u32 = 8;

/// The phase a process was in, for crash messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    Init,
    Idle,
    Busy,
}

impl RuntimeApi {
    /// A fresh API in the init state for a process that takes `max_concurrency` events at once
    /// and `queue_depth` more queued behind one running (queued delivery, only with one at
    /// once), and the sender the pool hands events in through. Events are queued while the
    /// process answers faster than `queue_behind`. `log` takes the `START` lines.
    pub(crate) fn new(
        arn: &str,
        max_concurrency: u32,
        queue_depth: u32,
        queue_behind: Duration,
        log: Option<Arc<crate::output::OutputBudget>>,
    ) -> (Arc<Self>, mpsc::Sender<Invocation>) {
        let sequential = max_concurrency <= 1 && queue_depth > 0;
        let queued = if sequential { queue_depth as usize } else { 0 };
        let max_concurrency = (max_concurrency as usize).max(1) + queued;
        let (tx, rx) = mpsc::channel(max_concurrency);
        let arn = match HeaderValue::from_str(arn) {
            Ok(_) => Bytes::copy_from_slice(arn.as_bytes()),
            Err(_) => Bytes::from_static(b"arn:aws:lambda:invalid"),
        };
        let api = Self {
            arn,
            inbox: tokio::sync::Mutex::new(rx),
            max_concurrency,
            sequential,
            queue_behind,
            room: tokio::sync::Notify::new(),
            state: Mutex::new(State::default()),
            open: watch::channel(0).0,
            drained: watch::channel(false).0,
            log,
            failure: watch::channel(None).0,
            owner: watch::channel(None).0,
            refusals: Mutex::new((0, None)),
        };
        (Arc::new(api), tx)
    }

    /// Names the process this API serves; connections wait for it.
    pub(crate) fn set_owner(&self, owner: Owner) {
        self.owner.send_replace(Some(owner));
    }

    /// Whether the client at `peer` is the owner process or one of its descendants (checked on
    /// the blocking pool: it reads `/proc`). A refusal is logged without any event data.
    async fn admits_peer(&self, peer: SocketAddr) -> bool {
        let mut owner = self.owner.subscribe();
        let owner = match owner.wait_for(Option::is_some).await {
            Ok(owner) => owner.clone(),
            Err(_) => None,
        };
        let Some(Owner { expected, listener, function }) = owner else { return false };
        let checked =
            tokio::task::spawn_blocking(move || peer::is_descendant_peer(expected, peer, listener))
                .await;
        let why = match checked {
            Ok(Ok(true)) => {
                self.open.send_modify(|n| *n += 1);
                return true;
            }
            Ok(Ok(false)) => "from a process that is not the function's".to_owned(),
            Ok(Err(err)) => format!("whose process cannot be checked ({err})"),
            Err(err) => format!("whose check failed ({err})"),
        };
        let refused = {
            let mut refusals = self.refusals.lock().unwrap_or_else(PoisonError::into_inner);
            refusals.0 += 1;
            let now = std::time::Instant::now();
            if refusals.1.is_some_and(|at| now.duration_since(at) < REFUSALS_EVERY) {
                return false;
            }
            refusals.1 = Some(now);
            std::mem::take(&mut refusals.0)
        };
        tracing::warn!(
            function = %function,
            pid = expected.root,
            %peer,
            refused,
            "refused Runtime API connections (the last one {why}); refusals are counted and \
             reported every 10 s"
        );
        false
    }

    /// Watches for the process becoming unusable.
    pub(crate) fn failure(&self) -> watch::Receiver<Option<Failure>> {
        self.failure.subscribe()
    }

    /// Records why the process is unusable; the first cause wins.
    pub(crate) fn fail(&self, failure: Failure) {
        self.failure.send_if_modified(|current| {
            if current.is_some() {
                return false;
            }
            *current = Some(failure);
            true
        });
    }

    /// When init ended (the first `/next`), if it has.
    pub(crate) fn initialized_at(&self) -> Option<std::time::Instant> {
        self.lock().initialized_at
    }

    pub(crate) fn phase(&self) -> Phase {
        let state = self.lock();
        match (state.initialized, !state.current.is_empty()) {
            (false, _) => Phase::Init,
            (true, false) => Phase::Idle,
            (true, true) => Phase::Busy,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A poisoned lock only means a panic elsewhere; the state itself is always consistent
        // (every critical section is a few assignments), so keep serving.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn next(&self) -> Response {
        let mut failure = self.failure.subscribe();
        loop {
            // Registered before looking, so an answer in between is not missed.
            let room = self.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            match self.take_turn() {
                Ok(true) => break,
                Ok(false) => {}
                Err(refused) => return refused,
            }
            // Polled ahead on the other connection: wait for the answer that makes room.
            tokio::select! {
                () = &mut room => {}
                _ = failure.wait_for(Option::is_some) => {}
            }
        }
        // Long poll: no timeout (the runtime must wait as long as it takes), but over when the
        // process dies. Cancel-safe: if the connection goes away while waiting, no event has been
        // taken.
        let invocation = tokio::select! {
            invocation = async { self.inbox.lock().await.recv().await } => invocation,
            _ = failure.wait_for(Option::is_some) => None,
        };
        let Some(invocation) = invocation else {
            return json_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "ServiceException",
                "the function host is stopping this process",
            );
        };
        if self.failure.borrow().is_some() {
            // The process died while this poll was parked (the connection task outlives it
            // briefly). Dropping the event undelivered lets the pool retry it elsewhere.
            return json_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "ServiceException",
                "the function host is stopping this process",
            );
        }
        // No await between taking the event and recording it as current: either the event is
        // still in the channel or the state knows it was handed out.
        let Invocation { request_id, event, deadline_ms, trace_id, reply, start } = invocation;
        let mut response = Response::new(StatusCode::OK, event);
        let headers = &mut response.headers;
        headers.push_static("content-type", "application/json");
        let deadline = deadline_ms.to_string();
        headers.push_value("lambda-runtime-deadline-ms", Bytes::from(deadline));
        headers.push_value("lambda-runtime-invoked-function-arn", self.arn.clone());
        // Both made by keygate (a UUID, an X-Ray header), so valid header values.
        headers.push_value("lambda-runtime-aws-request-id", Bytes::from(request_id.clone()));
        headers.push_value("lambda-runtime-trace-id", Bytes::from(trace_id));
        let mut state = self.lock();
        // Queued behind another, it starts when that one is answered.
        if !self.sequential || state.current.is_empty() {
            self.started(&request_id, &start);
        }
        state.current.push(Current { request_id, reply, start });
        response
    }

    /// Marks an invocation as (maybe) started, saying `START` in the function log.
    fn started(&self, request_id: &str, start: &Start) {
        if start.mark()
            && let Some(log) = &self.log
        {
            log.platform(&format!("START RequestId: {request_id} Version: $LATEST"));
        }
    }

    /// Whether a `/next` may wait for an event now (`false`: not yet, there is no room in the
    /// queue), or the refusal when it may not at all.
    fn take_turn(&self) -> Result<bool, Response> {
        let mut state = self.lock();
        if self.failure.borrow().is_some() {
            return Err(invalid_state("the runtime already failed; it must exit"));
        }
        if state.current.len() >= self.max_concurrency {
            if self.sequential {
                return Ok(false);
            }
            let message = if self.max_concurrency == 1 {
                format!(
                    "State transition from Invoke to Ready failed for runtime: invocation {} \
                     has no response or error yet",
                    state.current[0].request_id
                )
            } else {
                format!(
                    "State transition from Invoke to Ready failed for runtime: all {} \
                     invocations (AWS_LAMBDA_MAX_CONCURRENCY) have no response or error yet",
                    self.max_concurrency
                )
            };
            return Err(invalid_state(&message));
        }
        state.initialized = true;
        state.initialized_at.get_or_insert_with(std::time::Instant::now);
        Ok(true)
    }

    /// Takes the pending reply for `request_id` (`take`), or only checks that it is pending so a
    /// bad request is refused before its body is read.
    fn current_reply(
        &self,
        request_id: &str,
        take: bool,
    ) -> Result<Option<oneshot::Sender<Outcome>>, Refusal> {
        let mut state = self.lock();
        if state.current.is_empty() {
            return Err(Refusal::NoInvocation);
        }
        match state.current.iter().position(|c| c.request_id == request_id) {
            None => Err(Refusal::WrongRequestId),
            Some(at) if take => {
                if !self.sequential {
                    return Ok(Some(state.current.swap_remove(at).reply));
                }
                // Answered out of order, the runtime may have started any event before this
                // one: count them all as started (never run twice elsewhere).
                for c in &state.current[..=at] {
                    self.started(&c.request_id, &c.start);
                }
                let answered = state.current.remove(at);
                let now = std::time::Instant::now();
                let took = answered.start.at().map_or(Duration::ZERO, |t| now.duration_since(t));
                let took_us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
                state.pace_us = if state.paced == 0 {
                    took_us
                } else {
                    (state.pace_us.saturating_mul(7).saturating_add(took_us)) / 8
                };
                state.paced = state.paced.saturating_add(1);
                // The next in line starts now.
                if let Some(next) = state.current.first() {
                    self.started(&next.request_id, &next.start);
                }
                drop(state);
                self.room.notify_waiters();
                Ok(Some(answered.reply))
            }
            Some(_) => Ok(None),
        }
    }

    /// After an answer saying the runtime exits ([`exiting`]): the process is failed now, not
    /// when it is gone.
    /// (Queued delivery only: a Lambda Managed Instances runtime answers its other events before
    /// it exits, and those must not fail meanwhile.)
    fn exiting(&self, exiting: bool) {
        if exiting && self.sequential {
            self.fail(Failure::Exited(
                "the runtime is exiting after an uncaught exception".to_owned(),
            ));
        }
    }

    /// Whether the process answers its events fast enough (under a millisecond on average,
    /// lately) that an event may wait behind the one it runs rather than for another process.
    pub(crate) fn keeps_up(&self) -> bool {
        let state = self.lock();
        self.sequential
            && state.paced >= PACED_AFTER
            && u128::from(state.pace_us) < self.queue_behind.as_micros()
    }

    /// After the process died ([`RuntimeApi::fail`]): waits until every connection it had open
    /// has been read to its end (so every answer it wrote is taken), at most `within`; if some is
    /// still open then, every event handed out counts as started. Then which events started is
    /// final ([`RuntimeApi::until_drained`]).
    pub(crate) async fn drain(&self, within: Duration) {
        let mut open = self.open.subscribe();
        if tokio::time::timeout(within, open.wait_for(|n| *n == 0)).await.is_err() {
            let state = self.lock();
            for c in &state.current {
                self.started(&c.request_id, &c.start);
            }
        }
        self.drained.send_replace(true);
    }

    /// Waits until [`RuntimeApi::drain`] is over.
    pub(crate) async fn until_drained(&self) {
        let _ = self.drained.subscribe().wait_for(|d| *d).await;
    }

    fn complete(&self, request_id: &str, outcome: Outcome) -> Response {
        match self.current_reply(request_id, true) {
            Ok(reply) => {
                // The invoker may have given up (timeout); then the process is being killed and
                // nobody needs the answer.
                if let Some(reply) = reply {
                    let _ = reply.send(outcome);
                }
                accepted()
            }
            Err(refusal) => refusal.into_response(),
        }
    }

    fn response(&self, request_id: &str, body: Bytes) -> Response {
        self.complete(request_id, Outcome::Response(body))
    }

    /// A `/response` over [`MAX_RESPONSE_BYTES`] fails its invocation, as on Lambda.
    fn response_too_large(&self, request_id: &str) -> Response {
        if let Err(refusal) = self.current_reply(request_id, false) {
            return refusal.into_response();
        }
        let outcome = Outcome::Error {
            error_type: "Function.ResponseSizeTooLarge".to_owned(),
            message: format!(
                "Response payload size exceeded maximum allowed payload size \
                 ({MAX_RESPONSE_BYTES} bytes)."
            ),
        };
        let _ = self.complete(request_id, outcome);
        too_large()
    }

    fn error(&self, request_id: &str, headers: &Fields, body: &[u8]) -> Response {
        if let Err(refusal) = self.current_reply(request_id, false) {
            return refusal.into_response();
        }
        let (error_type, message) = parse_error(headers, body);
        self.complete(request_id, Outcome::Error { error_type, message })
    }

    fn init_error(&self, headers: &Fields, body: &[u8]) -> Response {
        if self.lock().initialized {
            return invalid_state(
                "State transition from Ready to InitError failed for runtime: init is over",
            );
        }
        let (error_type, message) = parse_error(headers, body);
        self.fail(Failure::InitError(format!("{error_type}: {message}")));
        accepted()
    }
}

impl keygate_http::Service for RuntimeApi {
    type Admitted = ();

    /// Every request goes ahead: its own process is the only client, and `handle` refuses a bad
    /// one.
    async fn admit(&self, _head: &Request, _peer: SocketAddr) -> keygate_http::Admit<()> {
        keygate_http::Admit::Proceed(())
    }

    fn call(
        &self,
        req: Request,
        (): (),
        _peer: SocketAddr,
    ) -> impl Future<Output = Response> + Send {
        handle(self, req)
    }

    fn too_large(&self, head: &Request) -> Response {
        match route(&head.method, head.path()) {
            Route::Response(id) => self.response_too_large(&id),
            _ => too_large(),
        }
    }

    fn admit_connection(&self, peer: SocketAddr) -> impl Future<Output = bool> + Send {
        self.admits_peer(peer)
    }

    fn connection_closed(&self, _peer: SocketAddr) {
        self.open.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// Serves the Runtime API on `listener` until the task is aborted. Connections belong to this
/// task, so aborting it (when the process is reaped) also drops every connection, including a
/// `/next` long poll that would otherwise wait forever. Reads have no timeout: a runtime may sit
/// in `/next` or between requests as long as it likes.
pub(crate) async fn serve(listener: TcpListener, api: Arc<RuntimeApi>) {
    let options = keygate_http::Options {
        max_body: MAX_RESPONSE_BYTES,
        read_timeout: None,
        body_timeout: None,
        write_timeout: None,
        // One process, a connection per concurrent `/next` (up to `maxConcurrency`, at most
        // 1,600); these only bound a misbehaving one.
        max_connections: 4096,
        // Only the function's own processes get past `admit_connection`.
        max_per_client: 0,
        max_buffered: 8 * MAX_RESPONSE_BYTES,
        drain: Duration::ZERO,
        tls: None,
        read_after_peer_gone: true,
    };
    keygate_http::serve(listener, api, options, std::future::pending()).await;
}

/// Whether an answer says the runtime exits after it (`keygate-runtime-exiting`, keygate's
/// bootstrap after an uncaught exception): the process takes no event from then on, so none is
/// handed to it (and taken for started) while it exits.
fn exiting(headers: &Fields) -> bool {
    headers.get(EXITING_HEADER).is_some()
}

const EXITING_HEADER: &str = "keygate-runtime-exiting";

enum Route {
    Next,
    Response(String),
    Error(String),
    InitError,
    MethodNotAllowed,
    NotFound,
}

fn route(method: &Method, path: &str) -> Route {
    let Some(rest) = path.strip_prefix("/2018-06-01/runtime/") else { return Route::NotFound };
    let (allowed, route) = match rest {
        "invocation/next" => (Method::GET, Route::Next),
        "init/error" => (Method::POST, Route::InitError),
        _ => match rest.strip_prefix("invocation/").and_then(|r| r.split_once('/')) {
            Some((id, "response")) if !id.is_empty() => {
                (Method::POST, Route::Response(id.to_owned()))
            }
            Some((id, "error")) if !id.is_empty() => (Method::POST, Route::Error(id.to_owned())),
            _ => return Route::NotFound,
        },
    };
    if method == allowed { route } else { Route::MethodNotAllowed }
}

async fn handle(api: &RuntimeApi, req: Request) -> Response {
    match route(&req.method, req.path()) {
        Route::Next => api.next().await,
        Route::Response(id) => {
            let exiting = exiting(&req.headers);
            let res = api.response(&id, req.body);
            api.exiting(exiting);
            res
        }
        Route::Error(id) => {
            let res = api.error(&id, &req.headers, &req.body);
            api.exiting(exiting(&req.headers));
            res
        }
        Route::InitError => api.init_error(&req.headers, &req.body),
        Route::MethodNotAllowed => {
            json_error(StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed", "Method Not Allowed")
        }
        Route::NotFound => json_error(StatusCode::NOT_FOUND, "NotFound", "404 page not found"),
    }
}

/// Why a `/response` or `/error` is refused (as the RIE refuses it).
enum Refusal {
    NoInvocation,
    WrongRequestId,
}

impl Refusal {
    fn into_response(self) -> Response {
        match self {
            Self::NoInvocation => invalid_state(
                "State transition from Ready to InvocationResponse failed for runtime: no \
                 invocation is in progress",
            ),
            Self::WrongRequestId => invalid_request_id(),
        }
    }
}

/// Reads `{"errorMessage", "errorType", "stackTrace"}` leniently: the type falls back to the
/// `Lambda-Runtime-Function-Error-Type` header, then `Unhandled`; a body that is not that JSON
/// becomes the message.
fn parse_error(headers: &Fields, body: &[u8]) -> (String, String) {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let field = |name: &str| {
        parsed
            .as_ref()
            .and_then(|v| v.get(name))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    let error_type = field("errorType")
        .or_else(|| {
            headers
                .get(ERROR_TYPE_HEADER)
                .and_then(|v| std::str::from_utf8(v).ok())
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "Unhandled".to_owned());
    let message = match (&parsed, field("errorMessage")) {
        (_, Some(message)) => message,
        (Some(Value::Object(_)), None) => String::new(),
        _ => String::from_utf8_lossy(body).into_owned(),
    };
    (truncate(error_type), truncate(message))
}

fn truncate(mut s: String) -> String {
    if s.len() > MAX_ERROR_MESSAGE_BYTES {
        let mut end = MAX_ERROR_MESSAGE_BYTES;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push('…');
    }
    s
}

/// An X-Ray style trace header (`Sampled=0`: nothing is traced), e.g.
/// `Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=0`. Written in
/// place: one per invocation.
pub(crate) fn new_trace_id() -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    fn hex(out: &mut String, v: u128, digits: u32) {
        for i in (0..digits).rev() {
            out.push(char::from(HEX[((v >> (4 * i)) & 0xf) as usize]));
        }
    }
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let mut out = String::with_capacity(72);
    out.push_str("Root=1-");
    hex(&mut out, u128::from(secs & 0xffff_ffff), 8);
    out.push('-');
    hex(&mut out, uuid::Uuid::new_v4().as_u128() >> 32, 24);
    out.push_str(";Parent=");
    hex(&mut out, uuid::Uuid::new_v4().as_u128() >> 64, 16);
    out.push_str(";Sampled=0");
    out
}

fn json_response(status: StatusCode, body: Bytes) -> Response {
    let mut response = Response::new(status, body);
    response.headers.push_static("content-type", "application/json");
    response
}

fn json_error(status: StatusCode, error_type: &str, message: &str) -> Response {
    let body = json!({"errorMessage": message, "errorType": error_type});
    json_response(status, Bytes::from(body.to_string()))
}

/// The answer to every accepted `/response` and `/error` (once per invocation: no JSON building).
fn accepted() -> Response {
    json_response(StatusCode::ACCEPTED, Bytes::from_static(br#"{"status":"OK"}"#))
}

fn invalid_state(message: &str) -> Response {
    json_error(StatusCode::FORBIDDEN, "InvalidStateTransition", message)
}

fn invalid_request_id() -> Response {
    json_error(StatusCode::BAD_REQUEST, "InvalidRequestID", "Invalid request ID")
}

fn too_large() -> Response {
    json_error(
        StatusCode::PAYLOAD_TOO_LARGE,
        "RequestEntityTooLarge",
        &format!("Exceeded maximum allowed payload size ({MAX_RESPONSE_BYTES} bytes)."),
    )
}

#[cfg(test)]
mod tests {
    use http_body_util::{BodyExt, Full};
    use hyper_util::rt::TokioIo;

    use super::*;

    struct Harness {
        api: Arc<RuntimeApi>,
        inbox: mpsc::Sender<Invocation>,
        addr: SocketAddr,
        server: tokio::task::JoinHandle<()>,
    }

    impl Drop for Harness {
        fn drop(&mut self) {
            self.server.abort();
        }
    }

    async fn harness() -> Harness {
        harness_with(1).await
    }

    async fn harness_with(max_concurrency: u32) -> Harness {
        harness_queued(max_concurrency, 0).await
    }

    async fn harness_queued(max_concurrency: u32, queue_depth: u32) -> Harness {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (api, inbox) = RuntimeApi::new(
            "arn:aws:lambda:eu-west-1:000000000000:function:svc-dev-f",
            max_concurrency,
            queue_depth,
            Duration::from_millis(1),
            None,
        );
        // The test process itself plays the function.
        let expected = crate::peer::Expected {
            root: std::process::id(),
            uid: nix::unistd::geteuid().as_raw(),
            exclusive: false,
        };
        api.set_owner(Owner { expected, listener: addr, function: Arc::from("f") });
        let server = tokio::spawn(serve(listener, Arc::clone(&api)));
        Harness { api, inbox, addr, server }
    }

    struct Reply {
        status: StatusCode,
        headers: http::HeaderMap,
        body: Bytes,
    }

    impl Reply {
        fn json(&self) -> Value {
            serde_json::from_slice(&self.body).unwrap()
        }
    }

    async fn send(
        addr: SocketAddr,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Reply {
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
        tokio::spawn(conn);
        let mut req =
            http::Request::builder().method(method).uri(path).header("host", addr.to_string());
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp =
            sender.send_request(req.body(Full::new(Bytes::from(body))).unwrap()).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        Reply { status, headers, body }
    }

    fn invocation(id: &str, event: &'static str) -> (Invocation, oneshot::Receiver<Outcome>) {
        let (reply, rx) = oneshot::channel();
        let inv = Invocation {
            request_id: id.to_owned(),
            event: Bytes::from_static(event.as_bytes()),
            deadline_ms: 1_700_000_000_000,
            trace_id: new_trace_id(),
            reply,
            start: Arc::new(Start::default()),
        };
        (inv, rx)
    }

    const NEXT: &str = "/2018-06-01/runtime/invocation/next";

    #[test]
    fn trace_ids_have_the_x_ray_shape_and_differ() {
        let a = new_trace_id();
        let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
        let rest = a.strip_prefix("Root=1-").and_then(|r| r.strip_suffix(";Sampled=0")).unwrap();
        let (root, parent) = rest.split_once(";Parent=").unwrap();
        let (time, id) = root.split_once('-').unwrap();
        assert!(hex(time, 8) && hex(id, 24) && hex(parent, 16), "{a}");
        assert_ne!(a, new_trace_id());
    }

    #[tokio::test]
    async fn next_hands_out_the_event_with_lambda_headers() {
        let h = harness().await;
        let (inv, _rx) = invocation("req-1", r#"{"k":"v"}"#);
        let start = Arc::clone(&inv.start);
        h.inbox.send(inv).await.unwrap();
        let r = send(h.addr, Method::GET, NEXT, &[], vec![]).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(&r.body[..], br#"{"k":"v"}"#);
        assert_eq!(r.headers["lambda-runtime-aws-request-id"], "req-1");
        assert_eq!(r.headers["lambda-runtime-deadline-ms"], "1700000000000");
        assert_eq!(
            r.headers["lambda-runtime-invoked-function-arn"],
            "arn:aws:lambda:eu-west-1:000000000000:function:svc-dev-f"
        );
        let trace = r.headers["lambda-runtime-trace-id"].to_str().unwrap();
        assert!(trace.starts_with("Root=1-") && trace.ends_with(";Sampled=0"), "{trace}");
        assert_eq!(r.headers["content-type"], "application/json");
        assert!(start.at().is_some());
        assert_eq!(h.api.phase(), Phase::Busy);
    }

    /// Queued delivery: events handed out behind a running one start, in order, as the one ahead
    /// is answered; a poll past the queue waits for room instead of failing; and when the process
    /// dies, the events never started are known once its connections are read to their end.
    #[tokio::test]
    async fn queued_events_start_in_order_as_the_ones_ahead_are_answered() {
        let h = harness_queued(1, 2).await;
        let mut starts = Vec::new();
        let mut replies = Vec::new();
        let mut events = Vec::new();
        for id in ["q-1", "q-2", "q-3", "q-4"] {
            let (inv, rx) = invocation(id, "{}");
            starts.push(Arc::clone(&inv.start));
            replies.push(rx);
            events.push(inv);
        }
        let fourth_event = events.pop().unwrap();
        // (The pool hands a process at most as many events as it holds, the inbox's room.)
        for inv in events {
            h.inbox.send(inv).await.unwrap();
        }
        for id in ["q-1", "q-2", "q-3"] {
            let r = send(h.addr, Method::GET, NEXT, &[], vec![]).await;
            assert_eq!(r.headers["lambda-runtime-aws-request-id"], id);
        }
        h.inbox.send(fourth_event).await.unwrap();
        let started = |starts: &[Arc<Start>]| -> Vec<bool> {
            starts.iter().map(|s| s.at().is_some()).collect()
        };
        assert_eq!(started(&starts), [true, false, false, false]);
        // A fourth poll has no room (1 running + 2 queued) and waits.
        let addr = h.addr;
        let fourth = tokio::spawn(async move { send(addr, Method::GET, NEXT, &[], vec![]).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!fourth.is_finished(), "a poll past the queue must wait, not fail");
        let route = |id: &str| format!("/2018-06-01/runtime/invocation/{id}/response");
        let ok = send(h.addr, Method::POST, &route("q-1"), &[], b"1".to_vec()).await;
        assert_eq!(ok.status, StatusCode::ACCEPTED);
        assert_eq!(started(&starts), [true, true, false, false]);
        let r = fourth.await.unwrap();
        assert_eq!(r.headers["lambda-runtime-aws-request-id"], "q-4");
        // Answered out of order, every event up to it counts as started.
        send(h.addr, Method::POST, &route("q-3"), &[], b"3".to_vec()).await;
        assert_eq!(started(&starts), [true, true, true, false]);
        assert!(!h.api.keeps_up(), "too few events to judge the pace");
        // Answered in order from here: each answer starts the next.
        send(h.addr, Method::POST, &route("q-2"), &[], b"2".to_vec()).await;
        assert_eq!(started(&starts), [true, true, true, true]);
        for (rx, body) in replies.into_iter().zip(["1", "2", "3"]) {
            assert_eq!(rx.await.unwrap(), Outcome::Response(Bytes::from(body)));
        }
    }

    #[tokio::test]
    async fn the_drain_waits_for_open_connections_then_counts_the_rest_as_started() {
        let h = harness_queued(1, 1).await;
        let (a, _ra) = invocation("d-1", "{}");
        let (b, _rb) = invocation("d-2", "{}");
        let (sa, sb) = (Arc::clone(&a.start), Arc::clone(&b.start));
        h.inbox.send(a).await.unwrap();
        h.inbox.send(b).await.unwrap();
        // Both handed out on one kept-alive connection that stays open.
        let mut conn = tokio::net::TcpStream::connect(h.addr).await.unwrap();
        let poll = format!("GET {NEXT} HTTP/1.1\r\nhost: x\r\n\r\n").repeat(2);
        tokio::io::AsyncWriteExt::write_all(&mut conn, poll.as_bytes()).await.unwrap();
        let until = std::time::Instant::now() + Duration::from_secs(5);
        while h.api.lock().current.len() < 2 {
            assert!(std::time::Instant::now() < until, "the events were not handed out");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(sa.at().is_some() && sb.at().is_none());
        h.api.fail(Failure::Exited("gone".to_owned()));
        // The connection is still open: the drain gives up after its time, and then nothing
        // can tell whether d-2 started, so it counts as started.
        h.api.drain(Duration::from_millis(100)).await;
        assert!(sb.at().is_some());
        drop(conn);
    }

    #[tokio::test]
    async fn the_drain_ends_when_the_connections_close_and_keeps_unstarted_events_unstarted() {
        let h = harness_queued(1, 1).await;
        let (a, _ra) = invocation("e-1", "{}");
        let (b, _rb) = invocation("e-2", "{}");
        let sb = Arc::clone(&b.start);
        h.inbox.send(a).await.unwrap();
        h.inbox.send(b).await.unwrap();
        send(h.addr, Method::GET, NEXT, &[], vec![]).await;
        send(h.addr, Method::GET, NEXT, &[], vec![]).await;
        h.api.fail(Failure::Exited("gone".to_owned()));
        // The test's connections closed (each `send` drops its own).
        let drained =
            tokio::time::timeout(Duration::from_secs(5), h.api.drain(Duration::from_secs(30)));
        drained.await.expect("the drain ends once the connections are closed");
        assert!(sb.at().is_none(), "e-2 never started: it may run elsewhere");
        tokio::time::timeout(Duration::from_secs(1), h.api.until_drained()).await.unwrap();
    }

    #[tokio::test]
    async fn response_for_the_current_id_is_delivered_verbatim() {
        let h = harness().await;
        let (inv, rx) = invocation("req-1", "{}");
        h.inbox.send(inv).await.unwrap();
        send(h.addr, Method::GET, NEXT, &[], vec![]).await;

        let wrong = send(
            h.addr,
            Method::POST,
            "/2018-06-01/runtime/invocation/other/response",
            &[],
            b"x".to_vec(),
        )
        .await;
        assert_eq!(wrong.status, StatusCode::BAD_REQUEST);
        assert_eq!(wrong.json()["errorType"], "InvalidRequestID");

        let ok = send(
            h.addr,
            Method::POST,
            "/2018-06-01/runtime/invocation/req-1/response",
            &[],
            b"not json \xff".to_vec(),
        )
        .await;
        assert_eq!(ok.status, StatusCode::ACCEPTED);
        assert_eq!(ok.json(), json!({"status": "OK"}));
        assert_eq!(rx.await.unwrap(), Outcome::Response(Bytes::from_static(b"not json \xff")));

        // Answering twice is a state error.
        let again = send(
            h.addr,
            Method::POST,
            "/2018-06-01/runtime/invocation/req-1/response",
            &[],
            vec![],
        )
        .await;
        assert_eq!(again.status, StatusCode::FORBIDDEN);
        assert_eq!(again.json()["errorType"], "InvalidStateTransition");
        assert_eq!(h.api.phase(), Phase::Idle);
    }

    #[tokio::test]
    async fn error_is_parsed_leniently() {
        let h = harness().await;
        let (inv, rx) = invocation("req-1", "{}");
        h.inbox.send(inv).await.unwrap();
        send(h.addr, Method::GET, NEXT, &[], vec![]).await;
        let body = br#"{"errorType":"MyError","errorMessage":"boom","stackTrace":[]}"#.to_vec();
        let r = send(
            h.addr,
            Method::POST,
            "/2018-06-01/runtime/invocation/req-1/error",
            &[(ERROR_TYPE_HEADER, "Unhandled")],
            body,
        )
        .await;
        assert_eq!(r.status, StatusCode::ACCEPTED);
        assert_eq!(
            rx.await.unwrap(),
            Outcome::Error { error_type: "MyError".into(), message: "boom".into() }
        );

        let (inv, rx) = invocation("req-2", "{}");
        h.inbox.send(inv).await.unwrap();
        send(h.addr, Method::GET, NEXT, &[], vec![]).await;
        let r = send(
            h.addr,
            Method::POST,
            "/2018-06-01/runtime/invocation/req-2/error",
            &[(ERROR_TYPE_HEADER, "Runtime.Weird")],
            b"plain text".to_vec(),
        )
        .await;
        assert_eq!(r.status, StatusCode::ACCEPTED);
        assert_eq!(
            rx.await.unwrap(),
            Outcome::Error { error_type: "Runtime.Weird".into(), message: "plain text".into() }
        );
    }

    #[tokio::test]
    async fn bad_paths_methods_and_states_are_refused() {
        let h = harness().await;
        let r = send(h.addr, Method::GET, "/2018-06-01/runtime/nope", &[], vec![]).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND);
        let r = send(h.addr, Method::GET, "/", &[], vec![]).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND);
        let r = send(h.addr, Method::POST, NEXT, &[], vec![]).await;
        assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
        let r = send(h.addr, Method::POST, "/2018-06-01/runtime/invocation//response", &[], vec![])
            .await;
        assert_eq!(r.status, StatusCode::NOT_FOUND);
        // A response before any event was handed out.
        let r =
            send(h.addr, Method::POST, "/2018-06-01/runtime/invocation/x/response", &[], vec![])
                .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN);
        assert_eq!(r.json()["errorType"], "InvalidStateTransition");
        assert_eq!(h.api.phase(), Phase::Init);
    }

    #[tokio::test]
    async fn init_error_is_accepted_only_during_init() {
        let h = harness().await;
        let mut failure = h.api.failure();
        let body = br#"{"errorType":"Runtime.NoSuchHandler","errorMessage":"no handler"}"#.to_vec();
        let r =
            send(h.addr, Method::POST, "/2018-06-01/runtime/init/error", &[], body.clone()).await;
        assert_eq!(r.status, StatusCode::ACCEPTED);
        let f = failure.wait_for(Option::is_some).await.unwrap().clone();
        assert_eq!(f, Some(Failure::InitError("Runtime.NoSuchHandler: no handler".into())));
        // After a failure /next is refused.
        let r = send(h.addr, Method::GET, NEXT, &[], vec![]).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN);

        let h = harness().await;
        let (inv, _rx) = invocation("req-1", "{}");
        h.inbox.send(inv).await.unwrap();
        send(h.addr, Method::GET, NEXT, &[], vec![]).await;
        let r = send(h.addr, Method::POST, "/2018-06-01/runtime/init/error", &[], body).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN);
    }

    #[tokio::test]
    async fn second_next_while_busy_is_a_state_error() {
        let h = harness().await;
        let (inv, _rx) = invocation("req-1", "{}");
        h.inbox.send(inv).await.unwrap();
        send(h.addr, Method::GET, NEXT, &[], vec![]).await;
        let r = send(h.addr, Method::GET, NEXT, &[], vec![]).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN);
    }

    #[tokio::test]
    async fn a_managed_instances_runtime_holds_up_to_its_max_concurrency() {
        let h = harness_with(2).await;
        let (one, one_rx) = invocation("req-1", r#"{"n":1}"#);
        let (two, two_rx) = invocation("req-2", r#"{"n":2}"#);
        h.inbox.send(one).await.unwrap();
        h.inbox.send(two).await.unwrap();
        let a = send(h.addr, Method::GET, NEXT, &[], vec![]).await;
        let b = send(h.addr, Method::GET, NEXT, &[], vec![]).await;
        let ids = [&a, &b].map(|r| r.headers["lambda-runtime-aws-request-id"].clone());
        assert_eq!(ids, ["req-1", "req-2"]);
        assert_eq!(&b.body[..], br#"{"n":2}"#);
        // A third poll while both are held is a state error, as a second one is with one slot.
        let third = send(h.addr, Method::GET, NEXT, &[], vec![]).await;
        assert_eq!(third.status, StatusCode::FORBIDDEN);
        assert_eq!(third.json()["errorType"], "InvalidStateTransition");
        // Answered in any order, each by its own id.
        let path = |id: &str| format!("/2018-06-01/runtime/invocation/{id}/response");
        let r = send(h.addr, Method::POST, &path("req-2"), &[], b"two".to_vec()).await;
        assert_eq!(r.status, StatusCode::ACCEPTED);
        assert_eq!(h.api.phase(), Phase::Busy);
        let r = send(h.addr, Method::POST, &path("nope"), &[], vec![]).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
        let r = send(h.addr, Method::POST, &path("req-1"), &[], b"one".to_vec()).await;
        assert_eq!(r.status, StatusCode::ACCEPTED);
        assert_eq!(two_rx.await.unwrap(), Outcome::Response(Bytes::from_static(b"two")));
        assert_eq!(one_rx.await.unwrap(), Outcome::Response(Bytes::from_static(b"one")));
        assert_eq!(h.api.phase(), Phase::Idle);
    }

    #[tokio::test]
    async fn oversized_response_fails_the_invocation() {
        let h = harness().await;
        let (inv, rx) = invocation("req-1", "{}");
        h.inbox.send(inv).await.unwrap();
        send(h.addr, Method::GET, NEXT, &[], vec![]).await;
        let big = vec![b'a'; MAX_RESPONSE_BYTES + 1];
        let r =
            send(h.addr, Method::POST, "/2018-06-01/runtime/invocation/req-1/response", &[], big)
                .await;
        assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
        match rx.await.unwrap() {
            Outcome::Error { error_type, .. } => {
                assert_eq!(error_type, "Function.ResponseSizeTooLarge")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn long_error_messages_are_cut_on_a_char_boundary() {
        let s = truncate("é".repeat(MAX_ERROR_MESSAGE_BYTES));
        assert!(s.len() <= MAX_ERROR_MESSAGE_BYTES + '…'.len_utf8());
        assert!(s.ends_with('…'));
    }
}
