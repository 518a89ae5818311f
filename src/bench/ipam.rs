//! `l2lb bench ipam`: allocation cost as pools fill, and restart rebuild time.
//!
//! Fills an IPv4 /16 and an IPv6 /112 pool to 100k Services (half per
//! family) and measures the mean cost of one `allocate` over windows of 1000
//! new Services at about 1k and about 100k assigned (each window is timed
//! several times, then released, and the median kept). The 1k figure is the
//! baseline: `growth_ratio = at_100k / at_1k` should stay <= 2 because no
//! allocation scans the pool. Then times `rebuild` of all 100k assignments.

use std::time::Instant;

use super::BenchError;
use crate::ipam::{Allocator, Family, PoolSpec, ServiceRequest};

/// Services in the window timed at each fill level.
const WINDOW: usize = 1000;
/// Timed repetitions per window; the median is reported.
const REPEATS: usize = 9;
/// Services at the end of the fill.
const TOTAL: usize = 100_000;

fn request(prefix: &str, i: usize) -> ServiceRequest {
    let mut r = ServiceRequest::new(format!("ns{}", i % 50), format!("{prefix}{i}"));
    r.created = i as i64;
    r.families = vec![if i.is_multiple_of(2) {
        Family::V4
    } else {
        Family::V6
    }];
    r
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// Mean ns per allocate over a window of new Services, median of repeats;
/// the window is released after each repeat so the fill level is unchanged.
fn window_ns(a: &mut Allocator, window: &[ServiceRequest]) -> Result<f64, BenchError> {
    let mut samples = Vec::with_capacity(REPEATS);
    for _ in 0..REPEATS {
        let start = Instant::now();
        for r in window {
            a.allocate(r)
                .map_err(|e| BenchError::Failed(format!("allocate failed: {e}")))?;
        }
        samples.push(start.elapsed().as_nanos() as f64 / window.len() as f64);
        for r in window {
            a.release(&r.key);
        }
    }
    Ok(median(samples))
}

fn fill(a: &mut Allocator, reqs: &[ServiceRequest]) -> Result<(), BenchError> {
    for r in reqs {
        a.allocate(r)
            .map_err(|e| BenchError::Failed(format!("fill: allocate failed: {e}")))?;
    }
    Ok(())
}

/// Runs the benchmark; prints human lines and, last, one JSON object.
pub fn run() -> Result<(), BenchError> {
    let pools = vec![
        PoolSpec::new("bench-v4", ["10.0.0.0/16"]),
        PoolSpec::new("bench-v6", ["fd00:12::/112"]),
    ];
    let mut a = Allocator::new();
    let change = a.set_pools(pools.clone());
    if !change.issues.is_empty() {
        return Err(BenchError::Failed(format!(
            "bench pools invalid: {:?}",
            change.issues
        )));
    }
    let fill_reqs: Vec<ServiceRequest> = (0..TOTAL - WINDOW).map(|i| request("svc", i)).collect();
    let window: Vec<ServiceRequest> = (0..WINDOW).map(|i| request("win", i)).collect();

    fill(&mut a, &fill_reqs[..WINDOW])?;
    let at_1k = window_ns(&mut a, &window)?;
    println!(
        "allocate at ~{}k assigned: {at_1k:.0} ns (median of {REPEATS} windows of {WINDOW})",
        WINDOW / 1000
    );

    let start = Instant::now();
    fill(&mut a, &fill_reqs[WINDOW..])?;
    println!(
        "filled to {} services in {:.0} ms",
        fill_reqs.len(),
        start.elapsed().as_secs_f64() * 1e3
    );
    let at_100k = window_ns(&mut a, &window)?;
    println!("allocate at ~{}k assigned: {at_100k:.0} ns", TOTAL / 1000);
    fill(&mut a, &window)?;
    let stats = a.stats();
    for s in &stats {
        println!(
            "pool {}: IPv4 {}/{} IPv6 {}/{} in use",
            s.name, s.v4_in_use, s.v4_total, s.v6_in_use, s.v6_total
        );
    }

    let existing = a.export();
    let mut rebuild_ms = Vec::new();
    for _ in 0..3 {
        let mut b = Allocator::new();
        b.set_pools(pools.clone());
        let claims = existing.clone();
        let start = Instant::now();
        let conflicts = b.rebuild(claims);
        rebuild_ms.push(start.elapsed().as_secs_f64() * 1e3);
        if !conflicts.is_empty() || b.stats() != stats {
            return Err(BenchError::Failed(format!(
                "rebuild did not restore the state ({} conflicts)",
                conflicts.len()
            )));
        }
    }
    let rebuild_ms_100k = median(rebuild_ms);
    println!(
        "rebuild of {} assignments: {rebuild_ms_100k:.1} ms",
        existing.len()
    );
    let growth_ratio = at_100k / at_1k;
    println!("growth ratio (100k / 1k): {growth_ratio:.2} (goal <= 2)");
    // Written by hand so the keys keep the documented order.
    println!(
        "{{\"bench\":\"ipam\",\"alloc_ns_at_1k\":{at_1k:.0},\"alloc_ns_at_100k\":{at_100k:.0},\"growth_ratio\":{growth_ratio:.3},\"rebuild_ms_100k\":{rebuild_ms_100k:.1}}}"
    );
    Ok(())
}
