//! Black-box tests of what `charm-host` guarantees against faults and other local users:
//! one agent per unit, a private state directory, a hook-tool socket that answers only its
//! user and stays bounded under abuse, requests never applied after their caller gave up,
//! a lost store refused, durations checked before anything is created, and read-only
//! commands that change nothing. Tests run as root here; `nobody` plays the other user.

mod support;

use std::io::Write as _;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use support::*;

const NOBODY: u32 = 65534;

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).mode() & 0o7777
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_second_agent_for_a_unit_is_refused_even_without_its_socket() {
    let mut agents = Agents::leader();
    let first = agents.pid("db/0");
    // Today's guard was the socket: without it, a second agent took over.
    std::fs::remove_file(agents.state.path().join("units/db-0/agent.sock")).unwrap();
    let out = agents.agent_command("example-charms/shared-settings", "db/0", &[]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains(&format!("another agent already runs db/0 as pid {first}")), "{}", stderr(&out));
    let (_, child) = agents.children.iter_mut().find(|(u, _)| u == "db/0").unwrap();
    assert!(child.try_wait().unwrap().is_none(), "the first agent still runs");
}

#[test]
fn the_state_directory_is_private_whatever_the_umask() {
    let mut agents = Agents::new();
    let mut command = Command::new("sh");
    let agent = agents.agent_command("example-charms/shared-settings", "db/0", &[]);
    let args: Vec<String> = std::iter::once(agent.get_program())
        .chain(agent.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    command.arg("-c").arg("umask 000; exec \"$@\"").arg("sh").args(&args).current_dir(workspace());
    agents.spawn("db/0", command);
    agents.wait_leader("db/0", true, Duration::from_secs(60));
    let root = agents.state.path();
    wait_for("the status record", || root.join("units/db-0/status.0").exists());
    for dir in ["", "units", "units/db-0", "units/db-0/data"] {
        assert_eq!(mode(&root.join(dir)), 0o700, "{dir}/");
    }
    for file in [
        "state.db",
        "state.db-wal",
        "state.db-shm",
        "units/db-0/agent.0",
        "units/db-0/status.0",
        "units/db-0/agent.lock",
        "units/db-0/agent.sock",
    ] {
        let path = root.join(file);
        if path.exists() {
            assert_eq!(mode(&path) & 0o077, 0, "{file} is open to others: {:o}", mode(&path));
        }
    }
    assert!(root.join("units/db-0/agent.0").exists());

    // Another user cannot read the secret through `status`.
    let out = Command::new(BIN).args(["status", "--state", agents.state()]).uid(NOBODY).gid(NOBODY).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(!String::from_utf8_lossy(&out.stdout).contains("cluster-"), "nobody read the settings");
}

#[test]
fn a_state_directory_another_user_controls_is_refused() {
    let agents = Agents::new();
    let foreign = agents.state.path().join("foreign");
    std::fs::create_dir(&foreign).unwrap();
    std::os::unix::fs::chown(&foreign, Some(NOBODY), Some(NOBODY)).unwrap();
    let open = agents.state.path().join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    for (dir, expected) in [(&foreign, "owned by uid 65534"), (&open, "writable by other users")] {
        let out = Command::new(BIN)
            .args(["agent", "example-charms/shared-settings", "--unit", "db/0", "--state"])
            .arg(dir)
            .current_dir(workspace())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        assert!(stderr(&out).contains(expected), "{}", stderr(&out));
        assert!(
            !dir.join("units").exists() && !dir.join("state.db").exists(),
            "nothing was created in {}",
            dir.display()
        );
    }
}

#[test]
fn records_are_never_written_through_planted_links() {
    let agents = Agents::new();
    let victim = agents.logs.path().join("victim");
    std::fs::write(&victim, "precious").unwrap();
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o600)).unwrap();
    // A link in place of each kind of record: the agent refuses to start, naming it.
    for (unit, slot) in [("db/0", "status.0"), ("db/1", "agent.1")] {
        let unit_dir = agents.state.path().join("units").join(unit.replace('/', "-"));
        std::fs::create_dir_all(&unit_dir).unwrap();
        std::os::unix::fs::symlink(&victim, unit_dir.join(slot)).unwrap();
        let out = agents.agent_command("example-charms/shared-settings", unit, &[]).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        assert!(stderr(&out).contains(slot) && stderr(&out).contains("symbolic links"), "{}", stderr(&out));
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious", "the link was not followed");
    }
}

