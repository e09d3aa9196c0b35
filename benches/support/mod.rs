//! What the benches share: their plumbing, none of their workloads.
//!
//! - [`flags`]: the command line (clap), with the environment and the groups of flags the
//!   benches have in common;
//! - [`pin`]: `taskset`, the server side and the load generator on CPUs of their own;
//! - [`spawn`]: the server side as child processes of the bench's own binary (or another
//!   server), their port, their end;
//! - [`callgrind`]: valgrind's callgrind switched on for a measured window only;
//! - [`cpu`]: CPU time from /proc, over a measured window;
//! - [`mem`]: a server process's resident memory from /proc;
//! - [`stats`]: median, quantiles, runs repeated while disturbed by other load;
//! - [`table`]: the printed tables of runs.
//!
//! Each bench, `benches/<name>.rs`, has `mod support;` beside this folder.

// Each bench uses its own part of this module; what one bench leaves unused is not dead.
#![allow(dead_code)]

pub mod callgrind;
pub mod cpu;
pub mod flags;
pub mod mem;
pub mod pin;
pub mod spawn;
pub mod stats;
pub mod table;

use std::process::ExitCode;

/// The load generator's runtime: one current thread.
pub fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("runtime: {e}"))
}

/// The process's exit: a failure is told on stderr as `<who>: <message>`.
pub fn exit<E: std::fmt::Display>(who: &str, outcome: Result<(), E>) -> ExitCode {
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{who}: {e}");
            ExitCode::FAILURE
        }
    }
}
