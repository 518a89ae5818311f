//! Client-side probes for the lab and the end-to-end tests: one `arping`
//! and one `curl`, and continuous probes whose lines are timestamped as
//! they arrive, so a failover can be shown as a timeline with the outage
//! the client actually saw.
//!
//! Probes only ever target VIPs inside the lab's own namespaces.

use std::io::{BufRead, BufReader};
use std::net::IpAddr;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One `arping` answer: the MAC that answered and the round trip.
#[derive(Debug, Clone, PartialEq)]
pub struct ArpAnswer {
    /// MAC address of the answering host, lowercase `aa:bb:..`.
    pub mac: String,
    /// Round-trip time in microseconds as arping measured it.
    pub usec: f64,
    /// arping's `index=`: how many replies arrived before this one. It
    /// does not say which request a reply answers (see [`wire_answers`]).
    pub index: u64,
}

/// Parses one line of Habets arping output:
/// `60 bytes from 02:00:00:00:00:0b (198.18.0.100): index=0 time=21.420 usec`.
pub fn parse_arping_line(line: &str) -> Option<ArpAnswer> {
    let rest = line.split_once(" bytes from ")?.1;
    let mac = rest.split_whitespace().next()?.to_ascii_lowercase();
    let index = line
        .split_once("index=")?
        .1
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let time = line.split_once("time=")?.1;
    let mut it = time.split_whitespace();
    let value: f64 = it.next()?.parse().ok()?;
    let usec = match it.next()? {
        "usec" => value,
        "msec" => value * 1000.0,
        "sec" => value * 1_000_000.0,
        _ => return None,
    };
    Some(ArpAnswer { mac, usec, index })
}

/// One ARP request from `command` (a command already prefixed to run in the
/// client's namespace) to `vip` on `iface`; `None` if nobody answered.
pub fn arping_once(mut command: Command, iface: &str, vip: IpAddr) -> Option<ArpAnswer> {
    let out = command
        .args(["-c", "1", "-w", "1", "-i", iface, &vip.to_string()])
        .stdin(Stdio::null())
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(parse_arping_line)
}

/// A line seen from a continuous probe, with its arrival time.
#[derive(Debug, Clone)]
pub struct Sample {
    /// When the line arrived.
    pub at: Instant,
    /// What it said: a MAC for ARP, the serving node's name (or `FAIL`) for HTTP.
    pub what: String,
}

/// Turns one output line into a sample's text.
type LineParser = fn(&str) -> Option<String>;

/// A long-running probe process whose output lines are collected.
pub struct Probe {
    child: std::process::Child,
    samples: Arc<Mutex<Vec<Sample>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Probe {
    fn start(mut command: Command, parse: LineParser) -> std::io::Result<Self> {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| std::io::Error::other("probe has no stdout"))?;
        let samples = Arc::new(Mutex::new(Vec::new()));
        let sink = samples.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(what) = parse(&line) {
                    let s = Sample {
                        at: Instant::now(),
                        what,
                    };
                    sink.lock().unwrap_or_else(|p| p.into_inner()).push(s);
                }
            }
        });
        Ok(Self {
            child,
            samples,
            reader: Some(reader),
        })
    }

    /// ARP requests every `interval` from the client namespace (`command` is
    /// `arping` prefixed to run there); each answer's MAC is a sample.
    pub fn arp(
        command: Command,
        iface: &str,
        vip: IpAddr,
        interval: Duration,
    ) -> std::io::Result<Self> {
        let mut command = command;
        command.args([
            "-W",
            &format!("{:.3}", interval.as_secs_f64()),
            "-i",
            iface,
            &vip.to_string(),
        ]);
        Self::start(command, |l| parse_arping_line(l).map(|a| a.mac))
    }

    /// HTTP GETs every `interval` from the client namespace (`command` is
    /// `sh` prefixed to run there); each answer body (the node name) or
    /// `FAIL` is a sample.
    pub fn http(command: Command, url: &str, interval: Duration) -> std::io::Result<Self> {
        let mut command = command;
        let script = format!(
            "while :; do curl -s -g -m 0.5 '{url}' || echo FAIL; echo; sleep {:.3}; done",
            interval.as_secs_f64()
        );
        command.args(["-c", &script]);
        Self::start(command, |l| {
            let l = l.trim();
            (!l.is_empty()).then(|| l.to_string())
        })
    }

    /// Everything seen so far.
    pub fn samples(&self) -> Vec<Sample> {
        self.samples
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Stops the probe and returns all samples.
    pub fn stop(mut self) -> Vec<Sample> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        self.samples()
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One ARP frame as tshark decodes it: relative time, opcode, sender MAC,
/// sender IP, target MAC.
pub type ArpFrame = (f64, u16, String, String, String);

/// The ARP requests one client sent for a VIP and the answers each got,
/// read from a capture taken at the client (kernel timestamps, so the
/// pairing does not depend on how fast a probe's output is read).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WireAnswers {
    /// Requests the client sent for the VIP.
    pub requests: usize,
    /// Requests answered by at least one MAC.
    pub answered: usize,
    /// Capture times (seconds) of requests answered by two or more MACs,
    /// with the MACs: each is an instant when two nodes answered the VIP.
    pub doubles: Vec<(f64, Vec<String>)>,
}

