//! Helpers for tests and doc examples: build a [`MessageExt`] as a consumer would receive it.
//!
//! ```
//! use rocketmq_dedup::testing::message;
//!
//! let msg = message("Orders").uniq_key("7F000001...").tag("paid").body("{}").build();
//! assert_eq!(msg.tags(), Some("paid"));
//! ```

use cheetah_string::CheetahString;
use rocketmq_model::common::message::message_ext::MessageExt;

/// Starts a [`MessageBuilder`] for a message on `topic`.
pub fn message(topic: &str) -> MessageBuilder {
    let mut msg = MessageExt::default();
    msg.message.set_topic(CheetahString::from(topic));
    MessageBuilder { msg }
}

/// Builds a [`MessageExt`] field by field.
#[derive(Debug)]
pub struct MessageBuilder {
    msg: MessageExt,
}

impl MessageBuilder {
    /// Sets the client unique id (the `UNIQ_KEY` property).
    pub fn uniq_key(self, id: &str) -> Self {
        self.property("UNIQ_KEY", id)
    }

    /// Sets the broker message id (`msg_id()`).
    pub fn msg_id(mut self, id: &str) -> Self {
        self.msg.msg_id = CheetahString::from(id);
        self
    }

    /// Sets the `KEYS` property.
    pub fn keys(self, keys: &str) -> Self {
        self.property("KEYS", keys)
    }

    /// Sets the tag.
    pub fn tag(self, tag: &str) -> Self {
        self.property("TAGS", tag)
    }

    /// Sets the body.
    pub fn body(mut self, body: impl AsRef<[u8]>) -> Self {
        let bytes = bytes::Bytes::copy_from_slice(body.as_ref());
        self.msg.message.set_body(Some(bytes));
        self
    }

    /// Sets the number of earlier deliveries.
    pub fn reconsume_times(mut self, n: i32) -> Self {
        self.msg.reconsume_times = n;
        self
    }

    /// Sets any property.
    pub fn property(mut self, name: &str, value: &str) -> Self {
        self.msg
            .message
            .properties_mut()
            .as_map_mut()
            .insert(CheetahString::from(name), CheetahString::from(value));
        self
    }

    /// The message.
    pub fn build(self) -> MessageExt {
        self.msg
    }
}
