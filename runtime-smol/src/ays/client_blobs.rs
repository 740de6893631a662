//! The aysfs client's on-disk blob cache, on `cacache` (as `block_cache.rs`): content under
//! `cache_dir/cacache/content-v2/xxh3/ab/cd/...` (fanned out by hash prefix, so millions of
//! blobs never sit in one directory), an index entry per blob under its md5 (hex) as the key,
//! with its size and the time it was installed; bounded in size (least recently used blobs are
//! removed first), shared by every mount of the process.
//!
//! A blob is received through a cacache writer while its md5 is computed, and its content and
//! index entry are committed only if the md5 is the one asked for, so an index entry always names
//! the md5 of its content. cacache addresses content by a hash of its own (xxh3 here: cheap, and
//! only cacache's business); reads are ranged (`pread`) on the content file, opened where
//! cacache's documented layout puts it ([`content_path`]; cacache's own ways to a file of its
//! content read it all, or make a hard link, two more directory changes per open). Removing a
//! blob never disturbs a reader: an open file descriptor keeps its data.
//!
//! A disk can rot what it holds. A blob found on disk at start is checked against cacache's
//! hash of it (xxh3, recorded when it was installed after its md5 matched) the first time this
//! process opens it; one that no longer matches is reported, removed, and fetched again from the
//! next layer. Blobs installed by this process are checked as they arrive.

use crate::ays::md5sum::Md5Hasher;
use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use truckeefs_core::ays::Md5;

/// The blob cache of one client process.
pub struct BlobCache {
    dir: PathBuf,
    /// The cacache directory (`dir/cacache`).
    root: PathBuf,
    limit: u64,
    index: Mutex<Index>,
    next_tmp: AtomicU64,
}

struct Entry {
    len: u64,
    /// Last use, in `Index::tick`s.
    used: u64,
    sri: cacache::Integrity,
    /// Checked against `sri` since this process started (installed or opened by it).
    verified: bool,
}

#[derive(Default)]
struct Index {
    blobs: HashMap<Md5, Entry>,
    total: u64,
    tick: u64,
}

impl Index {
    /// Marks blob `md5` used: its length, its cacache hash, and whether it was checked.
    fn touch(&mut self, md5: Md5) -> Option<(u64, cacache::Integrity, bool)> {
        self.tick += 1;
        let t = self.tick;
        let e = self.blobs.get_mut(&md5)?;
        e.used = t;
        Some((e.len, e.sri.clone(), e.verified))
    }
}

/// A blob being received: a cacache writer and the md5 of what was written so far.
pub struct BlobWriter {
    inner: cacache::SyncWriter,
    /// `None` while another thread hashes the content (see [`BlobWriter::lend_md5`]).
    hasher: Option<Md5Hasher>,
    len: u64,
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        if let Some(h) = &mut self.hasher {
            h.update(&buf[..n]);
        }
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl BlobWriter {
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Lends the md5 state to another thread: until it comes back with [`BlobWriter::return_md5`],
    /// what is written here is not hashed here, and the borrower must hash every byte written,
    /// in order. A blob whose md5 state never came back is not installed.
    pub fn lend_md5(&mut self) -> Option<Md5Hasher> {
        self.hasher.take()
    }

    pub fn return_md5(&mut self, h: Md5Hasher) {
        self.hasher = Some(h);
    }
}

/// Where cacache keeps the content of `sri` under `root`: `content-v2/<algorithm>/<hex[0..2]>/
/// <hex[2..4]>/<hex[4..]>`, its documented layout (a test checks it against cacache's own reads).
fn content_path(root: &Path, sri: &cacache::Integrity) -> PathBuf {
    let (algorithm, hex) = sri.to_hex();
    let mut p = root.join("content-v2");
    p.push(algorithm.to_string());
    p.push(hex.get(0..2).unwrap_or_default());
    p.push(hex.get(2..4).unwrap_or_default());
    p.push(hex.get(4..).unwrap_or_default());
    p
}

/// Whether the whole of `f` (read from its start) hashes to `sri`; leaves `f` at its end.
fn matches_hash(f: &mut File, sri: &cacache::Integrity) -> io::Result<bool> {
    let mut checker = ssri::IntegrityChecker::new(sri.clone());
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        checker.input(&buf[..n]);
    }
    Ok(checker.result().is_ok())
}

fn io_err(e: cacache::Error) -> io::Error {
    match e {
        cacache::Error::IoError(e, what) => io::Error::new(e.kind(), format!("{what}: {e}")),
        other => io::Error::other(other.to_string()),
    }
}

