//! The `l2lb` binary: argument parsing and wiring only.

use clap::{Parser, Subcommand};
use l2lb::api::rbac::Component;
use l2lb::telemetry::Health;
use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use std::sync::Arc;
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
    /// Take part in per-VIP owner election on this node and answer ARP/NDP
    /// for the VIPs it wins (needs CAP_NET_RAW and host networking).
    Speaker(l2lb::speaker::SpeakerArgs),
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
    /// Build a local LAN of network namespaces with an embedded API server,
    /// controllers and speakers, and show a VIP resolving and failing over (root).
    Lab(l2lb::lab::demo::LabArgs),
    /// The lab's stand-in backend: answers HTTP with the node's name.
    #[command(hide = true)]
    LabHttp {
        /// Name to answer with.
        #[arg(long)]
        name: String,
        /// Address to listen on.
        #[arg(long)]
        listen: std::net::SocketAddr,
    },
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
    /// Test fixture: run the L2 responder on one interface, driven by a line
    /// protocol on stdin (see `l2lb::lab::responder_control`). Used by netns tests and benches.
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

/// What both long-running components get from the binary, the same way:
/// a shutdown token cancelled on SIGTERM or SIGINT, and `/metrics`,
/// `/healthz` and `/readyz` served from `registry` and `health` on `addr`
/// until then. The components themselves open no listener.
async fn serve_telemetry(
    addr: SocketAddr,
    registry: Registry,
    health: Arc<Health>,
) -> anyhow::Result<CancellationToken> {
    let shutdown = CancellationToken::new();
    tokio::spawn(l2lb::telemetry::cancel_on_signal(shutdown.clone()));
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot serve metrics on {addr}: {e}"))?;
    tracing::info!(addr = %listener.local_addr()?, "serving metrics and health");
    let stop = shutdown.clone();
    tokio::spawn(async move {
        if let Err(e) = l2lb::telemetry::serve(listener, Arc::new(registry), health, stop).await {
            tracing::error!(error = %e, "metrics server stopped");
        }
    });
    Ok(shutdown)
}

/// Wires the controller: API client, telemetry, signals.
async fn run_controller(
    config: l2lb::controller::ControllerConfig,
    server: Option<url::Url>,
) -> anyhow::Result<()> {
    let client = l2lb::cluster::client(server.as_ref(), Component::Controller).await?;
    let mut registry = Registry::default();
    config.metrics.register(&mut registry);
    let shutdown = serve_telemetry(config.metrics_addr, registry, config.health.clone()).await?;
    l2lb::controller::run(config, client, shutdown).await?;
    Ok(())
}

/// Wires the speaker: API client, dataplane, telemetry, signals.
async fn run_speaker(
    config: l2lb::speaker::SpeakerConfig,
    server: Option<url::Url>,
) -> anyhow::Result<()> {
    let client = l2lb::cluster::client(server.as_ref(), Component::Speaker).await?;
    let dataplane = l2lb::l2::Dataplane::new(l2lb::l2::DataplaneConfig::default());
    let mut registry = Registry::default();
    config.metrics.register(&mut registry);
    registry
        .sub_registry_with_prefix("l2lb")
        .register_collector(Box::new(l2lb::speaker::dataplane::DataplaneMetrics(
            dataplane.clone(),
        )));
    let shutdown = serve_telemetry(config.metrics_addr, registry, config.health.clone()).await?;
    l2lb::speaker::run(config, client, Arc::new(dataplane), shutdown).await?;
    Ok(())
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
            runtime()?.block_on(run_controller(config, cli.server))?;
        }
        Command::Speaker(args) => {
            l2lb::telemetry::init_tracing();
            let config = l2lb::speaker::SpeakerConfig::try_from(args)?;
            runtime()?.block_on(run_speaker(config, cli.server))?;
        }
        Command::Lab(args) => {
            l2lb::telemetry::init_tracing();
            runtime()?.block_on(l2lb::lab::demo::run(args))?;
        }
        Command::LabHttp { name, listen } => l2lb::lab::world::serve_backend(&name, listen)?,
        Command::Crds => print!("{}", l2lb::api::crds::yaml()?),
        Command::Status { namespace } => runtime()?.block_on(async {
            let client = l2lb::cluster::client(cli.server.as_ref(), Component::Cli).await?;
            let rows = l2lb::status::rows(&client, &namespace).await?;
            print!("{}", l2lb::status::render(&rows));
            anyhow::Ok(())
        })?,
        Command::Rbac => print!("{}", l2lb::api::rbac::yaml(l2lb::api::INSTALL_NAMESPACE)?),
        Command::Bench { name } => l2lb::bench::run(&name)?,
        Command::Apiserver { listen } => run_apiserver(listen)?,
        Command::L2Responder {
            iface,
            vips,
            refresh_ms,
            rx_priority,
        } => {
            l2lb::telemetry::init_tracing();
            let dp = l2lb::l2::Dataplane::new(l2lb::l2::DataplaneConfig {
                refresh_interval: refresh_ms.map(std::time::Duration::from_millis),
                ..Default::default()
            })
            .with_rx_priority((rx_priority > 0).then_some(rx_priority));
            for vip in vips {
                dp.announce(vip, &iface)?;
            }
            println!("ready");
            l2lb::lab::responder_control::serve(
                &dp,
                &iface,
                std::io::stdin().lock(),
                std::io::stdout(),
            )?;
        }
    }
    Ok(())
}

/// Serves the embedded test API server on `listen` until SIGINT (Ctrl-C)
/// or SIGTERM, with the same signal handling as the components.
fn run_apiserver(listen: SocketAddr) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        let listener = tokio::net::TcpListener::bind(listen).await?;
        eprintln!(
            "embedded test API server (a test fixture, not a real cluster) on http://{}",
            listener.local_addr()?
        );
        let shutdown = CancellationToken::new();
        tokio::spawn(l2lb::telemetry::cancel_on_signal(shutdown.clone()));
        l2lb::lab::apiserver::ApiServer::with_l2lb_crds()
            .serve(listener, shutdown)
            .await?;
        Ok(())
    })
}
