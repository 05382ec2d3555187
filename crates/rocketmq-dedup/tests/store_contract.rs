//! The store contract, run against every store: the in-memory store and a real `redis-server`
//! started on a free loopback port (or the server `REDIS_URL` names).

use rocketmq_dedup::store::{MemoryStore, RedisStore};
use rocketmq_dedup_testkit::RedisServer;

async fn redis(script_claims: bool) -> (RedisStore, RedisServer) {
    let server = RedisServer::start().expect("redis-server starts");
    let store = RedisStore::builder(server.url())
        .script_claims(script_claims)
        .connect()
        .await
        .expect("connects to redis");
    (store, server)
}

rocketmq_dedup::dedup_store_contract!(memory, async { (MemoryStore::new(), ()) });
rocketmq_dedup::dedup_store_contract!(redis_store, redis(false));
// The Lua claim used before Redis 7.0 and behind proxies.
rocketmq_dedup::dedup_store_contract!(redis_store_script_claims, redis(true));
