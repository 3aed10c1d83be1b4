//! Builds a charm crate into a `wasm32-wasip2` component with cargo.
//!
//! Invariants: the build uses its own target directory, `charm-build` inside the target
//! directory cargo would use for the crate (`CARGO_TARGET_DIR` and cargo's configuration
//! honoured), so it never waits on the lock of a cargo that is running us; and it runs with
//! none of the host build's flags (`CARGO_ENCODED_RUSTFLAGS`, `RUSTFLAGS`,
//! `CARGO_BUILD_TARGET`), which would otherwise leak into the guest build.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The target charms are built for.
pub const CHARM_TARGET: &str = "wasm32-wasip2";

/// Why a charm crate could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// The directory has no `Cargo.toml`.
    #[error("{0} is not a charm crate: it has no Cargo.toml")]
    NotACrate(PathBuf),
    /// cargo could not be started or asked.
    #[error("cannot run cargo: {0}")]
    Cargo(String),
    /// The build failed; cargo's output is included.
    #[error(
        "building {dir} for {CHARM_TARGET} failed (is the target installed? `rustup target add {CHARM_TARGET}`):\n{output}"
    )]
    Failed {
        /// The crate.
        dir: PathBuf,
        /// What cargo printed.
        output: String,
    },
    /// The build succeeded but produced no component.
    #[error("building {dir} produced no {artifact}: is it a `cdylib` crate?")]
    NoArtifact {
        /// The crate.
        dir: PathBuf,
        /// The file expected.
        artifact: PathBuf,
    },
}

/// What a build shows while it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// Nothing: cargo's output is kept for the error of a failed build.
    Quiet,
    /// Cargo's own messages and progress bar, on this process's stderr (and nothing on
    /// its stdout).
    Shown,
}

/// Builds the crate in `dir` in release mode and returns the path of its `.wasm`.
pub fn build_charm(dir: &Path, progress: Progress) -> Result<PathBuf, BuildError> {
    let manifest = dir.join("Cargo.toml");
    if !manifest.is_file() {
        return Err(BuildError::NotACrate(dir.to_owned()));
    }
    let package = package_name(&manifest)?;
    let target_dir = cargo_target_dir(&manifest)?.join("charm-build");
    let mut build = cargo();
    build.args(["build", "--release", "--target", CHARM_TARGET, "--manifest-path"]);
    build.arg(&manifest).arg("--target-dir").arg(&target_dir);
    let failure = match progress {
        Progress::Quiet => {
            let output = build.arg("--quiet").output().map_err(|e| BuildError::Cargo(e.to_string()))?;
            (!output.status.success()).then(|| String::from_utf8_lossy(&output.stderr).into_owned())
        }
        Progress::Shown => {
            // Its stdout joins stderr: a `run --json` keeps stdout for JSON.
            let status = build.stdout(std::io::stderr()).status().map_err(|e| BuildError::Cargo(e.to_string()))?;
            (!status.success()).then(|| "(cargo's messages are above)".to_owned())
        }
    };
    if let Some(output) = failure {
        return Err(BuildError::Failed { dir: dir.to_owned(), output });
    }
    let artifact = target_dir.join(CHARM_TARGET).join("release").join(format!("{}.wasm", package.replace('-', "_")));
    if !artifact.is_file() {
        return Err(BuildError::NoArtifact { dir: dir.to_owned(), artifact });
    }
    Ok(artifact)
}

/// A `cargo` command without the flags of a build that may be running us.
fn cargo() -> Command {
    let mut command = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    for var in
        ["CARGO_ENCODED_RUSTFLAGS", "RUSTFLAGS", "CARGO_BUILD_TARGET", "CARGO_TARGET_DIR", "CARGO_BUILD_RUSTFLAGS"]
    {
        command.env_remove(var);
    }
    command
}

/// The package name from `[package] name = "..."`.
pub(crate) fn package_name(manifest: &Path) -> Result<String, BuildError> {
    let text =
        std::fs::read_to_string(manifest).map_err(|e| BuildError::Cargo(format!("{}: {e}", manifest.display())))?;
    let mut in_package = false;
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            in_package = line == "[package]";
        } else if in_package
            && let Some(value) = line.strip_prefix("name").map(str::trim_start).and_then(|l| l.strip_prefix('='))
        {
            return Ok(value.trim().trim_matches('"').to_owned());
        }
    }
    Err(BuildError::NotACrate(manifest.parent().unwrap_or(manifest).to_owned()))
}

/// The target directory cargo uses for `manifest`'s workspace: `CARGO_TARGET_DIR` or
/// cargo's `build.target-dir` if set, else the workspace's `target`.
fn cargo_target_dir(manifest: &Path) -> Result<PathBuf, BuildError> {
    let mut metadata = cargo();
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        metadata.env("CARGO_TARGET_DIR", dir);
    }
    let output = metadata
        .args(["metadata", "--no-deps", "--format-version", "1", "--manifest-path"])
        .arg(manifest)
        .output()
        .map_err(|e| BuildError::Cargo(e.to_string()))?;
    if !output.status.success() {
        return Err(BuildError::Cargo(String::from_utf8_lossy(&output.stderr).into_owned()));
    }
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout)
        .map_err(|e| BuildError::Cargo(format!("cargo metadata printed no JSON: {e}")))?;
    let dir = metadata["target_directory"]
        .as_str()
        .ok_or_else(|| BuildError::Cargo("cargo metadata names no target_directory".into()))?;
    Ok(PathBuf::from(dir))
}
