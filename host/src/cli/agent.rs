//! `charm-host agent`: one unit as a long-lived process on a shared state directory.
//! SIGTERM or SIGINT is a graceful stop (leader-deposed if leader, stop, revoke); SIGKILL
//! is a crash, after which the unit's lease expires.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use charm_host::agent::{self, AgentCommand, AgentConfig, Backoff};
use charm_host::events::EventSink;
use charm_host::hook_tools;
use charm_host::runtime::HookRuntime;
use charm_host::state_dir::StateDir;
use charm_host::tenure_record::TenureRecord;
use charm_host::tracker::LeadershipTracker;
use charm_host::unit::Unit;
use tokio::signal::unix::{SignalKind, signal};

use super::AgentArgs;
use super::output::{HumanLog, JsonLog};
use super::run::charm_wasm;

pub fn agent(args: AgentArgs) -> anyhow::Result<ExitCode> {
    let unit_name = args.unit.clone();
    let services = args.services.configs()?;
    let state = StateDir::new(&args.state);
    state.prepare_unit(&unit_name)?;
    // Held until the process exits: no second agent can run this unit meanwhile.
    let _lock = state.lock_unit(&unit_name)?;
    let wasm = charm_wasm(&args.charm)?;
    let runtime = Arc::new(HookRuntime::new(args.runtime.runtime_config())?);
    let charm = runtime.load_charm(&wasm)?;
    let events: Arc<dyn EventSink> = if args.json { Arc::new(JsonLog::new()) } else { Arc::new(HumanLog::new()) };
    let config = AgentConfig {
        backoff: Backoff::default(),
        state_file: Some(state.agent_state(&unit_name)),
        status_file: Some(state.status_file(&unit_name)),
        stop_grace: args.runtime.stop_grace,
        accept_new_store: args.runtime.accept_new_store,
    };

    let tokio = tokio::runtime::Builder::new_multi_thread().enable_all().event_interval(7).build()?;
    tokio.block_on(async {
        let opened = args.store.open(&state, args.runtime.guarantee_window).await?;
        tracing::info!(unit = %unit_name, "leadership store: {}", opened.description);
        let tracker = LeadershipTracker::new(unit_name.clone(), opened.store, args.runtime.guarantee_window)
            .with_record(TenureRecord::new(state.tenure_record(&unit_name)));
        let unit = Unit::new(unit_name.clone(), state.data_dir(&unit_name), tracker, events)?
            .with_services(services, args.services.service_grace);
        let unit = Arc::new(unit);
        // The lock proves no other agent uses the socket: a leftover one is ours to replace.
        let socket = state.socket(&unit_name);
        let _ = std::fs::remove_file(&socket);
        let listener = hook_tools::listen(&socket).with_context(|| format!("listening on {}", socket.display()))?;
        let (commands, receiver) = tokio::sync::mpsc::channel(4);
        let tools = tokio::spawn(hook_tools::serve(listener, unit.clone(), commands.clone()));
        let mut terminate = signal(SignalKind::terminate())?;
        let mut interrupt = signal(SignalKind::interrupt())?;
        tokio::spawn(async move {
            tokio::select! {
                _ = terminate.recv() => {}
                _ = interrupt.recv() => {}
            }
            let _ = commands.send(AgentCommand::Stop).await;
        });
        let result = agent::run_unit(runtime, charm, unit, config, receiver).await;
        tools.abort();
        let _ = std::fs::remove_file(&socket);
        result?;
        Ok(ExitCode::SUCCESS)
    })
}
