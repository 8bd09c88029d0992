//! RESP2 over a `TcpStream` (a few lines, no client library: the gateway's own `redis`
//! crate is what is under test) and [`Dump`], every key of a node with its type, value
//! and TTL.

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

// ----- RESP ---------------------------------------------------------------------------------

/// A RESP2 reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Reply>>),
}

impl Reply {
    /// A bulk or simple string as text (lossy); panics on anything else.
    pub fn text(&self) -> String {
        match self {
            Reply::Simple(s) => s.clone(),
            Reply::Bulk(Some(b)) => String::from_utf8_lossy(b).into_owned(),
            other => panic!("expected a string reply, got {other:?}"),
        }
    }

    pub fn bytes(&self) -> Vec<u8> {
        match self {
            Reply::Simple(s) => s.as_bytes().to_vec(),
            Reply::Bulk(Some(b)) => b.clone(),
            Reply::Bulk(None) => Vec::new(),
            other => panic!("expected a string reply, got {other:?}"),
        }
    }

    pub fn int(&self) -> i64 {
        match self {
            Reply::Int(n) => *n,
            other => panic!("expected an integer reply, got {other:?}"),
        }
    }

    pub fn array(&self) -> Vec<Reply> {
        match self {
            Reply::Array(Some(items)) => items.clone(),
            Reply::Array(None) => Vec::new(),
            other => panic!("expected an array reply, got {other:?}"),
        }
    }

    pub fn is_error(&self) -> bool {
        matches!(self, Reply::Error(_))
    }
}

/// One RESP2 connection to `127.0.0.1:<port>`.
pub struct Resp {
    stream: BufReader<TcpStream>,
}

impl Resp {
    pub async fn connect(port: u16) -> std::io::Result<Resp> {
        let tcp = tokio::time::timeout(
            Duration::from_secs(2),
            TcpStream::connect(("127.0.0.1", port)),
        )
        .await
        .map_err(|_| std::io::Error::other("connect timed out"))??;
        Ok(Resp {
            stream: BufReader::new(tcp),
        })
    }

    /// Sends one command and reads its reply (bounded: 10 s).
    pub async fn cmd<A: AsRef<[u8]>>(&mut self, args: &[A]) -> std::io::Result<Reply> {
        let mut out = format!("*{}\r\n", args.len()).into_bytes();
        for arg in args {
            let arg = arg.as_ref();
            out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
            out.extend_from_slice(arg);
            out.extend_from_slice(b"\r\n");
        }
        self.stream.get_mut().write_all(&out).await?;
        tokio::time::timeout(Duration::from_secs(10), read_reply(&mut self.stream))
            .await
            .map_err(|_| std::io::Error::other("no reply within 10 s"))?
    }
}

fn read_reply(
    stream: &mut BufReader<TcpStream>,
) -> futures_util::future::BoxFuture<'_, std::io::Result<Reply>> {
    Box::pin(async move {
        let mut line = Vec::new();
        stream.read_until(b'\n', &mut line).await?;
        if line.len() < 3 || !line.ends_with(b"\r\n") {
            return Err(std::io::Error::other(format!(
                "bad RESP line {:?}",
                String::from_utf8_lossy(&line)
            )));
        }
        let text = String::from_utf8_lossy(&line[1..line.len() - 2]).into_owned();
        let number = || {
            text.parse::<i64>()
                .map_err(|_| std::io::Error::other(format!("bad RESP length {text:?}")))
        };
        Ok(match line[0] {
            b'+' => Reply::Simple(text),
            b'-' => Reply::Error(text),
            b':' => Reply::Int(number()?),
            b'$' => {
                let n = number()?;
                if n < 0 {
                    Reply::Bulk(None)
                } else {
                    let mut data = vec![0u8; n as usize + 2];
                    stream.read_exact(&mut data).await?;
                    data.truncate(n as usize);
                    Reply::Bulk(Some(data))
                }
            }
            b'*' => {
                let n = number()?;
                if n < 0 {
                    Reply::Array(None)
                } else {
                    let mut items = Vec::with_capacity(n as usize);
                    for _ in 0..n {
                        items.push(read_reply(stream).await?);
                    }
                    Reply::Array(Some(items))
                }
            }
            other => {
                return Err(std::io::Error::other(format!(
                    "unknown RESP type byte {other:#x}"
                )))
            }
        })
    })
}

/// One command on a fresh connection to `port`; panics if Redis does not answer.
pub async fn command<A: AsRef<[u8]>>(port: u16, args: &[A]) -> Reply {
    try_command(port, args)
        .await
        .unwrap_or_else(|e| panic!("Redis on {port}: {e}"))
}

/// One command on a fresh connection to `port`, or the I/O error.
pub async fn try_command<A: AsRef<[u8]>>(port: u16, args: &[A]) -> std::io::Result<Reply> {
    Resp::connect(port).await?.cmd(args).await
}

/// `INFO <section>` as `field → value`.
pub async fn info(port: u16, section: &str) -> Vec<(String, String)> {
    parse_info(&command(port, &["INFO", section]).await.text())
}

