//! A plugin that misbehaves on purpose, for the gateway's tests. `mode`
//! picks the misbehaviour and `phase` the hook it happens in.

use serde::Deserialize;
use wasmgate_sdk::prelude::*;

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
enum Mode {
    /// Behave: continue (and count calls in `x-chaos-calls`).
    Ok,
    /// Panic.
    Trap,
    /// Spin forever.
    Loop,
    /// Allocate until the memory limit stops it.
    Grow,
    /// Refuse the config.
    Refuse,
    /// Print to stdout and stderr, then continue.
    Print,
    /// Reply with a status the gateway must refuse (`status`, default 0).
    BadStatus,
    /// Read every context entry into `x-context` and set `chaos=seen`.
    Context,
    /// Add 2 000 response headers (`x-flood-N`), more than the gateway lets
    /// a plugin add: left for the response by the request hook, or set on
    /// it by the response hook. How many were accepted goes upstream in
    /// `x-flood-accepted` in the request phase.
    Flood,
    /// Declare a fixed response header the gateway manages
    /// (`content-length`), which must refuse the config.
    BadFixed,
    /// Declare 65 fixed request headers, one more than allowed.
    ManyFixed,
    /// Try to declare a fixed header from the request hook, and put the
    /// gateway's answer in `x-fixed-late` upstream.
    LateFixed,
    /// Declare that the request hook depends on `x-key` alone, then act on
    /// it: `deny` answers 403; any other key goes upstream in
    /// `x-memo-seen`, comes back in the response header `x-memo-key`, and
    /// is left in the context as `memo.key`. `stray` makes the hook also
    /// read what it did not declare.
    Memo,
    /// Leave `Via: 1.1 chaos` for the response from the request hook
    /// (replacing the response's list), and continue.
    LeaveVia,
    /// Reply 200 with `status` distinct headers (`x-h-N`): more than a
    /// header map holds (~24 500) made the gateway panic.
    ManyReplyHeaders,
    /// Send `upstream://u/x` with `status` headers whose values all point
    /// at the same 60 KiB in this plugin's memory (a list's entries may
    /// share bytes), and put what came back in `x-fetch` upstream.
    AliasedFetch,
    /// Reply 200 with `status` headers whose values all point at the same
    /// 60 KiB in this plugin's memory.
    AliasedReply,
    /// Declare `status` request facts, headers whose names all point at
    /// the same 60 KiB in this plugin's memory, while configuring; refuse
    /// the config with the gateway's answer when it is an error.
    AliasedFacts,
    /// Edit, then panic: set the header `x-half` (on the request in the
    /// request phase, on the response in the response phase), leave
    /// `x-half-left` for the response and set the context entry `half`.
    /// Declares the fixed header `x-half-fixed` both ways, and the removal
    /// of a client's `x-half-removed`; with `phase = "request"`, its
    /// response hook sets `x-half-hook`.
    EditThenTrap,
    /// Count this plugin's requests in its shared bytes (`n`, as text) and
    /// send the count upstream in `x-shared`.
    Shared,
}

/// What [`Mode::Memo`] also does, breaking its claim.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
enum Stray {
    /// Read the header `x-other`.
    Header,
    /// Read the clock.
    Clock,
    /// Log a warning.
    Warn,
    /// Read WASI's wall clock (`SystemTime::now`).
    WasiClock,
    /// Read WASI's monotonic clock (`Instant::now`).
    Monotonic,
    /// Write a line to stderr.
    Stderr,
    /// Read the shared bytes.
    Shared,
}

/// How many headers [`Mode::Flood`] tries to add.
const FLOOD: usize = 2000;

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
enum Phase {
    #[default]
    Request,
    Response,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    mode: Mode,
    #[serde(default)]
    phase: Phase,
    /// The message `refuse` refuses with.
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    stray: Option<Stray>,
    /// The status `bad-status` replies with; how many headers
    /// `many-reply-headers` replies with.
    #[serde(default)]
    status: u16,
    /// Spin this long in the config hook and in each hook call (a plugin
    /// whose set-up and work are slow).
    #[serde(default)]
    spin_ms: u64,
}

#[derive(Debug)]
pub struct Chaos {
    mode: Mode,
    phase: Phase,
    stray: Option<Stray>,
    status: u16,
    calls: std::cell::Cell<u64>,
    spin_ms: u64,
}

fn spin(ms: u64) {
    let start = std::time::Instant::now();
    while start.elapsed() < std::time::Duration::from_millis(ms) {
        std::hint::spin_loop();
    }
}

