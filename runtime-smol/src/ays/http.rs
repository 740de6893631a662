//! A small, bounded HTTP/1.1 server: one thread per connection, keep-alive, `Content-Length` and
//! chunked request bodies, `Expect: 100-continue`, and a limit on everything:
//!
//! - at most [`Limits::connections_max`] open connections (more are answered 503 and closed);
//! - at most [`Limits::requests_in_flight_max`] requests handled at once (a request waits up to
//!   [`Limits::queue_timeout`] for a slot, then gets 503);
//! - a request head of at most [`Limits::head_bytes_max`] bytes and [`Limits::headers_max`]
//!   headers, received within [`Limits::head_timeout`] (else 431 or the connection is closed);
//! - every read and write of a body gives up after [`Limits::io_timeout`] without progress;
//!   an idle keep-alive connection is closed after [`Limits::idle_timeout`];
//! - bodies are bounded by the handler ([`Request::read_body`], [`Request::body_reader`]): a
//!   declared length above the bound is refused (413) before anything is read.
//!
//! Request parsing is `httparse`'s; everything the server writes is built here. The
//! `Authorization` header is never logged.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::os::unix::io::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// The bounds of the server; see the module documentation.
#[derive(Debug, Clone)]
pub struct Limits {
    pub connections_max: usize,
    pub requests_in_flight_max: usize,
    pub head_bytes_max: usize,
    pub headers_max: usize,
    pub head_timeout: Duration,
    pub io_timeout: Duration,
    pub idle_timeout: Duration,
    pub queue_timeout: Duration,
    /// How long a stopping server waits for requests in flight.
    pub drain_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            connections_max: 512,
            requests_in_flight_max: 64,
            head_bytes_max: 16 * 1024,
            headers_max: 64,
            head_timeout: Duration::from_secs(10),
            io_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(30),
            queue_timeout: Duration::from_secs(30),
            drain_timeout: Duration::from_secs(10),
        }
    }
}

/// Answers requests. Called from many connection threads at once.
pub trait Handler: Send + Sync + 'static {
    fn handle(&self, req: &mut Request<'_>) -> Response;
}

/// Why a body could not be read.
#[derive(Debug)]
pub enum BodyError {
    /// Longer than the handler's bound (answer 413).
    TooLarge,
    /// The client sent a malformed body or went away (answer 400; the connection is closed).
    Io(io::Error),
}

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BodyError::TooLarge => f.write_str("request body too large"),
            BodyError::Io(e) => write!(f, "request body: {e}"),
        }
    }
}

enum Framing {
    Length { remaining: u64 },
    Chunked { chunk_remaining: u64, done: bool },
}

/// One request: its head, and its body to read (at most once).
pub struct Request<'a> {
    pub method: String,
    /// The path, still percent-encoded, without the query.
    pub path: String,
    pub query: Option<String>,
    /// Header names in lowercase.
    headers: Vec<(String, Vec<u8>)>,
    pub peer: SocketAddr,
    conn: &'a mut dyn Conn,
    framing: Framing,
    expect_continue: bool,
    continue_sent: bool,
    body_error: bool,
    body_read: u64,
    body_limit: u64,
}

/// What a request reads its body from, and writes `100 Continue` to: the connection.
pub trait Conn: Read {
    fn write_interim(&mut self, bytes: &[u8]) -> io::Result<()>;
}

impl Conn for BufReader<TcpStream> {
    fn write_interim(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.get_mut().write_all(bytes)
    }
}

/// Bytes as a connection (the body parser without a socket: tests and fuzzing); what is
/// written goes nowhere.
impl Conn for &[u8] {
    fn write_interim(&mut self, _bytes: &[u8]) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> Request<'a> {
    /// A request with a parsed head whose body comes from `conn`.
    pub fn new(head: Head, peer: SocketAddr, conn: &'a mut dyn Conn) -> Request<'a> {
        let Head { method, path, query, headers, framing, close: _, expect_continue } = head;
        Request {
            method,
            path,
            query,
            headers,
            peer,
            conn,
            framing,
            expect_continue,
            continue_sent: false,
            body_error: false,
            body_read: 0,
            body_limit: 0,
        }
    }

    /// A header's value (the first one with this name, case-insensitive).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_slice())
    }

