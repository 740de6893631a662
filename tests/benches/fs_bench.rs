//! fs_bench: truckeefs against the local disk it runs on, in one run.
//!
//! Run (as root, so that the kernel page cache can be dropped for the cold reads):
//!
//! ```text
//! cargo build --release -p truckeefs
//! cargo bench -p truckeefs-tests --bench fs_bench
//! BENCH_FILES=2000 BENCH_MIB=256 cargo bench -p truckeefs-tests --bench fs_bench   # smaller
//! ```
//!
//! It mounts the release binary (`target/release/truckeefs`, or `$TRUCKEEFS_BIN`) with fresh
//! temporary data and cache directories, next to a plain local directory on the same disk
//! (under `$BENCH_DIR`, default /var/tmp), and measures both the same way:
//!
//! - metadata: create `$BENCH_FILES` (default 10000) empty files (open O_CREAT + close), stat
//!   them all, unlink them all; ops/s; `$BENCH_ROUNDS` (default 3) rounds alternating between the
//!   local disk and the mount, each figure the median of its rounds;
//! - data: write a `$BENCH_MIB` (default 1024) MiB file in 1 MiB writes, fsync, close; read it
//!   back in 1 MiB reads after dropping the kernel page cache (`echo 3 >
//!   /proc/sys/vm/drop_caches`; on the mount the data is then read from the local store/cache,
//!   "data already local"), and once more with caches warm; MiB/s;
//! - memory: the mount process's peak resident memory while copying the local file into the
//!   mount (VmRSS sampled every 50 ms, and VmHWM at the end).
//!
//! It prints a table `metric | local | truckeefs | ratio | target` (targets: metadata >= 0.1x,
//! warm read >= 0.5x, RSS < 100 MiB). It reports speed and never fails on it: the exit status is
//! non-zero only when something fails functionally (mount, I/O error, wrong data read back,
//! unmount or a non-zero exit of the daemon). Other knobs: `$BENCH_MOUNT_OPTS` (passed as `-o`),
//! `$BENCH_TIMEOUT` (seconds, default 3600: past it the mount is aborted and the bench fails).

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

const MIB: usize = 1 << 20;
/// Random bytes the written blocks are cut from; block `i` starts at `i * 65537 mod POOL`, so no two
/// blocks are equal (a content-addressed store must not get away with deduplicating them).
const POOL_BYTES: usize = 16 * MIB;
const RSS_SAMPLE_INTERVAL: Duration = Duration::from_millis(50);
const MOUNT_WAIT: Duration = Duration::from_secs(30);
const EXIT_WAIT: Duration = Duration::from_secs(120);

type Result<T> = std::result::Result<T, String>;

fn main() {
    // `cargo bench` passes `--bench`; there is nothing to filter, so arguments are ignored.
    match run() {
        Ok(()) => {}
        Err(e) => {
            eprintln!("fs_bench: FAILED: {e}");
            std::process::exit(1);
        }
    }
}

fn env_usize(name: &str, default: usize) -> Result<usize> {
    truckeefs_tests::env_number(name, default as u64).map(|n| n as usize)
}

