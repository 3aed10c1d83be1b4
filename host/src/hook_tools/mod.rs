//! Hook tools for scripts and cron jobs: a unit agent answers `is-leader`, `leader-get`,
//! `leader-set`, `unit-set` and `unit-get` (and the operator's `step-down`) on a local Unix
//! socket, outside any hook.
//!
//! Invariants:
//! - Requests are served on their own task, never behind a running hook, and store calls
//!   run off the async workers; the answers are the store's latest (scripts have no hook
//!   sandbox): `is-leader` is the tracker's guarantee at the moment of the call,
//!   `leader-get` the committed settings, and `leader-set` a fenced write under the unit's
//!   current term; `unit-set` a write of the unit's own data under its incarnation, and
//!   `unit-get` the committed data (another unit's only while the unit leads). One request
//!   and one response per connection, each a line of JSON.
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
//!
//! Parts:
//! - [`protocol`]: the requests and answers, one line of JSON each.
//! - [`server`]: the socket server ([`serve`]).
//! - [`client`]: what a tool sends ([`call`]).
//! - [`UnitTools`]: the same tools as library calls, which the server answers with. Their
//!   reads and writes are the unit's leadership handle's (`tracker::LeadershipHandle`),
//!   as the guest's `leadership` capability's are.

pub mod client;
pub mod protocol;
pub mod server;

use std::sync::Arc;

use tokio::sync::mpsc;

pub use client::{ToolCallError, apply_by, call};
pub use protocol::{MAX_REQUEST_BYTES, ToolCall, ToolErrorKind, ToolRequest, ToolResponse};
pub use server::{ServerLimits, listen, serve, serve_with};

use crate::agent::AgentCommand;
use crate::events::LogLevel;
use crate::leadership::{BootClock, Clock, StoreError, Timestamp, UnitWriteError, WriteError};
use crate::names::UnitName;
use crate::tracker::LeadershipUnknown;
use crate::unit::Unit;

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

    /// The unit whose tools these are.
    pub fn unit_name(&self) -> &UnitName {
        self.unit.name()
    }

    /// Writes one line to the unit's log.
    pub(crate) fn log(&self, level: LogLevel, message: String) {
        self.unit.log(level, message);
    }

    /// `is-leader`: true only with the guarantee window ahead; an error when leadership
    /// cannot be verified.
    pub fn is_leader(&self) -> Result<bool, LeadershipUnknown> {
        self.unit.leadership().is_leader()
    }

    /// [`Self::is_leader`] with the instant a true answer holds until, on the machine's
    /// boot-time clock ([`BootClock`]): `Some(until)` while the unit leads with the window
    /// ahead, at most a second from now (the tracker's `ANSWER_HOLD`; a graceful
    /// release of the lease waits for it). A caller that acts on it after `until` must act
    /// as a minion.
    pub fn leader_until(&self) -> Result<Option<Timestamp>, LeadershipUnknown> {
        let leadership = self.unit.leadership();
        // The boot clock first: the time left is measured after it, so `until` is never late.
        let boot_now = BootClock.now();
        let Some(until) = leadership.answer_until()? else { return Ok(None) };
        let left = until.saturating_since(leadership.clock().now());
        Ok((!left.is_zero()).then(|| boot_now + left))
    }

    /// `leader-term`: the tenure's term while [`Self::is_leader`] is true (`None`
    /// otherwise), a fencing token for writes to systems outside the host.
    pub fn leader_term(&self) -> Result<Option<u64>, LeadershipUnknown> {
        self.unit.leadership().leader_term()
    }

    /// `leader-get KEY`.
    pub async fn leader_get(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(self.unit.leadership().read_settings().await?.values.get(key).cloned())
    }

    /// `leader-get` of every setting, sorted by key.
    pub async fn leader_get_all(&self) -> Result<Vec<(String, String)>, StoreError> {
        let snapshot = self.unit.leadership().read_settings().await?;
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
        self.unit.leadership().leader_set_by(group, apply_by).await
    }

    /// `unit-set`: one group of the unit's own data, in the store before it returns,
    /// applied only if the store decides it before `apply_by`.
    pub async fn unit_set_by(
        &self,
        group: &[(String, String)],
        apply_by: Option<Timestamp>,
    ) -> Result<(), UnitWriteError> {
        self.unit.unit_data().set_by(group, apply_by).await.map(|_| ())
    }

    /// `unit-get`: all of `unit`'s data as the store has it now (`None`: not a member); the
    /// unit's own for anyone, another unit's only while this unit leads.
    pub async fn unit_get(&self, unit: Option<&str>) -> Result<Option<crate::settings::Settings>, UnitReadError> {
        let me = self.unit.name();
        let unit = match unit {
            None => me.clone(),
            Some(text) => text.parse().map_err(|e: crate::names::NameError| UnitReadError::Invalid(e.to_string()))?,
        };
        if unit.app() != me.app() {
            return Err(UnitReadError::Invalid(format!("{unit} is not a unit of {}", me.app())));
        }
        if &unit != me && !self.is_leader().map_err(|e| UnitReadError::Unknown(e.to_string()))? {
            return Err(UnitReadError::NotLeader);
        }
        let data = self.unit.unit_data().read(&unit).await.map_err(|e| UnitReadError::Unknown(e.to_string()))?;
        Ok(data.map(|d| (*d.values).clone()))
    }
}

