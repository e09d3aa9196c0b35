//! `--callgrind`: each server once under valgrind's callgrind, instrumented only during the
//! measured window, for instructions per message: a count the machine's noise does not move,
//! and a profile (`callgrind_annotate`) of where they go.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::load::{self, LoadConfig, Window};
use crate::support::{pin, spawn};

fn control(pid: u32, args: &[&str]) -> Result<(), String> {
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
fn total_ir(path: &Path) -> Result<u64, String> {
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

/// Runs the `kind` server under callgrind and the load against it; returns the window, the
/// instructions the server executed in it, and the profile's path.
pub fn measure(
    rt: &tokio::runtime::Runtime,
    kind: &str,
    cfg: &LoadConfig,
    pin: Option<&str>,
    dir: &Path,
) -> Result<(Window, u64, PathBuf), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let base = dir.join(format!("callgrind.{kind}"));
    // The on-demand dump is the base name with a sequence number.
    let dump = PathBuf::from(format!("{}.1", base.display()));
    let _ = std::fs::remove_file(&dump);
    let mut cmd = pin::command(pin, "valgrind");
    cmd.args(["-q", "--tool=callgrind", "--instr-atstart=no"])
        .arg(format!("--callgrind-out-file={}", base.display()))
        .arg(&exe)
        .args(["--serve", kind]);
    let (server, port) = spawn::server(cmd, &format!("{kind} server"))?;
    let pid = server.id();
    let mut hook = |start: bool| {
        if start {
            control(pid, &["-i", "on"])
        } else {
            control(pid, &["-i", "off"])?;
            control(pid, &["-d"])
        }
    };
    let local = tokio::task::LocalSet::new();
    let result = local.block_on(rt, load::run_with(port, Some(pid), cfg, &mut hook));
    drop(server);
    let window = result?;
    let ir = total_ir(&dump)?;
    Ok((window, ir, dump))
}
