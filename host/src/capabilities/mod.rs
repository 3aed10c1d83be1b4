//! Host functions a charm imports, one capability per module. Each implements the
//! generated `Host` trait for [`HookState`](crate::runtime::HookState), so all of them are
//! added to the runtime's single linker at once.

mod context;
mod leadership;
mod services;
