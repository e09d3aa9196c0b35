//! A Redis Cluster of a test's own: six `redis-server --cluster-enabled yes` processes (three
//! primaries, three replicas) on loopback ports of their own, joined by `redis-cli --cluster
//! create`. Without persistence; each node keeps its cluster configuration (`nodes.conf`) in a
//! directory of its own, so that a node restarted on its port rejoins as itself. Everything is
//! killed (and the directories removed) when dropped.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::process::{free_port, skip};
use crate::redis::command;
use crate::wait::Wait;

/// The cluster's node timeout: short, so that a replica takes over a killed primary within
/// about two seconds.
pub const CLUSTER_NODE_TIMEOUT_MS: u64 = 1000;

/// How long the cluster may take to form, fail over or come back.
const SETTLE: Duration = Duration::from_secs(30);

struct Node {
    port: u16,
    bus: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl Node {
    /// Starts `redis-server` on its ports; false when it exited at once (a port was taken).
    fn run(&mut self) -> bool {
        let mut child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
            ])
            .args(["--cluster-port", &self.bus.to_string()])
            .args([
                "--cluster-node-timeout",
                &CLUSTER_NODE_TIMEOUT_MS.to_string(),
            ])
            .args(["--save", "", "--appendonly", "no"])
            .args(["--dir", self.dir.to_str().expect("utf-8 temp dir")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        let port = self.port;
        let up = Wait::up_to(Duration::from_secs(10))
            .every(Duration::from_millis(20))
            .poll_blocking(|| match command(port, &["PING"]) {
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
            Err(e) => panic!("redis-server (cluster node) did not start: {e}"),
        }
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A Redis Cluster of three primaries with one replica each. See the module documentation.
pub struct RedisCluster {
    dir: PathBuf,
    nodes: Vec<Node>,
}

/// Whether `redis-server` and `redis-cli` are on the PATH.
pub fn installed() -> bool {
    ["redis-server", "redis-cli"].iter().all(|p| {
        Command::new(p)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

impl RedisCluster {
    /// A fresh cluster, its state `ok`, or `None` (with a message) when `redis-server` or
    /// `redis-cli` is missing; under CI a missing program fails the test instead.
    pub fn start(name: &str) -> Option<RedisCluster> {
        if !installed() {
            skip(
                name,
                "redis-server or redis-cli is not installed (apt-get install redis-server)",
            );
            return None;
        }
        let dir = std::env::temp_dir().join(format!(
            "switchboard-redis-cluster-{name}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        let mut cluster = RedisCluster {
            dir: dir.clone(),
            nodes: Vec::new(),
        };
        for i in 0..6 {
            let ndir = dir.join(format!("n{i}"));
            std::fs::create_dir_all(&ndir).expect("temp dir");
            let mut started = None;
            for _ in 0..5 {
                let mut node = Node {
                    port: free_port(),
                    bus: free_port(),
                    dir: ndir.clone(),
                    child: None,
                };
                if node.run() {
                    started = Some(node);
                    break;
                }
            }
            cluster
                .nodes
                .push(started.expect("a cluster node on any of 5 pairs of free ports"));
        }
        let addrs: Vec<String> = cluster
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .expect("run redis-cli --cluster create");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        cluster.wait_ok();
        Some(cluster)
    }

    /// Every node's URL (`redis://127.0.0.1:PORT/`): the engine's seeds.
    pub fn urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("redis://127.0.0.1:{}/", n.port))
            .collect()
    }

    /// The process ids of the running nodes (for a bench's CPU accounting and pinning).
    pub fn pids(&self) -> Vec<u32> {
        self.nodes
            .iter()
            .filter_map(|n| n.child.as_ref().map(Child::id))
            .collect()
    }

    /// The port of node `i`.
    pub fn port(&self, i: usize) -> u16 {
        self.nodes[i].port
    }

    /// One command to node `i` (see `RedisServer::cmd`).
    pub fn cmd(&self, i: usize, args: &[&str]) -> std::io::Result<Value> {
        command(self.nodes[i].port, args)
    }

    /// Nodes that are running.
    fn live(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.nodes.len()).filter(|i| self.nodes[*i].child.is_some())
    }

    /// The slot ranges and their primaries as a live node sees them: `(first, last, node)`.
    pub fn slots(&self) -> std::io::Result<Vec<(u16, u16, usize)>> {
        let mut last = std::io::Error::other("no live node");
        for i in self.live() {
            match self.cmd(i, &["CLUSTER", "SLOTS"]) {
                Ok(Value::Array(ranges)) => {
                    let mut out = Vec::new();
                    for r in ranges {
                        let lo = r[0].as_u64().unwrap_or(0) as u16;
                        let hi = r[1].as_u64().unwrap_or(0) as u16;
                        let port = r[2][1].as_u64().unwrap_or(0) as u16;
                        if let Some(n) = self.nodes.iter().position(|n| n.port == port) {
                            out.push((lo, hi, n));
                        }
                    }
                    return Ok(out);
                }
                Ok(other) => last = std::io::Error::other(format!("CLUSTER SLOTS: {other}")),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// The node serving `slot` now, as a live node sees it.
    pub fn primary_of(&self, slot: u16) -> usize {
        self.try_primary_of(slot)
            .expect("a live node says who serves the slot")
    }

    /// The node serving `slot` now, as a live node sees it; `None` when no live node answers.
    pub fn try_primary_of(&self, slot: u16) -> Option<usize> {
        self.slots()
            .ok()?
            .into_iter()
            .find(|(lo, hi, _)| (*lo..=*hi).contains(&slot))
            .map(|(_, _, n)| n)
    }

    /// The nodes that are primaries of some slots now.
    pub fn primaries(&self) -> Vec<usize> {
        let mut p: Vec<usize> = self
            .slots()
            .expect("CLUSTER SLOTS")
            .into_iter()
            .map(|(_, _, n)| n)
            .collect();
        p.sort();
        p.dedup();
        p
    }

    /// Waits until every live node says `cluster_state:ok`, every slot is served by a live
    /// primary, and every live primary with a live replica has it in sync.
    pub fn wait_ok(&self) {
        let settled = Wait::up_to(SETTLE)
            .every(Duration::from_millis(50))
            .poll_blocking(|| -> Result<(), String> {
                for i in self.live() {
                    let info = self
                        .cmd(i, &["CLUSTER", "INFO"])
                        .map_err(|e| e.to_string())?;
                    let info = info.as_str().unwrap_or_default();
                    if !info.contains("cluster_state:ok")
                        || !info.contains("cluster_slots_ok:16384")
                    {
                        return Err(format!("node {i}: {info}"));
                    }
                }
                let slots = self.slots().map_err(|e| e.to_string())?;
                let covered: u32 = slots.iter().map(|(l, h, _)| u32::from(h - l) + 1).sum();
                if covered != 16384 || slots.iter().any(|(_, _, n)| self.nodes[*n].child.is_none())
                {
                    return Err(format!("slots: {slots:?}"));
                }
                for (_, _, n) in &slots {
                    self.replicated(*n)?;
                }
                Ok(())
            });
        if let Err(e) = settled {
            panic!("the Redis Cluster did not settle within {SETTLE:?}: {e}");
        }
    }

    /// Ok when primary `n`'s live replicas are online and have all it wrote.
    fn replicated(&self, n: usize) -> Result<(), String> {
        let info = self
            .cmd(n, &["INFO", "replication"])
            .map_err(|e| e.to_string())?;
        let info = info.as_str().unwrap_or_default().to_owned();
        let offset = info
            .lines()
            .find_map(|l| l.strip_prefix("master_repl_offset:"))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .ok_or_else(|| format!("node {n}: no offset in {info}"))?;
        let replicas: Vec<&str> = info.lines().filter(|l| l.starts_with("slave")).collect();
        let live_replicas = self
            .live()
            .filter(|i| *i != n)
            .filter(|i| {
                self.cmd(*i, &["ROLE"]).ok().is_some_and(|r| {
                    r[0] == "slave" && r[2].as_u64() == Some(u64::from(self.nodes[n].port))
                })
            })
            .count();
        if replicas.len() < live_replicas {
            return Err(format!("node {n}: replicas not all online: {info}"));
        }
        for r in replicas {
            let caught_up = r.contains("state=online")
                && r.split(',')
                    .find_map(|f| f.strip_prefix("offset="))
                    .and_then(|v| v.parse::<u64>().ok())
                    .is_some_and(|o| o >= offset);
            if !caught_up {
                return Err(format!(
                    "node {n}: replica behind ({r}, primary at {offset})"
                ));
            }
        }
        Ok(())
    }

    /// Waits until primary `n`'s replicas have everything it wrote (so that a failover loses
    /// nothing).
    pub fn wait_replicated(&self, n: usize) {
        if let Err(e) = Wait::up_to(SETTLE)
            .every(Duration::from_millis(20))
            .poll_blocking(|| self.replicated(n))
        {
            panic!("replication did not catch up: {e}");
        }
    }

    /// Kills node `i` (abruptly).
    pub fn kill(&mut self, i: usize) {
        self.nodes[i].kill();
    }

    /// Starts node `i` again on its ports, with its cluster configuration: it rejoins (as a
    /// replica if its replica took over meanwhile). Empty: no persistence.
    pub fn restart(&mut self, i: usize) {
        self.nodes[i].kill();
        assert!(
            self.nodes[i].run(),
            "redis-server could not bind port {} again",
            self.nodes[i].port
        );
    }

    /// Kills every node.
    pub fn kill_all(&mut self) {
        for n in &mut self.nodes {
            n.kill();
        }
    }

    /// Starts every node again (empty) and waits until the cluster is ok.
    pub fn restart_all(&mut self) {
        for i in 0..self.nodes.len() {
            self.restart(i);
        }
        self.wait_ok();
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        self.kill_all();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