fn run() -> Result<()> {
    let files = env_usize("BENCH_FILES", 10_000)?;
    let rounds = env_usize("BENCH_ROUNDS", 3)?.max(1);
    let mib = env_usize("BENCH_MIB", 1024)?;
    let timeout_secs = env_usize("BENCH_TIMEOUT", 3600)?;
    let bin = truckeefs_tests::release_bin()?;
    let base = std::env::var_os("BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp"));

    let tmp = tempfile::Builder::new()
        .prefix("truckeefs-bench.")
        .tempdir_in(&base)
        .map_err(|e| format!("cannot create a temporary directory in {}: {e}", base.display()))?;
    let local = tmp.path().join("local");
    let mnt = tmp.path().join("mnt");
    let data = tmp.path().join("data");
    let cache = tmp.path().join("cache");
    for d in [&local, &mnt, &data, &cache] {
        fs::create_dir(d).map_err(|e| format!("mkdir {}: {e}", d.display()))?;
    }

    println!("fs_bench: binary {}", bin.display());
    println!(
        "fs_bench: {} files, {} MiB; local dir {}, mount {}",
        files,
        mib,
        local.display(),
        mnt.display()
    );
    let can_drop_caches = drop_caches().is_ok();
    if !can_drop_caches {
        println!("fs_bench: WARNING: cannot write /proc/sys/vm/drop_caches (not root?): \"cold\" reads may be served from the page cache");
    }

    // Dropped before `tmp`, so the mount is gone before the directory is removed.
    let mount = Mount::start(&bin, &data, &cache, &mnt, &tmp.path().join("truckeefs.log"))?;
    let watchdog = Watchdog::start(Duration::from_secs(timeout_secs as u64), mount.mountpoint.clone(), mount.fuse_conn.clone());
    println!("fs_bench: mounted (pid {})", mount.pid());

    let mut rows: Vec<Row> = Vec::new();

    // --- metadata ---------------------------------------------------------------------------
    // Rounds alternate between the two, so a slow spell of the machine (a VM's stolen time)
    // hits both; each figure is the median of its rounds.
    let (mut local_rounds, mut mount_rounds) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let l = metadata_ops(&local, files, round).map_err(|e| format!("local metadata: {e}"))?;
        println!("  local      create {:>10.0}/s  stat {:>10.0}/s  unlink {:>10.0}/s   (round {})", l.0, l.1, l.2, round + 1);
        let m = metadata_ops(&mnt, files, round).map_err(|e| format!("truckeefs metadata: {e}"))?;
        println!("  truckeefs  create {:>10.0}/s  stat {:>10.0}/s  unlink {:>10.0}/s   (round {})", m.0, m.1, m.2, round + 1);
        local_rounds.push(l);
        mount_rounds.push(m);
    }
    let meta_local = median3(&local_rounds);
    let meta_mount = median3(&mount_rounds);
    let meta_target = Target::RatioAtLeast(0.1);
    rows.push(Row::both("create empty file (ops/s)", meta_local.0, meta_mount.0, meta_target));
    rows.push(Row::both("stat (ops/s)", meta_local.1, meta_mount.1, meta_target));
    rows.push(Row::both("unlink (ops/s)", meta_local.2, meta_mount.2, meta_target));

    // --- data -------------------------------------------------------------------------------
    let pool = random_pool();
    let local_file = local.join("bench.dat");
    let mount_file = mnt.join("bench.dat");
    let w_local = timed_mib(mib, || write_file(&local_file, mib, &pool)).map_err(|e| format!("local write: {e}"))?;
    println!("  local      write {w_local:>9.1} MiB/s");
    let w_mount = timed_mib(mib, || write_file(&mount_file, mib, &pool)).map_err(|e| format!("truckeefs write: {e}"))?;
    println!("  truckeefs  write {w_mount:>9.1} MiB/s");
    rows.push(Row::both(&format!("write {mib} MiB, fsync (MiB/s)"), w_local, w_mount, Target::None));

    let _ = drop_caches();
    let cold_local = timed_mib(mib, || read_file(&local_file, mib, &pool)).map_err(|e| format!("local cold read: {e}"))?;
    let warm_local = timed_mib(mib, || read_file(&local_file, mib, &pool)).map_err(|e| format!("local warm read: {e}"))?;
    println!("  local      read cold {cold_local:>9.1} MiB/s  warm {warm_local:>9.1} MiB/s");
    let _ = drop_caches();
    let cold_mount = timed_mib(mib, || read_file(&mount_file, mib, &pool)).map_err(|e| format!("truckeefs cold read: {e}"))?;
    let warm_mount = timed_mib(mib, || read_file(&mount_file, mib, &pool)).map_err(|e| format!("truckeefs warm read: {e}"))?;
    println!("  truckeefs  read cold {cold_mount:>9.1} MiB/s  warm {warm_mount:>9.1} MiB/s");
    let cold_label = if can_drop_caches { "read, caches dropped (MiB/s)" } else { "read, 1st (caches NOT dropped) (MiB/s)" };
    rows.push(Row::both(cold_label, cold_local, cold_mount, Target::None));
    rows.push(Row::both("read, caches warm (MiB/s)", warm_local, warm_mount, Target::RatioAtLeast(0.5)));

    // --- memory while copying into the mount -------------------------------------------------
    let copy_file = mnt.join("copy.dat");
    let sampler = RssSampler::start(mount.pid());
    let copy_speed = timed_mib(mib, || copy_into(&local_file, &copy_file)).map_err(|e| format!("copy into truckeefs: {e}"))?;
    let rss_max_kib = sampler.stop();
    let hwm_kib = proc_status_kib(mount.pid(), "VmHWM:");
    println!(
        "  truckeefs  copy {copy_speed:>9.1} MiB/s; daemon VmRSS max {} MiB, VmHWM {} MiB",
        fmt_mib(rss_max_kib),
        hwm_kib.map(fmt_mib).unwrap_or_else(|| "?".into())
    );
    rows.push(Row::mount_only(&format!("copy {mib} MiB into the mount (MiB/s)"), copy_speed, Target::None));
    rows.push(Row::mount_only("daemon peak VmRSS during copy (MiB)", rss_max_kib as f64 / 1024.0, Target::Below(100.0)));
    if let Some(hwm) = hwm_kib {
        rows.push(Row::mount_only("daemon VmHWM after copy (MiB)", hwm as f64 / 1024.0, Target::Below(100.0)));
    }

    // --- correctness of what was stored, untimed ----------------------------------------------
    let _ = drop_caches();
    verify_full(&mount_file, mib, &pool).map_err(|e| format!("truckeefs content check of bench.dat: {e}"))?;
    verify_full(&copy_file, mib, &pool).map_err(|e| format!("truckeefs content check of copy.dat: {e}"))?;
    println!("  truckeefs  content of bench.dat and copy.dat verified");
    for f in [&local_file, &mount_file, &copy_file] {
        fs::remove_file(f).map_err(|e| format!("unlink {}: {e}", f.display()))?;
    }

    print_table(&rows, mib, files);

    let status = mount.unmount()?;
    watchdog.disarm();
    if !status.success() {
        return Err(format!("truckeefs exited with {status} after the unmount (log: {})", tmp.path().join("truckeefs.log").display()));
    }
    println!("fs_bench: unmounted; truckeefs exited 0");
    Ok(())
}