fn parse_info(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// One field of `INFO <section>`; `None` also while Redis is not answering. Only polls use
/// it, and a server changing role drops its clients (a reset is "not yet", not a failure).
pub async fn info_field(port: u16, section: &str, field: &str) -> Option<String> {
    let reply = try_command(port, &["INFO", section]).await.ok()?;
    parse_info(&reply.text())
        .into_iter()
        .find(|(k, _)| k == field)
        .map(|(_, v)| v)
}

// ----- a dump of every key ---------------------------------------------------------------

/// One key as stored.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The node it was read from.
    pub port: u16,
    pub key: Vec<u8>,
    /// `TYPE`: string, hash, set, list, zset, stream.
    pub kind: String,
    /// The value's bytes; for aggregates, every field and member joined by `\n`.
    pub value: Vec<u8>,
    /// `PTTL`: milliseconds left, `-1` without expiry.
    pub pttl_ms: i64,
}

impl Entry {
    pub fn key_text(&self) -> String {
        String::from_utf8_lossy(&self.key).into_owned()
    }
}

/// Every key of one or more nodes.
#[derive(Debug, Clone, Default)]
pub struct Dump {
    pub entries: Vec<Entry>,
}

impl Dump {
    /// Reads every key of the node on `port` (`SCAN` to the end, then `TYPE`, the value
    /// and `PTTL` of each).
    pub async fn read(port: u16) -> Dump {
        let mut conn = Resp::connect(port)
            .await
            .unwrap_or_else(|e| panic!("connect to Redis on {port}: {e}"));
        let mut keys: Vec<Vec<u8>> = Vec::new();
        let mut cursor = "0".to_string();
        loop {
            let reply = conn
                .cmd(&["SCAN", &cursor, "COUNT", "1000"])
                .await
                .expect("SCAN");
            let parts = reply.array();
            cursor = parts[0].text();
            keys.extend(parts[1].array().iter().map(Reply::bytes));
            if cursor == "0" {
                break;
            }
        }
        keys.sort();
        keys.dedup();
        let mut entries = Vec::new();
        for key in keys {
            let kind = conn
                .cmd(&[b"TYPE".as_slice(), &key])
                .await
                .expect("TYPE")
                .text();
            let fetch: Vec<&[u8]> = match kind.as_str() {
                "string" => vec![b"GET", &key],
                "hash" => vec![b"HGETALL", &key],
                "set" => vec![b"SMEMBERS", &key],
                "list" => vec![b"LRANGE", &key, b"0", b"-1"],
                "zset" => vec![b"ZRANGE", &key, b"0", b"-1", b"WITHSCORES"],
                "stream" => vec![b"XRANGE", &key, b"-", b"+"],
                // Expired between SCAN and TYPE.
                "none" => continue,
                other => panic!("unexpected Redis type {other}"),
            };
            let reply = conn.cmd(&fetch).await.expect("read value");
            let value = flatten(&reply);
            let pttl_ms = conn
                .cmd(&[b"PTTL".as_slice(), &key])
                .await
                .expect("PTTL")
                .int();
            entries.push(Entry {
                port,
                key,
                kind,
                value,
                pttl_ms,
            });
        }
        Dump { entries }
    }

    /// The dumps of several nodes together.
    pub async fn read_all(ports: &[u16]) -> Dump {
        let mut all = Dump::default();
        for &port in ports {
            all.entries.extend(Dump::read(port).await.entries);
        }
        all
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Keys (as text) that start with `prefix`.
    pub fn keys_with_prefix(&self, prefix: &str) -> Vec<String> {
        self.entries
            .iter()
            .map(Entry::key_text)
            .filter(|k| k.starts_with(prefix))
            .collect()
    }

    /// Entries whose key or value contains `needle` (case-sensitive bytes): one line per
    /// hit, naming the key and where.
    pub fn containing(&self, needle: &[u8]) -> Vec<String> {
        assert!(!needle.is_empty(), "searching a dump for the empty string");
        let mut hits = Vec::new();
        for entry in &self.entries {
            if contains(&entry.key, needle) {
                hits.push(format!("key {}", entry.key_text()));
            }
            if contains(&entry.value, needle) {
                hits.push(format!("value of {}", entry.key_text()));
            }
        }
        hits
    }

    /// A readable listing (keys, types, TTLs, value sizes) for assertion messages.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        for e in &self.entries {
            out.push_str(&format!(
                "  [{}] {} ({}, {} bytes, pttl {} ms)\n",
                e.port,
                e.key_text(),
                e.kind,
                e.value.len(),
                e.pttl_ms
            ));
        }
        if out.is_empty() {
            out.push_str("  (no keys)\n");
        }
        out
    }
}

fn flatten(reply: &Reply) -> Vec<u8> {
    match reply {
        Reply::Simple(s) | Reply::Error(s) => s.as_bytes().to_vec(),
        Reply::Int(n) => n.to_string().into_bytes(),
        Reply::Bulk(b) => b.clone().unwrap_or_default(),
        Reply::Array(items) => {
            let parts: Vec<Vec<u8>> = items.iter().flatten().map(flatten).collect();
            parts.join(&b'\n')
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
