//! The engine's Lua scripts. Every change to shared state runs as one script, so that Redis
//! applies it atomically: a publication's sequence number, its place in the history stream and
//! its `PUBLISH` happen in one step (every node sees the same order), and a presence change
//! and its diff too.
//!
//! Keys, for prefix `P` and topic `T`. Every script declares one key, `P:nodes` (`KEYS[1]`),
//! and builds the others from the prefix: on one Redis that is all there is to it; on Redis
//! Cluster the prefix carries a hash tag (`switchboard:{3.17}`), so every key of the prefix is
//! in the declared key's slot, Redis routes the script by it (a `MOVED` answer when the slot is
//! elsewhere) and refuses any call to a key of another slot. Each prefix of a cluster is one
//! partition of the topics (see `cluster.rs`), with its own node list and counts.
//!
//! | key | type | what |
//! |---|---|---|
//! | `P:t:T` | channel | the topic's publications and presence diffs |
//! | `P:h:T` | hash | history: `e` epoch, `s` last sequence number |
//! | `P:x:T` | stream | history: the last publications, field `m` the message as published |
//! | `P:hist` | set | topics with history (for stats) |
//! | `P:p:T` | hash | presence: connection id → `node \n key as JSON \n meta as JSON` |
//! | `P:pc:T` | hash | presence: key as JSON → number of its connections |
//! | `P:pv:T` | hash | presence version: `e` epoch (Redis time in µs when the hash was made), `v` grows by one per diff |
//! | `P:nodes` | sorted set | node → time of its last heartbeat (Redis clock, ms) |
//! | `P:nt:N` | set | topics where node `N` has presence entries |
//! | `P:ns:N` | hash | node `N`'s subscriber count per topic |
//!
//! Messages on `P:t:T`: `P <seq> <epoch> <body>` for a publication (`0 -` without history),
//! `D <epoch> <version> <diff JSON>` for a presence diff (see `wire.rs` for the body).
//!
//! A value that does not parse (an entry without its two newlines, a count that is not a
//! number) is skipped, and removed where it is found, rather than raised: a script error would
//! repeat on every node for every call touching the topic until someone repaired Redis by hand.

/// The scripts, by name; `SOURCES[id as usize]` is the full source of each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ScriptId {
    Publish = 0,
    Subscribe,
    Track,
    Leave,
    Heartbeat,
    Presence,
    Counts,
    ResyncCounts,
    ResyncPresence,
    Catchup,
    DropNode,
}

pub(crate) const SCRIPT_COUNT: usize = 11;

/// Functions every script shares. `ARGV[1]` is always the key prefix.
const PRELUDE: &str = r#"
local P = ARGV[1]
local function fmt(n) return string.format('%d', n) end
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function chan(T) return P .. ':t:' .. T end
local function int(x)
  if type(x) == 'string' and string.match(x, '^%-?%d+$') then return tonumber(x) end
  if type(x) == 'number' then return x end
  return nil
end
local function num(x) return int(x) or 0 end
-- HINCRBY, after dropping a field that is not an integer (HINCRBY would raise).
local function hincr(k, f, by)
  if not int(redis.call('HGET', k, f) or '0') then redis.call('HDEL', k, f) end
  return redis.call('HINCRBY', k, f, by)
end
-- node, key JSON, meta JSON; nil for a malformed entry.
local function parse_entry(e)
  if type(e) ~= 'string' then return nil end
  local a = string.find(e, '\n', 1, true)
  if not a then return nil end
  local b = string.find(e, '\n', a + 1, true)
  if not b then return nil end
  return string.sub(e, 1, a - 1), string.sub(e, a + 1, b - 1), string.sub(e, b + 1)
end
-- The version counter restarts when its hash is lost (expiry, a Redis restart): the epoch,
-- new each time, tells a restarted counter from the old one, so no node compares across.
local function new_pepoch()
  local t = redis.call('TIME')
  return t[1] .. string.format('%06d', num(t[2]))
end
local function pvalid(r) return int(r[1]) and int(r[2]) end
local function pversion(T)
  local r = redis.call('HMGET', P .. ':pv:' .. T, 'e', 'v')
  if not pvalid(r) then return '', 0 end
  return r[1], int(r[2])
end
local function diff(T, joins, keyjson, metajson)
  local vk = P .. ':pv:' .. T
  local ev = redis.call('HMGET', vk, 'e', 'v')
  local e = ev[1]
  if not pvalid(ev) then
    e = new_pepoch()
    redis.call('HSET', vk, 'e', e, 'v', 0)
  end
  local v = redis.call('HINCRBY', vk, 'v', 1)
  redis.call('PEXPIRE', vk, 86400000)
  local body
  if joins then
    body = '{"joins":{' .. keyjson .. ':{"metas":[' .. metajson .. ']}},"leaves":{}}'
  else
    body = '{"joins":{},"leaves":{' .. keyjson .. ':{"metas":[' .. metajson .. ']}}}'
  end
  redis.call('PUBLISH', chan(T), 'D ' .. e .. ' ' .. fmt(v) .. ' ' .. body)
