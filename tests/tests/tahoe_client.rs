//! The Tahoe-LAFS web API client (`runtime-smol/src/tahoe.rs`) against a private grid
//! (`src/tahoe_grid.rs`): uploads, Range reads, directory operations, errors, timeouts, and the
//! FLAT object store. Every log line of the process is recorded and checked for capabilities.

use std::fs::{self, File};
use std::io::Write;
use std::net::TcpListener;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use truckeefs_core::{IoErrorKind, IoReply, ObjectId, StagingRequest, StoreRequest};
use truckeefs_runtime_smol::block_cache::{BlockCache, BlockCacheConfig, Fetch, StreamFetch};
use truckeefs_runtime_smol::staging::Staging;
use truckeefs_runtime_smol::tahoe::{
    execute_store, AuthToken, Replace, StorageStrategy, TahoeClient, UploadFormat,
};
use truckeefs_runtime_smol::tahoe_json::NodeKind;
use truckeefs_tests::tahoe_grid::TahoeGrid;
use truckeefs_tests::{assert_bytes_eq, pseudo_random_bytes};

const MIB: u64 = 1024 * 1024;

// ----- every log line, recorded -----

static LOG: Mutex<Vec<String>> = Mutex::new(Vec::new());

struct Recorder {
    next: AtomicU64,
}

struct Fields(String);

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.push_str(&format!(" {}={:?}", field.name(), value));
    }
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.push_str(&format!(" {}={}", field.name(), value));
    }
}

impl tracing::Subscriber for Recorder {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, attrs: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        let mut f = Fields(format!("span {}:", attrs.metadata().target()));
        attrs.record(&mut f);
        LOG.lock().unwrap().push(f.0);
        tracing::span::Id::from_u64(self.next.fetch_add(1, Ordering::Relaxed))
    }
    fn record(&self, _: &tracing::span::Id, values: &tracing::span::Record<'_>) {
        let mut f = Fields("record:".into());
        values.record(&mut f);
        LOG.lock().unwrap().push(f.0);
    }
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        let mut f = Fields(format!("{} {}:", event.metadata().level(), event.metadata().target()));
        event.record(&mut f);
        LOG.lock().unwrap().push(f.0);
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

/// The shared grid, with the recorder installed first.
fn grid() -> &'static TahoeGrid {
    static INIT: OnceLock<()> = OnceLock::new();
    INIT.get_or_init(|| {
        tracing::subscriber::set_global_default(Recorder { next: AtomicU64::new(1) })
            .expect("no other global subscriber in this test binary");
    });
    TahoeGrid::shared()
}

/// No line logged so far (by any test of this binary) contains a capability.
fn assert_no_caps_logged() {
    let log = LOG.lock().unwrap();
    for line in log.iter() {
        let lower = line.to_ascii_lowercase();
        assert!(
            !lower.contains("uri:") && !lower.contains("uri%3a"),
            "a capability was logged: {}",
            line.chars().take(120).collect::<String>()
        );
    }
}

/// The error message names the cap by fingerprint and never contains it.
#[track_caller]
fn assert_safe_message(message: &str, cap: &ObjectId) {
    assert!(message.contains(&cap.fingerprint()), "no fingerprint in {message:?}");
    assert!(!message.contains(&cap.0) && !message.contains("URI:"), "cap in {message:?}");
}

fn client(g: &TahoeGrid, net_timeout: Duration) -> TahoeClient {
    TahoeClient::new(&g.url, None, net_timeout, 4).unwrap()
}

fn rootcap(g: &TahoeGrid) -> ObjectId {
    ObjectId(g.mkdir())
}

fn write_file(path: &Path, data: &[u8]) {
    let mut f = File::create(path).unwrap();
    f.write_all(data).unwrap();
    f.sync_all().unwrap();
}

fn rss_bytes() -> u64 {
    let status = fs::read_to_string("/proc/self/status").unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap();
    kib * 1024
}

/// Everything [`TahoeClient::read_stream`] hands over, checking each piece but the last is whole.
fn stream_all(c: &TahoeClient, cap: &ObjectId, offset: u64, len: u64, piece_len: usize) -> Vec<u8> {
    let mut pieces: Vec<Vec<u8>> = Vec::new();
    c.read_stream(cap, offset, len, piece_len, &mut |p| {
        pieces.push(p.to_vec());
        true
    })
    .unwrap();
    if let Some((_, whole)) = pieces.split_last() {
        assert!(whole.iter().all(|p| p.len() == piece_len), "a piece shorter than {piece_len} bytes before the last");
    }
    pieces.concat()
}

