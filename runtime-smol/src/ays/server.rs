//! `truckeefs ays serve`: the aysfs cache server (`ays_cache` of the design), which is also a
//! store (`/stor/...`). Routes, bodies and fetch modes: `docs/ays-protocol.md`; operation:
//! `docs/ays.md`.
//!
//! A cache fetches what it lacks from the stores its clients announced: a tree by the `ays.id`
//! and `stor.name` of the announced mount; a blob from each known store in turn (by name).
//! Every fetched blob is checked against its md5 before it is kept or served; a mismatch is
//! logged with the store's name and that store is skipped. Concurrent fetches of the same thing
//! are merged into one.
//!
//! What a cache keeps from a store expires: a thread sweeps, at start and then every quarter of
//! the shortest announced expiration (between a minute and an hour), the trees and blobs not
//! fetched or served for longer than the expiration of the store they came from (see
//! [`super::store::Kept`]).

use super::http::{HttpServer, Limits, Request, Response, ShutdownHandle};
use super::proto::{self, ClientAnnounce, FetchMode, MdAnswer, StorAnnounce, Tree};
use super::store::{BlobData, EmbeddedStore, Kept, RedisStore, Store, StoreError};
use base64::Engine as _;
use isahc::auth::{Authentication, Credentials};
use isahc::config::{Configurable, RedirectPolicy};
use isahc::HttpClient;
use std::collections::{HashMap, HashSet};
use std::io::{self, Read, Seek, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// Where the server keeps its data.
#[derive(Debug, Clone)]
pub enum Backend {
    /// The embedded store in this directory (see [`EmbeddedStore`]).
    Embedded(PathBuf),
    /// A Redis URL (`redis://host:port/db`).
    Redis(String),
}

/// How to run the server.
#[derive(Clone)]
pub struct ServeConfig {
    /// `host:port` to listen on (port 0: any free port).
    pub listen: String,
    pub backend: Backend,
    /// Basic-auth login and password every request must carry, when set.
    pub auth: Option<(String, String)>,
    pub limits: Limits,
    /// Threads that run `fetch=2` fetches, and how many may wait.
    pub background_workers: usize,
    pub background_queue_max: usize,
    /// Timeouts of fetches from stores: connecting, and a transfer slower than 1 KiB/s for this
    /// long.
    pub upstream_connect_timeout: Duration,
    pub upstream_stall_timeout: Duration,
}

impl ServeConfig {
    pub fn new(listen: impl Into<String>, backend: Backend) -> ServeConfig {
        ServeConfig {
            listen: listen.into(),
            backend,
            auth: None,
            limits: Limits::default(),
            background_workers: 4,
            background_queue_max: 1024,
            upstream_connect_timeout: Duration::from_secs(10),
            upstream_stall_timeout: Duration::from_secs(30),
        }
    }
}

/// A bound, ready server.
pub struct Server {
    http: HttpServer,
    app: Arc<App>,
    jobs: Receiver<Job>,
    workers: usize,
}

impl Server {
    /// Opens the store and binds the address. Errors are one line, without passwords.
    pub fn open(cfg: ServeConfig) -> Result<Server, String> {
        let store: Arc<dyn Store> = match &cfg.backend {
            Backend::Embedded(dir) => Arc::new(EmbeddedStore::open(dir).map_err(|e| e.to_string())?),
            Backend::Redis(url) => Arc::new(RedisStore::open(url).map_err(|e| e.to_string())?),
        };
        let http = HttpServer::bind(&cfg.listen, cfg.limits.clone()).map_err(|e| format!("cannot listen on {}: {e}", cfg.listen))?;
        let client = HttpClient::builder()
            .connect_timeout(cfg.upstream_connect_timeout)
            .low_speed_timeout(1024, cfg.upstream_stall_timeout)
            .redirect_policy(RedirectPolicy::None)
            .build()
            .map_err(|e| format!("cannot create the HTTP client: {e}"))?;
        let (tx, rx) = sync_channel(cfg.background_queue_max.max(1));
        let app = Arc::new(App {
            store,
            auth: cfg.auth.clone(),
            client,
            in_flight: Mutex::new(HashSet::new()),
            in_flight_done: Condvar::new(),
            jobs: tx,
        });
        Ok(Server { http, app, jobs: rx, workers: cfg.background_workers.max(1) })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.http.local_addr()
    }

    /// One line for the logs: the backend (never a password).
    pub fn describe(&self) -> String {
        self.app.store.describe()
    }

    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.http.shutdown_handle()
    }

    /// Serves until the shutdown handle is used. Background fetches still running then are
    /// abandoned (their temporary files are removed at the next start).
    pub fn run(self) -> Result<(), String> {
        let jobs = Arc::new(Mutex::new(self.jobs));
        for i in 0..self.workers {
            let app = self.app.clone();
            let jobs = jobs.clone();
            std::thread::Builder::new()
                .name(format!("ays-fetch-{i}"))
                .spawn(move || loop {
                    let job = match jobs.lock().unwrap_or_else(|e| e.into_inner()).recv() {
                        Ok(j) => j,
                        Err(_) => return,
                    };
                    app.run_job(job);
                })
                .map_err(|e| format!("cannot start a fetch thread: {e}"))?;
        }
        let app = self.app.clone();
        std::thread::Builder::new()
            .name("ays-expiry".into())
            .spawn(move || loop {
                let wait = app.sweep();
                std::thread::sleep(wait);
            })
            .map_err(|e| format!("cannot start the expiry thread: {e}"))?;
        let app: Arc<dyn super::http::Handler> = self.app.clone();
        self.http.run(app).map_err(|e| format!("server failed: {e}"))
    }
}

