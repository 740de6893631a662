//! Integration-test harness for TruckeeFS.
//!
//! Every test gets its own mount: [`Mount::new`] creates fresh data/cache
//! directories, spawns `truckeefs mount -v ...` in the foreground with its
//! output captured to a log file, and waits until the mount point shows up in
//! `/proc/self/mountinfo`. Dropping a [`Mount`] always unmounts it (and kills
//! the daemon as a last resort), so no test leaves a mount behind.
//!
//! The binary is `$TRUCKEEFS_BIN` if set, else `<workspace>/target/debug/truckeefs`.
//! Run the suite (as root, with /dev/fuse and `fusermount3` from fuse3):
//!
//! ```text
//! cargo build -p truckeefs && cargo test -p truckeefs-tests
//! ```
//!
//! Environment knobs: `TRUCKEEFS_BIN` (binary under test),
//! `TRUCKEEFS_TEST_WATCHDOG_SECS` (default 60: a mount older than this has
//! its daemon killed so a hung filesystem call fails the test instead of
//! hanging the suite).
//!
//! Besides the mount harness this crate has small libc wrappers returning
//! `io::Result` (so tests can assert exact errno values with [`errno_of`]),
//! raw directory reading, deterministic pseudo-random data and a driver for
//! the `truckeefs-test-helper` binary (`src/bin/truckeefs-test-helper.rs`),
//! which runs one filesystem operation in a separate process, optionally as
//! another user.

use std::ffi::{CString, OsStr, OsString};
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::MetadataExt;
use std::os::unix::io::{AsRawFd, RawFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub use libc;

pub mod ays;
pub mod ays_client;
pub mod tahoe_grid;
pub mod mariadb;
pub mod commit_cutter;

/// How long to wait for the mount point to appear after spawning the daemon.
pub const MOUNT_TIMEOUT: Duration = Duration::from_secs(20);
/// How long to wait for the daemon to exit after `fusermount3 -u`.
pub const UNMOUNT_TIMEOUT: Duration = Duration::from_secs(30);

/// Where each thread of process `pid` waits (name, state, kernel wait channel, and the kernel
/// stack when readable), for the message about a daemon that does not exit.
pub fn threads_of(pid: u32) -> String {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else { return "  (gone)".into() };
    let mut out = String::new();
    for t in tasks.flatten() {
        let dir = t.path();
        let read = |f: &str| fs::read_to_string(dir.join(f)).unwrap_or_default();
        let state = read("status").lines().find(|l| l.starts_with("State:")).unwrap_or_default().to_string();
        out += &format!("  {} {} {state} wchan={}\n", t.file_name().to_string_lossy(), read("comm").trim(), read("wchan"));
        for frame in read("stack").lines().take(12) {
            out += &format!("      {frame}\n");
        }
    }
    out
}
/// Name of the metadata database inside `--data-dir`.
pub const META_DB: &str = "meta.sqlite";

// ---------------------------------------------------------------------------
// Locating things
// ---------------------------------------------------------------------------

/// The cargo workspace root (parent of this crate's manifest dir).
pub fn workspace_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests crate has a parent directory")
        .to_path_buf()
}

/// Path of the `truckeefs` binary under test. Panics with a clear message if
/// it does not exist.
pub fn truckeefs_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("TRUCKEEFS_BIN") {
        let p = PathBuf::from(p);
        assert!(
            p.is_file(),
            "TRUCKEEFS_BIN={} does not exist; build it first with `cargo build -p truckeefs`",
            p.display()
        );
        return p;
    }
    let p = workspace_dir()
        .join("target")
        .join("debug")
        .join("truckeefs");
    if !p.is_file() {
        panic!(
            "truckeefs binary not found at {}: build it first with `cargo build -p truckeefs` \
             (or point TRUCKEEFS_BIN at it)",
            p.display()
        );
    }
    p
}

/// For the benches: the release binary (`target/release/truckeefs`, or `$TRUCKEEFS_BIN`), or a
/// message saying how to build it.
pub fn release_bin() -> Result<PathBuf, String> {
    if let Some(bin) = std::env::var_os("TRUCKEEFS_BIN") {
        return Ok(PathBuf::from(bin));
    }
    let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| workspace_dir().join("target"));
    let bin = target.join("release").join("truckeefs");
    if !bin.exists() {
        return Err(format!(
            "{} not found: build it first with `cargo build --release -p truckeefs`, or set TRUCKEEFS_BIN",
            bin.display()
        ));
    }
    Ok(bin)
}

/// For the benches: user and system CPU seconds of process `pid` so far (0 if it is gone).
pub fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else { return 0.0 };
    // Fields after the command name (which may hold spaces) in parentheses.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else { return 0.0 };
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat(5), 12 and 13 after the name and state.
    let ticks: f64 = [11, 12].iter().filter_map(|i| f.get(*i)?.parse::<f64>().ok()).sum();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    ticks / hz
}

/// For the benches: the number in the environment variable `name`, else `default`.
pub fn env_number(name: &str, default: u64) -> Result<u64, String> {
    match std::env::var(name) {
        Ok(v) => v.trim().parse().map_err(|_| format!("{name}={v:?} is not a number")),
        Err(_) => Ok(default),
    }
}

/// Path of the `truckeefs-test-helper` binary built from this crate's
/// `src/bin/`. Cargo builds it before running the integration tests and puts
/// it next to the `deps/` directory holding the test executables.
pub fn helper_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("TRUCKEEFS_TEST_HELPER") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current_exe");
    let mut candidates = Vec::new();
    if let Some(dir) = exe.parent() {
        candidates.push(dir.join("truckeefs-test-helper"));
        if let Some(up) = dir.parent() {
            candidates.push(up.join("truckeefs-test-helper"));
        }
    }
    for c in &candidates {
        if c.is_file() {
            return c.clone();
        }
    }
    panic!(
        "truckeefs-test-helper binary not found (looked at {:?}); run the tests with \
         `cargo test -p truckeefs-tests`, which builds it",
        candidates
    );
}

// ---------------------------------------------------------------------------
// Mount table
// ---------------------------------------------------------------------------

fn unescape_mountinfo(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        if field[i] == b'\\'
            && i + 4 <= field.len()
            && field[i + 1..i + 4]
                .iter()
                .all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (field[i + 1] - b'0') as u32 * 64
                + (field[i + 2] - b'0') as u32 * 8
                + (field[i + 3] - b'0') as u32;
            out.push(v as u8);
            i += 4;
        } else {
            out.push(field[i]);
            i += 1;
        }
    }
    out
}