impl Chaos {
    fn act(&self) -> Decision {
        self.calls.set(self.calls.get() + 1);
        spin(self.spin_ms);
        match self.mode {
            Mode::Ok
            | Mode::Refuse
            | Mode::Context
            | Mode::Flood
            | Mode::BadFixed
            | Mode::AliasedFacts
            | Mode::EditThenTrap
            | Mode::ManyFixed
            | Mode::LateFixed
            | Mode::Memo
            | Mode::AliasedFetch
            | Mode::Shared
            | Mode::LeaveVia => Decision::Continue,
            #[expect(clippy::panic, reason = "trapping is this guest's job")]
            Mode::Trap => panic!("chaos: trapping on purpose"),
            Mode::Loop => {
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            Mode::Grow => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            Mode::Print => {
                println!("chaos says hello on stdout");
                eprintln!("chaos says hello on stderr");
                Decision::Continue
            }
            Mode::BadStatus => Decision::respond(Reply::new(self.status)),
            Mode::ManyReplyHeaders => Decision::respond(Reply {
                status: 200,
                headers: (0..self.status).map(|i| (format!("x-h-{i}"), b"1".to_vec())).collect(),
                body: Vec::new(),
            }),
            Mode::AliasedReply => Decision::respond(aliased_reply(usize::from(self.status))),
        }
    }
}

impl Chaos {
    fn memo(&self, req: &mut Request<'_>) -> Decision {
        let key = req.header("x-key").map(|k| String::from_utf8_lossy(&k).into_owned()).unwrap_or_default();
        match self.stray {
            Some(Stray::Header) => drop(std::hint::black_box(req.header("x-other"))),
            Some(Stray::Clock) => drop(std::hint::black_box(wasmgate_sdk::clock::now_unix_ms())),
            Some(Stray::Warn) => log::warn("chaos: a warning on every call"),
            Some(Stray::WasiClock) => drop(std::hint::black_box(std::time::SystemTime::now())),
            Some(Stray::Monotonic) => drop(std::hint::black_box(std::time::Instant::now())),
            Some(Stray::Stderr) => eprintln!("chaos: a line on stderr on every call"),
            Some(Stray::Shared) => drop(std::hint::black_box(wasmgate_sdk::shared::get("n"))),
            None => {}
        }
        if key == "deny" {
            return Decision::respond(Reply::text(403, "denied by key"));
        }
        let _ = req.set_header("x-memo-seen", key.as_str());
        let _ = req.set_response_header("x-memo-key", key.as_str());
        context::set("memo.key", &key);
        Decision::Continue
    }
}

impl Plugin for Chaos {
    type Config = Config;

    fn new(c: Config) -> Result<Self, ConfigError> {
        spin(c.spin_ms);
        if c.mode == Mode::Refuse {
            return Err(c.message.unwrap_or_else(|| "chaos refuses this config".into()).into());
        }
        if c.mode == Mode::AliasedFacts {
            aliased_facts(usize::from(c.status)).map_err(|e| format!("memoize-request: {e}"))?;
        }
        let calls = std::cell::Cell::new(0);
        Ok(Self { mode: c.mode, phase: c.phase, stray: c.stray, status: c.status, calls, spin_ms: c.spin_ms })
    }

    fn info(&self) -> Info {
        let on_response = self.phase == Phase::Response || self.mode == Mode::EditThenTrap;
        Info { on_request: true, on_response, ..Info::default() }
    }

    fn fixed_headers(&self) -> FixedHeaders {
        match self.mode {
            Mode::BadFixed => FixedHeaders {
                response: vec![("content-length".into(), HeaderEdit::Set(b"1".to_vec()))],
                ..FixedHeaders::default()
            },
            Mode::ManyFixed => FixedHeaders {
                request: (0..65).map(|i| (format!("x-fixed-{i}"), HeaderEdit::Set(b"1".to_vec()))).collect(),
                ..FixedHeaders::default()
            },
            Mode::EditThenTrap => FixedHeaders {
                request: vec![
                    ("x-half-fixed".into(), HeaderEdit::Set(b"done".to_vec())),
                    ("x-half-removed".into(), HeaderEdit::Remove),
                ],
                response: vec![("x-half-fixed".into(), HeaderEdit::Set(b"done".to_vec()))],
            },
            _ => FixedHeaders::default(),
        }
    }

