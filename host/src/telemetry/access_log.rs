//! The JSON access log: one line per request, written by a dedicated thread so file I/O never
//! runs on the async workers. Requests hand their line over through a bounded queue and never
//! wait: when the queue is full the line is dropped and counted (`airlock_access_log_dropped_total`).
//! A file target is reopened on request (SIGUSR1), for log rotation by rename.

use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::time::{Duration, SystemTime};

use http::Method;
use prometheus_client::metrics::counter::Counter;
use serde::Serialize;

use super::trace_context::TraceId;

/// Where access log lines go.
#[derive(Debug, Clone)]
pub enum LogTarget {
    /// The process's standard output.
    Stdout,
    /// A file, appended to and created if missing.
    File(PathBuf),
}

/// What is known about one finished request.
#[derive(Debug)]
pub struct AccessEntry {
    /// When the request arrived.
    pub time: SystemTime,
    /// The client's address.
    pub client_ip: IpAddr,
    /// Request method.
    pub method: Method,
    /// The host the request named (`Host`, or an absolute target's or HTTP/2's authority), cut
    /// at 256 bytes: which virtual host a `no_route` 404 was for.
    pub host: Option<String>,
    /// `HTTP/1.0`, `HTTP/1.1` or `HTTP/2`.
    pub protocol: &'static str,
    /// Request path as the client sent it (without the query).
    pub path: String,
    /// The matched route's id.
    pub route: Option<Arc<str>>,
    /// Status sent to the client; for a gRPC call the gateway or a plugin refused, the HTTP
    /// status decided, sent as a 200 with `grpc-status` (`proxy::grpc::answer_for_client`).
    pub status: u16,
    /// Request body bytes read from the client (without those `body_read` counts).
    pub bytes_in: u64,
    /// Where a streamed request body's bytes read from the client are counted (still counting
    /// when the response head is ready): added to `bytes_in` when the line is submitted, once
    /// the response has been sent.
    pub body_read: Option<Arc<crate::proxy::body::UploadProgress>>,
    /// Response body bytes sent.
    pub bytes_out: u64,
    /// From arrival to the last response byte.
    pub total: Duration,
    /// From sending upstream to the response head (or to the failure), if the upstream was called.
    pub upstream: Option<Duration>,
    /// The upstream target (`host:port`) that served the request or last failed, if it was sent
    /// to one (nginx's `$upstream_addr`, Envoy's `%UPSTREAM_HOST%`).
    pub upstream_addr: Option<Arc<str>>,
    /// The targets the request was sent to before `upstream_addr`, in order, each of which
    /// failed (refused or reset the connection, answered a `retry_on` status, or sent no
    /// response head within `try_timeout_ms`): a failover's
    /// trail, as nginx's `$upstream_addr` lists every server tried. Empty, and left out of the
    /// line, when the first target tried was the last.
    pub upstream_failed: Vec<Arc<str>>,
    /// Time spent in plugin phases.
    pub plugins: Duration,
    /// The consumer an auth plugin identified (request context key `consumer`).
    pub consumer: Option<String>,
    /// The W3C trace id.
    pub trace_id: TraceId,
    /// The request id (`X-Request-Id`).
    pub request_id: Arc<str>,
    /// The client's `User-Agent`.
    pub user_agent: Option<String>,
    /// A gRPC answer's `grpc-status` (from its trailers, or the head of a trailers-only
    /// answer): a failed call is an HTTP 200, so the status alone would hide it (Envoy's
    /// `%GRPC_STATUS%`). `None` for any other answer, and left out of the line.
    pub grpc_status: Option<u32>,
    /// Why the response was cut short after its head was passed on, if it was: `response_body`,
    /// its body failed (an upstream's broke off, was malformed or stalled). `status` is then the
    /// head's and `bytes_out` what went before the failure; a body failing at once leaves the
    /// client nothing (hyper had not written the head out yet: HTTP/1.1 closes the connection,
    /// HTTP/2 resets the stream). Left out of the line when the response ended whole (or the
    /// client went away).
    pub aborted: Option<&'static str>,
}

/// The line as written.
#[derive(Serialize)]
struct AccessLine<'a> {
    time: String,
    client_ip: IpAddr,
    method: &'a str,
    host: Option<&'a str>,
    protocol: &'a str,
    path: &'a str,
    route: Option<&'a str>,
    status: u16,
    bytes_in: u64,
    bytes_out: u64,
    duration_ms: f64,
    upstream_ms: Option<f64>,
    upstream_addr: Option<&'a str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    upstream_failed: Vec<&'a str>,
    plugins_ms: f64,
    consumer: Option<&'a str>,
    trace_id: String,
    request_id: &'a str,
    user_agent: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    grpc_status: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    aborted: Option<&'a str>,
}

