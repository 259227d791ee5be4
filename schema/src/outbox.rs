//! Claiming due outbox messages, so two workers never send one message at once: PostgreSQL
//! locks the due rows and skips those another worker holds (`FOR UPDATE SKIP LOCKED`);
//! SQLite takes the write lock first (`BEGIN IMMEDIATE`), so claims run one after another.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use crate::models::OutboxMessage;
use crate::schema::outbox;
use crate::DbConnection;

/// Claims up to `limit` pending messages due at `now`, oldest due first, in a short
/// transaction of its own: each gets one more attempt and a lease (`next_attempt_at =
/// lease_until`), so the messages of a worker that dies come due again when the lease ends.
/// Returns the claimed rows as they now stand. Only messages of `kind`, and none of the
/// organizations in `skip`.
pub fn claim_due(
    conn: &mut DbConnection,
    kind: &str,
    skip: &[&str],
    now: NaiveDateTime,
    lease_until: NaiveDateTime,
    limit: i64,
) -> QueryResult<Vec<OutboxMessage>> {
    macro_rules! due {
        () => {
            outbox::table
                .filter(outbox::status.eq("pending"))
                .filter(outbox::kind.eq(kind))
                .filter(outbox::organization_id.ne_all(skip))
                .filter(outbox::next_attempt_at.le(now))
                .order((outbox::next_attempt_at.asc(), outbox::id.asc()))
                .limit(limit)
                .select(OutboxMessage::as_select())
        };
    }
    macro_rules! lease {
        ($c:expr, $rows:expr) => {{
            let mut rows: Vec<OutboxMessage> = $rows;
            let ids: Vec<&str> = rows.iter().map(|m| m.id.as_str()).collect();
            if !ids.is_empty() {
                diesel::update(outbox::table.filter(outbox::id.eq_any(&ids)))
                    .set((
                        outbox::attempts.eq(outbox::attempts + 1),
                        outbox::next_attempt_at.eq(lease_until),
                    ))
                    .execute($c)?;
            }
            for m in &mut rows {
                m.attempts += 1;
                m.next_attempt_at = lease_until;
            }
            Ok(rows)
        }};
    }
    match conn {
        DbConnection::Postgresql(c) => {
            c.transaction(|c| lease!(c, due!().for_update().skip_locked().load(c)?))
        }
        DbConnection::Sqlite(c) => c.immediate_transaction(|c| lease!(c, due!().load(c)?)),
    }
}

/// Gives back messages a worker claimed and will not send now: due at `due_at`, the
/// attempt their claim counted taken back. Each is named with the attempt count its claim
/// gave it, so a message claimed since by another worker is left alone.
pub fn release(
    conn: &mut DbConnection,
    claimed: &[(String, i32)],
    due_at: NaiveDateTime,
) -> QueryResult<()> {
    for (id, attempts) in claimed {
        diesel::update(
            outbox::table
                .find(id)
                .filter(outbox::status.eq("pending"))
                .filter(outbox::attempts.eq(attempts)),
        )
        .set((
            outbox::attempts.eq(outbox::attempts - 1),
            outbox::next_attempt_at.eq(due_at),
        ))
        .execute(conn)?;
    }
    Ok(())
}
