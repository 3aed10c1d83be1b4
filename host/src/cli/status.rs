//! `charm-host status --state DIR [--json]`: applications, leader, term, leader settings,
//! pins, and units with whether their agent runs, their workload status, last hook, error
//! and services.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use crate::hook_tools;
use crate::leadership::sqlite::OpenError;
use crate::leadership::SqliteStore;
use crate::names::{AppName, UnitName};
use crate::state_dir::StateDir;
use crate::unit::UnitStatus;
use serde_json::json;

use super::StatusArgs;
use super::store::{OpenedStore, StoreArgs};
use super::output::for_terminal;

pub async fn status(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let state = StateDir::new(&args.state);
    // Read-only: `status` never creates or changes a SQLite store.
    let OpenedStore { store, description: store_description } = match args.store.etcd(Duration::from_secs(2))? {
        Some(options) => StoreArgs::open_etcd(&options).await?,
        None => match SqliteStore::open_read_only(&state.store()) {
            Ok(store) => OpenedStore::sqlite(store),
            Err(OpenError::Empty { .. }) => anyhow::bail!("{} holds no state (no state.db)", args.state.display()),
            Err(err) => return Err(err.into()),
        },
    };
    let mut apps: BTreeMap<AppName, Vec<(UnitName, Option<UnitStatus>)>> = BTreeMap::new();
    for unit in state.units().with_context(|| format!("listing units in {}", args.state.display()))? {
        let status: Option<UnitStatus> = crate::agent::load_json(&state.status_file(&unit)).ok().flatten();
        apps.entry(unit.app().clone()).or_default().push((unit, status));
    }
    for app in store.leaders().await?.into_keys().chain(store.pins().await?.into_keys()) {
        apps.entry(app).or_default();
    }
    let pins = store.pins().await?;
    let mut report = Vec::new();
    for (app, units) in apps {
        let lease = store.lease(&app).await?;
        let settings = store.read_settings(&app).await?;
        let mut rows = Vec::new();
        for (unit, status) in units {
            // A unit whose agent does not answer is down: its recorded status may be stale.
            let up = super::tools::ask_agent(&state, &unit, &hook_tools::ToolRequest::IsLeader, Duration::from_secs(1)).await.is_ok();
            rows.push((unit, status, up));
        }
        let units: Vec<_> = rows
            .into_iter()
            .map(|(unit, status, up)| {
                let leader = lease.as_ref().is_some_and(|l| l.holder == unit);
                let mut services = status.as_ref().map(|s| s.services.clone()).unwrap_or_default();
                if !up {
                    // A stopped or crashed agent's services are gone with it.
                    for service in &mut services {
                        service.running = false;
                        service.pid = None;
                    }
                }
                json!({
                    "unit": unit.as_str(),
                    "agent": if up { "running" } else { "down" },
                    "leader": leader,
                    "status": status.as_ref().map(|s| s.workload),
                    "message": status.as_ref().map(|s| s.message.clone()),
                    "last_hook": status.as_ref().and_then(|s| s.last_hook),
                    "error": status.as_ref().and_then(|s| s.last_error.clone()),
                    "leadership_error": status.as_ref().and_then(|s| s.leadership_error.clone()).filter(|_| up),
                    "services": services,
                })
            })
            .collect();
        report.push(json!({
            "application": app.as_str(),
            "leader": lease.as_ref().map(|l| l.holder.as_str()),
            "term": lease.as_ref().map(|l| l.term),
            "pins": pins.get(&app).cloned().unwrap_or_default(),
            "settings_version": settings.version,
            "settings": *settings.values,
            "units": units,
        }));
    }
    if args.json {
        outln!("{}", json!({ "store": store_description, "applications": report }));
    } else {
        outln!("store: {}", for_terminal(&store_description));
        out!("{}", table(&report));
    }
    Ok(ExitCode::SUCCESS)
}

/// A value as table text, with control characters escaped (see [`for_terminal`]).
fn text(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(s) => for_terminal(s).into_owned(),
        serde_json::Value::Null => "-".into(),
        other => other.to_string(),
    }
}

fn table(report: &[serde_json::Value]) -> String {
    let mut out = String::new();
    for app in report {
        let pins: Vec<String> = app["pins"].as_array().into_iter().flatten().map(text).collect();
        out.push_str(&format!(
            "application {}: leader {} (term {}), pins: {}\n",
            text(&app["application"]),
            text(&app["leader"]),
            text(&app["term"]),
            if pins.is_empty() { "none".into() } else { pins.join(", ") }
        ));
        out.push_str(&format!("  {:<16} {:<8} {:<7} {:<12} {:<26} MESSAGE\n", "UNIT", "AGENT", "LEADER", "STATUS", "LAST HOOK"));
        for unit in app["units"].as_array().into_iter().flatten() {
            let mut error = match &unit["error"] {
                serde_json::Value::String(e) => format!(" [failed: {}]", for_terminal(e)),
                _ => String::new(),
            };
            if let serde_json::Value::String(e) = &unit["leadership_error"] {
                error.push_str(&format!(" [leadership unknown: {}]", for_terminal(e)));
            }
            let services: Vec<String> = unit["services"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|s| match s["pid"].as_u64() {
                    Some(pid) if s["running"] == true => format!(" [{} running, pid {pid}]", text(&s["name"])),
                    _ => format!(" [{} stopped]", text(&s["name"])),
                })
                .collect();
            let error = format!("{error}{}", services.concat());
            out.push_str(&format!(
                "  {:<16} {:<8} {:<7} {:<12} {:<26} {}{error}\n",
                text(&unit["unit"]),
                text(&unit["agent"]),
                if unit["leader"] == true { "*" } else { "" },
                text(&unit["status"]),
                text(&unit["last_hook"]),
                text(&unit["message"]),
            ));
        }
        out.push_str(&format!("  settings (version {}):\n", text(&app["settings_version"])));
        for (key, value) in app["settings"].as_object().into_iter().flatten() {
            out.push_str(&format!("    {} = {}\n", for_terminal(key), text(value)));
        }
    }
    out
}
