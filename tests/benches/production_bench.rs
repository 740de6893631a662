//! production_bench: a mount on MariaDB (metadata) and a Tahoe-LAFS grid (file data) against
//! `curl` on the same gateway, in one run. The servers are the test harness's private ones
//! (`tests/src/mariadb.rs`, `tests/src/tahoe_grid.rs`), started here.
//!
//! ```text
//! cargo build --release -p truckeefs
//! cargo bench -p truckeefs-tests --bench production_bench
//! BENCH_MIB=64 BENCH_FILES=500 cargo bench -p truckeefs-tests --bench production_bench   # smaller
//! ```
//!
//! Measures, printing figures and ratios (never failing on speed; the exit status is non-zero only
//! when something fails functionally):
//! - write `$BENCH_MIB` (default 256) MiB into the mount and fsync, against `curl -T` of as many
//!   other random bytes to `PUT /uri` on the gateway, `$BENCH_ROUNDS` rounds taking turns,
//!   medians compared (target >= 0.9x);
//! - cold sequential read of that file through a fresh mount (empty block cache), against `curl`
//!   of the same cap (the object the mount stored), `$BENCH_ROUNDS` (default 3) rounds taking
//!   turns, the kernel's caches dropped before each side, medians compared (target >= 1.0x).
//!   (The writes move bytes of their own: Tahoe's convergent CHK finishes an upload of bytes
//!   already in the grid early.)
//! - the first write of one byte into that file through a fresh mount, which copies the object
//!   into the staging area first, against curl's cold read (no target);
//! - create, stat and unlink of `$BENCH_FILES` (default 2000) empty files;
//! - the mount's peak resident memory while copying `$BENCH_COPY_MIB` (default 1024) MiB into it
//!   (target < 150 MiB).

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;
use truckeefs_tests::mariadb::MariaDb;
use truckeefs_tests::tahoe_grid::TahoeGrid;
use truckeefs_tests::{env_number, pseudo_random_bytes, Mount, Storage};

const MIB: usize = 1 << 20;

type Result<T> = std::result::Result<T, String>;

