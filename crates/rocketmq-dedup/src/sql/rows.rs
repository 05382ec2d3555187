//! Statements written once for both databases over sqlx's query builder: the batch's last
//! states as one upsert and one delete, and an operator's statements. Each dialect gives what
//! differs (its clock, its upsert clause, its name of a 64-bit integer) and its database type.

use sqlx::query::Query;
use sqlx::query_builder::Separated;
use sqlx::{
    ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Pool, QueryBuilder, Type,
};

use super::decide::{Write, CONSUMED, CONSUMING};
use super::dialect::{AdminRow, RowCounts};
use super::table::{BatchColumns, KeyColumns, Table};

/// The key columns, in the table's order.
pub(crate) const KEY_COLUMNS: &str = "application_name, topic, tag, msg_uniq_key";

/// Binds a key's columns in a tuple of the builder.
pub(crate) fn push_key<DB>(tuple: &mut Separated<'_, DB, &'static str>, key: &KeyColumns)
where
    DB: Database,
    for<'t> Vec<u8>: Encode<'t, DB> + Type<DB>,
{
    tuple.push_bind(key.application_name.clone());
    tuple.push_bind(key.topic.clone());
    tuple.push_bind(key.tag.clone());
    tuple.push_bind(key.msg_uniq_key.clone());
}

/// Binds a key's columns, in order, to a query's next placeholders.
pub(crate) fn bind_key<'q, DB>(
    query: Query<'q, DB, DB::Arguments>,
    key: &'q KeyColumns,
) -> Query<'q, DB, DB::Arguments>
where
    DB: Database,
    DB::Arguments: Send,
    for<'t> &'q [u8]: Encode<'t, DB> + Type<DB>,
{
    query
        .bind(key.application_name.as_slice())
        .bind(key.topic.as_slice())
        .bind(key.tag.as_slice())
        .bind(key.msg_uniq_key.as_slice())
}

/// A TTL in milliseconds, as stores keep it (see [`crate::store::clamp_ttl`]).
pub(crate) fn ttl_ms(ttl: std::time::Duration) -> i64 {
    crate::store::clamp_ttl(ttl).as_millis() as i64
}

/// Writes the last state of each written key: one upsert (`upsert`: the database's clause
/// after the values) and one delete; `now_ms` is the database's clock in ms.
pub(crate) async fn write<'c, DB>(
    conn: &'c mut DB::Connection,
    table: &Table,
    batch: &BatchColumns,
    writes: &[(usize, Write)],
    now_ms: &str,
    upsert: &str,
) -> Result<(), sqlx::Error>
where
    DB: Database,
    for<'t> Vec<u8>: Encode<'t, DB> + Type<DB>,
    for<'t> &'static str: Encode<'t, DB> + Type<DB>,
    for<'t> Option<i64>: Encode<'t, DB> + Type<DB>,
    for<'t> i64: Encode<'t, DB> + Type<DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'e> &'e mut DB::Connection: Executor<'e, Database = DB>,
{
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
        let mut query = QueryBuilder::<DB>::new(format!(
            "INSERT INTO {} ({KEY_COLUMNS}, status, owner_token, expire_time) ",
            table.name()
        ));
        query.push_values(puts, |mut row, (key, consumed, owner, ttl)| {
            push_key(&mut row, key);
            row.push_bind(if consumed { CONSUMED } else { CONSUMING });
            row.push_bind(owner);
            row.push(now_ms)
                .push_unseparated(" + ")
                .push_bind_unseparated(ttl_ms(ttl));
        });
        query.push(upsert);
        query.build().execute(&mut *conn).await?;
    }
    let deletes: Vec<_> = writes
        .iter()
        .filter(|(_, w)| *w == Write::Delete)
        .map(|&(i, _)| &batch.columns[i])
        .collect();
    if !deletes.is_empty() {
        let mut query = QueryBuilder::<DB>::new(format!(
            "DELETE FROM {} WHERE ({KEY_COLUMNS}) IN",
            table.name()
        ));
        query.push_tuples(deletes, |mut tuple, key| push_key(&mut tuple, key));
        query.build().execute(&mut *conn).await?;
    }
    Ok(())
}

