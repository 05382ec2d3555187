//! A Redis master SIGKILLed during consumption, on a Redis Cluster (3 masters + 3 replicas)
//! and behind Sentinel (master + replica + 3 sentinels): its replica is promoted, and
//! - nothing is lost: every order has its effect;
//! - under fail-closed no handler runs for a key whose master is down (between the kill and
//!   the earliest possible promotion, one node timeout later);
//! - with `wait_for_replicas(1, …)` no effect happens twice.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use rocketmq_dedup::record_key::{KeyParts, RecordKey, DEFAULT_PREFIX};
use rocketmq_dedup::store::RedisStore;
use rocketmq_dedup::testing::RedisStoreProbe;
use rocketmq_dedup::{
    DedupConcurrentListener, DedupHandler, DedupKey, HandlerError, KeyError, KeyStrategy,
};
use rocketmq_dedup_testkit::{unique_name, ClientEnv, ConsumerSpec, RedisCluster, RedisSentinel};
use rocketmq_model::common::message::message_ext::MessageExt;

/// Orders (20% of them sent twice) and the pause between sends: about 6 s of traffic.
const ORDERS: usize = 400;
const PACE: Duration = Duration::from_millis(12);
/// A master is killed this long after the first send.
const KILL_AFTER: Duration = Duration::from_secs(2);
/// Neither a Cluster replica (node timeout 1 s) nor Sentinel (down-after 1 s) can take over
/// sooner than this after the kill; the grace covers claims answered just before it.
const NO_MASTER: (Duration, Duration) = (Duration::from_millis(100), Duration::from_millis(900));

/// Every effect: order id and when it happened.
#[derive(Debug, Default)]
struct TimedHandler {
    effects: Mutex<Vec<(String, Instant)>>,
}

impl DedupHandler for TimedHandler {
    async fn handle(&self, msg: &MessageExt) -> Result<(), HandlerError> {
        let key = order_id(msg)?;
        self.effects.lock().unwrap().push((key, Instant::now()));
        Ok(())
    }

    fn dedup_key(&self, msg: &MessageExt) -> Result<DedupKey, KeyError> {
        KeyStrategy::json_pointer("/orderId").derive(msg)
    }
}

/// Runs consumption over `store` while `kill` (run `KILL_AFTER` into the traffic) kills a
/// master; answers the effects, the kill's instant and the summary.
async fn consume_through_a_kill(
    store: RedisStore,
    kill: impl FnOnce() + Send + 'static,
) -> (Vec<(String, Instant)>, Instant, String, String, String) {
    let stack = stack();
    let client = ClientEnv::new("failover").unwrap();
    let (topic, group) = (unique_name("Orders"), unique_name("payments"));
    let producer = client.producer(&stack.namesrv_addr()).await.unwrap();
    let handler = Arc::new(TimedHandler::default());
    let listener = DedupConcurrentListener::builder(handler.clone())
        .namespace(group.as_str())
        .store(store)
        .store_timeout(Duration::from_secs(1))
        .commit_retry_window(Duration::from_secs(30))
        .build()
        .unwrap();
    let spec = ConsumerSpec::new(&stack.namesrv_addr(), &group, &topic);
    let mut consumer = client.consumer(&spec, listener.clone()).await.unwrap();
    let started = Instant::now();
    let killer = tokio::task::spawn_blocking(move || {
        std::thread::sleep(KILL_AFTER);
        let at = Instant::now();
        kill();
        at
    });
    for i in 0..ORDERS {
        let msg = order(&topic, &format!("order-{i}"));
        send(&producer, &msg).await;
        if i % 5 == 0 {
            send(&producer, &msg).await;
        }
        tokio::time::sleep(PACE).await;
    }
    let killed_at = killer.await.unwrap();
    assert!(killed_at > started, "the kill happened during the traffic");
    let unique = |h: &TimedHandler| {
        let effects = h.effects.lock().unwrap();
        effects
            .iter()
            .map(|(k, _)| k.clone())
            .collect::<std::collections::HashSet<_>>()
            .len()
    };
    let done = wait_until(Duration::from_secs(120), || unique(&handler) == ORDERS).await;
    let stats = listener.stats().summary();
    listener.shutdown(Duration::from_secs(10)).await;
    consumer.shutdown().await;
    client.shutdown().await;
    assert!(
        done,
        "every order has its effect: {} of {ORDERS}; {stats}",
        unique(&handler)
    );
    let effects = handler.effects.lock().unwrap().clone();
    (effects, killed_at, stats, topic, group)
}

fn repeated(effects: &[(String, Instant)]) -> Vec<(String, usize)> {
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for (k, _) in effects {
        *counts.entry(k).or_default() += 1;
    }
    let mut twice: Vec<_> = counts
        .into_iter()
        .filter(|(_, n)| *n > 1)
        .map(|(k, n)| (k.to_owned(), n))
        .collect();
    twice.sort();
    twice
}

