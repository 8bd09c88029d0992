//! Logging setup: human-readable text on a terminal, one JSON object per line in
//! production (`--log-format json`). The per-request access line is written by the
//! gateway; nothing here ever sees a cookie or a token.
//!
//! Lines are formatted on the thread that logs them and handed, whole, to one background
//! thread that writes them to stderr; a request thread never waits on stderr's reader.
//! That writer takes what has queued up since its last write and writes it in one go, so
//! under load one `write(2)` carries many lines, and when idle a line goes out as soon as
//! it arrives (tests and `journalctl -f` see it at once). Nothing is dropped: when the
//! queue is full (stderr's reader is slower than the logging), the logging thread waits
//! for room, as it would have waited on a synchronous write. The [`LogGuard`] that
//! [`init`] returns must live until the process exits: dropping it writes out what is
//! still queued.

use std::io::BufWriter;

use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// Lines queued for the writer before a logging thread waits for room: ~4 MB of lines,
/// a third of a second at 50,000 requests/s, and written out in a few milliseconds when
/// the process exits (the guard's wait for that is bounded, see [`LogGuard`]).
const QUEUED_LINES: usize = 16 * 1024;

/// The most the writer hands to one `write(2)`: `PIPE_BUF`, so that on a pipe (journald,
/// a container runtime) each write is atomic and no other writer to stderr (a panic
/// message) can land inside a line. A line longer than this is written on its own.
const WRITE_BATCH_BYTES: usize = 4096;

/// Keeps the background log writer running. Dropping it writes out every queued line and
/// then stops the writer: hold it until the end of `main` (after the runtime has stopped,
/// so no task logs after it), for the last lines — "drained, exiting" after SIGTERM — to
/// reach stderr before the process exits. (tracing-appender's guard waits at most 1 s for
/// that, enough for a full queue unless stderr's reader has stopped reading, in which case
/// a synchronous writer would not have exited at all.)
#[must_use = "dropping the guard stops the log writer: hold it until the process exits"]
pub struct LogGuard {
    _writer: Option<WorkerGuard>,
}

/// Installs the global subscriber. `RUST_LOG` overrides `log.filter` when set.
pub fn init(log: &LogConfig) -> LogGuard {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|f| EnvFilter::try_new(f).ok())
        .or_else(|| EnvFilter::try_new(&log.filter).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    // The worker writes each line into the buffer and flushes whenever the queue is
    // empty, so the buffer batches exactly the lines that queued up meanwhile.
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(false)
        .buffered_lines_limit(QUEUED_LINES)
        .thread_name("portcullis-log")
        .finish(BufWriter::with_capacity(
            WRITE_BATCH_BYTES,
            std::io::stderr(),
        ));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(writer);
    // A second init (tests, demo) keeps the first subscriber, and this writer stops.
    let installed = match log.format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
    }
    .is_ok();
    LogGuard {
        _writer: installed.then_some(guard),
    }
}
