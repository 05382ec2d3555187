//! The chaos run's producer: `messages` orders at a steady rate, every fifth a duplicate of
//! an earlier order (alternately a new message and a resend with the same UNIQ_KEY).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rocketmq_client_rust::DefaultMQProducer;
use rocketmq_dedup_testkit::send_with_retry;
use rocketmq_model::common::message::MessageTrait;

use crate::orders;

/// What was sent.
#[derive(Debug)]
pub struct Sent {
    /// Messages sent.
    pub messages: usize,
    /// Distinct orders among them.
    pub unique: usize,
    /// The orders.
    pub orders: HashSet<String>,
}

/// Sends `messages` at `rate` per second from 8 tasks.
pub async fn produce(
    producer: Arc<DefaultMQProducer>,
    topic: String,
    messages: usize,
    rate: f64,
) -> Result<Sent, Box<dyn std::error::Error + Send + Sync>> {
    const TASKS: usize = 8;
    let uniq_keys: Arc<Mutex<HashMap<String, String>>> = Arc::default();
    let start = tokio::time::Instant::now();
    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let (producer, topic, uniq_keys) = (producer.clone(), topic.clone(), uniq_keys.clone());
        tasks.push(tokio::spawn(async move {
            let mut sent = 0usize;
            for i in (task..messages).step_by(TASKS) {
                tokio::time::sleep_until(start + Duration::from_secs_f64(i as f64 / rate)).await;
                let (order, resend) = chaos_order(i);
                let mut msg = orders::order_message(&topic, &order, i as u64);
                if resend {
                    if let Some(uniq) = uniq_keys.lock().unwrap().get(&order) {
                        msg.put_property("UNIQ_KEY".into(), uniq.as_str().into());
                    }
                }
                let result = send_with_retry(&producer, &msg, Duration::from_secs(120)).await?;
                if let Some(uniq) = result.msg_id {
                    uniq_keys
                        .lock()
                        .unwrap()
                        .entry(order)
                        .or_insert_with(|| uniq.to_string());
                }
                sent += 1;
            }
            Ok::<usize, rocketmq_client_rust::ClientError>(sent)
        }));
    }
    let mut total = 0;
    for task in tasks {
        total += task.await??;
    }
    let orders: HashSet<String> = (0..messages).map(|i| chaos_order(i).0).collect();
    Ok(Sent {
        messages: total,
        unique: orders.len(),
        orders,
    })
}

/// The order of message `i`: every 5th message is a duplicate of an earlier order.
pub fn chaos_order(i: usize) -> (String, bool) {
    if i % 5 == 4 {
        let earlier = i - i / 5 - 1; // orders assigned so far, minus one
        let pick = (i / 5).wrapping_mul(7919) % (earlier + 1);
        (format!("o-{pick}"), (i / 5) % 2 == 1)
    } else {
        (format!("o-{}", i - i / 5), false)
    }
}
