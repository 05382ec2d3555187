//! The contract every [`DedupStore`] must pass: one suite, run by every store's tests.
//!
//! Each function checks one rule and panics with the rule's name when the store breaks it.
//! Keys are random, so the suite can share a store (one Redis server) with other tests.
//! TTL rules sleep for real, for a few hundred milliseconds.
//!
//! A store crate runs the whole suite with one macro call in its tests:
//!
//! ```no_run
//! // `$make` is an async block answering (store, guard); the guard (a server process, say)
//! // lives as long as the test.
//! rocketmq_dedup::dedup_store_contract!(memory, async { (rocketmq_dedup::store::MemoryStore::new(), ()) });
//! # fn main() {}
//! ```

use std::sync::Arc;
use std::time::Duration;

use super::{ClaimOutcome, CommitOutcome, DedupStore, DetachedCommit, OwnerToken};
use crate::error::{StoreError, StoreOperation};
use crate::record_key::{KeyParts, RecordKey};

/// A processing TTL long enough never to expire during a rule that does not wait for it.
pub const LONG: Duration = Duration::from_secs(60);
/// A TTL that rules wait out.
pub const SHORT: Duration = Duration::from_millis(300);

fn wait_out_short() -> tokio::time::Sleep {
    tokio::time::sleep(SHORT * 2)
}

/// `n` record keys that no other test uses.
pub fn fresh_keys(n: usize) -> Vec<RecordKey> {
    let run = fastrand::u64(..);
    (0..n)
        .map(|i| {
            RecordKey::new(KeyParts {
                prefix: "contract",
                namespace: "group",
                topic: "Topic",
                tag: None,
                key: &format!("{run:x}-{i}"),
            })
        })
        .collect()
}

/// An absent key is claimed; another owner then finds it in flight.
pub async fn claim_absent_then_in_flight_for_others<S: DedupStore>(store: &S) {
    let keys = fresh_keys(1);
    let (a, b) = (OwnerToken::random(), OwnerToken::random());
    expect(store.claim(&keys, a, LONG).await, &[ClaimOutcome::Claimed]);
    expect(store.claim(&keys, b, LONG).await, &[ClaimOutcome::InFlight]);
}

/// Claiming again with the same token answers `Claimed` (a retried call is safe).
pub async fn claim_is_idempotent_for_the_same_token<S: DedupStore>(store: &S) {
    let keys = fresh_keys(1);
    let a = OwnerToken::random();
    expect(store.claim(&keys, a, LONG).await, &[ClaimOutcome::Claimed]);
    expect(store.claim(&keys, a, LONG).await, &[ClaimOutcome::Claimed]);
}

/// Commit makes the key CONSUMED for everyone.
pub async fn commit_marks_consumed<S: DedupStore>(store: &S) {
    let keys = fresh_keys(1);
    let (a, b) = (OwnerToken::random(), OwnerToken::random());
    store.claim(&keys, a, LONG).await.unwrap();
    expect(
        store.commit(&keys, a, LONG).await,
        &[CommitOutcome::Committed],
    );
    expect(store.claim(&keys, b, LONG).await, &[ClaimOutcome::Consumed]);
    expect(store.claim(&keys, a, LONG).await, &[ClaimOutcome::Consumed]);
}

/// Release deletes the claim; the next owner claims the key.
pub async fn release_frees_the_key<S: DedupStore>(store: &S) {
    let keys = fresh_keys(1);
    let (a, b) = (OwnerToken::random(), OwnerToken::random());
    store.claim(&keys, a, LONG).await.unwrap();
    assert_eq!(store.release(&keys, a).await.unwrap(), [true]);
    assert_eq!(
        store.release(&keys, a).await.unwrap(),
        [false],
        "second release"
    );
    expect(store.claim(&keys, b, LONG).await, &[ClaimOutcome::Claimed]);
}

