//! When a request reached the host, not only when its connection's task
//! got to it.
//!
//! Bytes a client sent wait in the socket until the connection's task runs
//! and reads them: on a saturated CPU (or while the process is throttled
//! by its CPU quota) that wait is as long as the runtime's queue, and
//! nothing inside the process sees it. The kernel does: with
//! `SO_TIMESTAMPNS` set on the listening socket (and so on every
//! connection it accepts), each read from a connection comes with the time
//! the kernel received the bytes read last. [`Received`] keeps that time
//! per connection for the [`StreamExecutor`](super::StreamExecutor), which
//! stamps each stream the connection accepts with it.
//!
//! The stamp is the newest segment's in a read, so a request that arrived
//! in an earlier segment of the same read waited longer than it says: the
//! wait is never overstated.

use std::{
    io,
    os::fd::{AsFd, AsRawFd, RawFd},
    pin::Pin,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    task::{ready, Context, Poll},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use nix::sys::{
    socket::{recvmsg, setsockopt, sockopt, ControlMessageOwned, MsgFlags},
    time::TimeSpec,
};
use tokio::{
    io::{AsyncRead, AsyncWrite, Interest, ReadBuf},
    net::TcpStream,
};

/// Longest wait a stamp is taken to say. Past the gate's own bound it makes
/// no difference; a stamp further back (the wall clock stepped between the
/// kernel's stamp and ours) is not a wait.
const LONGEST_WAIT: Duration = Duration::from_secs(1);

/// Most bytes one read takes, held by every connection: some 30 requests.
/// A larger backlog takes more reads (reading 1 KB at a time changed
/// nothing measurable under overload), and a client that opens many
/// connections costs little memory for them.
const LANDING_BYTES: usize = 4 * 1024;

/// Asks the kernel to stamp what every connection `listener` accepts
/// receives. Where it cannot, streams are stamped when their connection's
/// task reads them, as without it.
pub fn stamp_receipts(listener: &impl AsFd) -> io::Result<()> {
    setsockopt(listener, sockopt::ReceiveTimestampns, &true).map_err(io::Error::from)
}

/// When the kernel received the bytes a connection read last.
#[derive(Debug, Clone, Default)]
pub struct Received(Arc<AtomicU64>);

impl Received {
    /// When the bytes read last reached the host, as an [`Instant`] (`now`
    /// less their age); `None` before the first stamped read.
    pub fn arrival(&self, now: Instant) -> Option<Instant> {
        let nanos = self.0.load(Ordering::Relaxed);
        if nanos == 0 {
            return None;
        }
        let age = SystemTime::now()
            .duration_since(UNIX_EPOCH + Duration::from_nanos(nanos))
            .unwrap_or_default();
        if age > LONGEST_WAIT {
            return None;
        }
        now.checked_sub(age)
    }

    fn record(&self, stamp: TimeSpec) {
        let (Ok(secs), Ok(nanos)) = (
            u64::try_from(stamp.tv_sec()),
            u64::try_from(stamp.tv_nsec()),
        ) else {
            return;
        };
        let nanos = secs.saturating_mul(1_000_000_000).saturating_add(nanos);
        self.0.store(nanos, Ordering::Relaxed);
    }
}

/// A TCP connection whose reads keep the kernel's receive stamp in a
/// [`Received`]; writes go straight to the socket.
#[derive(Debug)]
pub struct StampedTcp {
    tcp: TcpStream,
    received: Received,
    /// Room for one `SCM_TIMESTAMPNS` control message.
    control: Vec<u8>,
    /// What one read takes, copied from here into the reader's buffer:
    /// that buffer is uninitialized memory, which safe code must zero
    /// before the kernel may write to it, at a cost far above copying the
    /// few hundred bytes a read brings.
    landing: Box<[u8]>,
}

impl StampedTcp {
    pub fn new(tcp: TcpStream) -> Self {
        Self {
            tcp,
            received: Received::default(),
            control: nix::cmsg_space!(TimeSpec),
            landing: vec![0; LANDING_BYTES].into_boxed_slice(),
        }
    }

    /// The connection's receive stamps, for its streams' executor.
    pub fn received(&self) -> Received {
        self.received.clone()
    }
}

/// One `recvmsg` into `into`: the bytes read, and the kernel's stamp of the
/// newest of them if it gave one.
fn receive(
    fd: RawFd,
    into: &mut [u8],
    control: &mut [u8],
) -> io::Result<(usize, Option<TimeSpec>)> {
    let mut iov = [io::IoSliceMut::new(into)];
    let message = recvmsg::<()>(fd, &mut iov, Some(control), MsgFlags::empty())?;
    let stamp = message.cmsgs().ok().and_then(|mut messages| {
        messages.find_map(|message| match message {
            ControlMessageOwned::ScmTimestampns(stamp) => Some(stamp),
            _ => None,
        })
    });
    Ok((message.bytes, stamp))
}

impl AsyncRead for StampedTcp {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        loop {
            ready!(this.tcp.poll_read_ready(cx))?;
            let fd = this.tcp.as_raw_fd();
            let at_most = buf.remaining().min(this.landing.len());
            let (landing, control) = (&mut this.landing[..at_most], &mut this.control);
            match this
                .tcp
                .try_io(Interest::READABLE, || receive(fd, landing, control))
            {
                Ok((read, stamp)) => {
                    if let Some(stamp) = stamp {
                        this.received.record(stamp);
                    }
                    buf.put_slice(&this.landing[..read]);
                    return Poll::Ready(Ok(()));
                }
                // readiness was stale; try_io has cleared it
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
                Err(error) => return Poll::Ready(Err(error)),
            }
        }
    }
}

