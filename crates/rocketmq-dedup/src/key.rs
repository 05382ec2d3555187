//! Dedup keys: what identifies "the same message" for deduplication ([`KeyStrategy`]).

use std::fmt;
use std::sync::Arc;

use rocketmq_model::common::message::message_ext::MessageExt;

use crate::error::KeyError;

/// The longest dedup key accepted, in bytes. Longer keys are a [`KeyError::TooLong`]; keys
/// longer than 128 bytes are stored by their hash.
pub(crate) const MAX_KEY_BYTES: usize = 64 * 1024;

/// The largest body the JSON strategy parses, in bytes.
pub(crate) const MAX_JSON_BODY_BYTES: usize = 4 * 1024 * 1024;

/// A validated dedup key: non-empty UTF-8 of at most 64 KiB, with an optional tag
/// that qualifies it (the same key under two tags is two records).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct DedupKey {
    value: String,
    tag: Option<String>,
}

impl DedupKey {
    /// Validates `value` as a dedup key.
    pub fn new(value: impl Into<String>) -> Result<Self, KeyError> {
        let value = value.into();
        validate(&value)?;
        Ok(DedupKey { value, tag: None })
    }

    /// Validates raw bytes as a dedup key; they must be UTF-8.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, KeyError> {
        let value = std::str::from_utf8(bytes).map_err(|e| KeyError::NotUtf8 {
            valid_up_to: e.valid_up_to(),
        })?;
        DedupKey::new(value)
    }

    /// Qualifies the key by a tag. An empty tag qualifies nothing.
    pub fn with_tag(mut self, tag: impl Into<String>) -> Result<Self, KeyError> {
        let tag = tag.into();
        if tag.len() > MAX_KEY_BYTES {
            return Err(KeyError::TooLong {
                len: tag.len(),
                max: MAX_KEY_BYTES,
            });
        }
        self.tag = (!tag.is_empty()).then_some(tag);
        Ok(self)
    }

    /// The key.
    pub fn value(&self) -> &str {
        &self.value
    }

    /// The qualifying tag, if any.
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }
}

/// Keys can be business data: `Debug` shows their length, not their content.
impl fmt::Debug for DedupKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DedupKey")
            .field("len", &self.value.len())
            .field("tagged", &self.tag.is_some())
            .finish()
    }
}

fn validate(value: &str) -> Result<(), KeyError> {
    if value.is_empty() {
        return Err(KeyError::Empty);
    }
    if value.len() > MAX_KEY_BYTES {
        return Err(KeyError::TooLong {
            len: value.len(),
            max: MAX_KEY_BYTES,
        });
    }
    Ok(())
}

type KeyFn = dyn Fn(&MessageExt) -> Result<DedupKey, KeyError> + Send + Sync;

/// How a dedup key is derived from a message: what identifies "the same message" for
/// deduplication.
///
/// A strategy derives a [`DedupKey`] from a message. The default,
/// [`KeyStrategy::UniqueId`], uses the client-side unique id (the `UNIQ_KEY` property, equal to
/// the producer's `SendResult::msg_id` and stable across retries) and falls back to the message
/// id. Business keys (message `KEYS`, a field of a JSON body, any closure) catch duplicates
/// that the producer sent as separate messages.
///
/// ```
/// use rocketmq_dedup::KeyStrategy;
/// use rocketmq_dedup::testing::message;
///
/// let msg = message("Orders").tag("paid").body(r#"{"orderId":"o-42"}"#).build();
/// let key = KeyStrategy::json_pointer("/orderId").derive(&msg).unwrap();
/// assert_eq!(key.value(), "o-42");
///
/// let key = KeyStrategy::json_pointer("/orderId").tag_qualified().derive(&msg).unwrap();
/// assert_eq!(key.tag(), Some("paid"));
/// ```
#[derive(Clone, Default)]
#[non_exhaustive]
pub enum KeyStrategy {
    /// The client unique id (`UNIQ_KEY`), else the message id. The default.
    #[default]
    UniqueId,
    /// The message `KEYS` property, as sent (several keys stay joined by spaces).
    Keys,
    /// A field of the JSON body, by [JSON pointer](https://www.rfc-editor.org/rfc/rfc6901)
    /// (e.g. `/orderId`, `/payment/id`). Strings are used as they are; numbers and booleans
    /// by their JSON text.
    JsonPointer(String),
    /// Another strategy's key, qualified by the message tag (a message without a tag is a
    /// [`KeyError::MissingTag`]).
    TagQualified(Box<KeyStrategy>),
    /// Any function of the message.
    Custom(Arc<KeyFn>),
}

