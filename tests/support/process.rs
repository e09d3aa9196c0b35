//! The programs the tests start: example binaries and others (`redis-server` has its own
//! module), killed when dropped; and the rule for a program that is not installed.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, SystemTime};

use crate::wait::Wait;

/// Whether the tests run under CI (`CI=true` or `CI=1`), where a missing program fails a test
/// instead of skipping it.
pub fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

/// The way out of a test that cannot run here because `why` (a program is missing): under CI
/// it fails; elsewhere it says it skips `test`, and the test returns.
pub fn skip(test: &str, why: &str) {
    assert!(!under_ci(), "CI: {test} must run, but {why}");
    eprintln!("skipping {test}: {why}");
}

/// A loopback port nothing listens on right now (another process may take it before the
/// program started on it binds it).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind a loopback port")
}

/// A child process, killed when dropped.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `cmd` and reads the `listening on http://ADDR` line the examples print once bound;
/// returns the process and `http://ADDR`.
pub fn spawn_listening(mut cmd: Command) -> (Proc, String) {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    let stdout = child.stdout.take().expect("piped stdout");
    let proc = Proc(child);
    let mut line = String::new();
    let mut out = BufReader::new(stdout);
    out.read_line(&mut line).expect("read the first line");
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line from {cmd:?}: {line:?}"))
        .to_owned();
    // Keep draining what it prints later, so that it never blocks on a full pipe.
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut out, &mut std::io::sink());
    });
    (proc, url)
}

/// Waits until something accepts TCP connections on `addr` (a program started on a port of
/// the test's choosing), looking every 50 ms for at most `limit`.
pub async fn until_listening(what: &str, addr: &str, limit: Duration) {
    Wait::up_to(limit)
        .every(Duration::from_millis(50))
        .until(&format!("{what} to listen on {addr}"), || async {
            tokio::net::TcpStream::connect(addr).await.is_ok()
        })
        .await;
}

/// Waits (blocking, looking every 50 ms) for `child` to exit, at most `limit`; `None` when it
/// had not, and was then killed.
pub fn wait_for_exit(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let exited = Wait::up_to(limit)
        .every(Duration::from_millis(50))
        .poll_blocking(|| child.try_wait().expect("wait for the child").ok_or(()));
    match exited {
        Ok(status) => Some(status),
        Err(()) => {
            let _ = child.kill();
            let _ = child.wait();
            None
        }
    }
}

/// The chat example (the showcase many tests drive) on a free loopback port, with `args` after
/// `--bind 127.0.0.1 --port 0`; the process and its base URL.
pub fn chat(args: &[&str]) -> (Proc, String) {
    let bin = example_binary("chat", &["examples/chat", "framework/src", "framework/js"]);
    let mut cmd = Command::new(bin);
    cmd.args(["--bind", "127.0.0.1", "--port", "0"])
        .args(args)
        .env("RUST_LOG", "warn");
    spawn_listening(cmd)
}

/// The binary of the example `name`, built by `cargo test` beside the test binaries.
///
/// `cargo test --test X` alone does not rebuild examples: this refuses a binary older than
/// any file under `sources` (paths relative to the workspace root; directories are walked), so
/// a test never passes on old code.
pub fn example_binary(name: &str, sources: &[&str]) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target directory");
    let bin = dir.join("examples").join(name);
    assert!(
        bin.is_file(),
        "{} is missing: run `cargo build --example {name}` (cargo test --workspace builds it)",
        bin.display()
    );
    let built = modified(&bin).expect("the example's mtime");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for src in sources {
        if let Some(newer) = newer_than(&root.join(src), built) {
            panic!(
                "the {name} example is older than {}: run `cargo build --example {name}`",
                newer.display()
            );
        }
    }
    bin
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

fn newer_than(path: &Path, built: SystemTime) -> Option<PathBuf> {
    if path.is_dir() {
        let entries = std::fs::read_dir(path).ok()?;
        return entries.flatten().find_map(|e| newer_than(&e.path(), built));
    }
    (modified(path)? > built).then(|| path.to_owned())
}
