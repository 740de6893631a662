//! The aysfs client's network effects: Redis pipelines (`redis`, pooled connections with
//! timeouts) and HTTP requests (`isahc`; blob GETs on libcurl's easy interface; basic auth,
//! timeouts), with blob bodies streamed into the blob cache while their md5 is computed.

use super::blobs::{BlobCache, BlobWriter};
use crate::ays::md5sum::Md5Hasher;
use crate::ays::proto::{self, FetchMode};
use bytes::Bytes;
use isahc::auth::{Authentication, Credentials};
use isahc::config::{Configurable, RedirectPolicy};
use isahc::{Body, HttpClient};
use std::collections::HashMap;
use std::fmt;
use std::io::{Read, Write};
use std::sync::Mutex;
use std::time::Duration;
use truckeefs_core::ays::{Arg, Md5, RedisCmd, RedisValue, Route};

/// The largest blob accepted (as the protocol bounds it).
const BLOB_MAX: u64 = proto::BLOB_SIZE_MAX;
/// The largest JSON answer accepted.
const JSON_MAX: u64 = proto::JSON_SIZE_MAX;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A transfer slower than 1 KiB/s for this long fails.
const STALL_TIMEOUT: Duration = Duration::from_secs(30);
const REDIS_TIMEOUT: Duration = Duration::from_secs(30);

/// A Redis server: host, port and optional password.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct RedisTarget {
    pub host: String,
    pub port: u16,
    pub password: String,
}

impl fmt::Debug for RedisTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

impl RedisTarget {
    fn url(&self) -> String {
        let host = if self.host.contains(':') { format!("[{}]", self.host) } else { self.host.clone() };
        if self.password.is_empty() {
            format!("redis://{host}:{}/", self.port)
        } else {
            let pw = percent_encoding::utf8_percent_encode(&self.password, percent_encoding::NON_ALPHANUMERIC);
            format!("redis://:{pw}@{host}:{}/", self.port)
        }
    }
}

/// An HTTP server: base URL and optional basic-auth credentials.
#[derive(Clone, PartialEq, Eq)]
pub struct HttpTarget {
    pub url: String,
    pub login: String,
    pub password: String,
}

impl fmt::Debug for HttpTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&proto::redact_url(&self.url))
    }
}

/// Pooled Redis connections, by server.
#[derive(Default)]
pub struct RedisPool {
    pools: Mutex<HashMap<RedisTarget, Vec<redis::Connection>>>,
}

impl RedisPool {
    fn take(&self, t: &RedisTarget) -> Result<redis::Connection, String> {
        if let Some(c) = self.pools.lock().unwrap_or_else(|e| e.into_inner()).get_mut(t).and_then(Vec::pop) {
            return Ok(c);
        }
        let client = redis::Client::open(t.url()).map_err(|e| format!("redis {t:?}: {e}"))?;
        let c = client.get_connection_with_timeout(CONNECT_TIMEOUT).map_err(|e| format!("cannot connect: {e}"))?;
        c.set_read_timeout(Some(REDIS_TIMEOUT)).map_err(|e| e.to_string())?;
        c.set_write_timeout(Some(REDIS_TIMEOUT)).map_err(|e| e.to_string())?;
        Ok(c)
    }

    fn give(&self, t: &RedisTarget, c: redis::Connection) {
        let mut p = self.pools.lock().unwrap_or_else(|e| e.into_inner());
        let v = p.entry(t.clone()).or_default();
        if v.len() < 16 {
            v.push(c);
        }
    }

