//! Coordination between hosts that share the stores, through Redis publish/subscribe: after
//! each committed transaction a host publishes what it changed (`Txn::changes`) on the channel
//! `<prefix>changes`; every other host feeds that to its core (`Core::handle_invalidation`), which
//! drops its cached copies and the kernel's.
//!
//! Messages are JSON: `{"h": "<host id>", "i": [ino, ...], "e": [[parent, "<name hex>"], ...]}`.
//! A host ignores its own. Redis delivers nothing published while a subscriber is disconnected:
//! after every subscription but the one made while the mount starts (before anything is cached),
//! the host drops everything it caches of the shared state (`Core::invalidate_all`). The
//! subscription is made before [`Coordinator::start`] returns, or, if that takes too long, the
//! first one counts as a reconnection. A message that cannot be published is sent again until it
//! goes through (late but in order: a duplicate invalidation is harmless, a lost one is not).
//!
//! Each host also renews a heartbeat key `<prefix>host:<id>` (every second, expiring after 5 s),
//! publishes its record locks (see [`LockService`]) and lists the files it keeps open after their
//! last name went (`<prefix>orphans:<id>`, a set of inode numbers). When a host's heartbeat
//! expires, the others find its orphan set and delete those files (`Core::collect_orphans`).
//!
//! Open files (`Config::shared_opens`): each host lists the files it has open, by host
//! (`<prefix>opens:<id>`, a set of inode numbers, for the clean-up after its death, like its
//! orphan set) and by file (`<prefix>openers:<ino>`, a set of host ids, for the check at an
//! unlink). A host deleting a file without names first runs [`REAP`]: atomically, unless a
//! live host lists the file open, it marks it as being deleted (`<prefix>reaping:<ino>`, which
//! expires after [`REAPING_TTL`]), and [`OPEN`] refuses to list a file so marked: an open and
//! a deletion never both go ahead. If a live host lists it, the file is marked as unlinked
//! (`<prefix>unlinked:<ino>`) and the last of its hosts to close it deletes it (its close runs
//! the same script, which tells it so). A dead host's open set counts as its orphan set does:
//! the files without names it lists are collected once its heartbeat expired.
//!
//! Fencing tokens come from one counter, `<prefix>fence` (`INCR`): every upload lease and every
//! record-lock grant gets the next one. Before a host uploads a new version of inode N it takes
//! the lease `<prefix>upload:<N>` (value `<token> <host id>`, expiring after [`LEASE_TTL`],
//! renewed by the heartbeat thread while held, deleted after the commit); while another host
//! holds it, the upload waits (see [`LockService::take_upload_lease`]). The metadata store checks
//! the token when the upload's object is committed (`backends::Fence`), so a host that was paused
//! past its lease cannot overwrite a version committed under a later one.

use crate::ays::proto::hex;
use redis::Commands;
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;
use truckeefs_core::{Changes, Ino, IoError, IoErrorKind, IoReply, IoResult, LockRange, LockRequest};

/// Where the coordination server is.
#[derive(Clone)]
pub struct CoordConfig {
    /// `redis://host:port/db`; may carry a password: never shown.
    pub url: String,
    /// Shown instead of the URL.
    pub server: String,
    /// Every key and channel this mount uses starts with it.
    pub prefix: String,
    /// Delete every key under `prefix` at start (never anything else).
    pub reset: bool,
    /// How long a per-inode process state lives (`redis_semaphore_timeout`).
    pub state_ttl: Duration,
}

impl std::fmt::Debug for CoordConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CoordConfig").field("server", &self.server).field("prefix", &self.prefix).finish()
    }
}

/// A host whose heartbeat key is older than this is dead: its locks no longer count.
const HEARTBEAT_TTL: Duration = Duration::from_secs(5);
/// How often the heartbeat key is renewed.
const HEARTBEAT_EVERY: Duration = Duration::from_secs(1);
/// How often (in heartbeats) a host looks for dead hosts' orphans.
const ORPHAN_CHECK_EVERY: u32 = 5;
/// How long a file stays marked as being deleted (`<prefix>reaping:<ino>`): the deleting host
/// deletes its row long before; if it dies first, the row (without names, listed in its orphan
/// set) is collected by the others.
const REAPING_TTL: Duration = Duration::from_secs(60);

/// How long an upload lease lives without renewal: a few heartbeats, so the lease of a dead or
/// paused host is free within seconds. The heartbeat thread renews this host's every second.
pub const LEASE_TTL: Duration = HEARTBEAT_TTL;
/// How often an upload waiting for another host's lease tries again.
const LEASE_RETRY: Duration = Duration::from_millis(200);

/// How long a blocked read of the subscription waits before checking whether to stop.
const POLL: Duration = Duration::from_millis(500);
/// How long the mount's start waits for its first subscription.
const FIRST_SUBSCRIPTION: Duration = Duration::from_secs(10);
/// Wait between reconnection attempts.
const RECONNECT: Duration = Duration::from_secs(1);

/// A running coordination link: a publisher thread and a subscriber thread. Dropping it stops
/// both (after sending what was queued).
pub struct Coordinator {
    publish: Publisher,
    locks: Arc<LockService>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    host: String,
}

/// Queues changes for the other hosts; cheap to clone, never blocks on the network.
#[derive(Clone)]
pub struct Publisher(mpsc::Sender<Message>);

enum Message {
    Changes(Changes),
    State { ino: Ino, process: Process, state: ProcessState },
    /// The file is gone: its state keys go too.
    Forget(Ino),
}

/// The per-inode processes whose state operators can read, as the Python release named them:
/// key `<prefix><ino>:<process>` holds the state's number, `<prefix><ino>:<process>_host` the
/// host running it; both expire after `redis_semaphore_timeout`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Process {
    /// Copying a file's committed contents from the grid into the staging area (to change it).
    Read,
    /// Changed data of the file waits in this host's staging area.
    Write,
    /// Uploading the file.
    Sync,
    /// Deleting an old version from the grid.
    Delete,
}

impl Process {
    fn name(self) -> &'static str {
        match self {
            Process::Read => "read",
            Process::Write => "write",
            Process::Sync => "sync",
            Process::Delete => "delete",
        }
    }
}

/// The Python release's state numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProcessState {
    Error = 0,
    Running = 2,
    Complete = 3,
}

