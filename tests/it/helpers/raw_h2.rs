//! HTTP/2 spoken frame by frame, for what a stock client never does: a
//! request's frames sent apart, thousands of streams written at once.

use std::time::Duration;

use switchboard::proto::LookupNumberRequest;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub const DATA: u8 = 0x0;
pub const HEADERS: u8 = 0x1;
pub const RST_STREAM: u8 = 0x3;
pub const SETTINGS: u8 = 0x4;
pub const PING: u8 = 0x6;
pub const GOAWAY: u8 = 0x7;
pub const END_STREAM: u8 = 0x1;
pub const ACK: u8 = 0x1;
pub const END_HEADERS: u8 = 0x4;

/// One HTTP/2 frame.
pub fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let length = u32::try_from(payload.len()).unwrap().to_be_bytes();
    let mut frame = vec![length[1], length[2], length[3], kind, flags];
    frame.extend(stream.to_be_bytes());
    frame.extend(payload);
    frame
}

/// A `LookupNumber` request's header block (HPACK): the first one's
/// fields as literals the server adds to its table, every later one's as
/// references to those entries, a byte each.
pub fn lookup_headers(first: bool) -> Vec<u8> {
    const FIELDS: [(&str, &str); 6] = [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", "/switchboard.v1.CallRouter/LookupNumber"),
        (":authority", "localhost"),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ];
    if !first {
        // the dynamic table starts at 62, newest first
        return (0..FIELDS.len())
            .map(|i| 0x80 | u8::try_from(62 + FIELDS.len() - 1 - i).unwrap())
            .collect();
    }
    let mut block = Vec::new();
    for (name, value) in FIELDS {
        block.push(0x40);
        for text in [name, value] {
            block.push(u8::try_from(text.len()).unwrap());
            block.extend(text.as_bytes());
        }
    }
    block
}

/// A `LookupNumber` request's body on stream `id`, as tonic sends it: its
/// one gRPC message in a DATA frame, then an empty one ending the stream.
pub fn request_body(id: u32) -> Vec<u8> {
    use prost::Message;
    let message = LookupNumberRequest {
        number: "+19994440002".into(),
        default_region: String::new(),
    }
    .encode_to_vec();
    let mut framed = vec![0];
    framed.extend(u32::try_from(message.len()).unwrap().to_be_bytes());
    framed.extend(message);
    let mut frames = h2_frame(DATA, 0, id, &framed);
    frames.extend(h2_frame(DATA, END_STREAM, id, &[]));
    frames
}

/// What the server sent on the raw connection.
#[derive(Default)]
pub struct Frames {
    /// Streams answered (a HEADERS frame ending the stream).
    pub answered: usize,
    pub resets: usize,
    /// The reason a GOAWAY gave, or that the connection closed.
    pub go_away: Option<String>,
    pub pongs: usize,
}

/// An HTTP/2 connection spoken frame by frame.
pub struct RawH2(pub tokio::net::TcpStream);

impl RawH2 {
    /// Connects with room to send a few megabytes before the server reads.
    pub async fn connect(addr: std::net::SocketAddr) -> Self {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_send_buffer_size(8 << 20).unwrap();
        let mut socket = socket.connect(addr).await.unwrap();
        socket.set_nodelay(true).unwrap();
        socket
            .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            .await
            .unwrap();
        socket
            .write_all(&h2_frame(SETTINGS, 0, 0, &[]))
            .await
            .unwrap();
        Self(socket)
    }

    /// Sends `bytes` and a PING, and reads until the PING is answered:
    /// the server has then read everything before it.
    pub async fn send_then_ping(&mut self, mut bytes: Vec<u8>, seen: &mut Frames) {
        bytes.extend(h2_frame(PING, 0, 0, &[0; 8]));
        self.0.write_all(&bytes).await.unwrap();
        let pongs = seen.pongs + 1;
        tokio::time::timeout(Duration::from_secs(30), async {
            while seen.pongs < pongs && seen.go_away.is_none() {
                self.read_frame(seen).await;
            }
        })
        .await
        .expect("the PING answered");
    }

    pub async fn read_frame(&mut self, seen: &mut Frames) {
        let mut head = [0u8; 9];
        if self.0.read_exact(&mut head).await.is_err() {
            seen.go_away
                .get_or_insert_with(|| "connection closed".into());
            return;
        }
        let length = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let mut payload = vec![0u8; length];
        self.0.read_exact(&mut payload).await.unwrap();
        let (kind, flags) = (head[3], head[4]);
        match kind {
            HEADERS if flags & END_STREAM != 0 => seen.answered += 1,
            RST_STREAM => seen.resets += 1,
            GOAWAY => seen.go_away = Some(String::from_utf8_lossy(&payload[8..]).into()),
            PING if flags & ACK != 0 => seen.pongs += 1,
            SETTINGS if flags & ACK == 0 => self
                .0
                .write_all(&h2_frame(SETTINGS, ACK, 0, &[]))
                .await
                .unwrap(),
            _ => {}
        }
    }
}
