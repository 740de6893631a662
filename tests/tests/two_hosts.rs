//! Two mounts of one filesystem, as two hosts: separate data and cache directories, the same
//! MariaDB (metadata), Tahoe-LAFS grid (file data) and Redis (coordination), all private servers
//! started by the harness.

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use truckeefs_tests::ays::RedisServer;
use truckeefs_tests::commit_cutter::{CommitCutter, Cut};
use truckeefs_tests::mariadb::MariaDb;
use truckeefs_tests::tahoe_grid::TahoeGrid;
use truckeefs_tests::*;

struct Hosts {
    a: Mount,
    b: Mount,
    _a_dirs: Arc<Storage>,
    _b_dirs: Arc<Storage>,
    redis: RedisServer,
    /// The MariaDB database they share, and the configuration file.
    db: String,
    cfg: String,
    _config: tempfile::TempDir,
}

fn two_hosts() -> Hosts {
    two_hosts_a_through(None)
}

/// Two hosts; A reaches MariaDB through `a_sql_port` on 127.0.0.1 (a proxy in front of it), if
/// given.
fn two_hosts_a_through(a_sql_port: Option<u16>) -> Hosts {
    let db = MariaDb::shared();
    let grid = TahoeGrid::shared();
    let redis = RedisServer::start();
    let config = tempfile::tempdir().unwrap();
    let path = config.path().join("env.yaml");
    let db_name = db.unique_db_name("hosts");
    let yaml = format!("{}redis_host: 127.0.0.1:{}\nredis_prefix: 'test:'\n", production_yaml(grid, db, &db_name), redis.port);
    fs::write(&path, &yaml).unwrap();
    let cfg = path.to_str().unwrap().to_string();
    let a_cfg = match a_sql_port {
        None => cfg.clone(),
        Some(port) => {
            let direct = format!("sql_host: {}:{}\n", db.host(), db.port());
            assert!(yaml.contains(&direct), "{yaml}");
            let a_path = config.path().join("a.yaml");
            fs::write(&a_path, yaml.replace(&direct, &format!("sql_host: 127.0.0.1:{port}\n"))).unwrap();
            a_path.to_str().unwrap().to_string()
        }
    };
    let (a_dirs, b_dirs) = (Storage::new(), Storage::new());
    let a = Mount::with_dirs_args(&a_dirs.data_dir, &a_dirs.cache_dir, &["-c", &a_cfg]);
    // The first mount creates the tables; the second finds them.
    let b = Mount::with_dirs_args(&b_dirs.data_dir, &b_dirs.cache_dir, &["-c", &cfg]);
    Hosts { a, b, _a_dirs: a_dirs, _b_dirs: b_dirs, redis, db: db_name, cfg, _config: config }
}

/// Polls `f` until it holds: another host's change arrives through the coordination server,
/// a moment after the call that made it returned.
fn eventually(what: &str, f: impl FnMut() -> bool) {
    eventually_within(what, Duration::from_secs(10), f)
}

fn eventually_within(what: &str, within: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !f() {
        assert!(Instant::now() < deadline, "{what}: not seen within {within:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn read(p: &Path) -> Vec<u8> {
    let mut v = Vec::new();
    fs::File::open(p).unwrap().read_to_end(&mut v).unwrap();
    v
}

#[test]
fn a_file_closed_on_one_host_is_read_whole_on_the_other() {
    let h = two_hosts();
    let data = pseudo_random_bytes(1, 300_000);
    fs::write(h.a.path("f"), &data).unwrap();
    assert_bytes_eq(&read(&h.b.path("f")), &data, "first version read on B");

    // B has it cached (kernel pages, attributes); A writes a new version of another size.
    let v2 = pseudo_random_bytes(2, 123_456);
    let mut f = fs::OpenOptions::new().write(true).truncate(true).open(h.a.path("f")).unwrap();
    f.write_all(&v2).unwrap();
    drop(f); // close: answered once the new version is committed
    assert_bytes_eq(&read(&h.b.path("f")), &v2, "second version read on B after A's close");
    eventually("the new size on B", || fs::metadata(h.b.path("f")).unwrap().len() == v2.len() as u64);

    h.a.unmount_ok();
    h.b.unmount_ok();
}

/// Reads `p` to its end in 1 MiB reads without asking its size first (as `dd bs=1M` does).
fn read_without_stat(p: &Path) -> Vec<u8> {
    let mut f = fs::File::open(p).unwrap();
    let (mut got, mut buf) = (Vec::new(), vec![0u8; 1 << 20]);
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            return got;
        }
        got.extend_from_slice(&buf[..n]);
    }
}

