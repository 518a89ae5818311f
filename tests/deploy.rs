//! `deploy/l2lb.yaml` (one file) and `deploy/kustomization.yaml` install the
//! same objects, and the CRDs in both are the committed ones.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

/// Numbers as f64, so `0` and `0.0` (YAML emitters differ) compare equal.
fn normalize(v: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match v {
        Value::Number(n) => n.as_f64().map(Value::from).unwrap_or(Value::Number(n)),
        Value::Array(a) => Value::Array(a.into_iter().map(normalize).collect()),
        Value::Object(o) => Value::Object(o.into_iter().map(|(k, v)| (k, normalize(v))).collect()),
        other => other,
    }
}

fn objects(text: &str) -> BTreeMap<String, serde_json::Value> {
    serde_yaml::Deserializer::from_str(text)
        .map(|d| normalize(serde_json::Value::deserialize(d).unwrap()))
        .filter(|v| !v.is_null())
        .map(|v| {
            let key = format!(
                "{}/{}/{}",
                v["kind"].as_str().unwrap_or_default(),
                v["metadata"]["namespace"].as_str().unwrap_or_default(),
                v["metadata"]["name"].as_str().unwrap_or_default()
            );
            (key, v)
        })
        .collect()
}

#[test]
fn rendered_manifest_matches_the_kustomization() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let rendered = objects(&std::fs::read_to_string(root.join("deploy/l2lb.yaml")).unwrap());
    let out = match Command::new("kubectl")
        .arg("kustomize")
        .arg(root.join("deploy"))
        .output()
    {
        Ok(out) => out,
        Err(e) if std::env::var_os("L2LB_REQUIRE_NETNS").is_none() => {
            println!("SKIPPED: kubectl not available ({e}); run scripts/install-deps.sh");
            return;
        }
        Err(e) => panic!("kubectl not available: {e}"),
    };
    assert!(
        out.status.success(),
        "kubectl kustomize failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let kustomized = objects(&String::from_utf8(out.stdout).unwrap());
    assert_eq!(
        rendered.keys().collect::<Vec<_>>(),
        kustomized.keys().collect::<Vec<_>>(),
        "deploy/l2lb.yaml is stale: regenerate it with `kubectl kustomize deploy`"
    );
    for (k, v) in &kustomized {
        assert_eq!(
            &rendered[k], v,
            "{k} differs between deploy/l2lb.yaml and the kustomization"
        );
    }
    let crds = objects(&std::fs::read_to_string(root.join("crds/l2lb.io.yaml")).unwrap());
    for (k, v) in crds {
        assert_eq!(
            rendered.get(&k),
            Some(&v),
            "{k} in deploy/l2lb.yaml is not the committed CRD"
        );
    }
}

#[test]
fn speaker_has_no_cpu_limit_and_only_net_raw() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let all = objects(&std::fs::read_to_string(root.join("deploy/l2lb.yaml")).unwrap());
    let ds = &all["DaemonSet/l2lb-system/l2lb-speaker"];
    let c = &ds["spec"]["template"]["spec"]["containers"][0];
    assert!(
        c["resources"]["limits"]["cpu"].is_null(),
        "CPU limits delay ARP replies (MetalLB #765)"
    );
    assert_eq!(
        c["securityContext"]["capabilities"]["add"],
        serde_json::json!(["NET_RAW"])
    );
    assert_eq!(
        c["securityContext"]["capabilities"]["drop"],
        serde_json::json!(["ALL"])
    );
    assert_eq!(
        ds["spec"]["template"]["spec"]["hostNetwork"],
        serde_json::json!(true)
    );
}

