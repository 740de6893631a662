//! A client of the Tahoe-LAFS web API (the gateway at `tahoe_url`), and [`execute_store`], which
//! executes the core's [`StoreRequest`]s against a grid.
//!
//! Synchronous: the runtime calls it from its blocking pool. Every request goes through one
//! `isahc` client, except the block cache's read stream (on libcurl's easy interface, see
//! `tahoe/stream.rs`), and holds one of `max_connections` permits while it is in flight.
//!
//! # What is sent (Tahoe-LAFS 1.20, `docs/frontends/webapi.rst`)
//! | operation | request | success |
//! |---|---|---|
//! | upload | `PUT /uri?format=CHK` (or `MDMF`), the file as the body | 200/201, body = the new cap |
//! | read | `GET /uri/$CAP` with `Range: bytes=A-B` | 206 (or 200 if the range is ignored; 416 = at or past the end) |
//! | head | `HEAD /uri/$CAP` | 200 (does not look for shares) |
//! | stat | `GET /uri/$CAP?t=json`, `GET /uri/$DIRCAP/NAME?t=json` | 200, a `[type, props]` node |
//! | check | `POST /uri/$CAP?t=check&output=JSON` | 200, share counts |
//! | mkdir | `POST /uri?t=mkdir`; `POST /uri/$DIRCAP/?t=mkdir&name=NAME&replace=false` | 200, body = the dircap (409 if taken) |
//! | link | `PUT /uri/$DIRCAP/NAME?t=uri&replace=true\|false\|only-files`, child cap as the body | 200/201 (409 if `replace=false` and taken) |
//! | link several | `POST /uri/$DIRCAP/?t=set_children&replace=true`, `{name: ["filenode"\|"dirnode", {"ro_uri"\|"rw_uri": cap}]}` | 200 |
//! | unlink | `DELETE /uri/$DIRCAP/NAME` | 200, body = the cap that was linked (404 if absent) |
//! | relink | `POST /uri/$DIRCAP/?t=relink&from_name=OLD&to_dir=$NEWDIRCAP&to_name=NEW&replace=...` | 200 |
//! | list | `GET /uri/$DIRCAP?t=json` | 200, a dirnode with `children` |
//! | grid status | `GET /?t=json` (servers, their `available_space`), `GET /status/?t=json` | 200 |
//!
//! Where a directory is given as a path (`$DIRCAP/A/B`, [`DirPath`]), the gateway walks it, and a
//! PUT or POST creates the missing directories on the way.
//! Caps, child names and query values are percent-encoded (a cap's colons become `%3A`).
//! Error replies are HTML even with `Accept: text/plain`; their text is reduced to one line with
//! anything that looks like a cap removed. Status codes map to [`IoErrorKind`]s: 404 and 410
//! (no shares found) are `NotFound`, 409 is `Conflict`, 400 "unknown URI type" is `Corrupt`,
//! the rest `Other`; a reply that is not what the web API documents is `Corrupt`.
//!
//! # Timeouts
//! Every request connects within `net_timeout` and fails when no byte moves for `net_timeout`
//! (curl's low-speed limit: 1 byte/s over `net_timeout`). Uploads have no total timeout; they
//! use a watchdog instead, because Tahoe receives the whole body into a temporary file before it
//! encrypts, encodes and pushes it to the storage servers, and only then answers — for a large
//! file that silent phase is far longer than any sensible stall timeout (about 10 s for 256 MiB
//! on a local 1-of-1 grid; minutes over a slow uplink). The watchdog fails an upload when the
//! gateway accepts no body byte for `net_timeout`, or, once the body is sent, when the gateway's
//! `/status/?t=json` list of active operations stops changing for `net_timeout` (an upload in
//! progress reports its hashing, encoding and pushing progress there per segment).
//!
//! # `auth_token`
//! Tahoe 1.20 checks no token on `/uri` (the capability in the URL is the authority); it checks
//! `Authorization: tahoe-lafs <token>` (the node's `private/api_auth_token`) only under
//! `/private/`. The token, when configured, is sent on every request in that form — accepted
//! and ignored by `/uri`, and what a reverse proxy in front of the gateway can check. A token
//! that already contains a space is sent as the whole header value (`Bearer xyz` reproduces what
//! the Python TruckeeFS sent).
//!
//! # Secrets
//! A cap is a secret. Messages name objects by [`ObjectId::fingerprint`] and the gateway by host
//! and port; isahc's own tracing (its spans carry the request URL, its wire trace the headers)
//! is switched off around every request (libcurl's easy interface has none); proxies from the
//! environment are ignored, so no cap goes to a proxy.

use crate::objects::io_error;
use crate::staging::Staging;
use crate::tahoe_json::{self, CheckResults, JsonError, NodeInfo, NodeKind, Welcome};
use bytes::Bytes;
use isahc::config::{Configurable, RedirectPolicy};
use isahc::http::header::{HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_LENGTH, CONTENT_RANGE, RANGE};
use isahc::{AsyncBody, HttpClient, Request};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use smol::io::AsyncReadExt;
use smol::stream::Stream;
use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::future::Future;
use std::io::{self, Read};
use std::path::Path;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use truckeefs_core::{Ino, IoError, IoErrorKind, IoReply, IoResult, ObjectId, Space, StoreRequest};

mod stream;

/// Characters left as they are in a path segment or query value: RFC 3986's unreserved set.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');
/// Upload bodies go to curl in chunks of this size, at most `UPLOAD_QUEUE` chunks ahead.
const UPLOAD_CHUNK: usize = 256 * 1024;
const UPLOAD_QUEUE: usize = 4;
/// The largest reply accepted where a cap or an error text is expected.
const SMALL_REPLY_MAX: u64 = 64 * 1024;
/// The largest `t=json` reply accepted (a directory of some 400,000 entries).
const JSON_REPLY_MAX: u64 = 256 * 1024 * 1024;
/// Rounds of Range requests for one read before a gateway that keeps answering short is `Corrupt`.
const RANGE_ROUNDS: usize = 8;
/// Free space reported when no storage server announces its own: 1 PiB.
pub const SPACE_UNKNOWN: u64 = 1 << 50;

/// How new file objects are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum UploadFormat {
    /// Immutable CHK (LIT for files of at most 55 bytes): a new cap per version. The default.
    #[default]
    Chk,
    /// An MDMF mutable file; still a new one per version, so old versions stay readable.
    Mdmf,
}

impl UploadFormat {
    fn query(self) -> &'static str {
        match self {
            UploadFormat::Chk => "CHK",
            UploadFormat::Mdmf => "MDMF",
        }
    }

    /// Whether `cap` is what an upload in this format returns.
    fn accepts(self, cap: &str) -> bool {
        match self {
            UploadFormat::Chk => cap.starts_with("URI:CHK:") || cap.starts_with("URI:LIT:"),
            UploadFormat::Mdmf => cap.starts_with("URI:MDMF:"),
        }
    }
}

/// `backend_storage_strategy`: how file objects are linked under the rootcap.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum StorageStrategy {
    /// One directory, the rootcap, whose children are named by inode number.
    #[default]
    Flat,
    /// The tree mirrored into Tahoe directories, files linked under their names (`crate::mirror`).
    Mirror,
}

/// What to do when a link's name is taken (`replace=` of the web API).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Replace {
    /// Replace whatever is linked there.
    Any,
    /// Fail with `Conflict` (HTTP 409).
    Never,
    /// Replace a file, fail with `Conflict` on a directory (like `mv`).
    OnlyFiles,
}

impl Replace {
    fn query(self) -> &'static str {
        match self {
            Replace::Any => "true",
            Replace::Never => "false",
            Replace::OnlyFiles => "only-files",
        }
    }
}

/// A directory named by a dircap and the names below it (`$DIRCAP/A/B`); the gateway walks
/// the names.
#[derive(Clone, Copy, Debug)]
pub struct DirPath<'a> {
    pub cap: &'a ObjectId,
    pub names: &'a [String],
}

impl<'a> DirPath<'a> {
    /// The directory `cap` itself.
    pub fn cap(cap: &'a ObjectId) -> DirPath<'a> {
        DirPath { cap, names: &[] }
    }

    /// `/uri/$DIRCAP/A/B`, each part checked and percent-encoded.
    fn url(&self, op: &Op<'_>) -> Result<String, IoError> {
        check_cap(op, self.cap)?;
        let mut url = cap_path(self.cap);
        for n in self.names {
            check_name(op, n)?;
            url.push('/');
            url.push_str(&encode(n));
        }
        Ok(url)
    }
}

/// The `auth_token` secret, ready to send as an `Authorization` header. `Debug` hides it.
#[derive(Clone)]
pub struct AuthToken(HeaderValue);

impl AuthToken {
    /// A token is sent as `Authorization: tahoe-lafs <token>`; a value containing a space is
    /// taken as a whole header value (`Bearer <token>`). Fails on characters a header cannot
    /// carry (the message does not repeat the token).
    pub fn new(token: &str) -> Result<AuthToken, IoError> {
        let token = token.trim();
        let bad = token.is_empty() || token.bytes().any(|b| b.is_ascii_control() || !b.is_ascii());
        let value = if token.contains(' ') { token.to_string() } else { format!("tahoe-lafs {token}") };
        let mut header = match HeaderValue::from_str(&value) {
            Ok(h) if !bad => h,
            _ => {
                return Err(IoError::new(
                    IoErrorKind::Other,
                    "auth_token is empty or has characters an HTTP header cannot carry",
                ))
            }
        };
        header.set_sensitive(true);
        Ok(AuthToken(header))
    }
}

impl fmt::Debug for AuthToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AuthToken(<redacted>)")
    }
}

