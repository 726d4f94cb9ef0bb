//! The audit log page: every change, who made it (`cli:`, `token:`, `sigv4:`, `console:`), paged
//! in the store.

use std::collections::HashMap;

use axum::extract::Query;
use axum::http::StatusCode;
use axum::response::Response;
use maud::html;

use super::{Section, Signed, control_error, layout, page};

/// Entries on one page.
const PAGE: u32 = 100;

pub(crate) async fn list(signed: Signed, Query(q): Query<HashMap<String, String>>) -> Response {
    let after: i64 = q.get("after").and_then(|a| a.parse().ok()).unwrap_or(0).max(0);
    let entries = match signed.store.list_audit(after, PAGE).await {
        Ok(entries) => entries,
        Err(e) => return control_error(&e.into()),
    };
    let next = (entries.len() == PAGE as usize).then(|| entries.last().map(|e| e.seq)).flatten();
    let body = html! {
        p.help { "Oldest first. Key values never appear here." }
        @if entries.is_empty() {
            p.empty { "Nothing here yet." }
        } @else {
            div.table-wrap {
                table {
                    caption.visually-hidden { "Audit log" }
                    thead { tr {
                        th scope="col" { "#" } th scope="col" { "Time" } th scope="col" { "Who" }
                        th scope="col" { "Action" } th scope="col" { "What" }
                        th scope="col" { "Detail" }
                    } }
                    tbody {
                        @for e in &entries {
                            tr {
                                td { (e.seq) }
                                td { (super::date(e.time / 1000)) }
                                td { code { (e.actor) } }
                                td { (e.action) }
                                td { (e.target) }
                                td { @if let Some(d) = &e.detail { (d) } }
                            }
                        }
                    }
                }
            }
        }
        @if let Some(seq) = next {
            p.paging { a href={ "/console/audit?after=" (seq) } { "Next page" } }
        }
    };
    page(StatusCode::OK, layout("Audit log", Some((&signed.session, Section::Audit)), body))
}
