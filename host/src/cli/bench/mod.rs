//! `charm-host-bench bench [--quick] [--json]` (feature `bench`): every performance figure of the project, each
//! next to a baseline measured in the same run (so ratios hold on a noisy machine) and
//! its target. Figures, never assertions: the command fails only if a measurement cannot
//! be taken. Run it from a source checkout: it builds its fixture charms with cargo.

mod agents;
mod calls;
mod cold_start;
mod etcd;
mod lease;
mod memory;
mod processes;
mod renewals;
mod scale;
mod unit_data;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::BenchArgs;

/// One measured figure.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Figure {
    /// What was measured.
    pub name: String,
    /// The measurement (`null` in JSON for a skipped row: see `skipped`).
    #[serde(deserialize_with = "value_or_nan")]
    pub value: f64,
    /// Its unit (`us`, `ns`, `ms`, `ops/s`, `KiB`, ...).
    pub unit: String,
    /// The baseline measured in the same run, in the same unit, if there is one.
    pub baseline: Option<f64>,
    /// The value as a multiple of the baseline (value / baseline, for times, sizes and
    /// rates alike), if there is a baseline: every target is written in this direction.
    pub ratio: Option<f64>,
    /// The target, in words.
    pub target: Option<String>,
    /// Whether the target is met, if there is one.
    pub met: Option<bool>,
    /// Why the figure could not be measured on this machine, for a skipped row.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
}

/// A figure's value: a number, or `null` (a skipped row's) read back as NaN.
fn value_or_nan<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(deserializer)?.unwrap_or(f64::NAN))
}

impl Figure {
    fn new(name: impl Into<String>, value: f64, unit: &str) -> Self {
        Self {
            name: name.into(),
            value,
            unit: unit.to_owned(),
            baseline: None,
            ratio: None,
            target: None,
            met: None,
            skipped: None,
        }
    }

    /// A row for a figure this machine cannot measure, saying why.
    fn skipped(name: impl Into<String>, reason: impl Into<String>) -> Self {
        Self { skipped: Some(reason.into()), ..Self::new(name, f64::NAN, "") }
    }

    /// Adds a baseline measured in the same run, in the same unit; the ratio is
    /// value / baseline.
    fn against(mut self, baseline: f64) -> Self {
        self.baseline = Some(baseline);
        self.ratio = Some(self.value / baseline);
        self
    }

    /// Adds a target and whether it is met.
    fn target(mut self, target: impl Into<String>, met: bool) -> Self {
        self.target = Some(target.into());
        self.met = Some(met);
        self
    }
}

/// Where fixture charms live, relative to the source checkout this binary was built from.
fn source_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_owned).unwrap_or_default()
}

/// Builds a fixture charm crate from the source checkout.
fn fixture(crate_dir: &str) -> anyhow::Result<PathBuf> {
    let dir = source_dir().join(crate_dir);
    anyhow::ensure!(dir.is_dir(), "{} is missing: run `charm-host-bench bench` from a source checkout", dir.display());
    Ok(crate::charm_build::build_charm(&dir, crate::charm_build::Progress::Quiet)?)
}

fn median(samples: &mut [Duration]) -> Duration {
    percentile(samples, 0.5)
}

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    samples[((samples.len() - 1) as f64 * p).round() as usize]
}

/// Measures one section (`quick` for a smoke run).
type Measure = fn(bool) -> anyhow::Result<Vec<Figure>>;

/// The sections measured in this process, in order: name (for `--only`), what it measures,
/// and how. [`SECTIONS_IN_CHILD`] come last, apart (see [`bench`]).
const SECTIONS: [(&str, &str, Measure); 8] = [
    ("calls", "hook dispatch and host calls", calls::figures),
    ("lease", "the lease engine", lease::figures),
    ("renewals", "renewals during a leader-set storm", renewals::figures),
    ("etcd", "the etcd store", etcd::figures),
    ("processes", "handovers between agent processes", processes::figures),
    ("agents", "handovers and fan-out", agents::figures),
    ("unit-data", "unit data, minions to the leader", unit_data::figures),
    ("scale", "many applications on one etcd cluster, and handover distributions", scale::figures),
];

/// The sections measured last, each in a process of its own (see [`bench`]).
const SECTIONS_IN_CHILD: [(&str, &str, Measure); 2] = [
    ("cold-start", "the cold start of ten thousand units", cold_start::figures),
    ("memory", "memory per idle unit", memory::figures),
];

