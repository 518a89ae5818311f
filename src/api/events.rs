//! Every Event reason l2lb records, in one place: users filter on these
//! (`kubectl get events --field-selector reason=…`) and alerts match them,
//! so they are part of the interface and never change spelling.

use std::fmt;

/// Why an Event is recorded on a Service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    /// Controller: an address was assigned.
    IpAllocated,
    /// Controller: no address could be assigned; the note says why.
    AllocationFailed,
    /// Controller: the Service stopped being ours and its address was released.
    IpReleased,
    /// Controller: a published address had to be withdrawn (conflict or pool removal).
    ClearAssignment,
    /// Controller: the Service uses a deprecated annotation spelling
    /// (`metallb.universe.tf/`); it still works. Once per Service.
    DeprecatedAnnotation,
    /// Speaker: this node started announcing the Service.
    NodeAssigned,
    /// Speaker: this node owns a VIP of the Service but could not announce it.
    AnnounceFailed,
    /// Speaker: another host answers for a VIP this node announces.
    IpConflict,
    /// Speaker: the Service's VIP is not announced because of its
    /// configuration (the note says which rule).
    NotAnnounced,
}

impl Reason {
    /// The reason as written into Events.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::IpAllocated => "IPAllocated",
            Reason::AllocationFailed => "AllocationFailed",
            Reason::IpReleased => "IPReleased",
            Reason::ClearAssignment => "ClearAssignment",
            Reason::DeprecatedAnnotation => "DeprecatedAnnotation",
            Reason::NodeAssigned => "nodeAssigned",
            Reason::AnnounceFailed => "announceFailed",
            Reason::IpConflict => "ipConflict",
            Reason::NotAnnounced => "notAnnounced",
        }
    }

    /// Whether Events with this reason are Warnings (else Normal).
    pub fn is_warning(self) -> bool {
        matches!(
            self,
            Reason::AllocationFailed
                | Reason::ClearAssignment
                | Reason::DeprecatedAnnotation
                | Reason::AnnounceFailed
                | Reason::IpConflict
                | Reason::NotAnnounced
        )
    }
}

impl Reason {
    /// The Event to record for this reason with `note`; `action` says what
    /// the component was doing (the controller allocates; a speaker's
    /// action is the reason itself).
    pub fn event(self, note: String, action: &str) -> kube::runtime::events::Event {
        use kube::runtime::events::{Event, EventType};
        Event {
            type_: if self.is_warning() {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: self.to_string(),
            note: Some(note),
            action: action.to_string(),
            secondary: None,
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_keep_their_published_spelling() {
        let all = [
            (Reason::IpAllocated, "IPAllocated", false),
            (Reason::AllocationFailed, "AllocationFailed", true),
            (Reason::IpReleased, "IPReleased", false),
            (Reason::ClearAssignment, "ClearAssignment", true),
            (Reason::NodeAssigned, "nodeAssigned", false),
            (Reason::AnnounceFailed, "announceFailed", true),
            (Reason::IpConflict, "ipConflict", true),
        ];
        for (reason, text, warning) in all {
            assert_eq!(reason.to_string(), text);
            assert_eq!(reason.is_warning(), warning, "{text}");
        }
    }
}
