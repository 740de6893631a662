//! ays_bench: an aysfs mount reading a tree through one grid cache, against `curl` fetching the
//! same blobs from that cache, and a second (local) read against the local disk, in one run.
//!
//! Run (as root, so that the kernel page cache can be dropped between the runs):
//!
//! ```text
//! cargo build --release -p truckeefs
//! cargo bench -p truckeefs-tests --bench ays_bench
//! BENCH_MIB=256 cargo bench -p truckeefs-tests --bench ays_bench     # smaller
//! ```
//!
//! It uses the release binary (`target/release/truckeefs`, or `$TRUCKEEFS_BIN`) and `curl`, and
//! works under `$BENCH_DIR` (default /var/tmp):
//!
//! 1. writes a tree of `$BENCH_MIB` (default 1024) MiB of distinct pseudo-random content in
//!    files of mixed sizes (by bytes: 1/16 in 4-64 KiB files, 3/16 in 256 KiB-2 MiB files,
//!    1/4 in 16 MiB files, 1/2 in 128 MiB files; about 100 files per directory);
//! 2. starts one `truckeefs ays serve` (the grid cache, embedded store, quiet) and publishes the
//!    tree into it (`ays publish --stor {cache}/stor`), so the cache holds every blob;
//! 3. **curl**: drops the kernel page cache, then one `curl` process fetches every blob of the
//!    tree in the order the mount reads them (`GET /{domain}/{md5}?fetch=0`, one keep-alive
//!    connection) into files on the same disk; MiB/s;
//! 4. **cold read**: mounts the tree (`truckeefs ays mount`: the grid cache, then its own store
//!    routes as the mount's `ays.stor`; an empty blob cache on the same disk), waits for the tree, drops the page cache, then walks
//!    the mount (sorted `readdir`) reading every file whole in 1 MiB reads; MiB/s and the ratio to
//!    curl (target >= 0.8x). Then checks every file byte for byte against the source (untimed);
//! 5. **second read**: drops the page cache and reads the mount again (now served by the blob
//!    cache), then the source tree on the local disk the same way; MiB/s and the ratio.
//!
//! It prints a table and asserts nothing about speed: the exit status is non-zero only when
//! something fails functionally (server, publish, mount, curl, a wrong byte). Knobs:
//! `$BENCH_MIB`, `$BENCH_DIR`, `$BENCH_KEEP=1` (keep the tree and caches for another run),
//! `$BENCH_RUST_LOG` (the mount's `RUST_LOG`, default `warn`).

use md5::Digest;
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const READ_BUF: usize = 1 << 20;
const FILES_PER_DIR: usize = 100;
const START_WAIT: Duration = Duration::from_secs(30);
const DOMAIN: &str = "bench";
const AYS_ID: &str = "bench|tree(1)";

type Result<T> = std::result::Result<T, String>;

fn main() {
    match run() {
        Ok(()) => {}
        Err(e) => {
            eprintln!("ays_bench: FAILED: {e}");
            std::process::exit(1);
        }
    }
}

/// One file of the tree: its path relative to the root, size and md5 (hex).
struct FileSpec {
    rel: String,
    size: u64,
    md5: String,
}