#[test]
fn the_socket_answers_only_its_own_user() {
    let agents = Agents::leader();
    // Open the way to the socket, as a careless operator might.
    let root = agents.state.path();
    for dir in ["", "units", "units/db-0"] {
        std::fs::set_permissions(root.join(dir), std::fs::Permissions::from_mode(0o711)).unwrap();
    }
    std::fs::set_permissions(root.join("units/db-0/agent.sock"), std::fs::Permissions::from_mode(0o666)).unwrap();
    for tool in [
        &["is-leader", "--unit", "db/0"][..],
        &["leader-set", "--unit", "db/0", "stolen=yes"],
        &["step-down", "--unit", "db/0"],
    ] {
        let out =
            Command::new(BIN).args(tool).args(["--state", agents.state()]).uid(NOBODY).gid(NOBODY).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{tool:?}: {}", stderr(&out));
        assert!(stderr(&out).contains("permission denied: uid 65534"), "{tool:?}: {}", stderr(&out));
    }
    assert_eq!(agents.is_leader("db/0"), Some(true), "still the leader: the step-down was refused");
    let out = agents.tool(&["leader-get", "--unit", "db/0", "stolen"]);
    assert_eq!(stdout(&out), "", "the write was refused");
}

#[test]
fn a_request_whose_caller_gave_up_is_never_applied() {
    let mut agents = Agents::new();
    agents.start_with("example-charms/shared-settings", "db/0", &["--guarantee-window", "30s"]);
    agents.wait_leader("db/0", true, Duration::from_secs(60));
    let pid = agents.pid("db/0").to_string();
    assert!(Command::new("kill").args(["-STOP", &pid]).status().unwrap().success());
    let out = agents.tool(&["leader-set", "--unit", "db/0", "--timeout", "1s", "late=1"]);
    assert_eq!(out.status.code(), Some(3), "the caller gives up on a frozen agent, not knowing the outcome");
    assert!(stderr(&out).contains("may or may not have been applied"), "{}", stderr(&out));
    assert!(Command::new("kill").args(["-CONT", &pid]).status().unwrap().success());
    wait_for("the agent reports the dropped request", || {
        agents
            .log("db/0")
            .iter()
            .any(|l| l["message"].as_str().is_some_and(|m| m.contains("dropped leader-set request")))
    });
    assert_eq!(stdout(&agents.tool(&["leader-get", "--unit", "db/0", "late"])), "", "never applied");
    // Requests sent now are served as usual.
    assert_eq!(agents.tool(&["leader-set", "--unit", "db/0", "on-time=1"]).status.code(), Some(0));
    assert_eq!(stdout(&agents.tool(&["leader-get", "--unit", "db/0", "on-time"])), "1\n");
}

/// Resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn abuse_of_the_socket_costs_bounded_memory_and_real_tools_are_still_answered() {
    let agents = Agents::leader();
    let pid = agents.pid("db/0");
    let socket = agents.state.path().join("units/db-0/agent.sock");
    let before = rss_kib(pid);

    // 200 connections each sending most of a 2 MiB request, never finishing it.
    let chunk = vec![b'x'; 64 * 1024];
    let mut half_sent = Vec::new();
    for _ in 0..200 {
        let Ok(mut stream) = UnixStream::connect(&socket) else { continue };
        stream.set_write_timeout(Some(Duration::from_millis(50))).unwrap();
        for _ in 0..30 {
            if stream.write_all(&chunk).is_err() {
                break;
            }
        }
        half_sent.push(stream);
    }
    let peak = rss_kib(pid);
    assert_eq!(agents.is_leader("db/0"), Some(true), "answered during the abuse");
    assert!(peak < before + 64 * 1024, "memory grew from {before} KiB to {peak} KiB");

    // Thousands of idle connections.
    let mut idle = Vec::new();
    for _ in 0..3000 {
        match UnixStream::connect(&socket) {
            Ok(stream) => idle.push(stream),
            Err(_) => break,
        }
    }
    assert!(idle.len() >= 1000, "only {} connections", idle.len());
    assert_eq!(agents.is_leader("db/0"), Some(true), "answered with thousands of idle connections open");
    assert_eq!(agents.tool(&["leader-set", "--unit", "db/0", "still=ok"]).status.code(), Some(0));
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count();
    assert!(fds < 1000, "the agent holds {fds} descriptors");
    drop(idle);
    drop(half_sent);
}

