//! Invoices and billing runs: the filtered list with totals per currency and its CSV export,
//! an invoice with its lines, payments and credit notes, and finance's actions on it (each
//! behind a confirmation step); billing runs for a period and what they created.

use actix_web::http::header;
use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use maud::{html, Markup};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::page::{
    alert, badge, csrf_field, empty, error_summary, explain, money, money_of, notice, page,
    page_status, q, see_other, when, when_opt, FormErrors, Input, Reply, Section,
};
use super::session::{Posted, Session};
use crate::domain::auth::Capability;
use crate::domain::idempotency::{self, RequestKey};
use crate::domain::ids::new_id;
use crate::domain::invoicing::invoices::{
    self, CreditLineRequest, CreditNoteRequest, InvoiceFilters, InvoiceView, PaymentRequest,
};
use crate::domain::invoicing::reports;
use crate::domain::invoicing::runs::{self, RunRequest};
use crate::domain::pagination::PageRequest;
use crate::domain::{Error, FieldError};
use crate::state::State;

type Id = web::Path<String>;

/// The list's filters as typed (empty fields mean "any").
#[derive(Debug, Default, Clone, Deserialize)]
pub struct ListQuery {
    pub status: Option<String>,
    pub period: Option<String>,
    pub customer: Option<String>,
    pub provider: Option<String>,
    pub cursor: Option<String>,
}

impl ListQuery {
    fn filters(&self) -> InvoiceFilters {
        let keep = |v: &Option<String>| {
            v.as_deref()
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        };
        InvoiceFilters {
            status: keep(&self.status),
            period: keep(&self.period),
            customer: keep(&self.customer),
            provider: keep(&self.provider),
            limit: None,
            cursor: None,
        }
    }

    /// The filters as a query string (for the export link and the next page).
    fn query_string(&self) -> String {
        let f = self.filters();
        [
            ("status", f.status),
            ("period", f.period),
            ("customer", f.customer),
            ("provider", f.provider),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| format!("{k}={}", q(&v))))
        .collect::<Vec<_>>()
        .join("&")
    }
}

fn field_errors(e: Error) -> Result<FormErrors, Error> {
    match e {
        Error::Validation(errors) => Ok(FormErrors(errors)),
        other => Err(other),
    }
}

