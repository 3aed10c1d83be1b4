//! Hook tools for scripts and cron jobs: a unit agent answers `is-leader`, `leader-get` and
//! `leader-set` (and the operator's `step-down`) on a local Unix socket, outside any hook.
//!
//! Invariants:
//! - Requests are served on their own task, never behind a running hook, and store calls
//!   run off the async workers; the answers are the store's latest (scripts have no hook
//!   sandbox): `is-leader` is the tracker's guarantee at the moment of the call,
//!   `leader-get` the committed settings, and `leader-set` a fenced write under the unit's
//!   current term. One request and one response per connection, each a line of JSON.
//! - **Never applied after the caller gave up.** A request carries the instant (machine
//!   monotonic clock) after which its caller stops waiting less a margin for the commit;
//!   a request read after it is dropped unanswered, and a `leader-set` is written only if
//!   the store decides it before then ([`crate::leadership::WriteError::TooLate`]).
//!   A minion's `leader-set` is refused at once.
//! - **Only this user (or root) is answered**: the peer's credentials are checked on
//!   accept, and the socket file is 0600.
//! - **Bounded.** At most [`ServerLimits::max_connections`] connections at once (a new one
//!   evicts the oldest that is still sending its request), a request must arrive within
//!   [`ServerLimits::read_deadline`] and its answer be taken within
//!   [`ServerLimits::write_deadline`] (a client that never reads cannot hold a connection
//!   slot), and buffered request bytes beyond a small allowance
//!   per connection come from one shared budget, so abuse of the socket costs bounded
//!   memory and file descriptors while real tools, which send at once, are answered.

use std::collections::{HashSet, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Semaphore, mpsc};

use crate::agent::AgentCommand;
use crate::events::LogLevel;
use crate::leadership::{BootClock, Clock, MonotonicClock, Timestamp, WriteError};
use crate::tracker::LeadershipUnknown;
use crate::unit::Unit;

/// Longest request line read: a full bucket's worth of settings and some.
pub const MAX_REQUEST_BYTES: usize = 2 * 1024 * 1024;

/// What a client sends: a request and the instant it stops waiting for it to be applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolCall {
    /// The request.
    pub request: ToolRequest,
    /// Nanoseconds of the machine's monotonic clock after which the request must not be
    /// applied (its caller gives up soon after); `None`: no deadline.
    #[serde(default)]
    pub apply_by_ns: Option<u64>,
}

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

/// A request to a unit agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum ToolRequest {
    /// Is this unit leader, with the guarantee window ahead?
    IsLeader,
    /// One setting (`key`) or all of them.
    LeaderGet {
        /// The key, or `None` for every setting.
        key: Option<String>,
    },
    /// Write a group of settings (leader only).
    LeaderSet {
        /// The group; an empty value deletes its key.
        settings: Vec<(String, String)>,
    },
    /// Operator action: the unit, if leader, steps down (deposed hook, then revoke).
    StepDown,
}

impl ToolRequest {
    /// The tool's name, e.g. `leader-set`.
    pub fn name(&self) -> &'static str {
        match self {
            ToolRequest::IsLeader => "is-leader",
            ToolRequest::LeaderGet { .. } => "leader-get",
            ToolRequest::LeaderSet { .. } => "leader-set",
            ToolRequest::StepDown => "step-down",
        }
    }
}

/// Why a request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ToolErrorKind {
    /// The unit is not the leader.
    NotLeader,
    /// Leadership or the store could not be verified.
    Unknown,
    /// The request's arguments were rejected.
    Invalid,
    /// A `leader-set` was sent to the store and not answered: it may or may not have been
    /// applied.
    OutcomeUnknown,
}