/// A stale token can neither commit over, release, nor renew another owner's claim.
pub async fn stale_token_cannot_touch_the_current_claim<S: DedupStore>(store: &S) {
    let keys = fresh_keys(1);
    let (stale, current) = (OwnerToken::random(), OwnerToken::random());
    store.claim(&keys, stale, SHORT).await.unwrap();
    wait_out_short().await;
    expect(
        store.claim(&keys, current, LONG).await,
        &[ClaimOutcome::Claimed],
    );
    expect(
        store.commit(&keys, stale, LONG).await,
        &[CommitOutcome::Lost],
    );
    assert_eq!(store.release(&keys, stale).await.unwrap(), [false]);
    assert_eq!(store.renew(&keys, stale, LONG).await.unwrap(), [false]);
    // The current owner's claim is intact.
    let other = OwnerToken::random();
    expect(
        store.claim(&keys, other, LONG).await,
        &[ClaimOutcome::InFlight],
    );
    expect(
        store.commit(&keys, current, LONG).await,
        &[CommitOutcome::Committed],
    );
    // And a stale owner that commits after the current one learns it ran twice.
    expect(
        store.commit(&keys, stale, LONG).await,
        &[CommitOutcome::AlreadyConsumed],
    );
    assert_eq!(store.release(&keys, stale).await.unwrap(), [false]);
    expect(
        store.claim(&keys, other, LONG).await,
        &[ClaimOutcome::Consumed],
    );
}

/// A claim that is not renewed expires after the processing TTL.
pub async fn processing_ttl_expires<S: DedupStore>(store: &S) {
    let keys = fresh_keys(1);
    let (a, b) = (OwnerToken::random(), OwnerToken::random());
    store.claim(&keys, a, SHORT).await.unwrap();
    expect(store.claim(&keys, b, LONG).await, &[ClaimOutcome::InFlight]);
    wait_out_short().await;
    expect(store.claim(&keys, b, LONG).await, &[ClaimOutcome::Claimed]);
}

/// Renewal keeps a claim alive past its first TTL.
pub async fn renew_extends_the_claim<S: DedupStore>(store: &S) {
    let keys = fresh_keys(1);
    let (a, b) = (OwnerToken::random(), OwnerToken::random());
    store.claim(&keys, a, SHORT).await.unwrap();
    for _ in 0..4 {
        tokio::time::sleep(SHORT / 3).await;
        assert_eq!(store.renew(&keys, a, SHORT).await.unwrap(), [true]);
    }
    expect(store.claim(&keys, b, LONG).await, &[ClaimOutcome::InFlight]);
    wait_out_short().await;
    assert_eq!(
        store.renew(&keys, a, SHORT).await.unwrap(),
        [false],
        "renew after expiry"
    );
}

/// A CONSUMED record expires after the record TTL.
pub async fn record_ttl_expires<S: DedupStore>(store: &S) {
    let keys = fresh_keys(1);
    let (a, b) = (OwnerToken::random(), OwnerToken::random());
    store.claim(&keys, a, LONG).await.unwrap();
    store.commit(&keys, a, SHORT).await.unwrap();
    expect(store.claim(&keys, b, LONG).await, &[ClaimOutcome::Consumed]);
    wait_out_short().await;
    expect(store.claim(&keys, b, LONG).await, &[ClaimOutcome::Claimed]);
}

/// A commit after the claim expired, with nobody claiming since, still records the success.
pub async fn commit_after_expiry_without_new_owner_is_recorded<S: DedupStore>(store: &S) {
    let keys = fresh_keys(1);
    let (a, b) = (OwnerToken::random(), OwnerToken::random());
    store.claim(&keys, a, SHORT).await.unwrap();
    wait_out_short().await;
    expect(
        store.commit(&keys, a, LONG).await,
        &[CommitOutcome::Committed],
    );
    expect(store.claim(&keys, b, LONG).await, &[ClaimOutcome::Consumed]);
}

/// A batch answers one entry per key, in order, whatever state each key is in.
pub async fn batches_answer_in_order<S: DedupStore>(store: &S) {
    let keys = fresh_keys(4);
    let (a, b) = (OwnerToken::random(), OwnerToken::random());
    store.claim(&keys[0..1], a, LONG).await.unwrap();
    store.claim(&keys[1..2], a, LONG).await.unwrap();
    store.commit(&keys[1..2], a, LONG).await.unwrap();
    let answers = store.claim(&keys[0..3], b, LONG).await.unwrap();
    assert_eq!(
        answers,
        [
            ClaimOutcome::InFlight,
            ClaimOutcome::Consumed,
            ClaimOutcome::Claimed
        ]
    );
    let commits = store.commit(&keys[0..3], b, LONG).await.unwrap();
    assert_eq!(
        commits,
        [
            CommitOutcome::Lost,
            CommitOutcome::AlreadyConsumed,
            CommitOutcome::Committed
        ]
    );
    expect(store.release(&keys, a).await, &[true, false, false, false]);
    assert_eq!(store.renew(&keys, b, LONG).await.unwrap(), [false; 4]);
    assert!(
        store.claim(&[], a, LONG).await.unwrap().is_empty(),
        "empty batch"
    );
}

