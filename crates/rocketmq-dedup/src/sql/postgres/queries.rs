//! The PostgreSQL statements the store and the inbox share: key locks, reading a batch's
//! rows, writing their last states, purging, and what an error code means.

use sqlx::postgres::{PgConnection, PgDatabaseError, Postgres};
use sqlx::{AssertSqlSafe, QueryBuilder, Row as _};

use crate::sql::decide::{Row, Write, CONSUMED, CONSUMING};
use crate::sql::table::{BatchColumns, KeyColumns, Table};
use crate::sql::Failure;

/// Now, in milliseconds since the epoch, by the database's clock (the wall clock, not the
/// transaction's start).
pub(crate) const NOW_MS: &str = "(extract(epoch from clock_timestamp()) * 1000)::bigint";

const KEY_COLUMNS: &str = "application_name, topic, tag, msg_uniq_key";

/// Takes the batch's key locks (transaction-scoped advisory locks, in id order): PostgreSQL
/// has no gap locks, so these order the transactions that want the same keys, rows or not.
pub(crate) async fn lock_keys(
    conn: &mut PgConnection,
    batch: &BatchColumns,
) -> Result<(), sqlx::Error> {
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

/// The rows of the batch's distinct keys (absent ones as [`Row::Absent`]), indexed like the
/// batch. The caller holds the keys' locks.
pub(crate) async fn select_rows(
    conn: &mut PgConnection,
    table: &Table,
    batch: &BatchColumns,
) -> Result<Vec<Row>, sqlx::Error> {
    let mut query = QueryBuilder::<Postgres>::new(format!(
        "SELECT {KEY_COLUMNS}, status, owner_token, expire_time > {NOW_MS} AS live FROM {} WHERE ({KEY_COLUMNS}) IN",
        table.name()
    ));
    query.push_tuples(batch.distinct(), |mut tuple, (_, key)| {
        push_key(&mut tuple, key);
    });
    let mut found = vec![Row::Absent; batch.columns.len()];
    for row in query.build().fetch_all(&mut *conn).await? {
        let key = KeyColumns {
            application_name: row.try_get(0)?,
            topic: row.try_get(1)?,
            tag: row.try_get(2)?,
            msg_uniq_key: row.try_get(3)?,
        };
        let status: String = row.try_get(4)?;
        if let Some(i) = batch.index_of(&key) {
            found[i] = Row::read(&status, row.try_get(5)?, row.try_get(6)?);
        }
    }
    Ok(found)
}

/// Writes the last state of each written key: one upsert, one delete.
pub(crate) async fn write(
    conn: &mut PgConnection,
    table: &Table,
    batch: &BatchColumns,
    writes: &[(usize, Write)],
) -> Result<(), sqlx::Error> {
    let puts: Vec<_> = writes
        .iter()
        .filter_map(|&(i, w)| match w {
            Write::Put {
                consumed,
                owner,
                ttl,
            } => Some((&batch.columns[i], consumed, owner, ttl)),
            Write::Delete => None,
        })
        .collect();
    if !puts.is_empty() {
        let mut query = QueryBuilder::<Postgres>::new(format!(
            "INSERT INTO {} ({KEY_COLUMNS}, status, owner_token, expire_time) ",
            table.name()
        ));
        query.push_values(puts, |mut row, (key, consumed, owner, ttl)| {
            push_key(&mut row, key);
            row.push_bind(if consumed { CONSUMED } else { CONSUMING });
            row.push_bind(owner);
            row.push(NOW_MS)
                .push_unseparated(" + ")
                .push_bind_unseparated(ttl_ms(ttl));
        });
        query.push(format!(
            " ON CONFLICT ({KEY_COLUMNS}) DO UPDATE SET status = EXCLUDED.status, owner_token = EXCLUDED.owner_token, expire_time = EXCLUDED.expire_time"
        ));
        query.build().execute(&mut *conn).await?;
    }
    let deletes: Vec<_> = writes
        .iter()
        .filter(|(_, w)| *w == Write::Delete)
        .map(|&(i, _)| &batch.columns[i])
        .collect();
    if !deletes.is_empty() {
        let mut query = QueryBuilder::<Postgres>::new(format!(
            "DELETE FROM {} WHERE ({KEY_COLUMNS}) IN",
            table.name()
        ));
        query.push_tuples(deletes, |mut tuple, key| push_key(&mut tuple, key));
        query.build().execute(&mut *conn).await?;
    }
    Ok(())
}

/// Starts the purge job of `table` on `pool`.
pub(crate) fn start_purger(
    pool: &sqlx::PgPool,
    table: &Table,
    options: crate::sql::PurgeOptions,
) -> Option<crate::sql::Purger> {
    let (pool, owned) = (pool.clone(), table.clone());
    let delete = move || {
        let (pool, table) = (pool.clone(), owned.clone());
        async move { purge(&pool, &table, options.batch).await }
    };
    crate::sql::Purger::start(table.name(), options, delete)
}

/// Deletes up to `batch` expired rows; answers how many.
pub(crate) async fn purge(
    pool: &sqlx::PgPool,
    table: &Table,
    batch: u32,
) -> Result<u64, sqlx::Error> {
    let name = table.name();
    let sql = format!(
        "DELETE FROM {name} WHERE ctid = ANY(ARRAY(SELECT ctid FROM {name} WHERE expire_time < {NOW_MS} LIMIT {batch}))"
    );
    Ok(sqlx::query(AssertSqlSafe(sql))
        .execute(pool)
        .await?
        .rows_affected())
}

fn push_key(
    tuple: &mut sqlx::query_builder::Separated<'_, Postgres, &'static str>,
    key: &KeyColumns,
) {
    tuple.push_bind(key.application_name.clone());
    tuple.push_bind(key.topic.clone());
    tuple.push_bind(key.tag.clone());
    tuple.push_bind(key.msg_uniq_key.clone());
}

/// A TTL in milliseconds, as stores keep it (see [`crate::store::clamp_ttl`]).
pub(crate) fn ttl_ms(ttl: std::time::Duration) -> i64 {
    crate::store::clamp_ttl(ttl).as_millis() as i64
}

/// What a PostgreSQL error means to the store.
pub(crate) fn classify(err: &sqlx::Error) -> Failure {
    let Some(db) = err.as_database_error() else {
        return Failure::Other;
    };
    if db.is_unique_violation() {
        return Failure::Duplicate;
    }
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

/// An operator's read of one row: status, owner token and milliseconds left, while live.
pub(crate) async fn admin_inspect(
    pool: &sqlx::PgPool,
    table: &Table,
    key: &KeyColumns,
) -> Result<Option<crate::sql::dialect::AdminRow>, sqlx::Error> {
    let sql = format!(
        "SELECT status, owner_token, (expire_time - {NOW_MS})::bigint FROM {} WHERE application_name = $1 AND topic = $2 AND tag = $3 AND msg_uniq_key = $4 AND expire_time >= {NOW_MS}",
        table.name()
    );
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(key.application_name.clone())
        .bind(key.topic.clone())
        .bind(key.tag.clone())
        .bind(key.msg_uniq_key.clone())
        .fetch_optional(pool)
        .await?;
    row.map(|row| Ok((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?)))
        .transpose()
}

/// Deletes one row, whatever its state; answers the rows deleted.
pub(crate) async fn admin_forget(
    pool: &sqlx::PgPool,
    table: &Table,
    key: &KeyColumns,
) -> Result<u64, sqlx::Error> {
    let sql = format!("DELETE FROM {} WHERE application_name = $1 AND topic = $2 AND tag = $3 AND msg_uniq_key = $4", table.name());
    Ok(sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(key.application_name.clone())
        .bind(key.topic.clone())
        .bind(key.tag.clone())
        .bind(key.msg_uniq_key.clone())
        .execute(pool)
        .await?
        .rows_affected())
}

/// Rows of one application name: live CONSUMING, live CONSUMED, expired.
pub(crate) async fn admin_counts(
    pool: &sqlx::PgPool,
    table: &Table,
    namespace: &[u8],
    topic_and_tag: Option<(&[u8], &[u8])>,
) -> Result<(i64, i64, i64), sqlx::Error> {
    let mut sql = format!(
        "SELECT COALESCE(SUM(CASE WHEN status = 'CONSUMING' AND expire_time >= {NOW_MS} THEN 1 ELSE 0 END), 0)::bigint, COALESCE(SUM(CASE WHEN status = 'CONSUMED' AND expire_time >= {NOW_MS} THEN 1 ELSE 0 END), 0)::bigint, COALESCE(SUM(CASE WHEN expire_time < {NOW_MS} THEN 1 ELSE 0 END), 0)::bigint FROM {} WHERE application_name = $1",
        table.name()
    );
    if topic_and_tag.is_some() {
        sql.push_str(" AND topic = $2 AND tag = $3");
    }
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(namespace.to_vec());
    if let Some((topic, tag)) = topic_and_tag {
        query = query.bind(topic.to_vec()).bind(tag.to_vec());
    }
    let row = query.fetch_one(pool).await?;
    Ok((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?))
}