/// `/console/invoices`: filters, totals per currency, one page of invoices, CSV export.
pub async fn list(state: State, s: Session, query: web::Query<ListQuery>) -> Reply {
    let query = query.into_inner();
    let filters = query.filters();
    let page_request = PageRequest::parse(None, query.cursor.as_deref())?;
    let caller = s.caller.clone();
    let found = state
        .db(move |conn| {
            let totals = invoices::totals(conn, &caller, &filters)?;
            let list = invoices::list(conn, &caller, &filters, &page_request)?;
            Ok((totals, list))
        })
        .await;
    let (errors, totals, list) = match found {
        Ok((totals, list)) => (FormErrors::default(), totals, Some(list)),
        Err(e) => (field_errors(e)?, Vec::new(), None),
    };
    let platform = s.caller.can(Capability::PlatformBilling);
    let qs = query.query_string();
    let body = html! {
        h1 { "Invoices" }
        (error_summary(&errors))
        form.filters method="get" action="/console/invoices" aria-label="Filter invoices" {
            div.field.has-error[errors.get("status").is_some()] {
                label for="f-status" { "Status" }
                @if let Some(e) = errors.get("status") { p.field-error id="f-status-error" { (e) } }
                select #f-status name="status" {
                    @for (value, label) in [("", "Any"), ("draft", "Draft"), ("open", "Open"), ("paid", "Paid"), ("void", "Void")] {
                        option value=(value) selected[query.status.as_deref().unwrap_or("") == value] { (label) }
                    }
                }
            }
            (Input::new("period", "Period", query.period.as_deref().unwrap_or("")).hint("A month, YYYY-MM").pattern("[0-9]{4}-[0-9]{2}").render(&errors))
            @if platform {
                (Input::new("customer", "Customer", query.customer.as_deref().unwrap_or("")).hint("Organization id, org_…").render(&errors))
                (Input::new("provider", "Provider", query.provider.as_deref().unwrap_or("")).hint("Organization id, org_…").render(&errors))
            }
            div.actions {
                button.primary type="submit" { "Apply filters" }
                a href="/console/invoices" { "Clear filters" }
            }
        }
        @if let Some(list) = &list {
            section aria-labelledby="totals-h" {
                h2 #totals-h { "Totals per currency" }
                @if totals.is_empty() {
                    (empty("Nothing to add up: no invoice matches these filters."))
                } @else {
                    table {
                        caption.visually-hidden { "Totals of the matching invoices, per currency" }
                        thead { tr { th scope="col" { "Currency" } th scope="col" { "Invoices" } th.num scope="col" { "Subtotal" } th.num scope="col" { "Tax" } th.num scope="col" { "Total" } th.num scope="col" { "Due" } } }
                        tbody {
                            @for t in &totals {
                                tr {
                                    th scope="row" { (t.currency) }
                                    td { (t.invoices) }
                                    td.num { (money(&t.subtotal)) }
                                    td.num { (money(&t.tax)) }
                                    td.num { (money(&t.total)) }
                                    td.num { (money(&t.amount_due)) }
                                }
                            }
                        }
                    }
                }
                p { a.button href={ "/console/invoices/export" @if !qs.is_empty() { "?" (qs) } } download { "Export these invoices as CSV" } }
            }
            section aria-labelledby="list-h" {
                h2 #list-h { "Matching invoices" }
                @if list.data.is_empty() {
                    @if platform {
                        (empty("No invoice matches these filters. Clear the filters, or start a billing run for a period on the Billing runs page: it creates the drafts."))
                    } @else {
                        (empty("No invoices yet. An invoice appears here once the marketplace bills a month in which your organization held a subscription."))
                    }
                } @else {
                    table {
                        caption.visually-hidden { "Invoices matching the filters" }
                        thead { tr {
                            th scope="col" { "Invoice" } th scope="col" { "Customer" } th scope="col" { "Period" }
                            th scope="col" { "Status" } th.num scope="col" { "Total" } th.num scope="col" { "Due" }
                        } }
                        tbody {
                            @for i in &list.data {
                                tr {
                                    th scope="row" {
                                        a href={ "/console/invoices/" (i.id) } {
                                            @if let Some(n) = &i.number { (n) } @else { "Draft" }
                                        }
                                        br; small.mono { (i.id) }
                                    }
                                    td {
                                        @if platform { a href={ "/console/invoices?customer=" (q(&i.customer.id)) } title="Show this customer's invoices" { (i.customer.name) } }
                                        @else { (i.customer.name) }
                                    }
                                    td { (i.period) }
                                    td { (badge(&i.status)) }
                                    td.num { (money(&i.total)) }
                                    td.num { (money(&i.amount_due)) }
                                }
                            }
                        }
                    }
                    @if let Some(next) = &list.next_cursor {
                        p { a href={ "/console/invoices?" @if !qs.is_empty() { (qs) "&" } "cursor=" (q(next)) } { "Next page" } }
                    }
                }
            }
        }
    };
    let status = if errors.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    Ok(page_status(
        status,
        &s.viewer(),
        Section::Invoices,
        "Invoices",
        body,
    ))
}

/// `/console/invoices/export`: the filtered list as the finance CSV (the API's export).
pub async fn export(state: State, s: Session, query: web::Query<ListQuery>) -> Reply {
    let filters = query.filters();
    let name = format!(
        "invoices-{}.csv",
        filters.period.clone().unwrap_or_else(|| "all".into())
    );
    let caller = s.caller.clone();
    let body = state
        .db(move |conn| reports::export_csv(conn, &caller, &filters))
        .await?;
    Ok(HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "text/csv; charset=utf-8"))
        .insert_header((
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"{name}\""),
        ))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header(("x-content-type-options", "nosniff"))
        .body(body))
}

#[derive(Debug, Deserialize)]
pub struct NoticeQuery {
    pub notice: Option<String>,
}

fn notice_text(code: Option<&str>) -> Option<&'static str> {
    Some(match code? {
        "finalized" => "The invoice is finalized: it has its number and can no longer change.",
        "voided" => "The invoice is void. Its period can be billed again.",
        "paid" => "The payment is recorded: the invoice is paid.",
        "credited" => "The credit note is issued.",
        _ => return None,
    })
}

fn invoice_title(i: &InvoiceView) -> String {
    match &i.number {
        Some(n) => format!("Invoice {n}"),
        None => "Draft invoice".to_string(),
    }
}

