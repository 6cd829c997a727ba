//! The progress bar of long client calls (gather, wait): tasks done out of
//! the total, their rate and the time left, drawn on stderr.
//!
//! [`Meter`] decides when to draw and what to say; it is plain logic on
//! instants given to it, so it is tested without a terminal. The client
//! draws with `indicatif` only when stderr is a terminal and progress is
//! on ([`ClientOptions::progress`](crate::client::ClientOptions), and the
//! `WEFT_PROGRESS` environment variable: `0` turns it off). When off, a
//! call costs one check and nothing per task.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

/// A call shorter than this shows no bar at all (no flicker on quick calls).
pub const DELAY: Duration = Duration::from_millis(500);

/// Shortest time between two draws: at most 10 per second.
pub const INTERVAL: Duration = Duration::from_millis(100);

/// How the bar looks: all of it is [`Meter::status`], so that one update
/// is one draw.
const TEMPLATE: &str = "{msg}";

/// Width of the bar, in characters.
pub const BAR_WIDTH: usize = 30;

/// Whether a call over `total` tasks shows a bar: progress on, something
/// to count, and stderr a terminal.
pub fn wanted(enabled: bool, total: usize) -> bool {
    enabled && total > 0 && std::io::stderr().is_terminal()
}

/// When to draw, and what, for one call over `total` tasks.
#[derive(Debug, Clone)]
pub struct Meter {
    total: u64,
    /// Tasks already done when the call started (they add nothing to the
    /// rate).
    base: u64,
    started: Instant,
    last_draw: Option<Instant>,
}

impl Meter {
    /// A call over `total` tasks of which `done` are done already, starting
    /// at `now`.
    pub fn new(total: u64, done: u64, now: Instant) -> Self {
        Meter {
            total,
            base: done.min(total),
            started: now,
            last_draw: None,
        }
    }

    /// Whether to draw at `now`: not before [`DELAY`] into the call, then
    /// not within [`INTERVAL`] of the last draw. Records the draw.
    pub fn should_draw(&mut self, now: Instant) -> bool {
        if now.saturating_duration_since(self.started) < DELAY {
            return false;
        }
        if self
            .last_draw
            .is_some_and(|last| now.saturating_duration_since(last) < INTERVAL)
        {
            return false;
        }
        self.last_draw = Some(now);
        true
    }

    /// The total.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// What the bar says with `done` tasks done at `now`:
    /// `[=====>    ] 1,234/5,000 tasks · 812/s · ETA 5s`; while nothing has
    /// finished yet, how long it has waited; at the end, how long it took.
    pub fn status(&self, done: u64, now: Instant) -> String {
        let done = done.min(self.total);
        let elapsed = now.saturating_duration_since(self.started);
        let counted = format!(
            "{} {}/{} tasks",
            bar_text(done, self.total),
            thousands(done),
            thousands(self.total)
        );
        if done == self.total {
            return format!("{counted} · done in {}", duration(elapsed));
        }
        let secs = elapsed.as_secs_f64();
        if done == self.base || secs <= 0.0 {
            return format!("{counted} · waiting {}", duration(elapsed));
        }
        let rate = (done - self.base) as f64 / secs;
        let eta = duration(Duration::from_secs_f64((self.total - done) as f64 / rate));
        format!("{counted} · {}/s · ETA {eta}", rate_text(rate))
    }
}

/// `[=========>      ]`: `done` of `total` in [`BAR_WIDTH`] characters.
pub fn bar_text(done: u64, total: u64) -> String {
    let filled = if total == 0 {
        BAR_WIDTH
    } else {
        (done.min(total) as u128 * BAR_WIDTH as u128 / total as u128) as usize
    };
    let head = usize::from(filled < BAR_WIDTH);
    format!(
        "[{}{}{}]",
        "=".repeat(filled),
        ">".repeat(head),
        " ".repeat(BAR_WIDTH - filled - head)
    )
}

/// `1234567` as `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A rate per second, short: `0.5`, `812`, `12.3k`, `4.1M`.
pub fn rate_text(rate: f64) -> String {
    match rate {
        r if r >= 1e6 => format!("{:.1}M", r / 1e6),
        r if r >= 1e4 => format!("{:.1}k", r / 1e3),
        r if r >= 10.0 => format!("{r:.0}"),
        r => format!("{r:.1}"),
    }
}

/// A duration, short: `0.4s`, `42s`, `3m05s`, `2h07m`.
pub fn duration(d: Duration) -> String {
    let secs = d.as_secs();
    match secs {
        0..10 => format!("{:.1}s", d.as_secs_f64()),
        10..60 => format!("{secs}s"),
        60..3600 => format!("{}m{:02}s", secs / 60, secs % 60),
        _ => format!("{}h{:02}m", secs / 3600, secs % 3600 / 60),
    }
}

