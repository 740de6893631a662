//! Which hosts use a MySQL/MariaDB metadata store, so that hosts without a coordination server
//! take turns instead of running at once.
//!
//! A host without `redis_host` hears of no other host: it caches names and attributes for good,
//! and at its start it deletes every file left open-but-unlinked. Two of them on one database, or
//! one beside hosts that coordinate through Redis, would each act on state the other changes. So
//! every mount claims the database on a connection of its own, held for its lifetime, with the
//! server's named locks (`GET_LOCK`), one per host slot: `truckeefs-host:<i>:<database>`, i in
//! 0..64. A host with a coordination server takes one free slot; a host without takes all of
//! them. Either fails at once (timeout 0) when the other kind holds what it needs, and the mount
//! ends with a message saying so. The server drops a connection's locks when the connection goes
//! (a host killed, a network cut), so a dead host's claim goes with it.
//!
//! The connection is pinged every [`PING`], so no idle timeout of the server closes it; when it
//! breaks (the server restarted), the claim is taken again on a new connection, and a conflict
//! then is logged (the mount runs on; the operator must stop one host).

use crate::meta_mysql::{build_opts, value_i64, MysqlConfig};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Value};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Host slots: at most this many hosts with a coordination server share one database.
pub const SLOTS: u32 = 64;
/// How often the claim's connection is used, to stay open.
const PING: Duration = Duration::from_secs(30);
/// How long a mount tries to claim a store another host holds before it gives up.
const GRACE: Duration = Duration::from_secs(3);
/// How often a claim that cannot be taken again is reported.
const REPORT: Duration = Duration::from_secs(60);

/// The SQL expression naming slot `i`'s lock (at most 64 characters, the server's limit: the
/// slot number comes first so a long database name cannot cut it off).
fn slot(i: u32) -> String {
    format!("LEFT(CONCAT('truckeefs-host:', {i}, ':', DATABASE()), 64)")
}

/// Takes the claim on `conn`: one slot (`shared`) or all of them. The error says who is in the way.
async fn take(conn: &mut Conn, shared: bool, server: &str) -> Result<(), String> {
    let sql_err = |e: mysql_async::Error| format!("{server}: cannot claim the metadata store: {e}");
    if shared {
        // The first free slot: CASE stops at the first lock granted.
        let arms: String = (0..SLOTS).map(|i| format!(" WHEN GET_LOCK({}, 0) = 1 THEN {i}", slot(i))).collect();
        let got: Option<Value> = conn.query_first(format!("SELECT CASE{arms} ELSE -1 END")).await.map_err(sql_err)?;
        if got.as_ref().and_then(value_i64).is_some_and(|i| i >= 0) {
            return Ok(());
        }
        return Err(format!(
            "{server}: another host uses this metadata store without redis_host (or {SLOTS} hosts share it); \
             hosts sharing sql_host must all set redis_host"
        ));
    }
    let sum: String = (0..SLOTS).map(|i| format!("COALESCE(GET_LOCK({}, 0), 0)", slot(i))).collect::<Vec<_>>().join(" + ");
    let got: Option<Value> = conn.query_first(format!("SELECT {sum}")).await.map_err(sql_err)?;
    if got.as_ref().and_then(value_i64) == Some(SLOTS as i64) {
        return Ok(());
    }
    let _ = conn.query_drop("DO RELEASE_ALL_LOCKS()").await;
    Err(format!(
        "{server}: another host is using this metadata store; without redis_host hosts take turns \
         (unmount it first, or set redis_host on every host to share the store)"
    ))
}

async fn connect_and_take(config: &MysqlConfig, shared: bool) -> Result<Conn, String> {
    let server = config.server();
    let mut conn = match tokio::time::timeout(config.timeout, Conn::new(build_opts(config, true))).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => return Err(format!("{server}: cannot connect to claim the metadata store: {e}")),
        Err(_) => return Err(format!("{server}: cannot connect to claim the metadata store: no answer in {:?}", config.timeout)),
    };
    match tokio::time::timeout(config.timeout, take(&mut conn, shared, &server)).await {
        Ok(Ok(())) => Ok(conn),
        Ok(Err(e)) => {
            let _ = conn.disconnect().await;
            Err(e)
        }
        Err(_) => Err(format!("{server}: cannot claim the metadata store: no answer in {:?}", config.timeout)),
    }
}