#[test]
fn an_agent_refuses_a_lost_store_unless_told_to_accept_it() {
    let mut agents = Agents::leader();
    wait_for("leader-elected", || agents.hooks("db/0").contains(&"leader-elected".to_owned()));
    agents.signal("db/0", "TERM");
    assert!(agents.wait_exit("db/0").success());
    for file in ["state.db", "state.db-wal", "state.db-shm"] {
        let _ = std::fs::remove_file(agents.state.path().join(file));
    }
    let out = agents.agent_command("example-charms/shared-settings", "db/0", &[]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("holds no leadership store, but units ran"), "{}", stderr(&out));
    assert!(stderr(&out).contains("--accept-new-store"), "{}", stderr(&out));
    assert!(!agents.state.path().join("state.db").exists(), "no store was made");

    agents.start_with("example-charms/shared-settings", "db/0", &["--accept-new-store"]);
    agents.wait_leader("db/0", true, Duration::from_secs(60));
}

#[test]
fn durations_are_checked_before_anything_is_created() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let state = state.to_str().unwrap();
    let cases: [&[&str]; 6] = [
        &["agent", "example-charms/shared-settings", "--unit", "db/0", "--state", state, "--guarantee-window", "200s"],
        &["agent", "example-charms/shared-settings", "--unit", "db/0", "--state", state, "--guarantee-window", "0s"],
        &["agent", "example-charms/shared-settings", "--unit", "db/0", "--state", state, "--hook-deadline", "1ns"],
        &["run", "example-charms/shared-settings", "--state", state, "--for", "99999999years"],
        &["run", "example-charms/shared-settings", "--state", state, "--kill", "shared-settings/0@99999999years"],
        &["run", "example-charms/shared-settings", "--state", state, "--kill", "other/0@1s"],
    ];
    for args in cases {
        let out = Command::new(BIN).args(args).current_dir(workspace()).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(!stderr(&out).contains("panicked"), "{args:?}: {}", stderr(&out));
        assert!(!Path::new(state).exists(), "{args:?} created the state directory");
    }
    let out = Command::new(BIN).args(cases[0]).output().unwrap();
    assert!(stderr(&out).contains("between 500ms and 2m 30s"), "the accepted range is given: {}", stderr(&out));
}

/// A start that fails after it created something (the state directory, its store, the
/// unit's directory) removes it again: nothing is left behind, so the next start is not taken
/// for a unit that ran (and refused a new store).
#[test]
fn a_failed_start_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.wasm");
    std::fs::write(&garbage, b"not a component").unwrap();
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = busy.local_addr().unwrap().to_string();
    let state = dir.path().join("state");
    let state = state.to_str().unwrap();
    let garbage = garbage.to_str().unwrap();
    let cases: [&[&str]; 5] = [
        &["agent", garbage, "--unit", "db/0", "--state", state],
        &["agent", "example-charms/shared-settings", "--unit", "db/0", "--state", state, "--metrics-addr", &busy],
        &["agent", "example-charms/shared-settings", "--unit", "db/0", "--state", state, "--memory-cap-mib", "1"],
        &["run", garbage, "--state", state, "--for", "1s"],
        &["run", "example-charms/shared-settings", "--state", state, "--for", "1s", "--metrics-addr", &busy],
    ];
    for args in cases {
        let out = Command::new(BIN).args(args).current_dir(workspace()).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stderr(&out));
        assert!(!Path::new(state).exists(), "{args:?} left {state} behind");
    }
    // And where a state directory exists, only what the start created goes.
    std::fs::create_dir(state).unwrap();
    let out = Command::new(BIN).args(cases[0]).current_dir(workspace()).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(Path::new(state).is_dir(), "the operator's directory stays");
    assert_eq!(std::fs::read_dir(state).unwrap().count(), 0, "nothing is left in it");
}

#[test]
fn status_changes_nothing_and_survives_a_closed_pipe() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("state.db");
    std::fs::write(&db, b"").unwrap();
    let out = Command::new(BIN).args(["status", "--state"]).arg(dir.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("holds no state"), "{}", stderr(&out));
    assert_eq!(std::fs::metadata(&db).unwrap().len(), 0, "status wrote into an empty state.db");

    let mut agents = Agents::leader();
    agents.signal("db/0", "TERM");
    assert!(agents.wait_exit("db/0").success());
    let before = std::fs::read(agents.state.path().join("state.db")).unwrap();
    // stdout is a pipe whose reader is gone: the write fails with EPIPE.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = Command::new(BIN)
        .args(["status", "--state", agents.state()])
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(std::fs::read(agents.state.path().join("state.db")).unwrap(), before, "status changed the store");
}

