//! [`RecordedNameServer`]: a name server that answers route requests as Apache RocketMQ
//! 4.9.7's Java name server did, from its answers recorded byte for byte (`fixtures/`): for a
//! broker the tests cannot run here.
//!
//! 4.9.7 answers by the request's remoting version: a request older than V4_9_4 gets the route
//! in fastjson's old format, whose map keys are unquoted (`{0:"127.0.0.1:…"}`, not JSON); a
//! newer one (what rocketmq-client-rust 1.0.0 sends) gets quoted keys. Stock 4.9.7's broker
//! data lacks the 5.x field `enableActingMaster`; the second recording is the same broker
//! with the field added.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use rocketmq_model::version::RocketMqVersion;

/// Stock 4.9.7's answer to GET_ROUTEINFO_BY_TOPIC (request code 105) for a request of version
/// 435 (V4_9_4 or newer): a comment, then the remoting header (`header: …`) and the body
/// (`body: …`).
pub const ROCKETMQ_4_9_7_TOPIC_ROUTE: &str =
    include_str!("../fixtures/rocketmq-4.9.7-topic-route.txt");

/// Stock 4.9.7's answer to the same request of version 0: map keys unquoted.
pub const ROCKETMQ_4_9_7_TOPIC_ROUTE_V0: &str =
    include_str!("../fixtures/rocketmq-4.9.7-topic-route-v0.txt");

/// 4.9.7's answers with the 5.x field added to its route data, to requests of version 435 and
/// 0 (`# version 435:` and `# version 0:`, each a header and a body).
pub const ROCKETMQ_4_9_7_TOPIC_ROUTE_WITH_ACTING_MASTER: &str =
    include_str!("../fixtures/rocketmq-4.9.7-topic-route-with-acting-master.txt");

/// The default topic, whose route a producer reads before a topic exists.
const DEFAULT_TOPIC: &str = "TBW102";

/// Which recorded 4.9.7 name server to answer as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// Stock 4.9.7: no `enableActingMaster`.
    Stock,
    /// 4.9.7 whose route data carries `enableActingMaster` (the workaround).
    WithActingMaster,
}

/// A recorded answer: a remoting header and a body.
#[derive(Debug, Clone)]
struct Answer {
    header: String,
    body: Vec<u8>,
}

/// The routes of a recording, for requests older than V4_9_4 and for newer ones.
#[derive(Debug, Clone)]
struct Routes {
    old: Answer,
    new: Answer,
    /// Topics with a route: `None` for every topic, else only these.
    topics: Option<Vec<String>>,
}

/// A remoting server on 127.0.0.1 that answers route requests as a recorded 4.9.7 name server
/// did (the request's `opaque` put in, as a real server does). Stops when dropped.
#[derive(Debug)]
pub struct RecordedNameServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// The `header: ` and `body: ` lines after the line `after` (from the start when `None`).
fn answer(recording: &str, after: Option<&str>) -> std::io::Result<Answer> {
    let lines: Vec<&str> = recording.lines().collect();
    let start = match after {
        None => 0,
        Some(marker) => lines.iter().position(|l| *l == marker).ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidData, format!("no {marker}"))
        })?,
    };
    let field = |name: &str| {
        lines[start..]
            .iter()
            .find_map(|l| l.strip_prefix(name))
            .map(str::to_owned)
            .ok_or_else(|| {
                std::io::Error::new(std::io::ErrorKind::InvalidData, format!("no {name} line"))
            })
    };
    Ok(Answer {
        header: field("header: ")?,
        body: field("body: ")?.into_bytes(),
    })
}

impl RecordedNameServer {
    /// A name server answering every topic's route as the recorded 4.9.7 one did.
    pub fn rocketmq_4_9_7(recorded: Recorded) -> std::io::Result<Self> {
        Self::serving(Self::routes(recorded)?)
    }

    /// The same, but only the default topic (`TBW102`) has a route: any other topic gets
    /// TOPIC_NOT_EXIST, as a topic not created yet does.
    pub fn rocketmq_4_9_7_default_topic_only(recorded: Recorded) -> std::io::Result<Self> {
        let mut routes = Self::routes(recorded)?;
        routes.topics = Some(vec![DEFAULT_TOPIC.to_owned()]);
        Self::serving(routes)
    }