async fn load(state: &State, s: &Session, id: String) -> Result<InvoiceView, Error> {
    let caller = s.caller.clone();
    state
        .db(move |conn| invoices::get(conn, &caller, &id))
        .await
}

/// `/console/invoices/{id}`: every line with its source, tax, payments, credit notes.
pub async fn show(state: State, s: Session, id: Id, query: web::Query<NoticeQuery>) -> Reply {
    let i = load(&state, &s, id.into_inner()).await?;
    let finance = s.caller.can(Capability::PlatformBilling);
    let body = html! {
        p.crumbs { a href="/console/invoices" { "Invoices" } }
        h1 { (invoice_title(&i)) " " (badge(&i.status)) }
        (notice(notice_text(query.notice.as_deref())))
        dl.facts {
            dt { "Invoice id" } dd.mono { (i.id) }
            dt { "Number" } dd { (i.number.as_deref().unwrap_or("not yet: assigned when finalized")) }
            dt { "Customer" } dd { (i.customer.name) " " small.mono { (i.customer.id) } }
            dt { "Period" } dd { (i.period) }
            dt { "Currency" } dd { (i.currency) }
            dt { "Created" } dd { (when(&i.created_at)) }
            dt { "Finalized" } dd { (when_opt(&i.finalized_at)) }
            @if i.paid_at.is_some() { dt { "Paid" } dd { (when_opt(&i.paid_at)) } }
            @if i.voided_at.is_some() { dt { "Voided" } dd { (when_opt(&i.voided_at)) } }
            @if let Some(f) = &i.payment_failure { dt { "Last payment failure" } dd { (f) } }
        }
        @if finance && i.status != "void" {
            section aria-labelledby="actions-h" {
                h2 #actions-h { "Actions" }
                ul.actions-list {
                    @if i.status == "draft" {
                        li { a.button.primary href={ "/console/invoices/" (i.id) "/finalize" } { "Finalize…" } }
                    }
                    @if i.status == "open" {
                        li { a.button href={ "/console/invoices/" (i.id) "/pay" } { "Mark paid…" } }
                        li { a.button href={ "/console/invoices/" (i.id) "/void" } { "Void…" } }
                    }
                    @if i.status == "open" || i.status == "paid" {
                        li { a.button href={ "/console/invoices/" (i.id) "/credit-note" } { "Issue a credit note…" } }
                    }
                }
            }
        }
        section aria-labelledby="lines-h" {
            h2 #lines-h { "Lines" }
            @if i.lines.is_empty() {
                (empty("This invoice has no lines."))
            } @else {
                div.scroll tabindex="0" role="region" aria-label="Invoice lines" {
                    table {
                        caption.visually-hidden { "Invoice lines, with their source" }
                        thead { tr {
                            th scope="col" { "Description" } th scope="col" { "Source" } th scope="col" { "Service period" }
                            th scope="col" { "Subscription" } th.num scope="col" { "Quantity" } th.num scope="col" { "Unit price" }
                            th.num scope="col" { "Amount" } th.num scope="col" { "Credited" }
                        } }
                        tbody {
                            @for l in &i.lines {
                                tr {
                                    th scope="row" { (l.description) }
                                    td { (l.source) }
                                    td { (l.service_period) }
                                    td.mono { (l.subscription_id) }
                                    td.num { (l.quantity) }
                                    td.num { @if let Some(u) = &l.unit_amount_decimal { (u) " (minor units)" } @else { "—" } }
                                    td.num { (money(&l.amount)) }
                                    td.num { (money(&l.amount_credited)) }
                                }
                            }
                        }
                    }
                }
            }
            dl.totals {
                dt { "Subtotal" } dd { (money(&i.subtotal)) }
                dt { "Tax (" (format!("{}.{:02}", i.tax_rate_bps / 100, i.tax_rate_bps % 100)) " %)" } dd { (money(&i.tax)) }
                dt { "Total" } dd { strong { (money(&i.total)) } }
                dt { "Paid" } dd { (money(&i.amount_paid)) }
                dt { "Credited (tax included)" } dd { (money(&i.amount_credited)) }
                dt { "Due" } dd { strong { (money(&i.amount_due)) } }
            }
        }
        section aria-labelledby="payments-h" {
            h2 #payments-h { "Payments" }
            @if i.payments.is_empty() {
                (empty(if finance && i.status == "open" { "No payment yet. When the customer pays by transfer, record it with “Mark paid”." } else { "No payment recorded." }))
            } @else {
                table {
                    caption.visually-hidden { "Payments" }
                    thead { tr { th scope="col" { "Payment" } th scope="col" { "Method" } th scope="col" { "Reference" } th scope="col" { "Status" } th.num scope="col" { "Amount" } th scope="col" { "When" } } }
                    tbody {
                        @for p in &i.payments {
                            tr { th.mono scope="row" { (p.id) } td { (p.method) } td { (p.reference) } td { (p.status) } td.num { (money(&p.amount)) } td { (when(&p.created_at)) } }
                        }
                    }
                }
            }
        }
        section aria-labelledby="notes-h" {
            h2 #notes-h { "Credit notes" }
            @if i.credit_notes.is_empty() {
                (empty("No credit note. Corrections after finalization are made with credit notes, never edits."))
            } @else {
                table {
                    caption.visually-hidden { "Credit notes" }
                    thead { tr { th scope="col" { "Credit note" } th scope="col" { "Reason" } th scope="col" { "Lines" } th.num scope="col" { "Subtotal" } th.num scope="col" { "Tax" } th.num scope="col" { "Total" } th scope="col" { "When" } } }
                    tbody {
                        @for n in &i.credit_notes {
                            tr {
                                th.mono scope="row" { (n.id) }
                                td { (n.reason) }
                                td {
                                    ul.plain {
                                        @for l in &n.lines {
                                            li { (line_name(&i, &l.invoice_line_id)) ": " (money(&l.amount)) }
                                        }
                                    }
                                }
                                td.num { (money(&n.subtotal)) }
                                td.num { (money(&n.tax)) }
                                td.num { (money(&n.total)) }
                                td { (when(&n.created_at)) }
                            }
                        }
                    }
                }
            }
        }
        p { a href={ "/console/invoices/export?customer=" (q(&i.customer.id)) "&period=" (q(&i.period)) } download { "Export this customer's " (i.period) " invoices as CSV" } }
    };
    Ok(page(
        &s.viewer(),
        Section::Invoices,
        &invoice_title(&i),
        body,
    ))
}

