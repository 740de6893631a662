//! Flows of the aysfs core (`truckeefs_core::ays::AysCore`) with scripted completions.

use bytes::Bytes;
use truckeefs_core::ays::*;
use truckeefs_core::{Ctx, IoId, Op, Reply, RequestId, ROOT_INO};
use std::time::{Duration, Instant, SystemTime};

const A: &str = "39fcbe8882373fe8296a7121f7f5b860";
const B: &str = "0cc175b9c0f1b6a831c399e269772661";

fn spec() -> MountSpec {
    MountSpec {
        name: "m".into(),
        client_id: "c".into(),
        ays_id: "t|x(1)".into(),
        root: "/".into(),
        domain: "d".into(),
        layers: Layers { local: true, grids: 1, store: true },
        names: LayerNames {
            local: "127.0.0.1:1".into(),
            grids: vec!["http://g".into()],
            store: "st".into(),
            debug: "dbg".into(),
        },
        local_expiration_hours: 0,
        debug_filters: None,
        prefetch: false,
        prefetch_parallel: 2,
        walk_parallel: 4,
        readahead_files: 0,
        readahead_bytes: 0,
        readahead_parallel: 1,
    }
}

struct H {
    core: AysCore,
    now: Instant,
    wall: SystemTime,
    out: Vec<AysEffect>,
    next_id: u64,
}

fn b(s: &str) -> RedisValue {
    RedisValue::Data(Bytes::copy_from_slice(s.as_bytes()))
}

impl H {
    fn new(spec: MountSpec) -> H {
        let now = Instant::now();
        let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let core = AysCore::new(spec, now, wall).unwrap();
        let mut h = H { core, now, wall, out: Vec::new(), next_id: 1 };
        h.drain();
        h
    }

    fn drain(&mut self) {
        while let Some(e) = self.core.poll_effect() {
            self.out.push(e);
        }
    }

    /// Removes and returns the first I/O matching `f`.
    fn take_io(&mut self, f: impl Fn(&AysIo) -> bool) -> (IoId, AysIo) {
        let i = self
            .out
            .iter()
            .position(|e| matches!(e, AysEffect::Io { request, .. } if f(request)))
            .unwrap_or_else(|| panic!("no such I/O in {:#?}", self.out));
        match self.out.remove(i) {
            AysEffect::Io { io, request } => (io, request),
            _ => unreachable!(),
        }
    }

    fn complete(&mut self, io: IoId, r: AysResult) {
        self.core.handle_completion(self.now, self.wall, io, r);
        self.drain();
    }

    fn request(&mut self, op: Op) -> RequestId {
        let id = RequestId(self.next_id);
        self.next_id += 1;
        self.core.handle_request(self.now, self.wall, id, Ctx::default(), op);
        self.drain();
        id
    }

    fn reply(&mut self, id: RequestId) -> Option<Result<Reply, i32>> {
        let i = self.out.iter().position(|e| matches!(e, AysEffect::Reply { id: x, .. } if *x == id))?;
        match self.out.remove(i) {
            AysEffect::Reply { result, .. } => Some(result),
            _ => unreachable!(),
        }
    }

    fn logs(&self) -> Vec<String> {
        self.out
            .iter()
            .filter_map(|e| match e {
                AysEffect::Log { message, .. } => Some(message.clone()),
                _ => None,
            })
            .collect()
    }

    /// Answers the local tree load with `fields`.
    fn local_tree(&mut self, fields: &[(&str, &str)]) {
        let (io, _) = self.take_io(|r| matches!(r, AysIo::Redis { server: RedisServer::Local, cmds, .. } if cmds[0].0[0] == Arg::from("HGETALL")));
        let arr = fields.iter().flat_map(|(k, v)| [b(k), b(v)]).collect();
        self.complete(io, Ok(AysReply::Redis(vec![RedisValue::Array(arr)])));
    }
}

fn val(md5: &str, size: u64) -> String {
    format!("{md5},{size}")
}

fn ino_of(h: &mut H, parent: u64, name: &str) -> u64 {
    let id = h.request(Op::Lookup { parent, name: name.as_bytes().to_vec() });
    match h.reply(id) {
        Some(Ok(Reply::Entry(a))) => a.ino,
        other => panic!("lookup {name}: {other:?}"),
    }
}