impl Publisher {
    pub fn publish(&self, changes: Changes) {
        let _ = self.0.send(Message::Changes(changes));
    }

    /// Records a process state (queued; written by the publisher thread).
    pub fn state(&self, ino: Ino, process: Process, state: ProcessState) {
        let _ = self.0.send(Message::State { ino, process, state });
    }

    /// Removes a deleted file's process states.
    pub fn forget_states(&self, ino: Ino) {
        let _ = self.0.send(Message::Forget(ino));
    }
}

impl Coordinator {
    /// Connects (an error here is one line naming the server), clears the prefix if asked, and
    /// starts delivering other hosts' changes to `deliver`; `resync` is called after each
    /// subscription that may have missed changes (a reconnection).
    pub fn start(
        config: &CoordConfig,
        deliver: impl Fn(Changes) + Send + 'static,
        resync: impl Fn() + Send + 'static,
        collect_orphans: impl Fn() + Send + 'static,
    ) -> Result<Coordinator, String> {
        let client = redis::Client::open(config.url.as_str())
            .map_err(|e| format!("redis_host {}: {}", config.server, e.category()))?;
        let mut conn = client
            .get_connection_with_timeout(Duration::from_secs(10))
            .map_err(|e| format!("redis_host {}: cannot connect: {}", config.server, e.category()))?;
        let _: String = redis::cmd("PING")
            .query(&mut conn)
            .map_err(|e| format!("redis_host {}: {}", config.server, e.category()))?;
        if config.reset {
            reset_prefix(&mut conn, &config.prefix).map_err(|e| format!("redis_host {}: reset_redis: {e}", config.server))?;
        }
        let host = host_id();
        let channel = format!("{}changes", config.prefix);
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));

        let (tx, rx) = mpsc::channel::<Message>();
        let (pub_client, pub_channel, pub_host, server) = (client.clone(), channel.clone(), host.clone(), config.server.clone());
        let (pub_stop, states) = (stop.clone(), (config.prefix.clone(), config.state_ttl));
        let publisher = std::thread::Builder::new()
            .name("truckeefs-publish".into())
            .spawn(move || publisher(pub_client, conn, &pub_channel, &pub_host, &server, &states, rx, &pub_stop))
            .map_err(|e| format!("cannot start the publisher thread: {e}"))?;

        let locks = Arc::new(LockService::new(client.clone(), &config.prefix, &host, &config.server));
        locks.heartbeat().map_err(|e| format!("redis_host {}: {e}", config.server))?;
        let (beat, beat_stop) = (locks.clone(), stop.clone());
        let heartbeat = std::thread::Builder::new()
            .name("truckeefs-heartbeat".into())
            .spawn(move || {
                let mut failing = false;
                let mut beats = 0u32;
                let mut last_beat = std::time::Instant::now();
                while !beat_stop.load(std::sync::atomic::Ordering::Relaxed) {
                    std::thread::sleep(HEARTBEAT_EVERY);
                    beats = beats.wrapping_add(1);
                    if beats.is_multiple_of(ORPHAN_CHECK_EVERY) {
                        match beat.orphans() {
                            Ok(o) if !o.dead_sets.is_empty() => {
                                tracing::info!(sets = o.dead_sets.len(), "a host died holding files open; deleting those left without names");
                                collect_orphans();
                            }
                            Ok(_) => {}
                            Err(e) => tracing::debug!(error = %e, "cannot look for dead hosts' orphans"),
                        }
                    }
                    beat.renew_upload_leases();
                    let renewed = beat.heartbeat();
                    if let Ok(vanished) = renewed {
                        if vanished || last_beat.elapsed() >= HEARTBEAT_TTL {
                            // This host looked dead meanwhile, or the server lost its data:
                            // its open listings may be gone (see `LockService::relist_opens`).
                            if let Err(e) = beat.relist_opens() {
                                tracing::warn!(error = %e, "cannot list this host's open files again");
                            }
                        }
                        last_beat = std::time::Instant::now();
                    }
                    match renewed {
                        Ok(_) if failing => {
                            tracing::info!(server = %beat.server, "heartbeat renewed again");
                            failing = false;
                        }
                        Ok(_) => {}
                        Err(e) if !failing => {
                            tracing::warn!(server = %beat.server, error = %e, "cannot renew this host's heartbeat; other hosts may take its locks");
                            failing = true;
                        }
                        Err(_) => {}
                    }
                }
                beat.goodbye();
            })
            .map_err(|e| format!("cannot start the heartbeat thread: {e}"))?;

        let (sub_stop, sub_host, server) = (stop.clone(), host.clone(), config.server.clone());
        let starting = Arc::new(Starting::default());
        let first = starting.clone();
        let subscriber = std::thread::Builder::new()
            .name("truckeefs-subscribe".into())
            .spawn(move || {
                let deliveries = Deliveries { deliver, resync, starting: first };
                subscriber(client, &channel, &sub_host, &server, &sub_stop, &deliveries)
            })
            .map_err(|e| format!("cannot start the subscriber thread: {e}"))?;
        if !starting.wait(FIRST_SUBSCRIPTION) {
            tracing::warn!(server = %config.server, "not subscribed to other hosts' changes yet; going on without");
        }
        Ok(Coordinator { publish: Publisher(tx), locks, stop, threads: vec![publisher, subscriber, heartbeat], host })
    }

    /// Where record locks are checked against the other hosts.
    pub fn locks(&self) -> Arc<LockService> {
        self.locks.clone()
    }

    pub fn publisher(&self) -> Publisher {
        self.publish.clone()
    }

    /// This host's id in messages.
    pub fn host(&self) -> &str {
        &self.host
    }
}

