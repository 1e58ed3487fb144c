//! Callers in L2: one key per organization and phone (`…:c:<org>:<phone>`),
//! the customer or "not a customer", read and filled like route parts.

use std::{sync::Arc, time::Instant};

use redis::AsyncCommands;
use serde::{Deserialize, Serialize};

use super::{decode, encode, RedisTier};
use crate::domain::{Customer, OrgId, ResolveError, Resolver, E164};
use crate::telemetry::series::HitTier;

/// What L2 holds for a caller: the customer's fields (the phone is the
/// key's), or that the organization has no customer with this phone. No
/// TTL of its own for strangers: adding a customer is in the change log,
/// which overwrites this.
#[derive(Serialize, Deserialize)]
enum CallerEntry {
    Customer {
        id: uuid::Uuid,
        name: Option<String>,
        email: Option<String>,
    },
    Stranger,
}

impl CallerEntry {
    fn of(customer: Option<&Customer>) -> Self {
        match customer {
            Some(c) => CallerEntry::Customer {
                id: c.id,
                name: c.name.clone(),
                email: c.email.clone(),
            },
            None => CallerEntry::Stranger,
        }
    }

    fn into_customer(self, phone: &E164) -> Option<Arc<Customer>> {
        match self {
            CallerEntry::Customer { id, name, email } => Some(Arc::new(Customer {
                id,
                phone: phone.clone(),
                name,
                email,
            })),
            CallerEntry::Stranger => None,
        }
    }
}

impl<R: Resolver> RedisTier<R> {
    /// What L2 holds for a caller: `None` when nothing usable (a miss, a
    /// tombstone, Redis not answering), else the customer or a stranger.
    async fn cached_caller(&self, key: String, phone: &E164) -> Option<Option<Arc<Customer>>> {
        let raw: Option<Vec<u8>> = self
            .command("get_caller", |mut c| async move { c.get(key).await })
            .await
            .flatten();
        let entry: CallerEntry = decode(raw.as_deref()?)?;
        Some(entry.into_customer(phone))
    }

    /// L2's caller, else PostgreSQL's, which is then written to L2 off the
    /// call path.
    pub(super) async fn caller(
        &self,
        org_id: OrgId,
        phone: &E164,
    ) -> Result<Option<Arc<Customer>>, ResolveError> {
        if self.settings.ttl.is_zero() {
            return self.inner.resolve_caller(org_id, phone).await;
        }
        let started = Instant::now();
        let key = self.settings.caller_key(org_id, phone);
        if let Some(customer) = self.cached_caller(key.clone(), phone).await {
            count_caller_hit(HitTier::L2, started);
            return Ok(customer);
        }
        metrics::counter!("switchboard_caller_cache_misses_total", "tier" => "l2").increment(1);
        let started = Instant::now();
        let customer = self.inner.resolve_caller(org_id, phone).await?;
        count_caller_hit(HitTier::L3, started);
        let entry = encode(&CallerEntry::of(customer.as_deref()));
        self.write_if_absent(vec![(key, entry, self.settings.ttl)]);
        Ok(customer)
    }

    /// L2's caller, else PostgreSQL's, without filling L2.
    pub(super) async fn peek_cached_caller(
        &self,
        org_id: OrgId,
        phone: &E164,
    ) -> Result<Option<Arc<Customer>>, ResolveError> {
        if !self.settings.ttl.is_zero() {
            let key = self.settings.caller_key(org_id, phone);
            if let Some(customer) = self.cached_caller(key, phone).await {
                return Ok(customer);
            }
        }
        self.inner.peek_caller(org_id, phone).await
    }
}

/// Counts a caller lookup answered by `tier`, timed from `started`.
fn count_caller_hit(tier: HitTier, started: Instant) {
    let tier: &'static str = tier.into();
    metrics::counter!("switchboard_caller_cache_hits_total", "tier" => tier).increment(1);
    metrics::histogram!("switchboard_caller_cache_lookup_seconds", "tier" => tier)
        .record(started.elapsed().as_secs_f64());
}
