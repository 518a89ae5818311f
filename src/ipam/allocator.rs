//! The allocator: which Service holds which IPs, and the decisions to hand
//! out, keep, share, release and re-claim them.
//!
//! Invariants (checked by the property tests): an IP has several holders
//! only when every pair may legally share it; an address is in its pool's
//! free set exactly when nobody holds it; the sharing index lists an IP
//! under key `k` exactly when its holders share under `k`. Every decision is
//! a deterministic function of the operations so far (maps that are
//! iterated are ordered). No I/O.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, Ipv6Addr};

use super::addr::from_num;
use super::pool::{Lookup, PoolSet};
use super::{
    AllocError, Assignment, Family, FamilyPolicy, PoolChange, PoolIssue, PoolSpec, PoolStats,
    RebuildConflict, ServiceKey, ServiceRequest,
};

/// What the allocator remembers about one Service.
#[derive(Clone, Debug)]
struct Entry {
    /// The request the assignment was made (or last confirmed) for; sharing
    /// checks of later Services compare against it.
    req: ServiceRequest,
    /// The IPs held.
    assignment: Assignment,
}

/// IPAM state: pools plus every Service's assignment. Cost per operation is
/// logarithmic in the number of Services and free intervals, never linear
/// in pool size.
#[derive(Clone, Debug, Default)]
pub struct Allocator {
    /// Validated pools with their free sets.
    pub(super) pools: PoolSet,
    /// Assignments by Service (ordered so iteration is deterministic).
    entries: BTreeMap<ServiceKey, Entry>,
    /// Holders of each held IP, sorted; absent when nobody holds it.
    holders: HashMap<IpAddr, Vec<ServiceKey>>,
    /// Sharing key -> IPs held under it, so a sharing Service finds the
    /// lowest IP it may join without scanning the pool.
    shared: HashMap<String, BTreeSet<IpAddr>>,
}

/// Checks whether `req` may share `ip` with `holder` (whose request is `held`).
pub(crate) fn share_check(
    ip: IpAddr,
    req: &ServiceRequest,
    holder: &ServiceKey,
    held: &ServiceRequest,
) -> Result<(), AllocError> {
    let service = req.key.clone();
    match (&req.sharing_key, &held.sharing_key) {
        (Some(a), Some(b)) if a == b => {}
        (Some(a), Some(b)) => {
            return Err(AllocError::SharingKeyMismatch {
                service,
                ip,
                holder: holder.clone(),
                keys: Box::new((a.clone(), b.clone())),
            });
        }
        _ => {
            return Err(AllocError::IpInUse {
                service,
                ip,
                holder: holder.clone(),
                prefix: req.hint_prefix,
            });
        }
    }
    if let Some(&(protocol, port)) = req.ports.iter().find(|p| held.ports.contains(p)) {
        return Err(AllocError::PortConflict {
            service,
            ip,
            holder: holder.clone(),
            protocol,
            port,
        });
    }
    if req.local_selector != held.local_selector {
        return Err(AllocError::TrafficPolicyConflict {
            service,
            ip,
            holder: holder.clone(),
        });
    }
    Ok(())
}

impl Allocator {
    /// An allocator with no pools and no assignments.
    pub fn new() -> Self {
        Self::default()
    }

    /// Replace the pool set. Assignments whose IPs are still inside some
    /// valid pool stay (pool name updated if it moved); services whose IPs
    /// left every pool are released and returned in `orphaned`.
    pub fn set_pools(&mut self, pools: Vec<PoolSpec>) -> PoolChange {
        let new = PoolSet::build(pools);
        let orphaned: BTreeSet<ServiceKey> = self
            .holders
            .iter()
            .filter(|(ip, _)| !matches!(new.lookup(**ip), Lookup::In(..)))
            .flat_map(|(_, hs)| hs.iter().cloned())
            .collect();
        for key in &orphaned {
            self.remove_entry(key);
        }
        self.pools = new;
        for ip in self.holders.keys() {
            if let Lookup::In(id, ix) = self.pools.lookup(*ip) {
                self.pools.pools[id]
                    .part_mut(Family::of(*ip))
                    .free
                    .remove(ix);
            }
        }
        for entry in self.entries.values_mut() {
            if let Some(Lookup::In(id, _)) = entry
                .assignment
                .ips
                .first()
                .map(|ip| self.pools.lookup(*ip))
            {
                entry.assignment.pool = self.pools.pools[id].spec.name.clone();
            }
        }
        PoolChange {
            issues: self.pools.issues.clone(),
            orphaned: orphaned.into_iter().collect(),
        }
    }

