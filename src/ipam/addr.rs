//! Address arithmetic: parsing pool entries into inclusive numeric spans, the
//! avoidBuggyIPs index space, and the free-interval set.
//!
//! Addresses are handled as `u128` numbers per family and never
//! materialized, so an IPv6 /64 costs the same as a /30. Nothing here knows
//! about Services or pools.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::Family;

/// An inclusive span of addresses of one family, as numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Span {
    /// First address.
    pub lo: u128,
    /// Last address (inclusive).
    pub hi: u128,
}

/// The number of `ip` within its family.
pub(crate) fn to_num(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v) => u128::from(u32::from(v)),
        IpAddr::V6(v) => u128::from(v),
    }
}

/// The address of number `n` in `family`. For IPv4 only the low 32 bits
/// count; callers only pass numbers that came from IPv4 spans.
pub(crate) fn from_num(family: Family, n: u128) -> IpAddr {
    match family {
        Family::V4 => IpAddr::V4(Ipv4Addr::from(n as u32)),
        Family::V6 => IpAddr::V6(Ipv6Addr::from(n)),
    }
}

/// Parses one `spec.addresses` entry: a CIDR (host bits are masked, as
/// MetalLB does), an `a-b` range (spaces allowed around `-`, one family,
/// a <= b) or a single IP. The error says what is wrong with the entry.
pub(crate) fn parse_entry(entry: &str) -> Result<(Family, Span), String> {
    let text = entry.trim();
    let ip = |s: &str| -> Result<IpAddr, String> {
        s.trim()
            .parse::<IpAddr>()
            .map_err(|_| format!("{:?} is not an IP address", s.trim()))
    };
    let bad = |why: String| format!("address entry {entry:?} is invalid: {why}");
    if let Some((addr, prefix)) = text.split_once('/') {
        let addr = ip(addr).map_err(bad)?;
        let family = Family::of(addr);
        let bits: u32 = match family {
            Family::V4 => 32,
            Family::V6 => 128,
        };
        let prefix: u32 = prefix
            .trim()
            .parse()
            .ok()
            .filter(|p| *p <= bits)
            .ok_or_else(|| bad(format!("prefix length must be 0..={bits}")))?;
        let host_bits = bits - prefix;
        let host_mask = if host_bits >= 128 {
            u128::MAX
        } else {
            (1u128 << host_bits) - 1
        };
        let lo = to_num(addr) & !host_mask;
        return Ok((
            family,
            Span {
                lo,
                hi: lo | host_mask,
            },
        ));
    }
    if let Some((a, b)) = text.split_once('-') {
        let (a, b) = (ip(a).map_err(bad)?, ip(b).map_err(bad)?);
        if Family::of(a) != Family::of(b) {
            return Err(bad("the range mixes IPv4 and IPv6".to_string()));
        }
        let (lo, hi) = (to_num(a), to_num(b));
        if lo > hi {
            return Err(bad(format!("range start {a} is after its end {b}")));
        }
        return Ok((Family::of(a), Span { lo, hi }));
    }
    if text.is_empty() {
        return Err(bad("empty entry".to_string()));
    }
    let a = ip(text).map_err(bad)?;
    Ok((
        Family::of(a),
        Span {
            lo: to_num(a),
            hi: to_num(a),
        },
    ))
}

/// Sorts and merges overlapping or adjacent spans.
pub(crate) fn merge_spans(mut spans: Vec<Span>) -> Vec<Span> {
    spans.sort();
    let mut out: Vec<Span> = Vec::with_capacity(spans.len());
    for s in spans {
        match out.last_mut() {
            Some(last) if last.hi.checked_add(1).is_none_or(|n| s.lo <= n) => {
                last.hi = last.hi.max(s.hi);
            }
            _ => out.push(s),
        }
    }
    out
}

/// Numbering of the addresses a pool may hand out. With avoidBuggyIPs on an
/// IPv4 pool, .0 and .255 addresses get no index at all, so the free set
/// never contains them and "lowest free" needs no skipping loop; the mapping
/// is monotonic, so lowest index is lowest address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Space {
    /// Whether .0/.255 are excluded (only ever set for IPv4).
    pub skip_buggy: bool,
}

impl Space {
    /// Usable addresses per /24 when skipping .0 and .255.
    const PER_BLOCK: u128 = 254;

    fn is_buggy(n: u128) -> bool {
        matches!(n & 0xff, 0 | 0xff)
    }

    /// The index of address number `n`, or `None` when the space excludes it.
    pub fn index(self, n: u128) -> Option<u128> {
        if !self.skip_buggy {
            return Some(n);
        }
        if Self::is_buggy(n) {
            return None;
        }
        Some((n >> 8) * Self::PER_BLOCK + (n & 0xff) - 1)
    }

