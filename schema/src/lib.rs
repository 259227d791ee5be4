//! Persistence for the marketplace: one diesel code path over SQLite and PostgreSQL.
//!
//! The backend is chosen by the database URL. Everything above this crate talks to
//! [`DbConnection`]; the few statements diesel cannot express through a `MultiConnection`
//! branch per backend inside this crate.

pub mod models;
pub mod outbox;
pub mod payments;
pub mod schema;

use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::r2d2::{CustomizeConnection, ManageConnection, Pool, PooledConnection, R2D2Connection};
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel::{Connection, PgConnection, SqliteConnection};
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};

pub use diesel;

const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("../migrations/sqlite");
const POSTGRES_MIGRATIONS: EmbeddedMigrations = embed_migrations!("../migrations/postgres");

/// A connection to whichever database the URL names.
#[derive(diesel::MultiConnection)]
pub enum DbConnection {
    Postgresql(PgConnection),
    Sqlite(SqliteConnection),
}

pub type DbPool = Pool<ConnectionManager>;
pub type PooledDb = PooledConnection<ConnectionManager>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgresql,
    Sqlite,
}

impl Backend {
    pub fn from_url(url: &str) -> Backend {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgresql
        } else {
            Backend::Sqlite
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DbSetupError {
    #[error("cannot connect to the database: {0}")]
    Connect(#[from] diesel::ConnectionError),
    #[error("cannot build the connection pool: {0}")]
    Pool(#[from] diesel::r2d2::PoolError),
    #[error("migration failed: {0}")]
    Migration(String),
}

/// Opens connections for the pool; SQLite paths may be given as `sqlite://PATH` or `PATH`.
#[derive(Debug, Clone)]
pub struct ConnectionManager {
    url: String,
    backend: Backend,
    file_reads: FileReads,
}

/// SQLite's default upper limit of `mmap_size` (`SQLITE_MAX_MMAP_SIZE`): asking for more
/// gets this.
const SQLITE_MAX_MMAP_SIZE: i64 = 0x7fff_0000;

/// How SQLite connections read the database file (PostgreSQL ignores it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileReads {
    /// Pages are copied by `pread` into each connection's own 2 MB page cache: right for a
    /// command that reads most pages once, in order.
    Copied,
    /// Pages are read through a memory map of the file (up to SQLite's default limit of
    /// about 2 GiB), in place in the kernel's page cache: right for a server whose searches
    /// walk the same pages again and again, more than a connection's page cache holds (the
    /// copies were a sixth of a catalog search's CPU). Each connection maps the file, and
    /// the process's resident size counts the pages it touched once per mapping; they are
    /// the kernel's page cache, which it reclaims as it needs. An I/O error while reading a
    /// mapped page ends the process (SIGBUS) instead of failing the query.
    Mapped,
}

impl ConnectionManager {
    pub fn new(url: &str) -> Self {
        let backend = Backend::from_url(url);
        let url = match backend {
            Backend::Sqlite => url.strip_prefix("sqlite://").unwrap_or(url).to_string(),
            Backend::Postgresql => url.to_string(),
        };
        ConnectionManager {
            url,
            backend,
            file_reads: FileReads::Copied,
        }
    }

    pub fn with_file_reads(self, file_reads: FileReads) -> Self {
        ConnectionManager { file_reads, ..self }
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub fn establish(&self) -> Result<DbConnection, diesel::ConnectionError> {
        match self.backend {
            Backend::Postgresql => Ok(DbConnection::Postgresql(PgConnection::establish(
                &self.url,
            )?)),
            Backend::Sqlite => {
                let mut conn = SqliteConnection::establish(&self.url)?;
                // WAL lets readers run beside the writer; the busy timeout makes writers queue
                // instead of failing; foreign keys are off in SQLite unless asked for.
                let mmap_size = match self.file_reads {
                    FileReads::Copied => 0,
                    FileReads::Mapped => SQLITE_MAX_MMAP_SIZE,
                };
                conn.batch_execute(&format!(
                    "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                     PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 10000; \
                     PRAGMA mmap_size = {mmap_size};"
                ))
                .map_err(|e| diesel::ConnectionError::BadConnection(e.to_string()))?;
                Ok(DbConnection::Sqlite(conn))
            }
        }
    }
}

impl ManageConnection for ConnectionManager {
    type Connection = DbConnection;
    type Error = diesel::r2d2::Error;

    fn connect(&self) -> Result<DbConnection, Self::Error> {
        self.establish()
            .map_err(diesel::r2d2::Error::ConnectionError)
    }

    fn is_valid(&self, conn: &mut DbConnection) -> Result<(), Self::Error> {
        conn.ping().map_err(diesel::r2d2::Error::QueryError)
    }

    fn has_broken(&self, conn: &mut DbConnection) -> bool {
        conn.is_broken()
    }
}

#[derive(Debug)]
struct NoCustomization;
impl CustomizeConnection<DbConnection, diesel::r2d2::Error> for NoCustomization {}

/// Applies the embedded migrations of the URL's backend; returns how many ran.
pub fn migrate(conn: &mut DbConnection) -> Result<usize, DbSetupError> {
    let migrations = match conn {
        DbConnection::Postgresql(_) => POSTGRES_MIGRATIONS,
        DbConnection::Sqlite(_) => SQLITE_MIGRATIONS,
    };
    let applied = match conn {
        DbConnection::Postgresql(c) => c.run_pending_migrations(migrations).map(|v| v.len()),
        DbConnection::Sqlite(c) => c.run_pending_migrations(migrations).map(|v| v.len()),
    };
    applied.map_err(|e| DbSetupError::Migration(e.to_string()))
}

/// Reverts every applied migration (used by the migration round-trip test).
pub fn revert_all(conn: &mut DbConnection) -> Result<(), DbSetupError> {
    let result = match conn {
        DbConnection::Postgresql(c) => c.revert_all_migrations(POSTGRES_MIGRATIONS).map(|_| ()),
        DbConnection::Sqlite(c) => c.revert_all_migrations(SQLITE_MIGRATIONS).map(|_| ()),
    };
    result.map_err(|e| DbSetupError::Migration(e.to_string()))
}

/// Builds the pool, after running migrations once on a dedicated connection.
pub fn connect(
    url: &str,
    max_size: u32,
    run_migrations: bool,
    file_reads: FileReads,
) -> Result<DbPool, DbSetupError> {
    let manager = ConnectionManager::new(url).with_file_reads(file_reads);
    if run_migrations {
        let mut conn = manager.establish()?;
        migrate(&mut conn)?;
    }
    let pool = Pool::builder()
        .max_size(max_size)
        .connection_timeout(Duration::from_secs(10))
        // No `SELECT 1` before every checkout (a round trip per request on PostgreSQL);
        // broken connections are still detected and dropped by `has_broken`.
        .test_on_check_out(false)
        .connection_customizer(Box::new(NoCustomization))
        .build(manager)?;
    Ok(pool)
}

/// True when the error means "try the transaction again": a PostgreSQL serialization failure
/// or deadlock, or SQLite reporting the database busy.
pub fn is_retryable(error: &DieselError) -> bool {
    match error {
        DieselError::DatabaseError(DatabaseErrorKind::SerializationFailure, _) => true,
        DieselError::DatabaseError(_, info) => {
            let message = info.message();
            message.contains("database is locked")
                || message.contains("database table is locked")
                || message.contains("deadlock detected")
        }
        _ => false,
    }
}

/// True when the error is a unique-constraint violation.
pub fn is_unique_violation(error: &DieselError) -> bool {
    matches!(
        error,
        DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _)
    )
}

/// The tables and their column names, in order, for the schema-equivalence test of the two
/// migration trees. Each backend's full-text machinery (SQLite's `listings_fts` tables,
/// PostgreSQL's `search_vector` and `label_vector` columns) is left out: it differs by design.
pub fn describe_tables(conn: &mut DbConnection) -> Result<Vec<(String, Vec<String>)>, DieselError> {
    use diesel::sql_types::Text;
    use diesel::{sql_query, QueryableByName, RunQueryDsl};

    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = Text)]
        table_name: String,
        #[diesel(sql_type = Text)]
        column_name: String,
    }
    let rows: Vec<Row> = match conn {
        DbConnection::Postgresql(_) => sql_query(
            "SELECT table_name::text AS table_name, column_name::text AS column_name \
             FROM information_schema.columns WHERE table_schema = current_schema() \
             AND table_name <> '__diesel_schema_migrations' \
             AND column_name NOT IN ('search_vector', 'label_vector') \
             ORDER BY table_name, column_name",
        )
        .load(conn)?,
        DbConnection::Sqlite(_) => sql_query(
            "SELECT m.name AS table_name, p.name AS column_name FROM sqlite_master m \
             JOIN pragma_table_info(m.name) p WHERE m.type = 'table' \
             AND m.name NOT LIKE 'sqlite_%' AND m.name <> '__diesel_schema_migrations' \
             AND m.name NOT LIKE '%_fts%' ORDER BY m.name, p.name",
        )
        .load(conn)?,
    };
    let mut tables: Vec<(String, Vec<String>)> = Vec::new();
    for row in rows {
        match tables.last_mut() {
            Some((name, columns)) if *name == row.table_name => columns.push(row.column_name),
            _ => tables.push((row.table_name, vec![row.column_name])),
        }
    }
    Ok(tables)
}

