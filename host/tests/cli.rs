//! The `wasmgate` binary itself: `check` exit codes and messages, `run`
//! reloading on SIGHUP and draining on SIGTERM.

#![expect(clippy::unwrap_used, reason = "test code: a failed setup step should stop the test")]

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

/// A port that refuses connections: routes to it answer 502.
fn dead_upstream() -> String {
    format!("127.0.0.1:{}", free_port())
}

fn status_of(port: u16, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    out.get(9..12)?.parse().ok()
}

fn write_config(path: &Path, port: u16, upstream: &str, with_b: bool) {
    let mut text = format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\nworkers = 1\nwatch = false\n\n\
         [upstreams.u]\nendpoints = [\"{upstream}\"]\nconnect_timeout = \"200ms\"\n\n\
         [[routes]]\nmatch = {{ prefix = \"/a\" }}\nupstream = \"u\"\n"
    );
    if with_b {
        text.push_str("\n[[routes]]\nmatch = { prefix = \"/b\" }\nupstream = \"u\"\n");
    }
    std::fs::write(path, text).unwrap();
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

#[test]
fn run_reloads_on_sighup_and_drains_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gw.toml");
    let port = free_port();
    let upstream = dead_upstream();
    write_config(&config, port, &upstream, false);
    let mut child = Command::new(BIN)
        .args(["run", "-c"])
        .arg(&config)
        .env("WASMGATE_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(wait_for(|| status_of(port, "/a").is_some()), "the gateway started");
    assert_eq!(status_of(port, "/a"), Some(502), "route to a dead upstream");
    assert_eq!(status_of(port, "/b"), Some(404), "no route yet");

    write_config(&config, port, &upstream, true);
    let pid = child.id().to_string();
    assert!(Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());
    assert!(wait_for(|| status_of(port, "/b") == Some(502)), "SIGHUP added the /b route");

    // A broken config on SIGHUP is refused; the gateway keeps serving.
    std::fs::write(&config, "[server]\nlisten = 7\n").unwrap();
    assert!(Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(status_of(port, "/b"), Some(502));

    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "the gateway did not exit on SIGTERM");
        std::thread::sleep(Duration::from_millis(25));
    };
    assert!(status.success(), "exit status {status}");
}