    /// The address number of index `i` (inverse of [`Space::index`]).
    pub fn addr(self, i: u128) -> u128 {
        if !self.skip_buggy {
            return i;
        }
        ((i / Self::PER_BLOCK) << 8) | (i % Self::PER_BLOCK + 1)
    }

    /// The index span covering the usable addresses of `span`, if any.
    pub fn index_span(self, span: Span) -> Option<Span> {
        if !self.skip_buggy {
            return Some(span);
        }
        let lo = match span.lo & 0xff {
            0 => span.lo + 1,
            0xff => span.lo + 2,
            _ => span.lo,
        };
        let hi = match span.hi & 0xff {
            0 => span.hi.checked_sub(2)?,
            0xff => span.hi - 1,
            _ => span.hi,
        };
        if lo > hi {
            return None;
        }
        Some(Span {
            lo: self.index(lo)?,
            hi: self.index(hi)?,
        })
    }
}

/// A set of numbers kept as disjoint, non-adjacent inclusive intervals
/// (start -> end). Every operation is O(log intervals); allocating lowest
/// first keeps the interval count small however full the pool is.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct FreeSet {
    /// Interval start -> inclusive end.
    runs: BTreeMap<u128, u128>,
    /// Numbers in the set, saturating (only a /0 could overflow).
    count: u128,
}

impl FreeSet {
    /// Numbers in the set.
    pub fn len(&self) -> u128 {
        self.count
    }

    /// The lowest number in the set.
    pub fn first(&self) -> Option<u128> {
        self.runs.first_key_value().map(|(lo, _)| *lo)
    }

    /// Whether `n` is in the set.
    pub fn contains(&self, n: u128) -> bool {
        self.runs
            .range(..=n)
            .next_back()
            .is_some_and(|(_, hi)| *hi >= n)
    }

    /// Adds `span`, which must not intersect the set (callers add spans of
    /// disjoint pools or numbers they removed before); merges neighbours.
    pub fn insert_span(&mut self, span: Span) {
        let Span { mut lo, mut hi } = span;
        let size = (hi - lo).saturating_add(1);
        if let Some((&plo, &phi)) = self.runs.range(..lo).next_back()
            && phi.checked_add(1) == Some(lo)
        {
            self.runs.remove(&plo);
            lo = plo;
        }
        if let Some(next) = hi.checked_add(1)
            && let Some(nhi) = self.runs.remove(&next)
        {
            hi = nhi;
        }
        self.runs.insert(lo, hi);
        self.count = self.count.saturating_add(size);
    }

    /// Adds `n`; returns false when it was already present.
    pub fn insert(&mut self, n: u128) -> bool {
        if self.contains(n) {
            return false;
        }
        self.insert_span(Span { lo: n, hi: n });
        true
    }

    /// Removes `n`; returns false when it was absent.
    pub fn remove(&mut self, n: u128) -> bool {
        let Some((&lo, &hi)) = self.runs.range(..=n).next_back() else {
            return false;
        };
        if hi < n {
            return false;
        }
        self.runs.remove(&lo);
        if lo < n {
            self.runs.insert(lo, n - 1);
        }
        if n < hi {
            self.runs.insert(n + 1, hi);
        }
        self.count = self.count.saturating_sub(1);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn space_skipping_buggy_is_monotonic_bijection() {
        let s = Space { skip_buggy: true };
        let mut last = None;
        for n in 0u128..2048 {
            match s.index(n) {
                None => assert!(matches!(n & 0xff, 0 | 255)),
                Some(i) => {
                    assert_eq!(s.addr(i), n);
                    assert!(last.is_none_or(|l| i == l + 1), "indices must be dense");
                    last = Some(i);
                }
            }
        }
    }

    #[test]
    fn free_set_merges_and_splits() {
        let mut f = FreeSet::default();
        f.insert_span(Span { lo: 10, hi: 20 });
        assert!(f.remove(10));
        assert!(f.remove(15));
        assert!(!f.remove(15));
        assert_eq!(f.first(), Some(11));
        assert_eq!(f.len(), 9);
        assert!(f.insert(15));
        assert!(f.insert(10));
        assert_eq!(f.runs.len(), 1);
        assert_eq!(f.len(), 11);
    }

    #[test]
    fn free_set_handles_top_of_ipv6_space() {
        let mut f = FreeSet::default();
        f.insert_span(Span {
            lo: u128::MAX - 1,
            hi: u128::MAX,
        });
        assert!(f.remove(u128::MAX));
        assert!(f.insert(u128::MAX));
        assert_eq!(f.len(), 2);
    }
}