/// Claiming again with the same token answers `Claimed` and leaves the claim's TTL as it was
/// (only a renew extends it).
pub async fn reclaim_with_the_same_token_keeps_the_ttl<S: DedupStore>(store: &S) {
    let keys = fresh_keys(1);
    let (a, b) = (OwnerToken::random(), OwnerToken::random());
    store.claim(&keys, a, SHORT).await.unwrap();
    expect(store.claim(&keys, a, LONG).await, &[ClaimOutcome::Claimed]);
    wait_out_short().await;
    assert_eq!(
        store.claim(&keys, b, LONG).await.unwrap(),
        [ClaimOutcome::Claimed],
        "the first claim's TTL ended"
    );
}

/// A key repeated in one batch sees the effect of its earlier occurrence.
pub async fn repeated_keys_in_a_batch_apply_in_turn<S: DedupStore>(store: &S) {
    let key = fresh_keys(1).remove(0);
    let twice = [key.clone(), key];
    let (a, b) = (OwnerToken::random(), OwnerToken::random());
    expect(
        store.claim(&twice, a, LONG).await,
        &[ClaimOutcome::Claimed, ClaimOutcome::Claimed],
    );
    assert_eq!(store.renew(&twice, a, LONG).await.unwrap(), [true, true]);
    assert_eq!(store.release(&twice, a).await.unwrap(), [true, false]);
    expect(
        store.claim(&twice, b, LONG).await,
        &[ClaimOutcome::Claimed, ClaimOutcome::Claimed],
    );
    expect(
        store.commit(&twice, b, LONG).await,
        &[CommitOutcome::Committed, CommitOutcome::AlreadyConsumed],
    );
}

/// A TTL too long for the store is cut to the longest it keeps, never wrapped to a short one.
pub async fn huge_ttls_are_cut_not_wrapped<S: DedupStore>(store: &S) {
    let keys = fresh_keys(1);
    let (a, b) = (OwnerToken::random(), OwnerToken::random());
    let huge = Duration::MAX;
    expect(store.claim(&keys, a, huge).await, &[ClaimOutcome::Claimed]);
    assert_eq!(store.renew(&keys, a, huge).await.unwrap(), [true]);
    wait_out_short().await;
    expect(store.claim(&keys, b, LONG).await, &[ClaimOutcome::InFlight]);
    expect(
        store.commit(&keys, a, huge).await,
        &[CommitOutcome::Committed],
    );
    wait_out_short().await;
    expect(store.claim(&keys, b, LONG).await, &[ClaimOutcome::Consumed]);
}

/// Commits `keys` through [`DedupStore::commit_detached`] and waits for the outcome; a commit
/// the store gives back runs through [`DedupStore::commit`], as a listener runs it.
pub async fn commit_detached_awaited<S: DedupStore + ?Sized>(
    store: &S,
    keys: &[RecordKey],
    token: OwnerToken,
    ttl: Duration,
) -> Result<Vec<CommitOutcome>, StoreError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let commit = DetachedCommit::new(keys.to_vec(), token, ttl, move |_, result| {
        let _ = tx.send(result);
    });
    if let Some(commit) = store.commit_detached(commit) {
        let result = store
            .commit(commit.keys(), commit.token(), commit.ttl())
            .await;
        commit.finish(result);
    }
    rx.await.unwrap_or_else(|_| {
        Err(StoreError::backend(
            StoreOperation::Commit,
            "the detached commit's callback was dropped unrun",
        ))
    })
}

