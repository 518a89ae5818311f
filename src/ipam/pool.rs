//! Turns [`PoolSpec`]s into validated pools: parses addresses, rejects
//! invalid pools, resolves overlaps (each address belongs to exactly one
//! pool: the earliest by creation time, then name) and precomputes the
//! automatic selection order. Knows nothing about Services' holdings
//! beyond the free sets the allocator edits.

use std::collections::BTreeMap;
use std::net::IpAddr;

use super::addr::{FreeSet, Space, Span, merge_spans, parse_entry, to_num};
use super::{Family, PoolIssue, PoolIssueKind, PoolSpec, ServiceRequest};

/// The addresses of one family a pool hands out.
#[derive(Clone, Debug)]
pub(crate) struct FamilyPart {
    /// How addresses are numbered in `free` (avoidBuggyIPs).
    pub space: Space,
    /// Indices (in `space`) of addresses no Service holds.
    pub free: FreeSet,
    /// How many addresses the pool hands out in this family.
    pub total: u128,
}

/// A valid pool.
#[derive(Clone, Debug)]
pub(crate) struct Pool {
    /// The spec it was built from.
    pub spec: PoolSpec,
    /// IPv4 part.
    pub v4: FamilyPart,
    /// IPv6 part.
    pub v6: FamilyPart,
}

impl Pool {
    pub fn part(&self, family: Family) -> &FamilyPart {
        match family {
            Family::V4 => &self.v4,
            Family::V6 => &self.v6,
        }
    }

    pub fn part_mut(&mut self, family: Family) -> &mut FamilyPart {
        match family {
            Family::V4 => &mut self.v4,
            Family::V6 => &mut self.v6,
        }
    }

    /// Whether the pool's serviceAllocation (if any) admits `req`.
    pub fn admits(&self, req: &ServiceRequest) -> bool {
        self.spec.allocation.as_ref().is_none_or(|s| s.admits(req))
    }
}

/// Where an address falls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Lookup {
    /// In no valid pool.
    Outside,
    /// In pool `.0`'s range but excluded by its avoidBuggyIPs.
    Avoided(usize),
    /// Handed out by pool `.0`, at index `.1` of its family's space.
    In(usize, u128),
}

/// All pools, validated.
#[derive(Clone, Debug, Default)]
pub(crate) struct PoolSet {
    /// The specs as given, kept to rebuild from scratch.
    pub specs: Vec<PoolSpec>,
    /// Valid pools, sorted by name (the index is the pool's id).
    pub pools: Vec<Pool>,
    /// Invalid pools: name -> reason.
    pub invalid: BTreeMap<String, String>,
    /// Issues, sorted by pool then kind.
    pub issues: Vec<PoolIssue>,
    /// Pools with a serviceAllocation and autoAssign, in trial order.
    pub scoped: Vec<usize>,
    /// autoAssign pools without a serviceAllocation, by name.
    pub unrestricted: Vec<usize>,
    /// Owned spans per family: start -> (end, pool id); disjoint.
    owner_v4: BTreeMap<u128, (u128, usize)>,
    owner_v6: BTreeMap<u128, (u128, usize)>,
}

