//! Hook tools for scripts and cron jobs: a unit agent answers `is-leader`, `leader-get` and
//! `leader-set` (and the operator's `step-down`) on a local Unix socket, outside any hook.
//!
//! Invariants: requests are served on their own task, never behind a running hook; the
//! answers are the store's latest (scripts have no hook sandbox): `is-leader` is the
//! tracker's guarantee at the moment of the call, `leader-get` the committed settings,
//! and `leader-set` a fenced write under the unit's current term. One request and one
//! response per connection, each a line of JSON.

use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;

use crate::agent::AgentCommand;
use crate::leadership::WriteError;
use crate::unit::Unit;

/// Longest request line read: a full bucket's worth of settings and some.
const MAX_REQUEST_BYTES: u64 = 2 * 1024 * 1024;

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
}

/// A unit agent's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ToolResponse {
    /// The answer to `is-leader`.
    Leader(bool),
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

/// Why a client call failed before an answer arrived.
#[derive(Debug, thiserror::Error)]
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
}

/// Answers one request for `unit`; operator actions go to its agent through `agent`.
pub async fn answer(unit: &Unit, agent: &mpsc::Sender<AgentCommand>, request: ToolRequest) -> ToolResponse {
    let error = |kind, message: String| ToolResponse::Error { kind, message };
    match request {
        ToolRequest::IsLeader => match unit.tracker().is_leader() {
            Ok(leader) => ToolResponse::Leader(leader),
            Err(err) => error(ToolErrorKind::Unknown, err.to_string()),
        },
        ToolRequest::LeaderGet { key } => match unit.store().read_settings(unit.name().app()) {
            Ok(snapshot) => match key {
                Some(key) => ToolResponse::Value(snapshot.values.get(&key).cloned()),
                None => ToolResponse::Settings(snapshot.values.iter().map(|(k, v)| (k.clone(), v.clone())).collect()),
            },
            Err(err) => error(ToolErrorKind::Unknown, err.to_string()),
        },
        ToolRequest::LeaderSet { settings } => match unit.leader_set(&settings) {
            Ok(()) => ToolResponse::Done,
            Err(WriteError::NotLeader { .. }) => error(ToolErrorKind::NotLeader, "not the leader".into()),
            Err(WriteError::Invalid(reason)) => error(ToolErrorKind::Invalid, reason.to_string()),
            Err(WriteError::Store(reason)) => error(ToolErrorKind::Unknown, reason),
        },
        ToolRequest::StepDown => {
            if unit.tracker().held_term().is_none() {
                return error(ToolErrorKind::NotLeader, "not the leader".into());
            }
            match agent.send(AgentCommand::StepDown).await {
                Ok(()) => ToolResponse::Done,
                Err(_) => error(ToolErrorKind::Unknown, "the agent is stopping".into()),
            }
        }
    }
}

/// Serves hook tools for `unit` on `listener` until the task is dropped; operator actions
/// are sent to the unit's agent through `agent`.
pub async fn serve(listener: UnixListener, unit: Arc<Unit>, agent: mpsc::Sender<AgentCommand>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let (unit, agent) = (unit.clone(), agent.clone());
        tokio::spawn(async move {
            if let Err(err) = serve_one(stream, &unit, &agent).await {
                tracing::debug!(unit = %unit.name(), "hook tool connection failed: {err}");
            }
        });
    }
}

async fn serve_one(stream: UnixStream, unit: &Unit, agent: &mpsc::Sender<AgentCommand>) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    BufReader::new(read.take(MAX_REQUEST_BYTES)).read_line(&mut line).await?;
    let response = match serde_json::from_str::<ToolRequest>(&line) {
        Ok(request) => answer(unit, agent, request).await,
        Err(err) => ToolResponse::Error { kind: ToolErrorKind::Invalid, message: format!("bad request: {err}") },
    };
    let mut bytes = serde_json::to_vec(&response).map_err(std::io::Error::other)?;
    bytes.push(b'\n');
    write.write_all(&bytes).await?;
    write.shutdown().await
}

/// Sends `request` to the agent listening at `socket` and returns its answer.
pub async fn call(socket: &Path, request: &ToolRequest) -> Result<ToolResponse, ToolCallError> {
    let protocol = |e: std::io::Error| ToolCallError::Protocol(e.to_string());
    let stream = UnixStream::connect(socket)
        .await
        .map_err(|source| ToolCallError::Connect { path: socket.display().to_string(), source })?;
    let (read, mut write) = stream.into_split();
    let mut bytes = serde_json::to_vec(request).map_err(|e| ToolCallError::Protocol(e.to_string()))?;
    bytes.push(b'\n');
    write.write_all(&bytes).await.map_err(protocol)?;
    let mut line = String::new();
    BufReader::new(read).read_line(&mut line).await.map_err(protocol)?;
    serde_json::from_str(&line).map_err(|e| ToolCallError::Protocol(format!("{e} in {line:?}")))
}
