//! Operator actions on a state directory's agents: `step-down` (the leader gives up; another
//! unit is elected) and `elect UNIT` (a directed handover: the lease is reserved for UNIT,
//! then the leader steps down, so only UNIT can take it and no other unit leads between).

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use charm_host::hook_tools::{ToolRequest, ToolResponse};
use charm_host::leadership::{LeadershipStore, SqliteStore};
use charm_host::names::UnitName;
use charm_host::state_dir::StateDir;

use super::ElectArgs;
use super::ToolArgs;
use super::tools::{act, call_agent};

/// How long `elect` waits for an agent to answer.
const AGENT_TIMEOUT: Duration = Duration::from_secs(5);

/// `step-down --unit U`: the unit, if leader, runs `leader-deposed` and revokes its lease.
pub fn step_down(target: ToolArgs) -> ExitCode {
    match act(&target, ToolRequest::StepDown) {
        Ok(_) => ExitCode::SUCCESS,
        Err(code) => code,
    }
}

/// `elect UNIT`: reserve the lease for UNIT, make the leader step down, wait for UNIT to lead.
pub fn elect(args: ElectArgs) -> anyhow::Result<ExitCode> {
    let unit = args.unit.clone();
    let state = StateDir::new(&args.state);
    anyhow::ensure!(state.store().is_file(), "{} holds no state (no state.db)", args.state.display());
    let ask = |unit: &UnitName, request| call_agent(&state, unit, &request, AGENT_TIMEOUT);
    ask(&unit, ToolRequest::IsLeader)
        .with_context(|| format!("{unit} must be running to be elected, or the handover would stall"))?;
    let store = SqliteStore::open(&state.store())?;
    let start = Instant::now();
    match store.lease(unit.app())? {
        Some(lease) if lease.holder == unit => {
            outln!("{unit} already leads {} (term {})", unit.app(), lease.term);
            return Ok(ExitCode::SUCCESS);
        }
        Some(lease) => {
            store.reserve(&unit, args.within)?;
            match ask(&lease.holder, ToolRequest::StepDown) {
                Ok(ToolResponse::Done) => {}
                Ok(other) => eprintln!("{} did not step down ({other:?}); {unit} leads once its lease ends", lease.holder),
                Err(err) => eprintln!("{err}; {unit} leads once {}'s lease expires", lease.holder),
            }
        }
        None => store.reserve(&unit, args.within)?,
    }
    while start.elapsed() < args.within {
        if let Some(lease) = store.lease(unit.app())?.filter(|l| l.holder == unit) {
            outln!("{unit} leads {} (term {}) after {:.1?}", unit.app(), lease.term, start.elapsed());
            return Ok(ExitCode::SUCCESS);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    eprintln!("error: {unit} did not become leader within {:?}", args.within);
    Ok(ExitCode::from(1))
}
