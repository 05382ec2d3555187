//! The blocking lane of one server: a blocking connection per thread, and the commits each
//! thread's next pipeline carries.
//!
//! The client runs a listener on a thread of its own, and the listener waits on that thread
//! for its future. Through the multiplexed connection every round trip crosses threads twice:
//! the request goes to the connection's task on a runtime worker, and the answer comes back
//! with a wake-up, each costing about as much as the round trip itself. So a claim, a commit or
//! a release uses the calling thread's own blocking connection instead and writes and reads the
//! socket itself, wherever blocking is allowed ([`BlockingLane::usable`]): on a thread that
//! waits for the call anyway (a consume thread in `Handle::block_on`, a plain thread) it just
//! runs; on a multi-thread runtime's worker it runs inside `block_in_place`, which first hands
//! the worker's other tasks to another thread. A current-thread runtime's one thread runs every
//! task, so there every call goes the multiplexed way, and so do the calls the store knows are
//! off the ack path (renewals beside a running handler, tools).
//!
//! # Carried commits
//! A commit made after the ack ([`DedupStore::commit_detached`](crate::DedupStore::commit_detached))
//! waits in its thread's slot and goes in front of that thread's next pipeline: at batch size
//! 1 that is the claim of the thread's next message, so a message costs one round trip, and its
//! commit no task, no queue shared between threads and no hand-off (its answer is read by the
//! thread that made it). A commit and a claim of the same key in one pipeline run commit first.
//! A thread that goes idle leaves its commit waiting: the lane's sweeper task sends what waited
//! longer than the linger on the multiplexed connection. It runs only while commits wait, and
//! sleeps until the oldest one's linger ends.
//!
//! # What else rides
//! A native claim (a claim that is not a Lua script, see [`native_claim`](super::native_claim))
//! that lands on a record it then reads as CONSUMED releases that claim again; the release
//! rides the thread's next pipeline the same way, with nothing waiting for its answer.
//!
//! # What each part earns
//! Each part is one of the store's settings, and each has its ablation in the bench (BENCHMARKS.md,
//! "Removed and kept"): the thread's own connection (`consume_thread_connections`, ablation
//! `redis-mux`), commits riding the next pipeline (`commit_linger`, `redis-nolinger`), the
//! commit after the ack that makes them ride (the listener's `ack_before_commit`,
//! `redis-sync`), and the native claim (`script_claims`, `redis-script`).
//!
//! Bounds: at most `max_open` threads get a slot; a call from another thread goes the
//! multiplexed way (and its commits are given back). A connection that fails (I/O error,
//! timeout) is dropped, and for [`PAUSE`] every call goes the multiplexed way, which fails fast
//! while the server is down and reconnects in the background: a consume thread never waits for
//! a connect to a server that is down more than once per pause.

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, TryLockError, Weak};
use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::{Cmd, ConnectionLike, RedisError, RedisResult, Value};
use tokio::runtime::Handle;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::pipeline::{answered, KeyedCommand, Sent};

/// How long after a failed blocking connection every call goes the multiplexed way.
pub(super) const PAUSE: Duration = Duration::from_secs(1);

/// What became of a carried commit's commands.
pub(super) enum Carried {
    /// One answer per command, in order.
    Answered(Vec<RedisResult<Value>>),
    /// The carrying pipeline failed: the commands may or may not have run.
    Failed(RedisError),
    /// The commit was dropped unsent (its lane went away): it did not run.
    Dropped,
}

/// A commit waiting for its thread's next pipeline: its commands (one per key) and what to do
/// with their answers. One dropped unanswered answers [`Carried::Dropped`].
pub(super) struct Rider {
    commands: Vec<Cmd>,
    reply: Option<Box<dyn FnOnce(Carried) + Send>>,
}

impl Rider {
    pub(super) fn new(commands: Vec<Cmd>, reply: impl FnOnce(Carried) + Send + 'static) -> Self {
        Rider {
            commands,
            reply: Some(Box::new(reply)),
        }
    }

    fn answer(mut self, carried: Carried) {
        if let Some(reply) = self.reply.take() {
            reply(carried)
        }
    }
}

impl Drop for Rider {
    fn drop(&mut self) {
        if let Some(reply) = self.reply.take() {
            reply(Carried::Dropped)
        }
    }
}

