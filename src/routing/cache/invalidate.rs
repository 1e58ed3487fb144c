//! Invalidation: a change from the change log evicted from L1 at once, and
//! from the tiers below behind it (settling meanwhile); and flushing
//! everything, for when changes may have been missed.

use std::sync::atomic::Ordering;

use super::{
    settle::{stripe, Kind},
    RouteCache,
};
use crate::domain::{Change, Resolver};

impl<R: Resolver> RouteCache<R> {
    /// Evicts what `change` affects, here and in the tiers below. Returns
    /// once L1 has evicted it, the change applied: from then on no answer
    /// comes from a copy older than it. The tiers below (a Redis write)
    /// follow in a task of their own; until they have, L1 reads what the
    /// change names from the source, past them. With L1 off, returns once
    /// the tiers below have evicted it.
    pub async fn apply(&self, change: &Change) {
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
        let settled = Self::begin_settling(cache, stripe);
        match change {
            Change::Number(number) => self.numbers.invalidate(number).await,
            Change::Agent(id) => self.agents.invalidate(id).await,
            Change::Organization(id) => self.organizations.invalidate(id).await,
            Change::Customer(org_id, phone) => self.forget_caller(*org_id, phone).await,
            Change::Range(_) => unreachable!("applied above"),
        }
        let change = change.clone();
        self.spawn(async move {
            settled.cache.inner.invalidate(&change).await;
            drop(settled);
        });
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
}
