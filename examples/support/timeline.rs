//! The order-timeline domain of the orderly example and its tests: every order goes through
//! created → paid → shipped, three events sent in that order to one queue (the order id is the
//! sharding key). The handler applies each event once and in order, and counts any event that
//! arrives out of order (there must be none).

#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use rocketmq_client_rust::DefaultMQProducer;
use rocketmq_dedup::client::explain_client_error;
use rocketmq_dedup::{DedupHandler, DedupKey, HandlerError, KeyError, KeyStrategy};
use rocketmq_model::common::message::message_ext::MessageExt;
use rocketmq_model::common::message::message_queue::MessageQueue;
use rocketmq_model::common::message::message_single::Message;
use rocketmq_model::common::message::MessageTrait;

/// The events of an order, in order: step 1, 2, 3.
pub const STEPS: [&str; 3] = ["created", "paid", "shipped"];

/// Event `step` (1-based) of `order_id`: keyed `<order>#<step>` (the business key the
/// handler deduplicates by), tagged with the event's name.
pub fn event_message(topic: &str, order_id: &str, step: usize) -> Message {
    let event = STEPS[step - 1];
    Message::builder()
        .topic(topic)
        .tags(event)
        .key(format!("{order_id}#{step}"))
        .body_slice(
            format!(r#"{{"orderId":"{order_id}","step":{step},"event":"{event}"}}"#).as_bytes(),
        )
        .build_unchecked()
}

/// Applies order events once each, in order.
#[derive(Debug, Default)]
pub struct Timeline {
    /// The steps applied per order, in the order they were applied.
    pub applied: Mutex<HashMap<String, Vec<u32>>>,
    /// Events applied while an earlier step of their order was missing.
    pub out_of_order: AtomicUsize,
    /// Event key (`<order>#<step>`) → how many runs fail before one succeeds.
    pub failures: Mutex<HashMap<String, u32>>,
    /// How long applying one event takes.
    pub delay: Duration,
    /// Print a line per applied event.
    pub verbose: bool,
}

impl Timeline {
    /// The steps applied to `order_id`, in order.
    pub fn steps(&self, order_id: &str) -> Vec<u32> {
        let applied = self.applied.lock().unwrap();
        applied.get(order_id).cloned().unwrap_or_default()
    }

    /// Events applied in all.
    pub fn events(&self) -> usize {
        self.applied.lock().unwrap().values().map(Vec::len).sum()
    }

    /// Orders whose steps are not exactly 1, 2, 3.
    pub fn broken_orders(&self) -> Vec<(String, Vec<u32>)> {
        let applied = self.applied.lock().unwrap();
        let mut broken: Vec<_> = applied
            .iter()
            .filter(|(_, steps)| steps.as_slice() != [1, 2, 3])
            .map(|(order, steps)| (order.clone(), steps.clone()))
            .collect();
        broken.sort();
        broken
    }

    fn fails_now(&self, key: &str) -> bool {
        let mut failures = self.failures.lock().unwrap();
        match failures.get_mut(key) {
            Some(n) if *n > 0 => {
                *n -= 1;
                true
            }
            _ => false,
        }
    }
}

impl DedupHandler for Timeline {
    async fn handle(&self, msg: &MessageExt) -> Result<(), HandlerError> {
        let event: serde_json::Value = serde_json::from_slice(msg.body_slice())?;
        let order = event["orderId"].as_str().ok_or("event without orderId")?;
        let step = event["step"].as_u64().ok_or("event without step")? as u32;
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        if self.fails_now(&format!("{order}#{step}")) {
            return Err(format!("could not apply {order}#{step} this time").into());
        }
        let mut applied = self.applied.lock().unwrap();
        let steps = applied.entry(order.to_owned()).or_default();
        if step as usize != steps.len() + 1 {
            self.out_of_order.fetch_add(1, Ordering::SeqCst);
        }
        steps.push(step);
        if self.verbose {
            let name = STEPS.get(step as usize - 1).unwrap_or(&"?");
            println!("effect: {order} {name}");
        }
        Ok(())
    }

    fn dedup_key(&self, msg: &MessageExt) -> Result<DedupKey, KeyError> {
        KeyStrategy::Keys.derive(msg)
    }
}

/// Picks the queue of an order: every event of one order goes to the same queue.
pub fn queue_of(queues: &[MessageQueue], order_id: &str) -> Option<MessageQueue> {
    let hash = order_id
        .bytes()
        .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
    queues
        .get((hash % queues.len().max(1) as u64) as usize)
        .cloned()
}

/// Sends `msg` to its order's queue, retrying while the topic's route is being created;
/// answers its UNIQ_KEY.
pub async fn send_ordered(
    producer: &DefaultMQProducer,
    msg: Message,
    order_id: &str,
) -> anyhow::Result<String> {
    for attempt in 1.. {
        let select = |queues: &[MessageQueue], _: &Message, order: &String| queue_of(queues, order);
        match producer
            .send_with_selector(msg.clone(), select, order_id.to_owned())
            .await
        {
            Ok(Some(result)) => {
                return Ok(result.msg_id.map(|id| id.to_string()).unwrap_or_default())
            }
            // A route of Apache RocketMQ 4.x: no retry reads it.
            Err(e) if explain_client_error(&e).is_some() => {
                return Err(explain_client_error(&e).map_or_else(|| e.into(), Into::into))
            }
            Ok(None) | Err(_) if attempt < 40 => {
                tokio::time::sleep(Duration::from_millis(500)).await
            }
            Ok(None) => anyhow::bail!("the broker gave no send result"),
            Err(e) => return Err(e.into()),
        }
    }
    unreachable!("the loop returns")
}

/// Sends the timelines of `orders` orders (`<run>-order-<i>`): every order's step 1, then
/// every order's step 2, then step 3. Every `dup_every`-th event is sent twice: alternately
/// again with its UNIQ_KEY (a producer retry) and as a new message with the same key (a
/// double submit). Answers the messages sent.
pub async fn send_timelines(
    producer: &DefaultMQProducer,
    topic: &str,
    orders: usize,
    run: &str,
    dup_every: usize,
) -> anyhow::Result<usize> {
    let mut sent = 0;
    for step in 1..=STEPS.len() {
        for i in 0..orders {
            let order = format!("{run}-order-{i}");
            let msg = event_message(topic, &order, step);
            let uniq = send_ordered(producer, msg.clone(), &order).await?;
            sent += 1;
            let n = step * orders + i;
            if dup_every > 0 && n.is_multiple_of(dup_every) {
                let mut again = msg;
                if (n / dup_every).is_multiple_of(2) {
                    again.put_property("UNIQ_KEY".into(), uniq.as_str().into());
                }
                send_ordered(producer, again, &order).await?;
                sent += 1;
            }
        }
    }
    Ok(sent)
}
