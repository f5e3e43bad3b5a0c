//! The error of bad configuration, naming the field at fault.

/// Invalid configuration, naming the offending field. Raised before anything
/// is claimed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration: {field}: {reason}")]
pub struct ConfigError {
    /// Dotted path of the field, e.g. `source.order_column`.
    pub field: String,
    /// What is wrong with it.
    pub reason: String,
}

impl ConfigError {
    /// `field` chose a broker whose cargo feature this build of tranche
    /// was compiled without.
    pub fn feature_off(field: impl Into<String>, feature: &str) -> Self {
        Self::new(
            field,
            format!(
                "{feature:?} needs tranche built with its `{feature}` cargo feature, \
                 which this build leaves out"
            ),
        )
    }

    /// An error for `field`.
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }
}
