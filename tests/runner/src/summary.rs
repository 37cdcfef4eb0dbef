//! The test report: one `PASS`/`FAIL`/`SKIP name (reason)` line per case and
//! a last line `N passed, N failed[, N skipped]`.

use crate::cases::Outcome;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub passed: usize,
    pub failed: usize,
    pub skipped: usize,
}

impl Tally {
    pub fn add(&mut self, outcome: &Outcome) {
        match outcome {
            Outcome::Pass => self.passed += 1,
            Outcome::Fail(_) => self.failed += 1,
            Outcome::Skip(_) => self.skipped += 1,
        }
    }

    /// The closing line CI reads.
    pub fn closing_line(&self) -> String {
        let mut line = format!("{} passed, {} failed", self.passed, self.failed);
        if self.skipped > 0 {
            line.push_str(&format!(", {} skipped", self.skipped));
        }
        line
    }
}

/// `PASS name`, `FAIL name (why)`, `SKIP name (why)`.
pub fn case_line(name: &str, outcome: &Outcome, seconds: Option<f64>) -> String {
    let time = seconds.map(|s| format!(" [{s:.1} s]")).unwrap_or_default();
    match outcome {
        Outcome::Pass => format!("PASS {name}{time}"),
        Outcome::Fail(why) => format!("FAIL {name}{time} ({why})"),
        Outcome::Skip(why) => format!("SKIP {name} ({why})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closing_line_mentions_skips_only_when_any() {
        let mut t = Tally::default();
        t.add(&Outcome::Pass);
        t.add(&Outcome::Fail("x".into()));
        assert_eq!(t.closing_line(), "1 passed, 1 failed");
        t.add(&Outcome::Skip("y".into()));
        assert_eq!(t.closing_line(), "1 passed, 1 failed, 1 skipped");
    }

    #[test]
    fn case_lines() {
        assert_eq!(case_line("a", &Outcome::Pass, Some(1.25)), "PASS a [1.2 s]");
        assert_eq!(case_line("b", &Outcome::Skip("why".into()), None), "SKIP b (why)");
    }
}