    /// Problems of the current pools (overlaps, invalid specs), sorted by pool.
    pub fn pool_issues(&self) -> Vec<PoolIssue> {
        self.pools.issues.clone()
    }

    /// Restart: replaces every assignment by the claims in `existing`. Keeps
    /// every legal claim; when two claim one IP against the sharing rules the
    /// older (created, then ns/name) keeps it and the other is returned as a
    /// conflict (holding nothing). Claims with IPs outside every pool are
    /// conflicts too. A Service listed twice counts once (the last entry);
    /// claims with no IPs are ignored. Idempotent: the same input gives the
    /// same state and the same conflicts.
    pub fn rebuild(
        &mut self,
        existing: Vec<(ServiceRequest, Vec<IpAddr>)>,
    ) -> Vec<RebuildConflict> {
        self.entries.clear();
        self.holders.clear();
        self.shared.clear();
        self.pools = PoolSet::build(std::mem::take(&mut self.pools.specs));
        let mut latest: BTreeMap<ServiceKey, (ServiceRequest, Vec<IpAddr>)> = BTreeMap::new();
        for (req, ips) in existing {
            latest.insert(req.key.clone(), (req, ips));
        }
        let mut claims: Vec<(ServiceRequest, Vec<IpAddr>)> = latest.into_values().collect();
        claims.sort_by(|a, b| (a.0.created, &a.0.key).cmp(&(b.0.created, &b.0.key)));
        let mut conflicts = Vec::new();
        for (req, mut ips) in claims {
            let mut seen = BTreeSet::new();
            ips.retain(|ip| seen.insert(*ip));
            if ips.is_empty() {
                continue;
            }
            match self.check_claim(&req, &ips) {
                Ok(pool) => self.insert_entry(req, Assignment { pool, ips }),
                Err(error) => conflicts.push(RebuildConflict {
                    key: req.key,
                    ips,
                    error,
                }),
            }
        }
        conflicts
    }

    /// Idempotent: a service whose current assignment still satisfies its
    /// request gets the same IPs back (a PreferDualStack Service holding one
    /// family gains the other once its pool has it). If the request
    /// changed, try the new request (its own old IPs count as free to it,
    /// and are preferred); on success switch. On failure the old assignment
    /// is kept only while it is still legal for the new request (inside a
    /// pool, and sharable with the other holders under the new sharing
    /// key, ports and traffic policy); otherwise the Service loses it, so
    /// two Services never hold one IP against the sharing rules.
    pub fn allocate(&mut self, req: &ServiceRequest) -> Result<Assignment, AllocError> {
        if let Some(entry) = self.entries.get(&req.key)
            && self.satisfies(&entry.assignment, req)
        {
            let assignment = self
                .second_family(&entry.assignment, req)
                .unwrap_or_else(|| entry.assignment.clone());
            if entry.req.sharing_key == req.sharing_key && entry.assignment == assignment {
                if let Some(e) = self.entries.get_mut(&req.key) {
                    e.req = req.clone();
                }
            } else {
                // Re-file the IPs (under the new key, with the new family).
                self.remove_entry(&req.key);
                self.insert_entry(req.clone(), assignment.clone());
            }
            return Ok(assignment);
        }
        let old = self.remove_entry(&req.key);
        let prefer = old
            .as_ref()
            .map(|e| e.assignment.ips.clone())
            .unwrap_or_default();
        match self.choose(req, &prefer) {
            Ok(assignment) => {
                self.insert_entry(req.clone(), assignment.clone());
                Ok(assignment)
            }
            Err(e) => {
                if let Some(old) = old
                    && self.still_legal(&old.assignment, req)
                {
                    // `choose` mutates nothing, so the old IPs are still
                    // free for us. Filed under the new request: its ports
                    // and key are what later sharers must be checked against.
                    self.insert_entry(req.clone(), old.assignment);
                }
                Err(e)
            }
        }
    }

