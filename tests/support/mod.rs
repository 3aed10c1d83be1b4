//! Shared set-up of the black-box tests: `charm-host agent` processes on a temporary state
//! directory, killed when the test ends however it ends, and the hook tools that ask them.

#![allow(dead_code)]

pub mod etcd;
pub mod metrics;
pub mod proxy;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_charm-host");

pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("host/ has a parent").to_owned()
}

/// Agents started by a test; all are killed when it ends, however it ends.
pub struct Agents {
    pub state: tempfile::TempDir,
    pub cache: tempfile::TempDir,
    /// Agents' logs, kept outside the state directory (which must stay private).
    pub logs: tempfile::TempDir,
    pub children: Vec<(String, Child)>,
}

impl Drop for Agents {
    fn drop(&mut self) {
        for (_, child) in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Agents {
    pub fn new() -> Self {
        Self {
            state: tempfile::tempdir().unwrap(),
            cache: tempfile::tempdir().unwrap(),
            logs: tempfile::tempdir().unwrap(),
            children: Vec::new(),
        }
    }

    /// A shared-settings agent `db/0`, started and leading.
    pub fn leader() -> Self {
        let mut agents = Self::new();
        agents.start("example-charms/shared-settings", "db/0");
        agents.wait_leader("db/0", true, Duration::from_secs(60));
        agents
    }

    /// shared-settings agents `db/0`, started first and leading, and `db/1`, a minion.
    pub fn leader_and_minion() -> Self {
        let mut agents = Self::leader();
        agents.start("example-charms/shared-settings", "db/1");
        agents.wait_leader("db/1", false, Duration::from_secs(60));
        agents
    }

    pub fn state(&self) -> &str {
        self.state.path().to_str().unwrap()
    }

    /// Starts an agent for `unit` of the charm crate `charm` with a 2 s guarantee window.
    pub fn start(&mut self, charm: &str, unit: &str) {
        self.start_with(charm, unit, &[]);
    }

    /// Starts an agent like [`Self::start`], with more arguments.
    pub fn start_with(&mut self, charm: &str, unit: &str, extra: &[&str]) {
        let command = self.agent_command(charm, unit, extra);
        self.spawn(unit, command);
    }

    /// The command line of an agent for `unit` (2 s guarantee window unless `extra` says
    /// otherwise; JSON log), not started.
    pub fn agent_command(&self, charm: &str, unit: &str, extra: &[&str]) -> Command {
        let mut command = Command::new(BIN);
        command
            .args(["agent", charm, "--unit", unit, "--state", self.state(), "--json"])
            .args(if extra.contains(&"--guarantee-window") { &[][..] } else { &["--guarantee-window", "2s"][..] })
            .args(extra)
            .arg("--cache-dir")
            .arg(self.cache.path())
            .current_dir(workspace());
        command
    }

    /// The log file of `unit`'s agent (outside the state directory).
    pub fn log_path(&self, unit: &str) -> PathBuf {
        self.logs.path().join(format!("{}.log", unit.replace('/', "-")))
    }

    /// Starts `command` as `unit`'s agent, its stdout going to the unit's log.
    pub fn spawn(&mut self, unit: &str, mut command: Command) {
        let log = std::fs::File::create(self.log_path(unit)).unwrap();
        let child = command.stdout(log).stderr(Stdio::null()).spawn().unwrap();
        self.children.push((unit.to_owned(), child));
    }

    /// The pid of `unit`'s agent.
    pub fn pid(&self, unit: &str) -> u32 {
        self.children.iter().find(|(u, _)| u == unit).unwrap().1.id()
    }

    /// The JSON lines `unit`'s agent printed so far.
    pub fn log(&self, unit: &str) -> Vec<serde_json::Value> {
        json_lines(&self.log_path(unit))
    }

    pub fn signal(&mut self, unit: &str, signal: &str) {
        let (_, child) = self.children.iter_mut().find(|(u, _)| u == unit).unwrap();
        let status = Command::new("kill").args(["-s", signal, &child.id().to_string()]).status().unwrap();
        assert!(status.success());
        if signal == "KILL" {
            let _ = child.wait();
        }
    }

    pub fn wait_exit(&mut self, unit: &str) -> std::process::ExitStatus {
        let (_, child) = self.children.iter_mut().find(|(u, _)| u == unit).unwrap();
        child.wait().unwrap()
    }

    pub fn tool(&self, args: &[&str]) -> Output {
        Command::new(BIN).args(args).args(["--state", self.state()]).output().unwrap()
    }

    pub fn is_leader(&self, unit: &str) -> Option<bool> {
        leader_answer(&self.tool(&["is-leader", "--unit", unit]))
    }

    /// Waits up to `limit` for `unit` to answer `is-leader` with `want`; returns when.
    pub fn wait_leader(&self, unit: &str, want: bool, limit: Duration) -> Instant {
        let start = Instant::now();
        while start.elapsed() < limit {
            if self.is_leader(unit) == Some(want) {
                return Instant::now();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("{unit} did not answer is-leader={want} within {limit:?}");
    }

    pub fn hooks(&self, unit: &str) -> Vec<String> {
        hooks_in(&self.log(unit))
    }
}

/// The JSON lines of an agent's log file so far.
pub fn json_lines(path: &Path) -> Vec<serde_json::Value> {
    let log = std::fs::read_to_string(path).unwrap_or_default();
    log.lines().filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()).collect()
}

/// The hooks a JSON log shows finished, in order.
pub fn hooks_in(log: &[serde_json::Value]) -> Vec<String> {
    log.iter().filter(|v| v["type"] == "hook").map(|v| v["hook"].as_str().unwrap_or_default().to_owned()).collect()
}

/// What an `is-leader` run answered: `None` if it could not tell (or failed).
pub fn leader_answer(out: &Output) -> Option<bool> {
    match (out.status.code(), String::from_utf8_lossy(&out.stdout).trim()) {
        (Some(0), "True") => Some(true),
        (Some(0), "False") => Some(false),
        _ => None,
    }
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Waits (up to a minute) for `check`.
pub fn wait_for(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..3000 {
        if check() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("never happened: {what}");
}

/// Runs `work` to completion on a runtime of this thread: store calls from a plain `#[test]`.
pub fn block_on<F: std::future::Future>(work: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a tokio runtime").block_on(work)
}
