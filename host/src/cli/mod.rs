//! The `charm-host` command (feature `cli`, on by default): argument definitions and
//! dispatch to one module per command. Its one entry point is [`run`].

/// `println!` for command output: a closed stdout pipe ends the program quietly.
macro_rules! outln {
    ($($arg:tt)*) => { $crate::cli::output::write_stdout(&format!("{}\n", format_args!($($arg)*))) };
}

/// `print!` for command output, like [`outln`].
macro_rules! out {
    ($($arg:tt)*) => { $crate::cli::output::write_stdout(&format!($($arg)*)) };
}

mod agent;
pub mod args;
#[cfg(feature = "bench")]
mod bench;
mod completions;
mod history;
mod new;
mod operator;
mod output;
mod provisional;
mod run;
mod status;
mod store;
mod tools;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use crate::names::UnitName;
use crate::timing;
use clap::{Args, Parser, Subcommand};

/// Runs WebAssembly charms with Juju-style application leadership.
#[derive(Debug, Parser)]
#[command(name = "charm-host", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
    /// How the host's own log (stderr; its level from `CHARM_HOST_LOG`, default `warn`) is
    /// written: `text` lines, or `json`, one object per line with `unit` and `hook` fields.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

/// The format of the host's own log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create a charm crate to start from: it builds, runs with `run` and passes its tests.
    New(new::NewArgs),
    /// Run N units of one or more applications in this process and show what their hooks do.
    Run(RunArgs),
    /// Run one unit as a long-lived agent on a shared state directory.
    Agent(AgentArgs),
    /// Show applications, leaders, terms, settings, pins and units of a state directory.
    Status(StatusArgs),
    /// Show each application's tenures, newest first: who led, when, how it ended, and the
    /// leaderless gap before each.
    History(HistoryArgs),
    /// Ask a unit's agent whether the unit is leader (prints True or False).
    IsLeader {
        #[command(flatten)]
        target: ToolArgs,
        #[command(flatten)]
        output: OutputArgs,
        /// Refused (Juju's `is-leader` takes no arguments): collected to say so as Juju does.
        #[arg(hide = true)]
        args: Vec<String>,
    },
    /// Print the term a unit leads at, its fencing token (not the leader: exit 1).
    LeaderTerm {
        #[command(flatten)]
        target: ToolArgs,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Read leader settings through a unit's agent: one KEY, or all with no key or `-`.
    LeaderGet {
        #[command(flatten)]
        target: ToolArgs,
        #[command(flatten)]
        output: OutputArgs,
        /// The key to read; omit it (or give `-`) for every setting.
        #[arg(value_name = "KEY")]
        args: Vec<String>,
    },
    /// Write leader settings through the leader's agent: KEY=VALUE... (an empty value deletes).
    LeaderSet {
        #[command(flatten)]
        target: ToolArgs,
        /// KEY=VALUE pairs, written as one atomic group (none: a write that changes nothing).
        pairs: Vec<String>,
    },
    /// Write the unit's own data through its agent: KEY=VALUE... (an empty value deletes).
    UnitSet {
        #[command(flatten)]
        target: ToolArgs,
        /// KEY=VALUE pairs, written as one atomic group.
        pairs: Vec<String>,
    },
    /// Read a unit's data through an agent: KEY (or all, with none or `-`) of UNIT (the
    /// agent's own unit without it; another unit's only through the leader's agent).
    UnitGet {
        #[command(flatten)]
        target: ToolArgs,
        #[command(flatten)]
        output: OutputArgs,
        /// `[KEY|-] [UNIT]`, in the order of Juju's `relation-get`.
        #[arg(value_name = "KEY UNIT")]
        args: Vec<String>,
    },
    /// Operator action: the unit, if leader, steps down and another unit is elected.
    StepDown(ToolArgs),
    /// Operator action: UNIT leaves its application for good; its data is deleted and the
    /// leader hears of it. Stop its agent first (a restarted agent joins again).
    RemoveUnit(RemoveUnitArgs),
    /// Operator action: hand leadership to UNIT directly (no other unit leads in between).
    Elect(ElectArgs),
    /// Print a shell completion script: `charm-host completions bash > /etc/bash_completion.d/charm-host`.
    Completions(completions::CompletionsArgs),
    /// Print the man page (roff): `charm-host man | man -l -`; `--out-dir DIR` writes one
    /// per command.
    Man(completions::ManArgs),
    /// Measure every performance figure against a baseline taken in the same run (only in
    /// `charm-host-bench`, built with the `bench` feature).
    #[cfg(feature = "bench")]
    Bench(BenchArgs),
}