end
local function remove_entry(T, conn)
  local ph = P .. ':p:' .. T
  local e = redis.call('HGET', ph, conn)
  if not e then return end
  redis.call('HDEL', ph, conn)
  local node, keyjson, metajson = parse_entry(e)
  if not node then return end
  local pc = P .. ':pc:' .. T
  if num(redis.call('HGET', pc, keyjson)) <= 1 then
    redis.call('HDEL', pc, keyjson)
    diff(T, false, keyjson, metajson)
  else
    redis.call('HINCRBY', pc, keyjson, -1)
  end
end
local function add_entry(T, node, conn, keyjson, metajson)
  local ph = P .. ':p:' .. T
  local entry = node .. '\n' .. keyjson .. '\n' .. metajson
  local old = redis.call('HGET', ph, conn)
  if old then
    local onode, okey = parse_entry(old)
    if onode and okey == keyjson then
      redis.call('HSET', ph, conn, entry)
      return
    end
    remove_entry(T, conn)
  end
  redis.call('HSET', ph, conn, entry)
  redis.call('SADD', P .. ':nt:' .. node, T)
  if hincr(P .. ':pc:' .. T, keyjson, 1) == 1 then
    diff(T, true, keyjson, metajson)
  end
end
local function drop_node(d)
  local nt = P .. ':nt:' .. d
  for _, T in ipairs(redis.call('SMEMBERS', nt)) do
    local all = redis.call('HGETALL', P .. ':p:' .. T)
    for i = 1, #all, 2 do
      local node = parse_entry(all[i + 1])
      if not node then
        redis.call('HDEL', P .. ':p:' .. T, all[i])
      elseif node == d then
        remove_entry(T, all[i])
      end
    end
  end
  redis.call('DEL', nt, P .. ':ns:' .. d)
  redis.call('ZREM', P .. ':nodes', d)
end
local function reap(now, ttl)
  local dead = redis.call('ZRANGEBYSCORE', P .. ':nodes', '-inf', '(' .. fmt(now - ttl))
  for _, d in ipairs(dead) do drop_node(d) end
end
local function beat(node, now)
  return redis.call('ZADD', P .. ':nodes', fmt(now), node)
end
local function history(T, ttl, expiry, new_epoch, now)
  local meta, stream = P .. ':h:' .. T, P .. ':x:' .. T
  if ttl > 0 then redis.call('XTRIM', stream, 'MINID', fmt(now - ttl)) end
  local es = redis.call('HMGET', meta, 'e', 's')
  local epoch = es[1]
  -- A lost or unreadable counter starts a new epoch: numbers never repeat within one.
  if not epoch or not int(es[2]) then
    epoch = new_epoch
    redis.call('DEL', stream)
    redis.call('HSET', meta, 'e', epoch, 's', 0)
    redis.call('PEXPIRE', meta, expiry)
    return epoch, 0, stream
  end
  return epoch, int(es[2]), stream
end
local function newest(stream, n)
  local items = {}
  if n <= 0 then return items end
  local got = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', n)
  for i = #got, 1, -1 do items[#items + 1] = got[i][2][2] end
  return items
end
"#;

/// ARGV: P, topic, max_len, ttl_ms (0: none), expiry_ms, new_epoch, body. Returns the seq.
const PUBLISH: &str = r#"
local T = ARGV[2]
local meta, stream = P .. ':h:' .. T, P .. ':x:' .. T
local es = redis.call('HMGET', meta, 'e', 's')
local epoch = es[1]
if not epoch or not int(es[2]) then
  epoch = ARGV[6]
  redis.call('DEL', stream)
  redis.call('HSET', meta, 'e', epoch, 's', 0)
end
local seq = redis.call('HINCRBY', meta, 's', 1)
local msg = 'P ' .. fmt(seq) .. ' ' .. epoch .. ' ' .. ARGV[7]
redis.call('XADD', stream, 'MAXLEN', ARGV[3], '*', 'm', msg)
local ttl = tonumber(ARGV[4])
if ttl > 0 then
  redis.call('XTRIM', stream, 'MINID', fmt(now_ms() - ttl))
  redis.call('PEXPIRE', stream, ttl)
else
  redis.call('PEXPIRE', stream, ARGV[5])
end
redis.call('PEXPIRE', meta, ARGV[5])
redis.call('SADD', P .. ':hist', T)
redis.call('PUBLISH', chan(T), msg)
return seq
"#;

