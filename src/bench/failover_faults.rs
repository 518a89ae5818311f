//! The fault scenarios of `l2lb bench failover` beyond graceful stop and
//! crash (issue 13): a speaker-only crash, a frozen speaker, the owner's
//! link down, the owner's fast-path traffic cut (both ways, then each way),
//! the owner cut from the API, and every node cut from the API with the
//! owner crashing in the middle; the planned moves of issue 16 (a crashed
//! owner returning, the owner cordoned and uncordoned); plus the fast
//! path's frames per second per node.
//!
//! Each trial watches one VIP from the client (an ARP request every 10 ms,
//! and a capture at the client) from before the fault until well after it
//! is healed, and reports the longest gap between answers the client saw
//! and how many of its requests two nodes answered, counted on the wire.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::BenchError;
use super::failover::{doubles_on_the_wire, owner_of_svc0};
use crate::lab::probe::Sample;
use crate::lab::world::Lab;

fn err(e: impl std::fmt::Display) -> BenchError {
    BenchError::Failed(e.to_string())
}

/// One fault applied to the owner of the watched VIP.
#[derive(Clone, Copy, Debug)]
enum Fault {
    /// SIGKILL the speaker; the link stays up.
    SpeakerCrash,
    /// SIGSTOP the speaker for 3 s, then SIGCONT.
    Freeze,
    /// The owner's link down for 2 s, the process alive.
    LinkDown,
    /// The owner's fast-path frames dropped for 2 s: what it sends
    /// (`out`) and/or what is sent to it (`inbound`).
    FastpathCut { out: bool, inbound: bool },
    /// The owner cut from the API server for 6 s (longer than the lease).
    ApiCut,
}

impl Fault {
    fn name(self) -> &'static str {
        match self {
            Fault::SpeakerCrash => "speaker_crash",
            Fault::Freeze => "freeze",
            Fault::LinkDown => "linkdown",
            Fault::FastpathCut {
                out: true,
                inbound: true,
            } => "fastpath_cut",
            Fault::FastpathCut { out: true, .. } => "fastpath_cut_out",
            Fault::FastpathCut { .. } => "fastpath_cut_in",
            Fault::ApiCut => "api_cut",
        }
    }

    /// How long the fault lasts before it is healed.
    fn hold(self) -> Duration {
        match self {
            Fault::SpeakerCrash => Duration::from_millis(1500),
            Fault::Freeze => Duration::from_secs(3),
            Fault::LinkDown | Fault::FastpathCut { .. } => Duration::from_secs(2),
            Fault::ApiCut => Duration::from_secs(6),
        }
    }
}

/// What one trial showed the client.
struct Outcome {
    /// Longest gap between two answers, from the fault until the end.
    outage_ms: f64,
    /// Requests two nodes answered (on the wire).
    doubles: usize,
}

/// Longest gap between consecutive answers after `from` (and from `from`
/// to the first answer), in ms.
fn longest_gap(samples: &[Sample], from: Instant, until: Instant) -> f64 {
    let mut last = from;
    let mut gap = Duration::ZERO;
    for s in samples.iter().filter(|s| s.at > from && s.at <= until) {
        gap = gap.max(s.at.duration_since(last));
        last = s.at;
    }
    gap = gap.max(until.saturating_duration_since(last));
    gap.as_secs_f64() * 1000.0
}

/// Runs `fault` once on the owner of `svc-0` (VIP `vip`).
async fn trial(
    lab: &mut Lab,
    vip: Ipv4Addr,
    fault: Fault,
    tag: &str,
) -> Result<Outcome, BenchError> {
    let idx = owner_of_svc0(lab).await?;
    let host = lab.node(idx).clone();
    let (capture, arp) = lab.watch_from_client(IpAddr::V4(vip), tag).map_err(err)?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let event = Instant::now();
    match fault {
        Fault::SpeakerCrash => lab.stop_speaker(idx, false),
        Fault::Freeze => {
            lab.signal_speaker(idx, libc::SIGSTOP);
        }
        Fault::LinkDown => host.link_down().map_err(err)?,
        Fault::FastpathCut { out, inbound } => {
            lab.lan.cut_fastpath(&host, out, inbound).map_err(err)?
        }
        Fault::ApiCut => lab.api.faults().block(IpAddr::V4(host.ipv4)),
    }
    tokio::time::sleep(fault.hold()).await;
    match fault {
        Fault::SpeakerCrash => {}
        Fault::Freeze => {
            lab.signal_speaker(idx, libc::SIGCONT);
        }
        Fault::LinkDown => host.link_up().map_err(err)?,
        Fault::FastpathCut { .. } => lab.lan.heal_fastpath(&host).map_err(err)?,
        Fault::ApiCut => lab.api.faults().unblock(IpAddr::V4(host.ipv4)),
    }
    if matches!(fault, Fault::SpeakerCrash) {
        lab.start_speaker(idx).map_err(err)?;
    }
    // Watch the heal too: a woken or reconnected node taking its VIPs back
    // is where a double answer would show.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let end = Instant::now();
    let samples = arp.stop();
    let doubles = doubles_on_the_wire(lab, capture, vip)?;
    Ok(Outcome {
        outage_ms: longest_gap(&samples, event, end),
        doubles,
    })
}

