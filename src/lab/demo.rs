//! `l2lb lab`: the newcomer's first command. Builds a [`Lab`], applies the
//! examples in `config/`, creates a LoadBalancer Service, shows the VIP
//! resolving from the client, then crashes the owner and hands over
//! gracefully, printing what the client saw as a timeline. The output is
//! meant to be pasted into a bug report as it is.

use super::kubectl;
use super::probe::{self, Probe, Switch};
use super::world::{Lab, LabError, LabOptions, preflight};
use k8s_openapi::api::core::v1::Service;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Which story the lab tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// IPv4 Service, crash failover, graceful hand-over.
    Basic,
    /// The same with an IPv6 VIP (NDP) as well.
    Ipv6,
    /// Two Services sharing one VIP on ports 80 and 443.
    Sharing,
    /// externalTrafficPolicy: Local; the VIP follows the only endpoint.
    Local,
}

/// Flags of `l2lb lab`.
#[derive(clap::Args, Debug, Clone)]
pub struct LabArgs {
    /// Leave the lab running and print commands to explore it; Ctrl-C ends it.
    #[arg(long)]
    pub keep: bool,
    /// Which demo to run.
    #[arg(long, value_enum, default_value = "basic")]
    pub scenario: Scenario,
    /// Directory with the example manifests to apply.
    #[arg(long, default_value = "config")]
    pub config_dir: PathBuf,
    /// Speakers' lease duration. With the LAN fast path (on in the lab,
    /// which writes a random key for it) a crash fails over in ~250 ms;
    /// without it, in about this long.
    #[arg(long, default_value = "4s", value_parser = crate::flags::parse_duration)]
    pub lease_duration: Duration,
}

