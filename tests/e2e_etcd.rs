//! Three agents as separate processes, each with its own state directory (three
//! "machines" that share nothing but etcd), on a real three-member etcd cluster the test
//! starts. Faults: SIGTERM, SIGKILL and SIGSTOP of the leader agent, the leader cut off
//! from etcd through proxies the test controls, and the etcd leader member killed and
//! stopped. After every run a checker merges each agent's tenure record (what it believed,
//! on the machine's one `CLOCK_BOOTTIME`) and the acknowledged writes: tenures never
//! overlap, terms rise from one holder to the next, every acknowledged write is in the
//! store, and a deposed leader's late write is refused.

mod support;

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use support::etcd::EtcdCluster;
use support::proxy::Proxy;
use support::{BIN, hooks_in, json_lines, leader_answer, wait_for, workspace};

const WINDOW: &str = "2s";
const WINDOW_NS: u64 = 2_000_000_000;

/// One agent on its own "machine".
struct Machine {
    unit: String,
    state: tempfile::TempDir,
    log: PathBuf,
    child: Option<Child>,
    /// Its way to each etcd member, when the test may cut it off.
    proxies: Vec<Proxy>,
}

/// One scenario at a time: each runs three etcd members and three agents, which is all a
/// loaded 2-core machine should time at once.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

struct Machines {
    etcd: EtcdCluster,
    cache: tempfile::TempDir,
    logs: tempfile::TempDir,
    machines: Vec<Machine>,
    /// Keys of writes `leader-set` acknowledged.
    acknowledged: Vec<String>,
    /// Released last, once everything above is gone.
    _turn: std::sync::MutexGuard<'static, ()>,
}

