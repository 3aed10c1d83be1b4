//! `charm-host agent`: one unit as a long-lived process on a shared state directory.
//! SIGTERM or SIGINT is a graceful stop (leader-deposed if leader, stop, revoke); SIGKILL
//! is a crash, after which the unit's lease expires.

use std::process::ExitCode;
use std::sync::Arc;

use crate::events::EventSink;
use crate::state_dir::StateDir;

use super::AgentArgs;
use super::output::{HumanLog, JsonLog};
use super::run::charm_wasm;

pub fn agent(args: AgentArgs) -> anyhow::Result<ExitCode> {
    let services = args.services.configs()?;
    let state = StateDir::new(&args.state);
    let wasm = charm_wasm(&args.charm)?;
    let events: Arc<dyn EventSink> = if args.json { Arc::new(JsonLog::new()) } else { Arc::new(HumanLog::new()) };
    let tokio = tokio::runtime::Builder::new_multi_thread().enable_all().event_interval(7).build()?;
    // What the start creates is removed again if it fails: a refused start leaves nothing.
    let provisional = super::provisional::Provisional::before(Some(&args.state), std::slice::from_ref(&args.unit));
    tokio.block_on(async {
        let started = async {
            state.prepare()?;
            let opened = args.store.open(&state, args.runtime.guarantee_window, args.runtime.accept_new_store).await?;
            tracing::info!(unit = %args.unit, "leadership store: {}", opened.description);
            let (host, metrics) = args
                .runtime
                .start_host(&args.state, opened.store, (services, args.services.service_grace), events)
                .await?;
            let charm = host.load_charm(&wasm)?;
            let agent = host.start_agent(args.unit.clone(), &charm).await?;
            agent.stop_on_signals()?;
            anyhow::Ok((host, metrics, agent))
        };
        let (_host, _metrics, agent) = provisional.kept_if(started.await)?;
        agent.wait().await?;
        Ok(ExitCode::SUCCESS)
    })
}
