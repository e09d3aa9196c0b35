//! `--callgrind`: each server once under valgrind's callgrind, instrumented only during the
//! measured window, for instructions per message: a count the machine's noise does not move,
//! and a profile (`callgrind_annotate`) of where they go.

use std::path::{Path, PathBuf};

use super::load::{self, LoadConfig, Window};
use crate::support::callgrind::{self, total_ir};
use crate::support::spawn;

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
    let args = ["--serve".to_owned(), kind.to_owned()];
    let cmd = callgrind::command(pin, &base, &exe, &args);
    let (server, port) = spawn::server(cmd, &format!("{kind} server"))?;
    let pid = server.id();
    let mut hook = callgrind::window_hook(pid);
    let local = tokio::task::LocalSet::new();
    let result = local.block_on(rt, load::run_with(port, Some(pid), cfg, &mut hook));
    drop(server);
    let window = result?;
    let ir = total_ir(&dump)?;
    Ok((window, ir, dump))
}
