//! The closed loop: a fixed number of requests always in flight.

use std::{
    sync::{atomic::Ordering, Arc},
    time::Instant,
};

use switchboard::proto::call_router_client::CallRouterClient;
use tonic::transport::Channel;

use super::tally::Tally;
use crate::{cli::LoadArgs, client::lookup, dataset::NumberMix};

/// `concurrency` workers, each sending its next request when its last one
/// is answered. Only requests sent inside the window count.
pub async fn closed_loop(
    args: &LoadArgs,
    clients: Vec<CallRouterClient<Channel>>,
    concurrency: usize,
    (from, until): (Instant, Instant),
    tally: Arc<Tally>,
) {
    let workers: Vec<_> = (0..concurrency)
        .map(|worker| {
            let mut client = clients[worker % clients.len()].clone();
            let mut mix = NumberMix::new(args, worker as u64);
            let (tally, deadline) = (tally.clone(), args.deadline);
            tokio::spawn(async move {
                loop {
                    let sent = Instant::now();
                    if sent >= until {
                        break;
                    }
                    let (number, provisioned) = mix.next();
                    let result = lookup(&mut client, number, deadline).await.map(drop);
                    if sent >= from {
                        tally.requests.fetch_add(1, Ordering::Relaxed);
                        tally.answer(result, provisioned, sent);
                    }
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await.expect("load worker panicked");
    }
}
