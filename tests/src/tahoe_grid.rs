//! A private Tahoe-LAFS grid for tests: an introducer, one storage node and one client node (the
//! web-API gateway) on free loopback ports, with 1-of-1 encoding.
//!
//! `tahoe-lafs` ([`TAHOE_VERSION`]) is installed by pip into a virtual environment once, under
//! `target/tools/tahoe-venv` (about 2 minutes; concurrent test binaries wait on a lock file, and
//! a half-finished install is redone). Override the location with `TRUCKEEFS_TAHOE_VENV`, the
//! interpreter with `TRUCKEEFS_PYTHON` (default `python3`, which needs its `venv` module).
//!
//! [`TahoeGrid::shared`] starts one grid per test binary, the first time a test asks (about
//! 10–15 s), and stops it when the process exits; [`TahoeGrid::mkdir`] gives each test a fresh
//! rootcap. [`TahoeGrid::start`] starts a private grid that stops on drop (for tests that stop
//! or pause a node). Nodes are started with `tahoe run --allow-stdin-close DIR` with stdin
//! closed, in their own process groups, with the parent-death signal set (a killed test binary
//! leaves no node behind); their output goes to `DIR.log`.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::io::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

/// The version installed and tested against.
pub const TAHOE_VERSION: &str = "1.20.0";
/// How long a node may take to come up (introducer FURL written, gateway connected).
const START_TIMEOUT: Duration = Duration::from_secs(90);
/// Marker written into the venv when the install finished.
const INSTALLED_MARKER: &str = ".truckeefs-installed";

/// The virtual environment holding `tahoe`.
pub fn venv_dir() -> PathBuf {
    match std::env::var_os("TRUCKEEFS_TAHOE_VENV") {
        Some(p) => PathBuf::from(p),
        None => crate::workspace_dir().join("target").join("tools").join("tahoe-venv"),
    }
}

/// The `tahoe` executable, installing it first if needed. Panics with the pip log on failure.
pub fn tahoe_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let venv = venv_dir();
        let bin = venv.join("bin").join("tahoe");
        let parent = venv.parent().expect("venv has a parent").to_path_buf();
        fs::create_dir_all(&parent).unwrap_or_else(|e| panic!("create {}: {e}", parent.display()));
        let lock_path = parent.join(format!(
            "{}.lock",
            venv.file_name().unwrap().to_string_lossy()
        ));
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .unwrap_or_else(|e| panic!("open {}: {e}", lock_path.display()));
        // SAFETY: flock on a descriptor we own; released when `lock` is closed.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
            panic!("flock {}: {}", lock_path.display(), io::Error::last_os_error());
        }
        let marker = venv.join(INSTALLED_MARKER);
        let installed = fs::read_to_string(&marker).map(|v| v.trim() == TAHOE_VERSION).unwrap_or(false);
        if !(installed && bin.is_file()) {
            install(&venv);
            fs::write(&marker, TAHOE_VERSION).unwrap();
        }
        drop(lock);
        bin
    })
    .clone()
}

fn install(venv: &Path) {
    let python = std::env::var("TRUCKEEFS_PYTHON").unwrap_or_else(|_| "python3".into());
    let log_path = venv.with_extension("install.log");
    let t0 = Instant::now();
    eprintln!(
        "tahoe_grid: installing tahoe-lafs {TAHOE_VERSION} into {} (once; about 2 minutes; log {})",
        venv.display(),
        log_path.display()
    );
    if venv.exists() {
        fs::remove_dir_all(venv).unwrap_or_else(|e| panic!("remove {}: {e}", venv.display()));
    }
    let log = File::create(&log_path).unwrap();
    let run = |cmd: &mut Command, what: &str| {
        let status = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log.try_clone().unwrap())
            .status()
            .unwrap_or_else(|e| panic!("tahoe_grid: cannot run {what}: {e}"));
        if !status.success() {
            panic!(
                "tahoe_grid: {what} failed ({status}); last lines of {}:\n{}",
                log_path.display(),
                crate::log_tail(&log_path, 30)
            );
        }
    };
    run(
        Command::new(&python).arg("-m").arg("venv").arg(venv),
        &format!("{python} -m venv (on Debian: apt-get install python3-venv)"),
    );
    run(
        Command::new(venv.join("bin").join("python"))
            .args(["-m", "pip", "install", "--disable-pip-version-check", "--no-input"])
            .arg(format!("tahoe-lafs=={TAHOE_VERSION}")),
        "pip install tahoe-lafs",
    );
    eprintln!("tahoe_grid: installed tahoe-lafs in {:.0?}", t0.elapsed());
}

/// A free TCP port on 127.0.0.1 (free when asked; the node binds it moments later).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A running grid.
pub struct TahoeGrid {
    /// The gateway's web API, e.g. `http://127.0.0.1:41234`.
    pub url: String,
    /// The gateway's port.
    pub port: u16,
    /// The gateway's node directory (`private/api_auth_token` is there).
    pub gateway_dir: PathBuf,
    /// How long the start took.
    pub start_time: Duration,
    nodes: Mutex<Vec<Node>>,
    dir: Mutex<Option<tempfile::TempDir>>,
}

