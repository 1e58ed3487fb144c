//! A batch: events taken from the queue together, still grouped by the RPC
//! that sent them.
//!
//! The batcher writes a batch as one statement (or one spool append), but
//! answers each RPC on its own: when neither PostgreSQL nor the spool takes
//! the batch, the parts with a waiter are refused and their events dropped,
//! while the parts nobody waits for are kept. Taking parts out never
//! reorders what stays.

use std::time::Instant;

use super::{event::Event, Envelope, RecordError, Waiter};

#[derive(Default)]
pub(super) struct Batch {
    /// Every part's events, part after part.
    pub(super) events: Vec<Event>,
    /// One per envelope, in queue order.
    parts: Vec<Part>,
    /// The earliest `write_by` of the parts' waiters, kept as parts come
    /// and go: the batcher asks for it at every envelope it takes.
    write_by: Option<Instant>,
}

/// One envelope's share of a batch.
struct Part {
    /// How many of the batch's events are its (the next ones in order).
    len: usize,
    /// Who waits for them to be durable, if anyone.
    waiter: Option<Waiter>,
}

impl Batch {
    pub(super) fn push(&mut self, envelope: Envelope) {
        self.push_part(Part {
            len: envelope.events.len(),
            waiter: envelope.durable,
        });
        self.events.extend(envelope.events);
    }

    fn push_part(&mut self, part: Part) {
        if let Some(waiter) = &part.waiter {
            self.write_by = Some(
                self.write_by
                    .map_or(waiter.write_by, |at| at.min(waiter.write_by)),
            );
        }
        self.parts.push(part);
    }

    pub(super) fn is_empty(&self) -> bool {
        self.parts.is_empty()
    }

    /// When the batch must go to the spool for its earliest waiter to be
    /// answered in time.
    pub(super) fn write_by(&self) -> Option<Instant> {
        self.write_by
    }

    /// Takes out the oldest parts, up to `limit` events (at least one part:
    /// an envelope is never split).
    pub(super) fn take_front(&mut self, limit: usize) -> Batch {
        let mut events = 0;
        self.take_parts(|part| {
            let take = events < limit;
            if take {
                events += part.len;
            }
            take
        })
    }

    /// Takes out the parts somebody waits for.
    pub(super) fn take_durable(&mut self) -> Batch {
        self.take_parts(|part| part.waiter.is_some())
    }

    /// Takes out the parts whose RPC gave up (its deadline passed, its
    /// client went away): it was not acknowledged, so its events must not
    /// be recorded.
    pub(super) fn take_gone(&mut self) -> Batch {
        let now = Instant::now();
        self.take_parts(|part| part.waiter.as_ref().is_some_and(|w| w.gone(now)))
    }

    /// Takes out the parts `take` picks, with their events; the others
    /// stay, in their order.
    fn take_parts(&mut self, mut take: impl FnMut(&Part) -> bool) -> Batch {
        let mut kept = Batch::default();
        let mut taken = Batch::default();
        let mut events = std::mem::take(&mut self.events).into_iter();
        for part in std::mem::take(&mut self.parts) {
            let into = if take(&part) { &mut taken } else { &mut kept };
            into.events.extend(events.by_ref().take(part.len));
            into.push_part(part);
        }
        *self = kept;
        taken
    }

    /// Tells every waiter its events are durable. Waiters that gave up are
    /// ignored.
    pub(super) fn acknowledge(self) {
        self.answer(|| Ok(()));
    }

    /// Refuses every waiter with `error`, counting each refused RPC.
    pub(super) fn refuse(self, error: &RecordError) {
        self.answer(|| {
            error.count();
            Err(error.clone())
        });
    }

    /// Tells the waiters (if they still listen) that their deadline passed
    /// first. Not counted as refused: the RPC had given up.
    pub(super) fn abandon(self) {
        self.answer(|| Err(RecordError::Expired));
    }