/// A unit agent's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ToolResponse {
    /// The answer to `is-leader`: `false`. (A true answer is [`Self::LeaderUntil`]; an agent
    /// never sends `Leader(true)`, and a client takes one as unknown.)
    Leader(bool),
    /// The answer to `is-leader`: true until `until_ns`, an instant of the machine's
    /// boot-time clock (`CLOCK_BOOTTIME`, which client and agent both read and which keeps
    /// counting through a suspend). A client that reads it at or after that instant (it was
    /// paused, or the agent was, between the answer and its use) must not print true: see
    /// [`Self::leadership`].
    LeaderUntil {
        /// The instant, in nanoseconds of `CLOCK_BOOTTIME`.
        until_ns: u64,
    },
    /// The answer to `leader-get` with a key.
    Value(Option<String>),
    /// The answer to `leader-get` without a key, sorted by key.
    Settings(Vec<(String, String)>),
    /// `leader-set` succeeded.
    Done,
    /// The request failed.
    Error {
        /// What kind of failure.
        kind: ToolErrorKind,
        /// A message for people.
        message: String,
    },
}

impl ToolResponse {
    /// What an `is-leader` answer says now (`now`: the boot-time clock as the caller uses
    /// the answer): true only before its deadline; `Err` with why it cannot be trusted, or
    /// for an answer to another request.
    pub fn leadership(&self, now: Timestamp) -> Result<bool, String> {
        match self {
            ToolResponse::LeaderUntil { until_ns } if now.as_nanos() < *until_ns => Ok(true),
            ToolResponse::LeaderUntil { .. } => Err(
                "the agent's answer arrived after the instant it held until (was this process or the agent paused?)"
                    .into(),
            ),
            ToolResponse::Leader(false) => Ok(false),
            ToolResponse::Leader(true) => {
                Err("the agent did not say until when its answer holds (is it an older version?)".into())
            }
            other => Err(format!("unexpected answer {other:?}")),
        }
    }
}

/// Why a client call failed before an answer arrived.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ToolCallError {
    /// Nothing listens on the socket (no agent runs for that unit).
    #[error("cannot reach the agent at {path}: {source} (is `charm-host agent` running for this unit?)")]
    Connect {
        /// The socket path.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The conversation broke off or was not understood.
    #[error("talking to the agent failed: {0}")]
    Protocol(String),
    /// No answer came in time; the agent will not apply the request after this.
    #[error("the agent did not answer within {0:?} (is it frozen or overloaded?)")]
    Timeout(Duration),
}

/// A unit's hook tools as library calls: what its socket serves, for an embedder (the
/// answers are the store's latest, as for a script; there is no hook snapshot).
#[derive(Clone)]
pub struct UnitTools {
    unit: Arc<Unit>,
}

impl std::fmt::Debug for UnitTools {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UnitTools").field("unit", self.unit.name()).finish()
    }
}

impl UnitTools {
    pub(crate) fn new(unit: Arc<Unit>) -> Self {
        Self { unit }
    }

    /// `is-leader`: true only with the guarantee window ahead; an error when leadership
    /// cannot be verified.
    pub fn is_leader(&self) -> Result<bool, LeadershipUnknown> {
        self.unit.tracker().is_leader()
    }

    /// [`Self::is_leader`] with the instant a true answer holds until, on the machine's
    /// boot-time clock ([`BootClock`]): `Some(until)` while the unit leads with the window
    /// ahead, at most a second from now (the tracker's `ANSWER_HOLD`; a graceful
    /// release of the lease waits for it). A caller that acts on it after `until` must act
    /// as a minion.
    pub fn leader_until(&self) -> Result<Option<Timestamp>, LeadershipUnknown> {
        let tracker = self.unit.tracker();
        // The boot clock first: the time left is measured after it, so `until` is never late.
        let boot_now = BootClock.now();
        let Some(until) = tracker.answer_until()? else { return Ok(None) };
        let left = until.saturating_since(tracker.store().clock().now());
        Ok((!left.is_zero()).then(|| boot_now + left))
    }

