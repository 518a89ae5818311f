//! What a speaker tells its peers through annotations on its own Lease,
//! besides liveness: the VIPs it answers for now and the MACs it answers
//! with.
//!
//! The announced set makes every planned move a hand-over instead of a
//! guess: a node that wins a VIP while a live peer's Lease still lists it
//! waits for the peer to withdraw and say so, then announces at once (no
//! fixed takeover delay, no overlap). Non-revertive advertisements keep a
//! VIP on the node that lists it. The MACs let a node tell the late echo
//! of such a hand-over (a reply the previous owner sent just before it
//! withdrew) from a real conflict with a host that is not a speaker.
//!
//! A speaker writes the announced set right after the dataplane changed,
//! never before: a withdrawal is real by the time a peer reads it. The
//! writes come with ownership changes only, so they do not grow with the
//! number of VIPs a node keeps.

use std::collections::BTreeSet;
use std::net::IpAddr;

use crate::l2::Mac;

/// Lease annotation listing the VIPs the speaker answers for (comma
/// separated, sorted). Absent on speakers that predate it: peers then
/// fall back to the takeover delay.
pub const ANNOUNCED_ANNOTATION: &str = "l2lb.io/announced";
/// Lease annotation listing the MACs of the interfaces the speaker
/// announces on (comma separated).
pub const MACS_ANNOTATION: &str = "l2lb.io/macs";

/// Our Lease's annotations for peers, as the renewer writes them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Published {
    /// Interfaces with a usable link.
    pub interfaces: BTreeSet<String>,
    /// Their MACs.
    pub macs: BTreeSet<Mac>,
    /// The newest fast-path incarnation the LAN acknowledged.
    pub incarnation: Option<u64>,
    /// The VIPs the dataplane answers for.
    pub announced: BTreeSet<IpAddr>,
}

/// Formats items as a comma-separated list, the form the annotations use.
pub fn join<T: std::fmt::Display>(items: impl IntoIterator<Item = T>) -> String {
    items
        .into_iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// Parses a comma-separated list, skipping what does not parse (a peer's
/// annotation is input we do not control; one bad entry must not hide the
/// rest).
pub fn parse_list<T: std::str::FromStr + Ord>(value: &str) -> BTreeSet<T> {
    value
        .split(',')
        .map(str::trim)
        .filter_map(|s| s.parse().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_round_trip_and_bad_entries_are_skipped() {
        let vips: BTreeSet<IpAddr> = ["198.18.0.10", "fd00::1"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(parse_list::<IpAddr>(&join(&vips)), vips);
        assert_eq!(join(BTreeSet::<IpAddr>::new()), "");
        assert!(parse_list::<IpAddr>("").is_empty());
        let parsed: BTreeSet<IpAddr> = parse_list(" 198.18.0.10, junk,,fd00::1 ");
        assert_eq!(parsed, vips);
        let macs: BTreeSet<Mac> = parse_list("02:00:00:00:00:01,ZZ");
        assert_eq!(join(&macs), "02:00:00:00:00:01");
    }
}