    fn routes(recorded: Recorded) -> std::io::Result<Routes> {
        let (old, new) = match recorded {
            Recorded::Stock => (
                answer(ROCKETMQ_4_9_7_TOPIC_ROUTE_V0, None)?,
                answer(ROCKETMQ_4_9_7_TOPIC_ROUTE, None)?,
            ),
            Recorded::WithActingMaster => (
                answer(
                    ROCKETMQ_4_9_7_TOPIC_ROUTE_WITH_ACTING_MASTER,
                    Some("# version 0:"),
                )?,
                answer(
                    ROCKETMQ_4_9_7_TOPIC_ROUTE_WITH_ACTING_MASTER,
                    Some("# version 435:"),
                )?,
            ),
        };
        Ok(Routes {
            old,
            new,
            topics: None,
        })
    }

    fn serving(routes: Routes) -> std::io::Result<Self> {
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
                    let routes = routes.clone();
                    std::thread::spawn(move || serve(stream, &routes));
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

/// The answer to one request header: the recorded route in the format of the request's
/// version, or TOPIC_NOT_EXIST for a topic without a route. That answer is built as 4.9.7's
/// `DefaultRequestProcessor.getRouteInfoByTopic` builds it (code 17, its remark), not
/// recorded.
fn answer_to(request: &serde_json::Value, routes: &Routes) -> (serde_json::Value, Vec<u8>) {
    let topic = request["extFields"]["topic"].as_str().unwrap_or_default();
    let version = request["version"].as_i64().unwrap_or(0);
    let has_route = routes
        .topics
        .as_ref()
        .is_none_or(|topics| topics.iter().any(|t| t == topic));
    let recorded = match version >= RocketMqVersion::V4_9_4 as i64 {
        true => &routes.new,
        false => &routes.old,
    };
    let mut header: serde_json::Value = serde_json::from_str(&recorded.header).unwrap_or_default();
    header["opaque"] = request["opaque"].clone();
    if !has_route {
        header["code"] = 17.into();
        header["remark"] = format!(
            "No topic route info in name server for the topic: {topic}\nSee http://rocketmq.apache.org/docs/faq/ for further details."
        )
        .into();
        return (header, Vec::new());
    }
    (header, recorded.body.clone())
}

/// Answers each request frame on `stream` until it closes.
fn serve(mut stream: TcpStream, routes: &Routes) {
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
        let (header, body) = answer_to(&request, routes);
        let header = header.to_string().into_bytes();
        let mut frame = Vec::with_capacity(8 + header.len() + body.len());
        frame.extend_from_slice(&((4 + header.len() + body.len()) as u32).to_be_bytes());
        frame.extend_from_slice(&(header.len() as u32).to_be_bytes());
        frame.extend_from_slice(&header);
        frame.extend_from_slice(&body);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_follow_the_request_version_as_4_9_7_did() {
        let routes = RecordedNameServer::routes(Recorded::Stock).unwrap();
        let request = |version: i64, topic: &str| serde_json::json!({"code": 105, "version": version, "opaque": 9, "extFields": {"topic": topic}});
        let (header, body) = answer_to(&request(0, "Orders"), &routes);
        assert_eq!(header["opaque"], 9);
        assert!(String::from_utf8_lossy(&body).contains(r#"{0:"127.0.0.1"#));
        let current = rocketmq_model::version::CURRENT_VERSION as i64;
        let (_, body) = answer_to(&request(current, "Orders"), &routes);
        assert!(String::from_utf8_lossy(&body).contains(r#"{"0":"127.0.0.1"#));
        assert!(!String::from_utf8_lossy(&body).contains("enableActingMaster"));
        let routes = RecordedNameServer::routes(Recorded::WithActingMaster).unwrap();
        for version in [0, current] {
            let (_, body) = answer_to(&request(version, "Orders"), &routes);
            assert!(String::from_utf8_lossy(&body).contains(r#""enableActingMaster":false"#));
        }
    }
}
