//! Tokens that expire: the deadlines of one connection (its own token, and the tokens of
//! subscriptions that carry one), and when its one timer must fire next.
//!
//! Each deadline has two moments: when to ask the client for a new token (a `refresh` frame,
//! `refresh_lead` before the expiry, at most half the remaining lifetime), and the expiry
//! itself. A connection holds at most one deadline of its own and one per topic it holds, so
//! the list is bounded by the channel's topic limit; messages never touch it, and one timer
//! (the next moment of all) serves the connection.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// One token's deadline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Deadline {
    pub(crate) expires: Instant,
    pub(crate) ask_at: Instant,
    /// The `refresh` frame went out.
    pub(crate) asked: bool,
}

impl Deadline {
    /// A deadline at `at` (wall clock, as tokens say it), asking `lead` before it at most.
    pub(crate) fn new(at: SystemTime, lead: Duration, now: Instant) -> Deadline {
        let left = at
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO);
        let expires = now + left;
        Deadline {
            expires,
            ask_at: expires - lead.min(left / 2),
            asked: false,
        }
    }

    fn next(&self) -> Instant {
        if self.asked {
            self.expires
        } else {
            self.ask_at
        }
    }

    /// Time left, for the `refresh` frame and the refresh reply.
    pub(crate) fn left(&self, now: Instant) -> Duration {
        self.expires.saturating_duration_since(now)
    }
}

/// What is due for one token.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Due {
    /// Ask for a new token; this much time is left.
    Ask(Duration),
    /// The token expired.
    Expired,
}

/// A connection's deadlines.
#[derive(Default)]
pub(crate) struct Tokens {
    pub(crate) conn: Option<Deadline>,
    pub(crate) topics: Vec<(Arc<str>, Deadline)>,
    /// The timer task of the next moment, aborted when the moments change.
    pub(crate) timer: Option<tokio::task::JoinHandle<()>>,
}

impl Tokens {
    /// Sets (or with `None` clears) a topic's deadline; `keep` says which topics are still
    /// held: deadlines of topics left meanwhile go, so the list stays bounded.
    pub(crate) fn set_topic(
        &mut self,
        topic: &Arc<str>,
        deadline: Option<Deadline>,
        keep: impl Fn(&Arc<str>) -> bool,
    ) {
        self.topics.retain(|(t, _)| t != topic && keep(t));
        if let Some(d) = deadline {
            self.topics.push((topic.clone(), d));
        }
    }

    pub(crate) fn topic(&self, topic: &str) -> Option<&Deadline> {
        self.topics
            .iter()
            .find(|(t, _)| &**t == topic)
            .map(|(_, d)| d)
    }

    /// The next moment something is due.
    pub(crate) fn next(&self) -> Option<Instant> {
        self.conn
            .iter()
            .chain(self.topics.iter().map(|(_, d)| d))
            .map(Deadline::next)
            .min()
    }

    /// What is due at `now`: the connection's own token (`None` for the connection), then the
    /// topics'. Marks asks as done and takes expired topic deadlines out.
    pub(crate) fn take_due(&mut self, now: Instant) -> Vec<(Option<Arc<str>>, Due)> {
        let mut due = Vec::new();
        if let Some(d) = &mut self.conn {
            if now >= d.expires {
                due.push((None, Due::Expired));
                self.conn = None;
            } else if !d.asked && now >= d.ask_at {
                d.asked = true;
                due.push((None, Due::Ask(d.left(now))));
            }
        }
        self.topics.retain_mut(|(t, d)| {
            if now >= d.expires {
                due.push((Some(t.clone()), Due::Expired));
                return false;
            }
            if !d.asked && now >= d.ask_at {
                d.asked = true;
                due.push((Some(t.clone()), Due::Ask(d.left(now))));
            }
            true
        });
        due
    }

    /// Stops the timer (the connection ends).
    pub(crate) fn stop(&mut self) {
        if let Some(t) = self.timer.take() {
            t.abort();
        }
    }
}

impl Drop for Tokens {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asks_before_the_expiry_then_expires() {
        let now = Instant::now();
        let at = SystemTime::now() + Duration::from_secs(100);
        let mut t = Tokens::default();
        t.conn = Some(Deadline::new(at, Duration::from_secs(30), now));
        // Asked 30 s before: at about 70 s.
        let ask = t.next().unwrap();
        assert!(ask >= now + Duration::from_secs(69) && ask <= now + Duration::from_secs(71));
        assert!(t.take_due(now).is_empty());
        let due = t.take_due(ask);
        assert!(matches!(due.as_slice(), [(None, Due::Ask(_))]), "{due:?}");
        assert!(t.take_due(ask).is_empty(), "asked once");
        let exp = t.next().unwrap();
        assert!(exp > ask);
        assert_eq!(t.take_due(exp), vec![(None, Due::Expired)]);
        assert!(t.next().is_none());
    }

    #[test]
    fn a_short_token_is_asked_for_at_half_its_life() {
        let now = Instant::now();
        let d = Deadline::new(
            SystemTime::now() + Duration::from_millis(200),
            Duration::from_secs(30),
            now,
        );
        let half = d.ask_at.duration_since(now);
        assert!(half <= Duration::from_millis(100), "{half:?}");
        assert!(half >= Duration::from_millis(90), "{half:?}");
    }

    #[test]
    fn topic_deadlines_stay_bounded_by_the_topics_held() {
        let now = Instant::now();
        let at = SystemTime::now() + Duration::from_secs(10);
        let mut t = Tokens::default();
        for i in 0..1000 {
            let topic: Arc<str> = Arc::from(format!("t{i}"));
            // Only the newest topic is still held.
            let held = topic.clone();
            t.set_topic(&topic, Some(Deadline::new(at, Duration::ZERO, now)), |x| {
                *x == held
            });
        }
        assert_eq!(t.topics.len(), 1);
        let a: Arc<str> = Arc::from("a");
        t.set_topic(&a, Some(Deadline::new(at, Duration::ZERO, now)), |_| true);
        t.set_topic(&a, Some(Deadline::new(at, Duration::ZERO, now)), |_| true);
        assert_eq!(t.topics.len(), 2, "one deadline per topic");
        t.set_topic(&a, None, |_| true);
        assert!(t.topic("a").is_none());
    }
}