struct Node {
    name: &'static str,
    child: Child,
}

impl TahoeGrid {
    /// The grid shared by the tests of this binary, started on first use, stopped at exit.
    pub fn shared() -> &'static TahoeGrid {
        static GRID: OnceLock<TahoeGrid> = OnceLock::new();
        GRID.get_or_init(|| {
            // The nodes get SIGKILL when the thread that spawned them ends (PR_SET_PDEATHSIG),
            // so spawn them from a thread that lives as long as the process.
            let (tx, rx) = mpsc::channel();
            thread::Builder::new()
                .name("tahoe-grid-keeper".into())
                .spawn(move || {
                    let grid = std::panic::catch_unwind(TahoeGrid::start);
                    let _ = tx.send(grid);
                    loop {
                        thread::park();
                    }
                })
                .unwrap();
            let grid = match rx.recv().unwrap() {
                Ok(grid) => grid,
                Err(panic) => std::panic::resume_unwind(panic),
            };
            extern "C" fn stop_shared() {
                if let Some(grid) = GRID.get() {
                    grid.stop();
                }
            }
            // SAFETY: registers a plain function to run at exit.
            unsafe { libc::atexit(stop_shared) };
            grid
        })
    }

    /// Starts a private grid, stopped when dropped. The spawning thread must outlive the grid
    /// (the nodes die with it).
    pub fn start() -> TahoeGrid {
        let tahoe = tahoe_bin();
        let t0 = Instant::now();
        let tmp = tempfile::Builder::new().prefix("truckeefs-tahoe-").tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        let (intro_port, storage_port, web_port) = (free_port(), free_port(), free_port());
        let intro_dir = root.join("introducer");
        let storage_dir = root.join("storage");
        let gateway_dir = root.join("gateway");

        // Create the three nodes at once: each `tahoe` command spends seconds starting Python.
        // (`--hostname` cannot be combined with `--port`/`--location`.)
        let specs: Vec<Vec<String>> = vec![
            vec![
                "create-introducer".into(),
                format!("--port=tcp:{intro_port}:interface=127.0.0.1"),
                format!("--location=tcp:127.0.0.1:{intro_port}"),
                intro_dir.display().to_string(),
            ],
            vec![
                "create-node".into(),
                format!("--port=tcp:{storage_port}:interface=127.0.0.1"),
                format!("--location=tcp:127.0.0.1:{storage_port}"),
                "--webport=none".into(),
                "--nickname=storage".into(),
                "--shares-needed=1".into(),
                "--shares-happy=1".into(),
                "--shares-total=1".into(),
                storage_dir.display().to_string(),
            ],
            vec![
                "create-client".into(),
                format!("--webport=tcp:{web_port}:interface=127.0.0.1"),
                "--nickname=gateway".into(),
                "--shares-needed=1".into(),
                "--shares-happy=1".into(),
                "--shares-total=1".into(),
                gateway_dir.display().to_string(),
            ],
        ];
        let handles: Vec<_> = specs
            .into_iter()
            .map(|args| {
                let tahoe = tahoe.clone();
                thread::spawn(move || {
                    let out = Command::new(&tahoe).args(&args).stdin(Stdio::null()).output().unwrap();
                    assert!(
                        out.status.success(),
                        "tahoe {args:?} failed: {}{}",
                        String::from_utf8_lossy(&out.stdout),
                        String::from_utf8_lossy(&out.stderr)
                    );
                })
            })
            .collect();
        for h in handles {
            if let Err(p) = h.join() {
                std::panic::resume_unwind(p);
            }
        }

        let grid = TahoeGrid {
            url: format!("http://127.0.0.1:{web_port}"),
            port: web_port,
            gateway_dir: gateway_dir.clone(),
            start_time: Duration::ZERO,
            nodes: Mutex::new(Vec::new()),
            dir: Mutex::new(Some(tmp)),
        };
        grid.run_node("introducer", &tahoe, &intro_dir);
        let furl_path = intro_dir.join("private").join("introducer.furl");
        let furl = grid.wait_for("the introducer's FURL", || {
            fs::read_to_string(&furl_path).ok().map(|s| s.trim().to_string()).filter(|s| s.starts_with("pb://"))
        });
        for dir in [&storage_dir, &gateway_dir] {
            fs::write(
                dir.join("private").join("introducers.yaml"),
                format!("introducers:\n  default:\n    furl: {furl}\n"),
            )
            .unwrap();
        }
        grid.run_node("storage", &tahoe, &storage_dir);
        grid.run_node("gateway", &tahoe, &gateway_dir);
        grid.wait_for("the gateway to see the storage server", || {
            let (status, body) = grid.http("GET", "/?t=json", b"").ok()?;
            let v: serde_json::Value = serde_json::from_slice(&body).ok()?;
            let connected = v["servers"].as_array()?.iter().any(|s| s["connection_status"] == "connected");
            (status == 200 && connected).then_some(())
        });
        let mut grid = grid;
        grid.start_time = t0.elapsed();
        eprintln!("tahoe_grid: grid up at {} in {:.1?}", grid.url, grid.start_time);
        grid
    }

    fn run_node(&self, name: &'static str, tahoe: &Path, dir: &Path) {
        let log = File::create(dir.with_extension("log")).unwrap();
        let mut cmd = Command::new(tahoe);
        cmd.arg("run")
            .arg("--allow-stdin-close")
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .process_group(0);
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().unwrap_or_else(|e| panic!("spawn tahoe run {name}: {e}"));
        self.nodes.lock().unwrap().push(Node { name, child });
    }

    /// Polls `f` until it gives a value; panics with the node logs after [`START_TIMEOUT`] or
    /// when a node exits.
    fn wait_for<T>(&self, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(v) = f() {
                return v;
            }
            let mut nodes = self.nodes.lock().unwrap();
            for n in nodes.iter_mut() {
                if let Ok(Some(status)) = n.child.try_wait() {
                    let name = n.name;
                    drop(nodes);
                    panic!("tahoe_grid: node {name} exited ({status}) while waiting for {what}\n{}", self.logs());
                }
            }
            drop(nodes);
            if Instant::now() > deadline {
                panic!("tahoe_grid: timed out after {START_TIMEOUT:?} waiting for {what}\n{}", self.logs());
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// The last lines of every node's log.
    pub fn logs(&self) -> String {
        let Some(root) = self.dir.lock().unwrap().as_ref().map(|d| d.path().to_path_buf()) else {
            return String::new();
        };
        let mut out = String::new();
        for name in ["introducer", "storage", "gateway"] {
            out.push_str(&format!("--- {name}.log\n{}\n", crate::log_tail(&root.join(format!("{name}.log")), 15)));
        }
        out
    }

    /// The process id of a node (`introducer`, `storage` or `gateway`).
    pub fn pid(&self, name: &str) -> Option<u32> {
        self.nodes.lock().unwrap().iter().find(|n| n.name == name).map(|n| n.child.id())
    }

    /// The gateway's `private/api_auth_token`.
    pub fn api_auth_token(&self) -> String {
        fs::read_to_string(self.gateway_dir.join("private").join("api_auth_token")).unwrap().trim().to_string()
    }

    /// A minimal HTTP/1.0 exchange with the gateway: (status, body).
    pub fn http(&self, method: &str, path: &str, body: &[u8]) -> io::Result<(u16, Vec<u8>)> {
        self.http_with(method, path, &[], body)
    }

    /// Like [`TahoeGrid::http`], with extra header lines (`Name: value`).
    pub fn http_with(&self, method: &str, path: &str, headers: &[&str], body: &[u8]) -> io::Result<(u16, Vec<u8>)> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port))?;
        s.set_read_timeout(Some(Duration::from_secs(60)))?;
        s.set_write_timeout(Some(Duration::from_secs(60)))?;
        let mut req = format!("{method} {path} HTTP/1.0\r\nHost: 127.0.0.1:{}\r\nContent-Length: {}\r\n", self.port, body.len());
        for h in headers {
            req.push_str(h);
            req.push_str("\r\n");
        }
        req.push_str("\r\n");
        s.write_all(req.as_bytes())?;
        s.write_all(body)?;
        let mut reply = Vec::new();
        s.read_to_end(&mut reply)?;
        let split = reply
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no end of headers"))?;
        let status = std::str::from_utf8(&reply[..split])
            .ok()
            .and_then(|h| h.split_whitespace().nth(1)?.parse().ok())
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no status line"))?;
        Ok((status, reply[split + 4..].to_vec()))
    }

    /// A fresh, unlinked directory (`POST /uri?t=mkdir`): its write cap.
    pub fn mkdir(&self) -> String {
        let (status, body) = self.http("POST", "/uri?t=mkdir", b"").expect("mkdir");
        let cap = String::from_utf8(body).unwrap().trim().to_string();
        assert!(status == 200 && cap.starts_with("URI:DIR2:"), "mkdir: HTTP {status}");
        cap
    }

    /// Stops every node (SIGTERM to its process group, SIGKILL after 5 s) and removes the
    /// directories. Idempotent.
    pub fn stop(&self) {
        let mut nodes = match self.nodes.lock() {
            Ok(n) => n,
            Err(p) => p.into_inner(),
        };
        for n in nodes.iter() {
            // SAFETY: signals our own child's process group (its pid: process_group(0)).
            unsafe { libc::kill(-(n.child.id() as i32), libc::SIGTERM) };
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        for n in nodes.iter_mut() {
            while matches!(n.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(20));
            }
            if matches!(n.child.try_wait(), Ok(None)) {
                unsafe { libc::kill(-(n.child.id() as i32), libc::SIGKILL) };
                let _ = n.child.wait();
            }
        }
        nodes.clear();
        if let Ok(mut dir) = self.dir.lock() {
            dir.take();
        }
    }
}

impl Drop for TahoeGrid {
    fn drop(&mut self) {
        self.stop();
    }
}
