//! Helpers the integration tests share for the programs they start: `redis-server`, and the
//! example binaries (`chat`, `function`). Helpers for channels themselves are the public
//! `switchboard::testing`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

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

/// A `redis-server` of a test's own, on a free loopback port, without persistence; killed when
/// dropped.
pub struct RedisServer {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl RedisServer {
    /// A fresh server, or `None` (with a message) when `redis-server` is not installed; under
    /// `CI=true` a missing `redis-server` fails the test instead.
    pub fn start(name: &str) -> Option<RedisServer> {
        let installed = Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !installed {
            assert!(
                !under_ci(),
                "redis-server is not installed: the Redis tests must run under CI"
            );
            eprintln!(
                "skipping {name}: redis-server is not installed (apt-get install redis-server)"
            );
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let dir = std::env::temp_dir().join(format!("switchboard-redis-{name}-{port}"));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let mut server = RedisServer {
            port,
            dir,
            child: None,
        };
        server.run();
        Some(server)
    }

    fn run(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.cmd(&["PING"]).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
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

    /// Restarts it on the same port, empty (no persistence).
    pub fn restart(&mut self) {
        self.kill();
        self.run();
    }

    /// One command over a plain socket (RESP); the reply as JSON (integers as numbers,
    /// strings as strings, arrays as arrays, nil as null; an error reply is an `Err`).
    pub fn cmd(&self, args: &[&str]) -> std::io::Result<resp::Value> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut out = format!("*{}\r\n", args.len());
        for a in args {
            out.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        s.write_all(out.as_bytes())?;
        resp::read_resp(&mut BufReader::new(s))
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A minimal RESP reader for the tests' few inspection commands (this crate has no
/// dependencies; the engine itself uses the `redis` crate).
pub mod resp {
    use super::*;

    /// A RESP reply.
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub enum Value {
        Nil,
        Int(i64),
        Str(String),
        Array(Vec<Value>),
    }

    impl Value {
        /// The integer (or a string holding one); 0 otherwise.
        pub fn int(&self) -> i64 {
            match self {
                Value::Int(i) => *i,
                Value::Str(s) => s.parse().unwrap_or(0),
                _ => 0,
            }
        }

        /// The string forms of an array's items (or of the value itself).
        pub fn strings(&self) -> Vec<String> {
            match self {
                Value::Array(items) => items.iter().flat_map(Value::strings).collect(),
                Value::Str(s) => vec![s.clone()],
                Value::Int(i) => vec![i.to_string()],
                Value::Nil => Vec::new(),
            }
        }
    }

    pub(crate) fn read_resp(r: &mut impl BufRead) -> std::io::Result<Value> {
        let mut line = String::new();
        r.read_line(&mut line)?;
        let line = line.trim_end();
        let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, line.to_owned());
        let (kind, rest) = line.split_at(line.len().min(1));
        match kind {
            "+" => Ok(Value::Str(rest.to_owned())),
            "-" => Err(std::io::Error::other(rest.to_owned())),
            ":" => rest.parse().map(Value::Int).map_err(|_| bad()),
            "$" => {
                let n: i64 = rest.parse().map_err(|_| bad())?;
                if n < 0 {
                    return Ok(Value::Nil);
                }
                let mut buf = vec![0; n as usize + 2];
                r.read_exact(&mut buf)?;
                buf.truncate(n as usize);
                Ok(Value::Str(String::from_utf8_lossy(&buf).into_owned()))
            }
            "*" => {
                let n: i64 = rest.parse().map_err(|_| bad())?;
                if n < 0 {
                    return Ok(Value::Nil);
                }
                (0..n)
                    .map(|_| read_resp(r))
                    .collect::<Result<_, _>>()
                    .map(Value::Array)
            }
            _ => Err(bad()),
        }
    }
}
