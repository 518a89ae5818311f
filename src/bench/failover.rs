//! `l2lb bench failover` (root): the lab's 3 nodes with real speaker
//! processes (LAN fast path on); the client probes VIPs with ARP every
//! 10 ms while a speaker is stopped gracefully (SIGTERM, 10 trials) or
//! crashes (SIGKILL + link down, 20 trials); then the fault scenarios of
//! [`super::failover_faults`]; then API requests per second per node at
//! steady state with 10 and 1000 VIPs, counted at the embedded API server.

use super::BenchError;
use crate::lab::net::Capture;
use crate::lab::probe;
use crate::lab::world::{Lab, LabOptions, preflight};
use k8s_openapi::api::core::v1::Service;
use serde_json::json;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

const TRIALS: usize = 10;
/// Crash trials: enough for a p99 that is not just the maximum of ten.
const CRASH_TRIALS: usize = 20;
const LEASE: Duration = Duration::from_secs(4);
/// Wait before a steady-state measurement: longer than the speakers'
/// status re-check after a takeover.
const SETTLE: Duration = Duration::from_secs(10);

fn err(e: impl std::fmt::Display) -> BenchError {
    BenchError::Failed(e.to_string())
}

fn service(name: &str, pool: &str) -> Result<Service, BenchError> {
    serde_json::from_value(json!({
        "metadata": { "name": name, "namespace": "default",
                      "annotations": { "l2lb.io/address-pool": pool } },
        "spec": { "type": "LoadBalancer", "selector": { "app": name },
                  "ports": [{ "port": 80, "protocol": "TCP" }] },
    }))
    .map_err(err)
}

async fn pools(lab: &Lab) -> Result<(), BenchError> {
    for (name, addr) in [
        ("near", "198.18.0.100-198.18.0.120"),
        ("far", "198.18.4.0/22"),
    ] {
        lab.apply(json!({
            "apiVersion": "l2lb.io/v1beta1", "kind": "IPAddressPool",
            "metadata": { "name": name, "namespace": "l2lb-system" },
            "spec": { "addresses": [addr] },
        }))
        .await
        .map_err(err)?;
    }
    lab.apply(json!({
        "apiVersion": "l2lb.io/v1beta1", "kind": "L2Advertisement",
        "metadata": { "name": "all", "namespace": "l2lb-system" }, "spec": {},
    }))
    .await
    .map_err(err)?;
    Ok(())
}

/// One trial: the client's ARP outage for `vip` when its owner's speaker
/// stops, and how many of the client's requests two nodes answered.
async fn trial(
    lab: &mut Lab,
    vip: Ipv4Addr,
    graceful: bool,
    name: &str,
) -> Result<(f64, usize), BenchError> {
    let idx = owner_of_svc0(lab).await?;
    let (capture, arp) = lab.watch_from_client(IpAddr::V4(vip), name).map_err(err)?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let event = Instant::now();
    lab.stop_speaker(idx, graceful);
    if !graceful {
        lab.node(idx).link_down().map_err(err)?;
    }
    let old = lab.mac_of(idx);
    let deadline = event + LEASE + Duration::from_secs(10);
    while Instant::now() < deadline && !arp.samples().iter().any(|s| s.at > event && s.what != old)
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let samples = arp.stop();
    let doubles = doubles_on_the_wire(lab, capture, vip)?;
    let switch = probe::switch_after(&samples, event)
        .ok_or_else(|| err("the VIP was not answered by another node"))?;
    // Put the node back and let it settle before the next trial.
    if !graceful {
        lab.node(idx).link_up().map_err(err)?;
    }
    lab.start_speaker(idx).map_err(err)?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    Ok((switch.first_new.as_secs_f64() * 1000.0, doubles))
}

/// Index of the node that owns `default/svc-0`, the VIP every trial watches.
pub(super) async fn owner_of_svc0(lab: &Lab) -> Result<usize, BenchError> {
    let owner = lab
        .wait_owner("default", "svc-0", None, Duration::from_secs(30))
        .await
        .map_err(err)?;
    lab.node_index(&owner)
        .ok_or_else(|| err(format!("unknown owner {owner}")))
}

/// Stops `capture` (taken at the client) and counts the client's requests
/// for `vip` that two nodes answered, printing each with its capture time.
pub(super) fn doubles_on_the_wire(
    lab: &Lab,
    capture: Capture,
    vip: Ipv4Addr,
) -> Result<usize, BenchError> {
    let pcap = capture.stop().map_err(err)?;
    let wire = lab.wire_answers(&pcap, vip).map_err(err)?;
    if wire.requests == 0 {
        return Err(err(format!(
            "no ARP request for {vip} in {}",
            pcap.display()
        )));
    }
    for (at, macs) in &wire.doubles {
        println!(
            "  double answer at {at:.3} s in {}: {}",
            pcap.display(),
            macs.join(", ")
        );
    }
    Ok(wire.doubles.len())
}

