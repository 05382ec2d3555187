//! Whether an existing table fits the stores, and the statement that makes it fit.
//!
//! A table the Java library RocketMQDedupListener created (its README's DDL) has no
//! `owner_token`, key columns in a case-folding `utf8` collation (`Order-1` and `order-1`
//! would be one record) and a 16-character `tag` (a hashed part is 33). The stores check the
//! table when they connect: one that lacks what they need is refused with
//! [`StoreError::TableUnfit`], which names the exact `ALTER TABLE` to run; `migrate()` (or
//! the builders' `migrate(true)`) runs it. The Java library keeps working on the altered
//! table (it names its six columns; the key columns keep their bytes), so Java and Rust
//! consumers can share it during a rolling migration.

use sqlx::Pool;

use super::database::SqlDatabase;
use super::table::{Table, TableFixes};
use crate::error::{StoreError, StoreOperation};

/// What `table` lacks, read once more when the first read failed (seen under load on a
/// MariaDB just started: a dropped connection, which the pool discards, and a failed
/// information_schema temporary table); the query only reads.
async fn read_fixes<DB: SqlDatabase>(
    pool: &Pool<DB>,
    table: &Table,
) -> Result<TableFixes, StoreError> {
    match DB::table_fixes(pool, table).await {
        Err(e) => {
            tracing::warn!(table = table.name(), error = %e, "reading the dedup table's columns failed; reading them once more");
            DB::table_fixes(pool, table).await
        }
        read => read,
    }
    .map_err(|e| StoreError::backend(StoreOperation::Connect, e))
}

/// Refuses a table that exists and does not fit (see the module docs).
pub(crate) async fn check<DB: SqlDatabase>(
    pool: &Pool<DB>,
    table: &Table,
) -> Result<(), StoreError> {
    let fixes = read_fixes(pool, table).await?;
    if fixes.problems.is_empty() {
        return Ok(());
    }
    let problems = fixes.problems.join("; ");
    let statement = fixes.statement(table).unwrap_or_default();
    tracing::error!(
        table = table.name(),
        %problems,
        %statement,
        "the dedup table does not fit the store: run the statement, or migrate()"
    );
    Err(StoreError::TableUnfit {
        table: table.name().to_owned(),
        problems,
        statement,
    })
}

/// Creates the table unless it exists, then alters it where it does not fit.
pub(crate) async fn migrate<DB: SqlDatabase>(
    pool: &Pool<DB>,
    table: &Table,
) -> Result<(), StoreError> {
    let failed = |e| StoreError::backend(StoreOperation::Connect, e);
    DB::migrate(pool, table.migration(DB::MIGRATION))
        .await
        .map_err(failed)?;
    if let Some(statement) = read_fixes(pool, table).await?.statement(table) {
        tracing::warn!(table = table.name(), %statement, "altering the dedup table to fit the store");
        DB::migrate(pool, statement).await.map_err(failed)?;
    }
    Ok(())
}

/// One column of an existing table, as `information_schema` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Column {
    pub(crate) name: String,
    /// Its type holds bytes (`VARBINARY`, `BYTEA`), compared byte for byte.
    pub(crate) binary: bool,
    /// The most bytes (or characters) it holds; `None` when unbounded.
    pub(crate) length: Option<i64>,
    /// Its collation, if it has one.
    pub(crate) collation: Option<String>,
}

/// The key columns, each holding a part of up to 128 bytes ([`crate::record_key`] hashes a
/// longer one into 33).
const KEY_COLUMNS: [&str; 4] = ["application_name", "topic", "tag", "msg_uniq_key"];
/// The fewest bytes a key column must hold.
const KEY_COLUMN_BYTES: i64 = 128;

/// How a database writes the fixing clauses.
pub(crate) struct FixSyntax {
    /// The clause that makes a key column binary and 255 bytes long.
    pub(crate) key_column: fn(&str) -> String,
    /// The clause that adds `owner_token`.
    pub(crate) owner_token: &'static str,
    /// The clause that adds the purge job's index, when the database says it is missing.
    pub(crate) expire_index: Option<String>,
}

