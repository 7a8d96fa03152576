//! Verifying a passcode for a network client: the RADIUS use-case, with the guessing limit
//! (`service::throttle`) and a deadline so a locked or slow database yields a Reject, never
//! a hang.
//!
//! The rules are one sequence ([`decide_and_record`]) over a [`Ledger`], what storage must
//! answer and record. Two ledgers run it: on a SQLite file, the verification engine
//! (`db::engine`), which decides queued requests in batches inside one transaction each
//! (group commit); otherwise (PostgreSQL, where several nodes share the rows) the sqlx pool,
//! one statement at a time.

use std::net::IpAddr;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use zeroize::Zeroizing;

use crate::db::audit::Entry;
use crate::db::engine::TxLedger;
use crate::db::passcodes::PasscodeRow;
use crate::db::verify::PoolLedger;
use crate::domain::Username;
use crate::domain::passcode::{PasscodeKey, hashes_equal};
use crate::service::throttle::ThrottlePolicy;
use crate::state::AppState;

/// The answer to give; the reason is for the log and the audit trail only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Accept,
    Reject(&'static str),
}

/// Why a user was rejected without checking the passcode.
pub const THROTTLED: &str = "throttled: too many wrong passcodes";
/// The reason for a passcode that matches none of the user's: the only one that counts as a guess.
pub const WRONG_PASSCODE: &str = "wrong passcode";

/// Attempts at a decision through the pool when the database is briefly unavailable
/// (locked, busy, pool exhausted, connection lost). The deadline bounds the whole.
pub const ATTEMPTS: u32 = 3;

/// One Access-Request to decide, owned so it can be queued for the engine's thread.
pub struct Request {
    pub client_name: String,
    pub domain_id: i64,
    pub domain_code: String,
    pub source: IpAddr,
    pub username: String,
    pub passcode: Zeroizing<String>,
}

/// What the database knows about a user when a passcode arrives.
pub struct UserFacts {
    pub id: i64,
    pub disabled: bool,
    /// The user's domain's guessing limit.
    pub policy: ThrottlePolicy,
    /// Wrong passcodes inside the policy's window.
    pub recent_failures: i64,
}

