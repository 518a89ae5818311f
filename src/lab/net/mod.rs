//! Network-namespace LAN harness. (Being written.)
