//! The state of one hook's store: one view of the unit per capability (see
//! [`crate::capabilities`]), its WASI sandbox and its memory limiter.
//!
//! Invariants: the WASI context has no environment, no arguments, no network access and
//! exactly one preopened directory, the unit's data directory (read-write, as `/`); stdout
//! and stderr are line-buffered into the unit's log. The snapshot, once taken, changes only
//! by this hook's own successful `leader-set`.
//!
//! The data directory's handle is opened once per unit and shared by its hooks (each hook
//! gets its own descriptor of it in its own table; reading a directory opens it anew, so no
//! position is shared) while the process holds fewer such handles than a quarter of its
//! descriptor limit ([`PreopenBudget`]); past that, a hook opens its own and closes it.

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};

use tokio::io::AsyncWrite;
use wasmtime::component::ResourceTable;
use wasmtime::{ResourceLimiter, Trap};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::filesystem::WasiFilesystemCtx;
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxView, WasiView};

use super::guest_env::GuestEnvironment;
use crate::capabilities::{CallRecorder, ContextView, HostCallLog, LeadershipView, ServicesView};
use crate::events::LogLevel;
use crate::hooks::{HookError, HookKind};
use crate::reporter::UnitReporter;
use crate::unit::Unit;

/// Where the unit's data directory appears inside the sandbox.
pub const GUEST_DATA_DIR: &str = "/";

/// How much of a hook's last stderr output is kept to explain a trap.
const STDERR_TAIL_BYTES: usize = 2048;

/// One unit as the runtime runs its hooks: the unit, and what its sandboxes are made with
/// beyond it (the runtime's per-unit part): the clocks and randomness a test decides, the
/// log of host calls a test reads, and the data directory handle its hooks share.
pub struct UnitSandbox {
    unit: Arc<Unit>,
    /// Clocks and randomness for its sandboxes when a test decides them (`None`: the
    /// machine's).
    guest: Option<GuestEnvironment>,
    /// Where its hooks' host calls are recorded, when a test asks.
    calls: Option<Arc<HostCallLog>>,
    /// Its data directory as its hooks' preopen, once opened (see [`data_dir_preopen`]).
    preopen: OnceLock<HeldPreopen>,
}

impl std::fmt::Debug for UnitSandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UnitSandbox").field("unit", self.unit.name()).finish_non_exhaustive()
    }
}

impl UnitSandbox {
    /// `unit`'s hooks, in sandboxes with the machine's clocks and randomness.
    pub fn new(unit: Arc<Unit>) -> Self {
        Self { unit, guest: None, calls: None, preopen: OnceLock::new() }
    }

    /// Gives the unit's sandboxes `environment`'s clocks and seeded randomness instead of
    /// the machine's (for tests in virtual time).
    pub fn with_guest_environment(mut self, environment: Option<GuestEnvironment>) -> Self {
        self.guest = environment;
        self
    }

    /// Records every host call of its hooks, with its answer, in `log` (for tests).
    pub fn with_call_log(mut self, log: Option<Arc<HostCallLog>>) -> Self {
        self.calls = log;
        self
    }

    /// The unit.
    pub fn unit(&self) -> &Arc<Unit> {
        &self.unit
    }

    /// The clocks and randomness its sandboxes get, when not the machine's.
    pub(crate) fn guest_environment(&self) -> Option<&GuestEnvironment> {
        self.guest.as_ref()
    }
}

/// Everything a hook's store holds.
pub(crate) struct HookState {
    pub(crate) context: ContextView,
    pub(crate) leadership: LeadershipView,
    pub(crate) services: ServicesView,
    wasi: WasiCtx,
    table: ResourceTable,
    limiter: MemoryLimiter,
    stderr_tail: Arc<Mutex<String>>,
    /// The unit's guest clocks and randomness, when a test decides them.
    guest: Option<GuestEnvironment>,
}

