//! Running a batch's handlers: each run guarded (its error or panic becomes a [`Decision`]
//! and a log line, never a panic on the consumer's threads), and the runs of a batch in the
//! order its listener keeps ([`run_in_order`]), each answered, a postponed one too.

use std::future::Future;
use std::panic::AssertUnwindSafe;

use futures::{FutureExt, StreamExt};
use rocketmq_model::common::message::message_ext::MessageExt;
use tracing::{error, warn};

use super::processor::RunOrder;
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

/// How one run of a batch went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ran<T> {
    /// It ran, with this result.
    Done(T),
    /// An in-order run stopped before it: it did not run.
    Postponed,
}

/// Runs `runs` as `order` says: independent runs up to `concurrency` at once, every one; in
/// order, one at a time, stopping after the first whose result `stops`. Answers one [`Ran`]
/// per run, in order.
pub(crate) async fn run_in_order<F: Future>(
    runs: Vec<F>,
    order: RunOrder,
    concurrency: usize,
    stops: impl Fn(&F::Output) -> bool,
) -> Vec<Ran<F::Output>> {
    let count = runs.len();
    let concurrency = match order {
        RunOrder::Independent => concurrency,
        RunOrder::InOrder => 1,
    };
    let mut ran = Vec::with_capacity(count);
    let mut stream = futures::stream::iter(runs).buffered(concurrency);
    while let Some(result) = stream.next().await {
        let stop = order == RunOrder::InOrder && stops(&result);
        ran.push(Ran::Done(result));
        if stop {
            break;
        }
    }
    ran.resize_with(count, || Ran::Postponed);
    ran
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runs(results: &[bool]) -> Vec<std::future::Ready<bool>> {
        results.iter().map(|&ok| std::future::ready(ok)).collect()
    }

    #[tokio::test]
    async fn in_order_stops_after_the_first_failure_and_postpones_the_rest() {
        let ran = run_in_order(runs(&[true, false, true]), RunOrder::InOrder, 4, |ok| !ok).await;
        assert_eq!(ran, [Ran::Done(true), Ran::Done(false), Ran::Postponed]);
    }

    #[tokio::test]
    async fn independent_runs_every_one() {
        let ran = run_in_order(runs(&[false, true]), RunOrder::Independent, 2, |ok| !ok).await;
        assert_eq!(ran, [Ran::Done(false), Ran::Done(true)]);
    }
}