    /// The declared body length, when given by `Content-Length`.
    pub fn content_length(&self) -> Option<u64> {
        match self.framing {
            Framing::Length { remaining } => Some(remaining + self.body_read),
            Framing::Chunked { .. } => None,
        }
    }

    /// Reads the whole body into memory, at most `limit` bytes.
    pub fn read_body(&mut self, limit: u64) -> Result<Vec<u8>, BodyError> {
        let mut out = Vec::new();
        let mut r = self.body_reader(limit)?;
        match r.read_to_end(&mut out) {
            Ok(_) => Ok(out),
            Err(e) if e.kind() == io::ErrorKind::FileTooLarge => Err(BodyError::TooLarge),
            Err(e) => Err(BodyError::Io(e)),
        }
    }

    /// The body as a reader of at most `limit` bytes: a longer body makes a read fail with
    /// `ErrorKind::FileTooLarge`. A declared length above `limit` fails at once.
    pub fn body_reader(&mut self, limit: u64) -> Result<BodyReader<'_, 'a>, BodyError> {
        if self.content_length().is_some_and(|n| n > limit) {
            return Err(BodyError::TooLarge);
        }
        self.body_limit = limit;
        Ok(BodyReader { req: self })
    }

    fn has_unread_body(&self) -> bool {
        match self.framing {
            Framing::Length { remaining } => remaining > 0,
            Framing::Chunked { done, .. } => !done,
        }
    }

    fn send_continue(&mut self) -> io::Result<()> {
        if self.expect_continue && !self.continue_sent {
            self.continue_sent = true;
            self.conn.write_interim(b"HTTP/1.1 100 Continue\r\n\r\n")?;
        }
        Ok(())
    }

    fn read_line(&mut self, max: usize) -> io::Result<Vec<u8>> {
        let mut line = Vec::new();
        loop {
            let mut byte = [0u8; 1];
            self.conn.read_exact(&mut byte)?;
            if byte[0] == b'\n' {
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                return Ok(line);
            }
            line.push(byte[0]);
            if line.len() > max {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "chunk line too long"));
            }
        }
    }

    fn read_raw(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        self.send_continue()?;
        match &mut self.framing {
            Framing::Length { remaining } => {
                if *remaining == 0 {
                    return Ok(0);
                }
                let want = (*remaining).min(buf.len() as u64) as usize;
                let n = self.conn.read(&mut buf[..want])?;
                if n == 0 {
                    return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "client closed the connection mid-body"));
                }
                *remaining -= n as u64;
                Ok(n)
            }
            Framing::Chunked { done: true, .. } => Ok(0),
            Framing::Chunked { chunk_remaining, .. } if *chunk_remaining > 0 => {
                let want = (*chunk_remaining).min(buf.len() as u64) as usize;
                let n = self.conn.read(&mut buf[..want])?;
                if n == 0 {
                    return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "client closed the connection mid-chunk"));
                }
                let Framing::Chunked { chunk_remaining, .. } = &mut self.framing else { unreachable!() };
                *chunk_remaining -= n as u64;
                if *chunk_remaining == 0 {
                    let crlf = self.read_line(2)?;
                    if !crlf.is_empty() {
                        return Err(io::Error::new(io::ErrorKind::InvalidData, "chunk not followed by CRLF"));
                    }
                }
                Ok(n)
            }
            Framing::Chunked { .. } => {
                let line = self.read_line(1024)?;
                let size_text = line.split(|&b| b == b';').next().unwrap_or_default();
                let size_text = std::str::from_utf8(size_text).unwrap_or("").trim();
                let size = u64::from_str_radix(size_text, 16)
                    .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad chunk size"))?;
                if size == 0 {
                    // Trailers, up to the empty line.
                    for _ in 0..64 {
                        if self.read_line(8192)?.is_empty() {
                            self.framing = Framing::Chunked { chunk_remaining: 0, done: true };
                            return Ok(0);
                        }
                    }
                    return Err(io::Error::new(io::ErrorKind::InvalidData, "too many trailers"));
                }
                self.framing = Framing::Chunked { chunk_remaining: size, done: false };
                self.read_raw(buf)
            }
        }
    }

    /// Reads and drops what is left of the body, up to `max` bytes; false if more was left (or
    /// the body was broken), in which case the connection must be closed.
    pub fn drain(&mut self, max: u64) -> bool {
        if self.body_error {
            return false;
        }
        if !self.has_unread_body() {
            return true;
        }
        if self.expect_continue && !self.continue_sent {
            // The client waits for our go-ahead; it gets the answer instead and the connection
            // ends, so the body is never sent.
            return false;
        }
        if matches!(self.framing, Framing::Length { remaining } if remaining > max) {
            return false;
        }
        let mut buf = [0u8; 8192];
        let mut total = 0u64;
        while total <= max {
            match self.read_raw(&mut buf) {
                Ok(0) => return true,
                Ok(n) => total += n as u64,
                Err(_) => return false,
            }
        }
        false
    }
}

