//! `charm-host history --state DIR | --store URL [--app APP] [--limit N] [--json]`: each
//! application's tenures, newest first: unit, term, when it started and ended, how it ended,
//! and the leaderless gap before it (the time from the previous tenure's end to its start).

use std::process::ExitCode;
use std::time::SystemTime;

use crate::leadership::{HISTORY_LIMIT, Tenure};
use crate::names::AppName;

use super::HistoryArgs;
use super::output::for_terminal;

/// A tenure as `history --json` prints it: its fields, how long it lasted, and the gap.
#[derive(serde::Serialize)]
struct Shown<'a> {
    #[serde(flatten)]
    tenure: &'a Tenure,
    /// How long it lasted (so far, if it is still open).
    lasted_seconds: f64,
    /// The time without a leader before it: from the end of the tenure before it (older
    /// ones not shown or pruned: `null`).
    gap_before_seconds: Option<f64>,
}

/// The gap before each tenure of `tenures` (newest first, one application's): from the end of
/// the next older one shown to its start; `None` for the oldest, or after one still open.
fn gaps(tenures: &[Tenure]) -> Vec<Option<f64>> {
    let older = tenures.iter().skip(1).map(Some).chain([None]);
    tenures
        .iter()
        .zip(older)
        .map(|(tenure, older)| {
            let ended = older?.ended?;
            Some(tenure.started.duration_since(ended).unwrap_or_default().as_secs_f64())
        })
        .collect()
}

pub async fn history(args: HistoryArgs) -> anyhow::Result<ExitCode> {
    let app =
        args.app.as_deref().map(AppName::new).transpose().map_err(|e| super::UsageError(format!("--app: {e}")))?;
    let opened = args.store.open_read_only(args.state.as_deref()).await?;
    let tenures = opened.store.history(app.as_ref(), args.limit as usize).await?;
    let now = SystemTime::now();
    let mut by_app: Vec<(AppName, Vec<Tenure>)> = Vec::new();
    for tenure in tenures {
        match by_app.last_mut() {
            Some((app, list)) if *app == tenure.app => list.push(tenure),
            _ => by_app.push((tenure.app.clone(), vec![tenure])),
        }
    }
    if args.json {
        let mut shown = Vec::new();
        for (_, tenures) in &by_app {
            for (tenure, gap) in tenures.iter().zip(gaps(tenures)) {
                shown.push(Shown {
                    tenure,
                    lasted_seconds: tenure.duration(now).as_secs_f64(),
                    gap_before_seconds: gap,
                });
            }
        }
        outln!("{}", serde_json::json!({"store": opened.description, "tenures": shown}));
        return Ok(ExitCode::SUCCESS);
    }
    outln!("store: {}", for_terminal(&opened.description));
    if by_app.is_empty() {
        outln!("no tenures recorded{}", app.map(|a| format!(" for {a}")).unwrap_or_default());
    }
    let time = |at: Option<SystemTime>| {
        at.map_or_else(|| "-".to_owned(), |at| humantime::format_rfc3339_millis(at).to_string())
    };
    let seconds = |s: f64| format!("{s:.3}s");
    for (app, tenures) in &by_app {
        outln!("application {app}: latest {} tenures (at most {HISTORY_LIMIT} are kept)", tenures.len());
        let width = tenures.iter().map(|t| t.unit.as_str().len()).max().unwrap_or(0).max(8);
        outln!(
            "  {:>6} {:<width$} {:<24} {:<24} {:>10} {:<14} GAP BEFORE",
            "TERM",
            "UNIT",
            "STARTED",
            "ENDED",
            "LASTED",
            "HOW"
        );
        for (tenure, gap) in tenures.iter().zip(gaps(tenures)) {
            outln!(
                "  {:>6} {:<width$} {:<24} {:<24} {:>10} {:<14} {}",
                tenure.term,
                tenure.unit.as_str(),
                time(Some(tenure.started)),
                time(tenure.ended),
                seconds(tenure.duration(now).as_secs_f64()),
                tenure.how.map_or("(leading)", |how| how.name()),
                gap.map_or_else(|| "-".to_owned(), seconds),
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;
    use crate::leadership::TenureEnd;
    use crate::names::UnitName;

    #[test]
    fn the_gap_runs_from_the_older_tenures_end_to_the_start() {
        let at = |ms| UNIX_EPOCH + Duration::from_millis(ms);
        let tenure = |unit: &str, term, started, ended: Option<u64>| Tenure {
            ended: ended.map(at),
            how: ended.map(|_| TenureEnd::Handover),
            ..Tenure::started(UnitName::new(unit).unwrap(), term, at(started))
        };
        let newest_first =
            [tenure("db/1", 3, 5_250, None), tenure("db/0", 2, 1_000, Some(5_000)), tenure("db/2", 1, 0, None)];
        assert_eq!(
            gaps(&newest_first),
            [Some(0.25), None, None],
            "after an open one, or for the oldest, no gap is known"
        );
    }
}
