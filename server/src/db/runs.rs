//! What keeps a passcode single-use across a power loss on SQLite.
//!
//! The verification engine commits without syncing the write-ahead log (`db::engine`): a
//! commit is in the operating system's page cache as soon as it returns, so a crash or
//! `kill -9` of the server loses nothing, but a power loss or kernel crash can lose the
//! last moments of commits, the consumptions of passcodes already Accepted among them. Such
//! a passcode would be unused again after the restart. So the server records each run of
//! the engine in `engine_runs`:
//!
//! - at start, before the engine decides anything, it adds its row (the machine's boot id,
//!   its process id, the time) with a synced commit;
//! - at a clean stop, once the last request is answered, it removes the row with a synced
//!   commit, which also puts every earlier commit on the disk;
//! - a start that finds a row of an earlier boot knows the machine went down while a server
//!   was running: in the same synced transaction it voids every unused passcode (`used` =
//!   [`VOIDED`]; the expired ones too, so that no step of the clock can bring one back)
//!   and says so in the log and the audit log. Their users fetch new ones.
//!
//! A row of this boot whose process is gone is a server that crashed or was killed while
//! the machine kept running: the page cache kept its commits, and nothing is voided.

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use rusqlite::{Connection, Transaction, TransactionBehavior, params};

use super::audit::Entry;
use super::verify::{AUDIT_INSERT, audit_values};

/// `passcodes.used` of a passcode voided at start after the machine went down.
pub const VOIDED: i64 = 2;

/// The boot id recorded where the kernel gives none: a row with it always counts as from
/// an earlier boot.
const UNKNOWN_BOOT: &str = "unknown";

/// One server's run of the engine on the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    pub boot_id: String,
    pub pid: i64,
    pub started_at: i64,
}

impl Run {
    /// This process, on this boot of the machine, starting now.
    pub fn this_process() -> Self {
        let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .map(|s| s.trim().to_owned())
            .unwrap_or_else(|_| UNKNOWN_BOOT.to_owned());
        Self { boot_id, pid: i64::from(std::process::id()), started_at: crate::now() }
    }

    fn same_boot(&self, other: &Run) -> bool {
        self.boot_id != UNKNOWN_BOOT && self.boot_id == other.boot_id
    }
}

/// Whether process `pid` of this boot still runs (on Linux; elsewhere none is seen).
pub fn process_alive(pid: i64) -> bool {
    pid != i64::from(std::process::id()) && Path::new(&format!("/proc/{pid}")).exists()
}

/// What [`claim`] found of earlier runs.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Claimed {
    /// A run of an earlier boot, left without a clean stop: the machine went down under it.
    pub lost_boot: Option<Run>,
    /// Unused passcodes voided because of it.
    pub voided: usize,
    /// Runs of this boot that ended without a clean stop (their commits are safe).
    pub crashed: Vec<Run>,
    /// Runs of this boot still going: other servers on this database file.
    pub running: Vec<Run>,
}

/// Records `run` in one transaction committed with `synchronous = FULL` (the connection's
/// own setting is put back after), after dealing with the rows earlier runs left: voiding
/// the unused passcodes if one is of an earlier boot, forgetting those of this boot whose
/// process is gone (`alive` tells).
pub fn claim(conn: &Connection, run: &Run, alive: impl Fn(i64) -> bool) -> anyhow::Result<Claimed> {
    let setting: i64 = conn.pragma_query_value(None, "synchronous", |r| r.get(0))?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    let claimed = claim_synced(conn, run, alive);
    conn.pragma_update(None, "synchronous", setting)?;
    claimed
}

