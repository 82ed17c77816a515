//! What the commands draw and print on stderr: live status lines, progress bars, the
//! replay summary, number formatting.

use std::time::Duration;

use anyhow::Result;
use indicatif::{ProgressBar, ProgressStyle};

use ticktape::store::layout;

/// Whether to draw a live status line: not with `--quiet`, and not when this process is a
/// background job of the terminal its stderr goes to (`ticktape simulate … &` and then
/// `ticktape record` in one terminal would overwrite each other's lines). The final
/// summary is printed either way.
pub fn live_status(quiet: bool) -> bool {
    !quiet && stderr_is_foreground()
}

/// True when stderr is a terminal whose foreground process group is this process's.
fn stderr_is_foreground() -> bool {
    // SAFETY: two syscalls that take no pointers; tcgetpgrp returns -1 when fd 2 is not
    // this process's controlling terminal (a file, a pipe), never equal to a group id.
    let (foreground, own) = unsafe { (libc::tcgetpgrp(2), libc::getpgrp()) };
    foreground == own
}

pub fn spinner(quiet: bool) -> ProgressBar {
    if !live_status(quiet) {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} {elapsed_precise} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// The progress line of a replay or a scenario run: events, position in recorded time,
/// and, after the last event, who the replay is still waiting for.
pub struct ReplayProgress {
    pub bar: ProgressBar,
    announced: bool,
}

impl ReplayProgress {
    pub fn new(quiet: bool) -> ReplayProgress {
        let bar = if !live_status(quiet) {
            ProgressBar::hidden()
        } else {
            let bar = ProgressBar::new(0);
            bar.set_style(
                ProgressStyle::with_template(
                    "{bar:30} {pos}/{len} events {rate} eta {eta} | {msg}",
                )
                .map(|style| style.with_key("rate", write_rate))
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar
        };
        ReplayProgress {
            bar,
            announced: false,
        }
    }

    pub fn show(&mut self, p: &ticktape::replay::Progress<'_>) {
        if !p.waiting_for.is_empty() {
            // Said once, even when quiet: a hung subscriber would otherwise look like a
            // hung replay.
            if !self.announced {
                self.announced = true;
                self.bar.suspend(|| {
                    eprintln!(
                        "replay: every event sent; waiting for subscribers to take the end of the stream: {} (Ctrl-C drops it)",
                        p.waiting_for.join(", ")
                    )
                });
            }
            return;
        }
        self.bar.set_length(p.stats.estimate);
        self.bar.set_position(p.stats.events);
        self.bar
            .set_message(format!("at {}", layout::format_ts(p.ts)));
    }
}

/// The `{rate}` of a progress bar: whole events per second, thousands grouped
/// (`30,372/s`; indicatif's `{per_sec}` shows four decimals).
fn write_rate(state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write) {
    let _ = write!(w, "{}/s", group_thousands(state.per_sec().round() as u64));
}

pub fn print_replay_summary(stats: &ticktape::replay::ReplayStats, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(stats)?);
    }
    eprintln!(
        "replay: {} events ({} gaps) in {:.2}s = {:.0} events/s ({:.2}s with the close); subscriber stalls {} ({:.2}s)",
        stats.events,
        stats.gaps,
        stats.stream_secs,
        stats.events as f64 / stats.stream_secs.max(1e-9),
        stats.elapsed_secs,
        stats.stalls,
        stats.stalled_secs
    );
    if !stats.dropped_at_close.is_empty() {
        eprintln!(
            "  end of stream not taken by: {}",
            stats.dropped_at_close.join(", ")
        );
    }
    if !stats.slow_subscribers.is_empty() {
        eprintln!(
            "  slow subscribers: {}",
            stats
                .slow_subscribers
                .iter()
                .map(|p| format!("{} {} stalls ({:.2}s)", p.peer, p.stalls, p.secs))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    if let Some((a, b)) = stats.time_range {
        eprintln!(
            "  window {} .. {} ({:.2}s of recorded time)",
            layout::format_ts(a),
            layout::format_ts(b),
            (b - a) as f64 / 1e9
        );
    }
    if stats.backdated > 0 {
        // The gateway's bound: the last step acknowledged in lockstep, else the replay's
        // time when the order arrived.
        let bound = if stats.steps > 0 {
            "their strategy's last acknowledged step"
        } else {
            "the replay's time when they arrived"
        };
        eprintln!(
            "  {} orders dated before {bound} were moved up to it (decision time belongs to the harness)",
            stats.backdated
        );
    }
    if let Some(l) = &stats.lateness {
        eprintln!(
            "  pacing lateness p50 {} us, p99 {} us, max {} us ({} samples; due to send returned, every event)",
            us(l.p50_us),
            us(l.p99_us),
            us(l.max_us),
            l.samples
        );
    }
    if let Some(p) = &stats.pacing {
        let figure = |l: &Option<ticktape::replay::Lateness>| match l {
            Some(l) => format!(
                "p50 {} us, p99 {} us, max {} us ({} samples)",
                us(l.p50_us),
                us(l.p99_us),
                us(l.max_us),
                l.samples
            ),
            None => "none".into(),
        };
        eprintln!("    first event of each due time: {}", figure(&p.first));
        eprintln!("    events the pacer waited for: {}", figure(&p.waited));
        eprintln!(
            "    floor (woken on time, these sends), every event: {}",
            figure(&p.floor)
        );
        eprintln!(
            "    floor, first event of each due time: {}",
            figure(&p.floor_first)
        );
        if let Some(t) = &p.sends {
            eprintln!(
                "    each send (from the wake-up or the send before): p50 {} ns, p90 {} ns, p99 {} ns, max {} us; {} of {} took {} us or more, {:.1} ms in all",
                t.p50_ns,
                t.p90_ns,
                t.p99_ns,
                us(t.max_ns as f64 / 1e3),
                t.slow,
                t.samples,
                ticktape::replay::pacing::SLOW_SEND.as_micros(),
                t.slow_us / 1e3
            );
        }
        if p.answers.is_some() {
            eprintln!(
                "    the exchange's answers to market events (due to visible), every message: {}",
                figure(&p.answers)
            );
        }
        let st = &p.stalls;
        if st.spun_secs > 0.0 {
            eprintln!(
                "    stalls seen while spinning ({:.1}s): {} of {} us or more, {:.1} ms in all ({} of 100 us or more, {:.1} ms), longest {} us, {} due times in one",
                st.spun_secs,
                st.count,
                ticktape::replay::pacing::STALL.as_micros(),
                st.lost_ms,
                st.long,
                st.long_ms,
                us(st.longest_us),
                st.due_in_stall
            );
            eprintln!(
                "    floor with the stalls, every event: {}",
                figure(&p.floor_stalled)
            );
        }
        if let Some(b) = &p.backup {
            eprintln!(
                "    backup publisher: published {} bursts ({} events) before the replay thread, {:.1} ms earlier in all, at most {} us; {} bursts ({} events) written ahead and held; {} bursts ({} events) written less than {} us before their due time",
                b.bursts,
                b.events,
                b.earlier_ms,
                us(b.most_earlier_us),
                b.held_bursts,
                b.held_events,
                b.exposed_bursts,
                b.exposed_events,
                ticktape::replay::pacing::EXPOSED.as_micros()
            );
        }
    }
    if stats.elapsed_secs > 0.0 {
        eprintln!(
            "  cpu {:.2}s user+sys = {:.2} cores over the replay, peak RSS {:.0} MiB{}{}{}",
            stats.cpu_secs,
            stats.cpu_secs / stats.elapsed_secs,
            stats.peak_rss_mib,
            match stats.pacing.as_ref().and_then(|p| p.margin_us) {
                Some(m) => format!(" (sleep margin at the end {m:.0} us)"),
                None => String::new(),
            },
            match stats.steal_secs {
                Some(s) if s > 0.0 => format!(
                    ", the host took {:.0} ms of the machine's CPUs (steal)",
                    s * 1e3
                ),
                _ => String::new(),
            },
            match (stats.own_cpu, stats.own_cpu_steal_secs) {
                (Some(c), Some(s)) => format!(
                    ", the replay thread alone on CPU {c} (the host took {:.0} ms of it)",
                    s * 1e3
                ),
                (Some(c), None) => format!(", the replay thread alone on CPU {c}"),
                _ => String::new(),
            }
        );
        if stats.major_faults > 0 {
            eprintln!(
                "  {} page faults waited for storage (code or data the kernel had evicted)",
                stats.major_faults
            );
        }
        if let (Some(delay), Some(preempted), true) = (
            stats.run_delay_secs,
            stats.preempted,
            stats.lateness.is_some(),
        ) {
            eprintln!(
                "  the replay thread waited {:.1} ms for its CPU while other threads ran ({preempted} preemptions)",
                delay * 1e3
            );
        }
    }
    if stats.steps > 0 {
        eprintln!(
            "  lockstep: {} steps, waited {} times for acks ({:.2}s); slowest: {}",
            stats.steps,
            stats.ack_waits,
            stats.ack_wait_secs,
            stats
                .slowest
                .iter()
                .map(|(n, s)| format!("{n} {s:.2}s"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    if let Some(d) = &stats.digest {
        eprintln!("  fills digest {d}");
    }
    Ok(())
}

/// Microseconds for a summary line: one decimal below 10 us.
fn us(v: f64) -> String {
    if v < 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.0}")
    }
}

/// `1234567` as `1,234,567`.
pub fn group_thousands(n: u64) -> String {
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
