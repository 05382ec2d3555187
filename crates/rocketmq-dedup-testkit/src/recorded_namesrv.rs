//! [`RecordedNameServer`]: a name server that answers every route request with an answer a
//! real one gave, recorded byte for byte: for brokers the tests cannot run here (Apache
//! RocketMQ 4.9.7's Java name server).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

/// Apache RocketMQ 4.9.7's answer to GET_ROUTEINFO_BY_TOPIC (request code 105), captured on
/// loopback: a comment, then the remoting header (`header: …`) and the body (`body: …`).
pub const ROCKETMQ_4_9_7_TOPIC_ROUTE: &str =
    include_str!("../fixtures/rocketmq-4.9.7-topic-route.txt");

/// A remoting server on 127.0.0.1 that answers every request with one recorded header and
/// body (the request's `opaque` put in, as a real server does). Stops when dropped.
#[derive(Debug)]
pub struct RecordedNameServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl RecordedNameServer {
    /// A name server answering as Apache RocketMQ 4.9.7's did ([`ROCKETMQ_4_9_7_TOPIC_ROUTE`]).
    pub fn rocketmq_4_9_7() -> std::io::Result<Self> {
        let field = |name: &str| {
            ROCKETMQ_4_9_7_TOPIC_ROUTE
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(str::to_owned)
                .ok_or_else(|| {
                    std::io::Error::new(std::io::ErrorKind::InvalidData, format!("no {name} line"))
                })
        };
        Self::answering(field("header: ")?, field("body: ")?.into_bytes())
    }

    /// A name server answering `header` (remoting JSON) and `body` to every request.
    pub fn answering(header: String, body: Vec<u8>) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stopped.load(Ordering::SeqCst) {
                    return;
                }
                if let Ok(stream) = stream {
                    let (header, body) = (header.clone(), body.clone());
                    std::thread::spawn(move || serve(stream, &header, &body));
                }
            }
        });
        Ok(RecordedNameServer {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    /// `127.0.0.1:port`.
    pub fn addr(&self) -> String {
        self.addr.to_string()
    }
}

/// Answers each request frame on `stream` until it closes.
fn serve(mut stream: TcpStream, header: &str, body: &[u8]) {
    loop {
        let mut lengths = [0u8; 8];
        if stream.read_exact(&mut lengths).is_err() {
            return;
        }
        let total = u32::from_be_bytes([lengths[0], lengths[1], lengths[2], lengths[3]]) as usize;
        let header_len = (u32::from_be_bytes([lengths[4], lengths[5], lengths[6], lengths[7]])
            & 0xFF_FFFF) as usize;
        let mut rest = vec![0u8; total.saturating_sub(4)];
        if stream.read_exact(&mut rest).is_err() || header_len > rest.len() {
            return;
        }
        let request: serde_json::Value =
            serde_json::from_slice(&rest[..header_len]).unwrap_or_default();
        let mut answer: serde_json::Value = serde_json::from_str(header).unwrap_or_default();
        answer["opaque"] = request["opaque"].clone();
        let answer = answer.to_string().into_bytes();
        let mut frame = Vec::with_capacity(8 + answer.len() + body.len());
        frame.extend_from_slice(&((4 + answer.len() + body.len()) as u32).to_be_bytes());
        frame.extend_from_slice(&(answer.len() as u32).to_be_bytes());
        frame.extend_from_slice(&answer);
        frame.extend_from_slice(body);
        if stream.write_all(&frame).is_err() {
            return;
        }
    }
}

impl Drop for RecordedNameServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
