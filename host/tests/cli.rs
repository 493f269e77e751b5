//! The `wasmgate` binary itself: `check` exit codes and messages, `run`
//! reloading on SIGHUP and draining on SIGTERM, with one worker on the
//! process's one thread and with worker threads.

#![expect(clippy::unwrap_used, reason = "test code: a failed setup step should stop the test")]

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_wasmgate");

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// A port that refuses connections: routes to it answer 502. Bound and
/// never listened on, for the life of the test process: a port bound and
/// released could be taken by another test's gateway, running meanwhile,
/// and answer (or, out of descriptors, hang: a request here once waited out
/// its client's 5 s).
/// One for all the tests.
fn dead_upstream() -> String {
    static DEAD: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DEAD.get_or_init(|| {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        socket.bind(&std::net::SocketAddr::from(([127, 0, 0, 1], 0)).into()).unwrap();
        let addr = socket.local_addr().unwrap().as_socket().unwrap();
        std::mem::forget(socket);
        addr.to_string()
    })
    .clone()
}

fn status_of(port: u16, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    out.get(9..12)?.parse().ok()
}

/// An upstream that answers each request `200 ok` after `delay`, on as
/// many connections as come.
fn slow_upstream(delay: Duration) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            std::thread::spawn(move || {
                let mut seen = Vec::new();
                let mut buf = [0; 1024];
                while let Ok(n @ 1..) = conn.read(&mut buf) {
                    seen.extend_from_slice(&buf[..n]);
                    while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                        seen.drain(..end + 4);
                        std::thread::sleep(delay);
                        if conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    addr.to_string()
}

fn write_config(path: &Path, port: u16, upstream: &str, with_b: bool) {
    write_config_with(path, port, upstream, with_b.then_some(upstream), 1);
}

/// Route `/a` to `upstream`, and `/b` to `b` if given.
fn write_config_with(path: &Path, port: u16, upstream: &str, b: Option<&str>, workers: usize) {
    let mut text = format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\nworkers = {workers}\nwatch = false\naccess_log = false\n\n\
         [upstreams.u]\nendpoints = [\"{upstream}\"]\nconnect_timeout = \"200ms\"\n\n\
         [[routes]]\nmatch = {{ prefix = \"/a\" }}\nupstream = \"u\"\n"
    );
    if let Some(b) = b {
        text.push_str(&format!(
            "\n[upstreams.b]\nendpoints = [\"{b}\"]\n\n[[routes]]\nmatch = {{ prefix = \"/b\" }}\nupstream = \"b\"\n"
        ));
    }
    std::fs::write(path, text).unwrap();
}

/// How `child` exited, within 15 s (else the test fails saying `late`).
fn exit_of(child: &mut std::process::Child, late: &str) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        assert!(Instant::now() < deadline, "{late}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// `wasmgate run -c config`, logging warnings only, to nowhere.
fn run(config: &Path) -> std::process::Child {
    Command::new(BIN)
        .args(["run", "-c"])
        .arg(config)
        .env("WASMGATE_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// `wasmgate run -c config` after the shell's `limit` (a `ulimit`),
/// logging at `log`, its stderr to `stderr`.
fn run_limited(config: &Path, limit: &str, log: &str, stderr: Stdio) -> std::process::Child {
    Command::new("sh")
        .arg("-c")
        .arg(format!("{limit} && exec {BIN} run -c {}", config.display()))
        .env("WASMGATE_LOG", log)
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap()
}

fn wait_for(mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    false
}

#[test]
fn check_accepts_a_good_config_and_names_the_problems_in_a_bad_one() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    write_config(&good, 0, &dead_upstream(), false);
    let out = Command::new(BIN).args(["check", "-c"]).arg(&good).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok (1 routes, 1 upstreams, plugins: none)"));

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[server]\nlisten = \"127.0.0.1:0\"\n\n[[routes]]\nupstream = \"missing\"\n").unwrap();
    let out = Command::new(BIN).args(["check", "-c"]).arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.toml:5: routes[0].upstream: unknown upstream `missing`"), "{err}");
    assert!(err.contains("fix: define [upstreams.missing]"), "{err}");
}

/// The threads of process `pid`, by name.
fn threads(pid: u32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .map(|t| std::fs::read_to_string(t.unwrap().path().join("comm")).unwrap().trim().to_owned())
        .collect()
}

#[test]
fn run_with_one_worker_serves_reloads_and_drains_on_one_thread() {
    let seen = reload_and_drain(1);
    // Before the first reload (which runs on a thread of its own), with no
    // watcher and no access log (each a thread): the worker, the control
    // work and the signals share the main thread.
    assert_eq!(seen, ["wasmgate"], "one thread");
}

#[test]
fn run_with_two_workers_serves_reloads_and_drains() {
    let mut seen = reload_and_drain(2);
    seen.sort();
    assert_eq!(seen, ["wasmgate", "wasmgate-contro", "wasmgate-contro", "wasmgate-worker", "wasmgate-worker"]);
}

/// Runs the binary with `workers`: it serves, SIGHUP reloads a good config
/// and refuses a broken one, SIGTERM lets the request in flight finish and
/// ends it cleanly. Returns its threads as they were while it served,
/// before any reload.
fn reload_and_drain(workers: usize) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gw.toml");
    let port = free_port();
    let upstream = dead_upstream();
    let slow = slow_upstream(Duration::from_millis(400));
    write_config_with(&config, port, &upstream, None, workers);
    let mut child = run(&config);
    assert!(wait_for(|| status_of(port, "/a").is_some()), "the gateway started");
    assert_eq!(status_of(port, "/a"), Some(502), "route to a dead upstream");
    assert_eq!(status_of(port, "/b"), Some(404), "no route yet");
    let seen = threads(child.id());

    write_config_with(&config, port, &upstream, Some(&slow), workers);
    let pid = child.id().to_string();
    assert!(Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());
    assert!(wait_for(|| status_of(port, "/b") == Some(200)), "SIGHUP added the /b route");

    // A broken config on SIGHUP is refused; the gateway keeps serving.
    std::fs::write(&config, "[server]\nlisten = 7\n").unwrap();
    assert!(Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(status_of(port, "/b"), Some(200));

    // SIGTERM while a request is in flight: it is answered, then the
    // gateway exits.
    let in_flight = std::thread::spawn(move || status_of(port, "/b"));
    std::thread::sleep(Duration::from_millis(150));
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    assert_eq!(in_flight.join().unwrap(), Some(200), "the request in flight at SIGTERM");
    let status = exit_of(&mut child, "the gateway did not exit on SIGTERM");
    assert!(status.success(), "exit status {status}");
    seen
}

/// With `server.shutdown_delay`, SIGTERM takes the gateway out of rotation
/// (`/health/ready` 503) while it goes on accepting and serving; it stops
/// when the delay ends, or at once on a second signal.
#[test]
fn sigterm_with_a_shutdown_delay_serves_on_out_of_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = dead_upstream();
    // With one worker (on the main thread) and with worker threads.
    for (delay, second, workers) in [("1h", true, 1), ("400ms", false, 2)] {
        let config = dir.path().join("gw.toml");
        let (port, admin) = (free_port(), free_port());
        write_config_with(&config, port, &upstream, None, workers);
        let mut text = std::fs::read_to_string(&config).unwrap();
        text = text.replace("[server]\n", &format!("[server]\nshutdown_delay = \"{delay}\"\n"));
        text.push_str(&format!("\n[admin]\nlisten = \"127.0.0.1:{admin}\"\n"));
        std::fs::write(&config, text).unwrap();
        let mut child = run(&config);
        assert!(wait_for(|| status_of(admin, "/health/ready") == Some(200)), "the gateway started");
        let pid = child.id().to_string();
        let signalled = Instant::now();
        assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
        if second {
            assert!(wait_for(|| status_of(admin, "/health/ready") == Some(503)), "out of rotation");
            assert_eq!(status_of(port, "/a"), Some(502), "a new connection is still served");
            assert!(child.try_wait().unwrap().is_none(), "still running within the delay");
            assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
        }
        let status = exit_of(&mut child, "the gateway did not stop");
        assert!(status.success(), "exit status {status}");
        if !second {
            // A lower bound, not a speed: it went on for the delay.
            assert!(signalled.elapsed() >= Duration::from_millis(400), "stopped before the delay ended");
        }
    }
}

/// A signal that arrives while the gateway is still starting — here during
/// its first DNS resolution, from a nameserver that never answers — waits
/// for it to serve: SIGHUP's default action (a `systemctl reload`, a
/// certificate renewal hook) ended the process.
#[test]
fn a_sighup_while_starting_does_not_end_the_process() {
    use std::os::unix::process::ExitStatusExt;
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let nameserver = silent.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gw.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:{}\"\nworkers = 1\nwatch = false\naccess_log = false\n\n\
             [dns]\nnameservers = [\"{nameserver}\"]\ntimeout = \"1500ms\"\n\n\
             [upstreams.u]\ndns = \"svc.test:80\"\n\n[[routes]]\nupstream = \"u\"\n",
            free_port()
        ),
    )
    .unwrap();
    let mut child = Command::new(BIN)
        .args(["run", "-c"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(400));
    assert!(child.try_wait().unwrap().is_none(), "still starting (resolving)");
    assert!(Command::new("kill").args(["-HUP", &child.id().to_string()]).status().unwrap().success());
    let status = exit_of(&mut child, "the gateway did not finish starting");
    assert_eq!(status.signal(), None, "ended by a signal: {status}");
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    // It went on starting, and failed on what it was doing.
    assert!(err.contains("cannot resolve"), "{err}");
    drop(silent);
}

/// Out of file descriptors, the listener backs off and says so once (it
/// logged every 10 ms, on every worker), and accepts again once some are
/// free.
#[test]
fn running_out_of_file_descriptors_is_said_once_and_survived() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gw.toml");
    let port = free_port();
    write_config(&config, port, &dead_upstream(), false);
    let mut child = run_limited(&config, "ulimit -n 64", "info", Stdio::piped());
    assert!(wait_for(|| status_of(port, "/a").is_some()), "the gateway started");
    // Connections it accepts and holds (no request yet) until it has no
    // descriptor left; the rest wait in the backlog.
    let held: Vec<TcpStream> = (0..100).filter_map(|_| TcpStream::connect(("127.0.0.1", port)).ok()).collect();
    assert_eq!(held.len(), 100);
    std::thread::sleep(Duration::from_millis(1500));
    drop(held);
    assert!(wait_for(|| status_of(port, "/a") == Some(502)), "it serves again");
    assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
    assert!(exit_of(&mut child, "the gateway did not exit on SIGTERM").success());
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    // Once, or a few times if the backlog's burst ran out again: not every
    // 10 ms (130 lines in this test before).
    let said = err.matches("accept failed").count();
    assert!((1..=5).contains(&said), "said {said} times: {err}");
    assert!(err.contains("accepting again"), "{err}");
}

