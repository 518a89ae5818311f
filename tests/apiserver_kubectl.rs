//! Debian's kubectl (1.20), a client nobody here wrote, drives the embedded
//! API server: discovery, get, and apply of a Service and an IPAddressPool.

use std::process::Command;

use l2lb::lab::apiserver::ApiServer;

fn kubectl(server: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new("kubectl")
        .arg(format!("--server={server}"))
        .args(["--insecure-skip-tls-verify=true", "--request-timeout=20s"])
        .args(args)
        .env("KUBECONFIG", "/dev/null")
        .env("HOME", std::env::temp_dir())
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_get_and_apply() {
    if Command::new("kubectl")
        .arg("version")
        .arg("--client")
        .output()
        .is_err()
    {
        println!("SKIPPED: kubectl is not installed");
        return;
    }
    let server = ApiServer::with_l2lb_crds();
    let (url, token) = server.start_local().await.unwrap();
    let _guard = token.drop_guard();
    let base = url.as_str().trim_end_matches('/').to_string();
    let dir = std::env::temp_dir().join(format!("l2lb-kubectl-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("manifest.yaml");
    std::fs::write(&file, MANIFEST).unwrap();
    let file = file.to_string_lossy().to_string();

    let b = base.clone();
    let run = move |args: Vec<String>| {
        let b = b.clone();
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            kubectl(&b, &args)
        })
    };
    let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();

    let (ok, out) = run(args(&["get", "services", "-A"])).await.unwrap();
    assert!(ok, "kubectl get services -A failed: {out}");

    let (ok, out) = run(args(&["apply", "--validate=false", "-f", &file]))
        .await
        .unwrap();
    assert!(ok, "kubectl apply failed: {out}");
    assert!(out.contains("service/web created"), "{out}");
    assert!(
        out.contains("ipaddresspool.l2lb.io/lab-pool created"),
        "{out}"
    );

    // A second apply with a change goes through GET + PATCH.
    std::fs::write(&file, MANIFEST.replace("port: 80", "port: 8080")).unwrap();
    let (ok, out) = run(args(&["apply", "--validate=false", "-f", &file]))
        .await
        .unwrap();
    assert!(ok, "second kubectl apply failed: {out}");
    assert!(out.contains("service/web configured"), "{out}");
    assert!(server.requests().get("patch", "services") >= 1);

    let (ok, out) = run(args(&["get", "ipaddresspools", "-n", "l2lb-system"]))
        .await
        .unwrap();
    assert!(
        ok && out.contains("lab-pool"),
        "kubectl get ipaddresspools: {out}"
    );
    let (ok, out) = run(args(&[
        "get",
        "svc",
        "web",
        "-o",
        "jsonpath={.spec.ports[0].port}",
    ]))
    .await
    .unwrap();
    assert!(ok && out.trim() == "8080", "kubectl get svc web: {out}");
    let _ = std::fs::remove_dir_all(&dir);
}