impl AccessEntry {
    /// The entry as one JSON line (with the trailing newline).
    pub fn to_json_line(&self) -> String {
        // Whole microseconds, in milliseconds: `1.224846`, not `1.2248459999999999`.
        let ms = |d: Duration| d.as_micros() as f64 / 1000.0;
        let line = AccessLine {
            time: humantime::format_rfc3339_micros(self.time).to_string(),
            client_ip: self.client_ip,
            method: self.method.as_str(),
            host: self.host.as_deref(),
            protocol: self.protocol,
            path: &self.path,
            route: self.route.as_deref(),
            status: self.status,
            bytes_in: self.bytes_in,
            bytes_out: self.bytes_out,
            duration_ms: ms(self.total),
            upstream_ms: self.upstream.map(ms),
            upstream_addr: self.upstream_addr.as_deref(),
            upstream_failed: self.upstream_failed.iter().map(|a| &**a).collect(),
            plugins_ms: ms(self.plugins),
            consumer: self.consumer.as_deref(),
            trace_id: self.trace_id.to_string(),
            request_id: &self.request_id,
            user_agent: self.user_agent.as_deref(),
            grpc_status: self.grpc_status,
            aborted: self.aborted,
        };
        let mut text = escaped_invisible(serde_json::to_string(&line).unwrap_or_default());
        text.push('\n');
        text
    }
}

/// A JSON line with each character that would break or reorder it for a reader escaped as
/// `\uXXXX` ([`crate::runtime::host::log::breaks_or_reorders`]: serde_json escapes only the C0
/// controls). A client's `User-Agent` or path could otherwise hold U+2028 or U+0085, which split
/// the record for tools that read lines as Unicode does, or U+202E, which shows the rest of the
/// line reversed. Such characters only appear inside strings, where the escape means the same.
fn escaped_invisible(text: String) -> String {
    // ASCII below DEL: serde_json has escaped its controls.
    if text.bytes().all(|b| b < 0x7f) || !text.chars().any(crate::runtime::host::log::breaks_or_reorders) {
        return text;
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if crate::runtime::host::log::breaks_or_reorders(c) {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                let _ = write!(out, "\\u{unit:04x}");
            }
        } else {
            out.push(c);
        }
    }
    out
}

enum Message {
    Entry(Box<AccessEntry>),
    /// Wakes the writer to act on a reopen request.
    Wake,
}

/// The access log's request-side handle.
pub struct AccessLog {
    sender: SyncSender<Message>,
    reopen: Arc<AtomicBool>,
    dropped: Counter,
}

impl AccessLog {
    /// Opens `target` (so a bad path fails at start) and starts the writer thread, with room for
    /// `queue` waiting lines. `dropped` counts lines dropped.
    pub fn open(target: LogTarget, queue: usize, dropped: Counter) -> io::Result<Self> {
        let sink = Sink::open(target)?;
        Self::with_sink(sink, queue, dropped)
    }

    fn with_sink(sink: Sink, queue: usize, dropped: Counter) -> io::Result<Self> {
        let (sender, receiver) = sync_channel(queue.max(1));
        let reopen = Arc::new(AtomicBool::new(false));
        let flag = reopen.clone();
        std::thread::Builder::new().name("airlock-access-log".into()).spawn(move || write_lines(receiver, sink, &flag))?;
        Ok(Self { sender, reopen, dropped })
    }

    /// Queues a line; never waits. A full queue drops the line and counts it.
    pub fn submit(&self, mut entry: Box<AccessEntry>) {
        if let Some(read) = entry.body_read.take() {
            entry.bytes_in += read.bytes();
        }
        match self.sender.try_send(Message::Entry(entry)) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.dropped.inc();
            }
        }
    }

    /// Asks the writer to reopen its file before the next line (after a rotation by rename).
    pub fn reopen(&self) {
        self.reopen.store(true, Ordering::Release);
        // If the queue is full the writer is busy and sees the flag at its next line anyway.
        let _ = self.sender.try_send(Message::Wake);
    }

    /// Lines dropped so far.
    pub fn dropped(&self) -> u64 {
        self.dropped.get()
    }
}