/// Runs `work` while a bar on stderr shows `meter`'s status, `done()`
/// telling how many tasks are done, drawn on `meter`'s schedule; at the
/// end the bar says how long the call took.
pub(crate) async fn draw_while<T>(mut meter: Meter, done: impl Fn() -> u64, work: impl Future<Output = T>) -> T {
    let mut bar: Option<indicatif::ProgressBar> = None;
    let mut tick = tokio::time::interval(INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    tokio::pin!(work);
    loop {
        tokio::select! {
            out = &mut work => {
                if let Some(bar) = bar {
                    bar.finish_with_message(meter.status(meter.total(), Instant::now()));
                }
                return out;
            }
            _ = tick.tick() => {
                let now = Instant::now();
                if meter.should_draw(now) {
                    bar.get_or_insert_with(bar_on_stderr).set_message(meter.status(done(), now));
                }
            }
        }
    }
}

/// A bar on stderr, drawn when its message is set (by [`Meter`]'s
/// schedule), and never more than [`INTERVAL`] allows.
fn bar_on_stderr() -> indicatif::ProgressBar {
    use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
    let hz = (1000 / INTERVAL.as_millis()).clamp(1, 20) as u8;
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr_with_hz(hz));
    // A fixed template: a typo in it would be ours and caught by the tests.
    if let Ok(style) = ProgressStyle::with_template(TEMPLATE) {
        bar.set_style(style);
    }
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(start: Instant, ms: u64) -> Instant {
        start + Duration::from_millis(ms)
    }

    #[test]
    fn draws_after_the_delay_then_at_most_ten_times_a_second() {
        let t0 = Instant::now();
        let mut meter = Meter::new(100, 0, t0);
        assert!(!meter.should_draw(at(t0, 0)));
        assert!(!meter.should_draw(at(t0, 499)), "quick calls show nothing");
        assert!(meter.should_draw(at(t0, 500)));
        assert!(!meter.should_draw(at(t0, 550)));
        assert!(!meter.should_draw(at(t0, 599)));
        assert!(meter.should_draw(at(t0, 600)));
        // Polled every millisecond for a second: ten draws, no more.
        let draws = (601..=1600).filter(|&ms| meter.should_draw(at(t0, ms))).count();
        assert_eq!(draws, 10);
    }

    #[test]
    fn status_counts_rates_and_estimates() {
        let t0 = Instant::now();
        // 1,000 already done when the call began: they do not count in the rate.
        let meter = Meter::new(101_000, 1_000, t0);
        assert_eq!(
            meter.status(21_000, at(t0, 2_000)),
            "[======>                       ] 21,000/101,000 tasks · 10.0k/s · ETA 8.0s"
        );
        assert_eq!(
            meter.status(1_000, at(t0, 4_200)),
            "[>                             ] 1,000/101,000 tasks · waiting 4.2s"
        );
        assert_eq!(
            meter.status(101_000, at(t0, 6_100)),
            "[==============================] 101,000/101,000 tasks · done in 6.1s"
        );
        // More than the total (a miscount) reads as done.
        assert!(
            meter
                .status(200_000, at(t0, 61_000))
                .ends_with("101,000/101,000 tasks · done in 1m01s")
        );
        // A single output (a reduction) says how long it has waited.
        let one = Meter::new(1, 0, t0);
        assert!(one.status(0, at(t0, 3_000)).ends_with("0/1 tasks · waiting 3.0s"));
    }

    #[test]
    fn the_bar_fills_in_proportion() {
        assert_eq!(bar_text(0, 10), format!("[>{}]", " ".repeat(29)));
        assert_eq!(bar_text(5, 10), format!("[{}>{}]", "=".repeat(15), " ".repeat(14)));
        assert_eq!(bar_text(10, 10), format!("[{}]", "=".repeat(30)));
        assert_eq!(bar_text(0, 0), format!("[{}]", "=".repeat(30)));
        assert_eq!(bar_text(u64::MAX - 1, u64::MAX).len(), 32);
    }

    #[test]
    fn numbers_read_well() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(rate_text(0.25), "0.2");
        assert_eq!(rate_text(812.4), "812");
        assert_eq!(rate_text(12_345.0), "12.3k");
        assert_eq!(rate_text(4_100_000.0), "4.1M");
        assert_eq!(duration(Duration::from_millis(400)), "0.4s");
        assert_eq!(duration(Duration::from_secs(42)), "42s");
        assert_eq!(duration(Duration::from_secs(185)), "3m05s");
        assert_eq!(duration(Duration::from_secs(7_620)), "2h07m");
    }

    #[test]
    fn nothing_to_count_or_switched_off_shows_no_bar() {
        assert!(!wanted(false, 10));
        assert!(!wanted(true, 0));
    }

    #[test]
    fn the_bar_template_is_valid() {
        assert!(indicatif::ProgressStyle::with_template(TEMPLATE).is_ok());
        assert_eq!(bar_on_stderr().length(), None);
    }
}
