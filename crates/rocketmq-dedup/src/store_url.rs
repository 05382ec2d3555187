//! Opens any store from its URL: [`connect`] for the listeners, [`connect_admin`] for an
//! operator's tools. The one place that knows every store and its URL schemes.
//!
//! ```no_run
//! # async fn run() -> Result<(), rocketmq_dedup::StoreError> {
//! let store = rocketmq_dedup::connect("redis+cluster://10.0.0.1:7001,10.0.0.2:7001").await?;
//! # Ok(()) }
//! ```

use std::sync::Arc;
use std::time::Duration;

use crate::error::StoreError;
use crate::store::admin::RecordAdmin;
use crate::store::DedupStore;

/// Opens a store from a URL:
/// - `memory://`: a [`MemoryStore`](crate::store::MemoryStore) (one process);
/// - `redis://…`, `rediss://…`, `redis+unix://…`, `redis+cluster://…`, `redis+sentinel://…`:
///   a [`RedisStore`](crate::store::RedisStore) (feature `redis`; the forms are in [`RedisStoreBuilder::new`](crate::store::RedisStoreBuilder::new));
/// - `mysql://…` or `mariadb://…`: a [`MySqlStore`](crate::sql::mysql::MySqlStore) (feature
///   `mysql`), `postgres://…` or `postgresql://…`: a
///   [`PostgresStore`](crate::sql::postgres::PostgresStore) (feature `postgres`); the table is
///   created unless it exists.
///
/// A wrong URL, an unreachable server, refused credentials and a failed TLS handshake are
/// different [`StoreError`] variants.
pub async fn connect(url: &str) -> Result<Arc<dyn DedupStore>, StoreError> {
    let scheme = url.split_once(':').map_or("", |(scheme, _)| scheme);
    match scheme {
        "memory" if matches!(url, "memory://" | "memory:") => {
            Ok(Arc::new(crate::store::MemoryStore::new()))
        }
        #[cfg(feature = "redis")]
        "redis" | "rediss" | "redis+unix" | "redis+cluster" | "rediss+cluster"
        | "redis+sentinel" | "rediss+sentinel" => Ok(Arc::new(
            crate::store::RedisStore::builder(url).connect().await?,
        )),
        #[cfg(feature = "mysql")]
        "mysql" | "mariadb" => {
            let url = url.replacen("mariadb:", "mysql:", 1);
            let store = crate::sql::mysql::MySqlStore::builder(url)
                .connect()
                .await?;
            store.migrate().await?;
            Ok(Arc::new(store))
        }
        #[cfg(feature = "postgres")]
        "postgres" | "postgresql" => {
            let store = crate::sql::postgres::PostgresStore::builder(url)
                .connect()
                .await?;
            store.migrate().await?;
            Ok(Arc::new(store))
        }
        _ => Err(StoreError::BadUrl {
            reason: format!(
                "unknown scheme {scheme:?}: expected one of {}",
                supported_schemes().join(", ")
            ),
        }),
    }
}

/// The URL schemes [`connect`] serves with the features this build has.
pub fn supported_schemes() -> Vec<&'static str> {
    let mut schemes = vec!["memory://"];
    if cfg!(feature = "redis") {
        schemes.extend([
            "redis://",
            "rediss://",
            "redis+cluster://",
            "redis+sentinel://",
        ]);
    }
    if cfg!(feature = "mysql") {
        schemes.extend(["mysql://", "mariadb://"]);
    }
    if cfg!(feature = "postgres") {
        schemes.extend(["postgres://", "postgresql://"]);
    }
    schemes
}

/// Opens the store `url` names for administration: `redis…://` (every deployment),
/// `mysql://` / `mariadb://` (feature `mysql`), `postgres://` (feature `postgres`). The
/// in-memory store lives inside one process and has no URL to administer.
pub async fn connect_admin(url: &str) -> Result<Box<dyn RecordAdmin>, StoreError> {
    let scheme = url.split_once(':').map_or("", |(scheme, _)| scheme);
    match scheme {
        #[cfg(feature = "redis")]
        "redis" | "rediss" | "redis+unix" | "redis+cluster" | "rediss+cluster" | "redis+sentinel"
        | "rediss+sentinel" => Ok(Box::new(
            crate::store::RedisStore::builder(url).connect().await?,
        )),
        #[cfg(feature = "mysql")]
        "mysql" | "mariadb" => {
            let url = url.replacen("mariadb:", "mysql:", 1);
            let store = crate::sql::mysql::MySqlStore::builder(url)
                .purge(crate::sql::PurgeOptions {
                    interval: Duration::ZERO,
                    ..Default::default()
                })
                .connect()
                .await?;
            Ok(Box::new(store))
        }
        #[cfg(feature = "postgres")]
        "postgres" | "postgresql" => {
            let store = crate::sql::postgres::PostgresStore::builder(url)
                .purge(crate::sql::PurgeOptions {
                    interval: Duration::ZERO,
                    ..Default::default()
                })
                .connect()
                .await?;
            Ok(Box::new(store))
        }
        "memory" => Err(StoreError::BadUrl {
            reason: "the in-memory store lives inside one process: there is nothing to administer from outside".to_owned(),
        }),
        _ => Err(StoreError::BadUrl {
            reason: format!(
                "unknown scheme {scheme:?}: expected redis://, redis+cluster://, redis+sentinel://, mysql:// or postgres://"
            ),
        }),
    }
}
