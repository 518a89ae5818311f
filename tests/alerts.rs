//! The alerts of `deploy/monitoring/rules.yaml`, checked three ways:
//! `promtool check rules`, promtool's unit tests
//! (`tests/monitoring/rules_test.yaml`: a firing and a quiet case per
//! alert), and a real `prometheus` scraping the lab's controller and
//! speakers, which must see every metric the rules use and raise the
//! no-owner alert when a VIP's only eligible speaker stops.
//!
//! promtool and prometheus come from Debian's `prometheus` package
//! (scripts/install-deps.sh). Without them the tests say SKIPPED, unless
//! L2LB_REQUIRE_NETNS=1 (CI), where a missing tool is a failure.

mod fixtures;

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use l2lb::lab::net::{Host, require_netns};
use l2lb::lab::world::{Lab, LabOptions};
use serde_json::{Value, json};

/// Liveness bound for every wait; nothing here measures speed.
const WAIT: Duration = Duration::from_secs(120);

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn rules_path() -> PathBuf {
    root().join("deploy/monitoring/rules.yaml")
}

fn yaml(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap();
    serde_yaml::from_str(&text).unwrap()
}

/// The alerting rules of rules.yaml: (name, expression).
fn alerts() -> Vec<(String, String)> {
    let rules = yaml(&rules_path());
    rules["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap().iter())
        .filter_map(|r| {
            let name = r["alert"].as_str()?;
            Some((name.to_string(), r["expr"].as_str().unwrap().to_string()))
        })
        .collect()
}

/// Every metric name the rules' expressions use: `l2lb_*` and `up`.
fn metric_names() -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (_, expr) in alerts() {
        let mut rest = expr.as_str();
        while let Some(at) = rest.find("l2lb_") {
            let name: String = rest[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            rest = &rest[at + name.len()..];
            names.insert(name);
        }
        if expr.contains("up{") {
            names.insert("up".to_string());
        }
    }
    names
}

/// Whether `tool` runs here. Missing: fails under L2LB_REQUIRE_NETNS=1,
/// else prints why `test` is skipped.
fn have_tool(tool: &str, test: &str) -> bool {
    let found = Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        if std::env::var("L2LB_REQUIRE_NETNS").is_ok_and(|v| v == "1") {
            panic!("{test}: L2LB_REQUIRE_NETNS=1 but {tool} is missing (scripts/install-deps.sh)");
        }
        println!("SKIPPED: {test}: {tool} missing; run scripts/install-deps.sh");
    }
    found
}

fn promtool(args: &[&str]) -> std::process::Output {
    Command::new("promtool")
        .args(args)
        .current_dir(root())
        .output()
        .unwrap()
}