fn claim_synced(conn: &Connection, run: &Run, alive: impl Fn(i64) -> bool) -> anyhow::Result<Claimed> {
    let tx = Transaction::new_unchecked(conn, TransactionBehavior::Immediate)?;
    let earlier = tx
        .prepare("SELECT boot_id, pid, started_at FROM engine_runs")?
        .query_map([], |r| Ok(Run { boot_id: r.get(0)?, pid: r.get(1)?, started_at: r.get(2)? }))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let mut claimed = Claimed::default();
    for old in earlier {
        if run.same_boot(&old) && alive(old.pid) {
            claimed.running.push(old);
            continue;
        }
        tx.execute(
            "DELETE FROM engine_runs WHERE boot_id = ?1 AND pid = ?2 AND started_at = ?3",
            params![old.boot_id, old.pid, old.started_at],
        )?;
        if run.same_boot(&old) {
            claimed.crashed.push(old);
        } else if claimed.lost_boot.is_none() {
            claimed.lost_boot = Some(old);
        }
    }
    if let Some(lost) = &claimed.lost_boot {
        claimed.voided = tx.execute("UPDATE passcodes SET used = ?1 WHERE used = 0", params![VOIDED])?;
        let entry = Entry {
            actor: "server",
            kind: "passcodes.void",
            detail: format!(
                "{} unused passcodes voided: the machine went down while a server (pid {}) was running on this \
                 database, so consumptions of its last moments may not have reached the disk",
                claimed.voided, lost.pid
            ),
            ..Entry::default()
        };
        tx.execute(&AUDIT_INSERT.replace('$', "?"), audit_values(&entry, run.started_at))?;
    }
    tx.execute(
        "INSERT INTO engine_runs (boot_id, pid, started_at) VALUES (?1, ?2, ?3)",
        params![run.boot_id, run.pid, run.started_at],
    )?;
    tx.commit()?;
    Ok(claimed)
}