impl PoolSet {
    /// Validates `specs` and resolves overlaps.
    pub fn build(specs: Vec<PoolSpec>) -> Self {
        let mut set = PoolSet {
            specs: specs.clone(),
            ..Default::default()
        };
        // Parse; the later of two equally named specs (by creation, name) is invalid.
        let mut ordered: Vec<&PoolSpec> = specs.iter().collect();
        ordered.sort_by(|a, b| (a.created, &a.name).cmp(&(b.created, &b.name)));
        let mut parsed: Vec<(&PoolSpec, Vec<Span>, Vec<Span>)> = Vec::new();
        let mut seen = std::collections::BTreeSet::new();
        for spec in ordered {
            match parse_addresses(spec) {
                _ if !seen.insert(spec.name.clone()) => {
                    set.issues.push(PoolIssue {
                        pool: spec.name.clone(),
                        kind: PoolIssueKind::Invalid {
                            reason: "another pool has the same name".to_string(),
                        },
                    });
                }
                Ok((v4, v6)) => parsed.push((spec, v4, v6)),
                Err(reason) => {
                    set.invalid.insert(spec.name.clone(), reason.clone());
                    set.issues.push(PoolIssue {
                        pool: spec.name.clone(),
                        kind: PoolIssueKind::Invalid { reason },
                    });
                }
            }
        }
        // Ids by name; ownership in (created, name) order.
        let mut names: Vec<&str> = parsed.iter().map(|(s, _, _)| s.name.as_str()).collect();
        names.sort();
        let id_of = |name: &str| names.binary_search(&name).unwrap_or_default();
        let mut pools: Vec<Option<Pool>> = vec![None; names.len()];
        for (spec, v4, v6) in &parsed {
            let id = id_of(&spec.name);
            let mut others = std::collections::BTreeSet::new();
            let mut build_part = |family: Family, spans: &[Span]| {
                let space = Space {
                    skip_buggy: spec.avoid_buggy_ips && family == Family::V4,
                };
                let owner = match family {
                    Family::V4 => &mut set.owner_v4,
                    Family::V6 => &mut set.owner_v6,
                };
                let mut free = FreeSet::default();
                for span in spans {
                    for part in claim(owner, *span, id, &mut others) {
                        if let Some(ix) = space.index_span(part) {
                            free.insert_span(ix);
                        }
                    }
                }
                FamilyPart {
                    space,
                    total: free.len(),
                    free,
                }
            };
            let v4 = build_part(Family::V4, v4);
            let v6 = build_part(Family::V6, v6);
            for other in others {
                set.issues.push(PoolIssue {
                    pool: spec.name.clone(),
                    kind: PoolIssueKind::Overlapping {
                        other: names[other].to_string(),
                    },
                });
            }
            pools[id] = Some(Pool {
                spec: (*spec).clone(),
                v4,
                v6,
            });
        }
        set.pools = pools.into_iter().flatten().collect();
        set.issues.sort_by(|a, b| {
            (&a.pool, format!("{:?}", a.kind)).cmp(&(&b.pool, format!("{:?}", b.kind)))
        });
        let mut scoped: Vec<usize> = (0..set.pools.len())
            .filter(|&i| set.pools[i].spec.auto_assign && scope_of(&set.pools[i]).is_some())
            .collect();
        scoped.sort_by_key(|&i| {
            let prio = scope_of(&set.pools[i]).and_then(|s| s.effective_priority());
            (prio.is_none(), prio, i)
        });
        set.scoped = scoped;
        set.unrestricted = (0..set.pools.len())
            .filter(|&i| set.pools[i].spec.auto_assign && scope_of(&set.pools[i]).is_none())
            .collect();
        set
    }

    /// The id of the valid pool named `name`.
    pub fn id(&self, name: &str) -> Option<usize> {
        self.pools
            .binary_search_by(|p| p.spec.name.as_str().cmp(name))
            .ok()
    }

    /// Which pool hands out `ip`.
    pub fn lookup(&self, ip: IpAddr) -> Lookup {
        let family = Family::of(ip);
        let owner = match family {
            Family::V4 => &self.owner_v4,
            Family::V6 => &self.owner_v6,
        };
        let n = to_num(ip);
        match owner.range(..=n).next_back() {
            Some((_, &(hi, id))) if hi >= n => match self.pools[id].part(family).space.index(n) {
                Some(ix) => Lookup::In(id, ix),
                None => Lookup::Avoided(id),
            },
            _ => Lookup::Outside,
        }
    }

    /// Names of valid pools, sorted.
    pub fn names(&self) -> Vec<String> {
        self.pools.iter().map(|p| p.spec.name.clone()).collect()
    }
}

/// The pool's serviceAllocation, unless it restricts nothing.
fn scope_of(p: &Pool) -> Option<&super::AllocationScope> {
    p.spec.allocation.as_ref().filter(|s| !s.is_unrestricted())
}

/// Parses a pool's addresses into merged spans per family.
fn parse_addresses(spec: &PoolSpec) -> Result<(Vec<Span>, Vec<Span>), String> {
    if spec.addresses.is_empty() {
        return Err("spec.addresses is empty".to_string());
    }
    let (mut v4, mut v6) = (Vec::new(), Vec::new());
    for entry in &spec.addresses {
        match parse_entry(entry)? {
            (Family::V4, s) => v4.push(s),
            (Family::V6, s) => v6.push(s),
        }
    }
    Ok((merge_spans(v4), merge_spans(v6)))
}

/// Records `span` as owned by pool `id` except where an earlier pool owns
/// it already (those owners go to `others`); returns the parts `id` got.
fn claim(
    owner: &mut BTreeMap<u128, (u128, usize)>,
    span: Span,
    id: usize,
    others: &mut std::collections::BTreeSet<usize>,
) -> Vec<Span> {
    let mut taken: Vec<(u128, u128)> = Vec::new();
    if let Some((&lo, &(hi, other))) = owner.range(..span.lo).next_back()
        && hi >= span.lo
    {
        taken.push((lo, hi));
        others.insert(other);
    }
    for (&lo, &(hi, other)) in owner.range(span.lo..=span.hi) {
        taken.push((lo, hi));
        others.insert(other);
    }
    let mut got = Vec::new();
    let mut cursor = Some(span.lo);
    for (lo, hi) in taken {
        if let Some(c) = cursor
            && lo > c
        {
            got.push(Span { lo: c, hi: lo - 1 });
        }
        cursor = hi.checked_add(1).map(|n| n.max(cursor.unwrap_or(n)));
    }
    if let Some(c) = cursor
        && c <= span.hi
    {
        got.push(Span { lo: c, hi: span.hi });
    }
    for s in &got {
        owner.insert(s.lo, (s.hi, id));
    }
    got
}
