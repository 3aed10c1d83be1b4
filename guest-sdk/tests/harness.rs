//! The native test harness keeps the host's rules: what each call answers, when hooks run.

use std::time::Duration;

use charm_sdk::testing::{App, CallKind, Change, Hook, Reply, Unit};
use charm_sdk::{Charm, Error, LogLevel, Result, WorkloadStatus, services};

/// Does what the test puts in the settings key `script`, one action per line.
struct Scripted;

fn perform() -> Result<()> {
    let script = charm_sdk::leader_get("script")?.unwrap_or_default();
    for action in script.lines() {
        match action.split_once(' ').unwrap_or((action, "")) {
            ("set", pair) => {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                charm_sdk::leader_set([(k, v)])?;
            }
            ("get", key) => {
                let value = charm_sdk::leader_get(key)?.unwrap_or_default();
                charm_sdk::status_set(WorkloadStatus::Active, &format!("{key}={value}"));
            }
            ("if-leader", _) => {
                if !charm_sdk::is_leader()? {
                    return Ok(());
                }
            }
            ("leader", _) => {
                let leader = charm_sdk::is_leader()?;
                charm_sdk::log(LogLevel::Info, &format!("leader={leader}"));
            }
            ("term", _) => {
                let term = charm_sdk::leader_term()?;
                charm_sdk::log(LogLevel::Info, &format!("term={term:?}"));
            }
            ("start", name) => services::start(name)?,
            ("fail", why) => return Err(why.into()),
            (other, _) => return Err(format!("unknown action {other}").into()),
        }
    }
    Ok(())
}

impl Charm for Scripted {
    fn install() -> Result<()> {
        perform()
    }
    fn leader_elected() -> Result<()> {
        perform()
    }
    fn leader_settings_changed() -> Result<()> {
        perform()
    }
}

fn scripted(unit: &str, script: &str) -> Unit {
    Unit::new(unit).with_settings([("script", script)])
}

#[test]
fn outside_a_hook_calls_fail_with_the_reason() {
    let err = charm_sdk::is_leader().unwrap_err();
    assert!(matches!(&err, Error::Failed(why) if why.contains("outside a hook")), "{err}");
    assert!(charm_sdk::leader_set([("k", "v")]).is_err());
    let panic = std::panic::catch_unwind(charm_sdk::unit_name).unwrap_err();
    let message = panic.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(message.contains("charm_sdk::testing"), "{message}");
}

#[test]
fn a_hook_reads_a_snapshot_plus_its_own_writes() {
    let unit = scripted("db/0", "get k\nset k=1\nget k").leader();
    let run = unit.run::<Scripted>(Hook::Install);
    assert_eq!(run.result, Ok(()));
    assert_eq!(run.statuses, [(WorkloadStatus::Active, "k=".to_owned()), (WorkloadStatus::Active, "k=1".to_owned())]);
    assert_eq!(unit.status(), Some((WorkloadStatus::Active, "k=1".to_owned())));
    assert_eq!(run.writes, [[("k".to_owned(), "1".to_owned())]]);
    assert_eq!(unit.settings_version(), 2, "the initial settings, then one write");
}

#[test]
fn writes_follow_the_hosts_rules() {
    // A minion is refused before anything else.
    let run = scripted("db/0", "set k=1").run::<Scripted>(Hook::Install);
    assert_eq!(run.result, Err(Error::NotLeader));
    // An invalid key is refused with the host's reason, and nothing is written.
    let unit = scripted("db/0", "set bad key=1").leader();
    let run = unit.run::<Scripted>(Hook::Install);
    assert!(matches!(&run.result, Err(Error::Invalid(why)) if why.contains("whitespace")), "{:?}", run.result);
    assert!(run.writes.is_empty());
    assert!(!unit.settings().contains_key("bad key"));
    // A write that changes nothing leaves the version alone.
    let unit = scripted("db/0", "set k=1\nset k=1").leader();
    let before = unit.settings_version();
    assert_eq!(unit.run::<Scripted>(Hook::Install).result, Ok(()));
    assert_eq!(unit.settings_version(), before + 1);
}

