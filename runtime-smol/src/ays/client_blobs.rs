//! The aysfs client's on-disk blob cache: content-addressed by md5, fanned out by hash prefix
//! (`blobs/ab/cd/abcd...`, 65,536 directories, so millions of blobs never sit in one directory),
//! bounded in size (least recently used blobs are removed first), shared by every mount of the
//! process.
//!
//! Why not `cacache`: it addresses content by its own SHA-256 integrity string and checks the
//! whole content on every read, has no ranged (pread) reads, and no size bound. aysfs blobs are
//! already named by their md5, FUSE reads are ranged, and the bound is the point. So: a plain
//! fanned-out directory, whose entries are installed only after their md5 was checked (a blob
//! is written to `tmp/` while its md5 is computed, then renamed into place), so a blob file's
//! name is always the md5 of its content.
//!
//! Removing a blob never disturbs a reader: an open file descriptor keeps its data.

use md5::{Digest, Md5 as Md5Hasher};
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
    limit: u64,
    index: Mutex<Index>,
    next_tmp: AtomicU64,
}

#[derive(Default)]
struct Index {
    /// md5 -> (length, last use tick)
    blobs: HashMap<Md5, (u64, u64)>,
    total: u64,
    tick: u64,
}

impl Index {
    fn touch(&mut self, md5: Md5) -> Option<u64> {
        self.tick += 1;
        let t = self.tick;
        let e = self.blobs.get_mut(&md5)?;
        e.1 = t;
        Some(e.0)
    }
}

/// A blob being received: a temporary file and the md5 of what was written so far.
pub struct BlobWriter {
    file: File,
    path: PathBuf,
    hasher: Md5Hasher,
    len: u64,
    done: bool,
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        if !self.done {
            let _ = fs::remove_file(&self.path);
        }
    }
}

