//! Operator actions on a state directory's agents: `step-down` (the leader gives up; another
//! unit is elected), `elect UNIT` (a directed handover: the lease is reserved for UNIT;
//! the leader's agent, on this machine or another, sees the reservation and steps down, so
//! only UNIT can take it and no other unit leads between) and `remove-unit UNIT` (the unit
//! leaves for good: its membership and data go, and the leader hears of it).

use std::process::ExitCode;
use std::time::{Duration, Instant};

use crate::handover::{self, HandoverError, Requested};
use crate::hook_tools::ToolRequest;
use crate::names::UnitName;
use crate::state_dir::StateDir;
use anyhow::Context as _;

use super::ToolArgs;
use super::tools::{act, ask_agent};
use super::{ElectArgs, RemoveUnitArgs};

/// How long `elect` waits for an agent to answer.
const AGENT_TIMEOUT: Duration = crate::timing::DEFAULT_TOOL_TIMEOUT;

/// `step-down --unit U`: the unit, if leader, runs `leader-deposed` and revokes its lease.
pub fn step_down(target: ToolArgs) -> ExitCode {
    match act(&target, ToolRequest::StepDown) {
        Ok(_) => ExitCode::SUCCESS,
        Err(code) => code,
    }
}

/// `elect UNIT`: reserve the lease for UNIT, make the leader step down, wait for UNIT to lead.
pub async fn elect(args: ElectArgs) -> anyhow::Result<ExitCode> {
    let unit = args.unit.clone();
    let state = existing_state(&args.state, &args.store)?;
    let ask = async |unit: &UnitName, request| ask_agent(&state, unit, &request, AGENT_TIMEOUT).await;
    ask(&unit, ToolRequest::IsLeader)
        .await
        .with_context(|| format!("{unit} must be running to be elected, or the handover would stall"))?;
    let store = args.store.open(&state, crate::timing::DEFAULT_GUARANTEE_WINDOW, false).await?.store;
    let start = Instant::now();
    // The leader's agent, wherever it runs, sees the reservation and steps down for UNIT.
    if let Requested::AlreadyLeads { term } = handover::request(store.as_ref(), &unit, args.within).await? {
        outln!("{unit} already leads {} (term {term})", unit.app());
        return Ok(ExitCode::SUCCESS);
    }
    match handover::wait_until_leads(store.as_ref(), &unit, args.within).await {
        Ok(term) => {
            outln!("{unit} leads {} (term {term}) after {:.1?}", unit.app(), start.elapsed());
            Ok(ExitCode::SUCCESS)
        }
        Err(HandoverError::TimedOut { .. }) => {
            eprintln!("error: {unit} did not become leader within {:?}", args.within);
            Ok(ExitCode::from(1))
        }
        Err(err) => Err(err.into()),
    }
}

/// `remove-unit UNIT`: UNIT stops being a member of its application and its data is
/// deleted, in one step; the leader hears of it. Refused while UNIT's agent answers in the
/// state directory (without `--force`): a running agent would go on with writes that now
/// fail, and a restart would make it a member again.
pub async fn remove_unit(args: RemoveUnitArgs) -> anyhow::Result<ExitCode> {
    let unit = args.unit.clone();
    let state = existing_state(&args.state, &args.store)?;
    let running = ask_agent(&state, &unit, &ToolRequest::IsLeader, AGENT_TIMEOUT).await.is_ok();
    if running && !args.force {
        eprintln!(
            "error: {unit}'s agent is running in {}: stop it first (or give --force; a restarted agent joins again)",
            args.state.display()
        );
        return Ok(ExitCode::from(1));
    }
    let store = args.store.open(&state, crate::timing::DEFAULT_GUARANTEE_WINDOW, false).await?.store;
    if store.remove_unit(&unit).await.with_context(|| format!("cannot remove {unit}"))? {
        outln!("removed {unit} from {}: its data is deleted, and the leader is told", unit.app());
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("error: {unit} is not a member of {}", unit.app());
        Ok(ExitCode::from(1))
    }
}

/// The state directory an operator action works on: without `--store`, it must hold the
/// SQLite store already (an action never creates one).
fn existing_state(dir: &std::path::Path, store: &super::store::StoreArgs) -> anyhow::Result<StateDir> {
    let state = StateDir::new(dir);
    if store.store.is_none() {
        anyhow::ensure!(state.store().is_file(), "{} holds no state (no state.db)", dir.display());
    }
    Ok(state)
}
