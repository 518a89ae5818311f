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

/// A client for `server` when given (no credentials: the lab's test API
/// server), otherwise the inferred in-cluster or kubeconfig configuration.
pub async fn client(server: Option<&url::Url>) -> Result<kube::Client, ClusterError> {
    match server {
        Some(url) => client_for_url(url),
        None => {
            let config = kube::Config::infer()
                .await
                .map_err(|e| ClusterError::Config(e.to_string()))?;
            Ok(kube::Client::try_from(config)?)
        }
    }
}

/// A client that talks to `url` with no credentials.
pub fn client_for_url(url: &url::Url) -> Result<kube::Client, ClusterError> {
    let uri: http::Uri = url
        .as_str()
        .parse()
        .map_err(|e: http::uri::InvalidUri| ClusterError::Config(e.to_string()))?;
    let mut config = kube::Config::new(uri);
    config.connect_timeout = Some(std::time::Duration::from_secs(3));
    Ok(kube::Client::try_from(config)?)
}
