//! A start-up check of a topic's route, asked of the name server directly, so that a consumer
//! or producer that cannot work fails at once with the one cause that applies, instead of
//! idling or printing a misleading error.
//!
//! rocketmq-client-rust 1.0.0 reads routes through its own types, and when a name server's
//! answer does not decode (Apache RocketMQ 4.x leaves `enableActingMaster` out of its broker
//! data, which the client requires), the push consumer logs a WARN, swallows the error and
//! later answers "topic not exist": the same words as for a topic that really has no route;
//! a producer fails its first send ten seconds later with a serialization error. This check
//! sends the name server the route request exactly as the client does (the client's command
//! factory: its remoting version, language and header fields) and reads the answer with the
//! client's own decoder, so that it sees what the client will see, and the failures read
//! apart:
//!
//! | what happened | error |
//! |---|---|
//! | no connection to the name server, or no answer | [`RouteCheckError::Unreachable`] |
//! | something answered that is not a RocketMQ name server | [`RouteCheckError::NotANameServer`] |
//! | the name server has no route for the topic | [`RouteCheckError::NoRoute`] |
//! | a route this client cannot read (4.x) | [`RouteCheckError::Undecodable`], with the client's own error |
//!
//! A topic with no route yet is checked through the default topic's route (`TBW102`, what the
//! client reads for a producer's first send to a new topic): a 4.x name server is recognised
//! before any topic exists. A route the client can read passes whatever broker sent it (a 4.x
//! broker whose route data carries the 5.x field works).
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! let route = rocketmq_dedup::client::check_topic_route("127.0.0.1:9876", "Orders", Duration::from_secs(3)).await?;
//! println!("Orders has {} read queues on {} brokers", route.read_queues, route.brokers);
//! # Ok(()) }
//! ```
//!
//! Where the client's own error surfaces later anyway (a send), [`explain_client_error`] gives
//! the same explanation for it.

use std::time::Duration;

use bytes::BytesMut;
use cheetah_string::CheetahString;
use rocketmq_model::common::topic::TopicValidator;
use rocketmq_protocol::code::request_code::RequestCode;
use rocketmq_protocol::code::response_code::ResponseCode;
use rocketmq_protocol::protocol::header::client_request_header::GetRouteInfoRequestHeader;
use rocketmq_protocol::protocol::remoting_command::RemotingCommand;
use rocketmq_protocol::protocol::route::topic_route_data::TopicRouteData;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The largest answer read (a route of a few thousand queues is far smaller).
const MAX_FRAME: usize = 16 * 1024 * 1024;

/// The field whose absence marks a route of Apache RocketMQ 4.x.
const ACTING_MASTER_FIELD: &str = "enableActingMaster";

/// What a route of Apache RocketMQ 4.x means for this client, and what to do.
const APACHE_4X: &str = "this is the route format of Apache RocketMQ 4.x, whose broker data has no `enableActingMaster`: use Apache RocketMQ 5.x or rocketmq-rust's name server and broker, or add the field to the 4.x broker's route data (see rocketmq-dedup's docs/brokers.md)";

/// A topic's route, as far as the check reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopicRoute {
    /// Brokers (broker names) serving the topic.
    pub brokers: usize,
    /// Read queues over all brokers.
    pub read_queues: usize,
}

/// Why a topic's route cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RouteCheckError {
    /// No answer from the name server: refused, timed out, or closed.
    #[error("the name server {addr} cannot be reached: {reason}")]
    Unreachable {
        /// The address tried.
        addr: String,
        /// What the connection or the read answered.
        reason: String,
    },
    /// Something answered at the address, but not in RocketMQ's remoting protocol (an HTTP
    /// server, say): the address names another service.
    #[error("{addr} is not a RocketMQ name server: it answered {answered}")]
    NotANameServer {
        /// The address asked.
        addr: String,
        /// The start of what it answered, printable.
        answered: String,
    },
    /// The name server has no route for the topic: it does not exist (create it, or let the
    /// broker create topics), or no broker serving it has registered yet.
    #[error("topic {topic} has no route on the name server {addr}: create the topic, or check that its broker registered with this name server")]
    NoRoute {
        /// The topic.
        topic: String,
        /// The name server asked.
        addr: String,
    },
    /// The name server answered a route rocketmq-client-rust 1.0.0 cannot decode: the route
    /// asked for, or, for a topic with no route yet, the default topic's.
    #[error("the name server {addr} answered a route for topic {topic} that rocketmq-client-rust 1.0.0 cannot read ({detail}): {APACHE_4X}")]
    Undecodable {
        /// The topic whose route did not decode (`TBW102`, the default topic, when the topic
        /// asked for has no route yet).
        topic: String,
        /// The name server asked.
        addr: String,
        /// The client's own decoding error (e.g. ``missing field `enableActingMaster` ``).
        detail: String,
    },
    /// The name server answered with an error code (other than "no route").
    #[error("the name server {addr} answered the route request for topic {topic} with {detail}")]
    Refused {
        /// The topic.
        topic: String,
        /// The name server asked.
        addr: String,
        /// The code and remark.
        detail: String,
    },
}