#[test]
fn charm_text_is_escaped_for_terminals_and_exact_in_json() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("units/probe-0/data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("script"), "status active \u{1b}[2Jred\nprint \u{1b}]0;title\u{7}").unwrap();
    let run = |json: bool| {
        let mut command = Command::new(BIN);
        command.args(["run", "tests/charms/probe", "--units", "1", "--for", "1s", "--state"]).arg(dir.path());
        if json {
            command.arg("--json");
        }
        command.current_dir(workspace()).output().unwrap()
    };
    let human = run(false);
    assert!(human.status.success(), "{}", stderr(&human));
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(!text.contains('\u{1b}') && !text.contains('\u{7}'), "raw escapes printed: {text:?}");
    assert!(text.contains("\\u{1b}[2Jred"), "{text}");
    let json = run(true);
    let exact = String::from_utf8_lossy(&json.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .any(|l| l["message"] == "\u{1b}[2Jred");
    assert!(exact, "JSON keeps the message exact");
    let status = Command::new(BIN).args(["status", "--state"]).arg(dir.path()).output().unwrap();
    let table = String::from_utf8_lossy(&status.stdout);
    assert!(!table.contains('\u{1b}') && table.contains("\\u{1b}[2Jred"), "{table}");
}

#[test]
fn a_run_stops_a_runaway_hook_after_the_stop_grace() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("units/probe-0/data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("script-leader-elected"), "spin").unwrap();
    let out = Command::new(BIN)
        .args([
            "run",
            "tests/charms/probe",
            "--units",
            "1",
            "--for",
            "1s",
            "--json",
            "--hook-deadline",
            "1h",
            "--stop-grace",
            "1s",
            "--state",
        ])
        .arg(dir.path())
        .current_dir(workspace())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let lines: Vec<serde_json::Value> =
        String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let elected =
        lines.iter().find(|l| l["type"] == "hook" && l["hook"] == "leader-elected").expect("leader-elected reported");
    assert!(elected["error"].as_str().unwrap().starts_with("interrupted"), "{elected}");
    let hooks: Vec<&str> = lines.iter().filter(|l| l["type"] == "hook").map(|l| l["hook"].as_str().unwrap()).collect();
    assert_eq!(hooks, ["install", "leader-elected", "leader-deposed", "stop"]);
}

/// CPU time (user + system) a process has used so far.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which is in parentheses and may hold spaces).
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    let per_second = rustix::param::clock_ticks_per_second();
    Duration::from_millis(ticks * 1000 / per_second)
}

/// A tmpfs of `size` mounted on a fresh directory for the test, unmounted when dropped.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(size: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700"), "tmpfs"])
            .arg(dir.path())
            .status();
        assert!(status.is_ok_and(|s| s.success()), "cannot mount a tmpfs (tests run as root)");
        Self { dir }
    }

    /// Fills it to the last byte.
    fn fill(&self) {
        let mut file = std::fs::File::create(self.dir.path().join("filler")).unwrap();
        let block = vec![0u8; 64 * 1024];
        while file.write_all(&block).is_ok() {}
        let _ = file.write_all(&[0u8; 512]);
        for _ in 0..64 {
            let _ = file.write_all(&[0u8]);
        }
    }

    fn free(&self) {
        std::fs::remove_file(self.dir.path().join("filler")).unwrap();
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.dir.path()).status();
    }
}