/// Blocking connections to one server, one per thread, and their carried commits.
pub(super) struct BlockingLane {
    /// Tells this lane's slots from another lane's in a thread's list.
    id: u64,
    client: redis::Client,
    connect_timeout: Duration,
    response_timeout: Duration,
    max_open: usize,
    /// Slots (threads) now.
    open: AtomicUsize,
    /// Every thread's slot, for the sweeper and for closing them with the lane.
    slots: Mutex<Vec<Weak<ThreadConnection>>>,
    /// Calls go the multiplexed way until this many milliseconds after `born`.
    paused_until_ms: AtomicU64,
    /// Counts the connections that failed: a thread's connection opened before the last
    /// failure is dropped before its next use (the server may have restarted, and every
    /// connection to it died), so that each fails at most the call it had in flight.
    generation: AtomicU64,
    born: std::time::Instant,
    /// How long a carried commit waits for its thread before the sweeper sends it.
    linger: Duration,
    sweeper: Arc<SweeperSignal>,
    /// The multiplexed connection and the store's round-trip counter, for the sweeper.
    multiplexed: ConnectionManager,
    round_trips: Arc<AtomicU64>,
}

/// One thread's connection and waiting commits. Its thread locks it for a call; the sweeper
/// only ever tries to.
struct ThreadConnection {
    lane: Weak<BlockingLane>,
    state: Mutex<ThreadConnectionState>,
}

#[derive(Default)]
struct ThreadConnectionState {
    /// The connection, and the lane's generation when it was opened.
    conn: Option<(redis::Connection, u64)>,
    riders: Vec<Rider>,
    /// When the oldest waiting rider came (Tokio's clock: the sweeper sleeps on it).
    since: Option<Instant>,
}

/// How a lane and its sweeper task reach each other.
#[derive(Default)]
struct SweeperSignal {
    /// A sweeper task runs (or is being started).
    running: AtomicBool,
    /// The sweeper sleeps until `wake`.
    parked: AtomicBool,
    wake: Notify,
}

/// A thread's slot of one lane.
struct ThreadSlot {
    lane_id: u64,
    lane: Weak<BlockingLane>,
    slot: Arc<ThreadConnection>,
}

thread_local! {
    /// This thread's slots, one per lane it used (one per store, in practice one).
    static THREAD_SLOTS: RefCell<Vec<ThreadSlot>> = const { RefCell::new(Vec::new()) };
}

impl BlockingLane {
    /// A lane over `client`; no connection is opened before a thread's first call.
    /// `multiplexed` and `round_trips` are the store's, for the sweeper.
    pub(super) fn new(
        client: redis::Client,
        (connect_timeout, response_timeout): (Duration, Duration),
        max_open: usize,
        linger: Duration,
        multiplexed: ConnectionManager,
        round_trips: Arc<AtomicU64>,
    ) -> Self {
        static IDS: AtomicU64 = AtomicU64::new(0);
        BlockingLane {
            id: IDS.fetch_add(1, Ordering::Relaxed),
            client,
            connect_timeout,
            response_timeout,
            max_open,
            open: AtomicUsize::new(0),
            slots: Mutex::new(Vec::new()),
            paused_until_ms: AtomicU64::new(0),
            generation: AtomicU64::new(0),
            born: std::time::Instant::now(),
            linger,
            sweeper: Arc::default(),
            multiplexed,
            round_trips,
        }
    }

    fn now_ms(&self) -> u64 {
        self.born.elapsed().as_millis() as u64
    }

    /// Whether a call made now may block on this lane: not on a current-thread runtime, and
    /// no connection failed in the last [`PAUSE`].
    pub(super) fn usable(&self) -> bool {
        let blockable = match Handle::try_current() {
            Ok(handle) => handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread,
            Err(_) => true,
        };
        blockable && self.now_ms() >= self.paused_until_ms.load(Ordering::Relaxed)
    }

    /// Whether commits may wait for a carrier (a zero linger sends each on its own).
    pub(super) fn carries(&self) -> bool {
        !self.linger.is_zero()
    }

