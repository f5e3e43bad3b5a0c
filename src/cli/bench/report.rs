//! What a bench run found: each measurement, the ratios of tranche to the
//! baselines and limits beside it, the targets, as a table, JSON and
//! Markdown.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use super::cpu::Cpu;

/// What a measurement stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A limit of the machine: the table read alone, a broker fed alone.
    Limit,
    /// A system tranche replaces (the sequential and the modulo workers).
    Baseline,
    /// tranche itself.
    Tranche,
    /// A tool a user would pick instead of tranche (a job queue).
    Peer,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Limit => "limit",
            Kind::Baseline => "baseline",
            Kind::Tranche => "tranche",
            Kind::Peer => "peer",
        }
    }
}

/// One measured rate.
#[derive(Clone, Debug, Serialize)]
pub struct Measurement {
    /// The comparison it belongs to ("PostgreSQL read", "RabbitMQ", ...).
    pub group: String,
    /// What ran.
    pub name: String,
    /// Limit, baseline or tranche.
    pub kind: Kind,
    /// Rows the measurement is about.
    pub rows: u64,
    /// Rows actually processed; fewer than `rows` when a slow baseline
    /// was stopped at its time budget and its time projected.
    pub measured_rows: u64,
    /// Seconds for `rows` (measured, or projected from `measured_rows`).
    pub seconds: f64,
    /// Rows per second.
    pub rows_per_s: f64,
    /// Whether `seconds` is projected from part of the rows.
    pub projected: bool,
    /// The CPU it took, when measured: of the process doing the work and
    /// of the PostgreSQL server.
    pub cpu: Option<Cpu>,
    /// What else to know about it (a peer's enqueue time).
    pub note: Option<String>,
}

impl Measurement {
    /// A measurement of `measured` rows in `seconds` out of `rows`;
    /// projected to all of them when fewer were processed.
    pub fn new(
        group: &str,
        name: &str,
        kind: Kind,
        rows: u64,
        measured: u64,
        seconds: f64,
    ) -> Self {
        let rate = measured as f64 / seconds.max(1e-9);
        let projected = measured < rows;
        Self {
            group: group.to_owned(),
            name: name.to_owned(),
            kind,
            rows,
            measured_rows: measured,
            seconds: if projected {
                rows as f64 / rate.max(1e-9)
            } else {
                seconds
            },
            rows_per_s: rate,
            projected,
            cpu: None,
            note: None,
        }
    }

    /// The measurement with the CPU it took.
    pub fn with_cpu(mut self, cpu: Cpu) -> Self {
        self.cpu = Some(cpu);
        self
    }

    /// CPU seconds per 1,000,000 rows of the work's process (when it
    /// spent enough to tell, as for the two below).
    pub fn cpu_per_m_rows(&self) -> Option<f64> {
        self.cpu.and_then(|c| self.per_m_rows(c.process.total_s()))
    }

    /// Of that, system time.
    pub fn system_per_m_rows(&self) -> Option<f64> {
        self.cpu.and_then(|c| self.per_m_rows(c.process.system_s))
    }

    /// PostgreSQL's CPU seconds per 1,000,000 rows, when measured.
    pub fn postgres_per_m_rows(&self) -> Option<f64> {
        self.cpu
            .and_then(|c| c.postgres)
            .and_then(|p| self.per_m_rows(p.total_s()))
    }

    /// `seconds` per 1,000,000 rows; `None` under five clock ticks of
    /// `/proc` (50 ms), where a figure per million rows would be noise.
    fn per_m_rows(&self, seconds: f64) -> Option<f64> {
        (seconds >= 0.05).then(|| seconds * 1e6 / self.measured_rows.max(1) as f64)
    }
}

/// CPU seconds per 1M rows as a table cell: `-` when not measured.
fn cpu_cell(s: Option<f64>) -> String {
    s.map_or("-".into(), |s| format!("{s:.2}"))
}

/// Peak resident memory of a `tranche run` process.
#[derive(Clone, Debug, Serialize)]
pub struct MemoryMeasurement {
    /// Rows in the table it walked.
    pub rows: u64,
    /// Its peak resident set (VmHWM), bytes.
    pub peak_rss_bytes: u64,
    /// Seconds the run took.
    pub seconds: f64,
}

