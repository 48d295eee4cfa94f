//! Pacing that learns a registry's request quota: per host, an adaptive rate shared by every
//! copy in the process. A registry that answers
//! 429 or 503 has its rate cut to a fraction of what it was admitting (multiplicative
//! decrease); admitted requests then let the rate grow a little (additive increase), so a
//! burst of releases settles just under the quota instead of bouncing off it.
//!
//! The first cut is a guess: what a burst got through in its last second can be far below
//! what the registry sustains (a quota that allows little burst, or answers still in flight
//! when the first 429 comes back). So after a first cut the rate doubles every half second,
//! as TCP's slow start does, until the registry objects again: the limit then lies between
//! that rate and half of it, and the pace goes on from three quarters of it, additively.
//!
//! One pace per host, not one per kind of request: a 429 does not say which quota it came
//! from (Artifact Registry counts all requests, and writes again on their own), and paces
//! cut one kind at a time never add up to a quota that counts both.
//!
//! Why a rate and not a window of requests in flight: quotas are rates (Artifact Registry:
//! requests and writes per minute per project and region), and with a registry a
//! millisecond away one request in flight already makes a thousand a second, so no window
//! of whole requests can express a quota below that. `Retry-After` stays honoured on top
//! ([`super::retry::Backoff`]).

use std::sync::Mutex;
use std::time::Duration;

// Tokio's clock, so the pace follows a paused clock in tests like every sleep does.
use tokio::time::Instant;

/// Share of the rate kept after a 429/503 once paced: gentle, because every "slow down"
/// also costs a `Retry-After` pause of the whole host.
const DECREASE: f64 = 0.85;
/// A "slow down" met while exploring: the rate in force overshot, half of it did not.
const EXPLORED: f64 = 0.75;
/// Where the rate the registry admitted since the last cut is known, the pace goes on just
/// below it: that is the quota, measured.
const BELOW_ADMITTED: f64 = 0.95;
/// Admitted requests needed before their rate counts as a measurement.
const MEASURED_AFTER: u32 = 20;
/// Additive growth, in requests per second gained per second of requests admitted at the
/// pace, as a share of the rate set at the last cut (at least [`MIN_STEP`]).
const INCREASE_PER_SECOND: f64 = 0.02;
/// Growth per second at the least: a cut made while little was asked (a 503 from a registry
/// restarting) must not keep the host slow for minutes.
const MIN_STEP: f64 = 1.0;
/// While exploring, the rate doubles each time this many seconds' worth of requests have
/// been admitted.
const DOUBLING_SECONDS: f64 = 0.5;
/// Requests are counted over this window, for the first cut.
const WINDOW: Duration = Duration::from_secs(1);
/// Never pace slower than this: a registry must still be asked.
const MIN_RATE: f64 = 1.0;
/// Without a "slow down" for this long, the host is no longer paced: the limit is learnt
/// again, at the cost of one more 429, by the next burst that reaches it.
const FORGET_AFTER: Duration = Duration::from_secs(30);

/// One host's pace.
#[derive(Debug, Default)]
pub struct Pace {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Requests per second allowed; `None` until the registry first says "slow down".
    rate: Option<f64>,
    /// Additive step per second, fixed at each cut.
    step: f64,
    /// Doubling instead: the last cut was the first, made on a guess.
    exploring: bool,
    /// When the rate was last cut: answers to requests sent before then met the old rate.
    cut_at: Option<Instant>,
    /// When the next request may be sent (requests are spaced `1 / rate` apart).
    next: Option<Instant>,
    /// Requests sent and admitted over the last second, for the first cut.
    sent: Window,
    admitted: Window,
    /// Requests admitted since `since` (the last cut, or the end of a `Retry-After` pause
    /// after it): the rate the registry sustains at the pace.
    since: Option<Instant>,
    admitted_since: u32,
}

