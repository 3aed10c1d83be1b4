//! The hook tools' socket server: answers each connection on its own task, for one unit.
//! See the [module docs](super) for its invariants.

use std::collections::{HashSet, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Semaphore, mpsc};

use super::protocol::{MAX_REQUEST_BYTES, ToolCall, ToolErrorKind, ToolResponse, json_line};
use super::{UnitTools, answer};
use crate::agent::AgentCommand;
use crate::events::LogLevel;
use crate::leadership::{Clock, MonotonicClock, Timestamp};

/// Limits of the hook-tool server; see the module docs.
#[derive(Debug, Clone, Copy)]
pub struct ServerLimits {
    /// Connections served at once.
    pub max_connections: usize,
    /// How long a connection has to send its whole request.
    pub read_deadline: Duration,
    /// How long a connection has to take its whole answer.
    pub write_deadline: Duration,
    /// Request bytes each connection may buffer without drawing on the shared budget.
    pub free_bytes_per_connection: usize,
    /// Request bytes beyond the free allowance, across all connections.
    pub shared_bytes: usize,
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            max_connections: 128,
            read_deadline: Duration::from_secs(2),
            write_deadline: Duration::from_secs(2),
            free_bytes_per_connection: 16 * 1024,
            shared_bytes: 8 * 1024 * 1024,
        }
    }
}

/// Binds the hook-tool socket at `path`, readable and writable by this user only.
pub fn listen(path: &Path) -> std::io::Result<UnixListener> {
    use std::os::unix::fs::PermissionsExt as _;
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Serves `tools` (one unit's) on `listener` with the default [`ServerLimits`], until the
/// task is dropped; operator actions are sent to the unit's agent through `agent`.
pub async fn serve(listener: UnixListener, tools: UnitTools, agent: mpsc::Sender<AgentCommand>) {
    serve_with(listener, tools, agent, ServerLimits::default()).await
}

/// The connections being served, for the cap: ids in the order they came, and which of
/// them are still sending their request.
#[derive(Default)]
struct Connections {
    order: VecDeque<(u64, tokio::task::AbortHandle)>,
    reading: HashSet<u64>,
}

/// Removes a connection from [`Connections`] when its task ends, however it ends.
struct Registered {
    id: u64,
    connections: Arc<Mutex<Connections>>,
}

impl Registered {
    fn done_reading(&self) {
        lock(&self.connections).reading.remove(&self.id);
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        let mut connections = lock(&self.connections);
        connections.reading.remove(&self.id);
        connections.order.retain(|(id, _)| *id != self.id);
    }
}

fn lock(connections: &Mutex<Connections>) -> std::sync::MutexGuard<'_, Connections> {
    connections.lock().unwrap_or_else(|p| p.into_inner())
}

/// [`serve`] with explicit limits.
pub async fn serve_with(
    listener: UnixListener,
    tools: UnitTools,
    agent: mpsc::Sender<AgentCommand>,
    limits: ServerLimits,
) {
    let unit = tools.unit_name().clone();
    let me = rustix::process::geteuid().as_raw();
    let budget = Arc::new(Semaphore::new(limits.shared_bytes));
    let connections = Arc::new(Mutex::new(Connections::default()));
    let mut next_id: u64 = 0;
    let mut accept_failures: u32 = 0;
    let refusing = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => {
                accept_failures = 0;
                stream
            }
            Err(err) => {
                // Out of descriptors or memory: back off instead of spinning on accept.
                accept_failures = accept_failures.saturating_add(1);
                let pause = Duration::from_millis(5).saturating_mul(accept_failures.min(20));
                tracing::warn!(%unit, "hook tools: accept failed: {err}");
                tokio::time::sleep(pause).await;
                continue;
            }
        };
        match stream.peer_cred() {
            Ok(peer) if peer.uid() == me || peer.uid() == 0 => {}
            Ok(peer) => {
                tracing::warn!(%unit, uid = peer.uid(), "hook tools: refused a connection from another user");
                let message = format!("permission denied: uid {} may not use this agent", peer.uid());
                refuse_soon(stream, message, &refusing);
                continue;
            }
            Err(_) => continue,
        }
        let id = next_id;
        next_id = next_id.wrapping_add(1);
        {
            let mut live = lock(&connections);
            if live.order.len() >= limits.max_connections {
                // Make room: the oldest connection still sending its request goes first
                // (a real tool sends its request at once).
                let oldest = live.order.iter().position(|(id, _)| live.reading.contains(id));
                match oldest {
                    Some(index) => {
                        if let Some((evicted, handle)) = live.order.remove(index) {
                            live.reading.remove(&evicted);
                            handle.abort();
                        }
                    }
                    None => {
                        drop(live);
                        refuse_soon(stream, "the agent is busy: too many requests at once".into(), &refusing);
                        continue;
                    }
                }
            }
        }
        let registered = Registered { id, connections: connections.clone() };
        let (tools, agent, budget) = (tools.clone(), agent.clone(), budget.clone());
        let mut live = lock(&connections);
        let task = tokio::spawn(async move {
            if let Err(err) = serve_one(stream, &tools, &agent, &budget, limits, &registered).await {
                tracing::debug!(unit = %tools.unit_name(), "hook tool connection failed: {err}");
            }
            drop(registered);
        });
        live.order.push_back((id, task.abort_handle()));
        live.reading.insert(id);
    }
}

