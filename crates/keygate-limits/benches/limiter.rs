//! Criterion benches of the per-request limit decisions the gateway makes (a GCRA
//! [`TokenBucket`] and [`check_quota`], under the gateway's own per-key lock), against a naive
//! baseline: a token bucket as `Mutex<(f64 tokens, Instant)>`, the shape most hand-written
//! limiters take.
//!
//! Run: `cargo bench -p keygate-limits` (add `-- --warm-up-time 1 --measurement-time 2` for a
//! quick look).

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use keygate_limits::{
    BucketLimits, Decision, Nanos, QuotaDecision, QuotaWindow, TokenBucket, check_quota,
    period_start,
};
use keygate_types::plan::{Quota, QuotaPeriod};

/// The baseline: float tokens refilled from the elapsed time, under a mutex.
struct NaiveBucket {
    state: Mutex<(f64, Instant)>,
}

impl NaiveBucket {
    fn new(burst: f64, now: Instant) -> Self {
        Self { state: Mutex::new((burst, now)) }
    }

    fn try_acquire(&self, rate: f64, burst: f64, now: Instant) -> bool {
        let mut guard = self.state.lock().unwrap();
        let (tokens, last) = &mut *guard;
        let elapsed = now.saturating_duration_since(*last).as_secs_f64();
        *tokens = (*tokens + elapsed * rate).min(burst);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// xorshift64*: a deterministic, dependency-free stream of key indices.
fn key_indices(n_keys: usize, count: usize) -> Vec<usize> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..count)
        .map(|_| {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            (x.wrapping_mul(0x2545_F491_4F6C_DD1D) % n_keys as u64) as usize
        })
        .collect()
}

/// What a caller does with a decision: branch on it and use the number. (Passing the enum itself
/// to `black_box` would measure a store-forwarding stall of the benchmark, not the limiter.)
fn use_decision(d: Decision) -> u64 {
    match d {
        Decision::Allowed { remaining } => u64::from(remaining),
        Decision::Limited { retry_after } => retry_after.as_secs() | 1 << 63,
    }
}

fn use_quota(d: QuotaDecision) -> u64 {
    match d {
        QuotaDecision::Allowed { remaining } => remaining,
        QuotaDecision::Exceeded { retry_after_secs } => retry_after_secs | 1 << 63,
    }
}

const RATE: f64 = 1000.0;
const BURST: u32 = 100;

fn hot_key(c: &mut Criterion) {
    let limits = BucketLimits::new(RATE, BURST);
    let mut g = c.benchmark_group("hot_key");

    // Time advances 1 ms per call: one token per call, so every call is admitted.
    let mut bucket = TokenBucket::new(limits);
    let mut now = 0u64;
    g.bench_function("gcra/allowed", |b| {
        b.iter(|| {
            now += 1_000_000;
            black_box(use_decision(bucket.try_acquire(Nanos(now))))
        })
    });

    // Time advances 0.5 ms per call, twice the rate: after the burst, every other call is
    // admitted, from a partly filled bucket.
    let mut over = TokenBucket::new(limits);
    let mut now = 0u64;
    g.bench_function("gcra/twice_the_rate", |b| {
        b.iter(|| {
            now += 500_000;
            black_box(use_decision(over.try_acquire(Nanos(now))))
        })
    });

    // Time stands still on an empty bucket: every call is refused (nothing written).
    let mut empty = TokenBucket::new(limits);
    for _ in 0..BURST {
        empty.try_acquire(Nanos(0));
    }
    g.bench_function("gcra/limited", |b| {
        b.iter(|| black_box(use_decision(empty.try_acquire(black_box(Nanos(0))))))
    });

    let base = Instant::now();
    let naive = NaiveBucket::new(f64::from(BURST), base);
    let mut offset = Duration::ZERO;
    g.bench_function("naive_mutex_f64/allowed", |b| {
        b.iter(|| {
            offset += Duration::from_millis(1);
            black_box(naive.try_acquire(RATE, f64::from(BURST), base + offset))
        })
    });
    g.finish();
}

fn many_keys(c: &mut Criterion) {
    let limits = BucketLimits::new(RATE, BURST);
    let mut g = c.benchmark_group("many_keys");
    for n_keys in [10_000usize, 1_000_000] {
        let indices = key_indices(n_keys, 1 << 16);

        let mut buckets: Vec<TokenBucket> = (0..n_keys).map(|_| TokenBucket::new(limits)).collect();
        let (mut i, mut now) = (0usize, 0u64);
        g.bench_with_input(BenchmarkId::new("gcra_vec", n_keys), &n_keys, |b, _| {
            b.iter(|| {
                i = (i + 1) & 0xFFFF;
                now += 1_000;
                black_box(use_decision(buckets[indices[i]].try_acquire(Nanos(now))))
            })
        });
        drop(buckets);

        let mut map: HashMap<u64, TokenBucket> =
            (0..n_keys as u64).map(|k| (k, TokenBucket::new(limits))).collect();
        let (mut i, mut now) = (0usize, 0u64);
        g.bench_with_input(BenchmarkId::new("gcra_hashmap", n_keys), &n_keys, |b, _| {
            b.iter(|| {
                i = (i + 1) & 0xFFFF;
                now += 1_000;
                let bucket = map.get_mut(&(indices[i] as u64)).unwrap();
                black_box(use_decision(bucket.try_acquire(Nanos(now))))
            })
        });
        drop(map);

        let base = Instant::now();
        let naive: Vec<NaiveBucket> =
            (0..n_keys).map(|_| NaiveBucket::new(f64::from(BURST), base)).collect();
        let (mut i, mut offset) = (0usize, Duration::ZERO);
        g.bench_with_input(BenchmarkId::new("naive_mutex_f64_vec", n_keys), &n_keys, |b, _| {
            b.iter(|| {
                i = (i + 1) & 0xFFFF;
                offset += Duration::from_micros(1);
                black_box(naive[indices[i]].try_acquire(RATE, f64::from(BURST), base + offset))
            })
        });
    }
    g.finish();
}

fn quota(c: &mut Criterion) {
    let mut g = c.benchmark_group("quota");
    let q = Quota { limit: u64::MAX >> 20, period: QuotaPeriod::Month, offset: 27 };
    let now = 1_795_000_000_000i64; // 2026-11-18

    // The decision from a count kept by the caller (the gateway keeps it per key and plan).
    let mut used = 0u64;
    g.bench_function("check_quota", |b| {
        b.iter(|| {
            let d = check_quota(&q, used, 0, black_box(now));
            used += u64::from(d.is_allowed());
            black_box(use_quota(d))
        })
    });

    let window = QuotaWindow::for_quota(now, &q);

    g.bench_function("period_start/month", |b| {
        b.iter(|| black_box(period_start(black_box(now), QuotaPeriod::Month, 27)))
    });

    let naive = Mutex::new((window, 0u64));
    g.bench_function("naive_mutex_counter", |b| {
        b.iter(|| {
            let mut guard = naive.lock().unwrap();
            let (w, used) = &mut *guard;
            if !w.contains(now) {
                *w = QuotaWindow::for_quota(now, &q);
                *used = 0;
            }
            let ok = *used < q.limit;
            *used += u64::from(ok);
            black_box(ok)
        })
    });
    g.finish();
}

criterion_group!(benches, hot_key, many_keys, quota);
criterion_main!(benches);