/// Removes `run`'s row at a clean stop, with a synced commit: that sync puts every commit
/// before it on the disk too, so the next start voids nothing. Call it only once no request
/// can be answered any more.
pub fn release(path: &Path, run: &Run) -> anyhow::Result<()> {
    let conn = Connection::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    conn.busy_timeout(Duration::from_secs(5))?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    let removed = conn.execute(
        "DELETE FROM engine_runs WHERE boot_id = ?1 AND pid = ?2 AND started_at = ?3",
        params![run.boot_id, run.pid, run.started_at],
    )?;
    anyhow::ensure!(removed == 1, "this server's row in engine_runs was gone");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::test_db::{DOMAIN_AND_ALICE, migrate};

    /// A migrated database file with one user and passcodes: 1 live, 2 used, 3 expired.
    fn database() -> (tempfile::TempDir, std::path::PathBuf, Connection) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.db");
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "journal_mode", "WAL").unwrap();
        migrate(&conn);
        conn.execute_batch(DOMAIN_AND_ALICE).unwrap();
        conn.execute_batch(
            "INSERT INTO devices (id, domain_id, device_key_id, user_id, public_key, pin_hash, created_at) \
               VALUES (1, 1, 'k', 1, x'00', 'h', 0); \
             INSERT INTO passcodes (id, user_id, device_id, hash, expires_at, used, created_at) VALUES \
               (1, 1, 1, x'01', 2000, 0, 0), (2, 1, 1, x'02', 2000, 1, 0), (3, 1, 1, x'03', 500, 0, 0);",
        )
        .unwrap();
        (dir, path, conn)
    }

    fn run(boot: &str, pid: i64, started_at: i64) -> Run {
        Run { boot_id: boot.into(), pid, started_at }
    }

    fn used(conn: &Connection) -> Vec<i64> {
        let mut stmt = conn.prepare("SELECT used FROM passcodes ORDER BY id").unwrap();
        stmt.query_map([], |r| r.get(0)).unwrap().collect::<rusqlite::Result<_>>().unwrap()
    }

    fn runs(conn: &Connection) -> Vec<Run> {
        let mut stmt = conn.prepare("SELECT boot_id, pid, started_at FROM engine_runs ORDER BY started_at").unwrap();
        stmt.query_map([], |r| Ok(run(&r.get::<_, String>(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap()
    }

    fn void_audits(conn: &Connection) -> Vec<String> {
        let mut stmt = conn.prepare("SELECT detail FROM audit_log WHERE kind = 'passcodes.void'").unwrap();
        stmt.query_map([], |r| r.get(0)).unwrap().collect::<rusqlite::Result<_>>().unwrap()
    }

    #[test]
    fn a_first_start_and_a_clean_stop_void_nothing() {
        let (_dir, path, conn) = database();
        let first = run("boot-a", 10, 1000);
        assert_eq!(claim(&conn, &first, |_| false).unwrap(), Claimed::default());
        assert_eq!(runs(&conn), vec![first.clone()]);
        release(&path, &first).unwrap();
        assert!(runs(&conn).is_empty());
        // Even on another boot, a run that stopped cleanly leaves nothing to void.
        assert_eq!(claim(&conn, &run("boot-b", 11, 1100), |_| false).unwrap(), Claimed::default());
        assert_eq!(used(&conn), vec![0, 1, 0]);
        assert!(void_audits(&conn).is_empty());
    }

    #[test]
    fn a_run_left_from_an_earlier_boot_voids_the_unused_passcodes() {
        let (_dir, _path, conn) = database();
        let lost = run("boot-a", 10, 900);
        claim(&conn, &lost, |_| false).unwrap();
        // The machine went down; a new boot, and the old pid even runs again.
        let next = run("boot-b", 10, 1000);
        let claimed = claim(&conn, &next, |_| true).unwrap();
        assert_eq!(claimed, Claimed { lost_boot: Some(lost), voided: 2, ..Claimed::default() });
        // The live and the expired one voided; the used one untouched.
        assert_eq!(used(&conn), vec![VOIDED, 1, VOIDED]);
        assert_eq!(runs(&conn), vec![next]);
        let audits = void_audits(&conn);
        assert_eq!(audits.len(), 1);
        assert!(audits[0].starts_with("2 unused passcodes voided"), "{audits:?}");
    }

    #[test]
    fn a_run_of_this_boot_that_crashed_voids_nothing() {
        let (_dir, _path, conn) = database();
        let crashed = run("boot-a", 10, 900);
        claim(&conn, &crashed, |_| false).unwrap();
        let next = run("boot-a", 11, 1000);
        let claimed = claim(&conn, &next, |_| false).unwrap();
        assert_eq!(claimed, Claimed { crashed: vec![crashed], ..Claimed::default() });
        assert_eq!(used(&conn), vec![0, 1, 0]);
        assert_eq!(runs(&conn), vec![next]);
    }

    #[test]
    fn another_server_still_running_keeps_its_row() {
        let (_dir, _path, conn) = database();
        let other = run("boot-a", 10, 900);
        claim(&conn, &other, |_| false).unwrap();
        let next = run("boot-a", 11, 1000);
        let claimed = claim(&conn, &next, |pid| pid == 10).unwrap();
        assert_eq!(claimed, Claimed { running: vec![other.clone()], ..Claimed::default() });
        assert_eq!(runs(&conn), vec![other, next]);
    }

    #[test]
    fn without_a_boot_id_every_run_left_behind_counts_as_lost() {
        let (_dir, _path, conn) = database();
        claim(&conn, &run(UNKNOWN_BOOT, 10, 900), |_| false).unwrap();
        let claimed = claim(&conn, &run(UNKNOWN_BOOT, 11, 1000), |_| true).unwrap();
        assert_eq!(claimed.voided, 2);
        assert_eq!(used(&conn), vec![VOIDED, 1, VOIDED]);
    }

    #[test]
    fn the_claim_puts_the_connections_own_setting_back() {
        let (_dir, _path, conn) = database();
        conn.pragma_update(None, "synchronous", "NORMAL").unwrap();
        claim(&conn, &run("boot-a", 10, 900), |_| false).unwrap();
        let setting: i64 = conn.pragma_query_value(None, "synchronous", |r| r.get(0)).unwrap();
        assert_eq!(setting, 1, "NORMAL again");
    }

    #[test]
    fn the_real_boot_id_is_read() {
        let this = Run::this_process();
        #[cfg(target_os = "linux")]
        assert_eq!(this.boot_id.len(), 36, "{this:?}");
        assert!(!process_alive(this.pid), "this process's own row is not another server's");
        assert!(!process_alive(i64::from(u32::MAX)));
    }
}
