//! Unit incarnations: who exactly holds a tenure.
//!
//! A unit name says *which* unit; it cannot tell two running copies of it apart (a machine
//! re-provisioned while the old one still runs, a VM cloned or restored from a snapshot,
//! the same unit started twice by an embedder). So every start of a unit's agent is a new
//! [`Incarnation`]: a random id made at start and kept in memory only, with the [`Origin`]
//! it runs at (host name, pid, boot id, state directory).
//!
//! Invariants, for every store:
//! - **A tenure belongs to one incarnation.** The lease records the incarnation it was
//!   granted to; an extension, a fenced write and a revoke are applied only for that same
//!   incarnation, checked in the same atomic step. Another incarnation of the same unit is
//!   refused like any other unit ([`LeaseError::OtherIncarnation`](super::LeaseError)) and
//!   waits the tenure out.
//! - **Nothing outside memory names an incarnation as "mine".** A restarted agent is a new
//!   incarnation: it may end its unit's earlier tenure early only with proof that the old
//!   incarnation is gone ([`Origin::proves_gone`]); otherwise it waits like anyone else.
//!
//! Non-guarantee: the origin is what the holder said of itself. It is for messages and for
//! the takeover proof, which also needs the unit's lock in the same state directory.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::names::UnitName;

/// The random id of one start of a unit's agent: 128 bits, printed as 32 hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IncarnationId([u8; 16]);

impl IncarnationId {
    /// A new random id, from the operating system's random source.
    pub fn random() -> Self {
        let mut bytes = [0u8; 16];
        let mut filled = 0;
        while filled < bytes.len() {
            match rustix::rand::getrandom(&mut bytes[filled..], rustix::rand::GetRandomFlags::empty()) {
                Ok(n) => filled += n,
                Err(rustix::io::Errno::INTR) => {}
                // The kernel's random source does not fail once the machine has booted; if it
                // ever does, the clock and pid still make ids of one machine differ.
                Err(_) => {
                    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
                    let fallback = now.as_nanos() ^ (u128::from(std::process::id()) << 96);
                    bytes = fallback.to_be_bytes();
                    break;
                }
            }
        }
        Self(bytes)
    }

    /// The id written as 32 hex digits (as [`fmt::Display`] does) read back.
    pub fn parse(text: &str) -> Option<Self> {
        let value = (text.len() == 32 && text.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| u128::from_str_radix(text, 16).ok());
        value.flatten().map(|v| Self(v.to_be_bytes()))
    }

    /// The first 8 hex digits, enough to tell incarnations apart in a log line.
    pub fn short(&self) -> String {
        self.to_string()[..8].to_owned()
    }
}

impl fmt::Display for IncarnationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", u128::from_be_bytes(self.0))
    }
}

impl fmt::Debug for IncarnationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IncarnationId({self})")
    }
}

impl Serialize for IncarnationId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for IncarnationId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text).ok_or_else(|| serde::de::Error::custom("an incarnation id is 32 hex digits"))
    }
}

/// Where an incarnation runs, as it said when it started.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Origin {
    /// The machine's host name.
    pub host: String,
    /// The agent's process id.
    pub pid: u32,
    /// The machine's boot id (`/proc/sys/kernel/random/boot_id`): new at every boot, so a
    /// cloned or restored VM never shares it with the machine it was copied from.
    pub boot_id: String,
    /// The unit's state directory (its device and inode, `DEV:INO`), if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_dir: Option<String>,
}

impl Origin {
    /// This process, on this boot of this machine, with no state directory (read once per
    /// process: 10,000 units start without 10,000 reads of the boot id).
    pub fn this_process() -> Self {
        static THIS: std::sync::OnceLock<Origin> = std::sync::OnceLock::new();
        THIS.get_or_init(|| {
            let host = rustix::system::uname().nodename().to_string_lossy().into_owned();
            Self { host, pid: std::process::id(), boot_id: boot_id().unwrap_or_default(), state_dir: None }
        })
        .clone()
    }

    /// With the state directory `dir` (its device and inode, `DEV:INO`). Crate-private: an
    /// origin that names a state directory can prove a previous incarnation gone, so only
    /// the holder of the unit's lock makes one ([`crate::agent::AgentLock`]'s incarnation).
    pub(crate) fn in_state_dir(mut self, dir: &std::path::Path) -> std::io::Result<Self> {
        use std::os::unix::fs::MetadataExt as _;
        let meta = std::fs::metadata(dir)?;
        self.state_dir = Some(format!("{}:{}", meta.dev(), meta.ino()));
        Ok(self)
    }

