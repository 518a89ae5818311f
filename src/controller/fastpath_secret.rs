//! The LAN fast path's key, generated at install: every replica makes sure
//! the Secret the speakers mount exists, creating it with a fresh random
//! key when it does not (as MetalLB's controller creates its memberlist
//! Secret). An existing Secret is never changed: operators rotate keys by
//! editing it (README "LAN fast path key").

use crate::fastpath::keyfile;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use kube::{Client, Error};
use std::time::Duration;
use tracing::{info, warn};

/// Pause between attempts while the API server refuses or is unreachable.
const RETRY: Duration = Duration::from_secs(10);

/// Makes sure Secret `name` exists in `namespace`; retries until it does.
/// Replicas race harmlessly: the first create wins, the others see 409.
pub(super) async fn ensure(client: Client, namespace: String, name: String) {
    let api: Api<Secret> = Api::namespaced(client, &namespace);
    loop {
        match try_ensure(&api, &name).await {
            Ok(Outcome::Existed) => return,
            Ok(Outcome::Created) => {
                info!(secret = %name, namespace = %namespace, "generated the LAN fast-path key Secret; speakers pick it up once kubelet mounts it");
                return;
            }
            Err(e) => {
                warn!(secret = %name, namespace = %namespace, error = %e, "cannot make sure the LAN fast-path key Secret exists; retrying");
                tokio::time::sleep(RETRY).await;
            }
        }
    }
}

enum Outcome {
    Existed,
    Created,
}

async fn try_ensure(api: &Api<Secret>, name: &str) -> Result<Outcome, Error> {
    if api.get_opt(name).await?.is_some() {
        return Ok(Outcome::Existed);
    }
    let text = keyfile::generate(&ring::rand::SystemRandom::new())
        .map_err(|_| Error::Service("the system random source failed".into()))?;
    let secret = crate::api::fastpath_secret(name, &text);
    match api.create(&PostParams::default(), &secret).await {
        Ok(_) => Ok(Outcome::Created),
        Err(Error::Api(s)) if s.code == 409 => Ok(Outcome::Existed),
        Err(e) => Err(e),
    }
}