/// A `fetch=2` fetch.
enum Job {
    Tree { ays_id: String, stor_name: String },
    Blob { domain: String, md5: String },
}

struct App {
    store: Arc<dyn Store>,
    auth: Option<(String, String)>,
    client: HttpClient,
    /// Keys of fetches running now; waiters are woken by `in_flight_done`.
    in_flight: Mutex<HashSet<String>>,
    in_flight_done: Condvar,
    jobs: SyncSender<Job>,
}

/// How a fetch from the stores ended.
enum Fetched<T> {
    Found(T),
    /// Every store asked answered 404 (or none was known).
    NotFound,
    /// No store had a good copy and at least one failed (unreachable, garbage, corrupt).
    Failed,
}

fn now_s() -> i64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// How long a request waits for the same fetch started by another request.
const SINGLE_FLIGHT_WAIT: Duration = Duration::from_secs(300);

fn store_error(e: StoreError) -> Response {
    tracing::error!(error = %e, "store");
    Response::text(500, "storage error (see the server's log)")
}

fn bad(msg: impl std::fmt::Display) -> Response {
    Response::text(400, msg.to_string())
}

fn not_found() -> Response {
    Response::empty(404)
}

fn body_error(e: super::http::BodyError) -> Response {
    match e {
        super::http::BodyError::TooLarge => Response::text(413, "request body too large"),
        super::http::BodyError::Io(e) => Response::text(400, format!("request body: {e}")),
    }
}

fn method_not_allowed(allow: &'static str) -> Response {
    Response::text(405, "method not allowed").with_header("Allow", allow)
}

/// Compares without stopping at the first difference, so timing tells nothing of a password.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl super::http::Handler for App {
    fn handle(&self, req: &mut Request<'_>) -> Response {
        if let Some((login, passwd)) = &self.auth {
            if !self.authorized(req, login, passwd) {
                tracing::debug!(peer = %req.peer, path = %req.path, "unauthenticated request");
                return Response::text(401, "authentication required")
                    .with_header("WWW-Authenticate", "Basic realm=\"truckeefs-ays\"");
            }
        }
        let path = req.path.clone();
        let Some(rest) = path.strip_prefix('/') else { return bad("the path must start with '/'") };
        let segs: Vec<&str> = rest.split('/').collect();
        let method = req.method.clone();
        let m = method.as_str();
        match segs.as_slice() {
            ["stor", "md", id] => match m {
                "GET" | "HEAD" => self.store_md_get(id),
                "PUT" => self.store_md_put(req, id),
                _ => method_not_allowed("GET, HEAD, PUT"),
            },
            ["stor", "blob", domain, md5] => match m {
                "GET" => self.store_blob_get(domain, md5, false),
                "HEAD" => self.store_blob_get(domain, md5, true),
                "PUT" => self.store_blob_put(req, domain, md5),
                _ => method_not_allowed("GET, HEAD, PUT"),
            },
            ["ays", "client", id] => match m {
                "POST" => self.announce_client(req, id),
                _ => method_not_allowed("POST"),
            },
            ["ays", "stor", name] => match m {
                "POST" => self.announce_stor(req, name),
                _ => method_not_allowed("POST"),
            },
            ["ays", "mount", client, mount] => match m {
                "POST" => self.announce_mount(req, client, mount),
                _ => method_not_allowed("POST"),
            },
            ["md", client, mount, dir @ ..] => match m {
                "GET" | "HEAD" => self.cache_md(req, client, mount, dir),
                _ => method_not_allowed("GET, HEAD"),
            },
            [domain, md5] => match m {
                "GET" => self.cache_blob(req, domain, md5, false),
                "HEAD" => self.cache_blob(req, domain, md5, true),
                _ => method_not_allowed("GET, HEAD"),
            },
            _ => not_found(),
        }
    }
}