impl Drop for Coordinator {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn publisher(
    client: redis::Client,
    mut conn: redis::Connection,
    channel: &str,
    host: &str,
    server: &str,
    (prefix, ttl): &(String, Duration),
    rx: mpsc::Receiver<Message>,
    stop: &std::sync::atomic::AtomicBool,
) {
    loop {
        let message = match rx.recv_timeout(POLL) {
            Ok(c) => c,
            // Stopping: everything queued before the stop was sent (the queue is empty).
            Err(mpsc::RecvTimeoutError::Timeout) if stop.load(std::sync::atomic::Ordering::Relaxed) => return,
            Err(mpsc::RecvTimeoutError::Timeout) => continue,
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        };
        let send = |conn: &mut redis::Connection| -> redis::RedisResult<()> {
            match &message {
                Message::Changes(changes) => conn.publish::<_, _, i64>(channel, encode(host, changes)).map(drop),
                Message::State { ino, process, state } => {
                    let key = format!("{prefix}{ino}:{}", process.name());
                    let secs = ttl.as_secs().max(1);
                    redis::pipe()
                        .cmd("SET").arg(&key).arg(*state as u8).arg("EX").arg(secs).ignore()
                        .cmd("SET").arg(format!("{key}_host")).arg(host).arg("EX").arg(secs).ignore()
                        .query::<()>(conn)
                }
                Message::Forget(ino) => {
                    let keys: Vec<String> = [Process::Read, Process::Write, Process::Sync, Process::Delete]
                        .iter()
                        .flat_map(|p| [format!("{prefix}{ino}:{}", p.name()), format!("{prefix}{ino}:{}_host", p.name())])
                        .collect();
                    conn.del::<_, ()>(keys)
                }
            }
        };
        // Retried on a fresh connection (the server may have restarted): a process state once,
        // changes until they go through (a host that misses one keeps a stale copy), unless
        // the mount is stopping.
        let mut failures = 0u32;
        while let Err(e) = send(&mut conn) {
            failures += 1;
            let changes = matches!(message, Message::Changes(_));
            if failures >= 2 && (!changes || stop.load(std::sync::atomic::Ordering::Relaxed)) {
                tracing::warn!(server, error = %e.category(), "cannot publish to other hosts");
                break;
            }
            if failures >= 2 {
                if failures == 2 {
                    tracing::warn!(server, error = %e.category(), "cannot publish to other hosts; retrying");
                }
                std::thread::sleep(RECONNECT);
            }
            if let Ok(fresh) = client.get_connection_with_timeout(Duration::from_secs(5)) {
                conn = fresh;
            }
        }
    }
}

/// The mount's start waiting for the first subscription (see [`Starting::subscribed`]).
#[derive(Default)]
struct Starting {
    /// `Some(true)`: subscribed while the start waited; `Some(false)`: the start stopped waiting.
    outcome: Mutex<Option<bool>>,
    done: std::sync::Condvar,
}

impl Starting {
    /// The subscriber is subscribed. Returns whether changes may have been missed: true unless
    /// this is the first subscription and the start is still waiting for it (nothing is cached
    /// before the start returns).
    fn subscribed(&self) -> bool {
        let mut outcome = self.outcome.lock().unwrap_or_else(|e| e.into_inner());
        if outcome.is_some() {
            return true;
        }
        *outcome = Some(true);
        self.done.notify_all();
        false
    }

