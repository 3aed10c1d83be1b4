//! The leader-settings bucket of one application and the rules a write must follow.
//!
//! The rules live in the `charm-rules` crate, which the charm SDK's test harness uses too,
//! so a charm's native tests validate settings exactly as the host does. See
//! [`charm_rules::settings`] for the invariants.

pub use charm_rules::settings::*;