fn line_name(i: &InvoiceView, line_id: &str) -> String {
    i.lines
        .iter()
        .find(|l| l.id == line_id)
        .map(|l| l.description.clone())
        .unwrap_or_else(|| line_id.to_string())
}

/// The finance actions that need nothing but a confirmation.
#[derive(Debug, Clone, Copy)]
pub enum Action {
    Finalize,
    Void,
}

impl Action {
    fn parse(raw: &str) -> Option<Action> {
        match raw {
            "finalize" => Some(Action::Finalize),
            "void" => Some(Action::Void),
            _ => None,
        }
    }

    fn path(self) -> &'static str {
        match self {
            Action::Finalize => "finalize",
            Action::Void => "void",
        }
    }

    fn title(self) -> &'static str {
        match self {
            Action::Finalize => "Finalize this invoice?",
            Action::Void => "Void this invoice?",
        }
    }

    fn explanation(self) -> &'static str {
        match self {
            Action::Finalize => {
                "Finalizing gives the invoice the next number of the marketplace's sequence. \
                 After that it never changes: corrections are credit notes. An invoice with \
                 nothing due is paid at once."
            }
            Action::Void => {
                "Voiding cancels an open invoice that has no payment and no credit note. It \
                 keeps its number; its period can then be billed again."
            }
        }
    }

    fn button(self) -> &'static str {
        match self {
            Action::Finalize => "Finalize invoice",
            Action::Void => "Void invoice",
        }
    }

    fn notice(self) -> &'static str {
        match self {
            Action::Finalize => "finalized",
            Action::Void => "voided",
        }
    }
}

fn action_of(path: &str) -> Result<Action, Error> {
    Action::parse(path).ok_or(Error::NotFound("page"))
}

fn summary_facts(i: &InvoiceView) -> Markup {
    html! {
        dl.facts {
            dt { "Invoice" } dd { (invoice_title(i)) " " small.mono { (i.id) } }
            dt { "Customer" } dd { (i.customer.name) }
            dt { "Period" } dd { (i.period) }
            dt { "Total" } dd { (money(&i.total)) }
            dt { "Due" } dd { (money(&i.amount_due)) }
        }
    }
}

