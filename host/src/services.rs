//! Operator-configured services a charm may start and stop by name, and the host's
//! guarantee that a leader-only service never outlives its unit's leadership.
//!
//! Invariants:
//! - Only configured names can be started; a charm cannot name a command.
//! - A leader-only service is started only while the unit's tracker guarantees
//!   leadership, and the unit's agent stops it (SIGTERM to its process group, SIGKILL
//!   after the grace period) as soon as the guarantee is given up, before the lease can
//!   pass to another unit, whatever the hooks do.
//! - Each service runs in its own process group with a parent-death signal (SIGKILL), so
//!   an agent that dies takes its services with it. Commands should not detach from their
//!   process group (a double-forked daemon escapes any supervisor).
//! - Output goes to the unit's log, line by line.
//! - A [simulated](ServiceSupervisor::simulated) supervisor (for tests in virtual time)
//!   keeps every rule above but starts no process: a service gets a made-up pid and exits
//!   the moment it is signalled, so its timing is exact.

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rustix::process::{Pid, Signal};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::watch;

use crate::events::LogLevel;
use crate::names::UnitName;
use crate::reporter::UnitReporter;
use crate::timing::{self, InvalidDuration};

/// One service the operator allows a unit's charm to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceConfig {
    /// The name the charm uses.
    pub name: String,
    /// The command, run by `sh -c`.
    pub command: String,
    /// Runs only while the unit is leader.
    pub leader_only: bool,
}

impl ServiceConfig {
    /// Parses `NAME=COMMAND`.
    pub fn parse(spec: &str, leader_only: bool) -> Result<Self, String> {
        let (name, command) = spec.split_once('=').ok_or_else(|| format!("expected NAME=COMMAND, got {spec:?}"))?;
        let valid_name = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !valid_name {
            return Err(format!("service name {name:?} must be letters, digits, '-' or '_'"));
        }
        if command.trim().is_empty() {
            return Err(format!("service {name} has an empty command"));
        }
        Ok(Self { name: name.to_owned(), command: command.to_owned(), leader_only })
    }
}

/// The services a unit's charm may start, and how long a stopping one gets between SIGTERM
/// and SIGKILL: checked once, when it is made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicesConfig {
    services: Vec<ServiceConfig>,
    grace: Duration,
    simulated: bool,
}

impl Default for ServicesConfig {
    /// No services, the default grace.
    fn default() -> Self {
        Self { services: Vec::new(), grace: timing::DEFAULT_SERVICE_GRACE, simulated: false }
    }
}

impl ServicesConfig {
    /// `services`, each stopped with `grace` between SIGTERM and SIGKILL (checked against
    /// [`timing::SERVICE_GRACE`]).
    pub fn new(services: Vec<ServiceConfig>, grace: Duration) -> Result<Self, InvalidDuration> {
        timing::SERVICE_GRACE.check(grace)?;
        Ok(Self { services, grace, simulated: false })
    }

    /// The same services, simulated (see [`ServiceSupervisor::simulated`]), for tests in
    /// virtual time.
    pub fn simulated(mut self) -> Self {
        self.simulated = true;
        self
    }

    /// The services.
    pub fn services(&self) -> &[ServiceConfig] {
        &self.services
    }

    /// How long a stopping service gets between SIGTERM and SIGKILL.
    pub fn grace(&self) -> Duration {
        self.grace
    }
}

/// What the host knows of one service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceStatus {
    /// Its name.
    pub name: String,
    /// Whether its process runs.
    pub running: bool,
    /// Its process id while it runs.
    pub pid: Option<u32>,
    /// Whether it runs only while the unit leads.
    pub leader_only: bool,
}

/// Why a service call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError {
    /// No such service is configured for the unit.
    #[error("no service named {0:?} is configured for this unit")]
    Unknown(String),
    /// The service is leader-only and the unit is not the leader.
    #[error("the service is leader-only and this unit is not the leader")]
    NotLeader,
    /// The process could not be started or signalled.
    #[error("{0}")]
    Failed(String),
}

struct Running {
    pid: u32,
    exited: watch::Receiver<bool>,
    /// For a simulated process: what makes it exit when it is signalled.
    simulated: Option<watch::Sender<bool>>,
}

/// The services of one unit.
pub struct ServiceSupervisor {
    unit: UnitName,
    /// Where its log lines go, as the unit's.
    reporter: Arc<UnitReporter>,
    configs: Vec<ServiceConfig>,
    grace: Duration,
    running: Mutex<HashMap<String, Running>>,
    /// The next made-up pid, for a simulated supervisor; `None` for real processes.
    simulated_pids: Option<std::sync::atomic::AtomicU32>,
}

