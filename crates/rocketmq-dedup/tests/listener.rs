//! The listener's decisions, row by row of the state table in DESIGN.md, with the in-memory
//! store (and, for store failures, a store that fails on purpose).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rocketmq_client_rust::{
    ConsumeConcurrentlyContext, ConsumeConcurrentlyStatus, MessageListenerConcurrently,
};
use rocketmq_dedup::record_key::{KeyParts, RecordKey};
use rocketmq_dedup::store::{
    ClaimOutcome, CommitOutcome, DedupStore, DetachedCommit, MemoryStore, OwnerToken,
};
use rocketmq_dedup::testing::{message, FaultyStore};
use rocketmq_dedup::{
    ConfigError, Decision, DedupConcurrentListener, DedupHandler, Event, HandlerError, KeyFallback,
    KeyStrategy, StoreErrorPolicy, StoreOperation,
};
use rocketmq_model::common::message::message_ext::MessageExt;
use rocketmq_model::common::message::message_queue::MessageQueue;

use ConsumeConcurrentlyStatus::{ConsumeSuccess, ReconsumeLater};

/// The listener's default near-cache capacity.
const DEFAULT_NEAR_CACHE: usize = 10_000;

/// Counts runs; fails or panics on the runs it is told to; can take its time.
#[derive(Default)]
struct Recorder {
    runs: AtomicUsize,
    successes: AtomicUsize,
    fail_runs: Vec<usize>,
    panic_runs: Vec<usize>,
    sleep: Duration,
    /// Keys settled as committed (the `on_settled` hook).
    committed: AtomicUsize,
    /// Keys whose commit was given up (the `on_settled` hook).
    given_up: AtomicUsize,
}