/// A decoded, validated key from a URL segment.
fn key(what: &str, segment: &str) -> Result<String, Response> {
    let k = proto::decode_segment(segment).map_err(bad)?;
    proto::validate_key(what, &k).map_err(bad)?;
    Ok(k)
}

fn blob_name(domain: &str, md5: &str) -> Result<(String, String), Response> {
    let d = proto::domain_from_segment(domain).map_err(bad)?;
    if !proto::is_md5_hex(md5) {
        return Err(bad(format!("{md5:?} is not an md5 (32 lowercase hex digits)")));
    }
    Ok((d, md5.to_string()))
}

fn blob_response(blob: BlobData, head_only: bool) -> Response {
    if head_only {
        return Response { body: super::http::ResponseBody::Length(blob.len()), ..Response::bytes(200, Vec::new()) };
    }
    match blob {
        BlobData::File(f, n) => Response::file(200, f, n),
        BlobData::Bytes(b) => Response::bytes(200, b),
    }
}

macro_rules! tri {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(r) => return r,
        }
    };
}

impl App {
    fn authorized(&self, req: &Request<'_>, login: &str, passwd: &str) -> bool {
        let Some(h) = req.header("authorization") else { return false };
        let Ok(h) = std::str::from_utf8(h) else { return false };
        let mut parts = h.trim().splitn(2, ' ');
        let scheme = parts.next().unwrap_or_default();
        let Some(encoded) = parts.next().filter(|_| scheme.eq_ignore_ascii_case("basic")) else { return false };
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else { return false };
        let Some(colon) = decoded.iter().position(|&b| b == b':') else { return false };
        let ok_login = same(&decoded[..colon], login.as_bytes());
        let ok_passwd = same(&decoded[colon + 1..], passwd.as_bytes());
        ok_login & ok_passwd
    }

    // ---- store routes ------------------------------------------------------------------------

    fn store_md_get(&self, id: &str) -> Response {
        let ays_id = tri!(key("ays_id", id));
        match self.store.tree_json(&ays_id) {
            Ok(Some(body)) => {
                self.touch(&Kept::Tree(ays_id));
                Response::json(200, body)
            }
            Ok(None) => not_found(),
            Err(e) => store_error(e),
        }
    }

    fn store_md_put(&self, req: &mut Request<'_>, id: &str) -> Response {
        let ays_id = tri!(key("ays_id", id));
        let body = tri!(req.read_body(proto::JSON_SIZE_MAX).map_err(body_error));
        let tree = tri!(proto::parse_tree(&body).map_err(bad));
        match self.store.put_tree(&ays_id, &tree) {
            Ok(()) => {
                tracing::info!(ays_id = %ays_id, dirs = tree.len(), "tree stored");
                Response::empty(204)
            }
            Err(e) => store_error(e),
        }
    }

    fn store_blob_get(&self, domain: &str, md5: &str, head_only: bool) -> Response {
        let (domain, md5) = tri!(blob_name(domain, md5));
        if head_only {
            return match self.store.blob_len(&domain, &md5) {
                Ok(Some(n)) => blob_response(BlobData::Bytes(Vec::new()), true).with_len(n),
                Ok(None) => not_found(),
                Err(e) => store_error(e),
            };
        }
        match self.store.blob(&domain, &md5) {
            Ok(Some(b)) => {
                self.touch(&Kept::Blob { domain, md5 });
                blob_response(b, false)
            }
            Ok(None) => not_found(),
            Err(e) => store_error(e),
        }
    }

