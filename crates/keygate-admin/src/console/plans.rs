//! The usage plans pages: the list, create, edit (throttle, quota), API stages with method
//! throttles, keys; and the usage of a plan's keys as a daily chart (inline SVG) with CSV export.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use axum::extract::{Path, Query};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use keygate_control::{ListQuery, MAX_PAGE, Store, plans, usage};
use keygate_types::date::Date;
use keygate_types::model::{NewUsagePlan, UsagePlan, UsagePlanPatch};
use keygate_types::plan::{Quota, QuotaPeriod, Throttle};
use maud::{Markup, html};
use serde::Deserialize;

use super::{Posted, Section, Signed, control_error, layout, page};

fn notice(code: &str) -> Option<&'static str> {
    match code {
        "created" => Some("The usage plan is created."),
        "saved" => Some("Saved: gateways apply the new limits within a second."),
        "stage-added" => Some("The API stage is added: the plan's keys work on it."),
        "stage-removed" => Some("The API stage is removed from the plan."),
        "key-added" => Some("The key is added: it works on the plan's stages within a second."),
        "key-removed" => Some("The key is removed from the plan."),
        "deleted" => Some("The usage plan is deleted: its keys no longer work through it."),
        _ => None,
    }
}

fn throttle_text(t: Option<&Throttle>) -> String {
    t.map_or_else(
        || "none".to_owned(),
        |t| format!("{} req/s, burst {}", t.rate_limit, t.burst_limit),
    )
}

fn quota_text(q: Option<&Quota>) -> String {
    q.map_or_else(
        || "none".to_owned(),
        |q| {
            let period = format!("{:?}", q.period).to_ascii_uppercase();
            if q.offset == 0 {
                format!("{} per {period}", q.limit)
            } else {
                format!("{} per {period} (offset {})", q.limit, q.offset)
            }
        },
    )
}

/// Every deployed API stage as `(api id, api name, stage)`.
async fn api_stages(store: &Store) -> keygate_control::Result<Vec<(String, String, String)>> {
    let mut out = Vec::new();
    for api in store.list_apis().await? {
        for stage in store.list_stages(&api.id).await? {
            out.push((api.id.clone(), api.name.clone(), stage.name));
        }
    }
    Ok(out)
}

pub(crate) async fn list(signed: Signed, Query(q): Query<HashMap<String, String>>) -> Response {
    let query = match ListQuery::new(MAX_PAGE, q.get("position").map(String::as_str), None) {
        Ok(query) => query,
        Err(e) => return control_error(&e),
    };
    let listed = match plans::list(&signed.store, &query).await {
        Ok(l) => l,
        Err(e) => return control_error(&e),
    };
    let names: HashMap<String, String> = match signed.store.list_apis().await {
        Ok(apis) => apis.into_iter().map(|a| (a.id, a.name)).collect(),
        Err(e) => return control_error(&e.into()),
    };
    let body = html! {
        @if let Some(text) = q.get("notice").and_then(|c| notice(c)) {
            p.notice role="status" { (text) }
        }
        div.toolbar {
            p.help { "A key works on an API stage only through a usage plan that covers it." }
            a.button.primary href="/console/plans/new" { "Create usage plan" }
        }
        @if listed.items.is_empty() {
            p.empty { "No usage plans yet." }
        } @else {
            div.table-wrap { table {
                caption.visually-hidden { "Usage plans" }
                thead { tr {
                    th scope="col" { "Name" } th scope="col" { "Throttle" }
                    th scope="col" { "Quota" } th scope="col" { "API stages" }
                } }
                tbody { @for p in &listed.items {
                    tr data-plan=(p.name) {
                        th scope="row" { a href={ "/console/plans/" (p.id) } { (p.name) } }
                        td { (throttle_text(p.throttle.as_ref())) }
                        td { (quota_text(p.quota.as_ref())) }
                        td { @for s in &p.api_stages {
                            span.stage { (names.get(&s.api_id).unwrap_or(&s.api_id)) " · " (s.stage) } " "
                        } }
                    }
                } }
            } }
        }
        @if let Some(position) = listed.position() {
            p.paging { a href={ "/console/plans?position=" (position) } { "Next page" } }
        }
    };
    page(StatusCode::OK, layout("Usage plans", Some((&signed.session, Section::Plans)), body))
}

