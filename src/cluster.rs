//! How a component reaches the API server: in-cluster / kubeconfig as usual,
//! or an explicit `--server` URL (plain HTTP to the lab's embedded API server,
//! or HTTPS with the kubeconfig's credentials otherwise).

/// Errors building a client.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// No usable configuration (no in-cluster env, no kubeconfig).
    #[error("cannot configure a Kubernetes client: {0}")]
    Config(String),
    /// The configuration was found but the client could not be built.
    #[error("cannot build a Kubernetes client: {0}")]
    Client(#[from] kube::Error),
}

use crate::api::rbac::Component;

/// A client for `server` when given (no credentials: the lab's test API
/// server), otherwise the inferred in-cluster or kubeconfig configuration.
/// It sends `component`'s User-Agent.
pub async fn client(
    server: Option<&url::Url>,
    component: Component,
) -> Result<kube::Client, ClusterError> {
    match server {
        Some(url) => client_for_url(url, component),
        None => {
            let config = kube::Config::infer()
                .await
                .map_err(|e| ClusterError::Config(e.to_string()))?;
            build(config, component)
        }
    }
}

/// A client that talks to `url` with no credentials, as `component`.
pub fn client_for_url(url: &url::Url, component: Component) -> Result<kube::Client, ClusterError> {
    let uri: http::Uri = url
        .as_str()
        .parse()
        .map_err(|e: http::uri::InvalidUri| ClusterError::Config(e.to_string()))?;
    let mut config = kube::Config::new(uri);
    config.connect_timeout = Some(std::time::Duration::from_secs(3));
    build(config, component)
}

fn build(mut config: kube::Config, component: Component) -> Result<kube::Client, ClusterError> {
    let agent = http::HeaderValue::from_str(&component.user_agent())
        .map_err(|e| ClusterError::Config(e.to_string()))?;
    config.headers.push((http::header::USER_AGENT, agent));
    Ok(kube::Client::try_from(config)?)
}
