//! Usage reports over stored daily counts: ranges, key filters, and `remaining` computed within
//! each day's quota period (a report that crosses a period starts counting again), with grants.

mod common;

use keygate_control::keys;
use keygate_control::usage::{self, MAX_REPORT_DAYS};
use keygate_control::{Error, Store, plans};
use keygate_limits::calendar::Date;
use keygate_types::model::{DailyUsage, NewUsagePlan};
use keygate_types::plan::{Quota, QuotaPeriod};

fn day(s: &str) -> Date {
    s.parse().unwrap()
}

async fn key(store: &Store, name: &str, plan: &str) -> String {
    keys::create(store, common::key_in(name, plan)).await.unwrap().0.id
}

/// A plan with a weekly quota of 10 whose weeks start on Monday (offset 1); usage written as a
/// gateway writes it (the data plane's counters, not a change).
#[tokio::test]
async fn reports_count_remaining_within_each_quota_period() {
    let dir = tempfile::tempdir().unwrap();
    let backend = keygate_control::open(dir.path()).await.unwrap();
    let store = Store::new(backend.clone(), "test:usage");
    let quota = Quota { limit: 10, period: QuotaPeriod::Week, offset: 1 };
    let weekly = NewUsagePlan { name: "weekly".into(), quota: Some(quota), ..Default::default() };
    let plan = plans::create(&store, weekly, vec![]).await.unwrap().id;
    let (k1, k2) = (key(&store, "k1", &plan).await, key(&store, "k2", &plan).await);
    // 2026-12-06 is a Sunday: the week of Monday 2026-11-30 ends that day.
    let used = |key: &str, day: &str, used: u64| DailyUsage {
        plan_id: plan.clone(),
        key_id: key.to_owned(),
        day: crate::day(day),
        used,
        last_used: None,
    };
    backend
        .add_usage(&[
            used(&k1, "2026-12-05", 4),
            used(&k1, "2026-12-06", 3),
            used(&k1, "2026-12-07", 2),
            used(&k1, "2026-12-08", 1),
            used(&k2, "2026-12-05", 5),
        ])
        .await
        .unwrap();

    let report = usage::report(&store, &plan, None, day("2026-12-04"), day("2026-12-08"));
    let report = report.await.unwrap();
    let pairs = |r: &usage::UsageReport, k: &str| r.values[k].clone();
    assert_eq!(
        pairs(&report, &k1),
        [(0, Some(10)), (4, Some(6)), (3, Some(3)), (2, Some(8)), (1, Some(7))],
        "Monday 2026-12-07 starts a new week"
    );
    assert_eq!(pairs(&report, &k2)[1], (5, Some(5)));
    assert_eq!(
        (report.start_date.as_str(), report.end_date.as_str()),
        ("2026-12-04", "2026-12-08")
    );
    assert_eq!(report.key_names[&k1], "k1");

    // One key only; a one-day range.
    let one = usage::report(&store, &plan, Some("k1"), day("2026-12-06"), day("2026-12-06"));
    let one = one.await.unwrap();
    assert_eq!(one.values.len(), 1);
    assert_eq!(pairs(&one, &k1), [(3, Some(3))]);

    // A grant for the week of 2026-12-07, set on Tuesday: that week only.
    let tuesday_noon = day("2026-12-08").start_unix_ms() + 12 * 3_600_000;
    usage::set_remaining(&store, &plan, "k1", 20, tuesday_noon).await.unwrap();
    let after = usage::report(&store, &plan, Some("k1"), day("2026-12-06"), day("2026-12-08"));
    assert_eq!(pairs(&after.await.unwrap(), &k1), [(3, Some(3)), (2, Some(21)), (1, Some(20))]);

    // Ranges: backwards and too long are refused, the longest allowed is not.
    let backwards = usage::report(&store, &plan, None, day("2026-12-08"), day("2026-12-07"));
    assert!(matches!(backwards.await, Err(Error::Invalid(_))));
    let last = day("2026-12-08");
    let too_long = usage::report(&store, &plan, None, last.add_days(-MAX_REPORT_DAYS), last);
    assert!(matches!(too_long.await, Err(Error::Invalid(_))));
    let longest = usage::report(&store, &plan, None, last.add_days(1 - MAX_REPORT_DAYS), last);
    assert_eq!(longest.await.unwrap().values[&k1].len(), MAX_REPORT_DAYS as usize);

    // Without a quota there is no remaining.
    let free = NewUsagePlan { name: "free".into(), ..Default::default() };
    let free = plans::create(&store, free, vec![]).await.unwrap().id;
    let k3 = key(&store, "k3", &free).await;
    backend
        .add_usage(&[DailyUsage {
            plan_id: free.clone(),
            key_id: k3.clone(),
            day: day("2026-12-05"),
            used: 7,
            last_used: None,
        }])
        .await
        .unwrap();
    let report = usage::report(&store, &free, None, day("2026-12-05"), day("2026-12-05"));
    assert_eq!(report.await.unwrap().values[&k3], [(7, None)]);
}

