//! The orderly listener's decisions, row by row of its table in DESIGN.md, with the in-memory
//! store (and, for store failures, a store that fails on purpose): every "not now" suspends
//! the queue, nothing after a blocked message runs, and the handler runs once per key.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rocketmq_client_rust::{ConsumeOrderlyContext, ConsumeOrderlyStatus, MessageListenerOrderly};
use rocketmq_dedup::record_key::{KeyParts, RecordKey};
use rocketmq_dedup::store::{DedupStore, MemoryStore, OwnerToken};
use rocketmq_dedup::testing::{message, FaultyStore};
use rocketmq_dedup::{
    ConfigError, Decision, DedupHandler, DedupOrderlyListener, HandlerError, StoreErrorPolicy,
    StoreOperation,
};
use rocketmq_model::common::message::message_ext::MessageExt;
use rocketmq_model::common::message::message_queue::MessageQueue;

use ConsumeOrderlyStatus::{Success, SuspendCurrentQueueAMoment as Suspend};

const LONG: Duration = Duration::from_secs(60);

/// Records the order of successful effects; fails a key's first runs when told to.
#[derive(Default)]
struct Ordered {
    effects: Mutex<Vec<String>>,
    fail_first: Mutex<Vec<String>>,
    running: AtomicUsize,
    most_at_once: AtomicUsize,
}

impl DedupHandler for Ordered {
    async fn handle(&self, msg: &MessageExt) -> Result<(), HandlerError> {
        let key = msg.property("UNIQ_KEY").unwrap_or_default().to_owned();
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.most_at_once.fetch_max(now, Ordering::SeqCst);
        tokio::task::yield_now().await;
        self.running.fetch_sub(1, Ordering::SeqCst);
        let mut fail = self.fail_first.lock().unwrap();
        if let Some(at) = fail.iter().position(|k| *k == key) {
            fail.remove(at);
            return Err(format!("{key} failed").into());
        }
        self.effects.lock().unwrap().push(key);
        Ok(())
    }
}

impl Ordered {
    fn effects(&self) -> Vec<String> {
        self.effects.lock().unwrap().clone()
    }
}

fn msgs(keys: &[&str]) -> Vec<MessageExt> {
    keys.iter()
        .map(|k| message("Orders").uniq_key(k).build())
        .collect()
}

fn record_key(uniq: &str) -> RecordKey {
    RecordKey::new(KeyParts {
        prefix: "dedup",
        namespace: "group",
        topic: "Orders",
        tag: None,
        key: uniq,
    })
}

fn listener(handler: &Arc<Ordered>, store: Arc<dyn DedupStore>) -> DedupOrderlyListener {
    DedupOrderlyListener::builder(handler.clone())
        .namespace("group")
        .shared_store(store)
        .suspend_time(Duration::from_millis(250))
        .build()
        .unwrap()
}

async fn consume(listener: &DedupOrderlyListener, batch: &[MessageExt]) -> ConsumeOrderlyStatus {
    let refs: Vec<&MessageExt> = batch.iter().collect();
    listener.consume(&refs).await
}

#[tokio::test]
async fn consumed_keys_are_success_without_running_the_handler() {
    let handler = Arc::new(Ordered::default());
    let listener = listener(&handler, Arc::new(MemoryStore::new()));
    let batch = msgs(&["a", "b"]);
    assert_eq!(consume(&listener, &batch).await, Success);
    assert_eq!(consume(&listener, &batch).await, Success);
    assert_eq!(handler.effects(), ["a", "b"]);
    assert_eq!(listener.stats().decisions(Decision::Duplicate), 2);
}

#[test]
fn in_flight_elsewhere_suspends_the_queue_for_the_configured_time() {
    let store = Arc::new(MemoryStore::new());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime
        .block_on(store.claim(&[record_key("a")], OwnerToken::random(), LONG))
        .unwrap();
    let handler = Arc::new(Ordered::default());
    let listener = runtime.block_on(async { listener(&handler, store.clone()) });
    let batch = msgs(&["a"]);
    let refs: Vec<&MessageExt> = batch.iter().collect();
    let mut context = ConsumeOrderlyContext::new(MessageQueue::default());
    let status = listener.consume_message(&refs, &mut context).unwrap();
    assert_eq!(status, Suspend);
    assert_eq!(context.get_suspend_current_queue_time_millis(), 250);
    assert!(handler.effects().is_empty(), "the handler did not run");
    assert_eq!(listener.stats().decisions(Decision::DeferredInFlight), 1);
    // A batch that succeeds leaves the client's default suspend time alone.
    let fresh = msgs(&["b"]);
    let refs: Vec<&MessageExt> = fresh.iter().collect();
    let mut context = ConsumeOrderlyContext::new(MessageQueue::default());
    assert_eq!(
        listener.consume_message(&refs, &mut context).unwrap(),
        Success
    );
    assert_eq!(context.get_suspend_current_queue_time_millis(), -1);
}

