//! Where a part of the engine connects, and which part a topic belongs to.
//!
//! An engine is one or more *parts*, each a complete single-Redis engine (its own connections,
//! executor and supervisor) over its own keyspace:
//!
//! - **one Redis**: one part, the server at the URL;
//! - **several independent Redis servers** (client-side sharding): one part per server, a topic
//!   on the server its hash picks;
//! - **Redis Cluster**: a fixed number of *partitions*, each a prefix with a hash tag of its own
//!   (`switchboard:{3.17}`) whose slot is chosen so that the partitions spread evenly over the
//!   slot space (and so over the shards, which own ranges of it); a topic belongs to the
//!   partition its hash picks, and every key and channel of the partition is in that one slot.
//!   The part connects to the primary that serves the slot now, as the cluster says
//!   (`CLUSTER SLOTS`, asked of the last known nodes and the seeds): after a failover or a
//!   resharding its connection fails or is redirected (`MOVED`), and the reconnect finds the
//!   new owner.
//!
//! Topic to part is [jump consistent hashing](https://arxiv.org/abs/1406.2294) over FNV-1a:
//! the same on every node and every platform, and adding a server moves only the topics that
//! must move.

use std::sync::Mutex;

use redis::{ConnectionAddr, ConnectionInfo, Value};

use super::conn::Settings;

/// Redis Cluster's slot count.
pub(crate) const SLOTS: u16 = 16384;

/// Where a part connects.
pub(crate) enum Target {
    /// One Redis server.
    Server(redis::Client),
    /// The primary of Redis Cluster that serves `slot`, found through `seeds`.
    Slot {
        seeds: Vec<ConnectionInfo>,
        slot: u16,
        /// Nodes the cluster named last time (primaries first): asked before the seeds, so
        /// that the part finds its way even when the seeds are the nodes that failed.
        known: Mutex<Vec<ConnectionInfo>>,
    },
}

impl Target {
    /// For logs (no credentials).
    pub(crate) fn describe(&self) -> String {
        match self {
            Target::Server(c) => c.get_connection_info().addr.to_string(),
            Target::Slot { slot, .. } => format!("Redis Cluster slot {slot}"),
        }
    }

    /// A client for the server to connect to now.
    pub(crate) async fn client(&self, s: &Settings) -> Result<redis::Client, String> {
        match self {
            Target::Server(c) => Ok(c.clone()),
            Target::Slot { seeds, slot, known } => {
                let mut ask: Vec<ConnectionInfo> =
                    known.lock().unwrap_or_else(|p| p.into_inner()).clone();
                ask.extend(seeds.iter().cloned());
                let mut last = String::from("no seed");
                for node in ask {
                    match owner(&node, *slot, s).await {
                        Ok((primary, nodes)) => {
                            *known.lock().unwrap_or_else(|p| p.into_inner()) = nodes;
                            return redis::Client::open(primary).map_err(|e| e.to_string());
                        }
                        Err(e) => last = format!("{}: {e}", node.addr),
                    }
                }
                Err(format!(
                    "no cluster node told who serves slot {slot} ({last})"
                ))
            }
        }
    }
}

/// Asks `node` for the cluster's slots: the primary serving `slot`, and every node it names.
async fn owner(
    node: &ConnectionInfo,
    slot: u16,
    s: &Settings,
) -> Result<(ConnectionInfo, Vec<ConnectionInfo>), String> {
    let client = redis::Client::open(node.clone()).map_err(|e| e.to_string())?;
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(s.connect_timeout)
        .set_response_timeout(s.command_timeout);
    let mut mc = client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .map_err(|e| e.to_string())?;
    let slots: Value = redis::cmd("CLUSTER")
        .arg("SLOTS")
        .query_async(&mut mc)
        .await
        .map_err(|e| e.to_string())?;
    let Value::Array(ranges) = slots else {
        return Err("unexpected reply to CLUSTER SLOTS".into());
    };
    let asked_host = match &node.addr {
        ConnectionAddr::Tcp(h, _) | ConnectionAddr::TcpTls { host: h, .. } => h.clone(),
        _ => String::new(),
    };
    let mut primary = None;
    let mut primaries = Vec::new();
    let mut replicas = Vec::new();
    for range in &ranges {
        let Value::Array(r) = range else { continue };
        let (Some(Value::Int(lo)), Some(Value::Int(hi))) = (r.first(), r.get(1)) else {
            continue;
        };
        for (i, n) in r.iter().skip(2).enumerate() {
            let Value::Array(n) = n else { continue };
            let host = match n.first() {
                Some(Value::BulkString(b)) if !b.is_empty() && b.as_slice() != b"?" => {
                    String::from_utf8_lossy(b).into_owned()
                }
                // An empty or unknown host: the node we asked.
                _ => asked_host.clone(),
            };
            let Some(Value::Int(port)) = n.get(1) else {
                continue;
            };
            let Ok(port) = u16::try_from(*port) else {
                continue;
            };
            let Some(info) = at(node, host, port) else {
                continue;
            };
            if i == 0 {
                if (*lo..=*hi).contains(&i64::from(slot)) {
                    primary = Some(info.clone());
                }
                primaries.push(info);
            } else {
                replicas.push(info);
            }
        }
    }
    primaries.extend(replicas);
    match primary {
        Some(p) => Ok((p, primaries)),
        None => Err(format!("no node serves slot {slot}")),
    }
}

