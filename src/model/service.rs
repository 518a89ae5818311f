//! Services as l2lb sees them: which are ours, what they ask IPAM for, and
//! the `status.loadBalancer` that publishes their addresses.
//!
//! Pure translation; no API calls happen here.

use crate::api::LOAD_BALANCER_CLASS;
use crate::api::annotations::{self, AnnotationError};
use crate::ipam::{Family, FamilyPolicy, HintPrefix, Protocol, ServiceKey, ServiceRequest};
use crate::labels::{Labels, SelectorError};
use k8s_openapi::api::core::v1::{LoadBalancerIngress, LoadBalancerStatus, Service};
use kube::ResourceExt;
use std::net::IpAddr;

/// Why a Service or pool object cannot be turned into IPAM input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConvertError {
    /// The Service's annotations are contradictory or unparsable.
    #[error(transparent)]
    Annotation(#[from] AnnotationError),
    /// A label selector in a pool's `serviceAllocation` is malformed.
    #[error("pool {pool}: {source}")]
    Selector {
        /// The pool's name.
        pool: String,
        /// What is wrong with the selector.
        source: SelectorError,
    },
}

/// Key of a Service object.
pub fn service_key(svc: &Service) -> ServiceKey {
    ServiceKey {
        namespace: svc.namespace().unwrap_or_default(),
        name: svc.name_any(),
    }
}

/// Which Services l2lb handles: `type: LoadBalancer` with our
/// `loadBalancerClass`, and, unless the class is required, those with no
/// class at all. The controller and the speaker are given the same filter
/// (`--require-class` on both), so a Service the controller leaves alone is
/// never announced either.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClassFilter {
    /// Handle only Services that name [`LOAD_BALANCER_CLASS`].
    pub require_class: bool,
}

impl ClassFilter {
    /// The filter for `--require-class` set (`true`) or not.
    pub fn new(require_class: bool) -> Self {
        Self { require_class }
    }

    /// Whether l2lb handles `svc`.
    pub fn is_ours(&self, svc: &Service) -> bool {
        let Some(spec) = &svc.spec else { return false };
        if spec.type_.as_deref() != Some("LoadBalancer") {
            return false;
        }
        match spec.load_balancer_class.as_deref() {
            Some(class) => class == LOAD_BALANCER_CLASS,
            None => !self.require_class,
        }
    }
}

/// Seconds since the epoch of an object's creation; 0 when unknown.
pub(crate) fn created(ts: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>) -> i64 {
    ts.map(|t| t.0.as_second()).unwrap_or(0)
}

fn family(s: &str) -> Option<Family> {
    match s {
        "IPv4" => Some(Family::V4),
        "IPv6" => Some(Family::V6),
        _ => None,
    }
}

fn protocol(s: Option<&str>) -> Protocol {
    match s {
        Some("UDP") => Protocol::Udp,
        Some("SCTP") => Protocol::Sctp,
        _ => Protocol::Tcp,
    }
}

/// Builds the IPAM request for a Service in a namespace with `namespace_labels`.
pub fn service_request(
    svc: &Service,
    namespace_labels: &Labels,
) -> Result<ServiceRequest, ConvertError> {
    let spec = svc.spec.clone().unwrap_or_default();
    let wanted = annotations::parse(svc.annotations(), spec.load_balancer_ip.as_deref())?;
    let mut families: Vec<Family> = spec
        .ip_families
        .iter()
        .flatten()
        .filter_map(|f| family(f))
        .collect();
    families.dedup();
    let family_policy = match spec.ip_family_policy.as_deref() {
        Some("PreferDualStack") => FamilyPolicy::PreferDualStack,
        Some("RequireDualStack") => FamilyPolicy::RequireDualStack,
        _ => FamilyPolicy::SingleStack,
    };
    // A Service that requests IPs of a family its ipFamilies do not list
    // still names what it wants: IPAM reports the mismatch in words.
    let ports = spec
        .ports
        .iter()
        .flatten()
        .map(|p| (protocol(p.protocol.as_deref()), p.port as u16))
        .collect();
    let local_selector = (spec.external_traffic_policy.as_deref() == Some("Local"))
        .then(|| spec.selector.clone().unwrap_or_default());
    Ok(ServiceRequest {
        key: service_key(svc),
        created: created(svc.metadata.creation_timestamp.as_ref()),
        labels: svc.labels().clone(),
        namespace_labels: namespace_labels.clone(),
        pool: wanted.pool,
        ips: wanted.ips,
        families,
        family_policy,
        sharing_key: wanted.sharing_key,
        ports,
        local_selector,
        hint_prefix: HintPrefix::from_prefix(wanted.prefix),
    })
}

