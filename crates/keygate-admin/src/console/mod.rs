//! The web console: server-rendered pages on the admin listener (`/` and `/console/...`), shipped
//! inside the binary (maud templates, one stylesheet, one small script; no CDN, no build step).
//!
//! - `session`: sign-in with an admin token, the HttpOnly SameSite=Strict cookie, CSRF tokens.
//! - `keys`, `apis`, `plans`, `audit`: one module per page family.
//!
//! Invariants: every change goes through `keygate-control` with the store acting as
//! `console:<token id>` (audited like the CLI and the admin API); every state-changing request is
//! a POST that carries the session's CSRF token and, when the browser says where it comes from
//! (`Origin`, `Sec-Fetch-Site`), comes from the console itself; every page is sent with a strict
//! Content-Security-Policy and `Cache-Control: no-store` (a new key's value is shown once and must
//! not stay in a cache).

mod apis;
mod audit;
mod import;
mod keys;
mod plans;
pub(crate) mod session;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Form, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use keygate_control::Store;
use keygate_types::clock::{Clock, SystemClock};
use maud::{DOCTYPE, Markup, html};
use serde::Deserialize;

use crate::AdminState;
use session::Session;
pub use session::Sessions;

/// How long a console session lasts by default.
pub const DEFAULT_SESSION_TTL: Duration = Duration::from_secs(8 * 3600);

/// The console's settings and its sessions.
#[derive(Debug)]
pub struct Console {
    pub(crate) sessions: Sessions,
    /// Cookies marked `Secure` (the console is served over TLS).
    pub(crate) secure: bool,
}

impl Console {
    /// A console whose sessions last `ttl` by `clock`.
    pub fn new(ttl: Duration, clock: Arc<dyn Clock>, secure: bool) -> Self {
        Self { sessions: Sessions::new(ttl, clock), secure }
    }
}

impl Default for Console {
    fn default() -> Self {
        Self::new(DEFAULT_SESSION_TTL, Arc::new(SystemClock), false)
    }
}

const STYLE: &str = include_str!("assets/console.css");
const SCRIPT: &str = include_str!("assets/console.js");

/// The console's routes (merged beside the authenticated API routes; the console authenticates
/// with its own session cookie).
pub(crate) fn router() -> Router<Arc<AdminState>> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/console/keys") }))
        .route("/console", get(|| async { Redirect::to("/console/keys") }))
        .route("/console/", get(|| async { Redirect::to("/console/keys") }))
        .route("/console/signin", get(signin_page).post(signin))
        .route("/console/signout", post(signout))
        .route("/console/keys", get(keys::list).post(keys::create))
        .route("/console/keys/new", get(keys::new_page))
        .route(
            "/console/keys/import",
            get(import::page_get)
                .post(import::post)
                .layer(axum::extract::DefaultBodyLimit::max(import::MAX_CSV + 64 * 1024)),
        )
        .route("/console/keys/{id}", get(keys::show))
        .route("/console/keys/{id}/expiry", post(keys::set_expiry))
        .route("/console/keys/{id}/rotate", post(keys::rotate))
        .route("/console/keys/{id}/plans", post(keys::add_to_plan))
        .route("/console/keys/{id}/enable", post(keys::enable))
        .route("/console/keys/{id}/disable", post(keys::disable))
        .route("/console/keys/{id}/delete", get(keys::delete_page).post(keys::delete))
        .route("/console/apis", get(apis::list))
        .route("/console/apis/{id}", get(apis::show))
        .route("/console/apis/{id}/methods", post(apis::set_method))
        .route("/console/apis/{id}/deploy", post(apis::deploy))
        .route("/console/apis/{id}/enforcement", post(apis::set_enforcement))
        .route("/console/plans", get(plans::list).post(plans::create))
        .route("/console/plans/new", get(plans::new_page))
        .route("/console/plans/{id}", get(plans::show).post(plans::update))
        .route("/console/plans/{id}/stages", post(plans::add_stage))
        .route("/console/plans/{id}/stages/remove", post(plans::remove_stage))
        .route("/console/plans/{id}/keys", post(plans::add_key))
        .route("/console/plans/{id}/keys/remove", post(plans::remove_key))
        .route("/console/plans/{id}/delete", get(plans::delete_page).post(plans::delete))
        .route("/console/plans/{id}/usage", get(plans::usage_page))
        .route("/console/plans/{id}/usage.csv", get(plans::usage_csv))
        .route("/console/audit", get(audit::list))
        .route("/console/assets/console.css", get(|| async { asset("text/css", STYLE) }))
        .route("/console/assets/console.js", get(|| async { asset("text/javascript", SCRIPT) }))
        .layer(axum::middleware::map_response(page_headers))
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