// --- measurements ---------------------------------------------------------------------------------

/// Creates, stats and unlinks `n` empty files in a fresh subdirectory of `dir`; ops/s of each phase.
fn metadata_ops(dir: &Path, n: usize, round: usize) -> Result<(f64, f64, f64)> {
    let d = dir.join(format!("meta{round}"));
    fs::create_dir(&d).map_err(|e| format!("mkdir {}: {e}", d.display()))?;
    let names: Vec<PathBuf> = (0..n).map(|i| d.join(format!("f{i:07}"))).collect();

    let t = Instant::now();
    for p in &names {
        let f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .open(p)
            .map_err(|e| format!("create {}: {e}", p.display()))?;
        drop(f);
    }
    let create = n as f64 / t.elapsed().as_secs_f64();

    let t = Instant::now();
    for p in &names {
        let m = fs::symlink_metadata(p).map_err(|e| format!("stat {}: {e}", p.display()))?;
        if !m.is_file() || m.len() != 0 {
            return Err(format!("stat {}: expected an empty regular file, got {:?} of {} bytes", p.display(), m.file_type(), m.len()));
        }
    }
    let stat = n as f64 / t.elapsed().as_secs_f64();

    let t = Instant::now();
    for p in &names {
        fs::remove_file(p).map_err(|e| format!("unlink {}: {e}", p.display()))?;
    }
    let unlink = n as f64 / t.elapsed().as_secs_f64();

    fs::remove_dir(&d).map_err(|e| format!("rmdir {}: {e}", d.display()))?;
    Ok((create, stat, unlink))
}

