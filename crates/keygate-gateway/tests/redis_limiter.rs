//! The shared limiter against a real Redis: two limiters (two nodes) admit a plan's burst and
//! quota exactly once between them, however their requests interleave.
//!
//! Needs the Redis `.ci/run` starts (or `KEYGATE_TEST_REDIS_URL`): without one these tests are
//! skipped, except under `CI=true`, where they fail.

use std::sync::Arc;

use keygate_gateway::limiter::redis::Redis;
use keygate_gateway::limiter::{Ask, Limiter};
use keygate_gateway::meter::{Admission, Meter, OwnedKeyPlan, StageLimits};
use keygate_limits::bucket::BucketLimits;
use keygate_limits::clock::{Clock, SystemClock};
use keygate_types::plan::{Fallback, Quota, QuotaPeriod};

async fn redis_url() -> Option<String> {
    let url = std::env::var("KEYGATE_TEST_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let addr = url.trim_start_matches("redis://");
    let addr = addr.rsplit_once('@').map_or(addr, |(_, a)| a);
    let addr = addr.split('/').next().unwrap_or(addr);
    match tokio::net::TcpStream::connect(addr).await {
        Ok(_) => Some(url),
        Err(e) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("Redis at {url} is needed under CI=true: {e}")
        }
        Err(e) => {
            eprintln!("skipped: no Redis at {url} ({e}); CI=true makes this a failure");
            None
        }
    }
}

/// A plan id no earlier run used (Redis keeps counters between test runs).
fn fresh_plan() -> String {
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("plan{nanos}")
}

/// One node: its limiter and its counters for the key.
struct Node {
    limiter: Redis,
    counters: OwnedKeyPlan,
    meter: Meter,
}

fn node(url: &str, plan: &str) -> Node {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let limiter = Redis::new(url, Arc::clone(&clock), Fallback::Refuse).unwrap();
    let meter = Meter::new(clock);
    let counters = meter.get_or_create("key1", plan).0.to_owned();
    Node { limiter, counters, meter }
}

impl Node {
    async fn ask(&self, limits: &StageLimits) -> Admission {
        let clock = SystemClock;
        let ask = Ask {
            counters: self.counters.get(),
            limits,
            method_throttle: None,
            mono: clock.now_mono(),
            unix_ms: clock.now_unix_ms(),
        };
        self.limiter.admit(ask).resolve().await
    }
}