/// The fstype of the mount at exactly `dir` if there is one (from
/// `/proc/self/mountinfo`).
pub fn mount_fstype(dir: &Path) -> Option<String> {
    let info = fs::read("/proc/self/mountinfo").ok()?;
    let want = dir.as_os_str().as_bytes();
    let mut found = None;
    for line in info.split(|&b| b == b'\n') {
        let fields: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
        if fields.len() < 5 || unescape_mountinfo(fields[4]) != want {
            continue;
        }
        // Optional fields end with "-", then fstype.
        let fstype = fields
            .iter()
            .position(|f| *f == b"-")
            .and_then(|i| fields.get(i + 1))
            .map(|f| String::from_utf8_lossy(f).into_owned())
            .unwrap_or_default();
        found = Some(fstype);
    }
    found
}

/// Whether something is mounted exactly at `dir`.
pub fn is_mounted(dir: &Path) -> bool {
    mount_fstype(dir).is_some()
}

fn fusermount(args: &[&str], dir: &Path) -> Result<(), String> {
    let out = match Command::new("fusermount3")
        .args(args)
        .arg(dir)
        .stdin(Stdio::null())
        .output()
    {
        Ok(out) => out,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            // No fuse3 package: as root, umount2(2) does the same job.
            static WARNED: std::sync::Once = std::sync::Once::new();
            WARNED.call_once(|| {
                eprintln!("fusermount3 not found (apt-get install fuse3); using umount2(2)")
            });
            let flags = if args.contains(&"-z") {
                libc::MNT_DETACH
            } else {
                0
            };
            let c = cpath(dir);
            return if unsafe { libc::umount2(c.as_ptr(), flags) } == 0 {
                Ok(())
            } else {
                Err(format!(
                    "umount2 {}: {}",
                    dir.display(),
                    io::Error::last_os_error()
                ))
            };
        }
        Err(e) => return Err(format!("cannot run fusermount3: {e}")),
    };
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "fusermount3 {:?} {} failed ({}): {}",
            args,
            dir.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Wait for `child` to exit for at most `timeout`.
pub fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(s)) => return Some(s),
            Ok(None) => {}
            Err(e) => panic!("waiting for child {}: {e}", child.id()),
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// The last `max_lines` lines of a log file (lossy UTF-8).
pub fn log_tail(path: &Path, max_lines: usize) -> String {
    let data = fs::read(path).unwrap_or_default();
    let text = String::from_utf8_lossy(&data);
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(max_lines);
    lines[start..].join("\n")
}

// ---------------------------------------------------------------------------
// Storage: data + cache dirs that can outlive a mount
// ---------------------------------------------------------------------------

/// A pair of fresh `--data-dir` / `--cache-dir` directories in a temp dir,
/// removed when the last `Arc<Storage>` is dropped. Keep a clone (from
/// [`Mount::storage`]) to remount the same directories after unmount/kill.
/// `TRUCKEEFS_TEST_BACKENDS=production`: every [`Storage`] (so every [`Mount`] of the FUSE suite)
/// keeps its metadata in the harness's MariaDB (a database of its own) and its file data in the
/// harness's Tahoe-LAFS grid (a directory of its own, FLAT; `TRUCKEEFS_TEST_STRATEGY=MIRROR` for
/// the MIRROR layout), instead of the embedded stores.
pub fn production_backends() -> bool {
    match std::env::var("TRUCKEEFS_TEST_BACKENDS").as_deref() {
        Ok("production") => true,
        Ok("embedded") | Err(_) => false,
        Ok(other) => panic!("TRUCKEEFS_TEST_BACKENDS={other}: expected production or embedded"),
    }
}

/// `TRUCKEEFS_TEST_STRATEGY`: the layout of production storages, FLAT (default) or MIRROR.
pub fn test_strategy() -> &'static str {
    match std::env::var("TRUCKEEFS_TEST_STRATEGY").as_deref() {
        Ok("FLAT") | Err(_) => "FLAT",
        Ok("MIRROR") => "MIRROR",
        Ok(other) => panic!("TRUCKEEFS_TEST_STRATEGY={other}: expected FLAT or MIRROR"),
    }
}

/// The keys of a mount on the harness's Tahoe grid (a fresh rootcap) and MariaDB (database
/// `db_name`), a `key: value` line each.
pub fn production_yaml(grid: &tahoe_grid::TahoeGrid, db: &mariadb::MariaDb, db_name: &str) -> String {
    format!(
        "rootcap: {}\ntahoe_url: {}\nsql_host: {}:{}\nsql_user: {}\nsql_pass: {}\nsql_db: {db_name}\n",
        grid.mkdir(),
        grid.url,
        db.host(),
        db.port(),
        db.user(),
        db.password()
    )
}

/// The backend configuration file of a storage, beside its data and cache directories.
const BACKEND_CONFIG: &str = "backends.yaml";

fn write_backend_config(path: &Path) {
    let db = mariadb::MariaDb::shared();
    let grid = tahoe_grid::TahoeGrid::shared();
    let yaml = format!(
        "# made by the test harness (TRUCKEEFS_TEST_BACKENDS=production)\n{}backend_storage_strategy: {}\n",
        production_yaml(grid, db, &db.unique_db_name("fuse")),
        test_strategy()
    );
    fs::write(path, yaml).unwrap();
    fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
}

pub struct Storage {
    pub data_dir: PathBuf,
    pub cache_dir: PathBuf,
    _tmp: tempfile::TempDir,
}

impl Storage {
    pub fn new() -> Arc<Storage> {
        let tmp = tempfile::Builder::new()
            .prefix("truckeefs-store-")
            .tempdir()
            .expect("create temp dir");
        let data_dir = tmp.path().join("data");
        let cache_dir = tmp.path().join("cache");
        fs::create_dir(&data_dir).unwrap();
        fs::create_dir(&cache_dir).unwrap();
        if production_backends() {
            write_backend_config(&tmp.path().join(BACKEND_CONFIG));
        }
        Arc::new(Storage {
            data_dir,
            cache_dir,
            _tmp: tmp,
        })
    }
}

// ---------------------------------------------------------------------------
// Watchdog: a hung filesystem must fail the test, not hang the suite
// ---------------------------------------------------------------------------

struct Watch {
    done: Mutex<bool>,
    cv: Condvar,
}

impl Watch {
    fn start(pid: u32, what: String) -> Arc<Watch> {
        let w = Arc::new(Watch {
            done: Mutex::new(false),
            cv: Condvar::new(),
        });
        let secs: u64 = std::env::var("TRUCKEEFS_TEST_WATCHDOG_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(60);
        let w2 = w.clone();
        thread::spawn(move || {
            let g = w2.done.lock().unwrap();
            let (g, _) = w2
                .cv
                .wait_timeout_while(g, Duration::from_secs(secs), |done| !*done)
                .unwrap();
            if !*g {
                // The child has not been reaped (finish() is called before any
                // wait), so the pid is still ours.
                eprintln!(
                    "watchdog: mount {what} alive for more than {secs} s; killing truckeefs (pid {pid}) \
                     so hung filesystem calls fail with ENOTCONN"
                );
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            }
        });
        w
    }

    fn finish(&self) {
        *self.done.lock().unwrap() = true;
        self.cv.notify_all();
    }
}

// ---------------------------------------------------------------------------
// Mount
// ---------------------------------------------------------------------------

/// A running `truckeefs mount` on a private temporary mount point.
pub struct Mount {
    /// The mount point.
    pub dir: PathBuf,
    pub data_dir: PathBuf,
    pub cache_dir: PathBuf,
    child: Option<Child>,
    log_path: PathBuf,
    watch: Arc<Watch>,
    storage: Option<Arc<Storage>>,
    _mnt_tmp: tempfile::TempDir,
}

impl Mount {
    /// Mount a fresh, empty filesystem.
    #[allow(clippy::new_without_default)]
    pub fn new() -> Mount {
        Self::new_with_args(&[])
    }