/// A line for every failed request goes to stderr, which the worker writes
/// itself: with a reader that does not keep up (here: none), an outage of
/// one upstream filled the pipe and every worker stopped, healthy routes
/// too. Per-request lines are bounded (10 a second a kind), with a count of
/// those dropped.
#[test]
fn failing_requests_do_not_stall_the_gateway_on_its_log() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gw.toml");
    let port = free_port();
    let ok = slow_upstream(Duration::ZERO);
    write_config_with(&config, port, &dead_upstream(), Some(&ok), 2);
    // Its stderr a pipe nobody reads (64 KiB; each line ~200 bytes).
    let mut child = Command::new(BIN)
        .args(["run", "-c"])
        .arg(&config)
        .env("WASMGATE_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(wait_for(|| status_of(port, "/b").is_some()), "the gateway started");
    for _ in 0..2_000 {
        assert_eq!(status_of(port, "/a"), Some(502));
    }
    assert_eq!(status_of(port, "/b"), Some(200), "the healthy route still served");
    // The next second's first line says how many were dropped.
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(status_of(port, "/a"), Some(502));
    assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert!(exit_of(&mut child, "the gateway did not exit on SIGTERM").success());
    let lines = err.matches("cannot connect").count();
    assert!((1..2_000).contains(&lines), "{lines} lines for 2000 failures");
    assert!(err.contains("dropped="), "says how many it dropped: {err}");
}