/// The body of a [`Request`], bounded (see [`Request::body_reader`]).
pub struct BodyReader<'r, 'a> {
    req: &'r mut Request<'a>,
}

impl Read for BodyReader<'_, '_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.req.body_error {
            return Err(io::Error::other("request body already failed"));
        }
        let left = self.req.body_limit.saturating_sub(self.req.body_read);
        // Read one byte past the limit to tell "exactly at the limit" from "over it".
        let cap = (left.saturating_add(1)).min(buf.len() as u64) as usize;
        match self.req.read_raw(&mut buf[..cap]) {
            Ok(n) => {
                self.req.body_read += n as u64;
                if self.req.body_read > self.req.body_limit {
                    self.req.body_error = true;
                    return Err(io::Error::new(io::ErrorKind::FileTooLarge, "request body too large"));
                }
                Ok(n)
            }
            Err(e) => {
                self.req.body_error = true;
                Err(e)
            }
        }
    }
}

/// What to answer.
pub struct Response {
    pub status: u16,
    pub content_type: Option<&'static str>,
    pub headers: Vec<(&'static str, String)>,
    pub body: ResponseBody,
}

pub enum ResponseBody {
    Empty,
    Bytes(Vec<u8>),
    /// A file and how many bytes of it to send.
    File(File, u64),
    /// The answer to a HEAD: the length a GET would send, and no body.
    Length(u64),
}

impl Response {
    /// No body (`Content-Length: 0`).
    pub fn empty(status: u16) -> Response {
        Response { status, content_type: None, headers: Vec::new(), body: ResponseBody::Empty }
    }

    /// A one-line plain-text explanation (for 4xx/5xx).
    pub fn text(status: u16, msg: impl Into<String>) -> Response {
        let mut m = msg.into();
        m.push('\n');
        Response { status, content_type: Some("text/plain; charset=utf-8"), headers: Vec::new(), body: ResponseBody::Bytes(m.into_bytes()) }
    }

    pub fn json(status: u16, body: Vec<u8>) -> Response {
        Response { status, content_type: Some("application/json"), headers: Vec::new(), body: ResponseBody::Bytes(body) }
    }

    pub fn bytes(status: u16, body: Vec<u8>) -> Response {
        Response { status, content_type: Some("application/octet-stream"), headers: Vec::new(), body: ResponseBody::Bytes(body) }
    }

    pub fn file(status: u16, file: File, len: u64) -> Response {
        Response { status, content_type: Some("application/octet-stream"), headers: Vec::new(), body: ResponseBody::File(file, len) }
    }

    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Response {
        self.headers.push((name, value.into()));
        self
    }