    /// Mount a fresh filesystem with extra command line arguments (e.g.
    /// `&["-o", "ro"]`).
    pub fn new_with_args(extra: &[&str]) -> Mount {
        let s = Storage::new();
        Self::spawn(&s.data_dir.clone(), &s.cache_dir.clone(), extra, Some(s))
    }

    /// Mount (again) the given data and cache directories. The caller must
    /// keep them alive (e.g. via an `Arc<Storage>` from [`Mount::storage`]).
    pub fn with_dirs(data_dir: &Path, cache_dir: &Path) -> Mount {
        Self::spawn(data_dir, cache_dir, &[], None)
    }

    /// Like [`Mount::with_dirs`] with extra command line arguments.
    pub fn with_dirs_args(data_dir: &Path, cache_dir: &Path, extra: &[&str]) -> Mount {
        Self::spawn(data_dir, cache_dir, extra, None)
    }

    /// Mount the directories of `storage`, keeping them alive for as long as
    /// this mount lives.
    pub fn on(storage: &Arc<Storage>) -> Mount {
        Self::on_with_args(storage, &[])
    }

    pub fn on_with_args(storage: &Arc<Storage>, extra: &[&str]) -> Mount {
        Self::spawn(
            &storage.data_dir,
            &storage.cache_dir,
            extra,
            Some(storage.clone()),
        )
    }

    /// The storage behind this mount (only for mounts made by `new*`/`on*`).
    /// Keep the returned `Arc` to remount after `unmount()`/`kill9()`.
    pub fn storage(&self) -> Arc<Storage> {
        self.storage
            .clone()
            .expect("Mount::storage() is only available for mounts created by Mount::new/on")
    }