/// `n` requests from each node at once; how many were admitted.
async fn race(nodes: &[Arc<Node>], limits: &StageLimits, n: usize) -> (usize, Vec<Admission>) {
    let mut tasks = Vec::new();
    for node in nodes {
        for _ in 0..n {
            let (node, limits) = (Arc::clone(node), limits.clone());
            tasks.push(tokio::spawn(async move { node.ask(&limits).await }));
        }
    }
    let mut all = Vec::new();
    for t in tasks {
        all.push(t.await.unwrap());
    }
    let admitted = all.iter().filter(|a| matches!(a, Admission::Allowed { .. })).count();
    (admitted, all)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_admit_a_burst_once_between_them() {
    let Some(url) = redis_url().await else { return };
    let plan = fresh_plan();
    let nodes = [Arc::new(node(&url, &plan)), Arc::new(node(&url, &plan))];
    // 50 tokens, one more every 1,000 s.
    let limits = StageLimits { throttle: Some(BucketLimits::new(0.001, 50)), ..Default::default() };
    let (admitted, all) = race(&nodes, &limits, 60).await;
    assert_eq!(admitted, 50, "{all:?}");
    let refused = all.iter().find(|a| !matches!(a, Admission::Allowed { .. })).unwrap();
    assert!(
        matches!(refused, Admission::Throttled { retry_after: Some(s) } if (999..=1000).contains(s)),
        "{refused:?}"
    );
    // Each node counted what it admitted, for the store.
    let clock = SystemClock;
    let flushed: u64 =
        nodes.iter().map(|n| pending(&n.meter, &n.counters, clock.now_unix_ms())).sum();
    assert_eq!(flushed, 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_admit_a_quota_once_between_them() {
    let Some(url) = redis_url().await else { return };
    let plan = fresh_plan();
    let nodes = [Arc::new(node(&url, &plan)), Arc::new(node(&url, &plan))];
    let quota = Quota { limit: 30, period: QuotaPeriod::Day, offset: 0 };
    let limits = StageLimits { quota: Some(quota), ..Default::default() };
    let (admitted, all) = race(&nodes, &limits, 40).await;
    assert_eq!(admitted, 30, "{all:?}");
    assert!(all.iter().any(|a| matches!(a, Admission::QuotaExceeded { .. })));
    // The headers of an admitted request say what is left of the quota.
    let fresh = fresh_plan();
    let one = node(&url, &fresh);
    let Admission::Allowed { headers: Some(h) } = one.ask(&limits).await else { panic!() };
    assert!(h.policy().contains("\"quota\";q=30;"), "{}", h.policy());
    assert!(h.ratelimit().contains("\"quota\";r=29;"), "{}", h.ratelimit());
}

/// The usage `counters` hold for the store (what a flush would write).
fn pending(meter: &Meter, counters: &OwnedKeyPlan, unix_ms: i64) -> u64 {
    let _ = meter;
    let window = keygate_limits::calendar::QuotaWindow::for_quota(
        unix_ms,
        &Quota { limit: 1, period: QuotaPeriod::Day, offset: 0 },
    );
    counters.get().known_usage(&window)
}

/// A plan with room takes leases: a node whose key is in use takes a 1,000th of a quota of
/// 100,000 at once, uses it without asking Redis, and gives back what it did not use once the
/// lease is void. A key's first request in a while takes nothing ahead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_are_taken_from_the_shared_count_and_given_back() {
    let Some(url) = redis_url().await else { return };
    let plan = fresh_plan();
    let (a, b) = (node(&url, &plan), node(&url, &plan));
    let quota = Quota { limit: 100_000, period: QuotaPeriod::Day, offset: 0 };
    let limits = StageLimits { quota: Some(quota), ..Default::default() };
    let remaining = |a: Admission| {
        let Admission::Allowed { headers: Some(h) } = a else { panic!("{a:?}") };
        let r = h.ratelimit().to_owned();
        let n = r.split("\"quota\";r=").nth(1).unwrap().split(';').next().unwrap();
        n.parse::<u64>().unwrap()
    };
    let leased = |n: &Node| n.counters.get().with_lease(|l| l.as_ref().map_or(0, |l| l.units));
    // Cold keys: each node asks for its request alone (Redis counts 2).
    assert_eq!(remaining(a.ask(&limits).await), 100_000 - 1);
    assert_eq!(remaining(b.ask(&limits).await), 100_000 - 2);
    assert_eq!((leased(&a), leased(&b)), (0, 0), "no lease for a cold key");
    // In use: A takes 100 (this request and 99 more): Redis counts 102.
    assert_eq!(remaining(a.ask(&limits).await), 100_000 - 102 + 99);
    // B takes 100 more: Redis counts 202; B holds 99.
    assert_eq!(remaining(b.ask(&limits).await), 100_000 - 202 + 99);
    // A's next request comes from its lease.
    assert_eq!(remaining(a.ask(&limits).await), 100_000 - 102 + 98);
    assert_eq!(leased(&a), 98);
    // Void after 100 ms: A gives its 98 back and takes 100 again (202 - 98 + 100 = 204).
    tokio::time::sleep(std::time::Duration::from_millis(150)).await;
    assert_eq!(remaining(a.ask(&limits).await), 100_000 - 204 + 99);
    // Each node counted only what it admitted.
    let clock = SystemClock;
    assert_eq!(pending(&a.meter, &a.counters, clock.now_unix_ms()), 4);
    assert_eq!(pending(&b.meter, &b.counters, clock.now_unix_ms()), 2);
}

/// A `redis-server` of its own serving TLS only, with a certificate for `localhost` signed by
/// nobody the system trusts: its port, its certificate (PEM) and the process (killed on drop).
struct TlsRedis {
    port: u16,
    cert: Vec<u8>,
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn tls_redis() -> Option<TlsRedis> {
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    let dir = tempfile::tempdir().unwrap();
    let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let (cert, key) = (dir.path().join("redis.crt"), dir.path().join("redis.key"));
    std::fs::write(&cert, generated.cert.pem()).unwrap();
    std::fs::write(&key, generated.key_pair.serialize_pem()).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let spawned = std::process::Command::new("redis-server")
        .args(["--port", "0", "--tls-port", &port.to_string(), "--bind", "127.0.0.1"])
        .arg("--tls-cert-file")
        .arg(&cert)
        .arg("--tls-key-file")
        .arg(&key)
        .arg("--tls-ca-cert-file")
        .arg(&cert)
        .args(["--tls-auth-clients", "no", "--save", "", "--appendonly", "no"])
        .stdout(std::process::Stdio::null())
        .spawn();
    let child = match spawned {
        Ok(child) => child,
        Err(e) if ci => panic!("redis-server is needed under CI=true: {e}"),
        Err(e) => {
            eprintln!("skipped: cannot run redis-server ({e}); CI=true makes this a failure");
            return None;
        }
    };
    let redis = TlsRedis { port, cert: generated.cert.pem().into_bytes(), child, _dir: dir };
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return Some(redis);
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("redis-server with TLS did not listen on {port}");
}

/// `rediss://`: the limiter talks TLS to Redis and verifies its certificate, against the CA
/// given (`--redis-ca`) or else the system's roots. A server the limiter cannot verify is a
/// Redis that does not answer: the plan's policy decides (here `refuse`), nothing is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_verifies_the_server_against_the_given_ca() {
    let Some(server) = tls_redis().await else { return };
    let url = format!("rediss://localhost:{}", server.port);
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let limits =
        StageLimits { throttle: Some(BucketLimits::new(100.0, 100)), ..Default::default() };
    let ask = |limiter: &Redis, meter: &Meter| {
        let (counters, _) = meter.get_or_create("key1", "tlsplan");
        let ask = Ask {
            counters,
            limits: &limits,
            method_throttle: None,
            mono: clock.now_mono(),
            unix_ms: clock.now_unix_ms(),
        };
        limiter.admit(ask)
    };

    let trusted =
        Redis::with_ca(&url, Some(server.cert.clone()), Arc::clone(&clock), Fallback::Refuse)
            .unwrap();
    let meter = Meter::new(Arc::clone(&clock));
    let admitted = ask(&trusted, &meter).resolve().await;
    assert!(matches!(admitted, Admission::Allowed { .. }), "{admitted:?}");
    let stats = trusted.stats().unwrap();
    assert!(stats.up && stats.round_trips == 1 && stats.fallback_refuse == 0, "{stats:?}");

    let untrusted = Redis::new(&url, Arc::clone(&clock), Fallback::Refuse).unwrap();
    let refused = ask(&untrusted, &meter).resolve().await;
    assert!(matches!(refused, Admission::Throttled { .. }), "{refused:?}");
    let stats = untrusted.stats().unwrap();
    assert!(!stats.up && stats.fallback_refuse == 1, "{stats:?}");

    // A CA for a connection without TLS is refused when the limiter is made.
    let plain = format!("redis://127.0.0.1:{}", server.port);
    let err =
        Redis::with_ca(&plain, Some(server.cert.clone()), clock, Fallback::Refuse).unwrap_err();
    assert!(err.to_string().contains("rediss://"), "{err}");
}
