//! Statements written once for both databases over sqlx's query builder: the batch's last
//! states as one upsert and one delete. Each dialect gives what differs (its clock and its
//! upsert clause) and its database type.

use sqlx::query_builder::Separated;
use sqlx::{Database, Encode, Executor, IntoArguments, QueryBuilder, Type};

use super::decide::{Write, CONSUMED, CONSUMING};
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