impl HookState {
    /// A fresh sandbox for running `hook` of `sandbox`'s unit.
    pub(crate) fn new(sandbox: &UnitSandbox, hook: HookKind, memory_cap: usize) -> std::io::Result<Self> {
        let unit = &sandbox.unit;
        let stderr_tail = Arc::new(Mutex::new(String::new()));
        let reporter = unit.reporter();
        let mut builder = WasiCtx::builder();
        // First: the preopened directory takes the blocking mode set before it.
        if let Some(environment) = &sandbox.guest {
            environment.apply(&mut builder);
        }
        let calls = CallRecorder { hook, log: sandbox.calls.clone() };
        builder
            .stdout(UnitLog { reporter: reporter.clone(), level: LogLevel::Info, tail: None })
            .stderr(UnitLog { reporter: reporter.clone(), level: LogLevel::Warning, tail: Some(stderr_tail.clone()) })
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false);
        let mut wasi = builder.build();
        *wasi.filesystem() = data_dir_preopen(sandbox)?;
        Ok(Self {
            context: ContextView { reporter: reporter.clone(), hook, calls: calls.clone() },
            leadership: LeadershipView::new(unit.leadership().clone(), unit.unit_data().clone(), calls.clone()),
            services: ServicesView {
                supervisor: unit.services().clone(),
                leadership: unit.leadership().clone(),
                calls,
            },
            wasi,
            table: ResourceTable::new(),
            limiter: MemoryLimiter { cap: memory_cap, refused: None },
            stderr_tail,
            guest: sandbox.guest.clone(),
        })
    }

    /// The unit's guest environment, when a test decides its clocks.
    pub(crate) fn guest_environment(&self) -> Option<&GuestEnvironment> {
        self.guest.as_ref()
    }

    /// The WASI context and the resource table, both at once.
    pub(crate) fn wasi_and_table(&mut self) -> (&mut WasiCtx, &mut ResourceTable) {
        (&mut self.wasi, &mut self.table)
    }

    pub(crate) fn limiter(&mut self) -> &mut dyn ResourceLimiter {
        &mut self.limiter
    }

    /// Turns the error a wasm call ended with into the reason the hook failed.
    pub(crate) fn explain_failure(&self, err: &wasmtime::Error) -> HookError {
        if let Some(requested) = self.limiter.refused {
            return HookError::MemoryCap { cap: self.limiter.cap, requested };
        }
        let reason = match err.downcast_ref::<Trap>() {
            Some(Trap::UnreachableCodeReached) => {
                let tail = self.stderr_tail.lock().map(|t| t.clone()).unwrap_or_default();
                match tail.lines().rev().find(|l| l.contains("panicked at")) {
                    Some(_) => format!("panicked: {}", panic_message(&tail)),
                    None => "wasm `unreachable` executed (an abort or a panic)".to_owned(),
                }
            }
            Some(trap) => trap.to_string(),
            None => format!("{err:#}"),
        };
        HookError::Trap(reason)
    }
}

/// A unit's data directory opened as the sandbox's one preopen, kept by its
/// [`UnitSandbox`] for its hooks; it counts against the [`PreopenBudget`] until that is
/// dropped.
struct HeldPreopen {
    filesystem: WasiFilesystemCtx,
}

impl Drop for HeldPreopen {
    fn drop(&mut self) {
        PREOPENS_HELD.fetch_sub(1, Ordering::AcqRel);
    }
}

/// How many units of this process keep their data directory open.
static PREOPENS_HELD: AtomicUsize = AtomicUsize::new(0);

/// At most a quarter of the process's descriptor limit is held by units' data directories,
/// so that ten thousand units under a small limit leave room for everything else (they
/// then open theirs per hook).
struct PreopenBudget;

impl PreopenBudget {
    fn limit() -> usize {
        static LIMIT: OnceLock<usize> = OnceLock::new();
        *LIMIT.get_or_init(|| {
            let soft = rustix::process::getrlimit(rustix::process::Resource::Nofile).current.unwrap_or(u64::MAX);
            usize::try_from(soft / 4).unwrap_or(usize::MAX)
        })
    }

    /// Takes a place in the budget, if there is one left.
    fn take() -> bool {
        PREOPENS_HELD.fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| (held < Self::limit()).then_some(held + 1)).is_ok()
    }
}

