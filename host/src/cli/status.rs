//! `charm-host status --state DIR [--json]`: applications, leader, term, leader settings,
//! pins, and units with whether their agent runs, their workload status, last hook, error
//! and services.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Duration;

use crate::hook_tools;
use crate::names::{AppName, UnitName};
use crate::report::{AgentState, ApplicationReport, StoreReport, UnitReport};
use crate::state_dir::StateDir;
use crate::unit::UnitStatus;
use anyhow::Context as _;

use super::StatusArgs;
use super::output::for_terminal;
use super::store::OpenedStore;

pub async fn status(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let state = StateDir::new(&args.state);
    let OpenedStore { store, description: store_description } = args.store.open_read_only(Some(&args.state)).await?;
    let mut apps: BTreeMap<AppName, Vec<(UnitName, Option<UnitStatus>)>> = BTreeMap::new();
    for unit in state.units().with_context(|| format!("listing units in {}", args.state.display()))? {
        let status: Option<UnitStatus> = crate::agent::load_json(&state.status_file(&unit)).ok().flatten();
        apps.entry(unit.app().clone()).or_default().push((unit, status));
    }
    for app in store.leaders().await?.into_keys().chain(store.pins().await?.into_keys()) {
        apps.entry(app).or_default();
    }
    let mut applications = Vec::new();
    for (app, units) in apps {
        let mut reports = Vec::new();
        for (unit, status) in units {
            // A unit whose agent does not answer is down: its recorded status may be stale.
            let up = super::tools::ask_agent(&state, &unit, &hook_tools::ToolRequest::IsLeader, Duration::from_secs(1))
                .await
                .is_ok();
            reports.push(UnitReport::new(unit, status, if up { AgentState::Running } else { AgentState::Down }));
        }
        applications.push(ApplicationReport::collect(&app, store.as_ref(), reports).await?);
    }
    let report = StoreReport { store: store_description, applications };
    if args.json {
        outln!("{}", serde_json::to_string(&report)?);
    } else {
        outln!("store: {}", for_terminal(&report.store));
        for application in &report.applications {
            out!("{}", application.to_table());
        }
    }
    Ok(ExitCode::SUCCESS)
}
