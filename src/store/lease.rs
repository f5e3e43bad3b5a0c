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
//!
//!   steal: ──▶ a new partition, born claimed (epoch 1) by an idle instance,
//!              holding the second half of a claimed partition's remaining range
//! ```
//!
//! Invariants, all decided by the database and its clock:
//!
//! * **One holder.** A claim is one statement (PostgreSQL:
//!   `UPDATE .. WHERE id = (SELECT .. FOR UPDATE SKIP LOCKED)`; SQLite: the
//!   same inside `BEGIN IMMEDIATE`; MySQL, which neither returns updated
//!   rows nor updates a table its subquery reads: the `SELECT .. FOR UPDATE
//!   SKIP LOCKED`, the `UPDATE` of the row it locked and a read of it, in
//!   one transaction). It sets `owner`, increments `epoch` and
//!   sets `lease_expires_ms = now + lease`. `now` is the database clock, so
//!   instances with skewed clocks agree on who holds what.
//! * **Fenced writes.** Every write by a holder (checkpoint, complete,
//!   release, failure) says `WHERE id = ? AND owner = ? AND epoch = ? AND
//!   state = 'claimed'`. Zero rows updated (matched, on MySQL, whose
//!   connections report rows matched) means the lease was lost (another
//!   instance took the partition over and bumped the epoch): the holder
//!   stops at once and writes nothing more. A zombie that wakes up after its
//!   lease expired can therefore never move a cursor backwards or forwards.
//! * **Checkpoint after confirmation.** The cursor moves to the last row of a
//!   page only after the sink confirmed every message of that page, so a crash
//!   repeats at most the page in flight (plus the publisher's window), never
//!   loses one.
//! * **Liveness.** The lease keeper renews every held lease each heartbeat
//!   (`heartbeat < lease`); a checkpoint renews it too. Renewal names the
//!   `(partition, epoch)` pairs this process holds, not just its owner id,
//!   so a process restarted under the same id never keeps its dead
//!   predecessor's leases alive. A holder that dies stops renewing, its
//!   lease passes, and any instance claims the partition and resumes from
//!   its checkpoint.
//! * **Splits (work stealing).** An instance with an idle worker and nothing
//!   to claim splits the claimed range partition with the most rows left:
//!   in one transaction (the run's row and the victim's row locked on
//!   PostgreSQL, `BEGIN IMMEDIATE` on SQLite) it cuts the victim's remaining
//!   range at a row at least two pages past the victim's stored checkpoint,
//!   lowers the victim's upper bound to the cut and inserts the rest as a
//!   new partition claimed by itself. The victim keeps its owner, epoch and
//!   lease; everything it can have read ahead (the page it is publishing and
//!   the one its prefetcher read) lies below the cut, and its next checkpoint
//!   returns the new bound, from which it reads no further. The two halves
//!   are half-open and adjacent, so every row stays in exactly one
//!   partition.
//!
//! Lease arithmetic: a partition of a dead holder is claimable `lease` after
//! its last renewal, so an instance with a free worker takes it over within
//! `lease + poll interval` of the crash (an instance whose workers are all
//! busy takes it when one frees); a live holder is safe as long as one of
//! the `lease / heartbeat` renewals in each lease period gets through.
//!
//! Runs: an instance joins the job's active run, or, when started with a
//! run key, the run of that key in whatever state (so a late instance, or a
//! second scheduler firing the same tick, never starts a second pass). A new
//! key is refused while another run of the job is active: runs of one job
//! never overlap.

use std::time::Duration;

use crate::model::ConfigError;

/// Lease timings of an instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
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
                    "must be positive and shorter than the lease ({})",
                    crate::model::duration::format(self.lease)
                ),
            ));
        }
        Ok(())
    }
}
