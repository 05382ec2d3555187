//! The listener's own CPU per message, without a broker or a network: the concurrent listener
//! with the memory store and a trivial handler, called in a loop on one thread. No other
//! process takes part, so this moves little between runs on a shared machine and shows what
//! a change to the engine gives; the scenarios show what a consumer gets.

use std::sync::Arc;
use std::time::Duration;

use rocketmq_dedup::store::MemoryStore;
use rocketmq_dedup::testing::message;
use rocketmq_dedup::{DedupConcurrentListener, DedupHandler, DedupStore, HandlerError};
use rocketmq_model::common::message::message_ext::MessageExt;

struct Trivial;

impl DedupHandler for Trivial {
    async fn handle(&self, _msg: &MessageExt) -> Result<(), HandlerError> {
        Ok(())
    }
}

/// Rounds per batch size; the least CPU per message of them is reported (the others met
/// more of the machine's noise).
const ROUNDS: usize = 5;

/// The process's CPU time per message at each of `batches`, each over `messages` fresh
/// messages (µs; the least of [`ROUNDS`] rounds).
pub fn cpu_us_per_message(messages: usize, batches: &[usize]) -> anyhow::Result<Vec<f64>> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let listener = {
        let _entered = runtime.enter();
        DedupConcurrentListener::builder(Trivial)
            .namespace("bench-engine")
            .shared_store(Arc::new(MemoryStore::new()) as Arc<dyn DedupStore>)
            .build()?
    };
    let per_round = (messages / ROUNDS).max(1);
    let mut results = Vec::new();
    for &batch in batches {
        let mut least = f64::INFINITY;
        for round in 0..ROUNDS {
            let msgs: Vec<MessageExt> = (0..per_round)
                .map(|i| {
                    message("BenchEngine")
                        .uniq_key(&format!("7F000001{batch:04X}{round:04X}{i:016X}"))
                        .build()
                })
                .collect();
            let before = crate::cpu_time();
            for chunk in msgs.chunks(batch) {
                let refs: Vec<&MessageExt> = chunk.iter().collect();
                runtime.block_on(listener.consume(&refs));
            }
            let used = crate::cpu_time().saturating_sub(before);
            least = least.min(used.as_secs_f64() * 1e6 / per_round as f64);
        }
        results.push(least);
    }
    runtime.block_on(listener.shutdown(Duration::from_secs(5)));
    Ok(results)
}
