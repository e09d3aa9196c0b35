//! valgrind's callgrind around a bench's measured window: a server started under it with
//! instrumentation off, switched on and off with `callgrind_control`, and the instructions of
//! the window read from the dump. A count the machine's noise does not move, and a profile
//! (`callgrind_annotate`) of where they go.

use std::path::Path;
use std::process::{Command, Stdio};

/// `callgrind_control ARGS PID`: `-i on|off` switches instrumentation, `-d` dumps.
pub fn control(pid: u32, args: &[&str]) -> Result<(), String> {
    let out = Command::new("callgrind_control")
        .args(args)
        .arg(pid.to_string())
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("callgrind_control: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "callgrind_control {args:?} {pid}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The `totals:` (or `summary:`) Ir of a callgrind output file.
pub fn total_ir(path: &Path) -> Result<u64, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    text.lines()
        .rev()
        .find_map(|l| {
            l.strip_prefix("totals:")
                .or_else(|| l.strip_prefix("summary:"))
        })
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("{}: no totals line", path.display()))
}

/// `valgrind --tool=callgrind` running `exe args`, instrumentation off until switched on,
/// profile written to `base` (`base.1` for the first dump), on CPU `pin` when given.
pub fn command(pin: Option<&str>, base: &Path, exe: &Path, args: &[String]) -> Command {
    let mut cmd = super::pin::command(pin, "valgrind");
    cmd.args([
        "-q",
        "--tool=callgrind",
        "--instr-atstart=no",
        "--dump-instr=yes",
    ])
    .arg(format!("--callgrind-out-file={}", base.display()))
    .arg(exe)
    .args(args);
    cmd
}

/// The hook for a window: instrumentation on at its start; off and dumped at its end.
pub fn window_hook(pid: u32) -> impl FnMut(bool) -> Result<(), String> {
    move |start| {
        if start {
            control(pid, &["-i", "on"])
        } else {
            control(pid, &["-i", "off"])?;
            control(pid, &["-d"])
        }
    }
}