/// At most `n` holders at once.
struct Semaphore {
    free: Mutex<usize>,
    cv: Condvar,
}

struct Permit<'a>(&'a Semaphore);

impl Semaphore {
    fn new(n: usize) -> Semaphore {
        Semaphore { free: Mutex::new(n), cv: Condvar::new() }
    }

    fn acquire(&self) -> Permit<'_> {
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        while *free == 0 {
            free = self.cv.wait(free).unwrap_or_else(|p| p.into_inner());
        }
        *free -= 1;
        Permit(self)
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        *self.0.free.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        self.0.cv.notify_one();
    }
}

/// The operation a message is about: its name and, when there is one, the cap by fingerprint.
struct Op<'a> {
    name: &'static str,
    cap: Option<&'a ObjectId>,
}

impl<'a> Op<'a> {
    fn new(name: &'static str, cap: Option<&'a ObjectId>) -> Op<'a> {
        Op { name, cap }
    }

    fn err(&self, kind: IoErrorKind, detail: impl fmt::Display) -> IoError {
        let detail = redact_caps(&detail.to_string());
        match self.cap {
            Some(cap) => IoError::new(kind, format!("tahoe {} {}: {detail}", self.name, cap.fingerprint())),
            None => IoError::new(kind, format!("tahoe {}: {detail}", self.name)),
        }
    }

    fn corrupt(&self, e: JsonError) -> IoError {
        self.err(IoErrorKind::Corrupt, format_args!("reply not as documented: {e}"))
    }
}

/// A client of one Tahoe-LAFS gateway.
pub struct TahoeClient {
    /// `tahoe_url` without a trailing slash. May carry credentials: never shown.
    base: String,
    /// Host and port of the gateway, for messages.
    gateway: String,
    http: HttpClient,
    auth: Option<AuthToken>,
    net_timeout: Duration,
    permits: Semaphore,
    max_connections: usize,
    format: UploadFormat,
    /// Uploads in flight, for `status`.
    uploads: Mutex<BTreeMap<u64, UploadInFlight>>,
    next_upload: AtomicU64,
}

struct UploadInFlight {
    /// The file's name (in the staging area: `<ino>.data`).
    name: String,
    len: u64,
    progress: Arc<Progress>,
}

/// One upload in flight, as `status` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UploadStatus {
    pub name: String,
    pub len: u64,
    /// Body bytes the gateway has taken.
    pub sent: u64,
    pub elapsed: Duration,
    /// The whole body is sent; the gateway encodes and pushes it to the storage servers.
    pub storing: bool,
}

/// Removes an upload from the list in flight when it ends, however it ends.
struct Registered<'a>(&'a TahoeClient, u64);

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.0.uploads.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.1);
    }
}

