//! Blocking connections for the calls a listener makes on its consume thread.
//!
//! The client runs a listener on a thread of its own, and the listener waits on that thread
//! for its future ([`crate::runtime`]). Through the multiplexed connection every round trip
//! crosses threads twice: the request goes to the connection's task on a runtime worker, and
//! the answer comes back with a wake-up. On a consume thread the store instead takes a blocking
//! connection from this pool and writes and reads the socket itself: no hand-off. Calls made
//! anywhere else (background commits, tools) keep the multiplexed connection, which never
//! blocks a runtime worker, and so does every call made while the handlers run on the consume
//! thread (the renewals; `runtime::beside_handlers`): it must never hold a handler up.
//!
//! Bounds: at most `max_open` connections; a call that finds them all in use goes the
//! multiplexed way instead of waiting or opening another. A connection that fails (I/O error,
//! timeout) is dropped, and for [`PAUSE`] every call goes the multiplexed way, which fails fast
//! while the server is down and reconnects in the background: a consume thread never waits for
//! a connect to a server that is down more than once per pause.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use redis::{Cmd, ConnectionLike, RedisError};

use super::pipeline::{answered, packed, KeyedCommand, Sent};

/// How long after a failed blocking connection every call goes the multiplexed way.
pub(super) const PAUSE: Duration = Duration::from_secs(1);

/// Blocking connections to one server, kept between calls.
pub(super) struct BlockingPool {
    client: redis::Client,
    connect_timeout: Duration,
    response_timeout: Duration,
    max_open: usize,
    /// Connections open now (idle or in a call).
    open: AtomicUsize,
    idle: Mutex<Vec<redis::Connection>>,
    /// Calls go the multiplexed way until this many milliseconds after `born`.
    paused_until_ms: AtomicU64,
    born: Instant,
}

impl BlockingPool {
    /// A pool over `client`; no connection is opened before the first call.
    pub(super) fn new(
        client: redis::Client,
        connect_timeout: Duration,
        response_timeout: Duration,
        max_open: usize,
    ) -> Self {
        BlockingPool {
            client,
            connect_timeout,
            response_timeout,
            max_open,
            open: AtomicUsize::new(0),
            idle: Mutex::new(Vec::new()),
            paused_until_ms: AtomicU64::new(0),
            born: Instant::now(),
        }
    }

    fn now_ms(&self) -> u64 {
        self.born.elapsed().as_millis() as u64
    }

    /// Whether a call made now may block on this pool: it is made on a listener's consume
    /// thread, and no connection failed in the last [`PAUSE`].
    pub(super) fn usable(&self) -> bool {
        crate::runtime::on_consume_thread()
            && self.now_ms() >= self.paused_until_ms.load(Ordering::Relaxed)
    }

    /// Sends the commands (and `wait`) as one pipeline on a blocking connection; gives the
    /// commands back when all `max_open` connections are in use (the caller goes the
    /// multiplexed way).
    pub(super) fn send_or_return<'a>(
        &self,
        commands: Vec<KeyedCommand<'a>>,
        wait: Option<&Cmd>,
    ) -> Result<Result<Sent, RedisError>, Vec<KeyedCommand<'a>>> {
        let mut conn = match self.take() {
            None => return Err(commands),
            Some(Err(e)) => return Ok(Err(e)),
            Some(Ok(conn)) => conn,
        };
        let pipe = packed(commands, wait);
        Ok(
            match conn.req_packed_commands(&pipe.get_packed_pipeline(), 0, pipe.len()) {
                Ok(values) => {
                    self.idle
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(conn);
                    answered(values, wait.is_some())
                }
                Err(e) => {
                    // The connection may hold a late answer: it is never used again.
                    self.dropped();
                    Err(e)
                }
            },
        )
    }

    /// An idle connection, or a new one while fewer than `max_open` are open.
    fn take(&self) -> Option<Result<redis::Connection, RedisError>> {
        if let Some(conn) = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop() {
            return Some(Ok(conn));
        }
        let opened = self
            .open
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < self.max_open).then_some(n + 1)
            });
        opened.ok()?;
        Some(self.connect().inspect_err(|_| self.dropped()))
    }

    fn connect(&self) -> Result<redis::Connection, RedisError> {
        let conn = self
            .client
            .get_connection_with_timeout(self.connect_timeout)?;
        conn.set_read_timeout(Some(self.response_timeout))?;
        conn.set_write_timeout(Some(self.response_timeout))?;
        Ok(conn)
    }

    /// A connection was closed after a failure: one fewer open, and a pause.
    fn dropped(&self) {
        self.open.fetch_sub(1, Ordering::SeqCst);
        let until = self.now_ms() + PAUSE.as_millis() as u64;
        self.paused_until_ms.fetch_max(until, Ordering::Relaxed);
    }
}
