//! Integration: every configured service answers, with the credentials given. Each failure is
//! one line naming the service (the gateway by host and port, the SQL server as
//! `host:port/db`, Redis as `host:port/db`) and never a secret: the rootcap appears as its
//! fingerprint, passwords and tokens not at all.

use super::{Report, Suite};
use crate::config::Settings;
use super::scratch_name;
use std::time::Duration;
use truckeefs_core::{IoErrorKind, IoReply, MetaRequest, ObjectId};
use truckeefs_runtime_smol::meta_mysql::{MysqlConfig, MysqlMeta};
use truckeefs_runtime_smol::tahoe::TahoeClient;
use truckeefs_runtime_smol::tahoe_json::NodeKind;
use truckeefs_runtime_smol::{MetaBackend, StoreBackend};

const S: Suite = Suite::Integration;

pub fn run(settings: &Settings, r: &mut Report) {
    let backends = match crate::stores::backends(settings) {
        Ok(b) => b,
        Err(e) => return r.failed(S, format!("configuration: {e}")),
    };
    match &backends.store {
        StoreBackend::Local => r.skip(S, "tahoe: not configured (no rootcap): file data stays in the local object directory"),
        StoreBackend::Tahoe { client, rootcap, .. } => {
            let shown = settings.rootcap.as_ref().map_or_else(|| rootcap.fingerprint(), |s| s.fingerprint());
            tahoe(client, rootcap, &shown, r);
        }
    }
    match &backends.meta {
        MetaBackend::Embedded => r.skip(S, "sql: not configured (no sql_host): metadata in the embedded SQLite database"),
        MetaBackend::Mysql(config) => {
            r.check(S, sql(config));
        }
    }
    match &settings.redis_host {
        None => r.skip(S, "redis: not configured (no redis_host): locks are kept in this process"),
        Some(host) => {
            let server = match host.contains(':') {
                true => format!("[{host}]:{}/{}", settings.redis_port, settings.redis_db),
                false => format!("{host}:{}/{}", settings.redis_port, settings.redis_db),
            };
            let done = redis(host, settings.redis_port, settings.redis_db, &settings.redis_prefix, settings.net_timeout);
            r.check(S, done.map(|what| format!("redis {server}: {what}")).map_err(|e| format!("redis {server}: {e}")));
        }
    }
}

/// The gateway answers and has storage servers; the rootcap is a directory it can read and
/// write (a scratch directory is linked into it and unlinked again).
fn tahoe(client: &TahoeClient, rootcap: &ObjectId, shown: &str, r: &mut Report) {
    let gw = client.gateway();
    let answered = match client.welcome() {
        Ok(w) => {
            let known = w.servers.len();
            let connected = w.servers.iter().filter(|s| s.is_connected()).count();
            if connected == 0 {
                Err(format!(
                    "tahoe gateway {gw} answers, but is connected to no storage server ({known} known); check its introducer and the storage nodes"
                ))
            } else {
                Ok(format!("tahoe gateway {gw} answers; {connected} of {known} storage servers connected"))
            }
        }
        Err(e) => Err(format!("{}; check tahoe_url and that the Tahoe node runs", e.message)),
    };
    if !r.check(S, answered) {
        return;
    }
    let read = match client.stat(rootcap) {
        Ok(node) if node.kind == NodeKind::Dir && node.rw_uri.is_some() => {
            let entries = node.children.as_ref().map_or(0, |c| c.len());
            Ok(format!("rootcap {shown} is a directory in the grid ({entries} entries)"))
        }
        Ok(node) if node.kind == NodeKind::Dir => {
            Err(format!("rootcap {shown}: the gateway sees a read-only directory; give the directory's write cap"))
        }
        Ok(node) => Err(format!("rootcap {shown} is not a directory (the gateway sees a {:?} node)", node.kind)),
        // Tahoe's reply (410, UnrecoverableFileError) is a paragraph; this says it in one line.
        Err(e) if e.kind == IoErrorKind::NotFound => Err(format!(
            "rootcap {shown} is not in this grid: the gateway finds no shares of it (a cap of another grid, or shares lost)"
        )),
        Err(e) => Err(format!("rootcap {shown}: {}", e.message)),
    };
    if !r.check(S, read) {
        return;
    }
    let name = scratch_name();
    let wrote = match client.mkdir_child(rootcap, &name) {
        Ok(_) => match client.unlink(rootcap, &name) {
            Ok(_) => Ok(format!("rootcap {shown} is writable (a scratch entry linked and unlinked)")),
            Err(e) => Err(format!("rootcap {shown}: cannot unlink the scratch entry {name}: {}", e.message)),
        },
        Err(e) => Err(format!("rootcap {shown} is not writable: {}", e.message)),
    };
    r.check(S, wrote);
}

/// Connects with the credentials, creates or upgrades the schema if needed, and reads from it.
fn sql(config: &MysqlConfig) -> Result<String, String> {
    // The error names the server as host:port/db and never the password.
    let mut meta = MysqlMeta::open(config).map_err(|e| format!("sql server {e}"))?;
    match meta.execute(&MetaRequest::Usage) {
        Ok(IoReply::Usage { files, bytes }) => Ok(format!(
            "sql server {}: connected as {:?}; schema ready ({files} files, {bytes} bytes)",
            meta.server(),
            config.user
        )),
        Ok(_) => Err(format!("sql server {}: an unexpected reply to a usage query", meta.server())),
        Err(e) => Err(format!("sql server {}: {}", meta.server(), e.message)),
    }
}

/// PING, then SET, GET and DEL of a scratch key under `prefix` (with a one-minute expiry, should
/// the DEL not arrive).
fn redis(host: &str, port: u16, db: u32, prefix: &str, timeout: Duration) -> Result<String, String> {
    let info = redis::ConnectionInfo {
        addr: redis::ConnectionAddr::Tcp(host.to_string(), port),
        redis: redis::RedisConnectionInfo { db: db.into(), ..Default::default() },
    };
    let client = redis::Client::open(info).map_err(|e| e.to_string())?;
    let mut conn = client
        .get_connection_with_timeout(timeout)
        .map_err(|e| format!("cannot connect: {e}; check redis_host and redis_port and that the server runs"))?;
    let _ = conn.set_read_timeout(Some(timeout));
    let _ = conn.set_write_timeout(Some(timeout));
    let pong: String = redis::cmd("PING").query(&mut conn).map_err(|e| format!("PING: {e}"))?;
    if pong != "PONG" {
        return Err(format!("PING answered {pong:?}"));
    }
    let key = format!("{prefix}{}", scratch_name());
    let value = scratch_name();
    redis::cmd("SET")
        .arg(&key)
        .arg(&value)
        .arg("EX")
        .arg(60)
        .query::<()>(&mut conn)
        .map_err(|e| format!("SET of a key under {prefix:?}: {e}"))?;
    let got: Option<String> = redis::cmd("GET").arg(&key).query(&mut conn).map_err(|e| format!("GET: {e}"))?;
    let _: i64 = redis::cmd("DEL").arg(&key).query(&mut conn).map_err(|e| format!("DEL: {e}"))?;
    if got.as_deref() != Some(value.as_str()) {
        return Err(format!("GET of the key just SET under {prefix:?} returned something else"));
    }
    Ok(format!("PING, SET, GET and DEL of a key under {prefix:?}"))
}