    fn spawn(
        data_dir: &Path,
        cache_dir: &Path,
        extra: &[&str],
        storage: Option<Arc<Storage>>,
    ) -> Mount {
        let bin = truckeefs_bin();
        let mnt_tmp = tempfile::Builder::new()
            .prefix("truckeefs-mnt-")
            .tempdir()
            .expect("create temp dir");
        // Non-root test helpers must be able to reach the mount point.
        fs::set_permissions(
            mnt_tmp.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let dir = mnt_tmp.path().join("mnt");
        fs::create_dir(&dir).unwrap();
        let dir = dir.canonicalize().unwrap();
        let log_path = mnt_tmp.path().join("truckeefs.log");
        let log = File::create(&log_path).unwrap();

        let mut cmd = Command::new(&bin);
        cmd.arg("mount")
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--cache-dir")
            .arg(cache_dir);
        // A storage made under TRUCKEEFS_TEST_BACKENDS=production carries its backend config.
        if let Some(config) = data_dir.parent().map(|p| p.join(BACKEND_CONFIG)).filter(|c| c.exists()) {
            cmd.arg("-c").arg(config);
        }
        cmd.args(extra)
            .arg("-v")
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .env("RUST_BACKTRACE", "1");
        unsafe {
            cmd.pre_exec(|| {
                // If the test process dies, let the daemon unmount and exit.
                libc::prctl(
                    libc::PR_SET_PDEATHSIG,
                    libc::SIGTERM as libc::c_ulong,
                    0,
                    0,
                    0,
                );
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {}: {e}", bin.display()));
        let watch = Watch::start(child.id(), dir.display().to_string());
        let mut m = Mount {
            dir,
            data_dir: data_dir.to_path_buf(),
            cache_dir: cache_dir.to_path_buf(),
            child: Some(child),
            log_path,
            watch,
            storage,
            _mnt_tmp: mnt_tmp,
        };

        let deadline = Instant::now() + MOUNT_TIMEOUT;
        loop {
            if is_mounted(&m.dir) {
                return m;
            }
            if let Some(status) = m.child.as_mut().unwrap().try_wait().unwrap() {
                m.watch.finish();
                m.child = None;
                panic!(
                    "truckeefs exited ({status}) before {} appeared in /proc/self/mountinfo; log tail:\n{}",
                    m.dir.display(),
                    m.log_tail()
                );
            }
            if Instant::now() >= deadline {
                m.watch.finish();
                let mut child = m.child.take().unwrap();
                let _ = child.kill();
                let _ = child.wait();
                if is_mounted(&m.dir) {
                    let _ = fusermount(&["-u", "-z"], &m.dir);
                }
                let tail = m.log_tail();
                panic!(
                    "{} did not appear in /proc/self/mountinfo within {:?}; log tail:\n{}",
                    m.dir.display(),
                    MOUNT_TIMEOUT,
                    tail
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// `self.dir.join(rel)`.
    pub fn path(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.dir.join(rel)
    }

    /// Pid of the daemon.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("mount is running").id()
    }

    /// The path of the daemon's log (stdout+stderr, run with `-v`).
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The last lines of the daemon's log.
    pub fn log_tail(&self) -> String {
        log_tail(&self.log_path, 60)
    }

    /// The fstype in /proc/self/mountinfo (e.g. "fuse.truckeefs").
    pub fn fstype(&self) -> Option<String> {
        mount_fstype(&self.dir)
    }

    fn unmount_inner(&mut self) -> (ExitStatus, String) {
        let mut child = self.child.take().expect("mount is running");
        self.watch.finish();
        // EBUSY right after closing files is possible in principle; retry
        // for a bounded time.
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut last_err;
        loop {
            match fusermount(&["-u"], &self.dir) {
                Ok(()) => break,
                Err(e) => last_err = e,
            }
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                let _ = fusermount(&["-u", "-z"], &self.dir);
                panic!("{last_err}\nlog tail:\n{}", self.log_tail());
            }
            thread::sleep(Duration::from_millis(50));
        }
        let status = match wait_timeout(&mut child, UNMOUNT_TIMEOUT) {
            Some(s) => s,
            None => {
                eprintln!(
                    "truckeefs did not exit within {:?} after fusermount3 -u; killing it. Its threads:\n{}",
                    UNMOUNT_TIMEOUT,
                    threads_of(child.id())
                );
                let _ = child.kill();
                child.wait().unwrap()
            }
        };
        if is_mounted(&self.dir) {
            let _ = fusermount(&["-u", "-z"], &self.dir);
        }
        let tail = self.log_tail();
        if !status.success() {
            eprintln!("truckeefs exited with {status} after unmount; log tail:\n{tail}");
        }
        (status, tail)
    }

    /// Unmount with `fusermount3 -u`, wait (up to 30 s) for the daemon to
    /// exit and return its exit status. Tests assert it is a success.
    pub fn unmount(mut self) -> ExitStatus {
        self.unmount_inner().0
    }

    /// [`Mount::unmount`] and assert a zero exit status (message includes
    /// the daemon's log tail).
    pub fn unmount_ok(mut self) {
        let (status, tail) = self.unmount_inner();
        assert!(
            status.success(),
            "truckeefs exited with {status} after fusermount3 -u; log tail:\n{tail}"
        );
    }

    /// Send `sig` (e.g. SIGTERM) to the daemon and wait up to 30 s for it
    /// to exit. Returns its exit status and whether the mount point was
    /// still in the mount table right after it exited (it is then removed
    /// with `fusermount3 -u -z`).
    pub fn signal_and_wait(mut self, sig: i32) -> (ExitStatus, bool) {
        let mut child = self.child.take().expect("mount is running");
        self.watch.finish();
        unsafe { libc::kill(child.id() as i32, sig) };
        let status = match wait_timeout(&mut child, UNMOUNT_TIMEOUT) {
            Some(s) => s,
            None => {
                eprintln!(
                    "truckeefs did not exit within {:?} after signal {sig}; killing it. Its threads:\n{}",
                    UNMOUNT_TIMEOUT,
                    threads_of(child.id())
                );
                let _ = child.kill();
                child.wait().unwrap()
            }
        };
        let still_mounted = is_mounted(&self.dir);
        if still_mounted {
            let _ = fusermount(&["-u", "-z"], &self.dir);
        }
        if !status.success() {
            eprintln!(
                "truckeefs exited with {status} after signal {sig}; log tail:\n{}",
                self.log_tail()
            );
        }
        (status, still_mounted)
    }

    /// Kill the daemon with SIGKILL (a crash), then lazily unmount the dead
    /// mount with `fusermount3 -u -z`.
    pub fn kill9(mut self) {
        let mut child = self.child.take().expect("mount is running");
        self.watch.finish();
        unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
        let status = child.wait().unwrap();
        assert_eq!(
            status.signal(),
            Some(libc::SIGKILL),
            "daemon exited before SIGKILL: {status}"
        );
        let _ = fusermount(&["-u", "-z"], &self.dir);
        let deadline = Instant::now() + Duration::from_secs(10);
        while is_mounted(&self.dir) && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(20));
            let _ = fusermount(&["-u", "-z"], &self.dir);
        }
        assert!(
            !is_mounted(&self.dir),
            "dead mount {} could not be removed",
            self.dir.display()
        );
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if thread::panicking() {
                eprintln!(
                    "--- truckeefs log tail for {} ---\n{}\n--- end of log ---",
                    self.dir.display(),
                    self.log_tail()
                );
            }
            self.watch.finish();
            if is_mounted(&self.dir) {
                let deadline = Instant::now() + Duration::from_secs(3);
                loop {
                    if fusermount(&["-u"], &self.dir).is_ok() || Instant::now() >= deadline {
                        break;
                    }
                    if let Ok(Some(_)) = child.try_wait() {
                        break;
                    }
                    thread::sleep(Duration::from_millis(50));
                }
            } else {
                unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            }
            if wait_timeout(&mut child, Duration::from_secs(10)).is_none() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if is_mounted(&self.dir) {
            let _ = fusermount(&["-u", "-z"], &self.dir);
        }
    }
}

/// Run `truckeefs` with `args` (no mount expected to succeed), wait at most
/// `timeout`. If a mount point given in `watch_mount` shows up in the mount
/// table, it is unmounted and this returns `mounted = true`.
pub struct RunOutcome {
    pub status: Option<ExitStatus>,
    pub output: String,
    pub mounted: bool,
}

pub fn run_truckeefs(args: &[&OsStr], watch_mount: Option<&Path>, timeout: Duration) -> RunOutcome {
    let bin = truckeefs_bin();
    let tmp = tempfile::Builder::new()
        .prefix("truckeefs-run-")
        .tempdir()
        .unwrap();
    let log_path = tmp.path().join("out.log");
    let log = File::create(&log_path).unwrap();
    let mut child = Command::new(&bin)
        .args(args)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .env("RUST_BACKTRACE", "1")
        .spawn()
        .unwrap_or_else(|e| panic!("cannot spawn {}: {e}", bin.display()));
    let deadline = Instant::now() + timeout;
    let mut mounted = false;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if let Some(m) = watch_mount {
            if is_mounted(m) {
                mounted = true;
                let _ = fusermount(&["-u"], m);
                let s = wait_timeout(&mut child, Duration::from_secs(10));
                if s.is_none() {
                    let _ = child.kill();
                    let _ = child.wait();
                    let _ = fusermount(&["-u", "-z"], m);
                }
                break s;
            }
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        thread::sleep(Duration::from_millis(20));
    };
    let output = String::from_utf8_lossy(&fs::read(&log_path).unwrap_or_default()).into_owned();
    RunOutcome {
        status,
        output,
        mounted,
    }
}

// ---------------------------------------------------------------------------
// errno helpers and libc wrappers
// ---------------------------------------------------------------------------

/// The errno of a failed result, or 0 if it succeeded.
pub fn errno_of<T>(r: io::Result<T>) -> i32 {
    match r {
        Ok(_) => 0,
        Err(e) => e.raw_os_error().unwrap_or(-1),
    }
}

/// Name of an errno value, for messages.
pub fn errno_name(e: i32) -> String {
    if e == 0 {
        return "success".into();
    }
    format!("{} ({})", io::Error::from_raw_os_error(e), e)
}

/// Assert that `r` failed with exactly `expected`.
#[track_caller]
pub fn assert_errno<T: std::fmt::Debug>(r: io::Result<T>, expected: i32, what: &str) {
    let got = match &r {
        Ok(_) => 0,
        Err(e) => e.raw_os_error().unwrap_or(-1),
    };
    assert_eq!(
        got,
        expected,
        "{what}: expected errno {}, got {} (result {:?})",
        errno_name(expected),
        errno_name(got),
        r
    );
}

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn cvt_l(r: libc::c_long) -> io::Result<libc::c_long> {
    if r == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn cvt_s(r: libc::ssize_t) -> io::Result<usize> {
    if r == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as usize)
    }
}

/// NUL-terminated copy of a path.
pub fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("path without NUL")
}

fn cbytes(b: &[u8]) -> CString {
    CString::new(b).expect("no NUL")
}

pub fn mknod(p: &Path, mode: u32, dev: u64) -> io::Result<()> {
    let c = cpath(p);
    cvt(unsafe { libc::mknod(c.as_ptr(), mode as libc::mode_t, dev as libc::dev_t) }).map(|_| ())
}

pub fn makedev(major: u32, minor: u32) -> u64 {
    libc::makedev(major, minor) as u64
}

pub fn mkdir(p: &Path, mode: u32) -> io::Result<()> {
    let c = cpath(p);
    cvt(unsafe { libc::mkdir(c.as_ptr(), mode as libc::mode_t) }).map(|_| ())
}

pub fn chmod(p: &Path, mode: u32) -> io::Result<()> {
    let c = cpath(p);
    cvt(unsafe { libc::chmod(c.as_ptr(), mode as libc::mode_t) }).map(|_| ())
}

/// `chown(2)`; pass `u32::MAX` (-1) to leave an id unchanged.
pub fn chown(p: &Path, uid: u32, gid: u32) -> io::Result<()> {
    let c = cpath(p);
    cvt(unsafe { libc::chown(c.as_ptr(), uid, gid) }).map(|_| ())
}

pub fn lchown(p: &Path, uid: u32, gid: u32) -> io::Result<()> {
    let c = cpath(p);
    cvt(unsafe { libc::lchown(c.as_ptr(), uid, gid) }).map(|_| ())
}

pub fn truncate(p: &Path, len: u64) -> io::Result<()> {
    let c = cpath(p);
    cvt(unsafe { libc::truncate(c.as_ptr(), len as libc::off_t) }).map(|_| ())
}

pub fn unlink(p: &Path) -> io::Result<()> {
    let c = cpath(p);
    cvt(unsafe { libc::unlink(c.as_ptr()) }).map(|_| ())
}

pub fn rmdir(p: &Path) -> io::Result<()> {
    let c = cpath(p);
    cvt(unsafe { libc::rmdir(c.as_ptr()) }).map(|_| ())
}

pub fn rename(a: &Path, b: &Path) -> io::Result<()> {
    let (ca, cb) = (cpath(a), cpath(b));
    cvt(unsafe { libc::rename(ca.as_ptr(), cb.as_ptr()) }).map(|_| ())
}

pub fn link(a: &Path, b: &Path) -> io::Result<()> {
    let (ca, cb) = (cpath(a), cpath(b));
    cvt(unsafe { libc::link(ca.as_ptr(), cb.as_ptr()) }).map(|_| ())
}

/// `symlink(2)` with an arbitrary byte target.
pub fn symlink_bytes(target: &[u8], p: &Path) -> io::Result<()> {
    let (ct, cp) = (cbytes(target), cpath(p));
    cvt(unsafe { libc::symlink(ct.as_ptr(), cp.as_ptr()) }).map(|_| ())
}

/// `readlink(2)` returning raw bytes.
pub fn readlink_bytes(p: &Path) -> io::Result<Vec<u8>> {
    let c = cpath(p);
    let mut buf = vec![0u8; 8192];
    let n = cvt_s(unsafe {
        libc::readlink(c.as_ptr(), buf.as_mut_ptr() as *mut libc::c_char, buf.len())
    })?;
    buf.truncate(n);
    Ok(buf)
}

pub const RENAME_NOREPLACE: u32 = 1;
pub const RENAME_EXCHANGE: u32 = 2;

/// `renameat2(AT_FDCWD, a, AT_FDCWD, b, flags)` via the raw syscall.
pub fn renameat2(a: &Path, b: &Path, flags: u32) -> io::Result<()> {
    let (ca, cb) = (cpath(a), cpath(b));
    cvt_l(unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            libc::AT_FDCWD,
            ca.as_ptr(),
            libc::AT_FDCWD,
            cb.as_ptr(),
            flags as libc::c_uint,
        )
    })
    .map(|_| ())
}

/// A timestamp for [`utimensat`].
#[derive(Clone, Copy, Debug)]
pub enum Ts {
    At(i64, i64),
    Now,
    Omit,
}

fn ts(t: Ts) -> libc::timespec {
    match t {
        Ts::At(s, ns) => libc::timespec {
            tv_sec: s as libc::time_t,
            tv_nsec: ns as _,
        },
        Ts::Now => libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_NOW,
        },
        Ts::Omit => libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
    }
}

