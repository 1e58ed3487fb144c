//! Invalidation: a change from the change log applied to L1 at once, and
//! evicted from the tiers below behind it (settling meanwhile); and
//! flushing everything, for when changes may have been missed.
//!
//! A changed agent or organization L1 holds is *swapped*: the new version
//! is read from the source and put in place of the old, which answers
//! meanwhile, so that a change does not make the next calls for every
//! number it touches wait for a reload. The old version answers at most
//! [`SWAP_WITHIN`]: a read that fails or takes longer evicts it, as any
//! other change does. Changes to one agent or organization that arrive
//! while its swap reads are coalesced: one more read follows, for all of
//! them. The invalidation listener reads the new versions itself, on its
//! own session, as soon as the notification arrives
//! ([`RouteCache::apply_with`]): then the swap needs no read of its own,
//! and waits neither for the pool nor for this runtime.

use std::{
    sync::{atomic::Ordering, Arc},
    time::{Duration, Instant},
};

use super::{
    load::Part,
    settle::{stripe, Kind},
    storage::Entry,
    RouteCache,
};
use crate::domain::{Agent, Change, Organization, Resolver, Versions};

/// Longest an agent or organization a change replaced is answered in its
/// old version while the new one is read.
pub const SWAP_WITHIN: Duration = Duration::from_millis(25);

/// A swap in progress: which part, and whether another change to it
/// arrived since its read began.
pub(super) type Swaps = std::sync::Mutex<std::collections::HashMap<(Kind, uuid::Uuid), bool>>;

impl<R: Resolver> RouteCache<R> {
    /// Evicts what `change` affects, here and in the tiers below. Returns
    /// once L1 has evicted it, the change applied: from then on no answer
    /// comes from a copy older than it, except an agent or organization
    /// being swapped for its new version, for [`SWAP_WITHIN`] at most. The tiers below (a Redis write)
    /// follow in a task of their own; until they have, L1 reads what the
    /// change names from the source, past them. With L1 off, returns once
    /// the tiers below have evicted it.
    pub async fn apply(&self, change: &Change) {
        self.apply_with(change, &Versions::default()).await;
    }

    /// [`Self::apply`], where `versions` may hold the new version of the
    /// agent or organization `change` names, read after the change
    /// committed: that version is swapped in at once, without a read.
    pub async fn apply_with(&self, change: &Change, versions: &Versions) {
        if let Change::Range(_) = change {
            // held whole, whether L1 keeps routes or not
            self.ranges_changed();
            self.inner.invalidate(change).await;
            return;
        }
        if let Change::Number(number) = change {
            self.directory.saw(number);
        }
        if !self.enabled() {
            self.inner.invalidate(change).await;
            return;
        }
        let stripe = match change {
            Change::Number(number) => stripe(Kind::Number, number),
            Change::Agent(id) => stripe(Kind::Agent, id),
            Change::Organization(id) => stripe(Kind::Organization, id),
            Change::Customer(org_id, phone) => stripe(Kind::Caller, &(*org_id, phone.clone())),
            Change::Range(_) => unreachable!("applied above"),
        };
        let Some(cache) = self.me.upgrade() else {
            return; // being dropped: nothing left to keep fresh
        };
        let settled = Self::begin_settling(cache.clone(), stripe);
        match change {
            Change::Number(number) => self.numbers.invalidate(number).await,
            Change::Agent(id) => {
                let read = versions.agents.get(id).cloned();
                Self::swap::<Agent>(cache, *id, read, versions.took).await;
            }
            Change::Organization(id) => {
                let read = versions.organizations.get(id).cloned();
                Self::swap::<Organization>(cache, *id, read, versions.took).await;
            }
            Change::Customer(org_id, phone) => self.forget_caller(*org_id, phone).await,
            Change::Range(_) => unreachable!("applied above"),
        }
        let change = change.clone();
        self.spawn(async move {
            settled.cache.inner.invalidate(&change).await;
            drop(settled);
        });
    }

    /// Whether applying `change` would swap an agent or organization L1
    /// holds for its new version: what is worth reading for
    /// [`Self::apply_with`].
    pub fn would_swap(&self, change: &Change) -> bool {
        self.enabled()
            && match change {
                Change::Agent(id) => self.agents.contains_key(id),
                Change::Organization(id) => self.organizations.contains_key(id),
                _ => false,
            }
    }

