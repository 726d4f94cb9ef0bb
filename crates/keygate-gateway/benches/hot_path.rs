//! Criterion benches of the data plane's per-request work, in the order a request meets it:
//!
//! - `key_check`: [`Table::authorize`] (SHA-256 of the presented value, one hash lookup, the
//!   grant check) against tables of 10k and 1M keys, rotating over 4096 known values spread
//!   across the whole key range (`10k`, `1M`: a working set of a few MB, mostly in L2/L3, as
//!   when a few thousand keys are active); `1M_cold` rotates over 2^18 values, a working set
//!   far larger than the last-level cache, as when traffic is spread over most keys, so most
//!   checks miss the cache; `unknown` is a value not in the 1M table.
//!   Target: at most 1 µs per check at 1M keys (measured here, not asserted).
//! - `route_match`: [`Router::lookup`] on a realistic stage of 34 routes: a literal path, a path
//!   with two parameters, and a path that descends `/candidates/{id}` before falling back to
//!   the root `/{proxy+}`.
//! - `event`: the lambda-proxy event of a GET (8 headers, a query string, one path parameter)
//!   and of a POST with a 1 KB JSON body, and the mapping of a typical function answer.
//!
//! Tables are built once, lazily, outside the timed loops (1M keys take a few seconds), so a
//! filtered run such as `cargo bench -p keygate-gateway --bench hot_path -- route_match` does
//! not pay for them.
//!
//! Run: `cargo bench -p keygate-gateway --bench hot_path` (add `-- --quick` for a quick look).

use std::cell::OnceCell;
use std::collections::BTreeMap;
use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use keygate_gateway::event::{self, EventInput};
use keygate_gateway::meter::Meter;
use keygate_gateway::router::{Lookup, Router};
use keygate_gateway::table::Table;
use keygate_limits::clock::{Clock, ManualClock, Nanos};
use keygate_types::keyset::KeySet;
use keygate_types::model::{ApiStage, GatewaySnapshot, UsagePlan};
use keygate_types::plan::{Quota, QuotaPeriod, Throttle};
use keygate_types::{HttpMethod, KeyDigest};

/// 2026-11-18, in unix seconds.
const NOW_SECS: i64 = 1_795_000_000;
const API_ID: &str = "a1b2c3d4e5";
const STAGE: &str = "prod";
const PLAN_ID: &str = "pln001";
/// How many known values the key check rotates through (a power of two).
const PROBES: usize = 4096;
/// The same for `1M_cold`: enough that the table entries they touch do not fit in the cache.
const COLD_PROBES: usize = 1 << 18;

/// splitmix64: a deterministic, dependency-free stream.
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The `i`th key value: 40 alphanumerics, as keygate generates them.
fn key_value(i: u64) -> [u8; 40] {
    const ALPHANUM: &[u8; 62] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut state = i ^ 0x5EED_5EED_5EED_5EED;
    let mut out = [0u8; 40];
    // 62^10 < 2^64: ten characters from each draw.
    for chunk in out.chunks_mut(10) {
        let mut r = splitmix64(&mut state);
        for c in chunk {
            *c = ALPHANUM[(r % 62) as usize];
            r /= 62;
        }
    }
    out
}

/// `count` indices spread over `0..n` (xorshift64*).
fn spread_indices(n: usize, count: usize) -> Vec<u64> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..count)
        .map(|_| {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            x.wrapping_mul(0x2545_F491_4F6C_DD1D) % n as u64
        })
        .collect()
}

/// A built table of `n` keys and the values to present to it.
struct KeyFixture {
    n: usize,
    table: Table,
    /// The table's number for (`API_ID`, `STAGE`).
    api_stage: u32,
    /// [`PROBES`] known values.
    probes: Vec<[u8; 40]>,
}

