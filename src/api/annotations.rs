//! Service annotations, parsed in one place.
//!
//! Each setting may be spelled with our prefix (`l2lb.io/`) or MetalLB's
//! (`metallb.io/`, `metallb.universe.tf/`), so existing Services migrate
//! unchanged. Two spellings with different values are a conflict, never a
//! silent pick.

use std::collections::BTreeMap;
use std::net::IpAddr;

/// Prefixes accepted for every annotation, ours first.
pub const PREFIXES: [&str; 3] = ["l2lb.io/", "metallb.io/", "metallb.universe.tf/"];
/// Annotation naming the pool a Service wants its address from.
pub const ADDRESS_POOL: &str = "address-pool";
/// Annotation listing the IPs a Service wants (comma list, at most one per family).
pub const LOAD_BALANCER_IPS: &str = "loadBalancerIPs";
/// Annotation with the sharing key that lets Services share one IP.
pub const ALLOW_SHARED_IP: &str = "allow-shared-ip";
/// The settings, without prefix.
const NAMES: [&str; 3] = [ADDRESS_POOL, LOAD_BALANCER_IPS, ALLOW_SHARED_IP];
/// MetalLB's old prefix: still read, but MetalLB warns it is deprecated.
pub const DEPRECATED_PREFIX: &str = "metallb.universe.tf/";
/// The prefix MetalLB asks users to move to from [`DEPRECATED_PREFIX`].
pub const METALLB_PREFIX: &str = "metallb.io/";

/// What a Service asks of l2lb through annotations and `spec.loadBalancerIP`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceAnnotations {
    /// Pool the Service asks for by name.
    pub pool: Option<String>,
    /// Specific IPs the Service asks for, at most one per family.
    pub ips: Vec<IpAddr>,
    /// Sharing key: Services with equal keys may share an IP.
    pub sharing_key: Option<String>,
    /// The prefix this Service spells its settings with (ours when it uses
    /// none), so hints in messages name annotations the user recognises.
    pub prefix: &'static str,
}

/// The prefix a Service spells its l2lb settings with: the first of
/// [`PREFIXES`] that any of its settings uses, ours when it uses none.
pub fn prefix_in_use(annotations: &BTreeMap<String, String>) -> &'static str {
    PREFIXES
        .into_iter()
        .find(|prefix| {
            NAMES
                .iter()
                .any(|name| annotations.contains_key(&format!("{prefix}{name}")))
        })
        .unwrap_or(PREFIXES[0])
}

/// Whether the Service carries an `allow-shared-ip` annotation under any
/// prefix, whatever its value (MetalLB's speaker tests presence only).
pub fn has_sharing_annotation(annotations: &BTreeMap<String, String>) -> bool {
    PREFIXES
        .iter()
        .any(|prefix| annotations.contains_key(&format!("{prefix}{ALLOW_SHARED_IP}")))
}

/// The Service's settings spelled with the deprecated
/// `metallb.universe.tf/` prefix, sorted.
pub fn deprecated_keys(annotations: &BTreeMap<String, String>) -> Vec<String> {
    NAMES
        .iter()
        .map(|name| format!("{DEPRECATED_PREFIX}{name}"))
        .filter(|key| annotations.contains_key(key))
        .collect()
}

