//! Config errors, snapshot-tested: each `tests/ui/invalid/NAME.toml` is
//! loaded exactly as `wasmgate check` does and its message compared with
//! `NAME.err` (`$DIR` stands for the directory). `WASMGATE_BLESS=1` rewrites
//! the `.err` files.

use std::path::{Path, PathBuf};

fn ui_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("ui/invalid")
}

fn message(path: &Path) -> String {
    match wasmgate::gateway::check(path) {
        Ok(_) => format!("{} loaded without error", path.display()),
        Err(e) => mask_digests(&e.to_string().replace(&ui_dir().display().to_string(), "$DIR")),
    }
}

/// Plugin digests change with every rebuild; the all-zero pin in the test
/// config stays.
fn mask_digests(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut run = String::new();
    for c in text.chars().chain(std::iter::once('\n')) {
        if c.is_ascii_hexdigit() {
            run.push(c);
            continue;
        }
        if run.len() == 64 && run.bytes().any(|b| b != b'0') {
            out.push_str("$SHA256");
        } else {
            out.push_str(&run);
        }
        run.clear();
        out.push(c);
    }
    out.pop();
    out
}

#[test]
fn config_error_messages_match_their_snapshots() {
    // `1` only: `WASMGATE_BLESS=0` must not rewrite every snapshot.
    let bless = std::env::var_os("WASMGATE_BLESS").is_some_and(|v| v == "1");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(ui_dir())
        .expect("tests/ui/invalid")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    cases.sort();
    assert!(cases.len() >= 10, "expected the ui cases, found {}", cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        let got = message(case);
        let expected_path = case.with_extension("err");
        if bless {
            std::fs::write(&expected_path, format!("{got}\n")).expect("write .err");
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_else(|_| "<missing .err file>".into());
        if got.trim_end() != expected.trim_end() {
            failures.push(format!("{}:\n--- expected\n{}\n--- got\n{got}\n", case.display(), expected.trim_end()));
        }
    }
    assert!(failures.is_empty(), "run with WASMGATE_BLESS=1 to accept new messages\n\n{}", failures.join("\n"));
}

/// Plugin files that are not what they claim, made on the fly.
#[test]
fn broken_plugin_files_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    std::fs::create_dir(&plugins).unwrap();
    std::fs::write(plugins.join("garbage.wasm"), b"definitely not wasm").unwrap();
    std::fs::write(plugins.join("core.wasm"), b"\0asm\x01\0\0\0").unwrap();
    std::fs::copy(wasmgate_tests::guest_dir().join("future-wit.wasm"), plugins.join("future.wasm")).unwrap();
    let check = |name: &str| {
        let cfg = dir.path().join(format!("{name}.toml"));
        let text = format!(
            "{}[upstreams.u]\nendpoints = [\"127.0.0.1:1\"]\n[[routes]]\nupstream = \"u\"\nplugins = [{{ use = \"{name}\" }}]\n",
            wasmgate_tests::preamble(&plugins, "")
        );
        std::fs::write(&cfg, text).unwrap();
        wasmgate::gateway::check(&cfg).err().map(|e| e.to_string()).unwrap_or_default()
    };
    let e = check("garbage");
    assert!(e.contains("plugin `garbage`") && e.contains("is not WebAssembly"), "{e}");
    let e = check("core");
    assert!(e.contains("is a core Wasm module, not a component") && e.contains("wasm32-wasip2"), "{e}");
    let e = check("future");
    assert!(
        e.contains(
            "was built against wasmgate:plugin@0.2.0; this gateway supports @0.1.0, @0.1.1, @0.1.2, @0.1.3, @0.1.4, @0.1.5 and @0.1.6"
        ),
        "{e}"
    );
    assert!(e.contains("fix: rebuild `future` with a wasmgate SDK"), "{e}");
}