fn run() -> Result<()> {
    let bin = truckeefs_tests::release_bin()?;
    let mib = truckeefs_tests::env_number("BENCH_MIB", 1024)?.max(16);
    let base = PathBuf::from(std::env::var("BENCH_DIR").unwrap_or_else(|_| "/var/tmp".into()));
    let keep = std::env::var("BENCH_KEEP").is_ok_and(|v| v == "1");
    let work = base.join(format!("ays-bench-{mib}"));
    if !keep {
        let _ = fs::remove_dir_all(&work);
    }
    fs::create_dir_all(&work).map_err(|e| format!("{}: {e}", work.display()))?;
    let src = work.join("src");
    println!("ays_bench: {mib} MiB tree under {}", work.display());

    let t = Instant::now();
    let files = make_tree(&src, mib * MIB)?;
    let total: u64 = files.iter().map(|f| f.size).sum();
    println!(
        "tree: {} files, {} MiB, written and hashed in {:.1} s",
        files.len(),
        total / MIB,
        t.elapsed().as_secs_f64()
    );

    // The grid cache, holding every blob.
    let cache_dir = work.join("cache-server");
    let _ = fs::remove_dir_all(&cache_dir);
    let server = Server::start(&bin, &cache_dir, &work.join("server.log"))?;
    let t = Instant::now();
    let out = Command::new(&bin)
        .args(["ays", "publish", "--stor", &format!("http://{}/stor", server.addr), "--ays-id", AYS_ID, "--domain", DOMAIN])
        .arg(&src)
        .output()
        .map_err(|e| format!("ays publish: {e}"))?;
    if !out.status.success() {
        return Err(format!("ays publish: {}", String::from_utf8_lossy(&out.stderr)));
    }
    println!("published into the grid cache in {:.1} s", t.elapsed().as_secs_f64());

    // The mount reads in sorted walk order; curl fetches in the same order.
    let order = walk_order(&files);

    // curl from the cache.
    let dl = work.join("curl");
    let _ = fs::remove_dir_all(&dl);
    fs::create_dir_all(&dl).map_err(|e| e.to_string())?;
    let curl_cfg = work.join("curl.cfg");
    let mut cfg = String::new();
    for (i, f) in order.iter().enumerate() {
        cfg.push_str(&format!("url = \"http://{}/{DOMAIN}/{}?fetch=0\"\noutput = \"{}/{i}\"\n", server.addr, f.md5, dl.display()));
    }
    fs::write(&curl_cfg, cfg).map_err(|e| e.to_string())?;
    drop_caches()?;
    let scpu0 = truckeefs_tests::cpu_seconds(server.child.id());
    let t = Instant::now();
    let st = Command::new("curl")
        .args(["-s", "-S", "-f", "-K"])
        .arg(&curl_cfg)
        .status()
        .map_err(|e| format!("curl: {e} (is curl installed?)"))?;
    let curl_s = t.elapsed().as_secs_f64();
    let curl_scpu = truckeefs_tests::cpu_seconds(server.child.id()) - scpu0;
    if !st.success() {
        return Err(format!("curl: {st}"));
    }
    for (i, f) in order.iter().enumerate() {
        let got = fs::metadata(dl.join(i.to_string())).map_err(|e| format!("curl output {i}: {e}"))?.len();
        if got != f.size {
            return Err(format!("curl fetched {got} bytes of {} (expected {})", f.rel, f.size));
        }
    }
    // For comparison with the mount's small files: curl of the blobs under 1 MiB alone.
    let small_cfg = work.join("curl-small.cfg");
    let mut cfg = String::new();
    for (i, f) in order.iter().enumerate().filter(|(_, f)| f.size < MIB) {
        cfg.push_str(&format!("url = \"http://{}/{DOMAIN}/{}?fetch=0\"\noutput = \"{}/small-{i}\"\n", server.addr, f.md5, dl.display()));
    }
    fs::write(&small_cfg, cfg).map_err(|e| e.to_string())?;
    drop_caches()?;
    let t = Instant::now();
    let st = Command::new("curl").args(["-s", "-S", "-f", "-K"]).arg(&small_cfg).status().map_err(|e| format!("curl: {e}"))?;
    let curl_small_s = t.elapsed().as_secs_f64();
    if !st.success() {
        return Err(format!("curl: {st}"));
    }
    let _ = fs::remove_dir_all(&dl);

    // The mount.
    let client_dir = work.join("client");
    let _ = fs::remove_dir_all(&client_dir);
    fs::create_dir_all(&client_dir).map_err(|e| e.to_string())?;
    let mnt = client_dir.join("mnt");
    let config = format!(
        "[main]\nid = \"bench\"\ncache_dir = \"{cache}\"\ncache_size_mb = {size}\n\n[[cache.grid]]\nurl = \"http://{addr}\"\n\n\
         [[ays.stor]]\nname = \"origin\"\nurl = \"http://{addr}/stor\"\n\n\
         [[mount_files]]\nname = \"bench\"\npath = \"{mnt}\"\n\"ays.id\" = \"{AYS_ID}\"\n\"stor.name\" = \"origin\"\n\
         dedupe_domain = \"{DOMAIN}\"\n",
        cache = client_dir.join("blobs").display(),
        size = 2 * mib + 64,
        addr = server.addr,
        mnt = mnt.display(),
    );
    fs::write(client_dir.join("client.toml"), config).map_err(|e| e.to_string())?;
    let mut mount = Mount::start(&bin, &client_dir, &mnt)?;
    // The tree is in once the root can be listed.
    fs::read_dir(&mnt).map_err(|e| format!("{}: {e}", mnt.display()))?;
    drop_caches()?;
    let (cpu0, scpu0) = (mount.cpu_s(), truckeefs_tests::cpu_seconds(server.child.id()));
    let t = Instant::now();
    let cold = read_tree(&mnt)?;
    let cold_s = t.elapsed().as_secs_f64();
    let n = cold.bytes;
    let (cold_cpu, cold_scpu) = (mount.cpu_s() - cpu0, truckeefs_tests::cpu_seconds(server.child.id()) - scpu0);
    if n != total {
        return Err(format!("the mount gave {n} bytes, the tree has {total}"));
    }
    verify(&mnt, &src, &files)?;

    drop_caches()?;
    let cpu0 = mount.cpu_s();
    let t = Instant::now();
    let second = read_tree(&mnt)?;
    let local_mount_s = t.elapsed().as_secs_f64();
    let second_cpu = mount.cpu_s() - cpu0;
    drop_caches()?;
    let t = Instant::now();
    let disk = read_tree(&src)?;
    let local_disk_s = t.elapsed().as_secs_f64();
    let rss = mount.rss_kib();
    mount.stop()?;
    drop(server);

    let rate = |s: f64| total as f64 / MIB as f64 / s;
    println!();
    println!("| metric | baseline | aysfs mount | ratio | target |");
    println!("| --- | ---: | ---: | ---: | --- |");
    println!(
        "| cold read through one grid cache vs `curl` of the same blobs from it | {:.0} MiB/s | {:.0} MiB/s | {:.2}x | >= 0.8x |",
        rate(curl_s),
        rate(cold_s),
        curl_s / cold_s
    );
    println!(
        "| second read (blob cache), page cache dropped, vs the local disk | {:.0} MiB/s | {:.0} MiB/s | {:.2}x | |",
        rate(local_disk_s),
        rate(local_mount_s),
        local_disk_s / local_mount_s
    );
    if let Some(kib) = rss {
        println!("| mount process resident memory at the end | | {:.1} MiB | | |", kib as f64 / 1024.0);
    }
    println!();
    println!(
        "tree: {} files, {} MiB; times: curl {curl_s:.2} s, cold {cold_s:.2} s, second {local_mount_s:.2} s, local disk {local_disk_s:.2} s",
        files.len(),
        total / MIB
    );
    println!("curl: the {} blobs under 1 MiB alone took {curl_small_s:.2} s", cold.small_files);
    for (what, w) in [("cold read", &cold), ("second read", &second), ("local disk", &disk)] {
        if w.small_files > 0 {
            println!(
                "{what}: the {} files under 1 MiB took {:.2} s ({:.2} ms each, open to close)",
                w.small_files,
                w.small_s,
                w.small_s * 1000.0 / w.small_files as f64
            );
        }
    }
    println!(
        "CPU seconds: cache server {curl_scpu:.2} (curl), {cold_scpu:.2} (cold read); mount process {cold_cpu:.2} (cold read), {second_cpu:.2} (second read)"
    );
    if !keep {
        let _ = fs::remove_dir_all(&work);
    }
    Ok(())
}