    fn store_blob_put(&self, req: &mut Request<'_>, domain: &str, md5: &str) -> Response {
        let (domain, md5) = tri!(blob_name(domain, md5));
        let mut spool = match self.store.spool() {
            Ok(f) => f,
            Err(e) => return store_error(e),
        };
        let mut body = tri!(req.body_reader(proto::BLOB_SIZE_MAX).map_err(body_error));
        let mut hasher = proto::Md5Hasher::new();
        let copied = copy_hashing(&mut body, spool.as_file_mut(), &mut hasher);
        match copied {
            Ok(_) => {}
            Err(CopyError::Read(e)) if e.kind() == io::ErrorKind::FileTooLarge => {
                return Response::text(413, "blob too large")
            }
            Err(CopyError::Read(e)) => return bad(format!("request body: {e}")),
            Err(CopyError::Write(e)) => return store_error(StoreError(format!("spool file: {e}"))),
        }
        let got = match hasher.finish_hex() {
            Ok(got) => got,
            Err(e) => return store_error(StoreError(format!("hashing the body: {e}"))),
        };
        if got != md5 {
            return bad(format!("the md5 of the body is {got}, not {md5}"));
        }
        match self.store.put_blob(&domain, &md5, spool) {
            Ok(()) => Response::empty(204),
            Err(e) => store_error(e),
        }
    }

    // ---- announcements -----------------------------------------------------------------------