/// A file written again after its staged copy went is copied back through the block cache: the
/// blocks it holds, then the rest of the object from the grid in one streamed request; the
/// first bytes wanted, zeros past the object's end, and on a failure the earlier copy left
/// alone.
#[test]
fn the_staging_area_copies_an_object_from_the_grid() {
    let g = grid();
    let c = Arc::new(client(g, Duration::from_secs(30)));
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("f");
    let data = pseudo_random_bytes(21, 5 * MIB as usize + 123);
    write_file(&path, &data);
    let cap = c.upload_file(&path, UploadFormat::Chk).unwrap();
    let (fetcher, streamer) = (c.clone(), c.clone());
    let fetch: Arc<Fetch> = Arc::new(move |o, off, len| fetcher.read_range(o, off, len));
    // Where each stream starts (no read-ahead: only the copies stream).
    let starts = Arc::new(Mutex::new(Vec::new()));
    let started = starts.clone();
    let stream: Arc<StreamFetch> = Arc::new(move |o, off, len, piece, f| {
        started.lock().unwrap().push(off);
        streamer.read_stream(o, off, len, piece, f)
    });
    let config = BlockCacheConfig { read_ahead: 0, ..BlockCacheConfig::default() };
    let blocks = Arc::new(BlockCache::new(&tmp.path().join("blocks"), config, fetch).with_stream(stream));
    let staging = Staging::open(&tmp.path().join("staging")).unwrap();
    let init =
        |from: &ObjectId, size: u64| staging.execute(&StagingRequest::Init { ino: 7, from: Some(from.clone()), size }, &*blocks);
    let staged = || fs::read(staging.data_path(7)).unwrap();

    assert_eq!(init(&cap, data.len() as u64), Ok(IoReply::Done));
    assert_bytes_eq(&staged(), &data, "the whole object");
    // Its first blocks read through the cache: those come from there, the stream after them.
    assert_bytes_eq(&blocks.read(&cap, 0, 2 * MIB as u32).unwrap(), &data[..2 * MIB as usize], "read");
    assert_eq!(init(&cap, data.len() as u64), Ok(IoReply::Done));
    assert_bytes_eq(&staged(), &data, "the whole object, partly cached");
    assert_eq!(*starts.lock().unwrap(), [0, 2 * MIB], "where the copies' streams started");
    assert_eq!(init(&cap, 1000), Ok(IoReply::Done));
    assert_bytes_eq(&staged(), &data[..1000], "a prefix");
    let longer = data.len() + 5000;
    assert_eq!(init(&cap, longer as u64), Ok(IoReply::Done));
    let got = staged();
    assert_eq!(got.len(), longer);
    assert_bytes_eq(&got[..data.len()], &data, "zero-extended");
    assert!(got[data.len()..].iter().all(|b| *b == 0), "zeros past the object's end");
    assert_eq!(init(&cap, 0), Ok(IoReply::Done));
    assert!(staged().is_empty());

    // An object the grid does not have (another key, so another storage index).
    let mut missing = cap.0.clone().into_bytes();
    let key_at = "URI:CHK:".len();
    missing[key_at] = if missing[key_at] == b'a' { b'b' } else { b'a' };
    let missing = ObjectId(String::from_utf8(missing).unwrap());
    assert_ne!(missing, cap);
    assert_eq!(init(&cap, 3), Ok(IoReply::Done));
    let e = init(&missing, 1000).unwrap_err();
    assert_eq!(e.kind, IoErrorKind::NotFound, "{e}");
    assert_safe_message(&e.message, &missing);
    assert_eq!(staged(), &data[..3], "a failed copy leaves the earlier one alone");
    assert_no_caps_logged();
}