/// Sizes for `total` bytes: 1/16 small, 3/16 medium, 1/4 in 16 MiB files, the rest in 128 MiB
/// files (smaller when the total is small).
fn sizes(total: u64, rng: &mut Rng) -> Vec<u64> {
    let mut out = Vec::new();
    let mut fill = |budget: u64, mut pick: Box<dyn FnMut(&mut Rng) -> u64>, rng: &mut Rng| {
        let mut left = budget;
        while left > 0 {
            let s = pick(rng).min(left);
            out.push(s);
            left -= s;
        }
    };
    let big = (128 * MIB).min(total / 8).max(MIB);
    let large = (16 * MIB).min(total / 32).max(MIB);
    fill(total / 16, Box::new(|r| 4 * KIB + r.below(60 * KIB)), rng);
    fill(total * 3 / 16, Box::new(|r| 256 * KIB + r.below(1792 * KIB)), rng);
    fill(total / 4, Box::new(move |_| large), rng);
    let rest = total - total / 16 - total * 3 / 16 - total / 4;
    fill(rest, Box::new(move |_| big), rng);
    // Shuffle so every directory mixes sizes.
    for i in (1..out.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        out.swap(i, j);
    }
    out
}

/// xorshift64*: fast, deterministic content.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Writes the tree (or reuses one of the same size) and returns its files with their md5.
fn make_tree(src: &Path, total: u64) -> Result<Vec<FileSpec>> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let sizes = sizes(total, &mut rng);
    let mut files = Vec::new();
    let mut buf = vec![0u8; READ_BUF];
    for (i, size) in sizes.iter().enumerate() {
        let rel = format!("d{:03}/f{:05}", i / FILES_PER_DIR, i);
        let path = src.join(&rel);
        let reuse = fs::metadata(&path).is_ok_and(|m| m.len() == *size);
        let md5 = if reuse {
            md5_file(&path)?
        } else {
            if let Some(p) = path.parent() {
                fs::create_dir_all(p).map_err(|e| format!("{}: {e}", p.display()))?;
            }
            let mut f = File::create(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            let mut ctx = md5::Md5::new();
            let mut left = *size;
            let mut content = Rng(i as u64 * 0x1000_0000_01b3 + 1);
            while left > 0 {
                let n = left.min(READ_BUF as u64) as usize;
                for c in buf[..n].chunks_mut(8) {
                    let v = content.next().to_le_bytes();
                    c.copy_from_slice(&v[..c.len()]);
                }
                f.write_all(&buf[..n]).map_err(|e| format!("{}: {e}", path.display()))?;
                ctx.update(&buf[..n]);
                left -= n as u64;
            }
            ctx.finalize().iter().map(|b| format!("{b:02x}")).collect()
        };
        files.push(FileSpec { rel, size: *size, md5 });
    }
    Ok(files)
}