impl KeyFixture {
    /// `count` known values spread over the whole key range, checked to be accepted.
    fn probes(&self, count: usize) -> Vec<[u8; 40]> {
        let probes: Vec<[u8; 40]> =
            spread_indices(self.n, count).into_iter().map(key_value).collect();
        for p in &probes {
            assert!(self.table.authorize(p, self.api_stage, NOW_SECS).is_ok(), "unknown probe");
        }
        probes
    }
}

/// `n` enabled keys in one usage plan granting (`API_ID`, `STAGE`).
fn key_fixture(n: usize) -> KeyFixture {
    let mut keys = KeySet::with_capacity(n, n * 10);
    for i in 0..n as u64 {
        keys.push(&format!("k{i:09}"), KeyDigest::of(&key_value(i)), true, None, &[PLAN_ID]);
    }
    let plan = UsagePlan {
        id: PLAN_ID.to_owned(),
        name: "standard".to_owned(),
        description: None,
        throttle: Some(Throttle { rate_limit: 100.0, burst_limit: 200 }),
        quota: Some(Quota { limit: 1_000_000, period: QuotaPeriod::Month, offset: 0 }),
        api_stages: vec![ApiStage {
            api_id: API_ID.to_owned(),
            stage: STAGE.to_owned(),
            throttle: BTreeMap::new(),
        }],
        fallback: None,
    };
    let snapshot = GatewaySnapshot { version: 1, keys, plans: vec![plan], ..Default::default() };
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::starting_at(Nanos::ZERO, NOW_SECS * 1000));
    let meter = Arc::new(Meter::new(clock));
    let table = Table::build(
        snapshot,
        &meter,
        &keygate_gateway::metrics::Metrics::unregistered(),
        &keygate_gateway::authorizer::Caches::default(),
    );
    assert_eq!(table.key_count(), n);
    let api_stage = table.api_stage(API_ID, STAGE).expect("the plan names the API stage");
    let mut f = KeyFixture { n, table, api_stage, probes: Vec::new() };
    f.probes = f.probes(PROBES);
    f
}

/// What the gateway does with the answer: branch on it and use the key id.
fn check(f: &KeyFixture, presented: &[u8]) -> usize {
    match f.table.authorize(presented, black_box(f.api_stage), NOW_SECS) {
        Ok(auth) => auth.key_id().len(),
        Err(_) => usize::MAX,
    }
}

fn key_check(c: &mut Criterion) {
    let mut g = c.benchmark_group("key_check");

    let small: OnceCell<KeyFixture> = OnceCell::new();
    let mut i = 0usize;
    g.bench_function("10k", |b| {
        let f = small.get_or_init(|| key_fixture(10_000));
        b.iter(|| {
            i = (i + 1) & (PROBES - 1);
            black_box(check(f, &f.probes[i]))
        })
    });
    drop(small);

    let big: OnceCell<KeyFixture> = OnceCell::new();
    let mut i = 0usize;
    g.bench_function("1M", |b| {
        let f = big.get_or_init(|| key_fixture(1_000_000));
        b.iter(|| {
            i = (i + 1) & (PROBES - 1);
            black_box(check(f, &f.probes[i]))
        })
    });

    let cold: OnceCell<Vec<[u8; 40]>> = OnceCell::new();
    let mut i = 0usize;
    g.bench_function("1M_cold", |b| {
        let f = big.get_or_init(|| key_fixture(1_000_000));
        let probes = cold.get_or_init(|| f.probes(COLD_PROBES));
        b.iter(|| {
            i = (i + 1) & (COLD_PROBES - 1);
            black_box(check(f, &probes[i]))
        })
    });
    drop(cold);

    // Far outside the generated range: not in the table.
    let unknown = key_value(u64::MAX - 7);
    g.bench_function("unknown", |b| {
        let f = big.get_or_init(|| key_fixture(1_000_000));
        assert!(f.table.authorize(&unknown, f.api_stage, NOW_SECS).is_err());
        b.iter(|| black_box(check(f, black_box(&unknown))))
    });
    g.finish();
}