fn confirm_page(s: &Session, i: &InvoiceView, action: Action, error: Option<&str>) -> Markup {
    html! {
        p.crumbs { a href={ "/console/invoices/" (i.id) } { (invoice_title(i)) } }
        h1 { (action.title()) }
        (alert(error))
        (summary_facts(i))
        p { (action.explanation()) }
        form.inline method="post" action={ "/console/invoices/" (i.id) "/" (action.path()) } {
            (csrf_field(&s.csrf))
            button.primary.danger[matches!(action, Action::Void)] type="submit" { (action.button()) }
            " "
            a href={ "/console/invoices/" (i.id) } { "Cancel" }
        }
    }
}

/// `GET /console/invoices/{id}/{finalize|void}`: the confirmation step.
pub async fn confirm(state: State, s: Session, path: web::Path<(String, String)>) -> Reply {
    let (id, action) = path.into_inner();
    let action = action_of(&action)?;
    s.caller.require(Capability::PlatformBilling)?;
    let i = load(&state, &s, id).await?;
    let body = confirm_page(&s, &i, action, None);
    Ok(page(&s.viewer(), Section::Invoices, action.title(), body))
}

/// `POST /console/invoices/{id}/{finalize|void}`: the confirmed action.
pub async fn act(state: State, posted: Posted, path: web::Path<(String, String)>) -> Reply {
    let (id, action) = path.into_inner();
    let action = action_of(&action)?;
    let s = posted.session;
    let (caller, clock, target) = (s.caller.clone(), state.clock.clone(), id.clone());
    let done = state
        .db(move |conn| match action {
            Action::Finalize => invoices::finalize(conn, clock.as_ref(), &caller, &target),
            Action::Void => invoices::void(conn, clock.as_ref(), &caller, &target),
        })
        .await;
    match done {
        Ok(_) => Ok(see_other(&format!(
            "/console/invoices/{id}?notice={}",
            action.notice()
        ))),
        Err(e @ Error::Conflict { .. }) => {
            let i = load(&state, &s, id).await?;
            let (status, _, detail) = explain(&e);
            let body = confirm_page(&s, &i, action, Some(&detail));
            Ok(page_status(
                status,
                &s.viewer(),
                Section::Invoices,
                action.title(),
                body,
            ))
        }
        Err(e) => Err(e.into()),
    }
}

fn pay_page(s: &Session, i: &InvoiceView, reference: &str, errors: &FormErrors) -> Markup {
    html! {
        p.crumbs { a href={ "/console/invoices/" (i.id) } { (invoice_title(i)) } }
        h1 { "Record a payment" }
        (error_summary(errors))
        (summary_facts(i))
        p { "Record a payment received outside the marketplace (a bank transfer, say) of the whole amount due, " strong { (money(&i.amount_due)) } ". The invoice becomes paid." }
        form.stack method="post" action={ "/console/invoices/" (i.id) "/pay" } novalidate {
            (csrf_field(&s.csrf))
            (Input::new("reference", "Payment reference", reference).hint("The bank transfer's reference, up to 200 characters").required().render(errors))
            div.actions {
                button.primary type="submit" { "Record payment of " (money(&i.amount_due)) }
                a href={ "/console/invoices/" (i.id) } { "Cancel" }
            }
        }
    }
}

/// `GET /console/invoices/{id}/pay`.
pub async fn pay_form(state: State, s: Session, id: Id) -> Reply {
    s.caller.require(Capability::PlatformBilling)?;
    let i = load(&state, &s, id.into_inner()).await?;
    let body = pay_page(&s, &i, "", &FormErrors::default());
    Ok(page(
        &s.viewer(),
        Section::Invoices,
        "Record a payment",
        body,
    ))
}

/// `POST /console/invoices/{id}/pay`.
pub async fn pay(state: State, posted: Posted, id: Id) -> Reply {
    let id = id.into_inner();
    let s = posted.session;
    let reference = posted.form.text("reference");
    let request = PaymentRequest {
        method: "manual".into(),
        reference: reference.clone(),
    };
    let (caller, clock, target) = (s.caller.clone(), state.clock.clone(), id.clone());
    let done = state
        .db(move |conn| invoices::pay(conn, clock.as_ref(), &caller, &target, request))
        .await;
    let errors = match done {
        Ok(_) => return Ok(see_other(&format!("/console/invoices/{id}?notice=paid"))),
        Err(Error::Validation(errors)) => FormErrors(errors),
        Err(e @ Error::Conflict { .. }) => {
            let mut errors = FormErrors::default();
            errors.push("", explain(&e).2);
            errors
        }
        Err(e) => return Err(e.into()),
    };
    let i = load(&state, &s, id).await?;
    let body = pay_page(&s, &i, &reference, &errors);
    Ok(page_status(
        StatusCode::UNPROCESSABLE_ENTITY,
        &s.viewer(),
        Section::Invoices,
        "Record a payment",
        body,
    ))
}