/// An open right after the other host closed a shorter version reads that version, not the old
/// size with zeros past the new end: the kernel holds the attributes this host last gave it, so
/// the open drops them before it returns (`Reply::Opened::stale_attrs`), whether or not the
/// other host's invalidation has arrived, and the first read fetches them again
/// (`FUSE_AUTO_INVAL_DATA`). In rounds: the race is with that invalidation.
#[test]
fn an_open_right_after_the_other_host_shrank_a_file_reads_its_new_size() {
    let h = two_hosts();
    for round in 0..5u64 {
        let v1 = pseudo_random_bytes(10 + round, 3 * 1024 * 1024 + 17);
        let v2 = pseudo_random_bytes(20 + round, 2 * 1024 * 1024 + 5);
        fs::write(h.a.path("f"), &v1).unwrap();
        // A's kernel holds the attributes, fresh, for its attribute timeout.
        assert_eq!(fs::metadata(h.a.path("f")).unwrap().len(), v1.len() as u64);
        fs::write(h.b.path("f"), &v2).unwrap();
        assert_bytes_eq(&read_without_stat(&h.a.path("f")), &v2, &format!("round {round}: A's open after B's close"));
    }
    h.a.unmount_ok();
    h.b.unmount_ok();
}

/// The usual way to replace a file (write a new one, rename it over the name) on one host, and
/// an open of the name on the other right after: the new file, never ENOENT. The kernel there
/// still has the name's old inode, which the rename deleted; its open answers ESTALE, and the
/// kernel looks the name up again. A create of the name (`O_CREAT|O_TRUNC`) likewise.
#[test]
fn a_name_the_other_host_replaced_by_a_rename_opens_the_new_file() {
    let h = two_hosts();
    for round in 0..8 {
        fs::write(h.a.path("c"), format!("old {round}")).unwrap();
        assert_eq!(read(&h.a.path("c")), format!("old {round}").as_bytes());
        fs::write(h.b.path("c.tmp"), format!("new {round}")).unwrap();
        fs::rename(h.b.path("c.tmp"), h.b.path("c")).unwrap();
        let got = fs::read(h.a.path("c")).unwrap_or_else(|e| panic!("round {round}: A's open of the replaced name: {e}"));
        assert_eq!(got, format!("new {round}").as_bytes(), "round {round}");
    }
    h.a.unmount_ok();
    h.b.unmount_ok();
}

