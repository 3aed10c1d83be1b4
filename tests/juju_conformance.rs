//! Juju's own expectations of its leadership tools, ported as black-box tests of ours. Each
//! test names the Juju source it comes from (juju/juju's uniter hook tools, juju/utils'
//! `keyvalues`, juju/cmd's output formatters and `cmd.Main`, the leadership tracker, the
//! uniter's leadership operations and the lease manager); `docs/juju-compatibility.md`
//! lists every behaviour with ours, and why where we differ on purpose. Facts were carried
//! over; no Juju code or test text was copied.

mod support;

use charm_host::cli_args::{ArgsError, parse_leader_set_args};
use support::*;

/// Runs a hook tool against `unit`'s agent: (exit code, stdout, stderr).
fn run(agents: &Agents, tool: &str, unit: &str, args: &[&str]) -> (i32, String, String) {
    let out = agents.tool(&[&[tool, "--unit", unit][..], args].concat());
    (out.status.code().unwrap_or(-1), stdout(&out), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn ok(text: &str) -> (i32, String, String) {
    (0, text.to_owned(), String::new())
}

fn error(code: i32, message: &str) -> (i32, String, String) {
    (code, String::new(), format!("ERROR {message}\n"))
}

/// A leader `db/0` with settings `key=value`, `sample=settings` (besides the charm's own),
/// and a minion `db/1`.
fn application() -> Agents {
    let agents = Agents::leader_and_minion();
    assert_eq!(run(&agents, "leader-set", "db/0", &["key=value", "sample=settings"]).0, 0);
    agents
}

/// juju/juju `worker/uniter/runner/jujuc/is-leader_test.go`, through juju/cmd's `Main`.
#[test]
fn is_leader_as_juju_tests_it() {
    let agents = application();
    assert_eq!(run(&agents, "is-leader", "db/0", &[]), ok("True\n"));
    assert_eq!(run(&agents, "is-leader", "db/1", &[]), ok("False\n"));
    for (format, leader, minion) in
        [("smart", "True\n", "False\n"), ("yaml", "true\n", "false\n"), ("json", "true\n", "false\n")]
    {
        assert_eq!(run(&agents, "is-leader", "db/0", &["--format", format]), ok(leader), "{format}");
        assert_eq!(run(&agents, "is-leader", "db/1", &["--format", format]), ok(minion), "{format}");
    }
    assert_eq!(run(&agents, "is-leader", "db/0", &["--format=json"]), ok("true\n"), "--format=FORMAT");
    assert_eq!(run(&agents, "is-leader", "db/0", &["blah"]), error(2, "unrecognized args: [\"blah\"]"));
    assert_eq!(
        run(&agents, "is-leader", "db/0", &["--format", "bad"]),
        error(2, "invalid value \"bad\" for option --format: unknown format \"bad\"")
    );
    assert_eq!(run(&agents, "is-leader", "db/0", &["--bogus"]), error(2, "option provided but not defined: --bogus"));
}

/// juju/juju `worker/uniter/runner/jujuc/leader-get_test.go` (settings `key=value`,
/// `sample=settings`), through juju/cmd's formatters.
#[test]
fn leader_get_as_juju_tests_it() {
    let agents = application();
    for unit in ["db/0", "db/1"] {
        for format in [&[][..], &["--format", "smart"]] {
            assert_eq!(run(&agents, "leader-get", unit, &[format, &["unknown"]].concat()), ok(""), "absent: nothing");
            assert_eq!(run(&agents, "leader-get", unit, &[format, &["key"]].concat()), ok("value\n"));
        }
        assert_eq!(run(&agents, "leader-get", unit, &["--format", "json", "unknown"]), ok("null\n"));
        assert_eq!(run(&agents, "leader-get", unit, &["--format", "json", "key"]), ok("\"value\"\n"));
        assert_eq!(
            run(&agents, "leader-get", unit, &["--format", "yaml", "unknown"]),
            ok(""),
            "yaml prints nothing for nil"
        );
        assert_eq!(run(&agents, "leader-get", unit, &["--format", "yaml", "key"]), ok("value\n"));
        // All settings, with no key or `-`: a YAML map in smart and yaml, an object in json.
        for all in [&[][..], &["-"]] {
            for format in ["smart", "yaml"] {
                let (code, out, err) = run(&agents, "leader-get", unit, &[&["--format", format][..], all].concat());
                assert_eq!((code, err.as_str()), (0, ""));
                assert!(out.contains("key: value\n") && out.contains("sample: settings\n"), "{format}: {out}");
            }
            let (code, out, _) = run(&agents, "leader-get", unit, &[&["--format", "json"][..], all].concat());
            let map: serde_json::Value = serde_json::from_str(&out).unwrap();
            assert_eq!((code, &map["key"], &map["sample"]), (0, &"value".into(), &"settings".into()));
        }
    }
    assert_eq!(run(&agents, "leader-get", "db/1", &["x=x"]), error(2, "invalid key \"x=x\""));
    assert_eq!(
        run(&agents, "leader-get", "db/1", &["x=y", "extra"]),
        error(2, "invalid key \"x=y\""),
        "the key is checked first"
    );
    assert_eq!(run(&agents, "leader-get", "db/1", &["a", "b"]), error(2, "unrecognized args: [\"b\"]"));
    assert_eq!(
        run(&agents, "leader-get", "db/1", &["--format", "bad"]),
        error(2, "invalid value \"bad\" for option --format: unknown format \"bad\"")
    );
    // Options may follow the key.
    assert_eq!(run(&agents, "leader-get", "db/1", &["key", "--format", "json"]), ok("\"value\"\n"));
}

/// juju/cmd `output_test.go`: `-o/--output FILE` writes what stdout would have held, and
/// creates the file even when there is nothing to write.
#[test]
fn output_files_as_juju_writes_them() {
    let agents = application();
    let dir = tempfile::tempdir().unwrap();
    let tool = |args: &[&str]| {
        std::process::Command::new(BIN)
            .args(args)
            .args(["--state", agents.state()])
            .current_dir(dir.path())
            .output()
            .unwrap()
    };
    let out = tool(&["is-leader", "--unit", "db/0", "--output", "leader"]);
    assert_eq!((out.status.code(), stdout(&out).as_str()), (Some(0), ""));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("leader")).unwrap(),
        "True\n",
        "relative to the current directory"
    );
    let out = tool(&["leader-get", "--unit", "db/1", "-o", "value", "--format", "json", "key"]);
    assert_eq!((out.status.code(), stdout(&out).as_str()), (Some(0), ""));
    assert_eq!(std::fs::read_to_string(dir.path().join("value")).unwrap(), "\"value\"\n");
    let out = tool(&["leader-get", "--unit", "db/1", "-o", "absent", "unknown"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(std::fs::read_to_string(dir.path().join("absent")).unwrap(), "", "created though empty");
}

/// juju/juju `worker/uniter/runner/jujuc/leader-set_test.go` and the hook context's
/// `WriteLeaderSettings` (`runner/context/leader_test.go`).
#[test]
fn leader_set_as_juju_tests_it() {
    let agents = application();
    assert_eq!(run(&agents, "leader-set", "db/0", &["foo=bar", "baz=qux"]), ok(""));
    assert_eq!(run(&agents, "leader-get", "db/1", &["foo"]), ok("bar\n"));
    assert_eq!(run(&agents, "leader-get", "db/1", &["baz"]), ok("qux\n"));
    assert_eq!(run(&agents, "leader-set", "db/0", &[]), ok(""), "no arguments: an empty write succeeds");
    assert_eq!(run(&agents, "leader-set", "db/0", &["nonsense"]), error(2, "expected \"key=value\", got \"nonsense\""));
    assert_eq!(run(&agents, "leader-set", "db/0", &["=b"]), error(2, "expected \"key=value\", got \"=b\""));
    assert_eq!(run(&agents, "leader-set", "db/0", &["a=1", "a=2"]), error(2, "key \"a\" specified more than once"));
    assert_eq!(run(&agents, "leader-set", "db/0", &[" spaced = out "]), ok(""), "whitespace is trimmed");
    assert_eq!(run(&agents, "leader-get", "db/1", &["spaced"]), ok("out\n"));
    assert_eq!(run(&agents, "leader-set", "db/0", &["eq=a=b"]), ok(""));
    assert_eq!(run(&agents, "leader-get", "db/1", &["eq"]), ok("a=b\n"), "split at the first =");
    // A minion's write fails, worded as Juju's context words it, and writes nothing.
    let refused = "cannot write leadership settings: cannot write settings: not the leader";
    assert_eq!(run(&agents, "leader-set", "db/1", &["foo=minion"]), error(1, refused));
    assert_eq!(run(&agents, "leader-set", "db/1", &[]), error(1, refused), "an empty write by a minion too");
    assert_eq!(run(&agents, "leader-get", "db/1", &["foo"]), ok("bar\n"));
    // juju/cmd: leader-set has no output options.
    assert_eq!(
        run(&agents, "leader-set", "db/0", &["--format", "json", "a=b"]),
        error(2, "option provided but not defined: --format")
    );
}

/// juju/utils `keyvalues/keyvalues_test.go`, with empty values allowed as `leader-set`
/// parses them.
#[test]
fn key_value_arguments_parse_as_juju_s_keyvalues() {
    let parse = |args: &[&str]| parse_leader_set_args(&args.iter().map(|a| a.to_string()).collect::<Vec<_>>());
    let group =
        |pairs: &[(&str, &str)]| Ok(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<Vec<_>>());
    assert_eq!(parse(&["key=value"]), group(&[("key", "value")]));
    assert_eq!(parse(&[]), group(&[]));
    assert_eq!(parse(&["key"]), Err(ArgsError::NotAPair("key".into())));
    assert_eq!(parse(&["=value"]).unwrap_err().to_string(), "expected \"key=value\", got \"=value\"");
    assert_eq!(parse(&["="]).unwrap_err().to_string(), "expected \"key=value\", got \"=\"");
    assert_eq!(parse(&["key=value", "key=value"]).unwrap_err().to_string(), "key \"key\" specified more than once");
    assert_eq!(
        parse(&["key=value", "key2=value", "key3=value"]),
        group(&[("key", "value"), ("key2", "value"), ("key3", "value")])
    );
    assert_eq!(parse(&["key="]), group(&[("key", "")]));
    assert_eq!(parse(&["key=value\n", "key2\t=\tvalue2"]), group(&[("key", "value"), ("key2", "value2")]));
    assert_eq!(parse(&["key =value", "key\t=\tvalue2"]), Err(ArgsError::Duplicate("key".into())));
    assert_eq!(parse(&["key=    "]), group(&[("key", "")]));
    assert_eq!(parse(&["   =value"]).unwrap_err().to_string(), "expected \"key=value\", got \"=value\"");
    assert_eq!(parse(&["key=value", "", "foo=bar"]), group(&[("key", "value"), ("foo", "bar")]));
    assert_eq!(parse(&["key"]).unwrap_err().to_string(), "expected \"key=value\", got \"key\"");
}

/// juju/cmd `cmd_test.go`: `-h`/`--help` print usage on stdout and exit 0.
#[test]
fn help_goes_to_stdout_with_exit_0() {
    for tool in ["is-leader", "leader-get", "leader-set"] {
        for flag in ["-h", "--help"] {
            let out = std::process::Command::new(BIN).args([tool, flag]).output().unwrap();
            assert_eq!(out.status.code(), Some(0), "{tool} {flag}");
            assert!(stdout(&out).contains("Usage:"), "{tool} {flag}: {}", stdout(&out));
            assert!(out.stderr.is_empty());
        }
    }
}

/// juju/juju `worker/uniter/runner/jujuc/is-leader_test.go` (an `IsLeader` error) and the
/// tracker's fail-safe answer: with no agent to ask, the answer is unknown, exit 1.
#[test]
fn an_unknown_answer_is_an_error_with_exit_1() {
    let agents = Agents::new();
    let (code, out, err) = run(&agents, "is-leader", "db/0", &[]);
    assert_eq!((code, out.as_str()), (1, ""));
    assert!(err.starts_with("ERROR ") && err.ends_with('\n') && err.lines().count() == 1, "{err}");
    let (code, _, err) = run(&agents, "leader-get", "db/0", &["key"]);
    assert_eq!(code, 1);
    assert!(err.starts_with("ERROR "), "{err}");
}

mod lease_manager {
    //! juju/juju `worker/lease/manager_*_test.go`, against our store boundary (the memory
    //! store on a manual clock; `host/tests/lease_store.rs` runs the same rules on SQLite).

    use std::sync::Arc;
    use std::time::Duration;

    use charm_host::leadership::{
        Claimant, LeadershipStore, LeadershipToken, LeaseError, ManualClock, MemoryStore, Release, wait_until_released,
    };
    use charm_host::names::{AppName, UnitName};

    const MINUTE: Duration = Duration::from_secs(60);

    fn store() -> (Arc<ManualClock>, Arc<dyn LeadershipStore>) {
        let clock = Arc::new(ManualClock::default());
        (clock.clone(), Arc::new(MemoryStore::with_clock(clock)))
    }

    fn unit(name: &str) -> UnitName {
        UnitName::new(name).unwrap()
    }

    /// The one agent of `name` in this test process (the same incarnation every time).
    fn claimant(name: &str) -> Claimant {
        static AGENTS: std::sync::Mutex<Vec<Claimant>> = std::sync::Mutex::new(Vec::new());
        let mut agents = AGENTS.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(agent) = agents.iter().find(|c| c.unit().as_str() == name) {
            return agent.clone();
        }
        let agent = Claimant::fresh(unit(name));
        agents.push(agent.clone());
        agent
    }

    fn redis() -> AppName {
        AppName::new("redis").unwrap()
    }

    /// manager_claim_test: a free lease is granted; the holder's claim extends it; another
    /// unit's claim is denied and changes nothing.
    #[tokio::test]
    async fn claims_grant_extend_and_deny() {
        let (clock, store) = store();
        let first = store.claim(&claimant("redis/0"), MINUTE).await.unwrap();
        clock.advance(Duration::from_secs(10));
        let extended = store.claim(&claimant("redis/0"), MINUTE).await.unwrap();
        assert_eq!(extended.term, first.term, "an extension, not a new tenure");
        assert!(extended.valid_until > first.valid_until);
        let before = store.lease(&redis()).await.unwrap();
        assert!(matches!(store.claim(&claimant("redis/1"), MINUTE).await, Err(LeaseError::Denied { .. })));
        assert_eq!(store.lease(&redis()).await.unwrap(), before, "a denied claim writes nothing");
    }

    /// manager_check_test: a token checks out for the holder only.
    #[tokio::test]
    async fn tokens_check_the_holder() {
        let (_, store) = store();
        let absent = LeadershipToken::new(store.clone(), unit("redis/0")).await.unwrap();
        assert!(matches!(absent.check().await, Err(LeaseError::NotHeld { .. })), "no lease: not held");
        store.claim(&claimant("redis/0"), MINUTE).await.unwrap();
        let holder = LeadershipToken::new(store.clone(), unit("redis/0")).await.unwrap();
        holder.check().await.unwrap();
        let other = LeadershipToken::new(store.clone(), unit("redis/99")).await.unwrap();
        assert!(matches!(other.check().await, Err(LeaseError::NotHeld { .. })));
    }

    /// manager_revoke_test: the holder may revoke; another unit may not; revoking a lease
    /// nobody holds succeeds and does nothing.
    #[tokio::test]
    async fn revokes() {
        let (_, store) = store();
        store.revoke(&claimant("redis/0"), Release::StepDown).await.unwrap();
        store.claim(&claimant("redis/0"), MINUTE).await.unwrap();
        assert!(matches!(store.revoke(&claimant("redis/1"), Release::StepDown).await, Err(LeaseError::NotHeld { .. })));
        assert!(store.lease(&redis()).await.unwrap().is_some(), "a refused revoke changes nothing");
        store.revoke(&claimant("redis/0"), Release::StepDown).await.unwrap();
        assert_eq!(store.lease(&redis()).await.unwrap(), None);
    }

    /// manager_pin_test and manager_leases_test: pins by entity, listed per application;
    /// leases listed as application -> holder.
    #[tokio::test]
    async fn pins_and_leases_are_listed() {
        let (_, store) = store();
        store.claim(&claimant("redis/0"), MINUTE).await.unwrap();
        store.pin(&redis(), "machine-0").await.unwrap();
        store.pin(&redis(), "machine-0").await.unwrap();
        assert_eq!(store.pins().await.unwrap().get(&redis()).cloned(), Some(vec!["machine-0".to_owned()]));
        assert_eq!(store.leaders().await.unwrap().get(&redis()), Some(&unit("redis/0")));
        store.unpin(&redis(), "machine-0").await.unwrap();
        assert!(store.pins().await.unwrap().is_empty());
    }

    /// manager_block_test: a wait on a lease nobody holds ends at once; on a held lease it
    /// ends when the lease expires; several waiters all end; a cancelled wait says so.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn waits_until_released() {
        let (clock, store) = store();
        wait_until_released(store.as_ref(), &redis(), std::future::pending()).await.unwrap();
        store.claim(&claimant("redis/0"), MINUTE).await.unwrap();
        let waiters: Vec<_> = (0..3)
            .map(|_| {
                let store = store.clone();
                tokio::spawn(async move { wait_until_released(store.as_ref(), &redis(), std::future::pending()).await })
            })
            .collect();
        clock.advance(MINUTE);
        for waiter in waiters {
            tokio::time::timeout(Duration::from_secs(20), waiter).await.unwrap().unwrap().unwrap();
        }
        store.claim(&claimant("redis/1"), MINUTE).await.unwrap();
        let cancelled = wait_until_released(store.as_ref(), &redis(), async {}).await;
        assert_eq!(cancelled, Err(LeaseError::Cancelled));
    }

    /// manager_validation_test: names and durations are checked (ours by type: a unit or
    /// application name that does not parse cannot be asked about at all).
    #[tokio::test]
    async fn bad_names_and_durations_are_refused() {
        let (_, store) = store();
        assert!(UnitName::new("INVALID").is_err() && AppName::new("INVALID").is_err());
        assert!(matches!(
            store.claim(&claimant("redis/0"), Duration::from_millis(10)).await,
            Err(LeaseError::InvalidDuration(_))
        ));
        assert!(matches!(store.pin(&redis(), "").await, Err(LeaseError::InvalidEntity(_))));
    }
}

mod uniter {
    //! juju/juju `worker/uniter/leadership/resolver_test.go` and `operation/{leader,runhook}_test.go`,
    //! against our hook queue (the unit's decisions, a pure state machine).

    use charm_host::agent::{Backoff, HookQueue, LocalState, Next};
    use charm_host::hooks::HookKind::{self, *};
    use charm_host::leadership::Timestamp;

    fn drain(queue: &mut HookQueue, held: Option<u64>) -> Vec<HookKind> {
        let now = Timestamp::from_nanos(0);
        let mut ran = Vec::new();
        while let Next::Run(hook) = queue.next(now, held) {
            queue.finished(hook, true, now, Some(0));
            ran.push(hook.hook);
            if ran.len() > 20 {
                break;
            }
        }
        ran
    }

    fn installed() -> HookQueue {
        let mut queue = HookQueue::new(LocalState { installed: true, ..LocalState::default() }, Backoff::default());
        queue.on_settings(0);
        queue
    }

    /// Nothing runs before install; becoming leader queues leader-elected once.
    #[test]
    fn install_first_then_leader_elected_once() {
        let mut queue = HookQueue::new(LocalState::default(), Backoff::default());
        queue.on_settings(0);
        queue.on_leader(1);
        assert_eq!(drain(&mut queue, Some(1)), [Install, LeaderElected]);
        queue.on_leader(1);
        assert_eq!(drain(&mut queue, Some(1)), [], "accepting again while leader queues nothing");
    }

    /// A queued leader-elected is skipped when the unit no longer leads when it would run.
    #[test]
    fn a_stale_leader_elected_is_skipped() {
        let mut queue = installed();
        queue.on_leader(2);
        assert_eq!(drain(&mut queue, None), [], "term 2 is no longer held when the hook would start");
    }

    /// Only minions run leader-settings-changed, and not once stopping.
    #[test]
    fn only_minions_hear_of_settings_and_not_while_stopping() {
        let mut leader = installed();
        leader.on_leader(1);
        drain(&mut leader, Some(1));
        leader.on_settings(1);
        assert_eq!(drain(&mut leader, Some(1)), []);
        let mut minion = installed();
        minion.on_minion();
        drain(&mut minion, None);
        minion.on_settings(1);
        assert_eq!(drain(&mut minion, None), [LeaderSettingsChanged]);
        minion.on_stop();
        minion.on_settings(2);
        assert_eq!(drain(&mut minion, None), [Stop], "dying: no leader-settings-changed");
    }

    /// Juju runs no hook when it resigns; ours runs leader-deposed (a deliberate difference).
    #[test]
    fn resigning_runs_leader_deposed_here() {
        let mut queue = installed();
        queue.on_leader(1);
        drain(&mut queue, Some(1));
        queue.on_minion();
        assert_eq!(drain(&mut queue, None), [LeaderDeposed, LeaderSettingsChanged]);
    }
}

mod tracker {
    //! juju/juju `worker/leadership/tracker_test.go`, against our tracker.

    use std::sync::Arc;
    use std::time::Duration;

    use charm_host::leadership::{Clock as _, LeadershipStore, ManualClock, MemoryStore};
    use charm_host::names::UnitName;
    use charm_host::tracker::{LeadershipTracker, Refresh};

    const WINDOW: Duration = Duration::from_secs(30);

    /// A claim asks for twice the guarantee; a denied claim makes a minion; the guarantee
    /// (is-leader) follows the claim.
    #[tokio::test]
    async fn claims_twice_the_guarantee_and_answers_by_it() {
        let clock = Arc::new(ManualClock::default());
        let store: Arc<dyn LeadershipStore> = Arc::new(MemoryStore::with_clock(clock.clone()));
        let leader = LeadershipTracker::new(UnitName::new("led-service/123").unwrap(), store.clone(), WINDOW);
        let other = LeadershipTracker::new(UnitName::new("led-service/7").unwrap(), store.clone(), WINDOW);
        let claimed_at = clock.now();
        assert!(matches!(leader.refresh().await, Refresh::Leader { new_term: true, .. }));
        let lease = store.lease(&"led-service".parse().unwrap()).await.unwrap().unwrap();
        assert_eq!(lease.expires, claimed_at + 2 * WINDOW, "claims are for twice the guarantee");
        assert_eq!(leader.handle().is_leader(), Ok(true));
        assert_eq!(other.refresh().await, Refresh::Minion, "denied: a minion");
        assert_eq!(other.handle().is_leader(), Ok(false));
        // Without renewals the guarantee ends a window before the lease does.
        clock.advance(WINDOW + Duration::from_secs(1));
        assert_eq!(leader.handle().is_leader(), Ok(false));
        assert_eq!(other.refresh().await, Refresh::Minion, "the lease still keeps the other unit out");
    }
}
