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
use std::time::Duration;

/// An API request that got no answer within its deadline.
#[derive(Debug, thiserror::Error)]
#[error("no answer from the API server within {0:?}")]
pub struct RequestTimedOut(pub Duration);

impl RequestTimedOut {
    /// Whether `e` is a request that ran out of time (see [`with_timeout`]).
    pub fn is(e: &kube::Error) -> bool {
        matches!(e, kube::Error::Service(inner) if inner.is::<RequestTimedOut>())
    }
}

/// Runs one API request with a deadline; past it the request is dropped
/// and fails with [`RequestTimedOut`] (as a `kube::Error::Service`, so
/// callers handle it like any transport error: log, retry).
///
/// Without it a request sent on a connection the network has cut waits
/// for TCP, which after a long cut retransmits only every tens of seconds
/// (and kube's default client has no read timeout). Dropping the request
/// drops its connection; the retry gets a fresh one. Never wrap a watch:
/// it streams for minutes by design.
///
/// A request given up on may still arrive: the kernel goes on sending a
/// closed connection's data for a minute or two, and the API server then
/// executes it. Callers make such late arrivals harmless (writes
/// conditional on a resourceVersion) or check afterwards.
pub async fn with_timeout<T>(
    deadline: Duration,
    request: impl Future<Output = Result<T, kube::Error>>,
) -> Result<T, kube::Error> {
    match tokio::time::timeout(deadline, request).await {
        Ok(result) => result,
        Err(_) => Err(kube::Error::Service(Box::new(RequestTimedOut(deadline)))),
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_request_without_an_answer_fails_at_its_deadline() {
        let deadline = Duration::from_millis(20);
        let hung = std::future::pending::<Result<(), kube::Error>>();
        let err = with_timeout(deadline, hung).await.unwrap_err();
        assert!(RequestTimedOut::is(&err), "{err}");
        assert!(
            err.to_string()
                .contains("no answer from the API server within 20ms")
        );
        let answered = async { Ok::<_, kube::Error>(7) };
        assert_eq!(with_timeout(deadline, answered).await.unwrap(), 7);
    }
}
