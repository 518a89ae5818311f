//! Every manifest under `config/` parses into our types (or k8s-openapi's),
//! and pools pass the CRD's own CEL rules, so the examples cannot rot.

use k8s_openapi::api::core::v1::Service;
use kube::CustomResourceExt;
use kube::core::cel::Validator;
use l2lb::api::{IPAddressPool, L2Advertisement};
use serde::Deserialize;
use std::path::Path;

fn documents() -> Vec<(String, serde_json::Value)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let mut out = Vec::new();
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    paths.sort();
    for path in paths {
        let text = std::fs::read_to_string(&path).unwrap();
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let value = serde_json::Value::deserialize(doc).unwrap();
            if !value.is_null() {
                out.push((path.display().to_string(), value));
            }
        }
    }
    out
}

#[test]
fn every_example_parses_into_its_type() {
    let docs = documents();
    assert!(
        docs.len() >= 5,
        "expected the example manifests, found {}",
        docs.len()
    );
    let schema = serde_json::to_value(
        IPAddressPool::crd().spec.versions[0]
            .schema
            .as_ref()
            .unwrap()
            .open_api_v3_schema
            .as_ref()
            .unwrap(),
    )
    .unwrap();
    let mut kinds = std::collections::BTreeSet::new();
    for (path, doc) in docs {
        let kind = doc["kind"].as_str().unwrap_or_default().to_string();
        match kind.as_str() {
            "IPAddressPool" => {
                serde_json::from_value::<IPAddressPool>(doc.clone())
                    .unwrap_or_else(|e| panic!("{path}: {e}"));
                let cel = Validator::new().validate(&schema, &doc, None);
                assert!(cel.is_ok(), "{path}: rejected by the CRD rules: {cel:?}");
            }
            "L2Advertisement" => {
                serde_json::from_value::<L2Advertisement>(doc)
                    .unwrap_or_else(|e| panic!("{path}: {e}"));
            }
            "Service" => {
                let svc: Service =
                    serde_json::from_value(doc).unwrap_or_else(|e| panic!("{path}: {e}"));
                let spec = svc.spec.unwrap();
                assert_eq!(spec.type_.as_deref(), Some("LoadBalancer"), "{path}");
                let ann = svc.metadata.annotations.unwrap_or_default();
                l2lb::api::annotations::parse(&ann, spec.load_balancer_ip.as_deref())
                    .unwrap_or_else(|e| panic!("{path}: {e}"));
            }
            other => panic!("{path}: unexpected kind {other:?}"),
        }
        kinds.insert(kind);
    }
    assert_eq!(
        kinds.len(),
        3,
        "pools, advertisements and services all have examples"
    );
}