    fn body_len(&self) -> u64 {
        match &self.body {
            ResponseBody::Empty => 0,
            ResponseBody::Bytes(b) => b.len() as u64,
            ResponseBody::File(_, n) | ResponseBody::Length(n) => *n,
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Content Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}

/// Writes a response; false if the connection must be closed afterwards (or broke).
fn write_response(stream: &mut TcpStream, resp: Response, head_only: bool, close: bool) -> bool {
    let len = resp.body_len();
    let mut head = format!("HTTP/1.1 {} {}\r\n", resp.status, reason(resp.status));
    // 204 and 1xx carry no Content-Length (RFC 9110 8.6).
    if resp.status != 204 {
        head.push_str(&format!("Content-Length: {len}\r\n"));
    }
    if let Some(ct) = resp.content_type {
        head.push_str(&format!("Content-Type: {ct}\r\n"));
    }
    for (n, v) in &resp.headers {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    if close {
        head.push_str("Connection: close\r\n");
    }
    head.push_str("\r\n");
    if stream.write_all(head.as_bytes()).is_err() {
        return false;
    }
    if head_only || resp.status == 204 || matches!(resp.body, ResponseBody::Length(_)) {
        return stream.flush().is_ok() && !close;
    }
    let ok = match resp.body {
        ResponseBody::Empty | ResponseBody::Length(_) => true,
        ResponseBody::Bytes(b) => stream.write_all(&b).is_ok(),
        ResponseBody::File(f, n) => send_file(&f, n, stream),
    };
    ok && stream.flush().is_ok() && !close
}

/// Sends the first `n` bytes of `f` with sendfile(2): the kernel moves the pages, nothing is
/// copied through this process (`io::copy` here reads and sends 8 KiB at a time, two system
/// calls and two copies per 8 KiB). Falls back to a copy where the kernel cannot.
fn send_file(f: &File, n: u64, stream: &mut TcpStream) -> bool {
    use std::os::unix::io::AsRawFd;
    let mut off: libc::off_t = 0;
    while (off as u64) < n {
        let want = (n - off as u64).min(1 << 30) as usize;
        // SAFETY: both descriptors are open for the call; `off` is a valid offset to update.
        let sent = unsafe { libc::sendfile(stream.as_raw_fd(), f.as_raw_fd(), &mut off, want) };
        match sent {
            0 => return false, // the file is shorter than its answer said
            s if s > 0 => {}
            _ => match io::Error::last_os_error().raw_os_error() {
                Some(libc::EINTR) => {}
                // `off` stays 0 and the file's own position was not moved.
                Some(libc::EINVAL | libc::ENOSYS) if off == 0 => {
                    return matches!(io::copy(&mut f.take(n), stream), Ok(c) if c == n);
                }
                _ => return false,
            },
        }
    }
    true
}

/// A counting semaphore with a timed wait.
struct Slots {
    used: Mutex<usize>,
    freed: Condvar,
    max: usize,
}

impl Slots {
    fn acquire(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        while *used >= self.max {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            used = self.freed.wait_timeout(used, deadline - now).unwrap_or_else(|e| e.into_inner()).0;
        }
        *used += 1;
        true
    }

    fn release(&self) {
        let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        *used = used.saturating_sub(1);
        self.freed.notify_all();
    }

    /// Waits until no slot is used, at most `timeout`; true if none is.
    fn wait_idle(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        while *used > 0 {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            used = self.freed.wait_timeout(used, deadline - now).unwrap_or_else(|e| e.into_inner()).0;
        }
        true
    }
}

/// Stops a running [`HttpServer`] (from a signal thread, a test...).
#[derive(Clone)]
pub struct ShutdownHandle(Arc<AtomicBool>);

impl ShutdownHandle {
    pub fn shutdown(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    pub fn is_shutdown(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// The listening server.
pub struct HttpServer {
    listener: TcpListener,
    local_addr: SocketAddr,
    limits: Limits,
    stop: Arc<AtomicBool>,
}

struct Shared {
    limits: Limits,
    stop: Arc<AtomicBool>,
    slots: Slots,
    connections: AtomicUsize,
    handler: Arc<dyn Handler>,
}

impl HttpServer {
    /// Binds `addr` (`host:port`; port 0 picks a free one, see [`HttpServer::local_addr`]).
    pub fn bind(addr: &str, limits: Limits) -> io::Result<HttpServer> {
        let addrs: Vec<SocketAddr> = addr.to_socket_addrs()?.collect();
        let listener = TcpListener::bind(&addrs[..])?;
        let local_addr = listener.local_addr()?;
        Ok(HttpServer { listener, local_addr, limits, stop: Arc::new(AtomicBool::new(false)) })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle(self.stop.clone())
    }

    /// Serves until the shutdown handle is used, then waits (at most
    /// [`Limits::drain_timeout`]) for the requests in flight and returns.
    pub fn run(self, handler: Arc<dyn Handler>) -> io::Result<()> {
        let shared = Arc::new(Shared {
            slots: Slots { used: Mutex::new(0), freed: Condvar::new(), max: self.limits.requests_in_flight_max.max(1) },
            limits: self.limits,
            stop: self.stop,
            connections: AtomicUsize::new(0),
            handler,
        });
        let fd = self.listener.as_raw_fd();
        while !shared.stop.load(Ordering::SeqCst) {
            let mut pfd = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
            // SAFETY: one valid pollfd for the listener, which outlives the call.
            let r = unsafe { libc::poll(&mut pfd, 1, 200) };
            if r <= 0 {
                continue; // timeout (check the stop flag) or EINTR
            }
            let (stream, peer) = match self.listener.accept() {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    // EMFILE and the like: do not spin.
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                }
            };
            if shared.connections.fetch_add(1, Ordering::SeqCst) >= shared.limits.connections_max {
                shared.connections.fetch_sub(1, Ordering::SeqCst);
                let mut stream = stream;
                let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
                let _ = write_response(&mut stream, Response::text(503, "too many connections"), false, true);
                continue;
            }
            let conn_shared = shared.clone();
            let spawned = std::thread::Builder::new().name("ays-http".into()).spawn(move || {
                serve_connection(&conn_shared, stream, peer);
                conn_shared.connections.fetch_sub(1, Ordering::SeqCst);
            });
            if let Err(e) = spawned {
                shared.connections.fetch_sub(1, Ordering::SeqCst);
                tracing::warn!(error = %e, "cannot start a connection thread");
            }
        }
        drop(self.listener);
        if !shared.slots.wait_idle(shared.limits.drain_timeout) {
            tracing::warn!("stopping with requests still in flight");
        }
        Ok(())
    }
}

/// Closes our side, then reads and drops what the client still sends for a moment: closing a
/// socket with unread data resets the connection, and the client could lose our answer.
fn lingering_close(conn: &mut BufReader<TcpStream>) {
    let _ = conn.get_ref().shutdown(std::net::Shutdown::Write);
    let _ = conn.get_ref().set_read_timeout(Some(Duration::from_millis(500)));
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut buf = [0u8; 16 * 1024];
    let mut total = 0usize;
    while Instant::now() < deadline && total < (4 << 20) {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => total += n,
        }
    }
}

enum HeadError {
    /// Nothing more to read (clean close, idle timeout): close quietly.
    Closed,
    TooLarge,
    Timeout,
}

/// Reads up to the end of a request head (`\r\n\r\n`).
fn read_head(conn: &mut BufReader<TcpStream>, limits: &Limits) -> Result<Vec<u8>, HeadError> {
    let mut head: Vec<u8> = Vec::new();
    let _ = conn.get_ref().set_read_timeout(Some(limits.idle_timeout));
    let mut started: Option<Instant> = None;
    loop {
        let avail = match conn.fill_buf() {
            Ok([]) => return Err(HeadError::Closed),
            Ok(a) => a,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) if started.is_none() => return Err(HeadError::Closed),
            Err(_) => return Err(HeadError::Timeout),
        };
        let from = head.len().saturating_sub(3);
        let n = avail.len();
        head.extend_from_slice(avail);
        if started.is_none() {
            started = Some(Instant::now());
            let _ = conn.get_ref().set_read_timeout(Some(limits.head_timeout));
        }
        if let Some(pos) = head[from..].windows(4).position(|w| w == b"\r\n\r\n") {
            let end = from + pos + 4;
            conn.consume(n - (head.len() - end));
            if end > limits.head_bytes_max {
                return Err(HeadError::TooLarge);
            }
            head.truncate(end);
            return Ok(head);
        }
        conn.consume(n);
        if head.len() > limits.head_bytes_max {
            return Err(HeadError::TooLarge);
        }
        if started.is_some_and(|s| s.elapsed() > limits.head_timeout) {
            return Err(HeadError::Timeout);
        }
    }
}

/// A request head, parsed and checked: everything about a request but its body.
pub struct Head {
    pub method: String,
    /// The path, still percent-encoded, without the query.
    pub path: String,
    pub query: Option<String>,
    /// Header names in lowercase.
    pub headers: Vec<(String, Vec<u8>)>,
    framing: Framing,
    /// The connection ends after the answer.
    pub close: bool,
    pub expect_continue: bool,
}

impl Head {
    /// The declared body length (`None`: chunked).
    pub fn content_length(&self) -> Option<u64> {
        match self.framing {
            Framing::Length { remaining } => Some(remaining),
            Framing::Chunked { .. } => None,
        }
    }
}

/// Parses a request head up to and including its empty line (at most `headers_max` headers).
/// A head that is refused gets the answer to send before the connection is closed. Pure, so
/// that it can be fuzzed (`fuzz/fuzz_targets/ays_request.rs`).
pub fn parse_head(head: &[u8], headers_max: usize) -> Result<Head, Response> {
    let mut header_buf = vec![httparse::EMPTY_HEADER; headers_max];
    let mut parsed = httparse::Request::new(&mut header_buf);
    match parsed.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) | Err(httparse::Error::TooManyHeaders) => {
            return Err(Response::text(431, "too many request headers"));
        }
        Err(e) => return Err(Response::text(400, format!("malformed request: {e}"))),
    }
    let method = parsed.method.unwrap_or_default().to_string();
    let target = parsed.path.unwrap_or_default().to_string();
    let version = parsed.version.unwrap_or(1);
    let headers: Vec<(String, Vec<u8>)> =
        parsed.headers.iter().map(|h| (h.name.to_ascii_lowercase(), h.value.to_vec())).collect();
    let get = |name: &str| -> Vec<&[u8]> { headers.iter().filter(|(n, _)| n == name).map(|(_, v)| v.as_slice()).collect() };
    let has_token = |name: &str, token: &str| {
        get(name).iter().any(|v| String::from_utf8_lossy(v).split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    };
    let mut close = version == 0 || has_token("connection", "close");
    if version == 0 && has_token("connection", "keep-alive") {
        close = false;
    }

    // Body framing (RFC 9112 6.3); both headers at once is refused (request smuggling).
    let te = get("transfer-encoding");
    let cl = get("content-length");
    let framing = if !te.is_empty() {
        if !cl.is_empty() || !has_token("transfer-encoding", "chunked") || te.len() != 1 {
            return Err(Response::text(400, "unsupported Transfer-Encoding"));
        }
        Framing::Chunked { chunk_remaining: 0, done: false }
    } else if !cl.is_empty() {
        let values: Vec<Option<u64>> = cl
            .iter()
            .map(|v| std::str::from_utf8(v).ok().filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())).and_then(|s| s.parse().ok()))
            .collect();
        match values.first() {
            Some(Some(n)) if values.iter().all(|v| *v == Some(*n)) => Framing::Length { remaining: *n },
            _ => return Err(Response::text(400, "bad Content-Length")),
        }
    } else {
        Framing::Length { remaining: 0 }
    };
    let expect_continue = version == 1 && get("expect").iter().any(|v| v.eq_ignore_ascii_case(b"100-continue"));
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_string(), Some(q.to_string())),
        None => (target.clone(), None),
    };
    Ok(Head { method, path, query, headers, framing, close, expect_continue })
}