/// The median of each of the three figures over the rounds.
fn median3(rounds: &[(f64, f64, f64)]) -> (f64, f64, f64) {
    let median = |f: fn(&(f64, f64, f64)) -> f64| {
        let mut v: Vec<f64> = rounds.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    (median(|r| r.0), median(|r| r.1), median(|r| r.2))
}

fn timed_mib(mib: usize, f: impl FnOnce() -> Result<()>) -> Result<f64> {
    let t = Instant::now();
    f()?;
    Ok(mib as f64 / t.elapsed().as_secs_f64())
}

fn random_pool() -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut pool = Vec::with_capacity(POOL_BYTES + MIB);
    while pool.len() < POOL_BYTES + MIB {
        // xorshift64*
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        pool.extend_from_slice(&x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    pool
}

fn block_offset(i: usize) -> usize {
    (i * 65537) % POOL_BYTES
}

/// Block `i` of the test file: a slice of the pool, stamped with its index.
fn fill_block(buf: &mut [u8], i: usize, pool: &[u8]) {
    let off = block_offset(i);
    buf.copy_from_slice(&pool[off..off + MIB]);
    buf[..8].copy_from_slice(&(i as u64).to_le_bytes());
}

fn write_file(path: &Path, mib: usize, pool: &[u8]) -> Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .map_err(|e| format!("open {}: {e}", path.display()))?;
    let mut buf = vec![0u8; MIB];
    for i in 0..mib {
        fill_block(&mut buf, i, pool);
        f.write_all(&buf).map_err(|e| format!("write {} at {} MiB: {e}", path.display(), i))?;
    }
    f.sync_all().map_err(|e| format!("fsync {}: {e}", path.display()))?;
    close(f, path)
}

/// Closes explicitly, so that an error reported by close (e.g. a failed flush) is seen.
fn close(f: File, path: &Path) -> Result<()> {
    use std::os::fd::IntoRawFd;
    let fd = f.into_raw_fd();
    // SAFETY: `fd` was just taken out of the File, so it is open and closed exactly once here.
    if unsafe { libc::close(fd) } != 0 {
        return Err(format!("close {}: {}", path.display(), std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Reads the file in 1 MiB reads. Checks every block's index stamp and a 4 KiB sample against
/// what was written (cheap enough not to weigh on the timing); `verify_full` checks everything.
fn read_file(path: &Path, mib: usize, pool: &[u8]) -> Result<()> {
    let mut f = File::open(path).map_err(|e| format!("open {}: {e}", path.display()))?;
    let mut buf = vec![0u8; MIB];
    for i in 0..mib {
        f.read_exact(&mut buf).map_err(|e| format!("read {} at {} MiB: {e}", path.display(), i))?;
        let stamp = u64::from_le_bytes(buf[..8].try_into().expect("8 bytes"));
        let at = 8 + (i * 4096) % (MIB - 4096 - 8);
        let off = block_offset(i);
        if stamp != i as u64 || buf[at..at + 4096] != pool[off + at..off + at + 4096] {
            return Err(format!("{}: block {i} read back differs from what was written", path.display()));
        }
    }
    let mut extra = [0u8; 1];
    match f.read(&mut extra) {
        Ok(0) => Ok(()),
        Ok(_) => Err(format!("{}: longer than the {mib} MiB written", path.display())),
        Err(e) => Err(format!("read {} at its end: {e}", path.display())),
    }
}

fn verify_full(path: &Path, mib: usize, pool: &[u8]) -> Result<()> {
    let len = fs::metadata(path).map_err(|e| format!("stat {}: {e}", path.display()))?.len();
    if len != (mib * MIB) as u64 {
        return Err(format!("{} is {len} bytes, expected {}", path.display(), mib * MIB));
    }
    let mut f = File::open(path).map_err(|e| format!("open {}: {e}", path.display()))?;
    let mut buf = vec![0u8; MIB];
    let mut expected = vec![0u8; MIB];
    for i in 0..mib {
        f.read_exact(&mut buf).map_err(|e| format!("read {} at {} MiB: {e}", path.display(), i))?;
        fill_block(&mut expected, i, pool);
        if buf != expected {
            let first = buf.iter().zip(&expected).position(|(a, b)| a != b).unwrap_or(0);
            return Err(format!("{}: byte {} differs from what was written", path.display(), i * MIB + first));
        }
    }
    Ok(())
}

/// Copies `from` into `to` with 1 MiB reads and writes, then fsync and close (like `cp` + `sync`).
fn copy_into(from: &Path, to: &Path) -> Result<()> {
    let mut src = File::open(from).map_err(|e| format!("open {}: {e}", from.display()))?;
    let mut dst = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(to)
        .map_err(|e| format!("open {}: {e}", to.display()))?;
    let mut buf = vec![0u8; MIB];
    loop {
        let n = src.read(&mut buf).map_err(|e| format!("read {}: {e}", from.display()))?;
        if n == 0 {
            break;
        }
        dst.write_all(&buf[..n]).map_err(|e| format!("write {}: {e}", to.display()))?;
    }
    dst.sync_all().map_err(|e| format!("fsync {}: {e}", to.display()))?;
    close(dst, to)
}

fn drop_caches() -> std::io::Result<()> {
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() };
    fs::write("/proc/sys/vm/drop_caches", "3\n")
}

fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line[field.len()..].trim().trim_end_matches("kB").trim().parse().ok()
}

fn fmt_mib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

/// Samples a process's VmRSS every 50 ms in a thread; `stop` returns the largest sample (KiB).
struct RssSampler {
    stop: Arc<AtomicBool>,
    max_kib: Arc<AtomicU64>,
    thread: thread::JoinHandle<()>,
}

impl RssSampler {
    fn start(pid: u32) -> RssSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let max_kib = Arc::new(AtomicU64::new(0));
        let thread = {
            let (stop, max_kib) = (stop.clone(), max_kib.clone());
            thread::spawn(move || loop {
                if let Some(rss) = proc_status_kib(pid, "VmRSS:") {
                    max_kib.fetch_max(rss, Ordering::Relaxed);
                }
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                thread::sleep(RSS_SAMPLE_INTERVAL);
            })
        };
        RssSampler { stop, max_kib, thread }
    }

    fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
        self.max_kib.load(Ordering::Relaxed)
    }
}

// --- the mount ------------------------------------------------------------------------------------

/// A running `truckeefs mount`. Dropping it without `unmount` (an error path) lazily unmounts and
/// kills the daemon, so no mount is left behind.
struct Mount {
    child: Option<Child>,
    mountpoint: PathBuf,
    /// The FUSE connection number (the minor of the mount's device), for /sys/fs/fuse/connections.
    fuse_conn: Option<String>,
}

impl Mount {
    fn start(bin: &Path, data: &Path, cache: &Path, mnt: &Path, log: &Path) -> Result<Mount> {
        let log_file = File::create(log).map_err(|e| format!("create {}: {e}", log.display()))?;
        let log_err = log_file.try_clone().map_err(|e| e.to_string())?;
        let mut cmd = Command::new(bin);
        cmd.arg("mount").arg("--data-dir").arg(data).arg("--cache-dir").arg(cache);
        if let Ok(opts) = std::env::var("BENCH_MOUNT_OPTS") {
            if !opts.is_empty() {
                cmd.arg("-o").arg(opts);
            }
        }
        cmd.arg(mnt).stdin(Stdio::null()).stdout(log_file).stderr(log_err);
        let child = cmd.spawn().map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
        let mut mount = Mount { child: Some(child), mountpoint: mnt.to_path_buf(), fuse_conn: None };
        let deadline = Instant::now() + MOUNT_WAIT;
        loop {
            if let Some(entry) = mountinfo_entry(mnt) {
                mount.fuse_conn = entry;
                return Ok(mount);
            }
            if let Some(status) = mount.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                mount.child = None;
                let tail = fs::read_to_string(log).unwrap_or_default();
                return Err(format!("truckeefs exited with {status} before mounting; its log:\n{tail}"));
            }
            if Instant::now() > deadline {
                return Err(format!("{} did not appear in /proc/self/mountinfo within {:?}", mnt.display(), MOUNT_WAIT));
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// `fusermount3 -u`, then waits for the daemon to exit and returns its exit status.
    fn unmount(mut self) -> Result<ExitStatus> {
        let out = Command::new("fusermount3")
            .arg("-u")
            .arg(&self.mountpoint)
            .output()
            .map_err(|e| format!("cannot run fusermount3: {e}"))?;
        if !out.status.success() {
            return Err(format!("fusermount3 -u {} failed: {}", self.mountpoint.display(), String::from_utf8_lossy(&out.stderr).trim()));
        }
        let mut child = self.child.take().expect("unmount is called once");
        let deadline = Instant::now() + EXIT_WAIT;
        loop {
            match child.try_wait() {
                Ok(Some(status)) => return Ok(status),
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(100)),
                Ok(None) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(format!("truckeefs did not exit within {EXIT_WAIT:?} of the unmount"));
                }
                Err(e) => return Err(format!("waiting for truckeefs: {e}")),
            }
        }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            eprintln!("fs_bench: cleaning up the mount at {}", self.mountpoint.display());
            let _ = Command::new("fusermount3").arg("-u").arg("-z").arg(&self.mountpoint).status();
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `Some(fuse connection number)` when `mnt` is a mount point (per /proc/self/mountinfo).
fn mountinfo_entry(mnt: &Path) -> Option<Option<String>> {
    let escaped = mnt
        .to_str()?
        .replace('\\', "\\134")
        .replace(' ', "\\040")
        .replace('\t', "\\011")
        .replace('\n', "\\012");
    let info = fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines().rev().find_map(|line| {
        let fields: Vec<&str> = line.split(' ').collect();
        (fields.len() > 4 && fields[4] == escaped).then(|| fields[2].split(':').nth(1).map(str::to_string))
    })
}

/// Past the deadline, aborts the FUSE connection (which fails every pending request, so nothing
/// stays stuck), lazily unmounts and exits the process with an error.
struct Watchdog {
    armed: Arc<Mutex<bool>>,
}

impl Watchdog {
    fn start(limit: Duration, mountpoint: PathBuf, fuse_conn: Option<String>) -> Watchdog {
        let armed = Arc::new(Mutex::new(true));
        let flag = armed.clone();
        thread::spawn(move || {
            thread::sleep(limit);
            if !*flag.lock().unwrap_or_else(|e| e.into_inner()) {
                return;
            }
            eprintln!("fs_bench: FAILED: still running after {limit:?} (BENCH_TIMEOUT); aborting the mount");
            if let Some(conn) = fuse_conn {
                let _ = fs::write(format!("/sys/fs/fuse/connections/{conn}/abort"), "1");
            }
            let _ = Command::new("fusermount3").arg("-u").arg("-z").arg(&mountpoint).status();
            std::process::exit(1);
        });
        Watchdog { armed }
    }

    fn disarm(self) {
        *self.armed.lock().unwrap_or_else(|e| e.into_inner()) = false;
    }
}

// --- the table ------------------------------------------------------------------------------------

#[derive(Clone, Copy)]
enum Target {
    None,
    /// truckeefs / local at least this.
    RatioAtLeast(f64),
    /// The truckeefs figure below this.
    Below(f64),
}

struct Row {
    metric: String,
    local: Option<f64>,
    mount: f64,
    target: Target,
}

impl Row {
    fn both(metric: &str, local: f64, mount: f64, target: Target) -> Row {
        Row { metric: metric.to_string(), local: Some(local), mount, target }
    }
    fn mount_only(metric: &str, mount: f64, target: Target) -> Row {
        Row { metric: metric.to_string(), local: None, mount, target }
    }
}

fn fmt_num(x: f64) -> String {
    if x >= 100.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.1}")
    }
}

fn print_table(rows: &[Row], mib: usize, files: usize) {
    println!();
    println!("fs_bench results ({files} files, {mib} MiB); targets are goals, not assertions");
    let header = format!("{:<40} | {:>12} | {:>12} | {:>8} | {}", "metric", "local", "truckeefs", "ratio", "target");
    println!("{header}");
    println!("{}", "-".repeat(header.len() + 10));
    for r in rows {
        let ratio = r.local.filter(|l| *l > 0.0).map(|l| r.mount / l);
        let (target, met) = match r.target {
            Target::None => ("-".to_string(), None),
            Target::RatioAtLeast(t) => (format!(">= {t}x"), ratio.map(|x| x >= t)),
            Target::Below(t) => (format!("< {t}"), Some(r.mount < t)),
        };
        println!(
            "{:<40} | {:>12} | {:>12} | {:>8} | {}{}",
            r.metric,
            r.local.map(fmt_num).unwrap_or_else(|| "-".into()),
            fmt_num(r.mount),
            ratio.map(|x| format!("{x:.3}x")).unwrap_or_else(|| "-".into()),
            target,
            match met {
                Some(true) => "  met",
                Some(false) => "  MISSED",
                None => "",
            }
        );
    }
    println!();
}
