//! The clients following live output on this node, and their wake-ups: a
//! follower of an action's output, or of a batch's, waits on a counter that
//! grows when a piece of it is stored (by this node's gateway, or, through
//! `cluster`, another node's) or when the action ends. A wake-up carries
//! nothing: the follower reads what is new from the store, at its own
//! pace, so a slow reader never holds anything up and a lost wake-up costs
//! at most the follower's poll (`api::output::POLL`).
//!
//! This module never reads or writes state, and never blocks a sender.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

/// What a follower follows.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Followed {
    /// Every command of one action.
    Action(String),
    /// Every action of one batch.
    Batch(String),
}

/// This node's followers, by what they follow.
#[derive(Default, Clone)]
pub struct Followers {
    map: Arc<Mutex<HashMap<Followed, watch::Sender<u64>>>>,
}

/// One follower's wake-ups; leaving drops its entry when it was the last.
pub struct Following {
    followers: Followers,
    followed: Followed,
    /// Changes when something new may be stored.
    pub wake: watch::Receiver<u64>,
}

impl Followers {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Followed, watch::Sender<u64>>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts following `followed`.
    pub fn follow(&self, followed: Followed) -> Following {
        let wake = self
            .lock()
            .entry(followed.clone())
            .or_insert_with(|| watch::channel(0).0)
            .subscribe();
        Following {
            followers: self.clone(),
            followed,
            wake,
        }
    }

    /// Wakes whoever follows `followed` on this node (nobody: nothing).
    pub fn wake(&self, followed: &Followed) {
        if let Some(sender) = self.lock().get(followed) {
            sender.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    /// Clients following something on this node.
    pub fn count(&self) -> usize {
        self.lock().values().map(|s| s.receiver_count()).sum()
    }
}

impl Drop for Following {
    fn drop(&mut self) {
        let mut map = self.followers.lock();
        // This follower's receiver is still counted until it drops.
        if map
            .get(&self.followed)
            .is_some_and(|sender| sender.receiver_count() <= 1)
        {
            map.remove(&self.followed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn followers_are_woken_and_forgotten_when_they_leave() {
        let followers = Followers::default();
        let action = Followed::Action("a".into());
        let mut one = followers.follow(action.clone());
        let two = followers.follow(action.clone());
        assert_eq!(followers.count(), 2);
        followers.wake(&action);
        followers.wake(&Followed::Batch("b".into()));
        one.wake.changed().await.unwrap();
        drop(two);
        assert_eq!(followers.count(), 1);
        drop(one);
        assert_eq!(followers.count(), 0);
        assert!(followers.lock().is_empty(), "no entry is left behind");
    }
}
