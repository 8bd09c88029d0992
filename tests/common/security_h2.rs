//! A deliberately naive HTTP/2 client (prior knowledge, h2c) that sends header fields
//! exactly as given — pseudo-headers twice, out of order or missing, uppercase names,
//! connection-specific fields, CR/LF in values — which no real client library will
//! produce (RFC 9113 §8.2–8.3 call such requests malformed). For the request-smuggling
//! cases of the adversarial suite.
//!
//! Header fields are HPACK-encoded as literals without indexing and without Huffman
//! coding (RFC 7541 §6.2.2), so nothing is normalized on the way out. Of the response it
//! decodes only what a test needs: the `:status` of stream 1 (static-table index or a
//! literal, Huffman or not), the DATA of stream 1, `RST_STREAM` and `GOAWAY` error codes.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;

const END_STREAM: u8 = 0x1;
const ACK: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;

/// How the server dealt with stream 1.
#[derive(Debug, Clone, Default)]
pub struct H2Outcome {
    /// `:status` of the response on stream 1, if one came.
    pub status: Option<u16>,
    /// DATA received on stream 1.
    pub body: Vec<u8>,
    /// `RST_STREAM` error code on stream 1 (1 = PROTOCOL_ERROR).
    pub reset: Option<u32>,
    /// `GOAWAY` error code.
    pub goaway: Option<u32>,
}

impl H2Outcome {
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The request was refused as malformed: a 400, or the stream or connection ended
    /// with an error instead of a response.
    pub fn refused(&self) -> bool {
        match self.status {
            Some(status) => status == 400,
            None => self.reset.is_some() || self.goaway.is_some_and(|code| code != 0),
        }
    }
}

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut out = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// RFC 7541 §5.1 integer with an `n`-bit prefix; `flags` fill the bits above it.
fn hpack_int(out: &mut Vec<u8>, flags: u8, n: u8, mut value: usize) {
    let max = (1usize << n) - 1;
    if value < max {
        out.push(flags | value as u8);
        return;
    }
    out.push(flags | max as u8);
    value -= max;
    while value >= 128 {
        out.push((value % 128) as u8 | 0x80);
        value /= 128;
    }
    out.push(value as u8);
}

fn hpack_string(out: &mut Vec<u8>, bytes: &[u8]) {
    hpack_int(out, 0x00, 7, bytes.len());
    out.extend_from_slice(bytes);
}

/// Literal header fields without indexing, new names, no Huffman (RFC 7541 §6.2.2).
pub fn hpack_literals(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in fields {
        out.push(0x00);
        hpack_string(&mut out, name.as_bytes());
        hpack_string(&mut out, value.as_bytes());
    }
    out
}

fn read_int(bytes: &[u8], at: &mut usize, n: u8) -> Option<usize> {
    let max = (1usize << n) - 1;
    let mut value = (*bytes.get(*at)? as usize) & max;
    *at += 1;
    if value < max {
        return Some(value);
    }
    let mut shift = 0;
    loop {
        let b = *bytes.get(*at)? as usize;
        *at += 1;
        value += (b & 0x7f) << shift;
        shift += 7;
        if b & 0x80 == 0 {
            return Some(value);
        }
    }
}

/// Huffman-coded digits (RFC 7541 Appendix B: '0'-'2' are 5 bits, '3'-'9' 6 bits).
fn huffman_digits(bytes: &[u8]) -> Option<String> {
    let bits: Vec<u8> = bytes
        .iter()
        .flat_map(|b| (0..8).rev().map(move |i| (b >> i) & 1))
        .collect();
    let mut out = String::new();
    let mut i = 0;
    let take = |i: usize, n: usize| -> Option<u32> {
        (i + n <= bits.len()).then(|| bits[i..i + n].iter().fold(0u32, |a, b| a << 1 | *b as u32))
    };
    while out.len() < 3 {
        let five = take(i, 5)?;
        if five <= 2 {
            out.push(char::from(b'0' + five as u8));
            i += 5;
            continue;
        }
        let six = take(i, 6)?;
        if (0x19..=0x1f).contains(&six) {
            out.push(char::from(b'3' + (six - 0x19) as u8));
            i += 6;
        } else {
            return None;
        }
    }
    Some(out)
}

