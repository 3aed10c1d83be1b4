//! The checker over every scenario: the current protocol keeps every property, and each
//! weakened protocol and each broken lease rule yields a counterexample, printed as a
//! timeline. Bounds: see the crate docs and `Scenario`.

use leadership_model::model::{self, PROPERTIES};
use leadership_model::timeline::timeline;
use leadership_model::{LeadershipModel, Mutation, Protocol, Safeguard, Scenario, StoreFault, Third};
use stateright::{Checker, HasDiscoveries, Model};

fn scenario(name: &'static str, edit: impl FnOnce(&mut Scenario)) -> Scenario {
    let mut scenario = Scenario::base(name);
    edit(&mut scenario);
    scenario
}

/// The scenarios the current protocol must pass.
fn scenarios() -> Vec<Scenario> {
    vec![
        scenario("two units, lossy network, clients", |s| s.clients = true),
        clone(),
        scenario("a/0 crashes and restarts on its machine", |s| {
            s.minion = false;
            s.crash = true;
            s.third = Some(Third::Restart);
        }),
        wipe(),
        rollback(),
        scenario("two units on etcd's rules", |s| s.etcd = true),
        // Pins and reservations are about who may hold the lease: without writes, which
        // the other scenarios check, to keep the state space to a few million.
        scenario("two units, the operator pins and elects", |s| {
            s.operator = true;
            s.writes = false;
        }),
        scenario("two units on etcd's rules, the operator pins and elects", |s| {
            s.operator = true;
            s.etcd = true;
            s.writes = false;
        }),
        scenario("the store wiped on etcd's rules, a newcomer joins", |s| {
            *s = wipe();
            s.name = "the store wiped on etcd's rules, a newcomer joins";
            s.etcd = true;
        }),
        Scenario::fair("fair schedules, a/0 crashes"),
        {
            let mut fair = Scenario::fair("fair schedules on etcd's rules, a/0 crashes");
            fair.etcd = true;
            // The sweep may come late, and an etcd leader change while the dead holder's
            // lease runs gives it a whole TTL again.
            fair.recovery = model::RECOVERY + model::LEASE + model::ETCD_SLACK;
            fair
        },
    ]
}

fn clone() -> Scenario {
    scenario("a/0 cloned elsewhere", |s| {
        s.minion = false;
        s.third = Some(Third::Clone);
    })
}

fn wipe() -> Scenario {
    scenario("the store wiped, a newcomer joins", |s| {
        s.minion = false;
        s.fault = Some(StoreFault::Wipe);
        s.third = Some(Third::Newcomer);
    })
}

fn rollback() -> Scenario {
    scenario("the store rolled back, a newcomer joins", |s| {
        s.minion = false;
        s.fault = Some(StoreFault::RollBack);
        s.third = Some(Third::Newcomer);
    })
}

/// One check at a time: each takes both cores and up to a few GiB.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Checks `model` exhaustively until `done`; the name of each property broken, with its
/// timeline.
fn check(model: &LeadershipModel, done: HasDiscoveries) -> Vec<(&'static str, String)> {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let start = std::time::Instant::now();
    let checker = model.clone().checker().threads(2).finish_when(done).spawn_bfs().join();
    eprintln!("{}: {} states in {:.1?}", model.scenario, checker.unique_state_count(), start.elapsed());
    PROPERTIES.iter().filter_map(|name| checker.discovery(name).map(|path| (*name, timeline(model, &path)))).collect()
}

fn assert_holds(model: &LeadershipModel) {
    let broken = check(model, HasDiscoveries::AnyFailures);
    if let Some((name, timeline)) = broken.first() {
        panic!("\"{name}\" is broken:\n{timeline}");
    }
}

/// `model` breaks `property`; its timeline is printed.
fn assert_breaks(model: &LeadershipModel, property: &'static str) {
    let broken = check(model, HasDiscoveries::AnyOf([property].into_iter().collect()));
    match broken.iter().find(|(name, _)| *name == property) {
        Some((_, timeline)) => eprintln!("counterexample for \"{property}\":\n{timeline}"),
        None => panic!(
            "no counterexample for \"{property}\" under {} (broken: {:?})",
            model.scenario,
            broken.iter().map(|b| b.0).collect::<Vec<_>>()
        ),
    }
}

#[test]
fn the_current_protocol_keeps_every_property() {
    for scenario in scenarios() {
        assert_holds(&LeadershipModel::new(Protocol::current(), scenario));
    }
}