/// tranche's rate over another measurement's in the same group.
#[derive(Clone, Debug, Serialize)]
pub struct Ratio {
    /// The group.
    pub group: String,
    /// The tranche measurement.
    pub tranche: String,
    /// The one it is compared with.
    pub against: String,
    /// tranche rows/s over theirs.
    pub ratio: f64,
}

/// A target tranche is held to, and whether this run met it.
#[derive(Clone, Debug, Serialize)]
pub struct Target {
    /// What is measured.
    pub what: String,
    /// What was wanted.
    pub wanted: String,
    /// What was measured.
    pub measured: String,
    /// Whether it was met (`None` when the measurement was skipped).
    pub met: Option<bool>,
}

/// A whole bench run.
#[derive(Clone, Debug, Default, Serialize)]
pub struct BenchReport {
    /// The machine and the settings: database, brokers, page size, windows,
    /// durability.
    pub settings: BTreeMap<String, String>,
    /// Every rate measured, in order.
    pub measurements: Vec<Measurement>,
    /// Peak memory per table size.
    pub memory: Vec<MemoryMeasurement>,
    /// Ratios of tranche to the others of its group.
    pub ratios: Vec<Ratio>,
    /// The targets and whether they were met.
    pub targets: Vec<Target>,
    /// Measurements that could not run, with the reason.
    pub skipped: Vec<(String, String)>,
}

impl BenchReport {
    /// Computes the ratios of every tranche measurement to every other
    /// measurement of its group.
    pub fn compute_ratios(&mut self) {
        self.ratios.clear();
        for t in self.measurements.iter().filter(|m| m.kind == Kind::Tranche) {
            for o in self
                .measurements
                .iter()
                .filter(|o| o.group == t.group && o.kind != Kind::Tranche)
            {
                self.ratios.push(Ratio {
                    group: t.group.clone(),
                    tranche: t.name.clone(),
                    against: o.name.clone(),
                    ratio: t.rows_per_s / o.rows_per_s.max(1e-9),
                });
            }
        }
    }

    /// The measurement named `name` in `group`, if it ran.
    pub fn find(&self, group: &str, name: &str) -> Option<&Measurement> {
        self.measurements
            .iter()
            .find(|m| m.group == group && m.name == name)
    }

