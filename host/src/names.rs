//! Validated names of applications and units: the rules live in [`charm_rules::names`],
//! shared with the guest SDK's test harness.

pub use charm_rules::names::*;