#[test]
fn names_made_on_one_host_appear_on_the_other() {
    let h = two_hosts();
    let names = |m: &Mount| -> Vec<String> {
        let mut v: Vec<String> =
            fs::read_dir(&m.dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        v.sort();
        v
    };
    assert!(names(&h.b).is_empty());
    fs::create_dir(h.a.path("d")).unwrap();
    fs::write(h.a.path("d/x"), b"x").unwrap();
    eventually("d on B", || names(&h.b) == ["d"]);
    assert_eq!(read(&h.b.path("d/x")), b"x");
    fs::rename(h.b.path("d/x"), h.b.path("y")).unwrap();
    eventually("the rename on A", || names(&h.a) == ["d", "y"] && !h.a.path("d/x").exists());
    fs::remove_file(h.a.path("y")).unwrap();
    eventually("the unlink on B", || names(&h.b) == ["d"]);
    // Changes were published under the prefix's channel.
    let channels = h.redis.cli_text(&["PUBSUB", "CHANNELS", "*"]);
    assert!(channels.contains("test:changes"), "{channels}");

    h.a.unmount_ok();
    h.b.unmount_ok();
}

/// A change whose `COMMIT` answer A never heard (its connection to MariaDB broke right after the
/// server had the `COMMIT`) fails on A with EIO, as it may not have happened. It did, and B hears
/// of it: A publishes a transaction in doubt as it publishes the others. Without that, B would
/// list its cached directory without the new name for as long as it runs.
#[test]
fn a_change_whose_commit_answer_was_lost_reaches_the_other_host() {
    let cutter = CommitCutter::start(MariaDb::shared());
    let h = two_hosts_a_through(Some(cutter.port));
    let names = |m: &Mount| -> Vec<String> {
        let mut v: Vec<String> =
            fs::read_dir(&m.dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        v.sort();
        v
    };
    // Both have the root's listing; A has nothing left to store (directory times go within a
    // second), so the next `COMMIT` through the proxy is the mkdir's.
    assert!(names(&h.a).is_empty());
    assert!(names(&h.b).is_empty());
    std::thread::sleep(Duration::from_millis(1500));
    cutter.arm(Cut::Answer);
    let err = fs::create_dir(h.a.path("d")).expect_err("the mkdir's answer was lost");
    assert_eq!(cutter.armed(), Cut::Nothing, "the COMMIT went through the proxy");
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    eventually("the directory on B", || names(&h.b) == ["d"]);
    eventually("the directory on A, once it read the row again", || names(&h.a) == ["d"]);
    assert!(h.a.path("d").is_dir());

    h.a.unmount_ok();
    h.b.unmount_ok();
}

#[test]
fn concurrent_exclusive_create_of_one_name_has_one_winner() {
    let h = two_hosts();
    fs::create_dir(h.a.path("race")).unwrap();
    eventually("race on B", || h.b.path("race").is_dir());
    for round in 0..5 {
        let name = format!("race/n{round}");
        let (pa, pb) = (h.a.path(&name), h.b.path(&name));
        let create = |p: std::path::PathBuf| {
            std::thread::spawn(move || fs::OpenOptions::new().write(true).create_new(true).open(p).map(drop))
        };
        let (ta, tb) = (create(pa), create(pb));
        let (ra, rb) = (ta.join().unwrap(), tb.join().unwrap());
        assert!(ra.is_ok() != rb.is_ok(), "round {round}: exactly one create must win: A {ra:?}, B {rb:?}");
        let loser = ra.err().or(rb.err()).unwrap();
        assert_eq!(loser.raw_os_error(), Some(libc::EEXIST), "round {round}: the other create: {loser}");
    }
    h.a.unmount_ok();
    h.b.unmount_ok();
}

#[test]
fn record_locks_and_flock_exclude_across_hosts() {
    let h = two_hosts();
    let p = h.a.path("lockfile");
    fs::write(&p, vec![0u8; 4096]).unwrap();
    let on_b = h.b.path("lockfile");
    eventually("lockfile on B", || on_b.exists());

    // fcntl: a range held on A is refused on B, the rest of the file is free.
    let holder = as_root().hold(&["hold-lock", ps(&p), "0", "100", "w"]);
    assert_eq!(holder.reply.errno, 0, "A could not take F_WRLCK");
    // A's status names the lock grant's fencing token.
    let ino = fs::metadata(&p).unwrap().ino();
    let held = format!("record locks on inode {ino}: fencing token ");
    assert!(status_of(&h.a).contains(&held), "{}", status_of(&h.a));
    let f = fs::OpenOptions::new().read(true).write(true).open(&on_b).unwrap();
    assert_errno(setlk(f.as_raw_fd(), libc::F_WRLCK, 50, 10), libc::EAGAIN, "B F_WRLCK inside A's range");
    let fl = getlk(f.as_raw_fd(), libc::F_RDLCK, 0, 10).unwrap();
    assert_eq!(fl.l_type as i32, libc::F_WRLCK, "B's F_GETLK sees A's lock");
    setlk(f.as_raw_fd(), libc::F_WRLCK, 200, 10).expect("B locks a range A does not hold");
    holder.release();
    setlk(f.as_raw_fd(), libc::F_WRLCK, 50, 10).expect("B locks the range once A let go");
    eventually("A's status without the released lock", || !status_of(&h.a).contains(&held));
    drop(f);

    // flock: exclusive on A excludes B until released.
    let holder = as_root().hold(&["hold-flock", ps(&p), "ex"]);
    assert_eq!(holder.reply.errno, 0, "A could not flock");
    assert_eq!(as_root().errno(&["try-flock", ps(&on_b), "ex"]), libc::EWOULDBLOCK, "B flock while A holds it");
    holder.release();
    assert_eq!(as_root().errno(&["try-flock", ps(&on_b), "sh"]), 0, "B flock after A let go");

    h.a.unmount_ok();
    h.b.unmount_ok();
}

#[test]
fn locks_of_a_killed_host_are_free_within_seconds() {
    let h = two_hosts();
    let p = h.a.path("lockfile");
    fs::write(&p, vec![0u8; 10]).unwrap();
    let on_b = h.b.path("lockfile");
    eventually("lockfile on B", || on_b.exists());
    let holder = as_root().hold(&["hold-lock", ps(&p), "0", "0", "w"]);
    assert_eq!(holder.reply.errno, 0);
    assert_eq!(as_root().errno(&["try-lock", ps(&on_b), "0", "0", "w"]), libc::EAGAIN, "B:\n{}", h.b.log_tail());
    let killed = Instant::now();
    h.a.kill9();
    // The heartbeat expires after 5 s; then B takes the lock.
    eventually("B taking the dead host's lock", || as_root().errno(&["try-lock", ps(&on_b), "0", "0", "w"]) == 0);
    let took = killed.elapsed();
    assert!(took < Duration::from_secs(10), "took {took:?}");
    drop(holder);
    h.b.unmount_ok();
}

/// Rows of inodes without names (files kept open after their last name went).
fn orphan_rows(db: &str) -> usize {
    MariaDb::shared().sql(Some(db), "SELECT COUNT(*) FROM inodes WHERE nlink = 0").trim().parse().unwrap()
}

#[test]
fn a_killed_hosts_open_unlinked_files_are_deleted_by_the_other() {
    let h = two_hosts();
    let data = pseudo_random_bytes(3, 100_000);
    fs::write(h.a.path("kept"), &data).unwrap();
    let holder = as_root().hold(&["hold-open", ps(&h.a.path("kept"))]);
    assert_eq!(holder.reply.errno, 0);
    fs::remove_file(h.a.path("kept")).unwrap();
    assert_eq!(orphan_rows(&h.db), 1, "the open unlinked file has a row");

    // While A lives, B spares it: neither its periodic look for dead hosts nor a fresh start
    // of B deletes it.
    std::thread::sleep(Duration::from_secs(6));
    h.b.unmount_ok();
    let b = Mount::with_dirs_args(&h._b_dirs.data_dir, &h._b_dirs.cache_dir, &["-c", &h.cfg]);
    assert_eq!(orphan_rows(&h.db), 1, "B deleted a file A holds open:\n{}", b.log_tail());

    // A dies holding it: B deletes it once A's heartbeat has expired.
    let killed = Instant::now();
    h.a.kill9();
    drop(holder);
    eventually_within("B deleting the dead host's open unlinked file", Duration::from_secs(20), || orphan_rows(&h.db) == 0);
    assert!(killed.elapsed() < Duration::from_secs(20));
    b.unmount_ok();
}

/// Whether the metadata store still has a row for `ino`.
fn has_row(db: &str, ino: u64) -> bool {
    let n: u64 = MariaDb::shared().sql(Some(db), &format!("SELECT COUNT(*) FROM inodes WHERE ino = {ino}")).trim().parse().unwrap();
    n == 1
}

/// The HTTP status of the Tahoe name `<ino>` under the mounts' rootcap (FLAT: each file's
/// object is linked there): 200 while the file's object is linked, 404 once it is deleted.
fn tahoe_object_status(cfg: &str, ino: u64) -> u16 {
    let yaml = fs::read_to_string(cfg).unwrap();
    let rootcap = yaml.lines().find_map(|l| l.strip_prefix("rootcap: ")).expect("a rootcap in the configuration").trim();
    TahoeGrid::shared().http("GET", &format!("/uri/{rootcap}/{ino}?t=json"), b"").unwrap().0
}

/// Host A keeps a file open while host B unlinks its last name: A reads the whole file, writes
/// more and reads it back as if nothing happened; the row stays (without names) until A's last
/// close, then the row and the object go, and the name is gone on both hosts.
#[test]
fn a_file_open_on_one_host_outlives_its_unlink_on_the_other_until_closed() {
    use std::io::{Seek, SeekFrom};
    let h = two_hosts();
    let data = pseudo_random_bytes(5, 300_000);
    fs::write(h.a.path("f"), &data).unwrap();
    let ino = fs::metadata(h.a.path("f")).unwrap().ino();
    assert_eq!(tahoe_object_status(&h.cfg, ino), 200, "the object is linked");
    let mut f = fs::OpenOptions::new().read(true).write(true).open(h.a.path("f")).unwrap();
    eventually("f on B", || h.b.path("f").exists());
    fs::remove_file(h.b.path("f")).unwrap();
    eventually("the unlink on A", || !h.a.path("f").exists());
    assert!(has_row(&h.db, ino), "B deleted the row of a file A has open:\n{}", h.b.log_tail());
    assert_eq!(orphan_rows(&h.db), 1, "kept without names");

    let mut got = Vec::new();
    f.read_to_end(&mut got).unwrap();
    assert_bytes_eq(&got, &data, "A reading its open file after B's unlink");
    f.write_all(b"and more").unwrap();
    f.seek(SeekFrom::Start(0)).unwrap();
    got.clear();
    f.read_to_end(&mut got).unwrap();
    let mut want = data.clone();
    want.extend_from_slice(b"and more");
    assert_bytes_eq(&got, &want, "A reading back what it wrote after B's unlink");
    f.sync_all().unwrap();
    assert!(has_row(&h.db, ino), "deleted before A closed it");

    drop(f);
    eventually_within("the row deleted after A's last close", Duration::from_secs(5), || !has_row(&h.db, ino));
    // (The object goes right after the row, from another thread.)
    eventually("the object deleted too", || tahoe_object_status(&h.cfg, ino) == 404);
    assert!(!h.a.path("f").exists() && !h.b.path("f").exists());
    assert!(h.a.log_tail().lines().all(|l| !l.contains("ERROR")), "A:\n{}", h.a.log_tail());

    h.a.unmount_ok();
    h.b.unmount_ok();
}

/// Redis restarts without its data while host A has a file open: A lists it again (its
/// heartbeat finds its key gone), so an unlink on B afterwards still leaves the file to A.
#[test]
fn a_file_open_on_one_host_is_listed_again_when_redis_restarts_empty() {
    let mut h = two_hosts();
    let data = pseudo_random_bytes(7, 100_000);
    fs::write(h.a.path("f"), &data).unwrap();
    let ino = fs::metadata(h.a.path("f")).unwrap().ino();
    let mut f = fs::File::open(h.a.path("f")).unwrap();
    let openers = format!("test:openers:{ino}");
    assert_eq!(h.redis.cli_text(&["EXISTS", &openers]).trim(), "1", "A lists its open file");
    eventually("f on B", || h.b.path("f").exists());
    h.redis.restart_empty(Duration::from_secs(1));
    eventually_within("A listing its open file again", Duration::from_secs(15), || {
        h.redis.cli_text(&["EXISTS", &openers]).trim() == "1"
    });
    fs::remove_file(h.b.path("f")).unwrap();
    assert!(has_row(&h.db, ino), "B deleted the row of a file A has open:\n{}", h.b.log_tail());
    let mut got = Vec::new();
    f.read_to_end(&mut got).unwrap();
    assert_bytes_eq(&got, &data, "A reading its open file after Redis restarted and B unlinked it");
    drop(f);
    eventually_within("the row deleted after A's last close", Duration::from_secs(10), || !has_row(&h.db, ino));
    h.a.unmount_ok();
    h.b.unmount_ok();
}

/// Host A keeps a file open and dies after host B unlinked it: B deletes it once A's heartbeat
/// has expired (A's open listing is a dead host's then).
#[test]
fn a_file_another_host_unlinked_goes_when_the_host_holding_it_open_dies() {
    let h = two_hosts();
    fs::write(h.a.path("g"), pseudo_random_bytes(6, 50_000)).unwrap();
    let ino = fs::metadata(h.a.path("g")).unwrap().ino();
    let holder = as_root().hold(&["hold-open", ps(&h.a.path("g"))]);
    assert_eq!(holder.reply.errno, 0);
    eventually("g on B", || h.b.path("g").exists());
    fs::remove_file(h.b.path("g")).unwrap();
    assert!(has_row(&h.db, ino), "B deleted the row of a file A has open:\n{}", h.b.log_tail());
    // B's periodic look for dead hosts spares it while A lives.
    std::thread::sleep(Duration::from_secs(6));
    assert!(has_row(&h.db, ino), "B deleted a file A holds open:\n{}", h.b.log_tail());

    let killed = Instant::now();
    h.a.kill9();
    drop(holder);
    eventually_within("B deleting the file the dead host held open", Duration::from_secs(20), || !has_row(&h.db, ino));
    assert!(killed.elapsed() < Duration::from_secs(20));
    assert_eq!(tahoe_object_status(&h.cfg, ino), 404, "the object is deleted too");
    // Nothing is left of the dead host's listings of it in Redis.
    let left = || {
        ["openers", "unlinked"]
            .iter()
            .map(|k| format!("test:{k}:{ino}"))
            .filter(|k| h.redis.cli_text(&["EXISTS", k]).trim() != "0")
            .collect::<Vec<_>>()
    };
    eventually_within("the dead host's listings going", Duration::from_secs(20), || left().is_empty());
    h.b.unmount_ok();
}

fn status_of(m: &Mount) -> String {
    String::from_utf8(getxattr_buf(&m.dir, "user.truckeefs.status", 65536).expect("status attribute")).unwrap()
}

#[test]
fn status_shows_the_connected_hosts_and_uploads_in_flight() {
    let h = two_hosts();
    eventually("both hosts in A's status", || {
        let s = status_of(&h.a);
        let hosts = s.lines().find_map(|l| l.strip_prefix("hosts: ")).unwrap_or_else(|| panic!("no hosts line:\n{s}"));
        hosts.starts_with("2 connected: ") && hosts.contains("(this one)")
    });
    let s = status_of(&h.a);
    assert!(s.contains("(claimed: one host slot, shared with the hosts of redis_host)"), "{s}");

    // A large file's upload, watched while its close waits for it.
    let path = h.a.path("big");
    let writer = std::thread::spawn(move || fs::write(path, pseudo_random_bytes(4, 96 << 20)).unwrap());
    let mut seen = None;
    while !writer.is_finished() {
        let s = status_of(&h.a);
        if let Some(l) = s.lines().find(|l| l.starts_with("upload of inode ")) {
            seen = Some(l.to_string());
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    writer.join().unwrap();
    let line = seen.expect("no upload seen in flight while the close waited for it");
    assert!(line.contains("MiB sent"), "{line}");
    eventually("the upload leaving the status", || !status_of(&h.a).contains("upload of inode"));

    // The per-inode process states, for operators: the upload (sync) and the write it ended.
    let ino = fs::metadata(h.a.path("big")).unwrap().ino();
    let state = |p: &str| h.redis.cli_text(&["GET", &format!("test:{ino}:{p}")]).trim().to_string();
    eventually("the sync state COMPLETE (3)", || state("sync") == "3");
    assert_eq!(state("write"), "3");
    assert!(h.redis.cli_text(&["GET", &format!("test:{ino}:sync_host")]).contains('/'), "no host recorded");
    let ttl: i64 = h.redis.cli_text(&["TTL", &format!("test:{ino}:sync")]).trim().parse().unwrap();
    assert!(ttl > 0 && ttl <= 1800, "expiry {ttl} (redis_semaphore_timeout 1800)");
    h.a.unmount_ok();
    h.b.unmount_ok();
}

/// One command to the Redis server over its socket (RESP), without a child process; the
/// first line of the answer.
fn redis_command(redis: &RedisServer, args: &[&str]) -> String {
    use std::io::BufRead;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", redis.port)).unwrap();
    let mut req = format!("*{}\r\n", args.len());
    for a in args {
        req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    s.write_all(req.as_bytes()).unwrap();
    let mut line = String::new();
    std::io::BufReader::new(s).read_line(&mut line).unwrap();
    line.trim_end().to_string()
}

/// The fence column of a file's row: the fencing token of the last upload lease that committed it.
fn fence_of(db: &str, ino: u64) -> u64 {
    MariaDb::shared().sql(Some(db), &format!("SELECT fence FROM inodes WHERE ino = {ino}")).trim().parse().unwrap()
}

/// Another host holds a file's upload lease (taken here by hand, as a host takes it: the next
/// token of `<prefix>fence`, then `<prefix>upload:<ino>` = "<token> <host>"): B's fsync and
/// close of a write to that file wait, B's status says so, and both complete once the lease is
/// released; both hosts read B's bytes, and the row carries B's later token. A lease its host
/// stopped renewing (a dead host) expires by itself and B goes on.
#[test]
fn an_upload_waits_for_another_hosts_lease() {
    let h = two_hosts();
    fs::write(h.a.path("f"), b"first version").unwrap();
    let on_b = h.b.path("f");
    eventually("f on B", || on_b.exists());
    let ino = fs::metadata(h.a.path("f")).unwrap().ino();
    let first = fence_of(&h.db, ino);
    assert!(first > 0, "A's upload committed without a fencing token");
    let key = format!("test:upload:{ino}");
    assert_eq!(h.redis.cli_text(&["EXISTS", &key]), "0", "A kept its lease after the commit");

    let token: u64 = h.redis.cli_text(&["INCR", "test:fence"]).trim().parse().unwrap();
    assert!(token > first);
    assert_eq!(h.redis.cli_text(&["SET", &key, &format!("{token} elsewhere/1/fake"), "NX"]), "OK");
    let data = pseudo_random_bytes(5, 200_000);
    let writer = {
        let (p, d) = (on_b.clone(), data.clone());
        std::thread::spawn(move || {
            let mut f = fs::OpenOptions::new().write(true).truncate(true).open(p).unwrap();
            f.write_all(&d).unwrap();
            let t = Instant::now();
            f.sync_all().unwrap();
            let synced = t.elapsed();
            drop(f);
            synced
        })
    };
    let waiting = format!("waiting for the upload lease of inode {ino}: held by elsewhere/1/fake (fencing token {token})");
    eventually("B's status showing the wait", || status_of(&h.b).contains(&waiting));
    assert!(status_of(&h.b).contains("uploads waiting for another host's lease: 1"), "{}", status_of(&h.b));
    std::thread::sleep(Duration::from_secs(2));
    assert!(!writer.is_finished(), "B's fsync returned while another host held the upload lease");
    // Not with redis-cli: a child process started now would close (flush) the writer's file
    // at its exec, and that flush, a close on B, waits for the same upload.
    assert_eq!(redis_command(&h.redis, &["DEL", &key]), ":1");
    let synced = writer.join().unwrap();
    assert!(synced >= Duration::from_secs(2), "fsync took {synced:?}");
    assert!(!status_of(&h.b).contains("waiting for the upload lease"), "{}", status_of(&h.b));
    assert_bytes_eq(&read(&on_b), &data, "B's bytes on B");
    assert_bytes_eq(&read(&h.a.path("f")), &data, "B's bytes on A");
    assert!(fence_of(&h.db, ino) > token, "the row's fence is not B's later token");
    eventually("B's lease released after its commit", || h.redis.cli_text(&["EXISTS", &key]) == "0");

    // A dead host's lease: nobody releases it, it expires (3 s here; a host's own live 5 s).
    let token: u64 = h.redis.cli_text(&["INCR", "test:fence"]).trim().parse().unwrap();
    assert_eq!(h.redis.cli_text(&["SET", &key, &format!("{token} dead/1/fake"), "NX", "PX", "3000"]), "OK");
    let v3 = pseudo_random_bytes(6, 50_000);
    let t = Instant::now();
    fs::write(&on_b, &v3).unwrap();
    let took = t.elapsed();
    assert!(took >= Duration::from_secs(1) && took < Duration::from_secs(15), "B's close took {took:?}");
    assert_bytes_eq(&read(&h.a.path("f")), &v3, "B's third version on A");
    assert!(fence_of(&h.db, ino) > token);

    h.a.unmount_ok();
    h.b.unmount_ok();
}

/// Redis restarted, empty, while both hosts run: what one host changed while it was down (a new
/// version of a file B has cached, a new name) reaches B once it is back. B's subscription
/// missed whatever was published in the gap, so B drops every cached copy of the shared state
/// when it subscribes again, and A publishes its changes again until they go through; A's
/// upload, refused a lease while Redis was down, is retried, and goes through although the
/// fencing counter went with Redis's data. Without the resync B would keep the first version
/// and the old listing for as long as it runs.
#[test]
fn changes_made_while_redis_restarts_reach_the_other_host() {
    let mut h = two_hosts();
    let names = |m: &Mount| -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(&m.dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        v.sort();
        v
    };
    let v1 = pseudo_random_bytes(7, 200_000);
    fs::write(h.a.path("f"), &v1).unwrap();
    assert_bytes_eq(&read(&h.b.path("f")), &v1, "the first version on B");
    assert_eq!(names(&h.b), ["f"]);
    let ino = fs::metadata(h.a.path("f")).unwrap().ino();
    let fence_before = fence_of(&h.db, ino);

    // Down for a while; A changes things meanwhile, then it comes back with no keys at all.
    let v2 = pseudo_random_bytes(8, 150_000);
    let changes = {
        let (f, d, v2) = (h.a.path("f"), h.a.path("d"), v2.clone());
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(500));
            // The close is answered once the version is sealed on A (its upload, which needs a
            // lease, is retried later).
            fs::write(f, v2).unwrap();
            fs::create_dir(d).unwrap();
        })
    };
    h.redis.restart_empty(Duration::from_secs(3));
    changes.join().unwrap();
    assert_eq!(h.redis.cli_text(&["EXISTS", "test:fence"]), "0", "Redis came back with its data");

    eventually_within("A's new name and version on B", Duration::from_secs(30), || {
        names(&h.b) == ["d", "f"] && fs::read(h.b.path("f")).ok().as_deref() == Some(&v2[..])
    });
    let log = fs::read_to_string(h.b.log_path()).unwrap();
    assert!(log.contains("subscribed again; dropping every cached copy"), "B did not resync:\n{}", h.b.log_tail());
    let fence_after = fence_of(&h.db, ino);
    assert!(
        fence_after > fence_before,
        "A's second version was not committed under a new lease: fence {fence_before} then {fence_after}\nA's log:\n{}",
        h.a.log_tail()
    );

    // Leases and invalidations work as before: a third version, closed on B, is read whole on A.
    let v3 = pseudo_random_bytes(9, 100_000);
    fs::write(h.b.path("f"), &v3).unwrap();
    assert_bytes_eq(&read(&h.a.path("f")), &v3, "B's third version on A");

    h.a.unmount_ok();
    h.b.unmount_ok();
}

/// Without `redis_host`, hosts sharing one MariaDB database take turns: a second mount is refused
/// with one line saying why while the first runs, and succeeds once it is unmounted. (Each would
/// otherwise cache what the other changes for good, and delete the other's open-but-unlinked
/// files when it starts.)
#[test]
fn without_redis_a_second_host_on_one_database_is_refused_until_the_first_unmounts() {
    use std::ffi::OsStr;
    let db = MariaDb::shared();
    let grid = TahoeGrid::shared();
    let config = tempfile::tempdir().unwrap();
    let path = config.path().join("env.yaml");
    fs::write(&path, production_yaml(grid, db, &db.unique_db_name("turns"))).unwrap();
    let cfg = path.to_str().unwrap().to_string();
    let (a_dirs, b_dirs) = (Storage::new(), Storage::new());
    let a = Mount::with_dirs_args(&a_dirs.data_dir, &a_dirs.cache_dir, &["-c", &cfg]);
    fs::write(a.path("f"), b"from A").unwrap();

    let mnt = tempfile::tempdir().unwrap();
    let args: Vec<&OsStr> = vec![
        OsStr::new("mount"),
        OsStr::new("-c"),
        OsStr::new(&cfg),
        OsStr::new("--data-dir"),
        b_dirs.data_dir.as_os_str(),
        OsStr::new("--cache-dir"),
        b_dirs.cache_dir.as_os_str(),
        mnt.path().as_os_str(),
    ];
    let out = run_truckeefs(&args, Some(mnt.path()), Duration::from_secs(60));
    assert!(!out.mounted, "a second host mounted the database beside a host without redis_host:\n{}", out.output);
    let status = out.status.expect("the refused mount did not exit");
    assert!(!status.success(), "{status}\n{}", out.output);
    assert!(out.output.contains("another host is using this metadata store"), "{}", out.output);
    assert!(!out.output.contains(db.password()), "{}", out.output);

    let s = status_of(&a);
    assert!(s.contains("(claimed: this host alone (no redis_host: hosts take turns))"), "{s}");
    a.unmount_ok();
    let b = Mount::with_dirs_args(&b_dirs.data_dir, &b_dirs.cache_dir, &["-c", &cfg]);
    assert_eq!(read(&b.path("f")), b"from A");
    b.unmount_ok();
}
