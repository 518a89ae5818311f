//! The speaker. (Being written.)

pub mod core;
pub mod eligibility;