impl WireAnswers {
    /// Pairs each reply to `client_mac` from `vip` with the last request
    /// `client_mac` sent for `vip` before it. Requests are sent every few
    /// milliseconds and answered within microseconds, so a reply belongs
    /// to the request just before it. Gratuitous frames (not addressed to
    /// the client) are left out: they answer no request.
    pub fn pair(frames: &[ArpFrame], vip: &str, client_mac: &str) -> WireAnswers {
        let mut per_request: Vec<(f64, std::collections::BTreeSet<String>)> = Vec::new();
        for (at, op, src_mac, src_ip, dst_mac) in frames {
            match op {
                1 if src_mac == client_mac => per_request.push((*at, Default::default())),
                2 if src_ip == vip && dst_mac == client_mac => {
                    if let Some((_, macs)) = per_request.last_mut() {
                        macs.insert(src_mac.clone());
                    }
                }
                _ => {}
            }
        }
        WireAnswers {
            requests: per_request.len(),
            answered: per_request.iter().filter(|(_, m)| !m.is_empty()).count(),
            doubles: per_request
                .into_iter()
                .filter(|(_, m)| m.len() > 1)
                .map(|(at, m)| (at, m.into_iter().collect()))
                .collect(),
        }
    }
}

/// Reads `pcap` (a capture at the client) and pairs the client's ARP
/// requests for `vip` with their answers (see [`WireAnswers::pair`]).
pub fn wire_answers(
    pcap: &std::path::Path,
    vip: std::net::Ipv4Addr,
    client_mac: &str,
) -> Result<WireAnswers, super::net::NetError> {
    let text = super::net::Capture::decode(
        pcap,
        &format!("arp && (arp.dst.proto_ipv4 == {vip} || arp.src.proto_ipv4 == {vip})"),
        &[
            "frame.time_relative",
            "arp.opcode",
            "arp.src.hw_mac",
            "arp.src.proto_ipv4",
            "arp.dst.hw_mac",
        ],
    )?;
    let frames: Vec<ArpFrame> = text
        .lines()
        .filter_map(|l| {
            let mut f = l.split('\t');
            Some((
                f.next()?.parse().ok()?,
                f.next()?.parse().ok()?,
                f.next()?.to_ascii_lowercase(),
                f.next()?.to_string(),
                f.next()?.to_ascii_lowercase(),
            ))
        })
        .collect();
    Ok(WireAnswers::pair(&frames, &vip.to_string(), client_mac))
}

/// What a client saw around an event: when the old answer was last seen,
/// when the new one was first seen, and the gap between.
#[derive(Debug, Clone, PartialEq)]
pub struct Switch {
    /// The answer before the event (MAC or node name).
    pub from: String,
    /// The first different, successful answer after the event.
    pub to: String,
    /// Last `from` answer, relative to the event (may be negative).
    pub last_old: Duration,
    /// First `to` answer, relative to the event.
    pub first_new: Duration,
    /// Longest gap between consecutive successful answers across the switch.
    pub outage: Duration,
}