    /// Runs `cmds` as one pipeline. With `into_blob`, the last command's bulk value goes into
    /// the blob cache (installed only if its md5 is `into_blob`) and becomes
    /// [`RedisValue::Stored`].
    pub fn run(
        &self,
        t: &RedisTarget,
        cmds: &[RedisCmd],
        into_blob: Option<Md5>,
        blobs: &BlobCache,
    ) -> Result<Vec<RedisValue>, String> {
        let mut pipe = redis::pipe();
        for c in cmds {
            let mut args = c.0.iter();
            let name = match args.next() {
                Some(Arg::Bytes(b)) => String::from_utf8_lossy(b).into_owned(),
                _ => return Err("empty redis command".into()),
            };
            let mut cmd = redis::cmd(&name);
            for a in args {
                match a {
                    Arg::Bytes(b) => cmd.arg(&b[..]),
                    Arg::Blob(m) => cmd.arg(blobs.read_all(*m).map_err(|e| format!("blob cache: {e}"))?),
                };
            }
            pipe.add_command(cmd);
        }
        let mut conn = self.take(t)?;
        let values: Vec<redis::Value> = match pipe.query(&mut conn) {
            Ok(v) => v,
            Err(e) => {
                // A server error leaves the connection usable; anything else may not.
                if e.kind() == redis::ErrorKind::ResponseError {
                    self.give(t, conn);
                }
                return Err(format!("{e}"));
            }
        };
        self.give(t, conn);
        let n = values.len();
        let mut out = Vec::with_capacity(n);
        for (i, v) in values.into_iter().enumerate() {
            if i + 1 == n && into_blob.is_some() {
                out.push(match v {
                    redis::Value::Nil => RedisValue::Nil,
                    redis::Value::BulkString(data) => {
                        let mut w = blobs.writer().map_err(|e| format!("blob cache: {e}"))?;
                        w.write_all(&data).map_err(|e| format!("blob cache: {e}"))?;
                        let (md5, len) = blobs.install(w, into_blob).map_err(|e| format!("blob cache: {e}"))?;
                        RedisValue::Stored { md5, len }
                    }
                    other => return Err(format!("unexpected answer {other:?}")),
                });
            } else {
                out.push(convert(v));
            }
        }
        Ok(out)
    }
}

fn convert(v: redis::Value) -> RedisValue {
    match v {
        redis::Value::Nil => RedisValue::Nil,
        redis::Value::Int(i) => RedisValue::Int(i),
        redis::Value::BulkString(b) => RedisValue::Data(Bytes::from(b)),
        redis::Value::Array(a) | redis::Value::Set(a) => RedisValue::Array(a.into_iter().map(convert).collect()),
        redis::Value::Map(m) => RedisValue::Array(m.into_iter().flat_map(|(k, v)| [convert(k), convert(v)]).collect()),
        redis::Value::SimpleString(s) => RedisValue::Status(s),
        redis::Value::Okay => RedisValue::Status("OK".into()),
        redis::Value::VerbatimString { text, .. } => RedisValue::Data(Bytes::from(text.into_bytes())),
        other => RedisValue::Status(format!("{other:?}")),
    }
}

/// The HTTP client of the process (one connection pool for every mount).
pub fn http_client() -> Result<HttpClient, String> {
    HttpClient::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .low_speed_timeout(1024, STALL_TIMEOUT)
        .redirect_policy(RedirectPolicy::None)
        .max_connections_per_host(16)
        .build()
        .map_err(|e| format!("HTTP client: {e}"))
}

/// What an HTTP request answered.
pub struct HttpAnswer {
    pub status: u16,
    pub body: Bytes,
    pub stored: Option<(Md5, u64)>,
}

/// The URL of `route` on `t`; `grid`: `t` is a cache server, so store routes go under `/stor`.
pub fn route_url(t: &HttpTarget, route: &Route, grid: bool) -> (String, bool) {
    let stor_base = if grid { format!("{}/stor", t.url.trim_end_matches('/')) } else { t.url.clone() };
    let fetch = |n: u8| FetchMode::from_u8(n).unwrap_or(FetchMode::Fetch);
    match route {
        Route::CacheMd { client, mount, dir, fetch: f } => (proto::url::cache_md(&t.url, client, mount, dir, fetch(*f)), false),
        Route::CacheBlob { domain, md5, fetch: f } => (proto::url::cache_blob(&t.url, domain, &md5.hex(), fetch(*f)), false),
        Route::StoreMd { ays_id } => (proto::url::store_md(&stor_base, ays_id), false),
        Route::StoreBlob { domain, md5 } => (proto::url::store_blob(&stor_base, domain, &md5.hex()), false),
        Route::PutStoreMd { ays_id, .. } => (proto::url::store_md(&stor_base, ays_id), true),
        Route::PutStoreBlob { domain, md5 } => (proto::url::store_blob(&stor_base, domain, &md5.hex()), true),
    }
}

