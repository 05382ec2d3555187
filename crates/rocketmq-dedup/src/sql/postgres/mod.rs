//! PostgreSQL (feature `postgres`): [`PostgresStore`], a [`DedupStore`](crate::DedupStore) in
//! the seed's `t_rocketmq_dedup` table, and [`PostgresInbox`], the transactional inbox.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use rocketmq_dedup::sql::postgres::PostgresStore;
//!
//! let store = PostgresStore::builder("postgres://app:secret@127.0.0.1:5432/shop")
//!     .connect()
//!     .await?;
//! store.migrate().await?; // CREATE TABLE IF NOT EXISTS t_rocketmq_dedup (…)
//! # Ok(()) }
//! ```
//!
//! PostgreSQL has no gap locks, so a transaction locks its keys with transaction-scoped
//! advisory locks (ids from the record keys' fingerprints, taken in id order), whether their
//! rows exist or not. Expiry uses `clock_timestamp()`, not the transaction's start.

use std::time::{Duration, Instant};

use sqlx::postgres::{PgConnection, PgDatabaseError, PgPool, Postgres};
use sqlx::{AssertSqlSafe, Row as _, Transaction};

use super::database::{bind_key, ttl_ms, Dialect, InboxStatements};
use super::decide::{owner, Row, CONSUMED};
use super::schema::{self, Column, FixSyntax};
use super::table::{lock_id, BatchColumns, KeyColumns, Table, TableFixes};
use super::Failure;
use crate::inbox::InboxClaim;
use crate::record_key::RecordKey;
use crate::store::OwnerToken;

/// The dedup store in PostgreSQL; see [`SqlStore`](super::SqlStore).
pub type PostgresStore = super::SqlStore<Postgres>;
/// The transactional inbox in PostgreSQL; see [`SqlInbox`](super::SqlInbox).
///
/// The claim takes the key's advisory lock (`pg_try_advisory_xact_lock`, tried until the lock
/// wait runs out, so nothing is set on the transaction the handler goes on using), then
/// inserts the record.
pub type PostgresInbox = super::SqlInbox<Postgres>;

impl Dialect for Postgres {
    const STORE_KIND: &'static str = "postgres";
    const INBOX_KIND: &'static str = "postgres-inbox";
    /// The schema, as shipped in `migrations/postgres`.
    const MIGRATION: &'static str =
        include_str!("../../../migrations/postgres/20261124000000_t_rocketmq_dedup.sql");
    const NOW_MS: &'static str = NOW_MS;
    const INTEGER: &'static str = "BIGINT";
    const UPSERT: &'static str =
        " ON CONFLICT (application_name, topic, tag, msg_uniq_key) DO UPDATE SET status = EXCLUDED.status, owner_token = EXCLUDED.owner_token, expire_time = EXCLUDED.expire_time";
    /// The keys are locked by [`lock_keys`](Dialect::lock_keys) instead.
    const LOCK_READ_ROWS: &'static str = "";

    /// Takes the batch's key locks (transaction-scoped advisory locks, in id order): PostgreSQL
    /// has no gap locks, so these order the transactions that want the same keys, rows or not.
    async fn lock_keys(conn: &mut PgConnection, batch: &BatchColumns) -> Result<(), sqlx::Error> {
        let mut ids = batch.lock_ids.clone();
        ids.sort_unstable();
        ids.dedup();
        sqlx::query(
            "SELECT pg_advisory_xact_lock(id) FROM (SELECT unnest($1::int8[]) AS id ORDER BY 1) AS ids",
        )
        .bind(ids)
        .execute(&mut *conn)
        .await?;
        Ok(())
    }

    /// The table's columns from `information_schema` (an unquoted name is stored in lower
    /// case); the purge job's index is not looked for.
    async fn table_fixes(pool: &PgPool, table: &Table) -> Result<TableFixes, sqlx::Error> {
        let rows: Vec<(String, String, Option<i32>, Option<String>)> = sqlx::query_as(
            "SELECT column_name::text, data_type::text, character_maximum_length::int4, \
             collation_name::text FROM information_schema.columns \
             WHERE table_schema = current_schema() AND table_name = $1",
        )
        .bind(table.name().to_ascii_lowercase())
        .fetch_all(pool)
        .await?;
        let columns: Vec<Column> = rows
            .into_iter()
            .map(|(name, data_type, length, collation)| Column {
                binary: data_type == "bytea",
                name,
                length: length.map(i64::from),
                collation,
            })
            .collect();
        let syntax = FixSyntax {
            key_column: |name| {
                format!("ALTER COLUMN {name} TYPE BYTEA USING convert_to({name}::text, 'UTF8')")
            },
            owner_token: "ADD COLUMN owner_token BIGINT NULL",
            expire_index: None,
        };
        Ok(schema::fixes(&columns, &syntax))
    }

