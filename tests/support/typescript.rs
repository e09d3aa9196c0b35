//! The TypeScript compiler for the type-checking tests (`tsc` from npm; `.ci/run` installs it
//! and sets `TSC`), and the output of the programs they run.

use std::process::{Command, Output};

use crate::process::skip;

/// The TypeScript compiler (`$TSC`, else `tsc` on the `PATH`) and its version, or `None` once
/// `test` was skipped because it is missing (a failure under CI).
pub fn tsc(test: &str) -> Option<(String, String)> {
    let tsc = std::env::var("TSC").unwrap_or_else(|_| "tsc".to_owned());
    match Command::new(&tsc).arg("--version").output() {
        Ok(out) if out.status.success() => {
            let version = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            Some((tsc, version))
        }
        _ => {
            skip(
                test,
                &format!("`{tsc}` (the TypeScript compiler; set TSC) is not installed"),
            );
            None
        }
    }
}

/// Runs `cmd` to its end and returns what it printed.
pub fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// Both streams of a program's output, for a failure's message (tsc prints its diagnostics on
/// stdout).
pub fn printed(out: &Output) -> String {
    format!(
        "--- stdout ---\n{}\n--- stderr ---\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
