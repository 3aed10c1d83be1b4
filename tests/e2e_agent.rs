//! Black-box tests of `charm-host agent` processes sharing a state directory, and of the
//! hook tools that talk to them.

mod support;

use std::path::Path;
use std::time::Duration;

use charm_host::leadership::{Clock as _, LeadershipStore as _, MonotonicClock, SqliteStore};
use charm_host::names::AppName;

use support::*;

/// `unit-set` and `unit-get` as Juju's peer-relation tools, through the agents: a unit
/// writes its own data; only the leader reads another's; the leader hears of a change in
/// `unit-data-changed`; `remove-unit` deletes a member's data (refused while its agent runs).
#[test]
fn unit_data_tools_follow_the_peer_relation_tools() {
    let agents = Agents::leader_and_minion();
    let tool = |args: &[&str]| agents.tool(args);
    let err = |out: &std::process::Output| String::from_utf8_lossy(&out.stderr).into_owned();

    let out = tool(&["unit-set", "--unit", "db/1", "address=10.0.0.1", "eq=a=b"]);
    assert_eq!((out.status.code(), stdout(&out)), (Some(0), String::new()), "{}", err(&out));
    assert_eq!(stdout(&tool(&["unit-get", "--unit", "db/1", "address"])), "10.0.0.1\n", "its own, without UNIT");
    let out = tool(&["unit-get", "--unit", "db/1", "address", "db/0"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(err(&out), "ERROR cannot read unit data: only the leader reads other units' data\n");
    let all: serde_json::Value =
        serde_json::from_str(&stdout(&tool(&["unit-get", "--unit", "db/0", "--format", "json", "-", "db/1"]))).unwrap();
    assert_eq!(all, serde_json::json!({"address": "10.0.0.1", "eq": "a=b"}));
    assert_eq!(stdout(&tool(&["unit-get", "--unit", "db/0", "missing", "db/1"])), "", "nothing when absent");
    wait_for("the leader's unit-data-changed", || agents.hooks("db/0").iter().any(|h| h == "unit-data-changed"));
    assert!(!agents.hooks("db/1").iter().any(|h| h == "unit-data-changed"), "never on a minion");

    for bad in [
        &["unit-set", "--unit", "db/1", "nonsense"][..],
        &["unit-get", "--unit", "db/0", "k", "db/1", "x"],
        &["unit-get", "--unit", "db/0", "k", "not-a-unit"],
    ] {
        assert_eq!(tool(bad).status.code(), Some(2), "{bad:?}");
    }
    assert_eq!(tool(&["unit-set", "--unit", "db/1", "bad key=1"]).status.code(), Some(1), "the store refuses the key");

    // Removing a unit: refused while its agent answers, then done with --force.
    let out = tool(&["remove-unit", "db/1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(err(&out).contains("stop it first"), "{}", err(&out));
    let out = tool(&["remove-unit", "db/1", "--force"]);
    assert_eq!(out.status.code(), Some(0), "{}", err(&out));
    let out = tool(&["unit-set", "--unit", "db/1", "a=b"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(err(&out).contains("not a member"), "{}", err(&out));
    assert_eq!(stdout(&tool(&["unit-get", "--unit", "db/0", "--format", "json", "-", "db/1"])), "{}\n");
    let out = tool(&["remove-unit", "db/1", "--force"]);
    assert_eq!(out.status.code(), Some(1), "no longer a member");
    let status: serde_json::Value = serde_json::from_str(&stdout(&tool(&["status", "--json"]))).unwrap();
    let app = &status["applications"][0];
    assert_eq!(app["members"], serde_json::json!(["db/0"]));
    let db1 = app["units"].as_array().unwrap().iter().find(|u| u["unit"] == "db/1").unwrap();
    assert_eq!(db1["member"], false, "{db1}");
    assert!(stdout(&tool(&["status"])).contains("[removed: not a member]"));
}

#[test]
fn hook_tools_answer_in_every_format_with_juju_exit_codes() {
    let agents = Agents::leader_and_minion();

    let tool = |args: &[&str]| agents.tool(args);
    let out = tool(&["is-leader", "--unit", "db/0", "--format", "json"]);
    assert_eq!((out.status.code(), stdout(&out).trim()), (Some(0), "true"));
    let out = tool(&["is-leader", "--unit", "db/1", "--format", "yaml"]);
    assert_eq!((out.status.code(), stdout(&out).trim()), (Some(0), "false"));

    // The fencing token: the leader's term, a bare number; a minion is not the leader.
    let term = current_lease()(&agents).term;
    for format in ["smart", "json", "yaml"] {
        let out = tool(&["leader-term", "--unit", "db/0", "--format", format]);
        assert_eq!((out.status.code(), stdout(&out)), (Some(0), format!("{term}\n")), "{format}");
    }
    let out = tool(&["leader-term", "--unit", "db/1"]);
    assert_eq!((out.status.code(), stdout(&out)), (Some(1), String::new()));
    assert_eq!(String::from_utf8_lossy(&out.stderr), "ERROR db/1 is not the leader\n");

    let out = tool(&["leader-set", "--unit", "db/0", "greeting=hello world", "eq=a=b"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let out = tool(&["leader-get", "--unit", "db/1", "greeting"]);
    assert_eq!(stdout(&out), "hello world\n", "raw value");
    assert_eq!(stdout(&tool(&["leader-get", "--unit", "db/1", "eq"])), "a=b\n", "split at the first '='");
    assert_eq!(stdout(&tool(&["leader-get", "--unit", "db/1", "missing"])), "", "nothing when absent");
    assert_eq!(stdout(&tool(&["leader-get", "--unit", "db/1", "--format", "json", "missing"])), "null\n");
    assert_eq!(
        stdout(&tool(&["leader-get", "--unit", "db/1", "--format", "yaml", "missing"])),
        "",
        "yaml prints nothing for nil, as Juju's"
    );
    assert_eq!(stdout(&tool(&["leader-get", "--unit", "db/1", "--format", "json", "greeting"])), "\"hello world\"\n");
    let all: serde_json::Value =
        serde_json::from_str(&stdout(&tool(&["leader-get", "--unit", "db/1", "--format", "json", "-"]))).unwrap();
    assert_eq!(all["greeting"], "hello world");
    assert!(all["cluster-id"].as_str().unwrap().starts_with("cluster-"));
    let yaml = stdout(&tool(&["leader-get", "--unit", "db/1"]));
    assert!(yaml.contains("greeting: \"hello world\"\n") && yaml.contains("eq: \"a=b\"\n"), "{yaml}");

    // Deleting with an empty value.
    assert_eq!(tool(&["leader-set", "--unit", "db/0", "eq="]).status.code(), Some(0));
    assert_eq!(stdout(&tool(&["leader-get", "--unit", "db/1", "eq"])), "");

    // Errors: a minion is not the leader (1); usage errors (2); no agent (1).
    let out = tool(&["leader-set", "--unit", "db/1", "a=b"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not the leader"));
    for bad in [&["a"][..], &["a=1", "a=2"], &["=1"]] {
        let mut args = vec!["leader-set", "--unit", "db/0"];
        args.extend_from_slice(bad);
        assert_eq!(tool(&args).status.code(), Some(2), "{bad:?}");
    }
    assert_eq!(
        tool(&["leader-set", "--unit", "db/0", "bad key=1"]).status.code(),
        Some(1),
        "the store refuses the key"
    );
    assert_eq!(
        tool(&["leader-set", "--unit", "db/0"]).status.code(),
        Some(0),
        "no pairs: a write that changes nothing"
    );
    assert_eq!(tool(&["is-leader", "--unit", "db/9"]).status.code(), Some(1), "no agent runs for db/9");

    let status: serde_json::Value = serde_json::from_str(&stdout(&tool(&["status", "--json"]))).unwrap();
    let app = &status["applications"][0];
    assert_eq!(app["application"], "db");
    assert_eq!(app["leader"], "db/0");
    assert_eq!(app["units"].as_array().unwrap().len(), 2);
    assert_eq!(app["settings"]["greeting"], "hello world");
}

#[test]
fn tools_answer_while_a_hook_is_running() {
    let mut agents = Agents::new();
    let data = agents.state.path().join("units/probe-0/data");
    std::fs::create_dir_all(&data).unwrap();
    // An install that outlasts the test: the tool's answer must come while it runs.
    std::fs::write(data.join("script"), "sleep 3600000").unwrap();
    agents.start_with("tests/charms/probe", "probe/0", &["--hook-deadline", "1h"]);
    // The agent claims leadership while its install sleeps; the tool does not wait for it.
    agents.wait_leader("probe/0", true, Duration::from_secs(60));
    assert_eq!(agents.is_leader("probe/0"), Some(true));
    assert!(agents.hooks("probe/0").is_empty(), "install is still running");
}

/// The lease `db`'s leader holds now, as the store says (read-only).
fn current_lease() -> impl Fn(&Agents) -> charm_host::leadership::Lease {
    |agents| {
        let store = SqliteStore::open_read_only(&agents.state.path().join("state.db")).unwrap();
        support::block_on(store.lease(&AppName::new("db").unwrap())).unwrap().expect("a leader")
    }
}

/// `db/0` leading and `db/1` a minion, with a 30 s window: the old lease (twice the window)
/// outlasts any slowness of the machine.
fn leader_and_minion_with_a_long_window() -> Agents {
    let mut agents = Agents::new();
    agents.start_with("example-charms/shared-settings", "db/0", &["--guarantee-window", "30s"]);
    agents.wait_leader("db/0", true, Duration::from_secs(60));
    agents.start_with("example-charms/shared-settings", "db/1", &["--guarantee-window", "30s"]);
    agents.wait_leader("db/1", false, Duration::from_secs(60));
    agents
}

#[test]
fn sigterm_of_the_leader_hands_over_before_the_lease_would_expire() {
    let mut agents = leader_and_minion_with_a_long_window();
    let old = current_lease()(&agents);
    agents.signal("db/0", "TERM");
    agents.wait_leader("db/1", true, Duration::from_secs(60));
    assert!(MonotonicClock.now() < old.expires, "the successor led before the old lease could have expired");
    assert!(agents.wait_exit("db/0").success());
    assert_eq!(agents.hooks("db/0")[agents.hooks("db/0").len() - 2..], ["leader-deposed", "stop"]);
}

#[test]
fn sigkill_of_the_leader_hands_over_only_after_expiry() {
    let mut agents = Agents::leader_and_minion();
    // Any renewal after this reading only moves the expiry later.
    let old = current_lease()(&agents);
    agents.signal("db/0", "KILL");
    agents.wait_leader("db/1", true, Duration::from_secs(60));
    assert!(MonotonicClock.now() >= old.expires, "the successor led before the dead leader's lease expired");
    assert!(!agents.hooks("db/0").contains(&"leader-deposed".to_owned()), "a killed agent runs nothing");
}

/// An agent killed (SIGKILL) and started again in the same state directory on the same
/// boot: the unit's lock, free again, proves its old incarnation gone, so the new one ends
/// that tenure at once and leads at a new term (`leader-elected` again), instead of waiting
/// for the lease to run out; the history says how the old tenure ended.
#[test]
fn a_killed_leader_restarted_in_its_state_directory_takes_over_at_once_at_a_new_term() {
    let mut agents = leader_and_minion_with_a_long_window();
    let old = current_lease()(&agents);
    agents.signal("db/0", "KILL");
    agents.children.retain(|(unit, _)| unit != "db/0");
    agents.start_with("example-charms/shared-settings", "db/0", &["--guarantee-window", "30s"]);
    agents.wait_leader("db/0", true, Duration::from_secs(60));
    assert!(MonotonicClock.now() < old.expires, "the restarted unit waited for its own old lease");
    let new = current_lease()(&agents);
    assert_eq!((new.holder.as_str(), new.term), ("db/0", old.term + 1), "a new tenure");
    assert_ne!(new.incarnation, old.incarnation);
    wait_for("the new incarnation's leader-elected", || agents.hooks("db/0").contains(&"leader-elected".to_owned()));
    let history = agents.tool(&["history", "--json"]);
    let history: serde_json::Value = serde_json::from_slice(&history.stdout).expect("history --json");
    let tenures = history["tenures"].as_array().expect("tenures");
    let previous = tenures.iter().find(|t| t["term"] == old.term).unwrap_or_else(|| panic!("{history}"));
    assert_eq!(previous["how"], "restarted", "{previous}");
    assert!(!agents.hooks("db/1").contains(&"leader-elected".to_owned()), "nobody else led meanwhile");
}

#[test]
fn elect_hands_over_to_the_named_unit_and_step_down_to_any() {
    let mut agents = Agents::leader();
    for unit in ["db/1", "db/2"] {
        agents.start("example-charms/shared-settings", unit);
        agents.wait_leader(unit, false, Duration::from_secs(60));
    }
    let out = agents.tool(&["elect", "db/2"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout(&out).contains("db/2 leads db (term 2)"), "{}", stdout(&out));
    assert_eq!(agents.is_leader("db/2"), Some(true));
    wait_for("db/0's leader-deposed", || agents.hooks("db/0").contains(&"leader-deposed".to_owned()));
    assert!(!agents.hooks("db/1").contains(&"leader-elected".to_owned()), "only the named unit is elected");

    // step-down on a minion is refused; on the leader, another unit takes over at once.
    assert_eq!(agents.tool(&["step-down", "--unit", "db/1"]).status.code(), Some(1));
    assert_eq!(agents.tool(&["step-down", "--unit", "db/2"]).status.code(), Some(0));
    wait_for("a successor after step-down", || ["db/0", "db/1"].iter().any(|u| agents.is_leader(u) == Some(true)));
    assert_eq!(agents.tool(&["elect", "db/9"]).status.code(), Some(1), "no agent runs for db/9");
}

/// A port nothing listens on now (the agent binds it a moment later).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Three agent processes, each serving its unit's metrics: after `elect`, scraped over HTTP,
/// exactly one of them reports leading, the elected unit; the history says how the tenure
/// before it ended.
#[test]
fn after_elect_exactly_one_agent_reports_leading_in_its_metrics() {
    let mut agents = Agents::new();
    let units = ["db/0", "db/1", "db/2"];
    let mut urls = Vec::new();
    for unit in units {
        let addr = format!("127.0.0.1:{}", free_port());
        agents.start_with("example-charms/shared-settings", unit, &["--metrics-addr", &addr]);
        urls.push(format!("http://{addr}/metrics"));
    }
    wait_for("every agent answering, one leading", || {
        let answers: Vec<Option<bool>> = units.iter().map(|u| agents.is_leader(u)).collect();
        answers.iter().all(Option::is_some) && answers.contains(&Some(true))
    });
    let first = *units.iter().find(|u| agents.is_leader(u) == Some(true)).unwrap();
    let target = if first == "db/2" { "db/1" } else { "db/2" };
    let out = agents.tool(&["elect", target]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    // Each scrape reads one process; wait until every one answers and the old leader's
    // guarantee is gone from its own.
    let leading = || -> Option<Vec<String>> {
        let mut leading = Vec::new();
        for url in &urls {
            let text = support::metrics::scrape_blocking(url).ok()?;
            let series = support::metrics::series_by_unit(&text, "charm_host_unit_leader");
            if series.len() != 1 || !text.lines().any(|l| l == "charm_host_units 1") {
                return None;
            }
            leading.extend(series.into_iter().filter(|(_, v)| *v == 1.0).map(|(u, _)| u));
        }
        Some(leading)
    };
    wait_for("the handover in the metrics", || leading().is_some_and(|l| l.contains(&target.to_owned())));
    assert_eq!(leading().unwrap(), [target], "exactly one unit reports leading");
    let history: serde_json::Value = serde_json::from_str(&stdout(&agents.tool(&["history", "--json"]))).unwrap();
    let tenures = history["tenures"].as_array().unwrap();
    assert_eq!((tenures[0]["unit"].as_str(), tenures[0]["how"].as_str()), (Some(target), None), "{history}");
    assert_eq!((tenures[1]["unit"].as_str(), tenures[1]["how"].as_str()), (Some(first), Some("handover")), "{history}");
    assert!(tenures[0]["gap_before_seconds"].as_f64().is_some(), "the leaderless gap of the handover: {history}");
}

/// A leader-only service that appends `UNIT NANOS` to `file` every 20 ms while it runs.
fn ticker(unit: &str, file: &Path) -> String {
    format!("singleton=while true; do echo {unit} $(date +%s%N) >> {}; sleep 0.02; done", file.display())
}

/// The runs of the services in `file`: each maximal stretch of lines (in time order) from
/// one unit, as (unit, first, last). Two services running at once interleave their lines,
/// which shows as more, shorter runs than handovers.
fn service_runs(file: &Path) -> Vec<(String, u128, u128)> {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    let mut lines: Vec<(String, u128)> = text
        .lines()
        .filter_map(|l| l.split_once(' ').and_then(|(u, t)| Some((u.to_owned(), t.trim().parse().ok()?))))
        .collect();
    lines.sort_by_key(|l| l.1);
    let mut runs: Vec<(String, u128, u128)> = Vec::new();
    for (unit, t) in lines {
        match runs.last_mut() {
            Some((u, _, end)) if *u == unit => *end = t,
            _ => runs.push((unit, t, t)),
        }
    }
    runs
}

/// Waits until the latest lines in `file` are `unit`'s: its service runs now.
fn wait_ticking(file: &Path, unit: &str) {
    wait_for(&format!("{unit}'s service runs"), || service_runs(file).last().is_some_and(|r| r.0 == unit));
}

/// Asserts that the services ran one after another in `order` (two at once would show as
/// more runs), and returns the gaps between runs.
fn assert_ran_in_turn(file: &Path, order: &[&str]) -> Vec<Duration> {
    let runs = service_runs(file);
    let units: Vec<&str> = runs.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(units, order, "services ran at once or out of turn: {runs:?}");
    runs.windows(2).map(|w| Duration::from_nanos((w[1].1 - w[0].2) as u64)).collect()
}

#[test]
fn the_singleton_service_never_runs_on_two_units_at_once() {
    let mut agents = Agents::new();
    let file = agents.state.path().join("service.log");
    for unit in ["db/0", "db/1", "db/2"] {
        let service = ticker(unit, &file);
        let extra = ["--leader-service", &service, "--service-grace", "1s", "--guarantee-window", "5s"];
        agents.start_with("example-charms/singleton-service", unit, &extra);
        agents.wait_leader(unit, unit == "db/0", Duration::from_secs(60));
    }
    let leader = |agents: &Agents| {
        ["db/0", "db/1", "db/2"].into_iter().find(|u| agents.is_leader(u) == Some(true)).map(str::to_owned)
    };
    let wait_new_leader = |agents: &Agents, old: &str| {
        let mut new = None;
        wait_for(&format!("a new leader after {old}"), || {
            new = leader(agents).filter(|l| l != old);
            new.is_some()
        });
        let new = new.unwrap_or_default();
        wait_ticking(&file, &new);
        new
    };
    wait_ticking(&file, "db/0");

    // Step-down.
    assert_eq!(agents.tool(&["step-down", "--unit", "db/0"]).status.code(), Some(0));
    let second = wait_new_leader(&agents, "db/0");
    // Graceful stop of the leader.
    agents.signal(&second, "TERM");
    let third = wait_new_leader(&agents, &second);
    // Crash of the leader: its service dies with it; the successor waits for expiry.
    agents.signal(&third, "KILL");
    let fourth = wait_new_leader(&agents, &third);

    let gaps = assert_ran_in_turn(&file, &["db/0", second.as_str(), third.as_str(), fourth.as_str()]);
    // A graceful handover does not wait for the lease to expire; after a crash it must.
    assert!(gaps[0] < gaps[2] && gaps[1] < gaps[2], "graceful gaps shorter than the crash's: {gaps:?}");
    // The service ticks as soon as leader-elected starts it; the unit's status records it
    // once that hook has finished.
    let mut units = Vec::new();
    wait_for(&format!("{fourth}'s status to show its service"), || {
        let status: serde_json::Value = serde_json::from_str(&stdout(&agents.tool(&["status", "--json"]))).unwrap();
        units = status["applications"][0]["units"].as_array().unwrap().clone();
        units.iter().any(|u| u["unit"] == fourth.as_str() && u["services"][0]["running"] == true)
    });
    let running: Vec<_> = units.iter().filter(|u| u["services"][0]["running"] == true).collect();
    assert_eq!(running.len(), 1, "{units:?}");
    assert_eq!(units.iter().filter(|u| u["agent"] == "down").count(), 2, "one stopped, one killed: {units:?}");
    assert_eq!(running[0]["unit"], fourth.as_str());
    assert!(running[0]["services"][0]["pid"].is_u64());
}

#[test]
fn a_hanging_hook_does_not_keep_a_leader_only_service_running() {
    let mut agents = Agents::new();
    let file = agents.state.path().join("service.log");
    for unit in ["probe/0", "probe/1"] {
        let data = agents.state.path().join(format!("units/{}/data", unit.replace('/', "-")));
        std::fs::create_dir_all(&data).unwrap();
        std::fs::write(data.join("script-leader-elected"), "service-start singleton").unwrap();
        std::fs::write(data.join("script-leader-deposed"), "sleep 100000").unwrap();
        let service = ticker(unit, &file);
        agents.start_with("tests/charms/probe", unit, &["--leader-service", &service, "--hook-deadline", "3s"]);
        agents.wait_leader(unit, unit == "probe/0", Duration::from_secs(60));
    }
    wait_ticking(&file, "probe/0");
    assert_eq!(agents.tool(&["step-down", "--unit", "probe/0"]).status.code(), Some(0));
    // The deposed hook hangs until its deadline; the host stopped the service before it.
    agents.wait_leader("probe/1", true, Duration::from_secs(60));
    wait_ticking(&file, "probe/1");
    assert_ran_in_turn(&file, &["probe/0", "probe/1"]);
}
