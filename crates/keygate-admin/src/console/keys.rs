//! The API keys pages: the list (searched and paged in the store), create (the value shown once),
//! enable, disable, delete with confirmation.

use std::collections::HashMap;

use axum::extract::{Path, Query};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use keygate_control::keys::{self, CreateKey};
use keygate_control::{ListQuery, MAX_PAGE, Store};
use keygate_types::model::{ApiKey, UsagePlan};
use maud::{Markup, html};
use serde::Deserialize;

use super::{NoFields, Posted, Section, Signed, control_error, date, layout, page};

/// Keys on one page of the list.
const PAGE: u32 = 50;

/// Notices a redirect may ask the list to show (fixed texts: nothing from the URL is echoed).
fn notice(code: &str) -> Option<&'static str> {
    match code {
        "enabled" => Some("The key is enabled: gateways accept it within a second."),
        "disabled" => Some("The key is disabled: gateways refuse it (403) within a second."),
        "deleted" => Some("The key is deleted: gateways refuse it (403) within a second."),
        _ => None,
    }
}

fn status(key: &ApiKey, now: i64) -> &'static str {
    if !key.enabled {
        "Disabled"
    } else if key.expires.is_some_and(|e| e <= now) {
        "Expired"
    } else {
        "Enabled"
    }
}

/// The first page of plans (a gateway has few; beyond 500 the list shows ids).
async fn plans(store: &Store) -> keygate_control::Result<Vec<UsagePlan>> {
    Ok(keygate_control::plans::list(store, &ListQuery::first(MAX_PAGE)).await?.items)
}

pub(crate) async fn list(signed: Signed, Query(q): Query<HashMap<String, String>>) -> Response {
    let search = q.get("q").map(|s| s.trim().to_owned()).filter(|s| !s.is_empty());
    let query = match ListQuery::new(PAGE, q.get("position").map(String::as_str), search.clone()) {
        Ok(query) => query,
        Err(e) => return control_error(&e),
    };
    let listed = match keys::list(&signed.store, &query, None).await {
        Ok(listed) => listed,
        Err(e) => return control_error(&e),
    };
    let plans = match plans(&signed.store).await {
        Ok(p) => p,
        Err(e) => return control_error(&e),
    };
    let plan_names: HashMap<&str, &str> =
        plans.iter().map(|p| (p.id.as_str(), p.name.as_str())).collect();
    let mut rows = Vec::with_capacity(listed.items.len());
    for key in &listed.items {
        let ids = match signed.store.key_plan_ids(&key.id).await {
            Ok(ids) => ids,
            Err(e) => return control_error(&e.into()),
        };
        let names: Vec<String> = ids
            .iter()
            .map(|id| plan_names.get(id.as_str()).map_or_else(|| id.clone(), |n| (*n).to_owned()))
            .collect();
        rows.push((key, names));
    }
    let next = listed.position().map(|position| match &search {
        Some(s) => format!(
            "/console/keys?q={}&position={position}",
            percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC)
        ),
        None => format!("/console/keys?position={position}"),
    });
    let now = signed.now_secs();
    let csrf = &signed.session.csrf;
    let body = html! {
        @if let Some(text) = q.get("notice").and_then(|c| notice(c)) {
            p.notice role="status" { (text) }
        }
        div.toolbar {
            form.search method="get" action="/console/keys" role="search" {
                label for="q" { "Search by name" }
                input #q type="search" name="q" value=[search.as_deref()]
                    placeholder="Name starts with…";
                button type="submit" { "Search" }
            }
            div.buttons {
                a.button href="/console/keys/import" { "Import keys" }
                a.button.primary href="/console/keys/new" { "Create API key" }
            }
        }
        @if rows.is_empty() {
            p.empty {
                @if search.is_some() { "No key's name starts with that." }
                @else { "No API keys yet. Create one, or deploy a service whose yml declares some." }
            }
        } @else {
            div.table-wrap {
                table.keys {
                    caption.visually-hidden { "API keys" }
                    thead { tr {
                        th scope="col" { "Name" } th scope="col" { "Status" }
                        th scope="col" { "Usage plans" } th scope="col" { "Created" }
                        th scope="col" { "Last used" } th scope="col" { "Expires" }
                        th scope="col" { span.visually-hidden { "Actions" } }
                    } }
                    tbody {
                        @for (key, names) in &rows {
                            @let state = status(key, now);
                            tr data-key=(key.name) {
                                th scope="row" {
                                    a href={ "/console/keys/" (key.id) } { (key.name) }
                                    span.prefix title="The value's first characters" {
                                        (key.prefix) "…"
                                    }
                                }
                                td { span class={ "status " (state.to_ascii_lowercase()) } { (state) } }
                                td { @if names.is_empty() { span.muted { "none" } } @else { (names.join(", ")) } }
                                td { (date(key.created_date)) }
                                td { @match key.last_used_date { Some(t) => (date(t)), None => span.muted { "never" } } }
                                td { @match key.expires { Some(t) => (date(t)), None => span.muted { "never" } } }
                                td.actions {
                                    @if key.enabled {
                                        form method="post" action={ "/console/keys/" (key.id) "/disable" } {
                                            input type="hidden" name="csrf" value=(csrf);
                                            button type="submit" aria-label={ "Disable " (key.name) } { "Disable" }
                                        }
                                    } @else {
                                        form method="post" action={ "/console/keys/" (key.id) "/enable" } {
                                            input type="hidden" name="csrf" value=(csrf);
                                            button type="submit" aria-label={ "Enable " (key.name) } { "Enable" }
                                        }
                                    }
                                    a.button.danger href={ "/console/keys/" (key.id) "/delete" }
                                        aria-label={ "Delete " (key.name) } { "Delete" }
                                }
                            }
                        }
                    }
                }
            }
        }
        @if let Some(next) = next {
            p.paging { a href=(next) { "Next page" } }
        }
    };
    page(StatusCode::OK, layout("API keys", Some((&signed.session, Section::Keys)), body))
}

