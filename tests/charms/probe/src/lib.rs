//! Test charm: every hook runs the commands in `/script-<hook>` if it exists, else in
//! `/script` (one per line), and appends one result line per command to `/results`. Tests use it to probe host-function semantics and
//! sandbox limits without a charm per case.
//!
//! Commands: `is-leader`, `get KEY`, `get-all`, `set K=V [K=V...]` (an `=` with nothing
//! after it sets an empty value), `set-none` (an empty group), `pause` (create `/paused`,
//! wait for `/resume`, remove `/paused` then `/resume`), `spin`, `alloc MIB`, `panic MESSAGE`, `fail MESSAGE`,
//! `sleep MS`, `read PATH`, `env`, `time` (wall-clock seconds), `random` (8 random bytes),
//! `status STATUS MESSAGE`, `print TEXT`, `eprint TEXT`;
//! `service-start NAME`, `service-stop NAME`; unit data: `unit-set K=V [K=V...]`,
//! `unit-get UNIT KEY`, `unit-get-all UNIT`, `units`, `changed` (the units a
//! `unit-data-changed` announces); for benchmarks, `call-is-leader N` and
//! `call-get N KEY` call the host N times.

use std::fmt::Write as _;
use std::io::Write as _;

use charm_sdk::{Charm, Result, WorkloadStatus};

fn run_script() -> Result<()> {
    // `/script-<hook>` if there is one, else `/script`.
    let own = format!("/script-{}", charm_sdk::hook_name());
    let script = std::fs::read_to_string(own).or_else(|_| std::fs::read_to_string("/script")).unwrap_or_default();
    for line in script.lines().filter(|l| !l.trim().is_empty()) {
        let result = run_command(line)?;
        let mut results = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open("/results")
            .map_err(|e| format!("cannot open /results: {e}"))?;
        writeln!(results, "{line} -> {result}").map_err(|e| format!("cannot write /results: {e}"))?;
    }
    Ok(())
}

fn run_command(line: &str) -> Result<String> {
    let (command, rest) = line.split_once(' ').unwrap_or((line, ""));
    Ok(match command {
        "is-leader" => format!("{:?}", charm_sdk::is_leader()),
        "term" => format!("{:?}", charm_sdk::leader_term()),
        "get" => format!("{:?}", charm_sdk::leader_get(rest)),
        "get-all" => match charm_sdk::leader_get_all() {
            Ok(all) => all.iter().fold(String::new(), |mut out, (k, v)| {
                let _ = write!(out, "{k}={v};");
                out
            }),
            Err(err) => format!("Err({err:?})"),
        },
        "set" => {
            let group = rest.split(' ').map(|pair| pair.split_once('=').unwrap_or((pair, "")));
            format!("{:?}", charm_sdk::leader_set(group))
        }
        "call-is-leader" => {
            let n: u32 = rest.parse().map_err(|_| "call-is-leader takes a count")?;
            let leaders = (0..n).filter(|_| std::hint::black_box(charm_sdk::is_leader()) == Ok(true)).count();
            format!("{leaders} of {n}")
        }
        "call-get" => {
            let (n, key) = rest.split_once(' ').ok_or("call-get takes a count and a key")?;
            let n: u32 = n.parse().map_err(|_| "call-get takes a count")?;
            let found =
                (0..n).filter(|_| std::hint::black_box(charm_sdk::leader_get(key)).is_ok_and(|v| v.is_some())).count();
            format!("{found} of {n}")
        }
        "unit-set" => {
            let group = rest.split(' ').map(|pair| pair.split_once('=').unwrap_or((pair, "")));
            format!("{:?}", charm_sdk::unit_set(group))
        }
        "unit-get" => {
            let (unit, key) = rest.split_once(' ').ok_or("unit-get takes a unit and a key")?;
            format!("{:?}", charm_sdk::unit_get(unit, key))
        }
        "unit-get-all" => format!("{:?}", charm_sdk::unit_get_all(rest)),
        "units" => format!("{:?}", charm_sdk::units()),
        "changed" => format!("{:?}", CHANGED.with(|c| c.borrow().clone())),
        "service-start" => format!("{:?}", charm_sdk::services::start(rest)),
        "service-stop" => format!("{:?}", charm_sdk::services::stop(rest)),
        "set-none" => format!("{:?}", charm_sdk::leader_set(Vec::<(String, String)>::new())),
        "pause" => {
            std::fs::write("/paused", b"").map_err(|e| e.to_string())?;
            while std::fs::metadata("/resume").is_err() {
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            // `/paused` goes first: once `/resume` is gone, the test knows this pause is over.
            let _ = std::fs::remove_file("/paused");
            let _ = std::fs::remove_file("/resume");
            "resumed".into()
        }
        "spin" => {
            let mut x: u64 = 0;
            loop {
                x = std::hint::black_box(x.wrapping_add(1));
            }
        }
        "alloc" => {
            let mib: usize = rest.parse().map_err(|_| "alloc takes MiB")?;
            let mut chunks = Vec::new();
            for _ in 0..mib {
                chunks.push(std::hint::black_box(vec![1u8; 1024 * 1024]));
            }
            format!("allocated {} MiB", chunks.len())
        }
        "panic" => panic!("{rest}"),
        "fail" => return Err(rest.into()),
        "sleep" => {
            std::thread::sleep(std::time::Duration::from_millis(rest.parse().unwrap_or(0)));
            "slept".into()
        }
        "read" => format!("{:?}", std::fs::read_to_string(rest).map_err(|e| e.kind())),
        "env" => format!("vars={} args={}", std::env::vars().count(), std::env::args().count()),
        "time" => match std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
            Ok(since) => format!("{}", since.as_secs()),
            Err(e) => format!("Err({e})"),
        },
        "random" => charm_sdk::random_hex(8)?,
        "status" => {
            let (status, message) = rest.split_once(' ').unwrap_or((rest, ""));
            let status = match status {
                "active" => WorkloadStatus::Active,
                "waiting" => WorkloadStatus::Waiting,
                "blocked" => WorkloadStatus::Blocked,
                _ => WorkloadStatus::Maintenance,
            };
            charm_sdk::status_set(status, message);
            "ok".into()
        }
        "print" => {
            println!("{rest}");
            "ok".into()
        }
        "eprint" => {
            eprintln!("{rest}");
            "ok".into()
        }
        other => format!("unknown command {other:?}"),
    })
}

thread_local! {
    /// What the running `unit-data-changed` announces (empty in other hooks).
    static CHANGED: std::cell::RefCell<Vec<String>> = const { std::cell::RefCell::new(Vec::new()) };
}

struct Probe;

impl Charm for Probe {
    fn install() -> Result<()> {
        run_script()
    }
    fn leader_elected() -> Result<()> {
        run_script()
    }
    fn leader_settings_changed() -> Result<()> {
        run_script()
    }
    fn leader_deposed() -> Result<()> {
        run_script()
    }
    fn unit_data_changed(changed: Vec<String>) -> Result<()> {
        CHANGED.with(|c| *c.borrow_mut() = changed);
        run_script()
    }
    fn stop() -> Result<()> {
        run_script()
    }
}

charm_sdk::export_charm!(Probe);