fn amount_field(line_id: &str) -> String {
    format!("amount_{line_id}")
}

/// What a line has left to credit, pre-tax (as the invoice view reports it).
fn remaining(l: &invoices::LineView) -> i64 {
    l.amount.amount - l.amount_credited.amount
}

/// The credit-note form; `form_key` is the key of the form being sent again, `None` for a
/// new one.
fn credit_page(
    s: &Session,
    i: &InvoiceView,
    form: &super::session::Form,
    form_key: Option<&str>,
    errors: &FormErrors,
) -> Markup {
    let form_key = form_key
        .filter(|k| !k.is_empty())
        .map_or_else(|| new_id("frm"), str::to_string);
    html! {
        p.crumbs { a href={ "/console/invoices/" (i.id) } { (invoice_title(i)) } }
        h1 { "Issue a credit note" }
        (error_summary(errors))
        (summary_facts(i))
        p { "Credit part or all of the invoice's lines (amounts before tax, in " (i.currency) "). The tax is credited in proportion. A line can be credited at most what it has left." }
        form.stack method="post" action={ "/console/invoices/" (i.id) "/credit-note" } novalidate {
            (csrf_field(&s.csrf))
            // One credit note per form shown: a second submission (a double click, a reload)
            // finds the first one's key and issues nothing.
            input type="hidden" name="form_key" value=(form_key);
            (Input::new("reason", "Reason", &form.text("reason")).hint("Shown to the customer, up to 500 characters").required().render(errors))
            fieldset {
                legend { "Amounts to credit" }
                @for l in &i.lines {
                    @let name = amount_field(&l.id);
                    @let label = format!("{} ({} – {})", l.description, l.source, l.service_period);
                    @let hint = format!("At most {} left to credit; leave empty to credit nothing", money_of(remaining(l), &i.currency));
                    (Input::new(&name, &label, &form.text(&name)).hint(&hint).render(errors))
                }
            }
            div.field.has-error[errors.get("confirm").is_some()] {
                @if let Some(e) = errors.get("confirm") { p.field-error id="f-confirm-error" { span.visually-hidden { "Error: " } (e) } }
                div.check {
                    input #f-confirm type="checkbox" name="confirm" value="yes" checked[form.get("confirm") == Some("yes")]
                        aria-describedby=[errors.get("confirm").map(|_| "f-confirm-error")];
                    label for="f-confirm" { "I have checked these amounts: a credit note cannot be undone." }
                }
            }
            div.actions {
                button.primary type="submit" { "Issue credit note" }
                a href={ "/console/invoices/" (i.id) } { "Cancel" }
            }
        }
    }
}

/// `GET /console/invoices/{id}/credit-note`.
pub async fn credit_form(state: State, s: Session, id: Id) -> Reply {
    s.caller.require(Capability::PlatformBilling)?;
    let i = load(&state, &s, id.into_inner()).await?;
    let body = credit_page(&s, &i, &Default::default(), None, &FormErrors::default());
    Ok(page(
        &s.viewer(),
        Section::Invoices,
        "Issue a credit note",
        body,
    ))
}

