//! The closed loop: a fixed number of requests always in flight.

use std::{
    sync::{atomic::Ordering, Arc},
    time::Instant,
};

use switchboard::proto::call_router_client::CallRouterClient;
use tonic::transport::Channel;

use super::tally::Tally;
use crate::{
    calls::{send, Requests},
    cli::LoadArgs,
};

/// `concurrency` workers, each sending its next request when its last one
/// is answered. Only requests sent inside the window count.
pub async fn closed_loop(
    args: &LoadArgs,
    clients: Vec<CallRouterClient<Channel>>,
    concurrency: usize,
    (from, until): (Instant, Instant),
    (tally, run_id): (Arc<Tally>, &str),
) {
    let workers: Vec<_> = (0..concurrency)
        .map(|worker| {
            let mut client = clients[worker % clients.len()].clone();
            let mut requests = Requests::new(args, run_id, &format!("c{worker}"), worker as u64);
            let (tally, deadline) = (tally.clone(), args.deadline);
            tokio::spawn(async move {
                loop {
                    let sent = Instant::now();
                    if sent >= until {
                        break;
                    }
                    let (outgoing, provisioned) = requests.next();
                    let result = send(&mut client, outgoing, deadline).await;
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
