//! An embedded application: three units of the `shared-settings` example charm in this
//! process, with their leader and events printed, a directed handover, and a graceful stop.
//!
//! ```text
//! cargo run -p charm-host --example embedded [CHARM]
//! ```
//!
//! CHARM is a `.wasm` component or a charm crate directory (default: the workspace's
//! `example-charms/shared-settings`, built on first use).

use std::time::Duration;

use charm_host::{AppName, EventKind, HookKind, Host, LeadershipChange, UnitName};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let charm_path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| concat!(env!("CARGO_MANIFEST_DIR"), "/../example-charms/shared-settings").into());

    // A host with an in-memory store and a temporary state directory; a short guarantee
    // window so that the handover below is quick to watch.
    let host = Host::builder().guarantee_window(Duration::from_secs(2)).build().await?;
    let mut events = host.subscribe();
    let mut elected = host.subscribe();
    let printer = tokio::spawn(async move {
        while let Some(event) = events.next().await {
            let (at, unit) = (event.at_rfc3339(), &event.unit);
            match event.kind {
                EventKind::Leadership(LeadershipChange::Elected) => {
                    println!("{at} {unit}: leads (term {})", event.term.unwrap_or_default())
                }
                EventKind::Leadership(LeadershipChange::Deposed) => {
                    println!("{at} {unit}: no longer leads (gave up term {})", event.term.unwrap_or_default())
                }
                EventKind::Leadership(LeadershipChange::Minion) => println!("{at} {unit}: minion"),
                EventKind::Hook { hook, result, .. } => {
                    println!("{at} {unit}: {hook} {}", if result.is_ok() { "ok" } else { "failed" })
                }
                EventKind::Log { message, .. } => println!("{at} {unit}: log: {message}"),
                _ => {}
            }
        }
    });

    let charm = host.load_charm(&charm_path)?;
    let app = host.start_application(AppName::new("demo")?, &charm, 3).await?;
    let leader = app.wait_for_leader().await?;
    println!("== {leader} leads demo");

    // Once the leader's leader-elected has run, its settings are there: read them as a
    // script would, through the hook tools.
    while let Some(event) = elected.next().await {
        if event.unit == leader && matches!(event.kind, EventKind::Hook { hook: HookKind::LeaderElected, .. }) {
            break;
        }
    }
    println!("== settings: {:?}", app.tools(&leader)?.leader_get_all().await?);

    // A directed handover to the next unit: no other unit leads in between.
    let successor = UnitName::from_parts(app.app().clone(), (leader.number() + 1) % 3);
    let term = app.elect(&successor, Duration::from_secs(10)).await?;
    println!("== {successor} leads after a directed handover (term {term})");

    app.stop().await;
    drop(host);
    let _ = printer.await;
    Ok(())
}
