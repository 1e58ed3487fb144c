//! The directory: every number provisioned, so that a number nobody
//! provisioned is answered "no such number" from memory, without asking
//! Redis or PostgreSQL (SIP scanners dial random numbers all day, each one
//! new).
//!
//! It is loaded whole (every row of `phone_numbers`, whatever its state)
//! once the invalidation feed is live, and kept complete by it: a change
//! naming a number adds it (a removed number stays until the next load,
//! which only sends it down the ordinary path). When changes may have been
//! missed (the cache is flushed), it is no longer trusted until loaded
//! again. A number it does not hold may still be in a range: the caller
//! looks there next.

use std::{
    collections::HashSet,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        RwLock,
    },
};

use tokio::sync::Notify;

use super::RouteCache;
use crate::domain::{Resolver, E164};

/// An E.164 number as an integer: at most 15 digits, the first never 0.
fn key(number: &E164) -> u64 {
    number
        .as_str()
        .bytes()
        .skip(1)
        .fold(0u64, |n, digit| n * 10 + u64::from(digit - b'0'))
}

#[derive(Default)]
pub(super) struct Directory {
    numbers: RwLock<HashSet<u64, foldhash::fast::RandomState>>,
    /// Whether `numbers` holds every provisioned number.
    complete: AtomicBool,
    /// Bumped whenever it stops being complete: a load that began before
    /// is not installed.
    epoch: AtomicU64,
    /// Woken when it stops being complete.
    lost: Notify,
}

impl Directory {
    /// Whether `number` is known to be provisioned by no row.
    pub(super) fn rules_out(&self, number: &E164) -> bool {
        self.complete.load(Ordering::Acquire)
            && !self
                .numbers
                .read()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .contains(&key(number))
    }

    /// A change named `number`: it may be provisioned now.
    pub(super) fn saw(&self, number: &E164) {
        self.numbers
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(key(number));
    }

    /// Changes may have been missed: not trusted until loaded again.
    pub(super) fn lose(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.complete.store(false, Ordering::Release);
        metrics::gauge!("switchboard_cache_directory_numbers").set(0.0);
        // a permit, kept if the loader is not waiting yet
        self.lost.notify_one();
    }
}

impl<R: Resolver> RouteCache<R> {
    /// Where a load of the directory begins: pass it to
    /// [`install_directory`](Self::install_directory) with what it read.
    pub fn directory_epoch(&self) -> u64 {
        self.directory.epoch.load(Ordering::Acquire)
    }

    /// Installs every provisioned number, read since `epoch`; with the
    /// numbers changes added meanwhile. Returns false (nothing installed)
    /// if changes may have been missed since the load began.
    pub fn install_directory(&self, numbers: Vec<E164>, epoch: u64) -> bool {
        let directory = &self.directory;
        let mut held = directory
            .numbers
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if directory.epoch.load(Ordering::Acquire) != epoch {
            return false;
        }
        held.extend(numbers.iter().map(key));
        metrics::gauge!("switchboard_cache_directory_numbers").set(held.len() as f64);
        directory.complete.store(true, Ordering::Release);
        true
    }

    /// Whether the directory holds every provisioned number.
    pub fn directory_complete(&self) -> bool {
        self.directory.complete.load(Ordering::Acquire)
    }

    /// How many numbers the directory holds, if it is complete.
    pub fn directory_len(&self) -> Option<usize> {
        self.directory_complete().then(|| {
            self.directory
                .numbers
                .read()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .len()
        })
    }

    /// Resolves when the directory is not complete (at once if it is not
    /// now), for whoever loads it.
    pub async fn directory_lost(&self) {
        let lost = self.directory.lost.notified();
        if self.directory_complete() {
            lost.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::cache::test_support::*;

    fn e164(number: &str) -> E164 {
        E164::from_canonical(number).unwrap()
    }

    #[test]
    fn keys_are_the_digits() {
        assert_eq!(key(&e164("+14155550100")), 14_155_550_100);
        assert_eq!(key(&e164("+999999999999999")), 999_999_999_999_999);
    }

    #[tokio::test]
    async fn a_complete_directory_rules_out_what_it_does_not_hold() {
        let cache = cache_over(Some("Reception"), None, settings());
        let (known, unknown) = (e164("+14155550100"), e164("+14155550199"));
        // not loaded: nothing is ruled out
        assert!(!cache.directory.rules_out(&unknown));
        let epoch = cache.directory_epoch();
        assert!(cache.install_directory(vec![known.clone()], epoch));
        assert!(cache.directory.rules_out(&unknown));
        assert!(!cache.directory.rules_out(&known));
        // provisioned after the load: the change adds it
        cache.apply(&Change::Number(unknown.clone())).await;
        assert!(!cache.directory.rules_out(&unknown));
    }

    #[tokio::test]
    async fn a_flush_during_a_load_keeps_it_from_being_installed() {
        let cache = cache_over(Some("Reception"), None, settings());
        let epoch = cache.directory_epoch();
        cache.flush();
        assert!(!cache.install_directory(vec![e164("+14155550100")], epoch));
        assert!(!cache.directory_complete());
        // loaded again after the flush: installed
        let epoch = cache.directory_epoch();
        assert!(cache.install_directory(vec![e164("+14155550100")], epoch));
        // a later flush: no longer trusted, and its loader is woken
        let lost = cache.directory_lost();
        cache.flush();
        tokio::time::timeout(std::time::Duration::from_secs(5), lost)
            .await
            .expect("woken");
        assert!(!cache.directory.rules_out(&e164("+14155550199")));
    }
}
