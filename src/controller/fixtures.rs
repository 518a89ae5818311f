//! The controller's view of the shared test builders (`crate::fixtures`):
//! Services as the controller's unit tests want them (no selector, so two
//! `Local` Services can share; a resourceVersion, as writes are conditional
//! on it) and objects shared as the caches hold them.

use crate::api::IPAddressPool;
use crate::fixtures::{self, Fixture};
use crate::labels::Labels;
use serde_json::json;
use std::sync::Arc;

/// A LoadBalancer Service `default/<name>` on TCP port 80, created
/// `created` seconds after the fixtures' epoch; `.build_arc()` it.
pub(super) fn svc(name: &str, created: i64) -> Fixture {
    fixtures::service(name).created(created).merge(json!({
        "metadata": {"resourceVersion": "1", "labels": null},
        "spec": {"selector": null, "ports": [{"port": 80, "protocol": "TCP"}]},
    }))
}

/// A pool in the install namespace, created `created` seconds after the
/// fixtures' epoch.
pub(super) fn pool(name: &str, created: i64, addresses: &[&str]) -> Arc<IPAddressPool> {
    fixtures::pool(name, addresses).created(created).build_arc()
}

/// Namespace labels for tests that do not select on them.
pub(super) fn no_labels(_: &str) -> Labels {
    Labels::new()
}