/// Options for `charm-host-bench bench`.
#[cfg(feature = "bench")]
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Fewer samples and smaller crowds: a smoke test, not a measurement.
    #[arg(long)]
    pub quick: bool,
    /// Print one JSON object `{"figures":[...]}` instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Measure only these sections (repeatable): calls, lease, renewals, etcd, processes,
    /// agents, unit-data, cold-start, memory.
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(bench::SECTION_NAMES))]
    pub only: Vec<String>,
}

/// Options for `charm-host elect`.
#[derive(Debug, Args)]
pub struct ElectArgs {
    /// The unit to make leader, e.g. `app/2`; its agent must be running.
    #[arg(value_parser = unit_name)]
    pub unit: UnitName,
    /// The state directory the application's agents run on (UNIT's, with --store).
    #[arg(long, value_name = "DIR")]
    pub state: PathBuf,
    #[command(flatten)]
    pub store: store::StoreArgs,
    /// How long the lease stays reserved for UNIT (and how long to wait for it).
    #[arg(long, default_value = shown(timing::DEFAULT_RESERVATION), value_parser = |s: &str| timing::parse(s, &timing::RESERVATION))]
    pub within: Duration,
}

/// Options for `charm-host remove-unit`.
#[derive(Debug, Args)]
pub struct RemoveUnitArgs {
    /// The unit to remove, e.g. `app/2`.
    #[arg(value_parser = unit_name)]
    pub unit: UnitName,
    /// The state directory the application's agents run on (UNIT's, with --store).
    #[arg(long, value_name = "DIR")]
    pub state: PathBuf,
    #[command(flatten)]
    pub store: store::StoreArgs,
    /// Remove it even though its agent still answers in DIR: its writes of its data fail
    /// from then on, until it is restarted (and joins again).
    #[arg(long)]
    pub force: bool,
}

/// Options for `charm-host agent`.
#[derive(Debug, Args)]
pub struct AgentArgs {
    /// The charm: a `.wasm` component or a charm crate directory.
    pub charm: PathBuf,
    /// The unit this agent runs, e.g. `app/0`.
    #[arg(long, value_parser = unit_name)]
    pub unit: UnitName,
    /// The unit's local state: its data, socket and records (and, without --store, the
    /// SQLite store shared by the application's agents on this machine).
    #[arg(long, value_name = "DIR")]
    pub state: PathBuf,
    #[command(flatten)]
    pub store: store::StoreArgs,
    /// Print JSON Lines instead of a human-readable log.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
    #[command(flatten)]
    pub services: ServiceArgs,
}

/// Options for `charm-host status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The state directory: its units, and (without --store) its SQLite store.
    #[arg(long, value_name = "DIR")]
    pub state: PathBuf,
    #[command(flatten)]
    pub store: store::StoreArgs,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// Options for `charm-host history`.
#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// The state directory whose SQLite store to read (without --store).
    #[arg(long, value_name = "DIR", required_unless_present = "store")]
    pub state: Option<PathBuf>,
    #[command(flatten)]
    pub store: store::StoreArgs,
    /// Only this application's tenures.
    #[arg(long, value_name = "APP")]
    pub app: Option<String>,
    /// At most this many tenures of each application, the newest (the store keeps 1000).
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub limit: u32,
    /// Print one JSON object: `{"store": ..., "tenures": [...]}`.
    #[arg(long)]
    pub json: bool,
}

/// Which unit's agent a hook tool asks.
#[derive(Debug, Args)]
pub struct ToolArgs {
    /// The unit, e.g. `app/0`.
    #[arg(long, value_parser = unit_name)]
    pub unit: UnitName,
    /// The state directory its agent runs on.
    #[arg(long, value_name = "DIR")]
    pub state: PathBuf,
    /// Give up (exit 1) if the agent has not answered by then; it never waits for hooks,
    /// so only a frozen or overloaded agent takes long.
    #[arg(long, default_value = shown(timing::DEFAULT_TOOL_TIMEOUT), value_parser = |s: &str| timing::parse(s, &timing::TOOL_TIMEOUT))]
    pub timeout: Duration,
}