fn step(n: usize, text: &str) {
    println!("\n[{n}] {text}");
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

/// Runs the lab and prints its story.
pub async fn run(args: LabArgs) -> Result<(), LabError> {
    preflight()?;
    let mut opts = LabOptions::new("lab")?;
    opts.lease_duration = args.lease_duration;
    println!(
        "l2lb lab: 3 nodes, 1 client, 1 bridge in network namespaces (198.18.0.0/24, fd00:198:18::/64)"
    );
    println!(
        "          embedded API server, 2 controllers, 3 speakers; logs in {}",
        opts.log_dir.display()
    );
    let started = Instant::now();
    let mut lab = Lab::start(opts).await?;
    println!(
        "          LAN up and processes started in {}",
        ms(started.elapsed())
    );
    let kubeconfig =
        kubectl::write_kubeconfig(&lab.opts.log_dir, &lab.local_url).map_err(|source| {
            LabError::Io {
                context: "cannot write the lab's kubeconfig".into(),
                source,
            }
        })?;
    let has_kubectl = kubectl::available();

    step(
        1,
        "kubectl apply: the example IPAddressPool and L2Advertisement",
    );
    for file in ["ipaddresspool.yaml", "l2advertisement.yaml"] {
        let path = args.config_dir.join(file);
        for applied in lab.apply_file(&path).await? {
            println!("    {applied} applied  ({})", path.display());
        }
    }

    step(
        2,
        "create a LoadBalancer Service with endpoints on every node",
    );
    let mut families = vec!["IPv4"];
    if args.scenario == Scenario::Ipv6 {
        families.push("IPv6");
    }
    let local = args.scenario == Scenario::Local;
    let svc: Service = serde_json::from_value(serde_json::json!({
        "metadata": { "name": "demo", "namespace": "default" },
        "spec": {
            "type": "LoadBalancer",
            "selector": { "app": "demo" },
            "ipFamilies": families,
            "ipFamilyPolicy": if families.len() > 1 { "RequireDualStack" } else { "SingleStack" },
            "externalTrafficPolicy": if local { "Local" } else { "Cluster" },
            "ports": [{ "name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080 }],
        },
    }))
    .map_err(|e| LabError::Manifest(e.to_string()))?;
    let endpoints: Vec<usize> = if local { vec![2] } else { vec![0, 1, 2] };
    lab.create_service(svc, &endpoints).await?;
    let vips = lab
        .wait_vips("default", "demo", families.len(), Duration::from_secs(15))
        .await?;
    for vip in &vips {
        lab.route_vip(*vip, 80)?;
    }
    if args.scenario == Scenario::Sharing {
        for applied in lab
            .apply_file(&args.config_dir.join("service-shared.yaml"))
            .await?
        {
            println!("    {applied} applied (sharing one VIP, ports 80 and 443)");
        }
        let shared = lab
            .wait_vips("default", "shared-http", 1, Duration::from_secs(15))
            .await?;
        lab.wait_vips("default", "shared-https", 1, Duration::from_secs(15))
            .await?;
        lab.route_vip(shared[0], 80)?;
        lab.route_vip(shared[0], 443)?;
        lab.set_endpoints("default", "shared-http", &[0, 1, 2])
            .await?;
        lab.set_endpoints("default", "shared-https", &[0, 1, 2])
            .await?;
    }
    let owner = lab
        .wait_owner("default", "demo", None, Duration::from_secs(15))
        .await?;
    if has_kubectl {
        show_kubectl(&kubeconfig, &["get", "services"]).await;
    }
    show_status(&lab).await;
    print_table(&lab, &vips, &owner);
    if args.scenario == Scenario::Sharing {
        let shared = lab
            .wait_vips("default", "shared-http", 1, Duration::from_secs(5))
            .await?;
        println!(
            "    shared VIP {}: curl :80 -> {}   curl :443 -> {}",
            shared[0],
            lab.curl(shared[0], 80).unwrap_or_else(|| "FAILED".into()),
            lab.curl(shared[0], 443).unwrap_or_else(|| "FAILED".into())
        );
    }
    if local {
        println!(
            "    externalTrafficPolicy: Local: only node2 has an endpoint, so node2 announces ({owner})."
        );
    }

    let vip = vips[0];
    step(
        3,
        &format!("crash: SIGKILL the speaker on {owner} and take its link down"),
    );
    let idx = lab
        .node_index(&owner)
        .ok_or_else(|| LabError::Manifest(format!("unknown node {owner}")))?;
    let crash = failover(&mut lab, vip, idx, false).await?;
    report(&lab, &crash);

    step(
        4,
        &format!("bring {owner} back (link up, speaker restarted)"),
    );
    lab.node(idx).link_up()?;
    lab.start_speaker(idx)?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let owner2 = lab
        .wait_owner("default", "demo", None, Duration::from_secs(15))
        .await?;
    print_table(&lab, &vips, &owner2);

    step(
        5,
        &format!("graceful hand-over: SIGTERM the speaker on {owner2}"),
    );
    let idx2 = lab
        .node_index(&owner2)
        .ok_or_else(|| LabError::Manifest(format!("unknown node {owner2}")))?;
    let graceful = failover(&mut lab, vip, idx2, true).await?;
    report(&lab, &graceful);
    lab.start_speaker(idx2)?;

    if args.keep {
        keep(&lab, vip, &kubeconfig);
        let _ = tokio::signal::ctrl_c().await;
    }
    println!("\ntearing down the lab (namespaces, processes)");
    drop(lab);
    println!("done");
    Ok(())
}

fn print_table(lab: &Lab, vips: &[IpAddr], status_node: &str) {
    println!(
        "    {:<14} {:<20} {:<8} {:<34} CURL",
        "SERVICE", "VIP", "OWNER", "ANSWER FROM CLIENT (ARP / NDP)"
    );
    for vip in vips {
        // Each VIP is elected on its own, so a dual-stack Service's two
        // VIPs may have different owners: name the node that answered.
        let (mac, how) = match vip {
            IpAddr::V4(_) => match lab.arping(*vip) {
                Some(a) => (Some(a.mac), format!("{:.0} us", a.usec)),
                None => (None, String::new()),
            },
            IpAddr::V6(v6) => (lab.ndisc6(*v6), "ndisc6".to_string()),
        };
        let owner = mac
            .as_deref()
            .and_then(|m| lab.node_of_mac(m))
            .unwrap_or_else(|| "-".into());
        let answer = mac
            .map(|m| format!("{m} {how}"))
            .unwrap_or_else(|| "no answer".into());
        let curl = lab
            .curl(*vip, 80)
            .map(|b| format!("200 from {b}"))
            .unwrap_or_else(|| "FAILED".into());
        println!(
            "    {:<14} {:<20} {:<8} {:<34} {curl}",
            "default/demo",
            vip.to_string(),
            owner,
            answer
        );
    }
    println!("    (ServiceL2Status names {status_node} as an announcing node)");
}

/// What the client saw during one failover.
pub struct Failover {
    /// ARP answers switching MAC.
    pub arp: Option<Switch>,
    /// HTTP answers switching node.
    pub http: Option<Switch>,
    /// Graceful (SIGTERM) or crash (SIGKILL + link down).
    pub graceful: bool,
}

/// Probes `vip` from the client every 10 ms while stopping node `idx`'s
/// speaker, until another node serves it.
pub async fn failover(
    lab: &mut Lab,
    vip: IpAddr,
    idx: usize,
    graceful: bool,
) -> Result<Failover, LabError> {
    let client = lab.client_host().clone();
    let url = match vip {
        IpAddr::V4(v) => format!("http://{v}/"),
        IpAddr::V6(v) => format!("http://[{v}]/"),
    };
    let arp = vip
        .is_ipv4()
        .then(|| {
            Probe::arp(
                client.command("arping"),
                &client.iface,
                vip,
                Duration::from_millis(10),
            )
        })
        .transpose()
        .map_err(|source| LabError::Io {
            context: "cannot start arping".into(),
            source,
        })?;
    let http =
        Probe::http(client.command("sh"), &url, Duration::from_millis(10)).map_err(|source| {
            LabError::Io {
                context: "cannot start curl".into(),
                source,
            }
        })?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let event = Instant::now();
    lab.stop_speaker(idx, graceful);
    if !graceful {
        lab.node(idx).link_down()?;
    }
    let old = lab.node(idx).name.clone();
    let deadline = event + lab.opts.lease_duration + Duration::from_secs(10);
    while Instant::now() < deadline {
        let served_elsewhere = http
            .samples()
            .iter()
            .any(|s| s.at > event && s.what != "FAIL" && s.what != old);
        if served_elsewhere {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let arp = arp
        .map(Probe::stop)
        .and_then(|s| probe::switch_after(&s, event));
    let http = probe::switch_after(&http.stop(), event);
    Ok(Failover {
        arp,
        http,
        graceful,
    })
}

fn report(lab: &Lab, f: &Failover) {
    let what = if f.graceful {
        "SIGTERM"
    } else {
        "SIGKILL + link down"
    };
    println!("    t=0 ms        {what}");
    if let Some(a) = &f.arp {
        let from = lab.node_of_mac(&a.from).unwrap_or_else(|| a.from.clone());
        let to = lab.node_of_mac(&a.to).unwrap_or_else(|| a.to.clone());
        println!(
            "    t={:<10} last ARP answer from {} ({from})",
            ms(a.last_old),
            a.from
        );
        println!(
            "    t={:<10} first ARP answer from {} ({to})",
            ms(a.first_new),
            a.to
        );
    }
    match &f.http {
        Some(h) => {
            println!(
                "    t={:<10} first HTTP 200 from {} (was {})",
                ms(h.first_new),
                h.to,
                h.from
            );
            println!(
                "    client-observed outage: ARP {}  HTTP {}",
                f.arp
                    .as_ref()
                    .map(|a| ms(a.outage))
                    .unwrap_or_else(|| "-".into()),
                ms(h.outage)
            );
        }
        None => println!(
            "    no other node served the VIP in time: see the speaker logs in {}",
            lab.opts.log_dir.display()
        ),
    }
}

/// Prints `$ kubectl ARGS` and what the user's kubectl printed, indented.
async fn show_kubectl(config: &Path, args: &[&str]) {
    println!("    $ kubectl {}", args.join(" "));
    let config = config.to_path_buf();
    let owned: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let out = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = owned.iter().map(String::as_str).collect();
        kubectl::run(&config, &args)
    })
    .await;
    match out {
        Ok(Ok(o)) => {
            let text = if o.success { o.stdout } else { o.stderr };
            for line in text.lines() {
                println!("    {line}");
            }
        }
        Ok(Err(e)) => println!("    (kubectl could not run: {e})"),
        Err(e) => println!("    (kubectl could not run: {e})"),
    }
}

/// Prints `$ l2lb status` and its table, indented.
async fn show_status(lab: &Lab) {
    println!("    $ l2lb status");
    match crate::status::rows(&lab.client, crate::lab::apiserver::L2LB_NAMESPACE).await {
        Ok(rows) => {
            for line in crate::status::render(&rows).lines() {
                println!("    {line}");
            }
        }
        Err(e) => println!("    (l2lb status failed: {e})"),
    }
}

fn keep(lab: &Lab, vip: IpAddr, kubeconfig: &Path) {
    let c = lab.client_host();
    println!("\nThe lab keeps running. Point kubectl and l2lb at it:");
    println!("    export KUBECONFIG={}", kubeconfig.display());
    println!("    kubectl get services,ipaddresspools,servicel2statuses -A");
    println!("    kubectl describe service demo");
    println!("    l2lb status");
    println!("Try, in another terminal:");
    println!(
        "    ip netns exec {} arping -c 3 -i {} {vip}",
        c.ns, c.iface
    );
    println!("    ip netns exec {} curl http://{vip}/", c.ns);
    println!("    ip netns exec {} ip neigh", c.ns);
    for (i, h) in lab.lan.nodes().iter().enumerate() {
        println!(
            "    node{i}: ip netns exec {} ...   speaker log: {}",
            h.ns,
            lab.log_path(&format!("{}-speaker", h.name)).display()
        );
    }
    println!("Ctrl-C tears everything down.");
}