impl DedupHandler for Recorder {
    async fn handle(&self, _msg: &MessageExt) -> Result<(), HandlerError> {
        let run = self.runs.fetch_add(1, Ordering::SeqCst) + 1;
        if !self.sleep.is_zero() {
            tokio::time::sleep(self.sleep).await;
        }
        if self.panic_runs.contains(&run) {
            panic!("handler panicked on run {run}");
        }
        if self.fail_runs.contains(&run) {
            return Err(format!("failed on run {run}").into());
        }
        self.successes.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    fn on_settled(
        &self,
        _key: &RecordKey,
        result: Result<CommitOutcome, &rocketmq_dedup::StoreError>,
    ) {
        match result {
            Ok(CommitOutcome::Committed) => self.committed.fetch_add(1, Ordering::SeqCst),
            Err(_) => self.given_up.fetch_add(1, Ordering::SeqCst),
            Ok(_) => 0,
        };
    }
}

impl Recorder {
    fn runs(&self) -> usize {
        self.runs.load(Ordering::SeqCst)
    }
    fn successes(&self) -> usize {
        self.successes.load(Ordering::SeqCst)
    }
}

fn listener(recorder: &Arc<Recorder>, store: Arc<MemoryStore>) -> DedupConcurrentListener {
    DedupConcurrentListener::builder(recorder.clone())
        .namespace("group")
        .shared_store(store)
        .build()
        .unwrap()
}

fn msg(uniq: &str) -> MessageExt {
    message("Orders")
        .uniq_key(uniq)
        .msg_id(&format!("offset-{uniq}"))
        .build()
}

/// Waits (up to 5 s) until `done` holds: for what the listener does after it answered, such
/// as a commit written after the ack. The assertion that follows says what must hold.
async fn eventually(done: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !done() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
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

#[tokio::test]
async fn claimed_runs_the_handler_once_and_later_copies_are_acked() {
    let recorder = Arc::new(Recorder::default());
    let listener = listener(&recorder, Arc::new(MemoryStore::new()));
    let m = msg("A");
    assert_eq!(listener.consume(&[&m]).await, ConsumeSuccess);
    assert_eq!(listener.consume(&[&m]).await, ConsumeSuccess);
    // A retried copy has a new broker msg_id but the same UNIQ_KEY.
    let retried = message("Orders")
        .uniq_key("A")
        .msg_id("other-offset")
        .reconsume_times(1)
        .build();
    assert_eq!(listener.consume(&[&retried]).await, ConsumeSuccess);
    assert_eq!(recorder.runs(), 1);
    // The commit is written after the ack (the default): on_settled reports it when it lands.
    eventually(|| recorder.committed.load(Ordering::SeqCst) == 1).await;
    assert_eq!(listener.stats().decisions(Decision::Processed), 1);
    assert_eq!(listener.stats().decisions(Decision::Duplicate), 2);
}

#[tokio::test]
async fn in_flight_elsewhere_is_deferred_without_running_the_handler() {
    let store = Arc::new(MemoryStore::new());
    let other = OwnerToken::random();
    store
        .claim(&[record_key("A")], other, Duration::from_secs(60))
        .await
        .unwrap();
    let recorder = Arc::new(Recorder::default());
    let listener = listener(&recorder, store.clone());
    assert_eq!(listener.consume(&[&msg("A")]).await, ReconsumeLater);
    assert_eq!(recorder.runs(), 0);
    assert_eq!(listener.stats().decisions(Decision::DeferredInFlight), 1);
    // Once the other owner commits, the redelivered copy is acked without running.
    store
        .commit(&[record_key("A")], other, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(listener.consume(&[&msg("A")]).await, ConsumeSuccess);
    assert_eq!(recorder.runs(), 0);
}

#[tokio::test]
async fn handler_error_releases_the_claim_and_the_retry_processes_once() {
    let recorder = Arc::new(Recorder {
        fail_runs: vec![1],
        ..Default::default()
    });
    let store = Arc::new(MemoryStore::new());
    let listener = listener(&recorder, store.clone());
    assert_eq!(listener.consume(&[&msg("A")]).await, ReconsumeLater);
    assert_eq!(store.len(), 0, "claim released");
    assert_eq!(listener.consume(&[&msg("A")]).await, ConsumeSuccess);
    assert_eq!(listener.consume(&[&msg("A")]).await, ConsumeSuccess);
    assert_eq!((recorder.runs(), recorder.successes()), (2, 1));
    assert_eq!(listener.stats().decisions(Decision::HandlerFailed), 1);
}

#[tokio::test]
async fn handler_panic_is_caught_and_releases_the_claim() {
    let recorder = Arc::new(Recorder {
        panic_runs: vec![1],
        ..Default::default()
    });
    let store = Arc::new(MemoryStore::new());
    let listener = listener(&recorder, store.clone());
    assert_eq!(listener.consume(&[&msg("A")]).await, ReconsumeLater);
    assert_eq!(store.len(), 0, "claim released");
    assert_eq!(listener.consume(&[&msg("A")]).await, ConsumeSuccess);
    assert_eq!((recorder.runs(), recorder.successes()), (2, 1));
    assert_eq!(listener.stats().decisions(Decision::HandlerPanicked), 1);
}

#[tokio::test]
async fn copies_inside_one_batch_run_the_handler_once() {
    let recorder = Arc::new(Recorder::default());
    let listener = listener(&recorder, Arc::new(MemoryStore::new()));
    let (a1, a2, b) = (msg("A"), msg("A"), msg("B"));
    assert_eq!(listener.consume(&[&a1, &b, &a2]).await, ConsumeSuccess);
    assert_eq!(recorder.runs(), 2);
    assert_eq!(listener.stats().decisions(Decision::Processed), 2);
    assert_eq!(listener.stats().decisions(Decision::Duplicate), 1);
}

#[tokio::test]
async fn a_batch_is_all_or_nothing_and_its_committed_part_comes_back_as_duplicates() {
    let store = Arc::new(MemoryStore::new());
    let other = OwnerToken::random();
    store
        .claim(&[record_key("C")], other, Duration::from_secs(60))
        .await
        .unwrap();
    let recorder = Arc::new(Recorder::default());
    let listener = listener(&recorder, store.clone());
    let batch = [msg("A"), msg("B"), msg("C")];
    let refs: Vec<&MessageExt> = batch.iter().collect();
    assert_eq!(
        listener.consume(&refs).await,
        ReconsumeLater,
        "C is in flight elsewhere"
    );
    assert_eq!(recorder.runs(), 2, "A and B ran");
    store
        .commit(&[record_key("C")], other, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(listener.consume(&refs).await, ConsumeSuccess);
    assert_eq!(recorder.runs(), 2, "nothing ran twice");
    assert_eq!(listener.stats().messages_acked(), 3);
    assert_eq!(listener.stats().decisions(Decision::Duplicate), 3);
}

#[tokio::test]
async fn bad_keys_fall_back_as_configured() {
    let bad = message("Orders").uniq_key("U").body("not json").build();
    let run = |fallback| {
        let recorder = Arc::new(Recorder::default());
        let listener = DedupConcurrentListener::builder(
            recorder
                .clone()
                .with_key(KeyStrategy::json_pointer("/orderId")),
        )
        .namespace("group")
        .store(MemoryStore::new())
        .key_fallback(fallback)
        .build()
        .unwrap();
        (recorder, listener)
    };
    // Default: dedup by the unique id.
    let (recorder, listener) = run(KeyFallback::UniqueId);
    assert_eq!(listener.consume(&[&bad]).await, ConsumeSuccess);
    assert_eq!(listener.consume(&[&bad]).await, ConsumeSuccess);
    assert_eq!(recorder.runs(), 1);
    assert_eq!(listener.stats().events(Event::KeyError), 2);
    // Retry: never run, never acked.
    let (recorder, listener) = run(KeyFallback::Retry);
    assert_eq!(listener.consume(&[&bad]).await, ReconsumeLater);
    assert_eq!(recorder.runs(), 0);
    assert_eq!(listener.stats().decisions(Decision::KeyRejected), 1);
    // No dedup: runs every time.
    let (recorder, listener) = run(KeyFallback::NoDedup);
    assert_eq!(listener.consume(&[&bad]).await, ConsumeSuccess);
    assert_eq!(listener.consume(&[&bad]).await, ConsumeSuccess);
    assert_eq!(recorder.runs(), 2);
    // A good key is still deduplicated by the business key, across unique ids.
    let (recorder, listener) = run(KeyFallback::Retry);
    let first = message("Orders")
        .uniq_key("U1")
        .body(r#"{"orderId":"o-1"}"#)
        .build();
    let resent = message("Orders")
        .uniq_key("U2")
        .body(r#"{"orderId":"o-1"}"#)
        .build();
    assert_eq!(listener.consume(&[&first]).await, ConsumeSuccess);
    assert_eq!(listener.consume(&[&resent]).await, ConsumeSuccess);
    assert_eq!(recorder.runs(), 1);
}

fn broken_listener(
    recorder: &Arc<Recorder>,
    hang: bool,
    policy: StoreErrorPolicy,
) -> DedupConcurrentListener {
    let store = FaultyStore::new(MemoryStore::new());
    for op in [
        StoreOperation::Claim,
        StoreOperation::Commit,
        StoreOperation::Release,
        StoreOperation::Renew,
    ] {
        store.fail(op, true);
    }
    store.hang(hang);
    DedupConcurrentListener::builder(recorder.clone())
        .namespace("group")
        .store(store)
        .store_timeout(Duration::from_millis(200))
        .store_error_policy(policy)
        .build()
        .unwrap()
}

#[tokio::test]
async fn store_errors_fail_closed_by_default() {
    for hang in [false, true] {
        let recorder = Arc::new(Recorder::default());
        let listener = broken_listener(&recorder, hang, StoreErrorPolicy::default());
        let started = tokio::time::Instant::now();
        assert_eq!(
            listener.consume(&[&msg("A"), &msg("B")]).await,
            ReconsumeLater
        );
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "bounded by the store timeout"
        );
        assert_eq!(
            recorder.runs(),
            0,
            "nothing runs, nothing is acked (hang={hang})"
        );
        assert_eq!(listener.stats().decisions(Decision::StoreUnavailable), 2);
        assert_eq!(listener.stats().events(Event::StoreError), 1);
    }
}

#[tokio::test]
async fn store_errors_fail_open_when_configured() {
    let recorder = Arc::new(Recorder::default());
    let listener = broken_listener(&recorder, false, StoreErrorPolicy::FailOpen);
    assert_eq!(
        listener.consume(&[&msg("A"), &msg("A"), &msg("B")]).await,
        ConsumeSuccess
    );
    assert_eq!(recorder.runs(), 2, "copies within the batch still run once");
    assert_eq!(
        listener.stats().decisions(Decision::ProcessedWithoutDedup),
        2
    );
}

#[tokio::test(start_paused = true)]
async fn renewal_keeps_a_long_handler_exclusive() {
    let recorder = Arc::new(Recorder {
        sleep: Duration::from_millis(900),
        ..Default::default()
    });
    let store = Arc::new(MemoryStore::new());
    let build = || {
        DedupConcurrentListener::builder(recorder.clone())
            .namespace("group")
            .shared_store(store.clone())
            .processing_ttl(Duration::from_millis(300))
            .build()
            .unwrap()
    };
    let (first, second) = (build(), build());
    let running = tokio::spawn(async move { first.consume(&[&msg("A")]).await });
    // The second copy arrives at 3 processing TTLs into the first one's handler.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(second.consume(&[&msg("A")]).await, ReconsumeLater);
    assert_eq!(running.await.unwrap(), ConsumeSuccess);
    assert_eq!(second.consume(&[&msg("A")]).await, ConsumeSuccess);
    assert_eq!(recorder.runs(), 1, "the handler never ran twice");
    assert_eq!(second.stats().decisions(Decision::DeferredInFlight), 1);
}

#[test]
fn consume_message_works_from_any_thread() {
    let recorder = Arc::new(Recorder::default());
    let listener = listener(&recorder, Arc::new(MemoryStore::new()));
    let context = ConsumeConcurrentlyContext::new(MessageQueue::default());
    let call = |listener: &DedupConcurrentListener, id: &str| {
        listener.consume_message(&[&msg(id)], &context).unwrap()
    };
    // A plain thread (the listener runs on its own runtime).
    assert_eq!(call(&listener, "plain"), ConsumeSuccess);
    // A multi-thread runtime's blocking thread, as the client calls it, and a worker thread.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let l = listener.clone();
    let ctx = ConsumeConcurrentlyContext::new(MessageQueue::default());
    let status = rt.block_on(async move {
        tokio::task::spawn_blocking(move || l.consume_message(&[&msg("blocking")], &ctx).unwrap())
            .await
    });
    assert_eq!(status.unwrap(), ConsumeSuccess);
    let l = listener.clone();
    let ctx = ConsumeConcurrentlyContext::new(MessageQueue::default());
    let status = rt.block_on(async move {
        tokio::spawn(async move { l.consume_message(&[&msg("worker")], &ctx).unwrap() }).await
    });
    assert_eq!(status.unwrap(), ConsumeSuccess);
    // A current-thread runtime.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    assert_eq!(
        rt.block_on(async { call(&listener, "current") }),
        ConsumeSuccess
    );
    assert_eq!(recorder.runs(), 4);
}

#[test]
fn configuration_is_checked_at_build() {
    type Builder = rocketmq_dedup::DedupListenerBuilder<
        rocketmq_dedup::listener::Concurrent,
        rocketmq_dedup::StoreBacked<Arc<Recorder>>,
    >;
    let build = |f: fn(Builder) -> Builder| {
        f(
            DedupConcurrentListener::builder(Arc::new(Recorder::default()))
                .store(MemoryStore::new()),
        )
        .build()
        .map(|_| ())
    };
    assert_eq!(build(|b| b), Err(ConfigError::MissingNamespace));
    assert!(matches!(
        build(|b| b.namespace("g").processing_ttl(Duration::ZERO)),
        Err(ConfigError::BadDuration { .. })
    ));
    assert!(matches!(
        build(|b| b
            .namespace("g")
            .processing_ttl(Duration::from_secs(10))
            .renew_interval(Duration::from_secs(10))),
        Err(ConfigError::BadDuration {
            setting: "renew_interval",
            ..
        })
    ));
    assert!(matches!(
        build(|b| b.namespace("g").record_ttl(Duration::from_secs(1))),
        Err(ConfigError::BadDuration { .. })
    ));
    assert!(matches!(
        build(|b| b.namespace("x".repeat(300))),
        Err(ConfigError::BadLength { .. })
    ));
    assert!(matches!(
        build(|b| b.namespace("g").handler_concurrency(0)),
        Err(ConfigError::Zero { .. })
    ));
    assert_eq!(build(|b| b.namespace("g")), Ok(()));
}

#[tokio::test(start_paused = true)]
async fn a_claim_lost_under_a_running_handler_is_counted_and_not_committed_over() {
    // Renewals do nothing, so the 200 ms claim expires while the 600 ms handler runs.
    let store = Arc::new(FaultyStore::new(MemoryStore::new()));
    store.stall_renewals(true);
    let recorder = Arc::new(Recorder {
        sleep: Duration::from_millis(600),
        ..Default::default()
    });
    let listener = DedupConcurrentListener::builder(recorder.clone())
        .namespace("group")
        .shared_store(store.clone())
        .processing_ttl(Duration::from_millis(200))
        .build()
        .unwrap();
    let running = {
        let listener = listener.clone();
        tokio::spawn(async move { listener.consume(&[&msg("A")]).await })
    };
    tokio::time::sleep(Duration::from_millis(400)).await;
    let new_owner = OwnerToken::random();
    let ttl = Duration::from_secs(60);
    assert_eq!(
        store
            .inner()
            .claim(&[record_key("A")], new_owner, ttl)
            .await
            .unwrap(),
        [ClaimOutcome::Claimed]
    );
    assert_eq!(
        running.await.unwrap(),
        ConsumeSuccess,
        "the handler's effect happened; the message is acked"
    );
    assert_eq!(listener.stats().events(Event::ClaimLost), 1);
    // The new owner's claim is intact, and it can still commit.
    let someone = OwnerToken::random();
    assert_eq!(
        store
            .inner()
            .claim(&[record_key("A")], someone, ttl)
            .await
            .unwrap(),
        [ClaimOutcome::InFlight]
    );
    assert_eq!(
        store
            .inner()
            .commit(&[record_key("A")], new_owner, ttl)
            .await
            .unwrap(),
        [CommitOutcome::Committed]
    );
}

#[tokio::test(start_paused = true)]
async fn a_failed_commit_is_acked_and_written_in_the_background_once_the_store_is_back() {
    let store = Arc::new(FaultyStore::new(MemoryStore::new()));
    store.fail(StoreOperation::Commit, true);
    let recorder = Arc::new(Recorder::default());
    let listener = DedupConcurrentListener::builder(recorder.clone())
        .namespace("group")
        .shared_store(store.clone())
        .build()
        .unwrap();
    assert_eq!(
        listener.consume(&[&msg("A"), &msg("B")]).await,
        ConsumeSuccess,
        "the effects happened"
    );
    // The commit is written after the ack (the default): it fails in the background.
    eventually(|| listener.stats().events(Event::CommitDeferred) == 2).await;
    assert_eq!(listener.stats().events(Event::CommitDeferred), 2);
    // While the store refuses commits, another consumer meets the claim (and retries later);
    // a copy in this consumer is a duplicate already: its handler succeeded here.
    let (someone, ttl, a) = (
        OwnerToken::random(),
        Duration::from_secs(60),
        [record_key("A")],
    );
    let elsewhere = || store.inner().claim(&a, someone, ttl);
    assert_eq!(elsewhere().await.unwrap(), [ClaimOutcome::InFlight]);
    assert_eq!(listener.consume(&[&msg("A")]).await, ConsumeSuccess);
    store.fail(StoreOperation::Commit, false);
    tokio::time::sleep(Duration::from_millis(800)).await;
    // The background commit landed: a copy is a duplicate everywhere.
    assert_eq!(elsewhere().await.unwrap(), [ClaimOutcome::Consumed]);
    assert_eq!(listener.consume(&[&msg("A")]).await, ConsumeSuccess);
    assert_eq!(listener.stats().decisions(Decision::Duplicate), 2);
    assert_eq!(listener.stats().events(Event::CommitFailed), 0);
    assert_eq!(
        recorder.committed.load(Ordering::SeqCst),
        2,
        "both settled once written"
    );
    assert_eq!(recorder.runs(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_commit_that_cannot_be_written_in_the_window_is_counted_as_failed() {
    let store = Arc::new(FaultyStore::new(MemoryStore::new()));
    store.fail(StoreOperation::Commit, true);
    let recorder = Arc::new(Recorder::default());
    let listener = DedupConcurrentListener::builder(recorder.clone())
        .namespace("group")
        .shared_store(store.clone())
        .commit_retry_window(Duration::from_millis(300))
        .build()
        .unwrap();
    assert_eq!(
        listener.consume(&[&msg("A"), &msg("B")]).await,
        ConsumeSuccess
    );
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(listener.stats().events(Event::CommitFailed), 2);
    assert!(listener.stats().events(Event::StoreError) >= 2);
    assert_eq!(recorder.runs(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_failed_release_is_counted_and_the_claim_expires() {
    let store = Arc::new(FaultyStore::new(MemoryStore::new()));
    store.fail(StoreOperation::Release, true);
    let recorder = Arc::new(Recorder {
        fail_runs: vec![1],
        ..Default::default()
    });
    let listener = DedupConcurrentListener::builder(recorder.clone())
        .namespace("group")
        .shared_store(store.clone())
        .processing_ttl(Duration::from_millis(200))
        .build()
        .unwrap();
    assert_eq!(listener.consume(&[&msg("A")]).await, ReconsumeLater);
    assert_eq!(listener.stats().events(Event::ReleaseFailed), 1);
    assert_eq!(
        listener.consume(&[&msg("A")]).await,
        ReconsumeLater,
        "deferred while the stale claim lives"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(listener.consume(&[&msg("A")]).await, ConsumeSuccess);
    assert_eq!((recorder.runs(), recorder.successes()), (2, 1));
}

#[tokio::test]
async fn deferral_on_the_last_reconsume_attempts_is_loud() {
    let store = Arc::new(MemoryStore::new());
    store
        .claim(
            &[record_key("A")],
            OwnerToken::random(),
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    let recorder = Arc::new(Recorder::default());
    let listener = listener(&recorder, store);
    let early = message("Orders").uniq_key("A").reconsume_times(3).build();
    assert_eq!(listener.consume(&[&early]).await, ReconsumeLater);
    assert_eq!(listener.stats().events(Event::DeferredNearDeadLetter), 0);
    let last = message("Orders").uniq_key("A").reconsume_times(15).build();
    assert_eq!(listener.consume(&[&last]).await, ReconsumeLater);
    assert_eq!(listener.stats().events(Event::DeferredNearDeadLetter), 1);
    assert_eq!(recorder.runs(), 0);
}

#[tokio::test]
async fn keys_with_separators_and_unicode_are_distinct_records() {
    let recorder = Arc::new(Recorder::default());
    let listener = DedupConcurrentListener::builder(recorder.clone().with_key(KeyStrategy::Keys))
        .namespace("group")
        .store(MemoryStore::new())
        .build()
        .unwrap();
    let keys = [
        "a:b",
        "a%3Ab",
        "a",
        "b:c",
        "#a",
        "заказ:1",
        "🔑",
        "a b",
        &"x".repeat(5000),
    ];
    for key in keys {
        let m = message("Orders").uniq_key(key).keys(key).build();
        assert_eq!(listener.consume(&[&m]).await, ConsumeSuccess);
        assert_eq!(listener.consume(&[&m]).await, ConsumeSuccess);
    }
    assert_eq!(
        recorder.runs(),
        keys.len(),
        "each key once, none taken for another"
    );
    assert_eq!(
        listener.stats().decisions(Decision::Duplicate),
        keys.len() as u64
    );
}

#[tokio::test(start_paused = true)]
async fn a_copy_in_flight_in_the_same_listener_waits_instead_of_a_retry_topic_trip() {
    for (wait, expect) in [
        (Duration::from_secs(5), ConsumeSuccess),
        (Duration::ZERO, ReconsumeLater),
    ] {
        let recorder = Arc::new(Recorder {
            sleep: Duration::from_millis(400),
            ..Default::default()
        });
        let listener = DedupConcurrentListener::builder(recorder.clone())
            .namespace("group")
            .store(MemoryStore::new())
            .in_flight_wait(wait)
            .build()
            .unwrap();
        let first = {
            let listener = listener.clone();
            tokio::spawn(async move { listener.consume(&[&msg("A")]).await })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        // Another batch of the same listener holds A and a fresh B.
        let second = listener.consume(&[&msg("B"), &msg("A")]).await;
        assert_eq!(first.await.unwrap(), ConsumeSuccess);
        assert_eq!(second, expect, "in_flight_wait {wait:?}");
        assert_eq!(recorder.runs(), 2, "A once, B once");
        let stats = listener.stats();
        if wait.is_zero() {
            assert_eq!(stats.decisions(Decision::DeferredInFlight), 1);
        } else {
            assert_eq!(stats.decisions(Decision::DeferredInFlight), 0);
            assert_eq!(
                stats.decisions(Decision::Duplicate),
                1,
                "A's copy was acked after the wait"
            );
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_batch_does_not_leave_copies_waiting() {
    let recorder = Arc::new(Recorder {
        sleep: Duration::from_secs(10),
        ..Default::default()
    });
    let store = Arc::new(MemoryStore::new());
    let listener = DedupConcurrentListener::builder(recorder.clone())
        .namespace("group")
        .shared_store(store.clone())
        .in_flight_wait(Duration::from_secs(30))
        .build()
        .unwrap();
    // The first batch is cancelled while its handler runs; its claim stays in the store.
    let cancelled =
        tokio::time::timeout(Duration::from_millis(200), listener.consume(&[&msg("A")])).await;
    assert!(cancelled.is_err());
    // A copy does not wait 30 s for a batch that is gone: the store answers in flight.
    let started = tokio::time::Instant::now();
    assert_eq!(listener.consume(&[&msg("A")]).await, ReconsumeLater);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "waited {:?}",
        started.elapsed()
    );
}

/// A listener whose commits fail (until `store.fail(Commit, false)`), with the test's handle
/// on the store.
fn failing_commits(
    recorder: &Arc<Recorder>,
) -> (DedupConcurrentListener, Arc<FaultyStore<MemoryStore>>) {
    let store = Arc::new(FaultyStore::new(MemoryStore::new()));
    store.fail(StoreOperation::Commit, true);
    let listener = DedupConcurrentListener::builder(recorder.clone())
        .namespace("group")
        .shared_store(store.clone())
        .build()
        .unwrap();
    (listener, store)
}

#[tokio::test(start_paused = true)]
async fn shutdown_waits_for_a_commit_being_retried_and_it_lands_when_the_store_returns() {
    let recorder = Arc::new(Recorder::default());
    let (listener, store) = failing_commits(&recorder);
    assert_eq!(listener.consume(&[&msg("A")]).await, ConsumeSuccess);
    eventually(|| listener.stats().events(Event::CommitDeferred) == 1).await;
    assert_eq!(listener.stats().events(Event::CommitDeferred), 1);
    // The store comes back a while after shutdown begins.
    let healer = {
        let store = store.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(3)).await;
            store.fail(StoreOperation::Commit, false);
        })
    };
    let started = tokio::time::Instant::now();
    let report = listener.shutdown(Duration::from_secs(10)).await;
    healer.await.unwrap();
    assert_eq!((report.pending_commits, report.failed_commits), (1, 0));
    assert!(report.is_clean());
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "it returned once the commit landed"
    );
    assert_eq!(recorder.committed.load(Ordering::SeqCst), 1);
    let other = OwnerToken::random();
    let ttl = Duration::from_secs(60);
    assert_eq!(
        store
            .inner()
            .claim(&[record_key("A")], other, ttl)
            .await
            .unwrap(),
        [ClaimOutcome::Consumed]
    );
}

#[tokio::test(start_paused = true)]
async fn shutdown_reports_a_commit_that_cannot_land_before_its_timeout_as_failed() {
    let recorder = Arc::new(Recorder::default());
    let (listener, _store) = failing_commits(&recorder);
    assert_eq!(
        listener.consume(&[&msg("A"), &msg("B")]).await,
        ConsumeSuccess
    );
    let started = tokio::time::Instant::now();
    let report = listener.shutdown(Duration::from_secs(4)).await;
    let took = started.elapsed();
    assert_eq!((report.pending_commits, report.failed_commits), (2, 2));
    assert!(!report.is_clean());
    assert!(
        took >= Duration::from_secs(4) && took < Duration::from_secs(5),
        "{took:?}"
    );
    assert_eq!(
        recorder.given_up.load(Ordering::SeqCst),
        2,
        "on_settled told"
    );
    assert_eq!(listener.stats().events(Event::CommitFailed), 2);
    // Nothing runs after shutdown: a second one finds nothing pending.
    let again = listener.shutdown(Duration::from_secs(1)).await;
    assert_eq!((again.pending_commits, again.failed_commits), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn dropping_the_listener_gives_up_its_background_commits_and_says_so() {
    let recorder = Arc::new(Recorder::default());
    let (listener, _store) = failing_commits(&recorder);
    assert_eq!(listener.consume(&[&msg("A")]).await, ConsumeSuccess);
    let stats = listener.stats().clone();
    drop(listener);
    // The retry task notices at once; well inside the 60 s commit retry window.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(recorder.given_up.load(Ordering::SeqCst), 1);
    assert_eq!(stats.events(Event::CommitFailed), 1);
}

#[test]
fn the_store_and_ttls_are_checked_at_build() {
    let builder = || DedupConcurrentListener::builder(Arc::new(Recorder::default())).namespace("g");
    assert_eq!(
        builder().build().map(|_| ()),
        Err(ConfigError::MissingStore)
    );
    for (setting, ttl) in [
        ("processing_ttl", Duration::MAX),
        ("record_ttl", Duration::MAX),
        ("record_ttl", Duration::from_secs(366 * 24 * 3600)),
    ] {
        let built = match setting {
            "processing_ttl" => builder().processing_ttl(ttl).record_ttl(ttl),
            _ => builder().record_ttl(ttl),
        };
        let err = built
            .store(MemoryStore::new())
            .build()
            .map(|_| ())
            .unwrap_err();
        assert!(
            matches!(err, ConfigError::BadDuration { setting: s, .. } if s == setting),
            "{setting} {ttl:?}: {err}"
        );
    }
    let year = Duration::from_secs(365 * 24 * 3600);
    assert!(builder()
        .record_ttl(year)
        .store(MemoryStore::new())
        .build()
        .is_ok());
}

/// A memory store whose commits wait until the test opens the gate; with `hold_detached`, it
/// takes detached commits and holds them until the test finishes or drops them.
struct GatedCommits {
    inner: MemoryStore,
    gate: tokio::sync::Semaphore,
    hold_detached: bool,
    held: std::sync::Mutex<Vec<DetachedCommit>>,
}

impl GatedCommits {
    /// The detached commits held so far, taken.
    fn take_held(&self) -> Vec<DetachedCommit> {
        std::mem::take(&mut *self.held.lock().unwrap())
    }
}

impl DedupStore for GatedCommits {
    fn claim<'a>(
        &'a self,
        keys: &'a [RecordKey],
        token: OwnerToken,
        ttl: Duration,
    ) -> futures::future::BoxFuture<'a, Result<Vec<ClaimOutcome>, rocketmq_dedup::StoreError>> {
        self.inner.claim(keys, token, ttl)
    }

    fn commit<'a>(
        &'a self,
        keys: &'a [RecordKey],
        token: OwnerToken,
        ttl: Duration,
    ) -> futures::future::BoxFuture<'a, Result<Vec<CommitOutcome>, rocketmq_dedup::StoreError>>
    {
        Box::pin(async move {
            let _pass = self.gate.acquire().await.expect("the gate stays open");
            self.inner.commit(keys, token, ttl).await
        })
    }

    fn commit_detached(&self, commit: DetachedCommit) -> Option<DetachedCommit> {
        if !self.hold_detached {
            return Some(commit);
        }
        self.held.lock().unwrap().push(commit);
        None
    }

    fn release<'a>(
        &'a self,
        keys: &'a [RecordKey],
        token: OwnerToken,
    ) -> futures::future::BoxFuture<'a, Result<Vec<bool>, rocketmq_dedup::StoreError>> {
        self.inner.release(keys, token)
    }

    fn renew<'a>(
        &'a self,
        keys: &'a [RecordKey],
        token: OwnerToken,
        ttl: Duration,
    ) -> futures::future::BoxFuture<'a, Result<Vec<bool>, rocketmq_dedup::StoreError>> {
        self.inner.renew(keys, token, ttl)
    }

    fn kind(&self) -> &'static str {
        "gated"
    }
}

/// A listener over a [`GatedCommits`] store, committing after the ack or not.
fn gated_listener(
    ack_before_commit: bool,
) -> (DedupConcurrentListener, Arc<Recorder>, Arc<GatedCommits>) {
    gated_listener_with(ack_before_commit, DEFAULT_NEAR_CACHE, false)
}

/// The same, with a near-cache of `near_cache` keys, holding detached commits or not.
fn gated_listener_with(
    ack_before_commit: bool,
    near_cache: usize,
    hold_detached: bool,
) -> (DedupConcurrentListener, Arc<Recorder>, Arc<GatedCommits>) {
    let recorder = Arc::new(Recorder::default());
    let store = Arc::new(GatedCommits {
        inner: MemoryStore::new(),
        gate: tokio::sync::Semaphore::new(0),
        hold_detached,
        held: Default::default(),
    });
    let listener = DedupConcurrentListener::builder(recorder.clone())
        .namespace("group")
        .shared_store(store.clone())
        .ack_before_commit(ack_before_commit)
        .near_cache(near_cache)
        .build()
        .unwrap();
    (listener, recorder, store)
}

#[tokio::test]
async fn ack_before_commit_acks_while_the_commit_is_pending_and_shutdown_lands_it() {
    let (listener, recorder, store) = gated_listener(true);
    // The commit cannot land yet, and the batch is acked all the same.
    let status = tokio::time::timeout(Duration::from_secs(10), listener.consume(&[&msg("A")]))
        .await
        .expect("the ack does not wait for the commit");
    assert_eq!(status, ConsumeSuccess);
    assert_eq!(recorder.successes.load(Ordering::SeqCst), 1);
    assert_eq!(recorder.committed.load(Ordering::SeqCst), 0);
    let other = OwnerToken::random();
    let ttl = Duration::from_secs(60);
    assert_eq!(
        store
            .inner
            .claim(&[record_key("A")], other, ttl)
            .await
            .unwrap(),
        [ClaimOutcome::InFlight],
        "until the commit lands, the record is our claim"
    );
    // Shutdown waits for it: the store lets it through a moment after shutdown begins.
    let opener = tokio::spawn({
        let store = store.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            store.gate.add_permits(1);
        }
    });
    let report = listener.shutdown(Duration::from_secs(10)).await;
    opener.await.unwrap();
    assert_eq!((report.pending_commits, report.failed_commits), (1, 0));
    assert_eq!(recorder.committed.load(Ordering::SeqCst), 1);
    assert_eq!(
        store
            .inner
            .claim(&[record_key("A")], other, ttl)
            .await
            .unwrap(),
        [ClaimOutcome::Consumed]
    );
}

/// A commit the store took detached: the batch is acked while the store holds it, shutdown
/// waits until the store finishes it, and the outcome reaches the handler.
#[tokio::test]
async fn a_detached_commit_is_acked_at_once_and_shutdown_waits_for_it() {
    let (listener, recorder, store) = gated_listener_with(true, 0, true);
    assert_eq!(listener.consume(&[&msg("A")]).await, ConsumeSuccess);
    let held = store.take_held();
    assert_eq!(held.len(), 1, "the commit went to the store detached");
    assert_eq!(held[0].keys(), [record_key("A")]);
    let finisher = tokio::spawn({
        let store = store.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            for commit in held {
                let result = store
                    .inner
                    .commit(commit.keys(), commit.token(), commit.ttl())
                    .await;
                commit.finish(result);
            }
        }
    });
    let report = listener.shutdown(Duration::from_secs(10)).await;
    assert!(finisher.is_finished(), "shutdown waited for the store");
    assert_eq!((report.pending_commits, report.failed_commits), (1, 0));
    assert_eq!(recorder.committed.load(Ordering::SeqCst), 1);
}

/// A detached commit the store drops unfinished is not lost: the listener retries it.
#[tokio::test]
async fn a_detached_commit_the_store_drops_is_retried() {
    let (listener, recorder, store) = gated_listener_with(true, 0, true);
    assert_eq!(listener.consume(&[&msg("A")]).await, ConsumeSuccess);
    assert_eq!(store.take_held().len(), 1, "dropped here");
    // The retry goes through `commit`, which the gate lets through.
    store.gate.add_permits(1);
    let report = listener.shutdown(Duration::from_secs(10)).await;
    assert_eq!((report.pending_commits, report.failed_commits), (1, 0));
    assert_eq!(recorder.committed.load(Ordering::SeqCst), 1);
    assert_eq!(
        claim_by_another(&store.inner, "A").await,
        ClaimOutcome::Consumed
    );
}

/// What a claim of `uniq`'s record by a new owner finds.
async fn claim_by_another(store: &impl DedupStore, uniq: &str) -> ClaimOutcome {
    let claimed = store
        .claim(
            &[record_key(uniq)],
            OwnerToken::random(),
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    claimed[0]
}

/// A handler whose `on_settled` panics.
struct PanicsOnSettled;

impl DedupHandler for PanicsOnSettled {
    async fn handle(&self, _msg: &MessageExt) -> Result<(), HandlerError> {
        Ok(())
    }

    fn on_settled(
        &self,
        _key: &RecordKey,
        _result: Result<CommitOutcome, &rocketmq_dedup::StoreError>,
    ) {
        panic!("on_settled panicked");
    }
}

/// A detached commit finishes on whatever thread its answer arrives (here, at once, in the
/// batch's own call): a panic in `on_settled` there is caught, and the batch is acked.
#[tokio::test]
async fn a_panic_in_on_settled_after_a_detached_commit_does_not_reach_the_batch() {
    let store = Arc::new(MemoryStore::new());
    let listener = DedupConcurrentListener::builder(PanicsOnSettled)
        .namespace("group")
        .shared_store(store.clone())
        .build()
        .unwrap();
    assert_eq!(listener.consume(&[&msg("A")]).await, ConsumeSuccess);
    assert_eq!(
        claim_by_another(&*store, "A").await,
        ClaimOutcome::Consumed,
        "the commit was written before the hook ran"
    );
    let report = listener.shutdown(Duration::from_secs(5)).await;
    assert_eq!(report.failed_commits, 0);
}

#[tokio::test]
async fn without_ack_before_commit_the_ack_waits_for_the_commit() {
    let (listener, recorder, store) = gated_listener(false);
    let consume = tokio::spawn({
        let listener = listener.clone();
        async move { listener.consume(&[&msg("A")]).await }
    });
    // The handler ran, but the answer waits for the commit.
    while recorder.successes.load(Ordering::SeqCst) == 0 {
        tokio::task::yield_now().await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!consume.is_finished(), "the ack waits for the commit");
    store.gate.add_permits(1);
    assert_eq!(consume.await.unwrap(), ConsumeSuccess);
    assert_eq!(recorder.committed.load(Ordering::SeqCst), 1);
}

/// A copy of A (another delivery) that arrives while A's commit is pending is a duplicate at
/// once (the near-cache knows A's handler succeeded); without a near-cache it waits for the
/// commit instead of meeting A's claim in the store and taking a retry-topic trip.
#[tokio::test]
async fn ack_before_commit_answers_a_local_copy_while_the_commit_is_pending() {
    for near_cache in [DEFAULT_NEAR_CACHE, 0] {
        let (listener, recorder, store) = gated_listener_with(true, near_cache, false);
        assert_eq!(listener.consume(&[&msg("A")]).await, ConsumeSuccess);
        let copy = message("Orders")
            .uniq_key("A")
            .msg_id("offset-A-copy")
            .build();
        let answered = tokio::spawn({
            let listener = listener.clone();
            async move { listener.consume(&[&copy]).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(
            recorder.committed.load(Ordering::SeqCst),
            0,
            "still pending"
        );
        match near_cache {
            0 => assert!(
                !answered.is_finished(),
                "without a near-cache the copy waits for the pending commit"
            ),
            _ => assert!(
                answered.is_finished(),
                "the copy is answered while the commit is pending"
            ),
        }
        store.gate.add_permits(1);
        assert_eq!(answered.await.unwrap(), ConsumeSuccess);
        assert_eq!(
            recorder.runs.load(Ordering::SeqCst),
            1,
            "the handler ran once"
        );
        assert_eq!(listener.stats().decisions(Decision::Duplicate), 1);
        assert_eq!(listener.stats().decisions(Decision::DeferredInFlight), 0);
        listener.shutdown(Duration::from_secs(5)).await;
    }
}

/// A copy of a key this listener committed is a duplicate without a store call: here the
/// store refuses every claim after the first message, and only the near-cache can answer.
#[tokio::test]
async fn the_near_cache_answers_copies_of_keys_this_listener_committed() {
    for capacity in [DEFAULT_NEAR_CACHE, 0] {
        let recorder = Arc::new(Recorder::default());
        let store = Arc::new(FaultyStore::new(MemoryStore::new()));
        let listener = DedupConcurrentListener::builder(recorder.clone())
            .namespace("group")
            .shared_store(store.clone())
            .near_cache(capacity)
            .build()
            .unwrap();
        assert_eq!(listener.consume(&[&msg("A")]).await, ConsumeSuccess);
        eventually(|| recorder.committed.load(Ordering::SeqCst) == 1).await;
        store.fail(StoreOperation::Claim, true);
        let copy = message("Orders")
            .uniq_key("A")
            .msg_id("offset-A-copy")
            .build();
        let status = listener.consume(&[&copy]).await;
        match capacity {
            0 => {
                assert_eq!(
                    status, ReconsumeLater,
                    "without it, the claim must ask the store"
                );
                assert_eq!(listener.stats().decisions(Decision::StoreUnavailable), 1);
            }
            _ => {
                assert_eq!(status, ConsumeSuccess);
                assert_eq!(listener.stats().decisions(Decision::Duplicate), 1);
            }
        }
        assert_eq!(recorder.runs(), 1, "the handler ran once");
    }
}