    fn depends_on(&self) -> Option<Vec<RequestFact>> {
        (self.mode == Mode::Memo).then(|| vec![RequestFact::Header("x-key".into())])
    }

    fn on_request(&self, req: &mut Request<'_>) -> Decision {
        if self.mode == Mode::Memo {
            return self.memo(req);
        }
        if self.mode == Mode::EditThenTrap && self.phase == Phase::Request {
            let _ = req.set_header("x-half", "done");
            let _ = req.set_response_header("x-half-left", "done");
            context::set("half", "done");
            #[expect(clippy::panic, reason = "trapping is this guest's job")]
            {
                panic!("chaos: trapping after its edits");
            }
        }
        if self.mode == Mode::LateFixed {
            let _ = req.set_header("x-fixed-late", late_fixed());
            return Decision::Continue;
        }
        if self.mode == Mode::LeaveVia {
            let _ = req.set_response_header("via", "1.1 chaos");
            return Decision::Continue;
        }
        if self.mode == Mode::AliasedFetch {
            let _ = req.set_header("x-fetch", aliased_fetch(usize::from(self.status)));
            return Decision::Continue;
        }
        if self.mode == Mode::Shared {
            let seen = wasmgate_sdk::shared::get("n").and_then(|n| String::from_utf8(n).ok()?.parse::<u64>().ok());
            let n = seen.unwrap_or(0) + 1;
            let stored = wasmgate_sdk::shared::set("n", n.to_string().as_bytes());
            let _ = req.set_header("x-shared", if stored { n.to_string() } else { "refused".to_owned() });
            return Decision::Continue;
        }
        if self.mode == Mode::Context {
            let mut keys = context::keys();
            keys.sort();
            let pairs: Vec<String> =
                keys.iter().map(|k| format!("{k}={}", context::get(k).unwrap_or_default())).collect();
            let _ = req.set_header("x-context", pairs.join(","));
            context::set("chaos", "seen");
            return Decision::Continue;
        }
        if self.mode == Mode::Flood && self.phase == Phase::Request {
            let accepted = (0..FLOOD).filter(|i| req.set_response_header(&format!("x-flood-{i}"), "1").is_ok()).count();
            let _ = req.set_header("x-flood-accepted", accepted.to_string());
            return Decision::Continue;
        }
        if self.phase == Phase::Request {
            let d = self.act();
            let _ = req.set_header("x-chaos-calls", self.calls.get().to_string());
            return d;
        }
        Decision::Continue
    }