/// Juju's output options of `is-leader` and `leader-get`.
#[derive(Debug, Args)]
pub struct OutputArgs {
    /// Specify output format (json|smart|yaml).
    #[arg(long, default_value = "smart")]
    pub format: String,
    /// Specify an output file (relative to the current directory).
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<PathBuf>,
}

/// Options for `charm-host run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The charm: a `.wasm` component, or a charm crate directory (built for wasm32-wasip2
    /// first). Several charms run side by side, each as its own application(s).
    #[arg(required = true, value_name = "CHARM")]
    pub charms: Vec<PathBuf>,
    /// How many units to run of each application.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub units: u32,
    /// Run each charm as this many applications, named APP-0, APP-1, ...
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub apps: u32,
    /// The number of this process's first unit of each application: with `--units 3
    /// --first-unit 3`, units 3 to 5. For one application's units in several processes or
    /// machines over one `--store`, each runs its own numbers.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub first_unit: u32,
    /// The application's name (default: the charm's file or crate name); one charm only.
    #[arg(long)]
    pub app: Option<String>,
    /// Stop after this long (e.g. `5s`, `2m`); default: run until Ctrl-C.
    #[arg(long = "for", value_parser = |s: &str| timing::parse(s, &timing::RUN_TIME))]
    pub run_for: Option<Duration>,
    /// Print JSON Lines instead of a human-readable log.
    #[arg(long)]
    pub json: bool,
    /// Crash a unit's agent at a time from the start, e.g. `app/0@5s` (repeatable).
    #[arg(long, value_name = "UNIT@TIME", value_parser = unit_at)]
    pub kill: Vec<UnitAt>,
    /// Stop a unit gracefully at a time from the start, e.g. `app/0@5s` (repeatable).
    #[arg(long, value_name = "UNIT@TIME", value_parser = unit_at)]
    pub stop: Vec<UnitAt>,
    /// Hand leadership to a unit at a time from the start, e.g. `app/2@5s` (repeatable).
    #[arg(long, value_name = "UNIT@TIME", value_parser = unit_at)]
    pub elect: Vec<UnitAt>,
    /// Make the current leader of every application step down at this time from the start,
    /// where it runs in this process (repeatable).
    #[arg(long, value_name = "TIME", value_parser = |s: &str| timing::parse(s, &timing::RUN_TIME))]
    pub step_down: Vec<Duration>,
    /// Keep leases, terms, settings and unit data in DIR (a SQLite store) across runs;
    /// default: in memory, gone at exit.
    #[arg(long, value_name = "DIR")]
    pub state: Option<PathBuf>,
    #[command(flatten)]
    pub store: store::StoreArgs,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
    #[command(flatten)]
    pub services: ServiceArgs,
}

/// Services the operator lets the charm start and stop by name.
#[derive(Debug, Args)]
pub struct ServiceArgs {
    /// A service the charm may run: NAME=COMMAND (run by `sh -c`; repeatable).
    #[arg(long = "service", value_name = "NAME=COMMAND")]
    pub services: Vec<String>,
    /// A service that runs only while the unit leads; the host stops it before the
    /// unit's leadership guarantee can lapse (repeatable).
    #[arg(long = "leader-service", value_name = "NAME=COMMAND")]
    pub leader_services: Vec<String>,
    /// How long a stopping service gets between SIGTERM and SIGKILL (leader-only services
    /// get at most half the guarantee window).
    #[arg(long, default_value = shown(timing::DEFAULT_SERVICE_GRACE), value_parser = |s: &str| timing::parse(s, &timing::SERVICE_GRACE))]
    pub service_grace: Duration,
}

impl ServiceArgs {
    /// The configured services.
    pub fn configs(&self) -> Result<Vec<crate::services::ServiceConfig>, UsageError> {
        let plain = self.services.iter().map(|s| (s, false));
        let leader = self.leader_services.iter().map(|s| (s, true));
        let mut configs: Vec<crate::services::ServiceConfig> = Vec::new();
        for (spec, leader_only) in plain.chain(leader) {
            let config = crate::services::ServiceConfig::parse(spec, leader_only).map_err(UsageError)?;
            if configs.iter().any(|c| c.name == config.name) {
                return Err(UsageError(format!("service {} is given twice", config.name)));
            }
            configs.push(config);
        }
        Ok(configs)
    }
}

