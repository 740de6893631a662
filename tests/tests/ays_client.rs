//! The aysfs client (`truckeefs ays mount -c client.toml`) on real FUSE mounts, with a real
//! `redis-server` as local cache and debug Redis, and the real `truckeefs ays serve` as grid
//! cache and store. Run as root with /dev/fuse, `fusermount3` and `redis-server`.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use truckeefs_tests::ays::{eventually, publish, publish_ok, AysServer, RedisServer};
use truckeefs_tests::ays_client::{data, hget, hset, md5_hex, mount_fails, redis, AysClient, Resp, Tree};
use truckeefs_tests::{chmod, chown, errno_of, is_mounted};

fn sample_tree() -> Tree {
    Tree {
        files: vec![
            ("/hello.txt".into(), b"hello world\n".to_vec(), false),
            ("/empty".into(), Vec::new(), false),
            ("/bin/tool".into(), data(1, 300_000), true),
            ("/lib/big.bin".into(), data(2, 3 * 1024 * 1024 + 7), false),
            ("/lib/x.py".into(), b"print('x')\n".to_vec(), false),
            ("/lib/deep/a b.txt".into(), data(3, 4096), false),
        ],
        extra_dirs: vec!["/emptydir".into()],
    }
}

fn config_local(port: u16, extra_main: &str, mount: &str) -> String {
    format!(
        r#"[main]
id = "client-1"
cache_dir = "{{dir}}/cache"
{extra_main}

[[cache.local]]
port = {port}
expiration = 48

{mount}"#
    )
}

fn mount_files(name: &str, ays_id: &str, extra: &str) -> String {
    format!(
        r#"[[mount_files]]
name = "{name}"
path = "{{dir}}/{name}"
platform = "ubuntu64"
"ays.id" = "{ays_id}"
{extra}
"#
    )
}

#[test]
fn tree_from_the_local_cache_reads_back_byte_exact_and_is_read_only() {
    let redis_local = RedisServer::start();
    let tree = sample_tree();
    tree.seed_redis(redis_local.port, "t|one(1.0)", "");
    let mut c = AysClient::new();
    c.write_config(&config_local(redis_local.port, "", &mount_files("one", "t|one(1.0)", "")));
    let root = c.path("one");
    c.start(&[&root]);
    tree.assert_matches(&root);
    let mut names: Vec<String> = fs::read_dir(&root).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    assert_eq!(names, ["bin", "empty", "emptydir", "hello.txt", "lib"]);
    let d = fs::metadata(root.join("lib/deep")).unwrap();
    assert!(d.is_dir());
    assert_eq!((d.mode() & 0o7777, d.uid(), d.gid()), (0o755, 0, 0));
    assert_eq!(fs::read_dir(root.join("emptydir")).unwrap().count(), 0);
    // Every change is refused with EROFS.
    assert_eq!(errno_of(fs::write(root.join("new"), b"x")), libc::EROFS);
    assert_eq!(errno_of(fs::OpenOptions::new().write(true).open(root.join("hello.txt"))), libc::EROFS);
    assert_eq!(errno_of(fs::create_dir(root.join("d"))), libc::EROFS);
    assert_eq!(errno_of(fs::remove_file(root.join("hello.txt"))), libc::EROFS);
    assert_eq!(errno_of(fs::rename(root.join("hello.txt"), root.join("h2"))), libc::EROFS);
    assert_eq!(errno_of(truckeefs_tests::chmod(&root.join("hello.txt"), 0o600)), libc::EROFS);
    assert_eq!(errno_of(fs::read(root.join("nope"))), libc::ENOENT);
    // The blob cache holds what was read; the local cache recorded the fetches.
    assert!(hget(redis_local.port, "atime:files:", &md5_hex(&data(1, 300_000))).is_some());
    assert!(c.log_text().contains("loaded from local cache 127.0.0.1:"), "{}", c.log_tail());
    // SIGTERM unmounts and ends the process cleanly.
    let st = c.signal_and_wait(libc::SIGTERM).expect("exits on SIGTERM");
    assert!(st.success(), "{st}: {}", c.log_tail());
    assert!(!is_mounted(&root));
}

