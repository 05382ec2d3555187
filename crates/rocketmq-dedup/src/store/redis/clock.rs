//! The Redis server's clock, as a store reads it: `TIME` at its first call and then at most
//! once a [`READING_EVERY`], in front of a claim; in between, the time passed on this process's
//! monotonic clock. A consumer's wall clock never enters a record, a sweep or an expiry.
//!
//! A reading sent at `t0` and answered at `t1` (this process's monotonic instants) with the
//! server's `T` (ms) bounds the server's time at any later instant `t`:
//! `T + (t - t1) <= server time < T + 1 + (t - t0)`. The earlier bound judges (a record is read
//! live, or swept, by a time no later than the server's), the later one stamps (a record lives
//! at least its TTL by the server's clock). The bounds are a round trip of the reading apart,
//! plus the monotonic clock's drift over at most a second between readings (microseconds).
//!
//! On a Redis Cluster every master has its own clock: there the scripts read `TIME` themselves,
//! and a claim reads it from each master it touches.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long a reading is used before the next claim reads `TIME` again.
pub(super) const READING_EVERY: Duration = Duration::from_secs(1);

/// The server's time now, bounded: at least `lo`, less than `hi` (Unix ms).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ServerTime {
    /// No later than the server's time: what a record is judged by.
    pub(super) lo: u64,
    /// Later than the server's time: what a record is stamped by.
    pub(super) hi: u64,
}

/// The last reading of the server's clock, read by every call and written about once a second:
/// a sequence lock over three numbers, so that readers never wait (nor write a shared line).
///
/// A reading once taken is never dropped, only marked stale ([`ServerClock::forget`]): a claim
/// already under way when another call forgets the reading still judges its records by the
/// reading it started with, never by no clock at all.
#[derive(Debug)]
pub(super) struct ServerClock {
    /// Odd while a reading is written; 0 before the first.
    sequence: AtomicU64,
    /// Set by [`ServerClock::forget`], cleared by the next reading.
    stale: AtomicBool,
    /// The server's time (Unix ms).
    server_ms: AtomicU64,
    /// When it was asked and answered, in ns after `origin`.
    sent_ns: AtomicU64,
    answered_ns: AtomicU64,
    origin: Instant,
}

impl Default for ServerClock {
    fn default() -> Self {
        ServerClock {
            sequence: AtomicU64::new(0),
            stale: AtomicBool::new(false),
            server_ms: AtomicU64::new(0),
            sent_ns: AtomicU64::new(0),
            answered_ns: AtomicU64::new(0),
            origin: Instant::now(),
        }
    }
}

/// One `TIME` answer and when it was asked and answered.
#[derive(Debug, Clone, Copy)]
struct Reading {
    server_ms: u64,
    sent: Instant,
    answered: Instant,
}

impl ServerClock {
    /// The reading kept, if any.
    fn reading(&self) -> Option<Reading> {
        loop {
            let before = self.sequence.load(Ordering::Acquire);
            if before == 0 {
                return None;
            }
            let server_ms = self.server_ms.load(Ordering::Acquire);
            let sent = self.sent_ns.load(Ordering::Acquire);
            let answered = self.answered_ns.load(Ordering::Acquire);
            if before.is_multiple_of(2) && self.sequence.load(Ordering::Acquire) == before {
                return Some(Reading {
                    server_ms,
                    sent: self.origin + Duration::from_nanos(sent),
                    answered: self.origin + Duration::from_nanos(answered),
                });
            }
            std::hint::spin_loop();
        }
    }

    /// The server's time now, or `None` before the first reading and after
    /// [`ServerClock::forget`] (until the next reading): what a commit stamps by.
    pub(super) fn now(&self) -> Option<ServerTime> {
        if self.stale.load(Ordering::Acquire) {
            return None;
        }
        self.at(Instant::now())
    }