/// Reopens `log` on every SIGUSR1 until `stop` turns true. The signal handler is installed
/// before this returns, so a SIGUSR1 sent afterwards never takes its default action (exit).
/// Installed without an access log too: a log rotation hook shared by several gateways sends
/// the signal to all of them, and one with the log off must not die of it.
pub fn reopen_on_sigusr1(log: Option<Arc<AccessLog>>, mut stop: tokio::sync::watch::Receiver<bool>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut signals = match signal(SignalKind::user_defined1()) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("cannot listen for SIGUSR1, the access log will not be reopened: {e}");
                return;
            }
        };
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    received = signals.recv() => {
                        if received.is_none() {
                            return;
                        }
                        match &log {
                            Some(log) => {
                                tracing::info!("SIGUSR1: reopening the access log");
                                log.reopen();
                            }
                            None => tracing::info!("SIGUSR1: the access log is off, nothing to reopen"),
                        }
                    }
                    changed = stop.changed() => {
                        if changed.is_err() || *stop.borrow() {
                            return;
                        }
                    }
                }
            }
        });
    }
    #[cfg(not(unix))]
    {
        let _ = (log, &mut stop);
    }
}

/// The writer thread's output.
struct Sink {
    target: LogTarget,
    out: Box<dyn Write + Send>,
}

impl Sink {
    fn open(target: LogTarget) -> io::Result<Self> {
        let out = Self::writer(&target)?;
        Ok(Self { target, out })
    }

    fn writer(target: &LogTarget) -> io::Result<Box<dyn Write + Send>> {
        Ok(match target {
            LogTarget::Stdout => Box::new(BufWriter::new(io::stdout())),
            LogTarget::File(path) => Box::new(BufWriter::new(append(path)?)),
        })
    }

    fn reopen(&mut self) {
        if matches!(self.target, LogTarget::Stdout) {
            return;
        }
        let _ = self.out.flush();
        match Self::writer(&self.target) {
            Ok(out) => self.out = out,
            Err(e) => tracing::error!("cannot reopen the access log, still writing to the old file: {e}"),
        }
    }
}

/// Why the access log could not be opened at `path`, if its folder is missing or not a folder,
/// or `path` is itself a folder: checked when the config is (`airlock check` included), so it is
/// not found only at `run`. Blocking: called while a config is loaded at startup, before the
/// gateway serves.
pub fn folder_problem(path: &Path) -> Option<String> {
    if std::fs::metadata(path).is_ok_and(|meta| meta.is_dir()) {
        return Some(format!("`{}` is a folder: name the file the access log is appended to, as `{}`", path.display(), path.join("access.log").display()));
    }
    let folder = path.parent().filter(|p| !p.as_os_str().is_empty())?;
    match std::fs::metadata(folder) {
        Ok(meta) if meta.is_dir() => None,
        Ok(_) => Some(format!("`{}` is not a folder, so the access log `{}` cannot be created", folder.display(), path.display())),
        Err(e) => Some(format!("the access log's folder `{}` cannot be used: {e}", folder.display())),
    }
}

fn append(path: &PathBuf) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot open access log `{}`: {e}", path.display())))
}

