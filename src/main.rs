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
    /// Test fixture: run the L2 responder on one interface, driven by a line
    /// protocol on stdin (see `l2lb::l2::control`). Used by netns tests and benches.
    #[command(hide = true)]
    L2Responder {
        /// Interface to answer on.
        #[arg(long)]
        iface: String,
        /// VIPs announced at start.
        #[arg(long = "vip")]
        vips: Vec<std::net::IpAddr>,
        /// Re-announce every VIP this often (milliseconds); off when unset.
        #[arg(long)]
        refresh_ms: Option<u64>,
        /// SCHED_FIFO priority of the receive thread; 0 = normal scheduler.
        #[arg(long, default_value_t = 10)]
        rx_priority: u8,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Crds => print!("{}", l2lb::api::crds::yaml()?),
        Command::Bench { name } => l2lb::bench::run(&name)?,
        Command::L2Responder {
            iface,
            vips,
            refresh_ms,
            rx_priority,
        } => {
            tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
                .with_writer(std::io::stderr)
                .init();
            let dp = l2lb::l2::Dataplane::new(l2lb::l2::DataplaneConfig {
                refresh_interval: refresh_ms.map(std::time::Duration::from_millis),
                ..Default::default()
            })
            .with_rx_priority((rx_priority > 0).then_some(rx_priority));
            for vip in vips {
                dp.announce(vip, &iface)?;
            }
            println!("ready");
            l2lb::l2::control::serve(&dp, &iface, std::io::stdin().lock(), std::io::stdout())?;
        }
    }
    Ok(())
}