/// Pushes `WHERE` conditions that match `key`'s row.
fn push_key_match<DB>(query: &mut QueryBuilder<DB>, key: &KeyColumns)
where
    DB: Database,
    for<'t> Vec<u8>: Encode<'t, DB> + Type<DB>,
{
    query.push(" WHERE application_name = ");
    query.push_bind(key.application_name.clone());
    query.push(" AND topic = ");
    query.push_bind(key.topic.clone());
    query.push(" AND tag = ");
    query.push_bind(key.tag.clone());
    query.push(" AND msg_uniq_key = ");
    query.push_bind(key.msg_uniq_key.clone());
}

/// An operator's read of one row while it is live: status, owner token, milliseconds left
/// (`integer`: the database's name of a 64-bit integer in a `CAST`).
pub(crate) async fn admin_inspect<DB>(
    pool: &Pool<DB>,
    table: &Table,
    key: &KeyColumns,
    now_ms: &str,
    integer: &str,
) -> Result<Option<AdminRow>, sqlx::Error>
where
    DB: Database,
    for<'t> Vec<u8>: Encode<'t, DB> + Type<DB>,
    for<'r> String: Decode<'r, DB> + Type<DB>,
    for<'r> i64: Decode<'r, DB> + Type<DB>,
    usize: ColumnIndex<DB::Row>,
    DB::Arguments: IntoArguments<DB>,
    for<'e> &'e Pool<DB>: Executor<'e, Database = DB>,
{
    let mut query = QueryBuilder::<DB>::new(format!(
        "SELECT status, owner_token, CAST(expire_time - {now_ms} AS {integer}) FROM {}",
        table.name()
    ));
    push_key_match(&mut query, key);
    query.push(format!(" AND expire_time >= {now_ms}"));
    let row = query.build().fetch_optional(pool).await?;
    row.as_ref().map(AdminRow::read).transpose()
}

/// Deletes one row, whatever its state; answers the database's result (its rows affected).
pub(crate) async fn admin_forget<DB>(
    pool: &Pool<DB>,
    table: &Table,
    key: &KeyColumns,
) -> Result<DB::QueryResult, sqlx::Error>
where
    DB: Database,
    for<'t> Vec<u8>: Encode<'t, DB> + Type<DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'e> &'e Pool<DB>: Executor<'e, Database = DB>,
{
    let mut query = QueryBuilder::<DB>::new(format!("DELETE FROM {}", table.name()));
    push_key_match(&mut query, key);
    query.build().execute(pool).await
}

/// Rows of one application name, or of one topic and tag in it: live CONSUMING, live
/// CONSUMED, expired.
pub(crate) async fn admin_counts<DB>(
    pool: &Pool<DB>,
    table: &Table,
    namespace: &[u8],
    topic_and_tag: Option<(&[u8], &[u8])>,
    now_ms: &str,
    integer: &str,
) -> Result<RowCounts, sqlx::Error>
where
    DB: Database,
    for<'t> Vec<u8>: Encode<'t, DB> + Type<DB>,
    for<'r> i64: Decode<'r, DB> + Type<DB>,
    usize: ColumnIndex<DB::Row>,
    DB::Arguments: IntoArguments<DB>,
    for<'e> &'e Pool<DB>: Executor<'e, Database = DB>,
{
    let count = |rows: String| {
        format!("CAST(COALESCE(SUM(CASE WHEN {rows} THEN 1 ELSE 0 END), 0) AS {integer})")
    };
    let mut query = QueryBuilder::<DB>::new(format!(
        "SELECT {}, {}, {} FROM {} WHERE application_name = ",
        count(format!(
            "status = '{CONSUMING}' AND expire_time >= {now_ms}"
        )),
        count(format!("status = '{CONSUMED}' AND expire_time >= {now_ms}")),
        count(format!("expire_time < {now_ms}")),
        table.name()
    ));
    query.push_bind(namespace.to_vec());
    if let Some((topic, tag)) = topic_and_tag {
        query.push(" AND topic = ").push_bind(topic.to_vec());
        query.push(" AND tag = ").push_bind(tag.to_vec());
    }
    RowCounts::read(&query.build().fetch_one(pool).await?)
}

/// Runs a migration's statements.
pub(crate) async fn migrate<DB>(pool: &Pool<DB>, sql: String) -> Result<(), sqlx::Error>
where
    DB: Database,
    for<'e> &'e Pool<DB>: Executor<'e, Database = DB>,
{
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
        .execute(pool)
        .await?;
    Ok(())
}