#[test]
fn published_tree_through_a_grid_cache_then_with_the_store_stopped() {
    let store = AysServer::start(&[]);
    let grid = AysServer::start(&[]);
    let tree = sample_tree();
    let src = tempfile::tempdir().unwrap();
    tree.write_dir(src.path());
    publish_ok(&store.stor_url(), "pub|tree(2)", "dom", src.path());
    let (grid_url, stor_url) = (grid.url(), store.stor_url());
    let config = |port: u16| {
        format!(
            r#"[main]
id = "client-2"
cache_dir = "{{dir}}/cache"

[[cache.local]]
port = {port}

[[cache.grid]]
url = "{grid}"

[[ays.stor]]
name = "main"
url = "{stor}"
"cache.expiration" = 0

[[mount_files]]
name = "p"
path = "{{dir}}/p"
"ays.id" = "pub|tree(2)"
"stor.name" = "main"
dedupe_domain = "dom"

[[mount_config]]
path = "{{dir}}/p/lib"
remote = "lib"
"ays.id" = "pub|tree(2)"
"stor.name" = "main"
dedupe_domain = "dom"
"#,
            grid = grid_url,
            stor = stor_url
        )
    };
    let local1 = RedisServer::start();
    let mut c = AysClient::new();
    c.write_config(&config(local1.port));
    let root = c.path("p");
    c.start(&[&root, &root.join("lib")]);
    tree.assert_matches(&root);
    // The sub-tree mount shows /lib of the same tree.
    assert_eq!(fs::read(root.join("lib/x.py")).unwrap(), b"print('x')\n");
    assert!(fs::metadata(root.join("lib/deep")).unwrap().is_dir());
    // The grid cache learnt about the client and served the tree; what came from further down
    // was written back into the local cache.
    let log = c.log_text();
    assert!(log.contains("announced client \"client-2\""), "{log}");
    assert!(log.contains(&format!("loaded from grid cache {}", grid.url())), "{log}");
    let big = md5_hex(&data(2, 3 * 1024 * 1024 + 7));
    assert_eq!(hget(local1.port, "files:dom", &big).map(|v| v.len()), Some(3 * 1024 * 1024 + 7));
    assert!(hget(local1.port, "md:pub|tree(2)", "/").is_some());
    drop(c);

    // The store stops; a new client with an empty local cache and blob cache reads everything
    // through the warmed grid cache.
    drop(store);
    let local2 = RedisServer::start();
    let mut c2 = AysClient::new();
    c2.write_config(&config(local2.port));
    let root2 = c2.path("p");
    c2.start(&[&root2, &root2.join("lib")]);
    tree.assert_matches(&root2);
    assert!(!c2.log_text().contains("is in no layer"), "{}", c2.log_tail());
}

#[test]
fn a_corrupt_blob_in_one_layer_is_reported_and_the_next_layer_used() {
    let store = AysServer::start(&[]);
    let mut tree = sample_tree();
    // Eight files a walk reads right after /hello.txt fill its read-ahead window (8 files), so
    // /lib/x.py is not fetched before the store goes below.
    tree.files.extend((0..8).map(|i| (format!("/a/f{i}"), data(10 + i, 100), false)));
    let src = tempfile::tempdir().unwrap();
    tree.write_dir(src.path());
    publish_ok(&store.stor_url(), "c|tree(1)", "", src.path());
    let local = RedisServer::start();
    tree.seed_redis(local.port, "c|tree(1)", "");
    // The local copy of /hello.txt is corrupt: other bytes under its md5.
    let good = b"hello world\n".to_vec();
    let md5 = md5_hex(&good);
    hset(local.port, "files:", &md5, b"hello WORLD\n");
    let mut c = AysClient::new();
    c.write_config(&format!(
        r#"[main]
id = "client-3"
cache_dir = "{{dir}}/cache"
[[cache.local]]
port = {}
[[ays.stor]]
name = "s"
url = "{}"
{}
"stor.name" = "s"
"#,
        local.port,
        store.stor_url(),
        mount_files("c", "c|tree(1)", "")
    ));
    let root = c.path("c");
    c.start(&[&root]);
    assert_eq!(fs::read(root.join("hello.txt")).unwrap(), good);
    let log = c.log_text();
    let line = log.lines().find(|l| l.contains("corrupt copy in local cache")).unwrap_or_else(|| panic!("{log}"));
    assert!(line.contains(&md5) && line.contains(&format!("127.0.0.1:{}", local.port)), "{line}");
    // The good copy replaced the corrupt one.
    assert!(eventually(Duration::from_secs(5), || hget(local.port, "files:", &md5) == Some(good.clone())));

    // A blob no layer has intact: EIO and a line naming each layer; never a wrong byte.
    let x = b"print('x')\n".to_vec();
    hset(local.port, "files:", &md5_hex(&x), b"print('y')\n");
    drop(store);
    let e = fs::read(root.join("lib/x.py"));
    assert_eq!(errno_of(e), libc::EIO);
    assert!(c.wait_log("is in no layer intact"), "{}", c.log_tail());
    let log = c.log_text();
    let line = log.lines().find(|l| l.contains("is in no layer intact")).unwrap();
    assert!(line.contains("local cache 127.0.0.1") && line.contains("corrupt") && line.contains("store s ("), "{line}");
}

