//! A `nats-server` of a test's own, with JetStream.

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::process::{free_port, skip};
use crate::wait::Wait;

/// A `nats-server` of a test's own on a loopback TCP port, with JetStream storing into a
/// temporary directory (kept across [`NatsServer::restart`], removed when dropped). Killed
/// when dropped.
pub struct NatsServer {
    dir: PathBuf,
    port: u16,
    child: Option<Child>,
}

/// Whether `nats-server` is on the PATH.
pub fn installed() -> bool {
    Command::new("nats-server")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

impl NatsServer {
    /// A fresh server, or `None` (with a message) when `nats-server` is not installed; under
    /// CI a missing `nats-server` fails the test instead (see [`skip`]).
    pub fn start(name: &str) -> Option<NatsServer> {
        if !installed() {
            skip(
                name,
                "nats-server is not installed (apt-get install nats-server)",
            );
            return None;
        }
        let dir =
            std::env::temp_dir().join(format!("switchboard-nats-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let mut n = NatsServer {
            dir,
            port: 0,
            child: None,
        };
        for _ in 0..5 {
            n.port = free_port();
            if n.run() {
                return Some(n);
            }
        }
        panic!("nats-server did not start on any of 5 free loopback ports");
    }

    /// Starts `nats-server` on `self.port`; false when it exited at once (the port was taken).
    fn run(&mut self) -> bool {
        let mut child = Command::new("nats-server")
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-js", "-sd", self.dir.to_str().expect("utf-8 temp dir")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nats-server");
        // Up once it greets a client with JetStream on; `false` once it has exited.
        let up = Wait::up_to(Duration::from_secs(10))
            .every(Duration::from_millis(20))
            .poll_blocking(|| match self.info() {
                Ok(info) if info.contains("\"jetstream\":true") => Ok(true),
                Ok(info) => Err(std::io::Error::other(format!("no JetStream yet: {info}"))),
                Err(_) if child.try_wait().ok().flatten().is_some() => Ok(false),
                Err(e) => Err(e),
            });
        match up {
            Ok(true) => {
                self.child = Some(child);
                true
            }
            Ok(false) => false,
            Err(e) => panic!("nats-server did not start: {e}"),
        }
    }

    /// The server's greeting (`INFO {...}`).
    pub fn info(&self) -> std::io::Result<String> {
        let s = TcpStream::connect(("127.0.0.1", self.port))?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line)?;
        Ok(line)
    }

    /// `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Stops the server (abruptly).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Restarts on the same port with the same store (JetStream's streams and buckets are
    /// still there), so that clients reconnect to the address they had.
    pub fn restart(&mut self) {
        self.kill();
        assert!(
            self.run(),
            "nats-server could not bind port {} again",
            self.port
        );
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
