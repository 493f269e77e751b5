//! The WASI a plugin sees: just enough for Rust's `std` to run, and nothing
//! that reaches outside the gateway.
//!
//! A `wasm32-wasip2` component imports WASI whether it uses it or not. We
//! implement those imports here instead of linking wasmtime-wasi's context,
//! for two reasons: a plugin gets no files, sockets, environment or
//! arguments (it reaches the world only through capabilities the operator
//! grants), and every call returns at once. The latter matters because guests
//! run inline on a proxy worker: wasmtime-wasi's synchronous streams block on
//! a Tokio runtime, which panics inside one.
//!
//! stdout and stderr become log lines tagged with the plugin's name (a
//! panicking plugin's message reaches the operator); stdin is empty; clocks
//! and random work; subscribing to a clock gives a pollable that is always
//! ready, so a guest cannot sleep (it would only spin into its deadline).
//! Imports not listed here (filesystem, sockets) are linked as traps.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use wasmtime::component::{HasSelf, Linker, Resource};
use wasmtime_wasi::p2::bindings::cli::{
    environment, exit, stderr, stdin, stdout, terminal_input, terminal_output, terminal_stderr, terminal_stdin,
    terminal_stdout,
};
use wasmtime_wasi::p2::bindings::clocks::{monotonic_clock, wall_clock};
use wasmtime_wasi::p2::bindings::random::{insecure, insecure_seed, random};
use wasmtime_wasi::p2::bindings::sync::io::{poll, streams};
use wasmtime_wasi::p2::{DynInputStream, DynOutputStream, DynPollable, StreamError, StreamResult};
use wasmtime_wasi_io::bindings::wasi::io::error;

use super::host_api::{HostState, for_log};

const STDOUT: u32 = 1;
const STDERR: u32 = 2;
/// Longest line kept from a plugin's stdout/stderr before it is flushed.
const MAX_LINE: usize = 4096;

/// Line buffers for a plugin's stdout and stderr.
#[derive(Debug, Default)]
pub struct Stdio {
    out: Vec<u8>,
    err: Vec<u8>,
}

impl Stdio {
    /// Takes a write to one stream and returns the lines it completed (and
    /// what is left unfinished once it passes [`MAX_LINE`]). A write takes at most
    /// what `check-write` allows, [`MAX_LINE`] bytes: the rest of a larger
    /// one is the guest's mistake and is dropped. One pass over the bytes.
    fn push(&mut self, stderr: bool, bytes: &[u8]) -> Vec<Vec<u8>> {
        let buf = if stderr { &mut self.err } else { &mut self.out };
        buf.extend_from_slice(&bytes[..bytes.len().min(MAX_LINE)]);
        let mut lines = Vec::new();
        let mut start = 0;
        while let Some(nl) = buf[start..].iter().position(|&b| b == b'\n') {
            lines.push(buf[start..start + nl].to_vec());
            start += nl + 1;
        }
        buf.drain(..start);
        if buf.len() > MAX_LINE {
            lines.push(std::mem::take(buf));
        }
        lines
    }

    /// What is left unfinished on stdout and on stderr (`true`), taken.
    fn unfinished(&mut self) -> [(bool, Vec<u8>); 2] {
        [(false, std::mem::take(&mut self.out)), (true, std::mem::take(&mut self.err))]
    }
}

/// The WASI interfaces linked here (any 0.2.x version of them).
pub const PROVIDED: &[&str] = &[
    "wasi:io/error",
    "wasi:io/poll",
    "wasi:io/streams",
    "wasi:cli/environment",
    "wasi:cli/exit",
    "wasi:cli/stdin",
    "wasi:cli/stdout",
    "wasi:cli/stderr",
    "wasi:cli/terminal-input",
    "wasi:cli/terminal-output",
    "wasi:cli/terminal-stdin",
    "wasi:cli/terminal-stdout",
    "wasi:cli/terminal-stderr",
    "wasi:clocks/wall-clock",
    "wasi:clocks/monotonic-clock",
    "wasi:random/random",
    "wasi:random/insecure",
    "wasi:random/insecure-seed",
];