/// Every node cut from the API for 30 s; the owner crashes (SIGKILL +
/// link down) 15 s in. Returns (longest gap, doubles).
async fn api_outage_all(lab: &mut Lab, vip: Ipv4Addr) -> Result<Outcome, BenchError> {
    let idx = owner_of_svc0(lab).await?;
    let (capture, arp) = lab
        .watch_from_client(IpAddr::V4(vip), "api-outage-all")
        .map_err(err)?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let nodes: Vec<IpAddr> = (0..lab.opts.nodes)
        .map(|i| IpAddr::V4(lab.node(i).ipv4))
        .collect();
    let event = Instant::now();
    for ip in &nodes {
        lab.api.faults().block(*ip);
    }
    tokio::time::sleep(Duration::from_secs(15)).await;
    let crash = Instant::now();
    lab.stop_speaker(idx, false);
    lab.node(idx).link_down().map_err(err)?;
    tokio::time::sleep(Duration::from_secs(15)).await;
    for ip in &nodes {
        lab.api.faults().unblock(*ip);
    }
    tokio::time::sleep(Duration::from_secs(6)).await;
    let end = Instant::now();
    let samples = arp.stop();
    let doubles = doubles_on_the_wire(lab, capture, vip)?;
    let before_crash = longest_gap(&samples, event, crash);
    let after_crash = longest_gap(&samples, crash, end);
    println!(
        "api_outage_all: longest gap before the crash {before_crash:.0} ms, from the crash on {after_crash:.0} ms"
    );
    lab.node(idx).link_up().map_err(err)?;
    lab.start_speaker(idx).map_err(err)?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    Ok(Outcome {
        outage_ms: before_crash.max(after_crash),
        doubles,
    })
}

/// Watches the VIP from the client while `act` moves it to node
/// `to` by a planned hand-over (a node returning, a cordon, an uncordon):
/// waits until the client hears `to`, then a second more. Returns the
/// longest gap the client saw from the act on, and the double answers.
async fn planned_move(
    lab: &mut Lab,
    vip: Ipv4Addr,
    tag: &str,
    to: Option<usize>,
    act: impl AsyncFnOnce(&mut Lab) -> Result<(), BenchError>,
) -> Result<Outcome, BenchError> {
    let from = owner_of_svc0(lab).await?;
    let (capture, arp) = lab.watch_from_client(IpAddr::V4(vip), tag).map_err(err)?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let event = Instant::now();
    act(lab).await?;
    let moved = |s: &Sample| match to {
        Some(to) => s.what == lab.mac_of(to),
        None => s.what != lab.mac_of(from),
    };
    let deadline = event + Duration::from_secs(20);
    while Instant::now() < deadline && !arp.samples().iter().any(|s| s.at > event && moved(s)) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let end = Instant::now();
    let samples = arp.stop();
    let doubles = doubles_on_the_wire(lab, capture, vip)?;
    if !samples.iter().any(|s| s.at > event && moved(s)) {
        return Err(err(format!("{tag}: the VIP did not move")));
    }
    Ok(Outcome {
        outage_ms: longest_gap(&samples, event, end),
        doubles,
    })
}

/// Issue 16's planned moves: a crashed owner returning (the VIP moves back
/// to it), and the owner cordoned (the VIP leaves it) then uncordoned (it
/// comes back). Returns the JSON fields and the double answers.
async fn planned_moves(lab: &mut Lab, vip: Ipv4Addr) -> Result<(Value, usize), BenchError> {
    let mut moveback: Vec<Outcome> = Vec::new();
    let mut drain: Vec<Outcome> = Vec::new();
    for t in 0..5 {
        let idx = owner_of_svc0(lab).await?;
        lab.stop_speaker(idx, false);
        lab.node(idx).link_down().map_err(err)?;
        // The crash's own failover is measured elsewhere; let it settle.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let o = planned_move(lab, vip, &format!("moveback-{t}"), Some(idx), async |lab| {
            lab.node(idx).link_up().map_err(err)?;
            lab.start_speaker(idx).map_err(err)
        })
        .await?;
        println!(
            "moveback trial {t}: longest client gap {:.1} ms, double answers {}",
            o.outage_ms, o.doubles
        );
        moveback.push(o);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    for t in 0..3 {
        let idx = owner_of_svc0(lab).await?;
        let o = planned_move(lab, vip, &format!("drain-{t}"), None, async |lab| {
            lab.set_cordoned(idx, true).await.map_err(err)
        })
        .await?;
        println!(
            "drain trial {t}: longest client gap {:.1} ms, double answers {}",
            o.outage_ms, o.doubles
        );
        drain.push(o);
        let o = planned_move(lab, vip, &format!("uncordon-{t}"), Some(idx), async |lab| {
            lab.set_cordoned(idx, false).await.map_err(err)
        })
        .await?;
        println!(
            "uncordon trial {t}: longest client gap {:.1} ms, double answers {}",
            o.outage_ms, o.doubles
        );
        moveback.push(o);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let worst = |v: &[Outcome]| v.iter().map(|o| o.outage_ms).fold(0.0, f64::max).round();
    let doubles = |v: &[Outcome]| v.iter().map(|o| o.doubles).sum::<usize>();
    let report = json!({
        "moveback_max_ms": worst(&moveback),
        "drain_max_ms": worst(&drain),
        "moveback": { "outage_max_ms": worst(&moveback), "double_answers": doubles(&moveback), "trials": moveback.len() },
        "drain": { "outage_max_ms": worst(&drain), "double_answers": doubles(&drain), "trials": drain.len() },
    });
    Ok((report, doubles(&moveback) + doubles(&drain)))
}

