//! `truckeefs ays serve` and `truckeefs ays publish` with the real binary on loopback: the store
//! routes, a cache in front of a store with the four fetch modes, corrupt blobs, basic auth, path
//! traversal, the Redis backend (a real `redis-server`), limits and a clean stop.
//! Routes and formats: `docs/ays-protocol.md`.

use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;
use truckeefs_tests::ays::{basic_auth, enc, eventually, md5_of, publish, publish_ok, AysServer, RedisServer};

const ID: &str = "jumpscale|mongodb(10.1.888)";
const ID2: &str = "jumpscale|redis(7.0)";

/// A small tree with every kind of entry a tree can hold; returns the temp dir (keep it).
fn make_tree() -> tempfile::TempDir {
    let d = tempfile::Builder::new().prefix("ays-tree-").tempdir().unwrap();
    let p = d.path();
    fs::create_dir_all(p.join("sub/deeper")).unwrap();
    fs::create_dir(p.join("emptydir")).unwrap();
    fs::write(p.join("hello.txt"), b"hello world\n").unwrap();
    fs::write(p.join("tool"), b"#!/bin/sh\necho hi\n").unwrap();
    fs::set_permissions(p.join("tool"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(p.join("empty-file"), b"").unwrap();
    fs::write(p.join("名前 with space.txt"), "unicode ✓".as_bytes()).unwrap();
    let big: Vec<u8> = (0..300_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    fs::write(p.join("sub/big"), big).unwrap();
    fs::write(p.join("sub/dup"), b"hello world\n").unwrap();
    fs::write(p.join("sub/deeper/x"), b"x").unwrap();
    d
}

/// The metadata hash the tree at `root` must publish to, computed with md5sum.
fn expected_md(root: &Path) -> Value {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Value>) {
        let rel = dir.strip_prefix(root).unwrap();
        let key = format!("/{}", rel.display());
        let mut files = serde_json::Map::new();
        for e in fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let m = e.metadata().unwrap();
            if m.is_dir() {
                walk(root, &e.path(), out);
            } else {
                let x = if m.permissions().mode() & 0o111 != 0 { ",x" } else { "" };
                let v = format!("{},{}{x}", md5_of(&e.path()), m.len());
                files.insert(e.file_name().into_string().unwrap(), Value::String(v));
            }
        }
        out.insert(if key == "/" { key } else { key.trim_end_matches('/').to_string() }, Value::Object(files));
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    serde_json::to_value(out).unwrap()
}

fn all_files(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path());
            }
        }
    }
    out
}

fn blob_file(server: &AysServer, domain: &str, md5: &str) -> PathBuf {
    let d = if domain.is_empty() { "_" } else { domain };
    server.data_dir.as_ref().unwrap().join("blobs").join(d).join(&md5[..2]).join(&md5[2..4]).join(md5)
}

fn post_json(server: &AysServer, path: &str, body: Value) {
    let r = server.req("POST", path, &[("Content-Type", "application/json")], body.to_string().as_bytes());
    assert_eq!(r.status, 204, "POST {path}: {}", r.text());
}

/// Announces a client, one store and one mount of `ays_id` on that store to `cache`.
fn announce(cache: &AysServer, stor_name: &str, stor_url: &str, mount: &str, ays_id: &str) {
    post_json(cache, "/ays/client/client1", json!({"platform": "ubuntu64"}));
    post_json(cache, &format!("/ays/stor/{}", enc(stor_name)), json!({"url": stor_url, "login": "", "passwd": "", "expiration": 48}));
    // As TOML parses `ays.id = "..."` (nested tables).
    post_json(
        cache,
        &format!("/ays/mount/client1/{}", enc(mount)),
        json!({"name": mount, "path": "/opt/x", "ays": {"id": ays_id, "repoid": ""}, "stor": {"name": stor_name}, "prefetch": 1}),
    );
}

