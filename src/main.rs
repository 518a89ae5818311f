//! The `l2lb` binary: argument parsing and wiring only.

use clap::{Parser, Subcommand};

/// Layer-2 load balancer for bare-metal Kubernetes.
#[derive(Parser, Debug)]
#[command(name = "l2lb", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print the CustomResourceDefinitions as YAML (what `crds/` holds).
    Crds,
    /// Run a benchmark and print its JSON report (last line).
    Bench {
        /// Which benchmark to run.
        name: String,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Crds => print!("{}", l2lb::api::crds::yaml()?),
        Command::Bench { name } => l2lb::bench::run(&name)?,
    }
    Ok(())
}
