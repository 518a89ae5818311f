//! Network-namespace LAN harness: a bridge in its own namespace, N "node" and
//! M "client" namespaces each joined to it by a veth pair, deterministic MACs
//! and addresses from 198.18.0.0/15 (IPv6: ULA fd00:198:18::/64).
//!
//! It owns every namespace and process it creates and tears them all down when
//! the [`Lan`] drops, also while a test panics. It must never create anything
//! in the root namespace, never touch namespaces it did not create (except
//! [`cleanup_stale`], which removes `l2lb-*` leftovers of dead processes), and
//! never use addresses outside 198.18.0.0/15 / fd00:198:18::/64.
//!
//! Address plan (LAN 198.18.0.0/24): gateway (bridge namespace) .1, nodes
//! .11+i, clients .201+i; VIP pools use .100-.120 and fd00:198:18::100+, which
//! are never assigned to hosts.

mod sys;

use std::net::{Ipv4Addr, Ipv6Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::l2::Mac;

/// Errors of the harness; each carries the command or namespace it concerns.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// A command could not be started at all.
    #[error("cannot run {cmd}: {source}")]
    Spawn {
        /// The command line.
        cmd: String,
        /// Why it could not start.
        source: std::io::Error,
    },
    /// A command ran and failed.
    #[error("{cmd} failed ({status}): {stderr}")]
    Command {
        /// The command line.
        cmd: String,
        /// Its exit status.
        status: String,
        /// What it printed on stderr.
        stderr: String,
    },
    /// Entering a namespace or binding a socket inside it failed.
    #[error("in namespace {ns}: {source}")]
    Namespace {
        /// The namespace.
        ns: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The options asked for something the address plan cannot give.
    #[error("invalid LAN options: {0}")]
    Options(String),
    /// A capture did not start or stop in time.
    #[error("capture: {0}")]
    Capture(String),
}

/// What [`Lan::new`] builds.
#[derive(Debug, Clone)]
pub struct LanOptions {
    /// Number of node namespaces (at most 80: node addresses stay below the VIP range).
    pub nodes: usize,
    /// Number of client namespaces (at most 50).
    pub clients: usize,
    /// Also give every host an IPv6 ULA address (DAD disabled).
    pub ipv6: bool,
}

impl Default for LanOptions {
    fn default() -> Self {
        LanOptions {
            nodes: 3,
            clients: 1,
            ipv6: true,
        }
    }
}

/// One namespace on the LAN with its single interface.
#[derive(Debug, Clone)]
pub struct Host {
    /// Role name: `node0`.. or `client0`..
    pub name: String,
    /// The network namespace (under /var/run/netns).
    pub ns: String,
    /// The interface inside `ns` that sits on the LAN.
    pub iface: String,
    /// Deterministic MAC of `iface`: 02:18:00:00:<1 node, 2 client>:<index>.
    pub mac: Mac,
    /// IPv4 address of `iface` (prefix [`Lan::cidr_prefix`]).
    pub ipv4: Ipv4Addr,
    /// IPv6 ULA address of `iface`, when the LAN has IPv6.
    pub ipv6: Option<Ipv6Addr>,
}

/// A process started by [`Host::spawn`]; the [`Lan`] kills it when it drops.
#[derive(Debug)]
pub struct ChildHandle {
    /// Pid of the spawned process (the program itself: `ip netns exec` execs it).
    pid: u32,
    /// Shared with the Lan so the handle can wait for and stop its child.
    children: Arc<Mutex<Vec<Child>>>,
    /// Piped stdin, when the command asked for one.
    stdin: Option<ChildStdin>,
    /// Piped stdout, when the command asked for one.
    stdout: Option<ChildStdout>,
}

impl ChildHandle {
    /// Pid of the process.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Takes the piped stdin (set `Stdio::piped()` on the command first).
    pub fn take_stdin(&mut self) -> Option<ChildStdin> {
        self.stdin.take()
    }

    /// Takes the piped stdout (set `Stdio::piped()` on the command first).
    pub fn take_stdout(&mut self) -> Option<ChildStdout> {
        self.stdout.take()
    }

    /// True while the process has not exited.
    pub fn is_running(&self) -> bool {
        let mut children = lock(&self.children);
        match children.iter_mut().find(|c| c.id() == self.pid) {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Sends `signal` (e.g. `libc::SIGTERM`) to the process.
    pub fn signal(&self, signal: i32) {
        if self.is_running() {
            sys::signal(self.pid as i32, signal);
        }
    }

    /// Waits up to `timeout` for the process to exit; returns its exit code
    /// (None when still running or killed by a signal).
    pub fn wait_timeout(&self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        loop {
            {
                let mut children = lock(&self.children);
                if let Some(child) = children.iter_mut().find(|c| c.id() == self.pid)
                    && let Ok(Some(status)) = child.try_wait()
                {
                    return status.code();
                }
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Counter that makes names unique within this process.
static LAN_COUNTER: AtomicU32 = AtomicU32::new(0);

/// A LAN of namespaces. Dropping it kills every spawned process and deletes
/// every namespace it created.
#[derive(Debug)]
pub struct Lan {
    /// Prefix of every namespace name of this LAN: `l2lb-<tag>-<pid>-<n>`.
    prefix: String,
    /// The namespace holding the bridge and the gateway address.
    bridge_ns: String,
    /// Node hosts.
    nodes: Vec<Host>,
    /// Client hosts.
    clients: Vec<Host>,
    /// Every namespace created so far, deleted on drop (also half-built LANs).
    created: Vec<String>,
    /// Processes spawned in the LAN, killed on drop.
    children: Arc<Mutex<Vec<Child>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding this lock leaves plain data behind; keep going so
    // teardown still works during unwinding.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn cmd_line(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Runs `cmd`, returning its output, or an error with stderr when it fails.
fn run_cmd(mut cmd: Command) -> Result<Output, NetError> {
    let line = cmd_line(&cmd);
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|source| NetError::Spawn {
            cmd: line.clone(),
            source,
        })?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(NetError::Command {
            cmd: line,
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

fn ip(args: &[&str]) -> Result<Output, NetError> {
    let mut c = Command::new("ip");
    c.args(args);
    run_cmd(c)
}

fn ns_exec(ns: &str, args: &[&str]) -> Result<Output, NetError> {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns]).args(args);
    run_cmd(c)
}

impl Lan {
    /// Builds the LAN. `tag` (letters/digits; others become `x`) goes into
    /// every namespace name: `l2lb-<tag>-<pid>-<n>-<role>`.
    pub fn new(tag: &str, opts: LanOptions) -> Result<Lan, NetError> {
        if opts.nodes > 80 || opts.clients > 50 {
            return Err(NetError::Options(format!(
                "{} nodes / {} clients exceed the address plan (80 / 50)",
                opts.nodes, opts.clients
            )));
        }
        let tag: String = tag
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { 'x' })
            .take(20)
            .collect();
        let n = LAN_COUNTER.fetch_add(1, Ordering::SeqCst);
        let prefix = format!("l2lb-{tag}-{}-{n}", std::process::id());
        let bridge_ns = format!("{prefix}-br");
        let mut lan = Lan {
            prefix,
            bridge_ns: bridge_ns.clone(),
            nodes: Vec::new(),
            clients: Vec::new(),
            created: Vec::new(),
            children: Arc::new(Mutex::new(Vec::new())),
        };
        // On any error below, `lan` drops and removes what was created.
        lan.add_ns(&bridge_ns)?;
        let b = bridge_ns.as_str();
        ns_exec(b, &["ip", "link", "set", "lo", "up"])?;
        ns_exec(
            b,
            &[
                "ip",
                "link",
                "add",
                "br0",
                "address",
                "02:18:00:00:00:01",
                "type",
                "bridge",
            ],
        )?;
        // No STP / forwarding delay: ports forward the moment they are up.
        ns_exec(
            b,
            &[
                "ip",
                "link",
                "set",
                "br0",
                "type",
                "bridge",
                "forward_delay",
                "0",
            ],
        )?;
        ns_exec(b, &["ip", "addr", "add", "198.18.0.1/24", "dev", "br0"])?;
        if opts.ipv6 {
            set_sysctls(
                b,
                &[
                    "net.ipv6.conf.all.accept_dad=0",
                    "net.ipv6.conf.default.accept_dad=0",
                ],
            )?;
            ns_exec(
                b,
                &[
                    "ip",
                    "-6",
                    "addr",
                    "add",
                    "fd00:198:18::1/64",
                    "dev",
                    "br0",
                    "nodad",
                ],
            )?;
        }
        ns_exec(b, &["ip", "link", "set", "br0", "up"])?;
        for i in 0..opts.nodes {
            let host = lan.add_host("node", 1, i, 11 + i as u8, opts.ipv6)?;
            lan.nodes.push(host);
        }
        for i in 0..opts.clients {
            let host = lan.add_host("client", 2, i, 201 + i as u8, opts.ipv6)?;
            lan.clients.push(host);
        }
        Ok(lan)
    }

    fn add_ns(&mut self, ns: &str) -> Result<(), NetError> {
        ip(&["netns", "add", ns])?;
        self.created.push(ns.to_string());
        Ok(())
    }

    fn add_host(
        &mut self,
        role: &str,
        kind: u8,
        index: usize,
        host_octet: u8,
        ipv6: bool,
    ) -> Result<Host, NetError> {
        let name = format!("{role}{index}");
        let ns = format!("{}-{name}", self.prefix);
        self.add_ns(&ns)?;
        let mac = Mac([0x02, 0x18, 0x00, 0x00, kind, index as u8]);
        let ipv4 = Ipv4Addr::new(198, 18, 0, host_octet);
        let ipv6_addr =
            ipv6.then(|| Ipv6Addr::new(0xfd00, 0x198, 0x18, 0, 0, 0, 0, host_octet as u16));
        if ipv6 {
            set_sysctls(
                &ns,
                &[
                    "net.ipv6.conf.all.accept_dad=0",
                    "net.ipv6.conf.default.accept_dad=0",
                ],
            )?;
        }
        let host = Host {
            name,
            ns,
            iface: "eth0".to_string(),
            mac,
            ipv4,
            ipv6: ipv6_addr,
        };
        self.wire_host(&host)?;
        Ok(host)
    }

    /// Creates and configures the host's veth pair (the bridge port is
    /// `p<n|c><index>`). Created directly inside the two namespaces: nothing
    /// ever appears in the root namespace, even for an instant.
    fn wire_host(&self, host: &Host) -> Result<(), NetError> {
        let ns = host.ns.as_str();
        let port = self.port_name(host);
        ip(&[
            "link",
            "add",
            &host.iface,
            "netns",
            ns,
            "address",
            &host.mac.to_string(),
            "type",
            "veth",
            "peer",
            "name",
            &port,
            "netns",
            &self.bridge_ns,
        ])?;
        ns_exec(
            &self.bridge_ns,
            &["ip", "link", "set", &port, "master", "br0", "up"],
        )?;
        ns_exec(ns, &["ip", "link", "set", "lo", "up"])?;
        ns_exec(
            ns,
            &[
                "ip",
                "addr",
                "add",
                &format!("{}/24", host.ipv4),
                "dev",
                &host.iface,
            ],
        )?;
        if let Some(v6) = host.ipv6 {
            ns_exec(
                ns,
                &[
                    "ip",
                    "-6",
                    "addr",
                    "add",
                    &format!("{v6}/64"),
                    "dev",
                    &host.iface,
                    "nodad",
                ],
            )?;
        }
        ns_exec(ns, &["ip", "link", "set", &host.iface, "up"])?;
        Ok(())
    }

    fn port_name(&self, host: &Host) -> String {
        let (role, index) = host
            .name
            .split_at(host.name.find(|c: char| c.is_ascii_digit()).unwrap_or(0));
        format!("p{}{index}", &role[..role.len().min(1)])
    }

    /// Drops the host's fast-path frames (EtherType 0x88B5) at its bridge
    /// port: those it sends when `outbound`, those sent to it when
    /// `inbound`, with tc BPF filters (no iptables/ebtables needed). Other
    /// traffic (ARP, IP) passes. Filtering at the bridge port, not in the
    /// host, because a packet socket sees received frames before the
    /// host's own tc ingress hook could drop them.
    pub fn cut_fastpath(&self, host: &Host, outbound: bool, inbound: bool) -> Result<(), NetError> {
        let port = self.port_name(host);
        let b = self.bridge_ns.as_str();
        self.heal_fastpath(host)?;
        ns_exec(b, &["tc", "qdisc", "add", "dev", &port, "clsact"])?;
        // The port's ingress carries what the host sends; its egress what
        // the host receives.
        for (on, hook) in [(outbound, "ingress"), (inbound, "egress")] {
            if on {
                // A one-instruction classic BPF program in direct-action
                // mode returning TC_ACT_SHOT (2): it needs only cls_bpf,
                // where `matchall`/`action drop` need modules many
                // kernels (this CI's included) do not ship.
                ns_exec(
                    b,
                    &[
                        "tc",
                        "filter",
                        "add",
                        "dev",
                        &port,
                        hook,
                        "protocol",
                        "0x88b5",
                        "prio",
                        "1",
                        "bpf",
                        "bytecode",
                        "1,6 0 0 2,",
                        "da",
                    ],
                )?;
            }
        }
        Ok(())
    }

    /// Removes what [`Lan::cut_fastpath`] installed (harmless when nothing is).
    pub fn heal_fastpath(&self, host: &Host) -> Result<(), NetError> {
        let port = self.port_name(host);
        let mut c = Command::new("ip");
        c.args([
            "netns",
            "exec",
            &self.bridge_ns,
            "tc",
            "qdisc",
            "del",
            "dev",
            &port,
            "clsact",
        ]);
        // Fails with "no such qdisc" when nothing was installed; fine.
        let _ = c.output();
        Ok(())
    }

    /// Deletes the host's LAN interface and creates it again with the same
    /// name, MAC and addresses (it gets a new interface index), as a NIC
    /// driver reload or a re-created bond would.
    pub fn recreate_link(&self, host: &Host) -> Result<(), NetError> {
        host.run(&["ip", "link", "del", &host.iface])?;
        self.wire_host(host)
    }
    /// The node hosts, `node0`..
    pub fn nodes(&self) -> &[Host] {
        &self.nodes
    }

    /// The client hosts, `client0`..
    pub fn clients(&self) -> &[Host] {
        &self.clients
    }

    /// Address of the bridge namespace on the LAN (198.18.0.1).
    pub fn gateway_ipv4(&self) -> Ipv4Addr {
        Ipv4Addr::new(198, 18, 0, 1)
    }

    /// IPv6 address of the bridge namespace on the LAN (fd00:198:18::1), when
    /// the LAN has IPv6.
    pub fn gateway_ipv6(&self) -> Ipv6Addr {
        Ipv6Addr::new(0xfd00, 0x198, 0x18, 0, 0, 0, 0, 1)
    }

    /// Prefix length of the LAN (24).
    pub fn cidr_prefix(&self) -> u8 {
        24
    }

    /// Name of the namespace holding the bridge (and the gateway address).
    pub fn bridge_ns(&self) -> &str {
        &self.bridge_ns
    }

    /// Prefix of every namespace name of this LAN.
    pub fn name_prefix(&self) -> &str {
        &self.prefix
    }

    /// A TCP listener bound inside the bridge namespace on the gateway
    /// address, so processes in node namespaces can reach a server run by this
    /// process. Port 0 picks a free port.
    pub fn listen_tcp(&self, port: u16) -> Result<TcpListener, NetError> {
        let gw = self.gateway_ipv4();
        in_namespace(&self.bridge_ns, move || TcpListener::bind((gw, port)))?.map_err(|source| {
            NetError::Namespace {
                ns: self.bridge_ns.clone(),
                source,
            }
        })
    }
}

/// Runs `f` on a fresh thread that first enters namespace `ns`; sockets `f`
/// creates stay in that namespace after the thread ends.
pub fn in_namespace<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, NetError> {
    let ns_owned = ns.to_string();
    let handle = std::thread::spawn(move || -> std::io::Result<T> {
        sys::enter_netns(&ns_owned)?;
        Ok(f())
    });
    match handle.join() {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(source)) => Err(NetError::Namespace {
            ns: ns.to_string(),
            source,
        }),
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

fn set_sysctls(ns: &str, kvs: &[&str]) -> Result<(), NetError> {
    let mut args = vec!["sysctl", "-q", "-w"];
    args.extend_from_slice(kvs);
    ns_exec(ns, &args).map(|_| ())
}

/// Kills every process inside `ns` (spawned ones and their descendants).
fn kill_ns_pids(ns: &str) {
    for _ in 0..50 {
        let Ok(out) = Command::new("ip")
            .args(["netns", "pids", ns])
            .stderr(Stdio::null())
            .output()
        else {
            return;
        };
        let pids: Vec<i32> = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect();
        if pids.is_empty() {
            return;
        }
        for pid in pids {
            sys::signal(pid, libc::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        {
            let mut children = lock(&self.children);
            for child in children.iter_mut() {
                let _ = child.kill();
                let _ = child.wait();
            }
            children.clear();
        }
        for ns in self.created.iter().rev() {
            kill_ns_pids(ns);
            let _ = Command::new("ip")
                .args(["netns", "del", ns])
                .stderr(Stdio::null())
                .status();
        }
    }
}

impl Host {
    /// `ip netns exec <ns> <program>`; add arguments with `.arg()`.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns, program]);
        c
    }

    /// Runs `argv` in the namespace; the error includes stderr.
    pub fn run(&self, argv: &[&str]) -> Result<Output, NetError> {
        let (program, rest) = argv
            .split_first()
            .ok_or_else(|| NetError::Options("empty argv".to_string()))?;
        let mut c = self.command(program);
        c.args(rest);
        run_cmd(c)
    }

    /// Starts a long-lived process (build it with [`Host::command`]); `lan`
    /// kills it when it drops.
    pub fn spawn(&self, lan: &Lan, mut cmd: Command) -> Result<ChildHandle, NetError> {
        let line = cmd_line(&cmd);
        let mut child = cmd
            .spawn()
            .map_err(|source| NetError::Spawn { cmd: line, source })?;
        let handle = ChildHandle {
            pid: child.id(),
            children: lan.children.clone(),
            stdin: child.stdin.take(),
            stdout: child.stdout.take(),
        };
        lock(&lan.children).push(child);
        Ok(handle)
    }

    /// Sets the LAN interface down.
    pub fn link_down(&self) -> Result<(), NetError> {
        self.run(&["ip", "link", "set", &self.iface, "down"])
            .map(|_| ())
    }

    /// Sets the LAN interface up.
    pub fn link_up(&self) -> Result<(), NetError> {
        self.run(&["ip", "link", "set", &self.iface, "up"])
            .map(|_| ())
    }

    /// Writes one sysctl inside the namespace (e.g. `net.ipv4.conf.all.arp_ignore`).
    pub fn sysctl(&self, key: &str, value: &str) -> Result<(), NetError> {
        set_sysctls(&self.ns, &[&format!("{key}={value}")])
    }

    /// Runs `iptables <args>` inside the namespace.
    pub fn iptables(&self, args: &[&str]) -> Result<(), NetError> {
        let mut argv = vec!["iptables"];
        argv.extend_from_slice(args);
        self.run(&argv).map(|_| ())
    }

    /// Starts a tshark capture on this host's interface into `path` (pcap);
    /// returns once tshark is capturing.
    pub fn capture(&self, lan: &Lan, path: &Path) -> Result<Capture, NetError> {
        let _ = std::fs::remove_file(path);
        let mut cmd = self.command("tshark");
        cmd.args(["-q", "-F", "pcap", "-i", &self.iface, "-w"])
            .arg(path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = self.spawn(lan, cmd)?;
        // tshark writes the pcap header once the capture is running.
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::fs::metadata(path).map(|m| m.len()).unwrap_or(0) < 24 {
            if Instant::now() > deadline || !child.is_running() {
                return Err(NetError::Capture(format!(
                    "tshark did not start capturing on {} in {}",
                    self.iface, self.ns
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // The header can precede the live capture by a little.
        std::thread::sleep(Duration::from_millis(200));
        Ok(Capture {
            child,
            path: path.to_path_buf(),
        })
    }
}

/// A running tshark capture (see [`Host::capture`]).
#[derive(Debug)]
pub struct Capture {
    /// The tshark process.
    child: ChildHandle,
    /// The pcap file it writes.
    path: PathBuf,
}

impl Capture {
    /// Stops tshark cleanly (SIGINT, so the file is complete) and returns the path.
    pub fn stop(self) -> Result<PathBuf, NetError> {
        // Let in-flight frames reach the file before stopping.
        std::thread::sleep(Duration::from_millis(300));
        self.child.signal(libc::SIGINT);
        if self.child.wait_timeout(Duration::from_secs(10)).is_none() && self.child.is_running() {
            self.child.signal(libc::SIGKILL);
            return Err(NetError::Capture(
                "tshark did not stop on SIGINT".to_string(),
            ));
        }
        Ok(self.path)
    }

    /// Decodes `pcap` with tshark: one line per frame matching `display_filter`
    /// (e.g. `"arp"`), with the given `-T fields` fields, tab-separated.
    pub fn decode(pcap: &Path, display_filter: &str, fields: &[&str]) -> Result<String, NetError> {
        let mut c = Command::new("tshark");
        c.arg("-r")
            .arg(pcap)
            .args(["-Y", display_filter, "-T", "fields"]);
        for f in fields {
            c.args(["-e", f]);
        }
        Ok(String::from_utf8_lossy(&run_cmd(c)?.stdout).into_owned())
    }

    /// Expert-info entries of severity warning or error (malformed frames,
    /// bad checksums) in `pcap`; empty when tshark found none.
    pub fn expert_problems(pcap: &Path) -> Result<Vec<String>, NetError> {
        let mut c = Command::new("tshark");
        c.arg("-r")
            .arg(pcap)
            .args([
                "-o",
                "icmpv6.checksum:TRUE",
                "-Y",
                "_ws.expert.severity >= 0x00600000 || _ws.malformed",
            ])
            .args([
                "-T",
                "fields",
                "-e",
                "frame.number",
                "-e",
                "_ws.expert.message",
            ]);
        let out = run_cmd(c)?;
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(str::to_string)
            .collect())
    }
}

/// CPU time (user + system) this process has used so far: how the netns
/// tests and `bench arp` check that an idle responder does not spin.
pub fn process_cpu_time() -> Duration {
    Duration::from_micros(sys::process_cpu_micros())
}

/// Checks that network namespaces can be created here (root, `ip` present).
pub fn netns_available() -> Result<(), String> {
    if sys::euid() != 0 {
        return Err("not root (network namespaces need CAP_SYS_ADMIN)".to_string());
    }
    let probe = format!(
        "l2lb-probe-{}-{}",
        std::process::id(),
        LAN_COUNTER.fetch_add(1, Ordering::SeqCst)
    );
    ip(&["netns", "add", &probe]).map_err(|e| e.to_string())?;
    let _ = ip(&["netns", "del", &probe]);
    Ok(())
}

/// For tests: true when netns works. Otherwise prints "SKIPPED: <test>: <why>"
/// and returns false, or panics with the reason when `L2LB_REQUIRE_NETNS=1`.
pub fn require_netns(test: &str) -> bool {
    match netns_available() {
        Ok(()) => true,
        Err(why) => {
            if std::env::var("L2LB_REQUIRE_NETNS").is_ok_and(|v| v == "1") {
                panic!("{test}: L2LB_REQUIRE_NETNS=1 but netns is unavailable: {why}");
            }
            println!("SKIPPED: {test}: {why}");
            false
        }
    }
}

/// Deletes namespaces named `l2lb-<tag>-<pid>-...` whose pid is no longer
/// alive (leftovers of crashed runs); returns how many were deleted.
pub fn cleanup_stale() -> usize {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return 0;
    };
    let mut deleted = 0;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let parts: Vec<&str> = name.split('-').collect();
        if parts.len() < 4 || parts[0] != "l2lb" {
            continue;
        }
        let Ok(pid) = parts[2].parse::<i32>() else {
            continue;
        };
        if pid > 0 && !sys::pid_alive(pid) {
            kill_ns_pids(name);
            if ip(&["netns", "del", name]).is_ok() {
                deleted += 1;
            }
        }
    }
    deleted
}
