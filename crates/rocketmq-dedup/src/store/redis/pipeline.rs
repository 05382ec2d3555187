//! A batch of single-key commands and what came back: the unit every deployment sends (one
//! pipeline per server), and the one-pipeline sender a single server and Sentinel use.

use std::future::Future;

use redis::aio::ConnectionLike;
use redis::{Cmd, RedisError, RedisResult, Value};

/// A command on one record key (the key routes it on a Cluster).
pub(super) struct KeyedCommand<'a> {
    /// The record key the command touches.
    pub(super) key: &'a str,
    /// The command.
    pub(super) cmd: Cmd,
}

/// A command named `name` with room for `args` arguments of `bytes` bytes in all: built with
/// two allocations instead of one or more per argument (a batch-1 claim builds four or five).
pub(super) fn sized_cmd(name: &str, args: usize, bytes: usize) -> Cmd {
    let mut cmd = Cmd::with_capacity(args, bytes);
    cmd.arg(name);
    cmd
}

/// What a batch of commands got back.
pub(super) struct Sent {
    /// One answer per command, in order: a server error is that command's answer.
    pub(super) answers: Vec<RedisResult<Value>>,
    /// Pipelines sent (one per server touched, plus one per redirected command).
    pub(super) round_trips: u64,
    /// With a `WAIT`: the fewest replicas that acknowledged, over the servers touched.
    pub(super) replicas_acked: Option<i64>,
}

/// The commands and the `WAIT` as one pipeline on one connection.
pub(super) async fn one_pipeline(
    conn: &mut impl ConnectionLike,
    commands: Vec<KeyedCommand<'_>>,
    wait: Option<&Cmd>,
) -> Result<Sent, RedisError> {
    let pipe = packed(commands, wait);
    let values = conn.req_packed_commands(&pipe, 0, pipe.len()).await?;
    answered(values, wait.is_some())
}

/// The commands, then the `WAIT`, as one pipeline.
pub(super) fn packed(commands: Vec<KeyedCommand<'_>>, wait: Option<&Cmd>) -> redis::Pipeline {
    let mut pipe = redis::pipe();
    for c in commands {
        pipe.add_command(c.cmd);
    }
    if let Some(wait) = wait {
        pipe.add_command(wait.clone());
    }
    pipe
}

/// What one pipeline of [`packed`] got back: the commands' answers and, `with_wait`, the
/// replica count of the `WAIT` after them.
pub(super) fn answered(mut values: Vec<Value>, with_wait: bool) -> Result<Sent, RedisError> {
    let replicas_acked = match with_wait {
        true => Some(wait_answer(values.pop())?),
        false => None,
    };
    Ok(Sent {
        answers: values.into_iter().map(Value::extract_error).collect(),
        round_trips: 1,
        replicas_acked,
    })
}

/// The replica count a `WAIT` answered.
pub(super) fn wait_answer(value: Option<Value>) -> Result<i64, RedisError> {
    match value.map(Value::extract_error) {
        Some(Ok(Value::Int(n))) => Ok(n),
        Some(Err(e)) => Err(e),
        other => Err(RedisError::from((
            redis::ErrorKind::Client,
            "WAIT answered something other than a number",
            format!("{other:?}"),
        ))),
    }
}

/// The keys matching `pattern` on one server: `SCAN cursor MATCH pattern COUNT 1000` through
/// `send`, from cursor 0 until the server answers 0.
pub(super) async fn scan_to_end<F, Fut>(pattern: &str, mut send: F) -> RedisResult<Vec<String>>
where
    F: FnMut(Cmd) -> Fut,
    Fut: Future<Output = RedisResult<Value>>,
{
    let mut keys = Vec::new();
    let mut cursor = 0u64;
    loop {
        let mut cmd = redis::cmd("SCAN");
        cmd.arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(1000);
        let answer = send(cmd).await?.extract_error()?;
        let (next, found): (u64, Vec<String>) =
            redis::from_redis_value(answer).map_err(RedisError::from)?;
        keys.extend(found);
        if next == 0 {
            return Ok(keys);
        }
        cursor = next;
    }
}
