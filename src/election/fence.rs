//! The fence on a node's own membership lease: from when on it must not
//! announce anything, because peers may already consider it dead.
//!
//! Pure: time is an argument. The speaker reports each successful renewal
//! with the local time the request was *sent*; this module must never read a
//! clock or compare remote timestamps.

use std::time::{Duration, Instant};

/// When our own lease stops protecting our announcements.
///
/// Peers expire us `lease_duration` after they *observe* a renewal; they
/// observe it no earlier than we *sent* it. So counting our deadline from the
/// send time, minus a margin for clock-rate differences and the time a
/// withdraw takes, guarantees we stop first.
#[derive(Clone, Debug)]
pub struct Fence {
    /// How long our lease protects us (the duration peers use).
    lease_duration: Duration,
    /// How much earlier than peers we stop.
    fence_margin: Duration,
    /// Send time of the last successful renewal; `None` = never renewed.
    last_renewal_sent: Option<Instant>,
}

impl Fence {
    /// A fence that starts closed (no renewal yet). `fence_margin` must be
    /// below `lease_duration` (validated in the config).
    pub fn new(lease_duration: Duration, fence_margin: Duration) -> Self {
        Self {
            lease_duration,
            fence_margin,
            last_renewal_sent: None,
        }
    }

    /// Records a successful renewal sent at `sent_at`. Older reports are
    /// ignored, so out-of-order completions cannot move the deadline back.
    pub fn renewed(&mut self, sent_at: Instant) {
        if self.last_renewal_sent.is_none_or(|t| t < sent_at) {
            self.last_renewal_sent = Some(sent_at);
        }
    }

    /// The instant from which we must not announce, if we ever renewed.
    pub fn deadline(&self) -> Option<Instant> {
        let window = self.lease_duration.saturating_sub(self.fence_margin);
        self.last_renewal_sent.and_then(|t| t.checked_add(window))
    }

    /// Whether we must withdraw everything at `now`.
    pub fn is_fenced(&self, now: Instant) -> bool {
        self.deadline().is_none_or(|d| now >= d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fence_is_closed_until_the_first_renewal_and_closes_before_peers_expire_us() {
        let t0 = Instant::now();
        let mut f = Fence::new(Duration::from_secs(4), Duration::from_secs(1));
        assert!(f.is_fenced(t0));
        f.renewed(t0);
        assert!(!f.is_fenced(t0 + Duration::from_millis(2999)));
        assert!(f.is_fenced(t0 + Duration::from_secs(3)));
    }

    #[test]
    fn an_older_renewal_report_does_not_move_the_deadline_back() {
        let t0 = Instant::now();
        let mut f = Fence::new(Duration::from_secs(4), Duration::from_secs(1));
        f.renewed(t0 + Duration::from_secs(2));
        f.renewed(t0);
        assert_eq!(f.deadline(), Some(t0 + Duration::from_secs(5)));
    }
}
