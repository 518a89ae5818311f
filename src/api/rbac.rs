//! The permissions each component needs, declared once.
//!
//! `deploy/rbac.yaml` is generated from these tables (`l2lb rbac`), a test
//! fails when it drifts, and the integration tests check that every request
//! a component makes against the test API server is covered here. Adding an
//! API call without its permission therefore fails CI, not a cluster.

use serde_json::json;

/// Where a permission applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Cluster-wide (ClusterRole): objects in any namespace, or cluster-scoped kinds.
    Cluster,
    /// Only the install namespace (Role).
    InstallNamespace,
}

/// One RBAC rule: verbs on a resource of an API group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Permission {
    /// API group; "" is the core group.
    pub group: &'static str,
    /// Resource, with `/subresource` where it applies.
    pub resource: &'static str,
    /// Verbs allowed.
    pub verbs: &'static [&'static str],
    /// Cluster-wide or install namespace only.
    pub scope: Scope,
}

const READ: &[&str] = &["get", "list", "watch"];
const WRITE_STATUS: &[&str] = &["update", "patch"];
const EVENTS: &[&str] = &["create", "patch"];

/// What `l2lb controller` needs.
pub const CONTROLLER: &[Permission] = &[
    Permission {
        group: "",
        resource: "services",
        verbs: READ,
        scope: Scope::Cluster,
    },
    Permission {
        group: "",
        resource: "services/status",
        verbs: WRITE_STATUS,
        scope: Scope::Cluster,
    },
    Permission {
        group: "",
        resource: "namespaces",
        verbs: READ,
        scope: Scope::Cluster,
    },
    Permission {
        group: "events.k8s.io",
        resource: "events",
        verbs: EVENTS,
        scope: Scope::Cluster,
    },
    Permission {
        group: "l2lb.io",
        resource: "ipaddresspools",
        verbs: READ,
        scope: Scope::InstallNamespace,
    },
    Permission {
        group: "l2lb.io",
        resource: "ipaddresspools/status",
        verbs: WRITE_STATUS,
        scope: Scope::InstallNamespace,
    },
    Permission {
        group: "coordination.k8s.io",
        resource: "leases",
        verbs: &["get", "create", "update", "patch"],
        scope: Scope::InstallNamespace,
    },
];

/// What `l2lb speaker` needs.
pub const SPEAKER: &[Permission] = &[
    Permission {
        group: "",
        resource: "services",
        verbs: READ,
        scope: Scope::Cluster,
    },
    Permission {
        group: "",
        resource: "nodes",
        verbs: READ,
        scope: Scope::Cluster,
    },
    Permission {
        group: "discovery.k8s.io",
        resource: "endpointslices",
        verbs: READ,
        scope: Scope::Cluster,
    },
    Permission {
        group: "events.k8s.io",
        resource: "events",
        verbs: EVENTS,
        scope: Scope::Cluster,
    },
    Permission {
        group: "l2lb.io",
        resource: "ipaddresspools",
        verbs: READ,
        scope: Scope::InstallNamespace,
    },
    Permission {
        group: "l2lb.io",
        resource: "l2advertisements",
        verbs: READ,
        scope: Scope::InstallNamespace,
    },
    Permission {
        group: "l2lb.io",
        resource: "servicel2statuses",
        verbs: &[
            "get", "list", "watch", "create", "update", "patch", "delete",
        ],
        scope: Scope::InstallNamespace,
    },
    Permission {
        group: "l2lb.io",
        resource: "servicel2statuses/status",
        verbs: WRITE_STATUS,
        scope: Scope::InstallNamespace,
    },
    Permission {
        group: "coordination.k8s.io",
        resource: "leases",
        verbs: &["get", "list", "watch", "create", "update", "patch"],
        scope: Scope::InstallNamespace,
    },
];

/// The components and their tables, in manifest order.
pub const COMPONENTS: [(&str, &[Permission]); 2] =
    [("controller", CONTROLLER), ("speaker", SPEAKER)];

/// Whether `table` allows `verb` on `group`/`resource`.
pub fn allows(table: &[Permission], group: &str, resource: &str, verb: &str) -> bool {
    table
        .iter()
        .any(|p| p.group == group && p.resource == resource && p.verbs.contains(&verb))
}

fn rules(table: &[Permission], scope: Scope) -> Vec<serde_json::Value> {
    table
        .iter()
        .filter(|p| p.scope == scope)
        .map(|p| json!({ "apiGroups": [p.group], "resources": [p.resource], "verbs": p.verbs }))
        .collect()
}

/// ServiceAccounts, (Cluster)Roles and bindings for every component, as the
/// multi-document YAML committed in `deploy/rbac.yaml`.
pub fn yaml(namespace: &str) -> Result<String, serde_yaml::Error> {
    let mut docs = Vec::new();
    for (component, table) in COMPONENTS {
        let name = format!("l2lb-{component}");
        let subject = json!([{ "kind": "ServiceAccount", "name": name, "namespace": namespace }]);
        docs.push(json!({
            "apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": { "name": name, "namespace": namespace },
        }));
        docs.push(json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": { "name": name }, "rules": rules(table, Scope::Cluster),
        }));
        docs.push(json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": { "name": name },
            "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name },
            "subjects": subject,
        }));
        docs.push(json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": { "name": name, "namespace": namespace }, "rules": rules(table, Scope::InstallNamespace),
        }));
        docs.push(json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": { "name": name, "namespace": namespace },
            "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name },
            "subjects": subject,
        }));
    }
    let mut out = String::from("# Generated by `l2lb rbac` from src/api/rbac.rs; do not edit.\n");
    for doc in docs {
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(&doc)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn committed_rbac_matches_the_tables() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/rbac.yaml");
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            committed == yaml(crate::api::INSTALL_NAMESPACE).unwrap(),
            "deploy/rbac.yaml is out of date: run `cargo run -- rbac > deploy/rbac.yaml`"
        );
    }

    #[test]
    fn the_speaker_never_writes_services() {
        for verb in ["create", "update", "patch", "delete"] {
            assert!(!allows(SPEAKER, "", "services", verb));
            assert!(!allows(SPEAKER, "", "services/status", verb));
        }
    }
}