impl BlobCache {
    /// Opens (creating) the cache at `dir` with a bound of `limit` bytes, indexing what is there
    /// (least recently installed first in line for eviction). Leftover temporary files are
    /// removed, and so is the blob directory of earlier versions (`dir/blobs`).
    pub fn open(dir: &Path, limit: u64) -> io::Result<BlobCache> {
        let root = dir.join("cacache");
        let tmp = dir.join("tmp");
        fs::create_dir_all(&root)?;
        fs::create_dir_all(&tmp)?;
        for e in fs::read_dir(&tmp)?.flatten() {
            let _ = fs::remove_file(e.path());
        }
        let old = dir.join("blobs");
        if old.is_dir() {
            tracing::info!("blob cache: removing {} (the layout before cacache)", old.display());
            let _ = fs::remove_dir_all(&old);
        }
        let mut entries: Vec<cacache::Metadata> = cacache::list_sync(&root).filter_map(Result::ok).collect();
        entries.sort_by_key(|m| m.time);
        let mut index = Index::default();
        for m in entries {
            let Some(md5) = Md5::parse(&m.key) else { continue };
            index.tick += 1;
            let e = Entry { len: m.size as u64, used: index.tick, sri: m.integrity, verified: false };
            if let Some(old) = index.blobs.insert(md5, e) {
                index.total -= old.len;
            }
            index.total += m.size as u64;
        }
        let cache = BlobCache { dir: dir.to_path_buf(), root, limit, index: Mutex::new(index), next_tmp: AtomicU64::new(0) };
        cache.evict();
        Ok(cache)
    }

    fn index(&self) -> std::sync::MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Bytes held now.
    pub fn total(&self) -> u64 {
        self.index().total
    }

    fn tmp_path(&self, what: &str) -> PathBuf {
        let n = self.next_tmp.fetch_add(1, Ordering::Relaxed);
        self.dir.join("tmp").join(format!("{}-{what}-{n}", std::process::id()))
    }

    /// The length of blob `md5` if the cache has it (and marks it used).
    pub fn has(&self, md5: Md5) -> Option<u64> {
        self.index().touch(md5).map(|(len, ..)| len)
    }

    /// Opens blob `md5` for reading: the file and its length; `None` if the cache lacks it.
    pub fn open_blob(&self, md5: Md5) -> io::Result<Option<(File, u64)>> {
        let Some((_, sri, verified)) = self.index().touch(md5) else { return Ok(None) };
        let mut f = match File::open(content_path(&self.root, &sri)) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.forget(md5);
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        if !verified {
            if !matches_hash(&mut f, &sri)? {
                tracing::warn!(
                    blob = %md5,
                    dir = %self.dir.display(),
                    "blob cache: blob damaged on disk (its content no longer matches what was stored); removed, fetching it again"
                );
                self.remove(md5, &sri);
                return Ok(None);
            }
            if let Some(e) = self.index().blobs.get_mut(&md5) {
                e.verified = true;
            }
            io::Seek::rewind(&mut f)?;
        }
        let len = f.metadata()?.len();
        Ok(Some((f, len)))
    }

    /// Forgets blob `md5` and removes its index entry and content.
    fn remove(&self, md5: Md5, sri: &cacache::Integrity) {
        self.forget(md5);
        self.remove_files(md5, sri);
    }

    fn remove_files(&self, md5: Md5, sri: &cacache::Integrity) {
        let _ = cacache::remove_sync(&self.root, md5.hex());
        let _ = cacache::remove_hash_sync(&self.root, sri);
    }

    fn forget(&self, md5: Md5) {
        let mut ix = self.index();
        if let Some(e) = ix.blobs.remove(&md5) {
            ix.total -= e.len;
        }
    }

    /// The whole content of blob `md5` (for writing it back into a faster layer).
    pub fn read_all(&self, md5: Md5) -> io::Result<Vec<u8>> {
        let Some((mut f, len)) = self.open_blob(md5)? else {
            return Err(io::Error::new(io::ErrorKind::NotFound, format!("blob {md5} is not in the blob cache")));
        };
        let mut v = Vec::with_capacity(len as usize);
        f.read_to_end(&mut v)?;
        Ok(v)
    }

    /// A new writer to receive a blob into (a cacache temporary file).
    pub fn writer(&self) -> io::Result<BlobWriter> {
        let inner = cacache::WriteOpts::new().algorithm(cacache::Algorithm::Xxh3).open_hash_sync(&self.root).map_err(io_err)?;
        Ok(BlobWriter { inner, hasher: Some(Md5Hasher::new()), len: 0 })
    }