/// Refusals being written at once, at most; beyond that a refused connection is closed
/// without a word, so a flood of refused connections holds no more descriptors.
const MAX_REFUSALS: usize = 32;

/// Answers a connection that will not be served with an error (within a second), and
/// closes it; see [`MAX_REFUSALS`].
fn refuse_soon(stream: UnixStream, message: String, in_flight: &Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::Ordering;
    if in_flight.fetch_add(1, Ordering::AcqRel) >= MAX_REFUSALS {
        in_flight.fetch_sub(1, Ordering::AcqRel);
        return;
    }
    let in_flight = in_flight.clone();
    tokio::spawn(async move {
        refuse(stream, message).await;
        in_flight.fetch_sub(1, Ordering::AcqRel);
    });
}

async fn refuse(mut stream: UnixStream, message: String) {
    let response = ToolResponse::Error { kind: ToolErrorKind::Unknown, message };
    if let Ok(bytes) = json_line(&response) {
        let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(&bytes)).await;
    }
}

/// Why a request could not be read.
#[derive(Debug, thiserror::Error)]
enum ReadError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("the request did not arrive within {0:?}")]
    Slow(Duration),
    #[error("the request is longer than {MAX_REQUEST_BYTES} bytes")]
    TooLong,
    #[error("the agent is short of memory for requests; try again")]
    Busy,
}

/// Reads one request line, within the read deadline and the memory budget.
async fn read_request<'b>(
    stream: &mut UnixStream,
    budget: &'b Semaphore,
    limits: ServerLimits,
) -> Result<(Vec<u8>, Option<tokio::sync::SemaphorePermit<'b>>), ReadError> {
    let deadline = crate::timing::deadline_after(limits.read_deadline);
    let mut line: Vec<u8> = Vec::new();
    let mut permit: Option<tokio::sync::SemaphorePermit<'b>> = None;
    let mut chunk = [0u8; 8192];
    loop {
        let read = tokio::time::timeout_at(deadline, stream.read(&mut chunk))
            .await
            .map_err(|_| ReadError::Slow(limits.read_deadline))??;
        let data = &chunk[..read];
        let end = data.iter().position(|&b| b == b'\n');
        let take = end.map_or(read, |i| i + 1);
        if line.len() + take > MAX_REQUEST_BYTES {
            return Err(ReadError::TooLong);
        }
        let wanted = (line.len() + take).saturating_sub(limits.free_bytes_per_connection);
        let held = permit.as_ref().map_or(0, |p| p.num_permits());
        if wanted > held {
            let extra = u32::try_from(wanted - held).map_err(|_| ReadError::TooLong)?;
            let more = budget.try_acquire_many(extra).map_err(|_| ReadError::Busy)?;
            match &mut permit {
                Some(permit) => permit.merge(more),
                None => permit = Some(more),
            }
        }
        line.extend_from_slice(&data[..take]);
        if end.is_some() || read == 0 {
            return Ok((line, permit));
        }
    }
}