#[test]
fn upload_10mib_and_read_ranges_back() {
    let g = grid();
    let c = client(g, Duration::from_secs(30));
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("f");
    let data = pseudo_random_bytes(10, 10 * MIB as usize);
    write_file(&path, &data);

    let t = Instant::now();
    let cap = c.upload_file(&path, UploadFormat::Chk).unwrap();
    eprintln!("10 MiB CHK upload: {:.2?}", t.elapsed());
    assert!(cap.0.starts_with("URI:CHK:"), "{cap:?}");
    // Immutable and convergent: the same bytes give the same cap.
    assert_eq!(c.upload_file(&path, UploadFormat::Chk).unwrap(), cap);

    let size = data.len() as u64;
    let ranges: &[(u64, u32)] = &[
        (0, 4096),
        (1, 1),
        (MIB - 10, 20),               // across a segment boundary
        (3 * MIB + 17, 3 * MIB as u32), // several segments at once
        (size - 100, 4096),           // short at the end
        (size - 1, 1),
        (size, 10),                   // at the end
        (size + 12345, 10),           // past it
        (u64::MAX - 5, 10),           // nowhere
        (7, 0),
    ];
    for &(offset, len) in ranges {
        let got = c.read_range(&cap, offset, len).unwrap();
        let start = offset.min(size) as usize;
        let end = offset.saturating_add(len as u64).min(size) as usize;
        assert_bytes_eq(&got, &data[start..end.max(start)], &format!("range {offset}+{len}"));
    }

    // The block cache's read stream: the whole object (a plain GET), from an offset to the end,
    // a bounded range, past the end, and a reader that stops after its first piece.
    let to_end = TahoeClient::STREAM_TO_END;
    let streams: &[(u64, u64, usize)] =
        &[(0, to_end, MIB as usize), (3 * MIB + 17, to_end, 100_000), (MIB - 10, 20, 7), (size - 100, 4096, 4096), (size + 5, to_end, 64)];
    for &(offset, len, piece_len) in streams {
        let got = stream_all(&c, &cap, offset, len, piece_len);
        let start = offset.min(size) as usize;
        let end = offset.saturating_add(len).min(size) as usize;
        assert_bytes_eq(&got, &data[start..end.max(start)], &format!("stream {offset}+{len}"));
    }
    let mut first = Vec::new();
    c.read_stream(&cap, 0, to_end, 4096, &mut |p| {
        first.push(p);
        false
    })
    .unwrap();
    assert_eq!(first.len(), 1);
    assert_bytes_eq(&first[0], &data[..4096], "the first piece of a stream");

    assert_eq!(c.head(&cap).unwrap(), Some(size));
    let node = c.stat(&cap).unwrap();
    assert_eq!((node.kind, node.size, node.mutable, node.format.as_deref()), (NodeKind::File, Some(size), Some(false), Some("CHK")));
    let check = c.check(&cap).unwrap();
    assert!(check.healthy && check.recoverable && check.shares_good == 1, "{check:?}");

    // MDMF: a new mutable file per upload.
    let m1 = c.upload_file(&path, UploadFormat::Mdmf).unwrap();
    let m2 = c.upload_file(&path, UploadFormat::Mdmf).unwrap();
    assert!(m1.0.starts_with("URI:MDMF:") && m1 != m2);
    let got = c.read_range(&m1, 5 * MIB - 3, 1_000_000).unwrap();
    assert_bytes_eq(&got, &data[(5 * MIB - 3) as usize..][..1_000_000], "MDMF range");
    assert_bytes_eq(&stream_all(&c, &m1, 0, TahoeClient::STREAM_TO_END, MIB as usize), &data, "MDMF stream");
    assert_eq!(c.stat(&m1).unwrap().format.as_deref(), Some("MDMF"));

    // Small and empty files become LIT caps (the data is in the cap).
    let small = tmp.path().join("small");
    write_file(&small, b"hello");
    let lit = c.upload_file(&small, UploadFormat::Chk).unwrap();
    assert_eq!(lit.0, "URI:LIT:nbswy3dp");
    assert_eq!(&c.read_range(&lit, 1, 100).unwrap()[..], b"ello");
    assert_eq!(stream_all(&c, &lit, 1, TahoeClient::STREAM_TO_END, 2), b"ello");
    let empty = tmp.path().join("empty");
    write_file(&empty, b"");
    let e = c.upload_file(&empty, UploadFormat::Chk).unwrap();
    assert_eq!(e.0, "URI:LIT:");
    assert!(c.read_range(&e, 0, 100).unwrap().is_empty());
    assert_no_caps_logged();
}