#[test]
fn leadership_can_lapse_between_two_calls_of_one_hook() {
    let unit = scripted("db/0", "leader\nset k=1").leader();
    unit.before(CallKind::LeaderSet, Change::LoseLeadership);
    let run = unit.run::<Scripted>(Hook::LeaderElected);
    assert_eq!(run.result, Err(Error::NotLeader));
    assert_eq!(run.logs, [(LogLevel::Info, "leader=true".to_owned())]);
    let answers: Vec<_> = run.calls.iter().map(|c| (c.call.kind(), c.answer.clone())).collect();
    assert_eq!(
        answers,
        [
            (CallKind::LeaderGet, Ok(Reply::Value(Some("leader\nset k=1".to_owned())))),
            (CallKind::IsLeader, Ok(Reply::Bool(true))),
            (CallKind::Log, Ok(Reply::Done)),
            (CallKind::LeaderSet, Err(Error::NotLeader)),
        ]
    );
    assert!(!unit.is_leader());
}

/// `leader-term` answers the tenure's term while the unit leads and none once leadership
/// lapsed (both within one hook), none on a minion, and unknown on a minion that cannot
/// reach the store.
#[test]
fn leader_term_is_the_fencing_token_while_the_unit_leads() {
    let leader = scripted("db/0", "term\nterm").leader();
    let term = leader.term();
    assert!(term > 0, "a tenure has a term");
    // Between the two calls (at the log line of the first), leadership lapses.
    leader.before(CallKind::Log, Change::LoseLeadership);
    let run = leader.run::<Scripted>(Hook::Install);
    assert_eq!(run.logs, [(LogLevel::Info, format!("term=Some({term})")), (LogLevel::Info, "term=None".to_owned())]);
    let answers: Vec<_> =
        run.calls.iter().filter(|c| c.call.kind() == CallKind::LeaderTerm).map(|c| c.answer.clone()).collect();
    assert_eq!(answers, [Ok(Reply::Term(Some(term))), Ok(Reply::Term(None))]);

    let minion = scripted("db/1", "term");
    assert_eq!(minion.run::<Scripted>(Hook::Install).logs, [(LogLevel::Info, "term=None".to_owned())]);
    minion.change(Change::StoreUnreachable("timeout".into()));
    assert_eq!(minion.run::<Scripted>(Hook::Install).result, Err(Error::Unknown("timeout".into())));
}

#[test]
fn an_unreachable_store_answers_unknown() {
    let minion = scripted("db/1", "leader");
    minion.before(CallKind::IsLeader, Change::StoreUnreachable("connection refused".into()));
    let run = minion.run::<Scripted>(Hook::Install);
    assert_eq!(run.result, Err(Error::Unknown("connection refused".into())));
    // The leader's guarantee holds without the store; its write cannot.
    let leader = scripted("db/0", "leader\nset k=1").leader();
    leader.before(CallKind::IsLeader, Change::StoreUnreachable("timeout".into()));
    let run = leader.run::<Scripted>(Hook::Install);
    assert_eq!(run.logs, [(LogLevel::Info, "leader=true".to_owned())]);
    assert_eq!(run.result, Err(Error::Unknown("timeout".into())));
    // A first read needs the store.
    leader.change(Change::StoreUnreachable("timeout".into()));
    assert!(matches!(leader.run::<Scripted>(Hook::Install).result, Err(Error::Unknown(_))));
    leader.change(Change::StoreReachable);
    assert_eq!(leader.run::<Scripted>(Hook::Install).result, Ok(()));
}

#[test]
fn leader_only_services_run_only_on_the_leader() {
    let minion = scripted("db/1", "start daemon").with_service("daemon", true);
    assert_eq!(minion.run::<Scripted>(Hook::Install).result, Err(Error::NotLeader));
    let unit = scripted("db/0", "start daemon\nstart missing").with_service("daemon", true).leader();
    let run = unit.run::<Scripted>(Hook::LeaderElected);
    assert!(matches!(&run.result, Err(Error::Service(why)) if why.contains("missing")), "{:?}", run.result);
    assert!(unit.service("daemon").is_some_and(|s| s.running && s.pid.is_some()));
    unit.change(Change::LoseLeadership);
    assert!(unit.service("daemon").is_some_and(|s| !s.running), "stopped with the leadership");
    assert_eq!(unit.run::<Scripted>(Hook::LeaderElected).call_kinds()[1], CallKind::ServiceStart);
}

