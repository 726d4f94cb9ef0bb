//! Logging: a function's output becomes `keygate::function` events; event bodies never do.
//!
//! These tests use a current-thread runtime so the thread-local subscriber sees the events of
//! every task the host spawns.

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use keygate_functions::FunctionHost;
use serde_json::json;
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};

use crate::common::{Service, invoke, spec};

/// Every event seen: target and rendered fields.
#[derive(Clone, Default)]
pub(crate) struct Captured(Arc<Mutex<Vec<(String, String)>>>);

impl Captured {
    pub(crate) fn events(&self) -> Vec<(String, String)> {
        self.0.lock().unwrap().clone()
    }
}

impl<S: tracing::Subscriber> Layer<S> for Captured {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        struct Fields(String);
        impl Visit for Fields {
            fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
                let _ = write!(self.0, "{}={:?} ", field.name(), value);
            }
        }
        let mut fields = Fields(String::new());
        event.record(&mut fields);
        self.0.lock().unwrap().push((event.metadata().target().to_owned(), fields.0));
    }
}

pub(crate) fn capture() -> (Captured, tracing::subscriber::DefaultGuard) {
    let captured = Captured::default();
    let subscriber = tracing_subscriber::registry().with(captured.clone());
    (captured, tracing::subscriber::set_default(subscriber))
}