    /// Replaces the agent or organization `id`, changed, with its new
    /// version: `read` (`Some(None)`: gone), or else read from the source
    /// in a task of its own. Evicts it instead if L1 does not hold it, or
    /// if the read fails or takes longer than [`SWAP_WITHIN`]. A change to
    /// it while a swap reads it makes that swap read again (a version read
    /// along with the change is then not used: it may be older than what
    /// the running swap is about to put in place).
    async fn swap<T: Part>(
        cache: Arc<Self>,
        id: T::Id,
        read: Option<Option<Arc<T>>>,
        took: Duration,
    ) {
        let key = (T::KIND, T::uuid(id));
        let held = {
            let mut swaps = cache.swaps.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(again) = swaps.get_mut(&key) {
                *again = true;
                return;
            }
            let held = T::kept(&cache).contains_key(&id);
            if held && read.is_none() {
                swaps.insert(key, false);
            }
            held
        };
        if !held {
            // nothing to answer meanwhile: evicted as any change
            T::kept(&cache).invalidate(&id).await;
            return;
        }
        let started = Instant::now();
        if let Some(read) = read {
            match read {
                Some(new) => T::kept(&cache).insert(id, Entry::new(new, started)).await,
                None => T::kept(&cache).invalidate(&id).await,
            }
            metrics::histogram!("switchboard_cache_swap_seconds").record(took.as_secs_f64());
            return;
        }
        let task = cache.clone();
        cache.spawn(async move {
            let cache = task;
            let kept = T::kept(&cache);
            loop {
                let left = SWAP_WITHIN.saturating_sub(started.elapsed());
                let read = tokio::time::timeout(left, T::read(cache.inner.source(), id)).await;
                // another change meanwhile: this read may predate it
                if cache.swap_again(key) && !left.is_zero() {
                    continue;
                }
                match read {
                    Ok(Ok(Some(new))) => {
                        kept.insert(id, Entry::new(new, Instant::now())).await;
                        metrics::histogram!("switchboard_cache_swap_seconds")
                            .record(started.elapsed().as_secs_f64());
                    }
                    // gone, unreadable, or too slow: evicted
                    _ => kept.invalidate(&id).await,
                }
                // a change that arrived while it was put in place reads
                // again; otherwise the swap is over
                if !cache.swap_again(key) {
                    cache
                        .swaps
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(&key);
                    return;
                }
            }
        });
    }

    /// Whether another change to `key` arrived since its swap last read;
    /// clears the mark.
    fn swap_again(&self, key: (Kind, uuid::Uuid)) -> bool {
        let mut swaps = self.swaps.lock().unwrap_or_else(|p| p.into_inner());
        swaps
            .get_mut(&key)
            .map(|again| std::mem::replace(again, false))
            .unwrap_or(false)
    }

