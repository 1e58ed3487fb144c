//! `explain`: what the router would do with a call to a number, and why,
//! for operators and support, without doing any of it.
//!
//! [`Router::explain`] walks `route_call`'s steps (normalize, resolve, check
//! what is switched off, admit, identify the caller) but looks instead of
//! acting:
//!
//! * the number is read with [`E164::parse_explained`], the same parser,
//!   which also says how it read it;
//! * the route comes from [`Resolver::peek`]: each tier is read without
//!   filling or evicting anything, so explaining a number does not change
//!   which tier answers the next call;
//! * admission is [`Admission::preview`](crate::admission::Admission::preview):
//!   live leases counted, none taken;
//! * nothing is recorded.
//!
//! The refusal it reports is the [`RouteError`] `route_call` would return,
//! so the API layer names it through the one status mapping and the reason
//! is exactly the one a gateway would see.

use std::sync::Arc;

use super::{Field, RouteError, Router};
use crate::{
    admission::Preview,
    domain::{
        Customer, Directory, Normalization, NumberError, Peeked, Region, Resolver, E164,
        MAX_INPUT_BYTES,
    },
};

/// One raw number and how it was read.
#[derive(Debug, Clone)]
pub struct ExplainedNumber {
    /// The input as received.
    pub raw: String,
    pub normalization: Normalization,
    /// The canonical number, or the message `RouteCall`'s
    /// `INVALID_ARGUMENT` would carry.
    pub result: Result<E164, String>,
}

/// What `route_call` would do with a call to a number now.
#[derive(Debug)]
pub struct Explanation {
    pub number: ExplainedNumber,
    /// `None` when no caller number was given.
    pub caller: Option<ExplainedNumber>,
    /// `None` when the number could not be normalized: nothing was looked
    /// up.
    pub lookup: Option<Peeked>,
    /// The caller, when they are a known customer of the route's org.
    pub customer: Option<Arc<Customer>>,
    /// The organization's limit and admission's decision for a new call;
    /// `None` when the number is not provisioned.
    pub admission: Option<Preview>,
    /// How `route_call` would refuse the call now; `None` when it would
    /// route it.
    pub refusal: Option<RouteError>,
}

impl<R: Resolver, D: Directory> Router<R, D> {
    /// Explains what [`Router::route_call`] would do with a call to `number`
    /// from `caller_number` now. Takes no lease, writes nothing, fills and
    /// evicts no cache. A request `route_call` would refuse is explained,
    /// not refused; only inputs too long to echo back are (as
    /// `INVALID_ARGUMENT`), and routing data that cannot be read is an error
    /// as for [`Router::lookup`].
    pub async fn explain(
        &self,
        number: &str,
        default_region: &str,
        caller_number: &str,
    ) -> Result<Explanation, RouteError> {
        // the answer echoes both: bounded as for RouteCall
        for (field, raw) in [
            (Field::Number, number),
            (Field::CallerNumber, caller_number),
        ] {
            if raw.len() > MAX_INPUT_BYTES {
                return Err(RouteError::invalid(field, NumberError::TooLong));
            }
        }
        // RouteCall reads the region first, and refuses a bad one whatever
        // the number
        let region = Region::parse_optional(default_region);
        let (number, called) = match &region {
            Ok(region) => read_number(Field::CalledNumber, number, *region),
            Err(error) => {
                let error = RouteError::invalid(Field::DefaultRegion, error);
                let explained = ExplainedNumber {
                    raw: number.to_string(),
                    normalization: Normalization::default(),
                    result: Err(error.to_string()),
                };
                (explained, Err(error))
            }
        };
        let caller = (!caller_number.is_empty())
            .then(|| read_number(Field::CallerNumber, caller_number, region.ok().flatten()).0);
        let mut explanation = Explanation {
            number,
            caller,
            lookup: None,
            customer: None,
            admission: None,
            refusal: None,
        };
        let called = match called {
            Ok(called) => called,
            Err(refusal) => {
                explanation.refusal = Some(refusal);
                return Ok(explanation);
            }
        };

        let lookup = self.resolver.peek(&called).await?;
        explanation.refusal = match &lookup.route {
            None => Some(RouteError::NotProvisioned(called.clone())),
            Some(route) => route.inactive_part().map(|what| RouteError::Inactive {
                number: called.clone(),
                what,
            }),
        };
        if let Some(route) = &lookup.route {
            let caller = explanation
                .caller
                .as_ref()
                .and_then(|caller| caller.result.as_ref().ok());
            let (preview, customer) = tokio::join!(
                self.admission.preview(&route.organization),
                self.peek_caller(route, caller),
            );
            // RouteCall admits only an active route: its refusal comes first
            if explanation.refusal.is_none() {
                explanation.refusal = RouteError::refusal(&preview.decision);
            }
            explanation.admission = Some(preview);
            explanation.customer = customer;
        }
        explanation.lookup = Some(lookup);
        Ok(explanation)
    }
}

/// Reads `raw` as `route_call` reads its `field`: the explained number, and
/// the canonical number or the refusal `route_call` would answer with.
fn read_number(
    field: Field,
    raw: &str,
    region: Option<Region>,
) -> (ExplainedNumber, Result<E164, RouteError>) {
    let (result, normalization) = E164::parse_explained(raw, region);
    let result = result.map_err(|error| RouteError::invalid(field, error));
    let explained = ExplainedNumber {
        raw: raw.to_string(),
        normalization,
        result: match &result {
            Ok(number) => Ok(number.clone()),
            Err(error) => Err(error.to_string()),
        },
    };
    (explained, result)
}
