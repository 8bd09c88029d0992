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

use std::io::{BufWriter, Write};

use tracing_appender::non_blocking::{NonBlocking, NonBlockingBuilder, WorkerGuard};
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
    let (writer, guard) = background_writer(std::io::stderr(), QUEUED_LINES);
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

/// The writer thread over `out`. It writes each line into a buffer and flushes whenever
/// the queue is empty, so one write carries exactly the lines that queued up meanwhile.
fn background_writer<W: Write + Send + 'static>(
    out: W,
    queued_lines: usize,
) -> (NonBlocking, WorkerGuard) {
    NonBlockingBuilder::default()
        .lossy(false)
        .buffered_lines_limit(queued_lines)
        .thread_name("portcullis-log")
        .finish(BufWriter::with_capacity(WRITE_BATCH_BYTES, out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    /// Stands for stderr: records each `write` it is given, taking `delay` for each (a
    /// slow reader at the other end of the pipe).
    #[derive(Clone, Default)]
    struct Recorder {
        writes: Arc<Mutex<Vec<Vec<u8>>>>,
        delay: Duration,
    }

    impl Write for Recorder {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            std::thread::sleep(self.delay);
            self.writes.lock().unwrap().push(buf.to_vec());
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Recorder {
        fn text(&self) -> String {
            String::from_utf8(self.writes.lock().unwrap().concat()).unwrap()
        }
    }

    fn line(i: usize) -> String {
        format!("{i:>6} {}\n", "x".repeat(90))
    }

    #[test]
    fn a_line_is_written_as_soon_as_it_is_logged() {
        let out = Recorder::default();
        let (writer, _guard) = background_writer(out.clone(), QUEUED_LINES);
        let mut w = writer.clone();
        w.write_all(line(1).as_bytes()).unwrap();
        // The guard is still held: the line was not written by a final flush.
        let deadline = Instant::now() + Duration::from_secs(10);
        while out.text() != line(1) {
            assert!(Instant::now() < deadline, "the line was not written");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn dropping_the_guard_writes_out_the_backlog_in_batches() {
        const LINES: usize = 2_000;
        let out = Recorder {
            delay: Duration::from_millis(2),
            ..Recorder::default()
        };
        let (writer, guard) = background_writer(out.clone(), QUEUED_LINES);
        for i in 0..LINES {
            writer.clone().write_all(line(i).as_bytes()).unwrap();
        }
        drop(guard);
        let expected: String = (0..LINES).map(line).collect();
        assert_eq!(out.text(), expected);
        let writes = out.writes.lock().unwrap();
        assert!(writes.iter().all(|w| w.len() <= WRITE_BATCH_BYTES));
        // ~40 lines a write while a backlog waits (one line a write would be 2,000).
        assert!(writes.len() < LINES / 10, "{} writes", writes.len());
    }

    #[test]
    fn a_full_queue_makes_the_logger_wait_and_loses_nothing() {
        const LINES: usize = 300;
        let out = Recorder {
            delay: Duration::from_millis(1),
            ..Recorder::default()
        };
        let (writer, guard) = background_writer(out.clone(), 4);
        let loggers: Vec<_> = (0..3)
            .map(|t| {
                let writer = writer.clone();
                std::thread::spawn(move || {
                    for i in 0..LINES {
                        writer
                            .clone()
                            .write_all(line(t * LINES + i).as_bytes())
                            .unwrap();
                    }
                })
            })
            .collect();
        for logger in loggers {
            logger.join().unwrap();
        }
        drop(guard);
        let mut written: Vec<&str> = Vec::new();
        let text = out.text();
        written.extend(text.split_inclusive('\n'));
        written.sort();
        let mut expected: Vec<String> = (0..3 * LINES).map(line).collect();
        expected.sort();
        assert_eq!(written, expected);
    }
}