#[test]
fn publish_then_read_everything_back_through_the_store_routes() {
    let store = AysServer::start(&[]);
    let tree = make_tree();
    let out = publish_ok(&store.stor_url(), ID, "dom", tree.path());
    assert!(out.contains("7 files in 4 directories") && out.contains("uploaded 6 blobs"), "{out}");

    let r = store.get(&format!("/stor/md/{}", enc(ID)));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
    let md = r.json();
    assert_eq!(md, expected_md(tree.path()));
    assert!(md["/"]["tool"].as_str().unwrap().ends_with(",x"));
    assert_eq!(md["/emptydir"], json!({}));

    for f in all_files(tree.path()) {
        let md5 = md5_of(&f);
        let want = fs::read(&f).unwrap();
        let r = store.get(&format!("/stor/blob/dom/{md5}"));
        assert_eq!(r.status, 200, "{}", f.display());
        assert_eq!(r.body, want, "{}", f.display());
        let h = store.req("HEAD", &format!("/stor/blob/dom/{md5}"), &[], b"");
        assert_eq!((h.status, h.header("content-length")), (200, Some(want.len().to_string().as_str())));
    }

    // A second publish finds every blob in the store.
    let out = publish_ok(&store.stor_url(), ID, "dom", tree.path());
    assert!(out.contains("uploaded 0 blobs"), "{out}");

    // The empty domain is `_` in URLs.
    publish_ok(&store.stor_url(), ID2, "_", tree.path());
    let md5 = md5_of(&tree.path().join("hello.txt"));
    assert_eq!(store.get(&format!("/stor/blob/_/{md5}")).body, b"hello world\n");
    assert!(blob_file(&store, "", &md5).is_file());

    // Not found: 404 with an empty body.
    for path in ["/stor/md/nope".to_string(), format!("/stor/blob/other/{md5}"), format!("/stor/blob/dom/{}", "0".repeat(32))] {
        let r = store.get(&path);
        assert_eq!((r.status, r.body.len()), (404, 0), "{path}");
    }
    // A body whose md5 differs from its name is refused and not kept.
    let wrong = "0123456789abcdef0123456789abcdef";
    let r = store.req("PUT", &format!("/stor/blob/dom/{wrong}"), &[], b"abc");
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(store.get(&format!("/stor/blob/dom/{wrong}")).status, 404);
    // Malformed metadata is refused, and the tree stays as it was.
    for bad in [r#"{"/": {"f": "nothex,1"}}"#, r#"{"/a/": {}}"#, r#"{"/": {"a/b": "x"}}"#, "[1]", "{"] {
        let r = store.req("PUT", &format!("/stor/md/{}", enc(ID)), &[], bad.as_bytes());
        assert_eq!(r.status, 400, "{bad}: {}", r.text());
    }
    assert_eq!(store.get(&format!("/stor/md/{}", enc(ID))).json(), expected_md(tree.path()));
}

#[test]
fn a_cache_fetches_metadata_with_each_fetch_mode() {
    let store = AysServer::start(&[]);
    let tree = make_tree();
    publish_ok(&store.stor_url(), ID, "dom", tree.path());
    publish_ok(&store.stor_url(), ID2, "dom", &tree.path().join("sub"));
    let want = expected_md(tree.path());
    let cache = AysServer::start(&[]);
    announce(&cache, "main", &store.stor_url(), "mongodb", ID);

    // 0: only what the cache has.
    let r = cache.get("/md/client1/mongodb/?fetch=0");
    assert_eq!((r.status, r.body.len()), (404, 0));
    // 3: fetched and answered, not kept.
    let r = cache.get("/md/client1/mongodb/?fetch=3");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), json!({"files": want["/"], "dirs": ["emptydir", "sub"]}));
    assert_eq!(cache.get("/md/client1/mongodb/?fetch=0").status, 404);
    // 1: fetched, kept, answered; then the whole tree is there.
    let r = cache.get("/md/client1/mongodb/sub?fetch=1");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), json!({"files": want["/sub"], "dirs": ["deeper"]}));
    for (path, dirs) in [("", json!(["emptydir", "sub"])), ("sub/deeper", json!([])), ("emptydir", json!([]))] {
        let r = cache.get(&format!("/md/client1/mongodb/{path}?fetch=0"));
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(r.json()["dirs"], dirs, "{path}");
    }
    // The root without its trailing slash, and the default mode (1).
    assert_eq!(cache.get("/md/client1/mongodb").status, 200);
    let r = cache.get(&format!("/md/client1/mongodb/{}", enc("名前 with space.txt")));
    assert_eq!(r.status, 404, "a file is not a directory");
    assert_eq!(cache.get("/md/client1/mongodb/nope?fetch=1").status, 404);
    assert_eq!(cache.get("/md/client1/unannounced/?fetch=1").status, 404);
    assert_eq!(cache.get("/md/nobody/mongodb/?fetch=1").status, 404);
    assert_eq!(cache.get("/md/client1/mongodb/?fetch=7").status, 400);

    // 2: 404 now, there later. This mount is announced with flat dotted keys.
    post_json(&cache, "/ays/mount/client1/redis", json!({"ays.id": ID2, "stor.name": "main"}));
    let r = cache.get("/md/client1/redis/?fetch=2");
    assert_eq!((r.status, r.body.len()), (404, 0));
    assert!(eventually(Duration::from_secs(10), || cache.get("/md/client1/redis/?fetch=0").status == 200));
    assert_eq!(cache.get("/md/client1/redis/deeper?fetch=0").json()["files"], want["/sub/deeper"]);
}

