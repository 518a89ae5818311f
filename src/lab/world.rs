//! The lab's world: a LAN of network namespaces, the embedded API server,
//! Node objects, controller and speaker processes (this same binary, run
//! inside node namespaces), kube-proxy stand-ins and a client.
//!
//! `l2lb lab` and the end-to-end tests both drive a [`Lab`]. Dropping it
//! kills every process it started and removes every namespace. It never
//! touches the host's own network: all addresses live inside the lab's
//! namespaces.

use super::apiserver::{ApiServer, client_for};
use super::net::{ChildHandle, Host, Lan, LanOptions, NetError};
use crate::api::{INSTALL_NAMESPACE, STATUS_SERVICE_NAME_LABEL, ServiceL2Status};
use k8s_openapi::api::core::v1::{Node, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::discovery::ApiResource;
use kube::{Client, ResourceExt};
use serde::Deserialize;
use serde_json::json;
use std::fs::File;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Port the embedded API server listens on inside the LAN.
pub const API_PORT: u16 = 6443;
/// Port of each node's stand-in backend (what kube-proxy would DNAT to).
pub const BACKEND_PORT: u16 = 8080;

/// Errors building or driving the lab. Each says what to do.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// The lab needs root for namespaces, veths and raw sockets.
    #[error("the lab needs root (network namespaces, raw sockets): run it with sudo")]
    NotRoot,
    /// A tool the lab runs is not installed.
    #[error("missing tools: {0}; install them with `sudo bash scripts/install-deps.sh`")]
    MissingTools(String),
    /// Building or changing the network failed.
    #[error(transparent)]
    Net(#[from] NetError),
    /// Talking to the embedded API server failed.
    #[error("API request failed: {0}")]
    Api(#[from] kube::Error),
    /// A client for the embedded API server could not be built.
    #[error(transparent)]
    Client(#[from] crate::cluster::ClusterError),
    /// Local I/O failed (logs, listeners, processes).
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// Why it failed.
        source: std::io::Error,
    },
    /// Something did not happen in time.
    #[error("timed out after {after:?} waiting for {what}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long we waited.
        after: Duration,
    },
    /// A manifest could not be read or applied.
    #[error("{0}")]
    Manifest(String),
    /// A process's metrics endpoint lacks a metric.
    #[error("{node}'s speaker exposes no metric {metric}")]
    NoMetric {
        /// The node.
        node: String,
        /// The metric.
        metric: String,
    },
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> LabError {
    let context = context.into();
    move |source| LabError::Io { context, source }
}

/// Checks what the lab needs before building anything.
pub fn preflight() -> Result<(), LabError> {
    // The effective uid from /proc keeps this module free of unsafe calls.
    let uid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(str::to_string))
        })
        .unwrap_or_default();
    if uid != "0" {
        return Err(LabError::NotRoot);
    }
    let missing: Vec<&str> = ["ip", "arping", "curl", "iptables", "ip6tables", "ndisc6"]
        .into_iter()
        .filter(|tool| {
            !Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
        .collect();
    if !missing.is_empty() {
        return Err(LabError::MissingTools(missing.join(", ")));
    }
    Ok(())
}

/// Name of the fast-path key file in the lab's log directory.
const FASTPATH_KEY_FILE: &str = "fastpath-keys";

/// Writes a fast-path key file with one fresh 32-byte random secret (hex),
/// readable by root only, as `deploy/` asks operators to generate one.
/// Writes `text` to the key file at `path` the way kubelet updates a
/// mounted Secret: a new file renamed over the old, never half written.
fn write_fastpath_key(path: &Path, text: &str) -> Result<(), LabError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("new");
    let mut f = File::options()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io(format!("cannot write {}", tmp.display())))?;
    f.write_all(text.as_bytes())
        .map_err(io(format!("cannot write {}", tmp.display())))?;
    std::fs::rename(&tmp, path).map_err(io(format!("cannot write {}", path.display())))
}

