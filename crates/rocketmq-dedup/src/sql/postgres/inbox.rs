//! The inbox claim in PostgreSQL: take the key's advisory lock (waiting at most the lock
//! wait), then insert the record; a committed one is read (processed, or expired and taken
//! over).

use std::time::{Duration, Instant};

use sqlx::postgres::{PgArguments, Postgres};
use sqlx::query::Query;
use sqlx::{AssertSqlSafe, Row as _, Transaction};

use super::queries::{self, NOW_MS};
use crate::inbox::InboxClaim;
use crate::record_key::RecordKey;
use crate::sql::decide::{owner, Row, CONSUMED};
use crate::sql::dialect::InboxStatements;
use crate::sql::table::{lock_id, KeyColumns, Table};
use crate::store::OwnerToken;

/// The claim's statements.
pub(super) fn statements(table: &Table, lock_wait: Duration) -> InboxStatements {
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

/// Claims `key` in `tx`; see [`crate::inbox::Inbox::claim`].
pub(super) async fn claim(
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
    let ttl = queries::ttl_ms(ttl);
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

fn bind_key<'q>(
    query: Query<'q, Postgres, PgArguments>,
    key: &'q KeyColumns,
) -> Query<'q, Postgres, PgArguments> {
    query
        .bind(key.application_name.as_slice())
        .bind(key.topic.as_slice())
        .bind(key.tag.as_slice())
        .bind(key.msg_uniq_key.as_slice())
}