/// The fields of the create and edit forms, kept to show them again with an error.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct PlanForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    rate: String,
    #[serde(default)]
    burst: String,
    #[serde(default)]
    quota_limit: String,
    #[serde(default)]
    quota_period: String,
    #[serde(default)]
    quota_offset: String,
    /// `apiId|stage` (create only), or empty.
    #[serde(default)]
    stage: String,
}

impl PlanForm {
    fn of(plan: &UsagePlan) -> Self {
        Self {
            name: plan.name.clone(),
            description: plan.description.clone().unwrap_or_default(),
            rate: plan.throttle.as_ref().map(|t| t.rate_limit.to_string()).unwrap_or_default(),
            burst: plan.throttle.as_ref().map(|t| t.burst_limit.to_string()).unwrap_or_default(),
            quota_limit: plan.quota.as_ref().map(|q| q.limit.to_string()).unwrap_or_default(),
            quota_period: plan
                .quota
                .as_ref()
                .map(|q| format!("{:?}", q.period).to_ascii_uppercase())
                .unwrap_or_default(),
            quota_offset: plan.quota.as_ref().map(|q| q.offset.to_string()).unwrap_or_default(),
            ..Self::default()
        }
    }

    /// The throttle and quota the form asks for, or the field in error and why.
    fn limits(&self) -> Result<(Option<Throttle>, Option<Quota>), (Field, String)> {
        let throttle = match (self.rate.trim(), self.burst.trim()) {
            ("", "") => None,
            (rate, burst) => {
                let rate_limit = rate.parse::<f64>().map_err(|_| {
                    (
                        Field::Rate,
                        "Give the rate as requests per second, e.g. 10 or 0.5.".to_owned(),
                    )
                })?;
                let burst_limit = burst.parse::<u32>().map_err(|_| {
                    (Field::Burst, "Give the burst as a whole number of requests.".to_owned())
                })?;
                Some(Throttle { rate_limit, burst_limit })
            }
        };
        let quota = match self.quota_limit.trim() {
            "" => None,
            limit => {
                let limit = limit.parse::<u64>().map_err(|_| {
                    (Field::Quota, "Give the quota as a whole number of requests.".to_owned())
                })?;
                let period = QuotaPeriod::parse(&self.quota_period).ok_or_else(|| {
                    (Field::Quota, "Choose the quota's period: DAY, WEEK or MONTH.".to_owned())
                })?;
                let offset = match self.quota_offset.trim() {
                    "" => 0,
                    o => o.parse::<u32>().map_err(|_| {
                        (Field::Quota, "Give the offset as a whole number.".to_owned())
                    })?,
                };
                Some(Quota { limit, period, offset })
            }
        };
        Ok((throttle, quota))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Name,
    Rate,
    Burst,
    Quota,
    Stage,
    Other,
    /// The plan page's "Add an API stage" form.
    AddStage,
    /// The plan page's "Add a key" form.
    AddKey,
}

fn field_of(e: &keygate_control::Error) -> Field {
    let text = e.to_string();
    if text.contains("rateLimit") {
        Field::Rate
    } else if text.contains("burstLimit") {
        Field::Burst
    } else if text.contains("quota") || text.contains("offset") {
        Field::Quota
    } else if text.contains("stage") {
        Field::Stage
    } else if text.contains("name") {
        Field::Name
    } else {
        Field::Other
    }
}

/// The plan form (create when `plan_id` is `None`, else edit).
fn plan_form(
    csrf: &str,
    plan_id: Option<&str>,
    form: &PlanForm,
    stages: &[(String, String, String)],
    error: Option<(Field, &str)>,
) -> Markup {
    let error_for = |f: Field| error.filter(|(at, _)| *at == f).map(|(_, m)| m.to_owned());
    let invalid = |f: Field| error_for(f).map(|_| "true");
    let shown = |id: &str, f: Field| {
        html! { @if let Some(m) = error_for(f) { p.error id={ (id) "-error" } role="alert" { (m) } } }
    };
    let action =
        plan_id.map_or_else(|| "/console/plans".to_owned(), |id| format!("/console/plans/{id}"));
    html! {
        form.card method="post" action=(action) novalidate {
            input type="hidden" name="csrf" value=(csrf);
            @if let Some(m) = error_for(Field::Other) { p.error role="alert" { (m) } }
            div.field {
                label for="plan-name" { "Name" }
                input #plan-name type="text" name="name" value=(form.name) required aria-invalid=[invalid(Field::Name)];
                (shown("plan-name", Field::Name))
            }
            div.field {
                label for="plan-description" { "Description (optional)" }
                input #plan-description type="text" name="description" value=(form.description);
            }
            fieldset.field {
                legend { "Throttle (empty: none)" }
                div.pair {
                    div {
                        label for="rate" { "Rate (requests per second)" }
                        input #rate type="text" inputmode="decimal" name="rate" value=(form.rate) aria-invalid=[invalid(Field::Rate)];
                        (shown("rate", Field::Rate))
                    }
                    div {
                        label for="burst" { "Burst (requests)" }
                        input #burst type="text" inputmode="numeric" name="burst" value=(form.burst) aria-invalid=[invalid(Field::Burst)];
                        (shown("burst", Field::Burst))
                    }
                }
            }
            fieldset.field {
                legend { "Quota (empty: none)" }
                div.pair {
                    div {
                        label for="quota-limit" { "Requests" }
                        input #quota-limit type="text" inputmode="numeric" name="quota_limit" value=(form.quota_limit) aria-invalid=[invalid(Field::Quota)];
                    }
                    div {
                        label for="quota-period" { "Per" }
                        select #quota-period name="quota_period" {
                            @for p in ["DAY", "WEEK", "MONTH"] {
                                option value=(p) selected[form.quota_period == p] { (p) }
                            }
                        }
                    }
                    div {
                        label for="quota-offset" { "Offset" }
                        input #quota-offset type="text" inputmode="numeric" name="quota_offset" value=(form.quota_offset)
                            aria-describedby="quota-offset-help";
                    }
                }
                p.help #quota-offset-help { "WEEK: the weekday the week starts on (0 = Sunday); MONTH: the day of the month minus one." }
                (shown("quota", Field::Quota))
            }
            @if plan_id.is_none() {
                div.field {
                    label for="plan-stage" { "API stage (more can be added later)" }
                    select #plan-stage name="stage" aria-invalid=[invalid(Field::Stage)] {
                        option value="" { "None" }
                        @for (api_id, api_name, stage) in stages {
                            @let value = format!("{api_id}|{stage}");
                            option value=(value) selected[form.stage == value] { (api_name) " · " (stage) }
                        }
                    }
                    (shown("plan-stage", Field::Stage))
                }
            }
            div.buttons {
                button.primary type="submit" { (if plan_id.is_some() { "Save" } else { "Create usage plan" }) }
                a.button href=(plan_id.map_or_else(|| "/console/plans".to_owned(), |id| format!("/console/plans/{id}"))) { "Cancel" }
            }
        }
    }
}