/// Plays kubelet's part for the fast-path Secret: once it exists, copies
/// its key file to `path` (and again whenever it changes), until `stop`.
async fn mount_fastpath_secret(client: Client, path: PathBuf, stop: CancellationToken) {
    let secrets: Api<Secret> = Api::namespaced(client, INSTALL_NAMESPACE);
    let mut written: Option<Vec<u8>> = None;
    loop {
        let data = secrets
            .get_opt(crate::api::FASTPATH_SECRET)
            .await
            .ok()
            .flatten()
            .and_then(|s| s.data)
            .and_then(|mut d| d.remove(crate::fastpath::keyfile::SECRET_KEY))
            .map(|b| b.0);
        if let Some(bytes) = data.filter(|b| written.as_ref() != Some(b)) {
            let text = String::from_utf8_lossy(&bytes).into_owned();
            match write_fastpath_key(&path, &text) {
                Ok(()) => written = Some(bytes),
                Err(e) => tracing::warn!(error = %e, "cannot mount the fast-path Secret"),
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}

/// How to build the lab.
#[derive(Debug, Clone)]
pub struct LabOptions {
    /// Tag in namespace names, so runs are recognisable and unique.
    pub tag: String,
    /// Number of nodes (each runs a speaker).
    pub nodes: usize,
    /// Number of controller replicas (run in the first nodes' namespaces).
    pub controllers: usize,
    /// Speakers' membership lease duration.
    pub lease_duration: Duration,
    /// The l2lb binary to run in the namespaces.
    pub binary: PathBuf,
    /// Where process logs go.
    pub log_dir: PathBuf,
    /// Run the LAN fast path: the lab creates the `l2lb-fastpath` Secret
    /// with a fresh random key (as an operator may before installing) and
    /// writes it to the key file every speaker reads. Off: speakers rely
    /// on their Leases alone, and controllers create no Secret.
    pub fastpath: bool,
    /// With `fastpath`: leave the Secret to the controllers to generate,
    /// as on a fresh install, and copy it to the key file once it exists
    /// (kubelet's part); speakers start without a key and pick it up.
    pub fastpath_key_from_controller: bool,
}

impl LabOptions {
    /// Three nodes, two controllers, 4 s leases, this executable.
    pub fn new(tag: &str) -> Result<Self, LabError> {
        let binary = std::env::current_exe().map_err(io("cannot find the l2lb binary"))?;
        Ok(Self {
            tag: tag.to_string(),
            nodes: 3,
            controllers: 2,
            lease_duration: Duration::from_secs(4),
            binary,
            log_dir: std::env::temp_dir().join(format!("l2lb-{tag}-{}", std::process::id())),
            fastpath: true,
            fastpath_key_from_controller: false,
        })
    }
}

/// A running lab.
pub struct Lab {
    /// Options it was built with.
    pub opts: LabOptions,
    /// The API server state (request counts, faults).
    pub api: ApiServer,
    /// In-process client (over loopback).
    pub client: Client,
    /// Loopback URL of the API server, for `kubectl --server`.
    pub local_url: url::Url,
    /// URL of the API server as node namespaces reach it.
    pub lan_url: url::Url,
    /// Stops the API server's listeners.
    stop: CancellationToken,
    /// Speaker per node, when running.
    speakers: Vec<Option<ChildHandle>>,
    /// Controller replicas, when running.
    controllers: Vec<Option<ChildHandle>>,
    /// Backends and other helpers that live as long as the lab.
    helpers: Vec<ChildHandle>,
    /// The network; dropped last so processes die before their namespaces.
    pub lan: Lan,
}

impl Lab {
    /// Builds the LAN, starts the API server, registers the nodes, and
    /// starts backends, controllers and speakers.
    pub async fn start(opts: LabOptions) -> Result<Lab, LabError> {
        std::fs::create_dir_all(&opts.log_dir)
            .map_err(io(format!("cannot create {}", opts.log_dir.display())))?;
        let key_path = opts.log_dir.join(FASTPATH_KEY_FILE);
        let _ = std::fs::remove_file(&key_path);
        let own_key = opts.fastpath && !opts.fastpath_key_from_controller;
        let key_text = if own_key {
            let text = crate::fastpath::keyfile::generate(&ring::rand::SystemRandom::new())
                .map_err(|_| std::io::Error::other("the system random source failed"))
                .map_err(io("cannot generate the fast-path key"))?;
            write_fastpath_key(&key_path, &text)?;
            Some(text)
        } else {
            None
        };
        super::net::cleanup_stale();
        let lan = Lan::new(
            &opts.tag,
            LanOptions {
                nodes: opts.nodes,
                clients: 1,
                ipv6: true,
            },
        )?;

        let api = ApiServer::with_l2lb_crds();
        let (local_url, stop) = api
            .start_local()
            .await
            .map_err(io("cannot start the API server"))?;
        let listener = lan.listen_tcp(API_PORT)?;
        listener.set_nonblocking(true).map_err(io("listener"))?;
        let listener = tokio::net::TcpListener::from_std(listener).map_err(io("listener"))?;
        tokio::spawn({
            let (api, stop) = (api.clone(), stop.clone());
            async move {
                if let Err(e) = api.serve(listener, stop).await {
                    tracing::error!(error = %e, "API server on the LAN stopped");
                }
            }
        });
        let lan_url: url::Url = format!("http://{}:{API_PORT}", lan.gateway_ipv4())
            .parse()
            .map_err(|e| LabError::Manifest(format!("bad URL: {e}")))?;
        let client = client_for(&local_url)?;
        if let Some(text) = &key_text {
            let secrets: Api<Secret> = Api::namespaced(client.clone(), INSTALL_NAMESPACE);
            secrets
                .create(
                    &PostParams::default(),
                    &crate::api::fastpath_secret(crate::api::FASTPATH_SECRET, text),
                )
                .await?;
        } else if opts.fastpath {
            tokio::spawn(mount_fastpath_secret(
                client.clone(),
                key_path.clone(),
                stop.clone(),
            ));
        }

        let mut lab = Lab {
            speakers: (0..opts.nodes).map(|_| None).collect(),
            controllers: (0..opts.controllers).map(|_| None).collect(),
            helpers: Vec::new(),
            opts,
            api,
            client,
            local_url,
            lan_url,
            stop,
            lan,
        };
        for i in 0..lab.opts.nodes {
            lab.register_node(i).await?;
            let node = lab.node(i).clone();
            // A real cluster needs these so the kernel never answers for
            // addresses kube-proxy binds (kube-proxy strictARP).
            node.sysctl("net.ipv4.conf.all.arp_ignore", "1")?;
            node.sysctl("net.ipv4.conf.all.arp_announce", "2")?;
            let mut backend = node.command(&lab.opts.binary.display().to_string());
            backend.args([
                "lab-http",
                "--name",
                &node.name,
                "--listen",
                &format!("[::]:{BACKEND_PORT}"),
            ]);
            let log = lab.log_file(&format!("{}-backend", node.name))?;
            backend.stdout(Stdio::null()).stderr(log);
            lab.helpers.push(node.spawn(&lab.lan, backend)?);
        }
        for i in 0..lab.opts.controllers {
            lab.start_controller(i)?;
        }
        for i in 0..lab.opts.nodes {
            lab.start_speaker(i)?;
        }
        Ok(lab)
    }

    /// The node host `i`.
    pub fn node(&self, i: usize) -> &Host {
        &self.lan.nodes()[i]
    }

    /// The client host.
    pub fn client_host(&self) -> &Host {
        &self.lan.clients()[0]
    }

    /// What a LAN client sees of `vip` from now on: every frame at the
    /// client, captured into `<log_dir>/<name>.pcap`, and an ARP request
    /// every 10 ms whose answers are the probe's samples.
    pub fn watch_from_client(
        &self,
        vip: IpAddr,
        name: &str,
    ) -> Result<(super::net::Capture, super::probe::Probe), LabError> {
        let c = self.client_host();
        let capture = self.capture_client(name)?;
        let interval = Duration::from_millis(10);
        let probe = super::probe::Probe::arp(c.command("arping"), &c.iface, vip, interval)
            .map_err(|source| LabError::Io {
                context: format!("starting arping for {vip}"),
                source,
            })?;
        Ok((capture, probe))
    }

    /// Every frame the client sees from now on, captured into
    /// `<log_dir>/<name>.pcap`.
    pub fn capture_client(&self, name: &str) -> Result<super::net::Capture, LabError> {
        let pcap = self.opts.log_dir.join(format!("{name}.pcap"));
        Ok(self.client_host().capture(&self.lan, &pcap)?)
    }

    /// The client's ARP requests for `vip` in a capture taken at the client
    /// ([`Lab::capture_client`]) and the MACs that answered each. Double
    /// answers can only be counted here, on the wire: a probe's output
    /// holds one line per reply and cannot say which request it answers.
    pub fn wire_answers(
        &self,
        pcap: &Path,
        vip: Ipv4Addr,
    ) -> Result<super::probe::WireAnswers, LabError> {
        let mac = self.client_host().mac.to_string();
        Ok(super::probe::wire_answers(pcap, vip, &mac)?)
    }

    /// Index of the node named `name`.
    pub fn node_index(&self, name: &str) -> Option<usize> {
        self.lan.nodes().iter().position(|h| h.name == name)
    }

    fn log_file(&self, name: &str) -> Result<File, LabError> {
        let path = self.opts.log_dir.join(format!("{name}.log"));
        File::options()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io(format!("cannot open {}", path.display())))
    }

    /// Path of a process log.
    pub fn log_path(&self, name: &str) -> PathBuf {
        self.opts.log_dir.join(format!("{name}.log"))
    }

    async fn register_node(&self, i: usize) -> Result<(), LabError> {
        let host = self.node(i);
        let mut addresses = vec![json!({ "type": "InternalIP", "address": host.ipv4.to_string() })];
        if let Some(v6) = host.ipv6 {
            addresses.push(json!({ "type": "InternalIP", "address": v6.to_string() }));
        }
        let node: Node = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": { "name": host.name, "labels": { "kubernetes.io/hostname": host.name } },
        }))
        .map_err(|e| LabError::Manifest(e.to_string()))?;
        let nodes: Api<Node> = Api::all(self.client.clone());
        nodes.create(&PostParams::default(), &node).await?;
        let status = json!({ "status": {
            "addresses": addresses,
            "conditions": [{ "type": "Ready", "status": "True", "reason": "KubeletReady", "message": "lab node" }],
        }});
        nodes
            .patch_status(&host.name, &PatchParams::default(), &Patch::Merge(&status))
            .await?;
        Ok(())
    }

    fn l2lb(&self, host: &Host) -> Command {
        self.l2lb_via(host, &self.lan_url)
    }

    /// The l2lb binary in `host`'s namespace, talking to the API server at `server`.
    fn l2lb_via(&self, host: &Host, server: &url::Url) -> Command {
        let mut cmd = host.command(&self.opts.binary.display().to_string());
        cmd.env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
        );
        cmd.arg("--server").arg(server.as_str());
        cmd
    }

    /// Starts controller replica `i` in node `i`'s namespace.
    pub fn start_controller(&mut self, i: usize) -> Result<(), LabError> {
        let host = self.node(i % self.opts.nodes).clone();
        let mut cmd = self.l2lb(&host);
        cmd.args([
            "controller",
            "--identity",
            &format!("controller-{i}"),
            "--lease-duration",
            "4s",
        ]);
        // On every address, as in a cluster: a scraper on the LAN (the
        // alerts test's Prometheus) reaches it at the node's IP.
        cmd.args(["--metrics-addr", "0.0.0.0:7472"]);
        if !self.opts.fastpath {
            cmd.args(["--fastpath-secret", ""]);
        }
        let log = self.log_file(&format!("controller-{i}"))?;
        cmd.stdout(Stdio::null()).stderr(log);
        self.controllers[i] = Some(host.spawn(&self.lan, cmd)?);
        Ok(())
    }

    /// Starts the speaker of node `i` in its namespace.
    pub fn start_speaker(&mut self, i: usize) -> Result<(), LabError> {
        let server = self.lan_url.clone();
        self.start_speaker_via(i, &server)
    }

    /// Starts the speaker of node `i` talking to the API server through
    /// `server` (for example a [`super::proxy::DelayProxy`] in its namespace).
    pub fn start_speaker_via(&mut self, i: usize, server: &url::Url) -> Result<(), LabError> {
        let host = self.node(i).clone();
        let mut cmd = self.l2lb_via(&host, server);
        let lease = format!("{}ms", self.opts.lease_duration.as_millis());
        cmd.args([
            "speaker",
            "--node-name",
            &host.name,
            "--lease-duration",
            &lease,
        ]);
        if self.opts.fastpath {
            let keys = self.opts.log_dir.join(FASTPATH_KEY_FILE);
            cmd.arg("--fastpath-key-file").arg(keys);
        }
        // No --default-interface: the speaker finds the interface holding
        // the Node's InternalIP, as it does in a cluster.
        // On every address, as the DaemonSet on the host network: a
        // scraper on the LAN reaches it at the node's IP.
        cmd.args(["--metrics-addr", "0.0.0.0:7473"]);
        let log = self.log_file(&format!("{}-speaker", host.name))?;
        cmd.stdout(Stdio::null()).stderr(log);
        self.speakers[i] = Some(host.spawn(&self.lan, cmd)?);
        Ok(())
    }

    /// Sends SIGTERM (graceful hand-over) or SIGKILL (crash) to node `i`'s
    /// speaker and forgets it.
    pub fn stop_speaker(&mut self, i: usize, graceful: bool) {
        if let Some(child) = self.speakers[i].take() {
            child.signal(if graceful {
                libc::SIGTERM
            } else {
                libc::SIGKILL
            });
            child.wait_timeout(Duration::from_secs(5));
        }
    }

    /// Sends `signal` to node `i`'s speaker (e.g. SIGSTOP / SIGCONT to
    /// freeze it) and keeps it; false when it is not running.
    pub fn signal_speaker(&self, i: usize, signal: i32) -> bool {
        match &self.speakers[i] {
            Some(child) => {
                child.signal(signal);
                true
            }
            None => false,
        }
    }

    /// Stops controller replica `i` (SIGTERM or SIGKILL).
    pub fn stop_controller(&mut self, i: usize, graceful: bool) {
        if let Some(child) = self.controllers[i].take() {
            child.signal(if graceful {
                libc::SIGTERM
            } else {
                libc::SIGKILL
            });
            child.wait_timeout(Duration::from_secs(5));
        }
    }

    /// Applies every object in a YAML file through the API (what
    /// `kubectl apply` does for new objects; existing ones are replaced).
    pub async fn apply_file(&self, path: &Path) -> Result<Vec<String>, LabError> {
        let text =
            std::fs::read_to_string(path).map_err(io(format!("cannot read {}", path.display())))?;
        let mut applied = Vec::new();
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let value = serde_json::Value::deserialize(doc)
                .map_err(|e| LabError::Manifest(format!("{}: {e}", path.display())))?;
            if value.is_null() {
                continue;
            }
            applied.push(self.apply(value).await?);
        }
        Ok(applied)
    }

    /// Applies one object given as JSON; returns `kind/name`.
    pub async fn apply(&self, value: serde_json::Value) -> Result<String, LabError> {
        let obj: DynamicObject =
            serde_json::from_value(value.clone()).map_err(|e| LabError::Manifest(e.to_string()))?;
        let types = obj
            .types
            .clone()
            .ok_or_else(|| LabError::Manifest("object without apiVersion/kind".into()))?;
        let (group, version) = types
            .api_version
            .rsplit_once('/')
            .unwrap_or(("", &types.api_version));
        let plural = format!("{}s", types.kind.to_ascii_lowercase())
            .replace("endpointslices", "endpointslices")
            .replace("statuss", "statuses");
        let ar = ApiResource {
            group: group.into(),
            version: version.into(),
            api_version: types.api_version.clone(),
            kind: types.kind.clone(),
            plural,
        };
        let ns = obj.namespace().unwrap_or_else(|| "default".into());
        let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), &ns, &ar);
        let name = obj.name_any();
        let patch = PatchParams::apply("l2lb-lab").force();
        api.patch(&name, &patch, &Patch::Apply(&value)).await?;
        Ok(format!("{}/{}", types.kind.to_ascii_lowercase(), name))
    }

    /// Creates a LoadBalancer Service `ns/name` for `app` plus an
    /// EndpointSlice with one ready endpoint on each of `endpoint_nodes`.
    pub async fn create_service(
        &self,
        mut svc: Service,
        endpoint_nodes: &[usize],
    ) -> Result<(), LabError> {
        let ns = svc.namespace().unwrap_or_else(|| "default".into());
        svc.metadata.namespace = Some(ns.clone());
        let name = svc.name_any();
        Api::<Service>::namespaced(self.client.clone(), &ns)
            .create(&PostParams::default(), &svc)
            .await?;
        self.set_endpoints(&ns, &name, endpoint_nodes).await
    }

    /// Replaces the Service's EndpointSlice: one ready endpoint per node given.
    pub async fn set_endpoints(
        &self,
        ns: &str,
        name: &str,
        nodes: &[usize],
    ) -> Result<(), LabError> {
        let endpoints: Vec<serde_json::Value> = nodes
            .iter()
            .map(|&i| {
                let h = self.node(i);
                json!({ "addresses": [h.ipv4.to_string()], "nodeName": h.name, "conditions": { "ready": true, "serving": true } })
            })
            .collect();
        let slice: EndpointSlice = serde_json::from_value(json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": { "name": format!("{name}-lab"), "namespace": ns,
                          "labels": { "kubernetes.io/service-name": name } },
            "addressType": "IPv4",
            "endpoints": endpoints,
            "ports": [{ "name": "http", "port": BACKEND_PORT, "protocol": "TCP" }],
        }))
        .map_err(|e| LabError::Manifest(e.to_string()))?;
        let api: Api<EndpointSlice> = Api::namespaced(self.client.clone(), ns);
        let params = PatchParams::apply("l2lb-lab").force();
        api.patch(&format!("{name}-lab"), &params, &Patch::Apply(&slice))
            .await?;
        Ok(())
    }

    /// Waits until the Service has `count` published addresses.
    pub async fn wait_vips(
        &self,
        ns: &str,
        name: &str,
        count: usize,
        timeout: Duration,
    ) -> Result<Vec<IpAddr>, LabError> {
        let api: Api<Service> = Api::namespaced(self.client.clone(), ns);
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(svc) = api.get(name).await {
                let ips = crate::model::ingress_ips(&svc);
                if ips.len() >= count {
                    return Ok(ips);
                }
            }
            if Instant::now() > deadline {
                return Err(LabError::Timeout {
                    what: format!("an address for Service {ns}/{name}"),
                    after: timeout,
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Makes every node deliver `vip:80` to its local backend, as
    /// kube-proxy's rules would.
    pub fn route_vip(&self, vip: IpAddr, port: u16) -> Result<(), LabError> {
        for host in self.lan.nodes() {
            let (dst, to) = match vip {
                IpAddr::V4(_) => (vip.to_string(), format!("{}:{BACKEND_PORT}", host.ipv4)),
                IpAddr::V6(_) => {
                    let Some(v6) = host.ipv6 else { continue };
                    (vip.to_string(), format!("[{v6}]:{BACKEND_PORT}"))
                }
            };
            let port = port.to_string();
            let args = [
                "-t",
                "nat",
                "-A",
                "PREROUTING",
                "-d",
                &dst,
                "-p",
                "tcp",
                "--dport",
                &port,
                "-j",
                "DNAT",
                "--to-destination",
                &to,
            ];
            if vip.is_ipv4() {
                host.iptables(&args)?;
            } else {
                let out = host.run(&[&["ip6tables"][..], &args[..]].concat())?;
                if !out.status.success() {
                    return Err(LabError::Manifest(format!(
                        "ip6tables on {}: {}",
                        host.name,
                        String::from_utf8_lossy(&out.stderr)
                    )));
                }
            }
        }
        Ok(())
    }

    /// The node announcing `ns/name`, from its ServiceL2Status.
    pub async fn owner(&self, ns: &str, name: &str) -> Option<String> {
        self.owners(ns, name).await.into_iter().next()
    }

    /// Every node holding a ServiceL2Status for `ns/name` (two when a
    /// dual-stack Service's VIPs are elected to different nodes).
    pub async fn owners(&self, ns: &str, name: &str) -> std::collections::BTreeSet<String> {
        let api: Api<ServiceL2Status> = Api::namespaced(self.client.clone(), INSTALL_NAMESPACE);
        let lp = ListParams::default().labels(&format!("{STATUS_SERVICE_NAME_LABEL}={name}"));
        let Ok(list) = api.list(&lp).await else {
            return Default::default();
        };
        list.items
            .into_iter()
            .filter_map(|s| s.status)
            .filter(|s| s.service_namespace == ns)
            .map(|s| s.node)
            .collect()
    }

    /// Waits until `ns/name` is announced by some node (other than `not`).
    pub async fn wait_owner(
        &self,
        ns: &str,
        name: &str,
        not: Option<&str>,
        timeout: Duration,
    ) -> Result<String, LabError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(owner) = self.owner(ns, name).await
                && Some(owner.as_str()) != not
            {
                return Ok(owner);
            }
            if Instant::now() > deadline {
                return Err(LabError::Timeout {
                    what: format!("a node announcing {ns}/{name}"),
                    after: timeout,
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Cordons node `i` (`kubectl cordon`: `spec.unschedulable`), or
    /// uncordons it.
    pub async fn set_cordoned(&self, i: usize, cordoned: bool) -> Result<(), LabError> {
        let nodes: Api<Node> = Api::all(self.client.clone());
        let patch = json!({ "spec": { "unschedulable": cordoned } });
        nodes
            .patch(
                &self.node(i).name,
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await?;
        Ok(())
    }

    /// The value of the counter or gauge `name` (no labels) on node `i`'s
    /// speaker, from its metrics endpoint.
    pub fn speaker_metric(&self, i: usize, name: &str) -> Result<f64, LabError> {
        let out = self
            .node(i)
            .run(&["curl", "-s", "http://127.0.0.1:7473/metrics"])?;
        let text = String::from_utf8_lossy(&out.stdout);
        let prefix = format!("{name} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| LabError::NoMetric {
                node: self.node(i).name.clone(),
                metric: name.to_string(),
            })
    }

    /// MAC of node `i` as `aa:bb:..`.
    pub fn mac_of(&self, i: usize) -> String {
        self.node(i).mac.to_string()
    }

    /// Name of the node with MAC `mac`, if any.
    pub fn node_of_mac(&self, mac: &str) -> Option<String> {
        (0..self.opts.nodes)
            .find(|&i| self.mac_of(i) == mac)
            .map(|i| self.node(i).name.clone())
    }

    /// One `arping` from the client.
    pub fn arping(&self, vip: IpAddr) -> Option<super::probe::ArpAnswer> {
        let c = self.client_host();
        super::probe::arping_once(c.command("arping"), &c.iface, vip)
    }

    /// One neighbour solicitation from the client (`ndisc6`): the MAC that
    /// answered for an IPv6 VIP, or `None`.
    pub fn ndisc6(&self, vip: std::net::Ipv6Addr) -> Option<String> {
        let c = self.client_host();
        let out = c
            .run(&[
                "ndisc6",
                "-1",
                "-r",
                "3",
                "-w",
                "500",
                &vip.to_string(),
                &c.iface,
            ])
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout).to_ascii_lowercase();
        // "Target link-layer address: 02:18:00:00:01:01"
        let line = text.lines().find(|l| l.contains("link-layer address"))?;
        Some(line.rsplit(' ').next()?.trim().to_string())
    }

    /// One `curl http://vip:port/` from the client: the body (the serving
    /// node's name), or `None` on failure.
    pub fn curl(&self, vip: IpAddr, port: u16) -> Option<String> {
        let url = match vip {
            IpAddr::V4(v) => format!("http://{v}:{port}/"),
            IpAddr::V6(v) => format!("http://[{v}]:{port}/"),
        };
        let out = self
            .client_host()
            .command("curl")
            .args(["-s", "-g", "-m", "2", &url])
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// Names of the lab's namespaces (for leak checks).
    pub fn namespaces(&self) -> Vec<String> {
        self.lan
            .nodes()
            .iter()
            .chain(self.lan.clients())
            .map(|h| h.ns.clone())
            .collect()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Processes first (graceful), then the API server, then the LAN.
        for child in self
            .speakers
            .iter_mut()
            .chain(self.controllers.iter_mut())
            .filter_map(Option::take)
        {
            child.signal(libc::SIGTERM);
            child.wait_timeout(Duration::from_secs(2));
        }
        self.helpers.clear();
        self.stop.cancel();
    }
}

/// `l2lb lab-http`: the stand-in backend on each node, answering every
/// request with the node's name so the client sees who served it.
pub fn serve_backend(name: &str, listen: std::net::SocketAddr) -> std::io::Result<()> {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind(listen)?;
    let body = format!("{name}\n");
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        let body = body.clone();
        std::thread::spawn(move || {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
            let mut buf = [0u8; 2048];
            let _ = stream.read(&mut buf);
            let response = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes());
        });
    }
    Ok(())
}
