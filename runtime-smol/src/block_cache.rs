//! The block cache of a remote object store (Tahoe): reads are served in fixed-size blocks kept
//! on local disk (cacache), fetched with Range requests, several at once, with read-ahead on
//! sequential access.
//!
//! Only committed objects are cached, and an object never changes once committed (a new version
//! is a new object), so a cached block is never stale and evicting one never loses data: dirty
//! data lives in the staging area, not here. Keys are a hash of the object id, never the id
//! itself (a Tahoe capability is a secret).
//!
//! Concurrency: one fetch per block at a time; a reader that needs a block being fetched waits
//! for that fetch instead of starting another.

use bytes::{Bytes, BytesMut};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use truckeefs_core::{IoError, IoErrorKind, ObjectId};

/// Fetches `len` bytes at `offset` of an object (fewer only at its end).
pub type Fetch = dyn Fn(&ObjectId, u64, u32) -> Result<Bytes, IoError> + Send + Sync;

/// Fetches `len` bytes at `offset` in one request, handing over pieces of the given size as they
/// arrive until the callback returns false (read-ahead of sequential reads).
pub type StreamFetch =
    dyn Fn(&ObjectId, u64, u64, usize, &mut dyn FnMut(Bytes) -> bool) -> Result<(), IoError> + Send + Sync;

/// Tunables.
#[derive(Clone, Debug)]
pub struct BlockCacheConfig {
    /// Bytes per block (and per Range request).
    pub block_size: u32,
    /// Blocks fetched ahead of a sequential reader.
    pub read_ahead: usize,
    /// Bytes the cache may hold on disk; 0 = unlimited.
    pub max_bytes: u64,
    /// Blocks fetched longer ago than this are removed by [`BlockCache::trim`]; `None` = never.
    pub ttl: Option<Duration>,
    /// [`BlockCache::trim`] removes blocks, oldest first, while the filesystem holding the cache
    /// has less than this share of its space free (percent).
    pub min_free_percent: u8,
}

impl Default for BlockCacheConfig {
    fn default() -> Self {
        BlockCacheConfig { block_size: 1 << 20, read_ahead: 4, max_bytes: 0, ttl: None, min_free_percent: 5 }
    }
}

type BlockKey = (u64, u64); // (hash of the object id, block index)

pub struct BlockCache {
    dir: PathBuf,
    config: BlockCacheConfig,
    fetch: Arc<Fetch>,
    stream: Option<Arc<StreamFetch>>,
    state: Mutex<State>,
    changed: Condvar,
}

/// Blocks kept in memory too: the kernel reads 128 KiB at a time, so a block is asked for
/// several times in a row and must not be read from disk each time.
const RECENT_BLOCKS: usize = 48;

/// A stream whose reader has not moved for this long ends (it holds a gateway connection).
const STREAM_IDLE: Duration = Duration::from_secs(10);

#[derive(Default)]
struct State {
    /// The last blocks used, most recent at the back.
    recent: std::collections::VecDeque<(BlockKey, Bytes)>,
    /// Blocks being fetched.
    fetching: HashSet<BlockKey>,
    /// Per object: the end of the last read, to notice sequential access.
    last_end: HashMap<u64, u64>,
    /// Per object with a read-ahead stream: the next block the stream delivers.
    streams: HashMap<u64, u64>,
    /// Per object: the furthest end of a read, which a stream keeps ahead of (the kernel's
    /// read-ahead sends several reads at once, not always in order).
    furthest: HashMap<u64, u64>,
    /// Per object whose end was seen: its number of blocks (no stream starts past it).
    ends: HashMap<u64, u64>,
    /// Bytes written into the cache since the last size check.
    written_since_trim: u64,
}

impl BlockCache {
    pub fn new(dir: &Path, config: BlockCacheConfig, fetch: Arc<Fetch>) -> BlockCache {
        BlockCache {
            dir: dir.to_path_buf(),
            config,
            fetch,
            stream: None,
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
        }
    }

