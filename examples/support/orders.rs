//! The order-payment domain shared by the examples: a handler that "charges" each order once
//! and keeps a ledger of its effects, and the messages a shop would send.

#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use rocketmq_client_rust::DefaultMQProducer;
use rocketmq_model::common::message::MessageTrait;

use rocketmq_dedup::client::explain_client_error;
use rocketmq_dedup::{DedupHandler, DedupKey, HandlerError, KeyError, KeyStrategy};
use rocketmq_model::common::message::message_ext::MessageExt;
use rocketmq_model::common::message::message_single::Message;

/// Charges an order's payment. Not idempotent on its own: charging twice charges twice.
/// Deduplicated by the business key `orderId` of the JSON body.
#[derive(Debug, Default)]
pub struct OrderPayments {
    /// Charges made, by order id: the effects the demo counts.
    pub charges: Mutex<HashMap<String, u32>>,
    /// Print a line per charge.
    pub verbose: bool,
}

impl OrderPayments {
    /// Orders charged at least once.
    pub fn orders_charged(&self) -> usize {
        self.charges.lock().unwrap().len()
    }

    /// Charges made in all.
    pub fn charges_made(&self) -> u32 {
        self.charges.lock().unwrap().values().sum()
    }
}

impl DedupHandler for OrderPayments {
    async fn handle(&self, msg: &MessageExt) -> Result<(), HandlerError> {
        // Bodies without the fields (or not JSON at all) are charged under the message id.
        let order: serde_json::Value =
            serde_json::from_slice(msg.body_slice()).unwrap_or(serde_json::Value::Null);
        let msg_id = msg.msg_id.to_string();
        let id = order["orderId"].as_str().unwrap_or(msg_id.as_str());
        let cents = order["amountCents"].as_u64().unwrap_or(0);
        *self
            .charges
            .lock()
            .unwrap()
            .entry(id.to_owned())
            .or_default() += 1;
        if self.verbose {
            println!("effect: charged {id} {}.{:02}", cents / 100, cents % 100);
        }
        Ok(())
    }

    fn dedup_key(&self, msg: &MessageExt) -> Result<DedupKey, KeyError> {
        KeyStrategy::json_pointer("/orderId").derive(msg)
    }
}

/// A paid-order message.
pub fn order_message(topic: &str, order_id: &str, amount_cents: u64) -> Message {
    Message::builder()
        .topic(topic)
        .tags("paid")
        .key(order_id)
        .body_slice(
            format!(r#"{{"orderId":"{order_id}","amountCents":{amount_cents}}}"#).as_bytes(),
        )
        .build_unchecked()
}

/// What a run of the producer sends: `messages` in all, of which `unique` distinct orders;
/// the rest are duplicates, alternately sent as new messages (a user double-submitting) and
/// as the same message with its UNIQ_KEY (a producer retry after a lost ack).
#[derive(Debug, Clone, Copy)]
pub struct SendPlan {
    pub messages: usize,
    pub unique: usize,
}

impl SendPlan {
    /// `messages` in all with a share `duplicates` (0.0..1.0) of duplicates.
    pub fn new(messages: usize, duplicates: f64) -> Self {
        let duplicates = duplicates.clamp(0.0, 0.95);
        let unique = ((messages as f64) * (1.0 - duplicates)).round().max(1.0) as usize;
        SendPlan {
            messages: messages.max(unique),
            unique,
        }
    }

    /// The order id of the i-th message (duplicates repeat earlier ids) and whether it is a
    /// resend of the same message.
    pub fn order_of(&self, i: usize, run: &str) -> (String, bool) {
        if i < self.unique {
            (format!("{run}-order-{i}"), false)
        } else {
            let dup = i - self.unique;
            (
                format!("{run}-order-{}", (dup * 7) % self.unique),
                dup % 2 == 1,
            )
        }
    }
}

/// Sends the messages of `plan` to `topic`, retrying each send for a while (a new topic's
/// route is created by the first send).
pub async fn send_orders(
    producer: &DefaultMQProducer,
    topic: &str,
    plan: SendPlan,
    run: &str,
) -> anyhow::Result<()> {
    let mut uniq_keys: HashMap<String, String> = HashMap::new();
    for i in 0..plan.messages {
        let (order_id, resend) = plan.order_of(i, run);
        let mut msg = order_message(topic, &order_id, 1000 + i as u64);
        if resend {
            if let Some(uniq) = uniq_keys.get(&order_id) {
                msg.put_property("UNIQ_KEY".into(), uniq.as_str().into());
            }
        }
        let mut attempts = 0;
        let result = loop {
            attempts += 1;
            match producer.send_with_timeout(msg.clone(), 5000).await {
                Ok(Some(result)) => break result,
                // A route of Apache RocketMQ 4.x: no retry reads it.
                Err(e) if explain_client_error(&e).is_some() => {
                    return Err(explain_client_error(&e).map_or_else(|| e.into(), Into::into))
                }
                Ok(None) | Err(_) if attempts < 20 => {
                    tokio::time::sleep(Duration::from_millis(500)).await
                }
                Ok(None) => anyhow::bail!("the broker gave no send result"),
                Err(e) => return Err(e.into()),
            }
        };
        if let Some(uniq) = result.msg_id {
            uniq_keys
                .entry(order_id)
                .or_insert_with(|| uniq.to_string());
        }
    }
    Ok(())
}