impl Drop for Machines {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // What each agent logged, so a failure on CI says what the agents saw.
            for machine in &self.machines {
                let log = std::fs::read_to_string(&machine.log).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(40).collect();
                eprintln!("--- {} ({}), last lines:", machine.unit, machine.log.display());
                for line in tail.iter().rev() {
                    eprintln!("{line}");
                }
            }
        }
        for machine in &mut self.machines {
            if let Some(child) = &mut machine.child {
                let _ = Command::new("kill").args(["-CONT", &child.id().to_string()]).status();
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

impl Machines {
    /// A three-member cluster and `units` agents of `db`, each reaching etcd through
    /// proxies if `proxied`.
    fn start(units: usize, proxied: bool) -> Self {
        let names: Vec<String> = (0..units).map(|n| format!("db/{n}")).collect();
        Self::start_units(&names, proxied)
    }

    /// `units` agents of `db` on a cluster of one member (whose data a test may put back).
    fn start_on_one_member(units: usize) -> Self {
        let names: Vec<String> = (0..units).map(|n| format!("db/{n}")).collect();
        Self::launch_all(EtcdCluster::start(1), &names, false)
    }

    /// A three-member cluster and one agent per name in `units` (a name may repeat: the same
    /// unit on two machines), each reaching etcd through proxies if `proxied`.
    fn start_units(units: &[String], proxied: bool) -> Self {
        Self::launch_all(EtcdCluster::start(3), units, proxied)
    }

    fn launch_all(etcd: EtcdCluster, units: &[String], proxied: bool) -> Self {
        let turn = ONE_AT_A_TIME.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut all = Self {
            etcd,
            cache: tempfile::tempdir().unwrap(),
            logs: tempfile::tempdir().unwrap(),
            machines: Vec::new(),
            acknowledged: Vec::new(),
            _turn: turn,
        };
        for unit in units {
            all.add(unit, proxied);
        }
        all
    }

    /// One more machine running an agent of `unit`; its index.
    fn add(&mut self, unit: &str, proxied: bool) -> usize {
        let n = self.machines.len();
        let proxies =
            if proxied { self.etcd.members.iter().map(|m| Proxy::start(m.client_port)).collect() } else { Vec::new() };
        let log = self.logs.path().join(format!("machine-{n}.log"));
        self.machines.push(Machine {
            unit: unit.to_owned(),
            state: tempfile::tempdir().unwrap(),
            log,
            child: None,
            proxies,
        });
        self.launch(n);
        n
    }

    fn url(&self, n: usize) -> String {
        let machine = &self.machines[n];
        if machine.proxies.is_empty() {
            return self.etcd.url();
        }
        let hosts: Vec<String> = machine.proxies.iter().map(|p| format!("127.0.0.1:{}", p.port)).collect();
        format!("etcd://{}/test", hosts.join(","))
    }

    fn launch(&mut self, n: usize) {
        let url = self.url(n);
        let machine = &mut self.machines[n];
        let log = std::fs::File::create(&machine.log).unwrap();
        let child = Command::new(BIN)
            .args(["agent", "example-charms/shared-settings", "--unit", &machine.unit, "--json"])
            .arg("--state")
            .arg(machine.state.path())
            .args(["--store", &url, "--guarantee-window", WINDOW])
            .arg("--cache-dir")
            .arg(self.cache.path())
            .current_dir(workspace())
            .stdout(log)
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        machine.child = Some(child);
    }

    fn tool(&self, n: usize, args: &[&str]) -> Output {
        let machine = &self.machines[n];
        Command::new(BIN)
            .args(args)
            .args(["--unit", &machine.unit])
            .arg("--state")
            .arg(machine.state.path())
            .output()
            .unwrap()
    }

    fn is_leader(&self, n: usize) -> Option<bool> {
        leader_answer(&self.tool(n, &["is-leader"]))
    }

    /// Waits until exactly one of the running agents `among` answers `is-leader` True.
    fn wait_one_leader(&self, among: &[usize]) -> usize {
        let mut leader = None;
        wait_for("exactly one leader", || {
            let leaders: Vec<usize> = among.iter().copied().filter(|&n| self.is_leader(n) == Some(true)).collect();
            leader = leaders.first().copied();
            leaders.len() == 1
        });
        leader.unwrap()
    }

    /// Samples `is-leader` on every machine of `among`, a round every 50 ms, until `done`
    /// (asked after each round) says enough; fails if two answer True in one round.
    fn never_two_leaders(&self, among: &[usize], mut done: impl FnMut(&Self, usize) -> bool) {
        let limit = std::time::Instant::now() + Duration::from_secs(120);
        for round in 0.. {
            let leaders: Vec<usize> = among.iter().copied().filter(|&n| self.is_leader(n) == Some(true)).collect();
            let units: Vec<&str> = leaders.iter().map(|&n| self.machines[n].unit.as_str()).collect();
            assert!(leaders.len() <= 1, "round {round}: machines {leaders:?} ({units:?}) all answered is-leader True");
            if done(self, round) {
                return;
            }
            assert!(std::time::Instant::now() < limit, "still waiting after {round} rounds");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Whether machine `n`'s agent logged a line containing `text`.
    fn logged(&self, n: usize, text: &str) -> bool {
        json_lines(&self.machines[n].log).iter().any(|e| e["message"].as_str().is_some_and(|m| m.contains(text)))
    }

    fn signal(&mut self, n: usize, signal: &str) {
        let child = self.machines[n].child.as_mut().unwrap();
        let status = Command::new("kill").args([&format!("-{signal}"), &child.id().to_string()]).status().unwrap();
        assert!(status.success());
        if signal == "KILL" {
            let _ = child.wait();
            self.machines[n].child = None;
        }
    }

    fn wait_exit(&mut self, n: usize) {
        if let Some(mut child) = self.machines[n].child.take() {
            assert!(child.wait().unwrap().success(), "{} exited with an error", self.machines[n].unit);
        }
    }

    fn hooks(&self, n: usize) -> Vec<String> {
        hooks_in(&json_lines(&self.machines[n].log))
    }

    /// `leader-set KEY=n` through agent `n`; remembered when acknowledged.
    fn write(&mut self, n: usize, key: &str) -> bool {
        let out = self.tool(n, &["leader-set", &format!("{key}={n}")]);
        if out.status.success() {
            self.acknowledged.push(key.to_owned());
        }
        out.status.success()
    }

    /// The tenures every agent believed in, checked against each other; every acknowledged
    /// write is in the store.
    fn check(&self) -> Vec<Tenure> {
        let mut tenures: Vec<Tenure> = Vec::new();
        for (n, machine) in self.machines.iter().enumerate() {
            tenures.extend(read_tenures(n, machine));
        }
        tenures.sort_by_key(|t| t.from_ns);
        for pair in tenures.windows(2) {
            let (a, b) = (&pair[0], &pair[1]);
            assert!(
                a.end_ns() <= b.from_ns,
                "{} believed it led (term {}) until {} but {} believed it (term {}) from {}",
                a.unit,
                a.term,
                a.end_ns(),
                b.unit,
                b.term,
                b.from_ns
            );
            // A unit that deposed itself may find its own tenure still live (etcd gives every
            // lease its full TTL again at each etcd leader change) and lead again at that term.
            assert!(
                b.term > a.term || (b.term == a.term && b.machine == a.machine),
                "terms must rise: {a:?} then {b:?}"
            );
        }
        let status = Command::new(BIN)
            .args(["status", "--json", "--store", &self.etcd.url()])
            .arg("--state")
            .arg(self.machines[0].state.path())
            .output()
            .unwrap();
        assert!(status.status.success(), "status failed: {}", String::from_utf8_lossy(&status.stderr));
        let report: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
        let app =
            report["applications"].as_array().unwrap().iter().find(|a| a["application"] == "db").cloned().unwrap();
        for key in &self.acknowledged {
            assert!(app["settings"].get(key).is_some(), "the acknowledged write {key} is lost: {}", app["settings"]);
        }
        tenures
    }
}

/// One agent's tenure, as its record tells it.
#[derive(Debug, Clone)]
struct Tenure {
    unit: String,
    /// The machine whose agent believed it (two may run the same unit).
    machine: usize,
    record: charm_host::tenure_record::Belief,
}

impl std::ops::Deref for Tenure {
    type Target = charm_host::tenure_record::Belief;

    fn deref(&self) -> &Self::Target {
        &self.record
    }
}

/// One agent's tenure record (see `charm_host::tenure_record`).
fn read_tenures(n: usize, machine: &Machine) -> Vec<Tenure> {
    let unit = machine.unit.as_str();
    let number = unit.rsplit('/').next().unwrap();
    let path = machine.state.path().join(format!("units/db-{number}/tenures.jsonl"));
    let records = charm_host::tenure_record::read(&path).unwrap_or_else(|e| panic!("{e}"));
    records.into_iter().map(|record| Tenure { unit: unit.to_owned(), machine: n, record }).collect()
}

/// The last tenure of `unit` in `tenures`.
fn last_of<'a>(tenures: &'a [Tenure], unit: &str) -> &'a Tenure {
    tenures.iter().rev().find(|t| t.unit == unit).unwrap_or_else(|| panic!("{unit} never led"))
}

#[test]
fn sigterm_of_the_leader_hands_over_before_its_lease_could_expire() {
    let mut m = Machines::start(3, false);
    let leader = m.wait_one_leader(&[0, 1, 2]);
    assert!(m.write(leader, "before"));
    m.signal(leader, "TERM");
    m.wait_exit(leader);
    let rest: Vec<usize> = (0..3).filter(|&n| n != leader).collect();
    let next = m.wait_one_leader(&rest);
    assert!(m.write(next, "after"));
    let tenures = m.check();
    let (old, new) = (last_of(&tenures, &m.machines[leader].unit), last_of(&tenures, &m.machines[next].unit));
    assert!(old.ended_ns.is_some(), "a graceful stop records its end");
    assert!(new.from_ns < old.until_ns + WINDOW_NS, "the successor led before the old lease could have expired");
    assert_eq!(m.hooks(leader)[m.hooks(leader).len() - 2..], ["leader-deposed", "stop"]);
}

#[test]
fn sigkill_of_the_leader_hands_over_only_after_its_lease_expired() {
    let mut m = Machines::start(3, false);
    let leader = m.wait_one_leader(&[0, 1, 2]);
    m.signal(leader, "KILL");
    let rest: Vec<usize> = (0..3).filter(|&n| n != leader).collect();
    let next = m.wait_one_leader(&rest);
    let tenures = m.check();
    let (old, new) = (last_of(&tenures, &m.machines[leader].unit), last_of(&tenures, &m.machines[next].unit));
    // The server expired the lease no earlier than the holder's own start + TTL, which is
    // at least its last guarantee plus the window.
    assert!(new.from_ns >= old.until_ns + WINDOW_NS, "the successor led before the dead leader's lease expired");
    assert!(!m.hooks(leader).contains(&"leader-deposed".to_owned()), "a killed agent runs nothing");
}

#[test]
fn a_leader_stopped_past_its_lease_deposes_itself_and_its_late_write_is_refused() {
    let mut m = Machines::start(3, false);
    let leader = m.wait_one_leader(&[0, 1, 2]);
    m.signal(leader, "STOP");
    let rest: Vec<usize> = (0..3).filter(|&n| n != leader).collect();
    let next = m.wait_one_leader(&rest);
    assert!(m.write(next, "by-successor"));
    m.signal(leader, "CONT");
    // Its first answer after waking is already false: the guarantee is read off the clock.
    assert!(!m.write(leader, "late"), "a deposed leader's late leader-set must be refused");
    wait_for("the old leader runs leader-deposed", || m.hooks(leader).contains(&"leader-deposed".to_owned()));
    assert_eq!(m.is_leader(leader), Some(false));
    m.check();
    let status = m.tool(next, &["leader-get", "late"]);
    assert_eq!(String::from_utf8_lossy(&status.stdout).trim(), "", "the refused write is not in the store");
}

#[test]
fn a_leader_cut_off_from_etcd_deposes_itself_before_another_leads() {
    let mut m = Machines::start(3, true);
    let leader = m.wait_one_leader(&[0, 1, 2]);
    for proxy in &m.machines[leader].proxies {
        proxy.cut();
    }
    let rest: Vec<usize> = (0..3).filter(|&n| n != leader).collect();
    let next = m.wait_one_leader(&rest);
    assert!(m.write(next, "while-cut"));
    // The cut-off leader says it cannot tell (or no), never yes, and has deposed itself.
    assert_ne!(m.is_leader(leader), Some(true));
    wait_for("the cut-off leader runs leader-deposed", || m.hooks(leader).contains(&"leader-deposed".to_owned()));
    assert!(!m.write(leader, "from-the-cut-off"), "a cut-off leader cannot write");
    let tenures = m.check();
    let (old, new) = (last_of(&tenures, &m.machines[leader].unit), last_of(&tenures, &m.machines[next].unit));
    assert!(old.end_ns() <= new.from_ns);
    // Healed, it comes back as a minion and hears of the write made meanwhile.
    for proxy in &m.machines[leader].proxies {
        proxy.heal();
    }
    wait_for("the healed unit answers again", || m.is_leader(leader) == Some(false));
    wait_for("the healed unit sees the write made while it was cut off", || {
        String::from_utf8_lossy(&m.tool(leader, &["leader-get", "while-cut"]).stdout).trim() == next.to_string()
    });
    m.check();
}

/// A unit started on a second machine while it runs on the first (a machine re-provisioned
/// while the old one was thought dead, a cloned VM): the copy is another incarnation of the
/// unit, which waits for the first one's tenure to end, and says so. `is-leader` is sampled
/// on every machine throughout: never two True in one round.
#[test]
fn the_same_unit_on_a_second_machine_never_leads_beside_the_first() {
    let mut m = Machines::start_units(&["db/0".into(), "db/1".into()], false);
    let leader = m.wait_one_leader(&[0, 1]);
    let other = 1 - leader;
    let unit = m.machines[leader].unit.clone();
    let copy = m.add(&unit, false);
    let all = [0, 1, copy];
    m.never_two_leaders(&all, |m, _| m.logged(copy, "is also running elsewhere"));
    // Two more windows of renewals by both copies: still one leader, the first.
    m.never_two_leaders(&all, |_, round| round >= 80);
    assert_eq!(m.is_leader(leader), Some(true));
    assert_eq!(m.is_leader(copy), Some(false));
    assert!(!m.write(copy, "from-the-copy"), "the copy cannot write under the first one's tenure");
    assert!(m.write(leader, "from-the-first"));
    let status = m.tool(copy, &["is-leader", "--format", "json"]);
    assert_eq!(String::from_utf8_lossy(&status.stdout).trim(), "false");
    // The first machine dies: the copy, or the other unit, leads only once its lease ran out,
    // at a new term.
    m.signal(leader, "KILL");
    let rest = [other, copy];
    m.never_two_leaders(&rest, |m, _| rest.iter().any(|&n| m.is_leader(n) == Some(true)));
    let tenures = m.check();
    let first = tenures.iter().rev().find(|t| t.machine == leader).expect("the first machine led");
    let next = tenures.iter().find(|t| t.machine != leader).expect("another machine leads");
    assert!(next.term > first.term, "a new tenure: {first:?} then {next:?}");
    assert!(next.from_ns >= first.until_ns + WINDOW_NS, "not before the dead machine's lease ran out");
}

/// The etcd prefix wiped (a range delete of everything under it) while agents run: their
/// next transaction fails its guard on the store's identity, so they stop deciding on it at
/// once (the leader is deposed, `is-leader` answers unknown); a unit that joins makes a new
/// store there, which grants nothing until every lease of the lost one ran out. `is-leader`
/// is sampled on every unit throughout: never two True in one round.
#[test]
fn a_prefix_wiped_under_running_agents_never_gives_two_leaders() {
    let mut m = Machines::start(2, false);
    let leader = m.wait_one_leader(&[0, 1]);
    let endpoint = format!("127.0.0.1:{}", m.etcd.members[0].client_port);
    support::block_on(async {
        let mut client = etcd_client::Client::connect([endpoint], None).await.unwrap();
        client.delete("/test/", Some(etcd_client::DeleteOptions::new().with_prefix())).await.unwrap();
    });
    m.never_two_leaders(&[0, 1], |m, _| m.logged(leader, "was wiped"));
    assert_eq!(m.is_leader(leader), None, "a lost store: unknown, not False");
    wait_for("the old leader's leader-deposed", || m.hooks(leader).contains(&"leader-deposed".to_owned()));
    let newcomer = m.add("db/2", false);
    m.never_two_leaders(&[0, 1, newcomer], |m, _| m.is_leader(newcomer) == Some(true));
    assert!(m.logged(newcomer, "no unit leads for"), "the new store made it wait, and it said so");
    assert_eq!(m.is_leader(1 - leader), None, "the old agents decide nothing on the new store");
}

/// The whole etcd cluster down long enough for the leader to depose itself, then back on its
/// data: etcd gives every lease its whole TTL again, so the old tenure is still in the store.
/// The deposed unit does not resume it: it ends it (the history says `lost-renewals`), and
/// whoever leads next does so at a new term, with `leader-elected`.
#[test]
fn a_leader_deposed_by_an_etcd_outage_does_not_resume_its_old_tenure() {
    let mut m = Machines::start(2, false);
    let leader = m.wait_one_leader(&[0, 1]);
    let elected = |m: &Machines, n: usize| m.hooks(n).iter().filter(|h| *h == "leader-elected").count();
    let elected_before = elected(&m, 0) + elected(&m, 1);
    for i in 0..3 {
        m.etcd.kill(i);
    }
    wait_for("the leader's leader-deposed", || m.hooks(leader).contains(&"leader-deposed".to_owned()));
    for i in 0..3 {
        m.etcd.restart(i);
    }
    m.etcd.wait_healthy();
    m.never_two_leaders(&[0, 1], |m, _| [0, 1].iter().any(|&n| m.is_leader(n) == Some(true)));
    let next = m.wait_one_leader(&[0, 1]);
    wait_for("leader-elected for the new tenure", || elected(&m, 0) + elected(&m, 1) > elected_before);
    let hooks = m.hooks(next);
    let last_leadership = hooks.iter().rev().find(|h| *h == "leader-elected" || *h == "leader-deposed");
    assert_eq!(last_leadership.map(String::as_str), Some("leader-elected"), "{next}: {hooks:?}");
    let out = Command::new(BIN).args(["history", "--json", "--store", &m.etcd.url()]).output().unwrap();
    let history: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let tenures = history["tenures"].as_array().unwrap();
    assert!(tenures.len() >= 2 && tenures[1]["how"].is_string(), "the deposed tenure ended: {history}");
    assert!(tenures[0]["term"].as_u64() > tenures[1]["term"].as_u64(), "{history}");
    m.check();
}

/// The cluster put back to an older copy of its data while agents run (a restore of an
/// older backup of the member's data directory: the same cluster, its revisions rewound):
/// every agent's next answer comes at a revision below one it saw, so it stops deciding on
/// that store at once (the leader is deposed, `is-leader` answers unknown). `is-leader` is
/// sampled on every unit throughout: never two True in one round.
#[test]
fn a_cluster_put_back_to_older_data_never_gives_two_leaders() {
    let mut m = Machines::start_on_one_member(2);
    let leader = m.wait_one_leader(&[0, 1]);
    let (data, backup) = (m.etcd.data_dir(0), m.logs.path().join("etcd-backup"));
    m.etcd.signal(0, "STOP");
    let copied = Command::new("cp").arg("-a").arg(&data).arg(&backup).status().unwrap();
    m.etcd.signal(0, "CONT");
    assert!(copied.success());
    // Renewals and a write move the revision on, past the copy.
    assert!(m.write(leader, "after-the-copy"));
    m.never_two_leaders(&[0, 1], |_, round| round >= 20);
    m.etcd.kill(0);
    std::fs::remove_dir_all(&data).unwrap();
    assert!(Command::new("mv").arg(&backup).arg(&data).status().unwrap().success());
    m.etcd.restart(0);
    m.etcd.wait_healthy();
    m.never_two_leaders(&[0, 1], |m, _| m.logged(leader, "went back in time"));
    assert_eq!(m.is_leader(leader), None, "an older store: unknown, not False");
    wait_for("the old leader's leader-deposed", || m.hooks(leader).contains(&"leader-deposed".to_owned()));
    m.acknowledged.clear(); // the restore lost them: that is what a restore does
}

/// The etcd member that leads the cluster, by asking each member.
fn etcd_leader(cluster: &EtcdCluster, running: &[usize]) -> usize {
    let tokio = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    tokio.block_on(async {
        for _ in 0..500 {
            for &i in running {
                let endpoint = format!("127.0.0.1:{}", cluster.members[i].client_port);
                let Ok(mut client) = etcd_client::Client::connect([endpoint], None).await else { continue };
                let Ok(status) = client.status().await else { continue };
                if status.header().is_some_and(|h| h.member_id() == status.leader()) {
                    return i;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("no etcd member leads");
    })
}

#[test]
fn the_etcd_leader_member_killed_and_stopped_loses_no_acknowledged_write() {
    let mut m = Machines::start(3, false);
    let mut writes = 0;
    let mut write_through_leader = |m: &mut Machines| {
        for n in 0..3 {
            if m.is_leader(n) == Some(true) {
                writes += 1;
                m.write(n, &format!("w{writes}"));
            }
        }
    };
    m.wait_one_leader(&[0, 1, 2]);
    for _ in 0..5 {
        write_through_leader(&mut m);
    }
    let first = etcd_leader(&m.etcd, &[0, 1, 2]);
    m.etcd.kill(first);
    for _ in 0..20 {
        write_through_leader(&mut m);
    }
    // Back to three members, then the (new) etcd leader freezes: the other two elect
    // another and go on.
    m.etcd.restart(first);
    m.etcd.wait_healthy();
    let second = etcd_leader(&m.etcd, &[0, 1, 2]);
    m.etcd.signal(second, "STOP");
    for _ in 0..20 {
        write_through_leader(&mut m);
    }
    m.etcd.signal(second, "CONT");
    m.etcd.wait_healthy();
    m.wait_one_leader(&[0, 1, 2]);
    for _ in 0..5 {
        write_through_leader(&mut m);
    }
    assert!(m.acknowledged.len() >= 5, "some writes were acknowledged: {:?}", m.acknowledged);
    m.check();
}

#[test]
fn elect_on_one_machine_hands_over_from_a_leader_on_another() {
    let mut m = Machines::start(2, false);
    let leader = m.wait_one_leader(&[0, 1]);
    let target = 1 - leader;
    wait_for("the target's agent answers", || m.is_leader(target) == Some(false));
    let out = Command::new(BIN)
        .args(["elect", &m.machines[target].unit, "--store", &m.etcd.url()])
        .arg("--state")
        .arg(m.machines[target].state.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "elect failed: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(m.wait_one_leader(&[0, 1]), target);
    wait_for("the old leader ran leader-deposed", || m.hooks(leader).contains(&"leader-deposed".to_owned()));
    assert!(m.write(target, "after-elect"));
    let tenures = m.check();
    let (old, new) = (last_of(&tenures, &m.machines[leader].unit), last_of(&tenures, &m.machines[target].unit));
    assert!(old.ended_ns.is_some() && new.from_ns < old.until_ns + WINDOW_NS, "handed over, not expired");
}

#[test]
fn bad_store_urls_and_unreachable_clusters_get_clear_errors() {
    let state = tempfile::tempdir().unwrap();
    let agent = |store: &str| {
        Command::new(BIN)
            .args(["agent", "example-charms/shared-settings", "--unit", "db/0", "--store", store])
            .arg("--state")
            .arg(state.path())
            .current_dir(workspace())
            .output()
            .unwrap()
    };
    let out = agent("http://127.0.0.1:2379");
    assert_eq!(out.status.code(), Some(2), "a bad URL is a usage error");
    assert!(String::from_utf8_lossy(&out.stderr).contains("etcd://"), "{}", String::from_utf8_lossy(&out.stderr));
    // Nothing listens on a port just freed: the agent says so and exits, it does not hang.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let out = agent(&format!("etcd://127.0.0.1:{port}"));
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot reach etcd") && stderr.contains(&port.to_string()), "{stderr}");
    let out = Command::new(BIN)
        .args(["status", "--store", &format!("etcd://127.0.0.1:{port}")])
        .arg("--state")
        .arg(state.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach etcd"));
}

#[test]
fn run_shares_one_application_through_etcd() {
    let etcd = EtcdCluster::start(1);
    let cache = tempfile::tempdir().unwrap();
    // A new store grants its first lease one claim duration (4 s here) after it was made.
    let out = Command::new(BIN)
        .args([
            "run",
            "example-charms/shared-settings",
            "--units",
            "3",
            "--for",
            "8s",
            "--json",
            "--guarantee-window",
            "2s",
        ])
        .args(["--store", &etcd.url()])
        .arg("--cache-dir")
        .arg(cache.path())
        .current_dir(workspace())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<serde_json::Value> =
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let elected: Vec<&serde_json::Value> =
        lines.iter().filter(|e| e["type"] == "leadership" && e["leader"] == true).collect();
    assert_eq!(elected.len(), 1, "one unit led: {elected:?}");
    let last = lines.last().unwrap();
    assert_eq!(last["type"], "status");
    assert!(last["leader"].is_null(), "the leader gave its lease up at the stop: {last}");
    assert!(
        last["units"].as_array().unwrap().iter().all(|u| u["agent"] == "stopped"),
        "each unit ended stopped: {last}"
    );
    assert!(last["settings"]["cluster-id"].is_string(), "the leader's settings are in etcd: {last}");
    // The tenure is in etcd's history, ended by the stop.
    let out = Command::new(BIN).args(["history", "--json", "--store", &etcd.url()]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let history: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let tenures = history["tenures"].as_array().unwrap();
    assert_eq!(tenures.len(), 1, "{history}");
    assert_eq!(tenures[0]["unit"], elected[0]["unit"]);
    assert_eq!(
        (&tenures[0]["term"], &tenures[0]["how"]),
        (&elected[0]["term"], &serde_json::json!("stop")),
        "{history}"
    );
}
