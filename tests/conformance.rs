//! The engine conformance suite (`switchboard::testing::conformance`), unchanged, against
//! every engine of the crate: the in-memory engine, the Redis engine on a `redis-server` of
//! each test's own (killed and restarted for the outage check), the Redis engine on a Redis
//! Cluster of its own (three primaries, three replicas) and the NATS engine on a `nats-server`
//! of each test's own. One test per check, so that each backend starts fresh and a failure
//! names its check; except on Redis Cluster, whose six processes take a while to form: one
//! test runs every check on one cluster (each on a key prefix of its own), the outage check
//! last (it kills and restarts the whole cluster).
//!
//! Without `redis-server` (and `redis-cli`, for the cluster) or `nats-server` those tests skip
//! with a message; under `CI=true` they fail.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use switchboard::engine::nats::NatsEngine;
use switchboard::engine::redis::RedisEngine;
use switchboard::engine::{Engine, MemoryEngine};
use switchboard::testing::conformance::{self, Backend, Check, Outcome};
use switchboard_suite::{NatsServer, RedisCluster, RedisServer};

/// Runs `check` and fails the test on a violation; returns whether it ran.
async fn check(backend: &Backend, check: Check) -> Outcome {
    match conformance::run_check(backend, check).await {
        Ok(outcome) => outcome,
        Err(violation) => panic!("{violation}"),
    }
}

// ---- memory ----------------------------------------------------------------------------------