impl fmt::Debug for TahoeClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TahoeClient")
            .field("gateway", &self.gateway)
            .field("net_timeout", &self.net_timeout)
            .field("max_connections", &self.max_connections)
            .field("format", &self.format)
            .field("auth", &self.auth.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl TahoeClient {
    /// A client of the gateway at `url` (e.g. `http://127.0.0.1:3456`). `net_timeout` bounds
    /// connecting and every stall; at most `max_connections` requests are in flight (0 counts
    /// as 1). Uploads are CHK unless [`TahoeClient::with_upload_format`] says otherwise.
    pub fn new(
        url: &str,
        auth_token: Option<AuthToken>,
        net_timeout: Duration,
        max_connections: usize,
    ) -> Result<TahoeClient, IoError> {
        let bad_url = |why: &str| IoError::new(IoErrorKind::Other, format!("tahoe_url: {why}"));
        let base = url.trim().trim_end_matches('/').to_string();
        let uri: isahc::http::Uri = base.parse().map_err(|_| bad_url("not a valid URL"))?;
        let port = match uri.scheme_str() {
            Some("http") => uri.port_u16().unwrap_or(80),
            Some("https") => uri.port_u16().unwrap_or(443),
            _ => return Err(bad_url("the scheme must be http or https")),
        };
        let host = uri.host().ok_or_else(|| bad_url("no host"))?;
        if uri.query().is_some() || base.contains('#') {
            return Err(bad_url("must not have a query or a fragment"));
        }
        if net_timeout.is_zero() {
            return Err(IoError::new(IoErrorKind::Other, "net_timeout must be more than 0"));
        }
        let gateway = format!("{host}:{port}");
        let http = HttpClient::builder()
            .connect_timeout(net_timeout)
            .redirect_policy(RedirectPolicy::None)
            .automatic_decompression(false)
            .proxy(None)
            .tcp_nodelay()
            .build()
            .map_err(|e| IoError::new(IoErrorKind::Other, format!("cannot create the HTTP client: {e}")))?;
        let max_connections = max_connections.max(1);
        Ok(TahoeClient {
            base,
            gateway,
            http,
            auth: auth_token,
            net_timeout,
            permits: Semaphore::new(max_connections),
            max_connections,
            format: UploadFormat::Chk,
            uploads: Mutex::new(BTreeMap::new()),
            next_upload: AtomicU64::new(0),
        })
    }

    /// Sets the format of uploads made by [`execute_store`].
    pub fn with_upload_format(mut self, format: UploadFormat) -> TahoeClient {
        self.format = format;
        self
    }

    pub fn upload_format(&self) -> UploadFormat {
        self.format
    }

    pub fn net_timeout(&self) -> Duration {
        self.net_timeout
    }

    /// `host:port` of the gateway (safe to show).
    pub fn gateway(&self) -> &str {
        &self.gateway
    }

    // ----- requests -----

    /// curl counts its low-speed time in whole seconds (0 switches it off): round up.
    fn stall_timeout(&self) -> Duration {
        Duration::from_secs(self.net_timeout.as_secs_f64().ceil().max(1.0) as u64)
    }

    fn request(&self, method: &str, path: &str) -> isahc::http::request::Builder {
        let mut b = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header("Accept", "text/plain")
            .low_speed_timeout(1, self.stall_timeout());
        if let Some(token) = &self.auth {
            b = b.header(AUTHORIZATION, token.0.clone());
        }
        b
    }

    /// Sends a request holding a permit, and hands the reply to `handle` (which reads its body
    /// before the permit is released).
    fn exchange<T>(
        &self,
        op: &Op<'_>,
        request: isahc::http::request::Builder,
        body: Vec<u8>,
        handle: impl FnOnce(u16, &HeaderMap, &mut isahc::Body) -> Result<T, IoError>,
    ) -> Result<T, IoError> {
        // A GET, HEAD or DELETE has no body at all: curl would otherwise treat it as an upload
        // (and wait for the body of a HEAD reply). A POST or PUT sends Content-Length: 0.
        let bodiless = body.is_empty()
            && !matches!(request.method_ref(), Some(m) if m == isahc::http::Method::POST || m == isahc::http::Method::PUT);
        let body = if bodiless { isahc::Body::empty() } else { isahc::Body::from(body) };
        let request = request.body(body).map_err(|_| op.err(IoErrorKind::Other, "cannot build the request"))?;
        let _permit = self.permits.acquire();
        quiet(|| {
            let response = self.http.send(request).map_err(|e| self.http_error(op, &e))?;
            let (parts, mut body) = response.into_parts();
            handle(parts.status.as_u16(), &parts.headers, &mut body)
        })
    }

    fn http_error(&self, op: &Op<'_>, e: &isahc::Error) -> IoError {
        use isahc::error::ErrorKind as K;
        match e.kind() {
            K::Timeout => op.err(
                IoErrorKind::Timeout,
                format_args!("gateway {} sent nothing for {:?}", self.gateway, self.net_timeout),
            ),
            K::ConnectionFailed | K::NameResolution => {
                op.err(IoErrorKind::Other, format_args!("gateway {} unreachable: {e}", self.gateway))
            }
            _ => op.err(IoErrorKind::Other, format_args!("gateway {}: {e}", self.gateway)),
        }
    }

    fn body_error(&self, op: &Op<'_>, e: &io::Error) -> IoError {
        if let Some(inner) = e.get_ref().and_then(|i| i.downcast_ref::<isahc::Error>()) {
            return self.http_error(op, inner);
        }
        let kind = if e.kind() == io::ErrorKind::TimedOut { IoErrorKind::Timeout } else { IoErrorKind::Other };
        op.err(kind, format_args!("reading the reply from gateway {}: {e}", self.gateway))
    }

    /// The error for an unexpected status, with the reply's text reduced to one safe line.
    fn status_error(&self, op: &Op<'_>, status: u16, body: &mut isahc::Body) -> IoError {
        let text = read_limited(body, 4096).ok().map(|(b, _)| b).unwrap_or_default();
        status_error(op, status, &text)
    }

    /// Reads a whole reply of at most `max` bytes.
    fn read_body(&self, op: &Op<'_>, body: &mut isahc::Body, max: u64) -> Result<Vec<u8>, IoError> {
        match read_limited(body, max) {
            Ok((bytes, false)) => Ok(bytes),
            Ok((_, true)) => Err(op.err(IoErrorKind::Corrupt, format_args!("reply longer than {max} bytes"))),
            Err(e) => Err(self.body_error(op, &e)),
        }
    }

    /// A request whose successful reply (`ok` statuses) is a small text: a cap.
    fn cap_reply(
        &self,
        op: &Op<'_>,
        request: isahc::http::request::Builder,
        body: Vec<u8>,
        ok: &[u16],
    ) -> Result<ObjectId, IoError> {
        self.exchange(op, request, body, |status, _, body| {
            if !ok.contains(&status) {
                return Err(self.status_error(op, status, body));
            }
            let text = self.read_body(op, body, SMALL_REPLY_MAX)?;
            let cap = std::str::from_utf8(&text).map(str::trim).unwrap_or("");
            if !tahoe_json::looks_like_cap(cap) {
                return Err(op.err(IoErrorKind::Corrupt, "reply not as documented: not a capability"));
            }
            Ok(ObjectId(cap.to_string()))
        })
    }

    /// A request whose successful reply is JSON, parsed by `parse`.
    fn json_reply<T>(
        &self,
        op: &Op<'_>,
        request: isahc::http::request::Builder,
        parse: impl FnOnce(&[u8]) -> Result<T, JsonError>,
    ) -> Result<T, IoError> {
        self.exchange(op, request, Vec::new(), |status, _, body| {
            if status != 200 {
                return Err(self.status_error(op, status, body));
            }
            let text = self.read_body(op, body, JSON_REPLY_MAX)?;
            parse(&text).map_err(|e| op.corrupt(e))
        })
    }

    // ----- files -----

    /// Uploads the file at `path`, streamed from disk, and returns its new cap. The body has no
    /// total timeout; a stall of `net_timeout` fails the upload (see the module documentation).
    pub fn upload_file(&self, path: &Path, format: UploadFormat) -> Result<ObjectId, IoError> {
        let op = Op::new("upload", None);
        let file = File::open(path).map_err(|e| io_error(&e, &path.display().to_string()))?;
        let len = file.metadata().map_err(|e| io_error(&e, &path.display().to_string()))?.len();
        let progress = Arc::new(Progress::new());
        let id = self.next_upload.fetch_add(1, Ordering::Relaxed);
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        self.uploads.lock().unwrap_or_else(|e| e.into_inner()).insert(id, UploadInFlight { name, len, progress: progress.clone() });
        let _registered = Registered(self, id);
        let (tx, rx) = smol::channel::bounded::<Vec<u8>>(UPLOAD_QUEUE);
        let body = if len == 0 {
            AsyncBody::from(Vec::new())
        } else {
            AsyncBody::from_reader_sized(
                ChannelReader { rx: Box::pin(rx), chunk: Vec::new(), at: 0, progress: progress.clone() },
                len,
            )
        };
        let request = self
            .request("PUT", &format!("/uri?format={}", format.query()))
            // Replace the default low-speed limit: the silent phase after the body is expected.
            .low_speed_timeout(0, Duration::ZERO)
            .header("Content-Type", "application/octet-stream")
            .body(body)
            .map_err(|_| op.err(IoErrorKind::Other, "cannot build the request"))?;

        let _permit = self.permits.acquire();
        let (status, reply) = quiet(|| {
            smol::block_on(async {
                let exchange = async {
                    let response = {
                        let mut send = pin!(self.http.send_async(request));
                        let mut feed = pin!(feed(file, len, tx));
                        let mut fed = false;
                        smol::future::poll_fn(|cx: &mut Context<'_>| {
                            if !fed {
                                if let Poll::Ready(r) = feed.as_mut().poll(cx) {
                                    fed = true;
                                    if let Err(e) = r {
                                        return Poll::Ready(Err(io_error(&e, &path.display().to_string())));
                                    }
                                }
                            }
                            send.as_mut().poll(cx).map(|r| r.map_err(|e| self.http_error(&op, &e)))
                        })
                        .await?
                    };
                    progress.set_response();
                    let status = response.status().as_u16();
                    let mut reply = Vec::new();
                    let mut body = response.into_body();
                    (&mut body)
                        .take(SMALL_REPLY_MAX + 1)
                        .read_to_end(&mut reply)
                        .await
                        .map_err(|e| self.body_error(&op, &e))?;
                    Ok((status, reply))
                };
                smol::future::or(exchange, async { Err(self.upload_watchdog(&op, &progress, len).await) }).await
            })
        })?;
        match status {
            200 | 201 => {
                let cap = std::str::from_utf8(&reply).map(str::trim).unwrap_or("");
                if reply.len() as u64 > SMALL_REPLY_MAX || !tahoe_json::looks_like_cap(cap) || !format.accepts(cap) {
                    return Err(op.err(
                        IoErrorKind::Corrupt,
                        format_args!("reply not as documented: not a {} capability", format.query()),
                    ));
                }
                if let Some(size) = immutable_size(cap).filter(|size| *size != len) {
                    return Err(op.err(
                        IoErrorKind::Corrupt,
                        format_args!("the gateway stored {size} bytes of a {len}-byte file"),
                    ));
                }
                Ok(ObjectId(cap.to_string()))
            }
            _ => Err(status_error(&op, status, &reply)),
        }
    }

    /// The uploads in flight, oldest first.
    pub fn uploads_in_flight(&self) -> Vec<UploadStatus> {
        let uploads = self.uploads.lock().unwrap_or_else(|e| e.into_inner());
        uploads
            .values()
            .map(|u| {
                let sent = u.progress.sent();
                UploadStatus {
                    name: u.name.clone(),
                    len: u.len,
                    sent,
                    elapsed: u.progress.start.elapsed(),
                    storing: sent >= u.len,
                }
            })
            .collect()
    }

    /// Fails (returns) when an upload stalls; runs until the upload's exchange wins the race.
    async fn upload_watchdog(&self, op: &Op<'_>, progress: &Progress, len: u64) -> IoError {
        let tick = (self.net_timeout / 5).clamp(Duration::from_millis(50), Duration::from_secs(1));
        let mut last_active: Option<String> = None;
        let mut stored_progress_at: Option<Instant> = None;
        loop {
            smol::Timer::after(tick).await;
            let now = Instant::now();
            if let Some(at) = progress.response_at() {
                if now.duration_since(at) > self.net_timeout {
                    return op.err(
                        IoErrorKind::Timeout,
                        format_args!("gateway {} stalled sending the reply", self.gateway),
                    );
                }
                continue;
            }
            let sent = progress.sent();
            if sent < len {
                if now.duration_since(progress.last_progress()) > self.net_timeout {
                    return op.err(
                        IoErrorKind::Timeout,
                        format_args!(
                            "stalled: gateway {} took no data for {:?} ({sent} of {len} bytes sent)",
                            self.gateway, self.net_timeout
                        ),
                    );
                }
                continue;
            }
            // The whole body is with the gateway, which now stores it: watch its progress.
            let since = stored_progress_at.get_or_insert_with(|| progress.last_progress());
            if let Ok(active) = self.active_operations().await {
                if last_active.as_ref() != Some(&active) {
                    last_active = Some(active);
                    *since = now;
                }
            }
            if now.duration_since(*since) > self.net_timeout {
                return op.err(
                    IoErrorKind::Timeout,
                    format_args!(
                        "gateway {} made no progress storing the {len} uploaded bytes for {:?}",
                        self.gateway, self.net_timeout
                    ),
                );
            }
        }
    }

    /// The gateway's active operations (`/status/?t=json`) as comparable text. Not counted
    /// against `max_connections`: at most one per upload in flight.
    async fn active_operations(&self) -> Result<String, IoError> {
        let op = Op::new("status", None);
        let request = self
            .request("GET", "/status/?t=json")
            .timeout(self.net_timeout)
            .body(())
            .map_err(|_| op.err(IoErrorKind::Other, "cannot build the request"))?;
        let response = self.http.send_async(request).await.map_err(|e| self.http_error(&op, &e))?;
        if response.status().as_u16() != 200 {
            return Err(op.err(IoErrorKind::Other, format_args!("HTTP {}", response.status().as_u16())));
        }
        let mut text = Vec::new();
        response
            .into_body()
            .take(JSON_REPLY_MAX)
            .read_to_end(&mut text)
            .await
            .map_err(|e| self.body_error(&op, &e))?;
        tahoe_json::parse_status_active(&text).map_err(|e| op.corrupt(e))
    }

    /// Reads up to `len` bytes at `offset`; shorter only at the end of the object.
    pub fn read_range(&self, cap: &ObjectId, offset: u64, len: u32) -> Result<Bytes, IoError> {
        let op = Op::new("read", Some(cap));
        check_cap(&op, cap)?;
        if len == 0 {
            return Ok(Bytes::new());
        }
        let len = len as usize;
        let mut out: Vec<u8> = Vec::with_capacity(len);
        let mut pos = offset;
        for _ in 0..RANGE_ROUNDS {
            let want = (len - out.len()) as u64;
            let Some(last) = pos.checked_add(want - 1) else { return Ok(out.into()) };
            let request = self.request("GET", &cap_path(cap)).header(RANGE, format!("bytes={pos}-{last}"));
            let at_end = self.exchange(&op, request, Vec::new(), |status, headers, body| match status {
                206 => {
                    let (start, end, total) = content_range(headers)
                        .ok_or_else(|| op.err(IoErrorKind::Corrupt, "206 reply without a valid Content-Range"))?;
                    if start != pos || end < start || end > last {
                        return Err(op.err(
                            IoErrorKind::Corrupt,
                            format_args!("asked for bytes {pos}-{last}, got a reply for {start}-{end}"),
                        ));
                    }
                    let n = end - start + 1;
                    let before = out.len();
                    let over = read_into(body, &mut out, n).map_err(|e| self.body_error(&op, &e))?;
                    let got = (out.len() - before) as u64;
                    if got != n || over {
                        return Err(op.err(
                            IoErrorKind::Corrupt,
                            format_args!("reply for bytes {start}-{end} carried {}{got} bytes", if over { "more than " } else { "" }),
                        ));
                    }
                    pos = end + 1;
                    Ok(total.is_some_and(|t| pos >= t))
                }
                // The range was ignored: the whole object from its first byte.
                200 => {
                    let before = out.len();
                    let skipped = io::copy(&mut body.take(pos), &mut io::sink()).map_err(|e| self.body_error(&op, &e))?;
                    if skipped == pos {
                        read_into(body, &mut out, want).map_err(|e| self.body_error(&op, &e))?;
                    }
                    let got = (out.len() - before) as u64;
                    let size = headers.get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
                    if size.is_some_and(|size| got != size.saturating_sub(pos).min(want)) {
                        return Err(op.err(IoErrorKind::Corrupt, "reply shorter than its Content-Length"));
                    }
                    Ok(true)
                }
                // Tahoe: "An attempt to begin a read past the end of the file will provoke a 416".
                416 => Ok(true),
                _ => Err(self.status_error(&op, status, body)),
            })?;
            if at_end || out.len() == len {
                check_length(&op, cap, offset, len as u64, out.len() as u64)?;
                return Ok(out.into());
            }
        }
        Err(op.err(IoErrorKind::Corrupt, "the gateway keeps answering with fewer bytes than asked"))
    }

    /// `HEAD /uri/$CAP`: the object's size as the gateway reports it, if it does. Tahoe answers
    /// from the cap alone (no share is looked for): a check of the cap and the gateway, not of
    /// the data; [`TahoeClient::check`] looks for shares.
    pub fn head(&self, cap: &ObjectId) -> Result<Option<u64>, IoError> {
        let op = Op::new("head", Some(cap));
        check_cap(&op, cap)?;
        self.exchange(&op, self.request("HEAD", &cap_path(cap)), Vec::new(), |status, headers, body| {
            if status != 200 {
                return Err(self.status_error(&op, status, body));
            }
            Ok(headers.get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse().ok()))
        })
    }

    /// `GET /uri/$CAP?t=json`. A cap of a format the gateway does not know comes back as a node
    /// of kind [`NodeKind::Unknown`].
    pub fn stat(&self, cap: &ObjectId) -> Result<NodeInfo, IoError> {
        self.node(&Op::new("stat", Some(cap)), cap)
    }

    fn node(&self, op: &Op<'_>, cap: &ObjectId) -> Result<NodeInfo, IoError> {
        check_cap(op, cap)?;
        self.json_reply(op, self.request("GET", &format!("{}?t=json", cap_path(cap))), tahoe_json::parse_node)
    }

    /// `GET /uri/$DIRCAP/NAME?t=json`: one child with its link metadata.
    pub fn stat_child(&self, dircap: &ObjectId, name: &str) -> Result<NodeInfo, IoError> {
        let op = Op::new("stat", Some(dircap));
        check_cap(&op, dircap)?;
        check_name(&op, name)?;
        let path = format!("{}/{}?t=json", cap_path(dircap), encode(name));
        self.json_reply(&op, self.request("GET", &path), tahoe_json::parse_node)
    }

    /// `POST /uri/$CAP?t=check&output=JSON`: looks for the object's shares.
    pub fn check(&self, cap: &ObjectId) -> Result<CheckResults, IoError> {
        let op = Op::new("check", Some(cap));
        check_cap(&op, cap)?;
        let path = format!("{}?t=check&output=JSON", cap_path(cap));
        self.json_reply(&op, self.request("POST", &path), tahoe_json::parse_check)
    }

    // ----- directories -----

    /// `POST /uri?t=mkdir`: a new, unlinked, empty directory; returns its write cap.
    pub fn mkdir(&self) -> Result<ObjectId, IoError> {
        let op = Op::new("mkdir", None);
        let cap = self.cap_reply(&op, self.request("POST", "/uri?t=mkdir"), Vec::new(), &[200, 201])?;
        dircap_reply(&op, cap)
    }

    /// `POST /uri/$DIRCAP/?t=mkdir&name=NAME&replace=false`: a new empty directory linked as
    /// `name`; returns its write cap. `Conflict` if the name is taken (Tahoe's default,
    /// `replace=true`, would silently replace an existing directory with an empty one).
    pub fn mkdir_child(&self, dircap: &ObjectId, name: &str) -> Result<ObjectId, IoError> {
        let op = Op::new("mkdir", Some(dircap));
        check_cap(&op, dircap)?;
        check_name(&op, name)?;
        let path = format!("{}/?t=mkdir&name={}&replace=false", cap_path(dircap), encode(name));
        let cap = self.cap_reply(&op, self.request("POST", &path), Vec::new(), &[200, 201])?;
        dircap_reply(&op, cap)
    }

    /// `PUT /uri/$DIRCAP/NAME?t=uri&replace=...` with `child` as the body.
    pub fn link(&self, dircap: &ObjectId, name: &str, child: &ObjectId, replace: Replace) -> Result<(), IoError> {
        self.link_at(DirPath::cap(dircap), name, child, replace)
    }

    /// `PUT /uri/$DIRCAP/A/B/NAME?t=uri&replace=...`: links `child` in the directory `dir`
    /// (Tahoe creates the missing directories on the way).
    pub fn link_at(&self, dir: DirPath<'_>, name: &str, child: &ObjectId, replace: Replace) -> Result<(), IoError> {
        let op = Op::new("link", Some(dir.cap));
        let url = dir.url(&op)?;
        check_name(&op, name)?;
        check_cap(&Op::new("link", Some(child)), child)?;
        let path = format!("{url}/{}?t=uri&replace={}", encode(name), replace.query());
        self.exchange(&op, self.request("PUT", &path), child.0.as_bytes().to_vec(), |status, _, body| match status {
            200 | 201 => Ok(()),
            _ => Err(self.status_error(&op, status, body)),
        })
    }

    /// `POST /uri/$DIRCAP/A/B?t=set_children`: links each `(name, cap)` (files and directories)
    /// in `dir`, replacing what is there, in one change of the directory (Tahoe creates the
    /// missing directories on the way). Each link's metadata carries [`tahoe_json::MIRROR_TAG`].
    pub fn set_children_at(&self, dir: DirPath<'_>, children: &[(String, ObjectId)]) -> Result<(), IoError> {
        let op = Op::new("link", Some(dir.cap));
        let url = dir.url(&op)?;
        let mut body = serde_json::Map::new();
        for (name, cap) in children {
            check_name(&op, name)?;
            check_cap(&Op::new("link", Some(cap)), cap)?;
            // Immutable caps are read caps; a mutable file's is its write cap.
            let slot = if cap.0.starts_with("URI:CHK:") || cap.0.starts_with("URI:LIT:") { "ro_uri" } else { "rw_uri" };
            let kind = if cap.0.starts_with("URI:DIR2") { "dirnode" } else { "filenode" };
            let props = serde_json::json!({ slot: cap.0, "metadata": { tahoe_json::MIRROR_TAG: "mirror" } });
            body.insert(name.clone(), serde_json::json!([kind, props]));
        }
        let body = serde_json::Value::Object(body).to_string().into_bytes();
        let path = format!("{url}?t=set_children&replace=true");
        self.exchange(&op, self.request("POST", &path), body, |status, _, body| match status {
            200 | 201 => Ok(()),
            _ => Err(self.status_error(&op, status, body)),
        })
    }

    /// `DELETE /uri/$DIRCAP/NAME`: returns the cap that was linked there; `NotFound` if none.
    pub fn unlink(&self, dircap: &ObjectId, name: &str) -> Result<ObjectId, IoError> {
        self.unlink_at(DirPath::cap(dircap), name)
    }

    /// `DELETE /uri/$DIRCAP/A/B/NAME`: returns the cap that was linked there; `NotFound` if none.
    pub fn unlink_at(&self, dir: DirPath<'_>, name: &str) -> Result<ObjectId, IoError> {
        let op = Op::new("unlink", Some(dir.cap));
        let url = dir.url(&op)?;
        check_name(&op, name)?;
        let path = format!("{url}/{}", encode(name));
        self.cap_reply(&op, self.request("DELETE", &path), Vec::new(), &[200])
    }

    /// `POST /uri/$DIRCAP/?t=relink&from_name=..&to_dir=..&to_name=..&replace=..` (Tahoe ≥ 1.10):
    /// moves a link, into `to_dir` if given (else within `dircap`). The new link is made before
    /// the old one is removed. `NotFound` if `from_name` is absent; `Conflict` if `to_name` is
    /// taken and `replace` forbids replacing it.
    pub fn relink(
        &self,
        dircap: &ObjectId,
        from_name: &str,
        to_dir: Option<&ObjectId>,
        to_name: &str,
        replace: Replace,
    ) -> Result<(), IoError> {
        let from = DirPath::cap(dircap);
        self.relink_at(from, from_name, to_dir.map_or(from, DirPath::cap), to_name, replace)
    }

    /// Like [`TahoeClient::relink`], between directories given as paths (`to_dir=$DIRCAP/A/B`).
    pub fn relink_at(
        &self,
        from: DirPath<'_>,
        from_name: &str,
        to: DirPath<'_>,
        to_name: &str,
        replace: Replace,
    ) -> Result<(), IoError> {
        let op = Op::new("relink", Some(from.cap));
        let url = from.url(&op)?;
        check_name(&op, from_name)?;
        check_name(&op, to_name)?;
        to.url(&Op::new("relink", Some(to.cap)))?;
        let mut to_dir = to.cap.0.clone();
        for n in to.names {
            to_dir.push('/');
            to_dir.push_str(n);
        }
        let path = format!(
            "{url}/?t=relink&from_name={}&to_name={}&replace={}&to_dir={}",
            encode(from_name),
            encode(to_name),
            replace.query(),
            encode(&to_dir)
        );
        self.exchange(&op, self.request("POST", &path), Vec::new(), |status, _, body| match status {
            200 | 201 => Ok(()),
            _ => Err(self.status_error(&op, status, body)),
        })
    }

    /// `GET /uri/$DIRCAP?t=json`: the entries of a directory by name.
    pub fn list(&self, dircap: &ObjectId) -> Result<BTreeMap<String, NodeInfo>, IoError> {
        self.list_at(DirPath::cap(dircap))
    }

    /// `GET /uri/$DIRCAP/A/B?t=json`: the entries of the directory `dir` by name.
    pub fn list_at(&self, dir: DirPath<'_>) -> Result<BTreeMap<String, NodeInfo>, IoError> {
        let op = Op::new("list", Some(dir.cap));
        let url = dir.url(&op)?;
        let node = self.json_reply(&op, self.request("GET", &format!("{url}?t=json")), tahoe_json::parse_node)?;
        if node.kind != NodeKind::Dir {
            return Err(op.err(IoErrorKind::Corrupt, "not a directory"));
        }
        node.children.ok_or_else(|| op.err(IoErrorKind::Corrupt, "reply not as documented: a directory without `children`"))
    }

    // ----- the grid -----

    /// `GET /?t=json`: the introducers and storage servers the gateway knows.
    pub fn welcome(&self) -> Result<Welcome, IoError> {
        self.json_reply(&Op::new("status", None), self.request("GET", "/?t=json"), tahoe_json::parse_welcome)
    }

    /// Space for statfs. Tahoe has no free-space figure for a grid; this is the sum of the
    /// `available_space` the connected storage servers announce (raw share space: a file takes
    /// about N/k times its size), as total, free and available alike; [`SPACE_UNKNOWN`] when no
    /// connected server announces one.
    pub fn space(&self) -> Result<Space, IoError> {
        let welcome = self.welcome()?;
        let announced: Vec<u64> =
            welcome.servers.iter().filter(|s| s.is_connected()).filter_map(|s| s.available_space).collect();
        let bytes = if announced.is_empty() {
            SPACE_UNKNOWN
        } else {
            announced.iter().fold(0u64, |a, b| a.saturating_add(*b))
        };
        Ok(Space { total_bytes: bytes, free_bytes: bytes, avail_bytes: bytes })
    }
}

