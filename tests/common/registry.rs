//! A real `docker-registry` (CNCF distribution 2.8, Debian package) per test.
//!
//! Each instance gets its own temp dir (config, htpasswd, storage, log) and a
//! free 127.0.0.1 port. The child is killed and reaped on Drop, so a failing
//! test never leaks registry processes.

use std::collections::HashSet;
use std::fs::File;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a registry may take to answer `GET /v2/` after spawning.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// Poll interval for readiness; the registry usually starts in ~100 ms.
const READY_POLL: Duration = Duration::from_millis(25);
/// Attempts at starting on a fresh port when the chosen one was taken.
const PORT_ATTEMPTS: usize = 5;

pub struct Registry {
    /// Owns config, htpasswd, storage and log; removed on Drop (after the
    /// child is killed, since fields drop after `Drop::drop` runs).
    dir: tempfile::TempDir,
    addr: SocketAddr,
    creds: Option<(String, String)>,
    /// `catalog.maxentries`: the largest catalog page the registry serves.
    catalog_page: Option<usize>,
    /// Served over HTTPS with this certificate (HTTP/2 offered, as distribution does).
    tls: Option<super::tls::ServerCert>,
    /// Write an access line per request to the log (what protocol each request came over).
    access_log: bool,
    child: Option<Child>,
}

impl Registry {
    /// Anonymous registry (no auth): anyone can push and pull.
    pub async fn start() -> Registry {
        Self::start_inner(None, None, None, false).await
    }

    /// Registry served over HTTPS with `cert` (HTTP/2 offered over TLS, HTTP/1.1 too), with
    /// an access log line per request when `access_log`.
    pub async fn start_tls(cert: super::tls::ServerCert, access_log: bool) -> Registry {
        Self::start_inner(None, None, Some(cert), access_log).await
    }

    /// Anonymous registry whose catalog pages hold at most `n` repositories: it links to
    /// the next page and refuses a larger `?n=` with 400 PAGINATION_NUMBER_INVALID.
    pub async fn start_with_catalog_page(n: usize) -> Registry {
        Self::start_inner(None, Some(n), None, false).await
    }

    /// Registry behind htpasswd basic auth (bcrypt): every request, including
    /// pulls and `GET /v2/`, needs these credentials.
    pub async fn start_with_auth(user: &str, pass: &str) -> Registry {
        Self::start_inner(
            Some((user.to_string(), pass.to_string())),
            None,
            None,
            false,
        )
        .await
    }

    async fn start_inner(
        creds: Option<(String, String)>,
        catalog_page: Option<usize>,
        tls: Option<super::tls::ServerCert>,
        access_log: bool,
    ) -> Registry {
        let dir = tempfile::Builder::new()
            .prefix("image-relay-registry-")
            .tempdir()
            .expect("create registry temp dir");
        std::fs::create_dir_all(dir.path().join("storage")).expect("create storage dir");
        if let Some((user, pass)) = &creds {
            write_htpasswd(&dir.path().join("htpasswd"), user, pass);
        }

        let mut reg = Registry {
            dir,
            addr: free_port(),
            creds,
            catalog_page,
            tls,
            access_log,
            child: None,
        };
        let mut last_log = String::new();
        for _ in 0..PORT_ATTEMPTS {
            match reg.spawn_and_wait().await {
                Ok(()) => return reg,
                // Someone grabbed the port between our probe and the
                // registry's bind: try another port with the same dir.
                Err(StartError::PortInUse(log)) => {
                    last_log = log;
                    reg.addr = free_port();
                }
                Err(StartError::Other(msg)) => panic!("{msg}"),
            }
        }
        panic!(
            "docker-registry found no free port after {PORT_ATTEMPTS} attempts; last log:\n{last_log}"
        );
    }

    /// Socket address the registry listens on (always 127.0.0.1).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `127.0.0.1:PORT`, the form used in image references.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// `http://127.0.0.1:PORT`, or `https://` for a TLS registry.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// Whether it serves HTTPS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// `(user, pass)` for an auth registry, `None` for an anonymous one.
    pub fn creds(&self) -> Option<(String, String)> {
        self.creds.clone()
    }

    /// Root of the filesystem storage driver (for tests that inspect or
    /// tamper with stored data).
    pub fn storage_dir(&self) -> PathBuf {
        self.dir.path().join("storage")
    }

    /// Current content of the registry's combined stdout/stderr log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// Kill the registry but keep port and storage, for "target down" tests.
    /// Connections are refused until [`Registry::restart`].
    pub fn stop(&mut self) {
        self.kill();
    }

