//! The vocabulary every other module speaks, on the ground floor: it imports
//! nothing else from the crate.
//!
//! * [`E164`]: a phone number, parsed once at the edge;
//! * [`Route`], [`Organization`], [`Agent`], [`Customer`]: what a number
//!   resolves to, and [`ResolveError`] when it cannot be read;
//! * [`Resolver`] (routes and callers, through the cache tiers) and
//!   [`Directory`] (calls, from PostgreSQL), with [`Change`] for what the
//!   change log invalidates and [`Peeked`] for a look that changes nothing;
//! * [`event`]: the call and usage events the recorder writes;
//! * [`policy`]: an organization's call workflow (rules, schedules, caller
//!   lists, splits) and whether a rule matches a call.

mod e164;
pub mod event;
mod ids;
pub mod policy;
mod resolver;
mod route;

pub use e164::{Method, Normalization, NumberError, Region, RegionSet, E164, MAX_INPUT_BYTES};
pub use event::{CallEnded, CallOpened, EndReason, Event, Metric, Usage};
pub use ids::{AgentId, CallId, OrgId};
pub use resolver::{Change, Directory, Peeked, Resolver, Tier, Versions};
pub use route::{
    Agent, Customer, Inactive, NumberRange, Organization, PlanTier, Provisioned, ResolveError,
    Route,
};
