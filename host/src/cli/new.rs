//! `charm-host new NAME`: a charm crate to start from, that builds, runs with `charm-host
//! run` and passes its tests in both forms as created.
//!
//! Invariants: NAME is an application name (so the crate's name and its default
//! application's are the same, and valid); nothing is ever overwritten (the crate is written
//! in a scratch directory beside its destination and renamed into place only if nothing is
//! there, so a failure leaves no half-written charm); the new crate's `Cargo.lock` is the one
//! this `charm-host` was built and tested with, so its first build uses the same versions.

use std::path::{Path, PathBuf};

use anyhow::Context as _;

use crate::cli::UsageError;
use crate::names::AppName;

/// Options for `charm-host new`.
#[derive(Debug, clap::Args)]
pub struct NewArgs {
    /// The charm's name: its crate's and its application's (lowercase letters, digits and
    /// `-`, starting with a letter).
    pub name: String,
    /// Create the crate in DIR (default: ./NAME). DIR must not exist.
    #[arg(long, value_name = "DIR")]
    pub path: Option<PathBuf>,
    /// Depend on charm-sdk and charm-host in a checkout of their source (DIR: the checkout,
    /// or its `guest-sdk` directory) instead of crates.io.
    #[arg(long, value_name = "DIR")]
    pub sdk_path: Option<PathBuf>,
}

/// The version of charm-sdk a new charm asks for: published together with this crate.
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The lockfile this crate was built with (see build.rs): the versions it was tested with.
const TESTED_LOCK: &str = include_str!(concat!(env!("OUT_DIR"), "/Cargo.lock"));

/// The files of a new charm: (path in the crate, template).
const TEMPLATES: [(&str, &str); 5] = [
    ("Cargo.toml", include_str!("../../templates/new-charm/Cargo.toml.in")),
    ("README.md", include_str!("../../templates/new-charm/README.md.in")),
    (".gitignore", include_str!("../../templates/new-charm/gitignore.in")),
    ("src/lib.rs", include_str!("../../templates/new-charm/src/lib.rs.in")),
    ("src/tests.rs", include_str!("../../templates/new-charm/src/tests.rs.in")),
];

/// Where a new charm's dependencies come from.
#[derive(Debug)]
enum Source {
    /// crates.io, at this crate's version.
    Registry,
    /// A checkout: the charm-sdk and charm-host crates there, and its lockfile if any.
    Checkout { sdk: PathBuf, host: PathBuf, lock: Option<PathBuf> },
}

/// Runs `charm-host new`.
pub fn new(args: NewArgs) -> anyhow::Result<std::process::ExitCode> {
    let name = AppName::new(&args.name).map_err(|e| UsageError(format!("{:?} cannot name a charm: {e}", args.name)))?;
    let dest = args.path.clone().unwrap_or_else(|| PathBuf::from(name.as_str()));
    if dest.symlink_metadata().is_ok() {
        return Err(UsageError(format!("{} already exists: give a new directory (--path DIR)", dest.display())).into());
    }
    let source = match &args.sdk_path {
        Some(dir) => checkout(dir)?,
        None => Source::Registry,
    };
    let lock = match &source {
        Source::Checkout { lock: Some(lock), .. } => {
            std::fs::read_to_string(lock).with_context(|| format!("reading {}", lock.display()))?
        }
        _ => TESTED_LOCK.to_owned(),
    };
    let files = render(&name, &source)?;
    write_crate(&dest, &files, &lock)?;
    let from = match &source {
        Source::Registry => {
            format!("charm-sdk {VERSION} from crates.io; to build on a checkout of charm-host instead: --sdk-path DIR")
        }
        Source::Checkout { sdk, .. } => format!("charm-sdk from {}", sdk.display()),
    };
    outln!("created charm {name} in {} ({from})", dest.display());
    outln!("next:");
    outln!("  cd {}", dest.display());
    outln!("  charm-host run . --units 3 --for 10s   # build it for wasm32-wasip2 and run three units");
    outln!("  cargo test                             # its tests: natively, and on the host in virtual time");
    Ok(std::process::ExitCode::SUCCESS)
}