fn main() {
    if let Err(e) = run() {
        eprintln!("production_bench: FAILED: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let mib = env_number("BENCH_MIB", 256)? as usize;
    let files = env_number("BENCH_FILES", 2000)? as usize;
    let copy_mib = env_number("BENCH_COPY_MIB", 1024)? as usize;
    // The harness's Mount runs $TRUCKEEFS_BIN: the release build here.
    let bin = truckeefs_tests::release_bin()?;
    std::env::set_var("TRUCKEEFS_BIN", bin);
    let db = MariaDb::shared();
    let grid = TahoeGrid::shared();
    println!("production_bench: MariaDB on port {}, Tahoe gateway {}", db.port(), grid.url);
    let config_dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let config = config_dir.path().join("env.yaml");
    fs::write(
        &config,
        truckeefs_tests::production_yaml(grid, db, &db.unique_db_name("bench")),
    )
    .map_err(|e| e.to_string())?;
    let cfg = config.to_str().unwrap().to_string();
    let data = pseudo_random_bytes(7, mib * MIB);
    let scratch = tempfile::tempdir_in("/var/tmp").map_err(|e| e.to_string())?;
    // curl gets bytes of its own: Tahoe's CHK is convergent, and an upload of bytes already in
    // the grid finds their shares there and finishes early. Each side moves bytes the grid has
    // never seen.
    let local_copy = scratch.path().join("bench.dat");
    fs::write(&local_copy, pseudo_random_bytes(8, mib * MIB)).map_err(|e| e.to_string())?;

    // --- write + fsync, against curl -T -------------------------------------------------------
    // Rounds taking turns, each side with bytes the grid has never seen; the medians are
    // compared (one round is at the mercy of the gateway: its time to store 256 MiB varies by
    // half a second from one upload to the next). The first round's file is read back below.
    let rounds = env_number("BENCH_ROUNDS", 3)?.max(1) as usize;
    let store = Storage::new();
    let m = Mount::with_dirs_args(&store.data_dir, &store.cache_dir, &["-c", &cfg]);
    let (mut write_speeds, mut put_speeds) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let fresh;
        let (name, bytes) = match round {
            0 => ("big".to_string(), &data),
            r => {
                fresh = pseudo_random_bytes(100 + r as u64, mib * MIB);
                (format!("big-{r}"), &fresh)
            }
        };
        let t = Instant::now();
        let mut f = File::create(m.path(&name)).map_err(|e| e.to_string())?;
        for chunk in bytes.chunks(MIB) {
            f.write_all(chunk).map_err(|e| format!("write: {e}"))?;
        }
        f.sync_all().map_err(|e| format!("fsync: {e}"))?;
        drop(f);
        write_speeds.push(mib as f64 / t.elapsed().as_secs_f64());

        if round > 0 {
            fs::write(&local_copy, pseudo_random_bytes(200 + round as u64, mib * MIB)).map_err(|e| e.to_string())?;
        }
        let t = Instant::now();
        let put = curl(&["-sS", "-f", "-T", local_copy.to_str().unwrap(), &format!("{}/uri", grid.url)])?;
        put_speeds.push(mib as f64 / t.elapsed().as_secs_f64());
        if !String::from_utf8_lossy(&put).starts_with("URI:") {
            return Err("curl PUT: the gateway's answer is not a cap".into());
        }
        println!(
            "  write {mib} MiB + fsync: truckeefs {:.1} MiB/s, curl -T {:.1} MiB/s",
            write_speeds.last().unwrap(),
            put_speeds.last().unwrap()
        );
    }
    let (w_mount, w_curl) = (median(&mut write_speeds), median(&mut put_speeds));
    let ino = fs::metadata(m.path("big")).map_err(|e| e.to_string())?.ino();

    // --- metadata --------------------------------------------------------------------------
    let (create, stat, unlink) = metadata_ops(&m.path("meta"), files)?;
    println!("  metadata ({files} files): create {create:.0}/s, stat {stat:.0}/s, unlink {unlink:.0}/s");
    m.unmount_ok();

    // --- cold read, against curl of the same object --------------------------------------------
    // Rounds taking turns, each side after the kernel's caches were dropped (the storage node's
    // share files too: neither side reads them from memory), the mount with an empty block
    // cache; the medians are compared. Both sides read one cap: the object the mount stored for
    // the file (FLAT links it as its inode number).
    let file_cap = object_cap(grid, &config, ino)?;
    let (mut mount_speeds, mut curl_speeds) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let fresh_cache = tempfile::tempdir().map_err(|e| e.to_string())?;
        let m = Mount::with_dirs_args(&store.data_dir, fresh_cache.path(), &["-c", &cfg]);
        let _ = fs::write("/proc/sys/vm/drop_caches", "3");
        let cpu0 = (cpu(Some(m.pid())), grid_cpu(grid));
        let t = Instant::now();
        let mut f = File::open(m.path("big")).map_err(|e| e.to_string())?;
        let mut buf = vec![0u8; MIB];
        let mut pos = 0;
        loop {
            let n = f.read(&mut buf).map_err(|e| format!("read: {e}"))?;
            if n == 0 {
                break;
            }
            if buf[..n] != data[pos..pos + n] {
                return Err(format!("wrong bytes read back at offset {pos}"));
            }
            pos += n;
        }
        mount_speeds.push(mib as f64 / t.elapsed().as_secs_f64());
        drop(f);
        let mount_cpu = (cpu(Some(m.pid())) - cpu0.0, grid_cpu(grid) - cpu0.1);
        if pos != data.len() {
            return Err(format!("read {pos} bytes of {}", data.len()));
        }
        m.unmount_ok();
        let _ = fs::write("/proc/sys/vm/drop_caches", "3");
        let grid0 = grid_cpu(grid);
        let t = Instant::now();
        let body = curl(&["-sS", "-f", &format!("{}/uri/{}", grid.url, file_cap)])?;
        curl_speeds.push(mib as f64 / t.elapsed().as_secs_f64());
        let curl_grid_cpu = grid_cpu(grid) - grid0;
        if body != data {
            return Err("the object in the grid holds other bytes than were written".into());
        }
        println!(
            "  cold read {mib} MiB: truckeefs {:.1} MiB/s, curl {:.1} MiB/s (CPU seconds: mount {:.2}, gateway and storage node {:.2} for the mount, {:.2} for curl)",
            mount_speeds.last().unwrap(),
            curl_speeds.last().unwrap(),
            mount_cpu.0,
            mount_cpu.1,
            curl_grid_cpu,
        );
    }
    let (r_mount, r_curl) = (median(&mut mount_speeds), median(&mut curl_speeds));

    // --- copy back: the first write into the stored file, in a fresh mount ------------------
    // The mount copies the object into its staging area before the write lands (a cold read
    // into a file); compared with curl's cold reads above.
    let back_cache = tempfile::tempdir().map_err(|e| e.to_string())?;
    let m = Mount::with_dirs_args(&store.data_dir, back_cache.path(), &["-c", &cfg]);
    let _ = fs::write("/proc/sys/vm/drop_caches", "3");
    let t = Instant::now();
    let back = {
        let f = OpenOptions::new().write(true).open(m.path("big")).map_err(|e| e.to_string())?;
        f.write_all_at(&[!data[0]], 0).map_err(|e| format!("write into the stored file: {e}"))?;
        let back = mib as f64 / t.elapsed().as_secs_f64();
        println!("  first write into the stored {mib} MiB file, fresh mount (copied back first): {back:.1} MiB/s");
        f.sync_all().map_err(|e| format!("fsync: {e}"))?;
        back
    };
    let mut got = vec![0u8; 2];
    File::open(m.path("big")).and_then(|f| f.read_exact_at(&mut got, 0)).map_err(|e| e.to_string())?;
    if got != [!data[0], data[1]] {
        return Err("the write into the stored file did not keep the rest".into());
    }
    m.unmount_ok();

    // --- memory while copying ---------------------------------------------------------------
    let copy_cache = tempfile::tempdir().map_err(|e| e.to_string())?;
    let m = Mount::with_dirs_args(&store.data_dir, copy_cache.path(), &["-c", &cfg]);
    let mut buf = vec![0u8; MIB];
    let copy_src = scratch.path().join("copy.dat");
    {
        let mut out = File::create(&copy_src).map_err(|e| e.to_string())?;
        for i in 0..copy_mib {
            out.write_all(&data[(i % mib) * MIB..(i % mib + 1) * MIB]).map_err(|e| e.to_string())?;
        }
    }
    let pid = m.pid();
    let t = Instant::now();
    let mut peak = 0u64;
    {
        let mut input = File::open(&copy_src).map_err(|e| e.to_string())?;
        let mut out = OpenOptions::new().write(true).create(true).truncate(true).open(m.path("copy")).map_err(|e| e.to_string())?;
        loop {
            let n = input.read(&mut buf).map_err(|e| e.to_string())?;
            if n == 0 {
                break;
            }
            out.write_all(&buf[..n]).map_err(|e| format!("copy: {e}"))?;
            peak = peak.max(rss_kib(pid));
        }
        out.sync_all().map_err(|e| format!("copy fsync: {e}"))?;
    }
    let copy_speed = copy_mib as f64 / t.elapsed().as_secs_f64();
    println!("  copy {copy_mib} MiB in: {copy_speed:.1} MiB/s, daemon peak RSS {} MiB", peak / 1024);
    m.unmount_ok();

    println!();
    println!("| metric | truckeefs | curl | ratio | target |");
    println!("|---|---|---|---|---|");
    println!(
        "| write {mib} MiB + fsync, median of {rounds} (MiB/s) | {w_mount:.1} | {w_curl:.1} | {:.2}x | >= 0.9x |",
        w_mount / w_curl
    );
    println!(
        "| cold read {mib} MiB, median of {rounds} (MiB/s) | {r_mount:.1} | {r_curl:.1} | {:.2}x | >= 1.0x |",
        r_mount / r_curl
    );
    println!(
        "| first write into the stored {mib} MiB file, fresh mount (MiB/s copied back) | {back:.1} | {r_curl:.1} (cold read) | {:.2}x | |",
        back / r_curl
    );
    println!("| create (ops/s, MariaDB) | {create:.0} | | | |");
    println!("| stat (ops/s, MariaDB) | {stat:.0} | | | |");
    println!("| unlink (ops/s, MariaDB) | {unlink:.0} | | | |");
    println!("| daemon peak RSS copying {copy_mib} MiB (MiB) | {} | | | < 150 |", peak / 1024);
    Ok(())
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn curl(args: &[&str]) -> Result<Vec<u8>> {
    let out = Command::new("curl").args(args).output().map_err(|e| format!("curl: {e}"))?;
    if !out.status.success() {
        return Err(format!("curl failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(out.stdout)
}

/// The cap FLAT linked as `<ino>` under the rootcap.
fn object_cap(grid: &TahoeGrid, config: &Path, ino: u64) -> Result<String> {
    let text = fs::read_to_string(config).map_err(|e| e.to_string())?;
    let rootcap = text
        .lines()
        .find_map(|l| l.strip_prefix("rootcap: "))
        .ok_or("no rootcap in the config")?
        .to_string();
    let json = curl(&["-sS", "-f", &format!("{}/uri/{}/{}?t=json", grid.url, rootcap, ino)])?;
    let v: serde_json::Value = serde_json::from_slice(&json).map_err(|e| format!("t=json: {e}"))?;
    v[1]["ro_uri"].as_str().map(str::to_string).ok_or_else(|| "t=json: no ro_uri".to_string())
}

fn metadata_ops(dir: &Path, n: usize) -> Result<(f64, f64, f64)> {
    fs::create_dir(dir).map_err(|e| e.to_string())?;
    let names: Vec<PathBuf> = (0..n).map(|i| dir.join(format!("f{i}"))).collect();
    let t = Instant::now();
    for p in &names {
        File::create(p).map_err(|e| format!("create: {e}"))?;
    }
    let create = n as f64 / t.elapsed().as_secs_f64();
    let t = Instant::now();
    for p in &names {
        fs::symlink_metadata(p).map_err(|e| format!("stat: {e}"))?;
    }
    let stat = n as f64 / t.elapsed().as_secs_f64();
    let t = Instant::now();
    for p in &names {
        fs::remove_file(p).map_err(|e| format!("unlink: {e}"))?;
    }
    let unlink = n as f64 / t.elapsed().as_secs_f64();
    Ok((create, stat, unlink))
}

fn cpu(pid: Option<u32>) -> f64 {
    pid.map_or(0.0, truckeefs_tests::cpu_seconds)
}

/// CPU seconds of the grid's gateway and storage node so far.
fn grid_cpu(grid: &TahoeGrid) -> f64 {
    cpu(grid.pid("gateway")) + cpu(grid.pid("storage"))
}

fn rss_kib(pid: u32) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("VmRSS:").map(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())))
        .flatten()
        .unwrap_or(0)
}
