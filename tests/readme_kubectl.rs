//! The README, run: the commands of "Try it on a cluster" and
//! "Troubleshooting" are read from README.md and run with the machine's
//! kubectl (a client nobody here wrote) against a lab, and what each prints
//! is checked. The nginx Deployment is replaced by what the lab can serve:
//! `kubectl create service loadbalancer` plus the lab's endpoints, whose
//! backends answer with their node's name. A command the README gains that
//! this test does not know fails the test, so the README cannot drift from
//! what works.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use l2lb::lab::kubectl;
use l2lb::lab::net::require_netns;
use l2lb::lab::world::{Lab, LabOptions};

const WAIT: Duration = Duration::from_secs(30);

/// The README's example range, and the lab's range that replaces it.
const README_RANGE: &str = "200.0.0.";
const LAB_RANGE: &str = "198.18.0.";

fn readme() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap()
}

/// The text of the `## title` section, up to the next `## `.
fn section(text: &str, title: &str) -> String {
    let start = text
        .find(&format!("\n## {title}\n"))
        .unwrap_or_else(|| panic!("README has no section {title}"));
    let rest = &text[start + 1..];
    let end = rest[3..].find("\n## ").map_or(rest.len(), |e| e + 3);
    rest[..end].to_string()
}

/// Fenced blocks of one language in a section.
fn blocks(section: &str, lang: &str) -> Vec<String> {
    let fence = format!("```{lang}\n");
    let mut out = Vec::new();
    let mut rest = section;
    while let Some(i) = rest.find(&fence) {
        let body = &rest[i + fence.len()..];
        let end = body.find("```").unwrap_or(body.len());
        out.push(body[..end].to_string());
        rest = &body[end..];
    }
    out
}

/// Shell commands of a section: lines of its `sh` blocks (comments cut)
/// and inline code spans that start with `kubectl ` or `l2lb `.
fn commands(section: &str) -> Vec<String> {
    let mut out: Vec<String> = blocks(section, "sh")
        .iter()
        .flat_map(|b| b.lines().map(str::to_string).collect::<Vec<_>>())
        .map(|l| l.split(" #").next().unwrap_or("").trim().to_string())
        .filter(|l| !l.is_empty())
        .collect();
    for span in section.split('`').skip(1).step_by(2) {
        // A span may wrap across lines.
        let span = span.split_whitespace().collect::<Vec<_>>().join(" ");
        let span = span.as_str();
        if (span.starts_with("kubectl ") || span.starts_with("l2lb "))
            && !out.iter().any(|c| c == span)
        {
            out.push(span.to_string());
        }
    }
    out
}

struct Ctx {
    lab: Lab,
    config: PathBuf,
    dir: PathBuf,
}

