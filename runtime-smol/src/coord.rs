//! Coordination between hosts that share the stores, through Redis publish/subscribe: after
//! each committed transaction a host publishes what it changed (`Txn::changes`) on the channel
//! `<prefix>changes`; every other host feeds that to its core (`Core::handle_invalidation`), which
//! drops its cached copies and the kernel's.
//!
//! Messages are JSON: `{"h": "<host id>", "i": [ino, ...], "e": [[parent, "<name hex>"], ...]}`.
//! A host ignores its own. Delivery is best effort: a host that was disconnected may have missed
//! changes, which is why an open on a multi-host mount re-reads its inode anyway.

use redis::Commands;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;
use truckeefs_core::{Changes, Ino};

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
}

impl std::fmt::Debug for CoordConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CoordConfig").field("server", &self.server).field("prefix", &self.prefix).finish()
    }
}

/// How long a blocked read of the subscription waits before checking whether to stop.
const POLL: Duration = Duration::from_millis(500);
/// Wait between reconnection attempts.
const RECONNECT: Duration = Duration::from_secs(1);

/// A running coordination link: a publisher thread and a subscriber thread. Dropping it stops
/// both (after sending what was queued).
pub struct Coordinator {
    publish: Publisher,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    host: String,
}

/// Queues changes for the other hosts; cheap to clone, never blocks on the network.
#[derive(Clone)]
pub struct Publisher(mpsc::Sender<Changes>);

impl Publisher {
    pub fn publish(&self, changes: Changes) {
        let _ = self.0.send(changes);
    }
}

impl Coordinator {
    /// Connects (an error here is one line naming the server), clears the prefix if asked, and
    /// starts delivering other hosts' changes to `deliver`.
    pub fn start(
        config: &CoordConfig,
        deliver: impl Fn(Changes) + Send + 'static,
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

        let (tx, rx) = mpsc::channel::<Changes>();
        let (pub_client, pub_channel, pub_host, server) = (client.clone(), channel.clone(), host.clone(), config.server.clone());
        let pub_stop = stop.clone();
        let publisher = std::thread::Builder::new()
            .name("truckeefs-publish".into())
            .spawn(move || publisher(pub_client, conn, &pub_channel, &pub_host, &server, rx, &pub_stop))
            .map_err(|e| format!("cannot start the publisher thread: {e}"))?;

        let (sub_stop, sub_host, server) = (stop.clone(), host.clone(), config.server.clone());
        let subscriber = std::thread::Builder::new()
            .name("truckeefs-subscribe".into())
            .spawn(move || subscriber(client, &channel, &sub_host, &server, &sub_stop, deliver))
            .map_err(|e| format!("cannot start the subscriber thread: {e}"))?;
        Ok(Coordinator { publish: Publisher(tx), stop, threads: vec![publisher, subscriber], host })
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

fn publisher(
    client: redis::Client,
    mut conn: redis::Connection,
    channel: &str,
    host: &str,
    server: &str,
    rx: mpsc::Receiver<Changes>,
    stop: &std::sync::atomic::AtomicBool,
) {
    loop {
        let changes = match rx.recv_timeout(POLL) {
            Ok(c) => c,
            // Stopping: everything queued before the stop was sent (the queue is empty).
            Err(mpsc::RecvTimeoutError::Timeout) if stop.load(std::sync::atomic::Ordering::Relaxed) => return,
            Err(mpsc::RecvTimeoutError::Timeout) => continue,
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        };
        let message = encode(host, &changes);
        // One retry on a fresh connection: the server may have restarted.
        let sent: redis::RedisResult<i64> = conn.publish(channel, &message);
        if let Err(e) = sent {
            match client.get_connection_with_timeout(Duration::from_secs(5)) {
                Ok(mut fresh) => {
                    if let Err(e) = fresh.publish::<_, _, i64>(channel, &message) {
                        tracing::warn!(server, error = %e.category(), "cannot publish changes to other hosts");
                    }
                    conn = fresh;
                }
                Err(_) => tracing::warn!(server, error = %e.category(), "cannot publish changes to other hosts"),
            }
        }
    }
}

fn subscriber(
    client: redis::Client,
    channel: &str,
    host: &str,
    server: &str,
    stop: &std::sync::atomic::AtomicBool,
    deliver: impl Fn(Changes),
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
        while !stop.load(Ordering::Relaxed) {
            match pubsub.get_message() {
                Ok(msg) => {
                    let Ok(payload) = msg.get_payload::<String>() else { continue };
                    match decode(&payload) {
                        Some((from, changes)) if from != host => deliver(changes),
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
    let mut random = [0u8; 8];
    let _ = std::fs::File::open("/dev/urandom").and_then(|mut f| std::io::Read::read_exact(&mut f, &mut random));
    format!("{}/{}/{:016x}", name.trim(), std::process::id(), u64::from_le_bytes(random))
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

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
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
    fn glob_characters_in_the_prefix_are_literal() {
        assert_eq!(glob_escape("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
    }
}
