//! Shared one-time configuration: the leader generates a cluster id and secret once and
//! writes them as one group; every unit reads them and reports the cluster it belongs to.
//!
//! - `install` and `leader-elected`: if this unit is leader and the settings are missing or
//!   invalid, create them and write them together.
//! - `leader-settings-changed` (and the end of `install`/`leader-elected`): read them; if
//!   they are not there yet, report `waiting` and succeed (the next
//!   `leader-settings-changed` will come); otherwise report `active` with the cluster id.

use charm_sdk::{Charm, Error, Result, WorkloadStatus};

const CLUSTER_ID: &str = "cluster-id";
const SECRET: &str = "cluster-secret";

/// The settings every unit shares.
struct SharedSettings {
    cluster_id: String,
    #[allow(dead_code)]
    secret: String,
}

impl SharedSettings {
    fn create() -> Result<Self> {
        Ok(Self { cluster_id: format!("cluster-{}", charm_sdk::random_hex(4)?), secret: charm_sdk::random_hex(16)? })
    }

    /// The settings in this hook's snapshot, if present and valid.
    fn read() -> Result<Option<Self>> {
        let cluster_id = charm_sdk::leader_get(CLUSTER_ID)?;
        let secret = charm_sdk::leader_get(SECRET)?;
        Ok(match (cluster_id, secret) {
            (Some(cluster_id), Some(secret)) if cluster_id.starts_with("cluster-") && secret.len() == 32 => {
                Some(Self { cluster_id, secret })
            }
            _ => None,
        })
    }
}

/// The leader's half: make sure valid settings exist.
fn set_shared_settings() -> Result<()> {
    if charm_sdk::is_leader()? && SharedSettings::read()?.is_none() {
        let settings = SharedSettings::create()?;
        charm_sdk::leader_set([(CLUSTER_ID, settings.cluster_id.as_str()), (SECRET, settings.secret.as_str())])?;
        charm_sdk::log(charm_sdk::LogLevel::Info, &format!("created {}", settings.cluster_id));
    }
    Ok(())
}

/// Every unit's half: the settings, or `WaitingForLeader`.
fn get_shared_settings() -> Result<SharedSettings> {
    SharedSettings::read()?.ok_or_else(|| Error::waiting_for_leader("no cluster settings yet"))
}

/// Reports the cluster this unit belongs to, or that it is waiting for one.
fn report() -> Result<()> {
    match get_shared_settings() {
        Ok(settings) => {
            charm_sdk::status_set(WorkloadStatus::Active, &format!("member of {}", settings.cluster_id));
            Ok(())
        }
        Err(err) if err.is_waiting_for_leader() => {
            charm_sdk::status_set(WorkloadStatus::Waiting, "waiting for the leader's cluster settings");
            Ok(())
        }
        Err(err) => Err(err),
    }
}

struct SharedSettingsCharm;

impl Charm for SharedSettingsCharm {
    fn install() -> Result<()> {
        set_shared_settings()?;
        report()
    }

    fn leader_elected() -> Result<()> {
        set_shared_settings()?;
        report()
    }

    fn leader_settings_changed() -> Result<()> {
        report()
    }
}

charm_sdk::export_charm!(SharedSettingsCharm);

#[cfg(test)]
mod tests;