/// Why a Service's annotations cannot be honoured. Messages name the
/// annotation and say what to change.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AnnotationError {
    /// The same setting is given twice with different values.
    #[error("annotations {a} ({a_value:?}) and {b} ({b_value:?}) disagree; keep one of them")]
    Conflicting {
        /// First annotation key.
        a: String,
        /// Its value.
        a_value: String,
        /// Second annotation key.
        b: String,
        /// Its value.
        b_value: String,
    },
    /// Both `spec.loadBalancerIP` and a loadBalancerIPs annotation are set.
    #[error(
        "spec.loadBalancerIP ({spec}) and annotation {key} ({value:?}) are both set; remove spec.loadBalancerIP (it is deprecated)"
    )]
    SpecAndAnnotation {
        /// Value of `spec.loadBalancerIP`.
        spec: String,
        /// The annotation key that also requests IPs.
        key: String,
        /// Its value.
        value: String,
    },
    /// An entry is not an IP address.
    #[error("{key}: {value:?} is not an IP address")]
    InvalidIp {
        /// Annotation key (or `spec.loadBalancerIP`).
        key: String,
        /// The entry that failed to parse.
        value: String,
    },
    /// Two IPs of one family were requested.
    #[error("{key}: {first} and {second} are both {family}; request at most one IP per family")]
    TwoOfOneFamily {
        /// Annotation key.
        key: String,
        /// `IPv4` or `IPv6`.
        family: &'static str,
        /// First IP of that family.
        first: IpAddr,
        /// Second IP of that family.
        second: IpAddr,
    },
    /// A value that must not be empty is empty.
    #[error("{key} is empty; remove it or give it a value")]
    Empty {
        /// Annotation key.
        key: String,
    },
}

/// Finds the one value of setting `name` across all prefixes.
fn lookup(
    annotations: &BTreeMap<String, String>,
    name: &str,
) -> Result<Option<(String, String)>, AnnotationError> {
    let mut found: Option<(String, String)> = None;
    for prefix in PREFIXES {
        let key = format!("{prefix}{name}");
        let Some(value) = annotations.get(&key) else {
            continue;
        };
        let value = value.trim().to_string();
        match &found {
            Some((a, a_value)) if *a_value != value => {
                return Err(AnnotationError::Conflicting {
                    a: a.clone(),
                    a_value: a_value.clone(),
                    b: key,
                    b_value: value,
                });
            }
            Some(_) => {}
            None => found = Some((key, value)),
        }
    }
    match found {
        Some((key, v)) if v.is_empty() => Err(AnnotationError::Empty { key }),
        other => Ok(other),
    }
}

fn family(ip: &IpAddr) -> &'static str {
    if ip.is_ipv4() { "IPv4" } else { "IPv6" }
}

fn parse_ips(key: &str, value: &str) -> Result<Vec<IpAddr>, AnnotationError> {
    let mut ips: Vec<IpAddr> = Vec::new();
    for part in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let ip: IpAddr = part.parse().map_err(|_| AnnotationError::InvalidIp {
            key: key.to_string(),
            value: part.to_string(),
        })?;
        if let Some(first) = ips.iter().find(|o| o.is_ipv4() == ip.is_ipv4()) {
            return Err(AnnotationError::TwoOfOneFamily {
                key: key.to_string(),
                family: family(&ip),
                first: *first,
                second: ip,
            });
        }
        ips.push(ip);
    }
    Ok(ips)
}

