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
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::events::{Recorder, Reporter};
use kube::{Client, ResourceExt};
use serde_json::json;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::eligibility::ServiceKey;
use crate::api::events::Reason;
use crate::api::{
    STATUS_NODE_LABEL, STATUS_SERVICE_NAME_LABEL, STATUS_SERVICE_NAMESPACE_LABEL, ServiceL2Status,
    ServiceL2StatusSpec,
};
use crate::cluster::{RequestTimedOut, with_timeout};

/// Field manager for status writes.
const MANAGER: &str = "l2lb-speaker";
/// How often failed status writes are retried.
const RETRY: Duration = Duration::from_secs(2);
/// Deadline of each API request. One that takes longer is stuck on a
/// connection the network cut (requests normally take milliseconds); it is
/// dropped, logged as a failed write and retried on a fresh connection, so
/// the status follows a heal within seconds instead of TCP's back-off.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(4);
/// How long a request given up on may still reach the API server: the
/// kernel retransmits a closed connection's data for about 100 s, and a
/// request that arrives is executed. A delete that lands after a newer
/// create would remove a status we hold; so for this long after a timeout
/// the writer compares its objects with what it announces (every `RETRY`)
/// and repairs them.
const LATE_ARRIVALS: Duration = Duration::from_secs(120);

/// How long after a takeover our objects are compared with what we announce
/// (every `RETRY`): long enough for the previous owner's clean-up, written
/// alongside its own status, to have landed.
const TAKEOVER_RECHECK: Duration = Duration::from_secs(7);

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
    let mut state = State::default();
    // Objects of a previous run of this node, deleted after the first
    // decision unless claimed again. `None` until listed.
    let mut leftovers: Option<BTreeMap<String, ServiceKey>> = None;
    // Until when requests given up on may still land, and when our objects
    // were last compared with `state.desired` meanwhile.
    let mut recheck_until: Option<Instant> = None;
    let mut rechecked: Option<Instant> = None;
    let mut retry = tokio::time::interval(RETRY);
    retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            msg = rx.recv() => match msg {
                Some(msg) => {
                    if let Some(ev) = state.absorb(msg) {
                        publish(&recorder, ev).await;
                    }
                }
                None => break,
            },
            _ = retry.tick() => {}
            _ = stop.cancelled() => {
                // Take what the loop sent before stopping, then flush once.
                while let Ok(msg) = rx.try_recv() {
                    state.absorb(msg);
                }
                flush(&api, &node, &mut state).await;
                return;
            }
        }
        // Coalesce bursts: take everything already queued before writing.
        while let Ok(msg) = rx.try_recv() {
            if let Some(ev) = state.absorb(msg) {
                publish(&recorder, ev).await;
            }
        }
        if leftovers.is_none() {
            match list_own(&api, &node).await {
                Ok(own) => {
                    leftovers = Some(own.into_iter().map(|o| (o.name, o.service)).collect());
                }
                Err(e) => {
                    debug!(error = %e, "listing own ServiceL2Status objects failed; will retry")
                }
            }
        }
        if let Some(left) = leftovers.as_mut() {
            left.retain(|_, svc| !state.pending.contains_key(svc));
            if state.first_done {
                for svc in std::mem::take(left).into_values() {
                    state.pending.entry(svc).or_insert(Want::Absent);
                }
            }
        }
        let now = Instant::now();
        let late_arrivals_possible = recheck_until.is_some_and(|t| now < t);
        if late_arrivals_possible
            && state.first_done
            && rechecked.is_none_or(|t| now.duration_since(t) >= RETRY)
        {
            rechecked = Some(now);
            if let Ok(own) = list_own(&api, &node).await {
                for (svc, want) in corrections(&state.desired, &own) {
                    debug!(service = %svc, ?want, "repairing ServiceL2Status after a late write");
                    state.pending.entry(svc).or_insert(want);
                }
            }
        }
        // A takeover races the previous owner's own takeover clean-up (it
        // lists the Service's objects and deletes those of other nodes): a
        // hand-over of a few milliseconds can land its delete after our
        // create. So our objects are compared with what we announce for a
        // while after each takeover, as after a request given up on.
        let takeover = state.pending.values().any(|w| {
            matches!(
                w,
                Want::Present {
                    takeover: Some(_),
                    ..
                }
            )
        });
        let timed_out = flush(&api, &node, &mut state).await;
        let now = Instant::now();
        let window = if timed_out {
            Some(LATE_ARRIVALS)
        } else {
            takeover.then_some(TAKEOVER_RECHECK)
        };
        if let Some(window) = window {
            recheck_until = recheck_until.max(Some(now + window));
            rechecked.get_or_insert(now);
        }
    }
}

