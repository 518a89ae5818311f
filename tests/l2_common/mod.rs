//! Shared fixtures of the L2 netns tests: a responder process in a node namespace.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::process::{ChildStdin, ChildStdout, Stdio};
use std::time::{Duration, Instant};

use l2lb::lab::net::{ChildHandle, Host, Lan};

/// `l2lb l2-responder` running in a node namespace, driven over its stdin.
pub struct Responder {
    pub handle: ChildHandle,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    pub conflicts: Vec<String>,
}

impl Responder {
    pub fn start(lan: &Lan, node: &Host, vips: &[&str]) -> Responder {
        let mut cmd = node.command(env!("CARGO_BIN_EXE_l2lb"));
        cmd.args(["l2-responder", "--iface", &node.iface]);
        for v in vips {
            cmd.args(["--vip", v]);
        }
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped());
        let mut handle = node.spawn(lan, cmd).expect("spawn responder");
        let stdin = handle.take_stdin().unwrap();
        let stdout = BufReader::new(handle.take_stdout().unwrap());
        let mut r = Responder {
            handle,
            stdin,
            stdout,
            conflicts: Vec::new(),
        };
        assert_eq!(r.line(), "ready");
        r
    }

    fn line(&mut self) -> String {
        loop {
            let mut s = String::new();
            let n = self.stdout.read_line(&mut s).expect("read responder");
            assert!(n > 0, "responder exited");
            let s = s.trim().to_string();
            if let Some(c) = s.strip_prefix("conflict ") {
                self.conflicts.push(c.to_string());
                continue;
            }
            return s;
        }
    }

    pub fn cmd(&mut self, line: &str) -> String {
        writeln!(self.stdin, "{line}").unwrap();
        self.stdin.flush().unwrap();
        self.line()
    }

    pub fn stats(&mut self) -> serde_json::Value {
        serde_json::from_str(&self.cmd("stats")).unwrap()
    }

    pub fn cpu(&mut self) -> Duration {
        let v: serde_json::Value = serde_json::from_str(&self.cmd("cpu")).unwrap();
        Duration::from_micros(v["cpu_us"].as_u64().unwrap())
    }
}

/// `arping -c <count>` from `client` to `ip`; returns (exit ok, stdout lowercased).
pub fn arping(client: &Host, ip: &str, extra: &[&str]) -> (bool, String) {
    let mut cmd = client.command("arping");
    cmd.args(["-i", &client.iface, "-w", "2"])
        .args(extra)
        .arg(ip);
    let out = cmd.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_lowercase(),
    )
}

/// The MAC in `ip neigh show <ip>` on `host`, if any.
pub fn neigh_mac(host: &Host, ip: &str) -> Option<String> {
    let out = host.run(&["ip", "neigh", "show", ip]).ok()?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let mut words = text.split_whitespace();
    while let Some(w) = words.next() {
        if w == "lladdr" {
            return words.next().map(str::to_string);
        }
    }
    None
}

/// Polls `f` until it returns true or `limit` passes (no timing assertion:
/// the limit only bounds a hung test).
pub fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    f()
}

pub fn mac(host: &Host) -> String {
    host.mac.to_string()
}
