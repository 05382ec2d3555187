//! The MySQL / MariaDB statements the store and the inbox share: reading a batch's rows,
//! writing their last states, purging, and what an error number means.

use sqlx::mysql::{MySql, MySqlConnection, MySqlDatabaseError};
use sqlx::{QueryBuilder, Row as _};

use crate::sql::decide::{Row, Write, CONSUMED, CONSUMING};
use crate::sql::table::{BatchColumns, KeyColumns, Table};
use crate::sql::Failure;

/// Now, in milliseconds since the epoch, by the database's clock.
pub(crate) const NOW_MS: &str = "CAST(ROUND(UNIX_TIMESTAMP(NOW(3)) * 1000) AS SIGNED)";

const KEY_COLUMNS: &str = "application_name, topic, tag, msg_uniq_key";

/// The rows of the batch's distinct keys (absent ones as [`Row::Absent`]), indexed like the
/// batch; with `lock`, `FOR UPDATE` (rows and, for absent keys, their gaps).
pub(crate) async fn select_rows(
    conn: &mut MySqlConnection,
    table: &Table,
    batch: &BatchColumns,
    lock: bool,
) -> Result<Vec<Row>, sqlx::Error> {
    let mut query = QueryBuilder::<MySql>::new(format!(
        "SELECT {KEY_COLUMNS}, status, owner_token, CAST(expire_time > {NOW_MS} AS SIGNED) AS live FROM {} WHERE ({KEY_COLUMNS}) IN",
        table.name()
    ));
    query.push_tuples(batch.distinct(), |mut tuple, (_, key)| {
        push_key(&mut tuple, key);
    });
    if lock {
        query.push(" FOR UPDATE");
    }
    let mut found = vec![Row::Absent; batch.columns.len()];
    for row in query.build().fetch_all(&mut *conn).await? {
        let key = KeyColumns {
            application_name: row.try_get(0)?,
            topic: row.try_get(1)?,
            tag: row.try_get(2)?,
            msg_uniq_key: row.try_get(3)?,
        };
        let status: String = row.try_get(4)?;
        let owner: Option<i64> = row.try_get(5)?;
        let live: i64 = row.try_get(6)?;
        if let Some(i) = batch.index_of(&key) {
            found[i] = Row::read(&status, owner, live != 0);
        }
    }
    Ok(found)
}

/// Writes the last state of each written key: one upsert, one delete.
pub(crate) async fn write(
    conn: &mut MySqlConnection,
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
        let mut query = QueryBuilder::<MySql>::new(format!(
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
        query.push(
            " ON DUPLICATE KEY UPDATE status = VALUES(status), owner_token = VALUES(owner_token), expire_time = VALUES(expire_time)",
        );
        query.build().execute(&mut *conn).await?;
    }
    let deletes: Vec<_> = writes
        .iter()
        .filter(|(_, w)| *w == Write::Delete)
        .map(|&(i, _)| &batch.columns[i])
        .collect();
    if !deletes.is_empty() {
        let mut query = QueryBuilder::<MySql>::new(format!(
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
    pool: &sqlx::MySqlPool,
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
    pool: &sqlx::MySqlPool,
    table: &Table,
    batch: u32,
) -> Result<u64, sqlx::Error> {
    let sql = format!(
        "DELETE FROM {} WHERE expire_time < {NOW_MS} LIMIT {batch}",
        table.name()
    );
    Ok(sqlx::query(sqlx::AssertSqlSafe(sql))
        .execute(pool)
        .await?
        .rows_affected())
}

fn push_key(tuple: &mut sqlx::query_builder::Separated<'_, MySql, &'static str>, key: &KeyColumns) {
    tuple.push_bind(key.application_name.clone());
    tuple.push_bind(key.topic.clone());
    tuple.push_bind(key.tag.clone());
    tuple.push_bind(key.msg_uniq_key.clone());
}

/// A TTL in milliseconds, as stores keep it (see [`crate::store::clamp_ttl`]).
pub(crate) fn ttl_ms(ttl: std::time::Duration) -> i64 {
    crate::store::clamp_ttl(ttl).as_millis() as i64
}

/// What a MySQL / MariaDB error means to the store.
pub(crate) fn classify(err: &sqlx::Error) -> Failure {
    let Some(db) = err.as_database_error() else {
        return Failure::Other;
    };
    if db.is_unique_violation() {
        return Failure::Duplicate;
    }
    match db
        .try_downcast_ref::<MySqlDatabaseError>()
        .map(|e| e.number())
    {
        // ER_LOCK_DEADLOCK
        Some(1213) => Failure::Deadlock,
        // ER_LOCK_WAIT_TIMEOUT
        Some(1205) => Failure::LockTimeout,
        // ER_OPTION_PREVENTS_STATEMENT (--read-only), ER_CANT_EXECUTE_IN_READ_ONLY_TRANSACTION
        Some(1290) | Some(1792) | Some(1836) => Failure::ReadOnly,
        // ER_ACCESS_DENIED_ERROR, ER_DBACCESS_DENIED_ERROR
        Some(1045) | Some(1044) => Failure::AuthFailed,
        _ => Failure::Other,
    }
}

/// An operator's read of one row: status, owner token and milliseconds left, while live.
pub(crate) async fn admin_inspect(
    pool: &sqlx::MySqlPool,
    table: &Table,
    key: &KeyColumns,
) -> Result<Option<crate::sql::dialect::AdminRow>, sqlx::Error> {
    let sql = format!(
        "SELECT status, owner_token, CAST(expire_time - {NOW_MS} AS SIGNED) FROM {} WHERE application_name = ? AND topic = ? AND tag = ? AND msg_uniq_key = ? AND expire_time >= {NOW_MS}",
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
    pool: &sqlx::MySqlPool,
    table: &Table,
    key: &KeyColumns,
) -> Result<u64, sqlx::Error> {
    let sql = format!(
        "DELETE FROM {} WHERE application_name = ? AND topic = ? AND tag = ? AND msg_uniq_key = ?",
        table.name()
    );
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
    pool: &sqlx::MySqlPool,
    table: &Table,
    namespace: &[u8],
    topic_and_tag: Option<(&[u8], &[u8])>,
) -> Result<(i64, i64, i64), sqlx::Error> {
    let mut sql = format!(
        "SELECT CAST(COALESCE(SUM(status = 'CONSUMING' AND expire_time >= {NOW_MS}), 0) AS SIGNED), CAST(COALESCE(SUM(status = 'CONSUMED' AND expire_time >= {NOW_MS}), 0) AS SIGNED), CAST(COALESCE(SUM(expire_time < {NOW_MS}), 0) AS SIGNED) FROM {} WHERE application_name = ?",
        table.name()
    );
    if topic_and_tag.is_some() {
        sql.push_str(" AND topic = ? AND tag = ?");
    }
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(namespace.to_vec());
    if let Some((topic, tag)) = topic_and_tag {
        query = query.bind(topic.to_vec()).bind(tag.to_vec());
    }
    let row = query.fetch_one(pool).await?;
    Ok((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?))
}