    fn read_json<T: serde::de::DeserializeOwned + Default>(req: &mut Request<'_>, what: &str) -> Result<T, Response> {
        let body = req.read_body(proto::JSON_SIZE_MAX).map_err(body_error)?;
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(T::default());
        }
        serde_json::from_slice(&body).map_err(|e| bad(format!("{what}: not the expected JSON: {e}")))
    }

    fn announce_client(&self, req: &mut Request<'_>, id: &str) -> Response {
        let id = tri!(key("client id", id));
        let client: ClientAnnounce = tri!(Self::read_json(req, "client"));
        match self.store.put_client(&id, &client) {
            Ok(()) => {
                tracing::info!(client = %id, platform = %client.platform, "client announced");
                Response::empty(204)
            }
            Err(e) => store_error(e),
        }
    }

    fn announce_stor(&self, req: &mut Request<'_>, name: &str) -> Response {
        let name = tri!(key("store name", name));
        let body = tri!(req.read_body(proto::JSON_SIZE_MAX).map_err(body_error));
        let stor: StorAnnounce =
            tri!(serde_json::from_slice(&body).map_err(|_| bad("store: expected {\"url\", \"login\", \"passwd\", \"expiration\"}")));
        tri!(stor.validate().map_err(bad));
        match self.store.put_stor(&name, &stor) {
            Ok(rec) => {
                tracing::info!(store = %name, url = %proto::redact_url(&rec.url), expiration_h = rec.expiration, "store announced");
                Response::empty(204)
            }
            Err(e) => store_error(e),
        }
    }

    fn announce_mount(&self, req: &mut Request<'_>, client: &str, mount: &str) -> Response {
        let client = tri!(key("client id", client));
        let mount = tri!(key("mount name", mount));
        let body = tri!(req.read_body(proto::JSON_SIZE_MAX).map_err(body_error));
        let table: serde_json::Value = tri!(serde_json::from_slice(&body).map_err(|e| bad(format!("mount: not JSON: {e}"))));
        if !table.is_object() {
            return bad("mount: expected the mount's table as a JSON object");
        }
        match self.store.put_mount(&client, &mount, &table) {
            Ok(()) => {
                tracing::info!(
                    client = %client, mount = %mount,
                    ays_id = proto::mount_ays_id(&table).unwrap_or("(none)"),
                    stor = proto::mount_stor_name(&table).unwrap_or("(none)"),
                    "mount announced"
                );
                Response::empty(204)
            }
            Err(e) => store_error(e),
        }
    }

    // ---- cache routes ------------------------------------------------------------------------

    fn cache_md(&self, req: &Request<'_>, client: &str, mount: &str, dir: &[&str]) -> Response {
        let client = tri!(key("client id", client));
        let mount = tri!(key("mount name", mount));
        let dir = tri!(proto::dir_path_from_segments(dir).map_err(bad));
        let fetch = tri!(FetchMode::from_query(req.query.as_deref()).map_err(bad));
        let table = match self.store.mount(&client, &mount) {
            Ok(Some(t)) => t,
            Ok(None) => {
                tracing::debug!(client = %client, mount = %mount, "metadata asked for a mount never announced");
                return not_found();
            }
            Err(e) => return store_error(e),
        };
        let Some(ays_id) = proto::mount_ays_id(&table) else {
            tracing::warn!(client = %client, mount = %mount, "the announced mount has no ays.id");
            return not_found();
        };
        let answer = |a: MdAnswer| Response::json(200, serde_json::to_vec(&a).unwrap_or_default());
        match self.store.dir(ays_id, &dir) {
            Ok(Some(a)) => {
                self.touch(&Kept::Tree(ays_id.to_string()));
                return answer(a);
            }
            Ok(None) => {}
            Err(e) => return store_error(e),
        }
        // A tree is fetched whole: if we have it, a missing path is really missing.
        match self.store.has_tree(ays_id) {
            Ok(true) => return not_found(),
            Ok(false) => {}
            Err(e) => return store_error(e),
        }
        // A mount without `stor.name` is served what this server keeps, and nothing is fetched.
        let stor_name = match proto::mount_stor_name(&table) {
            Some(s) => s,
            None => {
                tracing::debug!(client = %client, mount = %mount, "the announced mount has no stor.name: nothing to fetch from");
                return not_found();
            }
        };
        match fetch {
            FetchMode::Local => not_found(),
            FetchMode::Background => {
                self.enqueue(Job::Tree { ays_id: ays_id.to_string(), stor_name: stor_name.to_string() });
                not_found()
            }
            FetchMode::FetchNoKeep => match self.fetch_tree(ays_id, stor_name) {
                Fetched::Found(tree) => MdAnswer::from_tree(&tree, &dir).map(answer).unwrap_or_else(not_found),
                Fetched::NotFound => not_found(),
                Fetched::Failed => Response::text(502, "the store failed (see the server's log)"),
            },
            FetchMode::Fetch => {
                for _ in 0..2 {
                    let key = format!("md\0{ays_id}");
                    let fetched = self.single_flight(&key, true, || match self.fetch_tree(ays_id, stor_name) {
                        Fetched::Found(tree) => match self.keep_tree(ays_id, stor_name, &tree) {
                            Ok(()) => Fetched::Found(()),
                            Err(e) => {
                                tracing::error!(error = %e, ays_id = %ays_id, "cannot keep a fetched tree");
                                Fetched::Failed
                            }
                        },
                        Fetched::NotFound => Fetched::NotFound,
                        Fetched::Failed => Fetched::Failed,
                    });
                    match fetched {
                        // Done by us or by another request: answer from the store.
                        Some(Fetched::Found(())) | None => match self.store.dir(ays_id, &dir) {
                            Ok(Some(a)) => return answer(a),
                            Ok(None) if self.store.has_tree(ays_id).unwrap_or(false) => return not_found(),
                            Ok(None) => continue,
                            Err(e) => return store_error(e),
                        },
                        Some(Fetched::NotFound) => return not_found(),
                        Some(Fetched::Failed) => return Response::text(502, "the store failed (see the server's log)"),
                    }
                }
                not_found()
            }
        }
    }

    fn cache_blob(&self, req: &Request<'_>, domain: &str, md5: &str, head_only: bool) -> Response {
        let (domain, md5) = tri!(blob_name(domain, md5));
        let fetch = tri!(FetchMode::from_query(req.query.as_deref()).map_err(bad));
        let local = || match self.store.blob(&domain, &md5) {
            Ok(b) => Ok(b),
            Err(e) => Err(store_error(e)),
        };
        if let Some(b) = tri!(local()) {
            if !head_only {
                self.touch(&Kept::Blob { domain, md5 });
            }
            return blob_response(b, head_only);
        }
        match fetch {
            FetchMode::Local => not_found(),
            FetchMode::Background => {
                self.enqueue(Job::Blob { domain: domain.clone(), md5: md5.clone() });
                not_found()
            }
            FetchMode::FetchNoKeep => match self.fetch_blob(&domain, &md5) {
                Fetched::Found((spool, _)) => {
                    // The name is gone; the open file keeps the bytes until it is closed.
                    let mut f = spool.into_file();
                    match f.rewind().and_then(|()| f.metadata()) {
                        Ok(m) => blob_response(BlobData::File(f, m.len()), head_only),
                        Err(e) => store_error(StoreError(format!("spool file: {e}"))),
                    }
                }
                Fetched::NotFound => not_found(),
                Fetched::Failed => Response::text(502, "no store had a good copy (see the server's log)"),
            },
            FetchMode::Fetch => {
                for _ in 0..2 {
                    let key = format!("blob\0{domain}\0{md5}");
                    let fetched = self.single_flight(&key, true, || self.fetch_and_keep_blob(&domain, &md5));
                    match fetched {
                        Some(Fetched::Found(())) | None => match tri!(local()) {
                            Some(b) => return blob_response(b, head_only),
                            None => continue,
                        },
                        Some(Fetched::NotFound) => return not_found(),
                        Some(Fetched::Failed) => {
                            return Response::text(502, "no store had a good copy (see the server's log)")
                        }
                    }
                }
                not_found()
            }
        }
    }

    // ---- fetching ----------------------------------------------------------------------------

    fn enqueue(&self, job: Job) {
        match self.jobs.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => tracing::warn!("background fetch queue full; a fetch=2 request was dropped"),
            Err(TrySendError::Disconnected(_)) => {}
        }
    }

    fn run_job(&self, job: Job) {
        match job {
            Job::Tree { ays_id, stor_name } => {
                if self.store.has_tree(&ays_id).unwrap_or(false) {
                    return;
                }
                let key = format!("md\0{ays_id}");
                self.single_flight(&key, false, || {
                    if let Fetched::Found(tree) = self.fetch_tree(&ays_id, &stor_name) {
                        if let Err(e) = self.keep_tree(&ays_id, &stor_name, &tree) {
                            tracing::error!(error = %e, ays_id = %ays_id, "cannot keep a fetched tree");
                        }
                    }
                });
            }
            Job::Blob { domain, md5 } => {
                if self.store.has_blob(&domain, &md5).unwrap_or(false) {
                    return;
                }
                let key = format!("blob\0{domain}\0{md5}");
                self.single_flight(&key, false, || self.fetch_and_keep_blob(&domain, &md5));
            }
        }
    }

    /// Runs `f` unless a fetch with the same key is running: then waits for it (when `wait`)
    /// and returns `None`.
    fn single_flight<T>(&self, key: &str, wait: bool, f: impl FnOnce() -> T) -> Option<T> {
        {
            let mut running = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
            if running.contains(key) {
                if !wait {
                    return None;
                }
                let deadline = Instant::now() + SINGLE_FLIGHT_WAIT;
                while running.contains(key) && Instant::now() < deadline {
                    let left = deadline.saturating_duration_since(Instant::now());
                    running = self.in_flight_done.wait_timeout(running, left).unwrap_or_else(|e| e.into_inner()).0;
                }
                return None;
            }
            running.insert(key.to_string());
        }
        struct Done<'a>(&'a App, &'a str);
        impl Drop for Done<'_> {
            fn drop(&mut self) {
                self.0.in_flight.lock().unwrap_or_else(|e| e.into_inner()).remove(self.1);
                self.0.in_flight_done.notify_all();
            }
        }
        let _done = Done(self, key);
        Some(f())
    }

    fn request(&self, url: &str, stor: &StorAnnounce) -> Result<isahc::Request<()>, String> {
        let mut b = isahc::Request::get(url);
        if !stor.login.is_empty() || !stor.passwd.is_empty() {
            b = b
                .authentication(Authentication::basic())
                .credentials(Credentials::new(stor.login.clone(), stor.passwd.clone()));
        }
        b.body(()).map_err(|_| "invalid URL".to_string())
    }

    /// Fetches a whole tree from the mount's store; validates it.
    fn fetch_tree(&self, ays_id: &str, stor_name: &str) -> Fetched<Tree> {
        let stor = match self.store.stor(stor_name) {
            Ok(Some(s)) => s,
            Ok(None) => {
                tracing::warn!(store = %stor_name, ays_id = %ays_id, "a mount names a store no client announced");
                return Fetched::NotFound;
            }
            Err(e) => {
                tracing::error!(error = %e, "store");
                return Fetched::Failed;
            }
        };
        let url = proto::url::store_md(&stor.url, ays_id);
        let req = match self.request(&url, &stor) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(store = %stor_name, url = %proto::redact_url(&url), "{e}");
                return Fetched::Failed;
            }
        };
        let mut resp = match self.client.send(req) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(store = %stor_name, ays_id = %ays_id, error = %e, "cannot fetch metadata from the store");
                return Fetched::Failed;
            }
        };
        match resp.status().as_u16() {
            200 => {}
            404 => return Fetched::NotFound,
            s => {
                tracing::warn!(store = %stor_name, ays_id = %ays_id, status = s, "the store answered an error for metadata");
                return Fetched::Failed;
            }
        }
        let mut body = Vec::new();
        let read = resp.body_mut().take(proto::JSON_SIZE_MAX + 1).read_to_end(&mut body);
        if let Err(e) = read {
            tracing::warn!(store = %stor_name, ays_id = %ays_id, error = %e, "metadata transfer from the store failed");
            return Fetched::Failed;
        }
        if body.len() as u64 > proto::JSON_SIZE_MAX {
            tracing::warn!(store = %stor_name, ays_id = %ays_id, "the store's metadata is larger than 64 MiB; refused");
            return Fetched::Failed;
        }
        match proto::parse_tree(&body) {
            Ok(tree) => {
                tracing::info!(store = %stor_name, ays_id = %ays_id, dirs = tree.len(), "fetched metadata");
                Fetched::Found(tree)
            }
            Err(e) => {
                tracing::warn!(store = %stor_name, ays_id = %ays_id, error = %e, "the store's metadata is malformed; refused");
                Fetched::Failed
            }
        }
    }

    /// Keeps a tree fetched from store `stor_name`, recorded for expiry.
    fn keep_tree(&self, ays_id: &str, stor_name: &str, tree: &Tree) -> Result<(), StoreError> {
        self.store.put_tree(ays_id, tree)?;
        self.store.record_fetch(&Kept::Tree(ays_id.to_string()), stor_name, now_s())
    }

    /// Renews the expiry record of something served (if it has one); failures are only logged.
    fn touch(&self, item: &Kept) {
        if let Err(e) = self.store.touch(item, now_s()) {
            tracing::warn!(error = %e, "cannot record a use for expiry");
        }
    }

    /// Deletes what was kept from a store and not used for longer than that store's expiration.
    /// Returns how long to wait before the next sweep.
    fn sweep(&self) -> Duration {
        let expirations: HashMap<String, u64> = match self.store.stors() {
            Ok(s) => s.into_iter().map(|(name, s)| (name, s.expiration)).collect(),
            Err(e) => {
                tracing::warn!(error = %e, "expiry sweep: cannot list the stores");
                return Duration::from_secs(60);
            }
        };
        let shortest = expirations.values().copied().filter(|h| *h > 0).min();
        // A quarter of the shortest expiration, between a minute and an hour.
        let next = Duration::from_secs(shortest.map_or(3600, |h| h.saturating_mul(900)).clamp(60, 3600));
        if shortest.is_none() {
            return next;
        }
        let records = match self.store.fetch_records() {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "expiry sweep: cannot list what was fetched");
                return next;
            }
        };
        let now = now_s();
        let (mut trees, mut blobs) = (0u64, 0u64);
        for (item, rec) in records {
            // A store no longer known, or one that never expires: kept.
            let hours = match expirations.get(&rec.stor) {
                Some(h) if *h > 0 => *h,
                _ => continue,
            };
            let cutoff = now.saturating_sub(i64::try_from(hours.saturating_mul(3600)).unwrap_or(i64::MAX));
            if rec.at_s >= cutoff {
                continue;
            }
            match self.store.expire(&item, cutoff) {
                Ok(true) => match item {
                    Kept::Tree(_) => trees += 1,
                    Kept::Blob { .. } => blobs += 1,
                },
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "expiry sweep: cannot delete an expired item"),
            }
        }
        if trees + blobs > 0 {
            tracing::info!(trees, blobs, "expiry sweep: deleted what was not used for longer than its store's expiration");
        }
        next
    }

    fn fetch_and_keep_blob(&self, domain: &str, md5: &str) -> Fetched<()> {
        match self.fetch_blob(domain, md5) {
            Fetched::Found((spool, stor)) => match self.store.put_blob(domain, md5, spool) {
                Ok(()) => {
                    let item = Kept::Blob { domain: domain.to_string(), md5: md5.to_string() };
                    if let Err(e) = self.store.record_fetch(&item, &stor, now_s()) {
                        tracing::warn!(error = %e, "cannot record a fetched blob for expiry");
                    }
                    Fetched::Found(())
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot keep a fetched blob");
                    Fetched::Failed
                }
            },
            Fetched::NotFound => Fetched::NotFound,
            Fetched::Failed => Fetched::Failed,
        }
    }

    /// Fetches a blob from the known stores in turn into a spool file; only a copy whose md5
    /// matches is returned.
    fn fetch_blob(&self, domain: &str, md5: &str) -> Fetched<(tempfile::NamedTempFile, String)> {
        let stors = match self.store.stors() {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "store");
                return Fetched::Failed;
            }
        };
        let mut failed = false;
        for (name, stor) in &stors {
            match self.fetch_blob_from(name, stor, domain, md5) {
                Ok(Some(f)) => return Fetched::Found((f, name.clone())),
                Ok(None) => {}
                Err(()) => failed = true,
            }
        }
        if failed {
            Fetched::Failed
        } else {
            Fetched::NotFound
        }
    }

    fn fetch_blob_from(
        &self,
        name: &str,
        stor: &StorAnnounce,
        domain: &str,
        md5: &str,
    ) -> Result<Option<tempfile::NamedTempFile>, ()> {
        let url = proto::url::store_blob(&stor.url, domain, md5);
        let req = self.request(&url, stor).map_err(|e| {
            tracing::warn!(store = %name, url = %proto::redact_url(&url), "{e}");
        })?;
        let mut resp = self.client.send(req).map_err(|e| {
            tracing::warn!(store = %name, blob = %md5, error = %e, "cannot fetch a blob from the store");
        })?;
        match resp.status().as_u16() {
            200 => {}
            404 => return Ok(None),
            s => {
                tracing::warn!(store = %name, blob = %md5, status = s, "the store answered an error for a blob");
                return Err(());
            }
        }
        if resp.headers().get("content-length").and_then(|v| v.to_str().ok()?.parse::<u64>().ok()).is_some_and(|n| n > proto::BLOB_SIZE_MAX)
        {
            tracing::warn!(store = %name, blob = %md5, "the store's blob is larger than 1 GiB; refused");
            return Err(());
        }
        let mut spool = self.store.spool().map_err(|e| tracing::error!(error = %e, "spool"))?;
        let mut hasher = proto::Md5Hasher::new();
        let mut body = resp.body_mut().take(proto::BLOB_SIZE_MAX + 1);
        match copy_hashing(&mut body, spool.as_file_mut(), &mut hasher) {
            Ok(n) if n > proto::BLOB_SIZE_MAX => {
                tracing::warn!(store = %name, blob = %md5, "the store's blob is larger than 1 GiB; refused");
                return Err(());
            }
            Ok(_) => {}
            Err(CopyError::Read(e)) => {
                tracing::warn!(store = %name, blob = %md5, error = %e, "blob transfer from the store failed");
                return Err(());
            }
            Err(CopyError::Write(e)) => {
                tracing::error!(error = %e, "spool file");
                return Err(());
            }
        }
        let got = hasher.finish_hex().map_err(|e| tracing::error!(error = %e, "hashing a blob from the store"))?;
        if got != md5 {
            tracing::warn!(
                store = %name, domain = %domain, blob = %md5, got = %got,
                "store {name} served a corrupt blob (its md5 differs); refused, not kept"
            );
            return Err(());
        }
        Ok(Some(spool))
    }
}

trait WithLen {
    fn with_len(self, n: u64) -> Response;
}

impl WithLen for Response {
    fn with_len(mut self, n: u64) -> Response {
        self.body = super::http::ResponseBody::Length(n);
        self
    }
}

enum CopyError {
    Read(io::Error),
    Write(io::Error),
}

/// Copies `r` into `w`, hashing; returns the byte count.
fn copy_hashing(r: &mut impl Read, w: &mut impl Write, h: &mut proto::Md5Hasher) -> Result<u64, CopyError> {
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(CopyError::Read(e)),
        };
        h.update(&buf[..n]);
        w.write_all(&buf[..n]).map_err(CopyError::Write)?;
        total += n as u64;
    }
    w.flush().map_err(CopyError::Write)?;
    Ok(total)
}
