//! The hook tools' wire protocol: one request and one response per connection, each one
//! line of JSON. A request ([`ToolCall`]) carries the instant after which its caller stops
//! waiting; an `is-leader` answer carries the instant it holds until.

use serde::{Deserialize, Serialize};

use crate::leadership::Timestamp;

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
    /// Write a group of the unit's own data.
    UnitSet {
        /// The group; an empty value deletes its key.
        settings: Vec<(String, String)>,
    },
    /// One key (`key`) or all of a unit's data: the asking unit's own (`unit` absent or
    /// itself), another unit's only on the leader.
    UnitGet {
        /// The unit whose data to read; absent: the asking unit.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        unit: Option<String>,
        /// The key, or `None` for all of it.
        key: Option<String>,
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
            ToolRequest::UnitSet { .. } => "unit-set",
            ToolRequest::UnitGet { .. } => "unit-get",
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
    /// A write was sent to the store and not answered: it may or may not have been
    /// applied.
    OutcomeUnknown,
    /// A `unit-set` from a copy of the unit that may no longer write its data (a later
    /// start of the unit joined, or the unit was removed).
    Stale,
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
        /// The tenure's term, the fencing token (`leader-term`); absent from an older agent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        term: Option<u64>,
    },
    /// The answer to `leader-get` or `unit-get` with a key.
    Value(Option<String>),
    /// The answer to `leader-get` or `unit-get` without a key, sorted by key.
    Settings(Vec<(String, String)>),
    /// `leader-set` or `unit-set` succeeded.
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
            ToolResponse::LeaderUntil { until_ns, .. } if now.as_nanos() < *until_ns => Ok(true),
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

impl ToolResponse {
    /// What an `is-leader` answer says of the term now (`now` as for [`Self::leadership`]):
    /// `Some(term)` while the unit leads, `None` while it does not; `Err` when the answer
    /// cannot be trusted or says no term.
    pub fn leader_term(&self, now: Timestamp) -> Result<Option<u64>, String> {
        if !self.leadership(now)? {
            return Ok(None);
        }
        match self {
            ToolResponse::LeaderUntil { term: Some(term), .. } => Ok(Some(*term)),
            _ => Err("the agent did not say its term (is it an older version?)".into()),
        }
    }
}

/// One message of the protocol: JSON on one line.
pub(super) fn json_line(message: &impl Serialize) -> std::io::Result<Vec<u8>> {
    let mut bytes = serde_json::to_vec(message).map_err(std::io::Error::other)?;
    bytes.push(b'\n');
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// An answer carries the term beside its deadline; an older agent's answer (no term)
    /// still reads, as true for `is-leader` and as no term for `leader-term`.
    #[test]
    fn is_leader_answers_carry_the_term_and_read_without_it() {
        let now = Timestamp::from_nanos(1_000);
        let answer = ToolResponse::LeaderUntil { until_ns: 2_000, term: Some(7) };
        let line = serde_json::to_string(&answer).unwrap();
        assert_eq!(line, r#"{"leader-until":{"until_ns":2000,"term":7}}"#);
        assert_eq!(serde_json::from_str::<ToolResponse>(&line).unwrap(), answer);
        assert_eq!(answer.leader_term(now), Ok(Some(7)));
        assert!(answer.leader_term(Timestamp::from_nanos(2_000)).is_err(), "a lapsed answer gives no term");
        let older: ToolResponse = serde_json::from_str(r#"{"leader-until":{"until_ns":2000}}"#).unwrap();
        assert_eq!(older.leadership(now), Ok(true));
        assert!(older.leader_term(now).is_err(), "an older agent says no term");
        assert_eq!(ToolResponse::Leader(false).leader_term(now), Ok(None));
    }

    fn request() -> impl Strategy<Value = ToolRequest> {
        prop_oneof![
            Just(ToolRequest::IsLeader),
            Just(ToolRequest::StepDown),
            proptest::option::of(".{0,40}").prop_map(|key| ToolRequest::LeaderGet { key }),
            proptest::collection::vec((".{0,20}", ".{0,40}"), 0..6)
                .prop_map(|settings| ToolRequest::LeaderSet { settings }),
            proptest::collection::vec((".{0,20}", ".{0,40}"), 0..6)
                .prop_map(|settings| ToolRequest::UnitSet { settings }),
            (proptest::option::of(".{0,20}"), proptest::option::of(".{0,40}"))
                .prop_map(|(unit, key)| ToolRequest::UnitGet { unit, key }),
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
    }
}