pub fn utimensat(p: &Path, atime: Ts, mtime: Ts, flags: i32) -> io::Result<()> {
    let c = cpath(p);
    let times = [ts(atime), ts(mtime)];
    cvt(unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), flags) }).map(|_| ())
}

pub fn access(p: &Path, mode: i32) -> io::Result<()> {
    let c = cpath(p);
    cvt(unsafe { libc::access(c.as_ptr(), mode) }).map(|_| ())
}

pub fn statvfs(p: &Path) -> io::Result<libc::statvfs> {
    let c = cpath(p);
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    cvt(unsafe { libc::statvfs(c.as_ptr(), &mut s) })?;
    Ok(s)
}

pub fn statfs(p: &Path) -> io::Result<libc::statfs> {
    let c = cpath(p);
    let mut s: libc::statfs = unsafe { std::mem::zeroed() };
    cvt(unsafe { libc::statfs(c.as_ptr(), &mut s) })?;
    Ok(s)
}

pub fn fallocate(f: &impl AsRawFd, mode: i32, off: u64, len: u64) -> io::Result<()> {
    cvt(unsafe { libc::fallocate(f.as_raw_fd(), mode, off as libc::off_t, len as libc::off_t) })
        .map(|_| ())
}

/// `copy_file_range` with explicit offsets; returns bytes copied.
pub fn copy_file_range(
    src: &impl AsRawFd,
    src_off: u64,
    dst: &impl AsRawFd,
    dst_off: u64,
    len: usize,
) -> io::Result<usize> {
    let mut so = src_off as libc::loff_t;
    let mut d = dst_off as libc::loff_t;
    cvt_s(unsafe {
        libc::copy_file_range(src.as_raw_fd(), &mut so, dst.as_raw_fd(), &mut d, len, 0)
    })
}

pub fn fsync(f: &impl AsRawFd) -> io::Result<()> {
    cvt(unsafe { libc::fsync(f.as_raw_fd()) }).map(|_| ())
}

pub fn fdatasync(f: &impl AsRawFd) -> io::Result<()> {
    cvt(unsafe { libc::fdatasync(f.as_raw_fd()) }).map(|_| ())
}

pub fn fstat(f: &impl AsRawFd) -> io::Result<libc::stat> {
    let mut s: libc::stat = unsafe { std::mem::zeroed() };
    cvt(unsafe { libc::fstat(f.as_raw_fd(), &mut s) })?;
    Ok(s)
}

pub fn flock(f: &impl AsRawFd, op: i32) -> io::Result<()> {
    cvt(unsafe { libc::flock(f.as_raw_fd(), op) }).map(|_| ())
}