    /// For a PreferDualStack Service holding only its primary family: the
    /// assignment with the second family added from the same pool, when
    /// that pool now has one to give. MetalLB adds it too; the Service never
    /// jumps to another pool for it (its first address stays).
    fn second_family(&self, assignment: &Assignment, req: &ServiceRequest) -> Option<Assignment> {
        let wanted = req.wanted_families();
        if req.family_policy != FamilyPolicy::PreferDualStack
            || !req.ips.is_empty()
            || wanted.len() != 2
            || assignment.ips.len() != 1
        {
            return None;
        }
        let Lookup::In(id, _) = self.pools.lookup(assignment.ips[0]) else {
            return None;
        };
        let second = self.pick(id, wanted[1], req, &[])?;
        Some(Assignment {
            pool: assignment.pool.clone(),
            ips: vec![assignment.ips[0], second],
        })
    }

    /// Whether `req` may go on holding `assignment`: every IP still inside
    /// a pool and sharable with its other holders under `req`'s rules.
    fn still_legal(&self, assignment: &Assignment, req: &ServiceRequest) -> bool {
        assignment.ips.iter().all(|ip| {
            matches!(self.pools.lookup(*ip), Lookup::In(..)) && self.usable(*ip, req).is_ok()
        })
    }

    /// Releases the Service's IPs (on delete); returns what it held.
    pub fn release(&mut self, key: &ServiceKey) -> Option<Assignment> {
        self.remove_entry(key).map(|e| e.assignment)
    }

    /// The Service's current assignment.
    pub fn assignment(&self, key: &ServiceKey) -> Option<&Assignment> {
        self.entries.get(key).map(|e| &e.assignment)
    }

    /// Every assignment, by Service key.
    pub fn assignments(&self) -> impl Iterator<Item = (&ServiceKey, &Assignment)> {
        self.entries.iter().map(|(k, e)| (k, &e.assignment))
    }

    /// The request a Service's assignment was last made or confirmed for.
    pub fn request(&self, key: &ServiceKey) -> Option<&ServiceRequest> {
        self.entries.get(key).map(|e| &e.req)
    }

    /// The current state as `rebuild` input: (request, IPs) per Service.
    pub fn export(&self) -> Vec<(ServiceRequest, Vec<IpAddr>)> {
        self.entries
            .values()
            .map(|e| (e.req.clone(), e.assignment.ips.clone()))
            .collect()
    }

    /// Services holding `ip`, sorted.
    pub fn holders(&self, ip: IpAddr) -> Vec<ServiceKey> {
        self.holders.get(&ip).cloned().unwrap_or_default()
    }

    /// Counts per valid pool, sorted by name.
    pub fn stats(&self) -> Vec<PoolStats> {
        self.pools
            .pools
            .iter()
            .map(|p| PoolStats {
                name: p.spec.name.clone(),
                v4_total: p.v4.total,
                v4_in_use: p.v4.total - p.v4.free.len(),
                v6_total: p.v6.total,
                v6_in_use: p.v6.total - p.v6.free.len(),
            })
            .collect()
    }

    /// Whether `req` may hold `ip` next to its current holders (itself excluded).
    fn usable(&self, ip: IpAddr, req: &ServiceRequest) -> Result<(), AllocError> {
        for holder in self.holders.get(&ip).into_iter().flatten() {
            if *holder == req.key {
                continue;
            }
            if let Some(e) = self.entries.get(holder) {
                share_check(ip, req, holder, &e.req)?;
            }
        }
        Ok(())
    }