/// Parses a Service's l2lb settings from its annotations and its
/// (deprecated) `spec.loadBalancerIP`.
pub fn parse(
    annotations: &BTreeMap<String, String>,
    spec_load_balancer_ip: Option<&str>,
) -> Result<ServiceAnnotations, AnnotationError> {
    let pool = lookup(annotations, ADDRESS_POOL)?.map(|(_, v)| v);
    let sharing_key = lookup(annotations, ALLOW_SHARED_IP)?.map(|(_, v)| v);
    let spec_ip = spec_load_balancer_ip
        .map(str::trim)
        .filter(|s| !s.is_empty());
    let ips = match (lookup(annotations, LOAD_BALANCER_IPS)?, spec_ip) {
        (Some((key, value)), Some(spec)) => {
            return Err(AnnotationError::SpecAndAnnotation {
                spec: spec.to_string(),
                key,
                value,
            });
        }
        (Some((key, value)), None) => parse_ips(&key, &value)?,
        (None, Some(spec)) => parse_ips("spec.loadBalancerIP", spec)?,
        (None, None) => Vec::new(),
    };
    Ok(ServiceAnnotations {
        pool,
        ips,
        sharing_key,
        prefix: prefix_in_use(annotations),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ann(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn every_prefix_is_accepted() {
        for prefix in PREFIXES {
            let a = ann(&[
                (&format!("{prefix}address-pool"), "blue"),
                (
                    &format!("{prefix}loadBalancerIPs"),
                    "198.18.0.5, 2001:db8::5",
                ),
                (&format!("{prefix}allow-shared-ip"), "k"),
            ]);
            let got = parse(&a, None).unwrap();
            assert_eq!(got.pool.as_deref(), Some("blue"));
            assert_eq!(got.ips.len(), 2);
            assert_eq!(got.sharing_key.as_deref(), Some("k"));
        }
    }

    #[test]
    fn equal_aliases_agree_and_different_ones_conflict() {
        let same = ann(&[
            ("l2lb.io/address-pool", "a"),
            ("metallb.io/address-pool", "a"),
        ]);
        assert_eq!(parse(&same, None).unwrap().pool.as_deref(), Some("a"));
        let diff = ann(&[
            ("l2lb.io/address-pool", "a"),
            ("metallb.universe.tf/address-pool", "b"),
        ]);
        let err = parse(&diff, None).unwrap_err();
        assert!(matches!(err, AnnotationError::Conflicting { .. }));
        assert!(err.to_string().contains("metallb.universe.tf/address-pool"));
    }

    #[test]
    fn the_prefix_in_use_and_deprecated_keys_are_found() {
        assert_eq!(prefix_in_use(&ann(&[("app", "x")])), "l2lb.io/");
        let mixed = ann(&[
            ("metallb.universe.tf/allow-shared-ip", "k"),
            ("metallb.io/address-pool", "p"),
        ]);
        assert_eq!(prefix_in_use(&mixed), "metallb.io/");
        assert_eq!(
            deprecated_keys(&mixed),
            vec!["metallb.universe.tf/allow-shared-ip".to_string()]
        );
        assert!(deprecated_keys(&ann(&[("metallb.universe.tf/other", "x")])).is_empty());
    }

    #[test]
    fn spec_ip_and_annotation_conflict() {
        let a = ann(&[("l2lb.io/loadBalancerIPs", "198.18.0.5")]);
        let err = parse(&a, Some("198.18.0.6")).unwrap_err();
        assert!(matches!(err, AnnotationError::SpecAndAnnotation { .. }));
        assert!(err.to_string().contains("remove spec.loadBalancerIP"));
    }

    #[test]
    fn spec_ip_alone_is_a_request() {
        let got = parse(&BTreeMap::new(), Some("198.18.0.7")).unwrap();
        assert_eq!(got.ips, vec!["198.18.0.7".parse::<IpAddr>().unwrap()]);
        assert!(parse(&BTreeMap::new(), Some("")).unwrap().ips.is_empty());
    }

    #[test]
    fn two_of_one_family_is_rejected() {
        let a = ann(&[("metallb.io/loadBalancerIPs", "198.18.0.5,198.18.0.6")]);
        let err = parse(&a, None).unwrap_err();
        assert!(matches!(
            err,
            AnnotationError::TwoOfOneFamily { family: "IPv4", .. }
        ));
    }

    #[test]
    fn garbage_and_empty_are_rejected() {
        let a = ann(&[("l2lb.io/loadBalancerIPs", "198.18.0.5,banana")]);
        assert_eq!(
            parse(&a, None).unwrap_err(),
            AnnotationError::InvalidIp {
                key: "l2lb.io/loadBalancerIPs".into(),
                value: "banana".into()
            }
        );
        let e = ann(&[("l2lb.io/allow-shared-ip", " ")]);
        assert!(matches!(
            parse(&e, None).unwrap_err(),
            AnnotationError::Empty { .. }
        ));
        assert!(parse(&BTreeMap::new(), Some("1.2.3")).is_err());
    }
}
