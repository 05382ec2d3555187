//! Log lines written to memory, for tests that read what was logged.

use std::io::Write;
use std::sync::{Arc, Mutex};

/// A `tracing_subscriber` writer into a shared buffer: clone it into the subscriber, read the
/// text from the original.
#[derive(Clone, Default)]
pub struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Capture {
    /// What was logged so far.
    pub fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).expect("logs are UTF-8")
    }
}
