//! A run's throttles: caps and a health gate that every instance obeys,
//! stored on the run and changeable while it runs.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// The largest page a throttle may ask for (the same bound as
/// `runtime.page_size`).
pub const MAX_PAGE_SIZE: usize = 100_000;

/// How hard a run may press on the database and the sink. Every field is
/// off when unset.
///
/// It is the `[throttle]` table of a job file (unknown fields refused,
/// durations with their unit) and seeds each new run of the job; once a
/// run exists, its stored throttle is the one obeyed, and `tranche
/// throttle` (or [`crate::control::Operator::set_throttle`]) changes it for
/// every instance within a poll interval.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct Throttle {
    /// Rows delivered per second by all instances of the run together.
    pub max_rows_per_s: Option<u64>,
    /// Partitions of the run claimed at once, across all instances.
    pub max_active_partitions: Option<u32>,
    /// Adapt each worker's page size so that a page (read, deliver,
    /// checkpoint) takes about this long, in milliseconds.
    pub target_page_ms: Option<u64>,
    /// The smallest page the adaptation may choose (default 10).
    pub min_page_size: Option<usize>,
    /// The largest page the adaptation may choose (default 100000).
    pub max_page_size: Option<usize>,
    /// SQL run on the store's database returning one number; while it is
    /// above `health_max`, no page starts.
    pub health_query: Option<String>,
    /// The largest healthy value of `health_query`.
    pub health_max: Option<f64>,
    /// How often the health is checked (default 5 s).
    #[serde(
        with = "super::duration::serde_opt_text",
        skip_serializing_if = "Option::is_none"
    )]
    pub health_interval: Option<Duration>,
    /// PostgreSQL only: no page starts while a standby's replay lag (from
    /// `pg_stat_replication`) is above this many milliseconds. No standby
    /// means no lag.
    pub max_replication_lag_ms: Option<u64>,
}

impl Throttle {
    /// The default health check interval.
    pub const DEFAULT_HEALTH_INTERVAL: Duration = Duration::from_secs(5);

    /// With a cap on rows per second for the whole run.
    pub fn with_max_rows_per_s(mut self, rows: u64) -> Self {
        self.max_rows_per_s = Some(rows);
        self
    }

    /// With a cap on partitions claimed at once across all instances.
    pub fn with_max_active_partitions(mut self, partitions: u32) -> Self {
        self.max_active_partitions = Some(partitions);
        self
    }

    /// With pages that adapt toward `ms` milliseconds each, between `min`
    /// and `max` rows.
    pub fn with_target_page_ms(mut self, ms: u64, min: usize, max: usize) -> Self {
        self.target_page_ms = Some(ms);
        self.min_page_size = Some(min);
        self.max_page_size = Some(max);
        self
    }

    /// With a health gate: no page starts while `sql` returns more than
    /// `max`, checked every `interval`.
    pub fn with_health_query(
        mut self,
        sql: impl Into<String>,
        max: f64,
        interval: Duration,
    ) -> Self {
        self.health_query = Some(sql.into());
        self.health_max = Some(max);
        self.health_interval = Some(interval);
        self
    }

    /// With a gate on PostgreSQL replication lag, in milliseconds.
    pub fn with_max_replication_lag_ms(mut self, ms: u64) -> Self {
        self.max_replication_lag_ms = Some(ms);
        self
    }

    /// Whether any health check is set.
    pub fn has_health_check(&self) -> bool {
        self.health_query.is_some() || self.max_replication_lag_ms.is_some()
    }

    /// How often the health is checked.
    pub fn health_interval(&self) -> Duration {
        self.health_interval
            .unwrap_or(Self::DEFAULT_HEALTH_INTERVAL)
    }

    /// The page size bounds of the adaptation, `(min, max)`.
    pub fn page_size_bounds(&self) -> (usize, usize) {
        (
            self.min_page_size.unwrap_or(10),
            self.max_page_size.unwrap_or(MAX_PAGE_SIZE),
        )
    }

