//! Command lines: each bench's flags are a clap `Parser`, made of its own and of the groups
//! below, each flag also read from the environment when not given.
//!
//! Conventions, the same in every bench:
//! - environment names are written without the bench's prefix (`#[arg(env)]` on `conns` is
//!   `CONNS`) and read with it (`REQREPLY_CONNS`); `--help` shows the full names;
//! - a switch's variable is off for `0`, `false`, `no`, `off` or empty, on otherwise;
//! - arguments a bench does not know are ignored (cargo passes `--bench`), with a warning
//!   for any but `--bench`;
//! - defaults that differ between benches (rounds, window, ...) are the bench's, given to
//!   [`parse`].

use clap::builder::FalseyValueParser;
use clap::{ArgAction, Args, Parser, ValueEnum};

/// A bench's name (in messages and `--help`) and the prefix of its environment variables.
pub struct Bench {
    pub name: &'static str,
    pub env: &'static str,
}

/// Parses this process's arguments into `F` (see the module's conventions); `defaults` sets
/// the default of arguments by id (the field's name). Exits with clap's message (status 2)
/// on a bad value, and after `--help`.
pub fn parse<F: Parser>(bench: &Bench, defaults: &[(&'static str, &'static str)]) -> F {
    let mut cmd = F::command()
        .name(bench.name)
        .args_override_self(true)
        .mut_args(|a| match a.get_env().and_then(|e| e.to_str()) {
            Some(name) => {
                let full: &'static str = Box::leak(format!("{}{name}", bench.env).into());
                a.env(full)
            }
            None => a,
        });
    for &(id, value) in defaults {
        cmd = cmd.mut_arg(id, |a| a.default_value(value).required(false));
    }
    let known: Vec<(String, bool)> = cmd
        .get_arguments()
        .filter_map(|a| {
            Some((
                format!("--{}", a.get_long()?),
                a.get_action().takes_values(),
            ))
        })
        .collect();
    let mut args = std::env::args();
    let mut kept: Vec<String> = args.next().into_iter().collect();
    while let Some(arg) = args.next() {
        let name = arg.split_once('=').map_or(arg.as_str(), |(name, _)| name);
        match known.iter().find(|(long, _)| long == name) {
            Some(&(_, takes_value)) => {
                let value = (takes_value && name == arg).then(|| args.next()).flatten();
                kept.push(arg);
                kept.extend(value);
            }
            None if arg == "--help" || arg == "-h" => kept.push(arg),
            None if arg == "--bench" => {}
            None => eprintln!("{}: ignoring unknown argument `{arg}`", bench.name),
        }
    }
    let matches = cmd.get_matches_from(kept);
    F::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

/// `command: ...`, the bench's environment variables and arguments, to repeat the run.
pub fn command_line(bench: &Bench) -> String {
    let env: Vec<String> = std::env::vars()
        .filter(|(k, _)| k.starts_with(bench.env))
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let args: Vec<String> = std::env::args().collect();
    format!(
        "command: {}{}",
        env.join(" ") + if env.is_empty() { "" } else { " " },
        args.join(" ")
    )
}

/// How much each bench measures. Their defaults are the bench's: give `rounds`, `secs` and
/// `warmup` to [`parse`].
#[derive(Args, Debug)]
pub struct Rounds {
    /// Rounds: each runs every server (or scenario) once
    #[arg(long, env)]
    rounds: usize,
    /// Measured window of each run, seconds
    #[arg(long, env)]
    secs: f64,
    /// Warm-up before each window, seconds
    #[arg(long, env)]
    warmup: f64,
}

impl Rounds {
    /// At least one.
    pub fn rounds(&self) -> usize {
        self.rounds.max(1)
    }

    pub fn secs(&self) -> f64 {
        self.secs
    }

    pub fn warmup(&self) -> f64 {
        self.warmup
    }
}

/// `--no-pin`: whether the server side and the load generator go to CPUs of their own.
#[derive(Args, Debug)]
pub struct Pin {
    /// Leave every process unpinned (as does the variable below at 0)
    #[arg(
        long = "no-pin",
        env = "PIN",
        action = ArgAction::SetFalse,
        value_parser = FalseyValueParser::new(),
    )]
    pub pin: bool,
}

/// Which CPUs, for the benches that let them be chosen.
#[derive(Args, Debug)]
pub struct Cpus {
    /// CPU of the server side (a `taskset -c` list)
    #[arg(long, env, default_value = "0")]
    pub server_cpu: String,
    /// CPU of the load generator
    #[arg(long, env, default_value = "1")]
    pub client_cpu: String,
}

/// The servers a bench compares.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Server {
    /// Hand-written on plain actix-ws.
    Baseline,
    /// Hand-written actix actor broker on actix-web-actors (the fan-out bench).
    Actors,
    /// A verbatim echo on fastwebsockets, no framework (the request/reply bench's floor).
    Floor,
    /// Switchboard.
    Framework,
    /// Switchboard with Prometheus metrics collected (the `/metrics` endpoint mounted): the
    /// cost of metrics, against `framework` in the same run.
    Metrics,
    /// Switchboard over its HTTP transport (SSE stream + `POST`s) instead of WebSocket: the
    /// `framework` server, with the load generator's HTTP client.
    Http,
    /// A server started elsewhere (`--target PORT`).
    #[value(skip)]
    External,
}

impl Server {
    pub fn name(self) -> &'static str {
        match self {
            Server::Baseline => "baseline",
            Server::Actors => "actors",
            Server::Floor => "floor",
            Server::Framework => "framework",
            Server::Metrics => "metrics",
            Server::Http => "http",
            Server::External => "external",
        }
    }
}

/// A comparison of servers, alternating within each round, with disturbed runs repeated
/// ([`Repeats`](super::stats::Repeats)). The default of `budget` is the bench's.
#[derive(Args, Debug)]
pub struct Versus {
    /// Servers to run, in this order in each round
    #[arg(long, env, value_delimiter = ',', default_value = "baseline,framework")]
    servers: Vec<Server>,
    /// Load only, against a server started elsewhere, listening on this port
    #[arg(long, env)]
    target: Option<u16>,
    /// The --target server's pid, for its CPU time and memory
    #[arg(long, env)]
    target_pid: Option<u32>,
    /// Repeat a run during which other load exceeded this % of one CPU
    #[arg(long, env, default_value_t = 25.0)]
    pub max_other: f64,
    /// Seconds after which disturbed runs are no longer repeated
    #[arg(long, env)]
    pub budget: f64,
}

impl Versus {
    /// The servers to run: those listed, or the external one.
    pub fn servers(&self) -> Vec<Server> {
        if self.target.is_some() {
            vec![Server::External]
        } else {
            self.servers.clone()
        }
    }

    /// The external server: its port, and its pid if given.
    pub fn target(&self) -> Option<(u16, Option<u32>)> {
        self.target.map(|port| (port, self.target_pid))
    }
}

/// A switch: on with the flag, or with its environment variable on (see the module).
pub fn switch() -> FalseyValueParser {
    FalseyValueParser::new()
}
