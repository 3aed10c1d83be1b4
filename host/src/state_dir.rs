//! The layout of a state directory (`--state DIR`), in one place:
//!
//! ```text
//! DIR/state.db                      leases, terms, pins, leader settings (SQLite)
//! DIR/units/<app>-<n>/data/         the unit's charm data, the hooks' only filesystem
//! DIR/units/<app>-<n>/agent.{0,1}   what the unit's agent remembers across restarts
//! DIR/units/<app>-<n>/status.{0,1}  the unit's last reported status
//! DIR/units/<app>-<n>/agent.sock    where its agent answers hook tools
//! DIR/units/<app>-<n>/agent.lock    held (flock) by the unit's one running agent
//! ```
//!
//! Invariants, for every command that writes here:
//! - **Private.** Directories are 0700 and files 0600 whatever the umask (leader settings
//!   hold secrets); a directory this user owns but left open to others is tightened.
//! - **Not another user's.** A state directory owned by another user, or writable by
//!   group or others, is refused: whoever controls it could plant links or files.
//! - **On a local filesystem.** One on NFS, CIFS, 9p and the like is refused: file locks
//!   there (SQLite's, and the units') do not keep agents on two machines apart.
//! - **Links are not followed** inside it: record files are opened with `O_NOFOLLOW`, and
//!   a directory below the root that is a link is refused.
//! - **One agent per unit.** An agent holds an exclusive `flock` on its unit's lock file
//!   for its whole life; the kernel drops it when the process dies, however it dies. Every
//!   path that starts a unit takes it (`charm-host agent` and `run`, [`crate::Host`]'s
//!   agents and applications, `TestApp`), also a second start in the same process. The
//!   lock is the proof a restarted agent needs to end its unit's previous tenure at once
//!   ([`crate::leadership::Origin::proves_gone`]); it sees only this directory, so the same
//!   unit started elsewhere is kept out by its incarnation instead.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{Read as _, Seek as _, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use crate::names::UnitName;

/// Why a state directory cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateDirError {
    /// A file or directory could not be created, read or changed.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A directory of it could not be created (its parent is missing, say).
    #[error("cannot create the state directory {path}: {source}")]
    Create {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Another user owns it.
    #[error(
        "{path} is owned by uid {owner}, not by this user (uid {me}): refusing a state directory another user controls"
    )]
    ForeignOwner {
        /// The directory.
        path: PathBuf,
        /// Its owner.
        owner: u32,
        /// This process's effective uid.
        me: u32,
    },
    /// Group or others may write to it.
    #[error("{path} is writable by other users (mode {mode:o}): refusing it (make it private: chmod 700)")]
    OpenToOthers {
        /// The directory.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// It is on a network filesystem, where SQLite's locks and the unit locks do not hold
    /// across machines.
    #[error(
        "{path} is on a network filesystem ({kind}): file locks there do not keep agents on two machines apart. \
         Keep the state directory on a local disk (and share leadership across machines with --store etcd://...)"
    )]
    NetworkFilesystem {
        /// The directory.
        path: PathBuf,
        /// Which filesystem.
        kind: &'static str,
    },
    /// A directory of the layout is a link or not a directory.
    #[error("{path} is a symbolic link or not a directory: refusing to follow it")]
    NotADirectory {
        /// The path.
        path: PathBuf,
    },
    /// Another agent runs the unit.
    #[error(
        "{}",
        match pid {
            Some(pid) if *pid == std::process::id() => format!("{unit} already runs in this process (its agent holds {})", path.display()),
            Some(pid) => format!("another agent already runs {unit} as pid {pid} (it holds {})", path.display()),
            None => format!("another agent already runs {unit} (it holds {})", path.display()),
        }
    )]
    Locked {
        /// The unit.
        unit: UnitName,
        /// The holder's pid, as it wrote it.
        pid: Option<u32>,
        /// The lock file.
        path: PathBuf,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StateDirError + '_ {
    move |source| StateDirError::Io { path: path.to_owned(), source }
}

/// Creates `path` and its missing parents, each 0700 whatever the umask (a unit's data
/// directory: the charm keeps its secrets there).
pub fn create_private_dirs(path: &Path) -> std::io::Result<()> {
    DirBuilder::new().recursive(true).mode(0o700).create(path)
}

/// Creates `path` (0700) if missing and checks it: a directory (a link only for the root),
/// owned by this user, not writable by others; tightened to 0700 if it was readable by them.
fn private_dir(path: &Path, follow: bool) -> Result<(), StateDirError> {
    match DirBuilder::new().mode(0o700).create(path) {
        Ok(()) => {}
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(source) => return Err(StateDirError::Create { path: path.to_owned(), source }),
    }
    let meta = if follow { std::fs::metadata(path) } else { std::fs::symlink_metadata(path) }.map_err(io(path))?;
    if !meta.is_dir() {
        return Err(StateDirError::NotADirectory { path: path.to_owned() });
    }
    let me = rustix::process::geteuid().as_raw();
    if meta.uid() != me {
        return Err(StateDirError::ForeignOwner { path: path.to_owned(), owner: meta.uid(), me });
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(StateDirError::OpenToOthers { path: path.to_owned(), mode });
    }
    if mode & 0o077 != 0 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700)).map_err(io(path))?;
    }
    Ok(())
}