impl KeyStrategy {
    /// [`KeyStrategy::JsonPointer`].
    pub fn json_pointer(pointer: impl Into<String>) -> Self {
        KeyStrategy::JsonPointer(pointer.into())
    }

    /// [`KeyStrategy::Custom`] from a closure.
    pub fn custom<F>(f: F) -> Self
    where
        F: Fn(&MessageExt) -> Result<DedupKey, KeyError> + Send + Sync + 'static,
    {
        KeyStrategy::Custom(Arc::new(f))
    }

    /// This strategy, qualified by the message tag.
    pub fn tag_qualified(self) -> Self {
        KeyStrategy::TagQualified(Box::new(self))
    }

    /// Derives the key of `msg`. Never panics, whatever the message holds.
    pub fn derive(&self, msg: &MessageExt) -> Result<DedupKey, KeyError> {
        match self {
            KeyStrategy::UniqueId => unique_id(msg),
            KeyStrategy::Keys => {
                let keys = msg.property("KEYS").ok_or(KeyError::MissingKeys)?;
                DedupKey::new(keys)
            }
            KeyStrategy::JsonPointer(pointer) => json_field(msg, pointer),
            KeyStrategy::TagQualified(inner) => {
                let tag = msg.tags().filter(|t| !t.is_empty());
                let tag = tag.ok_or(KeyError::MissingTag)?.to_owned();
                inner.derive(msg)?.with_tag(tag)
            }
            KeyStrategy::Custom(f) => f(msg),
        }
    }
}

impl fmt::Debug for KeyStrategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyStrategy::UniqueId => f.write_str("UniqueId"),
            KeyStrategy::Keys => f.write_str("Keys"),
            KeyStrategy::JsonPointer(p) => f.debug_tuple("JsonPointer").field(p).finish(),
            KeyStrategy::TagQualified(inner) => f.debug_tuple("TagQualified").field(inner).finish(),
            KeyStrategy::Custom(_) => f.write_str("Custom(..)"),
        }
    }
}

/// The client unique id of `msg` (`UNIQ_KEY`), or its message id when it has none.
///
/// In rocketmq-client-rust 1.0.0 the consumer's `msg_id()` is the broker offset id, which
/// changes when a message goes through the retry topic; `UNIQ_KEY` does not.
pub fn unique_id(msg: &MessageExt) -> Result<DedupKey, KeyError> {
    let uniq = msg.message.properties().unique_client_msg_id();
    match uniq.filter(|u| !u.is_empty()) {
        Some(u) => DedupKey::new(u),
        None if !msg.msg_id.is_empty() => DedupKey::new(msg.msg_id.as_str()),
        None => Err(KeyError::MissingUniqueId),
    }
}