pub(crate) async fn new_page(signed: Signed) -> Response {
    let stages = match api_stages(&signed.store).await {
        Ok(s) => s,
        Err(e) => return control_error(&e),
    };
    let form = plan_form(&signed.session.csrf, None, &PlanForm::default(), &stages, None);
    page(StatusCode::OK, layout("Create usage plan", Some((&signed.session, Section::Plans)), form))
}

pub(crate) async fn create(Posted(signed, form): Posted<PlanForm>) -> Response {
    let stages = match api_stages(&signed.store).await {
        Ok(s) => s,
        Err(e) => return control_error(&e),
    };
    let invalid = |signed: &Signed, field: Field, message: &str| {
        let markup = plan_form(&signed.session.csrf, None, &form, &stages, Some((field, message)));
        page(
            StatusCode::BAD_REQUEST,
            layout("Create usage plan", Some((&signed.session, Section::Plans)), markup),
        )
    };
    let (throttle, quota) = match form.limits() {
        Ok(l) => l,
        Err((field, message)) => return invalid(&signed, field, &message),
    };
    let stage = match form.stage.split_once('|') {
        Some((api, stage)) => vec![(api.to_owned(), stage.to_owned(), BTreeMap::new())],
        None => Vec::new(),
    };
    let new = NewUsagePlan {
        name: form.name.trim().to_owned(),
        description: Some(form.description.trim().to_owned()).filter(|d| !d.is_empty()),
        throttle,
        quota,
        fallback: None,
    };
    match plans::create(&signed.store, new, stage).await {
        Ok(plan) => {
            Redirect::to(&format!("/console/plans/{}?notice=created", plan.id)).into_response()
        }
        Err(e @ keygate_control::Error::Store(_)) => control_error(&e),
        Err(e) => invalid(&signed, field_of(&e), &e.to_string()),
    }
}