/// Headers on every console response: no framing, no inline script or style, nothing cached.
async fn page_headers(mut res: Response) -> Response {
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // `same-origin`, not `no-referrer`: under `no-referrer` a browser sends `Origin: null` with
    // the console's own form posts, and the origin check needs the real one.
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

/// A signed-in request: its session, the store acting as `console:<token id>`, and when it
/// came by the console's clock (what expiries and "today" are judged by).
pub(crate) struct Signed {
    pub(crate) session: Session,
    pub(crate) store: Store,
    pub(crate) now_ms: i64,
}

impl Signed {
    /// Now in unix seconds.
    pub(crate) fn now_secs(&self) -> i64 {
        self.now_ms.div_euclid(1000)
    }
}

/// The request's live session, its admin token still active; otherwise the way to sign in.
pub(crate) async fn signed_in(state: &AdminState, headers: &HeaderMap) -> Result<Signed, Response> {
    let to_signin = || Redirect::to("/console/signin").into_response();
    let Some(id) = session::cookie_value(headers) else { return Err(to_signin()) };
    let Some(session) = state.console.sessions.get(id) else { return Err(to_signin()) };
    match state.store.find_admin_token(&session.token_digest).await {
        Ok(Some(t)) if t.revoked_date.is_none() => {}
        Ok(_) => {
            state.console.sessions.end(id);
            return Err(to_signin());
        }
        Err(e) => return Err(failure(&e.to_string())),
    }
    let store = state.store.acting_as(format!("console:{}", session.token_id));
    Ok(Signed { session, store, now_ms: state.console.sessions.now_unix_ms() })
}

/// A state-changing request: from the console's own pages (when the browser says where it comes
/// from), signed in, and carrying the session's CSRF token. Refused with 403 otherwise.
pub(crate) async fn signed_post(
    state: &AdminState,
    headers: &HeaderMap,
    csrf: &str,
) -> Result<Signed, Response> {
    if cross_site(headers) {
        return Err(cross_site_refusal());
    }
    let Ok(signed) = signed_in(state, headers).await else {
        return Err(session_ended());
    };
    if !signed.session.csrf_matches(csrf) {
        return Err(csrf_refusal());
    }
    Ok(signed)
}

impl axum::extract::FromRequestParts<Arc<AdminState>> for Signed {
    type Rejection = Response;

    /// A page's request: signed in, else redirected to the sign-in page.
    async fn from_request_parts(
        parts: &mut http::request::Parts,
        state: &Arc<AdminState>,
    ) -> Result<Self, Response> {
        signed_in(state, &parts.headers).await
    }
}

/// A state-changing form post, checked as [`signed_post`] checks it: from the console's own
/// pages, signed in (before the body is read), and carrying the session's CSRF token in the
/// field `csrf` beside the form's own fields `T`.
pub(crate) struct Posted<T>(pub(crate) Signed, pub(crate) T);

#[derive(Deserialize)]
struct WithCsrf<T> {
    #[serde(default)]
    csrf: String,
    #[serde(flatten)]
    form: T,
}

impl<T> axum::extract::FromRequest<Arc<AdminState>> for Posted<T>
where
    T: serde::de::DeserializeOwned + Send,
{
    type Rejection = Response;

    async fn from_request(
        req: axum::extract::Request,
        state: &Arc<AdminState>,
    ) -> Result<Self, Response> {
        if cross_site(req.headers()) {
            return Err(cross_site_refusal());
        }
        let Ok(signed) = signed_in(state, req.headers()).await else {
            return Err(session_ended());
        };
        let Form(WithCsrf { csrf, form }) = Form::<WithCsrf<T>>::from_request(req, state)
            .await
            .map_err(IntoResponse::into_response)?;
        if !signed.session.csrf_matches(&csrf) {
            return Err(csrf_refusal());
        }
        Ok(Posted(signed, form))
    }
}

fn session_ended() -> Response {
    refusal(
        StatusCode::FORBIDDEN,
        "Your session has ended",
        "Sign in again, then repeat what you were doing.",
    )
}

fn csrf_refusal() -> Response {
    refusal(
        StatusCode::FORBIDDEN,
        "This form cannot be accepted",
        "It did not carry this session's form token (it is from another page, an older \
         session or another site). Reload the page and try again.",
    )
}

/// Whether a browser says the request comes from another site (`Sec-Fetch-Site`, or an `Origin`
/// that is not this host).
fn cross_site(headers: &HeaderMap) -> bool {
    if headers.get("sec-fetch-site").is_some_and(|v| v == "cross-site" || v == "same-site") {
        return true;
    }
    let Some(origin) = headers.get(header::ORIGIN) else { return false };
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("");
    let origin = origin.to_str().unwrap_or("");
    let same = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
        .is_some_and(|o| !host.is_empty() && o.eq_ignore_ascii_case(host));
    !same
}

fn cross_site_refusal() -> Response {
    refusal(
        StatusCode::FORBIDDEN,
        "This form cannot be accepted",
        "It was sent from another site. Use the console's own pages.",
    )
}

/// Which part of the console a page belongs to (the navigation marks it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Section {
    Keys,
    Apis,
    Plans,
    Audit,
}

