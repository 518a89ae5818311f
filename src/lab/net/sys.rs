//! The system calls the lab cannot make through std: `setns(2)`, `kill(2)`,
//! `geteuid(2)` and `getrusage(2)`; the lab's only unsafe code.
//!
//! Owns nothing long-lived. [`enter_netns`] must never be used on a thread
//! that outlives the closure it serves (the callers run it on a fresh,
//! short-lived thread).
#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::mem;
use std::os::fd::AsRawFd;

/// Moves the calling thread into the network namespace `/var/run/netns/<ns>`.
pub(super) fn enter_netns(ns: &str) -> io::Result<()> {
    let file = File::open(format!("/var/run/netns/{ns}"))?;
    // SAFETY: `file` is an open descriptor of a network-namespace file that
    // stays alive for the whole call; setns only changes this thread's
    // namespace and touches no memory of ours.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// True when a process with this pid exists (signal 0 probes without sending).
pub(super) fn pid_alive(pid: i32) -> bool {
    // SAFETY: kill with signal 0 sends nothing; it only checks existence and
    // permission. No memory is involved.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Sends `signal` to `pid`; errors (already gone) are ignored by design.
pub(super) fn signal(pid: i32, signal: i32) {
    // SAFETY: kill has no memory effects; a stale pid at worst signals nothing
    // (the harness only signals pids it spawned or that live in its namespaces).
    unsafe {
        libc::kill(pid, signal);
    }
}

/// The effective user id (root is needed for namespaces).
pub(super) fn euid() -> u32 {
    // SAFETY: geteuid cannot fail and has no side effects.
    unsafe { libc::geteuid() }
}

/// CPU time (user + system) this process has used so far, in microseconds.
pub(super) fn process_cpu_micros() -> u64 {
    // SAFETY: rusage is plain data; all-zero is a valid value.
    let mut ru: libc::rusage = unsafe { mem::zeroed() };
    // SAFETY: `ru` is a live rusage the call writes into; getrusage cannot
    // fail for RUSAGE_SELF with a valid pointer.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let us = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    us(ru.ru_utime) + us(ru.ru_stime)
}
