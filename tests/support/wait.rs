//! Bounded waits: a test that waits for a condition looks again at a short interval until a
//! deadline, then fails naming what it waited for. No test sleeps to let something happen.

use std::fmt::Debug;
use std::future::Future;
use std::time::{Duration, Instant};

/// How long [`until`] and [`eventually`] wait before failing the test: long enough for a
/// loaded machine, and only ever spent in full when the test fails anyway.
pub const DEADLINE: Duration = Duration::from_secs(15);

/// How often [`until`] and [`eventually`] look again.
pub const INTERVAL: Duration = Duration::from_millis(10);

/// How long to wait and how often to look: [`Wait::DEFAULT`] ([`DEADLINE`], [`INTERVAL`]), or
/// [`Wait::up_to`] a limit of its own.
#[derive(Clone, Copy, Debug)]
pub struct Wait {
    limit: Duration,
    every: Duration,
}

impl Wait {
    /// [`DEADLINE`], looking every [`INTERVAL`].
    pub const DEFAULT: Wait = Wait::up_to(DEADLINE);

    /// At most `limit`, looking every [`INTERVAL`].
    pub const fn up_to(limit: Duration) -> Wait {
        Wait {
            limit,
            every: INTERVAL,
        }
    }

    /// Looks every `every` instead: less often for checks that cost more (a browser, a
    /// process); zero to look again as soon as other tasks had their turn (to catch a brief
    /// state).
    pub const fn every(self, every: Duration) -> Wait {
        Wait { every, ..self }
    }

    /// Calls `attempt` until it returns `Ok`, and returns that; once the limit has passed,
    /// its last `Err` instead. `attempt` runs at least once.
    pub async fn poll<T, E, F, Fut>(self, mut attempt: F) -> Result<T, E>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let deadline = Instant::now() + self.limit;
        loop {
            match attempt().await {
                Ok(v) => return Ok(v),
                Err(e) if Instant::now() >= deadline => return Err(e),
                Err(_) if self.every.is_zero() => tokio::task::yield_now().await,
                Err(_) => tokio::time::sleep(self.every).await,
            }
        }
    }

    /// [`Wait::poll`] for code that is not async (a plain `#[test]`, a process starting):
    /// blocks the thread between attempts.
    pub fn poll_blocking<T, E>(self, mut attempt: impl FnMut() -> Result<T, E>) -> Result<T, E> {
        let deadline = Instant::now() + self.limit;
        loop {
            match attempt() {
                Ok(v) => return Ok(v),
                Err(e) if Instant::now() >= deadline => return Err(e),
                Err(_) => std::thread::sleep(self.every),
            }
        }
    }

    /// Waits until `cond` holds; panics with `what` once the limit has passed.
    pub async fn until<F, Fut>(self, what: &str, mut cond: F)
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = bool>,
    {
        let held = self
            .poll(|| {
                let check = cond();
                async move {
                    if check.await {
                        Ok(())
                    } else {
                        Err(())
                    }
                }
            })
            .await;
        if held.is_err() {
            panic!("timed out after {:?} waiting for {what}", self.limit);
        }
    }

    /// Waits until `attempt` returns `Ok`, and returns its value; panics with `what` and the
    /// last `Err` once the limit has passed.
    pub async fn eventually<T, E, F, Fut>(self, what: &str, attempt: F) -> T
    where
        E: Debug,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        match self.poll(attempt).await {
            Ok(v) => v,
            Err(last) => panic!(
                "timed out after {:?} waiting for {what} (last: {last:?})",
                self.limit
            ),
        }
    }
}

/// Waits (at most [`DEADLINE`]) until `cond` holds: `until("the disconnect", || async { .. })`.
pub async fn until<F, Fut>(what: &str, cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    Wait::DEFAULT.until(what, cond).await
}

/// Waits (at most [`DEADLINE`]) until `attempt` returns `Ok`, and returns its value; the
/// failure names the last `Err`.
pub async fn eventually<T, E, F, Fut>(what: &str, attempt: F) -> T
where
    E: Debug,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    Wait::DEFAULT.eventually(what, attempt).await
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHORT: Wait = Wait::up_to(Duration::from_millis(50));

    #[tokio::test]
    async fn poll_returns_the_first_ok_or_the_last_err() {
        let mut n = 0;
        let got = SHORT
            .poll(|| {
                n += 1;
                let r = if n == 3 { Ok(n) } else { Err(n) };
                async move { r }
            })
            .await;
        assert_eq!(got, Ok(3));
        let mut n = 0;
        let got: Result<(), u32> = SHORT
            .every(Duration::ZERO)
            .poll(|| {
                n += 1;
                let r = Err(n);
                async move { r }
            })
            .await;
        assert!(got.is_err_and(|last| last == n && n > 1));
    }

    #[tokio::test]
    #[should_panic(expected = "waiting for the impossible")]
    async fn until_fails_naming_what_it_waited_for() {
        SHORT.until("the impossible", || async { false }).await;
    }

    #[tokio::test]
    #[should_panic(expected = "(last: 7)")]
    async fn eventually_fails_with_the_last_err() {
        SHORT
            .eventually("seven to pass", || async { Err::<(), _>(7) })
            .await;
    }

    #[test]
    fn poll_blocking_gives_up_after_the_limit() {
        let started = Instant::now();
        let got: Result<(), ()> = SHORT.poll_blocking(|| Err(()));
        assert!(got.is_err());
        assert!(started.elapsed() >= Duration::from_millis(50));
    }
}