#[test]
fn upload_256mib_streams_from_disk() {
    let g = grid();
    let c = client(g, Duration::from_secs(30));
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("big");
    let chunks = 256u64;
    {
        let mut f = File::create(&path).unwrap();
        for i in 0..chunks {
            f.write_all(&pseudo_random_bytes(1000 + i, MIB as usize)).unwrap();
        }
        f.sync_all().unwrap();
    }
    let before = rss_bytes();
    let peak = Arc::new(AtomicU64::new(before));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, done) = (peak.clone(), done.clone());
        thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                peak.fetch_max(rss_bytes(), Ordering::Relaxed);
                thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let t = Instant::now();
    let cap = c.upload_file(&path, UploadFormat::Chk);
    let took = t.elapsed();
    done.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    let cap = cap.unwrap();
    let peak = peak.load(Ordering::Relaxed);
    eprintln!(
        "256 MiB CHK upload: {took:.1?}; test process RSS {} MiB before, {} MiB at most during",
        before / MIB,
        peak / MIB
    );
    // Whole-file buffering would add at least 256 MiB; other tests of this binary run meanwhile.
    assert!(peak < before + 96 * MIB, "RSS rose from {} to {} MiB", before / MIB, peak / MIB);

    assert_eq!(c.stat(&cap).unwrap().size, Some(chunks * MIB));
    for i in [0, 97, chunks - 1] {
        let got = c.read_range(&cap, i * MIB, MIB as u32).unwrap();
        assert_bytes_eq(&got, &pseudo_random_bytes(1000 + i, MIB as usize), &format!("MiB {i}"));
    }
    let got = c.read_range(&cap, 128 * MIB - 5, 10).unwrap();
    assert_bytes_eq(&got[..5], &pseudo_random_bytes(1127, MIB as usize)[MIB as usize - 5..], "boundary");
    assert_bytes_eq(&got[5..], &pseudo_random_bytes(1128, 5), "boundary");
    assert_no_caps_logged();
}

#[test]
fn directory_operations() {
    let g = grid();
    let c = client(g, Duration::from_secs(30));
    let root = rootcap(g);
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("f");
    write_file(&path, &pseudo_random_bytes(3, 100_000));
    let file = c.upload_file(&path, UploadFormat::Chk).unwrap();

    assert!(c.list(&root).unwrap().is_empty());
    c.link(&root, "a", &file, Replace::Any).unwrap();
    c.link(&root, "a", &file, Replace::Any).unwrap(); // idempotent
    let e = c.link(&root, "a", &file, Replace::Never).unwrap_err();
    assert_eq!(e.kind, IoErrorKind::Conflict, "{e}");
    assert_safe_message(&e.message, &root);

    let list = c.list(&root).unwrap();
    assert_eq!(list.keys().collect::<Vec<_>>(), ["a"]);
    let a = &list["a"];
    assert_eq!((a.kind, a.size, a.ro_uri.as_ref()), (NodeKind::File, Some(100_000), Some(&file)));
    assert!(a.link.unwrap().created.is_some());
    let child = c.stat_child(&root, "a").unwrap();
    assert_eq!(child.ro_uri.as_ref(), Some(&file));

    // Names are percent-encoded.
    let odd = "sp ace?#%&=+é;,'\"\\ ~.tmp";
    c.link(&root, odd, &file, Replace::Never).unwrap();
    assert!(c.list(&root).unwrap().contains_key(odd));

    // Relink within the directory, then into a subdirectory made by mkdir_child.
    c.relink(&root, "a", None, "b", Replace::Never).unwrap();
    let sub = c.mkdir_child(&root, "sub").unwrap();
    assert!(sub.0.starts_with("URI:DIR2:"));
    c.relink(&root, "b", Some(&sub), "c", Replace::Never).unwrap();
    let list = c.list(&root).unwrap();
    assert_eq!(list.keys().map(String::as_str).collect::<Vec<_>>(), [odd, "sub"]);
    assert_eq!(list["sub"].kind, NodeKind::Dir);
    assert_eq!(list["sub"].rw_uri.as_ref(), Some(&sub));
    assert_eq!(c.list(&sub).unwrap()["c"].ro_uri.as_ref(), Some(&file));

    let e = c.relink(&root, "nonexistent", None, "x", Replace::Any).unwrap_err();
    assert_eq!(e.kind, IoErrorKind::NotFound, "{e}");
    // Onto a taken name: refused with replace=false, and onto a directory with only-files.
    c.link(&root, "d", &file, Replace::Never).unwrap();
    assert_eq!(c.relink(&root, odd, None, "d", Replace::Never).unwrap_err().kind, IoErrorKind::Conflict);
    assert_eq!(c.relink(&root, odd, None, "sub", Replace::OnlyFiles).unwrap_err().kind, IoErrorKind::Conflict);
    c.relink(&root, odd, None, "d", Replace::OnlyFiles).unwrap();
    // mkdir onto a taken name is refused (Tahoe would replace the directory by default).
    assert_eq!(c.mkdir_child(&root, "sub").unwrap_err().kind, IoErrorKind::Conflict);
    assert_eq!(c.list(&sub).unwrap().len(), 1);

    // Unlink returns what was linked; a missing name is NotFound.
    assert_eq!(c.unlink(&sub, "c").unwrap(), file);
    let e = c.unlink(&sub, "c").unwrap_err();
    assert_eq!(e.kind, IoErrorKind::NotFound, "{e}");
    assert_safe_message(&e.message, &sub);
    assert_eq!(c.unlink(&root, "sub").unwrap(), sub);
    assert_eq!(c.unlink(&root, "d").unwrap(), file);
    assert!(c.list(&root).unwrap().is_empty());

    // A fresh unlinked directory, linked by cap like a file.
    let d = c.mkdir().unwrap();
    c.link(&root, "dir", &d, Replace::Never).unwrap();
    assert_eq!(c.list(&root).unwrap()["dir"].kind, NodeKind::Dir);
    assert_no_caps_logged();
}

