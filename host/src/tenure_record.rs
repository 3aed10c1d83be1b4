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
//! [`read`] merges them back into one [`Belief`] per term.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::leadership::Timestamp;

/// One tenure as the unit believed in it, as its record tells it (not the store's
/// [`Tenure`](crate::leadership::Tenure)); times are store-clock nanoseconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Belief {
    /// Its term.
    pub term: u64,
    /// When the unit began to believe it led.
    pub from_ns: u64,
    /// The latest guarantee deadline it recorded.
    pub until_ns: u64,
    /// When it stopped believing, if it recorded that (a crash records nothing).
    pub ended_ns: Option<u64>,
}

impl Belief {
    /// When the belief ended: its recorded end, or (after a crash) its last guarantee,
    /// whichever comes first.
    pub fn end_ns(&self) -> u64 {
        self.ended_ns.map_or(self.until_ns, |ended| ended.min(self.until_ns))
    }
}

/// Why a record could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// The file could not be read.
    #[error("cannot read the tenure record {path}: {source}")]
    Io {
        /// The record.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A complete line is not one this module writes.
    #[error("{path}: line {number} is not a tenure record line: {line:?}")]
    Malformed {
        /// The record.
        path: PathBuf,
        /// Its line number, from 1.
        number: usize,
        /// The line.
        line: String,
    },
}

/// The line format, for reading.
#[derive(serde::Deserialize)]
struct Line {
    term: u64,
    from_ns: Option<u64>,
    until_ns: Option<u64>,
    ended_ns: Option<u64>,
}

/// The tenures recorded at `path` (not its rotated `.1`), in the order they started: none
/// if there is no file yet. A last line without its newline is being written, and skipped.
pub fn read(path: &Path) -> Result<Vec<Belief>, ReadError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(ReadError::Io { path: path.to_owned(), source }),
    };
    let complete = text.rfind('\n').map_or("", |end| &text[..end]);
    let mut tenures: Vec<Belief> = Vec::new();
    for (index, text) in complete.lines().enumerate() {
        let malformed = || ReadError::Malformed { path: path.to_owned(), number: index + 1, line: text.to_owned() };
        let line: Line = serde_json::from_str(text).map_err(|_| malformed())?;
        match (line.from_ns, line.until_ns) {
            (Some(from_ns), Some(until_ns)) => tenures.push(Belief { term: line.term, from_ns, until_ns, ended_ns: line.ended_ns }),
            _ => {
                let tenure = tenures.iter_mut().rev().find(|t| t.term == line.term).ok_or_else(malformed)?;
                if let Some(until) = line.until_ns {
                    tenure.until_ns = tenure.until_ns.max(until);
                }
                if line.ended_ns.is_some() {
                    tenure.ended_ns = line.ended_ns;
                }
            }
        }
    }
    Ok(tenures)
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_reads_back_as_its_tenures() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tenures.jsonl");
        assert_eq!(read(&path).unwrap(), [], "no file yet: no tenures");
        let record = TenureRecord::new(&path);
        let at = Timestamp::from_nanos;
        record.started(3, at(10), at(20));
        record.renewed(3, at(30));
        record.ended(3, at(25));
        record.started(5, at(40), at(50));
        let first = Belief { term: 3, from_ns: 10, until_ns: 30, ended_ns: Some(25) };
        let crashed = Belief { term: 5, from_ns: 40, until_ns: 50, ended_ns: None };
        assert_eq!(read(&path).unwrap(), [first.clone(), crashed.clone()]);
        assert_eq!((first.end_ns(), crashed.end_ns()), (25, 50));

        // A line still being written is not read; a renewal of a term never started is refused.
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(br#"{"term":5,"until"#).unwrap();
        assert_eq!(read(&path).unwrap().len(), 2);
        file.write_all(b"_ns\":60}\n{\"term\":9,\"until_ns\":1}\n").unwrap();
        assert!(matches!(read(&path), Err(ReadError::Malformed { number: 6, .. })));
    }
}