/// A whole page: `title`, the navigation when signed in, and `body`.
pub(crate) fn layout(title: &str, signed: Option<(&Session, Section)>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · keygate" }
                link rel="icon" href="data:,";
                link rel="stylesheet" href="/console/assets/console.css";
                script src="/console/assets/console.js" defer {}
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    a.brand href="/console/keys" { "keygate" }
                    @if let Some((session, section)) = signed {
                        nav aria-label="Console" {
                            a href="/console/keys"
                                aria-current=[(section == Section::Keys).then_some("page")]
                                { "API keys" }
                            a href="/console/apis"
                                aria-current=[(section == Section::Apis).then_some("page")]
                                { "APIs" }
                            a href="/console/plans"
                                aria-current=[(section == Section::Plans).then_some("page")]
                                { "Usage plans" }
                            a href="/console/audit"
                                aria-current=[(section == Section::Audit).then_some("page")]
                                { "Audit log" }
                        }
                        form.signout method="post" action="/console/signout" {
                            input type="hidden" name="csrf" value=(session.csrf);
                            button type="submit" { "Sign out" }
                        }
                    }
                }
                main #main tabindex="-1" {
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

/// A rendered page with `status`.
pub(crate) fn page(status: StatusCode, markup: Markup) -> Response {
    (status, Html(markup.into_string())).into_response()
}

/// A page that refuses a request and says what to do.
pub(crate) fn refusal(status: StatusCode, title: &str, advice: &str) -> Response {
    page(
        status,
        layout(
            title,
            None,
            html! {
                p.error role="alert" { (advice) }
                p { a href="/console/keys" { "Back to the console" } }
            },
        ),
    )
}

/// A page for an error of the store or of an operation.
pub(crate) fn failure(message: &str) -> Response {
    refusal(StatusCode::INTERNAL_SERVER_ERROR, "Something went wrong", message)
}

