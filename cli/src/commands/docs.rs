//! `flashtix completions SHELL` and `flashtix man`: the shell's completions
//! and the manual pages, both made from the same clap definitions the
//! commands parse, so neither can drift from `--help`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Command;
use clap_complete::Shell;

use super::{Exit, Failure};
use crate::output;

#[derive(clap::Args)]
pub struct CompletionsArgs {
    /// The shell to complete for
    #[arg(value_enum)]
    shell: Shell,
}

#[derive(clap::Args)]
pub struct ManArgs {
    /// Write one page per command into this directory (flashtix.1,
    /// flashtix-storm.1, flashtix-chaos-run.1, …) instead of printing the
    /// main page
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
}

/// Prints the completion script for `args.shell` of the command `cli`.
pub fn completions(args: CompletionsArgs, mut cli: Command) -> Exit {
    let name = cli.get_name().to_owned();
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut cli, name, &mut script);
    print(&script)
}

/// Writes `text` to stdout; a reader that stopped early (`| head`) is no
/// error.
fn print(text: &[u8]) -> Exit {
    match output::to_stdout(text) {
        Err(error) if error.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(anyhow::Error::new(error)
                .context("writing to stdout")
                .into())
        }
        _ => Ok(ExitCode::SUCCESS),
    }
}

/// Prints the main page of `cli`, or writes every command's page into `--dir`.
pub fn man(args: ManArgs, mut cli: Command) -> Exit {
    cli.build();
    match &args.dir {
        None => {
            let mut page = Vec::new();
            clap_mangen::Man::new(cli)
                .render(&mut page)
                .context("rendering the manual page")?;
            return print(&page);
        }
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("creating {}", dir.display()))
                .map_err(Failure::usage)?;
            let written = write_pages(&cli, cli.get_name(), dir)?;
            eprintln!("{written} manual pages in {}", dir.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Writes `command`'s page as `NAME.1` and its subcommands' as
/// `NAME-SUB.1`, depth first; returns how many.
fn write_pages(command: &Command, name: &str, dir: &Path) -> anyhow::Result<usize> {
    let path = dir.join(format!("{name}.1"));
    let mut page = Vec::new();
    clap_mangen::Man::new(command.clone().display_name(name.to_owned()))
        .render(&mut page)
        .context("rendering a manual page")?;
    std::fs::write(&path, page).with_context(|| format!("writing {}", path.display()))?;
    let mut written = 1;
    for sub in command
        .get_subcommands()
        .filter(|sub| sub.get_name() != "help")
    {
        written += write_pages(sub, &format!("{name}-{}", sub.get_name()), dir)?;
    }
    Ok(written)
}
