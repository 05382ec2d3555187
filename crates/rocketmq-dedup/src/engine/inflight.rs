//! The keys this listener is processing right now, so that a copy in another batch of the same
//! process waits for its twin instead of a retry-topic trip (or a queue suspension).
//!
//! A batch [`register`](InFlightRegistry::register)s each key before it claims it in the store;
//! the [`Registration`] it gets back holds the key until it is dropped, which also wakes every
//! batch waiting for that key. A guard, so a cancelled batch lets its keys go too.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use crate::record_key::RecordKey;

/// The keys held by the batches of one listener.
#[derive(Debug)]
pub(crate) struct InFlightRegistry {
    /// Off when the listener's in-flight wait is zero: nothing is registered, nobody waits.
    enabled: bool,
    /// A std mutex: held for a map lookup or insert only, never across an `.await`.
    held: Mutex<HashMap<RecordKey, Holder>>,
    /// Tells registrations apart, so a stale guard never removes a newer holder.
    next_id: AtomicU64,
}

#[derive(Debug)]
struct Holder {
    id: u64,
    /// Sent `true` when the holder lets the key go. Made when the first waiter comes: most
    /// keys are never waited for, and a channel costs an allocation and, when dropped, a
    /// wake-up pass over its notifiers.
    done: Option<watch::Sender<bool>>,
}

impl Holder {
    /// A receiver that sees `true` once this holder lets go.
    fn subscribe(&mut self) -> watch::Receiver<bool> {
        self.done
            .get_or_insert_with(|| watch::Sender::new(false))
            .subscribe()
    }
}

/// What [`InFlightRegistry::register`] found.
#[derive(Debug)]
pub(crate) enum Registered {
    /// The key is now held by the caller until the guard drops (`None`: the registry is off).
    Held(Option<Registration>),
    /// Another batch holds the key; the receiver sees `true` once it lets go.
    Busy(watch::Receiver<bool>),
}

impl InFlightRegistry {
    pub(crate) fn new(enabled: bool) -> Self {
        InFlightRegistry {
            enabled,
            held: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
        }
    }

    /// Holds `key` for the caller, unless another batch holds it.
    pub(crate) fn register(self: &Arc<Self>, key: &RecordKey) -> Registered {
        if !self.enabled {
            return Registered::Held(None);
        }
        let mut held = self.lock();
        if let Some(holder) = held.get_mut(key) {
            return Registered::Busy(holder.subscribe());
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        held.insert(key.clone(), Holder { id, done: None });
        Registered::Held(Some(Registration {
            registry: Arc::clone(self),
            key: key.clone(),
            id,
        }))
    }

    /// Whether another batch holds `key` now; answers its completion signal if so.
    pub(crate) fn holder_of(&self, key: &RecordKey) -> Option<watch::Receiver<bool>> {
        if !self.enabled {
            return None;
        }
        self.lock().get_mut(key).map(Holder::subscribe)
    }

    fn let_go(&self, key: &RecordKey, id: u64) {
        let mut held = self.lock();
        if held.get(key).is_some_and(|holder| holder.id == id) {
            if let Some(done) = held.remove(key).and_then(|holder| holder.done) {
                done.send_replace(true);
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<RecordKey, Holder>> {
        // Every critical section is one map operation: a poisoned map is still consistent.
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Holds one key in the [`InFlightRegistry`] until dropped (owned: a background commit can
/// keep holding its keys after the batch has answered).
#[derive(Debug)]
pub(crate) struct Registration {
    registry: Arc<InFlightRegistry>,
    key: RecordKey,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.registry.let_go(&self.key, self.id);
    }
}

/// Waits until every receiver sees its holder let go; answers whether all did.
pub(crate) async fn all_let_go(receivers: Vec<watch::Receiver<bool>>) -> bool {
    let waits = receivers
        .into_iter()
        .map(|mut done| async move { done.wait_for(|done| *done).await.is_ok() });
    futures::future::join_all(waits)
        .await
        .into_iter()
        .all(|ok| ok)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::record_key as key;

    #[tokio::test]
    async fn a_held_key_is_busy_for_others_until_its_guard_drops() {
        let registry = Arc::new(InFlightRegistry::new(true));
        let Registered::Held(Some(guard)) = registry.register(&key("a")) else {
            panic!("first registration holds the key");
        };
        let Registered::Busy(done) = registry.register(&key("a")) else {
            panic!("second registration finds it busy");
        };
        assert!(matches!(
            registry.register(&key("b")),
            Registered::Held(Some(_))
        ));
        assert!(!*done.borrow());
        drop(guard);
        assert!(all_let_go(vec![done]).await);
        assert!(registry.holder_of(&key("a")).is_none());
    }

    #[tokio::test]
    async fn every_waiter_of_a_key_is_woken_once_its_holder_lets_go() {
        let registry = Arc::new(InFlightRegistry::new(true));
        let Registered::Held(Some(guard)) = registry.register(&key("a")) else {
            panic!("first registration holds the key");
        };
        let first = registry.holder_of(&key("a")).expect("held");
        let Registered::Busy(second) = registry.register(&key("a")) else {
            panic!("a second registration finds it busy");
        };
        let waiting = tokio::spawn(all_let_go(vec![first, second]));
        tokio::task::yield_now().await;
        assert!(
            !waiting.is_finished(),
            "nobody is woken while the key is held"
        );
        drop(guard);
        assert!(waiting.await.expect("the waiter ran"));
        assert!(matches!(
            registry.register(&key("a")),
            Registered::Held(Some(_))
        ));
    }

    #[test]
    fn a_disabled_registry_holds_nothing() {
        let registry = Arc::new(InFlightRegistry::new(false));
        assert!(matches!(
            registry.register(&key("a")),
            Registered::Held(None)
        ));
        assert!(matches!(
            registry.register(&key("a")),
            Registered::Held(None)
        ));
        assert!(registry.holder_of(&key("a")).is_none());
    }
}
