//! What a refusal leaves of its request: read to its end before its
//! stream is let go ([`Unread`]), by the connection's [`Drain`] when it has
//! not arrived whole.

use std::{
    future::Future,
    pin::Pin,
    sync::{Arc, OnceLock},
    task::{Context, Poll},
};

use futures::{stream::FuturesUnordered, StreamExt};
use hyper::body::Body;
use tokio::sync::mpsc;

/// How much of a refused request is read and dropped: a unary request's
/// message, with room; past it, the stream is let go unread.
const REFUSAL_READS_AT_MOST: usize = 64 * 1024;

/// The rest of a refused request, read to its end before its stream is
/// let go.
///
/// The refusal is sent at once, but the request's body is kept and read
/// to its end. Let go before the request's end, the stream would be reset
/// by h2 (`RST_STREAM(NO_ERROR)`, as HTTP/2 asks of an answer sent early)
/// and remembered for a while (50 streams, one second), to drop the DATA
/// frames still on their way. A daemon refusing thousands a second forgets
/// most of them first, so their DATA frames arrive on streams h2 no longer
/// knows: each is a protocol error h2 answers with a reset of its own and
/// counts, and after 1 024 in a connection's life
/// (`MAX_LOCAL_ERROR_RESET_STREAMS`) it closes the connection
/// (`ENHANCE_YOUR_CALM`, `too_many_internal_resets`), failing every request
/// on it. Read to its end, the request closes its half of the stream and
/// the refusal the other: there is nothing to reset or remember, and the
/// DATA frames' window goes back to the client at once.
///
/// The request has nearly always arrived whole by the time the stream is
/// accepted (h2 reads all there is before it hands streams over), and is
/// read then and there. When it has not (its HEADERS and DATA came in
/// different reads), the rest is read by the connection's [`Drain`]. A
/// client that never ends a request holds one of its own streams
/// (`SWITCHBOARD_MAX_CONCURRENT_STREAMS` bounds them) until it does or its
/// connection closes.
pub struct Unread<B> {
    body: B,
    bytes: usize,
}

impl<B> Unread<B> {
    pub fn new(body: B) -> Self {
        Self { body, bytes: 0 }
    }
}

impl<B: Body + Unpin> Future for Unread<B> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            match Pin::new(&mut self.body).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    self.bytes += frame.data_ref().map_or(0, hyper::body::Buf::remaining);
                    if self.bytes > REFUSAL_READS_AT_MOST {
                        return Poll::Ready(());
                    }
                }
                Poll::Ready(None | Some(Err(_))) => return Poll::Ready(()),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

type Reading = Pin<Box<dyn Future<Output = ()> + Send>>;

/// One connection's refused requests whose rest has not arrived yet
/// ([`Unread`]), read by one task for the whole connection, started with
/// the first of them: a task per refusal would cost about what the
/// refusal saves.
#[derive(Clone, Default)]
pub struct Drain(Arc<OnceLock<mpsc::UnboundedSender<Reading>>>);

impl Drain {
    pub fn hand_over(&self, unread: impl Future<Output = ()> + Send + 'static) {
        let reader = self.0.get_or_init(|| {
            let (reader, handed) = mpsc::unbounded_channel();
            tokio::spawn(drain(handed));
            reader
        });
        let _ = reader.send(Box::pin(unread));
    }
}

/// Reads what is handed over until the connection is gone (its executor
/// and streams dropped) and everything handed over has ended.
async fn drain(mut handed: mpsc::UnboundedReceiver<Reading>) {
    let mut reading = FuturesUnordered::new();
    let mut open = true;
    std::future::poll_fn(|cx| {
        while open {
            match handed.poll_recv(cx) {
                Poll::Ready(Some(unread)) => reading.push(unread),
                Poll::Ready(None) => open = false,
                Poll::Pending => break,
            }
        }
        while let Poll::Ready(Some(())) = reading.poll_next_unpin(cx) {}
        if open || !reading.is_empty() {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use std::{
        convert::Infallible,
        sync::atomic::{AtomicUsize, Ordering},
        time::Duration,
    };

    use hyper::body::{Bytes, Frame};

    use super::*;

    /// A request body arriving in pieces, counting the frames read.
    struct Arriving {
        pieces: mpsc::UnboundedReceiver<Bytes>,
        read: Arc<AtomicUsize>,
    }

    impl Body for Arriving {
        type Data = Bytes;
        type Error = Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            self.pieces.poll_recv(cx).map(|piece| {
                piece.map(|data| {
                    self.read.fetch_add(1, Ordering::SeqCst);
                    Ok(Frame::data(data))
                })
            })
        }
    }

    #[tokio::test]
    async fn a_drain_reads_what_it_is_handed_to_the_end_then_lets_it_go() {
        let drain = Drain::default();
        let read = Arc::new(AtomicUsize::new(0));
        let (send, pieces) = mpsc::unbounded_channel();
        drain.hand_over(Unread::new(Arriving {
            pieces,
            read: read.clone(),
        }));
        for piece in ["first", "second"] {
            send.send(Bytes::from(piece)).unwrap();
        }
        // its end: the body is read to it, then dropped
        drop(send);
        tokio::time::timeout(Duration::from_secs(5), async {
            while Arc::strong_count(&read) > 1 {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("the body let go");
        assert_eq!(read.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_request_past_what_is_read_is_let_go_unread() {
        let read = Arc::new(AtomicUsize::new(0));
        let (send, pieces) = mpsc::unbounded_channel();
        let mut unread = Unread::new(Arriving {
            pieces,
            read: read.clone(),
        });
        let piece = Bytes::from(vec![0; 16 * 1024]);
        for _ in 0..8 {
            send.send(piece.clone()).unwrap();
        }
        // far from its end, and never to come: ready once past the bound
        std::future::poll_fn(|cx| Pin::new(&mut unread).poll(cx)).await;
        assert_eq!(read.load(Ordering::SeqCst), 5);
    }
}