fn json_field(msg: &MessageExt, pointer: &str) -> Result<DedupKey, KeyError> {
    let body = msg.body_slice();
    if body.is_empty() {
        return Err(KeyError::MissingBody);
    }
    if body.len() > MAX_JSON_BODY_BYTES {
        return Err(KeyError::BodyTooLarge {
            len: body.len(),
            max: MAX_JSON_BODY_BYTES,
        });
    }
    let doc: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| KeyError::InvalidJson {
            reason: format!(
                "{:?} error at line {} column {}",
                e.classify(),
                e.line(),
                e.column()
            ),
        })?;
    let field = doc.pointer(pointer).ok_or_else(|| KeyError::MissingField {
        pointer: pointer.to_owned(),
    })?;
    match field {
        serde_json::Value::String(s) => DedupKey::new(s.as_str()),
        serde_json::Value::Number(n) => DedupKey::new(n.to_string()),
        serde_json::Value::Bool(b) => DedupKey::new(b.to_string()),
        _ => Err(KeyError::NotScalar {
            pointer: pointer.to_owned(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::message;

    #[test]
    fn unique_id_prefers_uniq_key_over_message_id() {
        let msg = message("T").uniq_key("U1").msg_id("OFFSET1").build();
        assert_eq!(unique_id(&msg).unwrap().value(), "U1");
        let msg = message("T").msg_id("OFFSET1").build();
        assert_eq!(unique_id(&msg).unwrap().value(), "OFFSET1");
        let msg = message("T").build();
        assert_eq!(unique_id(&msg), Err(KeyError::MissingUniqueId));
    }

    #[test]
    fn keys_strategy_uses_the_keys_property() {
        let msg = message("T").keys("order-1 order-2").build();
        assert_eq!(
            KeyStrategy::Keys.derive(&msg).unwrap().value(),
            "order-1 order-2"
        );
        let msg = message("T").build();
        assert_eq!(KeyStrategy::Keys.derive(&msg), Err(KeyError::MissingKeys));
    }

    #[test]
    fn json_pointer_reads_strings_numbers_and_booleans() {
        let msg = message("T")
            .body(r#"{"order":{"id":"o-1","n":42,"ok":true,"list":[1],"none":null}}"#)
            .build();
        let get = |p: &str| KeyStrategy::json_pointer(p).derive(&msg);
        assert_eq!(get("/order/id").unwrap().value(), "o-1");
        assert_eq!(get("/order/n").unwrap().value(), "42");
        assert_eq!(get("/order/ok").unwrap().value(), "true");
        assert!(matches!(
            get("/order/list"),
            Err(KeyError::NotScalar { .. })
        ));
        assert!(matches!(
            get("/order/none"),
            Err(KeyError::NotScalar { .. })
        ));
        assert!(matches!(
            get("/order/missing"),
            Err(KeyError::MissingField { .. })
        ));
    }

    #[test]
    fn json_pointer_rejects_bad_bodies_with_typed_errors() {
        let get =
            |body: &[u8]| KeyStrategy::json_pointer("/id").derive(&message("T").body(body).build());
        assert_eq!(get(b""), Err(KeyError::MissingBody));
        assert!(matches!(
            get(b"{not json"),
            Err(KeyError::InvalidJson { .. })
        ));
        assert!(matches!(
            get(b"\xff\xfe{}"),
            Err(KeyError::InvalidJson { .. })
        ));
        assert_eq!(get(br#"{"id":""}"#), Err(KeyError::Empty));
        let deep = "[".repeat(100_000);
        assert!(matches!(
            get(deep.as_bytes()),
            Err(KeyError::InvalidJson { .. })
        ));
        let huge = vec![b' '; MAX_JSON_BODY_BYTES + 1];
        assert!(matches!(get(&huge), Err(KeyError::BodyTooLarge { .. })));
    }

    #[test]
    fn tag_qualified_needs_a_tag() {
        let strategy = KeyStrategy::UniqueId.tag_qualified();
        let msg = message("T").uniq_key("U").tag("paid").build();
        let key = strategy.derive(&msg).unwrap();
        assert_eq!((key.value(), key.tag()), ("U", Some("paid")));
        let msg = message("T").uniq_key("U").build();
        assert_eq!(strategy.derive(&msg), Err(KeyError::MissingTag));
    }

    #[test]
    fn key_validation_is_typed() {
        assert_eq!(DedupKey::new(""), Err(KeyError::Empty));
        let long = "k".repeat(MAX_KEY_BYTES + 1);
        assert!(matches!(DedupKey::new(long), Err(KeyError::TooLong { .. })));
        assert_eq!(
            DedupKey::from_bytes(b"ab\xffcd"),
            Err(KeyError::NotUtf8 { valid_up_to: 2 })
        );
        assert_eq!(DedupKey::new("ключ:🔑").unwrap().value(), "ключ:🔑");
    }

    #[test]
    fn custom_strategy_runs_the_closure() {
        let strategy =
            KeyStrategy::custom(|m| DedupKey::new(format!("{}#{}", m.topic(), m.queue_id)));
        let msg = message("Orders").build();
        assert_eq!(strategy.derive(&msg).unwrap().value(), "Orders#0");
    }

    #[test]
    fn debug_does_not_print_key_content() {
        let key = DedupKey::new("secret-order-id").unwrap();
        assert!(!format!("{key:?}").contains("secret"));
    }
}
