//! A unit's own record of the leadership it believed it held: one JSON line when a tenure
//! starts, one per renewal with the new guarantee deadline, and one when the unit stops
//! believing (deposed, stepped down, stopped). Operators read it to see what a unit thought
//! and when; fault tests merge every unit's record to check that no two beliefs overlapped.
//!
//! Invariants: times are readings of the store's clock (on one machine, every agent of a
//! store reads the same timeline: `CLOCK_MONOTONIC` for SQLite, `CLOCK_BOOTTIME` for etcd).
//! A line is written before the change it records can be seen by anyone: the start before
//! `is-leader` can answer true, the end before the lease is revoked. A tenure's belief ends
//! at its `ended_ns` or, after a crash, at its last `until_ns`, whichever comes first.
//! The file is bounded: past [`MAX_BYTES`] it becomes `FILE.1` (replacing the one before)
//! and a new file starts. Failing to write is logged, never fatal: the record describes
//! leadership, it does not decide it.
//!
//! Lines: `{"term":N,"from_ns":T,"until_ns":D}` (start), `{"term":N,"until_ns":D}` (renewal),
//! `{"term":N,"ended_ns":T}` (end).

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::leadership::Timestamp;

/// The size past which the record is rotated.
pub const MAX_BYTES: u64 = 1 << 20;

/// An append-only tenure record (see the module docs).
#[derive(Debug)]
pub struct TenureRecord {
    path: PathBuf,
    file: Mutex<Option<File>>,
}

impl TenureRecord {
    /// A record appended to `path` (created 0600 on first write).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into(), file: Mutex::new(None) }
    }

    /// The file written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A tenure at `term` starts at `now`, guaranteed until `until`.
    pub fn started(&self, term: u64, now: Timestamp, until: Timestamp) {
        self.append(&format!(r#"{{"term":{term},"from_ns":{},"until_ns":{}}}"#, now.as_nanos(), until.as_nanos()));
    }

    /// The tenure at `term` is now guaranteed until `until`.
    pub fn renewed(&self, term: u64, until: Timestamp) {
        self.append(&format!(r#"{{"term":{term},"until_ns":{}}}"#, until.as_nanos()));
    }

    /// The unit stopped believing it leads at `term`, at `now`.
    pub fn ended(&self, term: u64, now: Timestamp) {
        self.append(&format!(r#"{{"term":{term},"ended_ns":{}}}"#, now.as_nanos()));
    }

    fn append(&self, line: &str) {
        let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(err) = self.write_line(&mut file, line) {
            *file = None;
            tracing::warn!(path = %self.path.display(), "cannot write the tenure record: {err}");
        }
    }

    fn write_line(&self, file: &mut Option<File>, line: &str) -> std::io::Result<()> {
        if file.as_ref().map(|f| f.metadata().map(|m| m.len())).transpose()?.is_some_and(|len| len >= MAX_BYTES) {
            let mut older = self.path.as_os_str().to_owned();
            older.push(".1");
            std::fs::rename(&self.path, older)?;
            *file = None;
        }
        if file.is_none() {
            let opened = crate::state_dir::open_private_file(&self.path, OpenOptions::new().create(true).append(true))?;
            *file = Some(opened);
        }
        match file {
            Some(f) => f.write_all(format!("{line}\n").as_bytes()),
            None => Ok(()),
        }
    }
}
