//! The claim, lease and checkpoint protocol.
//!
//! ```text
//!                 claim (epoch+1, lease = now+L)
//!   ┌─────────┐ ───────────────────────────────▶ ┌─────────┐  checkpoint(last page)
//!   │ pending │                                  │ claimed │ ──────────────────────▶ done
//!   └─────────┘ ◀─────────────────────────────── └─────────┘
//!        ▲        release (graceful shutdown)      │  │  ▲
//!        │                                         │  │  │ claim by another instance
//!        │                                         │  │  │ once lease < now (takeover,
//!        │                                         │  │  │ epoch+1)
//!        │                                         │  └──┘
//!        │                                         │ attempts exhausted / fatal
//!        │                                         ▼
//!        │                                       failed
//! ```
//!
//! Invariants, all decided by the database and its clock:
//!
//! * **One holder.** A claim is one statement (PostgreSQL:
//!   `UPDATE .. WHERE id = (SELECT .. FOR UPDATE SKIP LOCKED)`; SQLite: the
//!   same inside `BEGIN IMMEDIATE`). It sets `owner`, increments `epoch` and
//!   sets `lease_expires_ms = now + lease`. `now` is the database clock, so
//!   instances with skewed clocks agree on who holds what.
//! * **Fenced writes.** Every write by a holder (checkpoint, complete,
//!   release, failure) says `WHERE id = ? AND owner = ? AND epoch = ? AND
//!   state = 'claimed'`. Zero rows updated means the lease was lost (another
//!   instance took the partition over and bumped the epoch): the holder
//!   stops at once and writes nothing more. A zombie that wakes up after its
//!   lease expired can therefore never move a cursor backwards or forwards.
//! * **Checkpoint after confirmation.** The cursor moves to the last row of a
//!   page only after the sink confirmed every message of that page, so a crash
//!   repeats at most the page in flight (plus the publisher's window), never
//!   loses one.
//! * **Liveness.** The lease keeper renews every held lease each heartbeat
//!   (`heartbeat < lease`); a checkpoint renews it too. A holder that dies
//!   stops renewing, its lease passes, and any instance claims the partition
//!   and resumes from its checkpoint.
//!
//! Lease arithmetic: a partition of a dead holder is claimable `lease` after
//! its last renewal, so it is taken over within `lease + poll interval` of
//! the crash; a live holder is safe as long as one of the
//! `lease / heartbeat` renewals in each lease period gets through.

use std::time::Duration;

use crate::error::ConfigError;

/// Lease timings of an instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseConfig {
    /// How long a claim holds without renewal (default 30 s).
    pub lease: Duration,
    /// How often the lease keeper renews (default 10 s; must be below
    /// `lease`).
    pub heartbeat: Duration,
}

impl Default for LeaseConfig {
    fn default() -> Self {
        Self {
            lease: Duration::from_secs(30),
            heartbeat: Duration::from_secs(10),
        }
    }
}

impl LeaseConfig {
    /// Checks `heartbeat < lease` and that neither is zero.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.lease.is_zero() {
            return Err(ConfigError::new("lease", "must be positive"));
        }
        if self.heartbeat.is_zero() || self.heartbeat >= self.lease {
            return Err(ConfigError::new(
                "heartbeat",
                format!(
                    "must be positive and shorter than the lease ({} ms)",
                    self.lease.as_millis()
                ),
            ));
        }
        Ok(())
    }
}