/// `run` raises its soft limit on open files to the hard one (systemd's
/// default soft limit, 1 024, ran out at a few hundred clients).
#[test]
fn run_raises_its_open_files_limit_to_the_hard_one() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gw.toml");
    let port = free_port();
    write_config(&config, port, &dead_upstream(), false);
    let mut child = run_limited(&config, "ulimit -Sn 256", "warn", Stdio::null());
    assert!(wait_for(|| status_of(port, "/a").is_some()), "the gateway started");
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", child.id())).unwrap();
    let open_files = limits.lines().find(|l| l.starts_with("Max open files")).unwrap();
    let numbers: Vec<u64> = open_files.split_whitespace().filter_map(|w| w.parse().ok()).collect();
    let [soft, hard] = numbers[..] else { panic!("{open_files}") };
    assert!(hard > 256, "this machine's hard limit is too low to tell: {open_files}");
    assert_eq!(soft, hard.min(1 << 20), "{open_files}");
    assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
    assert!(exit_of(&mut child, "the gateway did not exit on SIGTERM").success());
}

/// A second SIGTERM (or Ctrl-C) during the drain ends the process at once:
/// it was swallowed, and the operator waited out `shutdown_timeout`.
#[test]
fn a_second_signal_during_the_drain_exits_at_once() {
    for workers in [1, 2] {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("gw.toml");
        let port = free_port();
        let slow = slow_upstream(Duration::from_secs(10));
        write_config_with(&config, port, &dead_upstream(), Some(&slow), workers);
        let mut text = std::fs::read_to_string(&config).unwrap();
        text = text.replace("[server]\n", "[server]\nshutdown_timeout = \"30s\"\n");
        std::fs::write(&config, text).unwrap();
        let mut child = run(&config);
        assert!(wait_for(|| status_of(port, "/a").is_some()), "the gateway started");
        let in_flight = std::thread::spawn(move || status_of(port, "/b"));
        // Time for it to reach the upstream (which answers in 10 s).
        std::thread::sleep(Duration::from_millis(1000));
        let pid = child.id().to_string();
        assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
        std::thread::sleep(Duration::from_millis(500));
        assert!(child.try_wait().unwrap().is_none(), "{workers} workers: draining the request in flight");
        let start = Instant::now();
        assert!(Command::new("kill").args(["-INT", &pid]).status().unwrap().success());
        let status = exit_of(&mut child, "the gateway did not exit on the second signal");
        assert!(start.elapsed() < Duration::from_secs(5), "{workers} workers: exited at once");
        assert_eq!(status.code(), Some(1), "{workers} workers: {status}");
        assert_eq!(in_flight.join().unwrap(), None, "the request in flight was cut");
    }
}

