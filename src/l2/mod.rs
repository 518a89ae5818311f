//! Layer-2 dataplane: ARP/NDP codecs, responder and announcer. (Being written.)
