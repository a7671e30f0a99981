//! Reach's bearer tokens already verified, kept until they expire, so that
//! a busy caller's token is not decoded and its signature checked again on
//! every call. Only what the token itself proves is kept (its claims, which
//! never change); whether the account may still act (disabled, secret
//! rotated, roles) is checked on every call by `admit`, not here. Entries
//! are keyed by the token's SHA-256, so no token is held in memory, and
//! there are never more than `MAX_ENTRIES`: when full, the expired ones go,
//! and if none had expired, all of them.

use std::collections::HashMap;
use std::sync::Mutex;

use sha2::{Digest, Sha256};

use super::Principal;

/// Entries kept at most.
const MAX_ENTRIES: usize = 10_000;

/// Verified tokens by their SHA-256.
#[derive(Default)]
pub struct Verified {
    entries: Mutex<HashMap<[u8; 32], Entry>>,
}

struct Entry {
    principal: Principal,
    /// Unix second from which the token no longer verifies.
    until: u64,
}

impl Verified {
    /// The caller `token` proved when it was verified, while it still would.
    pub fn get(&self, token: &str, now_secs: u64) -> Option<Principal> {
        let key = digest(token);
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let entry = entries.get(&key)?;
        (now_secs < entry.until).then(|| entry.principal.clone())
    }

    /// Keeps what `token` proved, until the Unix second `until`.
    pub fn put(&self, token: &str, principal: &Principal, until: u64, now_secs: u64) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= MAX_ENTRIES {
            entries.retain(|_, entry| now_secs < entry.until);
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
        }
        entries.insert(
            digest(token),
            Entry {
                principal: principal.clone(),
                until,
            },
        );
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Scope;

    fn caller(name: &str) -> Principal {
        Principal {
            tenant_id: "t".into(),
            app_id: Some(name.into()),
            name: name.into(),
            roles: ["Machine.LiveResponse".to_string()].into(),
            generation: Some(1),
            scope: Scope::All,
        }
    }

    #[test]
    fn a_token_is_known_until_it_expires_and_only_that_token() {
        let verified = Verified::default();
        verified.put("token-a", &caller("a"), 1_000, 900);
        assert_eq!(verified.get("token-a", 999), Some(caller("a")));
        assert_eq!(verified.get("token-a", 1_000), None, "expired");
        assert_eq!(verified.get("token-a.", 999), None);
        assert_eq!(verified.get("token-b", 999), None);
    }

    #[test]
    fn it_never_holds_more_than_its_bound() {
        let verified = Verified::default();
        for n in 0..MAX_ENTRIES + 10 {
            verified.put(&format!("token-{n}"), &caller("a"), 2_000, 1_000);
        }
        let held = verified.entries.lock().unwrap().len();
        assert!(held <= MAX_ENTRIES, "{held}");
        // The newest is kept.
        let newest = format!("token-{}", MAX_ENTRIES + 9);
        assert!(verified.get(&newest, 1_000).is_some());
    }
}
