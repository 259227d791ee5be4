//! The courier: claims due outbox messages, sends them, marks them sent, or backs off
//! (30 s × 2^(attempts − 1), at most 6 h) and gives up after [`MAX_ATTEMPTS`].
//!
//! Claims are short transactions that lease the messages (`schema::outbox::claim_due`), so
//! several instances share the work and a message held by a worker that died comes due
//! again when its lease ends. Delivery is at least once: a receiver may see an event twice
//! (same `Marketplace-Event-Id`, same e-mail Message-ID) and should ignore the repeat.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use diesel::prelude::*;
use futures_util::stream::FuturesUnordered;
use futures_util::StreamExt;
use lettre::message::Mailbox;
use schema::models::OutboxMessage;
use schema::schema::outbox;
use schema::{DbConnection, DbPool};
use serde::Serialize;

use super::mail::{self, Mailer};
use super::{Email, WebhookPayload};
use crate::domain::clock::{db_time, SharedClock};
use crate::domain::db::{in_writers_turn, transaction};
use crate::domain::error::{Error, Result};
use crate::domain::webhooks::{self, Delivery, Sender};

/// Webhooks in flight at once, per instance. Waiting on a receiver costs a socket, not a
/// thread.
const WEBHOOKS_IN_FLIGHT: usize = 64;
/// Webhooks of one organization in flight at once, per instance: receivers that hang until
/// the timeout (or a flood of one organization's events) hold a few of the slots, not all,
/// and never the e-mails', which go in a lane of their own.
const WEBHOOKS_PER_ORGANIZATION: usize = 4;
/// E-mails in flight at once (each holds an SMTP conversation on a blocking thread).
const EMAILS_IN_FLIGHT: usize = 8;
/// How long a claim holds a message: far longer than sending it can take (timeouts are
/// seconds; a message is claimed only when a slot is free to send it).
pub const LEASE_SECS: i64 = 300;
/// Deliveries tried before a message is marked `failed` (about 15 hours of retries).
pub const MAX_ATTEMPTS: i32 = 12;
const FIRST_BACKOFF_SECS: i64 = 30;
const MAX_BACKOFF_SECS: i64 = 6 * 3600;
/// Messages one lane of one call of [`Courier::deliver_due`] starts at most (the next
/// call goes on), and claims it makes at most; `serve`'s lanes have no such end.
const MAX_STARTED: usize = 512;
const MAX_CLAIMS: usize = 2 * MAX_STARTED;
const ERROR_MAX: usize = 1000;
const PURGE_EVERY: Duration = Duration::from_secs(3600);

/// The wait before the next try, after `attempts` tries failed.
pub fn backoff(attempts: i32) -> chrono::Duration {
    let doublings = (attempts.max(1) - 1).min(20) as u32;
    chrono::Duration::seconds((FIRST_BACKOFF_SECS << doublings).min(MAX_BACKOFF_SECS))
}

pub struct CourierSettings {
    /// `MARKETPLACE_SMTP_URL`; unset: e-mails are written to `mail_dir`.
    pub smtp_url: Option<String>,
    pub mail_from: String,
    pub mail_dir: PathBuf,
    /// `MARKETPLACE_WEBHOOK_ALLOW_PRIVATE`: let webhooks reach non-public addresses.
    pub webhook_allow_private: bool,
}

/// What one call of [`Courier::deliver_due`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Report {
    pub sent: usize,
    /// Failed this time, to be tried again later.
    pub retrying: usize,
    /// Given up on.
    pub failed: usize,
}

impl std::ops::Add for Report {
    type Output = Report;
    fn add(self, other: Report) -> Report {
        Report {
            sent: self.sent + other.sent,
            retrying: self.retrying + other.retrying,
            failed: self.failed + other.failed,
        }
    }
}

/// How long a lane goes on.
enum Pass {
    /// Until what is due now is sent (tests, `deliver_due`).
    Once,
    /// For as long as the server runs.
    Forever,
}

fn log_report(lane: &Lane, report: &Report) {
    tracing::info!(
        lane = lane.kind,
        sent = report.sent,
        retrying = report.retrying,
        failed = report.failed,
        "outbox delivered"
    );
}

/// One kind of message, sent apart from the other kind.
struct Lane {
    kind: &'static str,
    in_flight: usize,
    per_organization: usize,
}

