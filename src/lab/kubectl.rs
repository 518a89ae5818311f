//! The lab as kubectl sees it: a kubeconfig pointing at the embedded API
//! server, and running the user's own `kubectl` against it so the lab's
//! story shows real kubectl output.
//!
//! Owns the kubeconfig's shape and how kubectl is invoked (no TLS, no
//! credentials, a private discovery cache). It must never touch the user's
//! own kubeconfig or cache.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Name of the cluster, user and context in the lab's kubeconfig.
pub const CONTEXT: &str = "l2lb-lab";

/// The kubeconfig for an API server at `server` (plain HTTP, no credentials),
/// default namespace `default`.
pub fn kubeconfig(server: &url::Url) -> String {
    let server = server.as_str().trim_end_matches('/');
    format!(
        "apiVersion: v1\n\
         kind: Config\n\
         clusters:\n\
         - name: {CONTEXT}\n  cluster:\n    server: {server}\n\
         users:\n\
         - name: {CONTEXT}\n  user: {{}}\n\
         contexts:\n\
         - name: {CONTEXT}\n  context:\n    cluster: {CONTEXT}\n    user: {CONTEXT}\n    namespace: default\n\
         current-context: {CONTEXT}\n"
    )
}

/// Writes [`kubeconfig`] to `dir/kubeconfig`; returns its path.
pub fn write_kubeconfig(dir: &Path, server: &url::Url) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join("kubeconfig");
    std::fs::write(&path, kubeconfig(server))?;
    Ok(path)
}

/// Whether a `kubectl` is on the PATH.
pub fn available() -> bool {
    Command::new("kubectl")
        .args(["version", "--client"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// What one kubectl run printed.
#[derive(Clone, Debug)]
pub struct Output {
    /// Exit status was 0.
    pub success: bool,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

/// Runs `kubectl ARGS` against the kubeconfig at `config`, with its
/// discovery cache beside it (so the user's `~/.kube` is never written).
/// Blocking: call it from `spawn_blocking` inside a runtime that also
/// serves the API server.
pub fn run(config: &Path, args: &[&str]) -> std::io::Result<Output> {
    let cache = config
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
        .join("kube-cache");
    let out = Command::new("kubectl")
        .args(args)
        .arg("--request-timeout=20s")
        .arg(format!("--cache-dir={}", cache.display()))
        .env("KUBECONFIG", config)
        .output()?;
    Ok(Output {
        success: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubeconfig_points_at_the_server_without_credentials() {
        let url = url::Url::parse("http://127.0.0.1:6443/").unwrap();
        let text = kubeconfig(&url);
        let v: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
        assert_eq!(v["current-context"], serde_yaml::Value::from(CONTEXT));
        assert_eq!(
            v["clusters"][0]["cluster"]["server"],
            serde_yaml::Value::from("http://127.0.0.1:6443")
        );
        assert_eq!(
            v["contexts"][0]["context"]["namespace"],
            serde_yaml::Value::from("default")
        );
    }
}
