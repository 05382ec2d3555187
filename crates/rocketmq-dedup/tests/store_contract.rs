//! The store contract (and the model-based check), run against every store: the in-memory
//! store, and real `redis-server` (one server, a 3-master + 3-replica Cluster, a master +
//! replica + 3 sentinels), `valkey-server` (one server), MariaDB and PostgreSQL servers started on free loopback ports (or
//! the servers `REDIS_URL`, `REDIS_CLUSTER_URL`, `REDIS_SENTINEL_URL`, `MYSQL_URL` and
//! `DATABASE_URL` name).
//!
//! The Redis stores keep records of the contract's long TTL in their shards' records hashes
//! (their record TTL is that TTL) and those of its short TTL in keys of their own: the
//! contract covers both.

use rocketmq_dedup::sql::mysql::MySqlStore;
use rocketmq_dedup::sql::postgres::PostgresStore;
use rocketmq_dedup::store::contract::LONG;
use rocketmq_dedup::store::{MemoryStore, RedisStore};
use rocketmq_dedup_testkit::{
    MariaDbServer, PostgresServer, RedisCluster, RedisOptions, RedisSentinel, RedisServer,
};

async fn redis(options: RedisOptions) -> (RedisStore, RedisServer) {
    let server = match options.valkey {
        true => RedisServer::start_local(options).expect("valkey-server starts"),
        false => RedisServer::start().expect("redis-server starts"),
    };
    let store = RedisStore::builder(server.url())
        .record_ttl(LONG)
        .connect()
        .await
        .expect("connects to redis");
    (store, server)
}

rocketmq_dedup::dedup_store_contract!(memory, async { (MemoryStore::new(), ()) });
rocketmq_dedup::dedup_store_contract!(redis_store, redis(RedisOptions::default()));
// The Redis store honouring and writing the Java library's keys.
rocketmq_dedup::dedup_store_contract!(redis_java_keys_store, async {
    let (store, server) = redis(RedisOptions::default()).await;
    (rocketmq_dedup::store::JavaKeys::new(store), server)
});
// Valkey 8.1, what most managed Redis offerings now run.
rocketmq_dedup::dedup_store_contract!(valkey_store, redis(RedisOptions::valkey()));

async fn redis_cluster() -> (RedisStore, RedisCluster) {
    let cluster = RedisCluster::start().expect("the Redis Cluster forms");
    let store = RedisStore::builder(cluster.url())
        .record_ttl(LONG)
        .connect()
        .await
        .expect("connects to the cluster");
    (store, cluster)
}

rocketmq_dedup::dedup_store_contract!(redis_cluster_store, redis_cluster());

async fn redis_sentinel() -> (RedisStore, RedisSentinel) {
    let deployment = RedisSentinel::start().expect("master, replica and sentinels start");
    let store = RedisStore::builder(deployment.url())
        .record_ttl(LONG)
        .connect()
        .await
        .expect("connects to the master through Sentinel");
    (store, deployment)
}

rocketmq_dedup::dedup_store_contract!(redis_sentinel_store, redis_sentinel());

async fn mysql() -> (MySqlStore, MariaDbServer) {
    let server = MariaDbServer::start().expect("mariadbd starts");
    let store = MySqlStore::builder(server.url())
        .connect()
        .await
        .expect("connects to mariadb");
    store.migrate().await.expect("creates the table");
    (store, server)
}

rocketmq_dedup::dedup_store_contract!(mysql_store, mysql());

async fn postgres() -> (PostgresStore, PostgresServer) {
    let server = PostgresServer::start().expect("postgres starts");
    let store = PostgresStore::builder(server.url())
        .connect()
        .await
        .expect("connects to postgres");
    store.migrate().await.expect("creates the table");
    (store, server)
}

rocketmq_dedup::dedup_store_contract!(postgres_store, postgres());