/// What the create form holds, kept to re-render it with an error next to its field.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct CreateForm {
    #[serde(default)]
    name: String,
    /// `auto` (generated) or `custom`.
    #[serde(default)]
    value_mode: String,
    #[serde(default)]
    value: String,
    /// A plan id, or empty for none.
    #[serde(default)]
    plan: String,
    #[serde(default)]
    expires: String,
    /// Present when the checkbox is ticked.
    enabled: Option<String>,
}

/// Which field an error belongs next to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Name,
    Value,
    Plan,
    Expires,
}

fn create_form(
    signed: &Signed,
    plans: &[UsagePlan],
    form: &CreateForm,
    error: Option<(Field, &str)>,
) -> Markup {
    let error_for = |f: Field| error.filter(|(at, _)| *at == f).map(|(_, m)| m);
    let custom = form.value_mode == "custom";
    let enabled = form.enabled.is_some() || form.name.is_empty();
    let field_error = |id: &str, f: Field| {
        html! {
            @if let Some(message) = error_for(f) {
                p.error id={ (id) "-error" } role="alert" { (message) }
            }
        }
    };
    let body = html! {
        form.card method="post" action="/console/keys" novalidate {
            input type="hidden" name="csrf" value=(signed.session.csrf);
            div.field {
                label for="name" { "Name" }
                input #name type="text" name="name" value=(form.name) required maxlength="1024"
                    aria-invalid=[error_for(Field::Name).map(|_| "true")];
                (field_error("name", Field::Name))
            }
            fieldset.field {
                legend { "Value" }
                div.choice {
                    input #value-auto type="radio" name="value_mode" value="auto" checked[!custom];
                    label for="value-auto" { "Generate one (40 characters)" }
                }
                div.choice {
                    input #value-custom type="radio" name="value_mode" value="custom" checked[custom];
                    label for="value-custom" { "Use my own value (20 to 128 letters and digits)" }
                }
                label for="value" { "Custom value" }
                input #value type="text" name="value" value=(form.value) autocomplete="off"
                    spellcheck="false" aria-invalid=[error_for(Field::Value).map(|_| "true")];
                (field_error("value", Field::Value))
            }
            div.field {
                label for="plan" { "Usage plan" }
                select #plan name="plan" aria-describedby="plan-help"
                    aria-invalid=[error_for(Field::Plan).map(|_| "true")] {
                    option value="" selected[form.plan.is_empty()] { "None" }
                    @for p in plans {
                        option value=(p.id) selected[form.plan == p.id] {
                            (p.name)
                            @for s in &p.api_stages { " · " (s.stage) }
                        }
                    }
                }
                p.help #plan-help {
                    "A key works on a stage only through a usage plan that covers it, as on AWS."
                }
                (field_error("plan", Field::Plan))
            }
            div.field {
                label for="expires" { "Expires (optional)" }
                input #expires type="text" name="expires" value=(form.expires)
                    placeholder="2027-01-31, 2027-01-31T12:00:00Z or +30d"
                    aria-describedby="expires-help"
                    aria-invalid=[error_for(Field::Expires).map(|_| "true")];
                p.help #expires-help { "Empty: the key never expires." }
                (field_error("expires", Field::Expires))
            }
            div.field.choice {
                input #enabled type="checkbox" name="enabled" value="on" checked[enabled];
                label for="enabled" { "Enabled" }
            }
            div.buttons {
                button.primary type="submit" { "Create API key" }
                a.button href="/console/keys" { "Cancel" }
            }
        }
    };
    layout("Create API key", Some((&signed.session, Section::Keys)), body)
}

