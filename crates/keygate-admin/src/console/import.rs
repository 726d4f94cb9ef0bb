//! Import keys from a CSV file in AWS's format (`Name,Key,Description,Enabled,UsagePlanIds`),
//! uploaded or pasted: good rows are imported, each bad row is skipped with a warning naming its
//! line, as AWS's console does.

use std::sync::Arc;

use axum::extract::{Multipart, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use keygate_control::import;
use maud::{Markup, html};

use super::{Section, Signed, control_error, layout, page, refusal, signed_in, signed_post};
use crate::AdminState;

/// Largest CSV accepted from the console (the admin API takes 10 MiB in one request too).
pub(crate) const MAX_CSV: usize = 10 * 1024 * 1024;

fn form(signed: &Signed, error: Option<&str>) -> Markup {
    html! {
        form.card method="post" action="/console/keys/import" enctype="multipart/form-data" {
            input type="hidden" name="csrf" value=(signed.session.csrf);
            p.help {
                "AWS's format: a header line " code { "Name,Key,Description,Enabled,UsagePlanIds" }
                " (Name and Key required; several plan ids separated by " code { ";" } "), then "
                "one key per line. Rows with a problem are skipped and named by their line."
            }
            div.field {
                label for="csv-file" { "CSV file" }
                input #csv-file type="file" name="file" accept=".csv,text/csv";
            }
            div.field {
                label for="csv-text" { "Or paste the CSV" }
                textarea #csv-text name="csv" rows="6" spellcheck="false"
                    aria-invalid=[error.map(|_| "true")] {}
                @if let Some(e) = error { p.error #csv-error role="alert" { (e) } }
            }
            div.buttons {
                button.primary type="submit" { "Import" }
                a.button href="/console/keys" { "Cancel" }
            }
        }
    }
}

pub(crate) async fn page_get(signed: Signed) -> Response {
    let body = form(&signed, None);
    page(StatusCode::OK, layout("Import API keys", Some((&signed.session, Section::Keys)), body))
}

/// The form's fields: the CSRF token, and the CSV from the file or, failing that, the text box.
async fn fields(mut multipart: Multipart) -> Result<(String, String), String> {
    let (mut csrf, mut file, mut text) = (String::new(), String::new(), String::new());
    let mut total = 0usize;
    while let Some(field) = multipart.next_field().await.map_err(|e| e.body_text())? {
        let name = field.name().unwrap_or("").to_owned();
        let bytes = field.bytes().await.map_err(|e| e.body_text())?;
        total += bytes.len();
        if total > MAX_CSV {
            return Err(format!("the upload is over {} MiB", MAX_CSV >> 20));
        }
        let value = match import::decode(&bytes) {
            Ok(v) => v.to_owned(),
            Err(e) => return Err(e.to_string()),
        };
        match name.as_str() {
            "csrf" => csrf = value,
            "file" => file = value,
            "csv" => text = value,
            _ => {}
        }
    }
    Ok((csrf, if file.trim().is_empty() { text } else { file }))
}

pub(crate) async fn post(
    State(state): State<Arc<AdminState>>,
    headers: HeaderMap,
    multipart: Multipart,
) -> Response {
    // Signed in before the upload is read; its CSRF token is checked once it is.
    if signed_in(&state, &headers).await.is_err() {
        return refusal(
            StatusCode::FORBIDDEN,
            "Your session has ended",
            "Sign in again, then repeat what you were doing.",
        );
    }
    let (csrf, csv, bad_upload) = match fields(multipart).await {
        Ok((csrf, csv)) => (csrf, csv, None),
        Err(e) => (String::new(), String::new(), Some(e)),
    };
    if let Some(e) = bad_upload {
        return refusal(StatusCode::BAD_REQUEST, "The upload cannot be read", &e);
    }
    let signed = match signed_post(&state, &headers, &csrf).await {
        Ok(s) => s,
        Err(refused) => return refused,
    };
    let invalid = |message: &str| {
        page(
            StatusCode::BAD_REQUEST,
            layout(
                "Import API keys",
                Some((&signed.session, Section::Keys)),
                form(&signed, Some(message)),
            ),
        )
    };
    if csv.trim().is_empty() {
        return invalid("Choose a CSV file or paste its text.");
    }
    let result = match import::import(&signed.store, &csv, false).await {
        Ok(r) => r,
        Err(e @ keygate_control::Error::Store(_)) => return control_error(&e),
        Err(e) => return invalid(&e.to_string()),
    };
    let body = html! {
        p.notice role="status" {
            "Imported " (result.ids.len()) " key" @if result.ids.len() != 1 { "s" } "."
            @if !result.warnings.is_empty() {
                " " (result.warnings.len()) " row" @if result.warnings.len() != 1 { "s" } " skipped."
            }
        }
        @if !result.warnings.is_empty() {
            h2 { "Skipped rows" }
            ul.warnings { @for w in &result.warnings { li { (w) } } }
        }
        p { a.button.primary href="/console/keys" { "Done" } " " a.button href="/console/keys/import" { "Import more" } }
    };
    page(StatusCode::OK, layout("Import API keys", Some((&signed.session, Section::Keys)), body))
}
