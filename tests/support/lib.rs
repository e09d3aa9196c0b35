//! Helpers the integration tests share for the programs they start: `redis-server`, and the
//! example binaries (`chat`, `function`). Helpers for channels themselves are the public
//! `switchboard::testing`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use serde_json::{json, Value};

/// Whether the tests run under CI, where a missing program fails a test instead of skipping it.
pub fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
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

/// A plain HTTP/1.1 request to `http://host:port/path...` (blocking, `Connection: close`);
/// returns the status and the body. For the tests' few calls to HTTP routes of the programs
/// they start.
pub fn http(method: &str, url: &str, body: &str) -> std::io::Result<(u16, String)> {
    let rest = url.strip_prefix("http://").unwrap_or(url);
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let path = if path.is_empty() { "/" } else { path };
    let mut s = TcpStream::connect(host)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    let status = out
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, out.clone()))?;
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    Ok((status, body.to_owned()))
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

/// A `redis-server` of a test's own on a loopback TCP port, without persistence, its working
/// directory a temporary one. Killed (and its directory removed) when dropped.
pub struct RedisServer {
    dir: PathBuf,
    port: u16,
    child: Option<Child>,
}

fn redis_server_installed() -> bool {
    Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A port nothing listens on right now. Another process may take it before `redis-server`
/// binds it: `RedisServer::start` then tries another.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind a loopback port")
}

impl RedisServer {
    /// A fresh server, or `None` (with a message) when `redis-server` is not installed; under
    /// `CI=true` a missing `redis-server` fails the test instead.
    pub fn start(name: &str) -> Option<RedisServer> {
        if !redis_server_installed() {
            assert!(
                !under_ci(),
                "redis-server is not installed: the Redis tests must run under CI"
            );
            eprintln!(
                "skipping {name}: redis-server is not installed (apt-get install redis-server)"
            );
            return None;
        }
        // Test names are unique within the binary, the process id across runs.
        let dir =
            std::env::temp_dir().join(format!("switchboard-redis-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let mut r = RedisServer {
            dir,
            port: 0,
            child: None,
        };
        for _ in 0..5 {
            r.port = free_port();
            if r.run() {
                return Some(r);
            }
        }
        panic!("redis-server did not start on any of 5 free loopback ports");
    }

    /// Starts `redis-server` on `self.port`; false when it exited at once (the port was taken).
    fn run(&mut self) -> bool {
        let mut child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .args(["--dir", self.dir.to_str().expect("utf-8 temp dir")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.cmd(&["PING"]).is_err() {
            if child.try_wait().ok().flatten().is_some() {
                return false;
            }
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        self.child = Some(child);
        true
    }

    /// `redis://127.0.0.1:PORT/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Stops the server (abruptly).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Restarts on the same port (empty: no persistence), so that clients reconnect to the
    /// address they had.
    pub fn restart(&mut self) {
        self.kill();
        assert!(
            self.run(),
            "redis-server could not bind port {} again",
            self.port
        );
    }

    /// One command over a plain socket (RESP); the reply as JSON (integers as numbers,
    /// strings as strings, arrays as arrays, nil as null; an error reply is an `Err`).
    pub fn cmd(&self, args: &[&str]) -> std::io::Result<Value> {
        let mut r = self.send(&[args])?;
        read_resp(&mut r)
    }

    /// Commands in one MULTI/EXEC (applied at one instant); the replies.
    pub fn multi(&self, cmds: &[&[&str]]) -> std::io::Result<Value> {
        let mut all: Vec<&[&str]> = vec![&["MULTI"]];
        all.extend_from_slice(cmds);
        all.push(&["EXEC"]);
        let mut r = self.send(&all)?;
        for _ in 0..=cmds.len() {
            read_resp(&mut r)?; // +OK, then +QUEUED each
        }
        read_resp(&mut r)
    }

    fn send(&self, cmds: &[&[&str]]) -> std::io::Result<BufReader<TcpStream>> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut out = String::new();
        for args in cmds {
            out.push_str(&format!("*{}\r\n", args.len()));
            for a in *args {
                out.push_str(&format!("${}\r\n{a}\r\n", a.len()));
            }
        }
        s.write_all(out.as_bytes())?;
        Ok(BufReader::new(s))
    }
}

fn read_resp(r: &mut impl BufRead) -> std::io::Result<Value> {
    let mut line = String::new();
    r.read_line(&mut line)?;
    let line = line.trim_end();
    let bad = || std::io::Error::other(format!("bad reply `{line}`"));
    let (kind, rest) = line.split_at_checked(1).ok_or_else(bad)?;
    Ok(match kind {
        "+" => json!(rest),
        "-" => return Err(std::io::Error::other(rest.to_owned())),
        ":" => json!(rest.parse::<i64>().map_err(|_| bad())?),
        "$" => {
            let n: i64 = rest.parse().map_err(|_| bad())?;
            if n < 0 {
                Value::Null
            } else {
                let mut buf = vec![0; n as usize + 2];
                r.read_exact(&mut buf)?;
                json!(String::from_utf8_lossy(&buf[..n as usize]))
            }
        }
        "*" => {
            let n: i64 = rest.parse().map_err(|_| bad())?;
            let mut items = Vec::new();
            for _ in 0..n.max(0) {
                items.push(read_resp(r)?);
            }
            Value::Array(items)
        }
        _ => return Err(bad()),
    })
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