#[test]
fn random_hex_is_repeatable_per_seed() {
    struct Secret;
    impl Charm for Secret {
        fn install() -> Result<()> {
            charm_sdk::log(LogLevel::Info, &charm_sdk::random_hex(16)?);
            Ok(())
        }
    }
    let draw = |unit: Unit| unit.run::<Secret>(Hook::Install).logs[0].1.clone();
    let a = draw(Unit::new("db/0").with_seed(7));
    assert_eq!(a.len(), 32);
    assert_eq!(a, draw(Unit::new("db/0").with_seed(7)));
    assert_ne!(a, draw(Unit::new("db/0").with_seed(8)));
    let unit = Unit::new("db/0");
    assert_ne!(draw(unit.clone()), draw(unit), "a unit's stream moves on between hooks");
}

#[test]
fn the_data_directory_is_the_units_own() {
    struct Files;
    impl Charm for Files {
        fn install() -> Result<()> {
            std::fs::write(charm_sdk::data_dir().join("installed"), charm_sdk::unit_name())
                .map_err(|e| e.to_string())?;
            Ok(())
        }
    }
    let unit = Unit::new("db/3");
    assert_eq!(unit.run::<Files>(Hook::Install).result, Ok(()));
    assert_eq!(std::fs::read_to_string(unit.data_dir().join("installed")).unwrap(), "db/3");
    assert_ne!(unit.data_dir(), Unit::new("db/3").data_dir());
}

#[test]
fn minions_hear_of_a_burst_of_writes_once() {
    let mut app = App::<Scripted>::new("db", 3).with_settings([("script", "if-leader\nset a=1\nset b=2\nset c=3")]);
    app.elect(1);
    app.settle();
    assert_eq!(app.hooks(1), [Hook::Install, Hook::LeaderElected]);
    for minion in [0, 2] {
        assert_eq!(app.hooks(minion), [Hook::Install, Hook::LeaderSettingsChanged], "unit {minion}");
    }
    assert_eq!(app.settings()["c"], "3");
    assert!(app.history().iter().all(|(_, run)| run.result.is_ok()));
}

#[test]
fn failed_hooks_are_retried_after_1_s_then_2_s() {
    let mut app = App::<Scripted>::new("db", 2).with_settings([("script", "fail boom")]);
    let runs = app.settle();
    assert_eq!(runs.len(), 2, "one install each");
    assert!(runs.iter().all(|(_, run)| run.hook == Hook::Install && run.result == Err(Error::Failed("boom".into()))));
    assert!(app.settle().is_empty(), "nothing runs until the retry is due");
    app.advance(Duration::from_millis(999));
    assert!(app.settle().is_empty());
    app.advance(Duration::from_millis(1));
    assert_eq!(app.settle().len(), 2, "both minions retried once");
    app.advance(Duration::from_secs(1));
    assert!(app.settle().is_empty(), "the second retry waits 2 s");
    app.advance(Duration::from_secs(1));
    assert_eq!(app.settle().len(), 2);
}

#[test]
fn a_queued_leader_elected_is_dropped_once_leadership_moved() {
    let mut app = App::<Scripted>::new("db", 2);
    app.elect(0);
    // While unit 0's leader-elected waits behind its install, unit 1 takes over.
    app.unit(1).before(CallKind::LeaderGet, Change::GainLeadership);
    app.settle();
    assert_eq!(app.leader(), Some(1));
    assert!(!app.hooks(0).contains(&Hook::LeaderElected), "{:?}", app.hooks(0));
    assert_eq!(app.dropped(), [(0, Hook::LeaderElected, Some(1))]);
    assert_eq!(app.hooks(1), [Hook::Install, Hook::LeaderElected]);
}

#[test]
fn a_stopping_leader_runs_deposed_then_stop() {
    let mut app = App::<Scripted>::new("db", 2)
        .with_service("daemon", true)
        .with_settings([("script", "if-leader\nstart daemon")]);
    app.elect(1);
    app.settle();
    assert!(app.unit(1).service("daemon").is_some_and(|s| s.running));
    // Unit 1 stops and unit 0 takes over: 1's deposed runs first, though 0 comes first.
    app.stop(1);
    app.elect(0);
    let runs = app.settle();
    let order: Vec<_> = runs.iter().map(|(i, run)| (*i, run.hook)).collect();
    let deposed = order.iter().position(|h| *h == (1, Hook::LeaderDeposed)).unwrap();
    let elected = order.iter().position(|h| *h == (0, Hook::LeaderElected)).unwrap();
    assert!(deposed < elected, "{order:?}");
    assert_eq!(app.hooks(1).last(), Some(&Hook::Stop));
    assert!(app.unit(1).service("daemon").is_some_and(|s| !s.running));
    assert!(app.unit(0).service("daemon").is_some_and(|s| s.running));
    assert!(runs.iter().all(|(_, run)| run.result.is_ok()));
}

