//! Black-box tests of the `charm-host` binary: they run it as a user would and read only
//! what it prints.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::Value;

mod support;

use support::metrics::{scrape, series_by_unit};
use support::workspace;

fn charm_host(args: &[&str], cache: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_charm-host"))
        .args(args)
        .arg("--cache-dir")
        .arg(cache)
        .current_dir(workspace())
        .output()
        .expect("charm-host runs")
}

fn json_lines(output: &Output) -> Vec<Value> {
    let stdout = String::from_utf8_lossy(&output.stdout);
    stdout.lines().map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))).collect()
}

#[test]
fn shared_settings_demo_elects_one_leader_and_shares_one_cluster_id() {
    let cache = tempfile::tempdir().unwrap();
    let output =
        charm_host(&["run", "example-charms/shared-settings", "--units", "3", "--for", "2s", "--json"], cache.path());
    assert!(output.status.success(), "stderr: {}", String::from_utf8_lossy(&output.stderr));
    let lines = json_lines(&output);

    let status = lines.last().expect("a status line");
    assert_eq!(status["type"], "status");
    assert_eq!(status["application"], "shared-settings");
    let elected: Vec<_> = lines.iter().filter(|l| l["type"] == "leadership" && l["leader"] == true).collect();
    assert_eq!(elected.len(), 1, "one unit becomes leader");
    let leader = elected[0]["unit"].as_str().unwrap().to_owned();
    let cluster_id = status["settings"]["cluster-id"].as_str().expect("a cluster id").to_owned();
    // The final status is how the run ended: every unit stopped, the lease given up.
    assert!(status["leader"].is_null() && status["term"].is_null(), "{status}");
    let units = status["units"].as_array().unwrap();
    assert_eq!(units.len(), 3);
    for unit in units {
        assert_eq!(unit["status"], "active", "{unit}");
        assert_eq!(unit["message"], format!("member of {cluster_id}"), "{unit}");
        assert_eq!((&unit["agent"], &unit["leader"]), (&Value::from("stopped"), &Value::from(false)), "{unit}");
    }
    // Every event says when (RFC 3339, UTC) and under which term: the leader's hooks carry
    // its term from its election until it gives it up at the stop, the minions' none.
    let term = &elected[0]["term"];
    assert_eq!(term, 1);
    for line in &lines[..lines.len() - 1] {
        let at = line["at"].as_str().unwrap_or_else(|| panic!("no time: {line}"));
        assert!(at.ends_with('Z') && humantime::parse_rfc3339(at).is_ok(), "{line}");
        assert!(line.get("term").is_some(), "{line}");
    }
    let leader_hooks: Vec<&Value> =
        lines.iter().filter(|l| l["type"] == "hook" && l["unit"] == leader.as_str()).collect();
    let elected_hook = leader_hooks.iter().find(|l| l["hook"] == "leader-elected").unwrap();
    assert_eq!(&elected_hook["term"], term, "{elected_hook}");
    assert!(lines.iter().filter(|l| l["type"] == "hook" && l["unit"] != leader.as_str()).all(|l| l["term"].is_null()));

    let hooks: Vec<(&str, &str, &str)> = lines
        .iter()
        .filter(|l| l["type"] == "hook")
        .map(|l| (l["unit"].as_str().unwrap(), l["hook"].as_str().unwrap(), l["outcome"].as_str().unwrap()))
        .collect();
    assert!(hooks.iter().all(|(_, _, outcome)| *outcome == "ok"), "{hooks:?}");
    let elected: Vec<_> = hooks.iter().filter(|(_, hook, _)| *hook == "leader-elected").collect();
    assert_eq!(elected.len(), 1, "exactly one leader-elected: {hooks:?}");
    assert_eq!(elected[0].0, leader);
    for unit in ["shared-settings/0", "shared-settings/1", "shared-settings/2"] {
        let mine: Vec<&str> = hooks.iter().filter(|(u, _, _)| *u == unit).map(|(_, h, _)| *h).collect();
        assert_eq!(mine[0], "install", "install comes first on {unit}: {mine:?}");
        if unit == leader {
            assert!(!mine.contains(&"leader-settings-changed"), "the leader is not told of its own writes");
        } else {
            assert!(mine.contains(&"leader-settings-changed"), "{unit} runs leader-settings-changed: {mine:?}");
        }
    }
}