/// The unit's data directory as a preopen: the unit's kept handle, or a new one (kept for
/// the unit's next hooks if the budget allows).
fn data_dir_preopen(sandbox: &UnitSandbox) -> std::io::Result<WasiFilesystemCtx> {
    let unit = &sandbox.unit;
    if let Some(held) = sandbox.preopen.get() {
        return Ok(held.filesystem.clone());
    }
    let mut builder = WasiCtx::builder();
    // The blocking mode the unit's hooks use (see `GuestEnvironment::apply`).
    builder
        .allow_blocking_current_thread(sandbox.guest.is_some())
        .preopened_dir(unit.data_dir(), GUEST_DATA_DIR, FsPerms::ReadWrite)
        .map_err(|e| std::io::Error::other(format!("cannot open {}: {e}", unit.data_dir().display())))?;
    let filesystem = builder.build().filesystem().clone();
    if PreopenBudget::take() {
        // A racing hook of the same unit may have kept one first: this one is then dropped
        // (and gives its place back).
        let _ = sandbox.preopen.set(HeldPreopen { filesystem: filesystem.clone() });
    }
    Ok(filesystem)
}

/// The panic message in a Rust panic report: the lines after `panicked at FILE:LINE:COL:`.
fn panic_message(stderr: &str) -> String {
    let start = stderr.rfind("panicked at").unwrap_or(0);
    let report = &stderr[start..];
    let mut lines = report.lines();
    let location = lines.next().unwrap_or_default().trim_start_matches("panicked at ").trim_end_matches(':');
    let message: Vec<&str> = lines.take_while(|l| !l.starts_with("note:")).collect();
    format!("{} (at {location})", message.join(" ").trim())
}

impl WasiView for HookState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

/// Refuses memory growth past the cap and remembers that it did.
struct MemoryLimiter {
    cap: usize,
    refused: Option<usize>,
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.cap {
            self.refused = Some(desired);
            return Err(wasmtime::Error::msg(format!("memory cap of {} bytes exceeded", self.cap)));
        }
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(maximum.is_none_or(|max| desired <= max))
    }
}

/// A guest output stream that writes whole lines to the unit's log.
#[derive(Clone)]
struct UnitLog {
    reporter: Arc<UnitReporter>,
    level: LogLevel,
    tail: Option<Arc<Mutex<String>>>,
}

impl IsTerminal for UnitLog {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for UnitLog {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(LineWriter { log: self.clone(), pending: Vec::new() })
    }
}

/// Longest line kept whole; longer output is split.
const MAX_LINE_BYTES: usize = 16 * 1024;

struct LineWriter {
    log: UnitLog,
    pending: Vec<u8>,
}

impl LineWriter {
    fn emit(&mut self, line: &[u8]) {
        let text = String::from_utf8_lossy(line).trim_end_matches('\r').to_owned();
        if let Some(tail) = &self.log.tail
            && let Ok(mut tail) = tail.lock()
        {
            tail.push_str(&text);
            tail.push('\n');
            if tail.len() > STDERR_TAIL_BYTES {
                let mut cut = tail.len() - STDERR_TAIL_BYTES;
                while !tail.is_char_boundary(cut) {
                    cut += 1;
                }
                tail.drain(..cut);
            }
        }
        self.log.reporter.log(self.log.level, text);
    }
}

impl AsyncWrite for LineWriter {
    fn poll_write(mut self: Pin<&mut Self>, _cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        self.pending.extend_from_slice(buf);
        while let Some(pos) = self.pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=pos).collect();
            self.emit(&line[..line.len() - 1]);
        }
        if self.pending.len() > MAX_LINE_BYTES {
            let line = std::mem::take(&mut self.pending);
            self.emit(&line);
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if !self.pending.is_empty() {
            let line = std::mem::take(&mut self.pending);
            self.emit(&line);
        }
        Poll::Ready(Ok(()))
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        if !self.pending.is_empty() {
            let line = std::mem::take(&mut self.pending);
            self.emit(&line);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extracts_panic_message() {
        let stderr = "\nthread '<unnamed>' panicked at src/lib.rs:10:5:\nboom: it broke\nnote: run with `RUST_BACKTRACE=1`\n";
        assert_eq!(panic_message(stderr), "boom: it broke (at src/lib.rs:10:5)");
    }
}
