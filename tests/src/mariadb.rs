//! A private MariaDB server for tests, on a free loopback port, in a temporary directory.
//!
//! ```text
//! let db = MariaDb::shared();                     // one server per test binary, started on first use
//! let name = db.unique_db_name("conformance");    // one database per test (created by the client)
//! // connect to db.host():db.port() as db.user() / db.password()
//! ```
//!
//! The first server of a process runs `mariadb-install-db` once into a template directory (about
//! 4 s); every server is then a copy of the template started with `mariadbd` (well under a second).
//! The template has a real user ([`MariaDb::user`], a random password, all privileges) besides
//! `root` without a password, which the harness uses through the server's unix socket
//! ([`MariaDb::sql`]). Running as root, `mariadbd` gets `--user=root`.
//!
//! A [`MariaDb::start`]ed server is stopped when dropped (SIGTERM, a bounded wait, SIGKILL), and
//! its directory removed. [`MariaDb::shared`] lives in a static, which is never dropped: a small
//! watchdog shell process per server (and one for the template) notices the test process's end
//! (its stdin pipe closes) and does the same then, so no server or directory outlives the tests.
//!
//! Needs `mariadb-server` (Debian package; `scripts/install-deps.sh` installs it).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long a server may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a server may take to shut down after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// InnoDB sizes for a small, fast test server (the same at install and at start).
const SERVER_ARGS: &[&str] = &[
    "--innodb-buffer-pool-size=32M",
    "--innodb-log-file-size=8M",
    "--skip-name-resolve",
];

/// Kills `$PID` (if given) and removes `$DIR` when its stdin reaches EOF; exits quietly when it
/// reads a line instead (the harness stopped the server itself).
const WATCHDOG: &str = r#"
if read -r _; then exit 0; fi
if [ -n "$PID" ]; then
    kill -TERM "$PID" 2>/dev/null
    i=0
    # Until it is gone (or a zombie nobody reaps); SIGKILL after 10 s, give up after 15 s.
    while kill -0 "$PID" 2>/dev/null && ! grep -q '^State:.*Z' "/proc/$PID/status" 2>/dev/null; do
        i=$((i + 1))
        if [ "$i" -gt 100 ]; then kill -KILL "$PID" 2>/dev/null; fi
        if [ "$i" -gt 150 ]; then break; fi
        sleep 0.1
    done
fi
rm -rf "$DIR"
"#;

/// The installed, never started, data directory every server copies.
struct Template {
    data: PathBuf,
    user: String,
    password: String,
    _watchdog: Watchdog,
}

/// A private MariaDB server.
pub struct MariaDb {
    dir: PathBuf,
    port: u16,
    user: String,
    password: String,
    /// Running server, if any.
    running: Mutex<Option<Running>>,
    next_db: AtomicU64,
}

struct Running {
    child: Child,
    watchdog: Watchdog,
}

/// A watchdog shell process; see [`WATCHDOG`].
struct Watchdog {
    child: Child,
    stdin: Option<ChildStdin>,
}

impl Watchdog {
    fn spawn(dir: &Path, pid: Option<u32>) -> Watchdog {
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(WATCHDOG)
            .env("DIR", dir)
            .env("PID", pid.map(|p| p.to_string()).unwrap_or_default())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn the MariaDB watchdog (sh)");
        let stdin = child.stdin.take();
        Watchdog { child, stdin }
    }

