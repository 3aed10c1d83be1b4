//! `charm-host` with its benchmark compiled in: `charm-host-bench bench [--quick]`. A tool
//! for this repository (it builds its fixture charms from the source checkout and starts
//! etcd from a vendored binary), built with the `bench` feature, so that the product's
//! `charm-host` carries none of it. Its other commands are `charm-host`'s: the bench runs
//! its agent processes from this same binary.

fn main() -> std::process::ExitCode {
    charm_host::run_cli()
}