/// Options shared by every command that runs hooks.
#[derive(Debug, Args)]
pub struct RuntimeArgs {
    /// `is-leader` is true only with at least this much leadership left.
    #[arg(long, default_value = shown(timing::DEFAULT_GUARANTEE_WINDOW), value_parser = |s: &str| timing::parse(s, &timing::GUARANTEE_WINDOW))]
    pub guarantee_window: Duration,
    /// A hook running longer than this is stopped and fails.
    #[arg(long, default_value = shown(timing::DEFAULT_HOOK_DEADLINE), value_parser = |s: &str| timing::parse(s, &timing::HOOK_DEADLINE))]
    pub hook_deadline: Duration,
    /// On a stop, a hook already running gets this long before it is interrupted, and the
    /// stop's own hooks (`leader-deposed`, `stop`) get at most this long each.
    #[arg(long, default_value = shown(timing::DEFAULT_STOP_GRACE), value_parser = |s: &str| timing::parse(s, &timing::STOP_GRACE))]
    pub stop_grace: Duration,
    /// How often every unit runs `update-status` (as Juju's `update-status-hook-interval`).
    #[arg(long, default_value = shown(timing::DEFAULT_UPDATE_STATUS_INTERVAL), value_parser = |s: &str| timing::parse(s, &timing::UPDATE_STATUS_INTERVAL))]
    pub update_status_interval: Duration,
    /// Start on a store that was lost, replaced or moved: create `state.db` where units ran
    /// before, adopt a copy of it (a restored backup) or one another machine used, or one
    /// that remembers lower terms or settings versions than a unit does. Terms may start
    /// again; a store created or adopted so grants no tenure for one claim duration.
    #[arg(long)]
    pub accept_new_store: bool,
    /// Largest memory one hook instance may use, in MiB.
    #[arg(long, default_value_t = DEFAULT_MEMORY_CAP_MIB, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub memory_cap_mib: u32,
    /// Where compiled charms are cached (default: ~/.cache/charm-host).
    #[arg(long, conflicts_with = "no_cache")]
    pub cache_dir: Option<PathBuf>,
    /// Compile the charm every time instead of caching it.
    #[arg(long)]
    pub no_cache: bool,
    /// Serve Prometheus metrics on HOST:PORT at `/metrics` (unauthenticated: bind it to
    /// loopback or a private network). Port 0 picks a free one; the address is printed.
    #[arg(long, value_name = "HOST:PORT")]
    pub metrics_addr: Option<String>,
}

/// A library default as the command line writes it (`30s`, `1m`): the CLI's defaults are
/// the library's.
fn shown(default: Duration) -> String {
    humantime::format_duration(default).to_string()
}

/// [`crate::RuntimeConfig::DEFAULT_MEMORY_CAP`] in MiB.
const DEFAULT_MEMORY_CAP_MIB: u32 = (crate::RuntimeConfig::DEFAULT_MEMORY_CAP >> 20) as u32;

fn unit_name(text: &str) -> Result<UnitName, String> {
    UnitName::new(text).map_err(|e| e.to_string())
}

/// `UNIT@TIME`: something to do to a unit at a time from the start of a run.
#[derive(Debug, Clone)]
pub struct UnitAt {
    /// The unit.
    pub unit: UnitName,
    /// When, from the start of the run.
    pub at: Duration,
}

fn unit_at(text: &str) -> Result<UnitAt, String> {
    let (unit, at) = text.split_once('@').ok_or_else(|| format!("expected UNIT@TIME, e.g. app/0@5s, not {text:?}"))?;
    Ok(UnitAt { unit: unit_name(unit)?, at: timing::parse(at, &timing::RUN_TIME)? })
}

/// A usage error found after parsing (arguments that contradict each other): exit code 2,
/// like the parser's own.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// The exit code for usage errors, as clap's and Juju's.
pub const USAGE_EXIT: u8 = 2;

/// The exit code of a `leader-set` whose outcome is unknown: sent, and not answered in
/// time, so it may or may not have been applied (Juju has no such code).
pub const OUTCOME_UNKNOWN_EXIT: u8 = 3;

/// Runs `work` to completion on a runtime of the calling thread (for commands that make a
/// few store or agent calls and end).
pub fn block_on<F: std::future::Future>(work: F) -> anyhow::Result<F::Output> {
    Ok(tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(work))
}