    /// Tells the watchdog that the harness cleaned up itself.
    fn dismiss(mut self) {
        if let Some(mut s) = self.stdin.take() {
            let _ = s.write_all(b"done\n");
        }
        let _ = self.child.wait();
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid cannot fail and touches no memory.
    unsafe { libc::geteuid() == 0 }
}

fn find_binary(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Whether `mariadbd` and `mariadb-install-db` are installed.
pub fn available() -> bool {
    find_binary("mariadbd").is_some()
        && find_binary("mariadb-install-db").is_some()
        && find_binary("mariadb").is_some()
}

fn binary(name: &str) -> PathBuf {
    find_binary(name).unwrap_or_else(|| {
        panic!("{name} not found: install the Debian package mariadb-server (scripts/install-deps.sh does)")
    })
}

fn random_token() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ std::process::id() as u64;
    for b in nanos.to_le_bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")
}

fn template() -> &'static Template {
    static TEMPLATE: OnceLock<Template> = OnceLock::new();
    TEMPLATE.get_or_init(|| {
        let started = Instant::now();
        let dir = tempfile::Builder::new()
            .prefix("truckeefs-mariadb-template-")
            .tempdir()
            .expect("temp dir")
            .keep();
        let watchdog = Watchdog::spawn(&dir, None);
        let user = "truckee".to_string();
        let password = format!("Tr-{}", random_token());
        // mariadb-install-db bootstraps with grant tables off; FLUSH PRIVILEGES turns them on.
        let users_sql = dir.join("users.sql");
        let mut sql = String::from("FLUSH PRIVILEGES;\n");
        for host in ["localhost", "127.0.0.1"] {
            sql.push_str(&format!(
                "CREATE USER '{user}'@'{host}' IDENTIFIED BY '{password}';\n"
            ));
            sql.push_str(&format!(
                "GRANT ALL PRIVILEGES ON *.* TO '{user}'@'{host}' WITH GRANT OPTION;\n"
            ));
        }
        std::fs::write(&users_sql, sql).expect("write users.sql");
        let data = dir.join("data");
        let log = dir.join("install.log");
        let mut cmd = Command::new(binary("mariadb-install-db"));
        cmd.arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .arg("--auth-root-authentication-method=normal")
            .arg("--skip-test-db")
            .arg(format!("--extra-file={}", users_sql.display()))
            .args(SERVER_ARGS)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).expect("install log"))
            .stderr(Stdio::from(
                std::fs::File::create(dir.join("install.err")).expect("install log"),
            ));
        if is_root() {
            cmd.arg("--user=root");
        }
        let status = cmd.status().expect("run mariadb-install-db");
        std::fs::remove_file(&users_sql).ok();
        if !status.success() {
            let out = std::fs::read_to_string(dir.join("install.err")).unwrap_or_default();
            panic!(
                "mariadb-install-db failed ({status}): {}",
                last_lines(&out, 15)
            );
        }
        eprintln!(
            "mariadb: installed the template in {:.1?}",
            started.elapsed()
        );
        Template {
            data,
            user,
            password,
            _watchdog: watchdog,
        }
    })
}

fn last_lines(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    l.local_addr().expect("local addr").port()
}

