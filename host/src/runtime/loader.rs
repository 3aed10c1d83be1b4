//! Loading a charm: recognise a component, compile it or fetch it from the cache, check
//! that it targets the `juju:charm/charm` world, and pre-link it once.
//!
//! Invariant: a [`Charm`] exists only for a component whose every import the linker
//! provides and whose `hooks` export has the contract's exact shape, so no unit ever starts
//! with a charm that would fail to instantiate for a reason known at load time.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use wasmtime::component::Component;
use wasmtime::component::types::ComponentItem;

use super::bindings::CharmPre;
use super::cache::sha256_hex;
use super::{HookRuntime, HookState};
use crate::hooks::HookKind;

/// The instance a charm must export.
pub const HOOKS_EXPORT: &str = "juju:charm/hooks@0.1.0";

/// Why a charm could not be loaded. Each names the file and the problem.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read charm {path}: {source}")]
    Read {
        /// The charm file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not a WebAssembly component.
    #[error("{path} is not a WebAssembly component: {reason}")]
    NotComponent {
        /// The charm file.
        path: PathBuf,
        /// What it is instead.
        reason: String,
    },
    /// Wasmtime could not compile the component.
    #[error("cannot compile {path}: {reason}")]
    Compile {
        /// The charm file.
        path: PathBuf,
        /// The compiler's message.
        reason: String,
    },
    /// The component does not target the `charm` world.
    #[error("{path} does not implement the juju:charm/charm world: {reason}")]
    WrongWorld {
        /// The charm file.
        path: PathBuf,
        /// What is missing or different.
        reason: String,
    },
    /// The component imports something this host does not provide.
    #[error("{path} imports something this host does not provide ({detail}); charms may import juju:charm/context, juju:charm/leadership, juju:charm/services and WASI 0.2")]
    UnknownImport {
        /// The charm file.
        path: PathBuf,
        /// Which import, and why it does not match.
        detail: String,
    },
}

/// A compiled, validated, pre-linked charm, ready to instantiate for any number of hooks.
#[derive(Clone)]
pub struct Charm {
    pre: CharmPre<HookState>,
    path: PathBuf,
    wasm_hash: String,
    load_time: Duration,
    from_cache: bool,
}

impl std::fmt::Debug for Charm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Charm").field("path", &self.path).field("wasm_hash", &self.wasm_hash).finish()
    }
}

impl Charm {
    pub(crate) fn pre(&self) -> &CharmPre<HookState> {
        &self.pre
    }

    /// The file the charm was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// SHA-256 of the charm's wasm, in hex.
    pub fn wasm_hash(&self) -> &str {
        &self.wasm_hash
    }

    /// How long loading took (read, compile or cache fetch, validation, linking).
    pub fn load_time(&self) -> Duration {
        self.load_time
    }

    /// True if the compiled code came from the on-disk cache.
    pub fn from_cache(&self) -> bool {
        self.from_cache
    }
}

/// Layer field of a component binary (`\0asm`, then version 0x0d and layer 1).
const COMPONENT_HEADER: [u8; 8] = [0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00];
const CORE_MODULE_HEADER: [u8; 8] = [0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00];

impl HookRuntime {
    /// Loads the charm at `path`: see [`LoadError`] for everything that is checked.
    pub fn load_charm(&self, path: &Path) -> Result<Charm, LoadError> {
        let start = Instant::now();
        let bytes = std::fs::read(path).map_err(|source| LoadError::Read { path: path.to_owned(), source })?;
        check_header(path, &bytes)?;
        let wasm_hash = sha256_hex(&bytes);
        let cached = self.cache.as_ref().and_then(|c| c.load(&self.engine, &wasm_hash));
        let from_cache = cached.is_some();
        let component = match cached {
            Some(component) => component,
            None => {
                let component = Component::new(&self.engine, &bytes)
                    .map_err(|e| LoadError::Compile { path: path.to_owned(), reason: format!("{e:#}") })?;
                if let Some(cache) = &self.cache
                    && let Err(err) = cache.store(&wasm_hash, &component)
                {
                    tracing::warn!(dir = %cache.dir().display(), "could not cache compiled charm: {err}");
                }
                component
            }
        };
        let pre = self.link(path, &component)?;
        Ok(Charm { pre, path: path.to_owned(), wasm_hash, load_time: start.elapsed(), from_cache })
    }

    fn link(&self, path: &Path, component: &Component) -> Result<CharmPre<HookState>, LoadError> {
        let ty = component.component_type();
        let wrong_world = |reason: String| LoadError::WrongWorld { path: path.to_owned(), reason };
        let Some(ComponentItem::ComponentInstance(hooks)) = ty.get_export(&self.engine, HOOKS_EXPORT).map(|e| e.ty) else {
            let exports: Vec<&str> = ty.exports(&self.engine).map(|(name, _)| name).collect();
            return Err(wrong_world(format!(
                "it does not export `{HOOKS_EXPORT}` (it exports: {})",
                if exports.is_empty() { "nothing".to_owned() } else { exports.join(", ") }
            )));
        };
        let missing: Vec<&str> = HookKind::ALL
            .iter()
            .map(|h| h.name())
            .filter(|name| !matches!(hooks.get_export(&self.engine, name).map(|e| e.ty), Some(ComponentItem::ComponentFunc(_))))
            .collect();
        if !missing.is_empty() {
            return Err(wrong_world(format!("`{HOOKS_EXPORT}` lacks the function(s) {}", missing.join(", "))));
        }
        let unknown = |detail: String| LoadError::UnknownImport { path: path.to_owned(), detail };
        if let Some((name, _)) = ty.imports(&self.engine).find(|(name, _)| !is_provided_family(name)) {
            return Err(unknown(format!("`{name}`")));
        }
        // The linker checks every import's exact version and type.
        let pre = self.linker.instantiate_pre(component).map_err(|e| unknown(format!("{e:#}")))?;
        CharmPre::new(pre).map_err(|e| wrong_world(format!("{e:#}")))
    }
}

/// The charm interfaces the linker serves (every import of the `charm` world).
const CHARM_IMPORTS: [&str; 3] = ["juju:charm/context", "juju:charm/leadership", "juju:charm/services"];

/// True for the import families the linker serves: WASI and the charm's own interfaces.
fn is_provided_family(import: &str) -> bool {
    let package = import.split_once('@').map_or(import, |(package, _version)| package);
    package.starts_with("wasi:") || CHARM_IMPORTS.contains(&package)
}

fn check_header(path: &Path, bytes: &[u8]) -> Result<(), LoadError> {
    let not_component = |reason: &str| LoadError::NotComponent { path: path.to_owned(), reason: reason.to_owned() };
    match bytes.get(..8) {
        Some(header) if header == COMPONENT_HEADER => Ok(()),
        Some(header) if header == CORE_MODULE_HEADER => Err(not_component(
            "it is a core wasm module; build the charm with `cargo build --target wasm32-wasip2`",
        )),
        Some(header) if header[..4] == COMPONENT_HEADER[..4] => {
            Err(not_component("it has an unsupported WebAssembly version or layer"))
        }
        _ => Err(not_component("it does not start with the WebAssembly magic number")),
    }
}