    /// Finishes a received blob: installs it if its md5 is `expected` (else drops it). Returns
    /// the md5 it hashed to and its length.
    pub fn install(&self, mut w: BlobWriter, expected: Option<Md5>) -> io::Result<(Md5, u64)> {
        w.inner.flush()?;
        let hasher = w.hasher.take().ok_or_else(|| io::Error::other("the md5 of the blob was not computed"))?;
        let actual = Md5(hasher.finish()?);
        let len = w.len;
        if expected.is_none_or(|e| e == actual) {
            // Content first, then the index entry naming it by md5.
            let sri = w.inner.commit().map_err(io_err)?;
            let opts = cacache::WriteOpts::new().integrity(sri.clone()).size(len as usize);
            cacache::index::insert(&self.root, &actual.hex(), opts).map_err(io_err)?;
            {
                let mut ix = self.index();
                ix.tick += 1;
                let used = ix.tick;
                if let Some(old) = ix.blobs.insert(actual, Entry { len, used, sri, verified: true }) {
                    ix.total -= old.len;
                }
                ix.total += len;
            }
            self.evict();
        }
        // Not committed: dropping the writer removes its temporary file.
        Ok((actual, len))
    }

    /// Installs a blob whose content is given (a debug write), md5 computed here.
    pub fn install_bytes(&self, data: &[u8]) -> io::Result<(Md5, u64)> {
        let mut w = self.writer()?;
        w.write_all(data)?;
        self.install(w, None)
    }

    /// Removes least recently used blobs until the cache is within its bound (never the one
    /// used last, so a blob larger than the bound still serves the open that fetched it).
    fn evict(&self) {
        let mut victims = Vec::new();
        {
            let mut ix = self.index();
            if ix.total <= self.limit {
                return;
            }
            let mut by_age: Vec<(u64, Md5)> = ix.blobs.iter().map(|(m, e)| (e.used, *m)).collect();
            by_age.sort();
            let newest = by_age.last().map(|e| e.1);
            for (_, md5) in by_age {
                if ix.total <= self.limit || Some(md5) == newest {
                    break;
                }
                if let Some(e) = ix.blobs.remove(&md5) {
                    ix.total -= e.len;
                    victims.push((md5, e.sri));
                }
            }
        }
        for (md5, sri) in &victims {
            self.remove_files(*md5, sri);
        }
        if !victims.is_empty() {
            tracing::debug!(count = victims.len(), limit = self.limit, "blob cache: evicted least recently used blobs");
        }
    }

    /// A scratch copy for a file being written: a temporary file holding blob `from` (or empty).
    pub fn scratch(&self, from: Option<Md5>) -> io::Result<File> {
        let path = self.tmp_path("scratch");
        let mut file = File::options().read(true).write(true).create(true).truncate(true).open(&path)?;
        let _ = fs::remove_file(&path);
        if let Some(md5) = from {
            let Some((mut src, _)) = self.open_blob(md5)? else {
                return Err(io::Error::new(io::ErrorKind::NotFound, format!("blob {md5} is not in the blob cache")));
            };
            io::copy(&mut src, &mut file)?;
        }
        Ok(file)
    }