    /// This thread's slot; `None` when `max_open` threads have one already.
    fn thread_slot(self: &Arc<Self>) -> Option<Arc<ThreadConnection>> {
        THREAD_SLOTS
            .try_with(|slots| {
                let mut slots = slots.borrow_mut();
                if let Some(mine) = slots.iter().find(|s| s.lane_id == self.id) {
                    return Some(Arc::clone(&mine.slot));
                }
                slots.retain(|s| s.lane.strong_count() > 0);
                self.open
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                        (n < self.max_open).then_some(n + 1)
                    })
                    .ok()?;
                let slot = Arc::new(ThreadConnection {
                    lane: Arc::downgrade(self),
                    state: Mutex::default(),
                });
                lock(&self.slots).push(Arc::downgrade(&slot));
                slots.push(ThreadSlot {
                    lane_id: self.id,
                    lane: Arc::downgrade(self),
                    slot: Arc::clone(&slot),
                });
                Some(slot)
            })
            .ok()
            .flatten()
    }

    /// Sends this thread's waiting commits, then the commands (and `wait`) as one pipeline on
    /// its blocking connection (inside `block_in_place`: see the module docs); gives the
    /// commands back when this thread has no slot (the caller goes the multiplexed way).
    pub(super) fn send_or_return<'a>(
        self: &Arc<Self>,
        commands: Vec<KeyedCommand<'a>>,
        wait: Option<&Cmd>,
    ) -> Result<Result<Sent, RedisError>, Vec<KeyedCommand<'a>>> {
        let Some(slot) = self.thread_slot() else {
            return Err(commands);
        };
        Ok(tokio::task::block_in_place(|| {
            let mut state = lock(&slot.state);
            let mut riders = std::mem::take(&mut state.riders);
            state.since = None;
            let (mut pipe, carried) = board(&mut riders);
            for command in commands {
                pipe.add_command(command.cmd);
            }
            if let Some(wait) = wait {
                pipe.add_command(wait.clone());
            }
            let result = self.round_trip(&mut state, &pipe);
            // The riders' callbacks run with the slot free: one may call the store again.
            drop(state);
            match result {
                Ok(values) => {
                    let mut values = values.into_iter();
                    answer_riders(riders, carried, Ok(&mut values));
                    answered(values.collect(), wait.is_some())
                }
                Err(e) => {
                    answer_riders(riders, carried, Err(&e));
                    Err(e)
                }
            }
        }))
    }

    /// One pipeline on the slot's connection (connected first if it has none, or one opened
    /// before another connection of the lane failed). A connection that fails is dropped (it
    /// may hold a late answer) and pauses the lane.
    fn round_trip(
        &self,
        state: &mut ThreadConnectionState,
        pipe: &redis::Pipeline,
    ) -> RedisResult<Vec<Value>> {
        let generation = self.generation.load(Ordering::SeqCst);
        if state.conn.as_ref().is_some_and(|(_, at)| *at != generation) {
            state.conn = None;
        }
        let (conn, _) = match &mut state.conn {
            Some(conn) => conn,
            None => state
                .conn
                .insert((self.connect().inspect_err(|_| self.failed())?, generation)),
        };
        conn.req_packed_commands(&pipe.get_packed_pipeline(), 0, pipe.len())
            .inspect_err(|_| {
                state.conn = None;
                self.failed();
            })
    }

    fn connect(&self) -> Result<redis::Connection, RedisError> {
        let conn = self
            .client
            .get_connection_with_timeout(self.connect_timeout)?;
        conn.set_read_timeout(Some(self.response_timeout))?;
        conn.set_write_timeout(Some(self.response_timeout))?;
        Ok(conn)
    }

    /// A connection failed: every other connection is opened anew before its next use, and
    /// calls go the multiplexed way for a [`PAUSE`].
    fn failed(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        let until = self.now_ms() + PAUSE.as_millis() as u64;
        self.paused_until_ms.fetch_max(until, Ordering::Relaxed);
    }

    /// Leaves a commit for this thread's next pipeline: `rider` builds it once this thread
    /// has a slot. `false` (nothing built) when it has none, or the lane is not usable now.
    pub(super) fn carry(self: &Arc<Self>, runtime: &Handle, rider: impl FnOnce() -> Rider) -> bool {
        if !self.carries() || !self.usable() {
            return false;
        }
        let Some(slot) = self.thread_slot() else {
            return false;
        };
        {
            let mut state = lock(&slot.state);
            state.since.get_or_insert_with(Instant::now);
            state.riders.push(rider());
        }
        if !self.sweeper.running.swap(true, Ordering::SeqCst) {
            runtime.spawn(sweep(Arc::downgrade(self)));
        } else if self.sweeper.parked.load(Ordering::SeqCst) {
            self.sweeper.wake.notify_one();
        }
        true
    }

    /// The riders of idle threads that waited the whole linger, taken off their slots; and
    /// when the next one's linger ends.
    fn due(&self, now: Instant) -> (Vec<Rider>, Option<Instant>) {
        let mut due = Vec::new();
        let mut next: Option<Instant> = None;
        let mut later = |at: Instant| next = Some(next.map_or(at, |n| n.min(at)));
        let mut slots = lock(&self.slots);
        slots.retain(|s| s.strong_count() > 0);
        for slot in slots.iter().filter_map(Weak::upgrade) {
            // A slot in use belongs to a thread in a call: its pipeline carries the riders.
            let mut state = match slot.state.try_lock() {
                Ok(state) => state,
                Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
                Err(TryLockError::WouldBlock) => {
                    later(now + self.linger);
                    continue;
                }
            };
            match state.since {
                Some(since) if since + self.linger <= now => {
                    due.append(&mut state.riders);
                    state.since = None;
                }
                Some(since) => later(since + self.linger),
                None => {}
            }
        }
        (due, next)
    }
}

