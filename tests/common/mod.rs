//! Shared by the end-to-end tests: the stack, a ledger of effects, a handler that records
//! them, and messages with business keys.

#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rocketmq_client_rust::DefaultMQProducer;
use rocketmq_dedup::{DedupHandler, DedupKey, HandlerError, KeyError, KeyStrategy};
use rocketmq_dedup_testkit::{send_with_retry, RocketMqStack, StackOptions};
use rocketmq_model::common::message::message_ext::MessageExt;
use rocketmq_model::common::message::message_single::Message;
use rocketmq_model::common::message::MessageTrait;

/// A name server and broker (or the stack `ROCKETMQ_NAMESRV_ADDR` names).
pub fn stack() -> RocketMqStack {
    RocketMqStack::start(StackOptions::new(env!(
        "CARGO_BIN_EXE_rocketmq-dedup-stack"
    )))
    .expect("RocketMQ stack starts")
}

/// Logs to the test output when `RUST_LOG` is set.
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// Effects by business key: what the handler did, once per run that succeeded.
#[derive(Debug, Default)]
pub struct Ledger {
    effects: Mutex<HashMap<String, u32>>,
}

impl Ledger {
    pub fn record(&self, key: &str) {
        *self
            .effects
            .lock()
            .unwrap()
            .entry(key.to_owned())
            .or_default() += 1;
    }
    pub fn keys(&self) -> usize {
        self.effects.lock().unwrap().len()
    }
    pub fn total(&self) -> u32 {
        self.effects.lock().unwrap().values().sum()
    }
    pub fn count(&self, key: &str) -> u32 {
        self.effects.lock().unwrap().get(key).copied().unwrap_or(0)
    }
    /// Keys whose effect happened more than once.
    pub fn repeated(&self) -> Vec<(String, u32)> {
        let effects = self.effects.lock().unwrap();
        let mut repeated: Vec<_> = effects
            .iter()
            .filter(|(_, n)| **n > 1)
            .map(|(k, n)| (k.clone(), *n))
            .collect();
        repeated.sort();
        repeated
    }
}

/// Records each message's `orderId` in the ledger; deduplicates by it. Can fail its first
/// runs of some keys, and take its time on others.
#[derive(Debug, Default)]
pub struct OrderHandler {
    pub ledger: Arc<Ledger>,
    /// Key → how many runs fail before one succeeds.
    pub failures: Mutex<HashMap<String, u32>>,
    /// Key → how long its handler takes.
    pub slow: HashMap<String, Duration>,
    /// Every run, including failed ones.
    pub runs: AtomicUsize,
    /// Runs in progress now, and the most seen at once for one key.
    pub running: Mutex<HashMap<String, u32>>,
    pub max_concurrent_same_key: AtomicUsize,
}

pub fn order_id(msg: &MessageExt) -> Result<String, HandlerError> {
    let body: serde_json::Value = serde_json::from_slice(msg.body_slice())?;
    Ok(body["orderId"].as_str().ok_or("no orderId")?.to_owned())
}

impl DedupHandler for OrderHandler {
    async fn handle(&self, msg: &MessageExt) -> Result<(), HandlerError> {
        self.runs.fetch_add(1, Ordering::SeqCst);
        let key = order_id(msg)?;
        {
            let mut running = self.running.lock().unwrap();
            let n = running.entry(key.clone()).or_default();
            *n += 1;
            self.max_concurrent_same_key
                .fetch_max(*n as usize, Ordering::SeqCst);
        }
        if let Some(delay) = self.slow.get(&key) {
            tokio::time::sleep(*delay).await;
        }
        *self.running.lock().unwrap().get_mut(&key).unwrap() -= 1;
        let fail = {
            let mut failures = self.failures.lock().unwrap();
            match failures.get_mut(&key) {
                Some(n) if *n > 0 => {
                    *n -= 1;
                    true
                }
                _ => false,
            }
        };
        if fail {
            return Err(format!("payment gateway refused order {key}").into());
        }
        self.ledger.record(&key);
        Ok(())
    }

    fn dedup_key(&self, msg: &MessageExt) -> Result<DedupKey, KeyError> {
        KeyStrategy::json_pointer("/orderId").derive(msg)
    }
}

/// An order message.
pub fn order(topic: &str, order_id: &str) -> Message {
    Message::builder()
        .topic(topic)
        .tags("paid")
        .key(order_id)
        .body_slice(format!(r#"{{"orderId":"{order_id}","amount":42}}"#).as_bytes())
        .build_unchecked()
}

/// The same message again, as a producer retry sends it: same UNIQ_KEY.
pub fn resend(msg: &Message, uniq_key: &str) -> Message {
    let mut copy = msg.clone();
    copy.put_property("UNIQ_KEY".into(), uniq_key.into());
    copy
}

/// Sends `msg`; returns its UNIQ_KEY.
pub async fn send(producer: &DefaultMQProducer, msg: &Message) -> String {
    let result = send_with_retry(producer, msg, Duration::from_secs(30))
        .await
        .expect("send succeeds");
    result.msg_id.map(|id| id.to_string()).unwrap_or_default()
}

/// Waits until `done` holds, up to `timeout`; answers whether it did.
pub async fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < deadline {
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    done()
}