impl AsyncWrite for StampedTcp {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        net::TcpListener,
    };

    use super::*;

    /// A connected pair: the accepted end stamped.
    async fn pair() -> (TcpStream, StampedTcp) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        stamp_receipts(&listener).unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (client, StampedTcp::new(server))
    }

    #[tokio::test]
    async fn a_read_says_how_long_its_bytes_waited_in_the_socket() {
        let (mut client, mut server) = pair().await;
        let received = server.received();
        assert_eq!(received.arrival(Instant::now()), None, "nothing read yet");
        let mut buf = [0u8; 64];
        // the kernel turns its stamps on a moment after they are first
        // asked for (a deferred static key): until then, reads say nothing
        let turned_on_by = Instant::now() + Duration::from_secs(5);
        while Instant::now() < turned_on_by {
            client.write_all(b"probe").await.unwrap();
            server.read_exact(&mut buf[..5]).await.unwrap();
            if received.arrival(Instant::now()).is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }

        client.write_all(b"request").await.unwrap();
        let waited = Duration::from_millis(40);
        // the bytes sit in the socket while nothing reads them
        std::thread::sleep(waited);
        let read = server.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..read], b"request");
        let now = Instant::now();
        let arrival = received.arrival(now).expect("stamped by the kernel");
        let age = now - arrival;
        assert!(age >= waited, "waited {waited:?}, stamped {age:?} ago");
        assert!(age < LONGEST_WAIT, "{age:?}");
    }

    #[tokio::test]
    async fn writes_and_the_end_of_the_stream_pass_through() {
        let (mut client, mut server) = pair().await;
        server.write_all(b"answer").await.unwrap();
        server.shutdown().await.unwrap();
        let mut answer = Vec::new();
        client.read_to_end(&mut answer).await.unwrap();
        assert_eq!(answer, b"answer");
        drop(client);
        let mut rest = Vec::new();
        assert_eq!(server.read_to_end(&mut rest).await.unwrap(), 0);
    }

    #[test]
    fn a_stamp_older_than_any_wait_is_not_taken_for_one() {
        let received = Received::default();
        received.record(TimeSpec::new(1, 0));
        assert_eq!(received.arrival(Instant::now()), None);
    }
}