/// This host's claim on a metadata store: released when dropped (or when the process dies).
pub struct Claim {
    shared: bool,
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Claim {
    /// Claims the store for this host: `shared` when it coordinates with others through Redis.
    pub fn take(config: &MysqlConfig, shared: bool) -> Result<Claim, String> {
        let server = config.server();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("{server}: cannot start the claim's runtime: {e}"))?;
        // A host killed a moment ago may still hold its claim until the server notices the
        // connection is gone: try again for a few seconds before giving up.
        let deadline = Instant::now() + GRACE;
        let conn = loop {
            match rt.block_on(connect_and_take(config, shared)) {
                Ok(c) => break c,
                Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(200)),
                Err(e) => return Err(e),
            }
        };
        let (stop, stopped) = mpsc::channel();
        let config = config.clone();
        let thread = std::thread::Builder::new()
            .name("truckeefs-mysql-claim".into())
            .spawn(move || keep(rt, config, shared, conn, stopped))
            .map_err(|e| format!("{server}: cannot start the claim's thread: {e}"))?;
        Ok(Claim { shared, stop: Some(stop), thread: Some(thread) })
    }

    /// For `status`: what this host holds.
    pub fn describe(&self) -> &'static str {
        if self.shared {
            "one host slot, shared with the hosts of redis_host"
        } else {
            "this host alone (no redis_host: hosts take turns)"
        }
    }

    /// Lets go of the claim (as dropping it does), saying whether its thread ended cleanly.
    pub fn release(mut self) -> Result<(), String> {
        self.stop_thread()
    }

    fn stop_thread(&mut self) -> Result<(), String> {
        self.stop = None;
        match self.thread.take().map(|t| t.join()) {
            Some(Err(_)) => Err("the thread holding this host's claim on the metadata store panicked".into()),
            _ => Ok(()),
        }
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        if let Err(e) = self.stop_thread() {
            tracing::error!("{e}");
        }
    }
}

/// Runs `f` on `rt` for at most `limit` (`None`: it took longer). The timer is made inside the
/// runtime: made outside, it finds no Tokio reactor and panics.
fn within<F: std::future::Future>(rt: &tokio::runtime::Runtime, limit: Duration, f: F) -> Option<F::Output> {
    rt.block_on(async { tokio::time::timeout(limit, f).await.ok() })
}

/// Keeps the claim's connection in use, and takes the claim again when it broke.
fn keep(rt: tokio::runtime::Runtime, config: MysqlConfig, shared: bool, conn: Conn, stopped: mpsc::Receiver<()>) {
    let server = config.server();
    let mut conn = Some(conn);
    let mut reported: Option<Instant> = None;
    while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(PING) {
        if let Some(c) = conn.as_mut() {
            let alive = within(&rt, config.timeout, c.query_drop("DO 1"));
            if matches!(alive, Some(Ok(()))) {
                continue;
            }
            conn = None;
            tracing::warn!(server, "the connection holding this host's claim on the metadata store broke; taking it again");
        }
        match rt.block_on(connect_and_take(&config, shared)) {
            Ok(c) => {
                conn = Some(c);
                if reported.take().is_some() {
                    tracing::info!(server, "this host's claim on the metadata store is taken again");
                }
            }
            Err(e) => {
                if reported.is_none_or(|t| t.elapsed() >= REPORT) {
                    tracing::error!(server, error = %e, "cannot take this host's claim on the metadata store again");
                    reported = Some(Instant::now());
                }
            }
        }
    }
    if let Some(c) = conn {
        let _ = within(&rt, config.timeout, c.disconnect());
    }
}