/// The record key of order `key` in the listener's layout (with the message's tag or without,
/// whichever the key strategy used), the Redis key of its claim (whose slot its buckets share),
/// and whether the store says it is CONSUMED.
async fn record_of(store: &RedisStore, group: &str, topic: &str, key: &str) -> (String, bool) {
    use rocketmq_dedup::store::admin::{RecordAdmin, RecordState};
    let mut found = None;
    for tag in [None, Some("paid")] {
        let record = RecordKey::new(KeyParts {
            prefix: DEFAULT_PREFIX,
            namespace: group,
            topic,
            tag,
            key,
        });
        let consumed = matches!(
            store.inspect(&record).await.unwrap(),
            RecordState::Consumed { .. }
        );
        let claim_key = store.claim_key(&record).expect("the store met the group");
        if consumed || found.is_none() {
            found = Some((claim_key, consumed));
        }
        if consumed {
            break;
        }
    }
    found.expect("two layouts tried")
}

fn in_no_master_window(at: Instant, killed_at: Instant) -> bool {
    at > killed_at + NO_MASTER.0 && at < killed_at + NO_MASTER.1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_master_killed_during_consumption() {
    init_tracing();
    let cluster = Arc::new(Mutex::new(RedisCluster::start_local(3, 1).unwrap()));
    let url = cluster.lock().unwrap().url().to_owned();
    let store = RedisStore::builder(&url)
        .response_timeout(Duration::from_millis(500))
        .wait_for_replicas(1, Duration::from_millis(500))
        .connect()
        .await
        .unwrap();
    let (victim, replica) = {
        let c = cluster.lock().unwrap();
        let victim = c.master_of("any-key").unwrap();
        (victim, c.replica_of(victim).unwrap())
    };
    let killer = cluster.clone();
    // Killed, replaced by its replica, then back as the new master's replica (WAIT 1 needs one).
    let (effects, killed_at, stats, topic, group) =
        consume_through_a_kill(store.clone(), move || {
            let mut c = killer.lock().unwrap();
            c.kill(victim);
            c.wait_for_promotion(replica, Duration::from_secs(30))
                .unwrap();
            c.restart(victim).unwrap();
        })
        .await;

    assert_eq!(
        repeated(&effects),
        vec![],
        "no effect twice with WAIT; {stats}"
    );
    // Which keys lived on the killed master: their record keys' slots now belong to the
    // promoted replica. (The record must exist, so the key layout assumed here is checked.)
    let mut on_victim = 0;
    for (key, at) in &effects {
        let (claim_key, consumed) = record_of(&store, &group, &topic, key).await;
        assert!(consumed, "{key} is CONSUMED");
        if cluster.lock().unwrap().master_of(&claim_key).unwrap() == replica {
            on_victim += 1;
            assert!(
                !in_no_master_window(*at, killed_at),
                "{key} ran {:?} after its master was killed; {stats}",
                at.duration_since(killed_at)
            );
        }
    }
    assert!(on_victim > 0, "some keys lived on the killed master");
    // Not asserted: that the other masters' keys keep being processed in the window. They
    // often are not: redis-rs's cluster connection holds every request while it rebuilds its
    // slot map after the connection error, which takes up to the connect timeout (README).
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_master_killed_during_consumption() {
    init_tracing();
    let deployment = Arc::new(Mutex::new(RedisSentinel::start_local().unwrap()));
    let url = deployment.lock().unwrap().url().to_owned();
    let store = RedisStore::builder(&url)
        .response_timeout(Duration::from_millis(500))
        .wait_for_replicas(1, Duration::from_millis(500))
        .connect()
        .await
        .unwrap();
    let old = deployment.lock().unwrap().master_port().unwrap();
    let killer = deployment.clone();
    // The master the sentinels promoted; 0 until they did.
    let promoted = Arc::new(std::sync::atomic::AtomicU16::new(0));
    let promoted_by_kill = promoted.clone();
    // Killed, replaced by the replica, then back as the new master's replica (WAIT 1 needs one).
    let (effects, killed_at, stats, topic, group) =
        consume_through_a_kill(store.clone(), move || {
            let mut d = killer.lock().unwrap();
            d.kill_master().unwrap();
            let new = d.wait_for_failover(old, Duration::from_secs(30)).unwrap();
            promoted_by_kill.store(new, std::sync::atomic::Ordering::SeqCst);
            d.restart_as_replica(old, new).unwrap();
        })
        .await;
    // The failover happened during consumption. (Not who is master now: on a loaded machine
    // the sentinels, with `down-after-milliseconds 1000`, may fail over once more, back to
    // the restarted node; that is a failover the store must ride through too.)
    let promoted = promoted.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        promoted != 0 && promoted != old,
        "the sentinels promoted {promoted} (old {old})"
    );

    assert_eq!(
        repeated(&effects),
        vec![],
        "no effect twice with WAIT; {stats}"
    );
    for (key, at) in &effects {
        assert!(
            !in_no_master_window(*at, killed_at),
            "{key} ran {:?} after the only master was killed; {stats}",
            at.duration_since(killed_at)
        );
        let (_, consumed) = record_of(&store, &group, &topic, key).await;
        assert!(consumed, "{key} is CONSUMED on the new master");
    }
}