/// ARGV: P, topic, node, conn, node_ttl_ms, count (0|1), track (0|1), keyjson, metajson,
/// history (0|1), ttl_ms, expiry_ms, new_epoch, recover_epoch ('' = none), recover_seq,
/// last_n. Returns {new_node, presence_epoch, presence_version, entries, epoch, seq, recovered
/// (-1 none, 0, 1), items}.
const SUBSCRIBE: &str = r#"
local T, node, conn = ARGV[2], ARGV[3], ARGV[4]
local now = now_ms()
local newnode = beat(node, now)
reap(now, tonumber(ARGV[5]))
if ARGV[6] == '1' then hincr(P .. ':ns:' .. node, T, 1) end
local pepoch, pver = pversion(T)
if ARGV[7] == '1' then add_entry(T, node, conn, ARGV[8], ARGV[9]) end
local entries = redis.call('HVALS', P .. ':p:' .. T)
local epoch, seq, recovered, items = '', 0, -1, {}
if ARGV[10] == '1' then
  local stream
  epoch, seq, stream = history(T, tonumber(ARGV[11]), ARGV[12], ARGV[13], now)
  if ARGV[14] ~= '' then
    recovered = 0
    local rs = tonumber(ARGV[15])
    if ARGV[14] == epoch and rs <= seq then
      local want = seq - rs
      if want == 0 then
        recovered = 1
      else
        local got = newest(stream, want)
        if #got == want then
          recovered = 1
          items = got
        end
      end
    end
  else
    items = newest(stream, tonumber(ARGV[16]))
  end
end
return {newnode, pepoch, pver, entries, epoch, seq, recovered, items}
"#;

/// ARGV: P, topic, node, conn, node_ttl_ms, keyjson, metajson, max (0: none). Returns
/// {new_node, presence_epoch, presence_version, entries, admitted (0|1)}: with a max, the entry
/// is made only while the key has fewer than max other connections (on live nodes).
const TRACK: &str = r#"
local T, node, conn = ARGV[2], ARGV[3], ARGV[4]
local now = now_ms()
local newnode = beat(node, now)
reap(now, tonumber(ARGV[5]))
local pepoch, pver = pversion(T)
local max = num(ARGV[8])
if max > 0 then
  local have = num(redis.call('HGET', P .. ':pc:' .. T, ARGV[6]))
  local old = redis.call('HGET', P .. ':p:' .. T, conn)
  if old then
    local _, okey = parse_entry(old)
    if okey == ARGV[6] then have = have - 1 end
  end
  if have >= max then return {newnode, pepoch, pver, {}, 0} end
end
add_entry(T, node, conn, ARGV[6], ARGV[7])
return {newnode, pepoch, pver, redis.call('HVALS', P .. ':p:' .. T), 1}
"#;

/// ARGV: P, topic, node, conn, uncount (0|1), untrack (0|1), last_local (0|1).
const LEAVE: &str = r#"
local T, node, conn = ARGV[2], ARGV[3], ARGV[4]
if ARGV[5] == '1' then
  local k = P .. ':ns:' .. node
  if num(redis.call('HGET', k, T)) <= 1 then
    redis.call('HDEL', k, T)
  else
    redis.call('HINCRBY', k, T, -1)
  end
end
if ARGV[6] == '1' then remove_entry(T, conn) end
if ARGV[7] == '1' then redis.call('SREM', P .. ':nt:' .. node, T) end
return 0
"#;

/// ARGV: P, node, node_ttl_ms. Returns 1 when the node was not registered (first beat, or
/// other nodes took it for dead): its presence and counts need writing again.
const HEARTBEAT: &str = r#"
local now = now_ms()
local newnode = beat(ARGV[2], now)
reap(now, tonumber(ARGV[3]))
return newnode
"#;

/// ARGV: P, topic, node_ttl_ms. Returns the presence entries.
const PRESENCE: &str = r#"
reap(now_ms(), tonumber(ARGV[3]))
return redis.call('HVALS', P .. ':p:' .. ARGV[2])
"#;

/// ARGV: P, node_ttl_ms, mode ('count' | 'topics' | 'stats'), topic (for 'count').
/// 'count': the topic's subscribers over all live nodes; 'topics': {topic, count, ...} for
/// topics with subscribers or presence; 'stats': {topics, subscriptions, histories}.
const COUNTS: &str = r#"
reap(now_ms(), tonumber(ARGV[2]))
local nodes = redis.call('ZRANGE', P .. ':nodes', 0, -1)
local mode = ARGV[3]
if mode == 'count' then
  local sum = 0
  for _, n in ipairs(nodes) do
    local c = num(redis.call('HGET', P .. ':ns:' .. n, ARGV[4]))
    if c > 0 then sum = sum + c end
  end
  return sum
