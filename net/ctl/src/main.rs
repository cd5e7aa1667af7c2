//! `rtctl`, the host command-line client of rtedge's control plane: RESP
//! over TCP, so it speaks to the appliance as `redis-cli` does, and adds
//! tables, live views, histograms and plots on top.
//!
//! It is a std program for the host and never runs inside the appliance.
//! It must never panic on what the server sends: replies are parsed by
//! `rtedge-proto` within fixed limits, and every failure becomes one
//! [`error::CtlError`], turned into an exit code in one place
//! ([`error::CtlError::exit_code`]).

mod cli;
mod client;
mod commands;
mod convert;
mod error;
mod fleet;
mod format;
mod info;
mod instances;
mod latency;
mod listings;
mod logs;
mod metrics;
mod plot;
mod tables;
mod token;
mod top;
mod watch;

use std::io::{self, Write};
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

use crate::error::CtlError;

fn main() -> ExitCode {
    // Usage errors exit with clap's code 2; --help and --version with 0.
    let cli = cli::Cli::parse();
    let json = cli.json;
    let stdout = io::stdout();
    let mut out = stdout.lock();
    if let Some(inventory) = cli.fleet.clone() {
        return match fleet::run(cli, &inventory, &mut out) {
            Ok(code) => ExitCode::from(code),
            Err(error) => {
                eprintln!("error: {error}");
                ExitCode::from(error.exit_code())
            }
        };
    }
    match run(cli, &mut out) {
        Ok(()) | Err(CtlError::OutputClosed) => ExitCode::SUCCESS,
        Err(error) => {
            if json {
                // In JSON mode the error is JSON too, on stdout where the
                // reader of the JSON looks.
                let _ = writeln!(out, "{}", error.to_json());
            } else {
                eprintln!("error: {error}");
            }
            ExitCode::from(error.exit_code())
        }
    }
}

/// The commands that need no connection, then the rest.
fn run(cli: cli::Cli, out: &mut dyn Write) -> Result<(), CtlError> {
    use clap::CommandFactory;
    match &cli.command {
        cli::Command::Ps => instances::ps(cli.json, out),
        cli::Command::Stop { names, all, timeout_s } => {
            instances::stop(names, *all, Duration::from_secs(*timeout_s), Duration::from_millis(cli.timeout_ms), out)
        }
        cli::Command::Console { name, no_follow } => {
            let name = match name {
                Some(name) => name.clone(),
                None => instances::the_only_detached()?,
            };
            instances::console(&name, !no_follow, out)
        }
        cli::Command::Port { name } => {
            let instance = match name {
                Some(name) => Some(instances::find(name)?),
                None => instances::the_only_one()?,
            };
            match instance {
                Some(instance) => match instance.port {
                    Some(port) => writeln!(out, "{port}").map_err(CtlError::from),
                    None => Err(CtlError::NotFound(format!("instance `{}` has no host port", instance.name))),
                },
                None => Err(CtlError::NotFound("no instance is running; `make start` starts one".into())),
            }
        }
        cli::Command::Completions { shell } => {
            clap_complete::generate(*shell, &mut cli::Cli::command(), "rtctl", out);
            Ok(())
        }
        cli::Command::Man => clap_mangen::Man::new(cli::Cli::command()).render(out).map_err(CtlError::from),
        _ => {
            let target = instances::target(&cli)?;
            commands::run(cli, target, out)
        }
    }
}
