//! Bridging the client's synchronous listener call to async store and handler code.

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
            Err(_) => handle.block_on(fut),
            Ok(RuntimeFlavor::CurrentThread) => std::thread::scope(|scope| {
                scope
                    .spawn(|| handle.block_on(fut))
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            }),
            Ok(_) => tokio::task::block_in_place(|| handle.block_on(fut)),
        }
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
