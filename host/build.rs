//! Puts the `Cargo.lock` this crate is built with into `OUT_DIR` for `charm-host new`,
//! which gives a new charm the versions charm-host was tested with: the workspace's lock in
//! a checkout, the package's own once published (cargo packages it). Without either, the
//! copy is empty and a new charm's first build resolves the newest versions.

use std::path::PathBuf;

fn main() -> std::io::Result<()> {
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").unwrap_or_default());
    println!("cargo:rerun-if-changed=build.rs");
    let lock = [manifest_dir.join("Cargo.lock"), manifest_dir.join("../Cargo.lock")].into_iter().find(|p| p.is_file());
    let text = match &lock {
        Some(lock) => {
            // Only a file that exists: a missing one would rerun this script at every build.
            println!("cargo:rerun-if-changed={}", lock.display());
            std::fs::read_to_string(lock)?
        }
        None => String::new(),
    };
    std::fs::write(out_dir.join("Cargo.lock"), text)
}
