//! Opens any store from its URL: [`connect`] for the listeners, [`connect_admin`] for an
//! operator's tools. The one place that knows every store and its URL schemes.
//!
//! ```no_run
//! # async fn run() -> Result<(), rocketmq_dedup::StoreError> {
//! let store = rocketmq_dedup::connect("redis+cluster://10.0.0.1:7001,10.0.0.2:7001").await?;
//! # Ok(()) }
//! ```

use std::sync::Arc;

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
// Built without a shared store (no `redis`, `mysql`, `postgres`), `SharedStore` has no variant.
#[cfg_attr(
    not(any(feature = "redis", feature = "mysql", feature = "postgres")),
    allow(unreachable_code)
)]
pub async fn connect(url: &str) -> Result<Arc<dyn DedupStore>, StoreError> {
    if matches!(url, "memory://" | "memory:") {
        return Ok(Arc::new(crate::store::MemoryStore::new()));
    }
    Ok(match open_shared(url, Purge::Job).await? {
        #[cfg(feature = "redis")]
        SharedStore::Redis(store) => Arc::new(store),
        #[cfg(feature = "mysql")]
        SharedStore::MySql(store) => Arc::new(store),
        #[cfg(feature = "postgres")]
        SharedStore::Postgres(store) => Arc::new(store),
    })
}

/// The URL schemes [`connect`] serves with the features this build has.
pub(crate) fn supported_schemes() -> Vec<&'static str> {
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
// Built without a shared store (no `redis`, `mysql`, `postgres`), `SharedStore` has no variant.
#[cfg_attr(
    not(any(feature = "redis", feature = "mysql", feature = "postgres")),
    allow(unreachable_code)
)]
pub async fn connect_admin(url: &str) -> Result<Box<dyn RecordAdmin>, StoreError> {
    if url.starts_with("memory:") {
        return Err(StoreError::BadUrl {
            reason: "the in-memory store lives inside one process: there is nothing to administer from outside".to_owned(),
        });
    }
    // No purge job: an operator's tool purges when asked.
    Ok(match open_shared(url, Purge::None).await? {
        #[cfg(feature = "redis")]
        SharedStore::Redis(store) => Box::new(store),
        #[cfg(feature = "mysql")]
        SharedStore::MySql(store) => Box::new(store),
        #[cfg(feature = "postgres")]
        SharedStore::Postgres(store) => Box::new(store),
    })
}

/// A store shared across processes, opened from its URL.
enum SharedStore {
    #[cfg(feature = "redis")]
    Redis(crate::store::RedisStore),
    #[cfg(feature = "mysql")]
    MySql(crate::sql::mysql::MySqlStore),
    #[cfg(feature = "postgres")]
    Postgres(crate::sql::postgres::PostgresStore),
}

/// Whether a SQL store runs its purge job.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Purge {
    Job,
    None,
}

/// Opens the shared store `url` names (every scheme but `memory://`).
async fn open_shared(url: &str, purge: Purge) -> Result<SharedStore, StoreError> {
    let scheme = url.split_once(':').map_or("", |(scheme, _)| scheme);
    // A listener's store (with its purge job) creates or fits the table; an operator's
    // tool only reads it.
    #[cfg(any(feature = "mysql", feature = "postgres"))]
    let migrate = purge == Purge::Job;
    #[cfg(any(feature = "mysql", feature = "postgres"))]
    let purge = match purge {
        Purge::Job => crate::sql::PurgeOptions::default(),
        Purge::None => crate::sql::PurgeOptions {
            interval: std::time::Duration::ZERO,
            ..Default::default()
        },
    };
    #[cfg(not(any(feature = "mysql", feature = "postgres")))]
    let _ = purge;
    match scheme {
        #[cfg(feature = "redis")]
        "redis" | "rediss" | "redis+unix" | "redis+cluster" | "rediss+cluster"
        | "redis+sentinel" | "rediss+sentinel" => Ok(SharedStore::Redis(
            crate::store::RedisStore::builder(url).connect().await?,
        )),
        #[cfg(feature = "mysql")]
        "mysql" | "mariadb" => {
            let url = url.replacen("mariadb:", "mysql:", 1);
            let builder = crate::sql::mysql::MySqlStore::builder(url)
                .purge(purge)
                .migrate(migrate);
            Ok(SharedStore::MySql(builder.connect().await?))
        }
        #[cfg(feature = "postgres")]
        "postgres" | "postgresql" => {
            let builder = crate::sql::postgres::PostgresStore::builder(url)
                .purge(purge)
                .migrate(migrate);
            Ok(SharedStore::Postgres(builder.connect().await?))
        }
        _ => Err(StoreError::BadUrl {
            reason: format!(
                "unknown scheme {scheme:?}: expected one of {}",
                supported_schemes().join(", ")
            ),
        }),
    }
}