fn flock_struct(l_type: i32, start: i64, len: i64) -> libc::flock {
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = l_type as _;
    fl.l_whence = libc::SEEK_SET as _;
    fl.l_start = start as _;
    fl.l_len = len as _;
    fl
}

/// `fcntl(fd, F_SETLK, {l_type, SEEK_SET, start, len})`.
pub fn setlk(fd: RawFd, l_type: i32, start: i64, len: i64) -> io::Result<()> {
    let fl = flock_struct(l_type, start, len);
    cvt(unsafe { libc::fcntl(fd, libc::F_SETLK, &fl) }).map(|_| ())
}

/// `fcntl(fd, F_GETLK, ...)`: returns the conflicting lock description
/// (`l_type == F_UNLCK` if none).
pub fn getlk(fd: RawFd, l_type: i32, start: i64, len: i64) -> io::Result<libc::flock> {
    let mut fl = flock_struct(l_type, start, len);
    cvt(unsafe { libc::fcntl(fd, libc::F_GETLK, &mut fl) })?;
    Ok(fl)
}

fn xname(name: &str) -> CString {
    CString::new(name).expect("xattr name without NUL")
}

pub fn setxattr(p: &Path, name: &str, value: &[u8], flags: i32) -> io::Result<()> {
    let (c, n) = (cpath(p), xname(name));
    cvt(unsafe {
        libc::setxattr(
            c.as_ptr(),
            n.as_ptr(),
            value.as_ptr() as *const _,
            value.len(),
            flags,
        )
    })
    .map(|_| ())
}

pub fn lsetxattr(p: &Path, name: &str, value: &[u8], flags: i32) -> io::Result<()> {
    let (c, n) = (cpath(p), xname(name));
    cvt(unsafe {
        libc::lsetxattr(
            c.as_ptr(),
            n.as_ptr(),
            value.as_ptr() as *const _,
            value.len(),
            flags,
        )
    })
    .map(|_| ())
}

/// `getxattr` into a buffer of exactly `size` bytes (0 = size query);
/// returns the bytes (for a size query: a vector of the reported length
/// filled with zeros — use [`getxattr_size`]).
pub fn getxattr_buf(p: &Path, name: &str, size: usize) -> io::Result<Vec<u8>> {
    let (c, n) = (cpath(p), xname(name));
    let mut buf = vec![0u8; size];
    let ptr = if size == 0 {
        std::ptr::null_mut()
    } else {
        buf.as_mut_ptr() as *mut _
    };
    let r = cvt_s(unsafe { libc::getxattr(c.as_ptr(), n.as_ptr(), ptr, size) })?;
    if size == 0 {
        return Ok(vec![0; r]);
    }
    buf.truncate(r);
    Ok(buf)
}

/// Size query (`size == 0`).
pub fn getxattr_size(p: &Path, name: &str) -> io::Result<usize> {
    let (c, n) = (cpath(p), xname(name));
    cvt_s(unsafe { libc::getxattr(c.as_ptr(), n.as_ptr(), std::ptr::null_mut(), 0) })
}

/// Full value (size query, then read).
pub fn getxattr(p: &Path, name: &str) -> io::Result<Vec<u8>> {
    let n = getxattr_size(p, name)?;
    getxattr_buf(p, name, n.max(1)).map(|mut v| {
        v.truncate(n);
        v
    })
}

pub fn lgetxattr(p: &Path, name: &str) -> io::Result<Vec<u8>> {
    let (c, n) = (cpath(p), xname(name));
    let size = cvt_s(unsafe { libc::lgetxattr(c.as_ptr(), n.as_ptr(), std::ptr::null_mut(), 0) })?;
    let mut buf = vec![0u8; size.max(1)];
    let r = cvt_s(unsafe {
        libc::lgetxattr(
            c.as_ptr(),
            n.as_ptr(),
            buf.as_mut_ptr() as *mut _,
            buf.len(),
        )
    })?;
    buf.truncate(r);
    Ok(buf)
}

/// `listxattr` into a buffer of exactly `size` bytes; size 0 is a size query
/// returning an empty vector of the reported length.
pub fn listxattr_buf(p: &Path, size: usize) -> io::Result<Vec<u8>> {
    let c = cpath(p);
    let mut buf = vec![0u8; size];
    let ptr = if size == 0 {
        std::ptr::null_mut()
    } else {
        buf.as_mut_ptr() as *mut libc::c_char
    };
    let r = cvt_s(unsafe { libc::listxattr(c.as_ptr(), ptr, size) })?;
    if size == 0 {
        return Ok(vec![0; r]);
    }
    buf.truncate(r);
    Ok(buf)
}

fn split_names(buf: &[u8]) -> Vec<String> {
    let mut v: Vec<String> = buf
        .split(|&b| b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect();
    v.sort();
    v
}

/// Sorted xattr names of `p` (follows symlinks).
pub fn listxattr(p: &Path) -> io::Result<Vec<String>> {
    let n = listxattr_buf(p, 0)?.len();
    if n == 0 {
        return Ok(Vec::new());
    }
    Ok(split_names(&listxattr_buf(p, n)?))
}

/// Sorted xattr names of `p` (does not follow symlinks).
pub fn llistxattr(p: &Path) -> io::Result<Vec<String>> {
    let c = cpath(p);
    let n = cvt_s(unsafe { libc::llistxattr(c.as_ptr(), std::ptr::null_mut(), 0) })?;
    if n == 0 {
        return Ok(Vec::new());
    }
    let mut buf = vec![0u8; n];
    let r = cvt_s(unsafe { libc::llistxattr(c.as_ptr(), buf.as_mut_ptr() as *mut _, n) })?;
    buf.truncate(r);
    Ok(split_names(&buf))
}

pub fn removexattr(p: &Path, name: &str) -> io::Result<()> {
    let (c, n) = (cpath(p), xname(name));
    cvt(unsafe { libc::removexattr(c.as_ptr(), n.as_ptr()) }).map(|_| ())
}

/// The calling process's umask, read from /proc/self/status without
/// changing it (umask(2) would race with other test threads).
pub fn current_umask() -> u32 {
    let s = fs::read_to_string("/proc/self/status").unwrap();
    for line in s.lines() {
        if let Some(v) = line.strip_prefix("Umask:") {
            return u32::from_str_radix(v.trim(), 8).unwrap();
        }
    }
    panic!("no Umask line in /proc/self/status")
}

// ---------------------------------------------------------------------------
// Raw directory reading
// ---------------------------------------------------------------------------

/// One directory entry as returned by readdir/getdents.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawEntry {
    pub name: Vec<u8>,
    pub ino: u64,
    pub d_type: u8,
}

impl RawEntry {
    pub fn name_str(&self) -> String {
        String::from_utf8_lossy(&self.name).into_owned()
    }
}

