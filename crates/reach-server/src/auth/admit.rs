//! Admitting a verified Reach token on every call: the app or user behind it
//! must still exist in the token's tenant, be enabled and be at the token's
//! generation (a rotated secret, a disabled account or ended sessions revoke
//! every earlier token), and the caller keeps only the roles the account
//! holds now, within its device groups.
//!
//! What the store says of an account is kept in memory (`Admitted`) so that
//! a busy caller does not cost a database read per call, and bounded so
//! that revocation still holds everywhere: an entry serves for at most
//! `ACCOUNT_TTL` (one second), and any change to an account's standing or a
//! device group made through this process's store makes every entry stale
//! at once (`Identities::identities_epoch`). A change made elsewhere (the
//! operator's command, another node of a cluster) takes effect on this node
//! within the TTL. Refusals read from the store (an unknown account) are
//! never kept, and the cache never holds more than `MAX_ACCOUNTS` entries.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{Principal, TokenError};
use crate::store::{Identities, Scope, StoreError};

/// The longest an account's standing read from the store is used without
/// reading it again: the bound on a revocation made on another node or by
/// another process.
pub const ACCOUNT_TTL: Duration = Duration::from_secs(1);

/// Most accounts kept at once; past it, expired entries go, then all.
const MAX_ACCOUNTS: usize = 10_000;

/// What `admit` needs of an account.
#[derive(Debug)]
struct Account {
    tenant_id: String,
    disabled: bool,
    generation: u64,
    roles: Vec<String>,
    /// The tags of its device groups; None when it has no groups (all machines).
    tags: Option<Vec<String>>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Key {
    App(String),
    /// Users are named without case.
    User(String),
}

struct Entry {
    read_at: Instant,
    epoch: u64,
    account: Arc<Account>,
}

/// Accounts recently read for `admit`, per node.
#[derive(Default)]
pub struct Admitted {
    entries: Mutex<HashMap<Key, Entry>>,
}

impl Admitted {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Entry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The account if it was read at `epoch` within the TTL before `now`.
    fn fresh(&self, key: &Key, epoch: u64, now: Instant) -> Option<Arc<Account>> {
        let entries = self.lock();
        let entry = entries.get(key)?;
        (entry.epoch == epoch && now.saturating_duration_since(entry.read_at) < ACCOUNT_TTL)
            .then(|| entry.account.clone())
    }