#[test]
fn tree_from_local_then_blob_through_the_chain_with_a_corrupt_local_copy() {
    let mut h = H::new(spec());
    // A request before the tree is in waits.
    let early = h.request(Op::GetAttr { ino: ROOT_INO });
    assert!(h.reply(early).is_none());
    let root = format!(r#"{{"f": "{}", "x": "{},3,x"}}"#, val(A, 5), B);
    h.local_tree(&[("/", &root), ("/sub", "{}")]);
    assert!(matches!(h.reply(early), Some(Ok(Reply::Attr(_)))));
    assert!(h.logs().iter().any(|l| l.contains("loaded from local cache 127.0.0.1:1")), "{:?}", h.logs());
    let f = ino_of(&mut h, ROOT_INO, "f");
    let x = ino_of(&mut h, ROOT_INO, "x");
    let id = h.request(Op::GetAttr { ino: x });
    let Some(Ok(Reply::Attr(a))) = h.reply(id) else { panic!() };
    assert_eq!((a.perm, a.size, a.uid), (0o755, 3, 0));

    let open = h.request(Op::Open { ino: f, flags: libc::O_RDONLY });
    let (io, req) = h.take_io(|r| matches!(r, AysIo::Blob(BlobOp::Open { .. })));
    let AysIo::Blob(BlobOp::Open { handle: fh, .. }) = req else { unreachable!() };
    h.complete(io, Ok(AysReply::Present(None)));
    let md5 = Md5::parse(A).unwrap();
    // Local first: a corrupt copy.
    let (io, _) = h.take_io(|r| matches!(r, AysIo::Redis { server: RedisServer::Local, into_blob: Some(m), .. } if *m == md5));
    h.complete(io, Ok(AysReply::Redis(vec![RedisValue::Stored { md5: Md5::parse(B).unwrap(), len: 5 }])));
    assert!(h.logs().iter().any(|l| l.contains("corrupt copy in local cache 127.0.0.1:1")), "{:?}", h.logs());
    // Then the grid, which has it.
    let (io, req) = h.take_io(|r| matches!(r, AysIo::Http { server: HttpServer::Grid(0), .. }));
    assert!(matches!(req, AysIo::Http { route: Route::CacheBlob { fetch: 1, .. }, .. }));
    h.complete(io, Ok(AysReply::Http { status: 200, body: Bytes::new(), stored: Some((md5, 5)) }));
    // Written back into the local cache (replacing the corrupt copy), with an atime record.
    let (_, wb) = h.take_io(|r| matches!(r, AysIo::Redis { server: RedisServer::Local, cmds, .. } if cmds[0].0.contains(&Arg::Blob(md5))));
    let AysIo::Redis { cmds, .. } = wb else { unreachable!() };
    assert_eq!(cmds[1].0[1], Arg::from("atime:files:d"));
    let (io, _) = h.take_io(|r| matches!(r, AysIo::Blob(BlobOp::Open { .. })));
    h.complete(io, Ok(AysReply::Present(Some(5))));
    assert_eq!(h.reply(open), Some(Ok(Reply::Opened { fh, keep_cache: true, stale_attrs: false })));
    let rd = h.request(Op::Read { ino: f, fh, offset: 2, size: 100 });
    let (io, req) = h.take_io(|r| matches!(r, AysIo::Blob(BlobOp::Read { .. })));
    assert_eq!(req, AysIo::Blob(BlobOp::Read { handle: fh, offset: 2, len: 3 }));
    h.complete(io, Ok(AysReply::Data(Bytes::from_static(b"llo"))));
    assert_eq!(h.reply(rd), Some(Ok(Reply::Data(Bytes::from_static(b"llo")))));
    // Reads past the end answer at once.
    let rd = h.request(Op::Read { ino: f, fh, offset: 5, size: 100 });
    assert_eq!(h.reply(rd), Some(Ok(Reply::Data(Bytes::new()))));
    // Writes are refused.
    let w = h.request(Op::Open { ino: f, flags: libc::O_WRONLY });
    assert_eq!(h.reply(w), Some(Err(libc::EROFS)));
    let m = h.request(Op::MkDir { parent: ROOT_INO, name: b"d".to_vec(), mode: 0o755, umask: 0 });
    assert_eq!(h.reply(m), Some(Err(libc::EROFS)));
    let c = h.request(Op::Create { parent: ROOT_INO, name: b"n".to_vec(), mode: 0o644, umask: 0, flags: libc::O_WRONLY });
    assert_eq!(h.reply(c), Some(Err(libc::EROFS)));
}

#[test]
fn a_blob_in_no_layer_is_eio_with_every_layer_named() {
    let mut h = H::new(spec());
    let root = format!(r#"{{"f": "{}", "bad": "zzz"}}"#, val(A, 5));
    h.local_tree(&[("/", &root)]);
    let bad = ino_of(&mut h, ROOT_INO, "bad");
    let o = h.request(Op::Open { ino: bad, flags: libc::O_RDONLY });
    assert_eq!(h.reply(o), Some(Err(libc::EIO)));
    assert!(h.logs().iter().any(|l| l.contains("/bad") && l.contains("metadata from local cache")), "{:?}", h.logs());
    let f = ino_of(&mut h, ROOT_INO, "f");
    let o = h.request(Op::Open { ino: f, flags: libc::O_RDONLY });
    let (io, _) = h.take_io(|r| matches!(r, AysIo::Blob(BlobOp::Open { .. })));
    h.complete(io, Ok(AysReply::Present(None)));
    let (io, _) = h.take_io(|r| matches!(r, AysIo::Redis { into_blob: Some(_), .. }));
    h.complete(io, Ok(AysReply::Redis(vec![RedisValue::Nil])));
    let (io, _) = h.take_io(|r| matches!(r, AysIo::Http { server: HttpServer::Grid(0), .. }));
    h.complete(io, Err("connection refused".into()));
    let (io, _) = h.take_io(|r| matches!(r, AysIo::Http { server: HttpServer::Store, .. }));
    h.complete(io, Ok(AysReply::Http { status: 500, body: Bytes::new(), stored: None }));
    assert_eq!(h.reply(o), Some(Err(libc::EIO)));
    let line = h.logs().into_iter().find(|l| l.contains("is in no layer intact")).unwrap();
    assert!(line.contains("local cache 127.0.0.1:1: missing"), "{line}");
    assert!(line.contains("grid cache http://g: failed: connection refused"), "{line}");
    assert!(line.contains("store st: failed: HTTP status 500"), "{line}");
}

#[test]
fn tree_walked_from_the_grid_is_written_back_locally() {
    let mut h = H::new(spec());
    h.local_tree(&[]);
    let (io, req) = h.take_io(|r| matches!(r, AysIo::Http { server: HttpServer::Grid(0), .. }));
    assert!(matches!(&req, AysIo::Http { route: Route::CacheMd { dir, client, mount, fetch: 1 }, .. } if dir == "/" && client == "c" && mount == "m"));
    let body = format!(r#"{{"files": {{"f": "{}"}}, "dirs": ["a"]}}"#, val(A, 5));
    h.complete(io, Ok(AysReply::Http { status: 200, body: Bytes::from(body), stored: None }));
    let (io, req) = h.take_io(|r| matches!(r, AysIo::Http { server: HttpServer::Grid(0), .. }));
    assert!(matches!(&req, AysIo::Http { route: Route::CacheMd { dir, .. }, .. } if dir == "/a"));
    h.complete(io, Ok(AysReply::Http { status: 200, body: Bytes::from_static(br#"{"files": {}, "dirs": []}"#), stored: None }));
    let (_, wb) = h.take_io(|r| matches!(r, AysIo::Redis { server: RedisServer::Local, cmds, .. } if cmds[0].0[0] == Arg::from("HSET")));
    let AysIo::Redis { cmds, .. } = wb else { unreachable!() };
    assert_eq!(cmds[0].0[1], Arg::from("md:t|x(1)"));
    assert_eq!(cmds[0].0.len(), 6, "two fields: / and /a");
    let a = ino_of(&mut h, ROOT_INO, "a");
    let rd = h.request(Op::ReadDir { ino: a, fh: 0, offset: 0, size: 4096, plus: false });
    let Some(Ok(Reply::Dir(e))) = h.reply(rd) else { panic!() };
    assert_eq!(e.len(), 2);
}

#[test]
fn no_tree_anywhere_fails_waiting_requests() {
    let mut h = H::new(spec());
    let early = h.request(Op::Lookup { parent: ROOT_INO, name: b"x".to_vec() });
    h.local_tree(&[]);
    let (io, _) = h.take_io(|r| matches!(r, AysIo::Http { server: HttpServer::Grid(0), .. }));
    h.complete(io, Ok(AysReply::Http { status: 404, body: Bytes::new(), stored: None }));
    let (io, _) = h.take_io(|r| matches!(r, AysIo::Http { server: HttpServer::Store, .. }));
    h.complete(io, Ok(AysReply::Http { status: 200, body: Bytes::from_static(b"garbage"), stored: None }));
    assert_eq!(h.reply(early), Some(Err(libc::EIO)));
    let line = h.logs().into_iter().find(|l| l.contains("is in no layer")).unwrap();
    assert!(line.contains("store st: failed: metadata tree is not JSON"), "{line}");
}

#[test]
fn debug_overlay_write_is_published_with_a_log_entry() {
    let mut s = spec();
    s.debug_filters = Some(vec![r".*\.py".into()]);
    let mut h = H::new(s);
    h.local_tree(&[("/", "{}")]);
    // The debug paths are read before the tree is ready.
    let (io, _) = h.take_io(|r| matches!(r, AysIo::Redis { server: RedisServer::Debug, .. }));
    h.complete(io, Ok(AysReply::Redis(vec![RedisValue::Array(vec![])])));
    let no = h.request(Op::Create { parent: ROOT_INO, name: b"a.txt".to_vec(), mode: 0o644, umask: 0, flags: libc::O_WRONLY });
    assert_eq!(h.reply(no), Some(Err(libc::EROFS)));
    let c = h.request(Op::Create { parent: ROOT_INO, name: b"a.py".to_vec(), mode: 0o644, umask: 0, flags: libc::O_WRONLY });
    let (io, req) = h.take_io(|r| matches!(r, AysIo::Blob(BlobOp::Scratch { .. })));
    let AysIo::Blob(BlobOp::Scratch { handle: fh, from: None }) = req else { panic!("{req:?}") };
    h.complete(io, Ok(AysReply::Done));
    let Some(Ok(Reply::Created { attr, .. })) = h.reply(c) else { panic!() };
    let w = h.request(Op::Write { ino: attr.ino, fh, offset: 0, data: Bytes::from_static(b"print(1)\n") });
    let (io, _) = h.take_io(|r| matches!(r, AysIo::Blob(BlobOp::Write { .. })));
    h.complete(io, Ok(AysReply::Written(9)));
    assert_eq!(h.reply(w), Some(Ok(Reply::Written(9))));
    let fl = h.request(Op::Flush { ino: attr.ino, fh, lock_owner: 0 });
    let (io, _) = h.take_io(|r| matches!(r, AysIo::Blob(BlobOp::Commit { .. })));
    let md5 = Md5::parse(B).unwrap();
    h.complete(io, Ok(AysReply::Stored { md5, len: 9 }));
    let (io, req) = h.take_io(|r| matches!(r, AysIo::Redis { server: RedisServer::Debug, .. }));
    let AysIo::Redis { cmds, .. } = req else { unreachable!() };
    assert_eq!(cmds[0].0, vec![Arg::from("HSET"), Arg::from("debug:files:m"), Arg::from(B), Arg::Blob(md5)]);
    assert_eq!(cmds[1].0, vec![Arg::from("HSET"), Arg::from("debug:paths:m"), Arg::from("/a.py"), Arg::from(format!("{B},9"))]);
    assert_eq!(cmds[2].0, vec![Arg::from("HSET"), Arg::from("debug:times:m"), Arg::from("/a.py"), Arg::from("1000000.000000000")]);
    assert_eq!(cmds[3].0, vec![Arg::from("RPUSH"), Arg::from("debug:log:m"), Arg::from(format!("[1000000, \"/a.py\", \"{B}\"]"))]);
    assert!(h.reply(fl).is_none(), "flush waits for the debug redis");
    h.complete(io, Ok(AysReply::Redis(vec![RedisValue::Int(1); 4])));
    assert_eq!(h.reply(fl), Some(Ok(Reply::Empty)));
    // A clean release publishes nothing more.
    let r = h.request(Op::Release { ino: attr.ino, fh, lock_owner: None });
    assert_eq!(h.reply(r), Some(Ok(Reply::Empty)));
    assert!(!h.out.iter().any(|e| matches!(e, AysEffect::Io { request: AysIo::Blob(BlobOp::Commit { .. }), .. })));
    let id = h.request(Op::GetAttr { ino: attr.ino });
    let Some(Ok(Reply::Attr(a))) = h.reply(id) else { panic!() };
    assert_eq!(a.size, 9);
    // Reading it again looks at the debug redis first, then fetches the blob from it.
    let o = h.request(Op::Open { ino: attr.ino, flags: libc::O_RDONLY });
    let (io, _) = h.take_io(|r| matches!(r, AysIo::Redis { server: RedisServer::Debug, cmds, .. } if cmds[0].0[0] == Arg::from("HGET")));
    h.complete(io, Ok(AysReply::Redis(vec![RedisValue::Data(Bytes::from(format!("{B},9")))])));
    let (io, _) = h.take_io(|r| matches!(r, AysIo::Blob(BlobOp::Open { .. })));
    h.complete(io, Ok(AysReply::Present(None)));
    let (io, req) = h.take_io(|r| matches!(r, AysIo::Redis { server: RedisServer::Debug, .. }));
    assert!(matches!(req, AysIo::Redis { into_blob: Some(m), .. } if m == md5));
    h.complete(io, Ok(AysReply::Redis(vec![RedisValue::Stored { md5, len: 9 }])));
    let (io, _) = h.take_io(|r| matches!(r, AysIo::Blob(BlobOp::Open { .. })));
    h.complete(io, Ok(AysReply::Present(Some(9))));
    assert!(matches!(h.reply(o), Some(Ok(Reply::Opened { keep_cache: false, .. }))));
}

#[test]
fn expiry_sweep_deletes_what_was_not_fetched_for_too_long() {
    let mut s = spec();
    s.local_expiration_hours = 1;
    let mut h = H::new(s);
    assert!(h.core.poll_timeout().is_some());
    h.core.handle_timeout(h.now, h.wall);
    h.drain();
    let (io, _) = h.take_io(|r| matches!(r, AysIo::Redis { cmds, .. } if cmds.len() == 2 && cmds[0].0[0] == Arg::from("HGETALL") && cmds[0].0[1] == Arg::from("atime:files:d")));
    let old = (1_000_000 - 7200).to_string();
    let fresh = (1_000_000 - 60).to_string();
    h.complete(
        io,
        Ok(AysReply::Redis(vec![
            RedisValue::Array(vec![b(A), b(&old), b(B), b(&fresh)]),
            RedisValue::Array(vec![b("t|x(1)"), b(&old)]),
        ])),
    );
    let (_, req) = h.take_io(|r| matches!(r, AysIo::Redis { cmds, .. } if cmds[0].0[0] == Arg::from("HDEL")));
    let AysIo::Redis { cmds, .. } = req else { unreachable!() };
    assert_eq!(cmds[0].0, vec![Arg::from("HDEL"), Arg::from("files:d"), Arg::from(A)]);
    assert_eq!(cmds[1].0, vec![Arg::from("HDEL"), Arg::from("atime:files:d"), Arg::from(A)]);
    assert_eq!(cmds[2].0, vec![Arg::from("DEL"), Arg::from("md:t|x(1)")]);
    assert!(h.core.poll_timeout().unwrap() > h.now);
}

#[test]
fn prefetch_fetches_every_blob_once() {
    let mut s = spec();
    s.prefetch = true;
    s.layers = Layers { local: true, grids: 0, store: false };
    let mut h = H::new(s);
    let root = format!(r#"{{"f": "{}", "g": "{}", "h": "{}"}}"#, val(A, 5), val(A, 5), val(B, 1));
    h.local_tree(&[("/", &root)]);
    let (io1, _) = h.take_io(|r| matches!(r, AysIo::Blob(BlobOp::Has { .. })));
    let (io2, _) = h.take_io(|r| matches!(r, AysIo::Blob(BlobOp::Has { .. })));
    h.complete(io1, Ok(AysReply::Present(Some(5))));
    h.complete(io2, Ok(AysReply::Present(None)));
    let (io, _) = h.take_io(|r| matches!(r, AysIo::Redis { into_blob: Some(_), .. }));
    h.complete(io, Ok(AysReply::Redis(vec![RedisValue::Nil])));
    let logs = h.logs();
    assert!(logs.iter().any(|l| l.contains("prefetch m: 2 blobs, 6 bytes")), "{logs:?}");
    assert!(logs.iter().any(|l| l.contains("prefetch m: done: 2 blobs, 5 bytes in the blob cache, 1 failed")), "{logs:?}");
}

/// A mount with only a local cache, reading ahead at most 3 files and 50 bytes, `parallel` at
/// once.
fn readahead_spec(parallel: usize) -> MountSpec {
    let mut s = spec();
    s.layers = Layers { local: true, grids: 0, store: false };
    s.readahead_files = 3;
    s.readahead_bytes = 50;
    s.readahead_parallel = parallel;
    s
}

#[test]
fn opening_a_file_reads_the_next_files_of_its_directory_ahead() {
    const C: &str = "cccccccccccccccccccccccccccccccc";
    const D: &str = "dddddddddddddddddddddddddddddddd";
    let mut h = H::new(readahead_spec(1));
    let root = format!(
        r#"{{"a": "{}", "b": "{}", "c": "{}", "d": "{}", "e": "{}"}}"#,
        val(A, 5),
        val(B, 1),
        val(C, 10),
        val(D, 100),
        val(A, 5)
    );
    h.local_tree(&[("/", &root), ("/sub", "{}")]);
    let has = |md5: &str| {
        let m = Md5::parse(md5).unwrap();
        move |r: &AysIo| matches!(r, AysIo::Blob(BlobOp::Has { md5 }) if *md5 == m)
    };
    let a = ino_of(&mut h, ROOT_INO, "a");
    h.request(Op::Open { ino: a, flags: libc::O_RDONLY });
    h.take_io(|r| matches!(r, AysIo::Blob(BlobOp::Open { .. })));
    // The window after "a": "b", "c" and "d" (which passes the 50 bytes and ends it; not "e"),
    // one at a time.
    let (io, _) = h.take_io(has(B));
    assert!(!h.out.iter().any(|e| matches!(e, AysEffect::Io { request: AysIo::Blob(BlobOp::Has { .. }), .. })), "one at a time");
    h.complete(io, Ok(AysReply::Present(Some(1))));
    let (io, _) = h.take_io(has(C));
    h.complete(io, Ok(AysReply::Present(None)));
    // Not in the blob cache: fetched through the chain.
    let (fetch_c, _) = h.take_io(|r| matches!(r, AysIo::Redis { into_blob: Some(m), .. } if m.hex() == C));
    // Opening "b": "c" is being fetched and "d" waits for it (one at a time): nothing new.
    let b_ino = ino_of(&mut h, ROOT_INO, "b");
    h.request(Op::Open { ino: b_ino, flags: libc::O_RDONLY });
    h.take_io(|r| matches!(r, AysIo::Blob(BlobOp::Open { .. })));
    assert!(!h.out.iter().any(|e| matches!(e, AysEffect::Io { request: AysIo::Blob(BlobOp::Has { .. }), .. })), "{:#?}", h.out);
    h.complete(fetch_c, Ok(AysReply::Redis(vec![RedisValue::Stored { md5: Md5::parse(C).unwrap(), len: 10 }])));
    // "c" is in: "d" goes next.
    h.take_io(has(D));
    // Opening "c": the window holds "d" (checked already), then "e" is past the bytes.
    let c_ino = ino_of(&mut h, ROOT_INO, "c");
    h.request(Op::Open { ino: c_ino, flags: libc::O_RDONLY });
    h.take_io(|r| matches!(r, AysIo::Blob(BlobOp::Open { .. })));
    // "e" has the content of "a": read ahead after "d" only when its turn comes.
    assert!(!h.out.iter().any(|e| matches!(e, AysEffect::Io { request: AysIo::Blob(BlobOp::Has { .. }), .. })));
}

#[test]
fn the_read_ahead_of_a_directory_s_last_file_goes_on_into_the_next_directory() {
    let mut h = H::new(readahead_spec(2));
    let d1 = format!(r#"{{"a": "{}"}}"#, val(A, 5));
    let d2 = format!(r#"{{"b": "{}"}}"#, val(B, 1));
    h.local_tree(&[("/", "{}"), ("/d1", &d1), ("/d1/empty", "{}"), ("/d2", &d2)]);
    let d1_ino = ino_of(&mut h, ROOT_INO, "d1");
    let a = ino_of(&mut h, d1_ino, "a");
    h.request(Op::Open { ino: a, flags: libc::O_RDONLY });
    h.take_io(|r| matches!(r, AysIo::Blob(BlobOp::Open { .. })));
    // "a" ends /d1; its empty subdirectory holds nothing; "b" of /d2 is next in a walk.
    let b_md5 = Md5::parse(B).unwrap();
    h.take_io(|r| matches!(r, AysIo::Blob(BlobOp::Has { md5 }) if *md5 == b_md5));
    assert!(!h.out.iter().any(|e| matches!(e, AysEffect::Io { request: AysIo::Blob(BlobOp::Has { .. }), .. })), "{:#?}", h.out);
}