    /// The report as a Markdown document: settings, rates, ratios, memory,
    /// targets.
    pub fn to_markdown(&self) -> String {
        let mut out = String::from("# tranche bench\n\n## Settings\n\n");
        for (k, v) in &self.settings {
            let _ = writeln!(out, "- **{k}**: {v}");
        }
        out.push_str("\n## Rows per second\n\n");
        out.push_str("CPU columns: CPU seconds per 1,000,000 rows of the process doing the work (its system time in brackets) and of the PostgreSQL server.\n\n");
        out.push_str("| group | measurement | kind | rows | seconds | rows/s | CPU s / 1M rows | PostgreSQL CPU s / 1M rows |\n");
        out.push_str("|---|---|---|---:|---:|---:|---:|---:|\n");
        for m in &self.measurements {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {}{}{} | {:.0} | {}{} | {} |",
                m.group,
                m.name,
                m.kind.label(),
                m.rows,
                seconds(m.seconds),
                if m.projected {
                    format!(" (projected from {} rows)", m.measured_rows)
                } else {
                    String::new()
                },
                m.note.as_ref().map_or(String::new(), |n| format!("; {n}")),
                m.rows_per_s,
                cpu_cell(m.cpu_per_m_rows()),
                m.system_per_m_rows()
                    .map_or(String::new(), |s| format!(" ({s:.2})")),
                cpu_cell(m.postgres_per_m_rows()),
            );
        }
        out.push_str("\n## tranche against the others\n\n| group | tranche | against | ratio |\n|---|---|---|---:|\n");
        for r in &self.ratios {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} |",
                r.group,
                r.tranche,
                r.against,
                ratio(r.ratio)
            );
        }
        if !self.memory.is_empty() {
            out.push_str("\n## Peak resident memory (`tranche run`, null sink, PostgreSQL)\n\n| rows | peak RSS | seconds |\n|---:|---:|---:|\n");
            for m in &self.memory {
                let _ = writeln!(
                    out,
                    "| {} | {:.1} MiB | {:.1} |",
                    m.rows,
                    m.peak_rss_bytes as f64 / 1048576.0,
                    m.seconds
                );
            }
        }
        out.push_str("\n## Targets\n\n| what | wanted | measured | met |\n|---|---|---|---|\n");
        for t in &self.targets {
            let met = match t.met {
                Some(true) => "yes",
                Some(false) => "**no**",
                None => "-",
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {met} |",
                t.what, t.wanted, t.measured
            );
        }
        if !self.skipped.is_empty() {
            out.push_str("\n## Skipped\n\n");
            for (what, why) in &self.skipped {
                let _ = writeln!(out, "- {what}: {why}");
            }
        }
        out
    }

    /// The rates and ratios as a plain-text table for the terminal.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{:<26} {:<44} {:>9} {:>10} {:>12} {:>12} {:>8} {:>8} {:>8}",
            "group", "measurement", "kind", "rows", "seconds", "rows/s", "CPU", "sys", "PG CPU"
        );
        for m in &self.measurements {
            let _ = writeln!(
                out,
                "{:<26} {:<44} {:>9} {:>10} {:>11}{} {:>12.0} {:>8} {:>8} {:>8}",
                m.group,
                m.name,
                m.kind.label(),
                m.rows,
                seconds(m.seconds),
                if m.projected { "*" } else { " " },
                m.rows_per_s,
                cpu_cell(m.cpu_per_m_rows()),
                cpu_cell(m.system_per_m_rows()),
                cpu_cell(m.postgres_per_m_rows()),
            );
        }
        if self.measurements.iter().any(|m| m.projected) {
            out.push_str("* projected from the rows done within the time budget\n");
        }
        out.push_str("CPU, sys, PG CPU: CPU seconds per 1,000,000 rows of the process doing the work, its system time, and the PostgreSQL server's\n");
        for m in self.measurements.iter().filter(|m| m.note.is_some()) {
            let _ = writeln!(
                out,
                "{} / {}: {}",
                m.group,
                m.name,
                m.note.as_deref().unwrap_or_default()
            );
        }
        out.push('\n');
        for r in &self.ratios {
            let _ = writeln!(
                out,
                "{:<26} {} / {}: {}",
                r.group,
                r.tranche,
                r.against,
                ratio(r.ratio)
            );
        }
        for m in &self.memory {
            let _ = writeln!(
                out,
                "memory: {} rows, peak RSS {:.1} MiB ({:.1} s)",
                m.rows,
                m.peak_rss_bytes as f64 / 1048576.0,
                m.seconds
            );
        }
        out.push('\n');
        for t in &self.targets {
            let met = match t.met {
                Some(true) => "met",
                Some(false) => "NOT MET",
                None => "for reference",
            };
            let _ = writeln!(
                out,
                "target {}: wanted {}, measured {} - {met}",
                t.what, t.wanted, t.measured
            );
        }
        for (what, why) in &self.skipped {
            let _ = writeln!(out, "skipped {what}: {why}");
        }
        out
    }
}

fn seconds(s: f64) -> String {
    if s < 10.0 {
        format!("{s:.3}")
    } else {
        format!("{s:.1}")
    }
}

fn ratio(r: f64) -> String {
    if r >= 10.0 {
        format!("{r:.0}x")
    } else {
        format!("{r:.2}x")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stopped_baseline_is_projected_to_all_its_rows() {
        let m = Measurement::new("g", "s1", Kind::Baseline, 1000, 250, 5.0);
        assert!(m.projected);
        assert_eq!(m.rows_per_s, 50.0);
        assert_eq!(m.seconds, 20.0);
        let full = Measurement::new("g", "t", Kind::Tranche, 1000, 1000, 0.5);
        assert!(!full.projected);
        assert_eq!(full.seconds, 0.5);
    }

    #[test]
    fn ratios_compare_tranche_with_its_own_group_only() {
        let mut r = BenchReport {
            measurements: vec![
                Measurement::new("a", "raw", Kind::Limit, 100, 100, 1.0),
                Measurement::new("a", "s1", Kind::Baseline, 100, 10, 1.0),
                Measurement::new("a", "tranche", Kind::Tranche, 100, 100, 2.0),
                Measurement::new("b", "raw", Kind::Limit, 100, 100, 0.1),
            ],
            ..BenchReport::default()
        };
        r.compute_ratios();
        let got: Vec<_> = r
            .ratios
            .iter()
            .map(|x| (x.against.as_str(), x.ratio))
            .collect();
        assert_eq!(got, vec![("raw", 0.5), ("s1", 5.0)]);
        let md = r.to_markdown();
        assert!(md.contains("| a | tranche | raw | 0.50x |"), "{md}");
    }
}