/// The `:status` at the start of a response header block.
fn decode_status(block: &[u8]) -> Option<u16> {
    let mut at = 0;
    // Dynamic table size updates (001xxxxx) may come first.
    while block.get(at)? & 0xe0 == 0x20 {
        read_int(block, &mut at, 5)?;
    }
    let first = *block.get(at)?;
    let name_index = if first & 0x80 != 0 {
        let index = read_int(block, &mut at, 7)?;
        return match index {
            8 => Some(200),
            9 => Some(204),
            10 => Some(206),
            11 => Some(304),
            12 => Some(400),
            13 => Some(404),
            14 => Some(500),
            _ => None,
        };
    } else if first & 0x40 != 0 {
        read_int(block, &mut at, 6)?
    } else {
        read_int(block, &mut at, 4)?
    };
    if !(8..=14).contains(&name_index) {
        return None;
    }
    let huffman = block.get(at)? & 0x80 != 0;
    let len = read_int(block, &mut at, 7)?;
    let value = block.get(at..at + len)?;
    let text = if huffman {
        huffman_digits(value)?
    } else {
        String::from_utf8(value.to_vec()).ok()?
    };
    text.parse().ok()
}

/// Strips padding (and the priority block of HEADERS) from a frame payload.
fn unpad(kind: u8, flags: u8, payload: &[u8]) -> &[u8] {
    let mut start = 0;
    let mut end = payload.len();
    if flags & PADDED != 0 && !payload.is_empty() {
        let pad = payload[0] as usize;
        start = 1;
        end = end.saturating_sub(pad);
    }
    if kind == HEADERS && flags & PRIORITY != 0 {
        start += 5;
    }
    payload.get(start..end.max(start)).unwrap_or(&[])
}

/// Opens an h2c connection with prior knowledge, sends one request on stream 1 with
/// `fields` exactly as given (and `body` as one DATA frame), and reads until stream 1
/// ends, is reset, the connection goes away, or 5 s pass.
pub async fn h2_request(
    addr: SocketAddr,
    fields: &[(&str, &str)],
    body: Option<&[u8]>,
) -> H2Outcome {
    let mut stream = TcpStream::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    let mut out = Vec::from(PREFACE);
    out.extend(frame(SETTINGS, 0, 0, &[]));
    let block = hpack_literals(fields);
    let header_flags = END_HEADERS | if body.is_none() { END_STREAM } else { 0 };
    out.extend(frame(HEADERS, header_flags, 1, &block));
    if let Some(body) = body {
        out.extend(frame(DATA, END_STREAM, 1, body));
    }
    let _ = stream.write_all(&out).await;

    let mut outcome = H2Outcome::default();
    let mut buf: Vec<u8> = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        // Parse every complete frame in the buffer.
        while buf.len() >= 9 {
            let len = (buf[0] as usize) << 16 | (buf[1] as usize) << 8 | buf[2] as usize;
            if buf.len() < 9 + len {
                break;
            }
            let kind = buf[3];
            let flags = buf[4];
            let stream_id = u32::from_be_bytes([buf[5], buf[6], buf[7], buf[8]]) & 0x7fff_ffff;
            let payload: Vec<u8> = buf[9..9 + len].to_vec();
            buf.drain(..9 + len);
            match kind {
                SETTINGS if flags & ACK == 0 => {
                    let _ = stream.write_all(&frame(SETTINGS, ACK, 0, &[])).await;
                }
                PING if flags & ACK == 0 => {
                    let _ = stream.write_all(&frame(PING, ACK, 0, &payload)).await;
                }
                HEADERS if stream_id == 1 => {
                    let block = unpad(kind, flags, &payload);
                    if outcome.status.is_none() {
                        outcome.status = decode_status(block);
                    }
                    if flags & END_STREAM != 0 {
                        return outcome;
                    }
                }
                DATA if stream_id == 1 => {
                    outcome.body.extend_from_slice(unpad(kind, flags, &payload));
                    if flags & END_STREAM != 0 {
                        return outcome;
                    }
                }
                RST_STREAM if stream_id == 1 => {
                    outcome.reset = payload
                        .get(..4)
                        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
                    return outcome;
                }
                GOAWAY => {
                    outcome.goaway = payload
                        .get(4..8)
                        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
                    let last = payload.get(..4).map_or(0, |b| {
                        u32::from_be_bytes([b[0], b[1], b[2], b[3]]) & 0x7fff_ffff
                    });
                    if last < 1 {
                        return outcome;
                    }
                }
                _ => {}
            }
        }
        let mut chunk = vec![0u8; 16 * 1024];
        let wait = deadline.saturating_duration_since(tokio::time::Instant::now());
        match tokio::time::timeout(wait, stream.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return outcome,
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}