/// Links every WASI import of `component` that is not [`PROVIDED`] (files,
/// sockets) as functions that trap: the plugin loads, and fails only the
/// request that tries to use what it was never granted.
pub fn stub_unprovided(
    linker: &mut Linker<HostState>,
    engine: &wasmtime::Engine,
    component: &wasmtime::component::Component,
) -> wasmtime::Result<()> {
    use wasmtime::component::types::ComponentItem;
    for (import, item) in component.component_type().imports(engine) {
        let interface = import.split_once('@').map_or(import, |(i, _)| i);
        if !import.starts_with("wasi:") || PROVIDED.contains(&interface) {
            continue;
        }
        let ComponentItem::ComponentInstance(instance) = item.ty else {
            continue;
        };
        let mut l = linker.instance(import)?;
        for (name, export) in instance.exports(engine) {
            match export.ty {
                ComponentItem::ComponentFunc(_) => {
                    let what = format!("{import}#{name}");
                    l.func_new(name, move |_, _, _, _| {
                        Err(wasmtime::Error::msg(format!("`{what}` is not available to plugins")))
                    })?;
                }
                ComponentItem::Resource(_) => {
                    l.resource(name, wasmtime::component::ResourceType::host::<()>(), |_, _| Ok(()))?;
                }
                _ => {}
            }
        }
    }
    Ok(())
}

pub fn add_to_linker(l: &mut Linker<HostState>) -> wasmtime::Result<()> {
    type D = HasSelf<HostState>;
    fn get(s: &mut HostState) -> &mut HostState {
        s
    }
    error::add_to_linker::<HostState, D>(l, get)?;
    poll::add_to_linker::<HostState, D>(l, get)?;
    streams::add_to_linker::<HostState, D>(l, get)?;
    environment::add_to_linker::<HostState, D>(l, get)?;
    exit::add_to_linker::<HostState, D>(l, get)?;
    stdin::add_to_linker::<HostState, D>(l, get)?;
    stdout::add_to_linker::<HostState, D>(l, get)?;
    stderr::add_to_linker::<HostState, D>(l, get)?;
    terminal_input::add_to_linker::<HostState, D>(l, get)?;
    terminal_output::add_to_linker::<HostState, D>(l, get)?;
    terminal_stdin::add_to_linker::<HostState, D>(l, get)?;
    terminal_stdout::add_to_linker::<HostState, D>(l, get)?;
    terminal_stderr::add_to_linker::<HostState, D>(l, get)?;
    wall_clock::add_to_linker::<HostState, D>(l, get)?;
    monotonic_clock::add_to_linker::<HostState, D>(l, get)?;
    random::add_to_linker::<HostState, D>(l, get)?;
    insecure::add_to_linker::<HostState, D>(l, get)?;
    insecure_seed::add_to_linker::<HostState, D>(l, get)?;
    Ok(())
}

impl HostState {
    fn write_stdio(&mut self, stream: u32, bytes: &[u8]) {
        let stderr = stream == STDERR;
        for line in self.stdio.push(stderr, bytes) {
            self.emit(stderr, &line);
        }
    }

    /// Logs what a call left unfinished on stdout or stderr, under the
    /// request it was written in: on a pooled instance the next request's
    /// output would otherwise finish the line and log it as its own.
    /// Then says how many lines the call's log budget dropped.
    pub(crate) fn flush_stdio(&mut self) {
        if !(self.stdio.out.is_empty() && self.stdio.err.is_empty()) {
            for (stderr, line) in self.stdio.unfinished() {
                if !line.is_empty() {
                    self.emit(stderr, &line);
                }
            }
        }
        self.report_dropped_lines();
    }

