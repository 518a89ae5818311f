//! IPAddressPools as IPAM sees them, and the one answer to "which pool does
//! this VIP belong to".
//!
//! A pool whose `serviceAllocation` selectors cannot be parsed is kept, with
//! automatic assignment off: the Services already holding its addresses keep
//! them (the controller) and go on being announced (the speaker). Dropping
//! such a pool would cost users their addresses for a typo in a selector.

use std::collections::BTreeMap;
use std::net::IpAddr;

use kube::ResourceExt;

use super::service::{ConvertError, created};
use crate::api::{self, IPAddressPool};
use crate::ipam::{AllocationScope, Allocator, PoolSpec};

/// Builds the IPAM view of a pool object; fails on a malformed
/// `serviceAllocation` selector. Most callers want [`PoolSpecs`], which
/// applies the rule for such pools.
pub fn pool_spec(pool: &IPAddressPool) -> Result<PoolSpec, ConvertError> {
    let name = pool.name_any();
    let allocation = match &pool.spec.service_allocation {
        None => None,
        Some(sa) => {
            let err = |source| ConvertError::Selector {
                pool: name.clone(),
                source,
            };
            Some(AllocationScope {
                priority: sa.priority,
                namespaces: sa.namespaces.clone(),
                namespace_selectors: api::selectors(&sa.namespace_selectors).map_err(err)?,
                service_selectors: api::selectors(&sa.service_selectors).map_err(err)?,
            })
        }
    };
    Ok(PoolSpec {
        name,
        created: created(pool.metadata.creation_timestamp.as_ref()),
        addresses: pool.spec.addresses.clone(),
        auto_assign: pool.spec.auto_assign,
        avoid_buggy_ips: pool.spec.avoid_buggy_ips,
        allocation,
    })
}

/// Every pool object as IPAM input, malformed ones included (see the module
/// doc), with what is wrong with each malformed one.
#[derive(Clone, Debug, Default)]
pub struct PoolSpecs {
    /// One spec per pool object, in the order given.
    pub specs: Vec<PoolSpec>,
    /// Pool name → why its `serviceAllocation` was ignored and automatic
    /// assignment turned off (for the pool's `Invalid` condition and logs).
    pub errors: BTreeMap<String, ConvertError>,
}

impl PoolSpecs {
    /// Converts `pools`.
    pub fn from_pools<'a>(pools: impl IntoIterator<Item = &'a IPAddressPool>) -> Self {
        let mut out = Self::default();
        for pool in pools {
            match pool_spec(pool) {
                Ok(spec) => out.specs.push(spec),
                Err(e) => {
                    out.specs.push(PoolSpec {
                        name: pool.name_any(),
                        created: created(pool.metadata.creation_timestamp.as_ref()),
                        addresses: pool.spec.addresses.clone(),
                        auto_assign: false,
                        avoid_buggy_ips: pool.spec.avoid_buggy_ips,
                        allocation: None,
                    });
                    out.errors.insert(pool.name_any(), e);
                }
            }
        }
        out
    }
}

/// Answers which pool hands out a VIP: the rule IPAM allocates by (the
/// older pool where pools overlap), so the pool a speaker announces a VIP
/// under is the pool the controller took it from, whatever a user writes
/// on the Service.
#[derive(Debug)]
pub struct PoolIndex {
    /// An allocator holding only the pools; never asked to allocate.
    pools: Allocator,
}

impl PoolIndex {
    /// The index of `pools` (malformed ones included, see [`PoolSpecs`]).
    pub fn new<'a>(pools: impl IntoIterator<Item = &'a IPAddressPool>) -> Self {
        let mut alloc = Allocator::new();
        alloc.set_pools(PoolSpecs::from_pools(pools).specs);
        Self { pools: alloc }
    }

    /// The name of the pool that hands out `vip`, if any.
    pub fn pool_of(&self, vip: IpAddr) -> Option<&str> {
        self.pools.pool_of(vip)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures;
    use serde_json::json;

    fn malformed() -> IPAddressPool {
        fixtures::pool("typo", &["198.18.0.0/30"])
            .spec(
                json!({"serviceAllocation": {"serviceSelectors": [{"matchExpressions":
                [{"key": "app", "operator": "Bogus", "values": ["x"]}]}]}}),
            )
            .build()
    }

    #[test]
    fn a_malformed_pool_is_kept_without_automatic_assignment() {
        assert!(pool_spec(&malformed()).is_err());
        let specs = PoolSpecs::from_pools([&malformed()]);
        assert_eq!(specs.specs.len(), 1);
        assert_eq!(specs.specs[0].name, "typo");
        assert!(!specs.specs[0].auto_assign);
        assert!(specs.errors.contains_key("typo"));
    }

    #[test]
    fn vips_of_a_malformed_pool_still_have_a_pool() {
        let index = PoolIndex::new([&malformed()]);
        assert_eq!(index.pool_of("198.18.0.1".parse().unwrap()), Some("typo"));
        assert_eq!(index.pool_of("198.18.0.9".parse().unwrap()), None);
    }
}
