//! `charm-host status --state DIR [--json]`: applications, leader, term, leader settings,
//! pins, and units with their workload status, last hook and error.

use std::collections::BTreeMap;
use std::process::ExitCode;

use anyhow::Context as _;
use charm_host::leadership::{LeadershipStore, SqliteStore};
use charm_host::names::{AppName, UnitName};
use charm_host::state_dir::StateDir;
use charm_host::unit::UnitStatus;
use serde_json::json;

use super::StatusArgs;

pub fn status(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let state = StateDir::new(&args.state);
    anyhow::ensure!(state.store().is_file(), "{} holds no state (no state.db)", args.state.display());
    let store = SqliteStore::open(&state.store())?;
    let mut apps: BTreeMap<AppName, Vec<(UnitName, Option<UnitStatus>)>> = BTreeMap::new();
    for unit in state.units().with_context(|| format!("listing units in {}", args.state.display()))? {
        let status = std::fs::read(state.status_file(&unit)).ok().and_then(|b| serde_json::from_slice(&b).ok());
        apps.entry(unit.app().clone()).or_default().push((unit, status));
    }
    for app in store.leaders()?.into_keys().chain(store.pins()?.into_keys()) {
        apps.entry(app).or_default();
    }
    let pins = store.pins()?;
    let mut report = Vec::new();
    for (app, units) in apps {
        let lease = store.lease(&app)?;
        let settings = store.read_settings(&app)?;
        let units: Vec<_> = units
            .into_iter()
            .map(|(unit, status)| {
                let leader = lease.as_ref().is_some_and(|l| l.holder == unit);
                json!({
                    "unit": unit.as_str(),
                    "leader": leader,
                    "status": status.as_ref().map(|s| s.workload),
                    "message": status.as_ref().map(|s| s.message.clone()),
                    "last_hook": status.as_ref().and_then(|s| s.last_hook),
                    "error": status.as_ref().and_then(|s| s.last_error.clone()),
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
        println!("{}", json!({ "applications": report }));
    } else {
        print!("{}", table(&report));
    }
    Ok(ExitCode::SUCCESS)
}

fn text(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(s) => s.clone(),
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
        out.push_str(&format!("  {:<16} {:<7} {:<12} {:<26} MESSAGE\n", "UNIT", "LEADER", "STATUS", "LAST HOOK"));
        for unit in app["units"].as_array().into_iter().flatten() {
            let error = match &unit["error"] {
                serde_json::Value::String(e) => format!(" [failed: {e}]"),
                _ => String::new(),
            };
            out.push_str(&format!(
                "  {:<16} {:<7} {:<12} {:<26} {}{error}\n",
                text(&unit["unit"]),
                if unit["leader"] == true { "*" } else { "" },
                text(&unit["status"]),
                text(&unit["last_hook"]),
                text(&unit["message"]),
            ));
        }
        out.push_str(&format!("  settings (version {}):\n", text(&app["settings_version"])));
        for (key, value) in app["settings"].as_object().into_iter().flatten() {
            out.push_str(&format!("    {key} = {}\n", text(value)));
        }
    }
    out
}