/// A client error that is a route of Apache RocketMQ 4.x the client could not read (its
/// producer's send, a rebalance), explained as [`RouteCheckError::Undecodable`] explains it.
#[derive(Debug, thiserror::Error)]
#[error("rocketmq-client-rust 1.0.0 could not read a route ({detail}): {APACHE_4X}")]
pub struct Apache4xRoute {
    /// The client's error, as it printed.
    pub detail: String,
}

/// Whether `error` (or an error in its source chain) is the client failing to read a route of
/// Apache RocketMQ 4.x (`missing field enableActingMaster`); then the explanation.
///
/// ```
/// use rocketmq_dedup::client::explain_client_error;
///
/// let error = std::io::Error::other("core.serialization.failed: missing field `enableActingMaster` at line 1 column 96");
/// let explained = explain_client_error(&error).unwrap();
/// assert!(explained.to_string().contains("Apache RocketMQ 4.x"));
/// assert!(explain_client_error(&std::io::Error::other("timed out")).is_none());
/// ```
pub fn explain_client_error(error: &(dyn std::error::Error + 'static)) -> Option<Apache4xRoute> {
    std::iter::successors(Some(error), |e| e.source())
        .any(|e| e.to_string().contains(ACTING_MASTER_FIELD))
        .then(|| Apache4xRoute {
            detail: with_causes(error),
        })
}

/// Asks the name server at `addr` (`host:port`; the first of a `;`-separated list) for
/// `topic`'s route and checks that this client can read it, within `timeout`.
pub async fn check_topic_route(
    addr: &str,
    topic: &str,
    timeout: Duration,
) -> Result<TopicRoute, RouteCheckError> {
    let addr = addr.split(';').next().unwrap_or(addr).trim().to_owned();
    let deadline = tokio::time::Instant::now() + timeout;
    let connected = tokio::time::timeout_at(deadline, TcpStream::connect(&addr)).await;
    let mut stream = match connected {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => return Err(Asked::Unreachable(e.to_string()).into_error(addr, topic)),
        Err(_) => {
            let reason = format!("no connection within {timeout:?}");
            return Err(Asked::Unreachable(reason).into_error(addr, topic));
        }
    };
    let check = async {
        match ask_route(&mut stream, topic).await? {
            Found::Route(route) => Ok(route),
            // The default topic's route is what a producer's first send reads: a 4.x name
            // server is told apart even before the topic exists.
            Found::NoRoute => {
                match ask_route(&mut stream, TopicValidator::AUTO_CREATE_TOPIC_KEY_TOPIC).await? {
                    Found::Undecodable(detail) => Err(Asked::Undecodable(
                        TopicValidator::AUTO_CREATE_TOPIC_KEY_TOPIC.to_owned(),
                        detail,
                    )),
                    Found::Route(_) | Found::NoRoute => Err(Asked::NoRoute),
                }
            }
            Found::Undecodable(detail) => Err(Asked::Undecodable(topic.to_owned(), detail)),
        }
    };
    // A name server answers at once; silence is what a server of another protocol that waits
    // for the end of a line (redis-server, an HTTP server) gives.
    let asked = match tokio::time::timeout_at(deadline, check).await {
        Err(_) => Err(Asked::Unreachable(format!(
            "it accepted the connection but answered nothing within {timeout:?} \
             (a name server answers at once: is this the name server's port?)"
        ))),
        Ok(asked) => asked,
    };
    asked.map_err(|asked| asked.into_error(addr, topic))
}

/// What one route request found.
enum Found {
    Route(TopicRoute),
    NoRoute,
    /// The client's decoding error.
    Undecodable(String),
}

/// Why a check ended without a route (the address and topic are added after).
enum Asked {
    Unreachable(String),
    NotANameServer(String),
    NoRoute,
    /// The topic whose route did not decode, and the client's error.
    Undecodable(String, String),
    Refused(String),
}

impl Asked {
    fn into_error(self, addr: String, topic: &str) -> RouteCheckError {
        let topic = topic.to_owned();
        match self {
            Asked::Unreachable(reason) => RouteCheckError::Unreachable { addr, reason },
            Asked::NotANameServer(answered) => RouteCheckError::NotANameServer { addr, answered },
            Asked::NoRoute => RouteCheckError::NoRoute { topic, addr },
            Asked::Undecodable(topic, detail) => RouteCheckError::Undecodable {
                topic,
                addr,
                detail,
            },
            Asked::Refused(detail) => RouteCheckError::Refused {
                topic,
                addr,
                detail,
            },
        }
    }
}

/// Sends `topic`'s route request on `stream` and reads the answer.
async fn ask_route(stream: &mut TcpStream, topic: &str) -> Result<Found, Asked> {
    let request = route_request(topic).map_err(|e| Asked::Refused(format!("no request: {e}")))?;
    stream
        .write_all(&request)
        .await
        .map_err(|e| Asked::Unreachable(e.to_string()))?;
    let frame = read_frame(stream).await?;
    let mut answer = decode_answer(frame)?;
    match ResponseCode::from(answer.code()) {
        ResponseCode::Success => {}
        ResponseCode::TopicNotExist => return Ok(Found::NoRoute),
        _ => {
            let remark = answer.remark().map_or("no remark", |r| r.as_str());
            return Err(Asked::Refused(format!("code {}: {remark}", answer.code())));
        }
    }
    let body = answer.take_body().unwrap_or_default();
    Ok(match decode_route(&body) {
        Ok(route) if route.read_queues > 0 => Found::Route(route),
        Ok(_) => Found::NoRoute,
        Err(detail) => Found::Undecodable(detail),
    })
}

/// A GET_ROUTEINFO_BY_TOPIC request as rocketmq-client-rust 1.0.0 sends it: its command
/// factory's defaults (remoting version `CURRENT_VERSION`, language `RUST`, JSON) and its
/// request header, encoded by its codec.
fn route_request(topic: &str) -> Result<Vec<u8>, String> {
    let header = GetRouteInfoRequestHeader {
        topic: CheetahString::from_slice(topic),
        accept_standard_json_only: None,
        topic_request_header: None,
    };
    let mut command =
        match rocketmq_protocol::protocol::remoting_command_compat::initialize_remoting_command_factory(
            rocketmq_model::version::CURRENT_VERSION as i32,
        ) {
            Ok(factory) => factory.create_request_command(RequestCode::GetRouteinfoByTopic, header),
            // Initialized otherwise already (a client of this process set other defaults):
            // the process's defaults are then the client's.
            Err(_) => RemotingCommand::create_request_command(RequestCode::GetRouteinfoByTopic, header),
        };
    let mut frame = BytesMut::new();
    command
        .try_fast_header_encode(&mut frame)
        .map_err(|e| e.to_string())?;
    Ok(frame.to_vec())
}

/// Decodes a route body with rocketmq-client-rust's own decoder: what it cannot read, the
/// client cannot either.
fn decode_route(body: &[u8]) -> Result<TopicRoute, String> {
    let route = TopicRouteData::decode(body).map_err(|e| with_causes(&e))?;
    Ok(TopicRoute {
        brokers: route.broker_datas.len(),
        read_queues: route
            .queue_datas
            .iter()
            .map(|q| q.read_queue_nums as usize)
            .sum(),
    })
}

/// `error` and its causes, as one line (the client's serialization error names the field only
/// in its cause).
fn with_causes(error: &(dyn std::error::Error + 'static)) -> String {
    let mut line = error.to_string();
    for cause in std::iter::successors(error.source(), |e| e.source()) {
        let cause = cause.to_string();
        if !line.contains(&cause) {
            line = format!("{line}: {cause}");
        }
    }
    line
}

/// A remoting answer, decoded by the client's codec; what is not one is no name server.
fn decode_answer(frame: Vec<u8>) -> Result<RemotingCommand, Asked> {
    let printable = printable(&frame);
    let mut bytes = BytesMut::from(&frame[..]);
    match RemotingCommand::decode(&mut bytes) {
        Ok(Some(command)) => Ok(command),
        _ => Err(Asked::NotANameServer(printable)),
    }
}

/// Reads one remoting frame (its length prefix included). A length that no remoting frame
/// has is what another protocol sent: answered with what was read.
async fn read_frame(stream: &mut (impl AsyncReadExt + Unpin)) -> Result<Vec<u8>, Asked> {
    let unreachable = |e: std::io::Error| Asked::Unreachable(e.to_string());
    let mut head = [0u8; 8];
    let mut read = 0;
    while read < head.len() {
        match stream.read(&mut head[read..]).await.map_err(unreachable)? {
            0 if read == 0 => {
                return Err(Asked::Unreachable(
                    "the connection was closed without an answer".to_owned(),
                ))
            }
            0 => return Err(Asked::NotANameServer(printable(&head[..read]))),
            n => read += n,
        }
    }
    let total = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
    let header_len =
        (u32::from_be_bytes([head[4], head[5], head[6], head[7]]) & 0x00FF_FFFF) as usize;
    if !(4..=MAX_FRAME).contains(&total) || header_len > total - 4 {
        let mut more = [0u8; 56];
        let n = tokio::time::timeout(Duration::from_millis(100), stream.read(&mut more))
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or(0);
        let mut seen = head.to_vec();
        seen.extend_from_slice(&more[..n]);
        return Err(Asked::NotANameServer(printable(&seen)));
    }
    let mut frame = vec![0; 4 + total];
    frame[..8].copy_from_slice(&head);
    stream
        .read_exact(&mut frame[8..])
        .await
        .map_err(unreachable)?;
    Ok(frame)
}

/// The first line of `bytes` as text (at most 60 characters), quoted.
fn printable(bytes: &[u8]) -> String {
    let text: String = String::from_utf8_lossy(bytes)
        .chars()
        .map(|c| if c.is_control() { '.' } else { c })
        .take(60)
        .collect();
    format!("{text:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_is_the_clients() {
        let request = route_request("Orders").unwrap();
        let mut bytes = BytesMut::from(&request[..]);
        let command = RemotingCommand::decode(&mut bytes).unwrap().unwrap();
        assert_eq!(command.code(), i32::from(RequestCode::GetRouteinfoByTopic));
        assert_eq!(
            command.version(),
            rocketmq_model::version::CURRENT_VERSION as i32
        );
        let header = String::from_utf8_lossy(&request[8..]).into_owned();
        assert!(header.contains(r#""language":"RUST""#), "{header}");
        assert!(header.contains(r#""topic":"Orders""#), "{header}");
    }

    /// The bodies 4.9.7 answered (recorded): the client's decoder reads fastjson's unquoted
    /// keys (a request older than V4_9_4) as it reads quoted ones, so both name the missing
    /// field; with the field added both decode.
    #[test]
    fn the_clients_decoder_reads_every_recorded_4_9_7_route_alike() {
        use rocketmq_dedup_testkit::recorded_namesrv::{
            ROCKETMQ_4_9_7_TOPIC_ROUTE as V435, ROCKETMQ_4_9_7_TOPIC_ROUTE_V0 as V0,
            ROCKETMQ_4_9_7_TOPIC_ROUTE_WITH_ACTING_MASTER as FIXED,
        };
        let bodies = |recording: &'static str| {
            recording
                .lines()
                .filter_map(|l| l.strip_prefix("body: "))
                .collect::<Vec<_>>()
        };
        for body in bodies(V435).into_iter().chain(bodies(V0)) {
            let detail = decode_route(body.as_bytes()).unwrap_err();
            assert!(
                detail.contains("missing field `enableActingMaster`"),
                "{detail}"
            );
        }
        let fixed = bodies(FIXED);
        assert_eq!(fixed.len(), 2, "version 435 and version 0");
        assert!(fixed[1].contains("{0:"), "unquoted keys: {}", fixed[1]);
        for body in fixed {
            let route = decode_route(body.as_bytes()).unwrap();
            assert_eq!((route.brokers, route.read_queues), (1, 8));
        }
    }

    #[test]
    fn client_errors_about_the_4x_field_are_explained() {
        let error = std::io::Error::other("missing field `enableActingMaster`");
        let wrapped = std::io::Error::new(std::io::ErrorKind::InvalidData, error);
        let explained = explain_client_error(&wrapped).unwrap();
        assert!(explained.to_string().contains("Apache RocketMQ 4.x"));
        assert!(explained.detail.contains(ACTING_MASTER_FIELD));
    }

    #[test]
    fn what_is_not_a_frame_is_quoted_printably() {
        assert_eq!(
            printable(b"HTTP/1.1 400 Bad Request\r\nx"),
            r#""HTTP/1.1 400 Bad Request..x""#
        );
        assert_eq!(printable(&[b'a'; 100]), format!("{:?}", "a".repeat(60)));
    }
}