    /// Whether the current `assignment` still fits `req`: families, requested
    /// pool/IPs, pool admission (autoAssign is ignored: it only governs new
    /// allocations) and sharing with the other holders.
    fn satisfies(&self, assignment: &Assignment, req: &ServiceRequest) -> bool {
        let wanted = req.wanted_families();
        let have: Vec<Family> = assignment.ips.iter().map(|ip| Family::of(*ip)).collect();
        let families_ok = have == wanted
            || (req.family_policy == FamilyPolicy::PreferDualStack && have == wanted[..1]);
        if !families_ok {
            return false;
        }
        if !req.ips.is_empty() {
            let mut a = assignment.ips.clone();
            let mut b = req.ips.clone();
            a.sort();
            b.sort();
            if a != b {
                return false;
            }
        }
        assignment
            .ips
            .iter()
            .all(|ip| match self.pools.lookup(*ip) {
                Lookup::In(id, _) => {
                    let pool = &self.pools.pools[id];
                    req.pool.as_ref().is_none_or(|p| *p == pool.spec.name)
                        && pool.admits(req)
                        && self.usable(*ip, req).is_ok()
                }
                _ => false,
            })
    }

    /// Checks a rebuild claim; returns the pool of the first IP.
    fn check_claim(&self, req: &ServiceRequest, ips: &[IpAddr]) -> Result<String, AllocError> {
        let mut pool = None;
        for ip in ips {
            match self.pools.lookup(*ip) {
                Lookup::Outside => {
                    return Err(AllocError::IpOutsidePools {
                        service: req.key.clone(),
                        ip: *ip,
                    });
                }
                Lookup::Avoided(id) => {
                    return Err(AllocError::IpAvoided {
                        service: req.key.clone(),
                        ip: *ip,
                        pool: self.pools.pools[id].spec.name.clone(),
                    });
                }
                Lookup::In(id, _) => {
                    self.usable(*ip, req)?;
                    pool.get_or_insert(id);
                }
            }
        }
        Ok(pool
            .map(|id| self.pools.pools[id].spec.name.clone())
            .unwrap_or_default())
    }

    /// Picks IPs for `req` without changing anything. `prefer` are the
    /// Service's previous IPs, tried first in each pool so a changed request
    /// moves as little as possible.
    fn choose(&self, req: &ServiceRequest, prefer: &[IpAddr]) -> Result<Assignment, AllocError> {
        let wanted = req.wanted_families();
        if !req.ips.is_empty() {
            return self.choose_requested(req, &wanted);
        }
        if let Some(name) = &req.pool {
            let id = self.requested_pool(name, req)?;
            return self.try_pools(req, &wanted, &[id], prefer);
        }
        let candidates: Vec<usize> = self
            .pools
            .scoped
            .iter()
            .copied()
            .filter(|&id| self.pools.pools[id].admits(req))
            .chain(self.pools.unrestricted.iter().copied())
            .collect();
        if candidates.is_empty() {
            return Err(AllocError::NoPoolAdmits {
                service: req.key.clone(),
                prefix: req.hint_prefix,
            });
        }
        self.try_pools(req, &wanted, &candidates, prefer)
    }

    /// The id of the requested pool, if it exists, is valid and admits `req`.
    fn requested_pool(&self, name: &str, req: &ServiceRequest) -> Result<usize, AllocError> {
        let service = req.key.clone();
        let Some(id) = self.pools.id(name) else {
            return Err(match self.pools.invalid.get(name) {
                Some(reason) => AllocError::PoolInvalid {
                    service,
                    pool: name.to_string(),
                    reason: reason.clone(),
                },
                None => AllocError::UnknownPool {
                    service,
                    pool: name.to_string(),
                    known: self.pools.names(),
                },
            });
        };
        if !self.pools.pools[id].admits(req) {
            return Err(AllocError::PoolDisallowsService {
                service,
                pool: name.to_string(),
            });
        }
        Ok(id)
    }