    /// Read-ahead of sequential reads then streams the object from the reader's position on in
    /// one request, staying at most `read_ahead` blocks ahead of the reader (the stream waits,
    /// and TCP holds the gateway back) and ending when the reader goes elsewhere or away.
    pub fn with_stream(mut self, stream: Arc<StreamFetch>) -> BlockCache {
        self.stream = Some(stream);
        self
    }

    /// Reads up to `len` bytes at `offset` of `object` (fewer only at its end), from cached
    /// blocks where it can and fetching the others. Schedules read-ahead on sequential access.
    pub fn read(self: &Arc<Self>, object: &ObjectId, offset: u64, len: u32) -> Result<Bytes, IoError> {
        let bs = u64::from(self.config.block_size);
        let id = object_hash(object);
        let end = offset.saturating_add(u64::from(len));
        let sequential = {
            let mut st = self.lock();
            let seq = offset == 0 || st.last_end.get(&id) == Some(&offset);
            if st.last_end.len() > 4096 {
                st.last_end.clear();
                st.furthest.clear();
                st.ends.clear();
            }
            st.last_end.insert(id, end);
            // A read from the start begins a new pass over the object.
            let furthest = st.furthest.entry(id).or_insert(end);
            *furthest = if offset == 0 { end } else { (*furthest).max(end) };
            seq
        };
        // A stream waiting for this reader to catch up goes on.
        self.changed.notify_all();
        if sequential && self.config.read_ahead > 0 {
            match &self.stream {
                Some(_) => self.stream_ahead(object, id, offset / bs),
                None => {
                    let first = end.div_ceil(bs);
                    for idx in first..first + self.config.read_ahead as u64 {
                        self.prefetch(object, id, idx);
                    }
                }
            }
        }
        if len > 0 && offset / bs == (end - 1) / bs {
            // Within one block (the kernel's reads are): a slice of it, no copy.
            let idx = offset / bs;
            let block = self.block(object, id, idx)?;
            let within = ((offset - idx * bs) as usize).min(block.len());
            let take = block.len().min(within + len as usize);
            return Ok(block.slice(within..take));
        }
        let mut out = BytesMut::with_capacity(len as usize);
        let mut pos = offset;
        while pos < end {
            let idx = pos / bs;
            let block = self.block(object, id, idx)?;
            let within = (pos - idx * bs) as usize;
            if within >= block.len() {
                break; // past the end of the object
            }
            let take = block.len().min(within + (end - pos) as usize);
            out.extend_from_slice(&block[within..take]);
            pos += (take - within) as u64;
            if block.len() < bs as usize {
                break; // the last block
            }
        }
        Ok(out.freeze())
    }

    /// One block: from the cache, from a fetch already under way, or fetched now.
    fn block(&self, object: &ObjectId, id: u64, idx: u64) -> Result<Bytes, IoError> {
        let key = (id, idx);
        loop {
            if let Some(b) = self.cached(key) {
                return Ok(b);
            }
            let mut st = self.lock();
            // A stream may have delivered it since the look above (it remembers a block before
            // it moves on, both under this lock): seen here, it is not fetched a second time.
            if let Some((_, b)) = st.recent.iter().find(|(k, _)| *k == key) {
                return Ok(b.clone());
            }
            if st.fetching.contains(&key) {
                // Someone else fetches it: wait, then look in the cache again (their fetch may
                // have failed, in which case we fetch it ourselves).
                while st.fetching.contains(&key) {
                    st = self.changed.wait(st).unwrap_or_else(|e| e.into_inner());
                }
                continue;
            }
            let window = self.config.read_ahead.max(1) as u64;
            if st.streams.get(&key.0).is_some_and(|next| (*next..*next + window).contains(&idx)) {
                // A stream delivers it soon (one further ahead of the stream makes it stop):
                // cheaper than a request of its own.
                drop(self.changed.wait_timeout(st, Duration::from_secs(1)));
                continue;
            }
            st.fetching.insert(key);
            drop(st);
            return self.fetch_block(object, key);
        }
    }

    /// Fetches a block (whose key the caller put in `fetching`), stores it, and wakes waiters.
    fn fetch_block(&self, object: &ObjectId, key: BlockKey) -> Result<Bytes, IoError> {
        let bs = self.config.block_size;
        let result = (self.fetch)(object, key.1 * u64::from(bs), bs);
        if let Ok(data) = &result {
            self.store(key, data);
            self.remember(key, data);
        }
        let mut st = self.lock();
        st.fetching.remove(&key);
        drop(st);
        self.changed.notify_all();
        result
    }