    /// Start again on the same port with the same storage and credentials.
    /// Retries briefly if the port is momentarily busy.
    pub async fn restart(&mut self) {
        self.kill();
        let mut last = String::new();
        for _ in 0..PORT_ATTEMPTS {
            match self.spawn_and_wait().await {
                Ok(()) => return,
                Err(StartError::PortInUse(log)) => {
                    last = log;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(StartError::Other(msg)) => panic!("{msg}"),
            }
        }
        panic!(
            "registry restart on {} failed: port stays busy; log:\n{last}",
            self.addr
        );
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Errors here mean the process already exited: nothing to do.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn write_config(&self) -> PathBuf {
        let dir = self.dir.path();
        let auth = if self.creds.is_some() {
            format!(
                "auth:\n  htpasswd:\n    realm: image-relay-test\n    path: {}\n",
                dir.join("htpasswd").display()
            )
        } else {
            String::new()
        };
        let catalog = match self.catalog_page {
            Some(n) => format!("catalog:\n  maxentries: {n}\n"),
            None => String::new(),
        };
        let tls = match &self.tls {
            Some(cert) => {
                let (c, k) = (dir.join("server.crt"), dir.join("server.key"));
                std::fs::write(&c, &cert.cert_pem).expect("write server.crt");
                std::fs::write(&k, &cert.key_pem).expect("write server.key");
                format!(
                    "  tls:\n    certificate: {}\n    key: {}\n",
                    c.display(),
                    k.display()
                )
            }
            None => String::new(),
        };
        let secret = format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..));
        // redirect.disable: blobs are served by the registry itself (no
        // storage redirects). uploadpurging off: no background goroutine
        // deleting "stale" uploads mid-test. Access log off: keeps the log
        // small so it can be shown on failure.
        let config = format!(
            "version: 0.1
log:
  level: error
  accesslog:
    disabled: {access_off}
storage:
  filesystem:
    rootdirectory: {storage}
  delete:
    enabled: true
  redirect:
    disable: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: {addr}
  secret: {secret}
{tls}{auth}{catalog}",
            access_off = !self.access_log,
            storage = dir.join("storage").display(),
            addr = self.addr,
        );
        let path = dir.join("config.yml");
        std::fs::write(&path, config).expect("write registry config.yml");
        path
    }

    async fn spawn_and_wait(&mut self) -> Result<(), StartError> {
        let config = self.write_config();
        let log_path = self.dir.path().join("registry.log");
        let log = File::create(&log_path).expect("create registry log");
        let log2 = log.try_clone().expect("clone registry log handle");
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|e| {
                StartError::Other(format!(
                    "cannot spawn docker-registry (apt-get install docker-registry): {e}"
                ))
            })?;
        self.child = Some(child);

        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            // Readiness only: some TLS test registries carry deliberately bad certificates.
            .danger_accept_invalid_certs(true)
            .build()
            .expect("build readiness client");
        let url = format!("{}/v2/", self.url());
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            // Check the child first: if it died (e.g. port clash) a
            // different process might be answering on that port.
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                let log = self.log();
                return Err(if log.contains("address already in use") {
                    StartError::PortInUse(log)
                } else {
                    StartError::Other(format!(
                        "docker-registry exited early ({status}); log:\n{log}"
                    ))
                });
            }
            if let Ok(resp) = client.get(&url).send().await {
                // 401 is "ready" for an auth registry.
                if matches!(resp.status().as_u16(), 200 | 401) {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                self.kill();
                return Err(StartError::Other(format!(
                    "docker-registry on {} not ready after {:?}; log:\n{}",
                    self.addr,
                    READY_TIMEOUT,
                    self.log()
                )));
            }
            tokio::time::sleep(READY_POLL).await;
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.kill();
    }
}

enum StartError {
    PortInUse(String),
    Other(String),
}

/// Ask the kernel for a free port, then release it for the registry to bind.
/// There is a window in which another process may take it; callers retry.
/// Ports already handed out in this process are skipped so two registries
/// of the same test binary never race for the same port.
fn free_port() -> SocketAddr {
    static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    loop {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local_addr of probe listener");
        drop(listener);
        let mut guard = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
        if guard.get_or_insert_with(HashSet::new).insert(addr.port()) {
            return addr;
        }
    }
}

/// `htpasswd -Bbn` prints `user:$2y$...` (bcrypt, the only hash distribution
/// accepts) on stdout.
fn write_htpasswd(path: &Path, user: &str, pass: &str) {
    let out = Command::new("htpasswd")
        .args(["-Bbn", user, pass])
        .output()
        .expect("run htpasswd (apt-get install apache2-utils)");
    assert!(
        out.status.success(),
        "htpasswd failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(path, &out.stdout).expect("write htpasswd file");
}
