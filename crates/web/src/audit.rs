//! The hospital's own audit (`/app/audit`, administrators): every grant it was issued, every
//! delivery and refusal to it, every emergency it declared and every subscription it paid,
//! from the ledger's access log.

use crate::log_view::{LogRow, Viewer, log_rows, short, utc};
use crate::search::CodedDescription;
use crate::{WebState, Who, admin, blocking, page};
use askama::Template;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use secnet_contract::LogEntry;
use secnet_types::Hash;

/// Most entries the audit page shows (the newest).
pub const AUDIT_ROWS: usize = 500;

#[derive(Template)]
#[template(path = "audit.html")]
struct AuditPage<'a> {
    title: &'a str,
    node_name: &'a str,
    who: Option<Who>,
    rows: Vec<LogRow>,
    grants: usize,
    delivered: usize,
    refused: usize,
    emergencies: usize,
    paid: u64,
    limit: usize,
    actions: Vec<ActionRow>,
    error: Option<String>,
}

/// One staff action as the audit shows it.
struct ActionRow {
    when: String,
    who: String,
    action: String,
    detail: String,
}

/// Most staff actions the audit page shows (the newest).
pub const AUDIT_ACTIONS: usize = 200;

pub(crate) async fn audit_page(State(web): WebState, headers: HeaderMap) -> Response {
    let session = match admin(
        &web,
        &headers,
        "Only an administrator reads the organisation's audit.",
    ) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let me = web.services.me();
    let found = blocking(&web, move |w| {
        let actions = w.staff.actions(AUDIT_ACTIONS).map_err(|e| e.to_string())?;
        Ok((w.services.trail(&me, AUDIT_ROWS)?, actions))
    })
    .await;
    let (items, actions, error) = match found {
        Ok((items, actions)) => (items, actions, None),
        Err(e) => (Vec::new(), Vec::new(), Some(e)),
    };
    let actions = actions
        .into_iter()
        .map(|a| ActionRow {
            when: utc(a.at_ms),
            who: a.username,
            action: a.action,
            detail: a.detail,
        })
        .collect();
    // Each listing the rows name is looked up once per page (rows name few, many times).
    let described = std::cell::RefCell::new(std::collections::HashMap::<Hash, String>::new());
    let describe = |h: &Hash| {
        if let Some(known) = described.borrow().get(h) {
            return known.clone();
        }
        let text = web
            .services
            .listing(h)
            .and_then(|l| CodedDescription::parse(&l.description))
            .map(|d| {
                let codes: Vec<&str> = d.codes.iter().map(|c| c.display.as_str()).collect();
                format!("{} ({})", d.resource, codes.join(", "))
            })
            .unwrap_or_else(|| format!("data {}", short(&h.to_string())));
        described.borrow_mut().insert(*h, text.clone());
        text
    };
    let organisations = web.services.organisations();
    let mut paid = 0u64;
    let mut grants = 0;
    for i in &items {
        match &i.entry {
            LogEntry::Payment {
                holder_amount,
                owner_amount,
                ..
            } => paid = paid.saturating_add(holder_amount.saturating_add(*owner_amount)),
            LogEntry::Grant { .. } => grants += 1,
            _ => {}
        }
    }
    let rows = log_rows(&items, &organisations, &describe, Viewer::Requester);
    tracing::info!(user = %session.member.username, entries = rows.len(), "audit read");
    page(
        StatusCode::OK,
        &AuditPage {
            title: "Audit",
            node_name: &web.node_name,
            who: Some(Who::from(&session)),
            delivered: rows.iter().filter(|r| r.outcome == "delivered").count(),
            refused: rows.iter().filter(|r| r.refused).count(),
            emergencies: rows.iter().filter(|r| r.emergency).count(),
            grants,
            paid,
            limit: AUDIT_ROWS,
            actions,
            rows,
            error,
        },
    )
}