fn memory() -> Backend {
    let engine: Arc<dyn Engine> = Arc::new(
        MemoryEngine::builder()
            .shards(2)
            .history(conformance::HISTORY_TOPICS, conformance::history_config())
            .build(),
    );
    Backend::new(move || {
        let engine = engine.clone();
        async move { Ok(engine) }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_engine_conforms() {
    let report = conformance::run(&memory())
        .await
        .unwrap_or_else(|v| panic!("{v}"));
    let skipped: Vec<Check> = report.skipped.iter().map(|(c, _)| *c).collect();
    // One engine per process: it cannot crash apart from itself, nor lose a backend.
    assert_eq!(skipped, vec![Check::Crash, Check::Outage]);
    assert_eq!(report.passed.len(), Check::ALL.len() - 2);
}

/// The outage check's kill and restart of a test's own server program (blocking calls, run
/// off the runtime's threads).
fn with_outage<S: Send + 'static>(
    backend: Backend,
    server: S,
    kill: fn(&mut S),
    restart: fn(&mut S),
) -> Backend {
    let server = Arc::new(Mutex::new(server));
    let run = move |op: fn(&mut S)| {
        let s = server.clone();
        async move {
            tokio::task::spawn_blocking(move || op(&mut s.lock().unwrap()))
                .await
                .expect("the server program's kill or restart");
        }
    };
    let again = run.clone();
    backend.outage(move || run(kill), move || again(restart))
}

/// One test per check against an engine on a test's own server program: `$start` starts it
/// (or skips), `$backend` makes the engine's nodes.
macro_rules! checks {
    ($start:path, $backend:ident: $($(#[$attr:meta])* $name:ident: $check:expr;)*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        $(#[$attr])*
        async fn $name() {
            let _ = env_logger::builder().is_test(true).try_init();
            let Some(server) = $start(stringify!($name)) else {
                return;
            };
            assert_eq!(check(&$backend(server), $check).await, Outcome::Passed);
        }
    )*};
}

// ---- Redis -----------------------------------------------------------------------------------

/// The node timeout of the Redis nodes: short, so that a crashed node ages out quickly, yet
/// long enough that a loaded machine does not take a live node for dead.
const NODE_TIMEOUT: Duration = Duration::from_secs(2);

fn redis(server: RedisServer) -> Backend {
    let url = server.url();
    let backend = Backend::new(move || {
        let builder = RedisEngine::builder(url.clone())
            .history(conformance::HISTORY_TOPICS, conformance::history_config())
            .node_timeout(NODE_TIMEOUT)
            .connect_timeout(Duration::from_secs(1))
            .reconnect_backoff(Duration::from_millis(50), Duration::from_millis(300));
        async move {
            let engine: Arc<dyn Engine> = Arc::new(builder.connect().await?);
            Ok(engine)
        }
    })
    // The others notice within the node timeout and a third of it; the rest is slack.
    .crash_after(NODE_TIMEOUT * 2 + Duration::from_secs(5));
    with_outage(backend, server, RedisServer::kill, RedisServer::restart)
}

checks! {
    RedisServer::start, redis:
    redis_delivery: Check::Delivery;
    redis_order: Check::Order;
    redis_presence: Check::Presence;
    redis_crash: Check::Crash;
    redis_history: Check::History;
    redis_counts: Check::Counts;
    redis_churn: Check::Churn;
    redis_outage: Check::Outage;
}

// ---- Redis Cluster ---------------------------------------------------------------------------

/// Every check on one Redis Cluster, the outage check (the whole cluster killed and started
/// again, empty) last; each check on a key prefix of its own, so that none sees another's
/// topics. Reports every violation, with each check's time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_conforms() {
    let _ = env_logger::builder().is_test(true).try_init();
    let Some(cluster) = RedisCluster::start("conformance") else {
        return;
    };
    let seeds = cluster.urls();
    let cluster = Arc::new(Mutex::new(cluster));
    let mut failed = Vec::new();
    for check in Check::ALL {
        let seeds = seeds.clone();
        let prefix = format!("conf-{check:?}").to_lowercase();
        let backend = Backend::new(move || {
            let builder = RedisEngine::cluster(seeds.clone())
                .prefix(prefix.clone())
                // Fewer partitions than the default keep the test light; still a few per shard.
                .partitions(8)
                .history(conformance::HISTORY_TOPICS, conformance::history_config())
                .node_timeout(NODE_TIMEOUT)
                .connect_timeout(Duration::from_secs(1))
                .reconnect_backoff(Duration::from_millis(50), Duration::from_millis(300));
            async move {
                let engine: Arc<dyn Engine> = Arc::new(builder.connect().await?);
                Ok(engine)
            }
        })
        .crash_after(NODE_TIMEOUT * 2 + Duration::from_secs(5));
        let backend = with_outage(
            backend,
            cluster.clone(),
            |c| c.lock().unwrap().kill_all(),
            |c| c.lock().unwrap().restart_all(),
        );
        let started = std::time::Instant::now();
        let outcome = conformance::run_check(&backend, check).await;
        eprintln!(
            "redis cluster: {check:?}: {:?} in {:.1?}",
            outcome.as_ref().map_err(|v| v.to_string()),
            started.elapsed()
        );
        match outcome {
            Ok(Outcome::Passed) => {}
            Ok(Outcome::Skipped(why)) => failed.push(format!("{check:?} skipped: {why}")),
            Err(v) => failed.push(v.to_string()),
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}

// ---- NATS ------------------------------------------------------------------------------------

fn nats(server: NatsServer) -> Backend {
    let url = server.url();
    let backend = Backend::new(move || {
        let builder = NatsEngine::builder(url.clone())
            .history(conformance::HISTORY_TOPICS, conformance::history_config())
            .node_timeout(NODE_TIMEOUT)
            .connect_timeout(Duration::from_secs(1))
            .reconnect_backoff(Duration::from_millis(50), Duration::from_millis(300));
        async move {
            let engine: Arc<dyn Engine> = Arc::new(builder.connect().await?);
            Ok(engine)
        }
    })
    // The heartbeat expires after the node timeout; the others look every third of it.
    .crash_after(NODE_TIMEOUT * 2 + Duration::from_secs(5));
    with_outage(backend, server, NatsServer::kill, NatsServer::restart)
}

checks! {
    NatsServer::start, nats:
    nats_delivery: Check::Delivery;
    // A known engine bug, not a flaky check: about one run in five a subscriber of the history
    // topic misses publications of two concurrent publishers (docs/nats.md, "Known problems").
    // Run it with `cargo test --test conformance -- --ignored nats_order`.
    #[ignore = "known NATS engine bug: a history-topic subscriber can miss publications under concurrent bursts (docs/nats.md)"]
    nats_order: Check::Order;
    nats_presence: Check::Presence;
    nats_crash: Check::Crash;
    nats_history: Check::History;
    nats_counts: Check::Counts;
    nats_churn: Check::Churn;
    nats_outage: Check::Outage;
}