/// `POST /console/invoices/{id}/credit-note`: amounts in major units become minor units;
/// the domain refuses more than a line has left, and its errors land next to their fields.
pub async fn credit(state: State, posted: Posted, id: Id) -> Reply {
    let id = id.into_inner();
    let s = posted.session;
    let form = posted.form;
    s.caller.require(Capability::PlatformBilling)?;
    let i = load(&state, &s, id.clone()).await?;
    let mut errors = FormErrors::default();
    let mut fresh_form = false;
    let mut lines: Vec<(String, CreditLineRequest)> = Vec::new();
    if let Ok(currency) = billing::currency::CurrencyCode::parse(&i.currency) {
        for l in &i.lines {
            let name = amount_field(&l.id);
            let raw = form.text(&name);
            if raw.is_empty() {
                continue;
            }
            match billing::money::parse_major_units(&raw, currency) {
                Ok(amount) => lines.push((
                    name,
                    CreditLineRequest {
                        invoice_line_id: l.id.clone(),
                        amount,
                    },
                )),
                Err(m) => errors.push(name, format!("Amount {m}")),
            }
        }
    }
    if lines.is_empty() && errors.is_empty() {
        let first = i
            .lines
            .first()
            .map(|l| amount_field(&l.id))
            .unwrap_or_default();
        errors.push(first, "Enter an amount to credit on at least one line");
    }
    if form.get("confirm") != Some("yes") {
        errors.push("confirm", "Tick the box to confirm the credit note");
    }
    if errors.is_empty() {
        let names: Vec<String> = lines.iter().map(|(n, _)| n.clone()).collect();
        let request = CreditNoteRequest {
            reason: form.text("reason"),
            lines: lines.into_iter().map(|(_, l)| l).collect(),
        };
        let (caller, clock, target) = (s.caller.clone(), state.clock.clone(), id.clone());
        let once = form.get("form_key").filter(|k| !k.is_empty()).map(|k| {
            RequestKey::new(
                caller.principal(),
                "POST".into(),
                format!("/console/invoices/{id}/credit-note"),
                k,
            )
        });
        let done = state
            .db(move |conn| match once {
                Some(key) => {
                    let key = key?;
                    let hash = hex::encode(Sha256::digest(format!("{request:?}")));
                    idempotency::once(conn, clock.as_ref(), &key, &hash, |conn| {
                        invoices::credit(conn, clock.as_ref(), &caller, &target, request.clone())
                    })
                    .map(|_| ())
                }
                None => {
                    invoices::credit(conn, clock.as_ref(), &caller, &target, request).map(|_| ())
                }
            })
            .await;
        match done {
            // Issued now, or by this form's first submission.
            Ok(()) => {
                return Ok(see_other(&format!(
                    "/console/invoices/{id}?notice=credited"
                )))
            }
            Err(Error::IdempotencyMismatch(_)) => {
                errors.push(
                    "",
                    "This form was already sent with other amounts, and that credit note was \
                     issued. To credit more, check the amounts and send this new form.",
                );
                fresh_form = true;
            }
            Err(Error::Validation(found)) => {
                for e in found {
                    errors.0.push(credit_field(&i, &names, e));
                }
            }
            Err(e @ Error::Conflict { .. }) => errors.push("", explain(&e).2),
            Err(e) => return Err(e.into()),
        }
    }
    let form_key = (!fresh_form).then(|| form.text("form_key"));
    let body = credit_page(&s, &i, &form, form_key.as_deref(), &errors);
    Ok(page_status(
        StatusCode::UNPROCESSABLE_ENTITY,
        &s.viewer(),
        Section::Invoices,
        "Issue a credit note",
        body,
    ))
}

/// Puts a domain error about `lines[k].amount` next to the k-th amount field sent, with
/// the line's remaining amount in the invoice's currency.
fn credit_field(i: &InvoiceView, names: &[String], e: FieldError) -> FieldError {
    let index = e
        .field
        .strip_prefix("lines[")
        .and_then(|rest| rest.split_once(']'))
        .and_then(|(n, _)| n.parse::<usize>().ok());
    match index.and_then(|k| names.get(k)) {
        Some(name) => {
            let left = i
                .lines
                .iter()
                .find(|l| amount_field(&l.id) == *name)
                .map(|l| money_of(remaining(l), &i.currency));
            let message = match (e.message.starts_with("exceeds"), left) {
                (true, Some(left)) => {
                    format!("Amount exceeds what this line has left to credit ({left})")
                }
                _ => format!("Amount {}", e.message),
            };
            FieldError::new(name.clone(), message)
        }
        None if e.field == "reason" => FieldError::new("reason", format!("Reason {}", e.message)),
        None => FieldError::new("", e.message),
    }
}

// ---------- billing runs ----------

#[derive(Debug, Deserialize)]
pub struct RunsQuery {
    pub run: Option<String>,
}