/// Events over the last second, counted in one-second buckets.
#[derive(Debug, Default)]
struct Window {
    start: Option<Instant>,
    now: u32,
    before: u32,
}

impl Window {
    fn add(&mut self, at: Instant) {
        match self.start {
            Some(start) if at.duration_since(start) < WINDOW => {}
            Some(start) if at.duration_since(start) < 2 * WINDOW => {
                self.before = self.now;
                self.now = 0;
                self.start = Some(start + WINDOW);
            }
            _ => {
                *self = Window {
                    start: Some(at),
                    ..Window::default()
                };
            }
        }
        self.now += 1;
    }

    /// Events over the second before `at`.
    fn last_second(&self, at: Instant) -> f64 {
        match self.start {
            Some(start) if at.duration_since(start) < 2 * WINDOW => {
                let into = at.duration_since(start).as_secs_f64().min(1.0);
                f64::from(self.now) + f64::from(self.before) * (1.0 - into)
            }
            _ => 0.0,
        }
    }
}

impl Pace {
    /// Wait for this request's turn; returns when it was sent, for [`Pace::slow_down`].
    pub async fn turn(&self) -> Instant {
        let at = {
            let mut s = self.lock();
            let now = Instant::now();
            let at = match s.rate {
                None => now,
                Some(rate) => {
                    let at = s.next.map_or(now, |n| n.max(now));
                    s.next = Some(at + Duration::from_secs_f64(1.0 / rate));
                    at
                }
            };
            s.sent.add(at);
            at
        };
        // Only a turn that lies ahead is waited for: a sleep until now still waits for the
        // timer's next millisecond tick, on every request.
        if at > Instant::now() {
            tokio::time::sleep_until(at).await;
        }
        at
    }

    /// The registry admitted a request: count it, and let the rate grow by what one request
    /// earns (growth follows traffic, so a pause cannot inflate it).
    pub fn admitted(&self) {
        let mut s = self.lock();
        let now = Instant::now();
        if s.cut_at
            .is_some_and(|cut| now.duration_since(cut) > FORGET_AFTER)
        {
            *s = State::default();
        }
        s.admitted.add(now);
        s.admitted_since += 1;
        if let Some(rate) = s.rate {
            // One admitted request is 1/rate seconds of traffic at the pace.
            s.rate = Some(if s.exploring {
                rate * (1.0 / (rate * DOUBLING_SECONDS)).exp2()
            } else {
                rate + s.step / rate
            });
        }
    }

    /// Every request to the host waits until `until` (a `Retry-After`): the admitted rate is
    /// measured from then on.
    pub fn paused_until(&self, until: Instant) {
        let mut s = self.lock();
        if s.since.is_none_or(|since| since < until) {
            s.since = Some(until);
            s.admitted_since = 0;
        }
        // Turns resume after the pause, spaced again.
        if s.rate.is_some() && s.next.is_none_or(|n| n < until) {
            s.next = Some(until);
        }
    }

    /// The registry said "slow down" (429, or 503) to a request sent at `sent`. Returns the
    /// rate in force after it.
    pub fn slow_down(&self, sent: Instant) -> f64 {
        let mut s = self.lock();
        let now = Instant::now();
        // Requests in flight together meet the limit together: the first answer cuts the
        // rate, and answers to requests sent before that cut do not cut it again.
        if let (Some(rate), Some(cut)) = (s.rate, s.cut_at)
            && sent < cut
        {
            return rate;
        }
        let measured = match s.since {
            Some(since) if s.admitted_since >= MEASURED_AFTER && now > since => {
                Some(f64::from(s.admitted_since) / now.duration_since(since).as_secs_f64())
            }
            _ => None,
        };
        let rate = match s.rate {
            // First contact: what got through over the last second, or half of what was
            // sent when the answers that got through are still on their way.
            None => {
                let admitted = s.admitted.last_second(now);
                (admitted * DECREASE).max(s.sent.last_second(now) / 2.0)
            }
            Some(rate) => {
                let cut = rate * if s.exploring { EXPLORED } else { DECREASE };
                match measured {
                    Some(m) => cut.min(m * BELOW_ADMITTED).max(rate / 2.0),
                    None => cut,
                }
            }
        }
        .max(MIN_RATE);
        s.exploring = s.rate.is_none();
        s.rate = Some(rate);
        s.cut_at = Some(now);
        s.since = Some(now);
        s.admitted_since = 0;
        s.step = (rate * INCREASE_PER_SECOND).max(MIN_STEP);
        s.next = Some(now + Duration::from_secs_f64(1.0 / rate));
        rate
    }

