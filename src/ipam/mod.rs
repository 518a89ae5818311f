//! Pure IP address management. (Being written.)