pub(crate) async fn new_page(signed: Signed) -> Response {
    match plans(&signed.store).await {
        Ok(plans) => {
            page(StatusCode::OK, create_form(&signed, &plans, &CreateForm::default(), None))
        }
        Err(e) => control_error(&e),
    }
}

/// Where an operation's error belongs on the create form.
fn field_of(e: &keygate_control::Error) -> Field {
    let text = e.to_string();
    match e {
        keygate_control::Error::NotFound(_) if text.contains("plan") => Field::Plan,
        _ if text.starts_with("value") || text.contains("value") => Field::Value,
        _ if text.contains("plan") || text.contains("stage") => Field::Plan,
        _ => Field::Name,
    }
}

pub(crate) async fn create(Posted(signed, form): Posted<CreateForm>) -> Response {
    let plans = match plans(&signed.store).await {
        Ok(p) => p,
        Err(e) => return control_error(&e),
    };
    let invalid = |field: Field, message: &str| {
        page(StatusCode::BAD_REQUEST, create_form(&signed, &plans, &form, Some((field, message))))
    };
    let expires = match form.expires.trim() {
        "" => None,
        text => match keys::parse_expiry(text, signed.now_secs()) {
            Ok(e) => e,
            Err(e) => return invalid(Field::Expires, &e.to_string()),
        },
    };
    let value = match form.value_mode.as_str() {
        "custom" if form.value.is_empty() => {
            return invalid(Field::Value, "Type the custom value, or choose to generate one.");
        }
        "custom" => Some(form.value.clone()),
        _ => None,
    };
    let input = CreateKey {
        name: form.name.trim().to_owned(),
        value,
        description: None,
        customer_id: None,
        enabled: form.enabled.is_some(),
        usage_plan: (!form.plan.is_empty()).then(|| form.plan.clone()),
        expires,
    };
    let (key, value) = match keys::create(&signed.store, input).await {
        Ok(created) => created,
        Err(e @ keygate_control::Error::Store(_)) => return control_error(&e),
        Err(e) => return invalid(field_of(&e), &e.to_string()),
    };
    let plan = plans.iter().find(|p| p.id == form.plan);
    let body = html! {
        div.card.created {
            p role="status" {
                "The key " strong { (key.name) } " is created"
                @if let Some(p) = plan { " in the usage plan " strong { (p.name) } }
                "."
            }
            label for="key-value" { "Its value, shown this once" }
            div.copy {
                input #key-value type="text" readonly value=(value.expose()) spellcheck="false";
                button type="button" data-copy="key-value" { "Copy" }
            }
            p.help {
                "keygate keeps only a digest of the value: copy it now, it cannot be shown again. "
                "Clients send it in the " code { "x-api-key" } " header."
            }
            p { a.button.primary href="/console/keys" { "Done" } }
        }
    };
    page(StatusCode::OK, layout("API key created", Some((&signed.session, Section::Keys)), body))
}

