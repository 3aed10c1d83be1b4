//! The charm's own tests: natively with `cargo test` (charm_sdk::testing), and on the real
//! host in virtual time (charm_host::testing::TestApp).

use charm_sdk::WorkloadStatus;
use charm_sdk::testing::{App, Hook};

use super::{APPLIED, PeerConfigCharm as Charm, TARGETS, TARGETS_FILE, VERSION, addresses_of};

/// The addresses in `targets`, sorted.
fn addresses(settings: &std::collections::BTreeMap<String, String>) -> Vec<String> {
    let text = settings.get(TARGETS).cloned().unwrap_or_default();
    text.lines().filter_map(|l| l.split_once(' ')).map(|(a, _)| a.to_owned()).collect()
}

/// The addresses units `numbers` publish, sorted.
fn published(numbers: impl IntoIterator<Item = u32>) -> Vec<String> {
    let mut all: Vec<String> =
        numbers.into_iter().flat_map(|n| addresses_of(n).split(',').map(str::to_owned).collect::<Vec<_>>()).collect();
    all.sort();
    all
}

#[test]
fn every_unit_renders_every_units_targets_and_the_leader_sees_them_applied() {
    let mut app = App::<Charm>::new("scrape", 3);
    app.elect(0);
    app.settle();
    let settings = app.settings();
    assert_eq!(addresses(&settings), published(0..3));
    let version = settings[VERSION].clone();
    for i in 0..3 {
        let file = std::fs::read_to_string(app.unit(i).data_dir().join(TARGETS_FILE)).unwrap();
        let groups: serde_json::Value = serde_json::from_str(&file).unwrap();
        assert_eq!(groups.as_array().unwrap().len(), 3, "one group per unit");
        assert_eq!(app.unit(0).unit_data(&format!("scrape/{i}")).unwrap()[APPLIED], version, "unit {i} acknowledged");
    }
    assert_eq!(app.unit(1).status(), Some((WorkloadStatus::Active, "6 targets".into())));
    let leader = app.unit(0).status().unwrap().1;
    assert_eq!(leader, format!("6 targets; all 3 units applied version {version}"));
    // The burst of three installs and three acknowledgements reached the leader in few hooks.
    let heard = app.hooks(0).iter().filter(|h| **h == Hook::UnitDataChanged).count();
    assert!(heard <= 3, "{:?}", app.hooks(0));
    assert!(app.hooks(1).iter().all(|h| *h != Hook::UnitDataChanged), "never on a minion");
}

#[test]
fn a_unit_that_leaves_is_dropped_from_the_targets() {
    let mut app = App::<Charm>::new("scrape", 3);
    app.elect(0);
    app.settle();
    app.remove_unit(2);
    app.settle();
    assert_eq!(addresses(&app.settings()), published(0..2));
    let version = app.settings()[VERSION].clone();
    assert_eq!(app.unit(0).status().unwrap().1, format!("4 targets; all 2 units applied version {version}"));
}

#[test]
fn the_successor_builds_the_full_list_when_the_leader_is_lost_mid_burst() {
    let mut app = App::<Charm>::new("scrape", 5);
    app.elect(0);
    app.settle();
    // Units 1 to 4 move to new addresses; the leader loses leadership before it hears.
    for i in 1..5 {
        app.set_unit_data(i, [(super::ADDRESSES, format!("192.168.0.{i}:9100"))]);
    }
    app.depose();
    app.elect(3);
    app.settle();
    let mut expected = published([0]);
    expected.extend((1..5).map(|i| format!("192.168.0.{i}:9100")));
    expected.sort();
    assert_eq!(addresses(&app.settings()), expected);
    let version = app.settings()[VERSION].clone();
    assert_eq!(app.unit(3).status().unwrap().1, format!("6 targets; all 5 units applied version {version}"));
}

/// On the real host, in virtual time: units join, one leaves, the leader crashes in the
/// middle of a burst of changes.
mod on_the_host {
    use std::time::Duration;

    use charm_host::hooks::HookKind;
    use charm_host::testing::TestApp;

    use super::super::{ADDRESSES, APPLIED, VERSION};
    use super::{addresses, published};

    fn app(units: u32) -> TestApp {
        TestApp::builder(env!("CARGO_MANIFEST_DIR")).app_name("scrape").units(units).build().unwrap()
    }

    /// Every member acknowledged the latest version.
    fn all_applied(app: &TestApp) -> bool {
        let version = app.settings().get(VERSION).cloned();
        let members = app.members();
        (0..app.len()).filter(|&i| app.unit_data(i).is_some()).count() == members.len()
            && (0..app.len()).filter_map(|i| app.unit_data(i)).all(|d| d.get(APPLIED) == version.as_ref())
    }

    #[test]
    fn units_join_and_leave_and_every_member_applies_the_latest_targets() {
        let mut app = app(3);
        app.settle();
        let leader = app.leader().unwrap();
        assert_eq!(addresses(&app.settings()), published(0..3));
        assert!(all_applied(&app));
        let joined = app.add_unit().unwrap();
        assert_eq!(addresses(&app.settings()), published(0..4), "the new unit's addresses are in");
        assert!(all_applied(&app));
        assert!(app.hooks(leader).contains(&HookKind::UnitDataChanged));
        assert!(!app.hooks(joined).contains(&HookKind::UnitDataChanged), "never on a minion");
        let leaving = (leader + 1) % 3;
        app.remove_unit(leaving).unwrap();
        let expected = published((0..4).filter(|n| *n as usize != leaving));
        assert_eq!(addresses(&app.settings()), expected);
        assert!(all_applied(&app));
        let status = app.statuses(leader).last().cloned().unwrap().1;
        assert!(status.ends_with(&format!("all 3 units applied version {}", app.settings()[VERSION])), "{status}");
    }

    #[test]
    fn the_successor_builds_the_full_list_after_the_leader_crashes_mid_burst() {
        let mut app = app(4);
        app.settle();
        let leader = app.leader().unwrap();
        // The leader is cut off from the store: it hears of the changes but cannot read them.
        app.partition(leader).unwrap();
        for i in (0..4).filter(|i| *i != leader) {
            app.set_unit_data(i, [(ADDRESSES, format!("192.168.0.{i}:9100"))]).unwrap();
        }
        app.crash(leader).unwrap();
        app.advance(Duration::from_secs(120));
        let successor = app.leader().unwrap();
        assert_ne!(successor, leader);
        let mut expected = published([leader as u32]);
        expected.extend((0..4).filter(|i| *i != leader).map(|i| format!("192.168.0.{i}:9100")));
        expected.sort();
        assert_eq!(addresses(&app.settings()), expected);
    }
}