/// Finds the switch from the answer current at `event` to the next
/// different successful answer. `FAIL` samples count as no answer.
pub fn switch_after(samples: &[Sample], event: Instant) -> Option<Switch> {
    let ok: Vec<&Sample> = samples.iter().filter(|s| s.what != "FAIL").collect();
    let before = ok.iter().rev().find(|s| s.at <= event)?;
    let from = before.what.clone();
    let first_new = ok.iter().find(|s| s.at > event && s.what != from)?;
    let last_old = ok
        .iter()
        .filter(|s| s.what == from && s.at < first_new.at)
        .map(|s| s.at)
        .max()?;
    let mut outage = Duration::ZERO;
    let window: Vec<&&Sample> = ok
        .iter()
        .filter(|s| s.at >= before.at && s.at <= first_new.at)
        .collect();
    for pair in window.windows(2) {
        outage = outage.max(pair[1].at.duration_since(pair[0].at));
    }
    let rel = |t: Instant| {
        if t >= event {
            t - event
        } else {
            Duration::ZERO
        }
    };
    Some(Switch {
        from,
        to: first_new.what.clone(),
        last_old: rel(last_old),
        first_new: rel(first_new.at),
        outage,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arping_lines_parse_in_every_unit() {
        let a = parse_arping_line(
            "60 bytes from 02:00:00:00:00:0B (198.18.0.100): index=0 time=21.420 usec",
        )
        .unwrap();
        assert_eq!(
            a,
            ArpAnswer {
                mac: "02:00:00:00:00:0b".into(),
                usec: 21.42,
                index: 0
            }
        );
        let b = parse_arping_line(
            "42 bytes from 02:00:00:00:00:0c (198.18.0.1): index=3 time=1.5 msec",
        )
        .unwrap();
        assert_eq!(b.usec, 1500.0);
        assert!(parse_arping_line("Timeout").is_none());
        assert!(parse_arping_line("ARPING 198.18.0.100").is_none());
    }

    #[test]
    fn wire_answers_pair_replies_with_the_request_before_them() {
        let (client, a, b) = (
            "02:00:00:00:02:00",
            "02:00:00:00:01:00",
            "02:00:00:00:01:01",
        );
        let vip = "198.18.0.100";
        let frame = |at: f64, op: u16, mac: &str, ip: &str, to: &str| {
            (at, op, mac.to_string(), ip.to_string(), to.to_string())
        };
        let frames = vec![
            frame(0.000, 1, client, "198.18.0.201", "00:00:00:00:00:00"),
            frame(0.001, 2, a, vip, client),
            frame(0.010, 1, client, "198.18.0.201", "00:00:00:00:00:00"),
            // A gratuitous reply from b answers nobody.
            frame(0.011, 2, b, vip, b),
            frame(0.012, 2, a, vip, client),
            frame(0.020, 1, client, "198.18.0.201", "00:00:00:00:00:00"),
            frame(0.021, 2, a, vip, client),
            frame(0.021, 2, b, vip, client),
            frame(0.030, 1, client, "198.18.0.201", "00:00:00:00:00:00"),
        ];
        let w = WireAnswers::pair(&frames, vip, client);
        assert_eq!(w.requests, 4);
        assert_eq!(w.answered, 3);
        assert_eq!(w.doubles, vec![(0.020, vec![a.to_string(), b.to_string()])]);
    }

    #[test]
    fn switch_measures_the_gap_the_client_saw() {
        let t0 = Instant::now();
        let at = |ms: u64, what: &str| Sample {
            at: t0 + Duration::from_millis(ms),
            what: what.into(),
        };
        let samples = vec![
            at(0, "node1"),
            at(10, "node1"),
            at(20, "FAIL"),
            at(30, "FAIL"),
            at(140, "node2"),
            at(150, "node2"),
        ];
        let s = switch_after(&samples, t0 + Duration::from_millis(15)).unwrap();
        assert_eq!(s.from, "node1");
        assert_eq!(s.to, "node2");
        assert_eq!(s.first_new, Duration::from_millis(125));
        assert_eq!(s.outage, Duration::from_millis(130));
        assert!(
            switch_after(&samples[..2], t0).is_none(),
            "no switch without a new answer"
        );
    }
}
