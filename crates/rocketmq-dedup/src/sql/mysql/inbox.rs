//! The inbox claim in MySQL / MariaDB: insert the record in the message's transaction; on a
//! duplicate key, read the committed record (processed, or expired and taken over).

use std::time::Duration;

use sqlx::mysql::{MySql, MySqlArguments, MySqlPool};
use sqlx::query::Query;
use sqlx::{AssertSqlSafe, Row as _, Transaction};

use super::queries::{self, NOW_MS};
use crate::inbox::InboxClaim;
use crate::record_key::RecordKey;
use crate::sql::decide::{owner, Row, CONSUMED};
use crate::sql::dialect::InboxStatements;
use crate::sql::table::{KeyColumns, Table};
use crate::sql::Failure;
use crate::store::OwnerToken;

/// The claim's statements, the lock wait bound in the server's own syntax.
pub(super) async fn prepare(
    pool: &MySqlPool,
    table: &Table,
    lock_wait: Duration,
) -> Result<InboxStatements, sqlx::Error> {
    let version: String = sqlx::query_scalar("SELECT VERSION()")
        .fetch_one(pool)
        .await?;
    let seconds = lock_wait.as_secs_f64().ceil().max(1.0) as u64;
    let bounded = |statement: String| match version.contains("MariaDB") {
        true => format!("SET STATEMENT innodb_lock_wait_timeout = {seconds} FOR {statement}"),
        false => statement.replacen(
            ' ',
            &format!(" /*+ SET_VAR(innodb_lock_wait_timeout = {seconds}) */ "),
            1,
        ),
    };
    let name = table.name();
    let key = "application_name = ? AND topic = ? AND tag = ? AND msg_uniq_key = ?";
    Ok(InboxStatements {
        insert: bounded(format!(
            "INSERT INTO {name} (application_name, topic, tag, msg_uniq_key, status, owner_token, expire_time) VALUES (?, ?, ?, ?, '{CONSUMED}', ?, {NOW_MS} + ?)"
        )),
        select: bounded(format!(
            "SELECT status, owner_token, CAST(expire_time > {NOW_MS} AS SIGNED) FROM {name} WHERE {key} FOR UPDATE"
        )),
        take_over: format!(
            "UPDATE {name} SET status = '{CONSUMED}', owner_token = ?, expire_time = {NOW_MS} + ? WHERE {key}"
        ),
        lock_wait,
    })
}

/// Claims `key` in `tx`; see [`crate::inbox::Inbox::claim`].
pub(super) async fn claim(
    statements: &InboxStatements,
    tx: &mut Transaction<'static, MySql>,
    key: &RecordKey,
    token: OwnerToken,
    ttl: Duration,
) -> Result<InboxClaim, sqlx::Error> {
    let columns = KeyColumns::of(key);
    let ttl = queries::ttl_ms(ttl);
    let insert = sqlx::query(AssertSqlSafe(statements.insert.as_str()));
    let inserted = bind_key(insert, &columns, 0)
        .bind(owner(token))
        .bind(ttl)
        .execute(&mut **tx)
        .await;
    match inserted.as_ref().map_err(queries::classify) {
        Ok(_) => return Ok(InboxClaim::Claimed),
        Err(Failure::Duplicate) => {}
        Err(Failure::LockTimeout) => return Ok(InboxClaim::InFlight),
        Err(_) => return inserted.map(|_| InboxClaim::Claimed),
    }
    // A committed record: processed, or expired (then it is ours to take over).
    let select = sqlx::query(AssertSqlSafe(statements.select.as_str()));
    let found = bind_key(select, &columns, 0)
        .fetch_optional(&mut **tx)
        .await;
    let row = match found {
        Ok(Some(row)) => row,
        Ok(None) => return Ok(InboxClaim::InFlight),
        Err(e) if queries::classify(&e) == Failure::LockTimeout => return Ok(InboxClaim::InFlight),
        Err(e) => return Err(e),
    };
    let live: i64 = row.try_get(2)?;
    match Row::read(&row.try_get::<String, _>(0)?, row.try_get(1)?, live != 0) {
        Row::Consumed => Ok(InboxClaim::Consumed),
        Row::Consuming(_) => Ok(InboxClaim::InFlight),
        Row::Absent => {
            let update = sqlx::query(AssertSqlSafe(statements.take_over.as_str()))
                .bind(owner(token))
                .bind(ttl);
            bind_key(update, &columns, 0).execute(&mut **tx).await?;
            Ok(InboxClaim::Claimed)
        }
    }
}

/// Binds the key's columns, but the first `skip` (already bound).
fn bind_key<'q>(
    query: Query<'q, MySql, MySqlArguments>,
    key: &'q KeyColumns,
    skip: usize,
) -> Query<'q, MySql, MySqlArguments> {
    let columns = [
        &key.application_name,
        &key.topic,
        &key.tag,
        &key.msg_uniq_key,
    ];
    columns
        .into_iter()
        .skip(skip)
        .fold(query, |query, column| query.bind(column.as_slice()))
}
