//! The `charm-host` command: run charms' units and inspect them.

mod cli;

use std::process::ExitCode;

use clap::Parser;

/// The hook tools report usage errors as Juju's do: one `ERROR <message>` line, exit 2.
const JUJU_TOOLS: [&str; 3] = ["is-leader", "leader-get", "leader-set"];

fn main() -> ExitCode {
    let args = match cli::Cli::try_parse() {
        Ok(args) => args,
        Err(err) => {
            let tool = std::env::args().nth(1).filter(|a| JUJU_TOOLS.contains(&a.as_str()));
            let shown = matches!(err.kind(), clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion);
            match tool {
                Some(_) if !shown => {
                    eprintln!("ERROR {}", juju_usage_message(&err));
                    return ExitCode::from(cli::USAGE_EXIT);
                }
                _ => err.exit(),
            }
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CHARM_HOST_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match cli::main(args) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            if err.downcast_ref::<cli::UsageError>().is_some() { ExitCode::from(cli::USAGE_EXIT) } else { ExitCode::FAILURE }
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
