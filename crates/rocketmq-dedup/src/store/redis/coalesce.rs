//! One writer for a single Redis server: the commands of every store call waiting at the
//! moment (claims of several consume threads, background commits) go out as one pipeline.
//!
//! A call hands its commands to the writer task and waits for its answers. The writer takes
//! the first call waiting, then every other already queued (up to [`MAX_COMMANDS`]), sends them
//! as one pipeline, and gives each call its own slice of the answers. With one call at a time
//! nothing waits for company: the pipeline leaves at once. The task ends when the last clone of
//! the store (and so of the sender) is dropped.

use redis::aio::{ConnectionLike, ConnectionManager};
use redis::{Cmd, RedisError, Value};
use tokio::sync::{mpsc, oneshot};

use super::pipeline::{wait_answer, Sent};

/// Commands in one coalesced pipeline at most (a call's own batch always goes whole).
const MAX_COMMANDS: usize = 512;

/// One store call's commands, its `WAIT`, and where its answers go.
struct Job {
    commands: Vec<Cmd>,
    wait: Option<Cmd>,
    reply: oneshot::Sender<Result<Sent, RedisError>>,
}

/// The handle calls send their commands through. Cheap to clone.
#[derive(Clone)]
pub(super) struct Coalescer {
    jobs: mpsc::UnboundedSender<Job>,
}

impl Coalescer {
    /// Starts the writer task over `conn` (on the current Tokio runtime).
    pub(super) fn start(conn: ConnectionManager) -> Self {
        let (jobs, queue) = mpsc::unbounded_channel();
        tokio::spawn(write(conn, queue));
        Coalescer { jobs }
    }

    /// Sends `commands` (and `wait` after them) with whatever else is waiting.
    pub(super) async fn send(
        &self,
        commands: Vec<Cmd>,
        wait: Option<&Cmd>,
    ) -> Result<Sent, RedisError> {
        let (reply, answer) = oneshot::channel();
        let job = Job {
            commands,
            wait: wait.cloned(),
            reply,
        };
        self.jobs.send(job).map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }
}

fn gone() -> RedisError {
    RedisError::from((
        redis::ErrorKind::Client,
        "the Redis store's writer task has stopped",
    ))
}

/// The writer: one pipeline per round of waiting jobs.
async fn write(mut conn: ConnectionManager, mut queue: mpsc::UnboundedReceiver<Job>) {
    while let Some(first) = queue.recv().await {
        let mut jobs = vec![first];
        let mut commands = jobs[0].commands.len();
        while commands < MAX_COMMANDS {
            match queue.try_recv() {
                Ok(job) => {
                    commands += job.commands.len();
                    jobs.push(job);
                }
                Err(_) => break,
            }
        }
        send_round(&mut conn, jobs).await;
    }
}

/// Sends the jobs' commands as one pipeline (each job's `WAIT` right after its commands) and
/// answers each job.
async fn send_round(conn: &mut ConnectionManager, jobs: Vec<Job>) {
    let mut pipe = redis::pipe();
    for job in &jobs {
        for cmd in &job.commands {
            pipe.add_command(cmd.clone());
        }
        if let Some(wait) = &job.wait {
            pipe.add_command(wait.clone());
        }
    }
    let result = conn.req_packed_commands(&pipe, 0, pipe.len()).await;
    let mut values = match result {
        Ok(values) => values.into_iter(),
        Err(e) => {
            for job in jobs {
                let _ = job.reply.send(Err(e.clone()));
            }
            return;
        }
    };
    for (i, job) in jobs.into_iter().enumerate() {
        let answers: Vec<Value> = values.by_ref().take(job.commands.len()).collect();
        let sent = match job.wait {
            Some(_) => wait_answer(values.next()).map(Some),
            None => Ok(None),
        }
        .map(|replicas_acked| Sent {
            answers: answers.into_iter().map(Value::extract_error).collect(),
            // The pipeline is counted once, on the first job it carried.
            round_trips: u64::from(i == 0),
            replicas_acked,
        });
        let _ = job.reply.send(sent);
    }
}
