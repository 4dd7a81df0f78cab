//! A one-line progress bar on stderr (redrawn in place), with rate and ETA.

use std::io::Write;
use std::time::Instant;

pub struct Bar {
    start: Instant,
    last_draw: Option<Instant>,
    /// Shown after the message of every draw (e.g. the latest loss).
    note: String,
}

impl Default for Bar {
    fn default() -> Self {
        Self::new()
    }
}

impl Bar {
    pub fn new() -> Self {
        Self {
            start: Instant::now(),
            last_draw: None,
            note: String::new(),
        }
    }

    pub fn reset(&mut self) {
        self.start = Instant::now();
    }

    pub fn elapsed(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    pub fn note(&mut self, note: &str) {
        self.note = note.to_string();
    }

    /// Draws `done` of `total` with a message; at most ten redraws a second.
    pub fn draw(&mut self, done: usize, total: usize, msg: &str) {
        let now = Instant::now();
        if done < total && self.last_draw.is_some_and(|t| (now - t).as_millis() < 100) {
            return;
        }
        self.last_draw = Some(now);
        let frac = if total == 0 {
            1.0
        } else {
            done as f64 / total as f64
        };
        let width = 24;
        let filled = (frac * width as f64).round() as usize;
        let elapsed = self.elapsed();
        let eta = if done > 0 {
            elapsed / done as f64 * (total - done.min(total)) as f64
        } else {
            0.0
        };
        let bar: String = "#".repeat(filled) + &"-".repeat(width - filled);
        let mut err = std::io::stderr();
        let _ = write!(
            err,
            "\r[{bar}] {done}/{total} {msg} {} ETA {}\x1b[K",
            self.note,
            format_secs(eta)
        );
        if done >= total {
            let _ = writeln!(err);
        }
        let _ = err.flush();
    }
}

pub fn format_secs(s: f64) -> String {
    let s = s.max(0.0).round() as u64;
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, s / 60 % 60)
    } else {
        format!("{}m{:02}s", s / 60, s % 60)
    }
}