/// `--kill` crashes an agent: the stream says so (with the term it held), and the final
/// status shows that unit crashed and its lease still held until it expires.
#[test]
fn a_killed_leader_appears_as_a_crash_and_ends_crashed() {
    let cache = tempfile::tempdir().unwrap();
    let output = charm_host(
        &[
            "run",
            "example-charms/shared-settings",
            "--units",
            "2",
            "--for",
            "2s",
            "--json",
            "--app",
            "db",
            "--kill",
            "db/0@1s",
        ],
        cache.path(),
    );
    assert!(output.status.success(), "stderr: {}", String::from_utf8_lossy(&output.stderr));
    let lines = json_lines(&output);
    let crashes: Vec<&Value> = lines.iter().filter(|l| l["type"] == "crashed").collect();
    assert_eq!(crashes.len(), 1, "{crashes:?}");
    assert_eq!(crashes[0]["unit"], "db/0");
    let led = lines.iter().any(|l| l["type"] == "leadership" && l["unit"] == "db/0" && l["leader"] == true);
    assert_eq!(!crashes[0]["term"].is_null(), led, "the term it held, if it led: {:?}", crashes[0]);
    assert!(
        !lines.iter().skip_while(|l| l["type"] != "crashed").any(|l| l["unit"] == "db/0" && l["type"] == "hook"),
        "no hook after"
    );
    let status = lines.last().unwrap();
    let agents: Vec<(&str, &str)> = status["units"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| (u["unit"].as_str().unwrap(), u["agent"].as_str().unwrap()))
        .collect();
    assert_eq!(agents, [("db/0", "crashed"), ("db/1", "stopped")]);
    if led {
        assert_eq!(status["leader"], "db/0", "a crashed leader's lease is left to expire (30 s): {status}");
    }
}

#[test]
fn readable_output_ends_with_a_status_table() {
    let cache = tempfile::tempdir().unwrap();
    let output = charm_host(
        &["run", "example-charms/shared-settings", "--units", "2", "--for", "1s", "--app", "db"],
        cache.path(),
    );
    assert!(output.status.success(), "stderr: {}", String::from_utf8_lossy(&output.stderr));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("db/0") && stdout.contains("is now the leader"), "{stdout}");
    assert!(stdout.contains("UNIT") && stdout.contains("cluster-id = cluster-"), "{stdout}");
    assert!(
        stdout.contains("leader - (last: db/") && stdout.contains(", term 1, ended 20") && stdout.contains(" by stop)"),
        "{stdout}"
    );
}

#[test]
fn load_errors_are_reported_before_any_unit_starts() {
    let cache = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let not_wasm = dir.path().join("charm.wasm");
    std::fs::write(&not_wasm, "#!/bin/sh\necho hello\n").unwrap();
    let output = charm_host(&["run", not_wasm.to_str().unwrap(), "--for", "1s"], cache.path());
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("is not a WebAssembly component"), "{stderr}");
    assert!(output.stdout.is_empty(), "no unit ran: {}", String::from_utf8_lossy(&output.stdout));

    let output = charm_host(&["run", "tests/charms/other-world", "--for", "1s"], cache.path());
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("does not implement the juju:charm/charm world"), "{stderr}");

    let output = charm_host(&["run", "example-charms/shared-settings", "--app", "Bad_Name"], cache.path());
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("invalid application name"));
}

