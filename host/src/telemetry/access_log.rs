//! The access log: one JSON object per request, written by the server once
//! the exchange ends. It names the request (id, client, method, path) and
//! where it went (route, upstream, endpoint, plugin outcomes), never its
//! headers or query string, which carry credentials.

use std::io::Write as _;
use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::Method;

/// Longer paths are cut in the access log: a client controls the path, and
/// one request should not be able to write 64 KiB of log.
const MAX_LOGGED_PATH: usize = 2048;

/// Longer methods are cut too: a method is any token, as long as the head
/// allows (64 KiB; over HTTP/2 a few bytes a request from the HPACK table).
const MAX_LOGGED_METHOD: usize = 32;

/// Lines queued for a stdout that cannot keep up, before more are dropped:
/// at most ~40 MiB of the longest lines (the writer's default, 128 000,
/// was ~300 MiB of them).
const QUEUED_LINES: usize = 16 * 1024;

/// One request as the access log records it. Headers are deliberately not
/// here: they carry credentials and cookies.
#[derive(Debug, Clone, Copy)]
pub struct AccessLog<'a> {
    /// When the exchange ended.
    pub ts: SystemTime,
    pub request_id: &'a str,
    /// The W3C trace the request belongs to ([`TraceId::of`]).
    pub trace_id: Option<&'a TraceId>,
    pub client: IpAddr,
    /// The socket peer, when it is not the client: a proxy in
    /// `server.trusted_proxies` that named the client.
    pub peer: Option<IpAddr>,
    pub method: &'a Method,
    /// The request path; anything from `?` or `#` on is dropped, since query
    /// strings carry tokens and signatures.
    pub path: &'a str,
    /// `None` when no route matched.
    pub route: Option<&'a str>,
    pub upstream: Option<&'a str>,
    pub endpoint: Option<&'a str>,
    pub status: u16,
    /// Request head in to response end.
    pub duration: Duration,
    /// Time spent on upstream tries, backoff included.
    pub upstream_time: Option<Duration>,
    /// Response body bytes sent, when known.
    pub bytes_out: Option<u64>,
    pub plugins: &'a [PluginOutcome<'a>],
}

/// What one plugin in the chain did with the request.
#[derive(Debug, Clone, Copy)]
pub struct PluginOutcome<'a> {
    pub plugin: &'a str,
    /// e.g. `continue`, `respond`, `trap`, `deadline`.
    pub outcome: &'a str,
}

