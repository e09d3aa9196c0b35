//! Figures over samples and rounds: median, quantiles, and runs repeated while disturbed by
//! other load on the machine.

use std::time::Instant;

/// The median; NaN values (a column a run could not measure) are left out, and NaN is the
/// median of nothing.
pub fn median(mut xs: Vec<f64>) -> f64 {
    xs.retain(|x| !x.is_nan());
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

/// Which sample a quantile takes from `n` sorted ones. The benches keep the rule their
/// published figures were taken with.
#[derive(Clone, Copy, Debug)]
pub enum Rank {
    /// The ⌈q·n⌉-th, counting from 1 (the nearest-rank definition).
    Nearest,
    /// The round(q·(n−1))-th, counting from 0.
    Rounded,
}

/// The `q` quantile of `sorted` (ascending) by `rank`; None when there are no samples.
pub fn quantile<T: Copy>(sorted: &[T], q: f64, rank: Rank) -> Option<T> {
    if sorted.is_empty() {
        return None;
    }
    let n = sorted.len();
    let i = match rank {
        Rank::Nearest => ((n as f64 * q).ceil() as usize).clamp(1, n) - 1,
        Rank::Rounded => ((n - 1) as f64 * q).round() as usize,
    };
    Some(sorted[i])
}

/// The `q` quantile of sorted latencies in ns, in µs; NaN when there are none.
pub fn quantile_us(sorted_ns: &[u64], q: f64, rank: Rank) -> f64 {
    quantile(sorted_ns, q, rank).map_or(f64::NAN, |ns| ns as f64 / 1000.0)
}

/// Runs repeated while disturbed: a run during which the machine spent more than `max_other`
/// % of one CPU on other work (other processes, interrupts, steal) is discarded and run again,
/// at most twice, and only within `budget` seconds of the first run.
pub struct Repeats {
    max_other: f64,
    budget: f64,
    started: Instant,
    repeated: usize,
}

impl Repeats {
    /// Starts the budget's clock.
    pub fn new(max_other: f64, budget: f64) -> Repeats {
        Repeats {
            max_other,
            budget,
            started: Instant::now(),
            repeated: 0,
        }
    }

    /// When the first run started (the budget's clock).
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Runs `once` until a run is undisturbed, or out of repeats or budget. `other_load` reads
    /// a run's other load (in CPUs); `show` prints every run with its label: `R` (round `R`),
    /// `R (x)` (disturbed, discarded) or `R (!)` (disturbed but kept). Returns the run kept and
    /// whether it was disturbed.
    pub fn run<T>(
        &mut self,
        round: usize,
        mut once: impl FnMut() -> Result<T, String>,
        other_load: impl Fn(&T) -> f64,
        mut show: impl FnMut(&str, &T),
    ) -> Result<(T, bool), String> {
        let mut attempt = 0;
        loop {
            let run = once()?;
            let disturbed = other_load(&run) * 100.0 > self.max_other;
            let retry =
                disturbed && attempt < 2 && self.started.elapsed().as_secs_f64() < self.budget;
            let label = match (disturbed, retry) {
                (false, _) => round.to_string(),
                (true, true) => format!("{round} (x)"),
                (true, false) => format!("{round} (!)"),
            };
            show(&label, &run);
            if !retry {
                return Ok((run, disturbed));
            }
            attempt += 1;
            self.repeated += 1;
        }
    }

    /// The legend of the labels, if any run was repeated.
    pub fn footnote(&self) {
        if self.repeated > 0 {
            println!(
                "(x): other load over {:.0}% of a CPU, run discarded and repeated ({} in all); \
                 (!): disturbed but kept (out of repeats or time budget)",
                self.max_other, self.repeated
            );
        }
    }
}