/// The writer thread: writes lines as they come, flushing whenever the queue is empty; ends when
/// every sender is gone.
fn write_lines(receiver: Receiver<Message>, mut sink: Sink, reopen: &AtomicBool) {
    let mut failed = false;
    while let Ok(mut message) = receiver.recv() {
        loop {
            if reopen.swap(false, Ordering::AcqRel) {
                sink.reopen();
            }
            if let Message::Entry(entry) = message
                && let Err(e) = sink.out.write_all(entry.to_json_line().as_bytes())
                && !failed
            {
                failed = true;
                tracing::error!("cannot write the access log: {e}");
            }
            match receiver.try_recv() {
                Ok(next) => message = next,
                Err(_) => break,
            }
        }
        if let Err(e) = sink.out.flush()
            && !failed
        {
            failed = true;
            tracing::error!("cannot write the access log: {e}");
        }
    }
    let _ = sink.out.flush();
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    fn entry(n: usize) -> Box<AccessEntry> {
        Box::new(AccessEntry {
            time: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            client_ip: "127.0.0.1".parse().unwrap(),
            method: Method::GET,
            host: Some("api.example.com".into()),
            protocol: "HTTP/2",
            path: format!("/{n}"),
            route: Some("r".into()),
            status: 200,
            bytes_in: 0,
            body_read: None,
            bytes_out: 5,
            total: Duration::from_millis(3),
            upstream: Some(Duration::from_millis(2)),
            upstream_addr: Some("10.0.0.7:8080".into()),
            upstream_failed: Vec::new(),
            plugins: Duration::ZERO,
            consumer: None,
            trace_id: TraceId(1),
            request_id: "id".into(),
            user_agent: Some("t/1".into()),
            grpc_status: None,
            aborted: None,
        })
    }

    #[test]
    fn a_line_is_one_json_object() {
        let line = entry(7).to_json_line();
        assert!(line.ends_with('\n'));
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["path"], "/7");
        assert_eq!((v["host"].as_str(), v["protocol"].as_str()), (Some("api.example.com"), Some("HTTP/2")));
        assert_eq!(v["time"], "2023-11-14T22:13:20.000000Z");
        assert_eq!(v["trace_id"], "00000000000000000000000000000001");
        assert_eq!(v["upstream_ms"], 2.0);
        assert_eq!(v["upstream_addr"], "10.0.0.7:8080");
        assert!(v.get("aborted").is_none(), "only for a response cut short: {v}");
        assert!(v.get("upstream_failed").is_none(), "only for a request that failed over: {v}");
        let mut failed_over = entry(9);
        failed_over.upstream_failed = vec!["10.0.0.5:8080".into(), "10.0.0.6:8080".into()];
        let v: serde_json::Value = serde_json::from_str(&failed_over.to_json_line()).unwrap();
        assert_eq!(v["upstream_failed"], serde_json::json!(["10.0.0.5:8080", "10.0.0.6:8080"]));
        // Whole microseconds, printed without float noise.
        let mut odd = entry(8);
        odd.total = Duration::from_nanos(1_224_846_999);
        let v: serde_json::Value = serde_json::from_str(&odd.to_json_line()).unwrap();
        assert_eq!(v["duration_ms"].to_string(), "1224.846");
    }

    /// What a client sent that would split the record for a reader going by Unicode's line
    /// breaks (U+0085, U+2028, U+2029), or show it reordered (U+202E), is escaped; the JSON
    /// still reads back as what was sent, and other text is kept as it is.
    #[test]
    fn line_breaks_and_bidi_controls_a_client_sent_are_escaped() {
        let mut e = entry(1);
        let sent = "ua\u{85}{\"fake\":1}\u{2028}next\u{2029}\u{202e}gnp.exe é 漢";
        e.user_agent = Some(sent.into());
        e.consumer = Some("a\u{2066}b".into());
        let line = e.to_json_line();
        assert_eq!(line.lines().count(), 1);
        assert_eq!(line.trim_end().split(['\u{85}', '\u{2028}', '\u{2029}']).count(), 1, "{line}");
        assert!(!line.contains('\u{202e}') && !line.contains('\u{2066}'), "{line}");
        assert!(line.contains(r"ua\u0085{") && line.contains(r"\u2028next\u2029\u202egnp.exe é 漢"), "{line}");
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!((v["user_agent"].as_str(), v["consumer"].as_str()), (Some(sent), Some("a\u{2066}b")));
        // ASCII, the common case, is left as serde_json wrote it.
        assert_eq!(escaped_invisible("{\"a\":\"b\"}".into()), "{\"a\":\"b\"}");
    }

    /// A writer that blocks until the test lets it go, collecting what it was given.
    struct Gate {
        gate: Arc<Mutex<()>>,
        written: Arc<Mutex<Vec<u8>>>,
    }

    impl Write for Gate {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let _open = self.gate.lock().unwrap();
            self.written.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_full_queue_drops_and_counts_without_waiting() {
        let gate = Arc::new(Mutex::new(()));
        let written = Arc::new(Mutex::new(Vec::new()));
        let closed = gate.lock().unwrap();
        let sink = Sink { target: LogTarget::Stdout, out: Box::new(Gate { gate: gate.clone(), written: written.clone() }) };
        let log = AccessLog::with_sink(sink, 2, Counter::default()).unwrap();
        for n in 0..10 {
            log.submit(entry(n));
        }
        // At most one line is with the (blocked) writer and two wait in the queue.
        let dropped = log.dropped();
        assert!(dropped >= 7, "dropped {dropped}");
        drop(closed);
        drop(log);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let lines = written.lock().unwrap().iter().filter(|&&b| b == b'\n').count() as u64;
            if lines + dropped == 10 {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "{lines} lines written, {dropped} dropped");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}
