//! The `charm-host` command: run charms' units and inspect them (`charm-host --help`).

fn main() -> std::process::ExitCode {
    charm_host::run_cli()
}