fn percentile(mut v: Vec<f64>, p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v.get(i).copied().unwrap_or(f64::NAN)
}

/// API requests per second per node with the controllers stopped.
async fn api_rps(lab: &Lab, window: Duration) -> f64 {
    lab.api.reset_requests();
    tokio::time::sleep(window).await;
    let total = lab.api.requests().total();
    total as f64 / window.as_secs_f64() / lab.opts.nodes as f64
}

/// Runs the benchmark and prints the JSON report as the last line.
pub fn run() -> Result<(), BenchError> {
    preflight().map_err(err)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(err)?;
    rt.block_on(async {
        let mut opts = LabOptions::new("bench-failover").map_err(err)?;
        opts.lease_duration = LEASE;
        let mut lab = Lab::start(opts).await.map_err(err)?;
        pools(&lab).await?;
        let mut vips = Vec::new();
        for i in 0..10 {
            lab.create_service(service(&format!("svc-{i}"), "near")?, &[0, 1, 2])
                .await
                .map_err(err)?;
        }
        for i in 0..10 {
            let v = lab
                .wait_vips("default", &format!("svc-{i}"), 1, Duration::from_secs(30))
                .await
                .map_err(err)?;
            let IpAddr::V4(v4) = v[0] else {
                return Err(err(format!("expected an IPv4 VIP, got {}", v[0])));
            };
            vips.push(v4);
        }
        lab.wait_owner("default", "svc-9", None, Duration::from_secs(30))
            .await
            .map_err(err)?;

        let mut doubles = 0;
        let mut graceful = Vec::new();
        for t in 0..TRIALS {
            let (ms, d) = trial(&mut lab, vips[0], true, &format!("graceful-{t}")).await?;
            println!("graceful trial {t}: new owner answered after {ms:.1} ms");
            graceful.push(ms);
            doubles += d;
        }
        let mut crash = Vec::new();
        for t in 0..CRASH_TRIALS {
            let (ms, d) = trial(&mut lab, vips[0], false, &format!("crash-{t}")).await?;
            println!(
                "crash trial {t}: new owner answered after {ms:.1} ms (lease {} ms)",
                LEASE.as_millis()
            );
            crash.push(ms);
            doubles += d;
        }

        let (faults, fault_doubles) = super::failover_faults::run(&mut lab, vips[0]).await?;
        doubles += fault_doubles;

        // Steady-state API load of the speakers alone, once the last moves
        // have settled (after a takeover a speaker re-checks its status
        // objects for 7 s).
        for i in 0..lab.opts.controllers {
            lab.stop_controller(i, true);
        }
        tokio::time::sleep(SETTLE).await;
        let rps_10 = api_rps(&lab, Duration::from_secs(10)).await;
        println!("steady state, 10 VIPs: {rps_10:.2} API requests/s per node");
        for i in 0..lab.opts.controllers {
            lab.start_controller(i).map_err(err)?;
        }
        for i in 10..1000 {
            lab.create_service(service(&format!("svc-{i}"), "far")?, &[0, 1, 2])
                .await
                .map_err(err)?;
        }
        lab.wait_vips("default", "svc-999", 1, Duration::from_secs(120))
            .await
            .map_err(err)?;
        lab.wait_owner("default", "svc-999", None, Duration::from_secs(120))
            .await
            .map_err(err)?;
        for i in 0..lab.opts.controllers {
            lab.stop_controller(i, true);
        }
        tokio::time::sleep(SETTLE).await;
        let rps_1000 = api_rps(&lab, Duration::from_secs(10)).await;
        println!("steady state, 1000 VIPs: {rps_1000:.2} API requests/s per node");

        let round = |v: f64| (v * 10.0).round() / 10.0;
        let mut report = json!({
                "bench": "failover",
                "graceful_p50_ms": round(percentile(graceful.clone(), 0.5)),
                "graceful_max_ms": round(percentile(graceful, 1.0)),
                "crash_trials": CRASH_TRIALS,
                "crash_p50_ms": round(percentile(crash.clone(), 0.5)),
                "crash_p99_ms": round(percentile(crash.clone(), 0.99)),
                "crash_max_ms": round(percentile(crash, 1.0)),
                "lease_duration_ms": LEASE.as_millis() as u64,
                "api_rps_per_node_10": (rps_10 * 100.0).round() / 100.0,
                "api_rps_per_node_1000": (rps_1000 * 100.0).round() / 100.0,
                "double_answers": doubles,
        });
        if let (Some(r), serde_json::Value::Object(f)) = (report.as_object_mut(), faults) {
            r.extend(f);
        }
        println!("{report}");
        drop(lab);
        Ok(())
    })
}