/// What the writer holds between messages.
#[derive(Debug, Default)]
struct State {
    /// Writes still to make, by Service (a newer want replaces an older one).
    pending: BTreeMap<ServiceKey, Want>,
    /// Services this node announces, with their interfaces: what its
    /// objects must show once every write has landed.
    desired: BTreeMap<ServiceKey, BTreeSet<String>>,
    /// The speaker's first synced decision has been made.
    first_done: bool,
    /// Uid of our object for each Service, as last written or listed.
    uids: BTreeMap<ServiceKey, String>,
}

impl State {
    /// Folds a message into the pending writes; returns an Event to publish.
    fn absorb(&mut self, msg: StatusMsg) -> Option<EventMsg> {
        match &msg {
            StatusMsg::Present {
                service,
                interfaces,
                ..
            } => {
                self.desired.insert(service.clone(), interfaces.clone());
            }
            StatusMsg::Absent(service) => {
                self.desired.remove(service);
            }
            _ => {}
        }
        absorb(msg, &mut self.pending, &mut self.first_done)
    }
}

/// One of this node's status objects as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Own {
    /// Object name.
    name: String,
    /// Object uid: a delete names it, so that it can only ever remove
    /// this object, however late it arrives.
    uid: String,
    /// The Service it is about (from its labels).
    service: ServiceKey,
    /// Interfaces its status names; `None` while it has no status.
    interfaces: Option<BTreeSet<String>>,
}

/// The writes that make this node's objects `own` show `desired`: a
/// status for every Service announced, with its interfaces, and none for
/// any other.
fn corrections(
    desired: &BTreeMap<ServiceKey, BTreeSet<String>>,
    own: &[Own],
) -> Vec<(ServiceKey, Want)> {
    let mut fixes = Vec::new();
    for (svc, interfaces) in desired {
        let shown = own
            .iter()
            .any(|o| o.service == *svc && o.interfaces.as_ref() == Some(interfaces));
        if !shown {
            let want = Want::Present {
                interfaces: interfaces.clone(),
                takeover: None,
            };
            fixes.push((svc.clone(), want));
        }
    }
    for o in own {
        if !desired.contains_key(&o.service) {
            fixes.push((o.service.clone(), Want::Absent));
        }
    }
    fixes
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

/// This node's existing status objects.
async fn list_own(api: &Api<ServiceL2Status>, node: &str) -> Result<Vec<Own>, kube::Error> {
    let lp = ListParams::default().labels(&format!("{STATUS_NODE_LABEL}={node}"));
    let list = with_timeout(REQUEST_TIMEOUT, api.list(&lp)).await?;
    Ok(list
        .items
        .into_iter()
        .filter_map(|s| {
            let labels = s.labels();
            let service = ServiceKey {
                namespace: labels.get(STATUS_SERVICE_NAMESPACE_LABEL)?.clone(),
                name: labels.get(STATUS_SERVICE_NAME_LABEL)?.clone(),
            };
            let interfaces = s
                .status
                .as_ref()
                .map(|st| st.interfaces.iter().map(|i| i.name.clone()).collect());
            Some(Own {
                uid: s.uid().unwrap_or_default(),
                name: s.name_any(),
                service,
                interfaces,
            })
        })
        .collect())
}

/// Attempts every pending write; successful ones leave `pending`. Returns
/// whether a request ran out of time (and so may still land later).
async fn flush(api: &Api<ServiceL2Status>, node: &str, state: &mut State) -> bool {
    let mut timed_out = false;
    // A delete names the uid of the object it removes; list ours when some
    // are not known.
    let uid_unknown = state
        .pending
        .iter()
        .any(|(svc, w)| *w == Want::Absent && !state.uids.contains_key(svc));
    let listed = if uid_unknown {
        match list_own(api, node).await {
            Ok(own) => {
                for o in &own {
                    state.uids.insert(o.service.clone(), o.uid.clone());
                }
                true
            }
            Err(e) => {
                timed_out |= RequestTimedOut::is(&e);
                warn!(error = %e, "listing own ServiceL2Status objects failed; will retry");
                false
            }
        }
    } else {
        false
    };
    let work: Vec<(ServiceKey, Want)> = state
        .pending
        .iter()
        .map(|(k, w)| (k.clone(), w.clone()))
        .collect();
    for (svc, want) in work {
        let result = match &want {
            Want::Present {
                interfaces,
                takeover,
            } => write_present(api, node, &svc, interfaces, takeover.as_ref())
                .await
                .map(|uid| {
                    state.uids.insert(svc.clone(), uid);
                }),
            Want::Absent => match state.uids.get(&svc).cloned() {
                Some(uid) => write_absent(api, &status_name(node, &svc), &uid).await,
                // Listed just now and not there: nothing to delete.
                None if listed => Ok(()),
                // Not listed (the list failed, logged above): next round.
                None => continue,
            },
        };
        match result {
            Ok(()) => {
                if want == Want::Absent {
                    state.uids.remove(&svc);
                }
                if state.pending.get(&svc) == Some(&want) {
                    state.pending.remove(&svc);
                }
            }
            Err(kube::Error::Api(e)) if e.code == 409 && want == Want::Absent => {
                // The object is a newer one than we knew: list again.
                state.uids.remove(&svc);
                debug!(service = %svc, "ServiceL2Status replaced since last seen; will retry");
            }
            Err(e) => {
                timed_out |= RequestTimedOut::is(&e);
                warn!(service = %svc, error = %e, "ServiceL2Status write failed; will retry");
            }
        }
    }
    timed_out
}

async fn write_present(
    api: &Api<ServiceL2Status>,
    node: &str,
    svc: &ServiceKey,
    interfaces: &BTreeSet<String>,
    takeover: Option<&BTreeSet<String>>,
) -> Result<String, kube::Error> {
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
    let written = with_timeout(
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
                let uid = other.uid().unwrap_or_default();
                match write_absent(api, &other.name_any(), &uid).await {
                    // Its node wrote a new one since we listed: it holds it again.
                    Err(kube::Error::Api(e)) if e.code == 409 => {}
                    r => r?,
                }
            }
        }
    }
    Ok(written.uid().unwrap_or_default())
}