/// The IPs currently published in `status.loadBalancer.ingress`.
pub fn ingress_ips(svc: &Service) -> Vec<IpAddr> {
    svc.status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|i| i.ip.as_deref()?.parse().ok())
        .collect()
}

/// The `status.loadBalancer` that publishes `ips` (empty clears it).
pub fn load_balancer_status(ips: &[IpAddr]) -> LoadBalancerStatus {
    LoadBalancerStatus {
        ingress: (!ips.is_empty()).then(|| {
            ips.iter()
                .map(|ip| LoadBalancerIngress {
                    ip: Some(ip.to_string()),
                    ip_mode: Some("VIP".to_string()),
                    ..Default::default()
                })
                .collect()
        }),
    }
}

/// Whether the published status already says exactly `ips` with `ipMode: VIP`.
pub fn status_matches(svc: &Service, ips: &[IpAddr]) -> bool {
    let current = svc
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.clone())
        .unwrap_or_default();
    let want = load_balancer_status(ips);
    current.ingress.unwrap_or_default() == want.ingress.unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures;
    use serde_json::json;

    #[test]
    fn only_load_balancers_of_our_class_or_no_class_are_ours() {
        let lb = |class: Option<&str>| -> Service {
            fixtures::service("a")
                .spec(json!({"loadBalancerClass": class}))
                .build()
        };
        let (any, required) = (ClassFilter::new(false), ClassFilter::new(true));
        assert!(any.is_ours(&lb(None)));
        assert!(!required.is_ours(&lb(None)));
        assert!(required.is_ours(&lb(Some("l2lb.io/l2"))));
        assert!(!any.is_ours(&lb(Some("other.io/lb"))));
        let cluster_ip: Service = fixtures::service("a")
            .spec(json!({"type": "ClusterIP"}))
            .build();
        assert!(!any.is_ours(&cluster_ip));
    }

    #[test]
    fn request_carries_annotations_families_ports_and_local_policy() {
        let s: Service = fixtures::service("x")
            .annotate("metallb.io/address-pool", "blue")
            .annotate("l2lb.io/allow-shared-ip", "k")
            .spec(json!({"ipFamilies": ["IPv6", "IPv4"],
                         "ipFamilyPolicy": "RequireDualStack", "externalTrafficPolicy": "Local",
                         "ports": [{"port": 53, "protocol": "UDP"}, {"port": 80}]}))
            .build();
        let r = service_request(&s, &Labels::new()).unwrap();
        assert_eq!(r.pool.as_deref(), Some("blue"));
        assert_eq!(r.sharing_key.as_deref(), Some("k"));
        assert_eq!(r.families, vec![Family::V6, Family::V4]);
        assert!(matches!(r.family_policy, FamilyPolicy::RequireDualStack));
        assert_eq!(r.ports, vec![(Protocol::Udp, 53), (Protocol::Tcp, 80)]);
        assert_eq!(
            r.local_selector.unwrap().get("app").map(String::as_str),
            Some("x")
        );
    }

    #[test]
    fn bad_annotations_are_a_typed_error() {
        let s: Service = fixtures::service("a")
            .annotate("l2lb.io/loadBalancerIPs", "not-an-ip")
            .build();
        assert!(matches!(
            service_request(&s, &Labels::new()),
            Err(ConvertError::Annotation(_))
        ));
    }

    #[test]
    fn status_round_trips_and_compares() {
        let ips: Vec<IpAddr> = vec!["198.18.0.100".parse().unwrap()];
        let mut s: Service = fixtures::service("a").build();
        assert!(!status_matches(&s, &ips));
        assert!(status_matches(&s, &[]));
        s.status = Some(k8s_openapi::api::core::v1::ServiceStatus {
            load_balancer: Some(load_balancer_status(&ips)),
            ..Default::default()
        });
        assert_eq!(ingress_ips(&s), ips);
        assert!(status_matches(&s, &ips));
        assert!(!status_matches(&s, &[]));
    }
}