impl Drop for ThreadConnection {
    fn drop(&mut self) {
        if let Some(lane) = self.lane.upgrade() {
            lane.open.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

impl Drop for BlockingLane {
    fn drop(&mut self) {
        // Close every thread's connection now, not when its thread ends; a parked sweeper
        // wakes, finds the lane gone, and ends.
        for slot in lock(&self.slots).iter().filter_map(Weak::upgrade) {
            lock(&slot.state).conn = None;
        }
        self.sweeper.wake.notify_one();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// The sweeper: sends, on the multiplexed connection, the commits idle threads left waiting
/// longer than the linger; sleeps until the next one's linger ends, or until a commit comes.
async fn sweep(lane: Weak<BlockingLane>) {
    // Whether the task ends, or its runtime drops it (even before it first ran), the next
    // carried commit starts another.
    struct Running(Arc<SweeperSignal>);
    impl Drop for Running {
        fn drop(&mut self) {
            self.0.parked.store(false, Ordering::SeqCst);
            self.0.running.store(false, Ordering::SeqCst);
        }
    }
    let Some((signal, mut conn, round_trips)) = lane.upgrade().map(|l| {
        (
            Arc::clone(&l.sweeper),
            l.multiplexed.clone(),
            Arc::clone(&l.round_trips),
        )
    }) else {
        return;
    };
    let _running = Running(Arc::clone(&signal));
    loop {
        let Some((due, next)) = lane.upgrade().map(|l| l.due(Instant::now())) else {
            return;
        };
        if !due.is_empty() {
            // Counted before it is sent: the answers finish the commits, whose waiters may
            // read the count at once.
            round_trips.fetch_add(1, Ordering::Relaxed);
            send_swept(&mut conn, due).await;
            continue;
        }
        match next {
            Some(at) => tokio::time::sleep_until(at).await,
            None => {
                signal.parked.store(true, Ordering::SeqCst);
                // A commit carried before `parked` was set did not wake us: look once more.
                let waiting = lane.upgrade().is_some_and(|l| {
                    lock(&l.slots)
                        .iter()
                        .filter_map(Weak::upgrade)
                        .any(|s| s.state.try_lock().map_or(true, |s| s.since.is_some()))
                });
                if !waiting {
                    signal.wake.notified().await;
                }
                signal.parked.store(false, Ordering::SeqCst);
            }
        }
    }
}

/// A pipeline of the riders' commands (moved out of them), and how many each has.
fn board(riders: &mut [Rider]) -> (redis::Pipeline, Vec<usize>) {
    let mut pipe = redis::pipe();
    let mut counts = Vec::with_capacity(riders.len());
    for rider in riders {
        counts.push(rider.commands.len());
        for cmd in std::mem::take(&mut rider.commands) {
            pipe.add_command(cmd);
        }
    }
    (pipe, counts)
}

/// Sends swept riders as one pipeline and gives each its answers.
async fn send_swept(conn: &mut ConnectionManager, mut riders: Vec<Rider>) {
    let (pipe, counts) = board(&mut riders);
    let sent = redis::aio::ConnectionLike::req_packed_commands(conn, &pipe, 0, pipe.len()).await;
    match sent {
        Ok(values) => answer_riders(riders, counts, Ok(&mut values.into_iter())),
        Err(e) => answer_riders(riders, counts, Err(&e)),
    }
}

/// Gives each rider its `counts` answers from `values`, in order, or the pipeline's error.
fn answer_riders(
    riders: Vec<Rider>,
    counts: Vec<usize>,
    values: Result<&mut std::vec::IntoIter<Value>, &RedisError>,
) {
    match values {
        Ok(values) => {
            for (rider, n) in riders.into_iter().zip(counts) {
                let answers = values.by_ref().take(n).map(Value::extract_error);
                rider.answer(Carried::Answered(answers.collect()));
            }
        }
        Err(e) => {
            for rider in riders {
                rider.answer(Carried::Failed(e.clone()));
            }
        }
    }
}
