//! Several OS processes share one SQLite file: they create it together, and they contend for
//! the same application's lease. Each process is this test binary run again as a worker
//! (`lease_worker`, ignored in a normal run, told what to do by its environment); each
//! prints what it believed and when, on the machine-wide monotonic clock they all share,
//! and the parent checks the beliefs.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use charm_host::leadership::{
    Claimant, Clock, LeadershipStore, LeaseError, MonotonicClock, Release, SqliteStore, Timestamp, WriteError,
};
use charm_host::names::{AppName, UnitName};

const WORKERS: u32 = 3;
const RUN_FOR: Duration = Duration::from_secs(3);

#[tokio::test]
async fn processes_sharing_one_file_never_lead_at_once_and_lose_no_write() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("state.db");
    let children: Vec<_> = (0..WORKERS)
        .map(|n| {
            worker("contend")
                .env("LEASE_WORKER_UNIT", format!("app/{n}"))
                .env("LEASE_WORKER_DB", &db)
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut tenures: Vec<(String, u64, u64, u64)> = Vec::new(); // unit, term, from, until
    let mut writes: Vec<u64> = Vec::new();
    for child in children {
        let output = child.wait_with_output().unwrap();
        assert!(output.status.success(), "a worker failed");
        for line in String::from_utf8_lossy(&output.stdout).lines() {
            // The harness may print `test lease_worker ... ` before a worker's first line.
            let line = ["TENURE", "WROTE"].iter().find_map(|m| line.find(m).map(|i| &line[i..])).unwrap_or("");
            let fields: Vec<&str> = line.split_whitespace().collect();
            match fields.as_slice() {
                ["TENURE", unit, term, from, until] => tenures.push((
                    unit.to_string(),
                    term.parse().unwrap(),
                    from.parse().unwrap(),
                    until.parse().unwrap(),
                )),
                ["WROTE", version] => writes.push(version.parse().unwrap()),
                _ => {}
            }
        }
    }
    tenures.sort_by_key(|t| t.2);
    let holders: std::collections::BTreeSet<&str> = tenures.iter().map(|t| t.0.as_str()).collect();
    assert!(tenures.len() >= 3 && holders.len() >= 2, "the lease should change hands: {tenures:?}");
    for pair in tenures.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        assert!(a.3 <= b.2, "{} believed it led until {} but {} believed it from {}", a.0, a.3, b.0, b.2);
        assert!(b.1 > a.1, "terms must rise with each tenure: {a:?} then {b:?}");
    }
    writes.sort();
    let store = SqliteStore::open(&db).unwrap();
    let final_version = store.read_settings(&AppName::new("app").unwrap()).await.unwrap().version;
    assert!(!writes.is_empty());
    assert_eq!(writes, (1..=final_version).collect::<Vec<_>>(), "every acknowledged write, none lost, none twice");
}

/// This test binary, run again as a worker doing `mode`.
fn worker(mode: &str) -> Command {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args(["--exact", "lease_worker", "--ignored", "--nocapture", "--test-threads=1"])
        .env("LEASE_WORKER_MODE", mode);
    command
}

/// Several processes creating and opening one new file at the same instant all succeed
/// (they used to fail now and then with "database is locked").
#[tokio::test]
async fn processes_creating_one_store_together_all_open_it() {
    for round in 0..5 {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("state.db");
        let at = MonotonicClock.now() + Duration::from_millis(300);
        let children: Vec<_> = (0..12)
            .map(|_| {
                worker("open")
                    .env("LEASE_WORKER_DB", &db)
                    .env("LEASE_WORKER_AT", at.as_nanos().to_string())
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for child in children {
            let output = child.wait_with_output().unwrap();
            assert!(
                output.status.success(),
                "round {round}: a worker could not open the new store: {}",
                String::from_utf8_lossy(&output.stdout)
            );
        }
        let store = SqliteStore::open(&db).unwrap();
        assert_eq!(store.last_term(&AppName::new("app").unwrap()).await.unwrap(), 0);
    }
}

/// The worker (ignored in a normal run; the tests above start it with its orders).
#[tokio::test]
#[ignore = "a worker process, started by the other tests of this file"]
async fn lease_worker() {
    let mode = std::env::var("LEASE_WORKER_MODE").expect("LEASE_WORKER_MODE says what the worker does");
    let db = std::env::var("LEASE_WORKER_DB").expect("LEASE_WORKER_DB names the store");
    match mode.as_str() {
        "open" => {
            let at: u64 = std::env::var("LEASE_WORKER_AT").expect("LEASE_WORKER_AT").parse().unwrap();
            let at = Timestamp::from_nanos(at);
            while MonotonicClock.now() < at {
                std::thread::sleep(Duration::from_micros(200));
            }
            if let Err(err) = SqliteStore::open(Path::new(&db)) {
                panic!("opening a new store alongside others failed: {err}");
            }
        }
        "contend" => contend(&std::env::var("LEASE_WORKER_UNIT").expect("LEASE_WORKER_UNIT"), &db).await,
        other => panic!("unknown worker mode {other}"),
    }
}

/// Claim, hold for a while with renewals and fenced writes, revoke, repeat. A worker that
/// is descheduled past its 1 s lease finds its renewal denied or its write fenced: its
/// tenure ends there, as a real holder's would.
async fn contend(unit: &str, db: &str) {
    let unit = Claimant::fresh(UnitName::new(unit).unwrap());
    let store = SqliteStore::open(Path::new(db)).unwrap();
    let clock = MonotonicClock;
    let end = clock.now() + RUN_FOR;
    let mut seq = 0u64;
    let mut rng = unit.unit().number() as u64 * 7919 + 17;
    let mut next = move || {
        rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (rng >> 33) % 100
    };
    while clock.now() < end {
        let claim = match store.claim(&unit, Duration::from_secs(1)).await {
            Ok(claim) => claim,
            Err(LeaseError::Denied { .. }) => {
                tokio::time::sleep(Duration::from_millis(2 + next() / 10)).await;
                continue;
            }
            Err(err) => panic!("claim failed: {err}"),
        };
        let from = clock.now();
        let mut valid_until = claim.valid_until;
        let hold_until = from + Duration::from_millis(50 + next() * 3);
        while clock.now() < hold_until {
            seq += 1;
            let value = format!("{}:{}:{seq}", unit.unit(), claim.term);
            match store.write_settings(&unit, claim.term, &[("last".into(), value)]).await {
                Ok(snapshot) => println!("WROTE {}", snapshot.version),
                Err(WriteError::NotLeader { .. }) => break,
                Err(err) => panic!("a fenced write failed: {err}"),
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
            match store.claim(&unit, Duration::from_secs(1)).await {
                Ok(renewed) if renewed.term == claim.term => valid_until = renewed.valid_until,
                Ok(_) | Err(LeaseError::Denied { .. }) => break,
                Err(err) => panic!("renewal failed: {err}"),
            }
        }
        let until = clock.now().min(valid_until);
        println!("TENURE {} {} {} {}", unit.unit(), claim.term, from.as_nanos(), until.as_nanos());
        match store.revoke(&unit, Release::StepDown).await {
            Ok(()) | Err(LeaseError::NotHeld { .. }) => {}
            Err(err) => panic!("revoke failed: {err}"),
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
