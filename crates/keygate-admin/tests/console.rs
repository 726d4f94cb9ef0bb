//! The web console's sign-in, sessions and forms over HTTP (the pages in a real browser are
//! tested by `crates/keygate/tests/e2e/console.rs`): a wrong token, an expired session, a
//! revoked token and a form without its CSRF token or from another site are refused, and
//! changes are audited as `console:<token id>`.

use std::sync::Arc;
use std::time::Duration;

use keygate_admin::AdminState;
use keygate_admin::console::Console;
use keygate_control::admin::{create_token, revoke_token};
use keygate_types::clock::{Clock, ManualClock};
use reqwest::StatusCode;
use reqwest::redirect::Policy;

mod support;

struct Admin {
    base: String,
    state: Arc<AdminState>,
    backend: Arc<dyn keygate_control::ConfigStore>,
    clock: Arc<ManualClock>,
    http: reqwest::Client,
    _running: support::Running,
}

const TTL: Duration = Duration::from_secs(3600);

async fn start() -> Admin {
    let clock =
        Arc::new(ManualClock::starting_at(keygate_types::clock::Nanos::ZERO, 1_800_000_000_000));
    let console = Console::new(TTL, Arc::clone(&clock) as Arc<dyn Clock>, false);
    let running =
        support::start(console, keygate_admin::ServeLimits::default(), "test:console").await;
    let http = reqwest::Client::builder().redirect(Policy::none()).build().unwrap();
    Admin {
        base: format!("http://{}", running.addr),
        state: Arc::clone(&running.state),
        backend: Arc::clone(&running.backend),
        clock,
        http,
        _running: running,
    }
}

/// A signed-in browser: its cookie header and the session's CSRF token.
struct Browser {
    cookie: String,
    csrf: String,
}

impl Admin {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn sign_in(&self, token: &str) -> reqwest::Response {
        self.http.post(self.url("/console/signin")).form(&[("token", token)]).send().await.unwrap()
    }

    async fn browser(&self) -> (Browser, String) {
        let token = create_token(&self.state.store, None).await.unwrap();
        let res = self.sign_in(&token.token).await;
        assert_eq!(res.status(), StatusCode::SEE_OTHER);
        let set = res.headers()["set-cookie"].to_str().unwrap().to_owned();
        let cookie = set.split(';').next().unwrap().to_owned();
        let page = self.page(&cookie, "/console/keys").await;
        assert_eq!(page.0, StatusCode::OK, "{}", page.1);
        let csrf = csrf_of(&page.1);
        (Browser { cookie, csrf }, token.id)
    }

    async fn page(&self, cookie: &str, path: &str) -> (StatusCode, String) {
        let res = self.http.get(self.url(path)).header("cookie", cookie).send().await.unwrap();
        (res.status(), res.text().await.unwrap())
    }

    async fn post(&self, cookie: &str, path: &str, form: &[(&str, &str)]) -> reqwest::Response {
        self.http.post(self.url(path)).header("cookie", cookie).form(form).send().await.unwrap()
    }
}

