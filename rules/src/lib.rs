//! # charm-rules: the rules the host and the charm test harness share
//!
//! The host (`charm-host`) and the guest SDK's native test harness (`charm_sdk::testing`)
//! both decide with this code, so a charm tested with `cargo test` meets the same rules it
//! meets in production, not a second implementation of them:
//!
//! - [`settings`]: which leader-settings groups are valid (keys, sizes, duplicates, the
//!   bucket limit) and how a group applies;
//! - [`queue`]: which hook runs next on a unit (install first, deposed before anything,
//!   one `leader-settings-changed` per burst, stale leadership hooks dropped, failed hooks
//!   retried with [`backoff`]);
//! - [`names`]: which application and unit names are valid;
//! - [`HookKind`], [`Timestamp`]: the hooks by name, and instants on a monotonic timeline.
//!
//! It has no dependencies (`serde` derives are behind the `serde` feature).
//!
//! ```
//! use charm_rules::queue::{Backoff, HookQueue, LocalState, Next};
//! use charm_rules::{HookKind, Timestamp};
//!
//! let mut queue = HookQueue::new(LocalState::default(), Backoff::default());
//! queue.on_settings(0);
//! queue.on_leader(1);
//! let Next::Run(first) = queue.next(Timestamp::default(), Some(1)) else { unreachable!() };
//! assert_eq!(first.hook, HookKind::Install);
//! ```

pub mod hooks;
pub mod names;
pub mod queue;
pub mod settings;
pub mod time;

pub use hooks::HookKind;
pub use time::{Timestamp, backoff};