/// Every unit publishes its address; the leader gathers every member's into one setting.
struct Gatherer;

impl Gatherer {
    fn gather() -> Result<()> {
        let mut addresses = Vec::new();
        for unit in charm_sdk::units()? {
            if let Some(address) = charm_sdk::unit_get(&unit, "address")? {
                addresses.push(address);
            }
        }
        charm_sdk::leader_set([("targets", addresses.join(","))])
    }
}

impl Charm for Gatherer {
    fn install() -> Result<()> {
        let address = format!("10.0.0.{}", charm_sdk::unit_name().rsplit('/').next().unwrap_or("0"));
        charm_sdk::unit_set([("address", address)])
    }
    fn leader_elected() -> Result<()> {
        Self::gather()
    }
    fn unit_data_changed(changed: Vec<String>) -> Result<()> {
        charm_sdk::log(LogLevel::Info, &format!("changed: {}", changed.join(" ")));
        Self::gather()
    }
}

#[test]
fn the_leader_gathers_every_units_data_and_hears_of_a_burst_once() {
    let mut app = App::<Gatherer>::new("gather", 4);
    app.elect(0);
    app.settle();
    assert_eq!(app.settings()["targets"], "10.0.0.0,10.0.0.1,10.0.0.2,10.0.0.3");
    // A burst of changes from three units: one hook, naming exactly them.
    for i in 1..4 {
        app.set_unit_data(i, [("address", format!("192.168.0.{i}"))]);
    }
    let ran = app.settle();
    let changed: Vec<_> = ran.iter().filter(|(_, run)| run.hook == Hook::UnitDataChanged).collect();
    assert_eq!(changed.len(), 1, "{ran:?}");
    assert_eq!(changed[0].0, 0, "only the leader hears");
    assert_eq!(changed[0].1.changed, ["gather/1", "gather/2", "gather/3"]);
    assert_eq!(app.settings()["targets"], "10.0.0.0,192.168.0.1,192.168.0.2,192.168.0.3");
    // A unit leaves: named, and no longer a member.
    app.remove_unit(2);
    let ran = app.settle();
    let announced: Vec<_> =
        ran.iter().filter(|(_, r)| r.hook == Hook::UnitDataChanged).map(|(_, r)| &r.changed).collect();
    assert_eq!(announced, [&vec!["gather/2".to_owned()]]);
    assert_eq!(app.settings()["targets"], "10.0.0.0,192.168.0.1,192.168.0.3");
    assert_eq!(app.unit(0).units(), ["gather/0", "gather/1", "gather/3"]);
    assert_eq!(app.hooks(2).last(), Some(&Hook::Stop), "a removed unit is stopped");
}

#[test]
fn unit_data_reads_follow_the_hosts_rules() {
    let unit = Unit::new("peer/1").with_unit_data("peer/0", [("address", "10.0.0.0")]);
    unit.before(CallKind::UnitSet, Change::GainLeadership);
    struct Reader;
    impl Charm for Reader {
        fn install() -> Result<()> {
            // A minion reads its own data, never another unit's.
            assert_eq!(charm_sdk::unit_get("peer/1", "address")?, None);
            assert_eq!(charm_sdk::unit_get("peer/0", "address"), Err(Error::NotLeader));
            assert_eq!(charm_sdk::units(), Err(Error::NotLeader));
            assert!(matches!(charm_sdk::unit_get("other/0", "k"), Err(Error::Invalid(_))));
            assert!(matches!(charm_sdk::unit_set([("bad key", "v")]), Err(Error::Invalid(_))));
            charm_sdk::unit_set([("address", "10.0.0.1")])?; // leadership arrives just before
            assert_eq!(charm_sdk::unit_get("peer/1", "address")?.as_deref(), Some("10.0.0.1"), "its own write");
            assert_eq!(charm_sdk::unit_get("peer/0", "address")?.as_deref(), Some("10.0.0.0"));
            assert_eq!(charm_sdk::units()?, ["peer/0", "peer/1"]);
            Ok(())
        }
        fn unit_data_changed(changed: Vec<String>) -> Result<()> {
            Err(format!("changed {changed:?}").into())
        }
    }
    let run = unit.run::<Reader>(Hook::Install);
    assert_eq!(run.result, Ok(()));
    assert_eq!(run.unit_writes, [vec![("address".to_owned(), "10.0.0.1".to_owned())]]);
    // What the leader has not heard of: peer/0 (joined and wrote), not its own unit.
    let run = unit.run::<Reader>(Hook::UnitDataChanged);
    assert_eq!(run.changed, ["peer/0"]);
    let again = unit.run::<Reader>(Hook::UnitDataChanged);
    assert_eq!(again.changed, ["peer/0"], "a failed hook's units are announced again");
}