/// Fast-path messages sent per second per node, from the speakers' own
/// counters (`l2lb_speaker_fastpath_sent_total`) over `window`.
async fn lan_pps_per_node(lab: &Lab, window: Duration) -> Result<f64, BenchError> {
    let read = |lab: &Lab| -> Result<f64, BenchError> {
        let mut total = 0.0;
        for i in 0..lab.opts.nodes {
            total += lab
                .speaker_metric(i, "l2lb_speaker_fastpath_sent_total")
                .map_err(err)?;
        }
        Ok(total)
    };
    let before = read(lab)?;
    tokio::time::sleep(window).await;
    let after = read(lab)?;
    Ok((after - before) / window.as_secs_f64() / lab.opts.nodes as f64)
}

/// Runs every fault scenario on the owner of `vip` and returns their JSON
/// fields, and the double answers they saw in total.
pub(super) async fn run(lab: &mut Lab, vip: Ipv4Addr) -> Result<(Value, usize), BenchError> {
    let pps = lan_pps_per_node(lab, Duration::from_secs(5)).await?;
    println!("fast path: {pps:.1} messages/s sent per node (3 nodes)");
    let mut report = serde_json::Map::new();
    report.insert(
        "lan_pps_per_node".into(),
        json!((pps * 10.0).round() / 10.0),
    );
    let mut doubles_total = 0;
    let plan = [
        (Fault::SpeakerCrash, 3),
        (Fault::Freeze, 2),
        (Fault::LinkDown, 3),
        (
            Fault::FastpathCut {
                out: true,
                inbound: true,
            },
            2,
        ),
        (
            Fault::FastpathCut {
                out: true,
                inbound: false,
            },
            2,
        ),
        (
            Fault::FastpathCut {
                out: false,
                inbound: true,
            },
            2,
        ),
        (Fault::ApiCut, 1),
    ];
    for (fault, trials) in plan {
        let mut worst: f64 = 0.0;
        let mut doubles = 0;
        for t in 0..trials {
            let o = trial(lab, vip, fault, &format!("{}-{t}", fault.name())).await?;
            println!(
                "{} trial {t}: longest client gap {:.1} ms, double answers {}",
                fault.name(),
                o.outage_ms,
                o.doubles
            );
            worst = worst.max(o.outage_ms);
            doubles += o.doubles;
        }
        doubles_total += doubles;
        report.insert(
            fault.name().into(),
            json!({ "outage_max_ms": worst.round(), "double_answers": doubles, "trials": trials }),
        );
    }
    let o = api_outage_all(lab, vip).await?;
    doubles_total += o.doubles;
    report.insert(
        "api_outage_all".into(),
        json!({ "outage_max_ms": o.outage_ms.round(), "double_answers": o.doubles, "trials": 1 }),
    );
    let (planned, doubles) = planned_moves(lab, vip).await?;
    doubles_total += doubles;
    if let Value::Object(p) = planned {
        report.extend(p);
    }
    Ok((Value::Object(report), doubles_total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_gap_counts_the_edges() {
        let t0 = Instant::now();
        let at = |ms: u64| Sample {
            at: t0 + Duration::from_millis(ms),
            what: "m".into(),
        };
        let s = [at(5), at(10), at(300), at(310)];
        assert_eq!(longest_gap(&s, t0, t0 + Duration::from_millis(320)), 290.0);
        assert_eq!(longest_gap(&s, t0, t0 + Duration::from_millis(1000)), 690.0);
        assert_eq!(longest_gap(&[], t0, t0 + Duration::from_millis(50)), 50.0);
    }
}