/// The backend's dialect for the few things SQL spells differently: here, full-text search
/// over listings (SQLite FTS5 with bm25, PostgreSQL `tsvector` with `ts_rank`).
pub mod search {
    use diesel::dsl::sql;
    use diesel::expression::BoxableExpression;
    use diesel::sql_types::{Bool, Double, Text};

    use crate::schema::{listing_access, listing_labels, listings, organizations};
    use crate::DbConnection;

    pub type Backend = <DbConnection as diesel::Connection>::Backend;
    /// A condition or ranking usable in any query that selects from `listings` (joins too).
    pub type Condition<QS> = Box<dyn BoxableExpression<QS, Backend, SqlType = Bool>>;
    pub type Rank<QS> = Box<dyn BoxableExpression<QS, Backend, SqlType = Double>>;

    /// Listings whose search document holds every term and which carry every label (kind,
    /// value). `terms` are plain words (letters and digits only), already split by
    /// [`terms`], so no query syntax reaches the engine.
    pub fn matches<QS>(
        conn: &DbConnection,
        terms: &[String],
        labels: &[(LabelKind, &str)],
    ) -> Condition<QS> {
        match conn {
            DbConnection::Sqlite(_) => Box::new(
                sql::<Bool>(
                    "listings.rowid IN (SELECT rowid FROM listings_fts WHERE listings_fts MATCH ",
                )
                .bind::<Text, _>(fts5_query(terms, labels))
                .sql(")"),
            ),
            DbConnection::Postgresql(_) => {
                let words = sql::<Bool>("listings.search_vector @@ plainto_tsquery('simple', ")
                    .bind::<Text, _>(terms.join(" "))
                    .sql(")");
                if labels.is_empty() {
                    return Box::new(words);
                }
                Box::new(
                    words
                        .sql(" AND listings.label_vector @@ plainto_tsquery('simple', ")
                        .bind::<Text, _>(labels_document(labels.iter().copied()))
                        .sql(")"),
                )
            }
        }
    }