    /// Waits up to `limit` for the first subscription; false if it did not come (it then
    /// counts as a reconnection).
    fn wait(&self, limit: Duration) -> bool {
        let outcome = self.outcome.lock().unwrap_or_else(|e| e.into_inner());
        let (mut outcome, _) = self
            .done
            .wait_timeout_while(outcome, limit, |o| o.is_none())
            .unwrap_or_else(|e| e.into_inner());
        *outcome.get_or_insert(false)
    }
}

/// Where the subscriber hands what it hears.
struct Deliveries<D, S> {
    deliver: D,
    resync: S,
    starting: Arc<Starting>,
}

fn subscriber<D: Fn(Changes), S: Fn()>(
    client: redis::Client,
    channel: &str,
    host: &str,
    server: &str,
    stop: &std::sync::atomic::AtomicBool,
    to: &Deliveries<D, S>,
) {
    use std::sync::atomic::Ordering;
    let mut warned = false;
    while !stop.load(Ordering::Relaxed) {
        let mut conn = match client.get_connection_with_timeout(Duration::from_secs(5)) {
            Ok(c) => c,
            Err(e) => {
                if !warned {
                    tracing::warn!(server, error = %e.category(), "coordination server unreachable; retrying");
                    warned = true;
                }
                std::thread::sleep(RECONNECT);
                continue;
            }
        };
        if conn.set_read_timeout(Some(POLL)).is_err() {
            std::thread::sleep(RECONNECT);
            continue;
        }
        let mut pubsub = conn.as_pubsub();
        if pubsub.subscribe(channel).is_err() {
            std::thread::sleep(RECONNECT);
            continue;
        }
        if warned {
            tracing::info!(server, "coordination server reachable again");
            warned = false;
        }
        // Whatever was published while this host was not subscribed is lost: after this point
        // every change reaches it, so what it cached before is read again.
        if to.starting.subscribed() {
            tracing::info!(server, "subscribed again; dropping every cached copy of the shared state");
            (to.resync)();
        }
        while !stop.load(Ordering::Relaxed) {
            match pubsub.get_message() {
                Ok(msg) => {
                    let Ok(payload) = msg.get_payload::<String>() else { continue };
                    match decode(&payload) {
                        Some((from, changes)) if from != host => (to.deliver)(changes),
                        Some(_) => {}
                        None => tracing::warn!(server, "ignored a malformed message on the changes channel"),
                    }
                }
                Err(e) if e.is_timeout() => {}
                Err(e) => {
                    tracing::warn!(server, error = %e.category(), "coordination connection lost; reconnecting");
                    break;
                }
            }
        }
    }
}

/// Deletes every key that starts with `prefix` (SCAN, never FLUSHALL/FLUSHDB).
fn reset_prefix(conn: &mut redis::Connection, prefix: &str) -> Result<(), String> {
    if prefix.is_empty() {
        return Err("refusing to clear an empty redis_prefix (that would be every key)".into());
    }
    let pattern = format!("{}*", glob_escape(prefix));
    let keys: Vec<String> = conn.scan_match::<_, String>(&pattern).map_err(|e| e.category().to_string())?.collect();
    for chunk in keys.chunks(500) {
        let _: i64 = conn.del(chunk).map_err(|e| e.category().to_string())?;
    }
    Ok(())
}

fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A host id unique among live mounts: the machine's name, the process id and some randomness.
fn host_id() -> String {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let random = crate::objects::random_hex(8).unwrap_or_else(|_| "0".repeat(16));
    format!("{}/{}/{random}", name.trim(), std::process::id())
}

pub(crate) fn encode(host: &str, c: &Changes) -> String {
    let entries: Vec<serde_json::Value> =
        c.entries.iter().map(|(p, n)| serde_json::json!([p, hex(n)])).collect();
    serde_json::json!({ "h": host, "i": c.inodes, "e": entries }).to_string()
}

pub(crate) fn decode(s: &str) -> Option<(String, Changes)> {
    let v: serde_json::Value = serde_json::from_str(s).ok()?;
    let host = v.get("h")?.as_str()?.to_string();
    let inodes = v.get("i")?.as_array()?.iter().map(|x| x.as_u64()).collect::<Option<Vec<Ino>>>()?;
    let mut entries = Vec::new();
    for e in v.get("e")?.as_array()? {
        let pair = e.as_array()?;
        let [parent, name] = pair.as_slice() else { return None };
        entries.push((parent.as_u64()?, unhex(name.as_str()?)?));
    }
    Some((host, Changes { inodes, entries }))
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

// ----- files kept open after their last name went -----

/// The orphan sets and open sets in the coordination server (both protect files without names
/// while their host lives).
pub(crate) struct Orphans {
    /// Held by live hosts: not to be deleted.
    pub(crate) held: std::collections::HashSet<Ino>,
    /// The sets of dead hosts (their keys) and what they list: those may go, then the sets.
    pub(crate) dead_sets: Vec<(String, Vec<Ino>)>,
}

impl Orphans {
    /// The dead hosts' sets of which nothing is left among `orphans` (the store's files without
    /// names): those may be forgotten. A set whose files are not all deleted yet stays, so that
    /// a deletion that failed (or that the collecting host skipped, or died during) is tried
    /// again at the next check.
    pub(crate) fn done_sets(&self, orphans: &std::collections::HashSet<Ino>) -> Vec<String> {
        self.dead_sets
            .iter()
            .filter(|(_, members)| !members.iter().any(|i| orphans.contains(i)))
            .map(|(key, _)| key.clone())
            .collect()
    }
}

impl LockService {
    fn orphans_key(&self) -> String {
        format!("{}orphans:{}", self.prefix, self.host)
    }

    /// This host keeps `ino` open after its last name goes (said before that is committed).
    pub(crate) fn hold_orphan(&self, ino: Ino) -> Result<(), String> {
        self.with_conn(|c| c.sadd::<_, _, ()>(self.orphans_key(), ino))
    }

    /// This host deleted `ino`.
    pub(crate) fn drop_orphan(&self, ino: Ino) -> Result<(), String> {
        self.with_conn(|c| c.srem::<_, _, ()>(self.orphans_key(), ino))
    }

    /// Every host's orphan set and open set, split by whether the host lives.
    pub(crate) fn orphans(&self) -> Result<Orphans, String> {
        self.with_conn(|c| {
            let mut out = Orphans { held: std::collections::HashSet::new(), dead_sets: Vec::new() };
            for kind in ["orphans:", "opens:"] {
                let pattern = format!("{}{kind}*", glob_escape(&self.prefix));
                let set_prefix = format!("{}{kind}", self.prefix);
                let keys: Vec<String> = c.scan_match::<_, String>(&pattern)?.collect();
                for key in keys {
                    let Some(host) = key.strip_prefix(&set_prefix) else { continue };
                    let alive = self.lives(c, host)?;
                    let members: Vec<Ino> = c.smembers(&key)?;
                    if alive {
                        out.held.extend(members);
                    } else {
                        out.dead_sets.push((key, members));
                    }
                }
            }
            Ok(out)
        })
    }

    /// Whether a live host (this one counts as live) lists `ino` open (`<prefix>openers:<ino>`,
    /// which outlives a host's lapse, when its open set may have been forgotten).
    pub(crate) fn held_open(&self, ino: Ino) -> Result<bool, String> {
        self.with_conn(|c| {
            let hosts: Vec<String> = c.smembers(self.openers_key(ino))?;
            for h in hosts {
                if self.lives(c, &h)? {
                    return Ok(true);
                }
            }
            Ok(false)
        })
    }

    /// Whether `host` lives: this one, or one whose heartbeat key exists.
    fn lives(&self, c: &mut redis::Connection, host: &str) -> redis::RedisResult<bool> {
        if host == self.host {
            return Ok(true);
        }
        c.exists(format!("{}{host}", self.host_prefix()))
    }

    fn unlinked_key(&self, ino: Ino) -> String {
        format!("{}unlinked:{ino}", self.prefix)
    }

    fn opens_key(&self) -> String {
        format!("{}opens:{}", self.prefix, self.host)
    }

    fn openers_key(&self, ino: Ino) -> String {
        format!("{}openers:{ino}", self.prefix)
    }

    fn reaping_key(&self, ino: Ino) -> String {
        format!("{}reaping:{ino}", self.prefix)
    }

    /// `ino`, reaped by this host, is deleted: its mark as being deleted may go (an open
    /// elsewhere finds no row now).
    pub(crate) fn forget_reaping(&self, ino: Ino) -> Result<(), String> {
        self.with_conn(|c| c.del::<_, ()>(self.reaping_key(ino)))
    }

    /// After this host's heartbeat lapsed (a paused process, a lost connection), the others
    /// may have forgotten its open set as a dead host's; after the server restarted without
    /// its data, every listing is gone. Both are listed again: the open set, so that the files
    /// without names it holds are still collected should it die later, and each file's
    /// `openers`, so that no other host deletes a file it has open at an unlink.
    fn relist_opens(&self) -> Result<(), String> {
        let listed: Vec<Ino> = lock(&self.listed).iter().copied().collect();
        if listed.is_empty() {
            return Ok(());
        }
        self.with_conn(|c| {
            let mut pipe = redis::pipe();
            for ino in &listed {
                pipe.sadd(self.opens_key(), ino).ignore();
                pipe.sadd(self.openers_key(*ino), &self.host).ignore();
            }
            pipe.query::<()>(c)
        })?;
        tracing::info!(files = listed.len(), "listed this host's open files again in the coordination server");
        Ok(())
    }

    /// `LockRequest::Open`: lists `ino` as open here unless it is being deleted (`NotFound`).
    fn list_open(&self, ino: Ino) -> Result<bool, String> {
        let listed = self.with_conn(|c| {
            redis::Script::new(OPEN)
                .key(self.reaping_key(ino))
                .key(self.opens_key())
                .key(self.openers_key(ino))
                .arg(&self.host)
                .arg(ino)
                .invoke::<i64>(c)
        })? == 1;
        if listed {
            lock(&self.listed).insert(ino);
        }
        Ok(listed)
    }

    /// `LockRequest::Reap` (`close`: `LockRequest::Close`): see [`REAP`].
    fn reap(&self, ino: Ino, close: bool) -> Result<bool, String> {
        let held: i64 = self.with_conn(|c| {
            redis::Script::new(REAP)
                .key(self.opens_key())
                .key(self.openers_key(ino))
                .key(self.orphans_key())
                .key(self.reaping_key(ino))
                .key(self.unlinked_key(ino))
                .arg(&self.host)
                .arg(ino)
                .arg(self.host_prefix())
                .arg(REAPING_TTL.as_millis() as u64)
                .arg(if close { "close" } else { "reap" })
                .invoke::<i64>(c)
        })?;
        lock(&self.listed).remove(&ino);
        Ok(held == 1)
    }

    /// The hosts whose heartbeat lives, this one first.
    pub(crate) fn hosts(&self) -> Result<Vec<String>, String> {
        let pattern = format!("{}host:*", glob_escape(&self.prefix));
        let prefix = self.host_prefix();
        let mut hosts: Vec<String> = self.with_conn(|c| {
            Ok(c.scan_match::<_, String>(&pattern)?.filter_map(|k| k.strip_prefix(&prefix).map(str::to_string)).collect())
        })?;
        hosts.sort();
        hosts.retain(|h| *h != self.host);
        hosts.insert(0, self.host.clone());
        Ok(hosts)
    }

    /// Forgets dead hosts' orphan and open sets (once what they listed is deleted), and what
    /// refers to them: the host's place in each listed file's `openers` set, and the
    /// `unlinked` marker of each listed file (a file left without names is deleted by now;
    /// the marker of one whose last holder died would stay for ever).
    pub(crate) fn forget_sets(&self, keys: &[String]) -> Result<(), String> {
        let opens_prefix = format!("{}opens:", self.prefix);
        self.with_conn(|c| {
            for key in keys {
                let members: Vec<Ino> = c.smembers(key)?;
                let mut pipe = redis::pipe();
                for ino in members {
                    if let Some(host) = key.strip_prefix(&opens_prefix) {
                        pipe.srem(self.openers_key(ino), host).ignore();
                    }
                    pipe.del(self.unlinked_key(ino)).ignore();
                }
                pipe.del(key).ignore();
                pipe.query::<()>(c)?;
            }
            Ok(())
        })
    }
}

/// Lists KEYS[3]'s inode ARGV[2] as open by host ARGV[1] in its open set KEYS[2] and the
/// file's set of hosts KEYS[3], unless the file is being deleted (KEYS[1] exists): 1 listed,
/// 0 refused.
const OPEN: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('SADD', KEYS[2], ARGV[2])
redis.call('SADD', KEYS[3], ARGV[1])
return 1
"#;

/// Host ARGV[1] has no handle of inode ARGV[2] any more: it leaves its open set KEYS[1] and
/// the file's hosts KEYS[2], and asks whether another host of KEYS[2] lives (its heartbeat key
/// ARGV[3]..host exists). Hosts whose heartbeat lapsed stay listed: one that comes back still
/// holds its files, unless one was deleted meanwhile.
///
/// ARGV[5] `reap`: the file has no names, and ARGV[1] deletes it unless a live host holds it.
/// If one does, the last host to close it deletes it: the file is marked as unlinked (KEYS[5])
/// and leaves ARGV[1]'s orphan set KEYS[3] (the holders' listings protect it now); answer 1.
/// Otherwise it is marked as being deleted by ARGV[1] (KEYS[4], expiring after ARGV[4] ms,
/// which `OPEN` refuses) and its list of hosts goes; answer 0.
///
/// ARGV[5] `close`: a close of a file ARGV[1] believes named. It leaves ARGV[1]'s orphan set
/// too (a listing for a transaction that did not commit). Answer 0 if the file was unlinked
/// while held and no live host holds it now: ARGV[1] was its last holder and deletes it (with a
/// `reap` of its own); else 1.
const REAP: &str = r#"
redis.call('SREM', KEYS[1], ARGV[2])
redis.call('SREM', KEYS[2], ARGV[1])
local held = false
for _, h in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  if redis.call('EXISTS', ARGV[3] .. h) == 1 then
    held = true
    break
  end
end
if ARGV[5] == 'close' then
  redis.call('SREM', KEYS[3], ARGV[2])
  if held or redis.call('EXISTS', KEYS[5]) == 0 then return 1 end
  return 0
end
if held then
  redis.call('SREM', KEYS[3], ARGV[2])
  redis.call('SET', KEYS[5], ARGV[1])
  return 1
end
redis.call('SET', KEYS[4], ARGV[1], 'PX', ARGV[4])
redis.call('DEL', KEYS[5], KEYS[2])
return 0
"#;

// ----- record locks across hosts -----

/// This host's record locks as the other hosts see them: per inode a hash
/// `<prefix>locks:<ino>` from host id to a JSON list `[[start, end, type, pid], ...]` (`end` -1
/// for "to the end of the file", type 0 read / 1 write). A host counts while its heartbeat key
/// `<prefix>host:<id>` lives; the entries of dead hosts are removed when met.
pub struct LockService {
    client: redis::Client,
    prefix: String,
    host: String,
    server: String,
    conns: Mutex<Vec<redis::Connection>>,
    /// The fencing token of this host's latest grant of record locks, per inode it holds locks on.
    lock_tokens: Mutex<std::collections::BTreeMap<Ino, u64>>,
    /// The upload leases this host holds (renewed by the heartbeat thread), by inode: the token.
    leases: Mutex<std::collections::BTreeMap<Ino, u64>>,
    /// Uploads waiting for another host's lease, by inode.
    lease_waits: Mutex<std::collections::BTreeMap<Ino, LeaseWait>>,
    /// The files this host lists as open (`Config::shared_opens`), to list again after a lapse.
    listed: Mutex<std::collections::BTreeSet<Ino>>,
    /// The highest fencing token this host knows was used (the store's highest fence at the
    /// mount or after a refusal, and every lease token it took): a new token is always above
    /// it, even from a counter that went with the coordination server's data.
    floor: std::sync::atomic::AtomicU64,
}

/// An upload waiting for the lease of another host.
#[derive(Clone, Debug)]
pub struct LeaseWait {
    /// The host holding it, as its lease names it.
    pub holder: String,
    /// That host's fencing token.
    pub token: u64,
    pub since: std::time::Instant,
}

/// Takes `want` unless another live host holds a conflicting lock; then records ARGV[5] as this
/// host's locks. Returns the first conflicting lock (JSON), or (taken) the grant's fencing token
/// from the counter KEYS[2], or false (a check only).
const ACQUIRE: &str = r#"
local function conflict(key, me, start, stop, typ, hostprefix)
  local all = redis.call('HGETALL', key)
  for i = 1, #all, 2 do
    local h = all[i]
    if h ~= me then
      if redis.call('EXISTS', hostprefix .. h) == 0 then
        redis.call('HDEL', key, h)
      else
        for _, l in ipairs(cjson.decode(all[i + 1])) do
          local lstop = l[2]
          if lstop < 0 then lstop = math.huge end
          if l[1] <= stop and start <= lstop and (l[3] == 1 or typ == 1) then
            return cjson.encode(l)
          end
        end
      end
    end
  end
  return false
end
local stop = tonumber(ARGV[3])
if stop < 0 then stop = math.huge end
local found = conflict(KEYS[1], ARGV[1], tonumber(ARGV[2]), stop, tonumber(ARGV[4]), ARGV[6])
if found then return found end
if ARGV[7] == 'check' then return false end
if ARGV[5] == '[]' then
  redis.call('HDEL', KEYS[1], ARGV[1])
  return false
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[5])
return redis.call('INCR', KEYS[2])
"#;

impl LockService {
    fn new(client: redis::Client, prefix: &str, host: &str, server: &str) -> LockService {
        LockService {
            client,
            prefix: prefix.to_string(),
            host: host.to_string(),
            server: server.to_string(),
            conns: Mutex::new(Vec::new()),
            lock_tokens: Mutex::new(Default::default()),
            leases: Mutex::new(Default::default()),
            lease_waits: Mutex::new(Default::default()),
            listed: Mutex::new(Default::default()),
            floor: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Renews this host's heartbeat. `Ok(true)`: its key was gone (it expired, or the server
    /// restarted without its data), so what this host listed may be gone too.
    fn heartbeat(&self) -> Result<bool, String> {
        self.with_conn(|c| {
            let (existed,): (bool,) = redis::pipe()
                .cmd("EXISTS")
                .arg(self.host_key())
                .cmd("SET")
                .arg(self.host_key())
                .arg(1)
                .arg("PX")
                .arg(HEARTBEAT_TTL.as_millis() as u64)
                .ignore()
                .query(c)?;
            Ok(!existed)
        })
    }

    /// At unmount: this host's locks and heartbeat go at once.
    fn goodbye(&self) {
        let _ = self.with_conn(|c| redis::cmd("DEL").arg(self.host_key()).query::<()>(c));
    }

    fn host_key(&self) -> String {
        format!("{}{}", self.host_prefix(), self.host)
    }

    /// Heartbeat keys are this followed by a host id.
    fn host_prefix(&self) -> String {
        format!("{}host:", self.prefix)
    }

    fn locks_key(&self, ino: Ino) -> String {
        format!("{}locks:{ino}", self.prefix)
    }

    fn with_conn<T>(&self, f: impl FnOnce(&mut redis::Connection) -> redis::RedisResult<T>) -> Result<T, String> {
        let pooled = self.conns.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let mut conn = match pooled {
            Some(c) => c,
            None => self
                .client
                .get_connection_with_timeout(Duration::from_secs(5))
                .map_err(|e| format!("cannot connect: {}", e.category()))?,
        };
        let r = f(&mut conn).map_err(|e| e.category().to_string());
        if r.is_ok() {
            self.conns.lock().unwrap_or_else(|e| e.into_inner()).push(conn);
        }
        r
    }

    /// Executes one of the core's lock requests.
    pub fn execute(&self, req: &LockRequest) -> IoResult {
        let failed = |e: String| IoError::new(IoErrorKind::Other, format!("locks on redis_host {}: {e}", self.server));
        match req {
            LockRequest::Publish { ino, held } => {
                if held.is_empty() {
                    lock(&self.lock_tokens).remove(ino);
                }
                self.with_conn(|c| {
                    if held.is_empty() {
                        c.hdel::<_, _, ()>(self.locks_key(*ino), &self.host)
                    } else {
                        c.hset::<_, _, _, ()>(self.locks_key(*ino), &self.host, encode_locks(held))
                    }
                })
                .map(|()| IoReply::Done)
                .map_err(failed)
            }
            LockRequest::Acquire { ino, want, held } => self.run(*ino, want, Some(held)).map_err(failed),
            LockRequest::Query { ino, want } => self.run(*ino, want, None).map_err(failed),
            LockRequest::Open { ino } => match self.list_open(*ino).map_err(failed)? {
                true => Ok(IoReply::Done),
                false => Err(IoError::new(IoErrorKind::NotFound, format!("inode {ino} is being deleted by another host"))),
            },
            LockRequest::Close { ino } => self.reap(*ino, true).map(IoReply::Held).map_err(failed),
            LockRequest::Reap { ino } => self.reap(*ino, false).map(IoReply::Held).map_err(failed),
        }
    }

    fn run(&self, ino: Ino, want: &LockRange, held: Option<&Vec<LockRange>>) -> Result<IoReply, String> {
        let answer: redis::Value = self.with_conn(|c| {
            redis::Script::new(ACQUIRE)
                .key(self.locks_key(ino))
                .key(self.fence_key())
                .arg(&self.host)
                .arg(want.start)
                .arg(end_of(want.end))
                .arg(i32::from(want.typ == libc::F_WRLCK))
                .arg(held.map(|h| encode_locks(h)).unwrap_or_else(|| "[]".into()))
                .arg(self.host_prefix())
                .arg(if held.is_some() { "take" } else { "check" })
                .invoke(c)
        })?;
        let conflict = match answer {
            redis::Value::Nil => None,
            redis::Value::Int(token) => {
                lock(&self.lock_tokens).insert(ino, token.max(0) as u64);
                None
            }
            redis::Value::BulkString(json) => Some(
                std::str::from_utf8(&json)
                    .ok()
                    .and_then(decode_lock)
                    .ok_or("a malformed lock entry in the lock table")?,
            ),
            _ => return Err("an unexpected answer from the lock script".into()),
        };
        Ok(IoReply::LockConflict(conflict))
    }

    /// The record locks this host holds, by inode, with the fencing token of their latest grant.
    pub fn lock_tokens(&self) -> Vec<(Ino, u64)> {
        lock(&self.lock_tokens).iter().map(|(i, t)| (*i, *t)).collect()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

// ----- upload leases -----

/// Takes the lease KEYS[1] for host ARGV[1] for ARGV[2] ms with the next token of the counter
/// KEYS[2], unless another host holds it (a lease of this host's own is stale: one upload per
/// file runs at a time here, and it holds none). The token is above ARGV[3], the highest this
/// host knows was used (the counter is raised past it when it is lower: the server lost its
/// data since). Returns `{token, "", 0}` when taken, else
/// `{0, "<token> <holder>", pttl}`.
const TAKE_LEASE: &str = r#"
local cur = redis.call('GET', KEYS[1])
if cur then
  local sp = string.find(cur, ' ', 1, true)
  local holder = cur
  if sp then holder = string.sub(cur, sp + 1) end
  if holder ~= ARGV[1] then
    return {0, cur, redis.call('PTTL', KEYS[1])}
  end
end
local token = redis.call('INCR', KEYS[2])
local floor = tonumber(ARGV[3])
if token <= floor then
  token = floor + 1
  redis.call('SET', KEYS[2], token)
end
redis.call('SET', KEYS[1], string.format('%d', token) .. ' ' .. ARGV[1], 'PX', ARGV[2])
return {token, '', 0}
"#;

/// Extends the lease KEYS[1] to ARGV[2] ms if it still holds ARGV[1]. Returns 1, or 0 if lost.
const RENEW_LEASE: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"#;

/// Deletes the lease KEYS[1] if it still holds ARGV[1].
const RELEASE_LEASE: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"#;

/// Raises the counter KEYS[1] to at least ARGV[1].
const RAISE_FENCE: &str = r#"
local cur = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
if cur < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], ARGV[1])
end
return 0
"#;

/// An upload lease this host holds: give it back with [`LockService::release_upload_lease`].
#[derive(Debug, PartialEq, Eq)]
pub struct UploadLease {
    pub ino: Ino,
    /// Its fencing token, checked by the metadata store at the commit.
    pub token: u64,
}

impl LockService {
    fn fence_key(&self) -> String {
        format!("{}fence", self.prefix)
    }

    fn upload_key(&self, ino: Ino) -> String {
        format!("{}upload:{ino}", self.prefix)
    }

    fn lease_value(&self, token: u64) -> String {
        format!("{token} {}", self.host)
    }

    /// Takes the upload lease of `ino`, waiting while another host holds it (until that host
    /// releases it, or its lease expires: at most [`LEASE_TTL`] after it died or stopped). An
    /// error (the coordination server unreachable) ends the wait: the upload fails and is
    /// retried later, as after any failed upload.
    pub fn take_upload_lease(&self, ino: Ino) -> Result<UploadLease, String> {
        let result = loop {
            let answer: Result<(u64, String, i64), String> = self.with_conn(|c| {
                redis::Script::new(TAKE_LEASE)
                    .key(self.upload_key(ino))
                    .key(self.fence_key())
                    .arg(&self.host)
                    .arg(LEASE_TTL.as_millis() as u64)
                    .arg(self.floor.load(std::sync::atomic::Ordering::Relaxed))
                    .invoke(c)
            });
            match answer {
                Ok((token, _, _)) if token > 0 => {
                    self.floor.fetch_max(token, std::sync::atomic::Ordering::Relaxed);
                    lock(&self.leases).insert(ino, token);
                    break Ok(UploadLease { ino, token });
                }
                Ok((_, holder, _)) => {
                    let (token, holder) = holder.split_once(' ').unwrap_or(("0", &holder));
                    let mut waits = lock(&self.lease_waits);
                    let first = !waits.contains_key(&ino);
                    let wait = waits.entry(ino).or_insert_with(|| LeaseWait {
                        holder: String::new(),
                        token: 0,
                        since: std::time::Instant::now(),
                    });
                    (wait.holder, wait.token) = (holder.to_string(), token.parse().unwrap_or(0));
                    drop(waits);
                    if first {
                        tracing::info!(ino, holder, "upload waits for another host's upload lease");
                    }
                    std::thread::sleep(LEASE_RETRY);
                }
                Err(e) => break Err(format!("upload lease on redis_host {}: {e}", self.server)),
            }
        };
        lock(&self.lease_waits).remove(&ino);
        result
    }

    /// Gives a lease back (after the commit it fenced, or when no commit came).
    pub fn release_upload_lease(&self, lease: UploadLease) {
        self.forget_lease(lease.ino, lease.token);
        let released = self.with_conn(|c| {
            redis::Script::new(RELEASE_LEASE)
                .key(self.upload_key(lease.ino))
                .arg(self.lease_value(lease.token))
                .invoke::<i64>(c)
        });
        if let Err(e) = released {
            // It expires by itself.
            tracing::warn!(ino = lease.ino, server = %self.server, error = %e, "cannot release an upload lease");
        }
    }

    /// Stops renewing the lease of `ino` with `token` (the file's next upload may hold a newer
    /// one already, which stays).
    fn forget_lease(&self, ino: Ino, token: u64) {
        let mut leases = lock(&self.leases);
        if leases.get(&ino) == Some(&token) {
            leases.remove(&ino);
        }
    }

    /// Extends every lease this host holds (the heartbeat thread, every heartbeat). A lease found
    /// taken by another host (this one was paused past it) is no longer renewed: the commit it
    /// was for fails on its stale token, and the core commits the object again on the row read
    /// afresh.
    fn renew_upload_leases(&self) {
        let held: Vec<(Ino, u64)> = lock(&self.leases).iter().map(|(i, t)| (*i, *t)).collect();
        for (ino, token) in held {
            let renewed = self.with_conn(|c| {
                redis::Script::new(RENEW_LEASE)
                    .key(self.upload_key(ino))
                    .arg(self.lease_value(token))
                    .arg(LEASE_TTL.as_millis() as u64)
                    .invoke::<i64>(c)
            });
            match renewed {
                Ok(1) => {}
                Ok(_) => {
                    tracing::warn!(ino, token, "this host's upload lease expired while it was held (paused?); the commit will be refused if another host's came after it");
                    self.forget_lease(ino, token);
                }
                Err(e) => tracing::debug!(ino, error = %e, "cannot renew an upload lease"),
            }
        }
    }

    /// Makes the token counter count on from at least `floor` (the highest token the metadata
    /// store holds): after the coordination server lost its data, or a `reset_redis`, tokens
    /// would otherwise start again below the fences of the rows, and every upload of those
    /// files would be refused.
    pub fn raise_fence(&self, floor: u64) -> Result<(), String> {
        self.floor.fetch_max(floor, std::sync::atomic::Ordering::Relaxed);
        if floor == 0 {
            return Ok(());
        }
        self.with_conn(|c| redis::Script::new(RAISE_FENCE).key(self.fence_key()).arg(floor).invoke::<i64>(c)).map(drop)
    }

    /// The upload leases this host holds, by inode, with their tokens.
    pub fn upload_leases(&self) -> Vec<(Ino, u64)> {
        lock(&self.leases).iter().map(|(i, t)| (*i, *t)).collect()
    }

    /// The uploads waiting for another host's lease, by inode.
    pub fn lease_waits(&self) -> Vec<(Ino, LeaseWait)> {
        lock(&self.lease_waits).iter().map(|(i, w)| (*i, w.clone())).collect()
    }
}

/// A lock's end for the table: -1 for "to the end of the file" (the kernel's `OFFSET_MAX`, or
/// more), which Lua's doubles could not hold exactly.
fn end_of(end: u64) -> i64 {
    if end >= i64::MAX as u64 {
        -1
    } else {
        end as i64
    }
}

/// A number of the table as cjson wrote it back: an integer, or a double for large ones.
fn table_number(v: &serde_json::Value) -> Option<i64> {
    v.as_i64().or_else(|| v.as_f64().filter(|f| f.is_finite()).map(|f| f as i64))
}

fn encode_locks(locks: &[LockRange]) -> String {
    let v: Vec<serde_json::Value> = locks
        .iter()
        .map(|l| serde_json::json!([l.start, end_of(l.end), i32::from(l.typ == libc::F_WRLCK), l.pid]))
        .collect();
    serde_json::Value::Array(v).to_string()
}

fn decode_lock(s: &str) -> Option<LockRange> {
    let v: Vec<serde_json::Value> = serde_json::from_str(s).ok()?;
    let [start, end, typ, pid] = v.as_slice() else { return None };
    let (start, end) = (table_number(start)?, table_number(end)?);
    Some(LockRange {
        start: start.max(0) as u64,
        // The kernel's "to the end of the file" (it refuses anything past OFFSET_MAX).
        end: if end < 0 { i64::MAX as u64 } else { end as u64 },
        typ: if table_number(typ)? == 1 { libc::F_WRLCK } else { libc::F_RDLCK },
        pid: table_number(pid).unwrap_or(0).clamp(0, i64::from(u32::MAX)) as u32,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_garbage_is_refused() {
        let c = Changes { inodes: vec![1, 42], entries: vec![(1, b"a\xffb".to_vec()), (7, vec![])] };
        let m = encode("h1", &c);
        assert_eq!(decode(&m), Some(("h1".to_string(), c)));
        for bad in ["", "{}", "[1]", r#"{"h":"x","i":[-1],"e":[]}"#, r#"{"h":"x","i":[],"e":[[1,"abc"]]}"#,
            r#"{"h":"x","i":[],"e":[[1]]}"#, r#"{"h":"x","i":[],"e":[[1,"zz"]]}"#] {
            assert_eq!(decode(bad), None, "{bad}");
        }
    }

    #[test]
    fn lock_entries_as_cjson_writes_them() {
        assert_eq!(
            decode_lock("[0,-1,1,42]"),
            Some(LockRange { start: 0, end: i64::MAX as u64, typ: libc::F_WRLCK, pid: 42 })
        );
        assert_eq!(
            decode_lock("[10,9.2233720368548e+18,0,7]").map(|l| (l.start, l.typ)),
            Some((10, libc::F_RDLCK))
        );
        assert_eq!(decode_lock("[1,2,3]"), None);
        assert_eq!(decode_lock("{}"), None);
        assert_eq!(end_of(i64::MAX as u64), -1);
        assert_eq!(end_of(u64::MAX), -1);
        assert_eq!(end_of(99), 99);
    }

    #[test]
    fn every_subscription_but_the_first_during_the_start_resyncs() {
        // Subscribed while the start waits: nothing was cached yet.
        let s = Arc::new(Starting::default());
        let sub = s.clone();
        let t = std::thread::spawn(move || sub.subscribed());
        assert!(s.wait(Duration::from_secs(10)));
        assert!(!t.join().unwrap(), "the first subscription during the start");
        assert!(s.subscribed(), "a reconnection");
        assert!(s.subscribed(), "and the next one");
        // The start gave up waiting: the first subscription may come after requests cached
        // state, so it resyncs too.
        let s = Starting::default();
        assert!(!s.wait(Duration::from_millis(10)));
        assert!(s.subscribed());
    }

    #[test]
    fn a_dead_hosts_orphan_set_goes_once_nothing_it_lists_is_left() {
        let o = Orphans {
            held: [7].into(),
            dead_sets: vec![("p:orphans:a".into(), vec![1, 2]), ("p:orphans:b".into(), vec![3]), ("p:orphans:c".into(), vec![])],
        };
        // 2 is still a file without names (its deletion failed, say): set a stays for the next check.
        assert_eq!(o.done_sets(&[2, 7].into()), ["p:orphans:b", "p:orphans:c"]);
        assert_eq!(o.done_sets(&[7].into()), ["p:orphans:a", "p:orphans:b", "p:orphans:c"]);
    }

    #[test]
    fn glob_characters_in_the_prefix_are_literal() {
        assert_eq!(glob_escape("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
    }
}