/// Why a `unit-get` was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UnitReadError {
    /// Another unit's data, asked of a unit that does not lead.
    #[error("only the leader reads other units' data")]
    NotLeader,
    /// Leadership or the store could not be verified.
    #[error("{0}")]
    Unknown(String),
    /// The unit named is not a valid unit of this application.
    #[error("{0}")]
    Invalid(String),
}

/// Answers one request with `tools`; operator actions go to the unit's agent through
/// `agent`. `apply_by` bounds when a write may be applied.
pub async fn answer(
    tools: &UnitTools,
    agent: &mpsc::Sender<AgentCommand>,
    request: ToolRequest,
    apply_by: Option<Timestamp>,
) -> ToolResponse {
    let error = |kind, message: String| ToolResponse::Error { kind, message };
    match request {
        ToolRequest::IsLeader => match tools.leader_until() {
            // The term read after the deadline: a term is only given with a true answer.
            Ok(Some(until)) => {
                ToolResponse::LeaderUntil { until_ns: until.as_nanos(), term: tools.leader_term().ok().flatten() }
            }
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
        ToolRequest::UnitSet { settings } => match tools.unit_set_by(&settings, apply_by).await {
            Ok(()) => ToolResponse::Done,
            Err(UnitWriteError::Invalid(reason)) => error(ToolErrorKind::Invalid, reason.to_string()),
            Err(err @ (UnitWriteError::NotMember { .. } | UnitWriteError::OtherIncarnation { .. })) => {
                error(ToolErrorKind::Stale, err.to_string())
            }
            Err(err @ UnitWriteError::OutcomeUnknown(_)) => error(ToolErrorKind::OutcomeUnknown, err.to_string()),
            Err(err) => error(ToolErrorKind::Unknown, err.to_string()),
        },
        ToolRequest::UnitGet { unit, key } => match tools.unit_get(unit.as_deref()).await {
            Ok(data) => {
                let data = data.unwrap_or_default();
                match key {
                    Some(key) => ToolResponse::Value(data.get(&key).cloned()),
                    None => ToolResponse::Settings(data.into_iter().collect()),
                }
            }
            Err(UnitReadError::NotLeader) => error(ToolErrorKind::NotLeader, UnitReadError::NotLeader.to_string()),
            Err(UnitReadError::Invalid(reason)) => error(ToolErrorKind::Invalid, reason),
            Err(UnitReadError::Unknown(reason)) => error(ToolErrorKind::Unknown, reason),
        },
        ToolRequest::StepDown => {
            if tools.unit.leadership().held_term().is_none() {
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
