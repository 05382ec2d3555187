//! At the default log level (INFO), logs name messages by id and never print a password, a
//! message body or a business key, whatever goes wrong: store outages, bad keys, failing and
//! panicking handlers.

#[path = "support/log_capture.rs"]
mod log_capture;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use log_capture::Capture;

use rocketmq_dedup::store::RedisStore;
use rocketmq_dedup::testing::message;
use rocketmq_dedup::{handler_fn, DedupConcurrentListener, DedupHandler, KeyStrategy};
use rocketmq_dedup_testkit::{RedisOptions, RedisServer};
use rocketmq_model::common::message::message_ext::MessageExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_the_logs_at_the_default_level() {
    let capture = Capture::default();
    let writer = capture.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    const PASSWORD: &str = "pw-Zx81-secret";
    const BODY_SECRET: &str = "4111-1111-1111-1111";
    const BUSINESS_KEY: &str = "order-key-Qy7";
    let mut redis = RedisServer::start_local(RedisOptions {
        password: Some(PASSWORD.into()),
        ..Default::default()
    })
    .unwrap();
    let store = RedisStore::builder(redis.url())
        .response_timeout(Duration::from_millis(200))
        .connect()
        .await
        .unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let listener = DedupConcurrentListener::builder(
        handler_fn(move |_: &MessageExt| {
            let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
            match n {
                1 => Err(format!("declined (run {n})").into()),
                2 => panic!("handler bug"),
                _ => Ok(()),
            }
        })
        .with_key(KeyStrategy::json_pointer("/orderId")),
    )
    .namespace("group")
    .store(store)
    .store_timeout(Duration::from_millis(300))
    .build()
    .unwrap();

    let good = message("Orders")
        .uniq_key("U1")
        .body(format!(
            r#"{{"orderId":"{BUSINESS_KEY}","card":"{BODY_SECRET}"}}"#
        ))
        .build();
    let bad_json = message("Orders")
        .uniq_key("U2")
        .body(format!("not json {BODY_SECRET}"))
        .build();
    listener.consume(&[&good]).await; // handler error
    listener.consume(&[&good]).await; // handler panic
    listener.consume(&[&bad_json]).await; // key error, fallback
    redis.kill();
    listener.consume(&[&good]).await; // store down
    assert!(calls.load(Ordering::SeqCst) >= 2);

    let logs = capture.text();
    assert!(
        logs.contains("WARN") && logs.contains("ERROR"),
        "the failures were logged:\n{logs}"
    );
    for secret in [PASSWORD, BODY_SECRET, BUSINESS_KEY] {
        assert!(
            !logs.contains(secret),
            "{secret} leaked into the logs:\n{logs}"
        );
    }
}