/// A libc `DIR*` stream (opendir/readdir/rewinddir/closedir).
pub struct Dir(*mut libc::DIR);

impl Dir {
    pub fn open(p: &Path) -> io::Result<Dir> {
        let c = cpath(p);
        let d = unsafe { libc::opendir(c.as_ptr()) };
        if d.is_null() {
            Err(io::Error::last_os_error())
        } else {
            Ok(Dir(d))
        }
    }

    /// Next entry, `None` at the end.
    pub fn read(&mut self) -> Option<io::Result<RawEntry>> {
        unsafe {
            *libc::__errno_location() = 0;
            let e = libc::readdir64(self.0);
            if e.is_null() {
                let err = *libc::__errno_location();
                if err != 0 {
                    return Some(Err(io::Error::from_raw_os_error(err)));
                }
                return None;
            }
            let e = &*e;
            let name = std::ffi::CStr::from_ptr(e.d_name.as_ptr())
                .to_bytes()
                .to_vec();
            Some(Ok(RawEntry {
                name,
                ino: e.d_ino as u64,
                d_type: e.d_type,
            }))
        }
    }

    pub fn rewind(&mut self) {
        unsafe { libc::rewinddir(self.0) }
    }

    pub fn fd(&self) -> RawFd {
        unsafe { libc::dirfd(self.0) }
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        unsafe { libc::closedir(self.0) };
    }
}

/// All entries of a directory (including "." and ".."), via libc readdir.
pub fn list_raw(p: &Path) -> io::Result<Vec<RawEntry>> {
    let mut d = Dir::open(p)?;
    let mut v = Vec::new();
    while let Some(e) = d.read() {
        v.push(e?);
    }
    Ok(v)
}

/// Sorted names (excluding "." and "..") via std::fs::read_dir.
pub fn names(p: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(p)
        .unwrap_or_else(|e| panic!("read_dir {}: {e}", p.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// One `getdents64` call with a buffer of `bufsize` bytes; an empty vector
/// means end of directory.
pub fn getdents64(fd: RawFd, bufsize: usize) -> io::Result<Vec<RawEntry>> {
    let mut buf = vec![0u8; bufsize];
    let n = cvt_l(unsafe { libc::syscall(libc::SYS_getdents64, fd, buf.as_mut_ptr(), bufsize) })?
        as usize;
    let mut out = Vec::new();
    let mut off = 0;
    while off < n {
        let ino = u64::from_ne_bytes(buf[off..off + 8].try_into().unwrap());
        let reclen = u16::from_ne_bytes(buf[off + 16..off + 18].try_into().unwrap()) as usize;
        let d_type = buf[off + 18];
        let name_area = &buf[off + 19..off + reclen];
        let len = name_area
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(name_area.len());
        out.push(RawEntry {
            name: name_area[..len].to_vec(),
            ino,
            d_type,
        });
        off += reclen;
    }
    Ok(out)
}

// ---------------------------------------------------------------------------
// Data and misc
// ---------------------------------------------------------------------------

/// Deterministic pseudo-random bytes (xorshift64*).
pub fn pseudo_random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Like [`pseudo_random_bytes`] but never 0, so zero-filled holes are
/// distinguishable from written data.
pub fn nonzero_random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut v = pseudo_random_bytes(seed, len);
    for b in v.iter_mut() {
        if *b == 0 {
            *b = 0xA5;
        }
    }
    v
}

/// First index at which `a` and `b` differ (or the shorter length).
pub fn first_difference(a: &[u8], b: &[u8]) -> Option<usize> {
    if a == b {
        return None;
    }
    Some(
        a.iter()
            .zip(b)
            .position(|(x, y)| x != y)
            .unwrap_or(a.len().min(b.len())),
    )
}

/// Assert two byte strings are equal without printing megabytes.
#[track_caller]
pub fn assert_bytes_eq(got: &[u8], want: &[u8], what: &str) {
    if let Some(i) = first_difference(got, want) {
        panic!(
            "{what}: contents differ at offset {i} (got len {}, want len {}; got {:?}.., want {:?}..)",
            got.len(),
            want.len(),
            &got[i.min(got.len())..(i + 16).min(got.len())],
            &want[i.min(want.len())..(i + 16).min(want.len())]
        );
    }
}

/// Every file below `dir` (not directories), recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display())) {
        let p = e.unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display())).path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// Bytes allocated (st_blocks * 512) by all files under `p`, recursively.
pub fn disk_usage(p: &Path) -> u64 {
    let md = match fs::symlink_metadata(p) {
        Ok(m) => m,
        Err(_) => return 0,
    };
    let mut total = md.blocks() * 512;
    if md.is_dir() {
        if let Ok(rd) = fs::read_dir(p) {
            for e in rd.flatten() {
                total += disk_usage(&e.path());
            }
        }
    }
    total
}

/// Wall-clock time as (sec, nsec).
pub fn now_ts() -> (i64, i64) {
    let d = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    (d.as_secs() as i64, d.subsec_nanos() as i64)
}

/// Block (bounded, ≤ 2 s) until the wall clock is at least 20 ms past the
/// timestamp `t`, so that a timestamp taken afterwards is strictly greater
/// even with coarse kernel clocks. This waits on the clock, not on the
/// filesystem.
pub fn wait_clock_past(t: (i64, i64)) {
    let target = t.0 as i128 * 1_000_000_000 + t.1 as i128 + 20_000_000;
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let n = now_ts();
        if n.0 as i128 * 1_000_000_000 + n.1 as i128 >= target || Instant::now() >= deadline {
            return;
        }
        thread::sleep(Duration::from_millis(2));
    }
}

pub fn mtime_of(md: &fs::Metadata) -> (i64, i64) {
    (md.mtime(), md.mtime_nsec())
}
pub fn atime_of(md: &fs::Metadata) -> (i64, i64) {
    (md.atime(), md.atime_nsec())
}
pub fn ctime_of(md: &fs::Metadata) -> (i64, i64) {
    (md.ctime(), md.ctime_nsec())
}

/// `path` must be a str for the helper's argv.
pub fn ps(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// Poll `f` every 20 ms until it returns true or `timeout` passes.
pub fn poll_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------
// Helper process driver
// ---------------------------------------------------------------------------

/// Runs `truckeefs-test-helper` (one filesystem operation per process),
/// optionally with other credentials and umask.
#[derive(Clone, Debug, Default)]
pub struct Helper {
    uid: Option<u32>,
    gid: Option<u32>,
    umask: Option<u32>,
}

/// Helper as the current user (root).
pub fn as_root() -> Helper {
    Helper::default()
}

/// Helper with real/effective/saved/fs uid and gid set to `uid`/`gid` and no
/// supplementary groups.
pub fn as_user(uid: u32, gid: u32) -> Helper {
    Helper {
        uid: Some(uid),
        gid: Some(gid),
        umask: None,
    }
}

/// Parsed helper reply: `ok [fields...]` or `err ERRNO`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub errno: i32,
    pub fields: Vec<String>,
}