    /// Starts fetching a block in the background unless it is cached or being fetched.
    fn prefetch(self: &Arc<Self>, object: &ObjectId, id: u64, idx: u64) {
        let key = (id, idx);
        if self.is_cached(key) {
            return;
        }
        {
            let mut st = self.lock();
            if !st.fetching.insert(key) {
                return;
            }
        }
        let this = self.clone();
        let object = object.clone();
        smol::unblock(move || {
            // A failed read-ahead costs nothing: the reader fetches the block itself.
            if let Err(e) = this.fetch_block(&object, key) {
                if e.kind != IoErrorKind::NotFound {
                    tracing::debug!(error = %e, "read-ahead");
                }
            }
        })
        .detach();
    }

    /// Keeps the blocks from `idx` on covered: unless a stream of this object runs or the next
    /// half window is there already, starts one from the first missing block.
    fn stream_ahead(self: &Arc<Self>, object: &ObjectId, id: u64, idx: u64) {
        let mut window = self.config.read_ahead.max(1) as u64;
        let mut first = idx;
        {
            let st = self.lock();
            if st.streams.contains_key(&id) {
                return;
            }
            if let Some(&end) = st.ends.get(&id) {
                // Nothing to stream past the end of the object.
                window = window.min(end.saturating_sub(idx));
                if window == 0 {
                    return;
                }
            }
            while first < idx + window
                && (st.fetching.contains(&(id, first)) || st.recent.iter().any(|(k, _)| *k == (id, first)))
            {
                first += 1;
            }
        }
        while first < idx + window && self.is_cached((id, first)) {
            first += 1;
        }
        if first >= idx + window.div_ceil(2) {
            return; // enough ahead already
        }
        {
            let mut st = self.lock();
            if st.streams.contains_key(&id) {
                return;
            }
            st.streams.insert(id, first);
        }
        let (this, object) = (self.clone(), object.clone());
        let spawned = std::thread::Builder::new().name("truckeefs-stream".into()).spawn(move || {
            background_priority();
            this.stream_from(&object, id, first)
        });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "block cache: cannot start a read-ahead stream");
            self.lock().streams.remove(&id);
            self.changed.notify_all();
        }
    }

    /// Streams `object` from block `first` to its end in one request (the stream registered in
    /// `streams`), storing each block, while the reader keeps up.
    fn stream_from(&self, object: &ObjectId, id: u64, first: u64) {
        let Some(stream) = &self.stream else { return };
        let bs = u64::from(self.config.block_size);
        let window = self.config.read_ahead.max(1) as u64;
        let mut next = first;
        let mut reader_seen = (None, Instant::now());
        let mut stopped = false;
        let mut piece = |data: Bytes| {
            let key = (id, next);
            if !self.lock().recent.iter().any(|(k, _)| *k == key) {
                self.store(key, &data);
                self.remember(key, &data);
            }
            next += 1;
            let mut st = self.lock();
            st.streams.insert(id, next);
            self.changed.notify_all();
            // At most a window ahead of the reader; stop when it goes elsewhere or away.
            loop {
                let Some(reader) = st.furthest.get(&id).map(|end| end / bs) else {
                    stopped = true;
                    return false;
                };
                if reader + 1 < first || reader > next + window {
                    stopped = true;
                    return false;
                }
                if next < reader + window {
                    return true;
                }
                if reader_seen.0 != Some(reader) {
                    reader_seen = (Some(reader), Instant::now());
                } else if reader_seen.1.elapsed() > STREAM_IDLE {
                    stopped = true;
                    return false;
                }
                st = self.changed.wait_timeout(st, Duration::from_millis(500)).map(|(g, _)| g).unwrap_or_else(|e| e.into_inner().0);
            }
        };
        // To the end of the object, whatever its size (a range past the end is cut there).
        let result = stream(object, first * bs, crate::tahoe::TahoeClient::STREAM_TO_END, bs as usize, &mut piece);
        let mut st = self.lock();
        match result {
            // The stream ran to the end of the object: it has `next` blocks.
            Ok(()) if !stopped => {
                st.ends.insert(id, next);
            }
            Ok(()) => {}
            Err(e) => tracing::debug!(error = %e, "read-ahead stream"),
        }
        st.streams.remove(&id);
        drop(st);
        self.changed.notify_all();
    }

    /// Hands the first `size` bytes of `object` (all of a shorter one) to `sink` in order, until
    /// it returns false: the blocks this cache holds from the start, then the rest in one
    /// streamed request (block by block without a stream). What is fetched is not stored here:
    /// the copy is the caller's (the staging area's, for a file written again).
    pub fn copy_out(&self, object: &ObjectId, size: u64, sink: &mut dyn FnMut(&[u8]) -> bool) -> Result<(), IoError> {
        let bs = u64::from(self.config.block_size);
        let id = object_hash(object);
        let mut done = 0u64;
        while done < size {
            let Some(block) = self.cached((id, done / bs)) else { break };
            let take = (block.len() as u64).min(size - done) as usize;
            if take == 0 || !sink(&block[..take]) {
                return Ok(());
            }
            done += take as u64;
            if (block.len() as u64) < bs {
                return Ok(()); // the object's last block
            }
        }
        if done >= size {
            return Ok(());
        }
        if let Some(stream) = &self.stream {
            return stream(object, done, size - done, bs as usize, &mut |piece| sink(&piece));
        }
        while done < size {
            let want = (size - done).min(bs) as u32;
            let data = (self.fetch)(object, done, want)?;
            if data.is_empty() || !sink(&data) || (data.len() as u32) < want {
                return Ok(());
            }
            done += data.len() as u64;
        }
        Ok(())
    }

    fn cached(&self, key: BlockKey) -> Option<Bytes> {
        {
            let mut st = self.lock();
            if let Some(i) = st.recent.iter().position(|(k, _)| *k == key) {
                let hit = st.recent.remove(i).expect("position is in range");
                let data = hit.1.clone();
                st.recent.push_back(hit);
                return Some(data);
            }
        }
        match cacache::read_sync(&self.dir, cache_key(key)) {
            Ok(data) => {
                let data = Bytes::from(data);
                self.remember(key, &data);
                Some(data)
            }
            Err(cacache::Error::EntryNotFound(..)) => None,
            Err(e) => {
                // A damaged entry is a miss: the block is fetched again and rewritten.
                tracing::warn!(error = %e, dir = %self.dir.display(), "block cache: unreadable entry, fetching again");
                let _ = cacache::remove_sync(&self.dir, cache_key(key));
                None
            }
        }
    }

    fn remember(&self, key: BlockKey, data: &Bytes) {
        let mut st = self.lock();
        if st.recent.len() >= RECENT_BLOCKS {
            st.recent.pop_front();
        }
        st.recent.push_back((key, data.clone()));
    }

    fn is_cached(&self, key: BlockKey) -> bool {
        if self.lock().recent.iter().any(|(k, _)| *k == key) {
            return true;
        }
        matches!(cacache::index::find(&self.dir, &cache_key(key)), Ok(Some(_)))
    }

    fn store(&self, key: BlockKey, data: &[u8]) {
        // The size must be given: cacache's index records 0 otherwise, and trim and status
        // count the recorded sizes.
        let written = cacache::WriteOpts::new()
            .algorithm(cacache::Algorithm::Xxh3)
            .size(data.len())
            .open_sync(&self.dir, cache_key(key))
            .and_then(|mut w| {
                std::io::Write::write_all(&mut w, data).map_err(|e| cacache::Error::IoError(e, "writing a block".into()))?;
                w.commit()
            });
        if let Err(e) = written {
            // The read itself succeeded; the next read of this block fetches it again.
            tracing::warn!(error = %e, dir = %self.dir.display(), "block cache: cannot store a block");
            return;
        }
        let trim = {
            let mut st = self.lock();
            st.written_since_trim += data.len() as u64;
            let due = self.config.max_bytes > 0 && st.written_since_trim >= (self.config.max_bytes / 16).max(1);
            if due {
                st.written_since_trim = 0;
            }
            due
        };
        if trim {
            self.trim();
        }
    }

    /// Cache maintenance: removes blocks, oldest first, that are older than `ttl`, or while the
    /// cache holds more than `max_bytes`, or while its filesystem is short of `min_free_percent`
    /// free. Only copies of committed objects live here, so nothing is lost by it.
    pub fn trim(&self) {
        let mut entries: Vec<cacache::Metadata> = cacache::list_sync(&self.dir).filter_map(Result::ok).collect();
        let mut total: u64 = entries.iter().map(|m| m.size as u64).sum();
        let mut short = self.free_space_short();
        let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis());
        let expired = |m: &cacache::Metadata| self.config.ttl.is_some_and(|t| now_ms.saturating_sub(m.time) > t.as_millis());
        entries.sort_by_key(|m| m.time);
        for m in entries {
            let over = self.config.max_bytes > 0 && total > self.config.max_bytes;
            if !(over || short > 0 || expired(&m)) {
                break; // the rest are newer
            }
            if cacache::remove_sync(&self.dir, &m.key).is_ok() {
                let _ = cacache::remove_hash_sync(&self.dir, &m.integrity);
                total = total.saturating_sub(m.size as u64);
                short = short.saturating_sub(m.size as u64);
            }
        }
    }

    /// Bytes missing to reach `min_free_percent` free on the cache's filesystem (0 if none, or
    /// if it cannot be told).
    fn free_space_short(&self) -> u64 {
        let Ok(space) = crate::objects::statvfs_space(&self.dir) else { return 0 };
        let floor = space.total_bytes / 100 * u64::from(self.config.min_free_percent);
        floor.saturating_sub(space.avail_bytes)
    }

    /// Runs [`BlockCache::trim`] every `every` on its own thread, for as long as the cache lives.
    pub fn maintain(self: &Arc<Self>, every: Duration) {
        let weak = Arc::downgrade(self);
        let spawned = std::thread::Builder::new().name("truckeefs-cache".into()).spawn(move || loop {
            std::thread::sleep(every.max(Duration::from_secs(1)));
            match weak.upgrade() {
                Some(cache) => cache.trim(),
                None => return,
            }
        });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot start cache maintenance; the cache is trimmed only as it fills");
        }
    }

    /// The size limit; 0 = none.
    pub fn max_bytes(&self) -> u64 {
        self.config.max_bytes
    }

    /// Bytes held on disk (what `status` reports).
    pub fn size(&self) -> u64 {
        cacache::list_sync(&self.dir).filter_map(Result::ok).map(|m| m.size as u64).sum()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A stable 64-bit hash of an object id (FNV-1a over its bytes and a domain tag): block keys
/// name objects without revealing them.
fn object_hash(object: &ObjectId) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in b"truckeefs-block\0".iter().chain(object.0.as_bytes()) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

/// Lowers the calling thread's scheduling priority (nice 10). A read-ahead stream runs ahead of
/// its reader, so a little delay costs nothing, and the Tahoe gateway it reads from (Python,
/// CPU-bound, most often on this machine) gets the processor first: the gateway is the
/// bottleneck of a cold read, and the socket's buffers absorb the stream's delays.
fn background_priority() {
    // SAFETY: plain system calls on the calling thread; a failure only leaves the priority as
    // it was.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, 10);
    }
}

