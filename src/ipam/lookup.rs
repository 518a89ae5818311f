//! Read-only questions about where an address belongs, for reporting
//! (`l2lb status`) and for the speaker, which must know a VIP's pool to
//! match it against L2Advertisements.

use super::Allocator;
use super::pool::Lookup;
use std::net::IpAddr;

impl Allocator {
    /// The valid pool that hands out `ip` (overlaps resolve to the older
    /// pool, as allocation does), or `None` when no pool covers it.
    pub fn pool_of(&self, ip: IpAddr) -> Option<&str> {
        match self.pools.lookup(ip) {
            Lookup::In(id, _) | Lookup::Avoided(id) => {
                Some(self.pools.pools[id].spec.name.as_str())
            }
            Lookup::Outside => None,
        }
    }

    /// Whether some valid pool hands `ip` out (inside a pool and not
    /// skipped by its avoidBuggyIPs).
    pub fn hands_out(&self, ip: IpAddr) -> bool {
        matches!(self.pools.lookup(ip), Lookup::In(..))
    }
}

#[cfg(test)]
mod tests {
    use crate::ipam::{Allocator, PoolSpec};

    #[test]
    fn pool_of_names_the_older_pool_for_overlaps() {
        let mut a = Allocator::new();
        let mut older = PoolSpec::new("older", ["198.18.0.0/30"]);
        older.created = 1;
        let mut newer = PoolSpec::new("newer", ["198.18.0.2-198.18.0.9"]);
        newer.created = 2;
        a.set_pools(vec![newer, older]);
        assert_eq!(a.pool_of("198.18.0.2".parse().unwrap()), Some("older"));
        assert_eq!(a.pool_of("198.18.0.5".parse().unwrap()), Some("newer"));
        assert_eq!(a.pool_of("198.18.1.5".parse().unwrap()), None);
    }
}