#[test]
fn a_cache_fetches_blobs_with_each_fetch_mode_and_keeps_serving_when_the_store_stops() {
    let store = AysServer::start(&[]);
    let tree = make_tree();
    publish_ok(&store.stor_url(), ID, "dom", tree.path());
    let cache = AysServer::start(&[]);
    announce(&cache, "main", &store.stor_url(), "mongodb", ID);
    let hello = md5_of(&tree.path().join("hello.txt"));
    let big = md5_of(&tree.path().join("sub/big"));
    let x = md5_of(&tree.path().join("sub/deeper/x"));
    let tool = md5_of(&tree.path().join("tool"));

    assert_eq!(cache.get(&format!("/dom/{hello}?fetch=0")).status, 404);
    // 3: answered, not kept.
    let r = cache.get(&format!("/dom/{hello}?fetch=3"));
    assert_eq!((r.status, r.body.as_slice()), (200, &b"hello world\n"[..]));
    assert_eq!(cache.get(&format!("/dom/{hello}?fetch=0")).status, 404);
    assert!(!blob_file(&cache, "dom", &hello).exists());
    // 1: kept.
    assert_eq!(cache.get(&format!("/dom/{hello}?fetch=1")).body, b"hello world\n");
    assert_eq!(cache.get(&format!("/dom/{hello}?fetch=0")).body, b"hello world\n");
    assert!(blob_file(&cache, "dom", &hello).is_file());
    // The default is 1.
    assert_eq!(cache.get(&format!("/dom/{big}")).body, fs::read(tree.path().join("sub/big")).unwrap());
    // 2: 404 now, there later.
    let r = cache.get(&format!("/dom/{x}?fetch=2"));
    assert_eq!((r.status, r.body.len()), (404, 0));
    assert!(eventually(Duration::from_secs(10), || cache.get(&format!("/dom/{x}?fetch=0")).status == 200));
    let h = cache.req("HEAD", &format!("/dom/{big}?fetch=0"), &[], b"");
    assert_eq!((h.status, h.header("content-length")), (200, Some("300000")));
    // Unknown anywhere, or in another domain.
    assert_eq!(cache.get(&format!("/dom/{}?fetch=1", "a".repeat(32))).status, 404);
    assert_eq!(cache.get(&format!("/other/{hello}?fetch=1")).status, 404);

    // Metadata too, then the store goes away: what the cache kept is still served.
    assert_eq!(cache.get("/md/client1/mongodb/?fetch=1").status, 200);
    assert!(store.stop_with(libc::SIGTERM).success());
    assert_eq!(cache.get(&format!("/dom/{hello}?fetch=1")).body, b"hello world\n");
    assert_eq!(cache.get("/md/client1/mongodb/sub?fetch=1").status, 200);
    let r = cache.get(&format!("/dom/{tool}?fetch=1"));
    assert_eq!(r.status, 502, "a blob the cache never had, with its store down: {}", r.text());
    assert_eq!(cache.get(&format!("/dom/{tool}?fetch=0")).status, 404);
}

