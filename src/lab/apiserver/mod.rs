//! Embedded test API server. (Being written.)