    /// Whether ranking by relevance needs the query to read from [`listings_fts`] joined
    /// to `listings` ([`ranked_matches`], [`joined_rank`]): SQLite computes bm25 only
    /// inside a full-text query, and once per match only when joined so.
    pub fn ranks_through_join(conn: &DbConnection) -> bool {
        matches!(conn, DbConnection::Sqlite(_))
    }

    diesel::table! {
        /// SQLite's FTS5 index of listings (its `rowid` is the listing's); PostgreSQL keeps
        /// `listings.search_vector` instead. Only for queries where
        /// [`ranks_through_join`] holds.
        listings_fts (rowid) {
            rowid -> BigInt,
        }
    }

    diesel::allow_tables_to_appear_in_same_query!(listings_fts, listings);
    diesel::allow_tables_to_appear_in_same_query!(listings_fts, organizations);
    diesel::allow_tables_to_appear_in_same_query!(listings_fts, listing_access);
    diesel::allow_tables_to_appear_in_same_query!(listings_fts, listing_labels);

    /// `listings_fts` rows whose text holds every term and which carry every label (kind,
    /// value), in a query that joins it.
    pub fn ranked_matches<QS>(terms: &[String], labels: &[(LabelKind, &str)]) -> Condition<QS> {
        Box::new(sql::<Bool>("listings_fts MATCH ").bind::<Text, _>(fts5_query(terms, labels)))
    }

