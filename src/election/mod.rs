//! Pure owner election. (Being written.)