/// What-if over a recorded history: a proposed daily quota of 5 replayed over three days of two
/// keys' stored usage gives each key's cut-off requests and days; the plan is unchanged.
#[tokio::test]
async fn what_if_replays_the_stored_history_against_a_proposed_quota() {
    use keygate_control::whatif;
    let dir = tempfile::tempdir().unwrap();
    let backend = keygate_control::open(dir.path()).await.unwrap();
    let store = Store::new(backend.clone(), "test:whatif");
    let open_plan = NewUsagePlan { name: "open".into(), ..Default::default() };
    let plan = plans::create(&store, open_plan, vec![]).await.unwrap().id;
    let (heavy, light) = (key(&store, "heavy", &plan).await, key(&store, "light", &plan).await);
    let used = |key: &str, day: &str, used: u64| DailyUsage {
        plan_id: plan.clone(),
        key_id: key.to_owned(),
        day: crate::day(day),
        used,
        last_used: None,
    };
    backend
        .add_usage(&[
            used(&heavy, "2026-12-01", 3), // before the days replayed
            used(&heavy, "2026-12-02", 9),
            used(&heavy, "2026-12-03", 5),
            used(&heavy, "2026-12-04", 7),
            used(&light, "2026-12-03", 2),
        ])
        .await
        .unwrap();
    let daily = Quota { limit: 5, period: QuotaPeriod::Day, offset: 0 };
    let w = whatif::quota(&store, "open", daily, 3, day("2026-12-04")).await.unwrap();
    assert_eq!((w.start_date.as_str(), w.end_date.as_str()), ("2026-12-02", "2026-12-04"));
    let got: Vec<_> = w
        .keys
        .iter()
        .map(|k| (k.key_name.as_deref().unwrap(), k.requests, k.cut_off, k.cut_off_days.clone()))
        .collect();
    assert_eq!(
        got,
        [
            ("heavy", 21, 6, vec!["2026-12-02".to_owned(), "2026-12-04".to_owned()]),
            ("light", 2, 0, vec![]),
        ]
    );
    // A weekly quota of 15 (weeks from Sunday: 2026-11-29): the 1st's 3 count, so the week's
    // allowance runs out on the 3rd.
    let weekly = Quota { limit: 15, period: QuotaPeriod::Week, offset: 0 };
    let w = whatif::quota(&store, &plan, weekly, 3, day("2026-12-04")).await.unwrap();
    assert_eq!((w.keys[0].cut_off, w.keys[0].cut_off_days.len()), (9, 2), "{w:?}");
    // Bad input changes nothing and says why.
    let bad = whatif::quota(&store, "open", daily, 0, day("2026-12-04")).await;
    assert!(matches!(bad, Err(Error::Invalid(m)) if m.contains("--days must be 1 to 366")));
    let bad_offset = Quota { offset: 9, ..weekly };
    let bad = whatif::quota(&store, "open", bad_offset, 3, day("2026-12-04")).await;
    assert!(matches!(bad, Err(Error::Invalid(m)) if m.contains("--quota-offset 9")));
    assert!(matches!(
        whatif::quota(&store, "nope", daily, 3, day("2026-12-04")).await,
        Err(Error::NotFound(_))
    ));
    assert_eq!(plans::find(&store, "open").await.unwrap().quota, None, "nothing changed");
}
