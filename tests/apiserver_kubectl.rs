//! kubectl, a client nobody here wrote, drives the embedded API server the
//! way a user does: discovery, server-side printing, apply with validation
//! (no `--validate=false`), explain, protobuf requests, Service defaults,
//! field errors, Events in `describe`, label/patch/delete.

use std::process::Command;

use l2lb::lab::apiserver::ApiServer;

fn kubectl(server: &str, home: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new("kubectl")
        .arg(format!("--server={server}"))
        .args(["--request-timeout=20s"])
        .args(args)
        .env("KUBECONFIG", "/dev/null")
        .env("HOME", home)
        .output()
        .expect("running kubectl");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

const MANIFEST: &str = r#"apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: default
  labels: {app: web}
spec:
  type: LoadBalancer
  selector: {app: web}
  ports:
  - port: 80
    protocol: TCP
---
apiVersion: l2lb.io/v1beta1
kind: IPAddressPool
metadata:
  name: lab-pool
  namespace: l2lb-system
spec:
  addresses:
  - 198.18.0.100-198.18.0.120
"#;

const BAD_POOL: &str = r#"apiVersion: l2lb.io/v1beta1
kind: IPAddressPool
metadata:
  name: bad
  namespace: l2lb-system
spec:
  addresses:
  - 198.18.0.300
"#;

const TYPO_POOL: &str = r#"apiVersion: l2lb.io/v1beta1
kind: IPAddressPool
metadata:
  name: typo
  namespace: l2lb-system
spec:
  adresses:
  - 198.18.0.100
"#;

const BAD_SERVICE: &str = r#"apiVersion: v1
kind: Service
metadata:
  name: bad
  namespace: default
spec:
  type: LoadBalancer
  ports:
  - port: 0
"#;

struct Run {
    base: String,
    home: String,
}

impl Run {
    async fn go(&self, args: &[&str]) -> (bool, String) {
        let (b, h) = (self.base.clone(), self.home.clone());
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            kubectl(&b, &h, &args)
        })
        .await
        .unwrap()
    }

    /// Runs kubectl, which must succeed; returns what it printed.
    async fn ok(&self, args: &[&str]) -> String {
        let (ok, out) = self.go(args).await;
        assert!(ok, "kubectl {} failed: {out}", args.join(" "));
        println!("$ kubectl {}\n{out}", args.join(" "));
        out
    }

    /// Runs kubectl, which must fail; returns what it printed.
    async fn fails(&self, args: &[&str]) -> String {
        let (ok, out) = self.go(args).await;
        assert!(!ok, "kubectl {} succeeded: {out}", args.join(" "));
        println!("$ kubectl {}\n{out}", args.join(" "));
        out
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_workflow_against_the_embedded_server() {
    if Command::new("kubectl")
        .arg("version")
        .arg("--client")
        .output()
        .is_err()
    {
        assert!(std::env::var_os("CI").is_none(), "kubectl is missing in CI");
        println!("SKIPPED: kubectl is not installed");
        return;
    }
    let server = ApiServer::with_l2lb_crds();
    let (url, token) = server.start_local().await.unwrap();
    let _guard = token.drop_guard();
    let dir = std::env::temp_dir().join(format!("l2lb-kubectl-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let write = |name: &str, text: &str| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p.to_string_lossy().to_string()
    };
    let file = write("manifest.yaml", MANIFEST);
    let k = Run {
        base: url.as_str().trim_end_matches('/').to_string(),
        home: dir.to_string_lossy().to_string(),
    };

    k.ok(&["get", "services", "-A"]).await;

    // Built-in kinds go out as protobuf first: the 415 makes kubectl retry in JSON.
    let out = k.ok(&["create", "namespace", "foo"]).await;
    assert!(out.contains("namespace/foo created"), "{out}");

    // apply validates through the server (fieldValidation=Strict).
    let out = k.ok(&["apply", "-f", &file]).await;
    assert!(out.contains("service/web created"), "{out}");
    assert!(
        out.contains("ipaddresspool.l2lb.io/lab-pool created"),
        "{out}"
    );
    // A second apply with a change goes through GET + PATCH.
    std::fs::write(&file, MANIFEST.replace("port: 80", "port: 8080")).unwrap();
    let out = k.ok(&["apply", "-f", &file]).await;
    assert!(out.contains("service/web configured"), "{out}");
    assert!(server.requests().get("patch", "services") >= 1);

    // Server-side printing, with the defaults a real server gives a Service.
    let out = k.ok(&["get", "svc", "web"]).await;
    let header: Vec<&str> = out.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAME",
            "TYPE",
            "CLUSTER-IP",
            "EXTERNAL-IP",
            "PORT(S)",
            "AGE"
        ]
    );
    let row: Vec<&str> = out.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(
        row[..5],
        [
            "web",
            "LoadBalancer",
            "198.19.128.10",
            "<pending>",
            "8080:30000/TCP"
        ]
    );
    let out = k.ok(&["get", "svc", "web", "-o", "wide"]).await;
    assert!(out.contains("SELECTOR") && out.contains("app=web"), "{out}");
    let out = k
        .ok(&["get", "svc", "web", "-o", "jsonpath={.spec.ports[0].port}"])
        .await;
    assert_eq!(out.trim(), "8080");
    let out = k.ok(&["get", "ipaddresspools", "-n", "l2lb-system"]).await;
    let header: Vec<&str> = out
        .lines()
        .next()
        .unwrap()
        .split("  ")
        .filter(|c| !c.is_empty())
        .map(str::trim)
        .collect();
    assert_eq!(
        header,
        [
            "NAME",
            "AUTO ASSIGN",
            "AVOID BUGGY IPS",
            "ADDRESSES",
            "IPV4 ASSIGNED",
            "IPV4 AVAILABLE",
            "READY",
            "ADVERTISED",
            "AGE"
        ]
    );
    assert!(
        out.contains(r#"lab-pool   true          false             ["198.18.0.100-198.18.0.120"]"#),
        "{out}"
    );
    let out = k.ok(&["get", "namespaces"]).await;
    assert!(
        out.contains("STATUS") && out.contains("foo") && out.contains("Active"),
        "{out}"
    );

    // explain reads our CRD's documentation from the OpenAPI documents.
    let out = k.ok(&["explain", "ipaddresspool.spec.addresses"]).await;
    assert!(out.contains("FIELD: addresses"), "{out}");
    assert!(out.contains("Addresses the pool hands out"), "{out}");
    let out = k
        .ok(&["explain", "service.spec.externalTrafficPolicy"])
        .await;
    assert!(out.contains("externalTrafficPolicy"), "{out}");

    // Field errors, as a real server lists them.
    let out = k
        .fails(&["apply", "-f", &write("bad.yaml", BAD_POOL)])
        .await;
    assert!(
        out.contains(r#"The IPAddressPool "bad" is invalid"#)
            && out.contains("spec.addresses: Invalid value: \"array\": each address must be"),
        "{out}"
    );
    let out = k
        .fails(&["apply", "-f", &write("typo.yaml", TYPO_POOL)])
        .await;
    assert!(
        out.contains(r#"strict decoding error: unknown field "spec.adresses""#),
        "{out}"
    );
    let out = k
        .fails(&["apply", "-f", &write("badsvc.yaml", BAD_SERVICE)])
        .await;
    assert!(
        out.contains(r#"The Service "bad" is invalid: spec.ports[0].port: Invalid value: 0: must be between 1 and 65535, inclusive"#),
        "{out}"
    );

    // An Event recorded through events.k8s.io (as l2lb's components do) shows
    // in describe and in `get events`, which read core/v1.
    let client = l2lb::lab::apiserver::client_for(&url).unwrap();
    let svc: k8s_openapi::api::core::v1::Service = kube::Api::namespaced(client.clone(), "default")
        .get("web")
        .await
        .unwrap();
    let recorder = kube::runtime::events::Recorder::new(
        client,
        kube::runtime::events::Reporter {
            controller: "l2lb-controller".into(),
            instance: None,
        },
    );
    recorder
        .publish(
            &kube::runtime::events::Event {
                type_: kube::runtime::events::EventType::Warning,
                reason: "AllocationFailed".into(),
                note: Some("no pool has a free address".into()),
                action: "Allocate".into(),
                secondary: None,
            },
            &kube::Resource::object_ref(&svc, &()),
        )
        .await
        .unwrap();
    let out = k.ok(&["describe", "service", "web"]).await;
    assert!(
        out.contains("Events:")
            && out.contains("AllocationFailed")
            && out.contains("no pool has a free address"),
        "{out}"
    );
    let out = k
        .ok(&[
            "get",
            "events",
            "-A",
            "--field-selector",
            "reason=AllocationFailed",
        ])
        .await;
    assert!(
        out.contains("service/web") && out.contains("Warning"),
        "{out}"
    );
    let out = k
        .ok(&[
            "get",
            "events",
            "-A",
            "--field-selector",
            "reason=IPAllocated",
        ])
        .await;
    assert!(out.contains("No resources found"), "{out}");

    // label, patch, delete.
    let out = k.ok(&["label", "service", "web", "tier=front"]).await;
    assert!(out.contains("service/web labeled"), "{out}");
    let out = k
        .ok(&[
            "patch",
            "service",
            "web",
            "-p",
            r#"{"spec":{"externalTrafficPolicy":"Local"}}"#,
        ])
        .await;
    assert!(out.contains("service/web patched"), "{out}");
    let out = k
        .ok(&[
            "get",
            "svc",
            "web",
            "-o",
            "jsonpath={.spec.healthCheckNodePort} {.metadata.labels.tier}",
        ])
        .await;
    assert_eq!(out.trim(), "30001 front");
    let out = k.ok(&["delete", "namespace", "foo"]).await;
    assert!(out.contains(r#"namespace "foo" deleted"#), "{out}");
    let _ = std::fs::remove_dir_all(&dir);
}