#[test]
fn malformed_and_unknown_caps_are_typed_errors() {
    let g = grid();
    let c = client(g, Duration::from_secs(10));
    // Malformed: refused before any request.
    for bad in ["", "hello", "URI:CHK:abc/../../x", "URI:CHK:a b", "URI:CHK:abc?t=json", "URI:CHK:\u{e9}"] {
        let cap = ObjectId(bad.to_string());
        for e in [
            c.read_range(&cap, 0, 10).unwrap_err(),
            c.stat(&cap).unwrap_err(),
            c.list(&cap).unwrap_err(),
            c.head(&cap).unwrap_err(),
        ] {
            assert_eq!(e.kind, IoErrorKind::Corrupt, "{bad:?}: {e}");
            assert!(e.message.contains(&cap.fingerprint()), "{e}");
            assert!(bad.len() < 3 || !e.message.contains(bad), "{e}");
        }
    }
    // Well-formed but of no kind the gateway knows: 400 "unknown URI type".
    let unknown_kind = ObjectId("URI:CHK:garbage".into());
    let e = c.read_range(&unknown_kind, 0, 10).unwrap_err();
    assert_eq!(e.kind, IoErrorKind::Corrupt, "{e}");
    assert_safe_message(&e.message, &unknown_kind);
    assert_eq!(c.stat(&unknown_kind).unwrap().kind, NodeKind::Unknown);
    assert_eq!(c.list(&unknown_kind).unwrap_err().kind, IoErrorKind::Corrupt);

    // A valid cap of an object no server holds: 410 Gone (no shares), NotFound.
    let missing = ObjectId(
        "URI:CHK:aac4rhq4xvxkxfr2lrv57f5gaa:fhvmu3edq7e5e25yjwmgpl62f6bq4xf3uzhklyzafxrzbg47bcua:1:1:100000".into(),
    );
    let e = c.read_range(&missing, 0, 10).unwrap_err();
    assert_eq!(e.kind, IoErrorKind::NotFound, "{e}");
    assert_safe_message(&e.message, &missing);
    assert!(e.message.contains("410"), "{e}");
    let check = c.check(&missing).unwrap();
    assert!(!check.recoverable && check.shares_good == 0);
    let missing_dir =
        ObjectId("URI:DIR2:aaaaaaaaaaaaaaaaaaaaaaaaaa:nuqqntkgikl2h6a46zpmvljpfnfoys35u6otait3xc4ofovjt6iq".into());
    let e = c.list(&missing_dir).unwrap_err();
    assert_eq!(e.kind, IoErrorKind::NotFound, "{e}");
    assert_safe_message(&e.message, &missing_dir);
    let e = c.link(&missing_dir, "x", &missing, Replace::Any).unwrap_err();
    assert_eq!(e.kind, IoErrorKind::NotFound, "{e}");

    // A file cap where a directory is expected.
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("f");
    write_file(&path, &[1u8; 1000]);
    let file = c.upload_file(&path, UploadFormat::Chk).unwrap();
    let e = c.list(&file).unwrap_err();
    assert_eq!(e.kind, IoErrorKind::Corrupt, "{e}");
    assert_safe_message(&e.message, &file);
    let e = c.link(&file, "x", &file, Replace::Any).unwrap_err();
    assert!(matches!(e.kind, IoErrorKind::Other | IoErrorKind::Conflict), "{e}");
    assert_safe_message(&e.message, &file);
    assert_no_caps_logged();
}