    /// Hashes a scratch copy and installs its content as a blob.
    pub fn commit_scratch(&self, file: &File) -> io::Result<(Md5, u64)> {
        let mut w = self.writer()?;
        let mut off = 0u64;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = file.read_at(&mut buf, off)?;
            if n == 0 {
                break;
            }
            w.write_all(&buf[..n])?;
            off += n as u64;
        }
        self.install(w, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blobs_are_opened_where_cacache_keeps_their_content() {
        let d = tempfile::tempdir().unwrap();
        let c = BlobCache::open(d.path(), 1 << 20).unwrap();
        let (md5, _) = c.install_bytes(b"where is it").unwrap();
        let root = d.path().join("cacache");
        let sri = cacache::metadata_sync(&root, md5.hex()).unwrap().unwrap().integrity;
        assert_eq!(fs::read(content_path(&root, &sri)).unwrap(), cacache::read_hash_sync(&root, &sri).unwrap());
    }

    #[test]
    fn install_verify_evict() {
        let d = tempfile::tempdir().unwrap();
        // A blob directory of the layout before cacache goes.
        fs::create_dir_all(d.path().join("blobs/5d/41")).unwrap();
        let c = BlobCache::open(d.path(), 10).unwrap();
        assert!(!d.path().join("blobs").exists());
        let root = d.path().join("cacache");
        let (m1, l1) = c.install_bytes(b"hello").unwrap();
        assert_eq!(m1.hex(), "5d41402abc4b2a76b9719d911017c592");
        assert_eq!(l1, 5);
        let meta = cacache::metadata_sync(&root, m1.hex()).unwrap().expect("indexed under its md5");
        assert_eq!(meta.size, 5);
        assert_eq!(cacache::read_hash_sync(&root, &meta.integrity).unwrap(), b"hello");
        // A blob whose md5 is not the one expected is not installed.
        let mut w = c.writer().unwrap();
        w.write_all(b"other").unwrap();
        let (m2, _) = c.install(w, Some(m1)).unwrap();
        assert_ne!(m2, m1);
        assert!(c.has(m2).is_none());
        assert!(cacache::metadata_sync(&root, m2.hex()).unwrap().is_none());
        assert_eq!(fs::read_dir(d.path().join("tmp")).unwrap().count(), 0);
        let leftovers = fs::read_dir(root.join("tmp")).map(|r| r.count()).unwrap_or(0);
        assert_eq!(leftovers, 0, "a rejected blob leaves no temporary file");
        // Ranged reads on an open blob.
        let (f, len) = c.open_blob(m1).unwrap().unwrap();
        assert_eq!(len, 5);
        let mut two = [0u8; 2];
        f.read_exact_at(&mut two, 2).unwrap();
        assert_eq!(&two, b"ll");
        // Over the bound: the least recently used goes.
        c.install_bytes(b"abc").unwrap();
        assert!(c.has(m1).is_some());
        let (m3, _) = c.install_bytes(b"0123456").unwrap();
        assert!(c.has(m1).is_none(), "evicted");
        assert!(cacache::metadata_sync(&root, m1.hex()).unwrap().is_none(), "evicted from the index");
        assert!(!cacache::exists_sync(&root, &meta.integrity), "and its content");
        assert_eq!(&two, b"ll", "an open blob stays readable");
        f.read_exact_at(&mut two, 0).unwrap();
        assert_eq!(&two, b"he");
        assert!(c.has(m3).is_some());
        assert!(c.total() <= 10);
        // Reopened: the index is rebuilt from the directory.
        drop(c);
        let c = BlobCache::open(d.path(), 10).unwrap();
        assert!(c.has(m3).is_some());
        let mut s = c.scratch(Some(m3)).unwrap();
        s.write_all_at(b"X", 0).unwrap();
        let (m4, l4) = c.commit_scratch(&s).unwrap();
        assert_eq!(l4, 7);
        assert_eq!(c.read_all(m4).unwrap(), b"X123456");
        let _ = s.flush();
        // Content gone from under the index: the blob is missing, not an error.
        let sri = cacache::metadata_sync(&root, m4.hex()).unwrap().unwrap().integrity;
        cacache::remove_hash_sync(&root, &sri).unwrap();
        assert!(c.open_blob(m4).unwrap().is_none());
        assert!(c.has(m4).is_none());
    }

    #[test]
    fn a_blob_rotted_on_disk_is_removed_not_served() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let c = BlobCache::open(d.path(), 1 << 20).unwrap();
        let (good, _) = c.install_bytes(b"good bytes").unwrap();
        let (rotten, _) = c.install_bytes(b"some bytes").unwrap();
        drop(c);
        // Flip a byte of one content file in place (through a hard link: the same file).
        let root = d.path().join("cacache");
        let sri = cacache::metadata_sync(&root, rotten.hex()).unwrap().unwrap().integrity;
        let link = d.path().join("link");
        cacache::hard_link_hash_unchecked_sync(&root, &sri, &link).unwrap();
        fs::set_permissions(&link, fs::Permissions::from_mode(0o644)).unwrap();
        fs::OpenOptions::new().write(true).open(&link).unwrap().write_all_at(b"S", 0).unwrap();
        fs::remove_file(&link).unwrap();
        // Reopened, as by a new process: the damaged blob is reported missing and removed.
        let c = BlobCache::open(d.path(), 1 << 20).unwrap();
        assert!(c.open_blob(rotten).unwrap().is_none());
        assert!(c.has(rotten).is_none());
        assert!(cacache::metadata_sync(&root, rotten.hex()).unwrap().is_none());
        assert!(!cacache::exists_sync(&root, &sri));
        // The sound one is served whole, from its start, and checked once.
        assert_eq!(c.read_all(good).unwrap(), b"good bytes");
        assert!(c.index().blobs[&good].verified);
        assert_eq!(c.read_all(good).unwrap(), b"good bytes");
    }
}