    /// Takes exactly the requested IPs (autoAssign does not matter).
    fn choose_requested(
        &self,
        req: &ServiceRequest,
        wanted: &[Family],
    ) -> Result<Assignment, AllocError> {
        let service = req.key.clone();
        let mismatch = |detail: String| AllocError::FamilyMismatch {
            service: service.clone(),
            detail,
        };
        let mut ips: Vec<IpAddr> = Vec::new();
        for ip in &req.ips {
            let family = Family::of(*ip);
            if ips.iter().any(|i| Family::of(*i) == family) {
                return Err(mismatch(format!(
                    "at most one {family} address may be requested, got {}",
                    req.ips
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
            if !wanted.contains(&family) {
                return Err(mismatch(format!(
                    "requests {ip}, but the Service's IP families for its policy are {}",
                    wanted
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
            ips.push(*ip);
        }
        ips.sort_by_key(|ip| wanted.iter().position(|f| *f == Family::of(*ip)));
        if req.family_policy == FamilyPolicy::RequireDualStack && ips.len() < wanted.len() {
            return Err(mismatch(format!(
                "RequireDualStack needs one requested address per family, got only {}",
                ips[0]
            )));
        }
        let requested = match &req.pool {
            Some(name) => Some(self.requested_pool(name, req)?),
            None => None,
        };
        let mut pool_ids: Vec<usize> = Vec::new();
        for ip in &ips {
            let id = match (self.pools.lookup(*ip), requested) {
                (Lookup::In(id, _) | Lookup::Avoided(id), Some(want)) if id != want => {
                    return Err(AllocError::IpOutsideRequestedPool {
                        service,
                        ip: *ip,
                        pool: self.pools.pools[want].spec.name.clone(),
                        owner: Some(self.pools.pools[id].spec.name.clone()),
                    });
                }
                (Lookup::Outside, Some(want)) => {
                    return Err(AllocError::IpOutsideRequestedPool {
                        service,
                        ip: *ip,
                        pool: self.pools.pools[want].spec.name.clone(),
                        owner: None,
                    });
                }
                (Lookup::Outside, None) => {
                    return Err(AllocError::IpOutsidePools { service, ip: *ip });
                }
                (Lookup::Avoided(id), _) => {
                    return Err(AllocError::IpAvoided {
                        service,
                        ip: *ip,
                        pool: self.pools.pools[id].spec.name.clone(),
                    });
                }
                (Lookup::In(id, _), _) => id,
            };
            if !self.pools.pools[id].admits(req) {
                return Err(AllocError::PoolDisallowsService {
                    service,
                    pool: self.pools.pools[id].spec.name.clone(),
                });
            }
            pool_ids.push(id);
        }
        if pool_ids.windows(2).any(|w| w[0] != w[1]) {
            return Err(AllocError::IpsInDifferentPools {
                service,
                ips,
                pools: pool_ids
                    .iter()
                    .map(|id| self.pools.pools[*id].spec.name.clone())
                    .collect(),
            });
        }
        for ip in &ips {
            self.usable(*ip, req)?;
        }
        Ok(Assignment {
            pool: self.pools.pools[pool_ids[0]].spec.name.clone(),
            ips,
        })
    }

    /// Tries `pools` in order. Dual-stack IPs always come from one pool;
    /// PreferDualStack falls back to the primary family of the first pool
    /// that has it only when no pool can give both.
    fn try_pools(
        &self,
        req: &ServiceRequest,
        wanted: &[Family],
        pools: &[usize],
        prefer: &[IpAddr],
    ) -> Result<Assignment, AllocError> {
        let names = || -> Vec<String> {
            pools
                .iter()
                .map(|id| self.pools.pools[*id].spec.name.clone())
                .collect()
        };
        let mut primary_only: Option<(usize, IpAddr)> = None;
        for &id in pools {
            let Some(first) = self.pick(id, wanted[0], req, prefer) else {
                continue;
            };
            let mut ips = vec![first];
            if let Some(&second) = wanted.get(1) {
                match self.pick(id, second, req, prefer) {
                    Some(ip) => ips.push(ip),
                    None => {
                        primary_only.get_or_insert((id, first));
                        continue;
                    }
                }
            }
            return Ok(Assignment {
                pool: self.pools.pools[id].spec.name.clone(),
                ips,
            });
        }
        match primary_only {
            Some((id, ip)) if req.family_policy != FamilyPolicy::RequireDualStack => {
                Ok(Assignment {
                    pool: self.pools.pools[id].spec.name.clone(),
                    ips: vec![ip],
                })
            }
            Some(_) => Err(AllocError::RequiredFamilyUnavailable {
                service: req.key.clone(),
                family: wanted[1],
                pools: names(),
            }),
            None => Err(self
                .sharing_obstacle(req, wanted[0], pools, prefer)
                .unwrap_or_else(|| AllocError::PoolExhausted {
                    service: req.key.clone(),
                    family: wanted[0],
                    pools: names(),
                })),
        }
    }

    /// When `pools` have no free `family` address for `req`, the sharing
    /// rule that kept it off an address it could otherwise have had: its
    /// own previous address, one shared under its key, or (for a Service
    /// with a key) the lowest address shared under another key. Reported
    /// instead of "no free address", which would send the user looking for
    /// the wrong fix. Only runs on that failure path.
    fn sharing_obstacle(
        &self,
        req: &ServiceRequest,
        family: Family,
        pools: &[usize],
        prefer: &[IpAddr],
    ) -> Option<AllocError> {
        let in_pools = |ip: &IpAddr| {
            Family::of(*ip) == family
                && matches!(self.pools.lookup(*ip), Lookup::In(p, _) if pools.contains(&p))
        };
        let first_refusal = |ips: &mut dyn Iterator<Item = IpAddr>| {
            ips.filter(in_pools)
                .find_map(|ip| self.usable(ip, req).err().map(|e| (ip, e)))
        };
        if let Some((_, e)) = first_refusal(&mut prefer.iter().copied()) {
            return Some(e);
        }
        let key = req.sharing_key.as_ref()?;
        if let Some((_, e)) = self
            .shared
            .get(key)
            .and_then(|set| first_refusal(&mut set.iter().copied()))
        {
            return Some(e);
        }
        self.shared
            .iter()
            .filter(|(k, _)| *k != key)
            .filter_map(|(_, set)| first_refusal(&mut set.iter().copied()))
            .min_by_key(|(ip, _)| *ip)
            .map(|(_, e)| e)
    }

    /// The IP of `family` that pool `id` would give `req`: a preferred (old)
    /// IP if still usable, else the lowest of the lowest free address and the
    /// lowest IP shared under `req`'s key that `req` may join.
    fn pick(
        &self,
        id: usize,
        family: Family,
        req: &ServiceRequest,
        prefer: &[IpAddr],
    ) -> Option<IpAddr> {
        let in_pool = |ip: IpAddr| matches!(self.pools.lookup(ip), Lookup::In(p, _) if p == id);
        if let Some(ip) = prefer
            .iter()
            .copied()
            .find(|ip| Family::of(*ip) == family && in_pool(*ip) && self.usable(*ip, req).is_ok())
        {
            return Some(ip);
        }
        let part = self.pools.pools[id].part(family);
        let mut best = part
            .free
            .first()
            .map(|ix| from_num(family, part.space.addr(ix)));
        if let Some(set) = req.sharing_key.as_ref().and_then(|k| self.shared.get(k)) {
            let v6_start = IpAddr::V6(Ipv6Addr::UNSPECIFIED);
            let same_family: Box<dyn Iterator<Item = &IpAddr>> = match family {
                Family::V4 => Box::new(set.range(..v6_start)),
                Family::V6 => Box::new(set.range(v6_start..)),
            };
            for &ip in same_family {
                if best.is_some_and(|b| ip >= b) {
                    break;
                }
                if in_pool(ip) && self.usable(ip, req).is_ok() {
                    best = Some(ip);
                    break;
                }
            }
        }
        best
    }

    fn insert_entry(&mut self, req: ServiceRequest, assignment: Assignment) {
        for ip in &assignment.ips {
            let holders = self.holders.entry(*ip).or_default();
            if holders.is_empty()
                && let Lookup::In(id, ix) = self.pools.lookup(*ip)
            {
                self.pools.pools[id]
                    .part_mut(Family::of(*ip))
                    .free
                    .remove(ix);
            }
            if let Err(pos) = holders.binary_search(&req.key) {
                holders.insert(pos, req.key.clone());
            }
            if let Some(k) = &req.sharing_key {
                self.shared.entry(k.clone()).or_default().insert(*ip);
            }
        }
        self.entries
            .insert(req.key.clone(), Entry { req, assignment });
    }

    fn remove_entry(&mut self, key: &ServiceKey) -> Option<Entry> {
        let entry = self.entries.remove(key)?;
        for ip in &entry.assignment.ips {
            let Some(holders) = self.holders.get_mut(ip) else {
                continue;
            };
            holders.retain(|h| h != key);
            if !holders.is_empty() {
                continue;
            }
            self.holders.remove(ip);
            if let Lookup::In(id, ix) = self.pools.lookup(*ip) {
                self.pools.pools[id]
                    .part_mut(Family::of(*ip))
                    .free
                    .insert(ix);
            }
            if let Some(k) = &entry.req.sharing_key
                && let Some(set) = self.shared.get_mut(k)
            {
                set.remove(ip);
                if set.is_empty() {
                    self.shared.remove(k);
                }
            }
        }
        Some(entry)
    }

    /// Checks the internal invariants; used by tests.
    #[cfg(test)]
    pub(crate) fn check_invariants(&self) -> Result<(), String> {
        for (ip, hs) in &self.holders {
            if hs.is_empty() {
                return Err(format!("{ip} has an empty holder list"));
            }
            for (i, a) in hs.iter().enumerate() {
                let ea = self
                    .entries
                    .get(a)
                    .ok_or(format!("{ip}: holder {a} has no entry"))?;
                if !ea.assignment.ips.contains(ip) {
                    return Err(format!("{ip}: holder {a} does not list it"));
                }
                for b in &hs[i + 1..] {
                    let eb = &self.entries[b];
                    share_check(*ip, &ea.req, b, &eb.req)
                        .map_err(|e| format!("illegal sharing: {e}"))?;
                }
            }
            if let Lookup::In(id, ix) = self.pools.lookup(*ip)
                && self.pools.pools[id].part(Family::of(*ip)).free.contains(ix)
            {
                return Err(format!("{ip} is held but free"));
            }
            let key = self.entries[&hs[0]].req.sharing_key.clone();
            if let Some(k) = key
                && !self.shared.get(&k).is_some_and(|s| s.contains(ip))
            {
                return Err(format!("{ip} missing from sharing index {k}"));
            }
        }
        for (k, set) in &self.shared {
            for ip in set {
                let hs = self
                    .holders
                    .get(ip)
                    .ok_or(format!("index {k} lists free {ip}"))?;
                if self.entries[&hs[0]].req.sharing_key.as_deref() != Some(k) {
                    return Err(format!("index {k} lists {ip} held under another key"));
                }
            }
        }
        for (key, e) in &self.entries {
            for ip in &e.assignment.ips {
                if !self.holders.get(ip).is_some_and(|h| h.contains(key)) {
                    return Err(format!("{key} lists {ip} but is not its holder"));
                }
            }
        }
        let held: u128 = self.holders.len() as u128;
        let in_use: u128 = self.stats().iter().map(|s| s.v4_in_use + s.v6_in_use).sum();
        if held != in_use {
            return Err(format!("{held} IPs held but pools count {in_use} in use"));
        }
        Ok(())
    }
}
