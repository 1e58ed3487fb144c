//! Refresh-behind: a route past its TTL, answered from L1 while the
//! invalidation feed is live, is reread behind the answer, one refresh per
//! number and [`BACKGROUND_REFRESHES`] at a time.

use std::{
    collections::HashSet,
    sync::{atomic::Ordering, Mutex},
};

use super::{
    load::Below,
    settle::{parts_of, Snapshot},
    stats::refreshed,
    RouteCache,
};
use crate::domain::{Resolver, Route, E164};

/// Most routes refreshed behind their answers at once. Entries that fall
/// due together (a warm start's, a flush's) become a bounded trickle of
/// reads instead of one per entry at once; a route that finds every slot
/// taken is answered from L1 all the same, and refreshed by a later lookup.
pub const BACKGROUND_REFRESHES: usize = 4;

impl<R: Resolver> RouteCache<R> {
    /// Starts refreshing `number`'s route behind the answer just given from
    /// L1, unless it is being refreshed already or every slot is taken.
    pub(super) fn refresh_behind(&self, number: &E164) {
        let Some(cache) = self.me.upgrade() else {
            return;
        };
        let mut refreshing = self.refreshing.lock().expect("refresh set poisoned");
        if refreshing.contains(number) {
            return;
        }
        let Ok(slot) = self.refreshes.clone().try_acquire_owned() else {
            refreshed("busy");
            return;
        };
        refreshing.insert(number.clone());
        drop(refreshing);
        let number = number.clone();
        self.spawn(async move {
            // the number is released even if the refresh panics
            let _refreshing = Refreshing {
                set: &cache.refreshing,
                number: &number,
            };
            refreshed(cache.refresh(&number).await);
            drop(slot);
        });
    }

    /// Rereads `number`'s route from the next tier and replaces its
    /// entries, unless a change to anything it read ran meanwhile (then
    /// the next lookup reloads it). If the source is unreachable, the stale
    /// copy stays, and is not refreshed again for a moment. Returns how it
    /// went, for `switchboard_cache_background_refreshes_total`.
    async fn refresh(&self, number: &E164) -> &'static str {
        let started_at = self.snapshot();
        let generation = self.generation.load(Ordering::Acquire);
        match self.read_below(number, &started_at).await {
            Ok(Below::Settling) => "raced",
            Ok(Below::Keep(route)) => {
                if self.keep_reread(number, route.as_ref(), &started_at).await {
                    "raced"
                } else {
                    "kept"
                }
            }
            // the store logs the outage; this is counted as "failed"
            Err(_) => {
                if let Some(binding) = self.numbers.get(number).await {
                    self.keep_stale(number, binding, generation).await;
                }
                "failed"
            }
        }
    }

    /// Replaces `number`'s entries with its route just reread from the next
    /// tier, then drops them again if a change to anything it read ran since
    /// `started_at` (see [`Self::undo_if_raced`]). Returns whether it did.
    pub(super) async fn keep_reread(
        &self,
        number: &E164,
        route: Option<&Route>,
        started_at: &Snapshot,
    ) -> bool {
        let parts = parts_of(route);
        let entry = self.keep_parts(route).await;
        self.numbers.insert(number.clone(), entry).await;
        self.undo_if_raced(number, parts, started_at).await
    }

    /// Waits until no refresh behind an answer is running.
    #[cfg(test)]
    pub(super) async fn refreshes_done(&self) {
        let all = u32::try_from(BACKGROUND_REFRESHES).expect("a few slots");
        drop(
            self.refreshes
                .acquire_many(all)
                .await
                .expect("never closed"),
        );
    }
}

/// Takes a number off the refreshing set when its refresh ends, however it
/// ends.
struct Refreshing<'a> {
    set: &'a Mutex<HashSet<E164>>,
    number: &'a E164,
}

impl Drop for Refreshing<'_> {
    fn drop(&mut self) {
        if let Ok(mut set) = self.set.lock() {
            set.remove(self.number);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{sync::Arc, time::Duration};

    use tokio::sync::Notify;
    use uuid::Uuid;

    use super::BACKGROUND_REFRESHES;
    use crate::routing::cache::{test_support::*, RouteCache};

    /// Renames the agent of `number()` in the source.
    fn rename(cache: &RouteCache<Table>, agent_name: &str) {
        cache.inner().routes.lock().unwrap()[0] = route("+14155550100", agent_name);
    }

    /// A cache whose every entry is due a refresh as soon as it is made,
    /// over a source held at `gate`, with `number()` already loaded.
    async fn loaded_and_due(gate: &Arc<Notify>) -> Arc<RouteCache<Table>> {
        let cache = cache_over(Some("Reception"), Some(gate.clone()), due_at_once());
        let first = resolve_in_task(&cache);
        cache.inner().entered.notified().await;
        gate.notify_one();
        assert_eq!(
            first.await.unwrap().unwrap().unwrap().agent.name,
            "Reception"
        );
        cache
    }

    #[tokio::test]
    async fn a_route_past_its_ttl_is_answered_at_once_and_refreshed_behind() {
        let gate = Arc::new(Notify::new());
        let cache = loaded_and_due(&gate).await;
        rename(&cache, "Front desk");

        // answered while its refresh waits for the source
        for _ in 0..3 {
            let answer = tokio::time::timeout(Duration::from_secs(5), cache.resolve(&number()))
                .await
                .expect("a route due a refresh is answered without waiting for it");
            assert_eq!(answer.unwrap().unwrap().agent.name, "Reception");
        }
        cache.inner().entered.notified().await;
        assert_eq!(
            cache.inner().reads(),
            2,
            "one refresh, however many lookups"
        );
        gate.notify_one();
        cache.refreshes_done().await;
        assert_eq!(
            cache.resolve(&number()).await.unwrap().unwrap().agent.name,
            "Front desk"
        );
    }

    #[tokio::test]
    async fn a_refresh_racing_a_change_does_not_keep_the_old_row() {
        let gate = Arc::new(Notify::new());
        let cache = loaded_and_due(&gate).await;
        cache.resolve(&number()).await.unwrap(); // starts the refresh
        cache.inner().entered.notified().await; // which has read "Reception"
        rename(&cache, "Front desk");
        cache
            .apply(&Change::Agent(crate::domain::AgentId(Uuid::from_u128(2))))
            .await;
        gate.notify_one();
        cache.refreshes_done().await;
        assert_eq!(reread(&cache, &gate).await, "Front desk");
    }

    #[tokio::test]
    async fn refreshes_behind_answers_are_bounded() {
        let gate = Arc::new(Notify::new());
        let cache = cache_over(None, Some(gate.clone()), due_at_once());
        let numbers: Vec<E164> = (0..3 * BACKGROUND_REFRESHES)
            .map(|i| E164::from_canonical(&format!("+1415555{i:04}")).unwrap())
            .collect();
        let routes = numbers
            .iter()
            .map(|n| route(n.as_str(), "Reception"))
            .collect();
        assert_eq!(cache.preload(routes).await, numbers.len());
        // every entry is due: each lookup is answered, some start a refresh
        for number in &numbers {
            let answer = cache.resolve(number).await.unwrap().unwrap();
            assert_eq!(answer.agent.name, "Reception");
        }
        // the refreshes run (on this test's thread) until they wait at the gate
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert_eq!(
            cache.inner().reads(),
            BACKGROUND_REFRESHES,
            "refreshes beyond the slots are left to later lookups"
        );
        gate.notify_waiters();
    }
}