    fn on_response(&self, _req: &Request<'_>, resp: &mut Response<'_>) -> Decision {
        if self.mode == Mode::EditThenTrap && self.phase == Phase::Request {
            let _ = resp.set_header("x-half-hook", "ran");
            return Decision::Continue;
        }
        if self.mode == Mode::EditThenTrap && self.phase == Phase::Response {
            let _ = resp.set_header("x-half", "done");
            #[expect(clippy::panic, reason = "trapping is this guest's job")]
            {
                panic!("chaos: trapping after its edits");
            }
        }
        if self.mode == Mode::Flood {
            for i in 0..FLOOD {
                let _ = resp.set_header(&format!("x-flood-{i}"), "1");
            }
            return Decision::Continue;
        }
        if self.phase == Phase::Response {
            let d = self.act();
            let _ = resp.set_header("x-chaos-calls", self.calls.get().to_string());
            return d;
        }
        Decision::Continue
    }
}

/// What the gateway answers a request with `entries` headers sharing one
/// 60 KiB value: the list is built by hand, its entries aliases of one
/// buffer, which only that buffer frees.
fn aliased_fetch(entries: usize) -> String {
    #[cfg(target_arch = "wasm32")]
    return {
        use wasmgate_sdk::__private::bindings::wasmgate::plugin::http as raw;
        let mut value = vec![b'a'; 60 * 1024];
        let (ptr, len) = (value.as_mut_ptr(), value.len());
        let headers = (0..entries)
            .map(|_| {
                #[expect(unsafe_code, reason = "aliased entries are what this test guest sends; never freed")]
                let alias = unsafe { Vec::from_raw_parts(ptr, len, len) };
                ("x-big".to_owned(), alias)
            })
            .collect();
        let req = raw::OutgoingRequest {
            method: "GET".into(),
            url: "upstream://u/x".into(),
            headers,
            body: Vec::new(),
            timeout_ms: None,
        };
        let said = match raw::send(&req) {
            Ok(r) => format!("{}", r.status),
            Err(raw::HttpError::InvalidRequest(why)) => format!("invalid request: {why}"),
            Err(_) => "another error".to_owned(),
        };
        for (_, alias) in req.headers {
            std::mem::forget(alias);
        }
        drop(value);
        said
    };
    #[cfg(not(target_arch = "wasm32"))]
    {
        let _ = entries;
        "only in the gateway".to_owned()
    }
}

/// A reply with `entries` headers sharing one 60 KiB value: its entries are
/// aliases of one buffer, freed (once each) by the hook's post-return.
fn aliased_reply(entries: usize) -> Reply {
    #[cfg(target_arch = "wasm32")]
    return {
        let mut value = std::mem::ManuallyDrop::new(vec![b'a'; 60 * 1024]);
        let (ptr, len) = (value.as_mut_ptr(), value.len());
        let headers = (0..entries)
            .map(|_| {
                #[expect(unsafe_code, reason = "aliased entries are what this test guest replies with")]
                let alias = unsafe { Vec::from_raw_parts(ptr, len, len) };
                ("x-big".to_owned(), alias)
            })
            .collect();
        Reply { status: 200, headers, body: Vec::new() }
    };
    #[cfg(not(target_arch = "wasm32"))]
    {
        let _ = entries;
        Reply::new(200)
    }
}

/// Declares `entries` header facts whose names share one 60 KiB string;
/// what the gateway answered.
fn aliased_facts(entries: usize) -> Result<(), String> {
    #[cfg(target_arch = "wasm32")]
    return {
        use wasmgate_sdk::__private::bindings::wasmgate::plugin::setup;
        let mut name = std::mem::ManuallyDrop::new("a".repeat(60 * 1024));
        let (ptr, len) = (name.as_mut_ptr(), name.len());
        let facts: Vec<_> = (0..entries)
            .map(|_| {
                #[expect(unsafe_code, reason = "aliased entries are what this test guest declares; never freed")]
                let alias = unsafe { String::from_raw_parts(ptr, len, len) };
                setup::RequestFact::Header(alias)
            })
            .collect();
        let answer = setup::memoize_request(&facts).map_err(|e| EditError::from(e).to_string());
        for fact in facts {
            std::mem::forget(fact);
        }
        answer
    };
    #[cfg(not(target_arch = "wasm32"))]
    {
        let _ = entries;
        Ok(())
    }
}

/// What the gateway answers a fixed header declared outside `configure`.
fn late_fixed() -> String {
    #[cfg(target_arch = "wasm32")]
    return {
        use wasmgate_sdk::__private::bindings::wasmgate::plugin::setup;
        match setup::fixed_request_header("x-late", &setup::HeaderEdit::Set(b"1".to_vec())) {
            Ok(()) => "accepted".to_owned(),
            Err(e) => format!("refused: {}", EditError::from(e)),
        }
    };
    #[cfg(not(target_arch = "wasm32"))]
    "only in the gateway".to_owned()
}

export_plugin!(Chaos);

#[cfg(test)]
mod tests {
    use wasmgate_sdk::testing::{self, TestRequest};

    use super::*;

    #[test]
    fn ok_mode_counts_calls() {
        let p = testing::configure::<Chaos>(r#"{"mode":"ok"}"#).unwrap();
        let mut req = TestRequest::get("/");
        assert!(testing::on_request(&p, &mut req).is_continue());
        assert!(testing::on_request(&p, &mut req).is_continue());
        assert_eq!(req.headers.get_str("x-chaos-calls").as_deref(), Some("2"));
    }

    #[test]
    fn fixed_headers_are_refused_natively_as_the_gateway_refuses_them() {
        let err =
            |mode: &str| testing::configure::<Chaos>(&format!(r#"{{"mode":"{mode}"}}"#)).err().map(|e| e.to_string());
        assert_eq!(
            err("bad-fixed").as_deref(),
            Some("the fixed response header `content-length` was refused: `content-length` is managed by the gateway")
        );
        assert_eq!(
            err("many-fixed").as_deref(),
            Some("the fixed request header `x-fixed-64` was refused: invalid value: more than 64 fixed headers")
        );
    }

    #[test]
    fn refuse_mode_refuses_with_its_message() {
        let err = testing::configure::<Chaos>(r#"{"mode":"refuse","message":"nope"}"#).err();
        assert_eq!(err.map(|e| e.to_string()).as_deref(), Some("nope"));
    }
}