#[test]
fn speaker_reads_the_fastpath_key_from_the_optional_secret() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let all = objects(&std::fs::read_to_string(root.join("deploy/l2lb.yaml")).unwrap());
    let pod = &all["DaemonSet/l2lb-system/l2lb-speaker"]["spec"]["template"]["spec"];
    let volume = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["secret"]["secretName"] == "l2lb-fastpath")
        .expect("a volume from Secret l2lb-fastpath");
    assert_eq!(volume["secret"]["optional"], serde_json::json!(true));
    let c = &pod["containers"][0];
    let mount = c["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == volume["name"])
        .expect("the key volume is mounted");
    let file = c["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "L2LB_FASTPATH_KEY_FILE")
        .expect("L2LB_FASTPATH_KEY_FILE set")["value"]
        .as_str()
        .unwrap()
        .to_string();
    let dir = mount["mountPath"].as_str().unwrap();
    assert_eq!(
        file,
        format!("{dir}/keys"),
        "the flag names the Secret's `keys` entry"
    );
}

/// `kubectl kustomize dir`, or None (after saying so) where kubectl is
/// missing and L2LB_REQUIRE_NETNS is unset.
fn kustomize(dir: &Path) -> Option<String> {
    let out = match Command::new("kubectl").arg("kustomize").arg(dir).output() {
        Ok(out) => out,
        Err(e) if std::env::var_os("L2LB_REQUIRE_NETNS").is_none() => {
            println!("SKIPPED: kubectl not available ({e}); run scripts/install-deps.sh");
            return None;
        }
        Err(e) => panic!("kubectl not available: {e}"),
    };
    assert!(
        out.status.success(),
        "kubectl kustomize {} failed: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8(out.stdout).unwrap())
}

fn yaml_file(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap();
    normalize(serde_yaml::from_str(&text).unwrap())
}

#[test]
fn prometheus_rule_embeds_the_rules_file() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/monitoring");
    let rule = yaml_file(&dir.join("prometheusrule.yaml"));
    let plain = yaml_file(&dir.join("rules.yaml"));
    assert_eq!(rule["kind"], "PrometheusRule");
    assert_eq!(
        rule["spec"], plain,
        "deploy/monitoring/prometheusrule.yaml differs from rules.yaml: \
         edit rules.yaml and copy its groups under the PrometheusRule's spec"
    );
}

#[test]
fn monitoring_component_scrapes_the_jobs_the_rules_name() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let Some(text) = kustomize(&root.join("tests/monitoring/overlay")) else {
        return;
    };
    let with = objects(&text);
    let base = objects(&std::fs::read_to_string(root.join("deploy/l2lb.yaml")).unwrap());
    // The Component adds its objects and changes nothing else.
    for (k, v) in &base {
        assert_eq!(
            with.get(k),
            Some(v),
            "{k} changed by the monitoring component"
        );
    }
    let added: Vec<&String> = with.keys().filter(|k| !base.contains_key(*k)).collect();
    assert_eq!(
        added,
        [
            "PrometheusRule/l2lb-system/l2lb",
            "ServiceMonitor/l2lb-system/l2lb-controller",
            "ServiceMonitor/l2lb-system/l2lb-speaker",
        ]
    );
    // The operator names a ServiceMonitor's job after the Service it
    // scrapes: those names are the jobs the rules select.
    let mut jobs = std::collections::BTreeSet::new();
    for (key, monitor) in with
        .iter()
        .filter(|(k, _)| k.starts_with("ServiceMonitor/"))
    {
        let selector = monitor["spec"]["selector"]["matchLabels"]
            .as_object()
            .unwrap();
        let services: Vec<&serde_json::Value> = with
            .iter()
            .filter(|(k, _)| k.starts_with("Service/l2lb-system/"))
            .map(|(_, s)| s)
            .filter(|s| {
                selector
                    .iter()
                    .all(|(l, v)| s["metadata"]["labels"][l.as_str()] == *v)
            })
            .collect();
        assert_eq!(
            services.len(),
            1,
            "{key} selects {} Services",
            services.len()
        );
        let port = &monitor["spec"]["endpoints"][0]["port"];
        assert!(
            services[0]["spec"]["ports"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["name"] == *port),
            "{key} scrapes port {port}, which its Service lacks"
        );
        jobs.insert(
            services[0]["metadata"]["name"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    let rules = std::fs::read_to_string(root.join("deploy/monitoring/rules.yaml")).unwrap();
    let named: std::collections::BTreeSet<String> = rules
        .split("job=\"")
        .skip(1)
        .map(|rest| rest.split('"').next().unwrap().to_string())
        .collect();
    assert!(!named.is_empty());
    assert!(
        named.is_subset(&jobs),
        "rules select jobs {named:?}, the ServiceMonitors scrape {jobs:?}"
    );
}