    fn emit(&mut self, stderr: bool, line: &[u8]) {
        if stderr {
            // As a warning logged: replayed silently, it would hide itself.
            self.exchange.spoil();
        }
        // Only lines the filter lets through count against the budget.
        let enabled = if stderr {
            tracing::enabled!(target: "wasmgate::plugin", tracing::Level::WARN)
        } else {
            tracing::enabled!(target: "wasmgate::plugin", tracing::Level::INFO)
        };
        if !enabled {
            return;
        }
        let text = String::from_utf8_lossy(line);
        let text = for_log(text.trim_end());
        if text.is_empty() {
            return;
        }
        let Some(dropped) = self.may_write_line() else { return };
        let (plugin, id) = (&*self.plugin, self.request_id());
        if stderr {
            tracing::warn!(target: "wasmgate::plugin", plugin, request_id = id, stream = "stderr", dropped, "{text}");
        } else {
            tracing::info!(target: "wasmgate::plugin", plugin, request_id = id, stream = "stdout", dropped, "{text}");
        }
    }
}

impl error::Host for HostState {}

impl error::HostError for HostState {
    fn drop(&mut self, _: Resource<error::Error>) -> wasmtime::Result<()> {
        Ok(())
    }

    fn to_debug_string(&mut self, _: Resource<error::Error>) -> wasmtime::Result<String> {
        Ok("stream error".to_owned())
    }
}

impl poll::Host for HostState {
    fn poll(&mut self, pollables: Vec<Resource<DynPollable>>) -> wasmtime::Result<Vec<u32>> {
        // Every pollable here is always ready.
        Ok((0..u32::try_from(pollables.len()).unwrap_or(u32::MAX)).collect())
    }
}

impl poll::HostPollable for HostState {
    fn ready(&mut self, _: Resource<DynPollable>) -> wasmtime::Result<bool> {
        Ok(true)
    }

    fn block(&mut self, _: Resource<DynPollable>) -> wasmtime::Result<()> {
        Ok(())
    }

    fn drop(&mut self, _: Resource<DynPollable>) -> wasmtime::Result<()> {
        Ok(())
    }
}

impl streams::Host for HostState {
    fn convert_stream_error(&mut self, err: StreamError) -> wasmtime::Result<streams::StreamError> {
        match err {
            StreamError::Trap(e) => Err(e),
            StreamError::Closed | StreamError::LastOperationFailed(_) => Ok(streams::StreamError::Closed),
        }
    }
}

impl streams::HostOutputStream for HostState {
    fn drop(&mut self, _: Resource<DynOutputStream>) -> wasmtime::Result<()> {
        Ok(())
    }

    fn check_write(&mut self, _: Resource<DynOutputStream>) -> StreamResult<u64> {
        Ok(MAX_LINE as u64)
    }

    fn write(&mut self, s: Resource<DynOutputStream>, bytes: Vec<u8>) -> StreamResult<()> {
        self.write_stdio(s.rep(), &bytes);
        Ok(())
    }

    fn blocking_write_and_flush(&mut self, s: Resource<DynOutputStream>, bytes: Vec<u8>) -> StreamResult<()> {
        self.write_stdio(s.rep(), &bytes);
        Ok(())
    }

    fn blocking_write_zeroes_and_flush(&mut self, _: Resource<DynOutputStream>, _: u64) -> StreamResult<()> {
        Ok(())
    }

    fn subscribe(&mut self, _: Resource<DynOutputStream>) -> wasmtime::Result<Resource<DynPollable>> {
        Ok(Resource::new_own(0))
    }

    fn write_zeroes(&mut self, _: Resource<DynOutputStream>, _: u64) -> StreamResult<()> {
        Ok(())
    }

    fn flush(&mut self, _: Resource<DynOutputStream>) -> StreamResult<()> {
        Ok(())
    }

    fn blocking_flush(&mut self, _: Resource<DynOutputStream>) -> StreamResult<()> {
        Ok(())
    }

    fn splice(&mut self, _: Resource<DynOutputStream>, _: Resource<DynInputStream>, _: u64) -> StreamResult<u64> {
        Err(StreamError::Closed)
    }

    fn blocking_splice(
        &mut self,
        _: Resource<DynOutputStream>,
        _: Resource<DynInputStream>,
        _: u64,
    ) -> StreamResult<u64> {
        Err(StreamError::Closed)
    }
}

