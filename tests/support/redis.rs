//! A `redis-server` of a test's own, and a plain RESP client to look inside it.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use crate::process::{free_port, skip};
use crate::wait::Wait;

/// A `redis-server` of a test's own on a loopback TCP port, without persistence, its working
/// directory a temporary one. Killed (and its directory removed) when dropped.
pub struct RedisServer {
    dir: PathBuf,
    port: u16,
    child: Option<Child>,
}

/// Whether `redis-server` is on the PATH (the tests and the Redis bench ask).
pub fn installed() -> bool {
    Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

impl RedisServer {
    /// A fresh server, or `None` (with a message) when `redis-server` is not installed; under
    /// CI a missing `redis-server` fails the test instead (see [`skip`]).
    pub fn start(name: &str) -> Option<RedisServer> {
        if !installed() {
            skip(
                name,
                "redis-server is not installed (apt-get install redis-server)",
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
        // Up once it answers; `false` once it has exited.
        let up = Wait::up_to(Duration::from_secs(10))
            .every(Duration::from_millis(20))
            .poll_blocking(|| match self.cmd(&["PING"]) {
                Ok(_) => Ok(true),
                Err(_) if child.try_wait().ok().flatten().is_some() => Ok(false),
                Err(e) => Err(e),
            });
        match up {
            Ok(true) => {
                self.child = Some(child);
                true
            }
            Ok(false) => false,
            Err(e) => panic!("redis-server did not start: {e}"),
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
        send(self.port, cmds)
    }
}

/// One command to the Redis on loopback `port` (see [`RedisServer::cmd`]).
pub fn command(port: u16, args: &[&str]) -> std::io::Result<Value> {
    let mut r = send(port, &[args])?;
    read_resp(&mut r)
}

fn send(port: u16, cmds: &[&[&str]]) -> std::io::Result<BufReader<TcpStream>> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
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