fn with_auth(t: &HttpTarget, b: isahc::http::request::Builder) -> isahc::http::request::Builder {
    if t.login.is_empty() && t.password.is_empty() {
        b
    } else {
        b.authentication(Authentication::basic()).credentials(Credentials::new(t.login.clone(), t.password.clone()))
    }
}

/// Performs one route on `t`. With `into_blob` (a GET of a blob), a 200 body is streamed into the
/// blob cache (see [`fetch_blob`]).
pub fn run_http(
    client: &HttpClient,
    t: &HttpTarget,
    route: &Route,
    grid: bool,
    into_blob: Option<Md5>,
    blobs: &BlobCache,
) -> Result<HttpAnswer, String> {
    let (url, put) = route_url(t, route, grid);
    let shown = proto::redact_url(&url);
    if !put && into_blob.is_some() {
        return fetch_blob(t, &url, &shown, into_blob, blobs);
    }
    let request = if put {
        let body = match route {
            Route::PutStoreMd { body, .. } => Body::from(body.to_vec()),
            Route::PutStoreBlob { md5, .. } => {
                let Some((f, len)) = blobs.open_blob(*md5).map_err(|e| format!("blob cache: {e}"))? else {
                    return Err(format!("blob {md5} is not in the blob cache"));
                };
                Body::from_reader_sized(f, len)
            }
            _ => Body::empty(),
        };
        with_auth(t, isahc::Request::put(&url)).body(body)
    } else {
        with_auth(t, isahc::Request::get(&url)).body(Body::empty())
    }
    .map_err(|e| format!("{shown}: bad URL: {e}"))?;
    let mut resp = client.send(request).map_err(|e| format!("{shown}: {e}"))?;
    let status = resp.status().as_u16();
    let mut body = Vec::new();
    resp.body_mut().take(JSON_MAX + 1).read_to_end(&mut body).map_err(|e| format!("{shown}: {e}"))?;
    if body.len() as u64 > JSON_MAX {
        return Err(format!("{shown}: answer larger than {JSON_MAX} bytes"));
    }
    Ok(HttpAnswer { status, body: Bytes::from(body), stored: None })
}

/// Receives a blob body into a [`BlobWriter`]: the first MiB is kept here; a body longer than
/// that is written to the blob cache here, one MiB chunk at a time, while a second thread
/// computes its md5 (the costlier half: about 2 ns a byte, against 1 for receiving and writing),
/// so neither waits for the other (a small body is hashed on the receiving thread: a thread
/// would cost more). The chunk buffers go back and forth between the two threads (at most
/// `IN_FLIGHT + 2` of them), so no chunk is allocated, zeroed and faulted in anew.
struct ChunkSink {
    w: BlobWriter,
    buf: Vec<u8>,
    total: u64,
    thread: Option<HashThread>,
}

struct HashThread {
    tx: std::sync::mpsc::SyncSender<Vec<u8>>,
    back_rx: std::sync::mpsc::Receiver<Vec<u8>>,
    md5: std::thread::JoinHandle<Md5Hasher>,
}

const CHUNK: usize = 1 << 20;
const RECV_BUFFER: usize = 512 << 10;
const IN_FLIGHT: usize = 4;

impl ChunkSink {
    fn new(w: BlobWriter) -> ChunkSink {
        ChunkSink { w, buf: Vec::with_capacity(CHUNK), total: 0, thread: None }
    }