#[test]
fn a_corrupt_blob_in_a_store_is_refused_and_the_next_store_is_tried() {
    let bad = AysServer::start(&[]);
    let good = AysServer::start(&[]);
    let tree = make_tree();
    publish_ok(&bad.stor_url(), ID, "dom", tree.path());
    publish_ok(&good.stor_url(), ID, "dom", tree.path());
    let hello = md5_of(&tree.path().join("hello.txt"));
    fs::write(blob_file(&bad, "dom", &hello), b"hello w0rld\n").unwrap();

    let cache = AysServer::start(&[]);
    announce(&cache, "a-bad", &bad.stor_url(), "m", ID);
    for fetch in [1, 3] {
        let r = cache.get(&format!("/dom/{hello}?fetch={fetch}"));
        assert_eq!(r.status, 502, "fetch={fetch}: {}", r.text());
        assert!(!r.body.starts_with(b"hello"), "a corrupt blob was served");
    }
    assert_eq!(cache.get(&format!("/dom/{hello}?fetch=0")).status, 404);
    assert!(!blob_file(&cache, "dom", &hello).exists(), "a corrupt blob was kept");
    let log = cache.log_text();
    assert!(log.contains("store a-bad served a corrupt blob"), "{log}");

    // Stores are tried by name: a-bad first (refused again), then b-good.
    post_json(&cache, "/ays/stor/b-good", json!({"url": good.stor_url(), "expiration": 0}));
    let r = cache.get(&format!("/dom/{hello}?fetch=1"));
    assert_eq!((r.status, r.body.as_slice()), (200, &b"hello world\n"[..]));
    assert_eq!(fs::read(blob_file(&cache, "dom", &hello)).unwrap(), b"hello world\n");
}

