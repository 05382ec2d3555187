//! Background commits that ride the next pipeline the store sends.
//!
//! A listener acks a message once its handler succeeded and writes the commit in the
//! background ([`crate::DedupConfig::ack_before_commit`]). Such a commit need not leave at
//! once: it waits up to the store's linger for the next pipeline another call sends (at batch
//! size 1, the claim a consume thread sends for its next message) and goes in front of that
//! call's commands. So a message costs one round trip instead of two, and the commit no
//! thread hand-off of its own. A commit that no pipeline took within the linger is sent by its
//! own call, carrying any others that wait by then. A commit made while the store is quiet (no
//! pipeline sent within the last linger) does not wait at all: no carrier is likely to come,
//! and every moment a commit waits is a moment in which a crash lets a copy run again.
//!
//! In front: a commit and a claim of the same key in one pipeline run commit first, so the
//! claim sees the key CONSUMED. What each carried command answered goes back to its commit
//! call, which reads it as it reads its own pipeline's answers (a `NOSCRIPT` answer did not run
//! and is sent again). When the carrying pipeline fails, its error is the commit's too: the
//! commit is retried like any other that failed.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use redis::{Cmd, RedisError, RedisResult, Value};
use tokio::sync::oneshot;

use super::pipeline::{KeyedCommand, Sent};

/// Commands carried by one pipeline at most, besides the carrier's own.
const MAX_CARRIED: usize = 512;

/// What a carrying pipeline answered a rider: one answer per command, or its error.
pub(super) type Carried = Result<Vec<RedisResult<Value>>, RedisError>;

/// One waiting commit call: its keys, its commands (one per key), where its answers go.
pub(super) struct Rider {
    id: usize,
    keys: Vec<String>,
    commands: Vec<Cmd>,
    reply: oneshot::Sender<Carried>,
}

/// Commits waiting for a pipeline to carry them.
pub(super) struct Riders {
    linger: Duration,
    next_id: AtomicUsize,
    /// How many riders wait (read without the lock, so a pipeline with none to carry never
    /// takes it).
    waiting_count: AtomicUsize,
    waiting: Mutex<Vec<Rider>>,
    /// When the store last sent a pipeline, in microseconds after `born`.
    last_sent_us: AtomicU64,
    born: Instant,
}

/// The riders one pipeline carries, taken off the queue.
pub(super) struct Boarded(Vec<Rider>);

impl Riders {
    /// Riders wait up to `linger` for a pipeline.
    pub(super) fn new(linger: Duration) -> Self {
        Riders {
            linger,
            next_id: AtomicUsize::new(0),
            waiting_count: AtomicUsize::new(0),
            waiting: Mutex::new(Vec::new()),
            last_sent_us: AtomicU64::new(0),
            born: Instant::now(),
        }
    }

    fn now_us(&self) -> u64 {
        self.born.elapsed().as_micros() as u64
    }

    /// The store sends a pipeline now.
    pub(super) fn sending(&self) {
        self.last_sent_us.store(self.now_us(), Ordering::Relaxed);
    }

    /// Whether no pipeline was sent within the last linger: a commit made now does not wait.
    pub(super) fn quiet(&self) -> bool {
        let since = (self.now_us()).saturating_sub(self.last_sent_us.load(Ordering::Relaxed));
        since > self.linger.as_micros() as u64
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Rider>> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits up to the linger for a pipeline to carry `commands` (one per key of `keys`, in
    /// order); the caller asks only when the store is not [`quiet`](Self::quiet). `Some`: what
    /// they answered there; `None`: none took them, the caller sends them.
    pub(super) async fn ride(&self, keys: Vec<String>, commands: Vec<Cmd>) -> Option<Carried> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (reply, mut answer) = oneshot::channel();
        {
            let mut waiting = self.lock();
            waiting.push(Rider {
                id,
                keys,
                commands,
                reply,
            });
            self.waiting_count.store(waiting.len(), Ordering::Release);
        }
        tokio::select! {
            carried = &mut answer => return carried.ok(),
            () = tokio::time::sleep(self.linger) => {}
        }
        if self.take_back(id) {
            return None;
        }
        // A pipeline took it meanwhile. A carrier dropped before it answered (its call was
        // cancelled) leaves the commit's fate unknown: it is sent again, and the script answers
        // "already consumed" if it had run.
        answer.await.ok()
    }

    /// Takes the rider `id` off the queue; false when a pipeline already took it.
    fn take_back(&self, id: usize) -> bool {
        let mut waiting = self.lock();
        let before = waiting.len();
        waiting.retain(|r| r.id != id);
        self.waiting_count.store(waiting.len(), Ordering::Release);
        waiting.len() < before
    }

    /// The riders waiting now (up to [`MAX_CARRIED`] commands, at least one rider), for the
    /// pipeline about to be sent.
    pub(super) fn board(&self) -> Boarded {
        if self.waiting_count.load(Ordering::Acquire) == 0 {
            return Boarded(Vec::new());
        }
        let mut waiting = self.lock();
        let mut commands = 0;
        let taken = waiting
            .iter()
            .take_while(|r| {
                let fits = commands == 0 || commands + r.commands.len() <= MAX_CARRIED;
                commands += r.commands.len();
                fits
            })
            .count();
        let boarded: Vec<Rider> = waiting.drain(..taken).collect();
        self.waiting_count.store(waiting.len(), Ordering::Release);
        Boarded(boarded)
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
    pub(super) fn answer(self, sent: Result<Sent, RedisError>) -> Result<Sent, RedisError> {
        let sent = match sent {
            Ok(sent) => sent,
            Err(e) => {
                for rider in self.0 {
                    let _ = rider.reply.send(Err(e.clone()));
                }
                return Err(e);
            }
        };
        let mut answers = sent.answers.into_iter();
        for rider in self.0 {
            let own: Vec<_> = answers.by_ref().take(rider.keys.len()).collect();
            let _ = rider.reply.send(Ok(own));
        }
        Ok(Sent {
            answers: answers.collect(),
            ..sent
        })
    }
}