impl BlobWriter {
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

fn md5_of_digest(d: &[u8]) -> Md5 {
    let mut m = [0u8; 16];
    m.copy_from_slice(&d[..16]);
    Md5(m)
}

impl BlobCache {
    /// Opens (creating) the cache at `dir` with a bound of `limit` bytes, indexing what is there.
    /// Leftover temporary files are removed.
    pub fn open(dir: &Path, limit: u64) -> io::Result<BlobCache> {
        let blobs = dir.join("blobs");
        let tmp = dir.join("tmp");
        fs::create_dir_all(&blobs)?;
        fs::create_dir_all(&tmp)?;
        for e in fs::read_dir(&tmp)?.flatten() {
            let _ = fs::remove_file(e.path());
        }
        let mut index = Index::default();
        for a in fs::read_dir(&blobs)?.flatten() {
            let Ok(rd) = fs::read_dir(a.path()) else { continue };
            for b in rd.flatten() {
                let Ok(rd) = fs::read_dir(b.path()) else { continue };
                for f in rd.flatten() {
                    let name = f.file_name();
                    let Some(md5) = name.to_str().and_then(Md5::parse) else { continue };
                    let Ok(meta) = f.metadata() else { continue };
                    index.blobs.insert(md5, (meta.len(), 0));
                    index.total += meta.len();
                }
            }
        }
        let cache = BlobCache { dir: dir.to_path_buf(), limit, index: Mutex::new(index), next_tmp: AtomicU64::new(0) };
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

    fn path(&self, md5: Md5) -> PathBuf {
        let h = md5.hex();
        self.dir.join("blobs").join(&h[0..2]).join(&h[2..4]).join(h)
    }

    /// The length of blob `md5` if the cache has it (and marks it used).
    pub fn has(&self, md5: Md5) -> Option<u64> {
        self.index().touch(md5)
    }

    /// Opens blob `md5` for reading: the file and its length; `None` if the cache lacks it.
    pub fn open_blob(&self, md5: Md5) -> io::Result<Option<(File, u64)>> {
        if self.has(md5).is_none() {
            return Ok(None);
        }
        match File::open(self.path(md5)) {
            Ok(f) => {
                let len = f.metadata()?.len();
                Ok(Some((f, len)))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.forget(md5);
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    fn forget(&self, md5: Md5) {
        let mut ix = self.index();
        if let Some((len, _)) = ix.blobs.remove(&md5) {
            ix.total -= len;
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

    /// A new temporary file to receive a blob into.
    pub fn writer(&self) -> io::Result<BlobWriter> {
        let n = self.next_tmp.fetch_add(1, Ordering::Relaxed);
        let path = self.dir.join("tmp").join(format!("{}-{n}", std::process::id()));
        let file = File::options().read(true).write(true).create(true).truncate(true).open(&path)?;
        Ok(BlobWriter { file, path, hasher: Md5Hasher::new(), len: 0, done: false })
    }

    /// Finishes a received blob: installs it if its md5 is `expected` (else drops it). Returns
    /// the md5 it hashed to and its length.
    pub fn install(&self, mut w: BlobWriter, expected: Option<Md5>) -> io::Result<(Md5, u64)> {
        w.file.flush()?;
        let actual = md5_of_digest(&std::mem::take(&mut w.hasher).finalize());
        let len = w.len;
        if expected.is_none_or(|e| e == actual) {
            self.install_file(&w.path, actual, len)?;
            w.done = true;
        }
        Ok((actual, len))
    }

    fn install_file(&self, from: &Path, md5: Md5, len: u64) -> io::Result<()> {
        let to = self.path(md5);
        if let Some(p) = to.parent() {
            fs::create_dir_all(p)?;
        }
        fs::rename(from, &to)?;
        {
            let mut ix = self.index();
            ix.tick += 1;
            let t = ix.tick;
            if let Some((old, _)) = ix.blobs.insert(md5, (len, t)) {
                ix.total -= old;
            }
            ix.total += len;
        }
        self.evict();
        Ok(())
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
            let mut by_age: Vec<(u64, Md5, u64)> = ix.blobs.iter().map(|(m, (len, t))| (*t, *m, *len)).collect();
            by_age.sort();
            let newest = by_age.last().map(|e| e.1);
            for (_, md5, len) in by_age {
                if ix.total <= self.limit || Some(md5) == newest {
                    break;
                }
                ix.blobs.remove(&md5);
                ix.total -= len;
                victims.push(md5);
            }
        }
        for md5 in &victims {
            let _ = fs::remove_file(self.path(*md5));
        }
        if !victims.is_empty() {
            tracing::debug!(count = victims.len(), limit = self.limit, "blob cache: evicted least recently used blobs");
        }
    }

    /// A scratch copy for a file being written: a temporary file holding blob `from` (or empty).
    pub fn scratch(&self, from: Option<Md5>) -> io::Result<File> {
        let n = self.next_tmp.fetch_add(1, Ordering::Relaxed);
        let path = self.dir.join("tmp").join(format!("{}-scratch-{n}", std::process::id()));
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
    fn install_verify_evict() {
        let d = tempfile::tempdir().unwrap();
        let c = BlobCache::open(d.path(), 10).unwrap();
        let (m1, l1) = c.install_bytes(b"hello").unwrap();
        assert_eq!(m1.hex(), "5d41402abc4b2a76b9719d911017c592");
        assert_eq!(l1, 5);
        assert!(c.path(m1).starts_with(d.path().join("blobs/5d/41")));
        // A blob whose md5 is not the one expected is not installed.
        let mut w = c.writer().unwrap();
        w.write_all(b"other").unwrap();
        let (m2, _) = c.install(w, Some(m1)).unwrap();
        assert_ne!(m2, m1);
        assert!(c.has(m2).is_none());
        assert_eq!(fs::read_dir(d.path().join("tmp")).unwrap().count(), 0);
        // Over the bound: the least recently used goes.
        c.install_bytes(b"abc").unwrap();
        assert!(c.has(m1).is_some());
        let (m3, _) = c.install_bytes(b"0123456").unwrap();
        assert!(c.has(m1).is_none(), "evicted");
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
    }
}