fn md5_file(path: &Path) -> Result<String> {
    let out = Command::new("md5sum").arg(path).output().map_err(|e| format!("md5sum: {e}"))?;
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .map(str::to_string)
        .ok_or_else(|| format!("md5sum {}: no output", path.display()))
}

/// The files in the order a sorted walk of the tree reads them.
fn walk_order(files: &[FileSpec]) -> Vec<&FileSpec> {
    let by: BTreeMap<&str, &FileSpec> = files.iter().map(|f| (f.rel.as_str(), f)).collect();
    by.into_values().collect()
}

/// What a walk of a tree read, and how long its files under 1 MiB took (open to close).
struct Walk {
    bytes: u64,
    small_files: u64,
    small_s: f64,
}

/// Walks `root` (sorted), reading every file whole in 1 MiB reads.
fn read_tree(root: &Path) -> Result<Walk> {
    let mut buf = vec![0u8; READ_BUF];
    let mut total = 0u64;
    let (mut small_files, mut small_s) = (0u64, 0f64);
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let mut entries: Vec<_> = fs::read_dir(&dir)
            .map_err(|e| format!("{}: {e}", dir.display()))?
            .map(|e| e.map_err(|e| format!("{}: {e}", dir.display())))
            .collect::<Result<_>>()?;
        entries.sort_by_key(|e| e.file_name());
        let mut subdirs = Vec::new();
        for e in entries {
            let p = e.path();
            let ft = e.file_type().map_err(|e| format!("{}: {e}", p.display()))?;
            if ft.is_dir() {
                subdirs.push(p);
                continue;
            }
            let t = Instant::now();
            let mut f = File::open(&p).map_err(|e| format!("{}: {e}", p.display()))?;
            let mut len = 0u64;
            loop {
                let n = f.read(&mut buf).map_err(|e| format!("{}: {e}", p.display()))?;
                if n == 0 {
                    break;
                }
                len += n as u64;
            }
            drop(f);
            total += len;
            if len < MIB {
                small_files += 1;
                small_s += t.elapsed().as_secs_f64();
            }
        }
        stack.extend(subdirs.into_iter().rev());
    }
    Ok(Walk { bytes: total, small_files, small_s })
}

