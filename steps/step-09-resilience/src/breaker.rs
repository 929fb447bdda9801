//! A circuit breaker, written by hand because it is the lesson.
//!
//! Closed: calls go through, and `failures` consecutive failures open it. Open: every call is
//! refused at once, without touching the upstream, for `cooldown`. Then the first call to ask
//! becomes the one probe (half-open) while every other call is still refused; the probe's
//! success closes the breaker, its failure opens it for another cooldown. Each change of state
//! starts a new *generation*: a result reported by a call that began in an earlier generation
//! is ignored, so a slow success from before the breaker opened cannot close it.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

// ANCHOR: breaker
/// When the breaker opens and how long it stays open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerSettings {
    /// `BREAKER_FAILURES`: consecutive failed attempts that open it (default 5; gobreaker's
    /// default rule, "more than 5 in a row", waits for a sixth).
    pub failures: u32,
    /// `BREAKER_COOLDOWN`: how long it stays open before one probe may go through.
    pub cooldown: Duration,
}

/// What the breaker lets through now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Everything, counting consecutive failures.
    Closed { failures: u32 },
    /// Nothing until `until`.
    Open { until: Instant },
    /// Nothing: one probe is out, and its result decides.
    HalfOpen,
}

pub struct Breaker {
    settings: BreakerSettings,
    inner: Mutex<(State, u64)>,
}

/// Leave to make one attempt; say how it went with [`Permit::record`]. Dropped unrecorded, the
/// attempt was cancelled (its caller hung up, or the server is stopping): that says nothing of
/// the upstream, so it counts as neither, and a probe dropped so lets the next call probe.
pub struct Permit<'a> {
    breaker: &'a Breaker,
    generation: u64,
    recorded: bool,
}

impl Breaker {
    pub fn new(settings: BreakerSettings) -> Breaker {
        let closed = State::Closed { failures: 0 };
        Breaker {
            settings,
            inner: Mutex::new((closed, 0)),
        }
    }

    /// The state now (an open breaker whose cooldown is over still says `Open` until a call
    /// asks: that call becomes the probe).
    pub fn state(&self) -> State {
        self.lock().0
    }

    /// A permit, or `None` at once when the breaker is open or its probe is out.
    pub fn try_acquire(&self) -> Option<Permit<'_>> {
        let mut inner = self.lock();
        match inner.0 {
            State::Closed { .. } => {}
            State::Open { until } if Instant::now() < until => return None,
            // The cooldown is over: this call is the probe.
            State::Open { .. } => transition(&mut inner, State::HalfOpen),
            State::HalfOpen => return None,
        }
        Some(Permit {
            breaker: self,
            generation: inner.1,
            recorded: false,
        })
    }

    fn report(&self, generation: u64, success: bool) {
        let mut inner = self.lock();
        if generation != inner.1 {
            // Started before the last change of state: what it says is old news.
            return;
        }
        let open = State::Open {
            until: Instant::now() + self.settings.cooldown,
        };
        match (inner.0, success) {
            (State::Closed { .. }, true) => inner.0 = State::Closed { failures: 0 },
            (State::Closed { failures }, false) if failures + 1 >= self.settings.failures => {
                transition(&mut inner, open);
            }
            (State::Closed { failures }, false) => {
                inner.0 = State::Closed {
                    failures: failures + 1,
                }
            }
            (State::HalfOpen, true) => transition(&mut inner, State::Closed { failures: 0 }),
            (State::HalfOpen, false) => transition(&mut inner, open),
            // No permit is handed out while open, and opening starts a new generation.
            (State::Open { .. }, _) => {}
        }
    }

    /// An attempt cancelled before its answer: a probe's place goes to the next call.
    fn abandon(&self, generation: u64) {
        let mut inner = self.lock();
        if generation == inner.1 && inner.0 == State::HalfOpen {
            let now = Instant::now();
            transition(&mut inner, State::Open { until: now });
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (State, u64)> {
        // The state is two words written whole: a panic elsewhere cannot leave it half-done.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A new state and a new generation, logged as a structured event.
fn transition(inner: &mut (State, u64), to: State) {
    let (from, generation) = (name(inner.0), inner.1 + 1);
    *inner = (to, generation);
    match to {
        State::Open { .. } => tracing::warn!(from, to = "open", generation, "circuit breaker"),
        _ => tracing::info!(from, to = name(to), generation, "circuit breaker"),
    }
}

fn name(state: State) -> &'static str {
    match state {
        State::Closed { .. } => "closed",
        State::Open { .. } => "open",
        State::HalfOpen => "half-open",
    }
}

impl Permit<'_> {
    /// How the attempt went: `true` when the upstream answered (even with a 404), `false`
    /// when it could not (no connection, a 5xx, no answer in time).
    pub fn record(mut self, success: bool) {
        self.recorded = true;
        self.breaker.report(self.generation, success);
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if !self.recorded {
            // Cancelled mid-attempt. Counted as a failure, every client that hangs up would
            // push a healthy upstream towards open; but a probe must not stay "out" for ever.
            self.breaker.abandon(self.generation);
        }
    }
}
// ANCHOR_END: breaker

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker() -> Breaker {
        Breaker::new(BreakerSettings {
            failures: 3,
            cooldown: Duration::from_secs(10),
        })
    }

    fn fail(breaker: &Breaker, times: u32) {
        for _ in 0..times {
            breaker.try_acquire().expect("closed").record(false);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn opens_after_the_rule_and_refuses_until_the_cooldown() {
        let breaker = breaker();
        fail(&breaker, 2);
        breaker.try_acquire().unwrap().record(true);
        fail(&breaker, 2);
        assert!(matches!(breaker.state(), State::Closed { failures: 2 }));

        fail(&breaker, 1);

        assert!(matches!(breaker.state(), State::Open { .. }));
        assert!(breaker.try_acquire().is_none());
        tokio::time::advance(Duration::from_millis(9_999)).await;
        assert!(breaker.try_acquire().is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn half_open_lets_exactly_one_probe_through_and_its_result_decides() {
        let breaker = breaker();
        fail(&breaker, 3);
        tokio::time::advance(Duration::from_secs(10)).await;

        let probe = breaker.try_acquire().expect("the probe");
        assert_eq!(breaker.state(), State::HalfOpen);
        assert!(breaker.try_acquire().is_none(), "a second probe");
        probe.record(false);
        assert!(matches!(breaker.state(), State::Open { .. }), "re-opens");

        tokio::time::advance(Duration::from_secs(10)).await;
        breaker.try_acquire().expect("the next probe").record(true);
        assert_eq!(breaker.state(), State::Closed { failures: 0 });
    }

    #[tokio::test(start_paused = true)]
    async fn a_late_success_from_before_it_opened_changes_nothing() {
        let breaker = breaker();
        let slow = breaker.try_acquire().expect("closed");
        fail(&breaker, 3);
        tokio::time::advance(Duration::from_secs(10)).await;
        let probe = breaker.try_acquire().expect("the probe");

        slow.record(true);

        assert_eq!(
            breaker.state(),
            State::HalfOpen,
            "the late success closed it"
        );
        drop(probe);
        assert!(
            breaker.try_acquire().is_some(),
            "a dropped probe left no room for the next"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn attempts_cancelled_while_closed_count_as_nothing() {
        let breaker = breaker();
        fail(&breaker, 2);

        for _ in 0..10 {
            drop(breaker.try_acquire().expect("closed"));
        }

        assert_eq!(breaker.state(), State::Closed { failures: 2 });
    }
}
