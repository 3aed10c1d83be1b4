//! A misbehaving hook fails alone: loops, memory hogs, panics and hangs are stopped with a
//! reason while other hooks run on; and the WASI sandbox shows nothing of the host.

mod support;

use std::time::Duration;

use charm_host::events::{EventKind, LogLevel};
use charm_host::hooks::{HookError, HookKind};
use support::*;

// The host drives hooks on a multi-threaded runtime (a spinning guest yields at every epoch
// tick, but on a single-threaded runtime it would still delay its neighbours' timers).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misbehaving_hooks_fail_alone() {
    let f = Fixture::new();
    let cases: [(&str, &[&str]); 5] = [
        ("spin/0", &["spin"]),
        ("hog/0", &["alloc 64"]),
        ("crash/0", &["panic the charm broke"]),
        ("hang/0", &["sleep 100000"]),
        ("good/0", &["sleep 200", "get-all"]),
    ];
    let mut hooks = Vec::new();
    for (name, lines) in cases {
        let unit = f.unit(name);
        script(&unit, lines);
        hooks.push(f.spawn(&unit, HookKind::Install));
    }
    let mut outcomes = Vec::new();
    for hook in hooks {
        outcomes.push(hook.await.expect("the host survives").result);
    }
    assert_eq!(outcomes[0], Err(HookError::Deadline(Duration::from_secs(2))), "loop");
    assert!(matches!(outcomes[1], Err(HookError::MemoryCap { cap: 16_777_216, .. })), "{:?}", outcomes[1]);
    match &outcomes[2] {
        Err(HookError::Trap(reason)) => assert!(reason.contains("the charm broke"), "{reason}"),
        other => panic!("panic should trap: {other:?}"),
    }
    assert_eq!(outcomes[3], Err(HookError::Deadline(Duration::from_secs(2))), "a blocking sleep");
    assert_eq!(outcomes[4], Ok(()), "the well-behaved hook is undisturbed");

    // The runtime is still usable afterwards, and instance slots were returned.
    for i in 0..20 {
        let unit = f.unit(&format!("after/{i}"));
        script(&unit, &["is-leader"]);
        assert_eq!(f.run(&unit, HookKind::Install).await.result, Ok(()));
    }
}

#[tokio::test]
async fn a_charm_error_fails_the_hook_with_its_message() {
    let f = Fixture::new();
    let unit = f.unit("app/0");
    script(&unit, &["fail database not ready"]);
    let outcome = f.run(&unit, HookKind::Stop).await;
    assert_eq!(outcome.result, Err(HookError::Charm("database not ready".into())));
    assert_eq!(unit.unit().status().last_error.as_deref(), Some("database not ready"));
    assert_eq!(unit.unit().status().last_hook, Some(HookKind::Stop));
}

#[tokio::test]
async fn the_sandbox_sees_only_the_unit_data_dir() {
    let f = Fixture::new();
    let unit = f.unit("app/0");
    std::fs::write(f.dir.path().join("outside"), "secret").unwrap();
    std::fs::write(unit.unit().data_dir().join("inside"), "mine").unwrap();
    script(&unit, &["read /etc/passwd", "read ../outside", "read /../outside", "read inside", "read /inside", "env"]);
    f.run(&unit, HookKind::Install).await.result.unwrap();
    let results = results(&unit);
    assert!(results[0].starts_with("Err("), "host files are invisible: {}", results[0]);
    assert!(results[1].starts_with("Err("), "no escape upwards: {}", results[1]);
    assert!(results[2].starts_with("Err("), "no escape upwards: {}", results[2]);
    assert_eq!(results[3], "Ok(\"mine\")");
    assert_eq!(results[4], "Ok(\"mine\")");
    assert_eq!(results[5], "vars=0 args=0");
}

#[tokio::test]
async fn stdout_stderr_and_log_reach_the_unit_log() {
    let f = Fixture::new();
    let unit = f.unit("app/0");
    script(&unit, &["print to stdout", "eprint to stderr", "status blocked need a relation"]);
    f.run(&unit, HookKind::Install).await.result.unwrap();
    let logs: Vec<(LogLevel, String)> = f
        .events
        .events()
        .into_iter()
        .filter_map(|e| match e.kind {
            EventKind::Log { level, message } => Some((level, message)),
            _ => None,
        })
        .collect();
    assert!(logs.contains(&(LogLevel::Info, "to stdout".into())), "{logs:?}");
    assert!(logs.contains(&(LogLevel::Warning, "to stderr".into())), "{logs:?}");
    assert_eq!(unit.unit().status().message, "need a relation");
}