    /// The kinds of label a search can be narrowed by, as the full-text index spells them.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum LabelKind {
        Category,
        Tag,
    }

    /// A category or tag as one word of `search_labels`: `c` or `t` and the value's UTF-8
    /// bytes in hex (the migrations' backfill spells it the same way), letters and digits
    /// that no tokenizer splits or folds, and that cannot be confused with the text's
    /// words, which are searched in their own column.
    pub fn label_token(kind: LabelKind, value: &str) -> String {
        let prefix = match kind {
            LabelKind::Category => 'c',
            LabelKind::Tag => 't',
        };
        format!("{prefix}{}", hex::encode(value))
    }

    /// A listing's labels as the words of its `search_labels`.
    pub fn labels_document<'a>(labels: impl IntoIterator<Item = (LabelKind, &'a str)>) -> String {
        labels
            .into_iter()
            .map(|(kind, value)| label_token(kind, value))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// How well a listing matches, larger is better, in a query that joins `listings_fts`.
    pub fn joined_rank<QS>() -> Rank<QS> {
        // The labels' column weighs nothing in the score: a filter, not a match. Its words
        // still count toward the row's length, which bm25 normalizes by: a listing with many
        // labels against a short text ranks a little lower than one with few.
        Box::new(sql::<Double>("-bm25(listings_fts, 1.0, 0.0)"))
    }

    /// How well a listing matches, larger is better (for ordering by relevance), where
    /// [`ranks_through_join`] does not hold.
    pub fn rank<QS>(terms: &[String]) -> Rank<QS> {
        Box::new(
            sql::<Double>("ts_rank(listings.search_vector, plainto_tsquery('simple', ")
                .bind::<Text, _>(terms.join(" "))
                .sql("))::float8"),
        )
    }

    /// Each term quoted, so FTS5 reads them as words, searched in the listing's text; each
    /// label as its token in `search_labels`; all required.
    fn fts5_query(terms: &[String], labels: &[(LabelKind, &str)]) -> String {
        terms
            .iter()
            .map(|t| format!("search_document : \"{t}\""))
            .chain(
                labels.iter().map(|(kind, value)| {
                    format!("search_labels : \"{}\"", label_token(*kind, value))
                }),
            )
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Splits free text into lower-case words of letters and digits, at most 16. A word made
    /// only of combining marks is no word: SQLite's tokenizer folds it away, and PostgreSQL
    /// would require it, so both leave it out.
    pub fn terms(text: &str) -> Vec<String> {
        use unicode_normalization::char::is_combining_mark;
        text.split(|c: char| !c.is_alphanumeric())
            .filter(|t| t.chars().any(|c| !is_combining_mark(c)))
            .map(str::to_lowercase)
            .take(16)
            .collect()
    }
}

/// Usage events: the batch insert that skips ids already stored, and keeps the monthly sums
/// (`usage_monthly`) of what it inserted (per backend, since `ON CONFLICT` does not compile
/// through a `MultiConnection`).
pub mod usage {
    use std::collections::{BTreeMap, HashSet};

    use diesel::prelude::*;
    use diesel::upsert::excluded;

    use crate::models::UsageEvent;
    use crate::schema::{usage_events, usage_monthly};
    use crate::DbConnection;

    /// Inserts the events whose (sender, id) is new, in multi-row statements, and adds them
    /// to their months' sums; returns the ids it inserted (the others were stored before,
    /// or by a concurrent batch that committed first). Call it inside a transaction: the
    /// sums must commit with the events.
    pub fn insert_new(conn: &mut DbConnection, events: &[UsageEvent]) -> QueryResult<Vec<String>> {
        let mut inserted = Vec::with_capacity(events.len());
        // 8 columns a row: 500 rows stay far below both bind-parameter limits.
        for chunk in events.chunks(500) {
            inserted.extend(match conn {
                DbConnection::Postgresql(c) => diesel::insert_into(usage_events::table)
                    .values(chunk)
                    .on_conflict((usage_events::organization_id, usage_events::id))
                    .do_nothing()
                    .returning(usage_events::id)
                    .get_results::<String>(c)?,
                // The only uniqueness rule of the table is (sender, id), so ignoring a
                // conflict here skips exactly the events already stored; SQLite returns
                // only the rows it inserted.
                DbConnection::Sqlite(c) => diesel::insert_or_ignore_into(usage_events::table)
                    .values(chunk)
                    .returning(usage_events::id)
                    .get_results::<String>(c)?,
            });
        }
        // After every event: the sums' row locks come last, so a batch never waits for
        // another's events while holding a sum the other one needs.
        add_to_monthly_sums(conn, events, &inserted)?;
        Ok(inserted)
    }

    #[derive(Insertable)]
    #[diesel(table_name = usage_monthly, treat_none_as_default_value = false)]
    struct MonthlySum<'a> {
        month: &'a str,
        subscription_id: &'a str,
        metric: &'a str,
        quantity: i64,
    }

    /// Adds the events that were inserted to their (month, subscription, metric) sums, in
    /// key order, so concurrent batches lock shared sums in one order (no deadlock).
    fn add_to_monthly_sums(
        conn: &mut DbConnection,
        events: &[UsageEvent],
        inserted: &[String],
    ) -> QueryResult<()> {
        let inserted: HashSet<&str> = inserted.iter().map(String::as_str).collect();
        let mut sums: BTreeMap<(&str, &str, &str), i64> = BTreeMap::new();
        for e in events.iter().filter(|e| inserted.contains(e.id.as_str())) {
            // `day` is the event's UTC day, YYYY-MM-DD.
            let month = e.day.get(..7).unwrap_or(&e.day);
            *sums
                .entry((month, &e.subscription_id, &e.metric))
                .or_default() += e.quantity;
        }
        let rows: Vec<MonthlySum<'_>> = sums
            .into_iter()
            .map(|((month, subscription_id, metric), quantity)| MonthlySum {
                month,
                subscription_id,
                metric,
                quantity,
            })
            .collect();
        for chunk in rows.chunks(500) {
            let upsert = diesel::insert_into(usage_monthly::table)
                .values(chunk)
                .on_conflict((
                    usage_monthly::month,
                    usage_monthly::subscription_id,
                    usage_monthly::metric,
                ))
                .do_update()
                .set(
                    usage_monthly::quantity
                        .eq(usage_monthly::quantity + excluded(usage_monthly::quantity)),
                );
            match conn {
                DbConnection::Postgresql(c) => upsert.execute(c)?,
                DbConnection::Sqlite(c) => upsert.execute(c)?,
            };
        }
        Ok(())
    }
}

