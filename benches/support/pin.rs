//! Pinning to CPUs with `taskset`: the server side to one CPU, the load generator (this
//! process) to another, so that neither takes the other's CPU time.

use std::ffi::OsStr;
use std::process::{Command, Stdio};

/// `program`, run on CPU `cpu` (a `taskset -c` list) when given.
pub fn command(cpu: Option<&str>, program: impl AsRef<OsStr>) -> Command {
    match cpu {
        Some(cpu) => {
            let mut c = Command::new("taskset");
            c.args([OsStr::new("-c"), OsStr::new(cpu), program.as_ref()]);
            c
        }
        None => Command::new(program),
    }
}

/// Pins every thread of this process to `cpu`.
fn this_process(cpu: &str) -> Result<(), String> {
    pid(cpu, std::process::id())
}

/// Where a run's processes are pinned.
pub struct Pinning {
    /// The server side's CPU and the load generator's; None: unpinned.
    cpus: Option<(String, String)>,
}

impl Pinning {
    /// Pins this process, the load generator, to `client` (when `enabled`), and leaves
    /// `server` for the server side's processes ([`server`](Self::server)). If this process
    /// cannot be pinned, `bench` says so on stderr and the whole run goes unpinned.
    pub fn apply(bench: &str, enabled: bool, server: &str, client: &str) -> Pinning {
        if !enabled {
            return Pinning { cpus: None };
        }
        match this_process(client) {
            Ok(()) => Pinning {
                cpus: Some((server.to_owned(), client.to_owned())),
            },
            Err(e) => {
                eprintln!("{bench}: could not pin (running unpinned): {e}");
                Pinning { cpus: None }
            }
        }
    }

    /// The server side's CPU, if pinned.
    pub fn server(&self) -> Option<&str> {
        self.cpus.as_ref().map(|(server, _)| server.as_str())
    }

    /// For the settings line: `<server_side> on CPU S, load generator on CPU C`, or `unpinned`.
    pub fn describe(&self, server_side: &str) -> String {
        match &self.cpus {
            Some((server, client)) => {
                format!("{server_side} on CPU {server}, load generator on CPU {client}")
            }
            None => "unpinned".to_owned(),
        }
    }
}

/// Pins every thread of the running process `pid` to `cpu` (a `taskset -c` list).
pub fn pid(cpu: &str, pid: u32) -> Result<(), String> {
    let status = Command::new("taskset")
        .args(["-a", "-p", "-c", cpu, &pid.to_string()])
        .stdout(Stdio::null())
        .status()
        .map_err(|e| format!("taskset: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("taskset -a -p -c {cpu} {pid} exited with {status}"))
    }
}