/// A fake grid cache on loopback: each connection gets `answer` (after the request is read),
/// then is closed. Runs until the process ends.
fn fake_server(answer: &'static [u8]) -> String {
    use std::io::Read;
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    std::thread::spawn(move || {
        for mut conn in l.incoming().flatten() {
            let _ = conn.set_read_timeout(Some(Duration::from_millis(200)));
            let mut buf = [0u8; 4096];
            let _ = conn.read(&mut buf);
            let _ = conn.write_all(answer);
        }
    });
    url
}

#[test]
fn grid_caches_answering_garbage_or_nothing_give_eio_and_a_line_naming_them() {
    let local = RedisServer::start();
    let tree = sample_tree();
    tree.seed_redis(local.port, "g|x(1)", "");
    let tool = md5_hex(&data(1, 300_000));
    redis(local.port, &[b"HDEL", b"files:", tool.as_bytes()]);
    // One answers bytes that are not HTTP, one closes without a word, one claims a body it
    // never sends in full, one serves other bytes under the md5 asked for.
    let garbage = fake_server(b"this is not HTTP\r\n\r\n");
    let silent = fake_server(b"");
    let short = fake_server(b"HTTP/1.1 200 OK\r\nContent-Length: 300000\r\n\r\nonly this");
    let wrong = fake_server(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nwrong");
    let grids: String =
        [&garbage, &silent, &short, &wrong].iter().map(|u| format!("[[cache.grid]]\nurl = \"{u}\"\n")).collect();
    let mut c = AysClient::new();
    c.write_config(&config_local(local.port, "", &format!("{grids}\n{}", mount_files("g", "g|x(1)", ""))));
    let root = c.path("g");
    c.start(&[&root]);
    // What the local cache has reads fine; the blob only the broken grid caches could give: EIO.
    assert_eq!(fs::read(root.join("hello.txt")).unwrap(), b"hello world\n");
    assert_eq!(errno_of(fs::read(root.join("bin/tool"))), libc::EIO);
    assert!(c.wait_log("is in no layer intact"), "{}", c.log_tail());
    let log = c.log_text();
    let line = log.lines().find(|l| l.contains("is in no layer intact")).unwrap();
    for u in [&garbage, &silent, &short, &wrong] {
        assert!(line.contains(u.as_str()), "{u} not named in: {line}");
    }
    assert!(line.contains("corrupt"), "{line}");
    assert!(log.contains("corrupt copy in grid cache"), "{log}");
    // The process is still serving.
    assert_eq!(fs::read(root.join("lib/x.py")).unwrap(), b"print('x')\n");
    assert!(c.try_exit().is_none());
}

#[test]
fn credentials_reach_the_grid_cache_and_the_store_and_never_the_logs() {
    let (grid_pw, store_pw) = ("grid-Secret-1", "store-Secret-2");
    let store = AysServer::start_env(&["--login", "st"], &[("TRUCKEEFS_AYS_PASSWD", store_pw)]);
    let grid = AysServer::start_env(&["--login", "gr"], &[("TRUCKEEFS_AYS_PASSWD", grid_pw)]);
    let tree = sample_tree();
    let src = tempfile::tempdir().unwrap();
    tree.write_dir(src.path());
    let dir = src.path().display().to_string();
    let args = ["--stor", &store.stor_url(), "--login", "st", "--ays-id", "auth|t(1)", "--domain", "", &dir];
    let out = publish(&args, &[("TRUCKEEFS_AYS_SECRET", store_pw)]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let config = |grid_passwd: &str, with_store: bool| {
        let stor = if with_store {
            format!("[[ays.stor]]\nname = \"s\"\nurl = \"{}\"\nlogin = \"st\"\nsecret = \"{store_pw}\"\n", store.stor_url())
        } else {
            String::new()
        };
        format!(
            "[main]\nid = \"client-auth\"\ncache_dir = \"{{dir}}/cache\"\n[[cache.grid]]\nurl = \"{}\"\nlogin = \"gr\"\n\
             passwd = \"{grid_passwd}\"\n{stor}{}{}",
            grid.url(),
            mount_files("a", "auth|t(1)", ""),
            if with_store { "\"stor.name\" = \"s\"\n" } else { "" }
        )
    };
    // Through the grid cache (which fetches from the store with the announced secret).
    let mut c = AysClient::new();
    c.write_config(&config(grid_pw, true));
    let root = c.path("a");
    c.start(&[&root]);
    tree.assert_matches(&root);
    assert!(c.log_text().contains(&format!("loaded from grid cache {}", grid.url())), "{}", c.log_tail());
    drop(c);
    // A wrong grid password: 401 from the grid, and the store (right secret) serves instead.
    let mut c2 = AysClient::new();
    c2.write_config(&config("wrong-Passwd-3", true));
    let root2 = c2.path("a");
    c2.start(&[&root2]);
    assert_eq!(fs::read(root2.join("lib/x.py")).unwrap(), b"print('x')\n");
    assert!(c2.wait_log("loaded from store s ("), "{}", c2.log_tail());
    // Without the store, the grid's refusal is EIO naming it.
    let mut c3 = AysClient::new();
    c3.write_config(&config("wrong-Passwd-3", false));
    let root3 = c3.path("a");
    c3.start(&[&root3]);
    assert_eq!(errno_of(fs::read(root3.join("hello.txt"))), libc::EIO);
    assert!(c3.wait_log("401"), "{}", c3.log_tail());
    for (what, log) in
        [("client", c2.log_text()), ("client without store", c3.log_text()), ("grid", grid.log_text()), ("store", store.log_text())]
    {
        for pw in [grid_pw, store_pw, "wrong-Passwd-3"] {
            assert!(!log.contains(pw), "the {what} log shows a password: {log}");
        }
    }
}

#[test]
fn malformed_metadata_gives_eio_for_that_file_only() {
    let local = RedisServer::start();
    let ok = b"fine\n".to_vec();
    hset(local.port, "files:", &md5_hex(&ok), &ok);
    let root_json = format!(r#"{{"ok": "{},5", "bad": "not-a-value", "bad2": "{},xyz"}}"#, md5_hex(&ok), md5_hex(&ok));
    hset(local.port, "md:m|x(1)", "/", root_json.as_bytes());
    hset(local.port, "md:m|x(1)", "/broken", b"[not an object");
    let mut c = AysClient::new();
    c.write_config(&config_local(local.port, "", &mount_files("m", "m|x(1)", "")));
    let root = c.path("m");
    c.start(&[&root]);
    assert_eq!(fs::read(root.join("ok")).unwrap(), ok);
    assert_eq!(errno_of(fs::read(root.join("bad"))), libc::EIO, "{}", c.log_tail());
    assert_eq!(errno_of(fs::read(root.join("bad2"))), libc::EIO);
    assert_eq!(errno_of(fs::read_dir(root.join("broken"))), libc::EIO);
    assert!(c.wait_log("/bad: metadata value \"not-a-value\""), "{}", c.log_tail());
    assert!(c.log_text().contains("(metadata from local cache 127.0.0.1:"), "{}", c.log_tail());
}

#[test]
fn the_local_layer_expires_what_was_not_fetched_for_too_long() {
    let local = RedisServer::start();
    let tree = sample_tree();
    tree.seed_redis(local.port, "e|x(1)", "");
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    let old = md5_hex(b"hello world\n");
    let fresh = md5_hex(b"print('x')\n");
    let unrecorded = md5_hex(&data(1, 300_000));
    hset(local.port, "atime:files:", &old, (now - 49 * 3600).to_string().as_bytes());
    hset(local.port, "atime:files:", &fresh, (now - 3600).to_string().as_bytes());
    hset(local.port, "md:gone|y(1)", "/", b"{}");
    hset(local.port, "atime:md", "gone|y(1)", (now - 100 * 3600).to_string().as_bytes());
    let mut c = AysClient::new();
    c.write_config(&config_local(local.port, "", &mount_files("e", "e|x(1)", "")));
    let root = c.path("e");
    c.start(&[&root]);
    assert!(c.wait_log("unused for more than 48 hours expired"), "{}", c.log_tail());
    assert!(eventually(Duration::from_secs(5), || hget(local.port, "files:", &old).is_none()));
    assert!(hget(local.port, "atime:files:", &old).is_none());
    assert!(hget(local.port, "files:", &fresh).is_some(), "fetched an hour ago: kept");
    assert!(hget(local.port, "files:", &unrecorded).is_some(), "no record: left alone");
    assert_eq!(redis(local.port, &[b"EXISTS", b"md:gone|y(1)"]), Resp::Int(0));
    // The expired file is gone from the only layer: EIO, logged.
    assert_eq!(errno_of(fs::read(root.join("hello.txt"))), libc::EIO);
    // Reading a kept one refreshes its record.
    assert_eq!(fs::read(root.join("lib/x.py")).unwrap(), b"print('x')\n");
    assert!(eventually(Duration::from_secs(5), || {
        hget(local.port, "atime:files:", &fresh)
            .and_then(|v| String::from_utf8(v).ok()?.parse::<u64>().ok())
            .is_some_and(|t| t >= now)
    }));
}

#[test]
fn config_reload_adds_changes_and_removes_mounts_and_announces() {
    let grid = AysServer::start(&[]);
    let local = RedisServer::start();
    let t1 = Tree { files: vec![("/a.txt".into(), b"tree one\n".to_vec(), false)], extra_dirs: vec![] };
    let t2 = Tree { files: vec![("/b.txt".into(), b"tree two\n".to_vec(), false)], extra_dirs: vec![] };
    t1.seed_redis(local.port, "r|one(1)", "");
    t2.seed_redis(local.port, "r|two(1)", "");
    let grid_section = format!("[[cache.grid]]\nurl = \"{}\"\n", grid.url());
    let mut c = AysClient::new();
    c.write_config(&config_local(local.port, "", &format!("{grid_section}{}", mount_files("a", "r|one(1)", ""))));
    let a = c.path("a");
    let b = c.path("b");
    c.start(&[&a]);
    assert_eq!(fs::read(a.join("a.txt")).unwrap(), b"tree one\n");
    // Add a mount.
    c.write_config(&config_local(
        local.port,
        "",
        &format!("{grid_section}{}{}", mount_files("a", "r|one(1)", ""), mount_files("b", "r|two(1)", "")),
    ));
    c.wait_mounted(&b);
    assert_eq!(fs::read(b.join("b.txt")).unwrap(), b"tree two\n");
    // A file held open across a change of the tree keeps reading what it opened.
    let mut held = fs::File::open(a.join("a.txt")).unwrap();
    // Change mount a to show tree two, and remove b.
    c.write_config(&config_local(local.port, "", &format!("{grid_section}{}", mount_files("a", "r|two(1)", ""))));
    assert!(c.wait_unmounted(&b), "{}", c.log_tail());
    assert!(eventually(Duration::from_secs(10), || fs::read(a.join("b.txt")).is_ok()), "{}", c.log_tail());
    // The kernel may hold the old entry until its invalidation arrives: it must go, soon.
    assert!(
        eventually(Duration::from_secs(10), || errno_of(fs::metadata(a.join("a.txt"))) == libc::ENOENT),
        "{}",
        c.log_tail()
    );
    let mut s = String::new();
    std::io::Read::read_to_string(&mut held, &mut s).unwrap();
    assert_eq!(s, "tree one\n");
    drop(held);
    // A broken configuration is reported and the running one kept.
    c.write_config("[main]\nid = 3\n");
    assert!(c.wait_log("[main]: key \"id\": expected a string"), "{}", c.log_tail());
    assert!(is_mounted(&a));
    // Announced to the grid cache at start and at every reload, with the mounts.
    let log = c.log_text();
    assert!(log.matches("announced client \"client-1\"").count() >= 3, "{log}");
    let g = grid.log_text();
    assert!(g.contains("client-1"), "grid log lacks the client:\n{g}");
    // Unmounting the last mount ends the process.
    let _ = std::process::Command::new("fusermount3").arg("-u").arg(&a).status();
    let st = c.wait_exit(Duration::from_secs(20)).expect("exits after its last mount is gone");
    assert!(st.success(), "{st}");
}

#[test]
fn debug_overlay_writes_go_to_the_debug_redis_with_a_log_entry() {
    let local = RedisServer::start();
    let dbg = RedisServer::start();
    let tree = sample_tree();
    tree.seed_redis(local.port, "d|x(1)", "");
    let text = format!(
        r#"[main]
id = "client-4"
cache_dir = "{{dir}}/cache"
[[cache.local]]
port = {}
{}
debug = "dev"
debug_filter = ['.*\.py', '.*\.hrd']

[[debug]]
name = "dev"
"redis.addr" = "127.0.0.1"
"redis.port" = {}
"redis.passwd" = ""
"#,
        local.port,
        mount_files("d", "d|x(1)", ""),
        dbg.port
    );
    let mut c = AysClient::new();
    c.write_config(&text);
    let root = c.path("d");
    c.start(&[&root]);
    // A new file matching the filter.
    fs::write(root.join("lib/new.py"), b"print('new')\n").unwrap();
    let md5 = md5_hex(b"print('new')\n");
    assert_eq!(hget(dbg.port, "debug:paths:d", "/lib/new.py"), Some(format!("{md5},13").into_bytes()));
    assert_eq!(hget(dbg.port, "debug:files:d", &md5), Some(b"print('new')\n".to_vec()));
    let log = redis(dbg.port, &[b"LRANGE", b"debug:log:d", b"0", b"-1"]).array();
    assert_eq!(log.len(), 1);
    let entry: serde_json::Value = serde_json::from_slice(log[0].bytes().unwrap()).unwrap();
    assert_eq!(entry[1], "/lib/new.py");
    assert_eq!(entry[2], md5.as_str());
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    assert!(entry[0].as_u64().unwrap().abs_diff(now) < 120);
    assert_eq!(fs::read(root.join("lib/new.py")).unwrap(), b"print('new')\n");
    // Overwriting an existing matching file.
    {
        let mut f = fs::OpenOptions::new().write(true).truncate(true).open(root.join("lib/x.py")).unwrap();
        f.write_all(b"print('changed')\n").unwrap();
    }
    assert_eq!(fs::read(root.join("lib/x.py")).unwrap(), b"print('changed')\n");
    assert_eq!(fs::metadata(root.join("lib/x.py")).unwrap().len(), 17);
    assert_eq!(redis(dbg.port, &[b"LLEN", b"debug:log:d"]), Resp::Int(2));
    // Appending keeps what was there.
    {
        let mut f = fs::OpenOptions::new().append(true).open(root.join("lib/x.py")).unwrap();
        f.write_all(b"# more\n").unwrap();
    }
    assert_eq!(fs::read(root.join("lib/x.py")).unwrap(), b"print('changed')\n# more\n");
    // Paths outside the filter stay read-only.
    assert_eq!(errno_of(fs::write(root.join("lib/new.txt"), b"x")), libc::EROFS);
    assert_eq!(errno_of(fs::OpenOptions::new().write(true).open(root.join("hello.txt"))), libc::EROFS);
    assert_eq!(errno_of(fs::create_dir(root.join("lib/d"))), libc::EROFS);
    assert!(c.log_text().contains("debug write /lib/new.py"), "{}", c.log_tail());
    // Modes, owner and times: root:root as every file; a file created executable is 0755 and
    // says so in its debug path value; a written file carries the time of its last write.
    let mount_time = fs::metadata(root.join("hello.txt")).unwrap().modified().unwrap();
    std::thread::sleep(Duration::from_millis(1100));
    let before = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    {
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = fs::OpenOptions::new().write(true).create_new(true).mode(0o755).open(root.join("run.py")).unwrap();
        f.write_all(b"#!/usr/bin/env python3\n").unwrap();
    }
    let run = md5_hex(b"#!/usr/bin/env python3\n");
    assert_eq!(hget(dbg.port, "debug:paths:d", "/run.py"), Some(format!("{run},23,x").into_bytes()));
    let md = fs::metadata(root.join("run.py")).unwrap();
    assert_eq!((md.permissions().mode() & 0o7777, md.uid(), md.gid()), (0o755, 0, 0));
    assert!(md.mtime() as u64 >= before, "mtime {} is the time of the write (>= {before})", md.mtime());
    // The write time is kept beside the design's "md5,size" value, to the nanosecond.
    let run_time = String::from_utf8(hget(dbg.port, "debug:times:d", "/run.py").expect("debug:times has /run.py")).unwrap();
    assert_eq!(run_time, format!("{}.{:09}", md.mtime(), md.mtime_nsec()), "debug:times value is the mtime shown");
    let md = fs::metadata(root.join("lib/new.py")).unwrap();
    assert_eq!((md.permissions().mode() & 0o7777, md.uid(), md.gid()), (0o644, 0, 0));
    assert!(md.modified().unwrap() > mount_time, "a written file is newer than the mount");
    let md = fs::metadata(root.join("hello.txt")).unwrap();
    assert_eq!((md.permissions().mode() & 0o7777, md.uid(), md.gid()), (0o644, 0, 0));
    assert_eq!(md.modified().unwrap(), mount_time, "files not written keep the mount time");
    assert_eq!(errno_of(chmod(&root.join("run.py"), 0o700)), libc::EROFS);
    assert_eq!(errno_of(chown(&root.join("run.py"), 1, 1)), libc::EROFS);
    let written_times: Vec<(i64, i64)> =
        ["run.py", "lib/new.py"].iter().map(|p| fs::metadata(root.join(p)).unwrap()).map(|m| (m.mtime(), m.mtime_nsec())).collect();
    drop(c);
    // A write time that is not one (put there by hand) is logged and shows the mount time.
    redis(dbg.port, &[b"HSET", b"debug:times:d", b"/lib/x.py", b"yesterday"]);

    // A new client reads the debug versions first, with their write times.
    let mut c2 = AysClient::new();
    c2.write_config(&text);
    let root2 = c2.path("d");
    c2.start(&[&root2]);
    assert_eq!(fs::read(root2.join("lib/new.py")).unwrap(), b"print('new')\n");
    assert_eq!(fs::read(root2.join("lib/x.py")).unwrap(), b"print('changed')\n# more\n");
    assert_eq!(fs::read(root2.join("hello.txt")).unwrap(), b"hello world\n");
    assert_eq!(fs::metadata(root2.join("run.py")).unwrap().permissions().mode() & 0o7777, 0o755);
    let shown: Vec<(i64, i64)> =
        ["run.py", "lib/new.py"].iter().map(|p| fs::metadata(root2.join(p)).unwrap()).map(|m| (m.mtime(), m.mtime_nsec())).collect();
    assert_eq!(shown, written_times, "a remount shows the time of the last write");
    let mount2_time = fs::metadata(root2.join("hello.txt")).unwrap().modified().unwrap();
    assert_eq!(fs::metadata(root2.join("lib/x.py")).unwrap().modified().unwrap(), mount2_time);
    assert!(c2.log_text().contains("debug:times:d: /lib/x.py: bad time \"yesterday\""), "{}", c2.log_tail());
    let log = redis(dbg.port, &[b"LRANGE", b"debug:log:d", b"0", b"-1"]).array();
    let paths: Vec<String> = log
        .iter()
        .map(|e| serde_json::from_slice::<serde_json::Value>(e.bytes().unwrap()).unwrap()[1].as_str().unwrap().to_string())
        .collect();
    assert_eq!(paths, ["/lib/new.py", "/lib/x.py", "/lib/x.py", "/run.py"], "one [epoch, path, md5] entry per write");
}

#[test]
fn prefetch_fetches_the_whole_mount_and_logs_progress() {
    let store = AysServer::start(&[]);
    let tree = sample_tree();
    let src = tempfile::tempdir().unwrap();
    tree.write_dir(src.path());
    publish_ok(&store.stor_url(), "pf|x(1)", "", src.path());
    let local = RedisServer::start();
    let mut c = AysClient::new();
    c.write_config(&format!(
        r#"[main]
id = "client-5"
cache_dir = "{{dir}}/cache"
[[cache.local]]
port = {}
[[ays.stor]]
name = "s"
url = "{}"
{}
"stor.name" = "s"
prefetch = 1
"#,
        local.port,
        store.stor_url(),
        mount_files("pf", "pf|x(1)", "")
    ));
    let root = c.path("pf");
    c.start(&[&root]);
    assert!(c.wait_log("prefetch pf: done: 5 blobs"), "{}", c.log_tail());
    assert!(c.log_text().contains("prefetch pf: 5 blobs,"), "{}", c.log_tail());
    // Everything is local now: the store can go.
    drop(store);
    tree.assert_matches(&root);
    assert_eq!(hget(local.port, "files:", &md5_hex(&data(2, 3 * 1024 * 1024 + 7))).map(|v| v.len()), Some(3 * 1024 * 1024 + 7));
}

#[test]
fn bad_configurations_fail_with_one_line_naming_the_key() {
    let base = |mount_extra: &str, extra: &str| {
        format!(
            "[main]\nid = \"x\"\ncache_dir = \"{{dir}}/cache\"\n{extra}\n[[cache.local]]\nport = 6379\n[[mount_files]]\nname = \"m\"\npath = \"{{dir}}/m\"\n\"ays.id\" = \"a|b\"\n{mount_extra}\n"
        )
    };
    let cases = [
        (base("", "").replace("id = \"x\"\n", ""), "[main]: key \"id\": missing"),
        (base("", "").replace("port = 6379", "port = 0"), "key \"port\": 0 is not a TCP port"),
        (base("\"stor.name\" = \"nope\"", ""), "key \"stor.name\": \"nope\": no [[ays.stor]] has that name"),
        (base("debug_filter = ['(']", ""), "key \"debug_filter\""),
        (base("debug = \"d\"", ""), "key \"debug\": \"d\": no [[debug]] has that name"),
        (base("prefetch = \"yes\"", ""), "key \"prefetch\""),
        (base("colour = 1", ""), "mount_files[0]: unknown key \"colour\""),
        (base("", "[[cache.grid]]\nurl = \"ftp://x\"\n"), "cache.grid[0]: key \"url\""),
        (base("", "").replace("\"ays.id\" = \"a|b\"\n", ""), "mount_files[0]: key \"ays.id\": missing"),
        ("[main\n".to_string(), "not valid TOML"),
    ];
    for (text, want) in cases {
        let (code, err) = mount_fails(&text);
        assert_eq!(code, Some(1), "{want}: {err}");
        let lines: Vec<&str> = err.lines().collect();
        assert_eq!(lines.len(), 1, "not one line: {err:?}");
        assert!(lines[0].contains(want), "{:?} lacks {want:?}", lines[0]);
        assert!(lines[0].contains("client.toml"), "{:?} does not name the file", lines[0]);
    }
}

#[test]
fn a_dead_mount_point_is_detached_and_mounted_again() {
    let local = RedisServer::start();
    let tree = sample_tree();
    tree.seed_redis(local.port, "k|x(1)", "");
    let mut c = AysClient::new();
    let text = config_local(local.port, "", &mount_files("k", "k|x(1)", ""));
    c.write_config(&text);
    let root = c.path("k");
    c.start(&[&root]);
    // A crash leaves "transport endpoint is not connected".
    c.signal_and_wait(libc::SIGKILL);
    assert_eq!(errno_of(fs::metadata(&root)), libc::ENOTCONN);
    c.spawn();
    assert!(eventually(Duration::from_secs(20), || fs::read(root.join("hello.txt")).is_ok()), "{}", c.log_tail());
    assert!(c.log_text().contains("dead mount"), "{}", c.log_tail());
    tree.assert_matches(Path::new(&root));
}

#[test]
fn a_blob_rotted_in_the_disk_cache_is_fetched_again_not_served() {
    let store = AysServer::start(&[]);
    let tree = sample_tree();
    let src = tempfile::tempdir().unwrap();
    tree.write_dir(src.path());
    publish_ok(&store.stor_url(), "r|tree(1)", "", src.path());
    let mut c = AysClient::new();
    c.write_config(&format!(
        r#"[main]
id = "client-rot"
cache_dir = "{{dir}}/cache"
[[ays.stor]]
name = "s"
url = "{}"
{}
"stor.name" = "s"
"#,
        store.stor_url(),
        mount_files("r", "r|tree(1)", "")
    ));
    let root = c.path("r");
    c.start(&[&root]);
    let big = data(2, 3 * 1024 * 1024 + 7);
    assert!(fs::read(root.join("lib/big.bin")).unwrap() == big);
    let st = c.signal_and_wait(libc::SIGTERM).expect("exits on SIGTERM");
    assert!(st.success(), "{st}: {}", c.log_tail());
    // The disk rots one byte of the blob's file in the on-disk blob cache.
    let content = truckeefs_tests::files_under(&c.path("cache"))
        .into_iter()
        .find(|p| p.to_string_lossy().contains("content-v2") && fs::read(p).map(|d| d == big).unwrap_or(false))
        .expect("the blob is in the disk cache");
    fs::set_permissions(&content, fs::Permissions::from_mode(0o644)).unwrap();
    let mut rotten = big.clone();
    rotten[1_000_000] ^= 0x20;
    fs::write(&content, &rotten).unwrap();
    // The next process finds it damaged, says so, and serves the store's copy.
    c.start(&[&root]);
    assert!(fs::read(root.join("lib/big.bin")).unwrap() == big, "wrong bytes: {}", c.log_tail());
    assert!(c.log_text().contains("damaged on disk"), "{}", c.log_tail());
    tree.assert_matches(&root);
}

/// Whether the running kernel is at least `major.minor`.
fn kernel_at_least(major: u32, minor: u32) -> bool {
    let release = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut parts = release.trim().split(|c: char| !c.is_ascii_digit()).map(|p| p.parse::<u32>().unwrap_or(0));
    let (a, b) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (a, b) >= (major, minor)
}

/// Where the kernel offers FUSE passthrough (Linux 6.9 or later, the mount process as root),
/// open files are read by the kernel straight from the blob cache: several opens of one file
/// at once share one backing file, and reads, positioned reads and `mmap` all return the
/// verified bytes; opens after the last close work again. Elsewhere the same reads go through
/// the mount process.
#[test]
fn open_files_are_read_straight_from_the_blob_cache_where_the_kernel_allows() {
    use std::io::Read;
    use std::os::unix::fs::FileExt;
    use std::os::unix::io::AsRawFd;
    let redis_local = RedisServer::start();
    let tree = sample_tree();
    tree.seed_redis(redis_local.port, "t|pt(1.0)", "");
    let mut c = AysClient::new();
    c.write_config(&config_local(redis_local.port, "", &mount_files("pt", "t|pt(1.0)", "")));
    let root = c.path("pt");
    c.start(&[&root]);
    let big = data(2, 3 * 1024 * 1024 + 7);
    let tool = data(1, 300_000);

    for round in 0..2 {
        let f1 = fs::File::open(root.join("lib/big.bin")).unwrap();
        let mut f2 = fs::File::open(root.join("lib/big.bin")).unwrap();
        let f3 = fs::File::open(root.join("bin/tool")).unwrap();
        let mut whole = Vec::new();
        f2.read_to_end(&mut whole).unwrap();
        assert!(whole == big, "round {round}: the second handle read other bytes");
        let mut part = vec![0u8; 65_536];
        f1.read_exact_at(&mut part, 1_000_003).unwrap();
        assert!(part[..] == big[1_000_003..1_065_539], "round {round}: a positioned read");
        let mut t = vec![0u8; tool.len()];
        f3.read_exact_at(&mut t, 0).unwrap();
        assert!(t == tool, "round {round}: another file open beside it");
        // SAFETY: a private read-only mapping of an open file, unmapped below; the slice is
        // used only while mapped.
        unsafe {
            let len = big.len();
            let p = libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ, libc::MAP_PRIVATE, f1.as_raw_fd(), 0);
            assert_ne!(p, libc::MAP_FAILED, "round {round}: mmap: {}", std::io::Error::last_os_error());
            let mapped = std::slice::from_raw_parts(p as *const u8, len);
            assert!(mapped == &big[..], "round {round}: the mapping shows other bytes");
            libc::munmap(p, len);
        }
    }
    tree.assert_matches(&root);
    let log = c.log_text();
    if kernel_at_least(6, 9) && unsafe { libc::geteuid() } == 0 {
        assert!(log.contains("passthrough: the kernel reads open files straight from the blob cache"), "{}", c.log_tail());
        assert!(!log.contains("refused a passthrough"), "{}", c.log_tail());
    }
    let st = c.signal_and_wait(libc::SIGTERM).expect("exits on SIGTERM");
    assert!(st.success(), "{st}: {}", c.log_tail());
}
