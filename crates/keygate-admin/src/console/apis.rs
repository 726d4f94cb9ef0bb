//! The APIs and stages pages: per API its methods with an "API key required" switch, a banner
//! while a stage serves an older definition than the API's current one, Deploy to a stage, and
//! the deployment history. As on AWS, a method change takes effect at the next deployment.

use std::collections::HashMap;

use axum::extract::{Path, Query};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use keygate_control::{apis, enforcement};
use keygate_types::model::{Api, Deployment, Stage};
use keygate_types::{Enforcement, HttpMethod, Integration, ServiceDefinition};
use maud::html;
use serde::Deserialize;

use super::{Posted, Section, Signed, control_error, date, layout, page};

fn notice(code: &str) -> Option<&'static str> {
    match code {
        "method" => {
            Some("Saved in the API's definition. Deploy it to a stage for the stage to serve it.")
        }
        "deployed" => Some("Deployed: the stage serves the new deployment within a second."),
        "enforcement" => {
            Some("Switched: the stage's key checks change on every gateway within a second.")
        }
        _ => None,
    }
}

/// An API with its current definition and its stages, each with whether it serves that
/// definition.
struct ApiView {
    api: Api,
    definition: Option<ServiceDefinition>,
    stages: Vec<(Stage, bool)>,
    deployments: Vec<Deployment>,
}

async fn view(store: &keygate_control::Store, api: Api) -> keygate_control::Result<ApiView> {
    let definition = store.get_api_definition(&api.id).await?;
    let deployments = store.list_deployments(&api.id).await?;
    let mut stages = Vec::new();
    for stage in store.list_stages(&api.id).await? {
        let current = deployments
            .iter()
            .find(|d| d.id == stage.deployment_id)
            .is_some_and(|d| Some(&d.definition) == definition.as_ref());
        stages.push((stage, current));
    }
    Ok(ApiView { api, definition, stages, deployments })
}

fn integration(i: &Integration, function: &str) -> String {
    match i {
        Integration::LambdaProxy => format!("Lambda proxy: {function}"),
        Integration::HttpProxy { uri, insecure_skip_verification: false } => {
            format!("HTTP proxy: {uri}")
        }
        Integration::HttpProxy { uri, insecure_skip_verification: true } => {
            format!("HTTP proxy: {uri} (certificate issuer not verified)")
        }
        Integration::Mock => "Mock".to_owned(),
    }
}

pub(crate) async fn list(signed: Signed) -> Response {
    let apis = match signed.store.list_apis().await {
        Ok(apis) => apis,
        Err(e) => return control_error(&e.into()),
    };
    let mut views = Vec::with_capacity(apis.len());
    for api in apis {
        match view(&signed.store, api).await {
            Ok(v) => views.push(v),
            Err(e) => return control_error(&e),
        }
    }
    let body = html! {
        @if views.is_empty() {
            p.empty { "No APIs yet: " code { "keygate deploy" } " a service's serverless.yml." }
        } @else {
            div.table-wrap {
                table {
                    caption.visually-hidden { "APIs" }
                    thead { tr {
                        th scope="col" { "API" } th scope="col" { "Id" }
                        th scope="col" { "Stages" } th scope="col" { "Created" }
                    } }
                    tbody {
                        @for v in &views {
                            tr {
                                th scope="row" { a href={ "/console/apis/" (v.api.id) } { (v.api.name) } }
                                td { code { (v.api.id) } }
                                td {
                                    @for (stage, current) in &v.stages {
                                        span.stage {
                                            (stage.name)
                                            @if !current { " " span.badge { "undeployed changes" } }
                                        }
                                        " "
                                    }
                                }
                                td { (date(v.api.created_date)) }
                            }
                        }
                    }
                }
            }
        }
    };
    page(StatusCode::OK, layout("APIs and stages", Some((&signed.session, Section::Apis)), body))
}

pub(crate) async fn show(
    signed: Signed,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    api_page(&signed, &id, q.get("notice").map(String::as_str), None).await
}