#[test]
fn a_removed_units_writes_are_stale() {
    let mut app = App::<Gatherer>::new("gone", 2);
    app.elect(0);
    app.settle();
    app.remove_unit(1);
    let run = app.unit(1).run::<Gatherer>(Hook::Install);
    assert!(matches!(run.result, Err(Error::Stale(_))), "{:?}", run.result);
    assert_eq!(app.unit(0).unit_data("gone/1"), None);
}

/// Writes a JSON value and a plain key as one group when elected, and shows what it read.
struct Observer;

impl Charm for Observer {
    fn leader_elected() -> Result<()> {
        let config = charm_sdk::to_json("config", &[1, 2])?;
        charm_sdk::leader_set([("config", config), ("owner", charm_sdk::unit_name())])
    }

    fn leader_settings_changed() -> Result<()> {
        let config: Option<Vec<u32>> = charm_sdk::leader_get_json("config")?;
        let owner = charm_sdk::leader_get("owner")?;
        charm_sdk::status_set(WorkloadStatus::Active, &format!("{config:?} from {owner:?}"));
        Ok(())
    }

    fn update_status() -> Result<()> {
        charm_sdk::status_set(WorkloadStatus::Active, "checked");
        Ok(())
    }
}

/// The hooks unit `i` ran among `runs`.
fn hooks_of(runs: &[(usize, charm_sdk::testing::HookRun)], i: usize) -> Vec<Hook> {
    runs.iter().filter(|(unit, _)| *unit == i).map(|(_, run)| run.hook).collect()
}

#[test]
fn a_crashed_unit_runs_nothing_a_restarted_one_remembers_and_operators_write() {
    let mut app = App::<Observer>::new("obs", 3);
    app.elect(0);
    let runs = app.settle();
    // The JSON value and the other key came in one group: one write, one hook per minion.
    assert_eq!(runs.iter().filter(|(_, run)| !run.writes.is_empty()).count(), 1);
    assert_eq!(app.settings()["config"], "[1,2]");
    assert_eq!(hooks_of(&runs, 1), [Hook::Install, Hook::LeaderSettingsChanged]);
    assert_eq!(app.unit(1).status(), Some((WorkloadStatus::Active, "Some([1, 2]) from Some(\"obs/0\")".into())));

    // The leader's agent dies: no leader-deposed, nobody leads until an election.
    app.crash(0);
    assert_eq!(app.leader(), None);
    app.elect(1);
    let runs = app.settle();
    assert!(hooks_of(&runs, 0).is_empty(), "nothing runs on a crashed unit: {runs:?}");
    assert_eq!(hooks_of(&runs, 1), [Hook::LeaderElected]);
    assert_eq!(app.settings()["owner"], "obs/1");

    // Back, it is installed already and hears only of what changed while it was down.
    app.restart(0);
    assert_eq!(hooks_of(&app.settle(), 0), [Hook::LeaderSettingsChanged]);

    // An operator's write through the leader's tools: the minions hear of it.
    app.set_settings([("owner", "operator")]);
    let runs = app.settle();
    assert_eq!((hooks_of(&runs, 0), hooks_of(&runs, 1)), (vec![Hook::LeaderSettingsChanged], vec![]));
    assert_eq!(hooks_of(&runs, 2), [Hook::LeaderSettingsChanged]);

    // update-status: now on request, and every 5 minutes of virtual time.
    app.update_status();
    let runs = app.settle();
    assert!((0..3).all(|i| hooks_of(&runs, i) == [Hook::UpdateStatus]), "{runs:?}");
    assert_eq!(app.unit(2).status(), Some((WorkloadStatus::Active, "checked".into())));
    app.advance(Duration::from_secs(299));
    assert!(app.settle().is_empty());
    app.advance(Duration::from_secs(600));
    let runs = app.settle();
    assert!((0..3).all(|i| hooks_of(&runs, i) == [Hook::UpdateStatus]), "periods that passed make one: {runs:?}");
}
