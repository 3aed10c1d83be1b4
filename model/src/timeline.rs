//! A counterexample as a timeline a person can read: one line per step, at its instant,
//! with what each incarnation believes after it.

use std::fmt::Write as _;

use stateright::{Model, Path};

use crate::model::{Action, LeadershipModel, Life, State};

fn agents(state: &State) -> String {
    let mut line = String::new();
    for (i, agent) in state.agents.iter().enumerate() {
        let life = match agent.life {
            Life::NotStarted => continue,
            Life::Running => "",
            Life::Crashed => " crashed",
            Life::Stopped => " stopped",
        };
        let _ = write!(line, "  #{i} a/{}@m{}{life}", agent.unit, agent.machine);
        if agent.leads() {
            let belief = agent.belief.map(|b| (b.term, b.left)).unwrap_or_default();
            let _ = write!(line, " LEADS term {} ({} ticks left)", belief.0, belief.1);
        }
        if agent.services {
            line.push_str(" [services]");
        }
        if state.using & (1 << i) != 0 {
            line.push_str(" [client acts on True]");
        }
    }
    let store = &state.store;
    let holder = store.holder.map_or("none".to_owned(), |(unit, inc)| format!("a/{unit} (#{inc})"));
    let _ = write!(
        line,
        "  | store {}: holder {holder} term {} expires in {} v{}",
        store.id, store.term, store.left, store.version
    );
    if store.pinned {
        line.push_str(" pinned");
    }
    if let Some((unit, left)) = store.reserved {
        let _ = write!(line, " reserved for a/{unit} ({left} ticks)");
    }
    line
}

/// The path as a timeline.
pub fn timeline(model: &LeadershipModel, path: &Path<State, Action>) -> String {
    let mut out = format!(
        "{} under {}\n",
        if model.protocol == crate::Protocol::current() { "the current protocol" } else { "a weakened protocol" },
        model.scenario
    );
    if let Some(mutation) = model.mutation {
        let _ = writeln!(out, "with the lease rule broken: {mutation:?}");
    }
    let states = path.clone().into_states();
    let actions = path.clone().into_actions();
    if let Some(first) = states.first() {
        let _ = writeln!(out, "t=0  start\n      {}", agents(first).trim_start());
    }
    let mut now = 0;
    for (action, state) in actions.iter().zip(states.iter().skip(1)) {
        if *action == Action::Tick {
            now += 1;
        }
        let _ = writeln!(out, "t={now:<2} {}\n      {}", model.format_action(action), agents(state).trim_start());
    }
    out
}
