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

// Only what the code does, as the RBAC coverage test in tests/e2e_lab.rs
// observes it: watched kinds are listed and watched (kube's reflectors
// never GET one object), and every write is a PATCH (never an UPDATE).
const READ: &[&str] = &["list", "watch"];
const WRITE_STATUS: &[&str] = &["patch"];
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
        group: "l2lb.io",
        resource: "l2advertisements",
        verbs: READ,
        scope: Scope::InstallNamespace,
    },
    Permission {
        group: "coordination.k8s.io",
        resource: "leases",
        verbs: &["get", "create", "patch"],
        scope: Scope::InstallNamespace,
    },
    // The fast-path key Secret, created when missing (never read back or
    // changed): see `controller::fastpath_secret`.
    Permission {
        group: "",
        resource: "secrets",
        verbs: &["get", "create"],
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
        verbs: &["list", "create", "delete"],
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
        verbs: &["get", "list", "watch", "create", "patch"],
        scope: Scope::InstallNamespace,
    },
];

/// The components and their tables, in manifest order.
pub const COMPONENTS: [(&str, &[Permission]); 2] =
    [("controller", CONTROLLER), ("speaker", SPEAKER)];

/// Who is calling the API server. Each component's client announces itself
/// in its User-Agent, so audit logs (and the RBAC coverage test) can tell
/// which permissions each one really uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Component {
    /// `l2lb controller` (ServiceAccount `l2lb-controller`).
    Controller,
    /// `l2lb speaker` (ServiceAccount `l2lb-speaker`).
    Speaker,
    /// `l2lb status` and other commands run by a person with their own credentials.
    Cli,
}

impl Component {
    /// The User-Agent its client sends: `l2lb-<component>/<version>`.
    pub fn user_agent(self) -> String {
        let name = match self {
            Component::Controller => "controller",
            Component::Speaker => "speaker",
            Component::Cli => "cli",
        };
        format!("l2lb-{name}/{}", env!("CARGO_PKG_VERSION"))
    }

    /// The component a User-Agent names.
    pub fn from_user_agent(agent: &str) -> Option<Self> {
        [Component::Controller, Component::Speaker, Component::Cli]
            .into_iter()
            .find(|c| c.user_agent() == agent)
    }

    /// What its ServiceAccount may do (the CLI runs as the user: nothing
    /// is granted for it).
    pub fn permissions(self) -> &'static [Permission] {
        match self {
            Component::Controller => CONTROLLER,
            Component::Speaker => SPEAKER,
            Component::Cli => &[],
        }
    }
}

/// Whether `table` allows `verb` on `group`/`resource`.
pub fn allows(table: &[Permission], group: &str, resource: &str, verb: &str) -> bool {
    table
        .iter()
        .any(|p| p.group == group && p.resource == resource && p.verbs.contains(&verb))
}

/// Whether `table` allows `verb` on `group`/`resource` in `namespace`
/// (`None`: cluster-wide or a cluster-scoped kind), given the install
/// namespace: a Role grants only inside it, a ClusterRole everywhere.
pub fn allows_in(
    table: &[Permission],
    group: &str,
    resource: &str,
    verb: &str,
    namespace: Option<&str>,
    install_namespace: &str,
) -> bool {
    table.iter().any(|p| {
        p.group == group
            && p.resource == resource
            && p.verbs.contains(&verb)
            && (p.scope == Scope::Cluster || namespace == Some(install_namespace))
    })
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
    fn roles_grant_only_in_the_install_namespace() {
        let ns = crate::api::INSTALL_NAMESPACE;
        let lease = |namespace| {
            allows_in(
                SPEAKER,
                "coordination.k8s.io",
                "leases",
                "patch",
                namespace,
                ns,
            )
        };
        assert!(lease(Some(ns)));
        assert!(!lease(Some("default")));
        assert!(!lease(None));
        assert!(allows_in(SPEAKER, "", "services", "watch", None, ns));
        assert!(allows_in(
            SPEAKER,
            "",
            "services",
            "list",
            Some("default"),
            ns
        ));
        assert!(!allows_in(
            SPEAKER,
            "",
            "services",
            "get",
            Some("default"),
            ns
        ));
    }

    #[test]
    fn user_agents_name_their_component() {
        for c in [Component::Controller, Component::Speaker, Component::Cli] {
            assert_eq!(Component::from_user_agent(&c.user_agent()), Some(c));
        }
        assert!(
            Component::Controller
                .user_agent()
                .starts_with("l2lb-controller/")
        );
        assert_eq!(Component::from_user_agent("kubectl/v1.33"), None);
    }

    #[test]
    fn the_speaker_never_writes_services() {
        for verb in ["create", "update", "patch", "delete"] {
            assert!(!allows(SPEAKER, "", "services", verb));
            assert!(!allows(SPEAKER, "", "services/status", verb));
        }
    }
}
