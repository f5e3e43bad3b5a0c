//! Where the cores went: the CPU time of the bench process and of the
//! PostgreSQL server over a measurement, read from `/proc` (Linux).
//!
//! The bench's own process runs tranche and the bare clients, one
//! measurement at a time, so its CPU time over a measurement is theirs (with
//! the delay relay's, in the groups at a distance). The server's is the sum
//! over the postmaster and its children, with the time of children that
//! have exited, which the postmaster collects: a measurement's connections
//! may close before it is read.

use diesel::sql_types::Integer;
use diesel::{Connection, PgConnection, QueryableByName, RunQueryDsl};

/// CPU seconds spent, user and system.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct CpuTime {
    /// In user space.
    pub user_s: f64,
    /// In the kernel, on the process's behalf.
    pub system_s: f64,
}

impl CpuTime {
    /// User and system together.
    pub fn total_s(self) -> f64 {
        self.user_s + self.system_s
    }

    fn minus(self, earlier: Self) -> Self {
        Self {
            user_s: (self.user_s - earlier.user_s).max(0.0),
            system_s: (self.system_s - earlier.system_s).max(0.0),
        }
    }
}

/// The clock ticks of `/proc/PID/stat`: `USER_HZ`, 100 on every Linux
/// architecture the kernel exports it for.
const TICKS_PER_S: f64 = 100.0;

/// The fields of `/proc/PID/stat` after the command name, which may hold
/// spaces and parentheses of its own.
fn stat_fields(pid: &str) -> Option<Vec<u64>> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

fn parse_stat(text: &str) -> Option<Vec<u64>> {
    let rest = &text[text.rfind(')')? + 1..];
    // State is a letter; keep its place with a zero.
    Some(
        rest.split_whitespace()
            .map(|f| f.parse().unwrap_or(0))
            .collect(),
    )
}

/// Field `n` of `/proc/PID/stat` (1-based, as proc(5) numbers them).
fn field(fields: &[u64], n: usize) -> u64 {
    // proc(5) numbers pid (1) and comm (2) before state (3), the first kept.
    fields.get(n - 3).copied().unwrap_or(0)
}

/// A process's own CPU time, and with `children` also that of its children
/// which have exited and been waited for.
fn process_cpu(pid: &str, children: bool) -> Option<CpuTime> {
    let f = stat_fields(pid)?;
    let (mut user, mut system) = (field(&f, 14), field(&f, 15));
    if children {
        user += field(&f, 16);
        system += field(&f, 17);
    }
    Some(CpuTime {
        user_s: user as f64 / TICKS_PER_S,
        system_s: system as f64 / TICKS_PER_S,
    })
}

/// This process's CPU time so far.
pub fn own() -> CpuTime {
    process_cpu("self", false).unwrap_or_default()
}

/// The PostgreSQL server of a URL, when it runs on this machine and its
/// processes can be read.
#[derive(Clone, Debug)]
pub struct Server {
    postmaster: String,
}

#[derive(QueryableByName)]
struct Pid {
    #[diesel(sql_type = Integer)]
    pid: i32,
}

impl Server {
    /// The server `url` connects to, found through the parent of the
    /// backend serving a connection: `None` when that process is not on
    /// this machine (or not readable), so the server's CPU is not measured.
    pub fn of(url: &str) -> Option<Self> {
        let mut conn = PgConnection::establish(url).ok()?;
        let backend = diesel::sql_query("SELECT pg_backend_pid() AS pid")
            .get_result::<Pid>(&mut conn)
            .ok()?
            .pid;
        let f = stat_fields(&backend.to_string())?;
        let postmaster = field(&f, 4).to_string();
        let comm = std::fs::read_to_string(format!("/proc/{postmaster}/comm")).ok()?;
        // A backend of another server with a reused pid would not be ours.
        (comm.trim() == "postgres").then_some(Self { postmaster })
    }

    /// The server's CPU time so far: the postmaster's, its live children's
    /// and that of the children it has waited for.
    pub fn cpu(&self) -> CpuTime {
        let mut total = process_cpu(&self.postmaster, true).unwrap_or_default();
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return total;
        };
        for entry in dir.flatten() {
            let name = entry.file_name();
            let Some(pid) = name
                .to_str()
                .filter(|p| p.bytes().all(|b| b.is_ascii_digit()))
            else {
                continue;
            };
            let Some(f) = stat_fields(pid) else {
                continue;
            };
            if field(&f, 4).to_string() == self.postmaster {
                let t = process_cpu(pid, true).unwrap_or_default();
                total.user_s += t.user_s;
                total.system_s += t.system_s;
            }
        }
        total
    }
}

/// The CPU a measurement took: the bench process's (or a peer's, which
/// reports its own) and the PostgreSQL server's, when measured.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct Cpu {
    /// The process that did the work: tranche or a bare client inside the
    /// bench, or a peer's own process.
    pub process: CpuTime,
    /// The PostgreSQL server, when it runs on this machine.
    pub postgres: Option<CpuTime>,
}

/// CPU readings at the start of a measurement.
pub struct Meter {
    own: CpuTime,
    server: Option<(Server, CpuTime)>,
}

impl Meter {
    /// Starts measuring this process and `server`, if known.
    pub fn start(server: Option<&Server>) -> Self {
        Self {
            own: own(),
            server: server.map(|s| (s.clone(), s.cpu())),
        }
    }

    /// What was spent since [`Self::start`], this process's CPU standing
    /// for the work's.
    pub fn stop(&self) -> Cpu {
        Cpu {
            process: own().minus(self.own),
            postgres: self.server.as_ref().map(|(s, at)| s.cpu().minus(*at)),
        }
    }

    /// What was spent since [`Self::start`], with `process` for the CPU
    /// of the process that did the work (a peer's, reported by itself).
    #[cfg(feature = "amqp")]
    pub fn stop_with(&self, process: CpuTime) -> Cpu {
        Cpu {
            process,
            ..self.stop()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_found_past_a_command_name_with_parentheses() {
        let line = "4242 (a (b) c) S 17 4242 4242 0 -1 4194560 100 0 0 0 250 75 3 4 20 0 1";
        let f = parse_stat(line).unwrap();
        assert_eq!(field(&f, 4), 17, "ppid");
        assert_eq!((field(&f, 14), field(&f, 15)), (250, 75), "utime, stime");
        assert_eq!((field(&f, 16), field(&f, 17)), (3, 4), "cutime, cstime");
    }

    #[test]
    fn this_process_is_seen_spending_cpu() {
        let before = own();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let mut x = 0u64;
        while own().total_s() <= before.total_s() {
            assert!(
                std::time::Instant::now() < deadline,
                "no CPU time seen in 30 s of spinning"
            );
            for _ in 0..100_000 {
                x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
            }
        }
    }
}