end
local acc, order = {}, {}
for _, n in ipairs(nodes) do
  local all = redis.call('HGETALL', P .. ':ns:' .. n)
  for i = 1, #all, 2 do
    local c = num(all[i + 1])
    if c > 0 then
      if acc[all[i]] == nil then acc[all[i]] = 0; order[#order + 1] = all[i] end
      acc[all[i]] = acc[all[i]] + c
    end
  end
end
for _, n in ipairs(nodes) do
  for _, T in ipairs(redis.call('SMEMBERS', P .. ':nt:' .. n)) do
    if acc[T] == nil and redis.call('EXISTS', P .. ':p:' .. T) == 1 then
      acc[T] = 0; order[#order + 1] = T
    end
  end
end
if mode == 'topics' then
  local out = {}
  for _, T in ipairs(order) do out[#out + 1] = T; out[#out + 1] = acc[T] end
  return out
end
local subs = 0
for _, T in ipairs(order) do subs = subs + acc[T] end
local histories = 0
for _, T in ipairs(redis.call('SMEMBERS', P .. ':hist')) do
  if redis.call('EXISTS', P .. ':x:' .. T) == 1 then
    histories = histories + 1
  else
    redis.call('SREM', P .. ':hist', T)
  end
end
return {#order, subs, histories}
"#;

/// ARGV: P, node, node_ttl_ms, then topic, count pairs. Rewrites the node's counts.
const RESYNC_COUNTS: &str = r#"
local node = ARGV[2]
local now = now_ms()
beat(node, now)
reap(now, tonumber(ARGV[3]))
local k = P .. ':ns:' .. node
redis.call('DEL', k)
for i = 4, #ARGV, 2 do redis.call('HSET', k, ARGV[i], ARGV[i + 1]) end
return 0
"#;

/// ARGV: P, topic, node, then conn, keyjson, metajson triples: the node's entries on the
/// topic become exactly these (diffs for what changes).
const RESYNC_PRESENCE: &str = r#"
local T, node = ARGV[2], ARGV[3]
local want, any = {}, false
for i = 4, #ARGV, 3 do want[ARGV[i]] = {ARGV[i + 1], ARGV[i + 2]}; any = true end
local all = redis.call('HGETALL', P .. ':p:' .. T)
for i = 1, #all, 2 do
  local n = parse_entry(all[i + 1])
  if not n then
    redis.call('HDEL', P .. ':p:' .. T, all[i])
  elseif n == node and want[all[i]] == nil then
    remove_entry(T, all[i])
  end
end
for conn, km in pairs(want) do add_entry(T, node, conn, km[1], km[2]) end
if not any then redis.call('SREM', P .. ':nt:' .. node, T) end
return 0
"#;

/// ARGV: P, topic, ttl_ms, expiry_ms, new_epoch, epoch, seq. What a node that was away missed:
/// {epoch, seq, items after seq (all held items when the epoch changed)}.
///
/// A history whose counter is *below* what the node already delivered in the same epoch went
/// back: a failover to a replica that had not received the last publications (replication is
/// asynchronous). Its next publications would reuse numbers the node delivered, and be
/// skipped as repeats; a new epoch keeps them apart (clients see the epoch change, and a
/// recovery from the old one answers `recovered: false`). Only the node's own position can
/// start it, never a client's (a client could claim any number).
const CATCHUP: &str = r#"
local epoch, seq, stream = history(ARGV[2], tonumber(ARGV[3]), ARGV[4], ARGV[5], now_ms())
if epoch == ARGV[6] and seq < num(ARGV[7]) then
  redis.call('DEL', P .. ':h:' .. ARGV[2])
  epoch, seq, stream = history(ARGV[2], tonumber(ARGV[3]), ARGV[4], ARGV[5], now_ms())
end
local want
if epoch == ARGV[6] then want = seq - num(ARGV[7]) else want = seq end
return {epoch, seq, newest(stream, want)}
"#;

/// ARGV: P, node. The node leaves: its presence (with diffs) and counts go.
const DROP_NODE: &str = r#"
drop_node(ARGV[2])
return 0
"#;

/// The full source of each script, in `ScriptId` order; with `sharded`, messages go out with
/// `SPUBLISH` (Redis Cluster's sharded pub/sub: only within the shard of the channel's slot).
pub(crate) fn sources(sharded: bool) -> [String; SCRIPT_COUNT] {
    [
        PUBLISH,
        SUBSCRIBE,
        TRACK,
        LEAVE,
        HEARTBEAT,
        PRESENCE,
        COUNTS,
        RESYNC_COUNTS,
        RESYNC_PRESENCE,
        CATCHUP,
        DROP_NODE,
    ]
    .map(|body| {
        let src = format!("{PRELUDE}{body}");
        if sharded {
            src.replace("redis.call('PUBLISH'", "redis.call('SPUBLISH'")
        } else {
            src
        }
    })
}