impl std::fmt::Debug for ServiceSupervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceSupervisor").field("unit", &self.unit).field("configs", &self.configs).finish()
    }
}

impl ServiceSupervisor {
    /// A supervisor for the `configs` of the unit `reporter` reports on; a stop waits
    /// `grace` before SIGKILL.
    pub fn new(reporter: Arc<UnitReporter>, configs: Vec<ServiceConfig>, grace: Duration) -> Self {
        let unit = reporter.name().clone();
        Self { unit, reporter, configs, grace, running: Mutex::new(HashMap::new()), simulated_pids: None }
    }

    /// A supervisor like [`Self::new`] whose services are simulated: no process starts; a
    /// started service gets a made-up pid and exits as soon as it is signalled.
    pub fn simulated(reporter: Arc<UnitReporter>, configs: Vec<ServiceConfig>, grace: Duration) -> Self {
        Self { simulated_pids: Some(std::sync::atomic::AtomicU32::new(10_000)), ..Self::new(reporter, configs, grace) }
    }

    /// The supervisor `config` describes, for the unit `reporter` reports on.
    pub fn from_config(reporter: Arc<UnitReporter>, config: &ServicesConfig) -> Self {
        let configs = config.services.clone();
        if config.simulated {
            Self::simulated(reporter, configs, config.grace)
        } else {
            Self::new(reporter, configs, config.grace)
        }
    }

