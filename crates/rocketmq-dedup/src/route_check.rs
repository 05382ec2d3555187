//! A start-up check that rocketmq-client-rust can read a topic's route from the name server,
//! so that a consumer fails with a clear error instead of idling.
//!
//! rocketmq-client-rust 1.0.0 cannot decode the topic routes of Apache RocketMQ 4.x name
//! servers (their broker data lacks `enableActingMaster`, which the client requires): a
//! producer's send then fails with `core.serialization.failed`, and a push consumer logs one
//! WARN and receives nothing, with no error anywhere. rocketmq-rust's broker and Apache 5.x
//! send the field. Call [`check_topic_route`] once after `consumer.start()`:
//!
//! ```no_run
//! # async fn run(consumer: &mut rocketmq_client_rust::DefaultMQPushConsumer) -> Result<(), Box<dyn std::error::Error>> {
//! let queues = rocketmq_dedup::route_check::check_topic_route(consumer, "Orders").await?;
//! println!("Orders has {queues} queues");
//! # Ok(()) }
//! ```

use rocketmq_client_rust::MQConsumer;

/// Why a topic's route could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RouteCheckError {
    /// The name server answered with a route this client cannot decode: a 4.x broker.
    #[error("the route of topic {topic} cannot be decoded by rocketmq-client-rust 1.0.0: the name server is most likely Apache RocketMQ 4.x, whose broker data lacks `enableActingMaster` (use rocketmq-rust's broker or Apache RocketMQ 5.x; see the README's \"Which brokers work\")")]
    Undecodable {
        /// The topic.
        topic: String,
    },
    /// The topic has no route (it does not exist, and the broker does not create topics).
    #[error("topic {topic} has no route on the name server (does it exist?)")]
    NoRoute {
        /// The topic.
        topic: String,
    },
    /// The route could not be fetched (name server unreachable, …).
    #[error("the route of topic {topic} could not be fetched: {reason}")]
    Failed {
        /// The topic.
        topic: String,
        /// The client's error, as it prints.
        reason: String,
    },
}

/// Fetches `topic`'s route through a started consumer; answers its number of queues.
pub async fn check_topic_route<C: MQConsumer>(
    consumer: &mut C,
    topic: &str,
) -> Result<usize, RouteCheckError> {
    match consumer.fetch_subscribe_message_queues(topic).await {
        Ok(queues) if queues.is_empty() => Err(RouteCheckError::NoRoute {
            topic: topic.to_owned(),
        }),
        Ok(queues) => Ok(queues.len()),
        Err(e) => Err(classify(topic, &e.to_string())),
    }
}

/// What a route error's text says (the client has no typed variant for a decode failure).
fn classify(topic: &str, error: &str) -> RouteCheckError {
    let topic = topic.to_owned();
    if error.contains("serialization") || error.contains("deserializ") {
        RouteCheckError::Undecodable { topic }
    } else if error.to_ascii_lowercase().contains("not exist") || error.contains("No route") {
        RouteCheckError::NoRoute { topic }
    } else {
        RouteCheckError::Failed {
            topic,
            reason: error.to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_decode_failure_names_the_4x_broker_cause() {
        // The text rocketmq-client-rust 1.0.0 answers for a 4.x route (ROCKETMQ-NOTES.md).
        let err = classify("Orders", "core.serialization.failed: Serialization failed");
        assert!(matches!(err, RouteCheckError::Undecodable { .. }));
        assert!(err.to_string().contains("enableActingMaster"), "{err}");
        assert!(matches!(
            classify("Orders", "topic route info of Orders not exist"),
            RouteCheckError::NoRoute { .. }
        ));
        assert!(matches!(
            classify("Orders", "connection refused"),
            RouteCheckError::Failed { .. }
        ));
    }
}