    /// `leader-get KEY`.
    pub async fn leader_get(&self, key: &str) -> Result<Option<String>, WriteError> {
        Ok(self.unit.store().read_settings(self.unit.name().app()).await?.values.get(key).cloned())
    }

    /// `leader-get` of every setting, sorted by key.
    pub async fn leader_get_all(&self) -> Result<Vec<(String, String)>, WriteError> {
        let snapshot = self.unit.store().read_settings(self.unit.name().app()).await?;
        Ok(snapshot.values.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
    }

    /// `leader-set`: one group, fenced by the unit's term, in the store before it returns.
    /// A minion is refused at once, without a trip to the store.
    pub async fn leader_set(&self, group: &[(String, String)]) -> Result<(), WriteError> {
        self.leader_set_by(group, None).await
    }

    /// [`Self::leader_set`], applied only if the store decides it before `apply_by`.
    pub async fn leader_set_by(
        &self,
        group: &[(String, String)],
        apply_by: Option<Timestamp>,
    ) -> Result<(), WriteError> {
        self.unit.tracker().leader_set_by(group, apply_by).await
    }
}

/// Answers one request for `unit`; operator actions go to its agent through `agent`.
/// `apply_by` bounds when a write may be applied.
pub async fn answer(
    unit: &Arc<Unit>,
    agent: &mpsc::Sender<AgentCommand>,
    request: ToolRequest,
    apply_by: Option<Timestamp>,
) -> ToolResponse {
    let error = |kind, message: String| ToolResponse::Error { kind, message };
    let tools = UnitTools::new(unit.clone());
    match request {
        ToolRequest::IsLeader => match tools.leader_until() {
            Ok(Some(until)) => ToolResponse::LeaderUntil { until_ns: until.as_nanos() },
            Ok(None) => ToolResponse::Leader(false),
            Err(err) => error(ToolErrorKind::Unknown, err.to_string()),
        },
        ToolRequest::LeaderGet { key: Some(key) } => match tools.leader_get(&key).await {
            Ok(value) => ToolResponse::Value(value),
            Err(err) => error(ToolErrorKind::Unknown, err.to_string()),
        },
        ToolRequest::LeaderGet { key: None } => match tools.leader_get_all().await {
            Ok(settings) => ToolResponse::Settings(settings),
            Err(err) => error(ToolErrorKind::Unknown, err.to_string()),
        },
        ToolRequest::LeaderSet { settings } => match tools.leader_set_by(&settings, apply_by).await {
            Ok(()) => ToolResponse::Done,
            Err(WriteError::NotLeader { .. }) => error(ToolErrorKind::NotLeader, "not the leader".into()),
            Err(WriteError::Invalid(reason)) => error(ToolErrorKind::Invalid, reason.to_string()),
            Err(err @ WriteError::OutcomeUnknown(_)) => error(ToolErrorKind::OutcomeUnknown, err.to_string()),
            Err(err @ (WriteError::Store(_) | WriteError::TooLate)) => error(ToolErrorKind::Unknown, err.to_string()),
        },
        ToolRequest::StepDown => {
            if unit.tracker().held_term().is_none() {
                return error(ToolErrorKind::NotLeader, "not the leader".into());
            }
            match agent.try_send(AgentCommand::StepDown) {
                Ok(()) => ToolResponse::Done,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    error(ToolErrorKind::Unknown, "the agent is busy with other commands".into())
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    error(ToolErrorKind::Unknown, "the agent is stopping".into())
                }
            }
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

/// Serves hook tools for `unit` on `listener` with the default [`ServerLimits`], until the
/// task is dropped; operator actions are sent to the unit's agent through `agent`.
pub async fn serve(listener: UnixListener, unit: Arc<Unit>, agent: mpsc::Sender<AgentCommand>) {
    serve_with(listener, unit, agent, ServerLimits::default()).await
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
    unit: Arc<Unit>,
    agent: mpsc::Sender<AgentCommand>,
    limits: ServerLimits,
) {
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
                tracing::warn!(unit = %unit.name(), "hook tools: accept failed: {err}");
                tokio::time::sleep(pause).await;
                continue;
            }
        };
        match stream.peer_cred() {
            Ok(peer) if peer.uid() == me || peer.uid() == 0 => {}
            Ok(peer) => {
                tracing::warn!(unit = %unit.name(), uid = peer.uid(), "hook tools: refused a connection from another user");
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
        let (unit, agent, budget) = (unit.clone(), agent.clone(), budget.clone());
        let mut live = lock(&connections);
        let task = tokio::spawn(async move {
            if let Err(err) = serve_one(stream, &unit, &agent, &budget, limits, &registered).await {
                tracing::debug!(unit = %unit.name(), "hook tool connection failed: {err}");
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

/// One message of the protocol: JSON on one line.
fn json_line(message: &impl Serialize) -> std::io::Result<Vec<u8>> {
    let mut bytes = serde_json::to_vec(message).map_err(std::io::Error::other)?;
    bytes.push(b'\n');
    Ok(bytes)
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
    unit: &Arc<Unit>,
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
                        unit.log(
                            LogLevel::Warning,
                            format!(
                                "hook tools: dropped {} request: its caller gave up waiting before it was read",
                                call.request.name()
                            ),
                        );
                        return Ok(());
                    }
                    answer(unit, agent, call.request, apply_by).await
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

/// The instant a request sent now with `timeout` must be applied by: the timeout less a
/// margin (a quarter of it, at most a second) for the store to commit and the answer to
/// come back.
pub fn apply_by(timeout: Duration) -> Timestamp {
    let margin = (timeout / 4).min(Duration::from_secs(1));
    MonotonicClock.now() + timeout.saturating_sub(margin)
}

/// Sends `request` to the agent listening at `socket` and returns its answer, giving up
/// after `timeout`; the agent does not apply the request once its caller has given up.
pub async fn call(socket: &Path, request: &ToolRequest, timeout: Duration) -> Result<ToolResponse, ToolCallError> {
    let call = ToolCall { request: request.clone(), apply_by_ns: Some(apply_by(timeout).as_nanos()) };
    match tokio::time::timeout(timeout, exchange(socket, &call)).await {
        Ok(answer) => answer,
        Err(_) => Err(ToolCallError::Timeout(timeout)),
    }
}

async fn exchange(socket: &Path, call: &ToolCall) -> Result<ToolResponse, ToolCallError> {
    let protocol = |e: std::io::Error| ToolCallError::Protocol(e.to_string());
    let stream = UnixStream::connect(socket)
        .await
        .map_err(|source| ToolCallError::Connect { path: socket.display().to_string(), source })?;
    let (read, mut write) = stream.into_split();
    let bytes = json_line(call).map_err(protocol)?;
    // An agent that refuses the request answers and closes without reading it: its answer
    // is still there to read when the write fails.
    let sent = write.write_all(&bytes).await;
    let mut line = String::new();
    BufReader::new(read.take(MAX_REQUEST_BYTES as u64)).read_line(&mut line).await.map_err(protocol)?;
    if line.is_empty() {
        sent.map_err(protocol)?;
        return Err(ToolCallError::Protocol("the agent closed the connection without answering".into()));
    }
    serde_json::from_str(&line).map_err(|e| ToolCallError::Protocol(format!("{e} in {line:?}")))
}

/// Why `leader-set` arguments were refused (Juju's messages, word for word).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArgsError {
    /// An argument has no `=`.
    #[error("expected \"key=value\", got {0:?}")]
    NotAPair(String),
    /// An argument's key is empty once trimmed.
    #[error("expected \"key=value\", got \"{key}={value}\"")]
    EmptyKey {
        /// The key, trimmed (empty).
        key: String,
        /// The value, trimmed.
        value: String,
    },
    /// A key is given twice (once trimmed).
    #[error("key {0:?} specified more than once")]
    Duplicate(String),
}

/// Parses `leader-set` arguments `KEY=VALUE...` into a group, as Juju's `keyvalues` does
/// with empty values allowed: an empty argument is skipped; each other one is split at its
/// first `=`, and key and value are trimmed of white space; an empty key, or a key given
/// twice, is refused. An empty value deletes its key. The store checks the key rules
/// ([`crate::settings`]) when the group is written.
pub fn parse_leader_set_args(args: &[String]) -> Result<Vec<(String, String)>, ArgsError> {
    let mut seen = HashSet::new();
    let mut group = Vec::with_capacity(args.len());
    for arg in args.iter().filter(|a| !a.is_empty()) {
        let (key, value) = arg.split_once('=').ok_or_else(|| ArgsError::NotAPair(arg.clone()))?;
        let (key, value) = (key.trim(), value.trim());
        if key.is_empty() {
            return Err(ArgsError::EmptyKey { key: key.to_owned(), value: value.to_owned() });
        }
        if !seen.insert(key) {
            return Err(ArgsError::Duplicate(key.to_owned()));
        }
        group.push((key.to_owned(), value.to_owned()));
    }
    Ok(group)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn request() -> impl Strategy<Value = ToolRequest> {
        prop_oneof![
            Just(ToolRequest::IsLeader),
            Just(ToolRequest::StepDown),
            proptest::option::of(".{0,40}").prop_map(|key| ToolRequest::LeaderGet { key }),
            proptest::collection::vec((".{0,20}", ".{0,40}"), 0..6)
                .prop_map(|settings| ToolRequest::LeaderSet { settings }),
        ]
    }

    proptest! {
        /// Whatever arrives, parsing gives a request or an error, never a panic.
        #[test]
        fn any_bytes_parse_or_fail_cleanly(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = serde_json::from_slice::<ToolCall>(&bytes);
        }

        /// Every request a client can send reads back as itself.
        #[test]
        fn calls_round_trip(request in request(), apply_by_ns in proptest::option::of(any::<u64>())) {
            let call = ToolCall { request, apply_by_ns };
            let bytes = serde_json::to_vec(&call).unwrap();
            prop_assert!(!bytes.contains(&b'\n'), "one line per request");
            prop_assert_eq!(serde_json::from_slice::<ToolCall>(&bytes).unwrap(), call);
        }

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

        /// `leader-set` arguments: split at the first `=` (values may hold more), both sides
        /// trimmed of white space.
        #[test]
        fn leader_set_args_split_at_the_first_equals_and_trim(
            pairs in proptest::collection::btree_map("[a-z0-9.-]{1,12}", "([a-z0-9=:/]([a-z0-9=:/ ]{0,18}[a-z0-9=:/])?)?", 0..8),
            pad in "[ \t]{0,2}",
        ) {
            let args: Vec<String> = pairs.iter().map(|(k, v)| format!("{pad}{k}{pad}={pad}{v}{pad}")).collect();
            let group = parse_leader_set_args(&args).unwrap();
            prop_assert_eq!(group, pairs.into_iter().collect::<Vec<_>>());
        }

        /// An argument without `=`, an empty key, or a key given twice, is refused.
        #[test]
        fn leader_set_args_refuse_bad_input(key in "[a-z]{1,12}", value in "[a-z=]{0,10}", other in "[a-z]{0,10}") {
            prop_assert_eq!(parse_leader_set_args(std::slice::from_ref(&key)), Err(ArgsError::NotAPair(key.clone())));
            let empty_key = format!(" ={value}");
            prop_assert_eq!(parse_leader_set_args(&[empty_key]), Err(ArgsError::EmptyKey { key: String::new(), value: value.clone() }));
            let twice = [format!("{key}={value}"), format!(" {key}\t={other}")];
            prop_assert_eq!(parse_leader_set_args(&twice), Err(ArgsError::Duplicate(key)));
        }
    }
}
