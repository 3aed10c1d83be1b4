//! `--store` and its TLS and auth flags: which leadership store a command uses. Without
//! `--store`, the SQLite file in the state directory (agents on one machine); with
//! `--store etcd://...`, an etcd cluster (agents on any number of machines, which then share
//! nothing else: each keeps its unit data and socket in its own `--state DIR`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::leadership::etcd::{EtcdOptions, EtcdStore, EtcdTls};
use crate::leadership::sqlite::{OpenError, SqliteOptions};
use crate::leadership::{LeadershipStore, MonotonicClock, SqliteStore};
use crate::state_dir::StateDir;
use anyhow::Context as _;
use clap::Args;

use super::UsageError;

/// Which leadership store to use.
#[derive(Debug, Clone, Args)]
pub struct StoreArgs {
    /// Share leadership through etcd: `etcd://HOST:PORT[,HOST:PORT...][/PREFIX]` (default
    /// prefix `/charm-host`). Without it: the SQLite store in the state directory.
    #[arg(long, value_name = "URL", value_parser = |s: &str| EtcdOptions::from_url(s).map_err(|e| e.to_string()))]
    pub store: Option<EtcdOptions>,
    /// etcd over TLS, checking the members' certificates against this CA (PEM).
    #[arg(long, value_name = "FILE", requires = "store")]
    pub etcd_ca: Option<PathBuf>,
    /// A client certificate for etcd (PEM), with --etcd-key.
    #[arg(long, value_name = "FILE", requires_all = ["store", "etcd_key"])]
    pub etcd_cert: Option<PathBuf>,
    /// The client certificate's key (PEM), with --etcd-cert.
    #[arg(long, value_name = "FILE", requires = "etcd_cert")]
    pub etcd_key: Option<PathBuf>,
    /// An etcd user, with --etcd-password-file.
    #[arg(long, value_name = "NAME", requires_all = ["store", "etcd_password_file"])]
    pub etcd_user: Option<String>,
    /// A file holding the etcd user's password (its first line).
    #[arg(long, value_name = "FILE", requires = "etcd_user")]
    pub etcd_password_file: Option<PathBuf>,
    /// Connect to an etcd version with a known lease-safety bug (with a warning) instead of
    /// refusing it.
    #[arg(long, requires = "store")]
    pub allow_unsafe_etcd: bool,
}

/// The store a command opened, and how to name it.
pub struct OpenedStore {
    pub store: Arc<dyn LeadershipStore>,
    /// `sqlite PATH` or `etcd URL (server VERSION)`.
    pub description: String,
}

impl OpenedStore {
    /// A SQLite store, named by its file.
    pub fn sqlite(store: SqliteStore) -> Self {
        let description = format!("sqlite {}", store.path().display());
        Self { store: Arc::new(store), description }
    }
}

impl StoreArgs {
    /// The etcd options these flags give, if `--store` is set, with requests timing out
    /// after at most `request_timeout`.
    pub fn etcd(&self, request_timeout: Duration) -> anyhow::Result<Option<EtcdOptions>> {
        let Some(options) = &self.store else { return Ok(None) };
        let mut options = options.clone().with_deadlines_within(request_timeout);
        if self.etcd_ca.is_some() || self.etcd_cert.is_some() {
            let identity = self.etcd_cert.clone().zip(self.etcd_key.clone());
            options.tls = Some(EtcdTls::new(self.etcd_ca.clone(), identity));
        }
        if let (Some(user), Some(file)) = (&self.etcd_user, &self.etcd_password_file) {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("reading --etcd-password-file {}", file.display()))?;
            let password = text.lines().next().unwrap_or_default().to_owned();
            if password.is_empty() {
                return Err(UsageError(format!("--etcd-password-file {} is empty", file.display())).into());
            }
            options.user = Some((user.clone(), password));
        }
        options.allow_unsafe_server = self.allow_unsafe_etcd;
        Ok(Some(options))
    }

    /// Opens the store for units promising `guarantee_window`: etcd if `--store` is set
    /// (inside a tokio runtime), else the SQLite file in `state`, created if missing (where
    /// units ran before, only if `accept_new_store`: see [`StateDir::new_store`]). etcd
    /// requests time out within half the renew interval (a quarter of the window), so a hung
    /// renewal is retried before the guarantee runs out.
    pub async fn open(
        &self,
        state: &StateDir,
        guarantee_window: Duration,
        accept_new_store: bool,
    ) -> anyhow::Result<OpenedStore> {
        match self.etcd(crate::timing::store_request_timeout(guarantee_window))? {
            Some(options) => Self::open_etcd(&options).await,
            None => {
                let new_store = crate::leadership::sqlite::NewStore::where_units(
                    state.any_unit_ran(),
                    accept_new_store,
                    crate::timing::claim_duration(guarantee_window),
                );
                let accept_moved = accept_new_store.then(|| crate::timing::claim_duration(guarantee_window));
                let options = SqliteOptions { new_store, accept_moved, ..SqliteOptions::default() };
                let store = SqliteStore::open_with(&state.store(), Arc::new(MonotonicClock), options)?;
                Ok(OpenedStore::sqlite(store))
            }
        }
    }

    /// Opens the store for a command that only reads (`status`, `history`): etcd if
    /// `--store` is set, else the SQLite file in `state`, which is never created or changed.
    pub async fn open_read_only(&self, state: Option<&Path>) -> anyhow::Result<OpenedStore> {
        if let Some(options) = self.etcd(Duration::from_secs(2))? {
            return Self::open_etcd(&options).await;
        }
        let Some(state) = state else { return Err(UsageError("give --state DIR or --store URL".into()).into()) };
        match SqliteStore::open_read_only(&StateDir::new(state).store()) {
            Ok(store) => Ok(OpenedStore::sqlite(store)),
            Err(OpenError::Empty { .. }) => anyhow::bail!("{} holds no state (no state.db)", state.display()),
            Err(err) => Err(err.into()),
        }
    }

    /// Opens the etcd store `options` name.
    pub async fn open_etcd(options: &EtcdOptions) -> anyhow::Result<OpenedStore> {
        let store = EtcdStore::connect(options).await?;
        let description = format!(
            "etcd etcd://{}{} (server {})",
            options.endpoints.join(","),
            store.prefix(),
            store.server_version()
        );
        Ok(OpenedStore { store: Arc::new(store), description })
    }
}
