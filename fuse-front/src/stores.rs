//! Which stores a mount uses, from its settings: the embedded SQLite database and local object
//! directory unless `sql_host` names a MySQL/MariaDB server and `rootcap` a Tahoe directory.

use crate::config::{Settings, Strategy, TahoeFormat};
use truckeefs_core::ObjectId;
use truckeefs_runtime_smol::block_cache::BlockCacheConfig;
use truckeefs_runtime_smol::coord::CoordConfig;
use truckeefs_runtime_smol::meta_mysql::MysqlConfig;
use truckeefs_runtime_smol::tahoe::{AuthToken, StorageStrategy, TahoeClient, UploadFormat};
use truckeefs_runtime_smol::{Backends, MetaBackend, StoreBackend};

/// The backends `settings` name. Errors are one line naming the key; no secret is printed.
pub fn backends(settings: &Settings) -> Result<Backends, String> {
    Ok(Backends { meta: meta(settings)?, store: store(settings)?, coordination: coordination(settings) })
}

/// Whether other hosts may share these stores (the metadata lives on a server).
pub fn shared(settings: &Settings) -> bool {
    settings.sql_host.is_some()
}

fn coordination(s: &Settings) -> Option<CoordConfig> {
    let host = s.redis_host.as_ref()?;
    let host = if host.contains(':') { format!("[{host}]") } else { host.clone() };
    let server = format!("{host}:{}/{}", s.redis_port, s.redis_db);
    Some(CoordConfig {
        url: format!("redis://{server}"),
        server,
        prefix: s.redis_prefix.clone(),
        reset: s.reset_redis,
        state_ttl: s.redis_semaphore_timeout,
    })
}

fn meta(s: &Settings) -> Result<MetaBackend, String> {
    let Some(host) = &s.sql_host else { return Ok(MetaBackend::Embedded) };
    let engine = s.sql_engine.split('+').next().unwrap_or_default().to_ascii_lowercase();
    if engine != "mysql" && engine != "mariadb" {
        return Err(format!("sql_engine: {:?} is not supported (mysql or mariadb)", s.sql_engine));
    }
    let defaults = MysqlConfig::default();
    Ok(MetaBackend::Mysql(MysqlConfig {
        host: host.clone(),
        port: s.sql_port,
        db: s.sql_db.clone().unwrap_or(defaults.db),
        user: s.sql_user.clone().unwrap_or(defaults.user),
        password: s.sql_pass.as_ref().map(|p| p.expose().to_string()).unwrap_or_default(),
        ssl: s.sql_ssl,
        timeout: s.net_timeout,
    }))
}

fn store(s: &Settings) -> Result<StoreBackend, String> {
    let Some(rootcap) = &s.rootcap else { return Ok(StoreBackend::Local) };
    let auth = match &s.auth_token {
        Some(t) => Some(AuthToken::new(t.expose()).map_err(|e| format!("auth_token: {e}"))?),
        None => None,
    };
    let format = match s.tahoe_format {
        TahoeFormat::Chk => UploadFormat::Chk,
        TahoeFormat::Mdmf => UploadFormat::Mdmf,
    };
    let client = TahoeClient::new(&s.tahoe_url, auth, s.net_timeout, s.max_connections as usize)
        .map_err(|e| format!("tahoe_url: {e}"))?
        .with_upload_format(format);
    let strategy = match s.backend_storage_strategy {
        Strategy::Flat => StorageStrategy::Flat,
        Strategy::Mirror => StorageStrategy::Mirror,
    };
    let cache = BlockCacheConfig {
        max_bytes: if s.cache_maintenance { s.cache_size } else { 0 },
        ttl: if s.cache_maintenance { s.cache_ttl } else { None },
        min_free_percent: if s.cache_maintenance { 5 } else { 0 },
        // Sequential reads stream this many blocks ahead in one request.
        read_ahead: 32,
        ..BlockCacheConfig::default()
    };
    let maintenance = s.cache_maintenance.then_some(s.sleep);
    Ok(StoreBackend::Tahoe { client, rootcap: ObjectId(rootcap.expose().to_string()), strategy, cache, maintenance })
}