impl MariaDb {
    /// The server of this test binary, started on first use.
    pub fn shared() -> &'static MariaDb {
        static SHARED: OnceLock<MariaDb> = OnceLock::new();
        SHARED.get_or_init(MariaDb::start)
    }

    /// A new private server (for tests that stop and restart it).
    pub fn start() -> MariaDb {
        let t = template();
        let dir = tempfile::Builder::new()
            .prefix("truckeefs-mariadb-")
            .tempdir()
            .expect("temp dir")
            .keep();
        let status = Command::new("cp")
            .arg("-a")
            .arg(&t.data)
            .arg(dir.join("data"))
            .status()
            .expect("run cp");
        assert!(
            status.success(),
            "copying the MariaDB template failed: {status}"
        );
        let mut db = MariaDb {
            dir,
            port: free_port(),
            user: t.user.clone(),
            password: t.password.clone(),
            running: Mutex::new(None),
            next_db: AtomicU64::new(0),
        };
        let mut attempt = 0;
        loop {
            match db.try_start() {
                Ok(()) => return db,
                // Someone took the port between our probe and the server's bind: another one.
                Err(e) if attempt < 3 && e.contains("Address already in use") => {
                    attempt += 1;
                    db.port = free_port();
                }
                Err(e) => panic!("{e}"),
            }
        }
    }

    /// Starts the server again after [`MariaDb::stop`], on the same port and data.
    pub fn restart(&self) {
        self.try_start().unwrap_or_else(|e| panic!("{e}"));
    }

    fn try_start(&self) -> Result<(), String> {
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        assert!(running.is_none(), "the server is running already");
        let started = Instant::now();
        let log = self.dir.join("error.log");
        let _ = std::fs::remove_file(&log);
        let mut cmd = Command::new(binary("mariadbd"));
        cmd.arg("--no-defaults")
            .arg(format!("--datadir={}", self.dir.join("data").display()))
            .arg(format!("--socket={}", self.socket().display()))
            .arg(format!(
                "--pid-file={}",
                self.dir.join("mariadbd.pid").display()
            ))
            .arg(format!("--log-error={}", log.display()))
            .arg(format!("--port={}", self.port))
            .arg("--bind-address=127.0.0.1")
            .args(SERVER_ARGS)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if is_root() {
            cmd.arg("--user=root");
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot run mariadbd: {e}"))?;
        let watchdog = Watchdog::spawn(&self.dir, Some(child.id()));
        let deadline = started + START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                watchdog.dismiss();
                let out = std::fs::read_to_string(&log).unwrap_or_default();
                return Err(format!(
                    "mariadbd exited at start ({status}): {}",
                    last_lines(&out, 15)
                ));
            }
            if self.accepts() {
                break;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                watchdog.dismiss();
                let out = std::fs::read_to_string(&log).unwrap_or_default();
                return Err(format!(
                    "mariadbd did not accept connections within {START_TIMEOUT:?}: {}",
                    last_lines(&out, 15)
                ));
            }
            thread::sleep(Duration::from_millis(25));
        }
        eprintln!(
            "mariadb: server on 127.0.0.1:{} up in {:.1?}",
            self.port,
            started.elapsed()
        );
        *running = Some(Running { child, watchdog });
        Ok(())
    }

    /// Whether the server answers the MySQL protocol: its greeting packet, not just an open port.
    fn accepts(&self) -> bool {
        let Ok(mut s) = TcpStream::connect_timeout(
            &([127, 0, 0, 1], self.port).into(),
            Duration::from_millis(200),
        ) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
        let mut header = [0u8; 5];
        // 3 bytes length, 1 sequence, then protocol version 10 (an error packet starts with 0xff).
        s.read_exact(&mut header).is_ok() && header[4] == 10
    }

    /// Stops the server (SIGTERM, up to [`STOP_TIMEOUT`], then SIGKILL), keeping its data.
    pub fn stop(&self) {
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        let Some(Running {
            mut child,
            watchdog,
        }) = running.take()
        else {
            return;
        };
        // SAFETY: the pid is our child's, not yet reaped (so not reused).
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            match child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
                _ => {
                    eprintln!(
                        "mariadb: server on port {} ignored SIGTERM; killing it",
                        self.port
                    );
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
            }
        }
        watchdog.dismiss();
    }

    pub fn host(&self) -> &str {
        "127.0.0.1"
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// A user with all privileges (connects over TCP or the socket).
    pub fn user(&self) -> &str {
        &self.user
    }

    pub fn password(&self) -> &str {
        &self.password
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.join("mysqld.sock")
    }

    /// A database name not used before on this server (`prefix_N`); not created.
    pub fn unique_db_name(&self, prefix: &str) -> String {
        format!("{prefix}_{}", self.next_db.fetch_add(1, Ordering::Relaxed))
    }

    /// Runs SQL as root through the unix socket; returns the output (tab-separated, no headers).
    /// Panics if it fails.
    pub fn sql(&self, db: Option<&str>, sql: &str) -> String {
        let mut cmd = Command::new(binary("mariadb"));
        cmd.arg("--no-defaults")
            .arg("--protocol=socket")
            .arg(format!("--socket={}", self.socket().display()))
            .args(["-u", "root", "-N", "-B", "-e", sql]);
        if let Some(db) = db {
            cmd.arg(db);
        }
        let out = cmd.stdin(Stdio::null()).output().expect("run mariadb");
        assert!(
            out.status.success(),
            "mariadb {sql:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The last lines of the server's error log (for failure messages).
    pub fn log_tail(&self) -> String {
        let f = std::fs::File::open(self.dir.join("error.log"));
        let lines: Vec<String> = f
            .map(|f| BufReader::new(f).lines().map_while(Result::ok).collect())
            .unwrap_or_default();
        last_lines(&lines.join("\n"), 20)
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