    /// The rate in force, `None` when unpaced.
    pub fn rate(&self) -> Option<f64> {
        self.lock().rate
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn unpaced_until_told_then_spaced_at_a_share_of_what_was_admitted() {
        let pace = Pace::default();
        let t0 = tokio::time::Instant::now();
        for _ in 0..100 {
            pace.turn().await;
            pace.admitted();
        }
        assert_eq!(t0.elapsed(), Duration::ZERO, "no pacing before a 429");
        let rate = pace.slow_down(Instant::now());
        assert!((rate - 85.0).abs() < 1.0, "{rate}");
        let t1 = tokio::time::Instant::now();
        for _ in 0..85 {
            pace.turn().await;
        }
        let took = t1.elapsed().as_secs_f64();
        assert!(
            (0.95..1.05).contains(&took),
            "85 requests at 85/s took {took}s"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn requests_meeting_one_limit_together_cut_the_rate_once() {
        let pace = Pace::default();
        let mut sent = Vec::new();
        for _ in 0..100 {
            sent.push(pace.turn().await);
            pace.admitted();
        }
        tokio::time::advance(Duration::from_millis(1)).await;
        let first = pace.slow_down(sent[92]);
        for s in &sent[93..] {
            assert_eq!(pace.slow_down(*s), first);
        }
        // A request sent at the new pace that meets the limit again cuts again.
        let later = pace.turn().await;
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(pace.slow_down(later) < first);
    }

    #[tokio::test(start_paused = true)]
    async fn a_quiet_spell_forgets_the_pace() {
        let pace = Pace::default();
        pace.admitted();
        pace.slow_down(Instant::now());
        assert_eq!(pace.rate(), Some(MIN_RATE));
        tokio::time::advance(FORGET_AFTER + Duration::from_secs(1)).await;
        pace.admitted();
        assert_eq!(pace.rate(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn the_rate_grows_with_admitted_requests_fast_after_a_guess_then_additively() {
        let pace = Pace::default();
        for _ in 0..10 {
            pace.admitted();
        }
        // The first cut is a guess: a second's worth of requests at the pace doubles it twice.
        let first = pace.slow_down(Instant::now());
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(
            pace.rate(),
            Some(first),
            "a pause without traffic grows nothing"
        );
        let mut rate = first;
        let mut admitted = 0.0;
        while admitted < 1.0 {
            pace.admitted();
            admitted += 1.0 / rate;
            rate = pace.rate().unwrap();
        }
        assert!((3.5..4.5).contains(&(rate / first)), "{first} -> {rate}");
        // Cut while exploring: three quarters of the rate in force, then additive growth.
        let sent = pace.turn().await;
        tokio::time::advance(Duration::from_millis(1)).await;
        let cut = pace.slow_down(sent);
        assert!((cut - rate * EXPLORED).abs() < 0.01, "{rate} -> {cut}");
        let mut seconds = 0.0;
        while seconds < 10.0 {
            seconds += 1.0 / pace.rate().unwrap();
            pace.admitted();
        }
        let grown = pace.rate().unwrap();
        let step = (cut * INCREASE_PER_SECOND).max(MIN_STEP);
        assert!(
            (grown - (cut + 10.0 * step)).abs() < 1.0,
            "{cut} -> {grown}"
        );
    }
}