/// An API's page; `deploy_error` is shown next to the Deploy form's stage (status 400).
async fn api_page(
    signed: &Signed,
    id: &str,
    notice_code: Option<&str>,
    deploy_error: Option<&str>,
) -> Response {
    let api = match signed.store.get_api(id).await {
        Ok(Some(api)) => api,
        Ok(None) => {
            return control_error(&keygate_control::Error::NotFound(format!(
                "no REST API with id {id:?}"
            )));
        }
        Err(e) => return control_error(&e.into()),
    };
    let v = match view(&signed.store, api).await {
        Ok(v) => v,
        Err(e) => return control_error(&e),
    };
    let behind: Vec<&str> =
        v.stages.iter().filter(|(_, current)| !current).map(|(s, _)| s.name.as_str()).collect();
    // The would-be refusals of the last 24 hours, per stage of this API.
    let since = signed.now_secs() - 86_400;
    let mut refusals: HashMap<&str, Vec<enforcement::Client>> = HashMap::new();
    for (s, _) in &v.stages {
        match enforcement::by_client(&signed.store, Some(&s.name), since).await {
            Ok(all) => {
                let ours = all
                    .into_iter()
                    .filter_map(|mut c| {
                        c.routes.retain(|r| r.api == v.api.name);
                        (!c.routes.is_empty()).then_some(c)
                    })
                    .collect();
                refusals.insert(s.name.as_str(), ours);
            }
            Err(e) => return control_error(&e),
        }
    }
    let csrf = &signed.session.csrf;
    let mut methods: Vec<(&str, HttpMethod, bool, bool, String)> = v
        .definition
        .iter()
        .flat_map(|d| &d.functions)
        .flat_map(|f| {
            f.events.iter().map(|e| {
                (
                    e.path.as_str(),
                    e.method,
                    e.private,
                    e.report,
                    integration(&e.integration, &f.function_name),
                )
            })
        })
        .collect();
    methods.sort_by(|a, b| (a.0, a.1.as_str()).cmp(&(b.0, b.1.as_str())));
    let serving: HashMap<&str, Vec<&str>> =
        v.stages.iter().fold(HashMap::new(), |mut m, (s, _)| {
            m.entry(s.deployment_id.as_str()).or_insert_with(Vec::new).push(s.name.as_str());
            m
        });
    let body = html! {
        @if let Some(text) = notice_code.and_then(notice) {
            p.notice role="status" { (text) }
        }
        p.help {
            "The next " code { "keygate deploy" } " of this service's serverless.yml replaces "
            "this definition, console changes included, as a CloudFormation stack update does: "
            "make lasting changes in the yml."
        }
        @if !behind.is_empty() {
            div.banner role="status" {
                strong { "Undeployed changes. " }
                "Stage " (behind.join(", ")) " serves a deployment older than the API's "
                "current definition: method changes take effect when you deploy."
            }
        }
        form.card.deploy method="post" action={ "/console/apis/" (v.api.id) "/deploy" } {
            input type="hidden" name="csrf" value=(csrf);
            div.field {
                label for="stage" { "Stage" }
                select #stage name="stage" {
                    @for (s, _) in &v.stages {
                        option value=(s.name) selected[behind.first() == Some(&s.name.as_str())] { (s.name) }
                    }
                    option value="" { "A new stage…" }
                }
            }
            div.field {
                label for="new-stage" { "New stage name (when “A new stage…”)" }
                input #new-stage type="text" name="new_stage"
                    aria-invalid=[deploy_error.map(|_| "true")];
                @if let Some(e) = deploy_error { p.error #new-stage-error role="alert" { (e) } }
            }
            button.primary type="submit" { "Deploy" }
        }
        h2 { "Methods" }
        div.table-wrap {
            table {
                caption.visually-hidden { "Methods" }
                thead { tr {
                    th scope="col" { "Resource" } th scope="col" { "Method" }
                    th scope="col" { "Integration" } th scope="col" { "API key required" }
                } }
                tbody {
                    @for (path, method, private, report, integration) in &methods {
                        tr {
                            th scope="row" { code { (path) } }
                            td { (method.as_str()) }
                            td { (integration) }
                            td {
                                form method="post" action={ "/console/apis/" (v.api.id) "/methods" } {
                                    input type="hidden" name="csrf" value=(csrf);
                                    input type="hidden" name="path" value=(path);
                                    input type="hidden" name="method" value=(method.as_str());
                                    input type="hidden" name="required" value=(if *private { "false" } else { "true" });
                                    button.switch type="submit" role="switch"
                                        aria-checked=(if *private { "true" } else { "false" })
                                        aria-label={ "API key required: " (method.as_str()) " " (path) } {
                                        (match (*private, *report) {
                                            (true, _) => "Required",
                                            (false, true) => "Report only",
                                            (false, false) => "Not required",
                                        })
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        h2 { "Key checks per stage" }
        p.help {
            "Report mode lets through what keys and usage plans would refuse and records it, so "
            "an open API can move to keys knowing who would break. The switch is kept across "
            "deploys until set back to “as deployed”."
        }
        @for (s, _) in &v.stages {
            @let clients = refusals.get(s.name.as_str()).map_or(&[][..], Vec::as_slice);
            section.card {
                h3 { "Stage " (s.name) }
                form method="post" action={ "/console/apis/" (v.api.id) "/enforcement" } {
                    input type="hidden" name="csrf" value=(csrf);
                    input type="hidden" name="stage" value=(s.name);
                    div.field {
                        label for={ "enforcement-" (s.name) } { "Key checks" }
                        select id={ "enforcement-" (s.name) } name="mode" {
                            option value="deployed" selected[s.enforcement.is_none()] { "As deployed" }
                            option value="report" selected[s.enforcement == Some(Enforcement::Report)] { "Report only: refuse nothing, record what would be refused" }
                            option value="enforce" selected[s.enforcement == Some(Enforcement::Enforce)] { "Enforce: report-only routes refuse" }
                        }
                    }
                    button type="submit" { "Switch" }
                }
                @if clients.is_empty() {
                    p.muted { "Nothing would have been refused in the last 24 hours." }
                } @else {
                    div.table-wrap {
                        table {
                            caption { "Would have been refused in the last 24 hours, by client" }
                            thead { tr {
                                th scope="col" { "Client" } th scope="col" { "User agent" }
                                th scope="col" { "Requests" } th scope="col" { "Why" } th scope="col" { "Last" }
                            } }
                            tbody {
                                @for c in clients {
                                    tr {
                                        th scope="row" { code { (c.client) } }
                                        td { (c.user_agent) }
                                        td { (c.count) }
                                        td { @for (reason, n) in &c.reasons { code { (reason) } " " (n) " " } }
                                        td { (date(c.last_seen)) }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        h2 { "Deployment history" }
        div.table-wrap {
            table {
                caption.visually-hidden { "Deployments" }
                thead { tr { th scope="col" { "Deployment" } th scope="col" { "Created" } th scope="col" { "Served by" } } }
                tbody {
                    @for d in v.deployments.iter().rev() {
                        tr {
                            th scope="row" { code { (d.id) } }
                            td { (date(d.created_date)) }
                            td { @if let Some(stages) = serving.get(d.id.as_str()) { (stages.join(", ")) } }
                        }
                    }
                }
            }
        }
    };
    let title = format!("API {}", v.api.name);
    let status = if deploy_error.is_some() { StatusCode::BAD_REQUEST } else { StatusCode::OK };
    page(status, layout(&title, Some((&signed.session, Section::Apis)), body))
}

#[derive(Debug, Deserialize)]
pub(crate) struct MethodForm {
    path: String,
    method: String,
    required: String,
}

pub(crate) async fn set_method(
    Path(id): Path<String>,
    Posted(signed, form): Posted<MethodForm>,
) -> Response {
    let Some(method) = HttpMethod::parse(&form.method) else {
        return control_error(&keygate_control::Error::Invalid(format!(
            "unknown method {:?}",
            form.method
        )));
    };
    let required = match form.required.as_str() {
        "true" => true,
        "false" => false,
        other => {
            return control_error(&keygate_control::Error::Invalid(format!(
                "required must be true or false, not {other:?}"
            )));
        }
    };
    match apis::set_key_required(&signed.store, &id, &form.path, method, required).await {
        Ok(()) => Redirect::to(&format!("/console/apis/{id}?notice=method")).into_response(),
        Err(e) => control_error(&e),
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct DeployForm {
    #[serde(default)]
    stage: String,
    #[serde(default)]
    new_stage: String,
}

pub(crate) async fn deploy(
    Path(id): Path<String>,
    Posted(signed, form): Posted<DeployForm>,
) -> Response {
    let stage = if form.stage.is_empty() { form.new_stage.trim() } else { form.stage.as_str() };
    match apis::create_deployment(&signed.store, &id, stage).await {
        Ok(_) => Redirect::to(&format!("/console/apis/{id}?notice=deployed")).into_response(),
        Err(e @ keygate_control::Error::Invalid(_)) => {
            api_page(&signed, &id, None, Some(&e.to_string())).await
        }
        Err(e) => control_error(&e),
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct EnforcementForm {
    #[serde(default)]
    stage: String,
    #[serde(default)]
    mode: String,
}

/// Switches a stage's key checks (report, enforce, or as deployed) for this API.
pub(crate) async fn set_enforcement(
    Path(id): Path<String>,
    Posted(signed, form): Posted<EnforcementForm>,
) -> Response {
    let switch = match form.mode.as_str() {
        "deployed" => None,
        other => match other.parse::<Enforcement>() {
            Ok(e) => Some(e),
            Err(()) => {
                return control_error(&keygate_control::Error::Invalid(format!(
                    "the key checks are report, enforce or deployed, not {other:?}"
                )));
            }
        },
    };
    let api = match signed.store.get_api(&id).await {
        Ok(Some(api)) => api,
        Ok(None) => {
            return control_error(&keygate_control::Error::NotFound(format!(
                "no REST API with id {id:?}"
            )));
        }
        Err(e) => return control_error(&e.into()),
    };
    match enforcement::set(&signed.store, &form.stage, Some(&api.name), switch).await {
        Ok(_) => Redirect::to(&format!("/console/apis/{id}?notice=enforcement")).into_response(),
        Err(e) => control_error(&e),
    }
}