/// A detached commit answers what `commit` answers, key by key, and its keys are CONSUMED
/// once it has answered.
pub async fn detached_commit_answers_as_commit<S: DedupStore>(store: &S) {
    let keys = fresh_keys(2);
    let (ours, theirs) = (keys[0].clone(), keys[1].clone());
    let (a, b) = (OwnerToken::random(), OwnerToken::random());
    store
        .claim(std::slice::from_ref(&ours), a, LONG)
        .await
        .unwrap();
    store
        .claim(std::slice::from_ref(&theirs), b, LONG)
        .await
        .unwrap();
    let batch = [ours.clone(), theirs.clone(), ours];
    assert_eq!(
        commit_detached_awaited(store, &batch, a, LONG)
            .await
            .unwrap(),
        [
            CommitOutcome::Committed,
            CommitOutcome::Lost,
            CommitOutcome::AlreadyConsumed
        ]
    );
    assert_eq!(
        store.claim(&keys, b, LONG).await.unwrap(),
        [ClaimOutcome::Consumed, ClaimOutcome::Claimed],
        "the commit was written, and left the other owner's claim alone"
    );
}

/// Many owners claiming the same keys at once: exactly one wins each key.
pub async fn concurrent_claims_have_one_winner<S: DedupStore>(store: Arc<S>) {
    const OWNERS: usize = 32;
    let keys = Arc::new(fresh_keys(16));
    let barrier = Arc::new(tokio::sync::Barrier::new(OWNERS));
    let tasks: Vec<_> = (0..OWNERS)
        .map(|_| {
            let (store, keys, barrier) = (store.clone(), keys.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                store
                    .claim(&keys, OwnerToken::random(), LONG)
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut wins = vec![0usize; keys.len()];
    for task in tasks {
        for (i, outcome) in task.await.unwrap().into_iter().enumerate() {
            match outcome {
                ClaimOutcome::Claimed => wins[i] += 1,
                ClaimOutcome::InFlight => {}
                ClaimOutcome::Consumed => panic!("nobody committed key {i}"),
            }
        }
    }
    assert_eq!(wins, vec![1; keys.len()], "claims won per key");
}

/// Asserts a store's answer; a failure names the caller's line.
#[track_caller]
fn expect<T: PartialEq + std::fmt::Debug>(answer: Result<Vec<T>, StoreError>, expected: &[T]) {
    assert_eq!(answer.unwrap(), expected);
}

/// Runs the whole [`contract`](self) as one `#[tokio::test]` per rule.
///
/// `$name` names the generated module; `$make` is an async block that answers a fresh store
/// and a guard kept alive for the test (e.g. the server process, or `()`).
#[macro_export]
macro_rules! dedup_store_contract {
    ($name:ident, $make:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            use $crate::store::contract as c;

            macro_rules! rule {
                ($rule:ident) => {
                    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                    async fn $rule() {
                        let (store, _guard) = $make.await;
                        c::$rule(&store).await;
                    }
                };
            }
            rule!(claim_absent_then_in_flight_for_others);
            rule!(claim_is_idempotent_for_the_same_token);
            rule!(commit_marks_consumed);
            rule!(release_frees_the_key);
            rule!(stale_token_cannot_touch_the_current_claim);
            rule!(processing_ttl_expires);
            rule!(renew_extends_the_claim);
            rule!(record_ttl_expires);
            rule!(commit_after_expiry_without_new_owner_is_recorded);
            rule!(batches_answer_in_order);
            rule!(reclaim_with_the_same_token_keeps_the_ttl);
            rule!(repeated_keys_in_a_batch_apply_in_turn);
            rule!(huge_ttls_are_cut_not_wrapped);
            rule!(detached_commit_answers_as_commit);

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn concurrent_claims_have_one_winner() {
                let (store, _guard) = $make.await;
                c::concurrent_claims_have_one_winner(::std::sync::Arc::new(store)).await;
            }

            /// The model-based check (`store::model`), with the seed CI uses unless
            /// `DEDUP_MODEL_SEED` / `DEDUP_MODEL_OPS` say otherwise.
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn model_check() {
                let (store, _guard) = $make.await;
                let options = $crate::store::model::ModelOptions::from_env();
                let report =
                    $crate::store::model::check_store(::std::sync::Arc::new(store), &options).await;
                println!("{report}");
                assert!(report.passed(), "{report}");
            }
        }
    };
}