/// The crates of a checkout given as `--sdk-path`: DIR is the charm-sdk crate (beside
/// `host`), or the checkout holding `guest-sdk` and `host`.
fn checkout(dir: &Path) -> anyhow::Result<Source> {
    let dir = dir.canonicalize().with_context(|| format!("--sdk-path {}", dir.display()))?;
    let is = |crate_dir: &Path, name: &str| {
        crate::charm_build::package_name(&crate_dir.join("Cargo.toml")).is_ok_and(|found| found == name)
    };
    let root = if is(&dir, "charm-sdk") {
        dir.parent().map(Path::to_owned).unwrap_or_default()
    } else if is(&dir.join("guest-sdk"), "charm-sdk") {
        dir.clone()
    } else {
        return Err(UsageError(format!(
            "--sdk-path {}: neither the charm-sdk crate nor a charm-host checkout (with guest-sdk/ and host/)",
            dir.display()
        ))
        .into());
    };
    let (sdk, host) = (root.join("guest-sdk"), root.join("host"));
    if !is(&sdk, "charm-sdk") || !is(&host, "charm-host") {
        return Err(UsageError(format!(
            "--sdk-path {}: {} should hold the charm-sdk crate in guest-sdk/ and the charm-host crate in host/",
            dir.display(),
            root.display()
        ))
        .into());
    }
    let lock = Some(root.join("Cargo.lock")).filter(|lock| lock.is_file());
    Ok(Source::Checkout { sdk, host, lock })
}

/// Every file of the new crate, its placeholders filled.
fn render(name: &AppName, source: &Source) -> anyhow::Result<Vec<(&'static str, String)>> {
    let (sdk, host) = match source {
        Source::Registry => (
            format!("charm-sdk = \"{VERSION}\""),
            format!("charm-host = {{ version = \"{VERSION}\", default-features = false, features = [\"testing\"] }}"),
        ),
        Source::Checkout { sdk, host, .. } => (
            format!("charm-sdk = {{ path = {} }}", toml_string(sdk)?),
            format!(
                "charm-host = {{ path = {}, default-features = false, features = [\"testing\"] }}",
                toml_string(host)?
            ),
        ),
    };
    let type_name = type_name(name);
    Ok(TEMPLATES
        .iter()
        .map(|(path, template)| {
            let text = template
                .replace("{{name}}", name.as_str())
                .replace("{{type_name}}", &type_name)
                .replace("{{sdk}}", &sdk)
                .replace("{{host}}", &host);
            (*path, text)
        })
        .collect())
}

/// A path as a TOML basic string: JSON's string escapes are all valid in TOML.
fn toml_string(path: &Path) -> anyhow::Result<String> {
    let text = path.to_str().with_context(|| format!("{} is not UTF-8: Cargo.toml cannot name it", path.display()))?;
    Ok(serde_json::to_string(text)?)
}

/// The charm's Rust type: the name in upper camel case, ending in `Charm` (so it never
/// clashes with `Charm`, `App` or another name the templates import).
fn type_name(name: &AppName) -> String {
    let mut camel: String = name
        .as_str()
        .split('-')
        .map(|part| {
            let mut chars = part.chars();
            chars.next().map(|first| first.to_ascii_uppercase().to_string() + chars.as_str()).unwrap_or_default()
        })
        .collect();
    if camel == "Charm" || !camel.ends_with("Charm") {
        camel.push_str("Charm");
    }
    camel
}

/// Writes the crate into a scratch directory beside `dest`, then renames it to `dest`
/// unless something appeared there meanwhile.
fn write_crate(dest: &Path, files: &[(&str, String)], lock: &str) -> anyhow::Result<()> {
    let parent = match dest.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_owned(),
        _ => PathBuf::from("."),
    };
    let leaf = dest.file_name().with_context(|| format!("{} names no directory", dest.display()))?;
    let scratch = parent.join(format!(".{}.new-{}", leaf.to_string_lossy(), std::process::id()));
    std::fs::create_dir(&scratch).with_context(|| format!("creating {}", scratch.display()))?;
    let written = (|| -> anyhow::Result<()> {
        for (path, text) in files.iter().map(|(p, t)| (*p, t.as_str())).chain([("Cargo.lock", lock)]) {
            let file = scratch.join(path);
            if let Some(dir) = file.parent() {
                std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            }
            std::fs::write(&file, text).with_context(|| format!("writing {}", file.display()))?;
        }
        rustix::fs::renameat_with(rustix::fs::CWD, &scratch, rustix::fs::CWD, dest, rustix::fs::RenameFlags::NOREPLACE)
            .with_context(|| format!("moving the new charm to {}", dest.display()))
    })();
    if written.is_err() {
        let _ = std::fs::remove_dir_all(&scratch);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_names_are_camel_case_and_end_in_charm() {
        let of = |name: &str| type_name(&AppName::new(name).unwrap());
        assert_eq!(of("kv"), "KvCharm");
        assert_eq!(of("my-charm"), "MyCharm");
        assert_eq!(of("charm"), "CharmCharm");
        assert_eq!(of("app"), "AppCharm");
        assert_eq!(of("web2-proxy"), "Web2ProxyCharm");
    }

    #[test]
    fn paths_are_quoted_for_toml() {
        assert_eq!(toml_string(Path::new("/a \"b\"\\c")).unwrap(), r#""/a \"b\"\\c""#);
    }
}
