//! The speaker. (Being written.)

pub mod eligibility;
