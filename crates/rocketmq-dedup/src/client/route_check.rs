//! A start-up check of a topic's route, asked of the name server directly, so that a consumer
//! that cannot work fails at once with the one cause that applies, instead of idling or
//! printing a misleading error.
//!
//! rocketmq-client-rust 1.0.0 reads routes through its own types, and when a name server's
//! answer does not decode (Apache RocketMQ 4.x leaves `enableActingMaster` out of its broker
//! data, which the client requires), the push consumer logs a WARN, swallows the error and
//! later answers "topic not exist": the same words as for a topic that really has no route.
//! This check sends the name server the route request itself (request code 105 over the
//! remoting protocol) and decodes the answer with the client's own route type, so the three
//! failures read apart:
//!
//! | what happened | error |
//! |---|---|
//! | no connection to the name server | [`RouteCheckError::Unreachable`] |
//! | the name server has no route for the topic | [`RouteCheckError::NoRoute`] |
//! | a route this client cannot read (4.x) | [`RouteCheckError::Undecodable`], naming the field |
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! let route = rocketmq_dedup::client::check_topic_route("127.0.0.1:9876", "Orders", Duration::from_secs(3)).await?;
//! println!("Orders has {} read queues on {} brokers", route.read_queues, route.brokers);
//! # Ok(()) }
//! ```

use std::time::Duration;

use rocketmq_protocol::protocol::route::topic_route_data::TopicRouteData;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The remoting request code of GET_ROUTEINFO_BY_TOPIC.
const GET_ROUTEINFO_BY_TOPIC: i32 = 105;
/// The response code a name server gives for a topic it has no route for (TOPIC_NOT_EXIST).
const TOPIC_NOT_EXIST: i32 = 17;
/// The largest answer read (a route of a few thousand queues is far smaller).
const MAX_FRAME: usize = 16 * 1024 * 1024;

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
    /// The name server has no route for the topic: it does not exist (create it, or let the
    /// broker create topics), or no broker serving it has registered yet.
    #[error("topic {topic} has no route on the name server {addr}: create the topic, or check that its broker registered with this name server")]
    NoRoute {
        /// The topic.
        topic: String,
        /// The name server asked.
        addr: String,
    },
    /// The name server answered a route rocketmq-client-rust 1.0.0 cannot decode.
    #[error("the name server {addr} answered a route for topic {topic} that rocketmq-client-rust 1.0.0 cannot read ({detail}): this is the route format of Apache RocketMQ 4.x, whose broker data has no `enableActingMaster`; use Apache RocketMQ 5.x or rocketmq-rust's name server and broker (see the README's \"Which brokers work\")")]
    Undecodable {
        /// The topic.
        topic: String,
        /// The name server asked.
        addr: String,
        /// What the client's route type says of the answer (e.g. `missing field
        /// `enableActingMaster``).
        detail: String,
    },
    /// The name server answered something else (an error code, a frame that is not remoting).
    #[error("the name server {addr} answered the route request for topic {topic} with {detail}")]
    Refused {
        /// The topic.
        topic: String,
        /// The name server asked.
        addr: String,
        /// The code and remark, or what was wrong with the frame.
        detail: String,
    },
}

/// Asks the name server at `addr` (`host:port`; the first of a `;`-separated list) for
/// `topic`'s route and checks that this client can read it, within `timeout`.
pub async fn check_topic_route(
    addr: &str,
    topic: &str,
    timeout: Duration,
) -> Result<TopicRoute, RouteCheckError> {
    let addr = addr.split(';').next().unwrap_or(addr).trim().to_owned();
    let unreachable = |reason: String| RouteCheckError::Unreachable {
        addr: addr.clone(),
        reason,
    };
    let exchange = async {
        let mut stream = TcpStream::connect(&addr).await?;
        stream.write_all(&route_request(topic, 1)).await?;
        read_frame(&mut stream).await
    };
    let (header, body) = match tokio::time::timeout(timeout, exchange).await {
        Err(_) => return Err(unreachable(format!("no answer within {timeout:?}"))),
        Ok(Err(e)) => return Err(unreachable(e.to_string())),
        Ok(Ok(frame)) => frame,
    };
    let refused = |detail: String| RouteCheckError::Refused {
        topic: topic.to_owned(),
        addr: addr.clone(),
        detail,
    };
    let header: serde_json::Value = serde_json::from_slice(&header)
        .map_err(|e| refused(format!("a header that is not JSON ({e})")))?;
    match header["code"].as_i64() {
        Some(0) => {}
        Some(code) if code == i64::from(TOPIC_NOT_EXIST) => {
            return Err(RouteCheckError::NoRoute {
                topic: topic.to_owned(),
                addr,
            })
        }
        code => {
            let remark = header["remark"].as_str().unwrap_or("no remark");
            return Err(refused(format!("code {code:?}: {remark}")));
        }
    }
    let route = decode_route(&body).map_err(|detail| RouteCheckError::Undecodable {
        topic: topic.to_owned(),
        addr: addr.clone(),
        detail,
    })?;
    if route.read_queues == 0 {
        return Err(RouteCheckError::NoRoute {
            topic: topic.to_owned(),
            addr,
        });
    }
    Ok(route)
}