/// Executes a [`StoreRequest`] against a Tahoe grid.
///
/// FLAT (`backend_storage_strategy: FLAT`), the layout of the Python TruckeeFS: every object is
/// linked in the rootcap directory under the decimal inode number.
/// - `PutStaged { ino }`: uploads the staged copy (`PUT /uri?format=..`), then links it as
///   `<ino>`, replacing the link to the previous version. Two steps rather than
///   `PUT /uri/$ROOTCAP/<ino>`, which would overwrite a previous MDMF version in place (the core
///   needs it readable until the new cap is committed) and would lose the upload if linking fails.
/// - `Read`: a Range read of the cap.
/// - `Delete { ino, object }`: unlinks `<ino>` (`DELETE`, which only unlinks: the grid reclaims
///   space when leases expire) if it still refers to `object`; a name that refers to a newer
///   version is left. If the link changed between the look and the unlink, the link that was
///   removed is put back.
/// - `Share { ino, object }`: the same cap, also linked as `<ino>` (a whole-file copy).
/// - `Space`: [`TahoeClient::space`].
///
/// MIRROR: `PutStaged` uploads without linking, `Share` returns the same cap, `Delete` does
/// nothing; `crate::mirror` links each committed version under the file's names.
pub fn execute_store(
    client: &TahoeClient,
    staging: &Staging,
    rootcap: &ObjectId,
    strategy: StorageStrategy,
    req: &StoreRequest,
) -> IoResult {
    match req {
        StoreRequest::Read { object, offset, len } => client.read_range(object, *offset, *len).map(IoReply::Data),
        StoreRequest::Space => client.space().map(IoReply::Space),
        // MIRROR: the tree under the rootcap follows committed metadata (`crate::mirror`); an
        // upload is only an upload, and the old version's link goes when the tree changes.
        StoreRequest::PutStaged { ino } if strategy == StorageStrategy::Mirror => {
            client.upload_file(&staging.data_path(*ino), client.upload_format()).map(IoReply::Object)
        }
        StoreRequest::Share { object, .. } if strategy == StorageStrategy::Mirror => Ok(IoReply::Object(object.clone())),
        StoreRequest::Delete { .. } if strategy == StorageStrategy::Mirror => Ok(IoReply::Done),
        StoreRequest::PutStaged { ino } => {
            let cap = client.upload_file(&staging.data_path(*ino), client.upload_format())?;
            client.link(rootcap, &ino.to_string(), &cap, Replace::Any)?;
            Ok(IoReply::Object(cap))
        }
        // Immutable (and MDMF, which the core never changes in place) objects can be shared:
        // the same cap, linked under the second inode's name too.
        StoreRequest::Share { ino, object } => {
            client.link(rootcap, &ino.to_string(), object, Replace::Any).map(|()| IoReply::Object(object.clone()))
        }
        StoreRequest::Delete { ino, object } => flat_delete(client, rootcap, *ino, object).map(|()| IoReply::Done),
    }
}