    /// Checks every field, naming the first bad one (as `throttle.<field>`).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let field = |f: &str| format!("throttle.{f}");
        if self.max_rows_per_s == Some(0) {
            return Err(ConfigError::new(
                field("max_rows_per_s"),
                "must be at least 1",
            ));
        }
        if self.max_active_partitions == Some(0) {
            return Err(ConfigError::new(
                field("max_active_partitions"),
                "must be at least 1",
            ));
        }
        if self.target_page_ms == Some(0) {
            return Err(ConfigError::new(
                field("target_page_ms"),
                "must be at least 1",
            ));
        }
        for (name, v) in [
            ("min_page_size", self.min_page_size),
            ("max_page_size", self.max_page_size),
        ] {
            if let Some(v) = v {
                if v == 0 || v > MAX_PAGE_SIZE {
                    return Err(ConfigError::new(
                        field(name),
                        format!("must be 1 to {MAX_PAGE_SIZE}"),
                    ));
                }
            }
        }
        let (min, max) = self.page_size_bounds();
        if min > max {
            return Err(ConfigError::new(
                field("min_page_size"),
                format!("must be at most max_page_size ({max})"),
            ));
        }
        match (&self.health_query, self.health_max) {
            (Some(q), Some(m)) => {
                if q.trim().is_empty() {
                    return Err(ConfigError::new(field("health_query"), "must not be empty"));
                }
                if !m.is_finite() {
                    return Err(ConfigError::new(
                        field("health_max"),
                        "must be a finite number",
                    ));
                }
            }
            (Some(_), None) => {
                return Err(ConfigError::new(
                    field("health_max"),
                    "is required with health_query (the largest healthy value)",
                ))
            }
            (None, Some(_)) => {
                return Err(ConfigError::new(
                    field("health_query"),
                    "is required with health_max (SQL returning one number)",
                ))
            }
            (None, None) => {}
        }
        if self.health_interval.is_some_and(|d| d.is_zero()) {
            return Err(ConfigError::new(
                field("health_interval"),
                "must be positive",
            ));
        }
        Ok(())
    }
}

/// The throttle's set fields as `name=value` pairs, or `none`.
impl std::fmt::Display for Throttle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let fields = [
            ("max_rows_per_s", self.max_rows_per_s.map(|v| v.to_string())),
            (
                "max_active_partitions",
                self.max_active_partitions.map(|v| v.to_string()),
            ),
            ("target_page_ms", self.target_page_ms.map(|v| v.to_string())),
            ("min_page_size", self.min_page_size.map(|v| v.to_string())),
            ("max_page_size", self.max_page_size.map(|v| v.to_string())),
            (
                "health_query",
                self.health_query.as_ref().map(|q| format!("{q:?}")),
            ),
            ("health_max", self.health_max.map(|v| v.to_string())),
            (
                "health_interval",
                self.health_interval.map(super::duration::format),
            ),
            (
                "max_replication_lag_ms",
                self.max_replication_lag_ms.map(|v| v.to_string()),
            ),
        ];
        let set: Vec<String> = fields
            .into_iter()
            .filter_map(|(name, value)| value.map(|v| format!("{name}={v}")))
            .collect();
        if set.is_empty() {
            f.write_str("none")
        } else {
            f.write_str(&set.join(" "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_throttle_reads_from_toml_and_names_its_bad_fields() {
        let t: Throttle = toml::from_str(
            "max_rows_per_s = 2000\ntarget_page_ms = 200\nhealth_query = \"SELECT 1\"\n\
             health_max = 0.5\nhealth_interval = \"2s\"",
        )
        .unwrap();
        assert_eq!(t.max_rows_per_s, Some(2000));
        assert_eq!(t.health_interval(), Duration::from_secs(2));
        t.validate().unwrap();
        let json = serde_json::to_string(&t).unwrap();
        assert_eq!(serde_json::from_str::<Throttle>(&json).unwrap(), t);

        let bad = Throttle {
            min_page_size: Some(500),
            max_page_size: Some(100),
            ..Throttle::default()
        };
        assert_eq!(bad.validate().unwrap_err().field, "throttle.min_page_size");
        let bad = Throttle {
            health_query: Some("SELECT 1".into()),
            ..Throttle::default()
        };
        assert_eq!(bad.validate().unwrap_err().field, "throttle.health_max");
        let bad = Throttle {
            max_rows_per_s: Some(0),
            ..Throttle::default()
        };
        assert_eq!(bad.validate().unwrap_err().field, "throttle.max_rows_per_s");
        assert!(toml::from_str::<Throttle>("max_rows = 1").is_err());
        assert_eq!(Throttle::default().to_string(), "none");
        assert_eq!(
            t.to_string(),
            "max_rows_per_s=2000 target_page_ms=200 health_query=\"SELECT 1\" health_max=0.5 \
             health_interval=2s"
        );
    }
}
