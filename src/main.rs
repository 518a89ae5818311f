//! The `l2lb` binary: argument parsing and wiring only.

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

/// Layer-2 load balancer for bare-metal Kubernetes.
#[derive(Parser, Debug)]
#[command(name = "l2lb", version, about)]
struct Cli {
    /// API server URL to use instead of in-cluster config or kubeconfig
    /// (plain HTTP with no credentials, as the lab's embedded API server).
    #[arg(long, global = true, env = "L2LB_SERVER")]
    server: Option<url::Url>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Allocate Service addresses from IPAddressPools (leader-elected).
    Controller(l2lb::controller::ControllerArgs),
    /// Print the CustomResourceDefinitions as YAML (what `crds/` holds).
    Crds,
    /// Show LoadBalancer Services with their VIP, pool and announcing node.
    Status {
        /// Namespace holding pools and ServiceL2Status objects.
        #[arg(long, env = "L2LB_NAMESPACE", default_value = l2lb::api::INSTALL_NAMESPACE)]
        namespace: String,
    },
    /// Print the RBAC manifests (ServiceAccounts, roles, bindings) each component needs.
    Rbac,
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

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Controller(args) => {
            l2lb::telemetry::init_tracing();
            let config = args.into_config()?;
            runtime()?.block_on(async {
                let client = l2lb::cluster::client(cli.server.as_ref()).await?;
                let shutdown = CancellationToken::new();
                tokio::spawn(l2lb::telemetry::cancel_on_signal(shutdown.clone()));
                l2lb::controller::run(config, client, shutdown).await?;
                anyhow::Ok(())
            })?;
        }
        Command::Crds => print!("{}", l2lb::api::crds::yaml()?),
        Command::Status { namespace } => runtime()?.block_on(async {
            let client = l2lb::cluster::client(cli.server.as_ref()).await?;
            let rows = l2lb::status::rows(&client, &namespace).await?;
            print!("{}", l2lb::status::render(&rows));
            anyhow::Ok(())
        })?,
        Command::Rbac => print!("{}", l2lb::api::rbac::yaml(l2lb::api::INSTALL_NAMESPACE)?),
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