/// Decodes a route body with rocketmq-client-rust's own route type: what it cannot read,
/// the client cannot either.
fn decode_route(body: &[u8]) -> Result<TopicRoute, String> {
    let route: TopicRouteData = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    Ok(TopicRoute {
        brokers: route.broker_datas.len(),
        read_queues: route
            .queue_datas
            .iter()
            .map(|q| q.read_queue_nums as usize)
            .sum(),
    })
}

/// A GET_ROUTEINFO_BY_TOPIC request frame (JSON header, no body).
fn route_request(topic: &str, opaque: i32) -> Vec<u8> {
    let header = serde_json::json!({
        "code": GET_ROUTEINFO_BY_TOPIC,
        "language": "OTHER",
        "version": 0,
        "opaque": opaque,
        "flag": 0,
        "extFields": { "topic": topic },
        "serializeTypeCurrentRPC": "JSON",
    });
    frame(&serde_json::to_vec(&header).unwrap_or_default(), &[])
}

/// A remoting frame: total length, header length (serialize type JSON = 0 in the high
/// byte), header, body.
fn frame(header: &[u8], body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + header.len() + body.len());
    out.extend_from_slice(&((4 + header.len() + body.len()) as u32).to_be_bytes());
    out.extend_from_slice(&((header.len() as u32) & 0x00FF_FFFF).to_be_bytes());
    out.extend_from_slice(header);
    out.extend_from_slice(body);
    out
}

/// Reads one remoting frame: its header and body.
async fn read_frame(
    stream: &mut (impl AsyncReadExt + Unpin),
) -> std::io::Result<(Vec<u8>, Vec<u8>)> {
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
    let total = stream.read_u32().await? as usize;
    if !(4..=MAX_FRAME).contains(&total) {
        return Err(bad("a frame length out of range: not a remoting server"));
    }
    let header_len = (stream.read_u32().await? & 0x00FF_FFFF) as usize;
    if header_len > total - 4 {
        return Err(bad("a header longer than its frame: not a remoting server"));
    }
    let mut header = vec![0; header_len];
    stream.read_exact(&mut header).await?;
    let mut body = vec![0; total - 4 - header_len];
    stream.read_exact(&mut body).await?;
    Ok((header, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The body Apache RocketMQ 4.9.7's name server answered (shared/fixtures), and the same
    /// with the field 5.x adds.
    const BODY_4_9_7: &str = r#"{"brokerDatas":[{"brokerAddrs":{"0":"127.0.0.1:34885"},"brokerName":"broker-a","cluster":"DefaultCluster"}],"filterServerTable":{},"queueDatas":[{"brokerName":"broker-a","perm":7,"readQueueNums":8,"topicSysFlag":0,"writeQueueNums":8}]}"#;

    #[test]
    fn the_client_type_names_the_field_a_4x_route_lacks() {
        let detail = decode_route(BODY_4_9_7.as_bytes()).unwrap_err();
        assert!(detail.contains("enableActingMaster"), "{detail}");
        let five = BODY_4_9_7.replace(r#""cluster""#, r#""enableActingMaster":false,"cluster""#);
        assert_eq!(
            decode_route(five.as_bytes()).unwrap(),
            TopicRoute {
                brokers: 1,
                read_queues: 8
            }
        );
    }

    #[tokio::test]
    async fn a_frame_reads_back_as_written() {
        let request = route_request("Orders", 7);
        let (header, body) = read_frame(&mut request.as_slice()).await.unwrap();
        assert!(body.is_empty());
        let header: serde_json::Value = serde_json::from_slice(&header).unwrap();
        assert_eq!(header["code"], GET_ROUTEINFO_BY_TOPIC);
        assert_eq!(header["opaque"], 7);
        assert_eq!(header["extFields"]["topic"], "Orders");
        let garbage = b"HTTP/1.1 400 Bad Request\r\n\r\n".to_vec();
        assert!(read_frame(&mut garbage.as_slice()).await.is_err());
    }
}
