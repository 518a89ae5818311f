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
    /// TEST FIXTURE, not for production: run the embedded test Kubernetes
    /// API server (plain HTTP, no authentication, in memory) with l2lb's CRDs
    /// installed, until Ctrl-C. Point kubectl at it with
    /// `kubectl --server=http://127.0.0.1:6443 ...`.
    Apiserver {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:6443")]
        listen: std::net::SocketAddr,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Crds => print!("{}", l2lb::api::crds::yaml()?),
        Command::Bench { name } => l2lb::bench::run(&name)?,
        Command::Apiserver { listen } => run_apiserver(listen)?,
    }
    Ok(())
}

/// Serves the embedded test API server on `listen` until Ctrl-C.
fn run_apiserver(listen: std::net::SocketAddr) -> anyhow::Result<()> {
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(listen).await?;
        eprintln!(
            "embedded test API server (a test fixture, not a real cluster) on http://{}",
            listener.local_addr()?
        );
        let shutdown = tokio_util::sync::CancellationToken::new();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            // If Ctrl-C cannot be awaited the server runs until killed.
            if tokio::signal::ctrl_c().await.is_ok() {
                stop.cancel();
            }
        });
        l2lb::lab::apiserver::ApiServer::with_l2lb_crds()
            .serve(listener, shutdown)
            .await?;
        Ok(())
    })
}