#[test]
fn a_gateway_that_is_down_fails_within_net_timeout() {
    let net_timeout = Duration::from_secs(2);
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("f");
    write_file(&path, &pseudo_random_bytes(5, 4 * MIB as usize));
    let cap = ObjectId("URI:LIT:nbswy3dp".into());

    // Nothing listens: refused at once.
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let c = TahoeClient::new(&format!("http://127.0.0.1:{port}"), None, net_timeout, 2).unwrap();
    let t = Instant::now();
    let e = c.read_range(&cap, 0, 5).unwrap_err();
    assert_eq!(e.kind, IoErrorKind::Other, "{e}");
    assert!(e.message.contains(&format!("127.0.0.1:{port}")), "{e}");
    assert_eq!(c.upload_file(&path, UploadFormat::Chk).unwrap_err().kind, IoErrorKind::Other);
    assert_eq!(c.mkdir().unwrap_err().kind, IoErrorKind::Other);
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());

    // Something accepts connections and never answers (a hung gateway).
    let hung = TcpListener::bind("127.0.0.1:0").unwrap();
    let c = TahoeClient::new(&format!("http://{}", hung.local_addr().unwrap()), None, net_timeout, 2).unwrap();
    let limit = net_timeout + Duration::from_secs(3);
    for (what, run) in [
        ("read", Box::new(|| c.read_range(&cap, 0, 5).map(|_| ())) as Box<dyn Fn() -> Result<(), _>>),
        ("upload", Box::new(|| c.upload_file(&path, UploadFormat::Chk).map(|_| ()))),
        ("mkdir", Box::new(|| c.mkdir().map(|_| ()))),
        ("space", Box::new(|| c.space().map(|_| ()))),
    ] {
        let t = Instant::now();
        let e = run().unwrap_err();
        assert_eq!(e.kind, IoErrorKind::Timeout, "{what}: {e}");
        assert!(t.elapsed() < limit, "{what} took {:?}", t.elapsed());
    }
    drop(hung);
}

/// A real gateway, then a real storage node, paused (SIGSTOP) under an upload: the watchdog
/// ends it within net_timeout of the stall, whether the body (gateway paused) or the gateway's
/// own work after the body (storage node paused) stalls. Runs its own grid.
#[test]
fn uploads_to_a_paused_grid_time_out() {
    let _ = grid(); // install the recorder first
    let g = TahoeGrid::start();
    let net_timeout = Duration::from_secs(3);
    let c = TahoeClient::new(&g.url, None, net_timeout, 2).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("f");
    {
        let mut f = File::create(&path).unwrap();
        for i in 0..64 {
            f.write_all(&pseudo_random_bytes(500 + i, MIB as usize)).unwrap();
        }
    }
    let signal = |name: &str, sig: i32| {
        let pid = g.pid(name).unwrap() as i32;
        assert_eq!(unsafe { truckeefs_tests::libc::kill(pid, sig) }, 0);
    };
    let limit = net_timeout + Duration::from_secs(4);

    signal("gateway", truckeefs_tests::libc::SIGSTOP);
    let t = Instant::now();
    let e = c.upload_file(&path, UploadFormat::Chk).unwrap_err();
    let took = t.elapsed();
    let e2 = c.read_range(&ObjectId("URI:LIT:nbswy3dp".into()), 0, 5).unwrap_err();
    signal("gateway", truckeefs_tests::libc::SIGCONT);
    assert_eq!(e.kind, IoErrorKind::Timeout, "{e}");
    assert!(e.message.contains("took no data"), "{e}");
    assert!(took < limit, "{took:?}");
    assert_eq!(e2.kind, IoErrorKind::Timeout, "{e2}");

    signal("storage", truckeefs_tests::libc::SIGSTOP);
    let t = Instant::now();
    let e = c.upload_file(&path, UploadFormat::Chk).unwrap_err();
    let took = t.elapsed();
    signal("storage", truckeefs_tests::libc::SIGCONT);
    assert_eq!(e.kind, IoErrorKind::Timeout, "{e}");
    assert!(e.message.contains("made no progress storing"), "{e}");
    assert!(took < limit + Duration::from_secs(2), "{took:?}");

    // Resumed, the grid works again (the gateway may take a moment to reconnect).
    let deadline = Instant::now() + Duration::from_secs(60);
    let cap = loop {
        match c.upload_file(&path, UploadFormat::Chk) {
            Ok(cap) => break cap,
            Err(e) if Instant::now() < deadline => {
                eprintln!("retrying after: {e}");
                thread::sleep(Duration::from_secs(1));
            }
            Err(e) => panic!("{e}\n{}", g.logs()),
        }
    };
    assert_bytes_eq(&c.read_range(&cap, 63 * MIB, 100).unwrap(), &pseudo_random_bytes(563, 100), "after resume");
    assert_no_caps_logged();
}

