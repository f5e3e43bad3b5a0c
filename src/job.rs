//! What a job is: a source to read, a processor that turns rows into
//! messages, a sink that delivers them, and a partitioning strategy; with
//! the parts a source is made of and the rows it reads.

use std::fmt;
use std::sync::Arc;

pub use crate::model::{
    Condition, Cursor, Datum, FilterValue, Ident, KeyRange, Op, OrderKind, Poison, Scope, Source,
    SourceRow, Strategy, Throttle, DATE_INFINITY, DATE_NEG_INFINITY, TIMESTAMP_INFINITY,
    TIMESTAMP_NEG_INFINITY,
};
use crate::model::{ConfigError, Message};
use crate::sink::Sink;
pub use crate::store::{IdentifyScopes, Scopes};

/// Turns a row into a message, skips it (`Ok(None)`) or rejects it as poison.
pub trait Processor: Send + Sync + 'static {
    /// Processes one row of `scope`.
    fn process(&self, row: &SourceRow, scope: &Scope) -> Result<Option<Message>, Poison>;
}

impl<F> Processor for F
where
    F: Fn(&SourceRow, &Scope) -> Result<Option<Message>, Poison> + Send + Sync + 'static,
{
    fn process(&self, row: &SourceRow, scope: &Scope) -> Result<Option<Message>, Poison> {
        self(row, scope)
    }
}

/// A registered job: what to read, how to turn it into messages, where to
/// send them and how to split the work.
#[derive(Clone)]
pub struct Job {
    pub(crate) name: String,
    pub(crate) source: Source,
    pub(crate) scopes: Scopes,
    pub(crate) strategy: Strategy,
    pub(crate) processor: Arc<dyn Processor>,
    pub(crate) sink: Arc<dyn Sink>,
    pub(crate) params: serde_json::Value,
    pub(crate) run_key: Option<String>,
    pub(crate) throttle: Throttle,
}

impl fmt::Debug for Job {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Job")
            .field("name", &self.name)
            .field("source", &self.source)
            .field("scopes", &self.scopes)
            .field("strategy", &self.strategy)
            .field("sink", &self.sink.name())
            .field("run_key", &self.run_key)
            .field("throttle", &self.throttle)
            .finish()
    }
}

impl Job {
    /// Starts building a job called `name` (letters, digits, `_`, `-`, `.`).
    pub fn builder(name: &str) -> JobBuilder {
        JobBuilder {
            name: name.to_owned(),
            source: None,
            scopes: Scopes::Whole,
            strategy: Strategy::Range { partitions: 8 },
            processor: None,
            sink: None,
            params: serde_json::Value::Null,
            run_key: None,
            throttle: Throttle::default(),
        }
    }

    /// The job's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The job's source.
    pub fn source(&self) -> &Source {
        &self.source
    }

    /// The job's strategy.
    pub fn strategy(&self) -> Strategy {
        self.strategy
    }

    /// How identification finds the run's scopes.
    pub fn scopes(&self) -> &Scopes {
        &self.scopes
    }

    /// The throttle each new run of the job starts with (see
    /// [`JobBuilder::throttle`]).
    pub fn throttle(&self) -> &Throttle {
        &self.throttle
    }

    /// The run key, if one was given (see [`JobBuilder::run_key`]).
    pub fn run_key(&self) -> Option<&str> {
        self.run_key.as_deref()
    }

    /// The same job under another run key: how the scheduler names each
    /// tick's run, and how a host names a one-time run.
    pub fn with_run_key(mut self, key: impl Into<String>) -> Result<Job, ConfigError> {
        let key = key.into();
        validate_run_key(&key)?;
        self.run_key = Some(key);
        Ok(self)
    }
}

/// Checks a run key: 1 to 200 printable characters.
pub(crate) fn validate_run_key(key: &str) -> Result<(), ConfigError> {
    if key.is_empty() || key.len() > 200 || key.chars().any(char::is_control) {
        return Err(ConfigError::new(
            "job.run_key",
            format!("{key:?} must be 1 to 200 printable characters"),
        ));
    }
    Ok(())
}

/// Checks a job name: 1 to 128 letters, digits, `_`, `-` or `.`.
pub(crate) fn validate_job_name(name: &str) -> Result<(), ConfigError> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(ConfigError::new(
            "job.name",
            format!("{name:?} must be 1 to 128 letters, digits, '_', '-' or '.'"),
        ))
    }
}

/// Builder of a [`Job`]; [`JobBuilder::build`] validates it.
pub struct JobBuilder {
    name: String,
    source: Option<Source>,
    scopes: Scopes,
    strategy: Strategy,
    processor: Option<Arc<dyn Processor>>,
    sink: Option<Arc<dyn Sink>>,
    params: serde_json::Value,
    run_key: Option<String>,
    throttle: Throttle,
}

impl JobBuilder {
    /// The table to read.
    pub fn source(mut self, source: Source) -> Self {
        self.source = Some(source);
        self
    }

    /// How identification finds scopes (default: the whole source).
    pub fn scopes(mut self, scopes: Scopes) -> Self {
        self.scopes = scopes;
        self
    }

    /// The partitioning strategy (default: 8 range partitions).
    pub fn strategy(mut self, strategy: Strategy) -> Self {
        self.strategy = strategy;
        self
    }

    /// Row to message.
    pub fn processor(mut self, processor: impl Processor) -> Self {
        self.processor = Some(Arc::new(processor));
        self
    }

    /// Where messages go.
    pub fn sink(mut self, sink: Arc<dyn Sink>) -> Self {
        self.sink = Some(sink);
        self
    }

    /// Parameters recorded with each run (shown in its history).
    pub fn params(mut self, params: serde_json::Value) -> Self {
        self.params = params;
        self
    }

    /// Names the run this job belongs to. Every instance started with the
    /// same key joins the same run, whatever its state: one arriving after
    /// the run ended gets its report and does nothing again. Without a key,
    /// an instance joins the job's active run or, when none is active,
    /// starts a new one.
    pub fn run_key(mut self, key: impl Into<String>) -> Self {
        self.run_key = Some(key.into());
        self
    }

    /// The throttle each new run of the job starts with (default: none).
    /// A run stores its own, which `tranche throttle` or
    /// [`Operator::set_throttle`](crate::control::Operator::set_throttle)
    /// change while it runs; an instance joining a run obeys the run's.
    pub fn throttle(mut self, throttle: Throttle) -> Self {
        self.throttle = throttle;
        self
    }

    /// Validates and builds the job.
    pub fn build(self) -> Result<Job, ConfigError> {
        validate_job_name(&self.name)?;
        if let Some(key) = &self.run_key {
            validate_run_key(key)?;
        }
        let source = self
            .source
            .ok_or_else(|| ConfigError::new("job.source", "a source is required"))?;
        self.strategy.validate()?;
        self.throttle.validate()?;
        Ok(Job {
            name: self.name,
            source,
            scopes: self.scopes,
            strategy: self.strategy,
            processor: self
                .processor
                .ok_or_else(|| ConfigError::new("job.processor", "a processor is required"))?,
            sink: self
                .sink
                .ok_or_else(|| ConfigError::new("job.sink", "a sink is required"))?,
            params: self.params,
            run_key: self.run_key,
            throttle: self.throttle,
        })
    }
}