#[test]
fn before_incarnations_a_clone_leads_beside_its_original() {
    let clone = clone();
    assert_breaks(&LeadershipModel::new(Protocol::before_incarnations(), clone.clone()), model::AT_MOST_ONE_LEADER);
    assert_breaks(
        &LeadershipModel::new(Protocol::current().without(Safeguard::Incarnations), clone),
        model::AT_MOST_ONE_LEADER,
    );
}

#[test]
fn without_store_identity_a_wiped_store_gives_two_leaders() {
    let wipe = wipe();
    assert_breaks(&LeadershipModel::new(Protocol::before_incarnations(), wipe.clone()), model::AT_MOST_ONE_LEADER);
    assert_breaks(
        &LeadershipModel::new(Protocol::current().without(Safeguard::StoreIdentity), wipe),
        model::AT_MOST_ONE_LEADER,
    );
}

#[test]
fn without_store_identity_a_rolled_back_store_loses_writes_and_terms() {
    for protocol in [Protocol::before_incarnations(), Protocol::current().without(Safeguard::StoreIdentity)] {
        let weakened = LeadershipModel::new(protocol, rollback());
        assert_breaks(&weakened, model::NO_ACKNOWLEDGED_WRITE_LOST);
        assert_breaks(&weakened, model::TERMS_ONLY_GO_UP);
    }
}

#[test]
fn without_a_fresh_term_a_deposed_tenure_is_resumed() {
    let lossy = Scenario::base("two units, lossy network");
    for protocol in [Protocol::before_incarnations(), Protocol::current().without(Safeguard::FreshTermAfterDepose)] {
        assert_breaks(&LeadershipModel::new(protocol, lossy.clone()), model::DEPOSED_TENURE_NEVER_RESUMED);
    }
}

#[test]
fn a_late_claim_answer_that_counts_runs_services_on_two_units() {
    let lossy = Scenario::base("two units, lossy network");
    assert_breaks(
        &LeadershipModel::new(Protocol::current().without(Safeguard::LateClaimsIgnored), lossy),
        model::DEPOSED_BEFORE_ANOTHER_LEADS,
    );
}

#[test]
fn an_answer_without_its_deadline_is_used_stale() {
    let clients = scenario("two units, clients", |s| s.clients = true);
    assert_breaks(
        &LeadershipModel::new(Protocol::current().without(Safeguard::AnswersCarryDeadline), clients),
        model::AT_MOST_ONE_LEADER,
    );
}

#[test]
fn a_release_that_does_not_wait_for_its_answers_lets_a_client_act_on_a_stale_true() {
    let clients = scenario("two units, clients", |s| s.clients = true);
    let weakened = Protocol::current().without(Safeguard::ReleaseWaitsForAnswers);
    assert_breaks(&LeadershipModel::new(weakened, clients), model::AT_MOST_ONE_LEADER);
}

#[test]
fn services_that_outlive_their_agent_run_beside_the_restarted_unit() {
    let restart = scenario("a/0 crashes and restarts on its machine", |s| {
        s.minion = false;
        s.crash = true;
        s.third = Some(Third::Restart);
    });
    let weakened = Protocol::current().without(Safeguard::ServicesDieWithAgent);
    assert_breaks(&LeadershipModel::new(weakened, restart), model::DEPOSED_BEFORE_ANOTHER_LEADS);
}

/// The liveness bound is tight: one tick less, and a crash leaves no leader that long.
#[test]
fn a_unit_leads_again_no_sooner_than_a_lease_after_a_crash() {
    let mut sooner = Scenario::fair("fair schedules, a/0 crashes, one tick less");
    sooner.recovery = model::RECOVERY - 1;
    assert_breaks(&LeadershipModel::new(Protocol::current(), sooner), model::LEADS_AGAIN_AFTER_A_CRASH);
}

#[test]
fn every_broken_lease_rule_is_caught() {
    for mutation in Mutation::ALL {
        let model = LeadershipModel::new(
            Protocol::current(),
            scenario("two units, lossy network, clients", |s| s.clients = true),
        )
        .with_mutation(mutation);
        let broken = check(&model, HasDiscoveries::AnyFailures);
        let Some((name, timeline)) = broken.first() else { panic!("the broken rule {mutation:?} went unnoticed") };
        eprintln!("{mutation:?} breaks \"{name}\":\n{timeline}");
    }
}

#[test]
#[ignore]
fn sizes() {
    for scenario in scenarios() {
        let model = LeadershipModel::new(Protocol::current(), scenario);
        let start = std::time::Instant::now();
        let checker = model.clone().checker().threads(1).spawn_bfs().join();
        eprintln!("{}: {} states in {:?}", model.scenario, checker.unique_state_count(), start.elapsed());
    }
}
