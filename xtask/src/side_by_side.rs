//! Two runs' named results side by side: `pmu-report` (the PMU conformance
//! checks natively and as perfvisor's guest) and `linux-report` (the
//! LINUXTEST checks likewise).

use perfvisor_runner::cases::Outcome;

/// How a result reads in a column: `ok`, `FAILED (why)`, `skipped (why)`,
/// or `not run` when that run has no result of that name.
pub fn show(outcome: Option<&Outcome>) -> String {
    match outcome {
        Some(Outcome::Pass) => "ok".to_string(),
        Some(Outcome::Fail(why)) => format!("FAILED ({why})"),
        Some(Outcome::Skip(why)) => format!("skipped ({why})"),
        None => "not run".to_string(),
    }
}

/// One row a result name, in the order the names first appear (the left
/// run's, then names only the right one has), with each run's outcome.
pub fn rows<'a>(
    left: &'a [(String, Outcome)],
    right: &'a [(String, Outcome)],
) -> Vec<(&'a str, Option<&'a Outcome>, Option<&'a Outcome>)> {
    let mut names: Vec<&str> = Vec::new();
    for (name, _) in left.iter().chain(right) {
        if !names.contains(&name.as_str()) {
            names.push(name);
        }
    }
    let find = |column: &'a [(String, Outcome)], name: &str| column.iter().find(|(n, _)| n == name).map(|(_, o)| o);
    names.into_iter().map(|name| (name, find(left, name), find(right, name))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_merge_names_in_first_seen_order() {
        let left = vec![("a".to_string(), Outcome::Pass), ("b".to_string(), Outcome::Fail("x".into()))];
        let right = vec![("b".to_string(), Outcome::Pass), ("c".to_string(), Outcome::Skip("y".into()))];
        let rows = rows(&left, &right);
        let names: Vec<&str> = rows.iter().map(|r| r.0).collect();
        assert_eq!(names, ["a", "b", "c"]);
        assert_eq!(show(rows[0].2), "not run");
        assert_eq!(show(rows[1].1), "FAILED (x)");
        assert_eq!(show(rows[2].2), "skipped (y)");
        assert_eq!(show(rows[1].2), "ok");
    }
}
