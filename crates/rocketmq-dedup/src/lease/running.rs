//! Running a batch's handlers while their claims are renewed.

use rocketmq_model::common::message::message_ext::MessageExt;
use tracing::warn;

use super::LeaseProcessor;
use crate::engine::processor::RunOrder;
use crate::engine::run::{guarded, run_in_order, Ran};
use crate::error::StoreOperation;
use crate::handler::DedupHandler;
use crate::record_key::RecordKey;
use crate::stats::{Decision, Event};
use crate::store::OwnerToken;

impl<H: DedupHandler> LeaseProcessor<H> {
    /// Runs the handlers of `msgs`, renewing `claimed` while they run. Answers one result per
    /// message, in order; in order, the run stops at the first failure and the messages after
    /// it are [`Ran::Postponed`].
    pub(super) async fn run_handlers(
        &self,
        msgs: &[&MessageExt],
        claimed: &[RecordKey],
        token: OwnerToken,
        order: RunOrder,
    ) -> Vec<Ran<Result<(), Decision>>> {
        // Futures collected first: a closure inside the stream would make the future !Send.
        let runs: Vec<_> = msgs
            .iter()
            .map(|msg| guarded(msg, || self.handler.handle(msg)))
            .collect();
        let run = run_in_order(runs, order, self.config.handler_concurrency, Result::is_err);
        if claimed.is_empty() {
            return run.await;
        }
        // Biased: the handlers are polled first, so a batch whose handlers finish at once
        // never registers the renewal timer.
        tokio::select! {
            biased;
            results = run => results,
            never = self.renew_forever(claimed, token) => match never {},
        }
    }

    /// Renews `claimed` every renew interval, for as long as it is polled.
    async fn renew_forever(
        &self,
        claimed: &[RecordKey],
        token: OwnerToken,
    ) -> std::convert::Infallible {
        let every = self.config.renew_interval();
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            self.renew(claimed, token).await;
        }
    }

    async fn renew(&self, claimed: &[RecordKey], token: OwnerToken) {
        let ttl = self.config.processing_ttl;
        let call = self.store.renew(claimed, token, ttl);
        let Ok(held) = self.calls.call(StoreOperation::Renew, call).await else {
            return;
        };
        let lost = held.iter().filter(|held| !**held).count();
        if lost > 0 {
            self.stats.event(Event::ClaimLost, lost as u64);
            warn!(
                lost,
                "renewal found claims taken over: another consumer may run the same messages"
            );
        }
    }
}