/// FLAT: the file's link `<ino>` under the rootcap goes only while it still refers to `object`
/// (after a newer version was linked, deleting the old object leaves the name alone). Tahoe
/// objects themselves are never deleted: their space returns when their leases expire.
fn flat_delete(client: &TahoeClient, rootcap: &ObjectId, ino: Ino, object: &ObjectId) -> Result<(), IoError> {
    let name = ino.to_string();
    match client.stat_child(rootcap, &name) {
        Ok(node) if node.has_cap(object) => match client.unlink(rootcap, &name) {
            Ok(removed) if removed == *object => Ok(()),
            Ok(removed) => {
                // A newer version was linked between the look and the unlink: put it back
                // unless something newer still took the name.
                match client.link(rootcap, &name, &removed, Replace::Never) {
                    Err(e) if e.kind != IoErrorKind::Conflict => Err(e),
                    _ => Ok(()),
                }
            }
            Err(e) if e.kind == IoErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        },
        Ok(_) => Ok(()),
        Err(e) if e.kind == IoErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

// ----- upload body -----

/// How far an upload's body got, shared by the body reader (on isahc's agent thread) and the
/// watchdog.
struct Progress {
    start: Instant,
    sent: AtomicU64,
    /// Milliseconds after `start` of the last body byte taken by curl.
    last_ms: AtomicU64,
    /// Milliseconds after `start` (plus one) when the reply's headers arrived; 0 before.
    response_ms: AtomicU64,
}

impl Progress {
    fn new() -> Progress {
        Progress { start: Instant::now(), sent: AtomicU64::new(0), last_ms: AtomicU64::new(0), response_ms: AtomicU64::new(0) }
    }

    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    fn add(&self, n: usize) {
        self.sent.fetch_add(n as u64, Ordering::Relaxed);
        self.last_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    fn last_progress(&self) -> Instant {
        self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }

    fn set_response(&self) {
        self.response_ms.store(self.now_ms() + 1, Ordering::Relaxed);
    }

    fn response_at(&self) -> Option<Instant> {
        match self.response_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(self.start + Duration::from_millis(ms - 1)),
        }
    }
}

/// The upload body as curl reads it: chunks the calling thread reads from the file.
struct ChannelReader {
    rx: Pin<Box<smol::channel::Receiver<Vec<u8>>>>,
    chunk: Vec<u8>,
    at: usize,
    progress: Arc<Progress>,
}

impl smol::io::AsyncRead for ChannelReader {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        loop {
            if this.at < this.chunk.len() {
                let n = buf.len().min(this.chunk.len() - this.at);
                buf[..n].copy_from_slice(&this.chunk[this.at..this.at + n]);
                this.at += n;
                this.progress.add(n);
                return Poll::Ready(Ok(n));
            }
            match this.rx.as_mut().poll_next(cx) {
                Poll::Ready(Some(chunk)) => {
                    this.chunk = chunk;
                    this.at = 0;
                }
                Poll::Ready(None) => return Poll::Ready(Ok(0)),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// Reads exactly `len` bytes of `file` into the channel, a chunk at a time (blocking reads on
/// the calling thread, as isahc's own synchronous bodies do). Ends quietly when the request is
/// over (the receiver is gone).
async fn feed(mut file: File, len: u64, tx: smol::channel::Sender<Vec<u8>>) -> io::Result<()> {
    let mut left = len;
    while left > 0 {
        let n = left.min(UPLOAD_CHUNK as u64) as usize;
        let mut buf = vec![0u8; n];
        file.read_exact(&mut buf).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                io::Error::new(e.kind(), "the file shrank during the upload")
            } else {
                e
            }
        })?;
        left -= n as u64;
        if tx.send(buf).await.is_err() {
            return Ok(());
        }
    }
    Ok(())
}

// ----- helpers -----

/// Runs `f` with tracing switched off on this thread: isahc records the request URL (with its
/// cap) in a debug span, and turns on curl's wire trace (headers: caps, the token) when that
/// span is enabled.
fn quiet<T>(f: impl FnOnce() -> T) -> T {
    tracing::dispatcher::with_default(&tracing::Dispatch::none(), f)
}

fn encode(s: &str) -> String {
    utf8_percent_encode(s, COMPONENT).to_string()
}

fn cap_path(cap: &ObjectId) -> String {
    format!("/uri/{}", encode(&cap.0))
}

/// Refuses, without a request, a cap that cannot be one (it would change the URL's meaning).
fn check_cap(op: &Op<'_>, cap: &ObjectId) -> Result<(), IoError> {
    if tahoe_json::looks_like_cap(&cap.0) {
        Ok(())
    } else {
        Err(Op::new(op.name, Some(cap)).err(IoErrorKind::Corrupt, "malformed capability"))
    }
}

fn check_name(op: &Op<'_>, name: &str) -> Result<(), IoError> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0') {
        Err(op.err(IoErrorKind::Other, "invalid child name"))
    } else {
        Ok(())
    }
}

/// A read of `len` bytes from `offset` of `cap` that got `got` bytes: with the object's size
/// known from its cap (an immutable one), any other count than the size allows is a reply not
/// as documented (a truncated body or another object's under a consistent Content-Length):
/// its bytes must reach neither a reader nor the block cache. Other caps are not checked.
fn check_length(op: &Op<'_>, cap: &ObjectId, offset: u64, len: u64, got: u64) -> Result<(), IoError> {
    match immutable_size(&cap.0) {
        Some(size) if got != size.saturating_sub(offset).min(len) => Err(op.err(
            IoErrorKind::Corrupt,
            format_args!("the gateway sent {got} bytes from offset {offset} of an object of {size} bytes"),
        )),
        _ => Ok(()),
    }
}

/// The size an immutable cap records: the last field of `URI:CHK:key:hash:k:N:SIZE`, or the
/// length of the base32 data of `URI:LIT:DATA`.
fn immutable_size(cap: &str) -> Option<u64> {
    if let Some(data) = cap.strip_prefix("URI:LIT:") {
        return Some(data.len() as u64 * 5 / 8);
    }
    let fields: Vec<&str> = cap.strip_prefix("URI:CHK:")?.split(':').collect();
    match fields.as_slice() {
        [_, _, _, _, size] => size.parse().ok(),
        _ => None,
    }
}

fn dircap_reply(op: &Op<'_>, cap: ObjectId) -> Result<ObjectId, IoError> {
    if cap.0.starts_with("URI:DIR2") && !cap.0.starts_with("URI:DIR2-RO") {
        Ok(cap)
    } else {
        Err(op.err(IoErrorKind::Corrupt, "reply not as documented: not a directory write cap"))
    }
}

fn status_error(op: &Op<'_>, status: u16, text: &[u8]) -> IoError {
    let detail = error_text(text);
    let kind = match status {
        404 | 410 => IoErrorKind::NotFound,
        409 => IoErrorKind::Conflict,
        400 if detail.contains("unknown URI type") => IoErrorKind::Corrupt,
        _ => IoErrorKind::Other,
    };
    if detail.is_empty() {
        op.err(kind, format_args!("HTTP {status}"))
    } else {
        op.err(kind, format_args!("HTTP {status}: {detail}"))
    }
}

/// One line of an error reply: tags and the HTML title removed, spaces collapsed, at most 300
/// characters. (Caps are removed by [`Op::err`].)
fn error_text(text: &[u8]) -> String {
    let text = String::from_utf8_lossy(text);
    // A plain-text Python traceback: its last line names the exception.
    if text.trim_start().starts_with("Traceback") {
        if let Some(last) = text.lines().rev().find(|l| !l.trim().is_empty()) {
            return error_text(last.trim().as_bytes());
        }
    }
    // Twisted's error pages repeat the message in <title> and <h1>: keep what follows <body>.
    let text = match text.find("<body>") {
        Some(i) => &text[i + 6..],
        None => &text[..],
    };
    let mut out = String::new();
    let mut in_tag = false;
    for c in text.chars() {
        match c {
            '<' => in_tag = true,
            '>' if in_tag => {
                in_tag = false;
                out.push(' ');
            }
            _ if in_tag => {}
            c if c.is_whitespace() || c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    let mut line = out.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.ends_with("no details") {
        line.truncate(line.len() - "no details".len());
        line = line.trim_end().to_string();
    }
    if line.chars().count() > 300 {
        line = line.chars().take(300).collect::<String>() + "...";
    }
    line
}

/// Replaces anything that looks like a cap (`URI:...`, also percent-encoded) with `<cap>`.
pub fn redact_caps(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    loop {
        let lower = rest.to_ascii_lowercase();
        let hit = ["uri:", "uri%3a"].iter().filter_map(|p| lower.find(p)).min();
        let Some(i) = hit else {
            out.push_str(rest);
            return out;
        };
        out.push_str(&rest[..i]);
        out.push_str("<cap>");
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, ':' | '-' | '_' | '.' | '%')))
            .unwrap_or(tail.len());
        rest = &tail[end..];
    }
}