    fn answer(self, mut result: impl FnMut() -> Result<(), RecordError>) {
        for waiter in self.parts.into_iter().filter_map(|part| part.waiter) {
            let _ = waiter.reply.send(result());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use tokio::sync::oneshot;
    use uuid::Uuid;

    use super::*;
    use crate::{
        domain::{Metric, Usage},
        recorder::SPOOL_MARGIN,
    };

    fn usage(n: u128) -> Event {
        Event::Usage(Usage {
            id: Uuid::from_u128(n),
            org_id: crate::domain::OrgId(Uuid::from_u128(1)),
            call_id: crate::domain::CallId(Uuid::from_u128(2)),
            metric: Metric::ALL[0],
            quantity: 1.0,
            occurred_at: SystemTime::UNIX_EPOCH,
        })
    }

    /// A batch of envelopes of `sizes` events each (numbered in order),
    /// every other one with a waiter, and the waiters' receivers.
    fn batch(sizes: &[usize]) -> (Batch, Vec<oneshot::Receiver<Result<(), RecordError>>>) {
        let mut batch = Batch::default();
        let mut receivers = Vec::new();
        let mut n = 0;
        for (i, size) in sizes.iter().enumerate() {
            let events = (0..*size).map(|_| {
                n += 1;
                usage(n)
            });
            let durable = (i % 2 == 0).then(|| {
                let (reply, receiver) = oneshot::channel();
                receivers.push(receiver);
                Waiter::new(reply, Instant::now() + Duration::from_secs(1))
            });
            batch.push(Envelope {
                events: events.collect(),
                durable,
            });
        }
        (batch, receivers)
    }

    fn ids(batch: &Batch) -> Vec<u128> {
        batch
            .events
            .iter()
            .map(|event| match event {
                Event::Usage(usage) => usage.id.as_u128(),
                _ => unreachable!("only usage here"),
            })
            .collect()
    }

    #[test]
    fn parts_taken_out_keep_their_own_events_in_order() {
        let (mut kept, _receivers) = batch(&[2, 1, 3, 1]);
        let durable = kept.take_durable();
        assert_eq!(ids(&durable), [1, 2, 4, 5, 6]);
        assert_eq!(ids(&kept), [3, 7]);
        assert_eq!((durable.parts.len(), kept.parts.len()), (2, 2));
    }

    #[test]
    fn the_front_of_a_batch_is_whole_envelopes_up_to_the_limit() {
        let (mut rest, _receivers) = batch(&[2, 2, 1]);
        let front = rest.take_front(3);
        assert_eq!(ids(&front), [1, 2, 3, 4], "an envelope is never split");
        assert_eq!(ids(&rest), [5]);
        assert!(rest.take_front(0).is_empty());
    }

    #[test]
    fn refused_waiters_hear_why_and_gone_ones_are_taken_out() {
        let (mut batch, mut receivers) = batch(&[1, 1, 1]);
        drop(receivers.remove(0));
        let gone = batch.take_gone();
        assert_eq!(ids(&gone), [1], "the RPC that gave up");
        assert_eq!(ids(&batch), [2, 3]);
        batch
            .take_durable()
            .refuse(&RecordError::SpoolFull("no room".into()));
        assert!(matches!(
            receivers[0].try_recv(),
            Ok(Err(RecordError::SpoolFull(_)))
        ));
        assert_eq!(ids(&batch), [2], "what nobody waits for stays");
        assert_eq!(batch.write_by(), None, "and nobody waits for it");
    }

    #[test]
    fn the_earliest_time_to_spool_follows_the_parts() {
        let now = Instant::now();
        let mut batch = Batch::default();
        for (events, deadline) in [(1, Some(3)), (1, None), (1, Some(1)), (1, Some(2))] {
            let durable = deadline.map(|s| {
                let (reply, _receiver) = oneshot::channel();
                Waiter::new(reply, now + Duration::from_secs(s))
            });
            batch.push(Envelope {
                events: (0..events).map(|_| usage(1)).collect(),
                durable,
            });
        }
        let earliest = |s| now + Duration::from_secs(s) - SPOOL_MARGIN;
        assert_eq!(batch.write_by(), Some(earliest(1)));
        let front = batch.take_front(2);
        assert_eq!(front.write_by(), Some(earliest(3)));
        assert_eq!(batch.write_by(), Some(earliest(1)));
        let durable = batch.take_durable();
        assert_eq!(durable.write_by(), Some(earliest(1)));
        assert_eq!(batch.write_by(), None);
    }

    #[test]
    fn a_waiter_keeps_time_to_spool_before_its_deadline() {
        let now = Instant::now();
        let (reply, _receiver) = oneshot::channel();
        let waiter = Waiter::new(reply, now + Duration::from_secs(1));
        assert_eq!(waiter.deadline - waiter.write_by, SPOOL_MARGIN);
        let (reply, _receiver) = oneshot::channel();
        let short = Waiter::new(reply, now + Duration::from_millis(100));
        assert!(short.deadline - short.write_by <= Duration::from_millis(25));
        assert!(short.write_by > now);
    }
}