/// Multi-row inserts, sent through the connection's own backend (diesel's
/// `MultiConnection` has no batch insert).
pub mod batch {
    use diesel::prelude::*;

    use crate::models::{Invoice, InvoiceLine};
    use crate::schema::{invoice_lines, invoices};
    use crate::DbConnection;

    /// Inserts `rows` into `table`, 500 rows a statement: with 19 columns a row or fewer,
    /// below both databases' bind-parameter limits.
    macro_rules! insert_in_chunks {
        ($conn:expr, $table:expr, $rows:expr) => {{
            let mut inserted = 0;
            for chunk in $rows.chunks(500) {
                let insert = diesel::insert_into($table).values(chunk);
                inserted += match &mut *$conn {
                    DbConnection::Postgresql(c) => insert.execute(c)?,
                    DbConnection::Sqlite(c) => insert.execute(c)?,
                };
            }
            Ok(inserted)
        }};
    }

    pub fn invoices(conn: &mut DbConnection, rows: &[Invoice]) -> QueryResult<usize> {
        insert_in_chunks!(conn, invoices::table, rows)
    }

    pub fn invoice_lines(conn: &mut DbConnection, rows: &[InvoiceLine]) -> QueryResult<usize> {
        insert_in_chunks!(conn, invoice_lines::table, rows)
    }
}

/// Claiming work so several instances never process the same row: PostgreSQL locks the
/// claimed rows and skips rows another worker holds (`FOR UPDATE SKIP LOCKED`); SQLite has
/// one writer at a time, so its claim is the transaction itself.
pub mod claim {
    use chrono::NaiveDateTime;
    use diesel::prelude::*;

    use crate::schema::subscriptions;
    use crate::DbConnection;