impl streams::HostInputStream for HostState {
    fn drop(&mut self, _: Resource<DynInputStream>) -> wasmtime::Result<()> {
        Ok(())
    }

    fn read(&mut self, _: Resource<DynInputStream>, _: u64) -> StreamResult<Vec<u8>> {
        Err(StreamError::Closed)
    }

    fn blocking_read(&mut self, _: Resource<DynInputStream>, _: u64) -> StreamResult<Vec<u8>> {
        Err(StreamError::Closed)
    }

    fn skip(&mut self, _: Resource<DynInputStream>, _: u64) -> StreamResult<u64> {
        Err(StreamError::Closed)
    }

    fn blocking_skip(&mut self, _: Resource<DynInputStream>, _: u64) -> StreamResult<u64> {
        Err(StreamError::Closed)
    }

    fn subscribe(&mut self, _: Resource<DynInputStream>) -> wasmtime::Result<Resource<DynPollable>> {
        Ok(Resource::new_own(0))
    }
}

impl environment::Host for HostState {
    fn get_environment(&mut self) -> wasmtime::Result<Vec<(String, String)>> {
        Ok(Vec::new())
    }

    fn get_arguments(&mut self) -> wasmtime::Result<Vec<String>> {
        Ok(Vec::new())
    }

    fn initial_cwd(&mut self) -> wasmtime::Result<Option<String>> {
        Ok(None)
    }
}

/// A plugin calling `exit` ends its call, not the gateway.
#[derive(Debug, thiserror::Error)]
#[error("plugin called exit")]
pub struct GuestExit;

impl exit::Host for HostState {
    fn exit(&mut self, _: Result<(), ()>) -> wasmtime::Result<()> {
        Err(wasmtime::Error::new(GuestExit))
    }

    fn exit_with_code(&mut self, _: u8) -> wasmtime::Result<()> {
        Err(wasmtime::Error::new(GuestExit))
    }
}

impl stdin::Host for HostState {
    fn get_stdin(&mut self) -> wasmtime::Result<Resource<DynInputStream>> {
        Ok(Resource::new_own(0))
    }
}

impl stdout::Host for HostState {
    fn get_stdout(&mut self) -> wasmtime::Result<Resource<DynOutputStream>> {
        Ok(Resource::new_own(STDOUT))
    }
}

impl stderr::Host for HostState {
    fn get_stderr(&mut self) -> wasmtime::Result<Resource<DynOutputStream>> {
        Ok(Resource::new_own(STDERR))
    }
}

impl terminal_input::Host for HostState {}

impl terminal_input::HostTerminalInput for HostState {
    fn drop(&mut self, _: Resource<terminal_input::TerminalInput>) -> wasmtime::Result<()> {
        Ok(())
    }
}

impl terminal_output::Host for HostState {}

impl terminal_output::HostTerminalOutput for HostState {
    fn drop(&mut self, _: Resource<terminal_output::TerminalOutput>) -> wasmtime::Result<()> {
        Ok(())
    }
}

impl terminal_stdin::Host for HostState {
    fn get_terminal_stdin(&mut self) -> wasmtime::Result<Option<Resource<terminal_input::TerminalInput>>> {
        Ok(None)
    }
}

impl terminal_stdout::Host for HostState {
    fn get_terminal_stdout(&mut self) -> wasmtime::Result<Option<Resource<terminal_output::TerminalOutput>>> {
        Ok(None)
    }
}

impl terminal_stderr::Host for HostState {
    fn get_terminal_stderr(&mut self) -> wasmtime::Result<Option<Resource<terminal_output::TerminalOutput>>> {
        Ok(None)
    }
}

impl wall_clock::Host for HostState {
    fn now(&mut self) -> wasmtime::Result<wall_clock::Datetime> {
        self.exchange.spoil();
        let d = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
        Ok(wall_clock::Datetime { seconds: d.as_secs(), nanoseconds: d.subsec_nanos() })
    }

    fn resolution(&mut self) -> wasmtime::Result<wall_clock::Datetime> {
        Ok(wall_clock::Datetime { seconds: 0, nanoseconds: 1 })
    }
}