fn serve_connection(shared: &Shared, stream: TcpStream, peer: SocketAddr) {
    let limits = &shared.limits;
    let _ = stream.set_nodelay(true);
    let _ = stream.set_write_timeout(Some(limits.io_timeout));
    let Ok(write_half) = stream.try_clone() else { return };
    let mut writer = write_half;
    let mut conn = BufReader::with_capacity(64 * 1024, stream);
    loop {
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let head = match read_head(&mut conn, limits) {
            Ok(h) => h,
            Err(HeadError::Closed) => return,
            Err(HeadError::TooLarge) => {
                write_response(&mut writer, Response::text(431, "request head too large"), false, true);
                lingering_close(&mut conn);
                return;
            }
            Err(HeadError::Timeout) => {
                write_response(&mut writer, Response::text(408, "request head not received in time"), false, true);
                lingering_close(&mut conn);
                return;
            }
        };
        let head = match parse_head(&head, limits.headers_max) {
            Ok(h) => h,
            Err(refusal) => {
                write_response(&mut writer, refusal, false, true);
                lingering_close(&mut conn);
                return;
            }
        };
        let head_only = head.method == "HEAD";
        let mut close = head.close;

        let started = Instant::now();
        if !shared.slots.acquire(limits.queue_timeout) {
            write_response(&mut writer, Response::text(503, "server busy, try again"), head_only, true);
            lingering_close(&mut conn);
            return;
        }
        let _ = conn.get_ref().set_read_timeout(Some(limits.io_timeout));
        let mut req = Request::new(head, peer, &mut conn);
        let resp = shared.handler.handle(&mut req);
        let status = resp.status;
        let len = resp.body_len();
        // What the handler left of the body must go before the next request can be read.
        if !req.drain(64 * 1024) {
            close = true;
        }
        let (method, path) = (std::mem::take(&mut req.method), std::mem::take(&mut req.path));
        drop(req);
        let keep = write_response(&mut writer, resp, head_only, close || shared.stop.load(Ordering::SeqCst));
        shared.slots.release();
        if close {
            lingering_close(&mut conn);
        }
        tracing::debug!(%peer, %method, %path, status, bytes = len, ms = started.elapsed().as_millis() as u64, "request");
        if !keep {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &str) -> Result<Head, u16> {
        parse_head(text.as_bytes(), 8).map_err(|r| r.status)
    }

    /// The body of `request` (head, blank line, body) read through a [`Request`] over its bytes.
    fn body(request: &[u8], limit: u64) -> Result<Vec<u8>, String> {
        let split = request.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        let (h, mut rest) = request.split_at(split);
        let h = parse_head(h, 8).map_err(|r| format!("refused: {}", r.status))?;
        let mut req = Request::new(h, ([127, 0, 0, 1], 1).into(), &mut rest);
        req.read_body(limit).map_err(|e| e.to_string())
    }

    #[test]
    fn a_head_gives_method_path_query_and_framing() {
        let h = head("GET /md/c/m/a%20b?fetch=2 HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        assert_eq!((h.method.as_str(), h.path.as_str(), h.query.as_deref()), ("GET", "/md/c/m/a%20b", Some("fetch=2")));
        assert_eq!(h.content_length(), Some(0));
        assert!(!h.close && !h.expect_continue);
        let h = head("PUT /x HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n").unwrap();
        assert_eq!(h.content_length(), Some(5));
        assert!(h.expect_continue);
        assert_eq!(head("POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n").unwrap().content_length(), None);
    }

    #[test]
    fn http_1_0_closes_unless_asked_to_keep_alive() {
        assert!(head("GET / HTTP/1.0\r\n\r\n").unwrap().close);
        assert!(!head("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").unwrap().close);
        assert!(head("GET / HTTP/1.1\r\nConnection: foo, close\r\n\r\n").unwrap().close);
    }

    #[test]
    fn bad_heads_are_refused() {
        // Both framings at once (request smuggling), other transfer codings, bad lengths.
        assert_eq!(head("POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n").err(), Some(400));
        assert_eq!(head("POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n").err(), Some(400));
        assert_eq!(head("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n").err(), Some(400));
        assert_eq!(head("POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n").err(), Some(400));
        assert_eq!(head("POST / HTTP/1.1\r\nContent-Length: +1\r\n\r\n").err(), Some(400));
        assert_eq!(head("POST / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n").err(), Some(400));
        assert_eq!(head("GET / HTTP/1.1\r\na: 1\r\nb: 1\r\nc: 1\r\nd: 1\r\ne: 1\r\nf: 1\r\ng: 1\r\nh: 1\r\ni: 1\r\n\r\n").err(), Some(431));
        assert_eq!(head("GET / HTTP/1.1\r\n").err(), Some(431), "a partial head");
        assert_eq!(head("GET\0/ HTTP/1.1\r\n\r\n").err(), Some(400));
    }

    #[test]
    fn bodies_are_read_by_their_framing_and_bounded() {
        assert_eq!(body(b"PUT / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcdef", 10).unwrap(), b"abc");
        assert!(body(b"PUT / HTTP/1.1\r\nContent-Length: 30\r\n\r\nabc", 100).is_err(), "a body cut short");
        assert!(body(b"PUT / HTTP/1.1\r\nContent-Length: 30\r\n\r\nabc", 10).is_err(), "a declared length over the bound");
        let chunked = b"PUT / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n2\r\nde\r\n0\r\nTrailer: 1\r\n\r\n";
        assert_eq!(body(chunked, 10).unwrap(), b"abcde");
        assert!(body(chunked, 4).is_err(), "a chunked body over the bound");
        for broken in [
            &b"PUT / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n"[..],
            b"PUT / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffffff\r\nabc",
            b"PUT / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n0\r\n\r\n",
            b"PUT / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nab",
        ] {
            assert!(body(broken, 100).is_err(), "{:?}", String::from_utf8_lossy(broken));
        }
    }
}