async fn set_enabled(signed: &Signed, id: &str, on: bool) -> Response {
    match keys::set_enabled(&signed.store, id, on).await {
        Ok(_) => {
            let code = if on { "enabled" } else { "disabled" };
            Redirect::to(&format!("/console/keys?notice={code}")).into_response()
        }
        Err(e) => control_error(&e),
    }
}

pub(crate) async fn enable(
    Path(id): Path<String>,
    Posted(signed, NoFields {}): Posted<NoFields>,
) -> Response {
    set_enabled(&signed, &id, true).await
}

pub(crate) async fn disable(
    Path(id): Path<String>,
    Posted(signed, NoFields {}): Posted<NoFields>,
) -> Response {
    set_enabled(&signed, &id, false).await
}

pub(crate) async fn delete_page(signed: Signed, Path(id): Path<String>) -> Response {
    let key = match signed.store.get_key(&id).await {
        Ok(Some(key)) => key,
        Ok(None) => {
            return control_error(&keygate_control::Error::NotFound(format!(
                "no API key with id {id:?}"
            )));
        }
        Err(e) => return control_error(&e.into()),
    };
    let body = html! {
        form.card method="post" action={ "/console/keys/" (key.id) "/delete" } {
            input type="hidden" name="csrf" value=(signed.session.csrf);
            p {
                "Delete the key " strong { (key.name) } " ("
                code { (key.prefix) "…" } ")? Requests with it are refused (403) within a "
                "second, its usage plans forget it, and it cannot be brought back."
            }
            div.buttons {
                button.danger type="submit" { "Delete " (key.name) }
                a.button href="/console/keys" { "Cancel" }
            }
        }
    };
    page(StatusCode::OK, layout("Delete API key", Some((&signed.session, Section::Keys)), body))
}

pub(crate) async fn delete(
    Path(id): Path<String>,
    Posted(signed, NoFields {}): Posted<NoFields>,
) -> Response {
    match keys::delete(&signed.store, &id).await {
        Ok(_) => Redirect::to("/console/keys?notice=deleted").into_response(),
        Err(e) => control_error(&e),
    }
}

fn key_notice(code: &str) -> Option<&'static str> {
    match code {
        "expiry" => Some("The expiry is saved: gateways apply it within a second."),
        "plan" => Some("The key is in the plan: it works on the plan's stages within a second."),
        _ => None,
    }
}

/// The forms of a key's page, for an error shown next to the control it is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyPageForm {
    Plan,
    Expiry,
    Rotate,
}

pub(crate) async fn show(
    signed: Signed,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    key_page(&signed, &id, q.get("notice").map(String::as_str), None).await
}