    fn push(&mut self, mut data: &[u8]) -> Result<(), String> {
        self.total += data.len() as u64;
        if self.total > BLOB_MAX {
            return Err(format!("blob larger than {BLOB_MAX} bytes"));
        }
        while !data.is_empty() {
            if self.buf.len() == CHUNK {
                self.hand_over()?;
            }
            let n = (CHUNK - self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data[..n]);
            data = &data[n..];
        }
        Ok(())
    }

    /// Writes the full buffer to the blob cache, hands it to the hashing thread (started on the
    /// first call) and takes an empty one back.
    fn hand_over(&mut self) -> Result<(), String> {
        if self.thread.is_none() {
            let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(IN_FLIGHT);
            let (back_tx, back_rx) = std::sync::mpsc::channel::<Vec<u8>>();
            let mut h = self.w.lend_md5().ok_or("blob cache: md5 state gone")?;
            let md5 = std::thread::Builder::new()
                .name("ays-blob-md5".into())
                .spawn(move || {
                    for mut chunk in rx {
                        h.update(&chunk);
                        chunk.clear();
                        // The receiver may be gone (it failed); the buffer is then dropped here.
                        let _ = back_tx.send(chunk);
                    }
                    h
                })
                .map_err(|e| format!("blob cache: {e}"))?;
            self.thread = Some(HashThread { tx, back_rx, md5 });
        }
        self.w.write_all(&self.buf).map_err(|e| format!("blob cache: {e}"))?;
        let t = self.thread.as_ref().ok_or("blob cache: md5 thread gone")?;
        let next = t.back_rx.try_recv().unwrap_or_else(|_| Vec::with_capacity(CHUNK));
        let full = std::mem::replace(&mut self.buf, next);
        t.tx.send(full).map_err(|_| "blob cache: md5 thread stopped".to_string())
    }

    /// Everything received: the writer, with every byte written and hashed.
    fn finish(mut self) -> Result<BlobWriter, String> {
        if self.thread.is_none() {
            // A small body: hashed as it is written.
            self.w.write_all(&self.buf).map_err(|e| format!("blob cache: {e}"))?;
            return Ok(self.w);
        }
        if !self.buf.is_empty() {
            self.hand_over()?;
        }
        let t = self.thread.take().ok_or("blob cache: md5 thread gone")?;
        drop(t.tx);
        let h = t.md5.join().map_err(|_| "blob cache: md5 thread panicked".to_string())?;
        self.w.return_md5(h);
        Ok(self.w)
    }
}

/// A blob GET on libcurl's easy interface, on the calling thread: the body goes from curl's
/// receive buffer straight into the blob writer (isahc would pass it through its agent thread
/// and a pipe first, two more copies and hand-offs per byte). One handle per thread keeps its
/// connections alive between blobs. Answers as [`run_http`] does.
fn fetch_blob(t: &HttpTarget, url: &str, shown: &str, expected: Option<Md5>, blobs: &BlobCache) -> Result<HttpAnswer, String> {
    crate::curl_easy::with_handle(|easy| fetch_with(easy, t, url, shown, expected, blobs))
}