/// What verification reads from and writes to storage. Implemented over the sqlx pool
/// (`db::verify::PoolLedger`) and inside a SQLite engine transaction (`db::engine::TxLedger`).
pub(crate) trait Ledger {
    /// The user `username` of the domain, with its guessing limit and failures up to `now`.
    async fn user(&mut self, domain_id: i64, username: &str, now: i64) -> anyhow::Result<Option<UserFacts>>;
    /// The user's recent passcodes (live, used, recently expired), newest first.
    async fn recent_passcodes(&mut self, user_id: i64) -> anyhow::Result<Vec<PasscodeRow>>;
    /// Whether the device is disabled, for a row without its flag. The pool's ledger reads
    /// the device after the row, so it may find it gone, which counts as disabled; the
    /// engine reads both in one transaction, where a passcode's device cannot be gone (its
    /// passcodes are deleted with it).
    async fn device_disabled(&mut self, device_id: i64) -> anyhow::Result<bool>;
    /// Marks a passcode used if it is unused and unexpired; true for exactly one caller.
    async fn consume(&mut self, passcode_id: i64, now: i64) -> anyhow::Result<bool>;
    /// A live passcode of the user with this hash, from a copy in memory, for a ledger that
    /// keeps one (the SQLite engine's, `db::live_passcodes`): its id and device. `None`
    /// says nothing: the stored rows decide.
    fn live_match(&mut self, _user_id: i64, _hash: &[u8; 32], _now: i64) -> Option<(i64, i64)> {
        None
    }
    /// Consumes the passcode [`Ledger::live_match`] gave, if its row still holds it (the
    /// user, the device, the hash), unused and unexpired; true for exactly one caller.
    async fn consume_live(
        &mut self,
        _user_id: i64,
        _live: (i64, i64),
        _hash: &[u8; 32],
        _now: i64,
    ) -> anyhow::Result<bool> {
        Ok(false)
    }
    async fn clear_failures(&mut self, user_id: i64) -> anyhow::Result<()>;
    async fn record_failure(&mut self, user_id: i64, now: i64, forget_before: i64) -> anyhow::Result<()>;
    async fn audit(&mut self, entry: Entry<'_>) -> anyhow::Result<()>;
}

/// Decides `request` by `deadline`, consuming the passcode on Accept, logs the decision and
/// hands it to `done`; an error means no decision could be had in time (the caller rejects).
/// On SQLite `done` runs on the engine's thread as soon as the decision is safe to send (an
/// Accept once committed), so it must be quick; on PostgreSQL, in a task of the runtime.
pub fn verify<F>(state: &AppState, request: Request, deadline: Instant, done: F)
where
    F: FnOnce(&Request, anyhow::Result<Decision>) + Send + 'static,
{
    let finish = move |request: &Request, decision: anyhow::Result<Decision>| {
        let (client, user) = (&request.client_name, &request.username);
        match &decision {
            Ok(Decision::Accept) => tracing::info!(client, user, "Access-Accept"),
            Ok(Decision::Reject(why)) => tracing::info!(client, user, reason = why, "Access-Reject"),
            Err(_) => {}
        }
        done(request, decision);
    };
    match &state.engine {
        Some(engine) => {
            engine.send(request, deadline, Box::new(move |request, answer| finish(request, answer.map_err(Into::into))))
        }
        None => {
            let state = state.clone();
            tokio::spawn(async move {
                let attempt = verify_with_retries(&state, &request);
                let decision = tokio::time::timeout_at(deadline.into(), attempt)
                    .await
                    .unwrap_or_else(|_| Err(crate::db::engine::EngineError::Expired.into()));
                finish(&request, decision);
            });
        }
    }
}

/// Runs the rules through the pool with bounded retries when the database is briefly
/// unavailable. Retrying is safe because a passcode is consumed by one conditional UPDATE:
/// a retry after a consumption that did commit sees it used and rejects; it never accepts twice.
async fn verify_with_retries(state: &AppState, request: &Request) -> anyhow::Result<Decision> {
    let mut attempt = 1;
    loop {
        let mut ledger = PoolLedger(&state.store);
        match decide_and_record(&mut ledger, &state.passcode_key, request, crate::now()).await {
            Err(e) if attempt < ATTEMPTS && transient(&e) => {
                tracing::warn!(
                    client = request.client_name,
                    attempt,
                    error = format!("{e:#}"),
                    "database busy; retrying"
                );
                tokio::time::sleep(Duration::from_millis(50 << attempt)).await;
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// Errors worth another try: the database is unreachable, or SQLite is busy or locked.
fn transient(e: &anyhow::Error) -> bool {
    crate::db::is_unavailable(e)
        || e.chain().any(|c| {
            matches!(c.downcast_ref::<sqlx::Error>(), Some(sqlx::Error::Database(d))
                if matches!(d.code().as_deref(), Some("5" | "6" | "517" | "262")))
        })
}

/// The engine's handler: the rules over a ledger whose operations never wait (plain calls on
/// the engine's thread), so the sequence completes in one poll without an async runtime.
pub(crate) fn decide_in_transaction(
    ledger: &mut TxLedger<'_, '_>,
    key: &PasscodeKey,
    request: &Request,
) -> anyhow::Result<Decision> {
    let sequence = pin!(decide_and_record(ledger, key, request, crate::now()));
    match sequence.poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(r) => r,
        Poll::Pending => anyhow::bail!("a SQLite engine operation waited; it must not"),
    }
}

/// Decides, writes the audit entry, and returns the decision: the one sequence of rules.
pub(crate) async fn decide_and_record<L: Ledger>(
    ledger: &mut L,
    key: &PasscodeKey,
    request: &Request,
    now: i64,
) -> anyhow::Result<Decision> {
    let decision = decide(ledger, key, request, now).await?;
    let (kind, detail) = match &decision {
        Decision::Accept => ("radius.accept", "passcode accepted"),
        Decision::Reject(why) if *why == THROTTLED => ("radius.throttled", *why),
        Decision::Reject(why) => ("radius.reject", *why),
    };
    let actor = format!("radius:{}", request.client_name);
    let entry = Entry {
        actor: &actor,
        kind,
        domain_code: Some(&request.domain_code),
        username: Some(&request.username),
        source: Some(request.source.to_string()),
        detail: detail.to_owned(),
    };
    ledger.audit(entry).await?;
    Ok(decision)
}

async fn decide<L: Ledger>(ledger: &mut L, key: &PasscodeKey, request: &Request, now: i64) -> anyhow::Result<Decision> {
    let Ok(username) = Username::parse(&request.username) else {
        return Ok(Decision::Reject("malformed username"));
    };
    let Some(user) = ledger.user(request.domain_id, username.as_str(), now).await? else {
        return Ok(Decision::Reject("unknown user in this client's domain"));
    };
    if user.disabled {
        return Ok(Decision::Reject("user disabled"));
    }
    if user.policy.throttled_by(user.recent_failures) {
        // Not even compared: a throttled user's guesses teach an attacker nothing.
        return Ok(Decision::Reject(THROTTLED));
    }
    let decision = check(ledger, key, user.id, &request.passcode, now).await?;
    match decision {
        // Failures outside the window are harmless; they go at the next recorded failure.
        Decision::Accept if user.recent_failures > 0 => ledger.clear_failures(user.id).await?,
        // Only a passcode that matches nothing is a guess. A used or expired one is a real
        // passcode sent again (retransmissions, a client trying several servers, a slow
        // user): counting those would lock out users nobody attacked.
        Decision::Reject(WRONG_PASSCODE) => ledger.record_failure(user.id, now, user.policy.since(now)).await?,
        _ => {}
    }
    Ok(decision)
}

/// Compares a passcode with the user's recent ones and consumes it when right.
async fn check<L: Ledger>(
    ledger: &mut L,
    key: &PasscodeKey,
    user_id: i64,
    passcode: &str,
    now: i64,
) -> anyhow::Result<Decision> {
    let hash = key.hash(user_id, passcode);
    // From the copy in memory first, where the ledger keeps one: an Accept then reads no
    // passcode row (BENCHMARKS.md). Anything else (no such passcode there, its device
    // disabled, its row no longer holding it) goes on to the stored rows, which decide.
    if let Some(live) = ledger.live_match(user_id, &hash, now)
        && !ledger.device_disabled(live.1).await?
        && ledger.consume_live(user_id, live, &hash, now).await?
    {
        return Ok(Decision::Accept);
    }
    // Compare against every recent passcode in constant time, then act on the matches.
    // Passcodes are short, so a fresh one can equal one of the user's earlier ones (about 31
    // in a million with six digits): a live match wins, whatever else matches; without one,
    // the newest match says why the passcode is refused. Only a match that is unused and
    // unexpired needs its device's flag (a wrong passcode reads no device).
    let mut matches = ledger.recent_passcodes(user_id).await?;
    matches.retain(|row| hashes_equal(&row.hash, &hash));
    let (mut live, mut newest) = (None, None);
    for row in matches {
        if row.used == 0 && row.expires_at > now {
            let disabled = match row.device_disabled {
                Some(flag) => flag != 0,
                None => ledger.device_disabled(row.device_id).await?,
            };
            if !disabled {
                // The newest live match; nothing older matters then.
                live = Some(row.id);
                break;
            }
        }
        newest = newest.or(Some(row));
    }
    if let Some(id) = live {
        return if ledger.consume(id, now).await? {
            Ok(Decision::Accept)
        } else {
            Ok(Decision::Reject("passcode already used"))
        };
    }
    let Some(row) = newest else {
        return Ok(Decision::Reject(WRONG_PASSCODE));
    };
    if row.used == crate::db::runs::VOIDED {
        Ok(Decision::Reject("passcode voided: the machine went down while the server was running"))
    } else if row.used != 0 {
        Ok(Decision::Reject("passcode already used"))
    } else if row.expires_at <= now {
        Ok(Decision::Reject("passcode expired"))
    } else {
        Ok(Decision::Reject("device disabled"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A user's recent passcodes in memory, newest first, the disabled devices, and what was
    /// consumed and which devices were read.
    #[derive(Default)]
    struct Rows {
        rows: Vec<PasscodeRow>,
        disabled_devices: Vec<i64>,
        consumed: Vec<i64>,
        devices_read: Vec<i64>,
    }

    impl Ledger for Rows {
        async fn user(&mut self, _: i64, _: &str, _: i64) -> anyhow::Result<Option<UserFacts>> {
            unreachable!("check() does not look up users")
        }
        async fn recent_passcodes(&mut self, _: i64) -> anyhow::Result<Vec<PasscodeRow>> {
            Ok(self.rows.clone())
        }
        async fn device_disabled(&mut self, device_id: i64) -> anyhow::Result<bool> {
            self.devices_read.push(device_id);
            Ok(self.disabled_devices.contains(&device_id))
        }
        async fn consume(&mut self, passcode_id: i64, _: i64) -> anyhow::Result<bool> {
            let row = self.rows.iter_mut().find(|r| r.id == passcode_id && r.used == 0);
            Ok(row.map(|r| r.used = 1).inspect(|()| self.consumed.push(passcode_id)).is_some())
        }
        async fn clear_failures(&mut self, _: i64) -> anyhow::Result<()> {
            Ok(())
        }
        async fn record_failure(&mut self, _: i64, _: i64, _: i64) -> anyhow::Result<()> {
            Ok(())
        }
        async fn audit(&mut self, _: Entry<'_>) -> anyhow::Result<()> {
            Ok(())
        }
    }

    const NOW: i64 = 1_000_000;
    const USER: i64 = 7;

    /// A row as the SQLite engine reads it (no device flag), from device `10 × id`.
    fn row(key: &PasscodeKey, id: i64, code: &str, used: i64, expires_at: i64) -> PasscodeRow {
        let hash = key.hash(USER, code).to_vec();
        PasscodeRow { id, hash, expires_at, used, device_id: 10 * id, device_disabled: None }
    }

    async fn decide(rows: Vec<PasscodeRow>, key: &PasscodeKey, code: &str) -> (Decision, Vec<i64>) {
        let (decision, ledger) = decide_with(Rows { rows, ..Rows::default() }, key, code).await;
        (decision, ledger.consumed)
    }

    async fn decide_with(mut ledger: Rows, key: &PasscodeKey, code: &str) -> (Decision, Rows) {
        let decision = check(&mut ledger, key, USER, code, NOW).await.unwrap();
        (decision, ledger)
    }

    #[tokio::test]
    async fn a_fresh_passcode_equal_to_an_older_used_one_is_accepted() {
        let key = PasscodeKey::new(vec![9; 32]);
        // Newest first: the fresh 123456 (id 3), then other codes, then the same digits used.
        let rows = vec![
            row(&key, 3, "123456", 0, NOW + 60),
            row(&key, 2, "654321", 1, NOW - 100),
            row(&key, 1, "123456", 1, NOW - 200),
        ];
        assert_eq!(decide(rows.clone(), &key, "123456").await, (Decision::Accept, vec![3]));
        // The same with the live one on an older row (another device) and the used one newer.
        let rows = vec![row(&key, 5, "123456", 1, NOW - 10), row(&key, 4, "123456", 0, NOW + 60)];
        assert_eq!(decide(rows, &key, "123456").await, (Decision::Accept, vec![4]));
    }

    #[tokio::test]
    async fn without_a_live_match_the_newest_match_gives_the_reason() {
        let key = PasscodeKey::new(vec![9; 32]);
        let rows = vec![row(&key, 2, "123456", 0, NOW - 1), row(&key, 1, "123456", 1, NOW - 100)];
        assert_eq!(decide(rows, &key, "123456").await, (Decision::Reject("passcode expired"), vec![]));
        let rows = vec![row(&key, 2, "123456", 1, NOW + 60), row(&key, 1, "123456", 0, NOW - 100)];
        assert_eq!(decide(rows.clone(), &key, "123456").await, (Decision::Reject("passcode already used"), vec![]));
        assert_eq!(decide(rows, &key, "999999").await, (Decision::Reject(WRONG_PASSCODE), vec![]));
        let voided = row(&key, 1, "123456", crate::db::runs::VOIDED, NOW + 60);
        let (decision, consumed) = decide(vec![voided], &key, "123456").await;
        assert_eq!(decision, Decision::Reject("passcode voided: the machine went down while the server was running"));
        assert!(consumed.is_empty());
        let rows = vec![row(&key, 1, "123456", 0, NOW + 60)];
        let ledger = Rows { rows, disabled_devices: vec![10], ..Rows::default() };
        assert_eq!(decide_with(ledger, &key, "123456").await.0, Decision::Reject("device disabled"));
    }

    #[tokio::test]
    async fn only_a_live_match_reads_its_device() {
        let key = PasscodeKey::new(vec![9; 32]);
        let rows = vec![
            row(&key, 4, "123456", 0, NOW + 60),
            row(&key, 3, "111111", 0, NOW + 60),
            row(&key, 2, "222222", 1, NOW + 60),
            row(&key, 1, "333333", 0, NOW - 1),
        ];
        let look = async |code: &str, disabled_devices: Vec<i64>| {
            let ledger = Rows { rows: rows.clone(), disabled_devices, ..Rows::default() };
            let (decision, ledger) = decide_with(ledger, &key, code).await;
            (decision, ledger.devices_read)
        };
        // A wrong passcode, a used one and an expired one read no device.
        assert_eq!(look("999999", vec![]).await, (Decision::Reject(WRONG_PASSCODE), vec![]));
        assert_eq!(look("222222", vec![]).await, (Decision::Reject("passcode already used"), vec![]));
        assert_eq!(look("333333", vec![]).await, (Decision::Reject("passcode expired"), vec![]));
        // A live match reads its own device only.
        assert_eq!(look("111111", vec![]).await, (Decision::Accept, vec![30]));
        assert_eq!(look("111111", vec![30]).await, (Decision::Reject("device disabled"), vec![30]));
        // A live match on a disabled device gives way to an older live one on another device.
        let rows = vec![row(&key, 2, "123456", 0, NOW + 60), row(&key, 1, "123456", 0, NOW + 60)];
        let ledger = Rows { rows, disabled_devices: vec![20], ..Rows::default() };
        let (decision, ledger) = decide_with(ledger, &key, "123456").await;
        assert_eq!((decision, ledger.consumed, ledger.devices_read), (Decision::Accept, vec![1], vec![20, 10]));
        // Rows that carry their device's flag (the pool's join) are not read again.
        let mut joined = row(&key, 1, "123456", 0, NOW + 60);
        joined.device_disabled = Some(1);
        let (decision, ledger) = decide_with(Rows { rows: vec![joined], ..Rows::default() }, &key, "123456").await;
        assert_eq!((decision, ledger.devices_read), (Decision::Reject("device disabled"), vec![]));
    }
}