    /// The server's time at the instant `at` (of this process's monotonic clock) by the last
    /// reading, stale or not, or `None` before the first reading.
    pub(super) fn at(&self, at: Instant) -> Option<ServerTime> {
        let reading = self.reading()?;
        // Signed: `at` may come before the reading was answered.
        let ms = |since: Instant| match at.checked_duration_since(since) {
            Some(after) => after.as_millis() as i64,
            None => -(since.duration_since(at).as_millis() as i64) - 1,
        };
        let server = reading.server_ms as i64;
        Some(ServerTime {
            lo: (server + ms(reading.answered)).max(0) as u64,
            hi: (server + 1 + ms(reading.sent) + 1).max(0) as u64,
        })
    }

    /// Whether the next claim should read `TIME` (no reading, one marked stale, or one older
    /// than [`READING_EVERY`]).
    pub(super) fn wants_reading(&self) -> bool {
        self.stale.load(Ordering::Acquire)
            || self
                .reading()
                .is_none_or(|r| r.answered.elapsed() >= READING_EVERY)
    }

    /// Keeps the reading `server_ms`, asked at `sent` and answered at `answered`. Two writers
    /// at once (two claims that both read `TIME`) each keep a whole reading: the sequence is
    /// taken by one at a time.
    pub(super) fn read(&self, server_ms: u64, sent: Instant, answered: Instant) {
        let ns = |at: Instant| at.saturating_duration_since(self.origin).as_nanos() as u64;
        let mut current = self.sequence.load(Ordering::Acquire);
        loop {
            if current % 2 == 1 {
                // Another writer is at it: its reading is as good.
                return;
            }
            match self.sequence.compare_exchange_weak(
                current,
                current + 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => break,
                Err(seen) => current = seen,
            }
        }
        self.server_ms.store(server_ms, Ordering::Release);
        self.sent_ns.store(ns(sent), Ordering::Release);
        self.answered_ns.store(ns(answered), Ordering::Release);
        // Never back to 0, which means "no reading".
        self.sequence.store(current + 2, Ordering::Release);
        self.stale.store(false, Ordering::Release);
    }

    /// Marks the reading stale (the server may have changed: a failover, a restart): the next
    /// call reads `TIME` again, and until then [`ServerClock::now`] answers `None`. The reading
    /// itself stays for [`ServerClock::at`]: a claim whose pipeline was under way judges by it.
    pub(super) fn forget(&self) {
        self.stale.store(true, Ordering::Release);
    }
}

/// The server's time in ms from a `TIME` answer (seconds, microseconds).
pub(super) fn time_ms(answer: redis::Value) -> redis::RedisResult<u64> {
    let (secs, micros): (u64, u64) = redis::from_redis_value(answer)?;
    Ok(secs * 1000 + micros / 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reading_bounds_the_servers_time_from_both_sides() {
        let clock = ServerClock::default();
        assert!(clock.wants_reading() && clock.now().is_none());
        // Readings come after the clock was made.
        std::thread::sleep(Duration::from_millis(40));
        let sent = Instant::now() - Duration::from_millis(30);
        let answered = Instant::now() - Duration::from_millis(10);
        clock.read(1_000_000, sent, answered);
        let now = clock.now().unwrap();
        // The server read its clock between `sent` and `answered`: now it is 10 to 32 ms on.
        assert!((1_000_010..1_000_015).contains(&now.lo), "{now:?}");
        assert!((1_000_032..1_000_037).contains(&now.hi), "{now:?}");
        // Before the answer came, the earlier bound is earlier still.
        let before = clock.at(answered - Duration::from_millis(5)).unwrap();
        assert!(before.lo < 1_000_000 && before.hi > before.lo, "{before:?}");
        assert!(!clock.wants_reading());
        clock.forget();
        assert!(clock.wants_reading() && clock.now().is_none());
        // A claim under way still judges by the reading it started with.
        assert_eq!(
            clock.at(answered),
            Some(ServerTime {
                lo: 1_000_000,
                hi: 1_000_022
            })
        );
        clock.read(2_000_000, Instant::now(), Instant::now());
        assert!(!clock.wants_reading());
        assert!(clock.now().unwrap().lo >= 2_000_000);
    }
}