/// Refuses a directory on a network filesystem: SQLite's locking breaks there (SQLite's own
/// FAQ), and a unit's lock would not see an agent on another machine.
fn local_filesystem(path: &Path) -> Result<(), StateDirError> {
    const NETWORK: [(i64, &str); 8] = [
        (0x6969, "NFS"),
        (0xFF53_4D42, "CIFS"),
        (0xFE53_4D42, "SMB2"),
        (0x517B, "SMB"),
        (0x0102_1997, "9p"),
        (0x5346_414F, "AFS"),
        (0x00C3_6400, "Ceph"),
        (0x0116_1970, "GFS2"),
    ];
    let stat = rustix::fs::statfs(path).map_err(|e| StateDirError::Io { path: path.to_owned(), source: e.into() })?;
    #[allow(clippy::unnecessary_cast)] // the field's type differs between libcs
    let kind = stat.f_type as i64;
    match NETWORK.iter().find(|(magic, _)| *magic == kind) {
        Some((_, name)) => Err(StateDirError::NetworkFilesystem { path: path.to_owned(), kind: name }),
        None => Ok(()),
    }
}

/// Opens a file of the state directory for writing: created 0600, never through a link.
pub fn open_private_file(path: &Path, options: &mut OpenOptions) -> std::io::Result<File> {
    options.mode(0o600).custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32).open(path)
}

/// Reads a file of the state directory, never through a link; `None` if it does not exist.
pub fn read_private_file(path: &Path) -> std::io::Result<Option<Vec<u8>>> {
    let mut file =
        match OpenOptions::new().read(true).custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32).open(path) {
            Ok(file) => file,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(err) => return Err(err),
        };
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    Ok(Some(bytes))
}

/// Proof that this process is the one agent of a unit: an exclusive `flock` held until
/// dropped (or until the process dies).
#[derive(Debug)]
pub struct UnitLock {
    _file: File,
    root: PathBuf,
}

impl UnitLock {
    /// The state directory whose unit this lock is of.
    pub fn state_dir(&self) -> &Path {
        &self.root
    }
}

/// Paths inside one state directory.
#[derive(Debug, Clone)]
pub struct StateDir {
    root: PathBuf,
}

impl StateDir {
    /// The layout under `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The SQLite store.
    pub fn store(&self) -> PathBuf {
        self.root.join("state.db")
    }

    /// Everything of one unit.
    pub fn unit_dir(&self, unit: &UnitName) -> PathBuf {
        self.root.join("units").join(format!("{}-{}", unit.app(), unit.number()))
    }

    /// The unit's charm data directory.
    pub fn data_dir(&self, unit: &UnitName) -> PathBuf {
        self.unit_dir(unit).join("data")
    }

    /// The unit agent's local state (two slot files, so a torn write never loses it).
    pub fn agent_state(&self, unit: &UnitName) -> PathBuf {
        self.unit_dir(unit).join("agent")
    }

    /// The unit's last reported status (two slot files, like the agent state).
    pub fn status_file(&self, unit: &UnitName) -> PathBuf {
        self.unit_dir(unit).join("status")
    }

    /// The unit's record of the tenures it believed in (JSON lines: each start, renewal and end).
    pub fn tenure_record(&self, unit: &UnitName) -> PathBuf {
        self.unit_dir(unit).join("tenures.jsonl")
    }

    /// The unit agent's hook-tool socket.
    pub fn socket(&self, unit: &UnitName) -> PathBuf {
        self.unit_dir(unit).join("agent.sock")
    }

    /// The file the unit's running agent holds locked.
    pub fn lock_file(&self, unit: &UnitName) -> PathBuf {
        self.unit_dir(unit).join("agent.lock")
    }

    /// Creates the state directory if missing and checks that it is private and on a local
    /// filesystem (see the module docs).
    pub fn prepare(&self) -> Result<(), StateDirError> {
        private_dir(&self.root, true)?;
        local_filesystem(&self.root)
    }

    /// [`Self::prepare`], then the same for `unit`'s directories.
    pub fn prepare_unit(&self, unit: &UnitName) -> Result<(), StateDirError> {
        self.prepare()?;
        for dir in [self.root.join("units"), self.unit_dir(unit), self.data_dir(unit)] {
            private_dir(&dir, false)?;
        }
        Ok(())
    }

    /// Takes `unit`'s agent lock, or says which process holds it. Call
    /// [`Self::prepare_unit`] first.
    pub fn lock_unit(&self, unit: &UnitName) -> Result<UnitLock, StateDirError> {
        let path = self.lock_file(unit);
        let mut file =
            open_private_file(&path, OpenOptions::new().read(true).write(true).create(true)).map_err(io(&path))?;
        match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(rustix::io::Errno::WOULDBLOCK) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                return Err(StateDirError::Locked { unit: unit.clone(), pid: text.trim().parse().ok(), path });
            }
            Err(err) => return Err(StateDirError::Io { path, source: err.into() }),
        }
        let pid = std::process::id().to_string();
        file.set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| file.write_all(pid.as_bytes()))
            .map_err(io(&path))?;
        Ok(UnitLock { _file: file, root: self.root.clone() })
    }

    /// Whether an agent ever ran a unit here: it took the unit's lock (the lock file stays
    /// after it). True when the units cannot be listed (the safe answer: a store missing
    /// here may then have been lost under running agents).
    pub fn any_unit_ran(&self) -> bool {
        self.units().map_or(true, |units| units.iter().any(|unit| self.lock_file(unit).exists()))
    }

    /// Every unit that has a directory here, sorted.
    pub fn units(&self) -> std::io::Result<Vec<UnitName>> {
        let dir = self.root.join("units");
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(err) => return Err(err),
        };
        let mut units = Vec::new();
        for entry in entries {
            let name = entry?.file_name();
            let Some(name) = name.to_str() else { continue };
            if let Some((app, number)) = name.rsplit_once('-')
                && let Ok(unit) = UnitName::new(&format!("{app}/{number}"))
            {
                units.push(unit);
            }
        }
        units.sort();
        Ok(units)
    }
}