/// `Content-Range: bytes A-B/TOTAL` (TOTAL may be `*`).
fn content_range(headers: &HeaderMap) -> Option<(u64, u64, Option<u64>)> {
    content_range_value(headers.get(CONTENT_RANGE)?.to_str().ok()?)
}

/// A `Content-Range` value: `bytes A-B/T` (or `bytes A-B/*`).
fn content_range_value(v: &str) -> Option<(u64, u64, Option<u64>)> {
    let v = v.trim().strip_prefix("bytes")?.trim_start();
    let (range, total) = v.split_once('/')?;
    let (a, b) = range.trim().split_once('-')?;
    let total = match total.trim() {
        "*" => None,
        t => Some(t.parse().ok()?),
    };
    Some((a.trim().parse().ok()?, b.trim().parse().ok()?, total))
}

/// Reads at most `max` bytes of `body` into `out`; true if there was more.
fn read_into(body: &mut impl Read, out: &mut Vec<u8>, max: u64) -> io::Result<bool> {
    let before = out.len();
    body.take(max).read_to_end(out)?;
    if ((out.len() - before) as u64) < max {
        return Ok(false);
    }
    let mut probe = [0u8; 1];
    loop {
        match body.read(&mut probe) {
            Ok(n) => return Ok(n > 0),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

/// The whole body if at most `max` bytes (and false), else the first `max` (and true).
fn read_limited(body: &mut impl Read, max: u64) -> io::Result<(Vec<u8>, bool)> {
    let mut out = Vec::new();
    let over = read_into(body, &mut out, max)?;
    Ok((out, over))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::{TcpListener, TcpStream};
    use std::thread;

    #[test]
    fn caps_are_redacted() {
        assert_eq!(redact_caps("no caps here"), "no caps here");
        assert_eq!(
            redact_caps("No such child: URI:CHK:abc:def:1:1:5 here"),
            "No such child: <cap> here"
        );
        assert_eq!(redact_caps("x URI%3ADIR2%3Aabc/y and uri:lit:nbsw"), "x <cap>/y and <cap>");
        assert_eq!(redact_caps("<p>URI:DIR2:aa</p>"), "<p><cap></p>");
    }

    #[test]
    fn error_pages_become_one_line() {
        let page = b"\n<html>\n  <head><title>404 - Error</title></head>\n  <body>\n    <h1>Error</h1>\n    <p>No such child: nosuch</p>\n  </body>\n</html>\n";
        assert_eq!(error_text(page), "Error No such child: nosuch");
        let page = b"<html><head><title>400 - x</title></head><body><h1>Files have no children named 'x'</h1><p>no details</p></body></html>";
        assert_eq!(error_text(page), "Files have no children named 'x'");
        assert_eq!(error_text(b"thing\r\nmoved"), "thing moved");
        let tb = b"Traceback (most recent call last):\n  File \"x.py\", line 1, in f\n    g()\nallmydata.interfaces.UploadUnhappinessError: shares could be placed on only 0 server(s)\n\n";
        assert_eq!(error_text(tb), "allmydata.interfaces.UploadUnhappinessError: shares could be placed on only 0 server(s)");
        assert_eq!(error_text(&[b'a'; 1000]).len(), 303);
    }

    #[test]
    fn status_codes_map_to_kinds() {
        let cap = ObjectId("URI:CHK:abc:def:1:1:5".into());
        let op = Op::new("read", Some(&cap));
        let e = status_error(&op, 410, b"NoSharesError: no shares could be found for URI:CHK:abc:def:1:1:5");
        assert_eq!(e.kind, IoErrorKind::NotFound);
        assert!(e.message.starts_with(&format!("tahoe read {}: HTTP 410: NoSharesError", cap.fingerprint())), "{}", e.message);
        assert!(!e.message.contains("URI:"), "{}", e.message);
        assert_eq!(status_error(&op, 404, b"").kind, IoErrorKind::NotFound);
        assert_eq!(status_error(&op, 409, b"").kind, IoErrorKind::Conflict);
        assert_eq!(status_error(&op, 400, b"GET unknown URI type: can only do t=info").kind, IoErrorKind::Corrupt);
        assert_eq!(status_error(&op, 400, b"bad").kind, IoErrorKind::Other);
        assert_eq!(status_error(&op, 500, b"").kind, IoErrorKind::Other);
    }

    #[test]
    fn sizes_in_immutable_caps() {
        assert_eq!(immutable_size("URI:LIT:"), Some(0));
        assert_eq!(immutable_size("URI:LIT:nbswy3dp"), Some(5));
        assert_eq!(immutable_size(CAP), Some(100));
        assert_eq!(immutable_size("URI:CHK:a:b:1:1:x"), None);
        assert_eq!(immutable_size("URI:CHK:a:b:1:1"), None);
        assert_eq!(immutable_size("URI:MDMF:a:b"), None);
    }

    #[test]
    fn content_ranges() {
        let mut h = HeaderMap::new();
        assert_eq!(content_range(&h), None);
        for (v, want) in [
            ("bytes 10-19/100000", Some((10, 19, Some(100000)))),
            ("bytes 0-0/*", Some((0, 0, None))),
            ("bytes 5-3/9", Some((5, 3, Some(9)))),
            ("bytes */100", None),
            ("items 1-2/3", None),
            ("bytes 1-2", None),
            ("bytes -1-2/3", None),
        ] {
            h.insert(CONTENT_RANGE, HeaderValue::from_static(v));
            assert_eq!(content_range(&h), want, "{v}");
        }
    }

    #[test]
    fn auth_tokens() {
        let t = AuthToken::new("abc123").unwrap();
        assert_eq!(t.0.to_str().unwrap(), "tahoe-lafs abc123");
        assert!(t.0.is_sensitive());
        assert_eq!(format!("{t:?}"), "AuthToken(<redacted>)");
        assert_eq!(AuthToken::new("Bearer xyz").unwrap().0.to_str().unwrap(), "Bearer xyz");
        for bad in ["", "  ", "a\nb", "a\rb", "tök"] {
            let e = AuthToken::new(bad).unwrap_err();
            assert!(!e.message.contains(bad) || bad.trim().is_empty());
        }
    }

    #[test]
    fn urls_and_names() {
        let cap = ObjectId("URI:DIR2:abc:def".into());
        assert_eq!(cap_path(&cap), "/uri/URI%3ADIR2%3Aabc%3Adef");
        assert_eq!(encode("a b/c?d#e%f&g=h.é~_-"), "a%20b%2Fc%3Fd%23e%25f%26g%3Dh.%C3%A9~_-");
        let op = Op::new("link", Some(&cap));
        for bad in ["", ".", "..", "a/b", "a\0b"] {
            assert_eq!(check_name(&op, bad).unwrap_err().kind, IoErrorKind::Other, "{bad:?}");
        }
        assert!(check_name(&op, "...").is_ok() && check_name(&op, "ä b?").is_ok());
        let bad_cap = ObjectId("URI:CHK:a/../../x".into());
        let e = check_cap(&op, &bad_cap).unwrap_err();
        assert_eq!(e.kind, IoErrorKind::Corrupt);
        assert!(e.message.contains(&bad_cap.fingerprint()) && !e.message.contains("URI:"), "{}", e.message);
    }

    #[test]
    fn bad_gateway_urls() {
        let t = Duration::from_secs(1);
        for bad in ["", "127.0.0.1:3456", "ftp://x/", "http://", "http://h/?a=b", "http://h/#x", "not a url"] {
            assert!(TahoeClient::new(bad, None, t, 1).is_err(), "{bad}");
        }
        assert!(TahoeClient::new("http://127.0.0.1:3456", None, Duration::ZERO, 1).is_err());
        let c = TahoeClient::new("http://user:pw@127.0.0.1:3456/", None, t, 0).unwrap();
        assert_eq!(c.gateway(), "127.0.0.1:3456");
        assert_eq!(c.max_connections, 1);
        assert!(!format!("{c:?}").contains("pw"));
    }

    #[test]
    fn semaphore_bounds_holders() {
        let s = Arc::new(Semaphore::new(2));
        let inside = Arc::new(AtomicU64::new(0));
        let most = Arc::new(AtomicU64::new(0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (s, inside, most) = (s.clone(), inside.clone(), most.clone());
                thread::spawn(move || {
                    for _ in 0..50 {
                        let _p = s.acquire();
                        let n = inside.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(n, Ordering::SeqCst);
                        thread::yield_now();
                        inside.fetch_sub(1, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(most.load(Ordering::SeqCst), 2);
    }

    /// A fake gateway: answers each connection with the next canned reply (`None`: accept and
    /// never answer). Returns its URL.
    pub(super) fn fake_gateway(replies: Vec<Option<Vec<u8>>>) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        thread::spawn(move || {
            let mut held: Vec<TcpStream> = Vec::new();
            for reply in replies {
                let Ok((mut s, _)) = listener.accept() else { return };
                // Read the request head (and ignore any body).
                let mut head = Vec::new();
                let mut b = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    match s.read(&mut b) {
                        Ok(1) => head.push(b[0]),
                        _ => break,
                    }
                }
                match reply {
                    Some(r) => {
                        let _ = s.write_all(&r);
                        let _ = s.flush();
                        thread::sleep(Duration::from_millis(50));
                    }
                    None => held.push(s),
                }
            }
            thread::sleep(Duration::from_secs(10));
        });
        url
    }

    pub(super) fn reply(status: &str, headers: &[&str], body: &[u8]) -> Option<Vec<u8>> {
        let mut r = format!("HTTP/1.1 {status}\r\nConnection: close\r\n");
        for h in headers {
            r.push_str(h);
            r.push_str("\r\n");
        }
        r.push_str("\r\n");
        let mut r = r.into_bytes();
        r.extend_from_slice(body);
        Some(r)
    }

    pub(super) const CAP: &str = "URI:CHK:nac4rhq4xvxkxfr2lrv57f5gaa:fhvmu3edq7e5e25yjwmgpl62f6bq4xf3uzhklyzafxrzbg47bcua:1:1:100";

    pub(super) fn client(url: &str) -> TahoeClient {
        TahoeClient::new(url, None, Duration::from_millis(800), 2).unwrap()
    }

    #[test]
    fn reads_handle_odd_but_valid_replies() {
        let cap = ObjectId(CAP.into());
        let data: Vec<u8> = (0..100u8).collect();
        let url = fake_gateway(vec![
            // Range ignored: the whole object.
            reply("200 OK", &["Content-Length: 100"], &data),
            // A shorter range than asked, then the rest.
            reply("206 Partial Content", &["Content-Range: bytes 10-14/100", "Content-Length: 5"], &data[10..15]),
            reply("206 Partial Content", &["Content-Range: bytes 15-19/100", "Content-Length: 5"], &data[15..20]),
            // Past the end.
            reply("416 Requested Range not satisfiable", &["Content-Length: 0"], b""),
            // Truncated at the end of the object.
            reply("206 Partial Content", &["Content-Range: bytes 95-99/100", "Content-Length: 5"], &data[95..]),
        ]);
        let c = client(&url);
        assert_eq!(&c.read_range(&cap, 30, 10).unwrap()[..], &data[30..40]);
        assert_eq!(&c.read_range(&cap, 10, 10).unwrap()[..], &data[10..20]);
        assert!(c.read_range(&cap, 100, 10).unwrap().is_empty());
        assert_eq!(&c.read_range(&cap, 95, 10).unwrap()[..], &data[95..]);
        assert!(c.read_range(&cap, 5, 0).unwrap().is_empty());
    }

    #[test]
    fn reads_refuse_replies_not_as_documented() {
        let cap = ObjectId(CAP.into());
        let url = fake_gateway(vec![
            reply("206 Partial Content", &["Content-Length: 5"], b"abcde"),
            reply("206 Partial Content", &["Content-Range: bytes 3-7/100", "Content-Length: 5"], b"abcde"),
            reply("206 Partial Content", &["Content-Range: bytes 0-9/100", "Content-Length: 10"], b"0123456789"),
            reply("206 Partial Content", &["Content-Range: bytes 0-4/100"], b"abc"),
            reply("206 Partial Content", &["Content-Range: bytes 0-4/100"], b"abcdefgh"),
            reply("500 Internal Server Error", &["Content-Length: 30"], b"boom URI:CHK:leak:leak:1:1:100"),
        ]);
        let c = client(&url);
        for _ in 0..5 {
            let e = c.read_range(&cap, 0, 5).unwrap_err();
            assert_eq!(e.kind, IoErrorKind::Corrupt, "{e}");
            assert!(e.message.contains(&cap.fingerprint()), "{e}");
        }
        let e = c.read_range(&cap, 0, 5).unwrap_err();
        assert_eq!(e.kind, IoErrorKind::Other);
        assert!(e.message.contains("HTTP 500: boom <cap>"), "{e}");
        assert!(!e.message.contains("URI:"), "{e}");
    }

    /// Replies whose own headers agree with their bodies, but not with the object's size in
    /// its cap (100 bytes): an HTML page for the whole object, a body cut short.
    #[test]
    fn reads_refuse_bodies_of_another_length_than_the_caps_size() {
        let cap = ObjectId(CAP.into());
        let url = fake_gateway(vec![
            reply("200 OK", &["Content-Length: 22"], b"<html>surprise</html>\n"),
            reply("200 OK", &["Content-Length: 50"], &[1u8; 50]),
            reply("206 Partial Content", &["Content-Range: bytes 90-94/95", "Content-Length: 5"], b"abcde"),
        ]);
        let c = client(&url);
        let e = c.read_range(&cap, 0, 64).unwrap_err();
        assert_eq!(e.kind, IoErrorKind::Corrupt, "{e}");
        assert!(e.message.contains("22 bytes from offset 0 of an object of 100 bytes"), "{e}");
        let e = c.read_range(&cap, 40, 20).unwrap_err();
        assert!(e.message.contains("10 bytes from offset 40"), "{e}");
        let e = c.read_range(&cap, 90, 10).unwrap_err();
        assert!(e.message.contains("5 bytes from offset 90"), "{e}");
    }

    #[test]
    fn json_and_cap_replies_not_as_documented_are_corrupt() {
        let cap = ObjectId("URI:DIR2:abc:def".into());
        let url = fake_gateway(vec![
            reply("200 OK", &["Content-Length: 7"], b"[1,2,3]"),
            reply("200 OK", &["Content-Length: 22"], br#"["filenode", {"a": 1}]"#),
            reply("200 OK", &["Content-Length: 9"], b"not a cap"),
            reply("200 OK", &["Content-Length: 16"], b"URI:CHK:abc:d:1:"),
            reply("200 OK", &["Content-Length: 4"], b"{}{}"),
        ]);
        let c = client(&url);
        let e = c.stat(&cap).unwrap_err();
        assert_eq!(e.kind, IoErrorKind::Corrupt, "{e}");
        let e = c.list(&cap).unwrap_err();
        assert_eq!(e.kind, IoErrorKind::Corrupt, "{e}");
        assert!(e.message.starts_with(&format!("tahoe list {}", cap.fingerprint())), "{e}");
        assert_eq!(c.mkdir().unwrap_err().kind, IoErrorKind::Corrupt);
        assert_eq!(c.mkdir().unwrap_err().kind, IoErrorKind::Corrupt, "a file cap is no dircap");
        assert_eq!(c.welcome().unwrap_err().kind, IoErrorKind::Corrupt);
    }

    #[test]
    fn a_silent_gateway_times_out() {
        let cap = ObjectId(CAP.into());
        let url = fake_gateway(vec![None, None]);
        let c = client(&url);
        let t = Instant::now();
        let e = c.read_range(&cap, 0, 10).unwrap_err();
        assert_eq!(e.kind, IoErrorKind::Timeout, "{e}");
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
        // An upload whose reply never comes, with the status page unreachable meanwhile.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, vec![7u8; 100_000]).unwrap();
        let t = Instant::now();
        let e = c.upload_file(&path, UploadFormat::Chk).unwrap_err();
        assert_eq!(e.kind, IoErrorKind::Timeout, "{e}");
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    }

    #[test]
    fn a_closed_port_fails_fast() {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let c = client(&format!("http://127.0.0.1:{port}"));
        let e = c.read_range(&ObjectId(CAP.into()), 0, 1).unwrap_err();
        assert_eq!(e.kind, IoErrorKind::Other, "{e}");
        assert!(e.message.contains("unreachable"), "{e}");
    }

    #[test]
    fn uploads_check_the_reply() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"hello").unwrap();
        let url = fake_gateway(vec![
            reply("200 OK", &["Content-Length: 16"], b"URI:LIT:nbswy3dp"),
            reply("200 OK", &["Content-Length: 16"], b"URI:LIT:nbswy3dp"),
            reply("200 OK", &["Content-Length: 8"], b"whatever"),
            reply("200 OK", &["Content-Length: 12"], b"URI:LIT:nbsw"),
            reply("503 Service Unavailable", &["Content-Length: 4"], b"busy"),
        ]);
        let c = client(&url);
        assert_eq!(c.upload_file(&path, UploadFormat::Chk).unwrap(), ObjectId("URI:LIT:nbswy3dp".into()));
        assert_eq!(c.upload_file(&path, UploadFormat::Mdmf).unwrap_err().kind, IoErrorKind::Corrupt);
        assert_eq!(c.upload_file(&path, UploadFormat::Chk).unwrap_err().kind, IoErrorKind::Corrupt);
        let e = c.upload_file(&path, UploadFormat::Chk).unwrap_err();
        assert_eq!(e.kind, IoErrorKind::Corrupt);
        assert!(e.message.contains("stored 2 bytes of a 5-byte file"), "{e}");
        let e = c.upload_file(&path, UploadFormat::Chk).unwrap_err();
        assert_eq!(e.kind, IoErrorKind::Other);
        assert!(e.message.contains("HTTP 503: busy"), "{e}");
        let e = c.upload_file(&dir.path().join("missing"), UploadFormat::Chk).unwrap_err();
        assert_eq!(e.kind, IoErrorKind::NotFound);
    }

    #[test]
    fn client_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<TahoeClient>();
    }
}