const EMAILS: Lane = Lane {
    kind: "email",
    in_flight: EMAILS_IN_FLIGHT,
    per_organization: EMAILS_IN_FLIGHT,
};
const WEBHOOKS: Lane = Lane {
    kind: "webhook",
    in_flight: WEBHOOKS_IN_FLIGHT,
    per_organization: WEBHOOKS_PER_ORGANIZATION,
};

enum Outcome {
    Sent,
    Retry(String),
    GiveUp(String),
}

pub struct Courier {
    pool: DbPool,
    clock: SharedClock,
    mailer: Arc<Mailer>,
    from: Mailbox,
    webhooks: Sender,
}

impl Courier {
    pub fn new(
        pool: DbPool,
        clock: SharedClock,
        settings: CourierSettings,
    ) -> std::result::Result<Courier, String> {
        Ok(Courier {
            mailer: Arc::new(Mailer::new(
                settings.smtp_url.as_deref(),
                &settings.mail_dir,
            )?),
            from: mail::parse_from(&settings.mail_from)?,
            webhooks: Sender::new(settings.webhook_allow_private),
            pool,
            clock,
        })
    }

    /// Where e-mails go, for the log.
    pub fn describe_mail(&self) -> String {
        self.mailer.describe()
    }

    async fn db<T, F>(&self, work: F) -> Result<T>
    where
        F: FnOnce(&mut DbConnection) -> Result<T> + Send + 'static,
        T: Send + 'static,
    {
        let pool = self.pool.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = pool.get()?;
            work(&mut conn)
        })
        .await
        .map_err(|e| Error::internal(format!("blocking task failed: {e}")))?
    }

    /// Delivers every message due now and says what happened: e-mails and webhooks in
    /// lanes of their own, each keeping its slots busy (a message is claimed as a slot
    /// frees, and its outcome written as soon as it is known), so a slow receiver delays
    /// nobody else's message. Tests call it to deliver at once; `serve` keeps each lane
    /// going on its own ([`Courier::run`]).
    pub async fn deliver_due(&self) -> Result<Report> {
        let recheck = Duration::from_millis(100);
        let (emails, webhooks) = futures_util::join!(
            self.deliver_lane(&EMAILS, recheck, Pass::Once),
            self.deliver_lane(&WEBHOOKS, recheck, Pass::Once)
        );
        Ok(emails? + webhooks?)
    }

    /// Sends a lane's messages. While slots are free it looks for newly due rows every
    /// `recheck`, not only when a send ends (which may take a receiver's whole timeout).
    /// [`Pass::Once`] starts at most [`MAX_STARTED`] and returns once nothing it started
    /// is in flight; [`Pass::Forever`] never drains, logs what it did each time it falls
    /// idle, and goes on after a database error.
    async fn deliver_lane(&self, lane: &Lane, recheck: Duration, pass: Pass) -> Result<Report> {
        let forever = matches!(pass, Pass::Forever);
        let mut report = Report::default();
        let mut in_flight = FuturesUnordered::new();
        let mut sending: HashMap<String, usize> = HashMap::new();
        let (mut claims, mut started, mut more_due) = (0, 0, true);
        // Once: a database error stops the claiming; what is in flight is still sent and
        // recorded, then the error is returned.
        let mut failure: Option<Error> = None;
        loop {
            let room = lane.in_flight - in_flight.len();
            let budget = if forever {
                room
            } else {
                room.min(MAX_STARTED - started)
                    .min(if claims < MAX_CLAIMS { room } else { 0 })
            };
            if failure.is_none() && more_due && budget > 0 {
                claims += 1;
                let full: Vec<String> = sending
                    .iter()
                    .filter(|(_, n)| **n >= lane.per_organization)
                    .map(|(org, _)| org.clone())
                    .collect();
                // No more than one organization's share at a time, so few are handed back.
                let limit = budget.min(lane.per_organization);
                let claimed = match self.claim(lane.kind, full, limit).await {
                    Ok(claimed) => claimed,
                    Err(e) => {
                        self.note_failure(lane, e, forever, &mut failure);
                        more_due = false;
                        continue;
                    }
                };
                more_due = claimed.len() == limit;
                let mut unstarted = Vec::new();
                let before = started;
                for message in claimed {
                    let busy = sending.entry(message.organization_id.clone()).or_default();
                    if *busy < lane.per_organization {
                        *busy += 1;
                        started += 1;
                        in_flight.push(async move {
                            let outcome = self.attempt(&message).await;
                            (message, outcome)
                        });
                    } else {
                        unstarted.push((message.id, message.attempts));
                    }
                }
                // Beyond their organization's share: due again at once, for a later claim.
                if !unstarted.is_empty() {
                    if let Err(e) = self.release(unstarted).await {
                        self.note_failure(lane, e, forever, &mut failure);
                    }
                }
                if started > before || more_due {
                    continue;
                }
            }
            if in_flight.is_empty() {
                if !forever {
                    return match failure {
                        Some(e) => Err(e),
                        None => Ok(report),
                    };
                }
                if report != Report::default() {
                    log_report(lane, &report);
                    report = Report::default();
                }
                tokio::time::sleep(recheck).await;
                more_due = true;
                continue;
            }
            let done = if in_flight.len() < lane.in_flight && failure.is_none() {
                tokio::select! {
                    done = in_flight.next() => done,
                    _ = tokio::time::sleep(recheck) => {
                        more_due = true;
                        continue;
                    }
                }
            } else {
                in_flight.next().await
            };
            let Some((message, outcome)) = done else {
                continue;
            };
            // Forgotten at zero: a lane that runs for months meets many organizations.
            if let Some(busy) = sending.get_mut(&message.organization_id) {
                *busy = busy.saturating_sub(1);
                if *busy == 0 {
                    sending.remove(&message.organization_id);
                }
            }
            // Its organization may have more due than the claims so far could start.
            more_due = true;
            let id = message.id.clone();
            if let Err(e) = self.record(message, outcome, &mut report).await {
                // Sent (or not) but unrecorded: due again when its lease ends.
                tracing::warn!(message = %id, error = %e, "outbox outcome not recorded");
                self.note_failure(lane, e, forever, &mut failure);
            }
        }
    }

    /// A database error in a lane: kept to end a single pass with, or (forever) logged.
    fn note_failure(&self, lane: &Lane, e: Error, forever: bool, failure: &mut Option<Error>) {
        if forever {
            tracing::warn!(lane = lane.kind, error = %e, "outbox lane: database error");
        } else {
            failure.get_or_insert(e);
        }
    }

    /// Gives back messages claimed but not started, due now, their attempt not counted.
    async fn release(&self, claimed: Vec<(String, i32)>) -> Result<()> {
        let now = db_time(self.clock.now());
        self.db(move |conn| {
            transaction(conn, |conn| {
                Ok(schema::outbox::release(conn, &claimed, now)?)
            })
        })
        .await
    }

    /// Claims up to `limit` due messages of `kind`, none of the organizations in `full`.
    async fn claim(
        &self,
        kind: &'static str,
        full: Vec<String>,
        limit: usize,
    ) -> Result<Vec<OutboxMessage>> {
        let now = self.clock.now();
        let lease_until = now + chrono::Duration::seconds(LEASE_SECS);
        self.db(move |conn| {
            let skip: Vec<&str> = full.iter().map(String::as_str).collect();
            // In the writers' turn on SQLite, as other writes of this instance are.
            in_writers_turn(conn, |conn| {
                Ok(schema::outbox::claim_due(
                    conn,
                    kind,
                    &skip,
                    db_time(now),
                    db_time(lease_until),
                    limit as i64,
                )?)
            })
        })
        .await
    }

    /// Keeps each lane going on its own, looking for due rows every `every` while it has
    /// room (a long wait on receivers that hang never holds up the e-mails, nor the other
    /// organizations' webhooks), for as long as the task lives, and purges old messages
    /// once an hour.
    pub async fn run(self: Arc<Self>, every: Duration) {
        let purge = async {
            let mut tick = tokio::time::interval(PURGE_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let clock = self.clock.clone();
                match self
                    .db(move |conn| super::purge(conn, clock.as_ref()))
                    .await
                {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(purged = n, "old outbox messages removed"),
                    Err(e) => tracing::warn!(error = %e, "outbox purge failed"),
                }
            }
        };
        let _ = futures_util::join!(
            purge,
            self.deliver_lane(&EMAILS, every, Pass::Forever),
            self.deliver_lane(&WEBHOOKS, every, Pass::Forever)
        );
    }

    async fn attempt(&self, message: &OutboxMessage) -> Outcome {
        match message.kind.as_str() {
            "email" => self.send_email(message).await,
            "webhook" => self.send_webhook(message).await,
            other => Outcome::GiveUp(format!("unknown message kind `{other}`")),
        }
    }

    async fn send_email(&self, message: &OutboxMessage) -> Outcome {
        let email: Email = match serde_json::from_str(&message.payload) {
            Ok(e) => e,
            Err(e) => return Outcome::GiveUp(format!("unreadable payload: {e}")),
        };
        let built = match mail::build(&self.from, &message.id, &email, self.clock.now().into()) {
            Ok(m) => m,
            Err(e) => return Outcome::GiveUp(e),
        };
        let mailer = self.mailer.clone();
        match tokio::task::spawn_blocking(move || mailer.send(&built)).await {
            Ok(Ok(())) => Outcome::Sent,
            Ok(Err(e)) if e.permanent => Outcome::GiveUp(e.message),
            Ok(Err(e)) => Outcome::Retry(e.message),
            Err(e) => Outcome::Retry(format!("the mail task failed: {e}")),
        }
    }

    async fn send_webhook(&self, message: &OutboxMessage) -> Outcome {
        let payload: WebhookPayload = match serde_json::from_str(&message.payload) {
            Ok(p) => p,
            Err(e) => return Outcome::GiveUp(format!("unreadable payload: {e}")),
        };
        let endpoint_id = payload.endpoint_id.clone();
        let endpoint = match self
            .db(move |conn| webhooks::live_endpoint(conn, &endpoint_id))
            .await
        {
            Ok(Some(endpoint)) => endpoint,
            Ok(None) => return Outcome::GiveUp("the endpoint was deleted".into()),
            Err(e) => return Outcome::Retry(e.to_string()),
        };
        let body = match serde_json::to_vec(&payload.event) {
            Ok(b) => b,
            Err(e) => return Outcome::GiveUp(format!("cannot encode the event: {e}")),
        };
        let delivery = Delivery {
            url: &endpoint.url,
            secret: &endpoint.secret,
            event_id: &payload.event.id,
            event_type: &payload.event.event_type,
            body,
            now: self.clock.now(),
        };
        match self.webhooks.send(delivery).await {
            Ok(()) => Outcome::Sent,
            Err(e) => Outcome::Retry(e),
        }
    }

    /// Marks the message sent, due again after its backoff, or failed. Guarded by the
    /// attempt count the claim gave it: if the lease ran out and another worker claimed the
    /// message since, this worker's word no longer counts.
    async fn record(
        &self,
        message: OutboxMessage,
        outcome: Outcome,
        report: &mut Report,
    ) -> Result<()> {
        let now = self.clock.now();
        let (status, next_attempt_at, error) = match outcome {
            Outcome::Sent => {
                report.sent += 1;
                ("sent", message.next_attempt_at, None)
            }
            Outcome::Retry(e) if message.attempts < MAX_ATTEMPTS => {
                report.retrying += 1;
                let next = now + backoff(message.attempts);
                tracing::warn!(message = %message.id, kind = %message.kind, attempts = message.attempts,
                    retry_at = %next, error = %e, "outbox delivery failed; will retry");
                ("pending", db_time(next), Some(e))
            }
            Outcome::Retry(e) | Outcome::GiveUp(e) => {
                report.failed += 1;
                tracing::warn!(message = %message.id, kind = %message.kind, attempts = message.attempts,
                    error = %e, "outbox delivery failed; giving up");
                ("failed", message.next_attempt_at, Some(e))
            }
        };
        let sent_at = (status == "sent").then(|| db_time(now));
        let error: Option<String> = error.map(|e| e.chars().take(ERROR_MAX).collect());
        self.db(move |conn| {
            let target = outbox::table
                .find(&message.id)
                .filter(outbox::status.eq("pending"))
                .filter(outbox::attempts.eq(message.attempts));
            match error {
                None => diesel::update(target)
                    .set((outbox::status.eq(status), outbox::sent_at.eq(sent_at)))
                    .execute(conn)?,
                Some(error) => diesel::update(target)
                    .set((
                        outbox::status.eq(status),
                        outbox::next_attempt_at.eq(next_attempt_at),
                        outbox::last_error.eq(error),
                    ))
                    .execute(conn)?,
            };
            Ok(())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_30_seconds_up_to_6_hours() {
        let secs = |n| backoff(n).num_seconds();
        assert_eq!((secs(1), secs(2), secs(3), secs(4)), (30, 60, 120, 240));
        assert_eq!(secs(11), 6 * 3600);
        assert_eq!(secs(100), 6 * 3600);
        assert_eq!(secs(0), 30);
    }
}