#[test]
fn execute_store_flat() {
    let g = grid();
    let c = client(g, Duration::from_secs(30));
    let root = rootcap(g);
    let tmp = tempfile::tempdir().unwrap();
    let staging = Staging::open(&tmp.path().join("staging")).unwrap();
    let run = |req: StoreRequest| execute_store(&c, &staging, &root, StorageStrategy::Flat, &req);
    let object = |r| match r {
        Ok(IoReply::Object(o)) => o,
        other => panic!("unexpected {other:?}"),
    };

    let e = run(StoreRequest::PutStaged { ino: 42 }).unwrap_err();
    assert_eq!(e.kind, IoErrorKind::NotFound, "{e}");

    let v1 = pseudo_random_bytes(42, 200_000);
    fs::write(staging.data_path(42), &v1).unwrap();
    let o1 = object(run(StoreRequest::PutStaged { ino: 42 }));
    assert_eq!(c.list(&root).unwrap()["42"].ro_uri.as_ref(), Some(&o1));
    match run(StoreRequest::Read { object: o1.clone(), offset: 1000, len: 10 }) {
        Ok(IoReply::Data(d)) => assert_eq!(&d[..], &v1[1000..1010]),
        other => panic!("unexpected {other:?}"),
    }

    // A new version replaces the link; deleting the old one leaves the new one linked.
    let v2 = pseudo_random_bytes(43, 150_000);
    fs::write(staging.data_path(42), &v2).unwrap();
    let o2 = object(run(StoreRequest::PutStaged { ino: 42 }));
    assert_ne!(o1, o2);
    assert_eq!(c.list(&root).unwrap()["42"].ro_uri.as_ref(), Some(&o2));
    assert_eq!(run(StoreRequest::Delete { ino: 42, object: o1.clone() }), Ok(IoReply::Done));
    assert_eq!(c.list(&root).unwrap()["42"].ro_uri.as_ref(), Some(&o2));
    // Deleting the current one unlinks it; again is fine.
    assert_eq!(run(StoreRequest::Delete { ino: 42, object: o2.clone() }), Ok(IoReply::Done));
    assert!(!c.list(&root).unwrap().contains_key("42"));
    assert_eq!(run(StoreRequest::Delete { ino: 42, object: o2.clone() }), Ok(IoReply::Done));

    // Identical contents share a cap: deleting one file's object leaves the other file's name.
    fs::write(staging.data_path(7), &v1).unwrap();
    fs::write(staging.data_path(8), &v1).unwrap();
    let a = object(run(StoreRequest::PutStaged { ino: 7 }));
    let b = object(run(StoreRequest::PutStaged { ino: 8 }));
    assert_eq!(a, b);
    assert_eq!(run(StoreRequest::Delete { ino: 7, object: a.clone() }), Ok(IoReply::Done));
    assert_eq!(c.list(&root).unwrap().keys().collect::<Vec<_>>(), ["8"]);
    // And after file 8 got a new version, deleting the shared old object touches nothing.
    fs::write(staging.data_path(8), &v2).unwrap();
    let b2 = object(run(StoreRequest::PutStaged { ino: 8 }));
    assert_eq!(run(StoreRequest::Delete { ino: 8, object: b.clone() }), Ok(IoReply::Done));
    assert!(c.list(&root).unwrap()["8"].has_cap(&b2));

    // MDMF objects.
    let cm = TahoeClient::new(&g.url, None, Duration::from_secs(30), 2).unwrap().with_upload_format(UploadFormat::Mdmf);
    fs::write(staging.data_path(9), &v2).unwrap();
    let m = match execute_store(&cm, &staging, &root, StorageStrategy::Flat, &StoreRequest::PutStaged { ino: 9 }) {
        Ok(IoReply::Object(o)) => o,
        other => panic!("unexpected {other:?}"),
    };
    assert!(m.0.starts_with("URI:MDMF:"));
    assert!(c.list(&root).unwrap()["9"].has_cap(&m));
    assert_eq!(run(StoreRequest::Delete { ino: 9, object: m.clone() }), Ok(IoReply::Done));
    assert!(!c.list(&root).unwrap().contains_key("9"));

    match run(StoreRequest::Space) {
        Ok(IoReply::Space(s)) => {
            assert!(s.free_bytes > 0 && s.free_bytes <= s.total_bytes, "{s:?}");
            assert!(s.free_bytes < truckeefs_runtime_smol::tahoe::SPACE_UNKNOWN, "the storage node announces its space");
        }
        other => panic!("unexpected {other:?}"),
    }
    // MIRROR: an upload links nothing under the rootcap (the mirror links names later), and
    // deleting an old version is left to the mirror too.
    let before = c.list(&root).unwrap();
    let mirror = |req: StoreRequest| execute_store(&c, &staging, &root, StorageStrategy::Mirror, &req);
    let Ok(IoReply::Object(cap)) = mirror(StoreRequest::PutStaged { ino: 7 }) else { panic!("MIRROR upload") };
    assert_eq!(c.list(&root).unwrap().keys().collect::<Vec<_>>(), before.keys().collect::<Vec<_>>());
    assert_eq!(mirror(StoreRequest::Share { ino: 8, object: cap.clone() }), Ok(IoReply::Object(cap.clone())));
    assert_eq!(mirror(StoreRequest::Delete { ino: 7, object: cap }), Ok(IoReply::Done));
    assert_no_caps_logged();
}

