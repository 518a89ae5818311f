//! Writes `ServiceL2Status` objects and Events for the speaker, off the
//! decision path.
//!
//! Owns the status objects of this node (one per announced Service, named
//! from a stable hash of node and Service so no listing is needed to find
//! them) and the Event recorder. Runs as its own task fed by an unbounded
//! channel, so a slow or unreachable API server never delays an announce or
//! withdraw. Failed writes are retried; Events are best effort. Every
//! request has a deadline: one write stuck on a connection the network cut
//! would otherwise hold back every later one. It must never write Services.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::events::{Recorder, Reporter};
use kube::{Client, ResourceExt};
use serde_json::json;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::eligibility::ServiceKey;
use crate::api::events::Reason;
use crate::api::{
    STATUS_NODE_LABEL, STATUS_SERVICE_NAME_LABEL, STATUS_SERVICE_NAMESPACE_LABEL, ServiceL2Status,
    ServiceL2StatusSpec,
};
use crate::cluster::with_timeout;

/// Field manager for status writes.
const MANAGER: &str = "l2lb-speaker";
/// How often failed status writes are retried.
const RETRY: Duration = Duration::from_secs(2);
/// Deadline of each API request. One that takes longer is stuck on a
/// connection the network cut (requests normally take milliseconds); it is
/// dropped, logged as a failed write and retried on a fresh connection, so
/// the status follows a heal within seconds instead of TCP's back-off.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(4);

/// Work for the status writer.
#[derive(Debug)]
pub enum StatusMsg {
    /// This node announces `service` on `interfaces`. `takeover` is set when
    /// it just became an owner: other nodes' objects for the Service are then
    /// removed (a crashed owner never deletes its own), except those of the
    /// nodes it names, which own another VIP of the same Service.
    Present {
        /// The Service.
        service: ServiceKey,
        /// Interfaces announced on.
        interfaces: BTreeSet<String>,
        /// Newly owned; the co-owners whose objects stay.
        takeover: Option<BTreeSet<String>>,
    },
    /// This node no longer announces `service`.
    Absent(ServiceKey),
    /// The first synced decision was made: delete leftovers of a previous
    /// run that it did not claim.
    FirstDecisionDone,
    /// Publish an Event about an object.
    Event {
        /// The object the Event is about (a Service).
        regarding: ObjectReference,
        /// Why (Warning or Normal follows from it).
        reason: Reason,
        /// Human-readable detail.
        note: String,
    },
}

/// Name of this node's status object for `svc`: stable across restarts so
/// that a restarted speaker finds its own objects without listing.
pub fn status_name(node: &str, svc: &ServiceKey) -> String {
    // The rendezvous weight is a stable 64-bit hash of (address, text); the
    // address is fixed, the text carries node and Service, length-delimited.
    let text = format!(
        "{}:{node}/{}:{}/{}:{}",
        node.len(),
        svc.namespace.len(),
        svc.namespace,
        svc.name.len(),
        svc.name
    );
    let h = crate::election::weight(std::net::IpAddr::from([0u8; 4]), &text);
    format!("l2-{h:016x}")
}

/// Desired state of one status object.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Want {
    Present {
        interfaces: BTreeSet<String>,
        takeover: Option<BTreeSet<String>>,
    },
    Absent,
}

/// Runs the writer until `stop` is cancelled and the channel is drained
/// (pending deletions are attempted once more on the way out).
pub async fn run(
    client: Client,
    namespace: String,
    node: String,
    mut rx: mpsc::UnboundedReceiver<StatusMsg>,
    stop: CancellationToken,
) {
    let api: Api<ServiceL2Status> = Api::namespaced(client.clone(), &namespace);
    let recorder = Recorder::new(
        client,
        Reporter {
            controller: MANAGER.into(),
            instance: Some(node.clone()),
        },
    );
    let mut pending: BTreeMap<ServiceKey, Want> = BTreeMap::new();
    // Objects of a previous run of this node, deleted after the first
    // decision unless claimed again. `None` until listed.
    let mut leftovers: Option<BTreeMap<String, ServiceKey>> = None;
    let mut first_done = false;
    let mut retry = tokio::time::interval(RETRY);
    retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            msg = rx.recv() => match msg {
                Some(msg) => {
                    if let Some(ev) = absorb(msg, &mut pending, &mut first_done) {
                        publish(&recorder, ev).await;
                    }
                }
                None => break,
            },
            _ = retry.tick() => {}
            _ = stop.cancelled() => {
                // Take what the loop sent before stopping, then flush once.
                while let Ok(msg) = rx.try_recv() {
                    absorb(msg, &mut pending, &mut first_done);
                }
                flush(&api, &node, &mut pending).await;
                return;
            }
        }
        // Coalesce bursts: take everything already queued before writing.
        while let Ok(msg) = rx.try_recv() {
            if let Some(ev) = absorb(msg, &mut pending, &mut first_done) {
                publish(&recorder, ev).await;
            }
        }
        if leftovers.is_none() {
            leftovers = list_own(&api, &node).await;
        }
        if let Some(left) = leftovers.as_mut() {
            left.retain(|_, svc| !pending.contains_key(svc));
            if first_done {
                for svc in std::mem::take(left).into_values() {
                    pending.entry(svc).or_insert(Want::Absent);
                }
            }
        }
        flush(&api, &node, &mut pending).await;
    }
}

/// An Event to publish: (regarding, reason, note).
type EventMsg = (ObjectReference, Reason, String);