/// What a table of `columns` lacks (nothing when it has no columns: it does not exist).
pub(crate) fn fixes(columns: &[Column], syntax: &FixSyntax) -> TableFixes {
    let mut fixes = TableFixes::default();
    if columns.is_empty() {
        return fixes;
    }
    let find = |name: &str| columns.iter().find(|c| c.name.eq_ignore_ascii_case(name));
    for name in KEY_COLUMNS {
        let problem = match find(name) {
            None => Some(format!("no column {name}")),
            Some(column) => column_problem(column),
        };
        if let Some(problem) = problem {
            fixes.problems.push(problem);
            fixes.clauses.push((syntax.key_column)(name));
        }
    }
    if find("owner_token").is_none() {
        fixes.problems.push("no column owner_token".to_owned());
        fixes.clauses.push(syntax.owner_token.to_owned());
    }
    fixes.clauses.extend(syntax.expire_index.clone());
    fixes
}

/// What keeps a key column from holding every part byte for byte.
fn column_problem(column: &Column) -> Option<String> {
    let mut reasons = Vec::new();
    if !column.binary || column.collation.is_some() {
        reasons.push(format!(
            "is text in collation {} (keys that differ only in case or trailing spaces would be one record)",
            column.collation.as_deref().unwrap_or("of its type")
        ));
    }
    if let Some(n) = column.length.filter(|&n| n < KEY_COLUMN_BYTES) {
        reasons.push(format!(
            "holds {n} where a part takes up to {KEY_COLUMN_BYTES} bytes"
        ));
    }
    (!reasons.is_empty()).then(|| format!("{} {}", column.name, reasons.join(" and ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn column(name: &str, binary: bool, length: i64, collation: Option<&str>) -> Column {
        Column {
            name: name.to_owned(),
            binary,
            length: Some(length),
            collation: collation.map(str::to_owned),
        }
    }

    fn syntax(indexed: bool) -> FixSyntax {
        FixSyntax {
            key_column: |name| format!("MODIFY {name} VARBINARY(255) NOT NULL"),
            owner_token: "ADD COLUMN owner_token BIGINT NULL",
            expire_index: (!indexed).then(|| "ADD KEY t_expire_time (expire_time)".to_owned()),
        }
    }

    #[test]
    fn the_shipped_schema_needs_nothing() {
        let mut columns: Vec<Column> = KEY_COLUMNS
            .iter()
            .map(|name| column(name, true, 255, None))
            .collect();
        columns.push(column("owner_token", false, 0, None));
        assert_eq!(fixes(&columns, &syntax(true)), TableFixes::default());
        assert_eq!(fixes(&[], &syntax(false)), TableFixes::default());
    }

    #[test]
    fn the_java_tables_collation_tag_and_missing_owner_are_each_named() {
        let utf8 = Some("utf8mb3_general_ci");
        let columns = [
            column("application_name", false, 255, utf8),
            column("topic", false, 255, utf8),
            column("tag", false, 16, utf8),
            column("msg_uniq_key", false, 255, utf8),
            column("status", false, 16, utf8),
            column("expire_time", false, 0, None),
        ];
        let fixes = fixes(&columns, &syntax(false));
        assert_eq!(fixes.problems.len(), 5, "{:?}", fixes.problems);
        assert!(fixes.problems[0].contains("utf8mb3_general_ci"));
        assert!(fixes.problems[2].ends_with("and holds 16 where a part takes up to 128 bytes"));
        assert_eq!(fixes.problems[4], "no column owner_token");
        let table = Table::new("t_rocketmq_dedup").unwrap();
        assert_eq!(
            fixes.statement(&table).unwrap(),
            "ALTER TABLE t_rocketmq_dedup MODIFY application_name VARBINARY(255) NOT NULL, \
             MODIFY topic VARBINARY(255) NOT NULL, MODIFY tag VARBINARY(255) NOT NULL, \
             MODIFY msg_uniq_key VARBINARY(255) NOT NULL, ADD COLUMN owner_token BIGINT NULL, \
             ADD KEY t_expire_time (expire_time)"
        );
    }

    #[test]
    fn a_short_binary_column_is_too_short() {
        let mut columns: Vec<Column> = KEY_COLUMNS
            .iter()
            .map(|name| column(name, true, 255, None))
            .collect();
        columns[2].length = Some(16);
        columns.push(column("owner_token", false, 0, None));
        let fixes = fixes(&columns, &syntax(true));
        assert_eq!(
            fixes.problems,
            ["tag holds 16 where a part takes up to 128 bytes"]
        );
    }
}