async fn plan_page(
    signed: &Signed,
    plan: &UsagePlan,
    form: &PlanForm,
    error: Option<(Field, &str)>,
    notice_code: Option<&str>,
) -> Response {
    let stages = match api_stages(&signed.store).await {
        Ok(s) => s,
        Err(e) => return control_error(&e),
    };
    let keys = match plans::keys(&signed.store, &plan.id, &ListQuery::first(MAX_PAGE)).await {
        Ok(k) => k,
        Err(e) => return control_error(&e),
    };
    let api_name = |id: &str| {
        stages.iter().find(|(a, _, _)| a == id).map_or_else(|| id.to_owned(), |(_, n, _)| n.clone())
    };
    let csrf = &signed.session.csrf;
    let error_for = |f: Field| error.filter(|(at, _)| *at == f).map(|(_, m)| m);
    let shown = |id: &str, f: Field| {
        html! { @if let Some(m) = error_for(f) { p.error id={ (id) "-error" } role="alert" { (m) } } }
    };
    let uncovered: Vec<&(String, String, String)> = stages
        .iter()
        .filter(|(a, _, s)| !plan.api_stages.iter().any(|p| &p.api_id == a && &p.stage == s))
        .collect();
    let body = html! {
        @if let Some(text) = notice_code.and_then(notice) { p.notice role="status" { (text) } }
        p.buttons {
            a.button href={ "/console/plans/" (plan.id) "/usage" } { "Usage of this plan's keys" }
            a.button.danger href={ "/console/plans/" (plan.id) "/delete" } { "Delete " (plan.name) }
        }
        h2 { "Limits" }
        (plan_form(csrf, Some(&plan.id), form, &stages, error))
        h2 { "API stages" }
        @if plan.api_stages.is_empty() {
            p.empty { "None: the plan's keys work nowhere yet." }
        } @else {
            div.table-wrap { table {
                caption.visually-hidden { "API stages" }
                thead { tr { th scope="col" { "API" } th scope="col" { "Stage" } th scope="col" { "Method throttles" } th scope="col" { span.visually-hidden { "Actions" } } } }
                tbody { @for s in &plan.api_stages {
                    tr {
                        th scope="row" { (api_name(&s.api_id)) }
                        td { (s.stage) }
                        td { @if s.throttle.is_empty() { span.muted { "none" } } @else {
                            @for (m, t) in &s.throttle { code { (m) } " " (throttle_text(Some(t))) br; }
                        } }
                        td { form method="post" action={ "/console/plans/" (plan.id) "/stages/remove" } {
                            input type="hidden" name="csrf" value=(csrf);
                            input type="hidden" name="stage" value={ (s.api_id) "|" (s.stage) };
                            button type="submit" aria-label={ "Remove stage " (s.stage) " of " (api_name(&s.api_id)) } { "Remove" }
                        } }
                    }
                } }
            } }
        }
        @if !uncovered.is_empty() {
            form.card method="post" action={ "/console/plans/" (plan.id) "/stages" } {
                input type="hidden" name="csrf" value=(csrf);
                div.field {
                    label for="add-stage" { "Add an API stage" }
                    select #add-stage name="stage" aria-invalid=[error_for(Field::AddStage).map(|_| "true")] {
                        @for (api_id, api_name, stage) in &uncovered {
                            option value={ (api_id) "|" (stage) } { (api_name) " · " (stage) }
                        }
                    }
                }
                div.field {
                    label for="method-throttles" { "Method throttles (optional, one per line)" }
                    textarea #method-throttles name="throttles" rows="2" placeholder="/candidates/GET=5:10" {}
                    p.help { "Resource path, method, then rate:burst, e.g. " code { "/candidates/GET=5:10" } "." }
                }
                (shown("add-stage", Field::AddStage))
                button type="submit" { "Add API stage" }
            }
        }
        h2 { "API keys" }
        @if keys.items.is_empty() {
            p.empty { "No keys in this plan." }
        } @else {
            ul.keys-in-plan { @for k in &keys.items {
                li data-key=(k.name) {
                    (k.name) " "
                    form.inline method="post" action={ "/console/plans/" (plan.id) "/keys/remove" } {
                        input type="hidden" name="csrf" value=(csrf);
                        input type="hidden" name="key" value=(k.id);
                        button type="submit" aria-label={ "Remove " (k.name) " from the plan" } { "Remove" }
                    }
                }
            } }
        }
        form.card method="post" action={ "/console/plans/" (plan.id) "/keys" } {
            input type="hidden" name="csrf" value=(csrf);
            div.field {
                label for="add-key" { "Add a key (name or id)" }
                input #add-key type="text" name="key" autocomplete="off"
                    aria-invalid=[error_for(Field::AddKey).map(|_| "true")];
                (shown("add-key", Field::AddKey))
            }
            button type="submit" { "Add key" }
        }
    };
    let title = format!("Usage plan {}", plan.name);
    let status = if error.is_some() { StatusCode::BAD_REQUEST } else { StatusCode::OK };
    page(status, layout(&title, Some((&signed.session, Section::Plans)), body))
}