    /// Ids of subscriptions in `status` whose `term_end`, current period's end or
    /// `cancel_at` (a cancellation during a trial) has passed, or for pending requests
    /// `request_expires_at`, oldest first. Call inside a transaction.
    pub fn due_subscriptions(
        conn: &mut DbConnection,
        status: &str,
        now: NaiveDateTime,
        limit: i64,
    ) -> QueryResult<Vec<String>> {
        macro_rules! due {
            () => {
                subscriptions::table
                    .filter(subscriptions::status.eq(status))
                    .filter(
                        subscriptions::term_end
                            .le(now)
                            .or(subscriptions::request_expires_at.le(now))
                            .or(subscriptions::current_period_end.le(now))
                            .or(subscriptions::cancel_at.le(now)),
                    )
                    .order(subscriptions::id.asc())
                    .select(subscriptions::id)
                    .limit(limit)
            };
        }
        match conn {
            DbConnection::Postgresql(c) => due!().for_update().skip_locked().load(c),
            DbConnection::Sqlite(c) => due!().load(c),
        }
    }
}

/// Settings for a transaction that writes derived data in bulk (a billing run's drafts) on
/// PostgreSQL; SQLite needs neither.
///
/// - Its commit returns before its WAL record reaches the disk (`synchronous_commit = off`;
///   SQLite in WAL mode with `synchronous = NORMAL` already commits without a sync). For work
///   that a later ordinary commit on the same server makes durable with it: that commit
///   flushes the WAL up to itself, so nothing acknowledged after it can be lost.
/// - Index scans are preferred (`enable_seqscan = off`). The foreign-key checks of rows
///   inserted here are planned once per connection, from the size of the referenced table
///   at that moment; a run that starts with few invoices would keep a plan that scans
///   `invoices` for every line it inserts, so its time would grow with the square of its
///   size. (A generic plan PostgreSQL makes for a statement inside such a transaction keeps
///   the preference afterwards on that connection: only the billing run's own statements run
///   there often enough to get one.)
pub fn bulk_derived_writes(conn: &mut DbConnection) -> diesel::QueryResult<()> {
    use diesel::connection::SimpleConnection;
    match conn {
        DbConnection::Postgresql(c) => {
            c.batch_execute("SET LOCAL synchronous_commit TO OFF; SET LOCAL enable_seqscan TO OFF")
        }
        DbConnection::Sqlite(_) => Ok(()),
    }
}

/// Makes the current transaction's commit wait for the disk again, after
/// `bulk_derived_writes`: for a bulk transaction that also writes records nothing rebuilds
/// (a billing run's credit notes).
pub fn durable_commit(conn: &mut DbConnection) -> diesel::QueryResult<()> {
    use diesel::connection::SimpleConnection;
    match conn {
        DbConnection::Postgresql(c) => c.batch_execute("SET LOCAL synchronous_commit TO ON"),
        DbConnection::Sqlite(_) => Ok(()),
    }
}

/// Row locks for the few writes that must queue behind each other on PostgreSQL (SQLite
/// writers queue anyway).
pub mod locks {
    use diesel::prelude::*;

    use crate::schema::{invoices, listings, offers, organizations, subscriptions};
    use crate::DbConnection;

    /// Locks an organization row until the transaction ends (PostgreSQL; SQLite writers take
    /// turns anyway), so changes to its members, keys and webhook endpoints go one after the
    /// other and each sees the last.
    pub fn organization(conn: &mut DbConnection, id: &str) -> QueryResult<()> {
        match conn {
            DbConnection::Postgresql(c) => organizations::table
                .find(id)
                .select(organizations::id)
                .for_no_key_update()
                .first::<String>(c)
                .map(|_| ()),
            DbConnection::Sqlite(_) => Ok(()),
        }
    }

    /// Locks a subscription row until the transaction ends (PostgreSQL; SQLite writers take
    /// turns anyway), so two answers to one request, or an answer and a withdrawal, go one
    /// after the other and the second sees the first.
    pub fn subscription(conn: &mut DbConnection, id: &str) -> QueryResult<()> {
        match conn {
            // Not FOR UPDATE: rows that reference the subscription (lines, events, grants)
            // are still inserted meanwhile.
            DbConnection::Postgresql(c) => subscriptions::table
                .find(id)
                .select(subscriptions::id)
                .for_no_key_update()
                .first::<String>(c)
                .map(|_| ()),
            DbConnection::Sqlite(_) => Ok(()),
        }
    }