/// The page for a `keygate-control` error: 400 for bad input, 404, 409, 500.
pub(crate) fn control_error(e: &keygate_control::Error) -> Response {
    use keygate_control::Error;
    let status = match e {
        Error::Invalid(_) => StatusCode::BAD_REQUEST,
        Error::NotFound(_) => StatusCode::NOT_FOUND,
        Error::Conflict(_) => StatusCode::CONFLICT,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    let title = match status {
        StatusCode::NOT_FOUND => "Not found",
        StatusCode::INTERNAL_SERVER_ERROR => "Something went wrong",
        _ => "That cannot be done",
    };
    refusal(status, title, &e.to_string())
}

/// A date (UTC) of unix seconds, as the console shows it.
pub(crate) fn date(unix_secs: i64) -> String {
    utc(unix_secs, time::macros::format_description!("[year]-[month]-[day] [hour]:[minute] UTC"))
}

/// A time (UTC) of unix seconds as keygate's inputs accept it (`2027-01-31T12:00:00Z`).
pub(crate) fn iso(unix_secs: i64) -> String {
    utc(
        unix_secs,
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z"),
    )
}

/// Unix seconds in UTC as `format` writes them; the number itself if out of range.
fn utc(unix_secs: i64, format: &[time::format_description::BorrowedFormatItem<'_>]) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix_secs)
        .ok()
        .and_then(|t| t.format(format).ok())
        .unwrap_or_else(|| unix_secs.to_string())
}

fn signin_form(error: Option<&str>) -> Markup {
    layout(
        "Sign in",
        None,
        html! {
            form.card method="post" action="/console/signin" {
                div.field {
                    label for="token" { "Admin token" }
                    input #token type="password" name="token" autocomplete="off" required
                        autofocus aria-describedby="token-help"
                        aria-invalid=[error.map(|_| "true")];
                    @if let Some(error) = error {
                        p.error #token-error role="alert" { (error) }
                    }
                    p.help #token-help {
                        "Make one on the gateway's machine with "
                        code { "keygate admin token create" }
                        ". Sessions last " (DEFAULT_SESSION_TTL.as_secs() / 3600) " hours."
                    }
                }
                button type="submit" { "Sign in" }
            }
        },
    )
}

async fn signin_page(State(state): State<Arc<AdminState>>, headers: HeaderMap) -> Response {
    if signed_in(&state, &headers).await.is_ok() {
        return Redirect::to("/console/keys").into_response();
    }
    page(StatusCode::OK, signin_form(None))
}

#[derive(Debug, Deserialize)]
pub(crate) struct SigninForm {
    #[serde(default)]
    token: String,
}

async fn signin(
    State(state): State<Arc<AdminState>>,
    headers: HeaderMap,
    Form(form): Form<SigninForm>,
) -> Response {
    if cross_site(&headers) {
        return cross_site_refusal();
    }
    let found = match keygate_control::admin::check_token(&state.store, form.token.trim()).await {
        Ok(found) => found,
        Err(e) => return control_error(&e),
    };
    let Some(token) = found else {
        return page(
            StatusCode::UNAUTHORIZED,
            signin_form(Some(
                "This is not an active admin token: check it was copied whole, or make a new one.",
            )),
        );
    };
    let id = state.console.sessions.start(&token);
    let cookie = session::set_cookie(&id, state.console.sessions.ttl(), state.console.secure);
    tracing::info!(token_id = %token.id, "console sign-in");
    let mut res = Redirect::to("/console/keys").into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        res.headers_mut().insert(header::SET_COOKIE, v);
    }
    res
}

/// A form with no field but the CSRF token [`Posted`] checks.
#[derive(Debug, Deserialize)]
pub(crate) struct NoFields {}

async fn signout(
    State(state): State<Arc<AdminState>>,
    headers: HeaderMap,
    Posted(_, NoFields {}): Posted<NoFields>,
) -> Response {
    if let Some(id) = session::cookie_value(&headers) {
        state.console.sessions.end(id);
    }
    let mut res = Redirect::to("/console/signin").into_response();
    if let Ok(v) = HeaderValue::from_str(&session::clear_cookie(state.console.secure)) {
        res.headers_mut().insert(header::SET_COOKIE, v);
    }
    res
}
