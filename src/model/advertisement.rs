//! L2Advertisements with their selectors parsed once: which pools, Services
//! and nodes each one selects.
//!
//! The controller asks which advertisements announce a pool (the pool's
//! `Advertised` condition); the speaker asks which nodes may announce a VIP.
//! Both go through [`CompiledAd`], so a pool reported as advertised is one
//! the speakers announce. A VIP is matched against advertisements by the
//! pool [`crate::model::PoolIndex::pool_of`] names.

use crate::api::{L2Advertisement, selectors};
use crate::labels::{Labels, Selector};

/// An advertisement with its selectors converted once.
#[derive(Debug)]
pub struct CompiledAd<'a> {
    /// The advertisement as the watch holds it.
    ad: &'a L2Advertisement,
    /// `ipAddressPoolSelectors`, parsed.
    pool_selectors: Vec<Selector>,
    /// `serviceSelectors`, parsed.
    service_selectors: Vec<Selector>,
    /// `nodeSelectors`, parsed.
    node_selectors: Vec<Selector>,
}

impl<'a> CompiledAd<'a> {
    /// Converts the selectors; an advertisement with an invalid selector
    /// advertises nothing (the API server's schema should have refused it,
    /// and announcing too widely is the worse failure).
    pub fn compile(ad: &'a L2Advertisement) -> Option<Self> {
        Some(Self {
            ad,
            pool_selectors: selectors(&ad.spec.ip_address_pool_selectors).ok()?,
            service_selectors: selectors(&ad.spec.service_selectors).ok()?,
            node_selectors: selectors(&ad.spec.node_selectors).ok()?,
        })
    }

    /// Every advertisement of `ads` that compiles.
    pub fn compile_all(ads: impl IntoIterator<Item = &'a L2Advertisement>) -> Vec<Self> {
        ads.into_iter().filter_map(Self::compile).collect()
    }

    /// The advertisement's name.
    pub fn name(&self) -> &str {
        self.ad.metadata.name.as_deref().unwrap_or_default()
    }

    /// Whether it announces pool `name` with `labels`: named, selected, or
    /// neither list given (all pools).
    pub fn selects_pool(&self, name: &str, labels: &Labels) -> bool {
        let by_name = &self.ad.spec.ip_address_pools;
        (by_name.is_empty() && self.pool_selectors.is_empty())
            || by_name.iter().any(|n| n == name)
            || self.pool_selectors.iter().any(|s| s.matches(labels))
    }

    /// Whether it announces a Service with `labels`.
    pub fn selects_service(&self, labels: &Labels) -> bool {
        self.service_selectors.is_empty()
            || self.service_selectors.iter().any(|s| s.matches(labels))
    }

    /// Whether it limits the Services it announces (`serviceSelectors`).
    pub fn has_service_selectors(&self) -> bool {
        !self.service_selectors.is_empty()
    }

    /// Whether it lets a node with `labels` announce.
    pub fn selects_node(&self, labels: &Labels) -> bool {
        self.node_selectors.is_empty() || self.node_selectors.iter().any(|s| s.matches(labels))
    }

    /// Whether cordoned nodes keep announcing under it.
    pub fn announces_from_cordoned(&self) -> bool {
        self.ad.spec.announce_from_cordoned_nodes
    }

    /// Whether its VIPs stay on their current owner (no move back).
    pub fn non_revertive(&self) -> bool {
        self.ad.spec.non_revertive
    }

    /// The interfaces it names; empty means the node's default interface.
    pub fn interfaces(&self) -> &[String] {
        &self.ad.spec.interfaces
    }
}

/// Names of the advertisements that announce `pool` (for the pool's
/// `Advertised` condition). An advertisement with an invalid selector
/// announces nothing, as the speaker's eligibility has it.
pub fn advertisements_of<'a>(
    pool: &crate::api::IPAddressPool,
    ads: impl IntoIterator<Item = &'a L2Advertisement>,
) -> Vec<String> {
    let name = pool.metadata.name.as_deref().unwrap_or_default();
    let labels = pool.metadata.labels.clone().unwrap_or_default();
    CompiledAd::compile_all(ads)
        .into_iter()
        .filter(|ad| ad.selects_pool(name, &labels))
        .map(|ad| ad.name().to_string())
        .collect()
}