#[tokio::test]
async fn nothing_after_a_message_in_flight_elsewhere_runs_and_order_holds() {
    let store = Arc::new(MemoryStore::new());
    let other = OwnerToken::random();
    store.claim(&[record_key("b")], other, LONG).await.unwrap();
    let handler = Arc::new(Ordered::default());
    let listener = listener(&handler, store.clone());
    let batch = msgs(&["a", "b", "c"]);
    assert_eq!(consume(&listener, &batch).await, Suspend);
    assert_eq!(handler.effects(), ["a"], "c waits behind b");
    assert_eq!(listener.stats().decisions(Decision::Postponed), 1);
    // c was claimed with the batch and released: another consumer could take it.
    let probe = OwnerToken::random();
    let c = store.claim(&[record_key("c")], probe, LONG).await.unwrap();
    assert_eq!(c, [rocketmq_dedup::store::ClaimOutcome::Claimed]);
    store.release(&[record_key("c")], probe).await.unwrap();
    // The other consumer finishes b; the batch comes back whole.
    store.commit(&[record_key("b")], other, LONG).await.unwrap();
    assert_eq!(consume(&listener, &batch).await, Success);
    assert_eq!(handler.effects(), ["a", "c"], "b's effect was the other's");
    assert_eq!(listener.stats().decisions(Decision::Duplicate), 2);
}

#[tokio::test]
async fn a_failed_handler_releases_its_claim_and_holds_back_the_rest() {
    let handler = Arc::new(Ordered {
        fail_first: Mutex::new(vec!["b".into()]),
        ..Default::default()
    });
    let store = Arc::new(MemoryStore::new());
    let listener = listener(&handler, store.clone());
    let batch = msgs(&["a", "b", "c", "d"]);
    assert_eq!(consume(&listener, &batch).await, Suspend);
    assert_eq!(handler.effects(), ["a"]);
    assert_eq!(listener.stats().decisions(Decision::HandlerFailed), 1);
    assert_eq!(listener.stats().decisions(Decision::Postponed), 2);
    assert_eq!(
        store.len(),
        1,
        "only a's record: b released, c and d released"
    );
    assert_eq!(consume(&listener, &batch).await, Success);
    assert_eq!(handler.effects(), ["a", "b", "c", "d"]);
}

#[tokio::test]
async fn handlers_run_one_at_a_time_whatever_the_concurrency_setting() {
    let handler = Arc::new(Ordered::default());
    let listener = DedupOrderlyListener::builder(handler.clone())
        .namespace("group")
        .store(MemoryStore::new())
        .handler_concurrency(8)
        .build()
        .unwrap();
    let keys: Vec<String> = (0..16).map(|i| format!("k{i:02}")).collect();
    let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    assert_eq!(consume(&listener, &msgs(&refs)).await, Success);
    assert_eq!(handler.effects(), keys);
    assert_eq!(handler.most_at_once.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn store_errors_suspend_when_fail_closed_and_run_when_fail_open() {
    for policy in [StoreErrorPolicy::FailClosed, StoreErrorPolicy::FailOpen] {
        let store = FaultyStore::new(MemoryStore::new());
        store.fail(StoreOperation::Claim, true);
        let handler = Arc::new(Ordered::default());
        let listener = DedupOrderlyListener::builder(handler.clone())
            .namespace("group")
            .store(store)
            .store_error_policy(policy)
            .build()
            .unwrap();
        let status = consume(&listener, &msgs(&["a", "b"])).await;
        match policy {
            StoreErrorPolicy::FailClosed => {
                assert_eq!(status, Suspend);
                assert!(handler.effects().is_empty());
                let stats = listener.stats();
                assert_eq!(stats.decisions(Decision::StoreUnavailable), 2);
            }
            StoreErrorPolicy::FailOpen => {
                assert_eq!(status, Success);
                assert_eq!(handler.effects(), ["a", "b"]);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_in_another_batch_of_this_listener_waits_before_anything_of_its_batch_runs() {
    #[derive(Default)]
    struct Slow(Mutex<Vec<String>>);
    impl DedupHandler for Slow {
        async fn handle(&self, msg: &MessageExt) -> Result<(), HandlerError> {
            let key = msg.property("UNIQ_KEY").unwrap_or_default().to_owned();
            if key == "a" {
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            self.0.lock().unwrap().push(key);
            Ok(())
        }
    }
    let handler = Arc::new(Slow::default());
    let listener = DedupOrderlyListener::builder(handler.clone())
        .namespace("group")
        .store(MemoryStore::new())
        .build()
        .unwrap();
    let first = {
        let listener = listener.clone();
        tokio::spawn(async move { consume(&listener, &msgs(&["a"])).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Another queue's batch: x comes before a copy of a; x must not run before that copy is
    // settled, so the batch waits for the first one instead of running x first.
    let second = consume(&listener, &msgs(&["x", "a"])).await;
    assert_eq!(first.await.unwrap(), Success);
    assert_eq!(
        second, Success,
        "the copy of a was a duplicate once a was done"
    );
    assert_eq!(*handler.0.lock().unwrap(), ["a", "x"]);
}

#[test]
fn the_suspend_time_is_checked_at_build() {
    for (time, ok) in [
        (Duration::from_millis(5), false),
        (Duration::from_millis(10), true),
        (Duration::from_secs(30), true),
        (Duration::from_secs(31), false),
    ] {
        let built = DedupOrderlyListener::builder(Arc::new(Ordered::default()))
            .namespace("group")
            .store(MemoryStore::new())
            .suspend_time(time)
            .build();
        match ok {
            true => assert!(built.is_ok(), "{time:?}"),
            false => assert!(
                matches!(
                    built,
                    Err(ConfigError::BadDuration {
                        setting: "suspend_time",
                        ..
                    })
                ),
                "{time:?}"
            ),
        }
    }
}