/// A realistic stage: literals, parameters at several depths, several methods, CORS, greedy.
fn stage_router() -> Router {
    use HttpMethod::*;
    let routes: &[(&str, HttpMethod)] = &[
        ("/", Get),
        ("/health", Get),
        ("/candidates", Get),
        ("/candidates", Post),
        ("/candidates", Options),
        ("/candidates/search", Get),
        ("/candidates/{id}", Get),
        ("/candidates/{id}", Put),
        ("/candidates/{id}", Patch),
        ("/candidates/{id}", Delete),
        ("/candidates/{id}/documents", Get),
        ("/candidates/{id}/documents", Post),
        ("/candidates/{id}/documents/{docId}", Get),
        ("/candidates/{id}/documents/{docId}", Delete),
        ("/users", Get),
        ("/users", Post),
        ("/users/me", Get),
        ("/users/{id}", Get),
        ("/users/{id}", Put),
        ("/users/{id}", Delete),
        ("/users/{id}/orders", Get),
        ("/users/{id}/orders", Post),
        ("/users/{id}/orders/{orderId}", Get),
        ("/users/{id}/orders/{orderId}", Patch),
        ("/users/{id}/orders/{orderId}/items", Get),
        ("/jobs", Get),
        ("/jobs", Post),
        ("/jobs/{jobId}", Get),
        ("/jobs/{jobId}/apply", Post),
        ("/reports/daily", Get),
        ("/reports/{year}/{month}", Get),
        ("/files/{proxy+}", Any),
        ("/webhooks/{provider}", Post),
        ("/{proxy+}", Any),
    ];
    let mut r = Router::default();
    for (idx, (template, method)) in routes.iter().enumerate() {
        r.add(template, *method, idx).expect("routes are distinct");
    }
    r
}

/// What the gateway does with a lookup: branch on it and use the route index.
fn use_lookup(l: Lookup) -> usize {
    match l {
        Lookup::Found(m) => m.route ^ (m.params.len() << 16),
        Lookup::NoMethod { routes } => usize::MAX - 1 - routes.len(),
        Lookup::NotFound => usize::MAX,
    }
}

fn route_match(c: &mut Criterion) {
    let router = stage_router();
    let found = |path: &str| match router.lookup(path, "GET") {
        Lookup::Found(m) => (m.route, m.params.len()),
        other => panic!("{path}: {other:?}"),
    };
    // A literal that must beat the `{id}` sibling.
    let literal = "/candidates/search";
    assert_eq!(found(literal), (5, 0));
    let params = "/users/12345/orders/ord-98765";
    assert_eq!(found(params), (22, 2));
    // Descends `/candidates/{id}`, finds nothing below, backtracks to the root `/{proxy+}`.
    let greedy = "/candidates/42/history/2024";
    assert_eq!(found(greedy), (33, 1));

    let mut g = c.benchmark_group("route_match");
    for (name, path) in [("literal", literal), ("params", params), ("greedy_fallback", greedy)] {
        g.bench_function(name, |b| {
            b.iter(|| black_box(use_lookup(router.lookup(black_box(path), black_box("GET")))))
        });
    }
    g.finish();
}