#[test]
fn a_full_disk_makes_leadership_unknown_without_spinning_and_tools_keep_answering() {
    let disk = SmallDisk::mount("4M");
    let mut agents = Agents::new();
    let state = disk.dir.path().join("state");
    let state_arg = state.to_str().unwrap().to_owned();
    for unit in ["db/0", "db/1"] {
        let mut command = Command::new(BIN);
        command
            .args(["agent", "example-charms/shared-settings", "--unit", unit, "--state", &state_arg, "--json"])
            .args(["--guarantee-window", "2s", "--cache-dir"])
            .arg(agents.cache.path())
            .current_dir(workspace());
        agents.spawn(unit, command);
    }
    let tool = |args: &[&str]| Command::new(BIN).args(args).args(["--state", &state_arg]).output().unwrap();
    let is_leader = |unit: &str| stdout(&tool(&["is-leader", "--unit", unit])).trim() == "True";
    wait_for("a leader", || is_leader("db/0") || is_leader("db/1"));
    let leader = if is_leader("db/0") { "db/0" } else { "db/1" };
    let minion = if leader == "db/0" { "db/1" } else { "db/0" };
    wait_for("the minion's agent answers", || stdout(&tool(&["is-leader", "--unit", minion])).trim() == "False");
    // Both units past their first hooks before the disk fills: a status that cannot be
    // saved afterwards stays at its last save, which must be a settled one.
    for unit in ["db/0", "db/1"] {
        wait_for("the unit's first hooks", || agents.hooks(unit).len() >= 2);
    }

    disk.fill();
    // Grow the store's log until writes fail: the disk is full for SQLite too.
    let big = format!("k={}", "x".repeat(60_000));
    wait_for("a write refused for want of space", || !tool(&["leader-set", "--unit", leader, &big]).status.success());
    let unknown = || {
        ["db/0", "db/1"].iter().all(|u| {
            let out = tool(&["is-leader", "--unit", u]);
            out.status.code() == Some(1) && stderr(&out).contains("cannot be verified")
        })
    };
    for _ in 0..3000 {
        if unknown() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(unknown(), "leadership should be unknown on every unit: {}", stdout(&tool(&["status"])));
    // Claims keep failing: the agents back off instead of spinning.
    let pids = [agents.pid("db/0"), agents.pid("db/1")];
    let before: Vec<Duration> = pids.iter().map(|p| cpu_time(*p)).collect();
    let wall = std::time::Instant::now();
    std::thread::sleep(Duration::from_secs(3));
    let elapsed = wall.elapsed();
    for (pid, before) in pids.iter().zip(before) {
        let used = cpu_time(*pid) - before;
        assert!(used < elapsed / 4, "pid {pid} used {used:?} of CPU in {elapsed:?} on a failing store");
    }
    let status = stdout(&tool(&["status"]));
    assert_eq!(status.matches("[leadership unknown:").count(), 2, "{status}");

    for (unit, child) in &mut agents.children {
        assert!(child.try_wait().unwrap().is_none(), "{unit}'s agent died on the full disk");
    }
    // Space again: a unit leads again without a restart.
    disk.free();
    wait_for("a leader once the disk has space", || is_leader("db/0") || is_leader("db/1"));
}

#[test]
fn a_kill_9_storm_never_runs_the_singleton_on_two_units() {
    let mut agents = Agents::new();
    let file = agents.logs.path().join("service.log");
    let start = |agents: &mut Agents, unit: &str| {
        let service =
            format!("singleton=while true; do echo {unit} $(date +%s%N) >> {}; sleep 0.01; done", file.display());
        agents.start_with(
            "example-charms/singleton-service",
            unit,
            &["--leader-service", &service, "--guarantee-window", "1s"],
        );
    };
    let units = ["db/0", "db/1", "db/2"];
    for unit in units {
        start(&mut agents, unit);
    }
    let last_ticker = || {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        text.lines()
            .filter_map(|l| l.split_once(' '))
            .max_by_key(|(_, t)| t.trim().parse::<u128>().unwrap_or(0))
            .map(|(u, _)| u.to_owned())
    };
    let leader = |agents: &Agents| units.iter().find(|u| agents.is_leader(u) == Some(true)).map(|u| u.to_string());
    let rounds = 6;
    for _ in 0..rounds {
        let mut current = None;
        wait_for("a leader whose service runs", || {
            current = leader(&agents).filter(|l| last_ticker().as_ref() == Some(l));
            current.is_some()
        });
        let current = current.unwrap_or_default();
        agents.signal(&current, "KILL");
        agents.children.retain(|(u, _)| *u != current);
        wait_for("a successor", || leader(&agents).is_some_and(|l| l != current));
        start(&mut agents, &current);
    }
    wait_for("the last successor's service runs", || {
        leader(&agents).is_some_and(|l| last_ticker().as_ref() == Some(&l))
    });
    // One run of ticks per tenure: two services at once would interleave into more runs.
    let text = std::fs::read_to_string(&file).unwrap();
    let mut ticks: Vec<(u128, &str)> =
        text.lines().filter_map(|l| l.split_once(' ').map(|(u, t)| (t.trim().parse().unwrap_or(0), u))).collect();
    ticks.sort();
    let mut runs: Vec<&str> = Vec::new();
    for (_, unit) in ticks {
        if runs.last() != Some(&unit) {
            runs.push(unit);
        }
    }
    assert_eq!(runs.len(), rounds + 1, "services ran at once: runs {runs:?}");
}

/// Plays a unit's agent on its socket: answers each of `answers` to one connection, in turn.
fn stand_in_agent(state: &Path, unit_dir: &str, answers: Vec<String>) -> std::thread::JoinHandle<()> {
    let dir = state.join("units").join(unit_dir);
    std::fs::create_dir_all(&dir).unwrap();
    let listener = std::os::unix::net::UnixListener::bind(dir.join("agent.sock")).unwrap();
    std::thread::spawn(move || {
        for answer in answers {
            let (mut stream, _) = listener.accept().unwrap();
            let mut request = String::new();
            std::io::BufRead::read_line(&mut std::io::BufReader::new(&stream), &mut request).unwrap();
            stream.write_all(answer.as_bytes()).unwrap();
            stream.write_all(b"\n").unwrap();
        }
    })
}

/// The machine's boot-time clock, in nanoseconds, as agents and tools read it.
fn boot_ns() -> u64 {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
    now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64
}

/// An `is-leader` answer holds only until the instant the agent sent with it: a client that
/// gets it later (it, or the agent, was paused between the answer and its use) prints
/// nothing and exits as for unknown, never `True`.
#[test]
fn an_is_leader_answer_that_arrives_too_late_is_not_printed() {
    let state = tempfile::tempdir().unwrap();
    let now = boot_ns();
    let answers = vec![
        format!(r#"{{"leader-until":{{"until_ns":{}}}}}"#, now + 3_600_000_000_000),
        format!(r#"{{"leader-until":{{"until_ns":{}}}}}"#, now),
        r#"{"leader":true}"#.to_owned(),
        r#"{"leader":false}"#.to_owned(),
    ];
    let agent = stand_in_agent(state.path(), "db-0", answers);
    let is_leader =
        || Command::new(BIN).args(["is-leader", "--unit", "db/0", "--state"]).arg(state.path()).output().unwrap();
    let fresh = is_leader();
    assert_eq!((fresh.status.code(), stdout(&fresh)), (Some(0), "True\n".to_owned()), "{}", stderr(&fresh));
    let late = is_leader();
    assert_eq!((late.status.code(), stdout(&late)), (Some(1), String::new()), "a late answer is unknown");
    assert!(stderr(&late).contains("arrived after the instant it held until"), "{}", stderr(&late));
    let undated = is_leader();
    assert_eq!((undated.status.code(), stdout(&undated)), (Some(1), String::new()), "an answer without its deadline");
    let minion = is_leader();
    assert_eq!((minion.status.code(), stdout(&minion)), (Some(0), "False\n".to_owned()));
    agent.join().unwrap();
}

/// Samples `is-leader` on every unit of `units`, a round every 50 ms, until `done` (asked
/// after each round) says enough; fails if two answer True in one round.
fn never_two_leaders(agents: &Agents, units: &[&str], mut done: impl FnMut(&Agents, usize) -> bool) {
    let limit = std::time::Instant::now() + Duration::from_secs(120);
    for round in 0.. {
        let leaders: Vec<&str> = units.iter().copied().filter(|u| agents.is_leader(u) == Some(true)).collect();
        assert!(leaders.len() <= 1, "round {round}: {leaders:?} all answered is-leader True");
        if done(agents, round) {
            return;
        }
        assert!(std::time::Instant::now() < limit, "still waiting after {round} rounds");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn logged(agents: &Agents, unit: &str, text: &str) -> bool {
    agents.log(unit).iter().any(|e| e["message"].as_str().is_some_and(|m| m.contains(text)))
}

/// `state.db` deleted under running agents: they find out at their next claim and stop
/// deciding anything on it (the leader is deposed at once and `is-leader` answers unknown);
/// a unit that joins does not create a fresh store where units ran unless told to, and then
/// grants nothing until every lease of the lost store has run out. `is-leader` is sampled on
/// every unit throughout: never two True in one round.
#[test]
fn a_store_deleted_under_running_agents_never_gives_two_leaders() {
    let mut agents = Agents::leader_and_minion();
    let db = agents.state.path().join("state.db");
    std::fs::remove_file(&db).unwrap();
    let units = ["db/0", "db/1", "db/2"];
    never_two_leaders(&agents, &units, |a, _| logged(a, "db/0", "was deleted"));
    wait_for("db/0's leader-deposed", || agents.hooks("db/0").contains(&"leader-deposed".to_owned()));
    assert_eq!(agents.is_leader("db/0"), None, "a lost store: unknown, not False");
    // A newcomer refuses to make a new store under them, and creates nothing.
    let out = agents.agent_command("example-charms/shared-settings", "db/2", &[]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("holds no leadership store, but units ran"), "{}", stderr(&out));
    assert!(!db.exists(), "nothing was created");
    // Told to, it makes one, and leads only once every lease of the lost store ran out.
    agents.start_with("example-charms/shared-settings", "db/2", &["--accept-new-store"]);
    never_two_leaders(&agents, &units, |a, _| a.is_leader("db/2") == Some(true));
    assert!(logged(&agents, "db/2", "no unit leads for"), "it said why it waited");
    assert_eq!(agents.is_leader("db/0"), None, "the old agents decide nothing on the new store");
    let status = agents.tool(&["status"]);
    assert!(stdout(&status).contains("was deleted"), "{}", stdout(&status));
}

/// An error names its cause once, however many layers pass it on.
#[test]
fn an_error_names_its_cause_once() {
    let dir = tempfile::tempdir().unwrap();
    let looped = dir.path().join("loop");
    std::os::unix::fs::symlink(&looped, &looped).unwrap();
    let out = Command::new(BIN)
        .args(["agent", "example-charms/shared-settings", "--unit", "db/0", "--state"])
        .arg(&looped)
        .current_dir(workspace())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(stderr(&out).matches("Too many levels of symbolic links").count(), 1, "{}", stderr(&out));
}

/// An older copy of `state.db` put back under running agents (`mv backup state.db`): they
/// find out at their next claim (the path names another file) and stop deciding on it, the
/// leader deposed at once. A unit restarted meanwhile refuses the copy (agents of the
/// original may still run, and the original's write-ahead log beside it would be mixed
/// into it); told to accept it, it still refuses while that log lies there; with the old
/// agents stopped and the log moved away, it adopts the copy and leads once every lease of
/// the original has run out. `is-leader` is sampled on every unit throughout: never two
/// True in one round.
#[test]
fn an_older_copy_of_the_store_put_back_never_gives_two_leaders() {
    let mut agents = Agents::leader_and_minion();
    let db = agents.state.path().join("state.db");
    let backup = agents.state.path().join("backup.db");
    std::fs::copy(&db, &backup).unwrap();
    // The store moves on past the copy (an acknowledged write), then the copy is put back.
    assert_eq!(agents.tool(&["leader-set", "--unit", "db/0", "after-the-copy=1"]).status.code(), Some(0));
    std::fs::rename(&backup, &db).unwrap();
    agents.signal("db/1", "KILL");
    agents.children.retain(|(unit, _)| unit != "db/1");
    let units = ["db/0", "db/1"];
    let refused = |extra: &[&str], text: &str| {
        let out = agents.agent_command("example-charms/shared-settings", "db/1", extra).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        assert!(stderr(&out).contains(text), "{}", stderr(&out));
    };
    refused(&[], "is a copy of the leadership store's file");
    never_two_leaders(&agents, &units, |a, _| logged(a, "db/0", "was replaced by another file"));
    assert_eq!(agents.is_leader("db/0"), None, "the old leader answers unknown");
    refused(&["--accept-new-store"], "write-ahead log");
    // As the refusal says: stop the old agents, move the old file's log away, accept the copy.
    agents.signal("db/0", "TERM");
    let index = agents.children.iter().position(|(unit, _)| unit == "db/0").unwrap();
    let (_, mut old) = agents.children.remove(index);
    old.wait().unwrap();
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(agents.state.path().join(format!("state.db{suffix}")));
    }
    agents.start_with("example-charms/shared-settings", "db/1", &["--accept-new-store"]);
    never_two_leaders(&agents, &units, |a, _| a.is_leader("db/1") == Some(true));
    assert!(logged(&agents, "db/1", "no unit leads for"), "it said why it waited");
    let got = agents.tool(&["leader-get", "--unit", "db/1", "after-the-copy"]);
    assert_eq!(
        (got.status.code(), stdout(&got).as_str()),
        (Some(0), ""),
        "the copy holds what it held when it was taken"
    );
}