#[test]
fn requests_without_the_right_credentials_get_401() {
    let pw = "s3cret-pw-xyzzy";
    let store = AysServer::start_env(&["--login", "ays"], &[("TRUCKEEFS_AYS_PASSWD", pw)]);
    let good = basic_auth("ays", pw);
    let md5 = "0".repeat(32);
    for (method, path) in [
        ("GET", "/stor/md/x".to_string()),
        ("PUT", format!("/stor/blob/dom/{md5}")),
        ("HEAD", format!("/stor/blob/dom/{md5}")),
        ("POST", "/ays/client/c".to_string()),
        ("POST", "/ays/stor/s".to_string()),
        ("GET", "/md/c/m/?fetch=0".to_string()),
        ("GET", format!("/dom/{md5}?fetch=0")),
    ] {
        let r = store.req(method, &path, &[], b"");
        assert_eq!(r.status, 401, "{method} {path}");
        assert!(r.header("www-authenticate").unwrap_or("").starts_with("Basic"), "{method} {path}");
        for wrong in [basic_auth("ays", "nope"), basic_auth("other", pw), "Bearer abc".to_string(), "Basic !!!".to_string()] {
            assert_eq!(store.req(method, &path, &[("Authorization", &wrong)], b"").status, 401, "{method} {path} {wrong}");
        }
    }
    assert_eq!(store.req("GET", "/stor/md/x", &[("Authorization", &good)], b"").status, 404);

    // The publisher: refused without the secret, accepted with it from the environment.
    let tree = make_tree();
    let dir = tree.path().display().to_string();
    let args = ["--stor", &store.stor_url(), "--login", "ays", "--ays-id", ID, "--domain", "dom", &dir];
    let out = publish(&args, &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("401"), "{err}");
    let out = publish(&args, &[("TRUCKEEFS_AYS_SECRET", pw)]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // A cache reaches the protected store with the credentials announced for it.
    let cache = AysServer::start(&[]);
    post_json(&cache, "/ays/stor/main", json!({"url": store.stor_url(), "login": "ays", "passwd": pw, "expiration": 1}));
    post_json(&cache, "/ays/mount/client1/m", json!({"ays": {"id": ID}, "stor": {"name": "main"}}));
    assert_eq!(cache.get("/md/client1/m/?fetch=1").status, 200);
    let hello = md5_of(&tree.path().join("hello.txt"));
    assert_eq!(cache.get(&format!("/dom/{hello}?fetch=1")).body, b"hello world\n");

    for log in [store.log_text(), cache.log_text()] {
        assert!(!log.contains(pw), "a password appears in a log:\n{log}");
    }
}

#[test]
fn path_traversal_is_refused_and_nothing_is_written_outside_the_store() {
    let server = AysServer::start(&[]);
    let data = server.data_dir.clone().unwrap();
    let outside = data.parent().unwrap().to_path_buf();
    let before: Vec<_> = fs::read_dir(&outside).unwrap().map(|e| e.unwrap().file_name()).collect();
    let body = b"escape";
    let md5 = "1d7c1d8d2ab7ba0ed3ed9b21e1e3d9a5"; // any valid-looking md5
    let real = {
        let p = outside.join("probe");
        fs::write(&p, body).unwrap();
        let m = md5_of(&p);
        fs::remove_file(&p).unwrap();
        m
    };
    post_json(&server, "/ays/mount/c/m", json!({"ays": {"id": ID}, "stor": {"name": "s"}}));
    for (method, path, want) in [
        ("GET", format!("/stor/blob/%2e%2e/{md5}"), 400),
        ("GET", format!("/stor/blob/..%2F..%2Fetc/{md5}"), 400),
        ("GET", "/stor/blob/dom/..%2F..%2Fetc%2Fpasswd".to_string(), 400),
        ("GET", format!("/stor/blob/dom/{}", md5.to_uppercase()), 400),
        ("GET", format!("/stor/blob/dom/{md5}0"), 400),
        ("GET", "/../../../etc/passwd".to_string(), 404),
        ("GET", format!("/%2e%2e/{md5}?fetch=0"), 400),
        ("GET", format!("/.hidden/{md5}?fetch=0"), 400),
        ("GET", format!("/a%2Fb/{md5}?fetch=0"), 400),
        ("GET", "/md/c/m/..?fetch=0".to_string(), 400),
        ("GET", "/md/c/m/%2e%2e/x?fetch=0".to_string(), 400),
        ("GET", "/md/c/m/a%2Fb?fetch=0".to_string(), 400),
        ("GET", "/md/c/m/a//b?fetch=0".to_string(), 400),
        ("GET", "/md/c/m/%00?fetch=0".to_string(), 400),
        ("PUT", format!("/stor/blob/%2e%2e/{real}"), 400),
        ("PUT", format!("/stor/blob/..%2F..%2Fescape/{real}"), 400),
        ("PUT", "/stor/blob/dom/..%2F..%2Fescape".to_string(), 400),
    ] {
        let r = server.req(method, &path, &[], if method == "PUT" { body } else { b"" });
        assert_eq!(r.status, want, "{method} {path}: {}", r.text());
    }
    // An ays_id is a key, never a file name: this one is stored, and nothing else moves.
    let tree = json!({"/": {"f": format!("{real},6")}});
    let r = server.req("PUT", "/stor/md/..%2F..%2Fescape", &[], tree.to_string().as_bytes());
    assert_eq!(r.status, 204, "{}", r.text());
    assert_eq!(server.get("/stor/md/..%2F..%2Fescape").json(), tree);
    assert_eq!(server.get("/stor/md/..").status, 404);

    let after: Vec<_> = fs::read_dir(&outside).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(before, after, "something was written next to the data directory");
    let blobs: Vec<_> = fs::read_dir(data.join("blobs")).unwrap().collect();
    assert!(blobs.is_empty(), "blobs were written: {blobs:?}");
    let mut top: Vec<String> = fs::read_dir(&data).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    top.sort();
    top.retain(|n| !n.starts_with("ays.sqlite"));
    assert_eq!(top, ["blobs", "lock", "tmp"]);
}

#[test]
fn the_redis_backend_holds_the_protocol_hashes_and_the_longest_expiration_wins() {
    let redis = RedisServer::start();
    let server = AysServer::start(&["--redis", &redis.url()]);
    let tree = make_tree();
    let want = expected_md(tree.path());

    // As a store: the md: and files: hashes exactly.
    publish_ok(&server.stor_url(), ID, "dom", tree.path());
    let md_key = format!("md:{ID}");
    let root: Value = serde_json::from_str(&redis.cli_text(&["HGET", &md_key, "/"])).unwrap();
    assert_eq!(root, want["/"]);
    let mut fields: Vec<String> = redis.cli_text(&["HKEYS", &md_key]).lines().map(str::to_string).collect();
    fields.sort();
    assert_eq!(fields, ["/", "/emptydir", "/sub", "/sub/deeper"]);
    let hello = md5_of(&tree.path().join("hello.txt"));
    assert_eq!(redis.cli(&["HGET", "files:dom", &hello]), b"hello world\n");
    assert_eq!(redis.cli_text(&["HLEN", "files:dom"]), "6");
    assert_eq!(server.get(&format!("/stor/md/{}", enc(ID))).json(), want);
    let big = md5_of(&tree.path().join("sub/big"));
    assert_eq!(server.get(&format!("/stor/blob/dom/{big}")).body, fs::read(tree.path().join("sub/big")).unwrap());
    let h = server.req("HEAD", &format!("/stor/blob/dom/{big}"), &[], b"");
    assert_eq!((h.status, h.header("content-length")), (200, Some("300000")));

    // The registry, under ays:. The longest expiration wins; 0 (never expire) is the longest.
    post_json(&server, "/ays/client/c1", json!({"platform": "ubuntu64"}));
    assert!(redis.cli_text(&["HGET", "ays:clients", "c1"]).contains("ubuntu64"));
    let expiration = || -> Value {
        let v: Value = serde_json::from_str(&redis.cli_text(&["HGET", "ays:stors", "main"])).unwrap();
        v["expiration"].clone()
    };
    for (announced, kept) in [(24, 24), (48, 48), (12, 48), (0, 0), (100, 0)] {
        post_json(&server, "/ays/stor/main", json!({"url": "http://127.0.0.1:9/x", "expiration": announced}));
        assert_eq!(expiration(), json!(kept), "after announcing {announced}");
    }

    // As a cache in front of an embedded store.
    let store = AysServer::start(&[]);
    publish_ok(&store.stor_url(), ID2, "other", tree.path());
    announce(&server, "upstream", &store.stor_url(), "m2", ID2);
    assert!(redis.cli_text(&["HGET", "ays:mounts:client1", "m2"]).contains(ID2));
    assert_eq!(server.get("/md/client1/m2/?fetch=0").status, 404);
    assert_eq!(server.get("/md/client1/m2/sub?fetch=1").json()["dirs"], json!(["deeper"]));
    assert_eq!(redis.cli_text(&["HEXISTS", &format!("md:{ID2}"), "/sub/deeper"]), "1");
    assert_eq!(server.get(&format!("/other/{hello}?fetch=3")).body, b"hello world\n");
    assert_eq!(redis.cli_text(&["HEXISTS", "files:other", &hello]), "0");
    assert_eq!(server.get(&format!("/other/{hello}?fetch=1")).body, b"hello world\n");
    assert_eq!(redis.cli(&["HGET", "files:other", &hello]), b"hello world\n");
}

/// Uploads into a Redis store are spooled in the temporary directory, one file each, and a
/// server stopped by SIGTERM leaves nothing there.
#[test]
fn a_stopped_redis_backed_server_leaves_nothing_in_the_temporary_directory() {
    let redis = RedisServer::start();
    let tmp = tempfile::tempdir().unwrap();
    let server = AysServer::start_env(&["--redis", &redis.url()], &[("TMPDIR", tmp.path().to_str().unwrap())]);
    let tree = make_tree();
    publish_ok(&server.stor_url(), ID, "dom", tree.path());
    let big = md5_of(&tree.path().join("sub/big"));
    assert_eq!(redis.cli(&["HGET", "files:dom", &big]), fs::read(tree.path().join("sub/big")).unwrap());
    drop(server);
    let left: Vec<_> = fs::read_dir(tmp.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(left.is_empty(), "left in TMPDIR: {left:?}");
}

#[test]
fn a_cache_expires_what_it_fetched_from_a_store_by_that_stores_expiration() {
    let store = AysServer::start(&[]);
    let tree = make_tree();
    publish_ok(&store.stor_url(), ID2, "other", tree.path());
    let redis = RedisServer::start();
    let cache = AysServer::start(&["--redis", &redis.url()]);
    announce(&cache, "upstream", &store.stor_url(), "m2", ID2);
    // Announced again with a shorter expiration: the longest (48 hours) stays.
    post_json(&cache, "/ays/stor/upstream", json!({"url": store.stor_url(), "expiration": 1}));
    let hello = md5_of(&tree.path().join("hello.txt"));
    let big = md5_of(&tree.path().join("sub/big"));
    assert_eq!(cache.get("/md/client1/m2/sub?fetch=1").status, 200);
    assert_eq!(cache.get(&format!("/other/{hello}?fetch=1")).body, b"hello world\n");
    assert_eq!(cache.get(&format!("/other/{big}?fetch=1")).status, 200);
    // fetch=3 keeps nothing, so records nothing.
    let tool = md5_of(&tree.path().join("tool"));
    assert_eq!(cache.get(&format!("/other/{tool}?fetch=3")).status, 200);
    // Put straight into its store (published, or written back by a client): no record.
    publish_ok(&cache.stor_url(), ID, "pub", tree.path());

    let at = |item: &str| redis.cli_text(&["HGET", "ays:fetched:at", item]);
    let (hello_k, big_k, tree_k) = (format!("files:other:{hello}"), format!("files:other:{big}"), format!("md:{ID2}"));
    let now: i64 = at(&hello_k).parse().expect("the fetched blob has a record");
    assert!(at(&tree_k).parse::<i64>().is_ok(), "the fetched tree has a record");
    assert_eq!(redis.cli_text(&["HGET", "ays:fetched:stor", &hello_k]), "upstream");
    assert_eq!(redis.cli_text(&["HLEN", "ays:fetched:at"]), "3", "a blob and a tree fetched and kept, fetch=3 and published not");

    // The blob and the tree were last used 49 hours ago, the big blob an hour ago.
    let old = (now - 49 * 3600).to_string();
    redis.cli(&["HSET", "ays:fetched:at", &hello_k, &old]);
    redis.cli(&["HSET", "ays:fetched:at", &tree_k, &old]);
    redis.cli(&["HSET", "ays:fetched:at", &big_k, &(now - 3600).to_string()]);
    // The sweep runs when a server starts.
    drop(cache);
    let cache = AysServer::start(&["--redis", &redis.url()]);
    assert!(eventually(Duration::from_secs(10), || redis.cli_text(&["HEXISTS", "files:other", &hello]) == "0"), "{}", cache.log_text());
    assert!(eventually(Duration::from_secs(10), || redis.cli_text(&["EXISTS", &format!("md:{ID2}")]) == "0"));
    assert!(cache.log_text().contains("expiry sweep: deleted"), "{}", cache.log_text());
    assert_eq!(at(&hello_k), "", "the record goes with the blob");
    assert_eq!(redis.cli_text(&["HEXISTS", "files:other", &big]), "1", "used an hour ago: kept");
    assert_eq!(redis.cli_text(&["HLEN", "files:pub"]), "6", "published: never expires");
    assert_eq!(redis.cli_text(&["EXISTS", &format!("md:{ID}")]), "1");
    // Serving renews a record.
    assert_eq!(cache.get(&format!("/other/{big}?fetch=0")).status, 200);
    assert!(at(&big_k).parse::<i64>().unwrap() >= now);
    // An expired blob is fetched again on demand (and recorded again).
    assert_eq!(cache.get(&format!("/other/{hello}?fetch=1")).body, b"hello world\n");
    assert!(at(&hello_k).parse::<i64>().unwrap() >= now);

    // A client asking for 0 (never) wins: nothing expires any more.
    post_json(&cache, "/ays/stor/upstream", json!({"url": store.stor_url(), "expiration": 0}));
    redis.cli(&["HSET", "ays:fetched:at", &big_k, &(now - 1000 * 3600).to_string()]);
    drop(cache);
    let cache = AysServer::start(&["--redis", &redis.url()]);
    assert_eq!(cache.get(&format!("/other/{big}?fetch=0")).status, 200);
    assert!(!cache.log_text().contains("expiry sweep: deleted"), "{}", cache.log_text());
}

#[test]
fn http_bounds_framing_and_keep_alive() {
    let server = AysServer::start(&[]);
    let md5 = "5d41402abc4b2a76b9719d911017c592"; // md5("hello")
    // A declared body over the bound is refused before it is sent.
    let r = server.req("PUT", &format!("/stor/blob/dom/{md5}"), &[("Content-Length", "2147483648")], b"");
    assert_eq!(r.status, 413);
    let r = server.req("PUT", "/stor/md/x", &[("Content-Length", "100000000")], b"");
    assert_eq!(r.status, 413);
    // Chunked bodies are accepted; Content-Length together with chunked is not.
    let chunked = b"2\r\nhe\r\n3;ext=1\r\nllo\r\n0\r\n\r\n";
    let r = server.req("PUT", &format!("/stor/blob/dom/{md5}"), &[("Transfer-Encoding", "chunked")], chunked);
    assert_eq!(r.status, 204, "{}", r.text());
    assert_eq!(server.get(&format!("/stor/blob/dom/{md5}")).body, b"hello");
    let r = server.req("PUT", &format!("/stor/blob/dom/{md5}"), &[("Transfer-Encoding", "chunked"), ("Content-Length", "5")], chunked);
    assert_eq!(r.status, 400);
    // A head too large, a malformed request line, an unknown method.
    let r = server.req("GET", "/stor/md/x", &[("X-Big", &"a".repeat(20_000))], b"");
    assert_eq!(r.status, 431);
    let r = server.req("GET", "no-slash", &[], b"");
    assert_eq!(r.status, 400);
    let r = server.req("DELETE", "/stor/md/x", &[], b"");
    assert_eq!((r.status, r.header("allow")), (405, Some("GET, HEAD, PUT")));

    // Two requests on one connection.
    let mut s = TcpStream::connect(&server.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let req = format!("GET /stor/blob/dom/{md5} HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut got = Vec::new();
    for _ in 0..2 {
        s.write_all(req.as_bytes()).unwrap();
        let mut buf = [0u8; 4096];
        let mut answer = Vec::new();
        while !answer.ends_with(b"hello") {
            let n = s.read(&mut buf).unwrap();
            assert!(n > 0, "connection closed: {:?}", String::from_utf8_lossy(&answer));
            answer.extend_from_slice(&buf[..n]);
        }
        got.push(String::from_utf8_lossy(&answer).into_owned());
    }
    assert!(got.iter().all(|a| a.starts_with("HTTP/1.1 200")), "{got:?}");
}

#[test]
fn publish_refuses_symlinks_and_special_files_by_name() {
    let server = AysServer::start(&[]);
    let tree = make_tree();
    std::os::unix::fs::symlink("hello.txt", tree.path().join("sub/link")).unwrap();
    let dir = tree.path().display().to_string();
    let out = publish(&["--stor", &server.stor_url(), "--ays-id", ID, "--domain", "dom", &dir], &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("sub/link") && err.contains("symbolic link"), "{err}");
    assert_eq!(server.get(&format!("/stor/md/{}", enc(ID))).status, 404, "nothing is published");
    fs::remove_file(tree.path().join("sub/link")).unwrap();

    let fifo = std::ffi::CString::new(tree.path().join("pipe").display().to_string()).unwrap();
    // SAFETY: mkfifo with a valid C string.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
    let out = publish(&["--stor", &server.stor_url(), "--ays-id", ID, "--domain", "dom", &dir], &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("pipe") && err.contains("special file"), "{err}");

    let out = publish(&["--stor", &server.stor_url(), "--ays-id", ID, "--domain", "../x", &dir], &[]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("--domain"));
}

#[test]
fn sigterm_and_sigint_stop_the_server_cleanly() {
    for sig in [libc::SIGTERM, libc::SIGINT] {
        let server = AysServer::start(&[]);
        assert_eq!(server.get("/stor/md/x").status, 404);
        let log = server.log.clone();
        let status = server.stop_with(sig);
        assert!(status.success(), "signal {sig}: {status:?}\n{}", fs::read_to_string(log).unwrap_or_default());
    }
    // A second server on the same data directory is refused with a clear message.
    let first = AysServer::start(&[]);
    let dir = first.data_dir.clone().unwrap().display().to_string();
    let out = std::process::Command::new(truckeefs_tests::truckeefs_bin())
        .args(["ays", "serve", "--listen", "127.0.0.1:0", "--data-dir", &dir])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("busy"), "{}", String::from_utf8_lossy(&out.stderr));
}
