//! Controller leadership through kube-leader-election's `LeaseLock`, with
//! the guard its acquisition race needs.
//!
//! The crate takes over an expired Lease with a merge patch that carries no
//! resourceVersion, so two standbys can both be told they won. After every
//! acquisition we re-read the Lease and lead only if it names us; renewals
//! re-check the holder too. What remains of the race (both read before
//! either writes) is closed by the resourceVersion precondition on every
//! status write.

use super::metrics::ControllerMetrics;
use k8s_openapi::api::coordination::v1::Lease;
use kube::{Api, Client};
use kube_leader_election::{Error as LeaseError, LeaseLock, LeaseLockParams, LeaseLockResult};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::{Instant, error::Elapsed};
use tokio_util::sync::CancellationToken;

/// Runs the election loop for one replica.
pub(super) struct Elector {
    lock: LeaseLock,
    leases: Api<Lease>,
    lease_name: String,
    identity: String,
    lease_duration: Duration,
}

impl Elector {
    pub(super) fn new(
        client: Client,
        namespace: &str,
        lease_name: &str,
        identity: &str,
        lease_duration: Duration,
    ) -> Self {
        let lock = LeaseLock::new(
            client.clone(),
            namespace,
            LeaseLockParams {
                lease_name: lease_name.to_string(),
                holder_id: identity.to_string(),
                lease_ttl: lease_duration,
            },
        );
        Self {
            lock,
            leases: Api::namespaced(client, namespace),
            lease_name: lease_name.to_string(),
            identity: identity.to_string(),
            lease_duration,
        }
    }

    /// The Lease's holder as the API server has it now; `None` when the
    /// read fails or takes longer than `deadline`.
    async fn holder(&self, deadline: Duration) -> Option<String> {
        crate::cluster::with_timeout(deadline, self.leases.get(&self.lease_name))
            .await
            .ok()
            .and_then(|l| l.spec?.holder_identity)
    }

    /// Publishes leadership on `leader` until `stop`, then steps down if leading.
    pub(super) async fn run(
        self,
        leader: watch::Sender<bool>,
        metrics: ControllerMetrics,
        stop: CancellationToken,
    ) {
        // Renew well inside the lease so one slow request does not cost
        // leadership.
        let renew_every = self.lease_duration / 4;
        let mut last_renewed: Option<Instant> = None;
        // The holder last reported while standing by: a standby asks every
        // `renew_every`, and says so only when the answer changes.
        let mut seen_holder: Option<String> = None;
        loop {
            let attempt = tokio::time::timeout(renew_every, self.lock.try_acquire_or_renew()).await;
            let leading_before = *leader.borrow();
            let now_leading = self
                .judge(
                    attempt,
                    leading_before,
                    &mut last_renewed,
                    &mut seen_holder,
                    renew_every,
                )
                .await;
            if now_leading != leading_before {
                tracing::info!(identity = %self.identity, leading = now_leading, "leadership changed");
                metrics.set_leader(now_leading);
                let _ = leader.send(now_leading);
            }
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(renew_every) => {}
            }
        }
        if *leader.borrow() {
            let _ = leader.send(false);
            metrics.set_leader(false);
            self.step_down().await;
        }
    }

    /// Whether this replica leads after `attempt`. An acquisition counts
    /// only if the Lease then names us (the crate's race, see the module
    /// doc). A failed or timed-out renewal keeps a leader leading only
    /// until `lease_duration - renew_every` after its last success, so it
    /// gives up leadership itself before a standby may take over.
    async fn judge(
        &self,
        attempt: Result<Result<LeaseLockResult, kube_leader_election::Error>, Elapsed>,
        leading_before: bool,
        last_renewed: &mut Option<Instant>,
        seen_holder: &mut Option<String>,
        renew_every: Duration,
    ) -> bool {
        let within_lease = leading_before
            && last_renewed.is_some_and(|t| t.elapsed() < self.lease_duration - renew_every);
        match attempt {
            Ok(Ok(LeaseLockResult::Acquired(_))) => {
                let ours = leading_before
                    || self.holder(renew_every).await.as_deref() == Some(self.identity.as_str());
                if ours {
                    *last_renewed = Some(Instant::now());
                } else {
                    // A normal race between standbys, closed here.
                    tracing::info!(identity = %self.identity, "lost the Lease acquisition race; standing by");
                }
                ours
            }
            Ok(Ok(LeaseLockResult::NotAcquired(lease))) => {
                let holder = lease.spec.and_then(|s| s.holder_identity);
                if holder != *seen_holder {
                    tracing::info!(holder = ?holder, "standing by: the Lease is held by another replica");
                    *seen_holder = holder;
                } else {
                    tracing::debug!(holder = ?holder, "the Lease is still held by another replica");
                }
                false
            }
            Ok(Err(LeaseError::CreateLease(kube::Error::Api(s)))) if s.code == 409 => {
                // Replicas starting together all find no Lease and create
                // it; one wins and the others stand by.
                tracing::debug!(identity = %self.identity, "another replica created the Lease first");
                false
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "leader election request failed");
                within_lease
            }
            Err(_) => {
                tracing::warn!("leader election request timed out");
                within_lease
            }
        }
    }

    /// Releases the Lease so a standby takes over at once; if that fails,
    /// the standby waits for the Lease to expire.
    async fn step_down(&self) {
        match tokio::time::timeout(Duration::from_secs(2), self.lock.step_down()).await {
            Ok(Ok(())) => tracing::info!(identity = %self.identity, "stepped down"),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "could not release the Lease; a standby takes over when it expires")
            }
            Err(_) => {
                tracing::warn!(
                    "releasing the Lease timed out; a standby takes over when it expires"
                )
            }
        }
    }
}