/// The hook tools report usage errors as Juju's do: one `ERROR <message>` line, exit 2.
const JUJU_TOOLS: [&str; 3] = ["is-leader", "leader-get", "leader-set"];

/// Runs `charm-host` with the process's arguments and returns its exit code.
pub fn run() -> ExitCode {
    raise_open_file_limit();
    let args = match Cli::try_parse() {
        Ok(args) => args,
        Err(err) => {
            let tool = std::env::args().nth(1).filter(|a| JUJU_TOOLS.contains(&a.as_str()));
            let shown =
                matches!(err.kind(), clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion);
            match tool {
                Some(_) if !shown => {
                    eprintln!("ERROR {}", juju_usage_message(&err));
                    return ExitCode::from(USAGE_EXIT);
                }
                _ => err.exit(),
            }
        }
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("CHARM_HOST_LOG").unwrap_or_else(|_| "warn".into());
    // Colours only on a terminal: a log written to a file or a pipe stays plain text.
    let colours = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let log = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(colours);
    match args.log_format {
        LogFormat::Text => log.init(),
        // The event's fields (`unit`, `hook`, ...) at the top level of each line; a line
        // logged while a hook runs has its `unit` and `hook` under `span`.
        LogFormat::Json => log.json().flatten_event(true).with_current_span(true).with_span_list(false).init(),
    }
    match dispatch(args) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {}", error_chain(&err));
            if err.downcast_ref::<UsageError>().is_some() { ExitCode::from(USAGE_EXIT) } else { ExitCode::FAILURE }
        }
    }
}

/// A parse error worded as Juju's tools word it where they have a word for it.
fn juju_usage_message(err: &clap::Error) -> String {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if err.kind() == ErrorKind::UnknownArgument
        && let Some(ContextValue::String(arg)) = err.get(ContextKind::InvalidArg)
    {
        let flag = arg.split('=').next().unwrap_or(arg);
        return format!("option provided but not defined: {flag}");
    }
    let text = err.render().to_string();
    let first = text.lines().next().unwrap_or_default();
    first.strip_prefix("error: ").unwrap_or(first).to_owned()
}

/// Runs the parsed command; the exit code is the command's own.
fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::New(args) => new::new(args),
        Command::Run(args) => run::run(args),
        Command::Agent(args) => agent::agent(args),
        Command::Status(args) => block_on(status::status(args))?,
        Command::History(args) => block_on(history::history(args))?,
        Command::IsLeader { target, output, args } => Ok(tools::is_leader(target, output, args)),
        Command::LeaderTerm { target, output } => Ok(tools::leader_term(target, output)),
        Command::LeaderGet { target, output, args } => Ok(tools::leader_get(target, output, args)),
        Command::UnitSet { target, pairs } => Ok(tools::unit_set(target, pairs)),
        Command::UnitGet { target, output, args } => Ok(tools::unit_get(target, output, args)),
        Command::LeaderSet { target, pairs } => Ok(tools::leader_set(target, pairs)),
        Command::StepDown(target) => Ok(operator::step_down(target)),
        Command::Elect(args) => block_on(operator::elect(args))?,
        Command::RemoveUnit(args) => block_on(operator::remove_unit(args))?,
        Command::Completions(args) => completions::completions(args),
        Command::Man(args) => completions::man(args),
        #[cfg(feature = "bench")]
        Command::Bench(args) => bench::bench(args),
    }
}

/// Raises this process's soft limit of open files to its hard limit, as Go programs do at
/// start: every unit's agent holds its lock file open for its life, so `run --units 10000`
/// needs more descriptors than the usual soft limit of 1024. A limit that cannot be raised
/// is left as it is (an agent that runs out says so when it starts).
fn raise_open_file_limit() {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        let raised = Rlimit { current: limit.maximum, maximum: limit.maximum };
        if let Err(err) = setrlimit(Resource::Nofile, raised) {
            tracing::debug!("could not raise the open-file limit: {err}");
        }
    }
}

/// An error and its causes on one line, each cause once: many errors name their cause in
/// their own message already ("path: Permission denied"), so a cause whose text is there is
/// not repeated.
fn error_chain(err: &anyhow::Error) -> String {
    let mut text = err.to_string();
    for cause in err.chain().skip(1) {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
    }
    text
}