async fn found(signed: &Signed, id: &str) -> Result<UsagePlan, Response> {
    plans::find(&signed.store, id).await.map_err(|e| control_error(&e))
}

pub(crate) async fn show(
    signed: Signed,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let plan = match found(&signed, &id).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    plan_page(&signed, &plan, &PlanForm::of(&plan), None, q.get("notice").map(String::as_str)).await
}

pub(crate) async fn update(
    Path(id): Path<String>,
    Posted(signed, form): Posted<PlanForm>,
) -> Response {
    let plan = match found(&signed, &id).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let (throttle, quota) = match form.limits() {
        Ok(l) => l,
        Err((field, message)) => {
            return plan_page(&signed, &plan, &form, Some((field, &message)), None).await;
        }
    };
    let patch = UsagePlanPatch {
        name: Some(form.name.trim().to_owned()),
        description: Some(Some(form.description.trim().to_owned()).filter(|d| !d.is_empty())),
        throttle: Some(throttle),
        quota: Some(quota),
        fallback: None,
    };
    match plans::update(&signed.store, &plan.id, patch).await {
        Ok(_) => Redirect::to(&format!("/console/plans/{}?notice=saved", plan.id)).into_response(),
        Err(e @ keygate_control::Error::Store(_)) => control_error(&e),
        Err(e) => {
            plan_page(&signed, &plan, &form, Some((field_of(&e), &e.to_string())), None).await
        }
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct StageForm {
    #[serde(default)]
    stage: String,
    #[serde(default)]
    throttles: String,
}

pub(crate) async fn add_stage(
    Path(id): Path<String>,
    Posted(signed, form): Posted<StageForm>,
) -> Response {
    let plan = match found(&signed, &id).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let refused = |message: String| {
        let (signed, plan) = (&signed, &plan);
        async move {
            let form = PlanForm::of(plan);
            plan_page(signed, plan, &form, Some((Field::AddStage, &message)), None).await
        }
    };
    let Some((api, stage)) = form.stage.split_once('|') else {
        return refused("Choose an API stage.".to_owned()).await;
    };
    let mut throttles = BTreeMap::new();
    for line in form.throttles.lines().map(str::trim).filter(|l| !l.is_empty()) {
        match plans::parse_method_throttle(line) {
            Ok((method, t)) => {
                throttles.insert(method, t);
            }
            Err(e) => return refused(e.to_string()).await,
        }
    }
    match plans::add_stage(&signed.store, &plan.id, api, stage, throttles).await {
        Ok(plan) => {
            Redirect::to(&format!("/console/plans/{}?notice=stage-added", plan.id)).into_response()
        }
        Err(e @ keygate_control::Error::Store(_)) => control_error(&e),
        Err(e) => refused(e.to_string()).await,
    }
}

pub(crate) async fn remove_stage(
    Path(id): Path<String>,
    Posted(signed, form): Posted<StageForm>,
) -> Response {
    let Some((api, stage)) = form.stage.split_once('|') else {
        return control_error(&keygate_control::Error::Invalid("choose an API stage".to_owned()));
    };
    match plans::remove_stage(&signed.store, &id, api, stage).await {
        Ok(plan) => Redirect::to(&format!("/console/plans/{}?notice=stage-removed", plan.id))
            .into_response(),
        Err(e) => control_error(&e),
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct KeyForm {
    #[serde(default)]
    key: String,
}

pub(crate) async fn add_key(
    Path(id): Path<String>,
    Posted(signed, form): Posted<KeyForm>,
) -> Response {
    let plan = match found(&signed, &id).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    match plans::add_key(&signed.store, &plan.id, form.key.trim()).await {
        Ok((plan, _)) => {
            Redirect::to(&format!("/console/plans/{}?notice=key-added", plan.id)).into_response()
        }
        Err(e @ keygate_control::Error::Store(_)) => control_error(&e),
        Err(e) => {
            let message = e.to_string();
            plan_page(&signed, &plan, &PlanForm::of(&plan), Some((Field::AddKey, &message)), None)
                .await
        }
    }
}

pub(crate) async fn remove_key(
    Path(id): Path<String>,
    Posted(signed, form): Posted<KeyForm>,
) -> Response {
    match plans::remove_key(&signed.store, &id, form.key.trim()).await {
        Ok((plan, _)) => {
            Redirect::to(&format!("/console/plans/{}?notice=key-removed", plan.id)).into_response()
        }
        Err(e) => control_error(&e),
    }
}

pub(crate) async fn delete_page(signed: Signed, Path(id): Path<String>) -> Response {
    let plan = match found(&signed, &id).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let body = html! {
        form.card method="post" action={ "/console/plans/" (plan.id) "/delete" } {
            input type="hidden" name="csrf" value=(signed.session.csrf);
            p {
                "Delete the usage plan " strong { (plan.name) } "? Its keys stay, but no longer "
                "work on its API stages (403 within a second) unless another plan covers them; "
                "its usage history goes with it. This cannot be undone."
            }
            div.buttons {
                button.danger type="submit" { "Delete " (plan.name) }
                a.button href={ "/console/plans/" (plan.id) } { "Cancel" }
            }
        }
    };
    page(StatusCode::OK, layout("Delete usage plan", Some((&signed.session, Section::Plans)), body))
}

pub(crate) async fn delete(
    Path(id): Path<String>,
    Posted(signed, super::NoFields {}): Posted<super::NoFields>,
) -> Response {
    match plans::delete(&signed.store, &id).await {
        Ok(_) => Redirect::to("/console/plans?notice=deleted").into_response(),
        Err(e) => control_error(&e),
    }
}

/// The days a usage page shows: `from`/`to` of the query, else the 14 days to `today`.
fn range(q: &HashMap<String, String>, today: Date) -> keygate_control::Result<(Date, Date)> {
    let to = match q.get("to").map(|s| s.trim()).filter(|s| !s.is_empty()) {
        Some(s) => usage::parse_day(s, "to")?,
        None => today,
    };
    let from = match q.get("from").map(|s| s.trim()).filter(|s| !s.is_empty()) {
        Some(s) => usage::parse_day(s, "from")?,
        None => to.add_days(-13),
    };
    Ok((from, to))
}

/// A daily bar chart of one key's usage: used (solid) and remaining (outlined) per day.
fn chart(name: &str, from: Date, daily: &[(u64, Option<u64>)]) -> Markup {
    const W: usize = 640;
    const H: usize = 160;
    const PAD: usize = 24;
    let max = daily.iter().map(|(u, r)| u + r.unwrap_or(0)).max().unwrap_or(0).max(1);
    let step = (W - 2 * PAD) / daily.len().max(1);
    let bar = step.saturating_sub(4).max(2);
    let scale = |n: u64| (n as f64 / max as f64 * (H - 2 * PAD) as f64).round() as usize;
    let used: u64 = daily.iter().map(|(u, _)| u).sum();
    let last_remaining = daily.last().and_then(|(_, r)| *r);
    let mut label = format!("{name}: {used} used");
    if let Some(r) = last_remaining {
        let _ = write!(label, ", {r} remaining on the last day");
    }
    html! {
        svg.chart viewBox={ "0 0 " (W) " " (H) } role="img" aria-label=(label) preserveAspectRatio="xMidYMid meet" {
            title { (label) }
            line x1=(PAD) y1=(H - PAD) x2=(W - PAD) y2=(H - PAD) stroke="#57606a" {}
            @for (i, (u, r)) in daily.iter().enumerate() {
                @let x = PAD + i * step + 2;
                @let hu = scale(*u);
                @let hr = scale(r.unwrap_or(0));
                @let day = from.add_days(i as i64);
                g {
                    title { (day) ": " (u) " used" @if let Some(r) = r { ", " (r) " remaining" } }
                    rect.used x=(x) y=(H - PAD - hu) width=(bar) height=(hu) {}
                    @if hr > 0 {
                        rect.remaining x=(x) y=(H - PAD - hu - hr) width=(bar) height=(hr) {}
                    }
                }
            }
            text x=(PAD) y="14" { (max) }
            text x=(PAD) y=(H - 6) { (from) }
            text x=(W - PAD) y=(H - 6) text-anchor="end" { (from.add_days(daily.len() as i64 - 1)) }
        }
    }
}

/// Keys on one page of a plan's usage (each is one read of the store).
const USAGE_PAGE: u32 = 20;

pub(crate) async fn usage_page(
    signed: Signed,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let (from, to) = match range(&q, Date::from_unix_ms(signed.now_ms)) {
        Ok(r) => r,
        Err(e) => return control_error(&e),
    };
    let plan = match found(&signed, &id).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    // A page of the plan's keys by name, each with its own report: a plan of 100,000 keys
    // renders as fast as one of 20.
    let query = match ListQuery::new(USAGE_PAGE, q.get("position").map(String::as_str), None) {
        Ok(query) => query,
        Err(e) => return control_error(&e),
    };
    let listed = match plans::keys(&signed.store, &plan.id, &query).await {
        Ok(l) => l,
        Err(e) => return control_error(&e),
    };
    let mut reports = Vec::with_capacity(listed.items.len());
    for key in &listed.items {
        match usage::report(&signed.store, &plan.id, Some(&key.id), from, to).await {
            Ok(r) => {
                reports.push((key.name.clone(), r.values.into_values().next().unwrap_or_default()))
            }
            Err(e) => return control_error(&e),
        }
    }
    let range_query = format!("from={from}&to={to}");
    let csv = format!("/console/plans/{}/usage.csv?{range_query}", plan.id);
    let body = html! {
        form.card.range method="get" action={ "/console/plans/" (plan.id) "/usage" } {
            div.field { label for="from" { "From" } input #from type="date" name="from" value=(from); }
            div.field { label for="to" { "To" } input #to type="date" name="to" value=(to); }
            button type="submit" { "Show" }
            a.button href=(csv) download { "Export CSV" }
        }
        p.help { "Per key and UTC day: requests admitted (solid) and what the quota had left (outlined). Gateways write usage every half second." }
        @if reports.is_empty() {
            p.empty { "No keys in this plan." }
        }
        @for (name, daily) in &reports {
            @let used: u64 = daily.iter().map(|(u, _)| u).sum();
            section.usage data-key=(name) {
                h2 { (name) }
                p { span.used-total { (used) } " used"
                    @if let Some(Some(r)) = daily.last().map(|(_, r)| *r) { ", " span.remaining-total { (r) } " remaining on " (to) } }
                (chart(name, from, daily))
            }
        }
        @if let Some(position) = listed.position() {
            p.paging { a href={ "/console/plans/" (plan.id) "/usage?" (range_query) "&position=" (position) } { "Next keys" } }
        }
    };
    let title = format!("Usage of {}", plan.name);
    page(StatusCode::OK, layout(&title, Some((&signed.session, Section::Plans)), body))
}

pub(crate) async fn usage_csv(
    signed: Signed,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let report = match range(&q, Date::from_unix_ms(signed.now_ms)) {
        Ok((from, to)) => usage::report(&signed.store, &id, None, from, to).await,
        Err(e) => Err(e),
    };
    let report = match report {
        Ok(r) => r,
        Err(e) => return control_error(&e),
    };
    let Ok(from) = report.start_date.parse::<Date>() else {
        return control_error(&keygate_control::Error::Invalid("bad date".to_owned()));
    };
    let mut out = String::from("keyId,keyName,date,used,remaining\n");
    for (key_id, daily) in &report.values {
        let name = report.key_names.get(key_id).map_or("", String::as_str);
        for (i, (used, remaining)) in daily.iter().enumerate() {
            let remaining = remaining.map(|r| r.to_string()).unwrap_or_default();
            let _ = writeln!(
                out,
                "{key_id},{},{},{used},{remaining}",
                csv_field(name),
                from.add_days(i as i64)
            );
        }
    }
    let file = format!(
        "attachment; filename=\"usage-{}-{}-{}.csv\"",
        report.usage_plan_id, report.start_date, report.end_date
    );
    (
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
            (header::CONTENT_DISPOSITION, file),
        ],
        out,
    )
        .into_response()
}

/// A CSV field, quoted when it must be; a leading `=`, `+`, `-` or `@` is prefixed with `'` so a
/// key name cannot become a spreadsheet formula.
fn csv_field(s: &str) -> String {
    let s = if s.starts_with(['=', '+', '-', '@']) { format!("'{s}") } else { s.to_owned() };
    if s.contains([',', '"', '\n', '\r']) { format!("\"{}\"", s.replace('"', "\"\"")) } else { s }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_and_never_formulas() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("=HYPERLINK(1)"), "'=HYPERLINK(1)");
    }

    #[test]
    fn the_chart_says_what_it_shows() {
        let from: Date = "2026-12-01".parse().unwrap();
        let svg = chart("k", from, &[(1, Some(2)), (2, Some(0))]).into_string();
        assert!(svg.contains(r#"aria-label="k: 3 used, 0 remaining on the last day""#), "{svg}");
        assert!(svg.contains("2026-12-02: 2 used, 0 remaining"), "{svg}");
    }
}