fn parse_reply(line: &str) -> Reply {
    let mut it = line.split_whitespace();
    match it.next() {
        Some("ok") => Reply {
            errno: 0,
            fields: it.map(String::from).collect(),
        },
        Some("err") => Reply {
            errno: it.next().and_then(|s| s.parse().ok()).unwrap_or(-1),
            fields: Vec::new(),
        },
        _ => panic!("unexpected helper output: {line:?}"),
    }
}

impl Helper {
    /// Set the helper's umask (octal value, e.g. 0o027).
    pub fn umask(mut self, m: u32) -> Helper {
        self.umask = Some(m);
        self
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(helper_bin());
        if let Some(u) = self.uid {
            c.arg("--uid").arg(u.to_string());
        }
        if let Some(g) = self.gid {
            c.arg("--gid").arg(g.to_string());
        }
        if let Some(m) = self.umask {
            c.arg("--umask").arg(format!("{m:o}"));
        }
        c.args(args);
        c
    }

    /// Run one operation; returns its reply. Panics on helper failure or if
    /// it does not finish within 30 s.
    pub fn run(&self, args: &[&str]) -> Reply {
        let mut child = self
            .command(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn truckeefs-test-helper");
        let status = match wait_timeout(&mut child, Duration::from_secs(30)) {
            Some(s) => s,
            None => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("helper {args:?} did not finish within 30 s");
            }
        };
        let mut out = String::new();
        child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        let mut err = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        assert!(
            status.success(),
            "helper {args:?} failed: {status}; stderr: {err}; stdout: {out}"
        );
        parse_reply(out.lines().next().unwrap_or(""))
    }

    /// Run one operation and return its errno (0 on success).
    pub fn errno(&self, args: &[&str]) -> i32 {
        self.run(args).errno
    }

    /// Start a `hold-*` command: the helper performs the operation, replies,
    /// and keeps its file descriptor open until [`Holder::release`].
    pub fn hold(&self, args: &[&str]) -> Holder {
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn truckeefs-test-helper");
        let stdin = child.stdin.take();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let reply = parse_reply(line.trim());
        Holder {
            child,
            stdin,
            stdout,
            reply,
        }
    }
}

/// A helper process holding a file (and maybe a lock) open.
pub struct Holder {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    /// The reply to the initial operation.
    pub reply: Reply,
}

impl Holder {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Ask the holder to close its descriptor and exit; waits for it.
    pub fn release(mut self) {
        self.release_inner();
    }

    fn release_inner(&mut self) {
        if let Some(mut s) = self.stdin.take() {
            let _ = s.write_all(b"release\n");
            drop(s);
            let mut line = String::new();
            let _ = self.stdout.read_line(&mut line);
            if wait_timeout(&mut self.child, Duration::from_secs(30)).is_none() {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("lock holder did not exit within 30 s");
            }
        }
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        if self.stdin.is_some() {
            self.stdin = None;
            if wait_timeout(&mut self.child, Duration::from_secs(5)).is_none() {
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Tree snapshots (for remount comparisons)
// ---------------------------------------------------------------------------

/// Everything observable about one path that must survive a remount.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snap {
    pub path: String,
    pub kind: u32,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub nlink: u64,
    pub rdev: u64,
    pub mtime: (i64, i64),
    /// For regular files: a hash of the content; 0 otherwise.
    pub content_hash: u64,
    pub symlink_target: Option<Vec<u8>>,
    pub xattrs: Vec<(String, Vec<u8>)>,
    /// The first path (in sorted walk order) that has the same inode.
    pub link_group: String,
}

fn fnv1a(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in data {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Walk `root` (not following symlinks) and describe every path below it,
/// sorted by path.
pub fn snapshot(root: &Path) -> Vec<Snap> {
    let mut out = Vec::new();
    let mut inos: std::collections::HashMap<u64, String> = Default::default();
    fn walk(
        root: &Path,
        rel: &Path,
        out: &mut Vec<Snap>,
        inos: &mut std::collections::HashMap<u64, String>,
    ) {
        let dir = root.join(rel);
        let mut entries: Vec<OsString> = fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()))
            .map(|e| e.unwrap().file_name())
            .collect();
        entries.sort();
        for name in entries {
            let relp = rel.join(&name);
            let p = root.join(&relp);
            let md = fs::symlink_metadata(&p).unwrap();
            let kind = md.mode() & libc::S_IFMT;
            let relname = relp.to_string_lossy().into_owned();
            let link_group = inos
                .entry(md.ino())
                .or_insert_with(|| relname.clone())
                .clone();
            let content_hash = if kind == libc::S_IFREG {
                fnv1a(&fs::read(&p).unwrap())
            } else {
                0
            };
            let symlink_target = if kind == libc::S_IFLNK {
                Some(readlink_bytes(&p).unwrap())
            } else {
                None
            };
            let mut xattrs = Vec::new();
            if kind == libc::S_IFREG || kind == libc::S_IFDIR || kind == libc::S_IFLNK {
                for n in llistxattr(&p).unwrap_or_default() {
                    let v = lgetxattr(&p, &n)
                        .unwrap_or_else(|e| panic!("lgetxattr {relname} {n}: {e}"));
                    xattrs.push((n, v));
                }
            }
            out.push(Snap {
                path: relname,
                kind,
                mode: md.mode(),
                uid: md.uid(),
                gid: md.gid(),
                size: md.size(),
                nlink: md.nlink(),
                rdev: md.rdev(),
                mtime: mtime_of(&md),
                content_hash,
                symlink_target,
                xattrs,
                link_group,
            });
            if kind == libc::S_IFDIR {
                walk(root, &relp, out, inos);
            }
        }
    }
    walk(root, Path::new(""), &mut out, &mut inos);
    out
}

/// Convenience for building OsStr argument lists.
pub fn os(s: &str) -> &OsStr {
    OsStr::new(s)
}

/// Convert a byte vector to an OsString.
pub fn os_bytes(b: Vec<u8>) -> OsString {
    OsString::from_vec(b)
}

#[cfg(test)]
mod tests {
    #[test]
    fn threads_of_names_each_thread_of_a_process() {
        let (ready, started) = std::sync::mpsc::channel();
        let t = std::thread::Builder::new()
            .name("probe-thread".into())
            .spawn(move || {
                ready.send(()).unwrap();
                std::thread::park();
            })
            .unwrap();
        // (The new thread names itself once it runs.)
        started.recv().unwrap();
        let shown = super::threads_of(std::process::id());
        assert!(shown.contains("probe-thread") && shown.contains("State:"), "{shown}");
        t.thread().unpark();
        t.join().unwrap();
        assert_eq!(super::threads_of(u32::MAX), "  (gone)");
    }
}
