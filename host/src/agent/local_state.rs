//! Where a unit agent keeps what must outlive it: its [`LocalState`] and its last status.
//!
//! Each record is kept in two slot files beside the given path (`NAME.0`, `NAME.1`), each
//! holding a sequence number, a SHA-256 of the content, and the content as JSON. A write
//! overwrites the older slot in place, so a crash mid-write leaves the other slot intact and
//! a reader takes the newest slot whose digest matches; and no file is created after the
//! first two writes (creating files is what made per-hook persistence slow). Changes that
//! must survive power loss too (install done, a tenure's `leader-elected` done) are fsynced;
//! a newer settings version seen is not (and the agent writes it behind, see
//! [`super::records`]), since losing it costs one more `leader-settings-changed`, which the
//! at-least-once promise allows.

use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

use super::queue::LocalState;

/// Why a record could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LocalStateError {
    /// A slot could not be read or written.
    #[error("unit state file {path}: {source}")]
    Io {
        /// The slot file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Both slots exist but neither holds a valid record.
    #[error("unit state {path}.0/.1 is corrupt in both slots")]
    Corrupt {
        /// The record's base path.
        path: PathBuf,
    },
}

fn slot(path: &Path, n: u8) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

/// A slot's sequence number and content, if it exists and its digest matches.
fn read_slot(path: &Path) -> Result<Option<(u64, Vec<u8>)>, LocalStateError> {
    let bytes = match crate::state_dir::read_private_file(path) {
        Ok(Some(bytes)) => bytes,
        Ok(None) => return Ok(None),
        Err(source) => return Err(LocalStateError::Io { path: path.to_owned(), source }),
    };
    let mut parts = bytes.splitn(3, |&b| b == b'\n');
    let (Some(seq), Some(digest), Some(content)) = (parts.next(), parts.next(), parts.next()) else {
        return Ok(None);
    };
    let seq = std::str::from_utf8(seq).ok().and_then(|s| s.parse().ok());
    let valid = hex(&Sha256::digest(content)).as_bytes() == digest;
    Ok(seq.filter(|_| valid).map(|seq| (seq, content.to_vec())))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The newest valid record at `path`: `None` if it was never written.
pub fn load_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, LocalStateError> {
    let slots = [read_slot(&slot(path, 0))?, read_slot(&slot(path, 1))?];
    let exists = [0, 1].iter().any(|&n| std::fs::symlink_metadata(slot(path, n)).is_ok());
    let newest = slots.into_iter().flatten().max_by_key(|(seq, _)| *seq);
    match newest {
        Some((_, content)) => serde_json::from_slice(&content).map(Some).map_err(|_| LocalStateError::Corrupt { path: path.to_owned() }),
        None if exists => Err(LocalStateError::Corrupt { path: path.to_owned() }),
        None => Ok(None),
    }
}

/// Writes records at one path, remembering which slot to overwrite: after the first two
/// writes, a write opens an existing file (no inode is created), writes and truncates it
/// (plus an fsync when durable). Files are not kept open, so ten thousand units need no
/// more file descriptors than one.
#[derive(Debug, Clone)]
pub struct RecordWriter {
    path: PathBuf,
    next_seq: u64,
    target: usize,
}

impl RecordWriter {
    /// A writer continuing the records at `path`.
    pub fn open(path: &Path) -> Result<Self, LocalStateError> {
        let seqs = [read_slot(&slot(path, 0))?, read_slot(&slot(path, 1))?].map(|s| s.map(|(seq, _)| seq));
        let next_seq = seqs.iter().flatten().max().map_or(1, |seq| seq + 1);
        // Overwrite the older (or missing, or invalid) slot; the newer one stays intact.
        let target = match seqs {
            [Some(a), Some(b)] => usize::from(a > b),
            [Some(_), None] => 1,
            _ => 0,
        };
        Ok(Self { path: path.to_owned(), next_seq, target })
    }

    /// Writes `value` as the newest record; `durable` also fsyncs it.
    pub fn write(&mut self, value: &impl Serialize, durable: bool) -> Result<(), LocalStateError> {
        use std::os::unix::fs::FileExt;
        let slot_path = slot(&self.path, self.target as u8);
        let io = |source| LocalStateError::Io { path: slot_path.clone(), source };
        let content = serde_json::to_vec_pretty(value).map_err(|e| io(std::io::Error::other(e)))?;
        let mut record = format!("{}\n{}\n", self.next_seq, hex(&Sha256::digest(&content))).into_bytes();
        record.extend_from_slice(&content);
        // 0600 and never through a link: a planted link must not redirect the write.
        let file = crate::state_dir::open_private_file(&slot_path, std::fs::OpenOptions::new().create(true).write(true).truncate(false))
            .map_err(io)?;
        file.write_all_at(&record, 0).map_err(io)?;
        file.set_len(record.len() as u64).map_err(io)?;
        if durable {
            file.sync_all().map_err(io)?;
        }
        self.next_seq += 1;
        self.target = 1 - self.target;
        Ok(())
    }
}

/// Writes `value` as the newest record at `path`; `durable` also fsyncs it.
pub fn save_json(path: &Path, value: &impl Serialize, durable: bool) -> Result<(), LocalStateError> {
    RecordWriter::open(path)?.write(value, durable)
}

/// Reads the state at `path`; never written is a unit that never ran.
pub fn load(path: &Path) -> Result<LocalState, LocalStateError> {
    Ok(load_json(path)?.unwrap_or_default())
}

/// True if what changed from `previous` to `state` must survive power loss (install done, a
/// tenure's `leader-elected` done): such a change is written at once and fsynced.
pub fn must_be_durable(state: &LocalState, previous: &LocalState) -> bool {
    state.installed != previous.installed || state.last_elected_term != previous.last_elected_term
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn survives_a_torn_slot_and_keeps_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent");
        assert_eq!(load(&path).unwrap(), LocalState::default());
        for term in 1..=5 {
            let state = LocalState { installed: true, last_elected_term: Some(term), settings_version_seen: None };
            save_json(&path, &state, false).unwrap();
            assert_eq!(load(&path).unwrap(), state);
        }
        // Tear the newest slot: the previous record is read.
        let newest = if read_slot(&slot(&path, 0)).unwrap().unwrap().0 == 5 { slot(&path, 0) } else { slot(&path, 1) };
        let bytes = std::fs::read(&newest).unwrap();
        std::fs::write(&newest, &bytes[..bytes.len() / 2]).unwrap();
        assert_eq!(load(&path).unwrap().last_elected_term, Some(4));
        // The next write goes to the torn slot and becomes the newest.
        let state = LocalState { installed: true, last_elected_term: Some(6), settings_version_seen: Some(1) };
        save_json(&path, &state, true).unwrap();
        assert_eq!(load(&path).unwrap(), state);
        // Both slots torn: a clear error, not a fresh unit.
        std::fs::write(slot(&path, 0), b"garbage").unwrap();
        std::fs::write(slot(&path, 1), b"garbage").unwrap();
        assert!(matches!(load(&path), Err(LocalStateError::Corrupt { .. })));
    }
}