    /// Sends `signal` to the service whose process is `running`: a simulated one exits.
    fn signal(&self, running: &Running, signal: Signal) {
        match &running.simulated {
            Some(exit) => {
                if !exit.send_replace(true) {
                    self.log(LogLevel::Info, format!("service (pid {}) exited: {signal:?}", running.pid));
                }
            }
            None => signal_group(running.pid, signal),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Running>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn config(&self, name: &str) -> Result<&ServiceConfig, ServiceError> {
        self.configs.iter().find(|c| c.name == name).ok_or_else(|| ServiceError::Unknown(name.to_owned()))
    }

    fn log(&self, level: LogLevel, message: String) {
        self.reporter.log(level, message);
    }

    /// The pid of `name` if it runs.
    fn running_pid(&self, name: &str) -> Option<u32> {
        self.lock().get(name).filter(|r| !*r.exited.borrow()).map(|r| r.pid)
    }

    /// Starts `name` (doing nothing if it runs); `is_leader` is asked for leader-only ones.
    /// Must be called within a tokio runtime.
    ///
    /// Leadership is checked and the process started under the lock that
    /// [`Self::stop_and_wait`] takes to see what runs: a stop that follows the loss of the
    /// guarantee either sees this service or this call sees the guarantee gone.
    pub fn start(&self, name: &str, is_leader: impl FnOnce() -> bool) -> Result<(), ServiceError> {
        let config = self.config(name)?;
        let mut running = self.lock();
        if config.leader_only && !is_leader() {
            return Err(ServiceError::NotLeader);
        }
        if running.get(name).is_some_and(|r| !*r.exited.borrow()) {
            return Ok(());
        }
        if let Some(pids) = &self.simulated_pids {
            let pid = pids.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let (exit, exited) = watch::channel(false);
            running.insert(name.to_owned(), Running { pid, exited, simulated: Some(exit) });
            drop(running);
            self.log(LogLevel::Info, format!("service {name} started (pid {pid}, simulated)"));
            return Ok(());
        }
        let parent = rustix::process::getpid();
        let mut command = tokio::process::Command::new("sh");
        command
            .arg("-c")
            .arg(&config.command)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        // SAFETY: the closure only makes two system calls (prctl and getppid), which are
        // async-signal-safe, and touches no memory shared with the parent.
        unsafe {
            command.pre_exec(move || {
                rustix::process::set_parent_process_death_signal(Some(Signal::KILL))?;
                // The parent may have died before the signal was armed.
                if rustix::process::getppid() != Some(parent) {
                    return Err(std::io::Error::other("the agent exited"));
                }
                Ok(())
            });
        }
        let mut child = command.spawn().map_err(|e| ServiceError::Failed(format!("cannot start {name}: {e}")))?;
        let pid = child.id().ok_or_else(|| ServiceError::Failed(format!("{name} exited at once")))?;
        let (exited_tx, exited) = watch::channel(false);
        running.insert(name.to_owned(), Running { pid, exited, simulated: None });
        drop(running);
        self.log(LogLevel::Info, format!("service {name} started (pid {pid})"));
        if let Some(stdout) = child.stdout.take() {
            tokio::spawn(pump(stdout, self.reporter.clone(), name.to_owned(), LogLevel::Info));
        }
        if let Some(stderr) = child.stderr.take() {
            tokio::spawn(pump(stderr, self.reporter.clone(), name.to_owned(), LogLevel::Warning));
        }
        let (reporter, name) = (self.reporter.clone(), name.to_owned());
        tokio::spawn(async move {
            let status = child.wait().await;
            exited_tx.send_replace(true);
            let message = match status {
                Ok(status) => format!("service {name} (pid {pid}) exited: {status}"),
                Err(err) => format!("service {name} (pid {pid}) could not be waited for: {err}"),
            };
            reporter.log(LogLevel::Info, message);
        });
        Ok(())
    }

    /// Asks `name` to stop: SIGTERM now, SIGKILL after the grace period if it still runs.
    /// Returns at once. Must be called within a tokio runtime.
    pub fn request_stop(&self, name: &str) -> Result<(), ServiceError> {
        self.config(name)?;
        let Some((pid, exited, simulated)) = self.lock().get(name).map(|r| {
            self.signal(r, Signal::TERM);
            (r.pid, r.exited.clone(), r.simulated.is_some())
        }) else {
            return Ok(());
        };
        if simulated {
            return Ok(());
        }
        let grace = self.grace;
        tokio::spawn(async move { kill_after(pid, exited, grace).await });
        Ok(())
    }

    /// Stops every service that `filter` selects and waits until they have exited: SIGTERM
    /// to all, then SIGKILL to those still running once `grace` has passed, one deadline for
    /// all of them; then at most [`KILL_WAIT`] for the kills to take effect.
    pub async fn stop_and_wait(&self, filter: impl Fn(&ServiceConfig) -> bool, grace: Duration) {
        let mut targets: Vec<(String, u32, watch::Receiver<bool>)> = {
            let running = self.lock();
            let targets: Vec<_> = self
                .configs
                .iter()
                .filter(|c| filter(c))
                .filter_map(|c| running.get(&c.name).map(|r| (c.name.clone(), r)))
                .filter(|(_, r)| !*r.exited.borrow())
                .collect();
            for (name, r) in &targets {
                self.log(LogLevel::Info, format!("stopping service {name} (pid {})", r.pid));
                self.signal(r, Signal::TERM);
            }
            targets.into_iter().map(|(name, r)| (name, r.pid, r.exited.clone())).collect()
        };
        let deadline = crate::timing::deadline_after(grace);
        for (_, _, exited) in &mut targets {
            let _ = tokio::time::timeout_at(deadline, exited.wait_for(|e| *e)).await;
        }
        let stubborn: Vec<_> = targets.into_iter().filter(|(_, _, exited)| !*exited.borrow()).collect();
        // A simulated service exits when signalled, and its made-up pid is nobody's to kill.
        if self.simulated_pids.is_some() {
            return;
        }
        for (_, pid, _) in &stubborn {
            signal_group(*pid, Signal::KILL);
        }
        let deadline = tokio::time::Instant::now() + KILL_WAIT;
        for (_, _, mut exited) in stubborn {
            let _ = tokio::time::timeout_at(deadline, exited.wait_for(|e| *e)).await;
        }
    }

    /// Stops the leader-only services and waits for them, within `grace` plus a SIGKILL.
    pub async fn stop_leader_only(&self, grace: Duration) {
        self.stop_and_wait(|c| c.leader_only, grace.min(self.grace)).await;
    }

    /// Stops every service and waits for them.
    pub async fn stop_all(&self) {
        self.stop_and_wait(|_| true, self.grace).await;
    }

    /// Kills every service at once (SIGKILL), as the death of the agent would.
    pub fn kill_all(&self) {
        for running in self.lock().values() {
            self.signal(running, Signal::KILL);
        }
    }

    /// The status of `name`.
    pub fn status(&self, name: &str) -> Result<ServiceStatus, ServiceError> {
        let config = self.config(name)?;
        let pid = self.running_pid(name);
        Ok(ServiceStatus { name: name.to_owned(), running: pid.is_some(), pid, leader_only: config.leader_only })
    }

    /// The status of every configured service.
    pub fn statuses(&self) -> Vec<ServiceStatus> {
        self.configs.iter().filter_map(|c| self.status(&c.name).ok()).collect()
    }
}

/// Signals the process group led by `pid` (each service leads its own group).
fn signal_group(pid: u32, signal: Signal) {
    if let Some(pid) = i32::try_from(pid).ok().and_then(Pid::from_raw) {
        // ESRCH only means it is already gone.
        let _ = rustix::process::kill_process_group(pid, signal);
    }
}

/// How long a stop waits for SIGKILLed services to be reaped.
pub const KILL_WAIT: Duration = Duration::from_secs(5);

/// Waits up to `grace` for the process to exit, then SIGKILLs its group and waits briefly.
async fn kill_after(pid: u32, mut exited: watch::Receiver<bool>, grace: Duration) {
    if tokio::time::timeout(grace, exited.wait_for(|e| *e)).await.is_err() {
        signal_group(pid, Signal::KILL);
        let _ = tokio::time::timeout(KILL_WAIT, exited.wait_for(|e| *e)).await;
    }
}

async fn pump(stream: impl AsyncRead + Unpin, reporter: Arc<UnitReporter>, name: String, level: LogLevel) {
    let mut lines = BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        reporter.log(level, format!("[{name}] {line}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::RecordingSink;
    use crate::leadership::MonotonicClock;

    fn reporter() -> Arc<UnitReporter> {
        Arc::new(UnitReporter::new(
            UnitName::new("app/0").unwrap(),
            Arc::new(RecordingSink::new()),
            Arc::new(MonotonicClock),
        ))
    }

    fn supervisor(configs: Vec<ServiceConfig>) -> ServiceSupervisor {
        ServiceSupervisor::new(reporter(), configs, Duration::from_millis(200))
    }

    #[test]
    fn parses_specs() {
        assert_eq!(
            ServiceConfig::parse("web=python3 -m http.server", false).unwrap(),
            ServiceConfig { name: "web".into(), command: "python3 -m http.server".into(), leader_only: false }
        );
        for bad in ["noequals", "=cmd", "bad name=x", "x=  "] {
            assert!(ServiceConfig::parse(bad, true).is_err(), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn starts_only_configured_names_and_leader_only_ones_only_when_leading() {
        let s = supervisor(vec![ServiceConfig::parse("solo=sleep 30", true).unwrap()]);
        assert_eq!(s.start("other", || true), Err(ServiceError::Unknown("other".into())));
        assert_eq!(s.start("solo", || false), Err(ServiceError::NotLeader));
        s.start("solo", || true).unwrap();
        let pid = s.status("solo").unwrap().pid.expect("runs");
        s.start("solo", || true).unwrap();
        assert_eq!(s.status("solo").unwrap().pid, Some(pid), "starting a running service does nothing");
        s.stop_leader_only(Duration::from_millis(100)).await;
        assert!(!s.status("solo").unwrap().running);
    }

    /// Services that ignore SIGTERM are killed together at one deadline, not one grace
    /// after another: their last ticks are close together, not a grace apart.
    #[tokio::test]
    async fn stubborn_services_share_one_deadline() {
        let dir = tempfile::tempdir().unwrap();
        let names = ["a", "b", "c"];
        let configs = names
            .iter()
            .map(|n| {
                let file = dir.path().join(n);
                let spec = format!(
                    "{n}=trap '' TERM; while true; do date +%s%N > {}.tmp; mv {0}.tmp {0}; sleep 0.02; done",
                    file.display()
                );
                ServiceConfig::parse(&spec, true).unwrap()
            })
            .collect();
        let grace = Duration::from_secs(2);
        let s = ServiceSupervisor::new(reporter(), configs, grace);
        for name in names {
            s.start(name, || true).unwrap();
        }
        for name in names {
            while !dir.path().join(name).exists() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        s.stop_leader_only(grace).await;
        let last: Vec<u128> = names
            .iter()
            .map(|n| std::fs::read_to_string(dir.path().join(n)).unwrap().trim().parse().unwrap())
            .collect();
        assert!(names.iter().all(|n| !s.status(n).unwrap().running));
        let spread = Duration::from_nanos((last.iter().max().unwrap() - last.iter().min().unwrap()) as u64);
        assert!(spread < grace / 2, "killed one grace after another: last ticks {spread:?} apart");
    }

    #[tokio::test]
    async fn a_service_ignoring_sigterm_is_killed_after_the_grace_period() {
        let s = supervisor(vec![
            ServiceConfig::parse("stubborn=trap '' TERM; while true; do sleep 0.05; done", false).unwrap(),
        ]);
        s.start("stubborn", || true).unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let start = std::time::Instant::now();
        s.stop_all().await;
        assert!(!s.status("stubborn").unwrap().running);
        assert!(start.elapsed() >= Duration::from_millis(200), "waited the grace period");
    }
}
