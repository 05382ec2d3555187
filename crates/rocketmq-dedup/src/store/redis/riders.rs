//! Detached commits that ride the next pipeline the store sends.
//!
//! A listener acks a message once its handler succeeded and hands the store its commit
//! without waiting for it ([`DedupStore::commit_detached`](crate::DedupStore::commit_detached)).
//! Such a commit need not leave at once: it waits up to the store's linger for the next
//! pipeline another call sends (at batch size 1, the claim a consume thread sends for its next
//! message) and goes in front of that call's commands. So a message costs one round trip
//! instead of two, and its commit no task and no thread hand-off: the thread that sent the
//! carrying pipeline hands each rider its answers ([`Reply`]). One flusher task per store sends
//! the riders no pipeline took within the linger, carrying any others that wait by then; it
//! wakes about once per linger while commits come, and sleeps when none have come for
//! [`PARK_AFTER`]. A commit made while the store is quiet (no pipeline sent within the last
//! linger) is not queued at all: no carrier is likely to come, and every moment a commit waits
//! is a moment in which a crash lets a copy run again.
//!
//! In front: a commit and a claim of the same key in one pipeline run commit first, so the
//! claim sees the key CONSUMED. When the carrying pipeline fails, its error is each rider's
//! too; a carrier dropped before it answered (its call was cancelled) answers
//! [`Carried::Dropped`], and the commit is sent again.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use redis::{Cmd, RedisError, RedisResult, Value};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::pipeline::{KeyedCommand, Sent};

/// Commands carried by one pipeline at most, besides the carrier's own.
const MAX_CARRIED: usize = 512;

/// How long the flusher keeps waking once per linger after the queue emptied, before it
/// sleeps until a commit comes.
const PARK_AFTER: Duration = Duration::from_millis(100);

/// What became of a rider's commands.
pub(super) enum Carried {
    /// One answer per command, in order.
    Answered(Vec<RedisResult<Value>>),
    /// The carrying pipeline failed: the commands may or may not have run.
    Failed(RedisError),
    /// The carrier was dropped before its answer came: the commands may or may not have run.
    Dropped,
}

/// What a rider does with what became of its commands; runs on the carrier's thread.
pub(super) type Reply = Box<dyn FnOnce(Carried) + Send>;

/// One waiting commit: its keys, its commands (one per key), what to do with the answers.
struct Rider {
    keys: Vec<String>,
    commands: Vec<Cmd>,
    /// When it was queued (on Tokio's clock, which the flusher sleeps on).
    since: Instant,
    reply: Reply,
}

/// Detached commits waiting for a pipeline to carry them.
pub(super) struct Riders {
    linger: Duration,
    /// How many riders wait (read without the lock, so a pipeline with none to carry never
    /// takes it).
    waiting_count: AtomicUsize,
    /// Oldest first.
    waiting: Mutex<VecDeque<Rider>>,
    /// When the store last sent a pipeline of its own, in microseconds after `born`.
    last_sent_us: AtomicU64,
    born: std::time::Instant,
    flusher: Arc<FlusherSignal>,
}

/// How the queue and its flusher task reach each other.
#[derive(Default)]
struct FlusherSignal {
    /// A flusher task runs (or is being started).
    running: AtomicBool,
    /// The flusher sleeps until `wake`.
    parked: AtomicBool,
    wake: Notify,
}

/// The riders one pipeline carries, taken off the queue. Riders it never answered (the
/// pipeline was dropped) get [`Carried::Dropped`].
pub(super) struct Boarded(Vec<Rider>);

/// What the flusher does next.
enum Next {
    /// Send these: they waited the whole linger.
    Send(Boarded),
    /// Sleep until the oldest rider's linger ends.
    SleepUntil(Instant),
    /// Nothing waits.
    Empty,
}

impl Riders {
    /// Riders wait up to `linger` for a pipeline.
    pub(super) fn new(linger: Duration) -> Self {
        Riders {
            linger,
            waiting_count: AtomicUsize::new(0),
            waiting: Mutex::new(VecDeque::new()),
            last_sent_us: AtomicU64::new(0),
            born: std::time::Instant::now(),
            flusher: Arc::default(),
        }
    }

    fn now_us(&self) -> u64 {
        self.born.elapsed().as_micros() as u64
    }

    /// The store sends a pipeline now (a call's own, not the flusher's).
    pub(super) fn sending(&self) {
        self.last_sent_us.store(self.now_us(), Ordering::Relaxed);
    }