/// Every section name `--only` accepts.
pub const SECTION_NAMES: [&str; 10] =
    ["calls", "lease", "renewals", "etcd", "processes", "agents", "unit-data", "scale", "cold-start", "memory"];

pub fn bench(args: BenchArgs) -> anyhow::Result<ExitCode> {
    let quick = args.quick;
    let progress = |section: &str| {
        if !args.json {
            eprintln!("measuring {section}...");
        }
    };
    let wanted = |section: &str| args.only.is_empty() || args.only.iter().any(|s| s == section);
    let mut figures = Vec::new();
    for (section, what, measure) in SECTIONS {
        if wanted(section) {
            progress(what);
            figures.extend(measure(quick)?);
        }
    }
    for (section, what, measure) in SECTIONS_IN_CHILD {
        if wanted(section) {
            progress(what);
            if args.only == [section] {
                figures.extend(measure(quick)?);
            } else {
                // In a process of its own, and last: peak and resident-set figures must not
                // include what other sections left behind, and the kernel's clean-up after
                // ten thousand units must not slow the other sections.
                figures.extend(section_in_child(section, quick)?);
            }
        }
    }
    if args.json {
        outln!("{}", json!({ "figures": figures }));
    } else {
        out!("{}", table(&figures));
        if quick || cfg!(debug_assertions) {
            outln!("(a smoke run: use a release build without --quick for representative figures)");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs `section` in a fresh `charm-host-bench bench --only SECTION --json`.
fn section_in_child(section: &str, quick: bool) -> anyhow::Result<Vec<Figure>> {
    let mut command = std::process::Command::new(std::env::current_exe()?);
    command.args(["bench", "--only", section, "--json"]);
    if quick {
        command.arg("--quick");
    }
    let output = command.output()?;
    anyhow::ensure!(
        output.status.success(),
        "the {section} measurement failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    #[derive(serde::Deserialize)]
    struct Report {
        figures: Vec<Figure>,
    }
    let report: Report = serde_json::from_slice(&output.stdout)?;
    Ok(report.figures)
}

fn number(value: f64) -> String {
    if value >= 1000.0 {
        format!("{value:.0}")
    } else if value >= 10.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.2}")
    }
}

/// A ratio with two significant digits at least (a hundredth of the baseline is not 0.00x).
fn ratio_text(ratio: f64) -> String {
    if ratio.is_finite() && ratio > 0.0 && ratio < 1.0 {
        let decimals = (1.0 - ratio.log10().floor()).clamp(2.0, 6.0) as usize;
        format!("{ratio:.decimals$}x")
    } else {
        format!("{}x", number(ratio))
    }
}

fn table(figures: &[Figure]) -> String {
    let width = figures.iter().map(|f| f.name.len()).max().unwrap_or(10);
    let mut out = format!(
        "{:<width$}  {:>14}  {:>14}  {:>10}  {:<24} {}\n",
        "figure", "value", "baseline", "value/base", "target", "met"
    );
    for f in figures {
        if let Some(reason) = &f.skipped {
            out.push_str(&format!("{:<width$}  skipped: {reason}\n", f.name));
            continue;
        }
        let value = format!("{} {}", number(f.value), f.unit);
        let baseline = f.baseline.map(|b| format!("{} {}", number(b), f.unit)).unwrap_or_default();
        let ratio = f.ratio.map(ratio_text).unwrap_or_default();
        let met = match f.met {
            Some(true) => "yes",
            Some(false) => "NO",
            None => "",
        };
        out.push_str(&format!(
            "{:<width$}  {value:>14}  {baseline:>14}  {ratio:>10}  {:<24} {met}\n",
            f.name,
            f.target.as_deref().unwrap_or("")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_ratio_is_the_value_over_its_baseline_as_targets_are_written() {
        // A call that costs twice its floor reads 2x, so "<= 1.3x its floor" reads as unmet.
        let figure = super::Figure::new("call", 116.5, "ns").against(56.0);
        assert!(figure.ratio.is_some_and(|r| r > 2.0 && r < 2.1));
        assert_eq!(super::ratio_text(0.0042), "0.0042x");
        assert_eq!(super::ratio_text(0.48), "0.48x");
        assert_eq!(super::ratio_text(2.08), "2.08x");
    }

    #[test]
    fn every_section_can_be_picked_by_name() {
        let names: Vec<&str> =
            super::SECTIONS.iter().chain(&super::SECTIONS_IN_CHILD).map(|(name, _, _)| *name).collect();
        assert_eq!(names, super::SECTION_NAMES);
    }
}