    /// An offer's state under a share lock held until the transaction ends (PostgreSQL): an
    /// archive waits for the transaction, or the transaction sees the offer archived.
    pub fn offer_state(conn: &mut DbConnection, id: &str) -> QueryResult<String> {
        match conn {
            DbConnection::Postgresql(c) => offers::table
                .find(id)
                .select(offers::state)
                .for_share()
                .first(c),
            DbConnection::Sqlite(c) => offers::table.find(id).select(offers::state).first(c),
        }
    }

    /// A listing's state, read under a share lock held until the transaction ends
    /// (PostgreSQL; SQLite writers take turns anyway): an archive waits for the
    /// transaction, or the transaction sees the listing archived.
    pub fn listing_state(conn: &mut DbConnection, id: &str) -> QueryResult<String> {
        match conn {
            DbConnection::Postgresql(c) => listings::table
                .find(id)
                .select(listings::state)
                .for_share()
                .first(c),
            DbConnection::Sqlite(c) => listings::table.find(id).select(listings::state).first(c),
        }
    }

    /// Locks an invoice row until the transaction ends (`NotFound` if it is gone).
    pub fn invoice(conn: &mut DbConnection, id: &str) -> QueryResult<()> {
        match conn {
            DbConnection::Postgresql(c) => invoices::table
                .find(id)
                .select(invoices::id)
                .for_update()
                .first::<String>(c)
                .map(|_| ()),
            DbConnection::Sqlite(_) => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use diesel::sql_types::{BigInt, Text};

    #[test]
    fn search_terms_are_words_of_letters_and_digits() {
        assert_eq!(
            super::search::terms("Tide-tables, 2026! \u{345}\u{345} KIWI cafe\u{301}"),
            ["tide", "tables", "2026", "kiwi", "cafe"]
        );
        assert!(super::search::terms("\u{300}\u{20DD} -- \u{64B}\u{64B} \u{5B0}").is_empty());
        assert_eq!(super::search::terms(&"w ".repeat(40)).len(), 16);
    }
    use diesel::{sql_query, QueryableByName, RunQueryDsl};

    use super::{ConnectionManager, FileReads};

    #[derive(QueryableByName)]
    struct CompileOption {
        #[diesel(sql_type = Text)]
        compile_options: String,
    }

    /// `.cargo/config.toml` builds SQLite without its process-wide page-cache and
    /// memory-statistics locks, which concurrent catalog readers queued on.
    #[test]
    fn bundled_sqlite_is_built_without_process_wide_locks() {
        let mut conn = ConnectionManager::new("sqlite://:memory:")
            .establish()
            .expect("an in-memory database");
        let options: Vec<String> = sql_query("PRAGMA compile_options")
            .load::<CompileOption>(&mut conn)
            .expect("compile options")
            .into_iter()
            .map(|o| o.compile_options)
            .collect();
        assert!(
            options.contains(&"DEFAULT_MEMSTATUS=0".to_string()),
            "{options:?}"
        );
        assert!(
            !options.contains(&"ENABLE_MEMORY_MANAGEMENT".to_string()),
            "{options:?}"
        );
    }

    #[derive(QueryableByName)]
    struct MmapSize {
        #[diesel(sql_type = BigInt)]
        mmap_size: i64,
    }

    /// Connections asked to map the file do; others copy pages, SQLite's default.
    #[test]
    fn sqlite_connections_map_the_file_when_asked() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let path = std::env::temp_dir().join(format!(
            "marketplace-mmap-{}-{nanos}.sqlite3",
            std::process::id()
        ));
        let mmap_size = |reads: FileReads| {
            let mut conn = ConnectionManager::new(&format!("sqlite://{}", path.display()))
                .with_file_reads(reads)
                .establish()
                .expect("a database file");
            sql_query("PRAGMA mmap_size")
                .load::<MmapSize>(&mut conn)
                .expect("the mmap size")
                .pop()
                .map(|m| m.mmap_size)
        };
        let (mapped, copied) = (mmap_size(FileReads::Mapped), mmap_size(FileReads::Copied));
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
        assert!(mapped.is_some_and(|s| s >= 1 << 30), "mapped: {mapped:?}");
        assert_eq!(copied, Some(0));
    }
}