fn csrf_of(html: &str) -> String {
    let at = html.find(r#"name="csrf" value=""#).expect("a form with a CSRF token") + 19;
    html[at..].split('"').next().unwrap().to_owned()
}

#[tokio::test]
async fn a_wrong_token_is_refused_and_a_right_one_gets_a_strict_cookie() {
    let admin = start().await;
    let res = admin.sign_in("kgt_not-a-token").await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert!(res.headers().get("set-cookie").is_none());
    assert!(res.text().await.unwrap().contains("not an active admin token"));

    let token = create_token(&admin.state.store, None).await.unwrap();
    let res = admin.sign_in(&token.token).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(res.headers()["location"], "/console/keys");
    let cookie = res.headers()["set-cookie"].to_str().unwrap();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"), "{cookie}");
    assert!(!cookie.contains(&token.token), "the cookie is a session id, not the token");
}

#[tokio::test]
async fn pages_need_a_session_and_carry_strict_headers() {
    let admin = start().await;
    for path in ["/", "/console/keys", "/console/keys/new", "/console/audit"] {
        let res = admin.http.get(admin.url(path)).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::SEE_OTHER, "{path}");
    }
    let res = admin.http.get(admin.url("/console/signin")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let csp = res.headers()["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"));
    assert_eq!(res.headers()["cache-control"], "no-store");
    // A made-up session cookie is no session.
    let (status, _) = admin.page("keygate_console=madeup", "/console/keys").await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    // The API's own paths still need the API's authentication.
    let res = admin.http.get(admin.url("/apikeys")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn a_form_without_its_csrf_token_or_from_another_site_changes_nothing() {
    let admin = start().await;
    let (b, _) = admin.browser().await;
    let res =
        admin.post(&b.cookie, "/console/keys", &[("name", "nocsrf"), ("value_mode", "auto")]).await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    let res =
        admin.post(&b.cookie, "/console/keys", &[("csrf", "wrong"), ("name", "badcsrf")]).await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    let res = admin
        .http
        .post(admin.url("/console/keys"))
        .header("cookie", &b.cookie)
        .header("origin", "http://evil.example")
        .form(&[("csrf", b.csrf.as_str()), ("name", "crosssite")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    let res = admin
        .http
        .post(admin.url("/console/keys"))
        .header("cookie", &b.cookie)
        .header("sec-fetch-site", "cross-site")
        .form(&[("csrf", b.csrf.as_str()), ("name", "crosssite2")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    // Without a session, even with a token from an old page.
    let res = admin.post("", "/console/keys", &[("csrf", &b.csrf), ("name", "nosession")]).await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    let keys = admin.state.store.get_key_by_name("nocsrf").await.unwrap();
    assert!(keys.is_none());
    for name in ["badcsrf", "crosssite", "crosssite2", "nosession"] {
        assert!(admin.state.store.get_key_by_name(name).await.unwrap().is_none(), "{name}");
    }
}

#[tokio::test]
async fn a_key_made_in_the_console_is_shown_once_and_audited_as_the_console() {
    let admin = start().await;
    let (b, token_id) = admin.browser().await;
    let origin = admin.base.clone();
    let res = admin
        .http
        .post(admin.url("/console/keys"))
        .header("cookie", &b.cookie)
        .header("origin", &origin)
        .form(&[
            ("csrf", b.csrf.as_str()),
            ("name", "partner-a"),
            ("value_mode", "custom"),
            ("value", "ConsoleCustomValue0123456789"),
            ("enabled", "on"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["cache-control"], "no-store");
    let html = res.text().await.unwrap();
    assert!(html.contains(r#"value="ConsoleCustomValue0123456789""#), "{html}");
    let key = admin.state.store.get_key_by_name("partner-a").await.unwrap().unwrap();
    assert!(key.enabled);
    // The list shows the key but never its value.
    let (_, list) = admin.page(&b.cookie, "/console/keys?q=partner").await;
    assert!(list.contains("partner-a") && !list.contains("ConsoleCustomValue"));
    // A taken name: the form again, the error next to the name.
    let res =
        admin.post(&b.cookie, "/console/keys", &[("csrf", &b.csrf), ("name", "partner-a")]).await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    let html = res.text().await.unwrap();
    assert!(html.contains(r#"id="name-error""#), "{html}");
    // Disable, then delete.
    let res = admin
        .post(&b.cookie, &format!("/console/keys/{}/disable", key.id), &[("csrf", &b.csrf)])
        .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert!(!admin.state.store.get_key(&key.id).await.unwrap().unwrap().enabled);
    let res = admin
        .post(&b.cookie, &format!("/console/keys/{}/delete", key.id), &[("csrf", &b.csrf)])
        .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert!(admin.state.store.get_key(&key.id).await.unwrap().is_none());
    let audit = admin.state.store.list_audit(0, 100).await.unwrap();
    let actor = format!("console:{token_id}");
    let by_console: Vec<&str> =
        audit.iter().filter(|e| e.actor == actor).map(|e| e.action.as_str()).collect();
    assert_eq!(by_console.len(), 3, "{audit:?}");
    let (_, page) = admin.page(&b.cookie, "/console/audit").await;
    assert!(page.contains(&actor));
}

/// Expiries and "today" are the console's clock's, not the machine's: a key made to expire in
/// 30 minutes shows as expired once that clock has moved past it.
#[tokio::test]
async fn expiries_are_judged_by_the_consoles_clock() {
    let admin = start().await;
    let (b, _) = admin.browser().await;
    let res = admin
        .post(
            &b.cookie,
            "/console/keys",
            &[
                ("csrf", b.csrf.as_str()),
                ("name", "short-lived"),
                ("enabled", "on"),
                ("expires", "+30m"),
            ],
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK, "{}", res.text().await.unwrap());
    let key = admin.state.store.get_key_by_name("short-lived").await.unwrap().unwrap();
    let now = admin.clock.now_unix_ms() / 1000;
    assert_eq!(key.expires, Some(now + 1800), "+30m from the console's clock");
    let (_, list) = admin.page(&b.cookie, "/console/keys?q=short").await;
    assert!(list.contains("Enabled") && !list.contains("Expired"), "{list}");
    admin.clock.advance(Duration::from_secs(1801));
    let (_, list) = admin.page(&b.cookie, "/console/keys?q=short").await;
    assert!(list.contains("Expired"), "{list}");
}

#[tokio::test]
async fn a_session_ends_when_it_expires_when_its_token_is_revoked_and_at_sign_out() {
    let admin = start().await;
    let (b, _) = admin.browser().await;
    admin.clock.advance(TTL - Duration::from_secs(1));
    assert_eq!(admin.page(&b.cookie, "/console/keys").await.0, StatusCode::OK);
    admin.clock.advance(Duration::from_secs(1));
    assert_eq!(admin.page(&b.cookie, "/console/keys").await.0, StatusCode::SEE_OTHER);
    let res = admin.post(&b.cookie, "/console/keys", &[("csrf", &b.csrf), ("name", "late")]).await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);

    let (b, token_id) = admin.browser().await;
    revoke_token(&admin.state.store, &token_id).await.unwrap();
    assert_eq!(admin.page(&b.cookie, "/console/keys").await.0, StatusCode::SEE_OTHER);

    let (b, _) = admin.browser().await;
    let res = admin.post(&b.cookie, "/console/signout", &[("csrf", &b.csrf)]).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert!(res.headers()["set-cookie"].to_str().unwrap().contains("Max-Age=0"));
    assert_eq!(admin.page(&b.cookie, "/console/keys").await.0, StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn a_plan_is_made_edited_and_deleted_with_errors_next_to_their_fields() {
    let admin = start().await;
    let (b, token_id) = admin.browser().await;
    let res = admin
        .post(
            &b.cookie,
            "/console/plans",
            &[("csrf", &b.csrf), ("name", "gold"), ("rate", "fast"), ("burst", "5")],
        )
        .await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    let html = res.text().await.unwrap();
    assert!(html.contains(r#"id="rate-error""#) && html.contains(r#"value="gold""#), "{html}");
    let res = admin
        .post(
            &b.cookie,
            "/console/plans",
            &[
                ("csrf", &b.csrf),
                ("name", "gold"),
                ("rate", "10"),
                ("burst", "20"),
                ("quota_limit", "1000"),
                ("quota_period", "MONTH"),
            ],
        )
        .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let plan = admin.state.store.get_plan_by_name("gold").await.unwrap().unwrap();
    assert_eq!(plan.quota.as_ref().map(|q| q.limit), Some(1000));
    assert_eq!(plan.throttle.as_ref().map(|t| t.burst_limit), Some(20));
    // Edit: no throttle, a quota of 5 a day.
    let path = format!("/console/plans/{}", plan.id);
    let res = admin
        .post(
            &b.cookie,
            &path,
            &[("csrf", &b.csrf), ("name", "gold"), ("quota_limit", "5"), ("quota_period", "DAY")],
        )
        .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let plan = admin.state.store.get_plan(&plan.id).await.unwrap().unwrap();
    assert!(plan.throttle.is_none());
    assert_eq!(plan.quota.as_ref().map(|q| q.limit), Some(5));
    // An unknown key: the plan's page again, the error next to the key field.
    let res = admin
        .post(&b.cookie, &format!("{path}/keys"), &[("csrf", &b.csrf), ("key", "nobody")])
        .await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert!(res.text().await.unwrap().contains(r#"id="add-key-error""#));
    // Delete after the confirmation page.
    let (status, confirm) = admin.page(&b.cookie, &format!("{path}/delete")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(confirm.contains("cannot be undone"));
    let res = admin.post(&b.cookie, &format!("{path}/delete"), &[("csrf", &b.csrf)]).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert!(admin.state.store.get_plan(&plan.id).await.unwrap().is_none());
    let audit = admin.state.store.list_audit(0, 100).await.unwrap();
    let actor = format!("console:{token_id}");
    assert_eq!(audit.iter().filter(|e| e.actor == actor).count(), 3, "{audit:?}");
}

/// A key's page lists the values a rotation replaced that still work and who still sends them
/// (as gateways wrote it), the client's user agent escaped.
#[tokio::test]
async fn a_keys_page_shows_who_still_sends_its_rotated_out_value() {
    let admin = start().await;
    let (b, _) = admin.browser().await;
    let form = [
        ("csrf", b.csrf.as_str()),
        ("name", "rotating"),
        ("value_mode", "custom"),
        ("value", "RotatingOldValue0123456789"),
        ("enabled", "on"),
    ];
    assert_eq!(admin.post(&b.cookie, "/console/keys", &form).await.status(), StatusCode::OK);
    let key = admin.state.store.get_key_by_name("rotating").await.unwrap().unwrap();
    let page = format!("/console/keys/{}", key.id);
    let (_, before) = admin.page(&b.cookie, &page).await;
    assert!(!before.contains("Old values still accepted"), "{before}");
    // Rotated from the page's form, with a grace past the console's clock (which runs ahead of
    // the machine's) and a retirement once idle for an hour.
    let form = [("csrf", b.csrf.as_str()), ("grace", "100d"), ("retire_when_idle", "1h")];
    let res = admin.post(&b.cookie, &format!("{page}/rotate"), &form).await;
    assert_eq!(res.status(), StatusCode::OK, "{}", res.text().await.unwrap());
    let (_, quiet) = admin.page(&b.cookie, &page).await;
    assert!(quiet.contains("No request has used it since the rotation."), "{quiet}");
    let at = admin.clock.now_unix_ms() / 1000;
    let used = keygate_types::model::OldValueUse {
        digest: keygate_types::KeyDigest::of(b"RotatingOldValue0123456789"),
        client: "10.1.2.3".into(),
        user_agent: "<script>alert(1)</script> legacy/1.0".into(),
        count: 3,
        first_seen: at - 60,
        last_seen: at,
    };
    admin.backend.add_old_value_uses(&[used]).await.unwrap();
    let (status, html) = admin.page(&b.cookie, &page).await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("Old values still accepted"), "{html}");
    assert!(html.contains("<code>Rota…</code>"), "{html}");
    assert!(html.contains("or once unused for 3600 s"), "{html}");
    assert!(html.contains("<code>10.1.2.3</code>"), "{html}");
    assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt; legacy/1.0"), "{html}");
    assert!(!html.contains("<script>alert"), "escaped");
    assert!(!html.contains("RotatingOldValue"), "never the value");
}

/// An API's page switches a stage's key checks to report and back (audited as the console) and
/// lists what would have been refused there in the last 24 hours, by client, escaped.
#[tokio::test]
async fn an_api_page_switches_a_stage_to_report_and_shows_who_would_break() {
    let admin = start().await;
    let (b, token_id) = admin.browser().await;
    let definition = keygate_types::ServiceDefinition {
        service: "opening".into(),
        stage: "dev".into(),
        region: "us-east-1".into(),
        base_dir: std::path::PathBuf::from("/tmp"),
        functions: vec![],
        api_keys: vec![],
        usage_plans: vec![],
        tables: vec![],
        api_key_source: Default::default(),
        key_introspection: None,
    };
    let artifacts = tempfile::tempdir().unwrap();
    let places = std::collections::BTreeMap::new();
    let base = "http://127.0.0.1:0";
    let store = &admin.state.store;
    let deployed =
        keygate_control::deploy(store, definition, vec![], &places, artifacts.path(), base, None)
            .await
            .unwrap();
    let page = format!("/console/apis/{}", deployed.api_id);
    let (_, html) = admin.page(&b.cookie, &page).await;
    assert!(html.contains("Nothing would have been refused in the last 24 hours."), "{html}");
    assert!(html.contains(r#"<option value="deployed" selected>"#), "{html}");

    let form = [("csrf", b.csrf.as_str()), ("stage", "dev"), ("mode", "report")];
    let res = admin.post(&b.cookie, &format!("{page}/enforcement"), &form).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let stages = store.list_stages(&deployed.api_id).await.unwrap();
    assert_eq!(stages[0].enforcement, Some(keygate_types::Enforcement::Report));
    let at = admin.clock.now_unix_ms() / 1000;
    let row = keygate_types::model::WouldRefuse {
        hour: at - at % 3600,
        api_id: deployed.api_id.clone(),
        stage: "dev".into(),
        method: "GET".into(),
        path: "/a".into(),
        reason: "missing_key".into(),
        key_id: None,
        client: "10.9.8.7".into(),
        user_agent: "<b>old</b>-client".into(),
        count: 5,
        first_seen: at - 10,
        last_seen: at,
    };
    admin.backend.add_would_refuse(&[row]).await.unwrap();
    let (_, html) = admin.page(&b.cookie, &page).await;
    assert!(html.contains(r#"<option value="report" selected>"#), "{html}");
    assert!(html.contains("<code>10.9.8.7</code>"), "{html}");
    assert!(html.contains("&lt;b&gt;old&lt;/b&gt;-client"), "{html}");
    assert!(html.contains("<code>missing_key</code> 5"), "{html}");

    let form = [("csrf", b.csrf.as_str()), ("stage", "dev"), ("mode", "sometimes")];
    let res = admin.post(&b.cookie, &format!("{page}/enforcement"), &form).await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    let form = [("csrf", b.csrf.as_str()), ("stage", "dev"), ("mode", "deployed")];
    admin.post(&b.cookie, &format!("{page}/enforcement"), &form).await;
    assert_eq!(store.list_stages(&deployed.api_id).await.unwrap()[0].enforcement, None);
    let audit = store.list_audit(0, 100).await.unwrap();
    let switches = audit
        .iter()
        .filter(|e| e.action == "SetStageEnforcement" && e.actor == format!("console:{token_id}"))
        .count();
    assert_eq!(switches, 2, "{audit:?}");
}