impl monotonic_clock::Host for HostState {
    fn now(&mut self) -> wasmtime::Result<monotonic_clock::Instant> {
        self.exchange.spoil();
        Ok(super::host_api::monotonic_ns())
    }

    fn resolution(&mut self) -> wasmtime::Result<monotonic_clock::Duration> {
        Ok(1)
    }

    fn subscribe_instant(&mut self, _: monotonic_clock::Instant) -> wasmtime::Result<Resource<DynPollable>> {
        Ok(Resource::new_own(0))
    }

    fn subscribe_duration(&mut self, _: monotonic_clock::Duration) -> wasmtime::Result<Resource<DynPollable>> {
        Ok(Resource::new_own(0))
    }
}

/// Largest random buffer one call may ask for.
const MAX_RANDOM: u64 = 1 << 20;

impl random::Host for HostState {
    fn get_random_bytes(&mut self, len: u64) -> wasmtime::Result<Vec<u8>> {
        self.exchange.spoil();
        if len > MAX_RANDOM {
            return Err(wasmtime::Error::msg("random buffer too large"));
        }
        let mut buf = vec![0u8; usize::try_from(len).unwrap_or(0)];
        getrandom::fill(&mut buf).map_err(|e| wasmtime::Error::msg(e.to_string()))?;
        Ok(buf)
    }

    fn get_random_u64(&mut self) -> wasmtime::Result<u64> {
        self.exchange.spoil();
        let mut b = [0u8; 8];
        getrandom::fill(&mut b).map_err(|e| wasmtime::Error::msg(e.to_string()))?;
        Ok(u64::from_le_bytes(b))
    }
}

impl insecure::Host for HostState {
    fn get_insecure_random_bytes(&mut self, len: u64) -> wasmtime::Result<Vec<u8>> {
        self.exchange.spoil();
        if len > MAX_RANDOM {
            return Err(wasmtime::Error::msg("random buffer too large"));
        }
        Ok((0..len).map(|_| fastrand::u8(..)).collect())
    }

    fn get_insecure_random_u64(&mut self) -> wasmtime::Result<u64> {
        self.exchange.spoil();
        Ok(fastrand::u64(..))
    }
}

impl insecure_seed::Host for HostState {
    /// Not a fact a call may not depend on: Rust's standard library seeds
    /// its hash maps with it, once per instance, and a hash map's order is
    /// no outcome.
    fn insecure_seed(&mut self) -> wasmtime::Result<(u64, u64)> {
        Ok((fastrand::u64(..), fastrand::u64(..)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_become_lines_and_a_write_takes_what_check_write_allows() {
        let mut stdio = Stdio::default();
        assert_eq!(stdio.push(false, b"one\ntw"), vec![b"one".to_vec()]);
        assert_eq!(stdio.push(true, b"err\n"), vec![b"err".to_vec()], "each stream its own buffer");
        assert_eq!(stdio.push(false, b"o\n\nthree\nfo"), vec![b"two".to_vec(), Vec::new(), b"three".to_vec()]);
        // A line past MAX_LINE is cut there.
        let lines = stdio.push(false, &[b'x'; MAX_LINE]);
        assert_eq!(lines.iter().map(Vec::len).collect::<Vec<_>>(), vec![MAX_LINE + 2]);
        // A write of 10 MB of newlines: 4 096 of them taken, in one pass.
        let lines = stdio.push(false, &vec![b'\n'; 10 << 20]);
        assert_eq!(lines.len(), MAX_LINE);
        assert!(stdio.out.is_empty());
        // What a call left unfinished is taken at its end (logged under its
        // request), not finished by the next call's output.
        assert!(stdio.push(false, b"half a").is_empty());
        assert!(stdio.push(true, b"line").is_empty());
        assert_eq!(stdio.unfinished(), [(false, b"half a".to_vec()), (true, b"line".to_vec())]);
        assert_eq!(stdio.push(false, b"next\n"), vec![b"next".to_vec()]);
    }
}
