//! A line protocol that drives a [`Dataplane`] from another process (the
//! hidden `l2lb l2-responder` subcommand used by netns tests and the ARP
//! benchmark, which run the responder inside a node namespace).
//!
//! A test fixture: the production speaker drives the dataplane in-process.
//! Commands, one per line: `announce <vip>`, `withdraw <vip>`, `withdraw-all`,
//! `stats`, `owned`, `cpu`. Every command is answered with one line: `ok`,
//! `err <why>` or a JSON object; tests and `bench arp` parse these, so the
//! replies must not change. Owns no sockets itself and must never be exposed
//! on a network: it reads a pipe from its parent only.

use std::io::{BufRead, Write};
use std::net::IpAddr;

use crate::l2::Dataplane;
use crate::lab::net::process_cpu_time;

/// Serves commands from `input` until EOF, answering on `output`; detected
/// conflicts are printed as `conflict {json}` lines as they come.
pub fn serve(
    dp: &Dataplane,
    iface: &str,
    input: impl BufRead,
    output: impl Write + Send + 'static,
) -> std::io::Result<()> {
    let out = std::sync::Arc::new(std::sync::Mutex::new(output));
    let conflicts = dp.subscribe_conflicts();
    let out_c = out.clone();
    std::thread::spawn(move || {
        for c in conflicts {
            let line = serde_json::json!({
                "vip": c.vip.to_string(),
                "interface": c.interface,
                "our_mac": c.our_mac.to_string(),
                "their_mac": c.their_mac.to_string(),
            });
            let mut o = out_c.lock().unwrap_or_else(|e| e.into_inner());
            if writeln!(o, "conflict {line}")
                .and_then(|_| o.flush())
                .is_err()
            {
                return;
            }
        }
    });
    for line in input.lines() {
        let line = line?;
        let mut words = line.split_whitespace();
        let reply = match (words.next(), words.next()) {
            (Some("announce"), Some(v)) => match v.parse::<IpAddr>() {
                Ok(ip) => match dp.announce(ip, iface) {
                    Ok(()) => "ok".to_string(),
                    Err(e) => format!("err {e}"),
                },
                Err(e) => format!("err {v}: {e}"),
            },
            (Some("withdraw"), Some(v)) => match v.parse::<IpAddr>() {
                Ok(ip) => {
                    dp.withdraw(ip);
                    "ok".to_string()
                }
                Err(e) => format!("err {v}: {e}"),
            },
            (Some("withdraw-all"), None) => {
                dp.withdraw_all();
                "ok".to_string()
            }
            (Some("stats"), None) => {
                serde_json::to_string(&dp.stats().total()).unwrap_or_else(|e| format!("err {e}"))
            }
            (Some("owned"), None) => serde_json::to_string(
                &dp.owned()
                    .into_iter()
                    .map(|(ip, i)| format!("{ip}%{i}"))
                    .collect::<Vec<_>>(),
            )
            .unwrap_or_else(|e| format!("err {e}")),
            (Some("cpu"), None) => {
                format!("{{\"cpu_us\":{}}}", process_cpu_time().as_micros())
            }
            _ => format!("err unknown command {line:?}"),
        };
        let mut o = out.lock().unwrap_or_else(|e| e.into_inner());
        writeln!(o, "{reply}")?;
        o.flush()?;
    }
    Ok(())
}
