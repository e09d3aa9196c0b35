//! The server side as child processes: the bench's own binary re-executed in server mode
//! (`<bench> --serve ...`), possibly under another program (valgrind), or another server
//! (redis-server). Started, awaited until they listen, killed when dropped.
//!
//! The protocol between a bench and its server mode: once it listens, the server prints one
//! line on stdout, `port N` ([`announce_port`], read by [`server`]) or the bench's own
//! ([`announced`]).

use std::future::Future;
use std::io::{self, BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::pin;

/// A child process, killed (and reaped) when dropped.
pub struct Proc {
    child: Child,
}

impl Proc {
    pub fn id(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// This bench's own binary, on CPU `cpu` when given; the caller adds `--serve ...`.
pub fn this_bench(cpu: Option<&str>) -> Result<Command, String> {
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    Ok(pin::command(cpu, exe))
}

/// Starts `cmd` (`what` names it in errors) and reads the line it announces on stdout once
/// it is ready. Its stdin is a pipe that stays open as long as the child lives (a server may
/// run until it closes); its stderr is this process's.
pub fn announced(mut cmd: Command, what: &str) -> Result<(Proc, String), String> {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("starting the {what}: {e}"))?;
    let stdout = child.stdout.take();
    let proc = Proc { child };
    let mut line = String::new();
    let _ = BufReader::new(stdout.ok_or("no stdout")?).read_line(&mut line);
    Ok((proc, line))
}

/// Starts `cmd`, a server that announces `port N`, and returns it with the port.
pub fn server(cmd: Command, what: &str) -> Result<(Proc, u16), String> {
    let (proc, line) = announced(cmd, what)?;
    match line
        .trim()
        .strip_prefix("port ")
        .and_then(|p| p.parse::<u16>().ok())
    {
        Some(port) if port != 0 => Ok((proc, port)),
        _ => Err(format!(
            "the {what} did not announce its port (got {line:?})"
        )),
    }
}

/// In server mode: says that the server listens, on the first of `addrs`, as [`server`]
/// expects.
pub fn announce_port(addrs: &[SocketAddr]) -> io::Result<()> {
    let port = addrs.first().map_or(0, |a| a.port());
    let mut out = io::stdout().lock();
    writeln!(out, "port {port}")?;
    out.flush()
}

/// A loopback port free right now, for a server that must be told its port.
pub fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("a free port: {e}"))
}

/// Starts `cmd`, a server told to listen on `port`, and waits (at most `timeout`) until it
/// accepts connections there.
pub fn listening(
    mut cmd: Command,
    port: u16,
    what: &str,
    timeout: Duration,
) -> Result<Proc, String> {
    let child = cmd.spawn().map_err(|e| format!("{what}: {e}"))?;
    let proc = Proc { child };
    let deadline = Instant::now() + timeout;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            return Err(format!("{what} did not start"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(proc)
}

/// One run of a load generator, on a `LocalSet` of `rt`: against `target` (port, and pid
/// when known), a server started elsewhere, if given; else against the server `start`
/// launches, killed once `load` is done. The `LocalSet`, with the load's tasks and sockets,
/// goes after the server, so that the server's side closes first.
pub fn against<T, F>(
    rt: &tokio::runtime::Runtime,
    target: Option<(u16, Option<u32>)>,
    start: impl FnOnce() -> Result<(Proc, u16), String>,
    load: impl FnOnce(u16, Option<u32>) -> F,
) -> Result<T, String>
where
    F: Future<Output = Result<T, String>>,
{
    let local = tokio::task::LocalSet::new();
    if let Some((port, pid)) = target {
        return local.block_on(rt, load(port, pid));
    }
    let (server, port) = start()?;
    let result = local.block_on(rt, load(port, Some(server.id())));
    drop(server);
    drop(local);
    result
}
