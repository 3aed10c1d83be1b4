//! A singleton service: a long-running process that must run on exactly one unit at once.
//!
//! The operator configures a leader-only service named `singleton` for each agent (e.g.
//! `--leader-service 'singleton=exec /usr/bin/my-daemon'`). The charm starts it in
//! `leader-elected`, stops it in `leader-deposed` and `stop`, and reports it in its
//! workload status. The charm's calls are the polite half: the host itself stops a
//! leader-only service before the unit's leadership guarantee can lapse, even if a hook
//! hangs or never runs, and the service dies with its agent.

use charm_sdk::{Charm, Error, Result, WorkloadStatus, services};

const SERVICE: &str = "singleton";

/// Reports where the singleton runs.
fn report() -> Result<()> {
    match services::status(SERVICE) {
        Ok(status) if status.running => {
            let pid = status.pid.map_or_else(String::new, |pid| format!(" (pid {pid})"));
            charm_sdk::status_set(WorkloadStatus::Active, &format!("{SERVICE} running{pid}"));
        }
        Ok(_) => charm_sdk::status_set(WorkloadStatus::Active, &format!("standby: {SERVICE} runs on the leader")),
        Err(Error::Service(reason)) => charm_sdk::status_set(WorkloadStatus::Blocked, &reason),
        Err(err) => return Err(err),
    }
    Ok(())
}

struct SingletonService;

impl Charm for SingletonService {
    fn install() -> Result<()> {
        report()
    }

    fn leader_elected() -> Result<()> {
        match services::start(SERVICE) {
            // Leadership was lost before the hook could start it: the deposed hook follows.
            Ok(()) | Err(Error::NotLeader) => report(),
            // Not configured by the operator: say so, and do not retry forever.
            Err(Error::Service(reason)) => {
                charm_sdk::status_set(WorkloadStatus::Blocked, &reason);
                Ok(())
            }
            Err(err) => Err(err),
        }
    }

    fn leader_settings_changed() -> Result<()> {
        report()
    }

    fn leader_deposed() -> Result<()> {
        stop_quietly()?;
        report()
    }

    fn stop() -> Result<()> {
        stop_quietly()
    }
}

/// Stops the service; a missing configuration is nothing to stop.
fn stop_quietly() -> Result<()> {
    match services::stop(SERVICE) {
        Ok(()) | Err(Error::Service(_)) => Ok(()),
        Err(err) => Err(err),
    }
}

charm_sdk::export_charm!(SingletonService);

#[cfg(test)]
mod tests;
