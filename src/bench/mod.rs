//! Benchmarks run as `l2lb bench <name>` from the release binary.
//!
//! Every benchmark measures a baseline in the same run and prints, as its
//! last line, one JSON object with the figures and their ratio to the
//! baseline. Timing thresholds live here and in closing notes, never in
//! unit tests.

pub mod arp;
pub mod controller;
pub mod failover;
mod failover_faults;
pub mod ipam;

/// Names of the benchmarks `l2lb bench` accepts.
pub const NAMES: &[&str] = &["ipam", "arp", "controller", "failover"];

/// Errors a benchmark can end with.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The name given to `l2lb bench` is not a known benchmark.
    #[error("unknown benchmark {0:?}; known: {known}", known = NAMES.join(", "))]
    Unknown(String),
    /// The benchmark ran but could not complete its measurement.
    #[error("{0}")]
    Failed(String),
}

/// Runs the benchmark `name` and prints its report; the last line is JSON.
pub fn run(name: &str) -> Result<(), BenchError> {
    match name {
        "ipam" => ipam::run(),
        "controller" => controller::run(),
        "failover" => failover::run(),
        "arp" => arp::run(),
        _ => Err(BenchError::Unknown(name.to_string())),
    }
}