    /// Whether no pipeline was sent within the last linger: a commit made now does not wait.
    pub(super) fn quiet(&self) -> bool {
        let since = (self.now_us()).saturating_sub(self.last_sent_us.load(Ordering::Relaxed));
        since > self.linger.as_micros() as u64
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Rider>> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `commands` (one per key of `keys`, in order) for the next pipeline; `reply`
    /// gets what became of them. True when no flusher runs: the caller starts one
    /// ([`flush`]).
    pub(super) fn queue(&self, keys: Vec<String>, commands: Vec<Cmd>, reply: Reply) -> bool {
        {
            let mut waiting = self.lock();
            waiting.push_back(Rider {
                keys,
                commands,
                since: Instant::now(),
                reply,
            });
            self.waiting_count.store(waiting.len(), Ordering::SeqCst);
        }
        if self.flusher.parked.load(Ordering::SeqCst) {
            self.flusher.wake.notify_one();
        }
        !self.flusher.running.swap(true, Ordering::SeqCst)
    }

    /// The riders waiting now (up to [`MAX_CARRIED`] commands, at least one rider), for the
    /// pipeline about to be sent.
    pub(super) fn board(&self) -> Boarded {
        self.board_until(None)
    }

    /// The oldest riders (as [`board`](Self::board)) queued no later than `queued_by`, or
    /// all with `None`.
    fn board_until(&self, queued_by: Option<Instant>) -> Boarded {
        if self.waiting_count.load(Ordering::SeqCst) == 0 {
            return Boarded(Vec::new());
        }
        let mut waiting = self.lock();
        let mut commands = 0;
        let taken = waiting
            .iter()
            .take_while(|r| {
                let fits = commands == 0 || commands + r.commands.len() <= MAX_CARRIED;
                commands += r.commands.len();
                fits && queued_by.is_none_or(|by| r.since <= by)
            })
            .count();
        let boarded: Vec<Rider> = waiting.drain(..taken).collect();
        self.waiting_count.store(waiting.len(), Ordering::SeqCst);
        Boarded(boarded)
    }

    fn next(&self) -> Next {
        let now = Instant::now();
        let oldest = match self.lock().front() {
            Some(rider) => rider.since,
            None => return Next::Empty,
        };
        if oldest + self.linger > now {
            return Next::SleepUntil(oldest + self.linger);
        }
        Next::Send(self.board_until(now.checked_sub(self.linger)))
    }
}

impl Drop for Riders {
    fn drop(&mut self) {
        // A parked flusher wakes, finds the queue gone, and ends.
        self.flusher.wake.notify_one();
    }
}

/// The flusher task of `queue`: sends, through `send`, each rider no pipeline took within
/// the linger. Ends when the queue is dropped (the store and all its clones are gone).
pub(super) fn flush<F, Fut>(queue: Weak<Riders>, mut send: F) -> impl Future<Output = ()>
where
    F: FnMut(Boarded) -> Fut,
    Fut: Future<Output = ()>,
{
    // Whether the task ends, or its runtime drops it (even before it first ran), the next
    // queued rider starts another.
    struct Running(Option<Arc<FlusherSignal>>);
    impl Drop for Running {
        fn drop(&mut self) {
            if let Some(signal) = &self.0 {
                signal.parked.store(false, Ordering::SeqCst);
                signal.running.store(false, Ordering::SeqCst);
            }
        }
    }
    let running = Running(queue.upgrade().map(|q| Arc::clone(&q.flusher)));
    async move {
        let running = running;
        let Some(signal) = running.0.clone() else {
            return;
        };
        let mut empty_since = None;
        loop {
            let Some(riders) = queue.upgrade() else {
                return;
            };
            let (next, linger) = (riders.next(), riders.linger);
            drop(riders);
            match next {
                Next::Send(boarded) => {
                    empty_since = None;
                    send(boarded).await;
                }
                Next::SleepUntil(at) => {
                    empty_since = None;
                    tokio::time::sleep_until(at).await;
                }
                Next::Empty => {
                    let since = *empty_since.get_or_insert_with(Instant::now);
                    if since.elapsed() < PARK_AFTER {
                        tokio::time::sleep(linger).await;
                        continue;
                    }
                    signal.parked.store(true, Ordering::SeqCst);
                    // A rider queued before `parked` was set did not wake us: look once more.
                    let queued = queue
                        .upgrade()
                        .is_some_and(|q| q.waiting_count.load(Ordering::SeqCst) > 0);
                    if !queued {
                        signal.wake.notified().await;
                    }
                    signal.parked.store(false, Ordering::SeqCst);
                    empty_since = None;
                }
            }
        }
    }
}

impl Boarded {
    /// Carries nothing.
    pub(super) fn none() -> Self {
        Boarded(Vec::new())
    }

    /// The riders' commands, to go in front of the pipeline's own; moved out, so call once.
    pub(super) fn commands(&mut self) -> Vec<KeyedCommand<'_>> {
        self.0
            .iter_mut()
            .flat_map(|r| {
                let commands = std::mem::take(&mut r.commands);
                r.keys
                    .iter()
                    .zip(commands)
                    .map(|(key, cmd)| KeyedCommand { key, cmd })
            })
            .collect()
    }

    /// How many commands the riders sent (the answers in front of the carrier's own).
    pub(super) fn len(&self) -> usize {
        self.0.iter().map(|r| r.keys.len()).sum()
    }

