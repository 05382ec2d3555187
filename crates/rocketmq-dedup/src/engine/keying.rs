//! A message's record key: the handler's dedup key under the configured prefix and namespace,
//! the message's topic and the key's tag, with the key fallback applied when the key cannot be
//! derived.

use rocketmq_model::common::message::message_ext::MessageExt;
use tracing::{error, warn};

use super::batch::MessageKey;
use crate::config::{DedupConfig, KeyFallback};
use crate::error::KeyError;
use crate::key::{self, DedupKey};
use crate::record_key::{KeyParts, RecordKey};
use crate::stats::{DedupStats, Event};

/// Derives `msg`'s record key from `derived` (the handler's answer), applying the fallback
/// to a key error: the error is counted and logged (never the key or the body).
pub(crate) fn keyed(
    config: &DedupConfig,
    stats: &DedupStats,
    msg: &MessageExt,
    derived: Result<DedupKey, KeyError>,
) -> MessageKey {
    let key = match derived {
        Ok(key) => key,
        Err(err) => {
            stats.event(Event::KeyError, 1);
            let fallback = config.key_fallback;
            warn!(
                msg_id = %msg.msg_id,
                topic = %msg.topic(),
                error = %err,
                fallback = ?fallback,
                "dedup key could not be derived"
            );
            match fallback {
                KeyFallback::UniqueId => match key::unique_id(msg) {
                    Ok(key) => key,
                    Err(err) => {
                        error!(msg_id = %msg.msg_id, error = %err, "unique id fallback failed too; retrying");
                        return MessageKey::Rejected;
                    }
                },
                KeyFallback::Retry => return MessageKey::Rejected,
                KeyFallback::NoDedup => return MessageKey::NoDedup,
            }
        }
    };
    MessageKey::Record(RecordKey::new(KeyParts {
        prefix: &config.prefix,
        namespace: &config.namespace,
        topic: msg.topic().as_str(),
        tag: key.tag(),
        key: key.value(),
    }))
}
