//! Bridging the client's synchronous listener call to async store and handler code.

use std::cell::Cell;
use std::future::Future;

use tokio::runtime::{Handle, Runtime, RuntimeFlavor};

/// The Tokio runtime whose drivers (I/O, timers) the listener's futures use.
#[derive(Debug)]
pub(crate) enum ListenerRuntime {
    /// A runtime the application owns.
    Borrowed(Handle),
    /// A runtime the listener started because none was running when it was built.
    Owned(Option<Runtime>),
}

impl ListenerRuntime {
    /// The runtime of the caller, else a small one of our own.
    pub(crate) fn current_or_new() -> std::io::Result<Self> {
        if let Ok(handle) = Handle::try_current() {
            return Ok(ListenerRuntime::Borrowed(handle));
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("rocketmq-dedup")
            .enable_all()
            .build()?;
        Ok(ListenerRuntime::Owned(Some(runtime)))
    }

    pub(crate) fn handle(&self) -> &Handle {
        match self {
            ListenerRuntime::Borrowed(handle) => handle,
            ListenerRuntime::Owned(runtime) => runtime
                .as_ref()
                .expect("runtime is present until drop")
                .handle(),
        }
    }

    /// Runs `fut` to completion on the calling thread, whatever thread that is.
    ///
    /// - Outside any runtime (the client's blocking-lane threads are outside once the client
    ///   has left its task context, and plain threads are): `Handle::block_on`.
    /// - On a multi-thread runtime's thread: inside `block_in_place`, so no worker is starved.
    /// - On a current-thread runtime: on a scoped helper thread, as that runtime cannot be
    ///   blocked without stopping its own drivers.
    pub(crate) fn block_on<F>(&self, fut: F) -> F::Output
    where
        F: Future + Send,
        F::Output: Send,
    {
        let handle = self.handle();
        match Handle::try_current().map(|h| h.runtime_flavor()) {
            Err(_) => on_this_thread(handle, fut),
            Ok(RuntimeFlavor::CurrentThread) => std::thread::scope(|scope| {
                scope
                    .spawn(|| on_this_thread(handle, fut))
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            }),
            Ok(_) => tokio::task::block_in_place(|| on_this_thread(handle, fut)),
        }
    }
}

thread_local! {
    /// Set while this thread waits for a listener's future in [`ListenerRuntime::block_on`].
    static CONSUME_THREAD: Cell<bool> = const { Cell::new(false) };
}

/// Whether the caller runs inside [`ListenerRuntime::block_on`]: on a thread that does nothing
/// but wait for one listener call, so a store may block it for a round trip instead of handing
/// the call to a runtime task (the Redis store's blocking connections).
pub(crate) fn on_consume_thread() -> bool {
    CONSUME_THREAD.with(Cell::get)
}

/// `handle.block_on(fut)`, with [`on_consume_thread`] true meanwhile.
fn on_this_thread<F: Future>(handle: &Handle, fut: F) -> F::Output {
    let _restore = ConsumeThread::set(true);
    handle.block_on(fut)
}

/// `fut`, polled with [`on_consume_thread`] false: the handlers' phase of a batch, where the
/// handlers and the renewals beside them share the thread, so no store call may block it.
pub(crate) async fn beside_handlers<F: Future>(fut: F) -> F::Output {
    let mut fut = std::pin::pin!(fut);
    std::future::poll_fn(|cx| {
        let _restore = ConsumeThread::set(false);
        fut.as_mut().poll(cx)
    })
    .await
}

/// Sets [`on_consume_thread`]'s answer, and puts the old one back when dropped.
struct ConsumeThread(bool);

impl ConsumeThread {
    fn set(value: bool) -> Self {
        ConsumeThread(CONSUME_THREAD.with(|c| c.replace(value)))
    }
}

impl Drop for ConsumeThread {
    fn drop(&mut self) {
        CONSUME_THREAD.with(|c| c.set(self.0));
    }
}

impl Drop for ListenerRuntime {
    fn drop(&mut self) {
        // Dropping a runtime from async code panics; shutting it down in the background does not.
        if let ListenerRuntime::Owned(runtime) = self {
            if let Some(runtime) = runtime.take() {
                runtime.shutdown_background();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_consume_thread_is_marked_inside_block_on_and_not_beside_the_handlers() {
        let runtime = ListenerRuntime::current_or_new().unwrap();
        assert!(!on_consume_thread());
        let seen = runtime.block_on(async {
            let inside = on_consume_thread();
            let beside = beside_handlers(async { on_consume_thread() }).await;
            (inside, beside, on_consume_thread())
        });
        assert_eq!(seen, (true, false, true));
        assert!(!on_consume_thread(), "put back after the call");
    }
}