    /// Gives each rider its answers from the front of what the pipeline got back and leaves
    /// the carrier's own; on an error, each rider gets it too.
    pub(super) fn answer(mut self, sent: Result<Sent, RedisError>) -> Result<Sent, RedisError> {
        let riders = std::mem::take(&mut self.0);
        let sent = match sent {
            Ok(sent) => sent,
            Err(e) => {
                for rider in riders {
                    (rider.reply)(Carried::Failed(e.clone()));
                }
                return Err(e);
            }
        };
        let mut answers = sent.answers.into_iter();
        for rider in riders {
            let own: Vec<_> = answers.by_ref().take(rider.keys.len()).collect();
            (rider.reply)(Carried::Answered(own));
        }
        Ok(Sent {
            answers: answers.collect(),
            ..sent
        })
    }
}

impl Drop for Boarded {
    fn drop(&mut self) {
        for rider in self.0.drain(..) {
            (rider.reply)(Carried::Dropped);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    /// A reply that counts how the rider ended: answered, failed, dropped.
    fn counting(counts: &Arc<[AtomicUsize; 3]>) -> Reply {
        let counts = Arc::clone(counts);
        Box::new(move |carried| {
            let which = match carried {
                Carried::Answered(_) => 0,
                Carried::Failed(_) => 1,
                Carried::Dropped => 2,
            };
            counts[which].fetch_add(1, Ordering::SeqCst);
        })
    }

    fn one_command() -> (Vec<String>, Vec<Cmd>) {
        (vec!["k".to_owned()], vec![redis::cmd("PING")])
    }

    #[test]
    fn a_rider_whose_carrier_is_dropped_is_told_so() {
        let riders = Riders::new(Duration::from_secs(30));
        let counts = Arc::new(<[AtomicUsize; 3]>::default());
        let (keys, commands) = one_command();
        riders.queue(keys, commands, counting(&counts));
        let boarded = riders.board();
        assert_eq!(boarded.len(), 1);
        drop(boarded);
        assert_eq!(counts[2].load(Ordering::SeqCst), 1, "told it was dropped");
        assert_eq!(riders.board().len(), 0, "and it left the queue");
    }

    #[test]
    fn a_flusher_dropped_before_it_ran_lets_the_next_rider_start_another() {
        let riders = Arc::new(Riders::new(Duration::from_secs(30)));
        let counts = Arc::new(<[AtomicUsize; 3]>::default());
        let (keys, commands) = one_command();
        assert!(riders.queue(keys, commands, counting(&counts)), "none ran");
        let flusher = flush(Arc::downgrade(&riders), |_| async {});
        let (keys, commands) = one_command();
        assert!(!riders.queue(keys, commands, counting(&counts)), "one runs");
        drop(flusher);
        let (keys, commands) = one_command();
        assert!(
            riders.queue(keys, commands, counting(&counts)),
            "it is gone"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_flusher_sends_what_waited_the_linger_and_sleeps_when_idle() {
        let linger = Duration::from_millis(5);
        let riders = Arc::new(Riders::new(linger));
        let sent = Arc::new(AtomicUsize::new(0));
        let counts = Arc::new(<[AtomicUsize; 3]>::default());
        let (keys, commands) = one_command();
        assert!(riders.queue(keys, commands, counting(&counts)));
        let flusher = tokio::spawn(flush(Arc::downgrade(&riders), {
            let sent = Arc::clone(&sent);
            move |mut boarded: Boarded| {
                sent.fetch_add(boarded.commands().len(), Ordering::SeqCst);
                let answers = vec![Ok(Value::Okay); boarded.len()];
                let _ = boarded.answer(Ok(Sent {
                    answers,
                    round_trips: 1,
                    replicas_acked: None,
                }));
                async {}
            }
        }));
        tokio::time::sleep(linger / 2).await;
        assert_eq!(sent.load(Ordering::SeqCst), 0, "within the linger it waits");
        tokio::time::sleep(linger).await;
        assert_eq!(
            sent.load(Ordering::SeqCst),
            1,
            "after it, the flusher sent it"
        );
        assert_eq!(counts[0].load(Ordering::SeqCst), 1, "and answered it");
        // Idle past PARK_AFTER, it parks; a new rider wakes it.
        tokio::time::sleep(PARK_AFTER * 2).await;
        assert!(riders.flusher.parked.load(Ordering::SeqCst), "parked");
        let (keys, commands) = one_command();
        assert!(!riders.queue(keys, commands, counting(&counts)));
        tokio::time::sleep(linger * 2).await;
        assert_eq!(sent.load(Ordering::SeqCst), 2, "woken, it sent the new one");
        drop(riders);
        tokio::time::timeout(Duration::from_secs(1), flusher)
            .await
            .expect("the flusher ends with its queue")
            .unwrap();
    }
}