fn runs_page(
    s: &Session,
    list: &[runs::RunView],
    shown: Option<&str>,
    period: &str,
    errors: &FormErrors,
) -> Markup {
    let just_ran = shown.and_then(|id| list.iter().find(|r| r.id == id));
    html! {
        h1 { "Billing runs" }
        @if let Some(r) = just_ran {
            div.notice role="status" {
                h2 { "Run for " (r.period) " finished" }
                p {
                    (r.invoices_created) " invoice(s) created, " (r.invoices_updated) " updated, "
                    (r.invoices_removed) " removed; " (r.failures.len()) " problem(s) to look at."
                }
                @if !r.failures.is_empty() {
                    ul { @for f in &r.failures { li { span.mono { (f.customer_id) } ": " (f.error) } } }
                }
                p { a href={ "/console/invoices?status=draft&period=" (q(&r.period)) } { "Review the draft invoices of " (r.period) } }
            }
        }
        section aria-labelledby="start-h" {
            h2 #start-h { "Start a billing run" }
            p { "A run creates or rebuilds the draft invoices of a month, one per customer and currency. Finalized invoices are never touched; running twice gives the same drafts." }
            (error_summary(errors))
            form.stack method="post" action="/console/billing-runs" novalidate {
                (csrf_field(&s.csrf))
                (Input::new("period", "Period", period).hint("The month to bill, YYYY-MM").required().pattern("[0-9]{4}-[0-9]{2}").render(errors))
                button.primary type="submit" { "Run billing" }
            }
        }
        section aria-labelledby="runs-h" {
            h2 #runs-h { "Recent runs" }
            @if list.is_empty() {
                (empty("No billing run yet. Start one above for the month you want to bill."))
            } @else {
                table {
                    caption.visually-hidden { "Recent billing runs, newest first" }
                    thead { tr {
                        th scope="col" { "Run" } th scope="col" { "Period" } th scope="col" { "Started" }
                        th.num scope="col" { "Created" } th.num scope="col" { "Updated" } th.num scope="col" { "Removed" }
                        th.num scope="col" { "Problems" } th scope="col" { "Invoices" }
                    } }
                    tbody {
                        @for r in list {
                            tr {
                                th.mono scope="row" { (r.id) }
                                td { (r.period) }
                                td { (when(&r.created_at)) }
                                td.num { (r.invoices_created) }
                                td.num { (r.invoices_updated) }
                                td.num { (r.invoices_removed) }
                                td.num { (r.failures.len()) }
                                td { a href={ "/console/invoices?period=" (q(&r.period)) } { "Invoices of " (r.period) } }
                            }
                        }
                    }
                }
            }
        }
    }
}

async fn recent_runs(state: &State, s: &Session) -> Result<Vec<runs::RunView>, Error> {
    let caller = s.caller.clone();
    state
        .db(move |conn| runs::list_runs(conn, &caller, None))
        .await
}

fn this_month(state: &State) -> String {
    state.clock.now().format("%Y-%m").to_string()
}

/// `/console/billing-runs`.
pub async fn runs_list(state: State, s: Session, query: web::Query<RunsQuery>) -> Reply {
    let list = recent_runs(&state, &s).await?;
    let body = runs_page(
        &s,
        &list,
        query.run.as_deref(),
        &this_month(&state),
        &FormErrors::default(),
    );
    Ok(page(
        &s.viewer(),
        Section::BillingRuns,
        "Billing runs",
        body,
    ))
}

/// `POST /console/billing-runs`: runs billing for the period, then shows what it did.
pub async fn start_run(state: State, posted: Posted) -> Reply {
    let s = posted.session;
    let period = posted.form.text("period");
    let (caller, clock, defaults) = (
        s.caller.clone(),
        state.clock.clone(),
        state.billing_defaults(),
    );
    let request = RunRequest {
        period: period.clone(),
    };
    let done = state
        .db(move |conn| {
            runs::run(
                conn,
                clock.as_ref(),
                defaults,
                &caller,
                request,
                &mut |_, _| {},
            )
        })
        .await;
    match done {
        Ok(run) => Ok(see_other(&format!(
            "/console/billing-runs?run={}",
            q(&run.id)
        ))),
        Err(Error::Validation(errors)) => {
            let list = recent_runs(&state, &s).await?;
            let body = runs_page(&s, &list, None, &period, &FormErrors(errors));
            Ok(page_status(
                StatusCode::UNPROCESSABLE_ENTITY,
                &s.viewer(),
                Section::BillingRuns,
                "Billing runs",
                body,
            ))
        }
        Err(e) => Err(e.into()),
    }
}