/// The fields of a request head holding `pairs`, parsed as the server parses them.
fn headers(pairs: &[(&'static str, &str)]) -> keygate_http::Fields {
    let pairs: Vec<(&str, &[u8])> = pairs.iter().map(|&(n, v)| (n, v.as_bytes())).collect();
    keygate_http::Request::build("GET", "/", &pairs).expect("valid head").headers
}

/// A ~1 KB JSON body, as a client creating a candidate would send.
fn post_body() -> Vec<u8> {
    let body = serde_json::json!({
        "firstName": "Ada",
        "lastName": "Lovelace",
        "email": "ada.lovelace@example.com",
        "phone": "+44 20 7946 0958",
        "location": { "city": "London", "country": "GB", "remote": true },
        "skills": ["rust", "distributed systems", "api design", "postgres", "kubernetes"],
        "experience": [
            { "company": "Analytical Engines Ltd", "title": "Principal Engineer",
              "from": "2019-03", "to": null,
              "summary": "Led the design of the difference engine's control plane and its API." },
            { "company": "Babbage & Co", "title": "Senior Engineer", "from": "2014-09",
              "to": "2019-02", "summary": "Built the punch-card ingestion pipeline." }
        ],
        "education": [{ "school": "University of London", "degree": "BSc Mathematics",
                        "year": 2012 }],
        "links": { "github": "https://github.com/example/ada",
                   "linkedin": "https://www.linkedin.com/in/example-ada" },
        "notes": "Referred by the hiring manager; prefers async interviews; available \
                  from next month; salary expectations shared by email.",
        "tags": ["referral", "senior", "backend"],
        "source": "careers-site",
        "consent": { "gdpr": true, "marketing": false, "date": "2026-11-18T09:30:00Z" }
    });
    let body = serde_json::to_vec(&body).expect("serializable");
    assert!((900..1300).contains(&body.len()), "body is {} bytes", body.len());
    body
}

fn event_bench(c: &mut Criterion) {
    let key = String::from_utf8(key_value(42).to_vec()).expect("ascii");
    let time = time::OffsetDateTime::from_unix_timestamp(NOW_SECS).expect("valid time");
    let peer: SocketAddr = "203.0.113.7:51234".parse().expect("valid address");
    let request_id = "c6af9ac6-7b61-11e6-9a41-93e8deadbeef";
    let ua = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) \
              Chrome/131.0.0.0 Safari/537.36";

    let get_headers = headers(&[
        ("host", "api.example.com"),
        ("user-agent", ua),
        ("accept", "application/json"),
        ("accept-encoding", "gzip, deflate, br"),
        ("accept-language", "en-US,en;q=0.9"),
        ("x-api-key", &key),
        ("x-forwarded-for", "203.0.113.7"),
        ("x-forwarded-proto", "https"),
    ]);
    let get_params = vec![("id".to_owned(), "42".to_owned())];
    let get = EventInput {
        method: "GET",
        path: "/candidates/42",
        stage: STAGE,
        resource: "/candidates/{id}",
        headers: &get_headers,
        query: Some("include=documents&fields=name%2Cemail&limit=20"),
        params: &get_params,
        body: b"",
        peer,
        request_id,
        api_id: API_ID,
        deployment_id: "dpl001",
        api_key: Some((&key, "k000000042")),
        time,
        authorizer: None,
        authorizer_request: None,
    };

    let body = post_body();
    let len = body.len().to_string();
    let post_headers = headers(&[
        ("host", "api.example.com"),
        ("user-agent", ua),
        ("accept", "application/json"),
        ("content-type", "application/json"),
        ("content-length", &len),
        ("x-api-key", &key),
        ("x-forwarded-for", "203.0.113.7"),
        ("x-forwarded-proto", "https"),
    ]);
    let post = EventInput {
        method: "POST",
        path: "/candidates",
        resource: "/candidates",
        headers: &post_headers,
        query: None,
        params: &[],
        body: &body,
        ..get
    };

    let response: &[u8] = br#"{"statusCode":200,"headers":{"content-type":"application/json"},"body":"{\"candidates\":[]}"}"#;
    let parsed = event::parse_response(response).expect("valid response");
    assert_eq!((parsed.status.as_u16(), parsed.headers.len()), (200, 1));

    let mut g = c.benchmark_group("event");
    g.bench_function("build/get", |b| b.iter(|| black_box(event::build(black_box(&get)).len())));
    g.bench_function("build/post_1k", |b| {
        b.iter(|| black_box(event::build(black_box(&post)).len()))
    });
    g.bench_function("parse_response", |b| {
        b.iter(|| match event::parse_response(black_box(response)) {
            Ok(r) => black_box(r.body.len() + r.headers.len()),
            Err(e) => black_box(usize::MAX - e.len()),
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = key_check, route_match, event_bench
}
criterion_main!(benches);