fn fetch_with(
    easy: &mut curl::easy::Easy,
    t: &HttpTarget,
    url: &str,
    shown: &str,
    expected: Option<Md5>,
    blobs: &BlobCache,
) -> Result<HttpAnswer, String> {
    let fail = |e: curl::Error| format!("{shown}: {}", e.description());
    easy.reset();
    easy.signal(false).map_err(fail)?;
    easy.url(url).map_err(fail)?;
    easy.get(true).map_err(fail)?;
    easy.follow_location(false).map_err(fail)?;
    // A large receive buffer: one `recv` and one write callback per 512 KiB instead of per
    // 16 KiB (libcurl's default).
    easy.buffer_size(RECV_BUFFER).map_err(fail)?;
    easy.connect_timeout(CONNECT_TIMEOUT).map_err(fail)?;
    easy.low_speed_limit(1024).map_err(fail)?;
    easy.low_speed_time(STALL_TIMEOUT).map_err(fail)?;
    if !(t.login.is_empty() && t.password.is_empty()) {
        let mut auth = curl::easy::Auth::new();
        auth.basic(true);
        easy.http_auth(&auth).map_err(fail)?;
        easy.username(&t.login).map_err(fail)?;
        easy.password(&t.password).map_err(fail)?;
    }
    let status = std::cell::Cell::new(0u16);
    let mut small = Vec::new();
    let mut sink: Option<ChunkSink> = None;
    let mut failed: Option<String> = None;
    let performed = {
        let mut transfer = easy.transfer();
        transfer
            .header_function(|h| {
                if let Some(code) = crate::curl_easy::status_code(h) {
                    status.set(code);
                }
                true
            })
            .map_err(fail)?;
        transfer
            .write_function(|data| {
                let pushed = if status.get() == 200 {
                    if sink.is_none() {
                        match blobs.writer() {
                            Ok(w) => sink = Some(ChunkSink::new(w)),
                            Err(e) => {
                                failed = Some(format!("blob cache: {e}"));
                                return Ok(0);
                            }
                        }
                    }
                    sink.as_mut().map_or(Ok(()), |s| s.push(data).map_err(|e| format!("{shown}: {e}")))
                } else if small.len() + data.len() > JSON_MAX as usize {
                    Err(format!("{shown}: answer larger than {JSON_MAX} bytes"))
                } else {
                    small.extend_from_slice(data);
                    Ok(())
                };
                match pushed {
                    Ok(()) => Ok(data.len()),
                    Err(e) => {
                        failed = Some(e);
                        // Fewer bytes than given: libcurl ends the transfer with an error.
                        Ok(0)
                    }
                }
            })
            .map_err(fail)?;
        transfer.perform()
    };
    if let Some(e) = failed {
        return Err(e);
    }
    performed.map_err(fail)?;
    let status = easy.response_code().map_err(fail)? as u16;
    if status == 200 {
        let w = match sink {
            Some(s) => s.finish()?,
            None => blobs.writer().map_err(|e| format!("blob cache: {e}"))?,
        };
        let stored = blobs.install(w, expected).map_err(|e| format!("blob cache: {e}"))?;
        return Ok(HttpAnswer { status, body: Bytes::new(), stored: Some(stored) });
    }
    Ok(HttpAnswer { status, body: Bytes::from(small), stored: None })
}

/// POSTs a JSON body; `Ok(status)`.
pub fn post_json(client: &HttpClient, t: &HttpTarget, url: &str, body: &serde_json::Value) -> Result<u16, String> {
    let shown = proto::redact_url(url);
    let req = with_auth(t, isahc::Request::post(url))
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .map_err(|e| format!("{shown}: bad URL: {e}"))?;
    let mut resp = client.send(req).map_err(|e| format!("{shown}: {e}"))?;
    let mut sink = Vec::new();
    let _ = resp.body_mut().take(1 << 16).read_to_end(&mut sink);
    Ok(resp.status().as_u16())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bodies of every size around the chunk size, pushed in uneven pieces, arrive whole.
    #[test]
    fn a_chunk_sink_writes_every_byte_in_order() {
        let d = tempfile::tempdir().unwrap();
        let blobs = BlobCache::open(d.path(), 1 << 30).unwrap();
        for (i, len) in [0, 1, 4096, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 12_345].into_iter().enumerate() {
            let body: Vec<u8> = (0..len).map(|j| (j * 31 + i * 7 + j / 997) as u8).collect();
            let mut sink = ChunkSink::new(blobs.writer().unwrap());
            for piece in body.chunks(16_411 + i * 1000) {
                sink.push(piece).unwrap();
            }
            let w = sink.finish().unwrap();
            let want = Md5(crate::ays::md5sum::md5_of(&body));
            let (md5, got_len) = blobs.install(w, Some(want)).unwrap();
            assert_eq!((md5, got_len), (want, len as u64), "body of {len} bytes");
            assert!(blobs.read_all(md5).unwrap() == body, "body of {len} bytes");
        }
    }
}