impl Ctx {
    async fn kubectl(&self, line: &str) -> kubectl::Output {
        let args: Vec<String> = line
            .split_whitespace()
            .skip(1)
            .map(str::to_string)
            .collect();
        let config = self.config.clone();
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            kubectl::run(&config, &args).unwrap()
        })
        .await
        .unwrap()
    }

    /// Runs `line`, which must succeed; returns its stdout.
    async fn ok(&self, line: &str) -> String {
        let out = self.kubectl(line).await;
        assert!(out.success, "`{line}` failed: {}{}", out.stdout, out.stderr);
        println!("$ {line}\n{}", out.stdout);
        out.stdout
    }

    /// Runs `line` until its stdout contains every one of `want`.
    async fn until(&self, line: &str, want: &[&str]) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let out = self.kubectl(line).await;
            if out.success && want.iter().all(|w| out.stdout.contains(w)) {
                println!("$ {line}\n{}", out.stdout);
                return out.stdout;
            }
            assert!(
                Instant::now() < deadline,
                "`{line}` never printed {want:?}; last: {}{}",
                out.stdout,
                out.stderr
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readme_commands_work_against_the_lab() {
    if !require_netns("readme_commands_work_against_the_lab") {
        return;
    }
    if !kubectl::available() {
        assert!(std::env::var_os("CI").is_none(), "kubectl is missing in CI");
        println!("SKIPPED: readme_commands_work_against_the_lab: kubectl is not installed");
        return;
    }
    let text = readme();
    let try_it = section(&text, "Try it on a cluster");
    let trouble = section(&text, "Troubleshooting");

    let mut opts = LabOptions::new("readme").unwrap();
    opts.binary = PathBuf::from(env!("CARGO_BIN_EXE_l2lb"));
    let lab = Lab::start(opts).await.expect("lab starts");
    let dir = lab.opts.log_dir.clone();
    let config = kubectl::write_kubeconfig(&dir, &lab.local_url).unwrap();
    let ctx = Ctx { lab, config, dir };

    // "Try it on a cluster": the pool manifest, then the commands in order.
    let pool = blocks(&try_it, "yaml")
        .into_iter()
        .find(|b| b.contains("kind: IPAddressPool"))
        .expect("the README shows pool.yaml");
    std::fs::write(
        ctx.dir.join("pool.yaml"),
        pool.replace(README_RANGE, LAB_RANGE),
    )
    .unwrap();
    let mut vip: Option<IpAddr> = None;
    let mut seen = Vec::new();
    for cmd in commands(&try_it) {
        let cmd = cmd.replace(README_RANGE, LAB_RANGE);
        seen.push(cmd.clone());
        match cmd.as_str() {
            "kubectl apply -f pool.yaml" => {
                let path = ctx.dir.join("pool.yaml");
                let out = ctx
                    .ok(&format!("kubectl apply -f {}", path.display()))
                    .await;
                assert!(
                    out.contains("ipaddresspool.l2lb.io/default created"),
                    "{out}"
                );
                assert!(
                    out.contains("l2advertisement.l2lb.io/default created"),
                    "{out}"
                );
            }
            // No pods run in the lab: the Deployment's part is played by the
            // lab's endpoints, added once the Service exists.
            "kubectl create deployment demo --image=nginx --port=80" => {}
            "kubectl expose deployment demo --type=LoadBalancer --port=80" => {
                let out = ctx
                    .ok("kubectl create service loadbalancer demo --tcp=80:80")
                    .await;
                assert!(out.contains("service/demo created"), "{out}");
                ctx.lab
                    .set_endpoints("default", "demo", &[0, 1, 2])
                    .await
                    .unwrap();
                let vips = ctx.lab.wait_vips("default", "demo", 1, WAIT).await.unwrap();
                ctx.lab.route_vip(vips[0], 80).unwrap();
                vip = Some(vips[0]);
            }
            "kubectl get service demo" => {
                let out = ctx
                    .until(
                        &cmd,
                        &[
                            "NAME",
                            "TYPE",
                            "CLUSTER-IP",
                            "EXTERNAL-IP",
                            "PORT(S)",
                            "AGE",
                        ],
                    )
                    .await;
                let row = out.lines().find(|l| l.starts_with("demo ")).unwrap_or("");
                let cells: Vec<&str> = row.split_whitespace().collect();
                assert_eq!(cells.get(1), Some(&"LoadBalancer"), "{out}");
                assert!(
                    cells.get(2).is_some_and(|ip| ip.starts_with("198.19.")),
                    "{out}"
                );
                assert_eq!(cells.get(3), Some(&"198.18.0.100"), "{out}");
                assert!(
                    cells
                        .get(4)
                        .is_some_and(|p| p.starts_with("80:3") && p.ends_with("/TCP")),
                    "{out}"
                );
            }
            "l2lb status" => {
                let owner = ctx
                    .lab
                    .wait_owner("default", "demo", None, WAIT)
                    .await
                    .unwrap();
                let out = std::process::Command::new(env!("CARGO_BIN_EXE_l2lb"))
                    .arg("status")
                    .env("KUBECONFIG", &ctx.config)
                    .output()
                    .unwrap();
                let text = String::from_utf8_lossy(&out.stdout);
                println!("$ l2lb status\n{text}");
                assert!(
                    out.status.success(),
                    "{}",
                    String::from_utf8_lossy(&out.stderr)
                );
                let row = text
                    .lines()
                    .find(|l| l.starts_with("default/demo"))
                    .unwrap_or("");
                assert!(
                    row.contains("198.18.0.100") && row.contains(&owner),
                    "{text}"
                );
            }
            "arping -I eth0 198.18.0.100" => {
                let vip = vip.expect("the Service has a VIP");
                let c = ctx.lab.client_host();
                let owner = ctx
                    .lab
                    .wait_owner("default", "demo", None, WAIT)
                    .await
                    .unwrap();
                let mac = ctx.lab.mac_of(ctx.lab.node_index(&owner).unwrap());
                // The README's command runs until Ctrl-C: three probes here.
                let out = c
                    .command("arping")
                    .args(["-I", &c.iface, "-c", "3", &vip.to_string()])
                    .output()
                    .unwrap();
                let text = String::from_utf8_lossy(&out.stdout).to_lowercase();
                println!("$ {cmd} -c 3\n{text}");
                assert!(
                    text.contains(&mac.to_lowercase()),
                    "the owner {owner} ({mac}) answers: {text}"
                );
            }
            "curl http://198.18.0.100/" => {
                let vip = vip.expect("the Service has a VIP");
                let deadline = Instant::now() + WAIT;
                let body = loop {
                    if let Some(b) = ctx.lab.curl(vip, 80) {
                        break b;
                    }
                    assert!(Instant::now() < deadline, "curl never succeeded");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                };
                // The lab's backends answer with their node's name instead of nginx's page.
                assert!(body.starts_with("node"), "{body}");
            }
            other => panic!("README command not covered by this test: {other}"),
        }
    }
    assert!(
        seen.iter().any(|c| c == "kubectl get service demo"),
        "{seen:?}"
    );

    // Troubleshooting: a Service that cannot get an address, so that the
    // README's event query has something to find.
    ctx.ok("kubectl create service loadbalancer broken --tcp=81:81")
        .await;
    ctx.ok("kubectl annotate service broken l2lb.io/address-pool=no-such-pool")
        .await;
    let owner = ctx
        .lab
        .wait_owner("default", "demo", None, WAIT)
        .await
        .unwrap();
    for cmd in commands(&trouble) {
        match cmd.as_str() {
            "kubectl describe service demo" => {
                let out = ctx.until(&cmd, &["IPAllocated", "nodeAssigned"]).await;
                assert!(
                    out.contains("LoadBalancer Ingress:") && out.contains("198.18.0.100"),
                    "{out}"
                );
                assert!(out.contains("Events:"), "{out}");
            }
            "kubectl get events -A --field-selector reason=AllocationFailed" => {
                let out = ctx
                    .until(&cmd, &["AllocationFailed", "service/broken"])
                    .await;
                assert!(!out.contains("IPAllocated"), "the selector filters: {out}");
            }
            "kubectl get ipaddresspools -n l2lb-system" => {
                let out = ctx
                    .until(
                        &cmd,
                        &[
                            "AUTO ASSIGN",
                            "ADDRESSES",
                            "IPV4 ASSIGNED",
                            "READY",
                            "ADVERTISED",
                            "AGE",
                        ],
                    )
                    .await;
                let row = out
                    .lines()
                    .find(|l| l.starts_with("default "))
                    .unwrap_or("");
                assert!(
                    row.contains("[\"198.18.0.100-198.18.0.120\"]") && row.contains("True"),
                    "{out}"
                );
            }
            "kubectl describe ipaddresspool NAME -n l2lb-system" => {
                let out = ctx
                    .until(&cmd.replace("NAME", "default"), &["Advertised", "Ready"])
                    .await;
                assert!(out.contains("198.18.0.100-198.18.0.120"), "{out}");
            }
            "kubectl get servicel2statuses -n l2lb-system" => {
                let out = ctx
                    .until(&cmd, &["ALLOCATED NODE", "SERVICE NAME", "demo"])
                    .await;
                assert!(out.contains(&owner), "{out}");
            }
            "kubectl get servicel2statuses -n l2lb-system -l l2lb.io/node=node-b" => {
                let out = ctx.until(&cmd.replace("node-b", &owner), &["demo"]).await;
                assert!(!out.contains("broken"), "{out}");
            }
            "kubectl get leases -n l2lb-system" => {
                let out = ctx
                    .until(&cmd, &["HOLDER", "l2lb-controller", "l2lb-speaker-"])
                    .await;
                assert!(
                    out.lines().count() >= 5,
                    "a leader lease and one per speaker: {out}"
                );
            }
            // These read pods, containers and logs, which the lab does not
            // run: its processes' logs are files in the lab's log directory.
            "kubectl -n l2lb-system exec ds/l2lb-speaker -- l2lb status"
            | "kubectl logs -n l2lb-system deploy/l2lb-controller"
            | "kubectl logs -n l2lb-system -l app.kubernetes.io/component=speaker --prefix" => {}
            // Run above with the lab's kubeconfig.
            "l2lb status" => {}
            // LAN-host commands, covered by the first part.
            c if c.starts_with("arping ")
                || c.starts_with("ip neigh")
                || c.starts_with("ndisc6 ") => {}
            other => panic!("README troubleshooting command not covered by this test: {other}"),
        }
    }
}