    /// Evicts everything: for when changes may have been missed.
    pub fn flush(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        for stripe in &self.stripes {
            stripe.fetch_add(1, Ordering::AcqRel);
        }
        self.numbers.invalidate_all();
        self.agents.invalidate_all();
        self.organizations.invalidate_all();
        self.callers.invalidate_all();
        self.ranges_changed();
        self.directory.lose();
        metrics::counter!("switchboard_cache_flushes_total").increment(1);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use uuid::Uuid;

    use crate::routing::cache::test_support::*;

    #[tokio::test]
    async fn each_kind_of_change_evicts_what_it_names() {
        let cache = cache_over(Some("Reception"), None, settings());
        let changes = [
            Change::Number(number()),
            Change::Agent(crate::domain::AgentId(Uuid::from_u128(2))),
            Change::Organization(crate::domain::OrgId(Uuid::from_u128(1))),
        ];
        for (i, change) in changes.iter().enumerate() {
            cache.resolve(&number()).await.unwrap();
            // the agent and the organization both renamed, one named in the
            // change: a number change reloads both, the others their own
            let name = format!("v{i}");
            let mut renamed = route("+14155550100", &name);
            let mut org = (*renamed.organization).clone();
            org.name = name.clone();
            renamed.organization = Arc::new(org);
            cache.inner().routes.lock().unwrap()[0] = renamed;
            cache.apply(change).await;
            let resolved = cache.resolve(&number()).await.unwrap().unwrap();
            let (agent, org) = (&resolved.agent.name, &resolved.organization.name);
            match change {
                Change::Number(_) => assert_eq!((agent, org), (&name, &name)),
                Change::Agent(_) => assert_eq!(agent, &name),
                Change::Organization(_) => assert_eq!(org, &name),
                Change::Customer(..) | Change::Range(_) => unreachable!("not among the changes"),
            }
        }
    }

    fn agent_of(route: Option<Route>) -> String {
        route.expect("routed").agent.name.clone()
    }

    /// Waits (5 s at most) until `number()` is answered with the agent
    /// `name`.
    async fn swapped_to(cache: &crate::routing::RouteCache<Table>, name: &str) {
        let swapped = async {
            while agent_of(cache.resolve(&number()).await.unwrap()) != name {
                tokio::task::yield_now().await;
            }
        };
        tokio::time::timeout(std::time::Duration::from_secs(5), swapped)
            .await
            .unwrap_or_else(|_| panic!("{name} never swapped in"));
    }

    /// Holds reads of agents at a gate of `permits`.
    fn hold_agent_reads(cache: &crate::routing::RouteCache<Table>) -> Arc<tokio::sync::Semaphore> {
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        *cache.inner().part_gate.lock().unwrap() = Some(gate.clone());
        gate
    }

    #[tokio::test]
    async fn a_changed_agent_answers_in_its_old_version_until_its_new_one_is_swapped_in() {
        let cache = cache_over(Some("Reception"), None, settings());
        cache.resolve(&number()).await.unwrap();
        let gate = hold_agent_reads(&cache);
        cache.inner().routes.lock().unwrap()[0] = route("+14155550100", "Front desk");
        let reads_before = cache
            .inner()
            .part_reads
            .load(std::sync::atomic::Ordering::SeqCst);
        // a burst of changes to one agent while its new version is read
        let agent = Change::Agent(crate::domain::AgentId(Uuid::from_u128(2)));
        for _ in 0..5 {
            cache.apply(&agent).await;
        }
        // answered at once, in the old version, nothing waiting for a read
        assert_eq!(
            agent_of(cache.resolve(&number()).await.unwrap()),
            "Reception"
        );
        gate.add_permits(10);
        swapped_to(&cache, "Front desk").await;
        // the first read, and one more for the changes that arrived during it
        let reads = cache
            .inner()
            .part_reads
            .load(std::sync::atomic::Ordering::SeqCst);
        assert_eq!(reads - reads_before, 2);
    }

    /// Versions read along with a change to `agent` (`None`: gone).
    fn read_along(agent: Option<&str>) -> crate::domain::Versions {
        let id = crate::domain::AgentId(Uuid::from_u128(2));
        let mut versions = crate::domain::Versions::default();
        let agent = agent.map(|name| route("+14155550100", name).agent);
        versions.agents.insert(id, agent);
        versions
    }

    #[tokio::test]
    async fn a_version_read_along_with_a_change_is_swapped_in_without_a_read() {
        let cache = cache_over(Some("Reception"), None, settings());
        cache.resolve(&number()).await.unwrap();
        // the source is down: only the version read along can answer
        cache
            .inner()
            .down
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let id = crate::domain::AgentId(Uuid::from_u128(2));
        assert!(cache.would_swap(&Change::Agent(id)));
        cache
            .apply_with(&Change::Agent(id), &read_along(Some("Front desk")))
            .await;
        assert_eq!(
            agent_of(cache.resolve(&number()).await.unwrap()),
            "Front desk",
            "in place when the change is applied"
        );
        assert_eq!(
            cache
                .inner()
                .part_reads
                .load(std::sync::atomic::Ordering::SeqCst),
            0,
            "no read of the cache's own"
        );
        // read along as gone: evicted
        cache
            .apply_with(&Change::Agent(id), &read_along(None))
            .await;
        assert!(!cache.agents.contains_key(&id));
        assert!(!cache.would_swap(&Change::Agent(id)), "not held any more");
    }

    #[tokio::test]
    async fn a_version_read_along_while_a_swap_reads_leaves_it_to_that_swap() {
        let cache = cache_over(Some("Reception"), None, settings());
        cache.resolve(&number()).await.unwrap();
        let gate = hold_agent_reads(&cache);
        let id = crate::domain::AgentId(Uuid::from_u128(2));
        // its read waits at the gate
        cache.apply(&Change::Agent(id)).await;
        // a later change arrives with a version read along; the source
        // meanwhile holds a newer one still, which the running swap must
        // read again and put in place, not the version read along
        cache
            .apply_with(&Change::Agent(id), &read_along(Some("Front desk")))
            .await;
        assert_eq!(
            agent_of(cache.resolve(&number()).await.unwrap()),
            "Reception",
            "the old version answers until the running swap ends"
        );
        cache.inner().routes.lock().unwrap()[0] = route("+14155550100", "Night line");
        gate.add_permits(10);
        swapped_to(&cache, "Night line").await;
    }

    #[tokio::test]
    async fn an_agent_whose_new_version_cannot_be_read_in_time_is_evicted() {
        let cache = cache_over(Some("Reception"), None, settings());
        cache.resolve(&number()).await.unwrap();
        let _held = hold_agent_reads(&cache);
        let id = crate::domain::AgentId(Uuid::from_u128(2));
        cache.apply(&Change::Agent(id)).await;
        assert!(
            cache.agents.contains_key(&id),
            "the old version answers meanwhile"
        );
        let started = std::time::Instant::now();
        let evicted = async {
            while cache.agents.contains_key(&id) {
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
        };
        tokio::time::timeout(std::time::Duration::from_secs(5), evicted)
            .await
            .expect("evicted past the bound");
        assert!(started.elapsed() >= super::SWAP_WITHIN / 2);
    }
}
