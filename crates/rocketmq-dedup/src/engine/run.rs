//! One handler run, guarded: its error or panic becomes a [`Decision`] and a log line, never a
//! panic on the consumer's threads.

use std::future::Future;
use std::panic::AssertUnwindSafe;

use futures::FutureExt;
use rocketmq_model::common::message::message_ext::MessageExt;
use tracing::{error, warn};

use crate::error::HandlerError;
use crate::stats::Decision;

/// Runs `msg`'s handler (`handler` makes its future, when this is first polled, so that a
/// handler that works before it returns its future runs no earlier either): `Ok` when it
/// succeeded, else the failure outcome, logged.
pub(crate) async fn guarded<F>(
    msg: &MessageExt,
    handler: impl FnOnce() -> F,
) -> Result<(), Decision>
where
    F: Future<Output = Result<(), HandlerError>>,
{
    let run = async move { handler().await };
    match AssertUnwindSafe(run).catch_unwind().await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(err)) => {
            warn!(msg_id = %msg.msg_id, topic = %msg.topic(), error = %err, "handler failed; nothing recorded, the message will be retried");
            Err(Decision::HandlerFailed)
        }
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "non-string panic payload".to_owned());
            error!(msg_id = %msg.msg_id, topic = %msg.topic(), panic = %what, "handler panicked; nothing recorded, the message will be retried");
            Err(Decision::HandlerPanicked)
        }
    }
}