#[test]
fn state_dir_keeps_settings_and_raises_the_term_across_runs() {
    let cache = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let state_arg = state.path().to_str().unwrap();
    let run = || {
        let output = charm_host(
            &["run", "example-charms/shared-settings", "--units", "2", "--for", "1s", "--json", "--state", state_arg],
            cache.path(),
        );
        assert!(output.status.success(), "stderr: {}", String::from_utf8_lossy(&output.stderr));
        json_lines(&output).pop().expect("a status line")
    };
    let first = run();
    let second = run();
    assert_eq!(first["settings"], second["settings"], "the same leader settings");
    assert!(first["settings"]["cluster-id"].is_string());
    assert!(state.path().join("state.db").is_file());
    // The history in the state directory: one tenure per run, each given up at its stop,
    // the second at a higher term.
    let history_of =
        |args: &[&str]| Command::new(env!("CARGO_BIN_EXE_charm-host")).arg("history").args(args).output().unwrap();
    let output = history_of(&["--state", state_arg, "--json"]);
    assert!(output.status.success(), "stderr: {}", String::from_utf8_lossy(&output.stderr));
    let history: Value = serde_json::from_slice(&output.stdout).unwrap();
    let tenures = history["tenures"].as_array().unwrap();
    let terms: Vec<(u64, &str)> =
        tenures.iter().map(|t| (t["term"].as_u64().unwrap(), t["how"].as_str().unwrap())).collect();
    assert_eq!(terms, [(2, "stop"), (1, "stop")], "newest first: {history}");
    assert!(
        tenures[0]["gap_before_seconds"].as_f64().is_some_and(|gap| gap >= 0.0),
        "the gap between the runs: {history}"
    );
    let output = history_of(&["--state", state_arg, "--app", "shared-settings"]);
    let table = String::from_utf8_lossy(&output.stdout);
    assert!(
        table.contains("application shared-settings") && table.contains("GAP BEFORE") && table.contains(" stop "),
        "{table}"
    );
}

/// `run --json` through step-downs and directed handovers: every `leader: false` of the old
/// leader comes before the successor's `leader: true`, and before the old leader's
/// `leader-deposed` ends (it is emitted when the guarantee is given up).
#[test]
fn the_json_stream_never_shows_two_leaders() {
    let cache = tempfile::tempdir().unwrap();
    let output = charm_host(
        &[
            "run",
            "example-charms/shared-settings",
            "--units",
            "4",
            "--for",
            "5s",
            "--json",
            "--app",
            "db",
            "--guarantee-window",
            "1s",
            "--step-down",
            "1s",
            "--elect",
            "db/3@2s",
            "--step-down",
            "3s",
            "--elect",
            "db/0@4s",
        ],
        cache.path(),
    );
    assert!(output.status.success(), "stderr: {}", String::from_utf8_lossy(&output.stderr));
    let lines = json_lines(&output);
    let mut leaders: Vec<&str> = Vec::new();
    let mut tenures = 0;
    for line in &lines {
        let unit = line["unit"].as_str().unwrap_or_default();
        match (line["type"].as_str(), line["leader"].as_bool(), line["hook"].as_str()) {
            (Some("leadership"), Some(true), _) => {
                assert!(leaders.is_empty(), "{unit} leads while {leaders:?} still does: {lines:#?}");
                leaders.push(unit);
                tenures += 1;
            }
            (Some("leadership"), Some(false), _) => leaders.retain(|l| *l != unit),
            (Some("hook"), _, Some("leader-deposed")) => {
                assert!(!leaders.contains(&unit), "{unit} finished leader-deposed before leader=false: {lines:#?}")
            }
            _ => {}
        }
    }
    // Which actions take effect depends on timing (a unit that stepped down is held off for a
    // claim duration, so an elect naming it waits that out); the order above is the point.
    assert!(tenures >= 2, "handovers happened: {tenures} tenures");
}