/// `node`'s settings (credentials, TLS) at another host and port.
fn at(node: &ConnectionInfo, host: String, port: u16) -> Option<ConnectionInfo> {
    let mut info = node.clone();
    match &mut info.addr {
        ConnectionAddr::Tcp(h, p) => {
            *h = host;
            *p = port;
        }
        ConnectionAddr::TcpTls {
            host: h, port: p, ..
        } => {
            *h = host;
            *p = port;
        }
        _ => return None,
    }
    Some(info)
}

/// The part (of `parts`) that `topic` belongs to: the same on every node.
pub(crate) fn part_of(topic: &str, parts: usize) -> usize {
    if parts <= 1 {
        return 0;
    }
    jump(fnv1a(topic.as_bytes()), parts)
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Jump consistent hash (Lamping and Veach): a bucket in `0..buckets`.
fn jump(mut key: u64, buckets: usize) -> usize {
    let (mut b, mut j): (i64, i64) = (-1, 0);
    while j < buckets as i64 {
        b = j;
        key = key.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
        j = ((b + 1) as f64 * ((1u64 << 31) as f64 / ((key >> 33) + 1) as f64)) as i64;
    }
    b.max(0) as usize
}

/// Redis Cluster's key slot of a hash tag's content (CRC16/XMODEM, modulo the slots).
pub(crate) fn slot_of(tag: &str) -> u16 {
    let mut crc: u16 = 0;
    for b in tag.as_bytes() {
        crc ^= u16::from(*b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc % SLOTS
}

/// The hash tag of partition `k` of `n`, and its slot: the first `k.j` whose slot is in the
/// `k`-th of `n` equal ranges of the slot space. Shards own ranges of slots (`redis-cli
/// --cluster create` gives each an equal one), so the partitions spread over them evenly.
pub(crate) fn partition_tag(k: usize, n: usize) -> (String, u16) {
    let n = n.clamp(1, usize::from(SLOTS));
    let lo = (k * usize::from(SLOTS) / n) as u16;
    let hi = ((k + 1) * usize::from(SLOTS) / n) as u16;
    let mut j = 0u64;
    loop {
        let tag = format!("{k}.{j}");
        let slot = slot_of(&tag);
        if (lo..hi).contains(&slot) {
            return (tag, slot);
        }
        j += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_match_redis() {
        // `CLUSTER KEYSLOT` answers: {a} 15495, 123456789 12739 (the CRC's check value 0x31C3).
        assert_eq!(slot_of("a"), 15495);
        assert_eq!(slot_of("123456789"), 0x31C3 % SLOTS);
    }

    #[test]
    fn partitions_spread_and_topics_stay() {
        let n = 16;
        for k in 0..n {
            let (tag, slot) = partition_tag(k, n);
            assert_eq!(slot_of(&tag), slot);
            assert_eq!(usize::from(slot) * n / usize::from(SLOTS), k);
        }
        let mut per = vec![0usize; n];
        for i in 0..16_000 {
            per[part_of(&format!("room:{i}"), n)] += 1;
        }
        assert!(per.iter().all(|c| (800..1200).contains(c)), "{per:?}");
        // Growing from 3 servers to 4 moves about a quarter of the topics, all to the new one.
        for i in 0..1000 {
            let t = format!("t{i}");
            let (a, b) = (part_of(&t, 3), part_of(&t, 4));
            assert!(a == b || b == 3);
        }
    }
}