/// The access-log line for one request: a single JSON object, no newline.
/// Unknown values are `null`, so every line has the same keys.
pub fn access_log_line(log: &AccessLog<'_>) -> String {
    let mut o = JsonObject::with_capacity(320);
    o.key("ts");
    write_rfc3339(&mut o.buf, log.ts);
    o.string("request_id", log.request_id);
    o.opt_string("trace_id", log.trace_id.map(TraceId::as_str));
    o.ip("client", log.client);
    match log.peer {
        Some(peer) => o.ip("peer", peer),
        None => o.null("peer"),
    }
    // A method is a token (ASCII): any cut is at a character boundary.
    let method = log.method.as_str();
    o.string("method", method.get(..MAX_LOGGED_METHOD).unwrap_or(method));
    o.string("path", logged_path(log.path));
    o.opt_string("route", log.route);
    o.opt_string("upstream", log.upstream);
    o.opt_string("endpoint", log.endpoint);
    o.number("status", log.status);
    o.millis("duration_ms", Some(log.duration));
    o.millis("upstream_ms", log.upstream_time);
    match log.bytes_out {
        Some(n) => o.number("bytes_out", n),
        None => o.null("bytes_out"),
    }
    o.key("plugins");
    o.buf.push(b'[');
    for (i, p) in log.plugins.iter().enumerate() {
        if i > 0 {
            o.buf.push(b',');
        }
        o.buf.extend_from_slice(br#"{"plugin":"#);
        o.raw_string(p.plugin);
        o.buf.extend_from_slice(br#","outcome":"#);
        o.raw_string(p.outcome);
        o.buf.push(b'}');
    }
    o.buf.push(b']');
    o.finish()
}

/// The trace id of a request's W3C `traceparent` (Trace Context §3.2:
/// `00-<trace-id>-<parent-id>-<flags>`), for the access log: a line joins
/// the trace its request is part of in a tracing system, as the request id
/// joins it to the upstream's logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceId([u8; 32]);

impl TraceId {
    /// From the request's one `traceparent`; `None` without one, with two,
    /// or with one that is not valid (Trace Context: then it is as if there
    /// were none): a version other than `ff`, 32 and 16 lowercase hex digits
    /// not all zero, the flags; version `00` has nothing after them, a
    /// later one may.
    pub fn of(headers: &http::HeaderMap) -> Option<Self> {
        let mut values = headers.get_all("traceparent").iter();
        let (Some(value), None) = (values.next(), values.next()) else { return None };
        let v = value.as_bytes();
        let hex = |s: &[u8]| s.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        let zero = |s: &[u8]| s.iter().all(|&b| b == b'0');
        let (version, trace, parent, flags) = (v.get(..2)?, v.get(3..35)?, v.get(36..52)?, v.get(53..55)?);
        let dashes = [2, 35, 52].iter().all(|&i| v.get(i) == Some(&b'-'));
        let end = match version {
            b"00" => v.len() == 55,
            _ => v.len() == 55 || v.get(55) == Some(&b'-'),
        };
        if !dashes || !end || version == b"ff" || ![version, trace, parent, flags].iter().all(|s| hex(s)) {
            return None;
        }
        if zero(trace) || zero(parent) {
            return None;
        }
        let mut id = [0; 32];
        id.copy_from_slice(trace);
        Some(Self(id))
    }

    pub fn as_str(&self) -> &str {
        // Lowercase hex digits, checked when made.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

/// The path without query or fragment, cut to [`MAX_LOGGED_PATH`] bytes.
fn logged_path(path: &str) -> &str {
    let path = path.split(['?', '#']).next().unwrap_or_default();
    path.get(..path.floor_char_boundary(MAX_LOGGED_PATH)).unwrap_or(path)
}

/// A JSON object written straight into a buffer, keys in the order given
/// (`serde_json::Map` would sort them, putting `ts` mid-line). Strings go
/// through `serde_json` so escaping is never hand-rolled.
struct JsonObject {
    buf: Vec<u8>,
    empty: bool,
}

impl JsonObject {
    fn with_capacity(capacity: usize) -> Self {
        let mut buf = Vec::with_capacity(capacity);
        buf.push(b'{');
        Self { buf, empty: true }
    }

    /// Keys are literals in this file: plain ASCII, nothing to escape.
    fn key(&mut self, key: &'static str) {
        if !self.empty {
            self.buf.push(b',');
        }
        self.empty = false;
        self.buf.push(b'"');
        self.buf.extend_from_slice(key.as_bytes());
        self.buf.extend_from_slice(b"\":");
    }

    fn string(&mut self, key: &'static str, value: &str) {
        self.key(key);
        self.raw_string(value);
    }

    fn raw_string(&mut self, value: &str) {
        let start = self.buf.len();
        // Writing a `str` into a `Vec` cannot fail; should it, the line
        // stays valid JSON rather than holding half a string.
        if serde_json::to_writer(&mut self.buf, value).is_err() {
            self.buf.truncate(start);
            self.buf.extend_from_slice(b"null");
        }
    }

    fn opt_string(&mut self, key: &'static str, value: Option<&str>) {
        match value {
            Some(v) => self.string(key, v),
            None => self.null(key),
        }
    }

    /// An address prints as digits, dots, colons and hex: nothing to escape.
    fn ip(&mut self, key: &'static str, value: IpAddr) {
        self.key(key);
        let start = self.buf.len();
        if write!(self.buf, "\"{value}\"").is_err() {
            self.buf.truncate(start);
            self.buf.extend_from_slice(b"null");
        }
    }

    fn number(&mut self, key: &'static str, value: impl Into<u64>) {
        self.key(key);
        let start = self.buf.len();
        if write!(self.buf, "{}", value.into()).is_err() {
            self.buf.truncate(start);
            self.buf.extend_from_slice(b"null");
        }
    }

    /// Milliseconds with microsecond resolution, e.g. `12.345`.
    fn millis(&mut self, key: &'static str, value: Option<Duration>) {
        let Some(d) = value else { return self.null(key) };
        self.key(key);
        let start = self.buf.len();
        let micros = d.as_micros();
        if write!(self.buf, "{}.{:03}", micros / 1000, micros % 1000).is_err() {
            self.buf.truncate(start);
            self.buf.extend_from_slice(b"null");
        }
    }

    fn null(&mut self, key: &'static str) {
        self.key(key);
        self.buf.extend_from_slice(b"null");
    }

    fn finish(mut self) -> String {
        self.buf.push(b'}');
        // Every byte came from a `str` or an ASCII literal.
        String::from_utf8(self.buf).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
    }
}

/// `"YYYY-MM-DDTHH:MM:SS.mmmZ"`. Times before 1970 print as the epoch and
/// times past year 9999 as its last millisecond: RFC 3339 has four-digit
/// years, and neither can come from a working clock.
fn write_rfc3339(buf: &mut Vec<u8>, t: SystemTime) {
    const MAX_SECS: u64 = 253_402_300_799; // 9999-12-31T23:59:59Z
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let (secs, millis) =
        if since.as_secs() > MAX_SECS { (MAX_SECS, 999) } else { (since.as_secs(), since.subsec_millis()) };
    let (year, month, day) = civil_from_days(secs / 86_400);
    let rem = secs % 86_400;
    let (hh, mm, ss) = (rem / 3600, rem % 3600 / 60, rem % 60);
    let start = buf.len();
    if write!(buf, "\"{year:04}-{month:02}-{day:02}T{hh:02}:{mm:02}:{ss:02}.{millis:03}Z\"").is_err() {
        buf.truncate(start);
        buf.extend_from_slice(b"null");
    }
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's
/// `civil_from_days`, for non-negative days).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixed_time(secs: u64, millis: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_millis(millis)
    }

    #[test]
    fn access_log_line_is_one_json_object_with_the_fields() {
        let plugins = [
            PluginOutcome { plugin: "auth", outcome: "continue" },
            PluginOutcome { plugin: "rate-limit", outcome: "respond" },
        ];
        let log = AccessLog {
            ts: fixed_time(1_700_000_000, 123),
            request_id: "01HZX",
            trace_id: Some(&TraceId(*b"4bf92f3577b34da6a3ce929d0e0e4736")),
            client: "2001:db8::7".parse().unwrap(),
            peer: Some("10.0.0.2".parse().unwrap()),
            method: &Method::POST,
            path: "/api/users?access_token=s3cr3t&x=1",
            route: Some("users"),
            upstream: Some("api"),
            endpoint: Some("10.0.0.1:8080"),
            status: 201,
            duration: Duration::from_micros(12_345),
            upstream_time: Some(Duration::from_micros(10_001)),
            bytes_out: Some(512),
            plugins: &plugins,
        };
        let line = access_log_line(&log);
        assert!(!line.contains('\n'), "one line per request");
        assert!(!line.contains("s3cr3t") && !line.contains("access_token"), "query strings stay out: {line}");
        assert!(line.starts_with(r#"{"ts":"#), "ts first, for people reading the log: {line}");
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        let want = serde_json::json!({
            "ts": "2023-11-14T22:13:20.123Z",
            "request_id": "01HZX",
            "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
            "client": "2001:db8::7",
            "peer": "10.0.0.2",
            "method": "POST",
            "path": "/api/users",
            "route": "users",
            "upstream": "api",
            "endpoint": "10.0.0.1:8080",
            "status": 201,
            "duration_ms": 12.345,
            "upstream_ms": 10.001,
            "bytes_out": 512,
            "plugins": [
                { "plugin": "auth", "outcome": "continue" },
                { "plugin": "rate-limit", "outcome": "respond" },
            ],
        });
        assert_eq!(v, want);
    }

    /// A request no route took, answered 404 at once.
    fn unrouted<'a>(method: &'a Method, path: &'a str) -> AccessLog<'a> {
        AccessLog {
            ts: UNIX_EPOCH,
            request_id: "id",
            trace_id: None,
            client: "192.0.2.1".parse().unwrap(),
            peer: None,
            method,
            path,
            route: None,
            upstream: None,
            endpoint: None,
            status: 404,
            duration: Duration::ZERO,
            upstream_time: None,
            bytes_out: None,
            plugins: &[],
        }
    }

    /// W3C Trace Context's examples, and what it says to ignore.
    #[test]
    fn the_trace_id_is_read_from_a_valid_traceparent_only() {
        let of = |values: &[&str]| {
            let mut h = http::HeaderMap::new();
            for v in values {
                h.append("traceparent", http::HeaderValue::from_str(v).unwrap());
            }
            TraceId::of(&h).map(|t| t.as_str().to_owned())
        };
        let id = Some("4bf92f3577b34da6a3ce929d0e0e4736".to_owned());
        assert_eq!(of(&["00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"]), id);
        assert_eq!(of(&["00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"]), id, "not sampled: still a trace");
        assert_eq!(of(&["01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-more"]), id, "a later version");
        for bad in [
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-more",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
            "",
        ] {
            assert_eq!(of(&[bad]), None, "{bad:?}");
        }
        let one = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(of(&[one, one]), None, "two");
        assert_eq!(of(&[]), None);
    }

    #[test]
    fn a_long_method_is_cut() {
        let method = Method::from_bytes("M".repeat(60_000).as_bytes()).unwrap();
        let line = access_log_line(&unrouted(&method, "/"));
        assert!(line.len() < 400, "{} bytes", line.len());
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["method"].as_str().map(str::len), Some(MAX_LOGGED_METHOD));
    }

    #[test]
    fn access_log_line_stays_valid_json_for_odd_input() {
        let long = format!("/{}é{}", "a".repeat(MAX_LOGGED_PATH - 2), "b".repeat(5000));
        let purge = Method::from_bytes(b"PURGE").unwrap();
        for path in ["/a\"b\\c\u{1}\n\td#frag", "/ünï/☃", long.as_str(), "?only=query", ""] {
            let log = AccessLog {
                ts: UNIX_EPOCH - Duration::from_secs(5),
                request_id: "id\"with\"quotes",
                ..unrouted(&purge, path)
            };
            let line = access_log_line(&log);
            let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
            assert_eq!(v["ts"], "1970-01-01T00:00:00.000Z");
            assert_eq!(v["request_id"], "id\"with\"quotes");
            assert_eq!(v["method"], "PURGE");
            assert_eq!(v["duration_ms"], 0.0);
            assert_eq!(v["plugins"], serde_json::json!([]));
            for key in ["route", "upstream", "endpoint", "upstream_ms", "bytes_out"] {
                assert!(v[key].is_null(), "{key} unknown: {line}");
            }
            let logged = v["path"].as_str().unwrap();
            assert!(logged.len() <= MAX_LOGGED_PATH && path.starts_with(logged), "{logged:?} from {path:?}");
            assert!(!logged.contains(['?', '#']));
        }
    }

    #[test]
    fn rfc3339_timestamps() {
        let cases = [
            (fixed_time(0, 0), "1970-01-01T00:00:00.000Z"),
            (fixed_time(951_782_400, 1), "2000-02-29T00:00:00.001Z"),
            (fixed_time(951_868_799, 999), "2000-02-29T23:59:59.999Z"),
            (fixed_time(1_709_251_199, 0), "2024-02-29T23:59:59.000Z"),
            (fixed_time(4_107_542_400, 0), "2100-03-01T00:00:00.000Z"),
            (fixed_time(253_402_300_799, 0), "9999-12-31T23:59:59.000Z"),
            (fixed_time(253_402_300_800, 0), "9999-12-31T23:59:59.999Z"),
        ];
        for (t, want) in cases {
            let mut buf = Vec::new();
            write_rfc3339(&mut buf, t);
            assert_eq!(String::from_utf8(buf).unwrap(), format!("\"{want}\""));
        }
    }
}

/// Where access log lines go: stdout, written by a background thread so a
/// worker never blocks on the terminal or a pipe. Clones share the thread.
#[derive(Clone)]
pub struct AccessLogWriter {
    writer: tracing_appender::non_blocking::NonBlocking,
    _guard: std::sync::Arc<tracing_appender::non_blocking::WorkerGuard>,
}

impl std::fmt::Debug for AccessLogWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AccessLogWriter(stdout)")
    }
}

impl AccessLogWriter {
    pub fn stdout() -> Self {
        let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
            .lossy(true)
            .buffered_lines_limit(QUEUED_LINES)
            .thread_name("wasmgate-access-log")
            .finish(std::io::stdout());
        Self { writer, _guard: std::sync::Arc::new(guard) }
    }

    /// Queues one line. When the queue is full the line is dropped rather
    /// than the request slowed down.
    pub fn write(&self, log: &AccessLog<'_>) {
        use std::io::Write;
        let mut line = access_log_line(log);
        line.push('\n');
        let _ = self.writer.clone().write_all(line.as_bytes());
    }
}