#[test]
fn promtool_accepts_the_rules() {
    if !have_tool("promtool", "promtool_accepts_the_rules") {
        return;
    }
    let out = promtool(&["check", "rules", "deploy/monitoring/rules.yaml"]);
    assert!(
        out.status.success(),
        "promtool check rules:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn promtool_unit_tests_of_the_alerts_pass() {
    if !have_tool("promtool", "promtool_unit_tests_of_the_alerts_pass") {
        return;
    }
    let out = promtool(&["test", "rules", "tests/monitoring/rules_test.yaml"]);
    assert!(
        out.status.success(),
        "promtool test rules:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Needs no promtool: reads the unit tests, so an alert added without its
/// tests fails here even where promtool is missing.
#[test]
fn every_alert_has_a_firing_and_a_quiet_unit_test() {
    let tests = yaml(&root().join("tests/monitoring/rules_test.yaml"));
    assert_eq!(
        tests["rule_files"],
        json!(["../../deploy/monitoring/rules.yaml"]),
        "the unit tests must load the shipped rules"
    );
    let cases: Vec<(String, bool)> = tests["tests"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|t| t["alert_rule_test"].as_array().into_iter().flatten())
        .map(|c| {
            let fires = c["exp_alerts"].as_array().is_some_and(|a| !a.is_empty());
            (c["alertname"].as_str().unwrap().to_string(), fires)
        })
        .collect();
    let all = alerts();
    assert!(all.len() >= 7, "alerts: {all:?}");
    for (alert, _) in all {
        for fires in [true, false] {
            assert!(
                cases.contains(&(alert.clone(), fires)),
                "{alert} has no unit test where it {}",
                if fires { "fires" } else { "stays quiet" }
            );
        }
    }
}

/// A Prometheus in the client's namespace, scraping the lab over the LAN
/// with the shipped rules. The Lab kills it when it drops.
struct Prometheus {
    /// Where queries run (`curl` against its loopback listener).
    host: Host,
}

impl Prometheus {
    fn start(lab: &Lab) -> Self {
        let dir = lab.opts.log_dir.join("prometheus");
        std::fs::create_dir_all(&dir).unwrap();
        let target = |i: usize, port: u16| format!("{}:{port}", lab.node(i).ipv4);
        let speakers: Vec<String> = (0..lab.opts.nodes).map(|i| target(i, 7473)).collect();
        let controllers: Vec<String> = (0..lab.opts.controllers)
            .map(|i| target(i % lab.opts.nodes, 7472))
            .collect();
        // The jobs the ServiceMonitors would create (tests/deploy.rs checks
        // that they are the ones the rules select).
        let config = json!({
            "global": { "scrape_interval": "1s", "evaluation_interval": "1s" },
            "rule_files": [rules_path()],
            "scrape_configs": [
                { "job_name": "l2lb-controller-metrics",
                  "static_configs": [{ "targets": controllers }] },
                { "job_name": "l2lb-speaker-metrics",
                  "static_configs": [{ "targets": speakers }] },
            ],
        });
        let config_path = dir.join("prometheus.yml");
        std::fs::write(&config_path, serde_yaml::to_string(&config).unwrap()).unwrap();
        let host = lab.client_host().clone();
        let mut cmd = host.command("prometheus");
        cmd.arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            // Loopback of the client namespace: no clash with a Prometheus
            // the machine itself may run on :9090.
            .arg("--web.listen-address=127.0.0.1:9090");
        let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
        cmd.stdout(Stdio::null()).stderr(log);
        host.spawn(&lab.lan, cmd).expect("prometheus starts");
        Self { host }
    }

    /// `data` of API call `path` (with `query` URL-encoded, if any), or
    /// None while Prometheus does not answer.
    fn api(&self, path: &str, query: Option<&str>) -> Option<Value> {
        let mut curl = self.host.command("curl");
        curl.args(["-sf", "--max-time", "5"]);
        if let Some(q) = query {
            curl.arg("--data-urlencode").arg(format!("query={q}"));
        }
        let out = curl
            .arg(format!("http://127.0.0.1:9090/api/v1/{path}"))
            .output()
            .ok()?;
        if !out.status.success() {
            return None;
        }
        let v: Value = serde_json::from_slice(&out.stdout).ok()?;
        assert_eq!(v["status"], "success", "{path} {query:?}: {v}");
        Some(v["data"].clone())
    }

    /// The result vector of instant query `q`, or None while Prometheus
    /// does not answer.
    fn query(&self, q: &str) -> Option<Vec<Value>> {
        self.api("query", Some(q))?["result"].as_array().cloned()
    }

    /// Names of the alerting rules Prometheus has loaded.
    fn alert_names(&self) -> BTreeSet<String> {
        let data = self.api("rules", None).expect("the rules API answers");
        data["groups"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|g| g["rules"].as_array().unwrap().iter())
            .filter(|r| r["type"] == "alerting")
            .map(|r| r["name"].as_str().unwrap().to_string())
            .collect()
    }

    /// Polls `q` until `done` holds for its result; panics with the last
    /// result after [`WAIT`].
    async fn wait(&self, what: &str, q: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + WAIT;
        loop {
            let result = self.query(q);
            if let Some(r) = &result
                && done(r)
            {
                return r.clone();
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; `{q}` gave {result:?}"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

fn label<'a>(series: &'a Value, name: &str) -> &'a str {
    series["metric"][name].as_str().unwrap_or_default()
}

fn has_ip(result: &[Value], ip: IpAddr) -> bool {
    result.iter().any(|s| label(s, "ip") == ip.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_raises_no_owner_when_the_only_eligible_speaker_stops() {
    const TEST: &str = "prometheus_raises_no_owner_when_the_only_eligible_speaker_stops";
    if !require_netns(TEST) || !have_tool("prometheus", TEST) {
        return;
    }
    let mut opts = LabOptions::new("alerts").unwrap();
    opts.binary = PathBuf::from(env!("CARGO_BIN_EXE_l2lb"));
    // Two nodes are enough for "only one is eligible", and one controller
    // leaves the two cores to the speakers and Prometheus.
    opts.nodes = 2;
    opts.controllers = 1;
    // Dropping the lab (also on a panic) kills every process in its
    // namespaces, Prometheus too, and deletes the namespaces.
    let mut lab = Lab::start(opts).await.expect("lab starts");
    for file in ["ipaddresspool.yaml", "l2advertisement.yaml"] {
        lab.apply_file(&root().join("config").join(file))
            .await
            .unwrap();
    }
    // externalTrafficPolicy: Local with the only endpoint on node1: node1
    // is the only node that may announce.
    let svc = fixtures::service("web")
        .spec(json!({ "externalTrafficPolicy": "Local" }))
        .build();
    lab.create_service(svc, &[1]).await.unwrap();
    let vip = lab.wait_vips("default", "web", 1, WAIT).await.unwrap()[0];
    let owner = lab.wait_owner("default", "web", None, WAIT).await.unwrap();
    assert_eq!(owner, lab.node(1).name);

    let prom = Prometheus::start(&lab);
    let targets = lab.opts.nodes + lab.opts.controllers;
    prom.wait("every target scraped", "up == 1", |r| r.len() == targets)
        .await;
    let loaded = prom.alert_names();
    let shipped: BTreeSet<String> = alerts().into_iter().map(|(name, _)| name).collect();
    assert_eq!(loaded, shipped, "Prometheus did not load the shipped rules");

    let names = metric_names();
    for name in [
        "l2lb_controller_vip_assigned",
        "l2lb_speaker_announced",
        "up",
    ] {
        assert!(
            names.contains(name),
            "{name} not found in the rules: {names:?}"
        );
    }
    let scraped = prom
        .wait(
            "every metric the rules use",
            r#"group by (__name__) ({__name__=~"l2lb_.+|up"})"#,
            |r| {
                let have: BTreeSet<&str> = r.iter().map(|s| label(s, "__name__")).collect();
                names.iter().all(|n| have.contains(n.as_str()))
            },
        )
        .await;
    println!(
        "scraped {} metric names, the rules use {names:?}",
        scraped.len()
    );

    let announced = prom
        .wait(
            "node1 announcing the VIP",
            &format!(r#"l2lb_speaker_announced{{ip="{vip}"}}"#),
            |r| r.len() == 1,
        )
        .await;
    assert_eq!(label(&announced[0], "node"), lab.node(1).name);
    assert_eq!(label(&announced[0], "service"), "default/web");
    let (_, no_owner) = alerts()
        .into_iter()
        .find(|(name, _)| name == "L2LBVIPNotAnnounced")
        .expect("the no-owner alert");
    prom.wait("no-owner quiet while node1 announces", &no_owner, |r| {
        !has_ip(r, vip)
    })
    .await;

    lab.stop_speaker(1, true);
    let fired = prom
        .wait("no-owner expression true", &no_owner, |r| has_ip(r, vip))
        .await;
    assert!(
        fired
            .iter()
            .any(|s| label(s, "ip") == vip.to_string() && label(s, "service") == "default/web"),
        "{fired:?}"
    );
    prom.wait(
        "L2LBVIPNotAnnounced firing",
        r#"ALERTS{alertname="L2LBVIPNotAnnounced",alertstate="firing"}"#,
        |r| has_ip(r, vip),
    )
    .await;
}
