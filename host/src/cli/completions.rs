//! `charm-host completions SHELL` and `charm-host man`: shell completions and man pages
//! generated from the command's own definition by clap's generators, so they say what
//! `--help` says and cannot drift from it.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::CommandFactory as _;

/// Options for `charm-host completions`.
#[derive(Debug, clap::Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// Options for `charm-host man`.
#[derive(Debug, clap::Args)]
pub struct ManArgs {
    /// Write charm-host.1 and a page per command (charm-host-run.1, ...) into DIR instead of
    /// printing charm-host.1.
    #[arg(long, value_name = "DIR")]
    pub out_dir: Option<PathBuf>,
}

/// The command's name, as its completions and pages call it.
const NAME: &str = "charm-host";

/// Prints the completion script for `args.shell`.
pub fn completions(args: CompletionsArgs) -> anyhow::Result<ExitCode> {
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut super::Cli::command(), NAME, &mut script);
    out!("{}", String::from_utf8(script).context("the completion script is not UTF-8")?);
    Ok(ExitCode::SUCCESS)
}

/// Prints the man page, or writes every page into `args.out_dir`.
pub fn man(args: ManArgs) -> anyhow::Result<ExitCode> {
    let command = super::Cli::command().name(NAME);
    match args.out_dir {
        Some(dir) => {
            clap_mangen::generate_to(command, &dir)
                .with_context(|| format!("writing man pages to {}", dir.display()))?;
            outln!("wrote the man pages into {}", dir.display());
        }
        None => {
            let mut page = Vec::new();
            clap_mangen::Man::new(command).render(&mut page).context("rendering the man page")?;
            out!("{}", String::from_utf8(page).context("the man page is not UTF-8")?);
        }
    }
    Ok(ExitCode::SUCCESS)
}
