//! Host functions a charm imports, one capability per module. Each capability has its own
//! view of the unit (the way wasmtime-wasi gives each interface its view): a small struct
//! holding only the parts of the unit that interface may reach, kept in the hook's
//! [`HookState`](crate::runtime::HookState) and handed to the linker per interface.
//!
//! - [`context`]: the unit's name, the hook's name, logging and `status-set`; it sees the
//!   unit's [`UnitReporter`](crate::reporter::UnitReporter) only.
//! - [`leadership`]: `is-leader`, `leader-get` and `leader-set`; it sees the unit's
//!   [`LeadershipHandle`](crate::tracker::LeadershipHandle) (which cannot change the claim)
//!   and the hook's settings snapshot.
//! - [`services`]: the configured services; it sees the unit's supervisor, and the
//!   leadership handle to check leadership for leader-only services.
//! - [`call_log`]: each view records its calls with their answers when a test asks.

pub mod call_log;
pub(crate) mod context;
pub(crate) mod leadership;
pub(crate) mod services;

pub(crate) use call_log::{CallRecorder, HostCallLog};
pub(crate) use context::ContextView;
pub(crate) use leadership::LeadershipView;
pub(crate) use services::ServicesView;