/// Tahoe checks `Authorization: tahoe-lafs <token>` under /private/ and ignores it on /uri.
#[test]
fn auth_token_is_sent_as_tahoe_expects() {
    let g = grid();
    let token = g.api_auth_token();
    let (without, _) = g.http("GET", "/private/logs/v1", b"").unwrap();
    let (wrong, _) = g.http_with("GET", "/private/logs/v1", &["Authorization: tahoe-lafs nope"], b"").unwrap();
    let (right, _) = g.http_with("GET", "/private/logs/v1", &[&format!("Authorization: tahoe-lafs {token}")], b"").unwrap();
    assert_eq!((without, wrong), (401, 401));
    assert_ne!(right, 401, "the token in the form the client sends is accepted");

    for t in [token.as_str(), "not-the-token", "Bearer abc"] {
        let c = TahoeClient::new(&g.url, Some(AuthToken::new(t).unwrap()), Duration::from_secs(10), 2).unwrap();
        let root = c.mkdir().unwrap();
        c.link(&root, "x", &ObjectId("URI:LIT:nbswy3dp".into()), Replace::Any).unwrap();
        assert_eq!(&c.read_range(&c.list(&root).unwrap()["x"].ro_uri.clone().unwrap(), 0, 5).unwrap()[..], b"hello");
        assert!(!format!("{c:?}").contains(t));
    }
    assert_no_caps_logged();
}

/// Reads from many threads through a client allowed one request in flight.
#[test]
fn parallel_reads_through_one_connection() {
    let g = grid();
    let c = Arc::new(TahoeClient::new(&g.url, None, Duration::from_secs(30), 1).unwrap());
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("f");
    let data = pseudo_random_bytes(77, 4 * MIB as usize);
    write_file(&path, &data);
    let cap = c.upload_file(&path, UploadFormat::Chk).unwrap();
    let t = Instant::now();
    let threads: Vec<_> = (0..6)
        .map(|i| {
            let (c, cap) = (c.clone(), cap.clone());
            thread::spawn(move || c.read_range(&cap, i * MIB / 2, MIB as u32).unwrap())
        })
        .collect();
    for (i, t) in threads.into_iter().enumerate() {
        let got = t.join().unwrap();
        let at = i * MIB as usize / 2;
        assert_bytes_eq(&got, &data[at..at + MIB as usize], "parallel read");
    }
    eprintln!("6 reads of 1 MiB through 1 connection: {:.2?}", t.elapsed());
    assert_no_caps_logged();
}