    fn purge_statement(table: &Table, batch: u32) -> String {
        let name = table.name();
        format!(
            "DELETE FROM {name} WHERE ctid = ANY(ARRAY(SELECT ctid FROM {name} WHERE expire_time < {NOW_MS} LIMIT {batch}))"
        )
    }

    fn rows_affected(result: &sqlx::postgres::PgQueryResult) -> u64 {
        result.rows_affected()
    }

    /// What a PostgreSQL error means to the store, by its SQLSTATE.
    fn classify_database(db: &dyn sqlx::error::DatabaseError) -> Failure {
        match db.try_downcast_ref::<PgDatabaseError>().map(|e| e.code()) {
            // deadlock_detected, serialization_failure
            Some("40P01") | Some("40001") => Failure::Deadlock,
            // lock_not_available
            Some("55P03") => Failure::LockTimeout,
            // read_only_sql_transaction
            Some("25006") => Failure::ReadOnly,
            // invalid_password, invalid_authorization_specification
            Some("28P01") | Some("28000") => Failure::AuthFailed,
            _ => Failure::Other,
        }
    }

    /// The claim's statements (no server round trip: the lock wait is the claim's own loop).
    async fn prepare_inbox(
        _pool: &PgPool,
        table: &Table,
        lock_wait: Duration,
    ) -> Result<InboxStatements, sqlx::Error> {
        Ok(statements(table, lock_wait))
    }

    async fn inbox_claim(
        statements: &InboxStatements,
        tx: &mut Transaction<'static, Postgres>,
        key: &RecordKey,
        token: OwnerToken,
        ttl: Duration,
    ) -> Result<InboxClaim, sqlx::Error> {
        if !lock(tx, lock_id(key), statements.lock_wait).await? {
            return Ok(InboxClaim::InFlight);
        }
        let columns = KeyColumns::of(key);
        let ttl = ttl_ms(ttl);
        let insert = bind_key(
            sqlx::query(AssertSqlSafe(statements.insert.as_str())),
            &columns,
        );
        let inserted = insert
            .bind(owner(token))
            .bind(ttl)
            .execute(&mut **tx)
            .await?;
        if inserted.rows_affected() == 1 {
            return Ok(InboxClaim::Claimed);
        }
        // A committed record: processed, or expired (then it is ours to take over).
        let select = bind_key(
            sqlx::query(AssertSqlSafe(statements.select.as_str())),
            &columns,
        );
        let Some(row) = select.fetch_optional(&mut **tx).await? else {
            return Ok(InboxClaim::InFlight);
        };
        match Row::read(
            &row.try_get::<String, _>(0)?,
            row.try_get(1)?,
            row.try_get(2)?,
        ) {
            Row::Consumed => Ok(InboxClaim::Consumed),
            Row::Consuming(_) => Ok(InboxClaim::InFlight),
            Row::Absent => {
                let update = bind_key(
                    sqlx::query(AssertSqlSafe(statements.take_over.as_str())),
                    &columns,
                );
                update
                    .bind(owner(token))
                    .bind(ttl)
                    .execute(&mut **tx)
                    .await?;
                Ok(InboxClaim::Claimed)
            }
        }
    }
}

/// Now, in milliseconds since the epoch, by the database's clock (the wall clock, not the
/// transaction's start).
const NOW_MS: &str = "(extract(epoch from clock_timestamp()) * 1000)::bigint";

/// The claim's statements.
fn statements(table: &Table, lock_wait: Duration) -> InboxStatements {
    let name = table.name();
    let key = "application_name = $1 AND topic = $2 AND tag = $3 AND msg_uniq_key = $4";
    InboxStatements {
        insert: format!(
            "INSERT INTO {name} (application_name, topic, tag, msg_uniq_key, status, owner_token, expire_time) VALUES ($1, $2, $3, $4, '{CONSUMED}', $5, {NOW_MS} + $6) ON CONFLICT DO NOTHING"
        ),
        select: format!(
            "SELECT status, owner_token, expire_time > {NOW_MS} FROM {name} WHERE {key} FOR UPDATE"
        ),
        take_over: format!(
            "UPDATE {name} SET status = '{CONSUMED}', owner_token = $5, expire_time = {NOW_MS} + $6 WHERE {key}"
        ),
        lock_wait,
    }
}

/// Takes the advisory lock `id` for the transaction, trying until `wait` runs out; answers
/// whether it got it.
async fn lock(
    tx: &mut Transaction<'static, Postgres>,
    id: i64,
    wait: Duration,
) -> Result<bool, sqlx::Error> {
    let deadline = Instant::now() + wait;
    let mut pause = Duration::from_millis(5);
    loop {
        let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
            .bind(id)
            .fetch_one(&mut **tx)
            .await?;
        if got {
            return Ok(true);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(false);
        }
        tokio::time::sleep(pause.min(left)).await;
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_upsert_conflicts_on_the_key_columns() {
        let conflict = format!("ON CONFLICT ({})", crate::sql::database::KEY_COLUMNS);
        assert!(<Postgres as Dialect>::UPSERT.contains(&conflict));
    }
}
