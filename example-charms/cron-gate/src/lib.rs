//! Crontab gating: every unit carries the same maintenance crontab, and the job runs only
//! on the leader.
//!
//! On `install`, `leader-elected`, `leader-settings-changed` and `leader-deposed` the charm
//! (re)writes `etc/cron.d/<app>-maintenance` in its unit data directory. The file is
//! identical on every unit except one line, `IS_LEADER=1` on the leader and `IS_LEADER=0`
//! elsewhere, and its job line runs the maintenance command only when `IS_LEADER` is 1,
//! so whoever logs into any unit sees what runs where. The file is replaced atomically and
//! only when its content changes.
//!
//! `update-status` (every 5 minutes by default) checks the file against leadership as it
//! stands and rewrites it if it drifted: a file an operator edited or deleted, or one a
//! leader wrote while it could not verify its leadership, is wrong for at most one period.

use charm_sdk::{Charm, LogLevel, Result, WorkloadStatus};

/// What the job runs on the leader.
const MAINTENANCE_COMMAND: &str = "/usr/local/bin/maintenance";

/// The crontab for `app`; `leader` decides the one line that differs between units.
fn crontab(app: &str, leader: bool) -> String {
    format!(
        "# Managed by the {app} charm. Identical on every unit but for IS_LEADER:\n\
         # the job below runs only where IS_LEADER=1, i.e. on the application's leader.\n\
         IS_LEADER={}\n\
         */5 * * * * root [ \"$IS_LEADER\" = 1 ] && {MAINTENANCE_COMMAND}\n",
        u8::from(leader)
    )
}

/// Writes the crontab if it changed, atomically (write a temporary file, then rename).
fn write_crontab(leader: bool) -> Result<()> {
    let app = charm_sdk::application_name();
    let dir = charm_sdk::data_dir().join("etc/cron.d");
    let path = dir.join(format!("{app}-maintenance"));
    let content = crontab(&app, leader);
    if std::fs::read_to_string(&path).is_ok_and(|current| current == content) {
        return Ok(());
    }
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, &content).map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, &path).map_err(|e| format!("cannot replace {}: {e}", path.display()))?;
    charm_sdk::log(LogLevel::Info, &format!("{}: IS_LEADER={}", path.display(), u8::from(leader)));
    let message = if leader { "maintenance runs here" } else { "maintenance runs on the leader" };
    charm_sdk::status_set(WorkloadStatus::Active, message);
    Ok(())
}

/// Leadership as the hook can verify it now; when it cannot be verified, not leader.
fn leading() -> bool {
    charm_sdk::is_leader().unwrap_or(false)
}

struct CronGate;

impl Charm for CronGate {
    fn install() -> Result<()> {
        write_crontab(leading())
    }

    fn leader_elected() -> Result<()> {
        write_crontab(leading())
    }

    fn leader_settings_changed() -> Result<()> {
        write_crontab(leading())
    }

    fn leader_deposed() -> Result<()> {
        write_crontab(false)
    }

    fn update_status() -> Result<()> {
        write_crontab(leading())
    }
}

charm_sdk::export_charm!(CronGate);

#[cfg(test)]
mod tests;
