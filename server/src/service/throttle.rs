//! Guessing limits for passcodes: wrong passcodes are counted per user in the database (so
//! every node sees the same count); at the domain's limit within its window the user is
//! throttled, and RADIUS rejects that user without checking anything until the oldest
//! failure leaves the window. A right passcode while not throttled clears the count.
//!
//! Why per user and not per client: a passcode is 6 digits by default, so the attacker's
//! budget must be bounded where the secret lives. Ten guesses in ten minutes leave an
//! attacker a 10/1,000,000 chance per live passcode and window.

use crate::db::Store;

/// Default wrong passcodes before a user is throttled.
pub const DEFAULT_MAX_FAILURES: u32 = 10;
/// Default window, in seconds, over which wrong passcodes are counted.
pub const DEFAULT_WINDOW_SECS: u32 = 600;

/// A domain's guessing limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ThrottlePolicy {
    pub max_failures: u32,
    pub window_secs: u32,
}

impl Default for ThrottlePolicy {
    fn default() -> Self {
        Self { max_failures: DEFAULT_MAX_FAILURES, window_secs: DEFAULT_WINDOW_SECS }
    }
}

impl ThrottlePolicy {
    /// Checks the ranges; the message names the setting.
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=1000).contains(&self.max_failures) {
            return Err(format!("wrong-passcode limit must be between 1 and 1000, not {}", self.max_failures));
        }
        if !(1..=7 * 24 * 3600).contains(&self.window_secs) {
            return Err(format!(
                "wrong-passcode window must be between 1 and 604800 seconds, not {}",
                self.window_secs
            ));
        }
        Ok(())
    }

    /// The policy stored for a domain (the defaults if the domain has vanished).
    pub async fn load(store: &Store, domain_id: i64) -> sqlx::Result<Self> {
        Ok(match store.throttle_policy(domain_id).await? {
            Some((max, window)) => Self {
                max_failures: u32::try_from(max).unwrap_or(DEFAULT_MAX_FAILURES),
                window_secs: u32::try_from(window).unwrap_or(DEFAULT_WINDOW_SECS),
            },
            None => Self::default(),
        })
    }

    /// Start of the window that ends at `now`.
    pub fn since(&self, now: i64) -> i64 {
        now - i64::from(self.window_secs)
    }

    /// True when `failures` wrong passcodes inside the window reach the limit.
    pub fn throttled_by(&self, failures: i64) -> bool {
        failures >= i64::from(self.max_failures)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_ranges_are_enforced() {
        assert!(ThrottlePolicy::default().validate().is_ok());
        assert!(ThrottlePolicy { max_failures: 0, window_secs: 60 }.validate().is_err());
        assert!(ThrottlePolicy { max_failures: 5, window_secs: 0 }.validate().is_err());
        assert!(ThrottlePolicy { max_failures: 1001, window_secs: 60 }.validate().is_err());
    }

    #[tokio::test]
    async fn failures_count_within_the_window_and_a_clear_resets_them() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&format!("sqlite://{}", dir.path().join("t.db").display())).await.unwrap();
        let spec = crate::service::admin::DomainSpec {
            name: "T".into(),
            code: "127000000001".into(),
            device_name: None,
            settings: Default::default(),
        };
        let domain = crate::service::admin::add_domain(&store, "test", spec).await.unwrap();
        assert_eq!(ThrottlePolicy::load(&store, domain.id).await.unwrap(), ThrottlePolicy::default());
        store.set_throttle_policy(domain.id, 2, 60).await.unwrap();
        let policy = ThrottlePolicy::load(&store, domain.id).await.unwrap();
        assert_eq!(policy, ThrottlePolicy { max_failures: 2, window_secs: 60 });
        sqlx::query("INSERT INTO users (domain_id, username, disabled, created_at) VALUES ($1, 'u', 0, 0)")
            .bind(domain.id)
            .execute(store.pool())
            .await
            .unwrap();
        let user: i64 = sqlx::query_scalar("SELECT id FROM users").fetch_one(store.pool()).await.unwrap();
        let now = 1_000_000;
        let throttled = async |at: i64| {
            let failures = store.passcode_failures_since(user, policy.since(at)).await.unwrap();
            policy.throttled_by(failures)
        };
        // An old failure (outside the window) does not count.
        store.record_passcode_failure(user, now - 100, policy.since(now - 100)).await.unwrap();
        store.record_passcode_failure(user, now, policy.since(now)).await.unwrap();
        assert!(!throttled(now).await);
        store.record_passcode_failure(user, now, policy.since(now)).await.unwrap();
        assert!(throttled(now).await);
        // The window moves on: throttling lifts by itself.
        assert!(!throttled(now + 61).await);
        store.clear_passcode_failures(user).await.unwrap();
        assert!(!throttled(now).await);
    }
}
