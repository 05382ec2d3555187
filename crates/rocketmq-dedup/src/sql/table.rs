//! The table: its name, the key columns a record key fills, and its schema.

use crate::error::ConfigError;
use crate::record_key::RecordKey;

/// The default table name: the Java library's.
pub(crate) const DEFAULT_TABLE: &str = "t_rocketmq_dedup";

/// A table name that is safe to put into SQL text: letters, digits and `_`, at most 64.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Table(String);

impl Table {
    pub(crate) fn new(name: &str) -> Result<Self, ConfigError> {
        let ok = !name.is_empty()
            && name.len() <= 64
            && !name.starts_with(|c: char| c.is_ascii_digit())
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        match ok {
            true => Ok(Table(name.to_owned())),
            false => Err(ConfigError::BadTableName {
                name: name.chars().take(80).collect(),
            }),
        }
    }

    pub(crate) fn name(&self) -> &str {
        &self.0
    }

    /// A shipped migration, for this table's name.
    pub(crate) fn migration(&self, sql: &str) -> String {
        sql.replace(DEFAULT_TABLE, &self.0)
    }
}

/// What an existing table lacks.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct TableFixes {
    /// What makes the table unusable as it is (empty: usable).
    pub(crate) problems: Vec<String>,
    /// The `ALTER TABLE` clauses that fix the problems, and that add the purge job's index
    /// when it is missing.
    pub(crate) clauses: Vec<String>,
}

impl TableFixes {
    /// The one statement that applies every clause, if any is needed.
    pub(crate) fn statement(&self, table: &Table) -> Option<String> {
        (!self.clauses.is_empty())
            .then(|| format!("ALTER TABLE {} {}", table.name(), self.clauses.join(", ")))
    }
}

/// A record key as the table's four key columns: namespace, topic, tag and dedup key, as
/// written ([`RecordKey::parts`]). A compact key, whose parts are hashed together, is the
/// dedup key alone.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct KeyColumns {
    pub(crate) application_name: Vec<u8>,
    pub(crate) topic: Vec<u8>,
    pub(crate) tag: Vec<u8>,
    pub(crate) msg_uniq_key: Vec<u8>,
}

impl KeyColumns {
    /// The key columns a database answered, first in its row.
    pub(crate) fn read<'r, R: sqlx::Row>(row: &'r R) -> Result<Self, sqlx::Error>
    where
        usize: sqlx::ColumnIndex<R>,
        Vec<u8>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    {
        Ok(KeyColumns {
            application_name: row.try_get(0)?,
            topic: row.try_get(1)?,
            tag: row.try_get(2)?,
            msg_uniq_key: row.try_get(3)?,
        })
    }

    pub(crate) fn of(key: &RecordKey) -> Self {
        match key.parts() {
            Some(parts) => KeyColumns {
                application_name: parts.namespace.into_bytes(),
                topic: parts.topic.into_bytes(),
                tag: parts.tag.into_bytes(),
                msg_uniq_key: parts.key.into_bytes(),
            },
            None => KeyColumns {
                application_name: Vec::new(),
                topic: Vec::new(),
                tag: Vec::new(),
                msg_uniq_key: key.as_str().as_bytes().to_vec(),
            },
        }
    }
}

/// A record key's 64-bit lock id (see [`BatchColumns::lock_ids`]).
pub(crate) fn lock_id(key: &RecordKey) -> i64 {
    key.fingerprint() as u64 as i64
}

/// A batch's keys as columns, each with the index of its first occurrence (a repeated key
/// is read and written once).
#[derive(Debug)]
pub(crate) struct BatchColumns {
    pub(crate) columns: Vec<KeyColumns>,
    pub(crate) first: Vec<usize>,
    /// A 64-bit id per key, for databases that lock keys by number (PostgreSQL's advisory
    /// locks): the low bits of the record key's fingerprint.
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    pub(crate) lock_ids: Vec<i64>,
}

impl BatchColumns {
    pub(crate) fn of(keys: &[RecordKey]) -> Self {
        let columns: Vec<KeyColumns> = keys.iter().map(KeyColumns::of).collect();
        let mut seen = std::collections::HashMap::new();
        let first = columns
            .iter()
            .enumerate()
            .map(|(i, c)| *seen.entry(c).or_insert(i))
            .collect();
        let lock_ids = keys.iter().map(lock_id).collect();
        BatchColumns {
            columns,
            first,
            lock_ids,
        }
    }

    /// The distinct keys, by the index of their first occurrence.
    pub(crate) fn distinct(&self) -> impl Iterator<Item = (usize, &KeyColumns)> {
        self.first
            .iter()
            .enumerate()
            .filter(|(i, f)| i == *f)
            .map(|(i, _)| (i, &self.columns[i]))
    }

    /// The index of the first occurrence of `columns`, if it is one of this batch's keys.
    pub(crate) fn index_of(&self, columns: &KeyColumns) -> Option<usize> {
        self.distinct().find(|(_, c)| *c == columns).map(|(i, _)| i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record_key::KeyParts;

    #[test]
    fn table_names_are_checked() {
        assert!(Table::new("t_rocketmq_dedup").is_ok());
        for bad in ["", "1t", "t;drop", "t-x", &"t".repeat(65)] {
            assert!(Table::new(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn repeated_keys_share_their_first_index() {
        let k = |s: &str| {
            RecordKey::new(KeyParts {
                prefix: "p",
                namespace: "g",
                topic: "t",
                tag: None,
                key: s,
            })
        };
        let batch = BatchColumns::of(&[k("a"), k("b"), k("a")]);
        assert_eq!(batch.first, [0, 1, 0]);
        assert_eq!(batch.distinct().count(), 2);
        assert_eq!(batch.columns[0].msg_uniq_key, b"a");
        assert_eq!(batch.columns[0].application_name, b"g");
    }
}