/// Deletes the object `name` if it is still the one with `uid`: a delete
/// that arrives late (see [`LATE_ARRIVALS`]) cannot remove a newer object
/// of the same name. 409 when the object is another one.
async fn write_absent(
    api: &Api<ServiceL2Status>,
    name: &str,
    uid: &str,
) -> Result<(), kube::Error> {
    debug!(name, uid, "deleting ServiceL2Status");
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: Some(uid.to_string()),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match with_timeout(REQUEST_TIMEOUT, api.delete(name, &params)).await {
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

    fn svc(name: &str) -> ServiceKey {
        ServiceKey {
            namespace: "default".into(),
            name: name.into(),
        }
    }

    fn ifaces(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    fn own(name: &str, interfaces: Option<&[&str]>) -> Own {
        Own {
            name: status_name("n1", &svc(name)),
            uid: format!("uid-{name}"),
            service: svc(name),
            interfaces: interfaces.map(ifaces),
        }
    }

    #[test]
    fn late_writes_are_repaired_towards_what_is_announced() {
        let desired: BTreeMap<ServiceKey, BTreeSet<String>> = [
            (svc("kept"), ifaces(&["eth0"])),
            (svc("deleted-late"), ifaces(&["eth0"])),
            (svc("unpatched"), ifaces(&["eth0"])),
            (svc("moved"), ifaces(&["eth1"])),
        ]
        .into();
        let listed = [
            own("kept", Some(&["eth0"])),
            own("unpatched", None),
            own("moved", Some(&["eth0"])),
            own("created-late", Some(&["eth0"])),
        ];
        let present = |i: &[&str]| Want::Present {
            interfaces: ifaces(i),
            takeover: None,
        };
        assert_eq!(
            corrections(&desired, &listed),
            vec![
                (svc("deleted-late"), present(&["eth0"])),
                (svc("moved"), present(&["eth1"])),
                (svc("unpatched"), present(&["eth0"])),
                (svc("created-late"), Want::Absent),
            ]
        );
        assert!(corrections(&desired, &listed[..1]).len() == 3);
        assert!(corrections(&BTreeMap::new(), &[]).is_empty());
    }

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
