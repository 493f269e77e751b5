//! A real OCI registry (the CNCF distribution registry, Debian's
//! `docker-registry`) per test, on a port it picks itself, killed when
//! dropped.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use tempfile::TempDir;

const INSTALL_HINT: &str = "docker-registry (the CNCF distribution registry) is needed by the OCI pull tests \
     and was not found on PATH; install it (Debian/Ubuntu: `apt-get install -y docker-registry`)";

/// A user the registry with accounts knows, and its password.
pub const USER: (&str, &str) = ("puller", "puller-password");
/// `USER`'s entry in an htpasswd file (bcrypt, the one hash the registry
/// takes, at cost 5).
const HTPASSWD: &str = "puller:$2y$05$ZS0LWM5Jljh4.xHkt2e86OYuw5oWiY7G3YoR4LuBxdJP6C72WEkHC\n";

#[derive(Debug)]
pub struct Registry {
    /// `127.0.0.1:PORT`: the registry part of a reference.
    pub host: String,
    /// Whether it serves HTTPS.
    tls: bool,
    child: Child,
    _dir: TempDir,
}

impl Registry {
    /// A registry anyone may pull from and push to, over plain HTTP.
    pub fn start() -> Self {
        Self::spawn(None, |_| String::new())
    }

    /// A registry over plain HTTP that asks for [`USER`]'s password (Basic
    /// authentication) for every request.
    pub fn with_accounts() -> Self {
        Self::spawn(None, |dir| {
            let htpasswd = dir.join("htpasswd");
            std::fs::write(&htpasswd, HTPASSWD).expect("write htpasswd");
            format!("auth:\n  htpasswd:\n    realm: wasmgate-tests\n    path: {}\n", htpasswd.display())
        })
    }

    /// A registry serving HTTPS with this certificate and key (PEM files),
    /// and `auth` (the registry config's `auth:` section, or nothing).
    pub fn with_tls(cert: &Path, key: &Path, auth: &str) -> Self {
        let tls = format!("  tls:\n    certificate: {}\n    key: {}\n", cert.display(), key.display());
        Self::spawn(Some(tls), |_| auth.to_owned())
    }

    fn spawn(tls: Option<String>, auth: impl FnOnce(&Path) -> String) -> Self {
        let dir = tempfile::tempdir().expect("temporary directory for the registry");
        let mut config = format!(
            "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {}\n\
             http:\n  addr: 127.0.0.1:0\n  secret: wasmgate-tests\n{}",
            dir.path().join("data").display(),
            tls.as_deref().unwrap_or("")
        );
        config.push_str(&auth(dir.path()));
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).expect("write registry config");
        let mut child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{INSTALL_HINT} ({e})"));
        // It logs the address it bound (port 0: its own pick, no race).
        let stderr = child.stderr.take().expect("the registry's stderr");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            // Read to the end, so the registry never blocks on a full pipe.
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(at) = line.find("listening on ")
                    && let Some(tx) = tx.take()
                {
                    let addr =
                        line[at + "listening on ".len()..].split(['"', ' ', ',']).next().unwrap_or("").to_owned();
                    let _ = tx.send(addr);
                }
            }
        });
        let host = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(host) => host,
            Err(_) => {
                let _ = child.kill();
                panic!("docker-registry did not say where it listens within 20 s");
            }
        };
        Self { host, tls: tls.is_some(), child, _dir: dir }
    }

    /// `[plugins.registries."HOST"]` for this registry (`tls = false`
    /// unless it serves HTTPS), with `extra` lines.
    pub fn table(&self, extra: &str) -> String {
        let tls = if self.tls { "" } else { "tls = false\n" };
        format!("[plugins.registries.\"{}\"]\n{tls}{extra}\n", self.host)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