/// `run --metrics-addr` serves Prometheus metrics over HTTP: scraped with a real client on
/// loopback, exactly one unit reports leading after a directed handover, the new leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_show_exactly_one_leader_after_a_handover() {
    use std::io::BufRead as _;

    let cache = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_charm-host"))
        .args(["run", "example-charms/shared-settings", "--units", "3", "--app", "db", "--for", "120s", "--json"])
        // Two handovers, so that db/2 ends leading at a later term whoever led first.
        .args([
            "--guarantee-window",
            "2s",
            "--elect",
            "db/0@1s",
            "--elect",
            "db/2@2s",
            "--metrics-addr",
            "127.0.0.1:0",
            "--cache-dir",
        ])
        .arg(cache.path())
        .current_dir(workspace())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut url = None;
    for line in stderr.lines() {
        let line = line.unwrap();
        if let Some(found) = line.strip_prefix("metrics: ") {
            url = Some(found.to_owned());
            break;
        }
    }
    let url = url.expect("the run says where its metrics are");
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    let scrape = || async { scrape(&url).await.expect("the metrics answer") };
    // Wait for the handover to show: db/2 leads at a later term, its leader-elected run
    // (each scrape is an event we wait for; up to a minute on a loaded machine).
    let mut text = String::new();
    for _ in 0..600 {
        text = scrape().await;
        let elected = text.lines().any(|l| {
            l.starts_with(r#"charm_host_hooks_total{app="db",unit="db/2",hook="leader-elected",outcome="ok"}"#)
        });
        let later = series_by_unit(&text, "charm_host_unit_term").iter().any(|(u, t)| u == "db/2" && *t >= 2.0);
        if elected && later {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    let leaders: Vec<(String, f64)> = series_by_unit(&text, "charm_host_unit_leader");
    assert_eq!(leaders.len(), 3, "every unit reports: {text}");
    let leading: Vec<&str> = leaders.iter().filter(|(_, v)| *v == 1.0).map(|(u, _)| u.as_str()).collect();
    assert_eq!(leading, ["db/2"], "exactly one unit leads, the one elected:\n{text}");
    let terms = series_by_unit(&text, "charm_host_unit_term");
    assert!(terms.iter().any(|(u, t)| u == "db/2" && *t >= 2.0), "a later term than the first leader's: {terms:?}");
    assert!(terms.iter().filter(|(u, _)| u != "db/2").all(|(_, t)| *t == 0.0), "{terms:?}");
    let left = series_by_unit(&text, "charm_host_unit_guarantee_remaining_seconds");
    assert!(left.iter().any(|(u, s)| u == "db/2" && *s > 0.0), "{left:?}");
    assert!(text.contains(r#"hook="leader-deposed",outcome="ok"} 1"#), "the old leader was deposed:\n{text}");
    for line in [
        "charm_host_units 3",
        "charm_host_store_healthy 1",
        r#"charm_host_unit_leader_settings_version{app="db",unit="db/2"} 1"#,
    ] {
        assert!(text.lines().any(|l| l == line), "{line}:\n{text}");
    }
    assert!(
        text.lines().any(|l| l.starts_with(r#"charm_host_lease_claim_duration_seconds_count{app="db",kind="claim"}"#)),
        "{text}"
    );
}

/// `--log-format json`: the host's own log (stderr) is one JSON object per line, with the
/// unit and hook as fields; `text` names them too.
#[test]
fn the_host_log_is_json_lines_with_unit_and_hook_fields() {
    let cache = tempfile::tempdir().unwrap();
    let run = |format: &str| {
        Command::new(env!("CARGO_BIN_EXE_charm-host"))
            .args([
                "run",
                "example-charms/shared-settings",
                "--units",
                "2",
                "--for",
                "1s",
                "--app",
                "db",
                "--log-format",
                format,
            ])
            .arg("--cache-dir")
            .arg(cache.path())
            .env("CHARM_HOST_LOG", "info")
            .current_dir(workspace())
            .output()
            .unwrap()
    };
    let output = run("json");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<Value> =
        stderr.lines().filter(|l| l.starts_with('{')).map(|l| serde_json::from_str(l).unwrap()).collect();
    let installs: Vec<&Value> =
        lines.iter().filter(|l| l["message"] == "hook finished" && l["hook"] == "install").collect();
    let units: Vec<&str> = installs.iter().map(|l| l["unit"].as_str().unwrap()).collect();
    assert_eq!(units.len(), 2, "{stderr}");
    assert!(units.contains(&"db/0") && units.contains(&"db/1"), "{units:?}");
    assert!(installs.iter().all(|l| l["level"] == "INFO" && l["timestamp"].is_string()), "{installs:?}");
    assert!(lines.iter().any(|l| l["message"] == "leads" && l["term"] == 1), "{stderr}");

    let output = run("text");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.lines().any(|l| l.contains("hook finished") && l.contains("unit=db/0") && l.contains("hook=install")),
        "{stderr}"
    );
}

/// One `run` hosts several applications, and a second `run` on the same state directory
/// hosts more units of the same applications (`--first-unit`): each application has one
/// leader and one cluster id, every unit serves its hook tools while the runs last, and
/// SIGTERM stops a run gracefully (every lease given up).
#[test]
fn several_applications_in_several_runs_share_one_store() {
    let mut agents = support::Agents::new();
    let state = agents.state().to_owned();
    let run = |first: &str| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_charm-host"));
        command
            .args(["run", "example-charms/shared-settings", "--apps", "3", "--units", "2", "--first-unit", first])
            .args(["--json", "--guarantee-window", "2s", "--state", &state])
            .current_dir(workspace());
        command
    };
    agents.spawn("first", run("0"));
    let apps = ["shared-settings-0", "shared-settings-1", "shared-settings-2"];
    let cluster_of = |agents: &support::Agents, unit: &str| {
        let out = agents.tool(&["leader-get", "--unit", unit, "cluster-id"]);
        out.status.success().then(|| support::stdout(&out).trim().to_owned()).filter(|id| !id.is_empty())
    };
    support::wait_for("a cluster id in every application", || {
        apps.iter().all(|app| cluster_of(&agents, &format!("{app}/1")).is_some())
    });
    agents.spawn("second", run("2"));
    for app in apps {
        let id = cluster_of(&agents, &format!("{app}/0")).unwrap();
        support::wait_for("the second run's units to answer", || cluster_of(&agents, &format!("{app}/3")).is_some());
        assert_eq!(cluster_of(&agents, &format!("{app}/3")), Some(id), "{app}: one cluster id in both runs");
    }
    for name in ["second", "first"] {
        agents.signal(name, "TERM");
        assert!(agents.wait_exit(name).success(), "{name} ends well after SIGTERM");
    }
    let mut elected = std::collections::BTreeMap::<String, usize>::new();
    let mut statuses = Vec::new();
    for name in ["first", "second"] {
        for line in agents.log(name) {
            if line["type"] == "leadership" && line["leader"] == true {
                let unit = line["unit"].as_str().unwrap();
                *elected.entry(unit.split('/').next().unwrap().to_owned()).or_default() += 1;
            }
            if line["type"] == "status" {
                statuses.push(line);
            }
        }
    }
    for app in apps {
        assert!(elected.get(app).is_some_and(|&n| n >= 1), "{app} had a leader: {elected:?}");
    }
    // One status line per application from each run, each unit stopped; the last run to
    // stop gave every lease up.
    assert_eq!(statuses.len(), 6, "{statuses:?}");
    for status in &statuses {
        for unit in status["units"].as_array().unwrap() {
            assert_eq!(unit["agent"], "stopped", "{status}");
        }
    }
    for status in &statuses[..3] {
        assert!(status["leader"].is_null(), "{status}");
    }
}

/// A charm author's first steps, as the README gives them: `charm-host new` (on this
/// checkout, as `--sdk-path` does until the crates are published), `charm-host run` on the
/// new crate, and `cargo test` in it, which runs its tests in both forms. The nested builds
/// share this build's target directory (cargo holds no lock on it while tests run), so only
/// what differs is compiled.
#[test]
fn a_new_charm_builds_runs_and_passes_its_own_tests() {
    let dir = tempfile::tempdir().unwrap();
    let charm = dir.path().join("first-charm");
    let target = Path::new(support::BIN).parent().and_then(Path::parent).expect("the target directory").to_owned();
    let new = |name: &str, dest: &Path| {
        Command::new(support::BIN)
            .args(["new", name, "--path"])
            .arg(dest)
            .arg("--sdk-path")
            .arg(workspace())
            .output()
            .expect("charm-host runs")
    };
    let created = new("first-charm", &charm);
    assert!(created.status.success(), "stderr: {}", String::from_utf8_lossy(&created.stderr));
    assert!(support::stdout(&created).contains("created charm first-charm"), "{}", support::stdout(&created));
    let lock = std::fs::read_to_string(charm.join("Cargo.lock")).unwrap();
    assert_eq!(lock, std::fs::read_to_string(workspace().join("Cargo.lock")).unwrap(), "the versions tested here");
    let manifest = std::fs::read_to_string(charm.join("Cargo.toml")).unwrap();
    assert!(manifest.contains("[profile.dev.package.\"*\"]\nopt-level = 2"), "{manifest}");

    // Nothing is overwritten, and a name that cannot name an application is refused.
    let again = new("first-charm", &charm);
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
    assert_eq!(std::fs::read_to_string(charm.join("Cargo.lock")).unwrap(), lock);
    let bad = new("First_Charm", &dir.path().join("bad"));
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("cannot name a charm"));
    assert!(!dir.path().join("bad").exists());

    // `run .` in the new crate: built into the target directory cargo would use, which says
    // so, and three units share the leader's cluster id.
    let cache = tempfile::tempdir().unwrap();
    let run = Command::new(support::BIN)
        .args(["run", ".", "--units", "3", "--for", "1s", "--json", "--cache-dir"])
        .arg(cache.path())
        .current_dir(&charm)
        .env("CARGO_TARGET_DIR", &target)
        .output()
        .expect("charm-host runs");
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "stderr: {stderr}");
    let built = target.join("charm-build/wasm32-wasip2/release/first_charm.wasm");
    assert!(stderr.contains("built . in ") && stderr.contains(&built.display().to_string()), "{stderr}");
    let status = json_lines(&run).pop().expect("a status line");
    assert_eq!(status["application"], "first-charm");
    let cluster_id = status["settings"]["cluster-id"].as_str().expect("a cluster id");
    for unit in status["units"].as_array().unwrap() {
        assert_eq!(unit["message"], format!("member of {cluster_id}"), "{unit}");
    }

    // Its own tests, both forms, pass as created.
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let test = Command::new(cargo)
        .arg("test")
        .current_dir(&charm)
        .env("CARGO_TARGET_DIR", &target)
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .output()
        .expect("cargo runs");
    let out = support::stdout(&test);
    assert!(test.status.success(), "stdout: {out}\nstderr: {}", String::from_utf8_lossy(&test.stderr));
    assert!(out.contains("test result: ok. 3 passed"), "{out}");
    assert!(out.contains("the_leader_crashes_and_its_successor_keeps_the_cluster_id ... ok"), "{out}");
}

/// Shell completions and man pages come from the command's own definition: every command
/// and option is there, the bash script parses, and `--out-dir` writes a page per command.
#[test]
fn completions_and_man_pages_cover_every_command() {
    let run = |args: &[&str]| Command::new(support::BIN).args(args).output().expect("charm-host runs");
    for shell in ["bash", "zsh", "fish"] {
        let out = run(&["completions", shell]);
        assert!(out.status.success(), "{shell}: {}", String::from_utf8_lossy(&out.stderr));
        let script = support::stdout(&out);
        for word in ["is-leader", "leader-set", "update-status-interval", "sdk-path"] {
            assert!(script.contains(word), "{shell} completions lack {word}");
        }
        if shell == "bash" {
            let mut check = Command::new("bash").arg("-n").stdin(std::process::Stdio::piped()).spawn().unwrap();
            std::io::Write::write_all(check.stdin.as_mut().unwrap(), script.as_bytes()).unwrap();
            assert!(check.wait().unwrap().success(), "the bash script parses");
        }
    }
    assert_eq!(run(&["completions", "tcsh"]).status.code(), Some(2), "an unknown shell is a usage error");
    let page = support::stdout(&run(&["man"]));
    assert!(page.starts_with(".ie") && page.contains(".TH charm-host 1"), "{page}");
    let dir = tempfile::tempdir().unwrap();
    assert!(run(&["man", "--out-dir", dir.path().to_str().unwrap()]).status.success());
    for page in ["charm-host.1", "charm-host-run.1", "charm-host-agent.1", "charm-host-new.1"] {
        assert!(dir.path().join(page).is_file(), "{page} written");
    }
}