/// Every file of the mount equals its source, byte for byte.
fn verify(mnt: &Path, src: &Path, files: &[FileSpec]) -> Result<()> {
    let mut a = vec![0u8; READ_BUF];
    let mut b = vec![0u8; READ_BUF];
    for f in files {
        let (pa, pb) = (mnt.join(&f.rel), src.join(&f.rel));
        let mut fa = File::open(&pa).map_err(|e| format!("{}: {e}", pa.display()))?;
        let mut fb = File::open(&pb).map_err(|e| format!("{}: {e}", pb.display()))?;
        let mut off = 0u64;
        loop {
            let n = read_full(&mut fa, &mut a).map_err(|e| format!("{}: {e}", pa.display()))?;
            let m = read_full(&mut fb, &mut b).map_err(|e| format!("{}: {e}", pb.display()))?;
            if a[..n] != b[..m] {
                return Err(format!("{}: differs from the source near byte {off}", pa.display()));
            }
            if n == 0 {
                break;
            }
            off += n as u64;
        }
    }
    println!("verified: every file of the mount equals its source");
    Ok(())
}

fn read_full(f: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        let n = f.read(&mut buf[got..])?;
        if n == 0 {
            break;
        }
        got += n;
    }
    Ok(got)
}

fn drop_caches() -> Result<()> {
    // SAFETY: sync(2) has no preconditions.
    unsafe { libc::sync() };
    fs::write("/proc/sys/vm/drop_caches", "3").map_err(|e| format!("cannot drop the page cache (run as root): {e}"))
}

/// A quiet `truckeefs ays serve` on a free loopback port.
struct Server {
    child: Child,
    addr: String,
}

impl Server {
    fn start(bin: &Path, data: &Path, log: &Path) -> Result<Server> {
        let mut child = Command::new(bin)
            .args(["ays", "serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(File::create(log).map_err(|e| e.to_string())?)
            .spawn()
            .map_err(|e| format!("ays serve: {e}"))?;
        let stdout = child.stdout.take().ok_or("ays serve: no stdout")?;
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = tx.send(line);
            }
            for _ in lines {}
        });
        let line = match rx.recv_timeout(START_WAIT) {
            Ok(l) => l,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("ays serve did not start; see {}", log.display()));
            }
        };
        let addr = line.strip_prefix("listening on ").ok_or_else(|| format!("ays serve said {line:?}"))?.to_string();
        Ok(Server { child, addr })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

/// A `truckeefs ays mount -c client.toml` process.
struct Mount {
    child: Option<Child>,
    mnt: PathBuf,
}

impl Mount {
    fn start(bin: &Path, dir: &Path, mnt: &Path) -> Result<Mount> {
        let log = File::create(dir.join("client.log")).map_err(|e| e.to_string())?;
        let child = Command::new(bin)
            .args(["ays", "mount", "-c"])
            .arg(dir.join("client.toml"))
            .env("RUST_LOG", std::env::var("BENCH_RUST_LOG").unwrap_or_else(|_| "warn".into()))
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("ays mount: {e}"))?;
        let mut m = Mount { child: Some(child), mnt: mnt.to_path_buf() };
        let deadline = Instant::now() + START_WAIT;
        while !is_mounted(mnt) {
            if let Some(Ok(Some(st))) = m.child.as_mut().map(|c| c.try_wait()) {
                return Err(format!("ays mount exited ({st}); see {}", dir.join("client.log").display()));
            }
            if Instant::now() > deadline {
                return Err(format!("{} not mounted after {START_WAIT:?}", mnt.display()));
            }
            thread::sleep(Duration::from_millis(20));
        }
        Ok(m)
    }

    fn cpu_s(&self) -> f64 {
        self.child.as_ref().map_or(0.0, |c| truckeefs_tests::cpu_seconds(c.id()))
    }

    fn rss_kib(&self) -> Option<u64> {
        let pid = self.child.as_ref()?.id();
        let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }

    fn stop(&mut self) -> Result<()> {
        let Some(mut c) = self.child.take() else { return Ok(()) };
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        let st = c.wait().map_err(|e| e.to_string())?;
        if !st.success() {
            return Err(format!("ays mount exited with {st}"));
        }
        Ok(())
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if self.child.is_some() {
            let _ = self.stop();
            let _ = Command::new("fusermount3").arg("-uz").arg(&self.mnt).stderr(Stdio::null()).status();
        }
    }
}

fn is_mounted(p: &Path) -> bool {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else { return false };
    let want = p.display().to_string();
    info.lines().any(|l| l.split(' ').nth(4) == Some(want.as_str()))
}