fn cache_key((id, idx): BlockKey) -> String {
    format!("b/{id:016x}/{idx}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn object(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 % 251) as u8).collect()
    }

    fn cache(dir: &Path, data: Vec<u8>, config: BlockCacheConfig) -> (Arc<BlockCache>, Arc<AtomicUsize>) {
        let calls = Arc::new(AtomicUsize::new(0));
        let c = calls.clone();
        let fetch: Arc<Fetch> = Arc::new(move |_o: &ObjectId, off: u64, len: u32| {
            c.fetch_add(1, Ordering::SeqCst);
            let start = (off as usize).min(data.len());
            let end = (start + len as usize).min(data.len());
            Ok(Bytes::copy_from_slice(&data[start..end]))
        });
        (Arc::new(BlockCache::new(dir, config, fetch)), calls)
    }

    /// A stream of `data` in pieces, counting its requests.
    fn streamer(data: Arc<Vec<u8>>, requests: Arc<AtomicUsize>) -> Arc<StreamFetch> {
        Arc::new(move |_o: &ObjectId, off: u64, len: u64, piece: usize, f: &mut dyn FnMut(Bytes) -> bool| {
            requests.fetch_add(1, Ordering::SeqCst);
            let end = ((off + len) as usize).min(data.len());
            let mut at = (off as usize).min(end);
            while at < end {
                let to = (at + piece).min(end);
                if !f(Bytes::copy_from_slice(&data[at..to])) {
                    break;
                }
                at = to;
            }
            Ok(())
        })
    }

    /// A cache of 4 KiB blocks streaming 8 ahead, with its single fetches and its streams
    /// counted.
    fn streaming_cache(dir: &Path, data: &Arc<Vec<u8>>) -> (Arc<BlockCache>, Arc<AtomicUsize>, Arc<AtomicUsize>) {
        let config = BlockCacheConfig { block_size: 4096, read_ahead: 8, ..BlockCacheConfig::default() };
        let (c, calls) = cache(dir, (**data).clone(), config);
        let streams = Arc::new(AtomicUsize::new(0));
        let c = Arc::try_unwrap(c).ok().expect("only reference").with_stream(streamer(data.clone(), streams.clone()));
        (Arc::new(c), calls, streams)
    }

    /// `copy_out` of `size` bytes: what the sink got.
    fn copied(c: &BlockCache, id: &ObjectId, size: u64) -> Vec<u8> {
        let mut got = Vec::new();
        c.copy_out(id, size, &mut |piece| {
            got.extend_from_slice(piece);
            true
        })
        .unwrap();
        got
    }

    #[test]
    fn copy_out_takes_the_cached_blocks_and_streams_the_rest() {
        let tmp = tempfile::tempdir().unwrap();
        let data = Arc::new(object(20 * 4096 + 100));
        let (c, calls, streams) = streaming_cache(tmp.path(), &data);
        let id = ObjectId("URI:CHK:copy".into());
        let key = |i: u64| (object_hash(&id), i);
        let len = data.len() as u64;
        let requests = || (streams.load(Ordering::SeqCst), calls.load(Ordering::SeqCst));
        // Nothing cached: one stream, and nothing stored by it.
        assert_eq!(copied(&c, &id, len), *data);
        assert_eq!(requests(), (1, 0));
        assert!(!c.is_cached(key(0)));
        // The first five blocks cached: the stream starts after them.
        for i in 0..5 {
            c.store(key(i), &data[i as usize * 4096..(i as usize + 1) * 4096]);
        }
        assert_eq!(copied(&c, &id, len), *data);
        assert_eq!(requests(), (2, 0));
        // Within the cached blocks, and every block cached (the last one short): no request,
        // and a size past the object's end gives the object.
        assert_eq!(copied(&c, &id, 10_000), data[..10_000]);
        for i in 5..=20 {
            c.store(key(i), &data[i as usize * 4096..(i as usize * 4096 + 4096).min(data.len())]);
        }
        assert_eq!(copied(&c, &id, len + 5000), *data);
        assert_eq!(requests(), (2, 0));
        // A sink that wants no more ends it.
        let mut pieces = 0;
        c.copy_out(&id, len, &mut |_| {
            pieces += 1;
            false
        })
        .unwrap();
        assert_eq!(pieces, 1);
        // Without a stream: block by block.
        let config = BlockCacheConfig { block_size: 4096, read_ahead: 0, ..BlockCacheConfig::default() };
        let (plain, fetches) = cache(&tmp.path().join("plain"), (*data).clone(), config);
        assert_eq!(copied(&plain, &id, len + 5000), *data);
        assert_eq!(fetches.load(Ordering::SeqCst), 21);
    }

    #[test]
    fn reads_across_blocks_and_at_the_end() {
        let tmp = tempfile::tempdir().unwrap();
        let data = object(10_000);
        let config = BlockCacheConfig { block_size: 1024, read_ahead: 0, ..BlockCacheConfig::default() };
        let (c, calls) = cache(tmp.path(), data.clone(), config);
        let id = ObjectId("URI:CHK:secret".into());
        assert_eq!(&c.read(&id, 1000, 3000).unwrap()[..], &data[1000..4000]);
        assert_eq!(&c.read(&id, 9000, 4096).unwrap()[..], &data[9000..]);
        assert!(c.read(&id, 20_000, 10).unwrap().is_empty());
        // Within one block: in the middle, up to the object's end, past it, and empty.
        assert_eq!(&c.read(&id, 2100, 200).unwrap()[..], &data[2100..2300]);
        assert_eq!(&c.read(&id, 9500, 500).unwrap()[..], &data[9500..]);
        assert_eq!(&c.read(&id, 9990, 30).unwrap()[..], &data[9990..]);
        assert!(c.read(&id, 10_100, 10).unwrap().is_empty());
        assert!(c.read(&id, 0, 0).unwrap().is_empty());
        let before = calls.load(Ordering::SeqCst);
        // Cached now: no new fetch.
        assert_eq!(&c.read(&id, 1500, 100).unwrap()[..], &data[1500..1600]);
        assert_eq!(calls.load(Ordering::SeqCst), before);
        // No key reveals the object id.
        for m in cacache::list_sync(tmp.path()) {
            assert!(!m.unwrap().key.contains("secret"));
        }
    }

    #[test]
    fn sequential_reads_fetch_ahead() {
        let tmp = tempfile::tempdir().unwrap();
        let data = object(64 * 1024);
        let config = BlockCacheConfig { block_size: 4096, read_ahead: 3, ..BlockCacheConfig::default() };
        let (c, _calls) = cache(tmp.path(), data.clone(), config);
        let id = ObjectId("URI:CHK:x".into());
        let first = c.read(&id, 0, 4096).unwrap();
        assert_eq!(&first[..], &data[..4096]);
        // Blocks 1..=3 arrive without being read.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !(1..=3).all(|i| c.is_cached((object_hash(&id), i))) {
            assert!(std::time::Instant::now() < deadline, "read-ahead never arrived");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    #[test]
    fn sequential_reads_stream_in_one_request_a_window_ahead() {
        let tmp = tempfile::tempdir().unwrap();
        let data = Arc::new(object(64 * 4096 + 100));
        let (c, calls, streams) = streaming_cache(tmp.path(), &data);
        let id = ObjectId("URI:CHK:s".into());
        let mut got = Vec::new();
        loop {
            let chunk = c.read(&id, got.len() as u64, 1024).unwrap();
            if chunk.is_empty() {
                break;
            }
            got.extend_from_slice(&chunk);
        }
        assert_eq!(got, *data);
        // 65 blocks: one request from the first block to the end.
        assert_eq!((streams.load(Ordering::SeqCst), calls.load(Ordering::SeqCst)), (1, 0), "(streams, single fetches)");
    }

    /// The nice value of the calling thread.
    fn thread_nice() -> i32 {
        // SAFETY: plain system calls about the calling thread.
        unsafe { libc::getpriority(libc::PRIO_PROCESS, libc::syscall(libc::SYS_gettid) as libc::id_t) }
    }

    #[test]
    fn a_stream_runs_at_background_priority() {
        let tmp = tempfile::tempdir().unwrap();
        let data = Arc::new(object(4 * 4096));
        let config = BlockCacheConfig { block_size: 4096, read_ahead: 8, ..BlockCacheConfig::default() };
        let (c, _) = cache(tmp.path(), (*data).clone(), config);
        // The stream records the priority of the thread it runs on.
        let seen = Arc::new(Mutex::new(None));
        let (inner, record) = (streamer(data.clone(), Arc::default()), seen.clone());
        let stream: Arc<StreamFetch> = Arc::new(move |o: &ObjectId, off: u64, len: u64, piece: usize, f: &mut dyn FnMut(Bytes) -> bool| {
            *record.lock().unwrap() = Some(thread_nice());
            inner(o, off, len, piece, f)
        });
        let c = Arc::new(Arc::try_unwrap(c).ok().expect("only reference").with_stream(stream));
        let id = ObjectId("URI:CHK:n".into());
        assert_eq!(&c.read(&id, 0, 1024).unwrap()[..], &data[..1024]);
        let nice = seen.lock().unwrap().expect("the read started a stream");
        assert!(nice >= 10, "the stream's thread runs at nice {nice}");
        let here = thread_nice();
        assert!(here < 10, "the reader's thread keeps its priority ({here})");
    }

    #[test]
    fn a_stream_stays_a_window_ahead_of_a_reader_that_stops() {
        let tmp = tempfile::tempdir().unwrap();
        let data = Arc::new(object(64 * 4096 + 100));
        let (c, _, _) = streaming_cache(tmp.path(), &data);
        let paused = ObjectId("URI:CHK:p".into());
        assert_eq!(&c.read(&paused, 0, 1024).unwrap()[..], &data[..1024]);
        let pid = object_hash(&paused);
        let ahead = || (0..65).filter(|i| c.is_cached((pid, *i))).count();
        // The stream fills the window (however slowly it is scheduled), then waits.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while ahead() < 8 {
            assert!(std::time::Instant::now() < deadline, "the stream never filled its window: {} blocks", ahead());
            std::thread::sleep(Duration::from_millis(10));
        }
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(ahead(), 8, "blocks cached for a reader in block 0 with a window of 8");
    }

    #[test]
    fn trim_keeps_the_cache_under_its_limit() {
        let tmp = tempfile::tempdir().unwrap();
        let data = object(64 * 1024);
        let config = BlockCacheConfig { block_size: 4096, read_ahead: 0, max_bytes: 16 * 1024, ..BlockCacheConfig::default() };
        let (c, _) = cache(tmp.path(), data.clone(), config);
        let id = ObjectId("URI:CHK:y".into());
        assert_eq!(&c.read(&id, 0, 64 * 1024).unwrap()[..], &data[..]);
        c.trim();
        assert!(c.size() <= 16 * 1024, "cache holds {} bytes", c.size());
        assert!(c.size() > 0, "the sizes of the blocks are counted");
        // Evicted blocks are fetched again, correctly.
        assert_eq!(&c.read(&id, 0, 64 * 1024).unwrap()[..], &data[..]);
    }

    #[test]
    fn trim_drops_blocks_older_than_the_ttl() {
        let tmp = tempfile::tempdir().unwrap();
        let data = object(8 * 4096);
        let config = BlockCacheConfig { block_size: 4096, read_ahead: 0, ttl: Some(Duration::from_millis(1)), ..BlockCacheConfig::default() };
        let (c, _) = cache(tmp.path(), data.clone(), config);
        let id = ObjectId("URI:CHK:t".into());
        assert_eq!(&c.read(&id, 0, 8 * 4096).unwrap()[..], &data[..]);
        assert!(c.size() > 0);
        std::thread::sleep(Duration::from_millis(20));
        c.trim();
        assert_eq!(c.size(), 0, "blocks older than the ttl stayed");
        // Without a ttl or limit (and with space to spare) nothing goes.
        let (keep, _) = cache(tmp.path(), data.clone(), BlockCacheConfig { block_size: 4096, read_ahead: 0, min_free_percent: 0, ..BlockCacheConfig::default() });
        assert_eq!(&keep.read(&id, 0, 4096).unwrap()[..], &data[..4096]);
        keep.trim();
        assert_eq!(keep.size(), 4096);
    }

    #[test]
    fn a_failed_fetch_is_an_error_and_not_cached() {
        let tmp = tempfile::tempdir().unwrap();
        let fetch: Arc<Fetch> = Arc::new(|_: &ObjectId, _, _| Err(IoError::new(IoErrorKind::Timeout, "gateway down")));
        let c = Arc::new(BlockCache::new(tmp.path(), BlockCacheConfig::default(), fetch));
        let id = ObjectId("URI:CHK:z".into());
        let e = c.read(&id, 0, 10).unwrap_err();
        assert_eq!(e.kind, IoErrorKind::Timeout);
        assert_eq!(c.size(), 0);
    }
}
