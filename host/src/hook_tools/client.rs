//! The hook tools' client: what `charm-host is-leader` and the other tools send to a unit's
//! agent, with a deadline after which the agent does not apply the request.

use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use super::protocol::{MAX_REQUEST_BYTES, ToolCall, ToolRequest, ToolResponse, json_line};
use crate::leadership::{Clock, MonotonicClock, Timestamp};

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
