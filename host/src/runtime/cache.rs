//! On-disk cache of compiled charms.
//!
//! An entry is keyed by the SHA-256 of the charm's wasm and by the engine's compatibility
//! hash, so a different wasmtime version or engine setting never reads another's code.
//! Each file starts with the SHA-256 of the serialized code that follows; an entry that is
//! truncated, corrupt, or refused by wasmtime is a miss (and is replaced), never a crash.
//! Writes go to a temporary file renamed into place, so readers never see half an entry.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

/// Where compiled charms are kept between runs.
#[derive(Debug, Clone)]
pub struct CompiledCache {
    dir: PathBuf,
    engine_hash: String,
}

/// The 32-byte digest every entry starts with.
const DIGEST_LEN: usize = 32;

impl CompiledCache {
    /// A cache in `dir` for code compiled by `engine`.
    pub fn new(dir: PathBuf, engine: &Engine) -> Self {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        Self { dir, engine_hash: format!("{:016x}", hasher.finish()) }
    }

    /// `$XDG_CACHE_HOME/charm-host`, else `$HOME/.cache/charm-host`.
    pub fn default_dir() -> Option<PathBuf> {
        let base = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
        Some(base.join("charm-host"))
    }

    /// The directory entries live in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The entry path for wasm whose SHA-256 is `wasm_hash`.
    pub fn entry_path(&self, wasm_hash: &str) -> PathBuf {
        self.dir.join(format!("{wasm_hash}-{}.cwasm", self.engine_hash))
    }

    /// The compiled component for `wasm_hash`, if a valid entry exists.
    pub fn load(&self, engine: &Engine, wasm_hash: &str) -> Option<Component> {
        let path = self.entry_path(wasm_hash);
        let bytes = std::fs::read(&path).ok()?;
        if bytes.len() < DIGEST_LEN || Sha256::digest(&bytes[DIGEST_LEN..]).as_slice() != &bytes[..DIGEST_LEN] {
            tracing::warn!(path = %path.display(), "ignoring a corrupt compiled-charm cache entry");
            return None;
        }
        // SAFETY: the bytes are exactly what `Component::serialize` wrote for an engine with
        // the same compatibility hash (the file name says so and the digest proves the bytes
        // are intact); wasmtime checks the header and version again.
        match unsafe { Component::deserialize(engine, &bytes[DIGEST_LEN..]) } {
            Ok(component) => Some(component),
            Err(err) => {
                tracing::warn!(path = %path.display(), "ignoring an unusable cache entry: {err}");
                None
            }
        }
    }

    /// Stores `component` as the entry for `wasm_hash`. Failing to write only costs a
    /// compile next time, so errors are returned for logging, not for stopping.
    pub fn store(&self, wasm_hash: &str, component: &Component) -> std::io::Result<()> {
        let code = component.serialize().map_err(|e| std::io::Error::other(e.to_string()))?;
        std::fs::create_dir_all(&self.dir)?;
        let path = self.entry_path(wasm_hash);
        let tmp = self.dir.join(format!(".{wasm_hash}.{}.tmp", std::process::id()));
        let mut contents = Vec::with_capacity(DIGEST_LEN + code.len());
        contents.extend_from_slice(&Sha256::digest(&code));
        contents.extend_from_slice(&code);
        std::fs::write(&tmp, &contents)?;
        std::fs::rename(&tmp, &path).inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })
    }
}

/// Hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}