#[path = "../../tests/src/registry.rs"]
#[expect(
    clippy::expect_used,
    clippy::panic,
    reason = "test harness: a registry that cannot start should stop the test"
)]
#[expect(dead_code, reason = "shared with the end-to-end tests: the registry over TLS is theirs")]
mod registry;

/// A registry, and an empty component (a component, but no policy) in a
/// directory of the test's own.
fn registry_and_component() -> (tempfile::TempDir, registry::Registry, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let component = dir.path().join("empty.wasm");
    std::fs::write(&component, wasm_encoder::Component::new().finish()).unwrap();
    (dir, registry::Registry::start(), component)
}

/// `wasmgate push` publishes a component and prints how to pin it; `check`
/// pulls what it printed (the component then fails the load on its own
/// account: an empty component is no policy). What is not a component is
/// not pushed; a registry's refusal names the variables that give
/// credentials.
#[test]
fn push_publishes_a_component_that_check_pulls_by_the_printed_pin() {
    let (dir, registry, component) = registry_and_component();
    let reference = format!("{}/tests/empty:1", registry.host);
    let key = rcgen::KeyPair::generate().unwrap();
    let (private_key, public_key) = (dir.path().join("publisher.key"), dir.path().join("publisher.pub"));
    std::fs::write(&private_key, key.serialize_pem()).unwrap();
    std::fs::write(&public_key, key.public_key_pem()).unwrap();
    let out = push(&component, &reference, &[OsStr::new("--sign-key"), private_key.as_os_str()], None);
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{printed}{}", String::from_utf8_lossy(&out.stderr));
    assert!(printed.contains("signed sha256:") && printed.contains("publisher.key"), "{printed}");
    let pin = printed.lines().map(str::trim).find(|l| l.contains("@sha256:")).unwrap();
    assert!(pin.starts_with(&format!("oci = \"{}/tests/empty@sha256:", registry.host)), "{printed}");

    let config = dir.path().join("gateway.toml");
    std::fs::create_dir_all(dir.path().join("plugins")).unwrap();
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n\n[plugins]\ndir = \"plugins\"\ncache_dir = \"cache\"\n\n{}\n\
             [plugin.empty]\n{pin}\nsigned_by = [\"publisher.pub\"]\n\n[upstreams.u]\nendpoints = [\"{}\"]\n\n\
             [[routes]]\nupstream = \"u\"\nplugins = [{{ use = \"empty\" }}]\n",
            registry.table(""),
            dead_upstream()
        ),
    )
    .unwrap();
    let out = Command::new(BIN).args(["check", "-c"]).arg(&config).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("plugin `empty`") && !err.contains("cannot pull"),
        "pulled, its signature verified, then refused: {err}"
    );
    // Trusting another key, the same pull is refused for its signature.
    let other = rcgen::KeyPair::generate().unwrap();
    std::fs::write(&public_key, other.public_key_pem()).unwrap();
    std::fs::rename(dir.path().join("cache"), dir.path().join("cache-trusting-the-publisher")).unwrap();
    let out = Command::new(BIN).args(["check", "-c"]).arg(&config).output().unwrap();
    let refused = String::from_utf8_lossy(&out.stderr);
    assert!(refused.contains("has no signature by a trusted key"), "{refused}");
    assert!(
        dir.path().join("cache-trusting-the-publisher/oci/sha256").read_dir().unwrap().count() >= 4,
        "the manifest, the component, the signature manifest and its payload kept"
    );

    // A key that cannot sign is said before anything is pushed.
    let out = push(
        &component,
        &format!("{}/tests/unsigned:1", registry.host),
        &[OsStr::new("--sign-key"), public_key.as_os_str()],
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no PEM `PRIVATE KEY`"));
    let port: u16 = registry.host.rsplit(':').next().unwrap().parse().unwrap();
    assert_eq!(status_of(port, "/v2/tests/unsigned/tags/list"), Some(404), "nothing pushed");
    assert_eq!(status_of(port, "/v2/tests/empty/tags/list"), Some(200), "as a pushed one is");

    let core_module = dir.path().join("core.wasm");
    std::fs::write(&core_module, wasm_encoder::Module::new().finish()).unwrap();
    let out = push(&core_module, &reference, &[], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a WebAssembly component"));

    let private = registry::Registry::with_accounts();
    let private_reference = format!("{}/tests/empty:1", private.host);
    let out = push(&component, &private_reference, &[], None);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("the registry asks for a username and password"), "{err}");
    assert!(err.contains("fix: export WASMGATE_REGISTRY_USERNAME and WASMGATE_REGISTRY_PASSWORD"), "{err}");
    let out = push(&component, &private_reference, &[], Some(registry::USER));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// `wasmgate push FILE REFERENCE --plain-http EXTRA…`, as `account` (none:
/// the credential variables removed).
fn push(file: &Path, reference: &str, extra: &[&OsStr], account: Option<(&str, &str)>) -> std::process::Output {
    let mut command = Command::new(BIN);
    command.arg("push").arg(file).arg(reference).arg("--plain-http").args(extra);
    match account {
        Some((user, password)) => {
            command.env("WASMGATE_REGISTRY_USERNAME", user).env("WASMGATE_REGISTRY_PASSWORD", password)
        }
        None => command.env_remove("WASMGATE_REGISTRY_USERNAME").env_remove("WASMGATE_REGISTRY_PASSWORD"),
    };
    command.output().unwrap()
}

#[path = "../src/plugin/caps/redis/tests/server.rs"]
#[expect(clippy::expect_used, clippy::panic, reason = "test harness: a Redis that cannot start should stop the test")]
#[expect(dead_code, reason = "shared with the store's tests: its async connection is theirs")]
mod redis_server;

/// `wasmgate publish` writes a config to Redis only once it loads; `check`
/// reads it there (`-c redis://…`, as `run` does: the e2e tests run it),
/// the password from the environment, and never shows it.
#[test]
fn publish_writes_a_checked_config_that_check_reads_from_redis() {
    let dir = tempfile::tempdir().unwrap();
    let redis = redis_server::RedisServer::start();
    let url = format!("{}0?key=fleet", redis.url());
    let command =
        |args: &[&OsStr]| Command::new(BIN).args(args).env_remove("WASMGATE_CONFIG_STORE_PASSWORD").output().unwrap();
    let (check, publish, c) = (OsStr::new("check"), OsStr::new("publish"), OsStr::new("-c"));

    let out = command(&[check, c, url.as_ref()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains(&format!("error: {url}: the key \"fleet\" is not set")), "{err}");
    assert!(err.contains("fix: publish one: wasmgate publish gateway.toml"), "{err}");

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[server]\nlisten = \"127.0.0.1:0\"\n\n[[routes]]\nupstream = \"missing\"\n").unwrap();
    let out = command(&[publish, bad.as_os_str(), url.as_ref()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("bad.toml:5: routes[0].upstream: unknown upstream `missing`"), "{err}");
    assert!(err.contains("nothing was published"), "{err}");
    let mut store = redis::Client::open(redis.url()).unwrap().get_connection().unwrap();
    assert!(!redis::cmd("EXISTS").arg("fleet").query::<bool>(&mut store).unwrap(), "nothing was published");

    let good = dir.path().join("good.toml");
    write_config(&good, 0, &dead_upstream(), false);
    let out = command(&[publish, good.as_os_str(), url.as_ref()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = std::fs::read_to_string(&good).unwrap();
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(printed.contains(&format!("published to {url} (sha256 ")), "{printed}");
    assert_eq!(redis::cmd("GET").arg("fleet").query::<String>(&mut store).unwrap(), text);
    let out = command(&[check, c, url.as_ref()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(printed.contains(&format!("{url}: ok (1 routes, 1 upstreams, plugins: none)")), "{printed}");

    redis::cmd("HSET").arg("other").arg("f").arg("v").query::<()>(&mut store).unwrap();
    let out = command(&[check, c, url.replace("fleet", "other").as_ref()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("WRONGTYPE") && err.contains("must hold config text (a Redis string)"), "{err}");

    // A key holding more than a config can be is not replaced (nor kept).
    redis::cmd("SETRANGE").arg("big").arg(64 << 20).arg("x").query::<()>(&mut store).unwrap();
    let out = command(&[publish, good.as_os_str(), url.replace("fleet", "big").as_ref()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("the key \"big\" holds over 64 MiB: not a config"), "{err}");
    assert!(err.contains("delete it first (redis-cli DEL big)"), "{err}");
    assert_eq!(redis::cmd("STRLEN").arg("big").query::<u64>(&mut store).unwrap(), (64 << 20) + 1);
    assert!(!redis::cmd("EXISTS").arg("big:previous").query::<bool>(&mut store).unwrap());
    redis::cmd("DEL").arg("big").query::<()>(&mut store).unwrap();

    // A Redis with a password: said how to give it; given, never shown.
    redis::cmd("CONFIG").arg("SET").arg("requirepass").arg("s3cret").query::<()>(&mut store).unwrap();
    let out = command(&[check, c, url.as_ref()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("fix: give the store's password in WASMGATE_CONFIG_STORE_PASSWORD"), "{err}");
    // (Where the refusal is the database's switch.)
    let out = command(&[check, c, url.replace("/0?", "/1?").as_ref()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("fix: give the store's password in WASMGATE_CONFIG_STORE_PASSWORD"), "{err}");
    let out = Command::new(BIN)
        .args([check, c, url.as_ref()])
        .env("WASMGATE_CONFIG_STORE_PASSWORD", "s3cret")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let in_url = url.replacen("redis://", "redis://:s3cret@", 1);
    let out = command(&[check, c, in_url.as_ref()]);
    let all = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && all.contains(&format!("{url}: ok")), "{all}");
    assert!(!all.contains("s3cret"), "{all}");

    let out = command(&[OsStr::new("run"), c, good.as_os_str(), OsStr::new("--last-good"), OsStr::new("x.toml")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--last-good is for a config from a store"));
}

/// `wasmgate inspect` reads a file, or pulls a reference first; what is no
/// policy is said as a load would say it. (What it prints of a real
/// plugin is the e2e tests', which have the plugins built.)
#[test]
fn inspect_reads_a_file_or_pulls_a_reference_and_checks_it_as_a_load_would() {
    let (dir, registry, component) = registry_and_component();
    // Its scratch directory goes where TMPDIR says, and is gone after.
    let tmp = dir.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let inspect = |plugin: &OsStr| {
        let out =
            Command::new(BIN).arg("inspect").arg(plugin).arg("--plain-http").env("TMPDIR", &tmp).output().unwrap();
        assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0, "the scratch directory is removed");
        out
    };

    let out = inspect(component.as_os_str());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("empty.wasm does not export wasmgate:plugin/policy"), "{err}");
    assert!(err.contains("fix: implement wasmgate_sdk::Plugin and call export_plugin!"), "{err}");

    let reference = format!("{}/tests/empty:1", registry.host);
    let out = inspect(OsStr::new(&reference));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "nothing pushed yet: {err}");
    assert!(err.contains(&format!("cannot pull {reference}")), "{err}");
    assert!(push(&component, &reference, &[], None).status.success());
    let out = inspect(OsStr::new(&reference));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "pulled, then refused as no policy: {err}");
    assert!(err.contains(&format!("error: {reference} does not export wasmgate:plugin/policy")), "{err}");

    let out = inspect(OsStr::new("no-such.wasm"));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no-such.wasm is not a file, nor a reference"));
}

/// `wasmgate rollback` puts back the config a publish replaced (kept at
/// KEY:previous), checked first; the one it replaces is kept in turn, so a
/// second rollback goes forward again. Nothing to go back to, or a kept
/// config that no longer loads, is said, and nothing is written.
#[test]
fn rollback_puts_back_the_config_a_publish_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let redis = redis_server::RedisServer::start();
    let url = format!("{}0?key=fleet", redis.url());
    let command =
        |args: &[&str]| Command::new(BIN).args(args).env_remove("WASMGATE_CONFIG_STORE_PASSWORD").output().unwrap();
    let mut store = redis::Client::open(redis.url()).unwrap().get_connection().unwrap();
    let get =
        |store: &mut redis::Connection, key: &str| redis::cmd("GET").arg(key).query::<Option<String>>(store).unwrap();

    let out = command(&["rollback", &url]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("the key \"fleet\" is not set"), "nothing published yet: {err}");

    let (a, b) = (dir.path().join("a.toml"), dir.path().join("b.toml"));
    write_config(&a, 0, &dead_upstream(), false);
    write_config(&b, 0, &dead_upstream(), true);
    let (a_text, b_text) = (std::fs::read_to_string(&a).unwrap(), std::fs::read_to_string(&b).unwrap());
    let sha = |text: &str| hex::encode(<sha2::Sha256 as sha2::Digest>::digest(text.as_bytes()));
    let out = command(&["publish", a.to_str().unwrap(), &url]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!String::from_utf8_lossy(&out.stdout).contains("kept at"), "nothing was replaced");
    let out = command(&["rollback", &url]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("nothing to roll back to: the key \"fleet:previous\" is not set"), "{err}");
    assert!(err.contains("fix: publish the config to go back to"), "{err}");
    let out = command(&["publish", b.to_str().unwrap(), &url]);
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        printed.contains(&format!("the config it replaced (sha256 {}) is kept at fleet:previous", sha(&a_text))),
        "{printed}"
    );
    assert_eq!(
        (get(&mut store, "fleet"), get(&mut store, "fleet:previous")),
        (Some(b_text.clone()), Some(a_text.clone()))
    );

    let out = command(&["rollback", &url]);
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(printed.contains(&format!("{url}: rolled back (sha256 {})", sha(&a_text))), "{printed}");
    assert_eq!(
        (get(&mut store, "fleet"), get(&mut store, "fleet:previous")),
        (Some(a_text.clone()), Some(b_text.clone()))
    );
    let out = command(&["rollback", &url]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(get(&mut store, "fleet"), Some(b_text.clone()), "a second rollback goes forward again");
    // What is kept is what is in force (a plain SET made them one): said.
    redis::cmd("SET").arg("fleet:previous").arg(&b_text).query::<()>(&mut store).unwrap();
    let out = command(&["rollback", &url]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("the config kept at fleet:previous is the one in force"), "{err}");
    // A user who may only read is refused, told the commands it needs.
    redis::cmd("ACL")
        .arg(
            &["SETUSER", "reader", "on", ">pw", "~*", "+strlen", "+getrange", "+exists", "+select", "+hello", "+auth"]
                [..],
        )
        .query::<()>(&mut store)
        .unwrap();
    let out = Command::new(BIN)
        .args(["publish", a.to_str().unwrap(), &url.replacen("redis://", "redis://reader@", 1)])
        .env("WASMGATE_CONFIG_STORE_PASSWORD", "pw")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("to publish and roll back, also +watch +get +multi +exec +set on it and fleet:previous"),
        "{err}"
    );
    assert_eq!(get(&mut store, "fleet"), Some(b_text.clone()), "nothing written");
    // A key that holds another type is not written over.
    redis::cmd("HSET").arg("other").arg("f").arg("v").query::<()>(&mut store).unwrap();
    let out = command(&["publish", a.to_str().unwrap(), &url.replace("key=fleet", "key=other")]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("WRONGTYPE") && err.contains("must hold config text (a Redis string)"), "{err}");
    assert_eq!(redis::cmd("TYPE").arg("other").query::<String>(&mut store).unwrap(), "hash");

    redis::cmd("SET")
        .arg("fleet:previous")
        .arg("[server]\nlisten = \"127.0.0.1:0\"\n\n[[routes]]\nupstream = \"gone\"\n")
        .query::<()>(&mut store)
        .unwrap();
    let out = command(&["rollback", &url]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("unknown upstream `gone`"), "{err}");
    assert!(err.contains("nothing was rolled back (that is the config kept at fleet:previous)"), "{err}");
    assert_eq!(get(&mut store, "fleet"), Some(b_text), "nothing written");
}

#[path = "../../tests/src/certs.rs"]
#[expect(clippy::expect_used, reason = "test harness: a test PKI that cannot be made should stop the test")]
#[expect(dead_code, reason = "shared with the end-to-end tests: listeners and revocation are theirs")]
mod certs;

/// A config store over TLS (`-c rediss://…`), to a Redis that asks for a
/// client certificate: its CA, and the certificate and key to give, come
/// from WASMGATE_CONFIG_STORE_CA, _CERT and _KEY; `publish` writes and
/// `check` reads through them. Without a certificate Redis refuses the
/// handshake, and another CA does not trust Redis's: each said with the TLS
/// fix (the store unreachable: a start may use its last good copy). The
/// variables with a `redis://` URL, or half a pair, are refused before
/// anything is tried.
#[test]
fn publish_and_check_reach_a_config_store_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let ca = certs::Ca::new(dir.path(), "redis-ca");
    let server = ca.server("redis", &["127.0.0.1"]);
    let client = ca.client("gateway");
    let redis = redis_server::RedisServer::start_tls(&ca.pem, &server.cert, &server.key);
    let url = format!("{}0?key=fleet", redis.url());
    let good = dir.path().join("good.toml");
    write_config(&good, 0, &dead_upstream(), false);
    let [ca_var, cert_var, key_var] =
        ["WASMGATE_CONFIG_STORE_CA", "WASMGATE_CONFIG_STORE_CERT", "WASMGATE_CONFIG_STORE_KEY"];
    let run = |args: &[&OsStr], vars: &[(&str, &Path)]| {
        let mut command = Command::new(BIN);
        command.args(args).env_remove(ca_var).env_remove(cert_var).env_remove(key_var);
        for (var, path) in vars {
            command.env(var, path);
        }
        command.output().unwrap()
    };
    let all = [(ca_var, ca.pem.as_path()), (cert_var, client.cert.as_path()), (key_var, client.key.as_path())];
    let (check, publish, c) = (OsStr::new("check"), OsStr::new("publish"), OsStr::new("-c"));

    let out = run(&[publish, good.as_os_str(), url.as_ref()], &all);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(printed.contains(&format!("published to {url} (sha256 ")), "{printed}");
    let out = run(&[check, c, url.as_ref()], &all);
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(printed.contains(&format!("{url}: ok (1 routes, 1 upstreams, plugins: none)")), "{printed}");

    // Only the CA: Redis asks for a certificate and gets none.
    let out = run(&[check, c, url.as_ref()], &all[..1]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains(&format!("error: {url}: cannot reach the config store: ")), "{err}");
    assert!(err.contains("CertificateRequired"), "{err}");
    assert!(err.contains("needs WASMGATE_CONFIG_STORE_CERT and WASMGATE_CONFIG_STORE_KEY"), "{err}");
    // Another CA: Redis's certificate is not trusted.
    let other = certs::Ca::new(dir.path(), "other-ca");
    let out = run(&[check, c, url.as_ref()], &[(ca_var, other.pem.as_path()), all[1], all[2]]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("invalid peer certificate"), "{err}");
    assert!(err.contains("fix: check TLS: WASMGATE_CONFIG_STORE_CA must hold the CA that issued Redis's"), "{err}");

    let plain = url.replacen("rediss://", "redis://", 1);
    let out = run(&[check, c, plain.as_ref()], &all[..1]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("WASMGATE_CONFIG_STORE_CA is for TLS, and the store's URL is redis://: write it as rediss://"),
        "{err}"
    );
    let out = run(&[check, c, url.as_ref()], &all[..2]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("give WASMGATE_CONFIG_STORE_CERT and WASMGATE_CONFIG_STORE_KEY both, or neither"), "{err}");
    let out = run(&[check, c, url.as_ref()], &[(ca_var, Path::new("no-such-ca.pem"))]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("the store's TLS files: no-such-ca.pem: cannot read"), "{err}");
}

#[path = "../../tests/src/proxy.rs"]
#[expect(clippy::expect_used, reason = "test harness: a proxy that cannot start should stop the test")]
#[expect(dead_code, reason = "shared with the end-to-end tests: tunnels (HTTPS) are theirs")]
mod proxy;

/// With no `proxy` configured, registry calls go through the environment's
/// (`HTTP_PROXY` for a plain-HTTP registry, before `http_proxy`), its
/// credentials sent as `Proxy-Authorization` — unless `NO_PROXY` lists the
/// registry, the registry is on loopback, or `--proxy direct` says so. The
/// registry is named as only the proxy can reach it (`registry.invalid`,
/// which resolves nowhere): what goes around the proxy fails to connect.
#[test]
fn registry_calls_take_the_environments_proxy_unless_no_proxy_lists_the_registry() {
    use base64::Engine as _;
    let (_dir, registry, component) = registry_and_component();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let proxy = runtime.block_on(proxy::ForwardProxy::start());
    let port = registry.host.rsplit(':').next().unwrap();
    let named = format!("registry.invalid:{port}");
    proxy.alias(&named, registry.host.parse().unwrap());
    let with = |command: &str, host: &str, env: &[(&str, String)], extra: &[&str]| {
        let mut c = Command::new(BIN);
        c.arg(command);
        if command == "push" {
            c.arg(&component);
        }
        c.arg(format!("{host}/tests/empty:1")).arg("--plain-http").args(extra);
        for name in ["http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "no_proxy", "NO_PROXY"] {
            c.env_remove(name);
        }
        c.env_remove("WASMGATE_REGISTRY_USERNAME").env_remove("WASMGATE_REGISTRY_PASSWORD");
        c.envs(env.iter().map(|(k, v)| (k, v))).output().unwrap()
    };
    let through = format!("http://fleet:pa%40ss@{}/", proxy.addr);

    let out = with("push", &named, &[("HTTP_PROXY", through.clone())], &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(proxy.forwarded() >= 3 && proxy.reached(&named), "pushed through the proxy");
    let basic = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("fleet:pa@ss"));
    assert!(proxy.authorizations().iter().all(|a| *a == basic), "{:?}", proxy.authorizations());

    // Pulled through it (then refused as no policy: 2), HTTP_PROXY before
    // http_proxy.
    let before = proxy.forwarded();
    let both = [("HTTP_PROXY", through.clone()), ("http_proxy", format!("http://{}", dead_upstream()))];
    let out = with("inspect", &named, &both, &[]);
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(proxy.forwarded() > before, "through the proxy");

    // Around it: each fails to connect (1), the proxy untouched.
    let before = proxy.forwarded();
    let listed = [("HTTP_PROXY", through.clone()), ("NO_PROXY", "example.com,.invalid".to_owned())];
    for (env, extra) in [(&listed[..], &[][..]), (&listed[..1], &["--proxy", "direct"][..])] {
        let out = with("inspect", &named, env, extra);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains(&format!("cannot connect to {named}")), "{err}");
    }
    // A registry on loopback is reached directly.
    let out = with("inspect", &registry.host, &listed[..1], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(proxy.forwarded(), before, "not through the proxy");

    let out = with("inspect", &named, &[("HTTP_PROXY", "https://fleet:s3cret@proxy.corp:3128".to_owned())], &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("HTTP_PROXY: a proxy reached over TLS (https://) is not supported"), "{err}");
    assert!(err.contains("fix: check --proxy, or HTTPS_PROXY/HTTP_PROXY and NO_PROXY"), "{err}");
    assert!(!err.contains("s3cret"), "{err}");
}