/// A key's page; `error` is shown next to the control of the form it names (status 400).
async fn key_page(
    signed: &Signed,
    id: &str,
    notice_code: Option<&str>,
    error: Option<(KeyPageForm, &str)>,
) -> Response {
    let error_for = |f: KeyPageForm| error.filter(|(at, _)| *at == f).map(|(_, m)| m);
    let shown = |id: &str, f: KeyPageForm| {
        html! { @if let Some(m) = error_for(f) { p.error id={ (id) "-error" } role="alert" { (m) } } }
    };
    let key = match keys::find(&signed.store, id).await {
        Ok(key) => key,
        Err(e) => return control_error(&e),
    };
    let (all_plans, in_plans) =
        match (plans(&signed.store).await, signed.store.key_plan_ids(&key.id).await) {
            (Ok(p), Ok(ids)) => (p, ids),
            (Err(e), _) => return control_error(&e),
            (_, Err(e)) => return control_error(&e.into()),
        };
    let now = signed.now_secs();
    let old_values = match keys::old_values(&signed.store, &key.id, now).await {
        Ok(old) => old,
        Err(e) => return control_error(&e),
    };
    let csrf = &signed.session.csrf;
    let state_text = status(&key, now);
    let body = html! {
        @if let Some(text) = notice_code.and_then(key_notice) {
            p.notice role="status" { (text) }
        }
        dl.facts {
            dt { "Status" } dd { span class={ "status " (state_text.to_ascii_lowercase()) } { (state_text) } }
            dt { "Value" } dd { code { (key.prefix) "…" } " (keygate keeps only a digest)" }
            dt { "Usage plans" } dd {
                @if in_plans.is_empty() { span.muted { "none" } }
                @for id in &in_plans {
                    @let name = all_plans.iter().find(|p| &p.id == id).map_or(id.as_str(), |p| p.name.as_str());
                    a href={ "/console/plans/" (id) } { (name) } " "
                }
            }
            dt { "Created" } dd { (date(key.created_date)) }
            dt { "Last used" } dd { @match key.last_used_date { Some(t) => (date(t)), None => "never" } }
            dt { "Expires" } dd { @match key.expires { Some(t) => (date(t)), None => "never" } }
            @if let Some(d) = &key.description { dt { "Description" } dd { (d) } }
            @if let Some(c) = &key.customer_id { dt { "Customer id" } dd { (c) } }
        }
        @if !old_values.is_empty() {
            h2 { "Old values still accepted" }
            p.muted { "Values a rotation replaced, in their grace period, and the clients that still send them." }
            @for o in &old_values {
                section.card {
                    p {
                        code { @match &o.prefix { Some(p) => { (p) "…" }, None => "an older value" } }
                        " works until " (date(o.expires))
                        @if let Some(idle) = o.retire_idle { ", or once unused for " (idle) " s" }
                    }
                    @if o.uses.is_empty() {
                        p.muted { "No request has used it since the rotation." }
                    } @else {
                        table {
                            thead { tr { th { "Client" } th { "User agent" } th { "Requests" } th { "Last used" } } }
                            tbody {
                                @for u in &o.uses {
                                    tr {
                                        td { code { (u.client) } }
                                        td { @if u.user_agent.is_empty() { span.muted { "none" } } @else { (u.user_agent) } }
                                        td { (u.count) }
                                        td { (date(u.last_seen)) }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        h2 { "Add to a usage plan" }
        form.card method="post" action={ "/console/keys/" (key.id) "/plans" } {
            input type="hidden" name="csrf" value=(csrf);
            div.field {
                label for="key-plan" { "Usage plan" }
                select #key-plan name="plan" aria-invalid=[error_for(KeyPageForm::Plan).map(|_| "true")] {
                    @for p in all_plans.iter().filter(|p| !in_plans.contains(&p.id)) {
                        option value=(p.id) { (p.name) @for s in &p.api_stages { " · " (s.stage) } }
                    }
                }
                p.help { "A key may be in one plan per API stage, as on AWS." }
                (shown("key-plan", KeyPageForm::Plan))
            }
            button type="submit" { "Add to plan" }
        }
        h2 { "Expiry" }
        form.card method="post" action={ "/console/keys/" (key.id) "/expiry" } {
            input type="hidden" name="csrf" value=(csrf);
            div.field {
                label for="key-expires" { "Expires" }
                input #key-expires type="text" name="expires" aria-describedby="key-expires-help"
                    aria-invalid=[error_for(KeyPageForm::Expiry).map(|_| "true")]
                    value=[key.expires.map(super::iso)];
                p.help #key-expires-help { "2027-01-31, 2027-01-31T12:00:00Z, +30d, or empty for never." }
                (shown("key-expires", KeyPageForm::Expiry))
            }
            button type="submit" { "Save expiry" }
        }
        h2 { "Rotate" }
        form.card method="post" action={ "/console/keys/" (key.id) "/rotate" } {
            input type="hidden" name="csrf" value=(csrf);
            div.field {
                label for="grace" { "Grace period for the current value" }
                input #grace type="text" name="grace" value="24h" aria-describedby="grace-help"
                    aria-invalid=[error_for(KeyPageForm::Rotate).map(|_| "true")];
                p.help #grace-help { "How long the current value keeps working beside the new one: 0, 30m, 24h, 7d." }
                (shown("grace", KeyPageForm::Rotate))
            }
            div.field {
                label for="retire-when-idle" { "Retire it sooner, once unused for (optional)" }
                input #retire-when-idle type="text" name="retire_when_idle" value="" aria-describedby="retire-help";
                p.help #retire-help { "e.g. 1h: the current value stops as soon as no request has used it for that long; this page shows who still sends it meanwhile." }
            }
            button type="submit" { "Rotate: make a new value" }
        }
        p { a.button.danger href={ "/console/keys/" (key.id) "/delete" } { "Delete " (key.name) } }
    };
    let title = format!("API key {}", key.name);
    let status = if error.is_some() { StatusCode::BAD_REQUEST } else { StatusCode::OK };
    page(status, layout(&title, Some((&signed.session, Section::Keys)), body))
}

#[derive(Debug, Deserialize)]
pub(crate) struct ExpiryForm {
    #[serde(default)]
    expires: String,
}

pub(crate) async fn set_expiry(
    Path(id): Path<String>,
    Posted(signed, form): Posted<ExpiryForm>,
) -> Response {
    let expires = match form.expires.trim() {
        "" => None,
        text => match keys::parse_expiry(text, signed.now_secs()) {
            Ok(e) => e,
            Err(e) => {
                return key_page(&signed, &id, None, Some((KeyPageForm::Expiry, &e.to_string())))
                    .await;
            }
        },
    };
    match keys::set_expiry(&signed.store, &id, expires).await {
        Ok(key) => Redirect::to(&format!("/console/keys/{}?notice=expiry", key.id)).into_response(),
        Err(e) => control_error(&e),
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct RotateForm {
    #[serde(default)]
    grace: String,
    #[serde(default)]
    retire_when_idle: String,
}

pub(crate) async fn rotate(
    Path(id): Path<String>,
    Posted(signed, form): Posted<RotateForm>,
) -> Response {
    let grace =
        match keys::parse_duration(if form.grace.trim().is_empty() { "0" } else { &form.grace }) {
            Ok(g) => g,
            Err(e) => return control_error(&e),
        };
    let idle = match form.retire_when_idle.trim() {
        "" => None,
        text => match keys::parse_duration(text) {
            Ok(d) => Some(d),
            Err(e) => return control_error(&e),
        },
    };
    let (key, value) = match keys::rotate(&signed.store, &id, grace, idle).await {
        Ok(r) => r,
        Err(e) => return control_error(&e),
    };
    let old_end = keys::old_values_end(&key, grace);
    let body = html! {
        div.card.created {
            p role="status" {
                "The key " strong { (key.name) } " has a new value. "
                @match old_end {
                    Some(end) => { "The previous value keeps working until " (date(end)) "." }
                    None => { "The previous value stopped working." }
                }
            }
            label for="key-value" { "The new value, shown this once" }
            div.copy {
                input #key-value type="text" readonly value=(value.expose()) spellcheck="false";
                button type="button" data-copy="key-value" { "Copy" }
            }
            p { a.button.primary href={ "/console/keys/" (key.id) } { "Done" } }
        }
    };
    page(StatusCode::OK, layout("API key rotated", Some((&signed.session, Section::Keys)), body))
}

#[derive(Debug, Deserialize)]
pub(crate) struct PlanForm {
    #[serde(default)]
    plan: String,
}

pub(crate) async fn add_to_plan(
    Path(id): Path<String>,
    Posted(signed, form): Posted<PlanForm>,
) -> Response {
    match keygate_control::plans::add_key(&signed.store, &form.plan, &id).await {
        Ok((_, key_id)) => {
            Redirect::to(&format!("/console/keys/{key_id}?notice=plan")).into_response()
        }
        Err(e) => control_error(&e),
    }
}