/// Folds a message into the pending writes; returns an Event to publish.
fn absorb(
    msg: StatusMsg,
    pending: &mut BTreeMap<ServiceKey, Want>,
    first_done: &mut bool,
) -> Option<EventMsg> {
    match msg {
        StatusMsg::Present {
            service,
            interfaces,
            takeover,
        } => {
            // A takeover not yet written stays a takeover.
            let takeover = takeover.or_else(|| match pending.get(&service) {
                Some(Want::Present { takeover, .. }) => takeover.clone(),
                _ => None,
            });
            pending.insert(
                service,
                Want::Present {
                    interfaces,
                    takeover,
                },
            );
        }
        StatusMsg::Absent(service) => {
            pending.insert(service, Want::Absent);
        }
        StatusMsg::FirstDecisionDone => *first_done = true,
        StatusMsg::Event {
            regarding,
            reason,
            note,
        } => return Some((regarding, reason, note)),
    }
    None
}

/// This node's existing status objects, by name.
async fn list_own(api: &Api<ServiceL2Status>, node: &str) -> Option<BTreeMap<String, ServiceKey>> {
    let lp = ListParams::default().labels(&format!("{STATUS_NODE_LABEL}={node}"));
    match with_timeout(REQUEST_TIMEOUT, api.list(&lp)).await {
        Ok(list) => Some(
            list.items
                .into_iter()
                .filter_map(|s| {
                    let labels = s.labels();
                    let key = ServiceKey {
                        namespace: labels.get(STATUS_SERVICE_NAMESPACE_LABEL)?.clone(),
                        name: labels.get(STATUS_SERVICE_NAME_LABEL)?.clone(),
                    };
                    Some((s.name_any(), key))
                })
                .collect(),
        ),
        Err(e) => {
            debug!(error = %e, "listing own ServiceL2Status objects failed; will retry");
            None
        }
    }
}

/// Attempts every pending write; successful ones leave `pending`.
async fn flush(api: &Api<ServiceL2Status>, node: &str, pending: &mut BTreeMap<ServiceKey, Want>) {
    let work: Vec<(ServiceKey, Want)> = pending
        .iter()
        .map(|(k, w)| (k.clone(), w.clone()))
        .collect();
    for (svc, want) in work {
        let result = match &want {
            Want::Present {
                interfaces,
                takeover,
            } => write_present(api, node, &svc, interfaces, takeover.as_ref()).await,
            Want::Absent => write_absent(api, &status_name(node, &svc)).await,
        };
        match result {
            Ok(()) => {
                if pending.get(&svc) == Some(&want) {
                    pending.remove(&svc);
                }
            }
            Err(e) => warn!(service = %svc, error = %e, "ServiceL2Status write failed; will retry"),
        }
    }
}

async fn write_present(
    api: &Api<ServiceL2Status>,
    node: &str,
    svc: &ServiceKey,
    interfaces: &BTreeSet<String>,
    takeover: Option<&BTreeSet<String>>,
) -> Result<(), kube::Error> {
    let name = status_name(node, svc);
    let mut obj = ServiceL2Status::new(&name, ServiceL2StatusSpec {});
    obj.metadata.labels = Some(
        [
            (STATUS_NODE_LABEL.to_string(), node.to_string()),
            (STATUS_SERVICE_NAME_LABEL.to_string(), svc.name.clone()),
            (
                STATUS_SERVICE_NAMESPACE_LABEL.to_string(),
                svc.namespace.clone(),
            ),
        ]
        .into(),
    );
    match with_timeout(REQUEST_TIMEOUT, api.create(&PostParams::default(), &obj)).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => return Err(e),
    }
    let status = json!({"status": {
        "node": node,
        "serviceName": svc.name,
        "serviceNamespace": svc.namespace,
        "interfaces": interfaces.iter().map(|i| json!({"name": i})).collect::<Vec<_>>(),
    }});
    with_timeout(
        REQUEST_TIMEOUT,
        api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status)),
    )
    .await?;
    if let Some(co_owners) = takeover {
        let lp = ListParams::default().labels(&format!(
            "{STATUS_SERVICE_NAMESPACE_LABEL}={},{STATUS_SERVICE_NAME_LABEL}={},{STATUS_NODE_LABEL}!={node}",
            svc.namespace, svc.name
        ));
        for other in with_timeout(REQUEST_TIMEOUT, api.list(&lp)).await?.items {
            let holder = other.labels().get(STATUS_NODE_LABEL);
            if holder.is_none_or(|h| !co_owners.contains(h)) {
                write_absent(api, &other.name_any()).await?;
            }
        }
    }
    Ok(())
}

async fn write_absent(api: &Api<ServiceL2Status>, name: &str) -> Result<(), kube::Error> {
    debug!(name, "deleting ServiceL2Status");
    match with_timeout(REQUEST_TIMEOUT, api.delete(name, &DeleteParams::default())).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

async fn publish(recorder: &Recorder, (regarding, reason, note): EventMsg) {
    let ev = reason.event(note, reason.as_str());
    if let Err(e) = with_timeout(REQUEST_TIMEOUT, recorder.publish(&ev, &regarding)).await {
        debug!(%reason, error = %e, "publishing Event failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_names_are_stable_and_distinct() {
        let a = ServiceKey {
            namespace: "default".into(),
            name: "web".into(),
        };
        let b = ServiceKey {
            namespace: "defaul".into(),
            name: "tweb".into(),
        };
        assert_eq!(status_name("n1", &a), status_name("n1", &a));
        assert_ne!(status_name("n1", &a), status_name("n2", &a));
        assert_ne!(status_name("n1", &a), status_name("n1", &b));
        assert_eq!(status_name("n1", &a).len(), 19);
    }
}