#[tokio::test(flavor = "current_thread")]
async fn function_output_becomes_tracing_events() {
    let (captured, _guard) = capture();
    let host = FunctionHost::default();
    let svc = Service::new();
    let spec = spec("garbage");
    invoke(&host, &svc.f(&spec), json!({})).await.unwrap();
    let started = Instant::now();
    let found = loop {
        let found = captured.events().into_iter().find(|(target, fields)| {
            target == "keygate::function"
                && fields.contains("svc-dev-fn")
                && fields.contains("stdout")
                && fields.contains("garbage")
        });
        if found.is_some() || started.elapsed() > Duration::from_secs(10) {
            break found;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(found.is_some(), "no stdout event in {:#?}", captured.events());
    host.shutdown().await;
}

#[tokio::test(flavor = "current_thread")]
async fn event_and_response_bodies_are_never_logged() {
    let (captured, _guard) = capture();
    let host = FunctionHost::default();
    let svc = Service::new();
    let secret = "kg-secret-api-key-0123456789";
    let event = json!({"httpMethod": "GET", "requestContext": {"identity": {"apiKey": secret}}});
    let echo = spec("echo");
    let raw = invoke(&host, &svc.f(&echo), event.clone()).await.unwrap();
    assert!(String::from_utf8_lossy(&raw).contains(secret));
    // Failures must not log the event either.
    let mut env = spec("env");
    env.timeout_secs = 1;
    let _ = invoke(&host, &svc.f(&env), json!({"testfn": "sleep", "sleep_ms": 5000, "k": secret}))
        .await;
    let _ = invoke(&host, &svc.f(&env), json!({"testfn": "crash", "k": secret})).await;
    host.shutdown().await;
    let events = captured.events();
    assert!(!events.is_empty());
    for (target, fields) in events {
        assert!(!fields.contains(secret), "{target} logged the secret: {fields}");
    }
}

/// The bytes of a flood of `line_bytes`-byte lines of x's (without their newlines) among
/// `events`: logged (a line event each), and dropped (the warnings' `dropped_bytes`).
fn tally(events: &[(String, String)], line_bytes: u64) -> (u64, u64) {
    let logged = events
        .iter()
        .filter(|(target, fields)| target == "keygate::function" && fields.contains("xxx"))
        .count() as u64
        * line_bytes;
    let dropped = events
        .iter()
        .filter_map(|(_, fields)| {
            let rest = fields.split_once("dropped_bytes=")?.1;
            rest.split_whitespace().next()?.parse::<u64>().ok()
        })
        .sum();
    (logged, dropped)
}

#[tokio::test(flavor = "current_thread")]
async fn a_flood_of_output_is_cut_to_the_functions_budget_and_counted() {
    let began = Instant::now();
    let (captured, _guard) = capture();
    let limit = keygate_functions::OutputLimit {
        bytes_per_second: 1,
        burst_bytes: 64 * 1024,
        lines_per_second: 1,
        burst_lines: 100_000,
    };
    let host = FunctionHost::new(keygate_functions::HostOptions {
        output_limit: limit,
        ..keygate_functions::HostOptions::default()
    });
    let svc = Service::new();
    // 80,000 lines of 99 x's: 8,000,000 bytes with the newlines, 7,920,000 without.
    let bootstrap = svc.base_dir().join("bootstrap");
    crate::common::script(
        &bootstrap,
        &format!(
            "head -c 7920000 /dev/zero | tr '\\0' x | fold -w 99\nexec '{}'",
            crate::common::testfn_binary().display()
        ),
    );
    let mut spec = spec("env");
    spec.artifact = Some(bootstrap);
    invoke(&host, &svc.f(&spec), json!({})).await.unwrap();
    host.shutdown().await;

    // Every line is either logged or counted as dropped, once the pipes are drained (exact
    // accounting is `output::tests`: a thread-local subscriber may miss events of a callsite
    // whose interest another test's thread cached).
    let tally = |events: &[(String, String)]| tally(events, 99);
    let started = Instant::now();
    let (logged, dropped) = loop {
        let (logged, dropped) = tally(&captured.events());
        if logged + dropped >= 7_920_000 || started.elapsed() > Duration::from_secs(10) {
            break (logged, dropped);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // Nothing is counted twice. The bound leaves room for the function's own few lines besides
    // the flood: twice, under a loaded full run, 133 bytes more than the flood were counted as
    // dropped (a line of the function's after the budget was spent; which one was not caught).
    assert!(dropped > 0 && logged + dropped <= 7_920_000 + 1024, "{logged} + {dropped}");
    // The burst, plus one byte per second of the test at most.
    let bound = limit.burst_bytes + began.elapsed().as_secs() + 1;
    assert!(logged <= bound, "{logged} bytes logged, over the budget of {bound}");
    let warning = captured.events().into_iter().find(|(_, fields)| {
        fields.contains("function svc-dev-fn:") && fields.contains("bytes of output dropped")
    });
    assert!(warning.is_some(), "no warning about the dropped output");
}

/// Issue 25, finding 10: a function printing as fast as it can (8.9 GB in 7 s) made keygate read
/// and drop all of it, on the CPUs its routes need. Over its budget a pipe is now read one chunk
/// per pause, so the flooder waits on its own full pipe: in a 3 s timeout, what keygate read
/// (logged or dropped) is a few megabytes, not gigabytes.
#[tokio::test(flavor = "current_thread")]
async fn a_function_flooding_its_output_is_read_at_a_trickle_once_over_its_budget() {
    let (captured, _guard) = capture();
    let host = FunctionHost::default();
    let svc = Service::new();
    let bootstrap = svc.base_dir().join("bootstrap");
    crate::common::script(&bootstrap, "exec yes xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx");
    let mut spec = spec("env");
    spec.artifact = Some(bootstrap);
    spec.timeout_secs = 3;
    let result = invoke(&host, &svc.f(&spec), json!({})).await;
    assert!(matches!(result, Err(keygate_functions::InvokeError::Timeout)), "{result:?}");
    host.shutdown().await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    let (logged, dropped) = tally(&captured.events(), 48);
    let read = logged + dropped;
    eprintln!("a 3 s stdout flood: {logged} bytes logged, {dropped} dropped");
    // The default budget's 4 MiB burst and 1 MiB/s, plus one 64 KiB chunk per 50 ms pause.
    let bound = 4 * 1024 * 1024 + 4 * (1024 * 1024 + 20 * 64 * 1024);
    assert!(dropped > 0, "the flood went over the budget");
    assert!(read <= bound, "keygate read {read} bytes of the flood (bound {bound})");
}