async fn serve_one(
    mut stream: UnixStream,
    tools: &UnitTools,
    agent: &mpsc::Sender<AgentCommand>,
    budget: &Semaphore,
    limits: ServerLimits,
    registered: &Registered,
) -> std::io::Result<()> {
    let response = match read_request(&mut stream, budget, limits).await {
        Ok((line, permit)) => {
            registered.done_reading();
            let call = serde_json::from_slice::<ToolCall>(&line);
            drop(permit);
            match call {
                Ok(call) => {
                    let apply_by = call.apply_by_ns.map(Timestamp::from_nanos);
                    if apply_by.is_some_and(|by| MonotonicClock.now() >= by) {
                        // Its caller has given up: drop it unanswered, never apply it.
                        tools.log(
                            LogLevel::Warning,
                            format!(
                                "hook tools: dropped {} request: its caller gave up waiting before it was read",
                                call.request.name()
                            ),
                        );
                        return Ok(());
                    }
                    answer(tools, agent, call.request, apply_by).await
                }
                Err(err) => {
                    ToolResponse::Error { kind: ToolErrorKind::Invalid, message: format!("bad request: {err}") }
                }
            }
        }
        Err(err @ ReadError::TooLong) => ToolResponse::Error { kind: ToolErrorKind::Invalid, message: err.to_string() },
        Err(err @ ReadError::Busy) => ToolResponse::Error { kind: ToolErrorKind::Unknown, message: err.to_string() },
        Err(err) => return Err(std::io::Error::other(err.to_string())),
    };
    let answer = json_line(&response)?;
    let written = tokio::time::timeout(limits.write_deadline, async {
        stream.write_all(&answer).await?;
        stream.shutdown().await
    });
    written
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "the client did not take its answer in time"))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Framing: the request is everything up to and including the first newline, read in
        /// whatever pieces it arrives; nothing past the limit is kept.
        #[test]
        fn a_request_is_read_up_to_its_newline(
            body in proptest::collection::vec(any::<u8>().prop_filter("no newline", |b| *b != b'\n'), 0..40_000),
            tail in proptest::collection::vec(any::<u8>(), 0..100),
            cut in 1usize..9000,
        ) {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let (line, limits) = runtime.block_on(async {
                let (mut client, mut server) = UnixStream::pair().unwrap();
                let mut sent = body.clone();
                sent.push(b'\n');
                sent.extend_from_slice(&tail);
                let writer = tokio::spawn(async move {
                    for piece in sent.chunks(cut) {
                        if client.write_all(piece).await.is_err() {
                            break;
                        }
                    }
                    client
                });
                let limits = ServerLimits { free_bytes_per_connection: 1024, shared_bytes: 16 * 1024, ..ServerLimits::default() };
                let budget = Semaphore::new(limits.shared_bytes);
                let line = read_request(&mut server, &budget, limits).await.map(|(line, _)| line);
                drop(server);
                let _ = writer.await;
                (line, limits)
            });
            match line {
                Ok(line) => {
                    prop_assert_eq!(&line[..line.len() - 1], &body[..]);
                    prop_assert_eq!(line.last(), Some(&b'\n'));
                }
                Err(ReadError::Busy) => prop_assert!(body.len() + 1 > limits.free_bytes_per_connection + limits.shared_bytes),
                Err(err) => prop_assert!(false, "unexpected {err}"),
            }
        }
    }
}