    /// Whether an incarnation of `self`'s origin is certainly gone, judged by a new
    /// incarnation at `here` that holds the unit's lock in its state directory: the same
    /// boot of the same machine (a clone or a restored snapshot boots anew), the same state
    /// directory (whose lock the old incarnation held for its whole life, and lost only by
    /// ending), and a known boot id. Anything less is no proof.
    pub fn proves_gone(&self, here: &Origin) -> bool {
        !self.boot_id.is_empty()
            && self.boot_id == here.boot_id
            && self.host == here.host
            && self.state_dir.is_some()
            && self.state_dir == here.state_dir
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pid {} on {}", self.pid, if self.host.is_empty() { "an unnamed host" } else { &self.host })?;
        if let Some(dir) = &self.state_dir {
            write!(f, " (state directory {dir})")?;
        }
        Ok(())
    }
}

/// The machine's boot id, new at every boot.
pub fn boot_id() -> std::io::Result<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id").map(|s| s.trim().to_owned())
}

/// One start of a unit's agent: its id and where it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incarnation {
    /// The random id.
    pub id: IncarnationId,
    /// Where it runs.
    pub origin: Origin,
}

impl Incarnation {
    /// A new incarnation at `origin`.
    pub fn new(origin: Origin) -> Self {
        Self { id: IncarnationId::random(), origin }
    }
}

/// Who asks a store for a lease or a fenced write: a unit, in one incarnation. Cheap to
/// clone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimant {
    unit: UnitName,
    incarnation: Arc<Incarnation>,
}

impl Claimant {
    /// `unit` in `incarnation`.
    pub fn new(unit: UnitName, incarnation: Incarnation) -> Self {
        Self { unit, incarnation: Arc::new(incarnation) }
    }

    /// `unit` in a new incarnation of this process (no state directory): what a program
    /// that claims directly, and every test, uses.
    pub fn fresh(unit: UnitName) -> Self {
        Self::new(unit, Incarnation::new(Origin::this_process()))
    }

    /// The unit.
    pub fn unit(&self) -> &UnitName {
        &self.unit
    }

    /// The incarnation's id.
    pub fn id(&self) -> IncarnationId {
        self.incarnation.id
    }

    /// The incarnation.
    pub fn incarnation(&self) -> &Incarnation {
        &self.incarnation
    }

    /// The same unit as the incarnation `id` (at `origin`): what a takeover revokes with.
    pub fn former(&self, id: IncarnationId, origin: Origin) -> Self {
        Self { unit: self.unit.clone(), incarnation: Arc::new(Incarnation { id, origin }) }
    }
}

impl fmt::Display for Claimant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (incarnation {})", self.unit, self.incarnation.id.short())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_random_and_read_back() {
        let (a, b) = (IncarnationId::random(), IncarnationId::random());
        assert_ne!(a, b);
        assert_eq!(IncarnationId::parse(&a.to_string()), Some(a));
        assert_eq!(a.short().len(), 8);
        assert_eq!(IncarnationId::parse("xyz"), None);
        let json = serde_json::to_string(&a).unwrap();
        assert_eq!(serde_json::from_str::<IncarnationId>(&json).unwrap(), a);
    }

    #[test]
    fn only_the_same_boot_and_state_directory_prove_an_incarnation_gone() {
        let dir = tempfile::tempdir().unwrap();
        let other = tempfile::tempdir().unwrap();
        let here = Origin::this_process().in_state_dir(dir.path()).unwrap();
        let old = Origin { pid: 1, ..here.clone() };
        assert!(old.proves_gone(&here), "same boot, same state directory");
        let cloned = Origin { boot_id: "another-boot".into(), ..old.clone() };
        assert!(!cloned.proves_gone(&here), "a clone or restored VM boots anew");
        let elsewhere = Origin::this_process().in_state_dir(other.path()).unwrap();
        assert!(!elsewhere.proves_gone(&here), "another state directory is another lock");
        let no_dir = Origin::this_process();
        assert!(!no_dir.proves_gone(&here) && !here.proves_gone(&no_dir), "no state directory, no proof");
        let unknown = Origin { boot_id: String::new(), ..old };
        assert!(!unknown.proves_gone(&Origin { boot_id: String::new(), ..here }), "an unknown boot proves nothing");
    }
}