    fn keep(&self, key: Key, epoch: u64, read_at: Instant, account: Arc<Account>) {
        let mut entries = self.lock();
        if entries.len() >= MAX_ACCOUNTS && !entries.contains_key(&key) {
            entries.retain(|_, e| read_at.saturating_duration_since(e.read_at) < ACCOUNT_TTL);
            if entries.len() >= MAX_ACCOUNTS {
                entries.clear();
            }
        }
        entries.insert(
            key,
            Entry {
                read_at,
                epoch,
                account,
            },
        );
    }
}

/// Why `admit` turned a verified token away.
#[derive(Debug, thiserror::Error)]
pub enum AdmitError {
    /// The account refused the token (disabled, rotated, unknown); said to the caller.
    #[error(transparent)]
    Refused(TokenError),
    /// The store could not be read.
    #[error(transparent)]
    Store(StoreError),
}

fn revoked(why: &str) -> AdmitError {
    AdmitError::Refused(TokenError(format!(
        "The access token is no longer valid: {why}"
    )))
}

/// Reads an account's standing from the store.
async fn read(store: &dyn Identities, key: &Key) -> Result<Account, AdmitError> {
    let (tenant_id, disabled, generation, groups, roles) = match key {
        Key::App(client_id) => match store.get_app(client_id).await {
            Ok(app) => (
                app.tenant_id,
                app.disabled,
                app.token_generation,
                app.device_groups,
                app.roles,
            ),
            Err(StoreError::NotFound(_)) => return Err(revoked("the app no longer exists")),
            Err(err) => return Err(AdmitError::Store(err)),
        },
        Key::User(name) => match store.get_user(name).await {
            Ok(user) => (
                user.tenant_id,
                user.disabled,
                user.token_generation,
                user.device_groups,
                user.roles,
            ),
            Err(StoreError::NotFound(_)) => return Err(revoked("the user no longer exists")),
            Err(err) => return Err(AdmitError::Store(err)),
        },
    };
    let tags = if groups.is_empty() {
        None
    } else {
        let mut tags = Vec::new();
        for group in store
            .list_device_groups(&tenant_id)
            .await
            .map_err(AdmitError::Store)?
        {
            if groups.iter().any(|g| g.eq_ignore_ascii_case(&group.name)) {
                tags.extend(group.tags);
            }
        }
        Some(tags)
    };
    Ok(Account {
        tenant_id,
        disabled,
        generation,
        roles,
        tags,
    })
}

/// Checks a verified Reach token against its account's standing (see the
/// module): refuses a token of a disabled, unknown or re-generated account,
/// keeps only the roles the account holds now, and sets the caller's
/// device-group scope. External issuers' tokens pass unchanged.
pub async fn admit(
    store: &dyn Identities,
    admitted: &Admitted,
    principal: &mut Principal,
) -> Result<(), AdmitError> {
    let Some(generation) = principal.generation else {
        return Ok(());
    };
    let key = match &principal.app_id {
        Some(client_id) => Key::App(client_id.clone()),
        None => Key::User(principal.name.to_lowercase()),
    };
    // The epoch is taken before the read: a change committed during the
    // read leaves the entry at the older epoch, so it is not used again.
    let epoch = store.identities_epoch();
    let now = Instant::now();
    let account = match admitted.fresh(&key, epoch, now) {
        Some(account) => account,
        None => {
            let account = Arc::new(read(store, &key).await?);
            admitted.keep(key, epoch, now, account.clone());
            account
        }
    };
    if account.tenant_id != principal.tenant_id {
        return Err(revoked("its tenant does not match"));
    }
    if account.disabled {
        return Err(revoked("the account is disabled"));
    }
    if account.generation != generation {
        return Err(revoked(
            "it was revoked (the secret was rotated or the account disabled since)",
        ));
    }
    // Roles are what the account holds now: a token claiming more (forged
    // by someone who read the key, or issued before roles were taken away)
    // gets no more than that.
    principal.roles.retain(|role| account.roles.contains(role));
    if let Some(tags) = &account.tags {
        principal.scope = Scope::Tags(tags.clone());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account(generation: u64) -> Arc<Account> {
        Arc::new(Account {
            tenant_id: "t".into(),
            disabled: false,
            generation,
            roles: vec![],
            tags: None,
        })
    }

    #[test]
    fn an_entry_serves_within_the_ttl_at_its_epoch_only() {
        let admitted = Admitted::default();
        let key = Key::App("a".into());
        let start = Instant::now();
        admitted.keep(key.clone(), 7, start, account(1));
        let fresh = |epoch, after| admitted.fresh(&key, epoch, start + after).is_some();
        assert!(fresh(7, Duration::ZERO));
        assert!(fresh(7, ACCOUNT_TTL - Duration::from_millis(1)));
        assert!(!fresh(7, ACCOUNT_TTL), "read again once the TTL has passed");
        assert!(
            !fresh(8, Duration::ZERO),
            "a change here makes it stale at once"
        );
        assert!(admitted.fresh(&Key::User("a".into()), 7, start).is_none());
    }

    #[test]
    fn the_cache_stays_bounded() {
        let admitted = Admitted::default();
        let start = Instant::now();
        for i in 0..MAX_ACCOUNTS {
            admitted.keep(Key::App(i.to_string()), 0, start, account(1));
        }
        let later = start + ACCOUNT_TTL;
        admitted.keep(Key::App("new".into()), 0, later, account(1));
        assert_eq!(admitted.lock().len(), 1, "expired entries made room");
        for i in 0..MAX_ACCOUNTS + 5 {
            admitted.keep(Key::App(i.to_string()), 0, later, account(1));
        }
        assert!(admitted.lock().len() <= MAX_ACCOUNTS);
    }
}
