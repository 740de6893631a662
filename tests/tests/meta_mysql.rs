//! The MySQL/MariaDB metadata store (`truckeefs_runtime_smol::meta_mysql`) against a private
//! MariaDB (`truckeefs_tests::mariadb`): what the shared conformance suite
//! (`runtime-sim/tests/meta_conformance.rs`) cannot check with a single store — credentials,
//! schema versions, a server restart, commits whose answer is lost, and two hosts racing on one
//! database.
//!
//! No FUSE needed. Needs `mariadb-server` (scripts/install-deps.sh).

use bytes::Bytes;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};
use truckeefs_core::{
    DentryRow, FileKind, Ino, InodeRow, IoErrorKind, IoReply, IoResult, LoadedInode, MetaRequest,
    ObjectId, Timespec, Txn, TxnOp, ROOT_INO,
};
use truckeefs_runtime_smol::backends::Fence;
use truckeefs_runtime_smol::meta_mysql::{MysqlConfig, MysqlMeta, MysqlOpenError, SCHEMA_VERSION};
use truckeefs_tests::commit_cutter::{CommitCutter, Cut};
use truckeefs_tests::mariadb::MariaDb;

const SECRET_OBJECT: &str = "URI:CHK:secretsecretsecret:0123456789abcdef";

fn config(server: &MariaDb, db: &str) -> MysqlConfig {
    MysqlConfig {
        host: server.host().to_string(),
        port: server.port(),
        db: db.to_string(),
        user: server.user().to_string(),
        password: server.password().to_string(),
        ssl: false,
        timeout: Duration::from_secs(10),
    }
}

fn fresh(prefix: &str) -> (MysqlConfig, MysqlMeta) {
    let server = MariaDb::shared();
    let cfg = config(server, &server.unique_db_name(prefix));
    let meta = MysqlMeta::open(&cfg).unwrap_or_else(|e| panic!("open: {e}"));
    (cfg, meta)
}

fn file_row(ino: Ino, version: u64) -> InodeRow {
    let ts = |sec, nsec| Timespec { sec, nsec };
    InodeRow {
        ino,
        kind: FileKind::Regular,
        perm: 0o644,
        uid: 1000,
        gid: 100,
        nlink: 1,
        size: 12345,
        atime: ts(1, 2),
        mtime: ts(3, 4),
        ctime: ts(5, 6),
        rdev: 0,
        version,
        object: Some(ObjectId(SECRET_OBJECT.into())),
        target: None,
    }
}

fn dentry(parent: Ino, name: &[u8], ino: Ino, pos: u64) -> DentryRow {
    DentryRow {
        parent,
        name: name.to_vec(),
        ino,
        pos,
    }
}

fn commit(m: &mut MysqlMeta, ops: Vec<TxnOp>) -> IoResult {
    m.execute(&MetaRequest::Commit(Txn {
        ops,
        durable: false,
    }))
}

fn load(m: &mut MysqlMeta, ino: Ino) -> Option<LoadedInode> {
    match m.execute(&MetaRequest::LoadInode { ino }) {
        Ok(IoReply::Inode(i)) => i,
        other => panic!("unexpected reply {other:?}"),
    }
}

fn assert_no_secret(msg: &str, cfg: &MysqlConfig) {
    assert!(!msg.contains(&cfg.password), "password leaked: {msg}");
    assert!(!msg.contains("secretsecret"), "object id leaked: {msg}");
}

#[test]
fn wrong_password_is_a_clear_error_without_the_password() {
    let server = MariaDb::shared();
    let mut cfg = config(server, &server.unique_db_name("wrongpw"));
    cfg.password = format!("{}-wrong-Zq9", server.password());
    let err = MysqlMeta::open(&cfg).expect_err("must refuse");
    let msg = err.to_string();
    assert!(
        matches!(err, MysqlOpenError::AccessDenied { .. }),
        "{err:?}"
    );
    assert!(
        msg.contains(&format!("127.0.0.1:{}/{}", server.port(), cfg.db)),
        "server not named: {msg}"
    );
    assert!(msg.contains("access denied"), "{msg}");
    assert!(
        !msg.contains("Zq9") && !msg.contains(server.password()),
        "password leaked: {msg}"
    );
    assert!(
        !format!("{err:?}").contains("Zq9"),
        "password leaked in Debug"
    );
    assert!(!msg.contains('\n'), "{msg}");
    assert!(
        !format!("{cfg:?}").contains("Zq9"),
        "MysqlConfig's Debug shows the password"
    );

    // An unknown user, and a port where nothing listens: also one clear line.
    cfg.user = "nobody".into();
    let err = MysqlMeta::open(&cfg).expect_err("must refuse");
    assert!(
        matches!(err, MysqlOpenError::AccessDenied { .. }),
        "{err:?}"
    );
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = MysqlConfig {
        port: closed,
        ..config(server, "x")
    };
    let err = MysqlMeta::open(&cfg).expect_err("must fail");
    let msg = err.to_string();
    assert!(matches!(err, MysqlOpenError::Connect { .. }), "{err:?}");
    assert!(
        msg.contains(&format!("127.0.0.1:{closed}/x")) && !msg.contains('\n'),
        "{msg}"
    );
    assert_no_secret(&msg, &cfg);
}

#[test]
fn ssl_against_a_server_without_tls_is_refused() {
    let server = MariaDb::shared();
    let cfg = MysqlConfig {
        ssl: true,
        ..config(server, &server.unique_db_name("ssl"))
    };
    let err = MysqlMeta::open(&cfg).expect_err("the test server has no TLS");
    let msg = err.to_string();
    assert!(msg.contains(&cfg.server()) && !msg.contains('\n'), "{msg}");
    assert_no_secret(&msg, &cfg);
}

#[test]
fn creates_tables_once_and_refuses_a_newer_schema_untouched() {
    let server = MariaDb::shared();
    let (cfg, mut meta) = fresh("schema");
    assert_eq!(
        server
            .sql(Some(&cfg.db), "SELECT version FROM `schema`")
            .trim(),
        SCHEMA_VERSION.to_string()
    );
    let root = load(&mut meta, ROOT_INO).expect("root");
    assert_eq!(
        (
            root.row.kind,
            root.row.perm,
            root.row.nlink,
            root.row.version
        ),
        (FileKind::Directory, 0o755, 2, 1)
    );
    assert_eq!(
        meta.execute(&MetaRequest::AllocIds { count: 3 }),
        Ok(IoReply::Ids { first: 2 })
    );
    commit(
        &mut meta,
        vec![
            TxnOp::InsertInode(file_row(2, 1)),
            TxnOp::InsertDentry(dentry(1, b"f", 2, 3)),
        ],
    )
    .unwrap();
    drop(meta);
    // Reopening keeps everything (no second root, no counter reset).
    let mut meta = MysqlMeta::open(&cfg).unwrap();
    assert_eq!(
        meta.execute(&MetaRequest::AllocIds { count: 1 }),
        Ok(IoReply::Ids { first: 5 })
    );
    assert_eq!(load(&mut meta, 2).unwrap().row, file_row(2, 1));
    assert_eq!(
        meta.execute(&MetaRequest::Usage),
        Ok(IoReply::Usage {
            files: 2,
            bytes: 12345
        })
    );
    drop(meta);
    // Every table is InnoDB.
    let engines = server.sql(
        None,
        &format!(
            "SELECT DISTINCT engine FROM information_schema.tables WHERE table_schema = '{}'",
            cfg.db
        ),
    );
    assert_eq!(engines.trim(), "InnoDB");

    server.sql(Some(&cfg.db), "UPDATE `schema` SET version = 7");
    let err = MysqlMeta::open(&cfg).expect_err("must refuse");
    assert!(
        matches!(
            err,
            MysqlOpenError::NewerSchema {
                found: 7,
                supported: SCHEMA_VERSION,
                ..
            }
        ),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains(&cfg.server()) && msg.contains("newer") && msg.contains("upgrade"),
        "{msg}"
    );
    assert!(!msg.contains('\n'));
    assert_no_secret(&msg, &cfg);
    assert_eq!(
        server
            .sql(Some(&cfg.db), "SELECT version FROM `schema`")
            .trim(),
        "7",
        "nothing written"
    );
}

/// A database of schema version 1 (before fencing tokens) gets the `fence` column, each row at
/// 0; so does one whose upgrade was interrupted after the column (the step runs again).
#[test]
fn version_1_databases_get_the_fence_column() {
    let server = MariaDb::shared();
    let (cfg, mut meta) = fresh("fence1");
    commit(&mut meta, vec![TxnOp::InsertInode(file_row(2, 1))]).unwrap();
    drop(meta);
    let column = || {
        server.sql(
            None,
            &format!(
                "SELECT count(*) FROM information_schema.columns \
                 WHERE table_schema = '{}' AND table_name = 'inodes' AND column_name = 'fence'",
                cfg.db
            ),
        )
    };
    assert_eq!(column().trim(), "1");
    // Back to version 1 as it was.
    server.sql(
        Some(&cfg.db),
        "ALTER TABLE inodes DROP KEY inodes_fence, DROP COLUMN fence; UPDATE `schema` SET version = 1",
    );
    assert_eq!(column().trim(), "0");
    let mut meta = MysqlMeta::open(&cfg).unwrap_or_else(|e| panic!("upgrade: {e}"));
    assert_eq!(meta.max_fence(), Ok(0));
    let version = server.sql(Some(&cfg.db), "SELECT version FROM `schema`");
    assert_eq!(version.trim(), SCHEMA_VERSION.to_string());
    assert_eq!(
        server.sql(Some(&cfg.db), "SELECT fence FROM inodes WHERE ino = 2").trim(),
        "0"
    );
    drop(meta);
    // Interrupted after the column, before the index and the version bump.
    server.sql(
        Some(&cfg.db),
        "ALTER TABLE inodes DROP KEY inodes_fence; UPDATE `schema` SET version = 1",
    );
    let mut meta = MysqlMeta::open(&cfg).unwrap_or_else(|e| panic!("resumed upgrade: {e}"));
    let version = server.sql(Some(&cfg.db), "SELECT version FROM `schema`");
    assert_eq!(version.trim(), SCHEMA_VERSION.to_string());
    let fenced = meta.execute_fenced(
        &MetaRequest::Commit(Txn {
            ops: vec![TxnOp::UpdateInode {
                row: file_row(2, 2),
                expect_version: 1,
            }],
            durable: false,
        }),
        Some(Fence { ino: 2, token: 3 }),
    );
    assert_eq!(fenced, Ok(IoReply::Done));
    assert_eq!(meta.max_fence(), Ok(3));
}

#[test]
fn foreign_databases_are_refused_and_interrupted_creation_resumes() {
    let server = MariaDb::shared();
    // Some other program's database.
    let db = server.unique_db_name("foreign");
    server.sql(None, &format!("CREATE DATABASE {db}"));
    server.sql(Some(&db), "CREATE TABLE t(x INT)");
    let err = MysqlMeta::open(&config(server, &db)).expect_err("must refuse");
    assert!(matches!(err, MysqlOpenError::NotMetadata { .. }), "{err:?}");
    // A first creation interrupted after the schema table: the next open finishes it.
    let db = server.unique_db_name("halfdone");
    server.sql(None, &format!("CREATE DATABASE {db}"));
    server.sql(
        Some(&db),
        "CREATE TABLE `schema`(version INT NOT NULL) ENGINE=InnoDB",
    );
    let mut meta = MysqlMeta::open(&config(server, &db)).unwrap();
    assert!(load(&mut meta, ROOT_INO).is_some());
    // A bad database name never reaches the server.
    let err =
        MysqlMeta::open(&config(server, "x`; DROP DATABASE mysql; --")).expect_err("must refuse");
    assert!(matches!(err, MysqlOpenError::Config { .. }), "{err:?}");
}

#[test]
fn names_are_exact_bytes() {
    let (_cfg, mut meta) = fresh("names");
    commit(&mut meta, vec![TxnOp::InsertInode(file_row(2, 1))]).unwrap();
    let names: [&[u8]; 6] = [b"a", b"a ", b"A", b"\xc3\xa9", b"e\xcc\x81", b"\xff\x00x"];
    for (i, n) in names.iter().enumerate() {
        commit(
            &mut meta,
            vec![TxnOp::InsertDentry(dentry(1, n, 2, 10 + i as u64))],
        )
        .unwrap_or_else(|e| panic!("{n:?}: {e}"));
    }
    let long = vec![b'x'; 255];
    commit(
        &mut meta,
        vec![TxnOp::InsertDentry(dentry(1, &long, 2, 30))],
    )
    .unwrap();
    let Ok(IoReply::Dir(dir)) = meta.execute(&MetaRequest::LoadDir { ino: 1 }) else {
        panic!()
    };
    let got: Vec<&[u8]> = dir.iter().map(|(d, _)| d.name.as_slice()).collect();
    let mut want: Vec<&[u8]> = names.to_vec();
    want.push(&long);
    assert_eq!(got, want);
    // A 64 KiB xattr value (XATTR_SIZE_MAX) round-trips.
    let big = Bytes::from(vec![7u8; 65536]);
    commit(
        &mut meta,
        vec![TxnOp::SetXattr {
            ino: 2,
            name: b"user.big".to_vec(),
            value: big.clone(),
        }],
    )
    .unwrap();
    assert_eq!(load(&mut meta, 2).unwrap().xattrs[&b"user.big"[..]], big);
}

/// An update that matches its row but changes nothing is not a conflict (the session counts
/// matched rows, as SQLite does, not changed ones); nor is setting an xattr to its value.
#[test]
fn unchanged_updates_are_not_conflicts() {
    let (_cfg, mut meta) = fresh("noop");
    let x = |v: &'static [u8]| TxnOp::SetXattr {
        ino: 2,
        name: b"user.x".to_vec(),
        value: Bytes::from_static(v),
    };
    commit(&mut meta, vec![TxnOp::InsertInode(file_row(2, 1)), x(b"v")]).unwrap();
    commit(
        &mut meta,
        vec![
            TxnOp::UpdateInode {
                row: file_row(2, 1),
                expect_version: 1,
            },
            x(b"v"),
        ],
    )
    .unwrap();
    assert_eq!(load(&mut meta, 2).unwrap().row, file_row(2, 1));
    commit(
        &mut meta,
        vec![TxnOp::UpdateInode {
            row: file_row(2, 2),
            expect_version: 1,
        }],
    )
    .unwrap();
    assert_eq!(
        meta.execute(&MetaRequest::AllocIds { count: 0 }),
        Ok(IoReply::Ids { first: 2 })
    );
    assert_eq!(
        meta.execute(&MetaRequest::AllocIds { count: 0 }),
        Ok(IoReply::Ids { first: 2 })
    );
}

/// Two hosts (two `MysqlMeta`s on one database) update the same inode version at once: exactly
/// one wins each round, the other gets `Conflict` and, after re-reading, can go on.
#[test]
fn concurrent_updates_of_one_version_conflict_exactly_once() {
    let (cfg, mut a) = fresh("race");
    let mut b = MysqlMeta::open(&cfg).unwrap();
    commit(&mut a, vec![TxnOp::InsertInode(file_row(2, 1))]).unwrap();
    let rounds = 15u64;
    let mut wins = [0u32; 2];
    let hosts = [&mut a, &mut b];
    let mut hosts: Vec<&mut MysqlMeta> = hosts.into_iter().collect();
    for round in 0..rounds {
        let version = round + 1;
        let barrier = Arc::new(Barrier::new(2));
        let results: Vec<IoResult> = thread::scope(|s| {
            let handles: Vec<_> = hosts
                .iter_mut()
                .enumerate()
                .map(|(h, meta)| {
                    let barrier = barrier.clone();
                    s.spawn(move || {
                        let mut row = file_row(2, version + 1);
                        row.size = h as u64;
                        // Both read the row, then both try to move it from `version`.
                        assert_eq!(load(meta, 2).unwrap().row.version, version);
                        barrier.wait();
                        // A second op on the same rows makes the transactions overlap longer.
                        commit(
                            meta,
                            vec![
                                TxnOp::UpdateInode {
                                    row,
                                    expect_version: version,
                                },
                                TxnOp::SetXattr {
                                    ino: 2,
                                    name: b"user.h".to_vec(),
                                    value: Bytes::from(vec![h as u8]),
                                },
                            ],
                        )
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let ok: Vec<usize> = (0..2).filter(|&h| results[h].is_ok()).collect();
        assert_eq!(
            ok.len(),
            1,
            "round {round}: exactly one must win: {results:?}"
        );
        let loser = 1 - ok[0];
        assert_eq!(
            results[loser].as_ref().unwrap_err().kind,
            IoErrorKind::Conflict,
            "round {round}: {results:?}"
        );
        assert_no_secret(&results[loser].as_ref().unwrap_err().message, &cfg);
        wins[ok[0]] += 1;
        // Both now see the winner's row and xattr: all or nothing.
        for meta in hosts.iter_mut() {
            let got = load(meta, 2).unwrap();
            assert_eq!(got.row.version, version + 1);
            assert_eq!(got.row.size, ok[0] as u64);
            assert_eq!(got.xattrs[&b"user.h"[..]], Bytes::from(vec![ok[0] as u8]));
        }
    }
    eprintln!("wins per host: {wins:?}");

    // Concurrent creates of one name in one directory: exactly one wins.
    for round in 0..10u64 {
        let barrier = Arc::new(Barrier::new(2));
        let results: Vec<IoResult> = thread::scope(|s| {
            let handles: Vec<_> = hosts
                .iter_mut()
                .enumerate()
                .map(|(h, meta)| {
                    let barrier = barrier.clone();
                    s.spawn(move || {
                        let ino = 100 + round * 2 + h as u64;
                        barrier.wait();
                        commit(
                            meta,
                            vec![
                                TxnOp::InsertInode(file_row(ino, 1)),
                                TxnOp::InsertDentry(dentry(
                                    1,
                                    format!("n{round}").as_bytes(),
                                    ino,
                                    ino,
                                )),
                            ],
                        )
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(
            results.iter().filter(|r| r.is_ok()).count(),
            1,
            "round {round}: {results:?}"
        );
        assert!(
            results
                .iter()
                .any(|r| matches!(r, Err(e) if e.kind == IoErrorKind::Conflict)),
            "{results:?}"
        );
    }
    let Ok(IoReply::Dir(dir)) = hosts[0].execute(&MetaRequest::LoadDir { ino: 1 }) else {
        panic!()
    };
    assert_eq!(dir.len(), 10);
    // The losers' inodes were rolled back with their dentries: root, inode 2, ten winners.
    let Ok(IoReply::Usage { files, .. }) = hosts[1].execute(&MetaRequest::Usage) else {
        panic!()
    };
    assert_eq!(files, 12);
}

/// Ids handed out to two hosts at once never overlap.
#[test]
fn concurrent_id_allocation_never_overlaps() {
    let (cfg, _a) = fresh("ids");
    let ranges: Vec<(u64, u64)> = thread::scope(|s| {
        let handles: Vec<_> = (0..3)
            .map(|_| {
                let cfg = cfg.clone();
                s.spawn(move || {
                    let mut meta = MysqlMeta::open(&cfg).unwrap();
                    (0..100)
                        .map(|i| {
                            let count = 1 + i % 5;
                            match meta.execute(&MetaRequest::AllocIds { count }) {
                                Ok(IoReply::Ids { first }) => (first, first + count),
                                other => panic!("{other:?}"),
                            }
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    let mut sorted = ranges.clone();
    sorted.sort();
    for w in sorted.windows(2) {
        assert!(w[0].1 <= w[1].0, "overlapping ranges {w:?}");
    }
    assert_eq!(sorted[0].0, 2);
}

/// The server stops: requests fail with `Other` (EIO), without a panic and without hanging; it
/// comes back: requests succeed again, with everything committed before still there.
#[test]
fn server_restart_fails_requests_meanwhile_then_reconnects() {
    let server = MariaDb::start();
    let cfg = config(&server, "restart");
    let mut meta = MysqlMeta::open(&cfg).unwrap();
    commit(
        &mut meta,
        vec![
            TxnOp::InsertInode(file_row(2, 1)),
            TxnOp::InsertDentry(dentry(1, b"f", 2, 3)),
        ],
    )
    .unwrap();
    meta.execute(&MetaRequest::Commit(Txn {
        ops: vec![TxnOp::InsertInode(file_row(3, 1))],
        durable: true,
    }))
    .unwrap();

    // A restart while idle: the stale connection is replaced transparently.
    server.stop();
    server.restart();
    assert_eq!(load(&mut meta, 2).unwrap().row, file_row(2, 1));

    // An outage: every kind of request fails cleanly and quickly.
    server.stop();
    let started = Instant::now();
    for req in [
        MetaRequest::LoadInode { ino: 2 },
        MetaRequest::LoadDir { ino: 1 },
        MetaRequest::AllocIds { count: 1 },
        MetaRequest::Commit(Txn {
            ops: vec![TxnOp::UpdateInode {
                row: file_row(2, 2),
                expect_version: 1,
            }],
            durable: true,
        }),
        MetaRequest::ListOrphans,
        MetaRequest::Usage,
    ] {
        let err = meta.execute(&req).expect_err("the server is down");
        assert_eq!(err.kind, IoErrorKind::Other, "{req:?}: {err}");
        assert!(err.message.contains(&cfg.server()), "{}", err.message);
        assert_no_secret(&err.message, &cfg);
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "failing took {:?}",
        started.elapsed()
    );

    server.restart();
    assert_eq!(
        load(&mut meta, 2).unwrap().row,
        file_row(2, 1),
        "the failed update must not have happened"
    );
    assert!(
        load(&mut meta, 3).is_some(),
        "a durable commit survives the restart"
    );
    commit(
        &mut meta,
        vec![TxnOp::UpdateInode {
            row: file_row(2, 2),
            expect_version: 1,
        }],
    )
    .unwrap();
    assert_eq!(load(&mut meta, 2).unwrap().row.version, 2);
    // A second store opens fine too.
    let mut other = MysqlMeta::open(&cfg).unwrap();
    assert_eq!(load(&mut other, 2).unwrap().row.version, 2);
}

/// A durable transaction (an upload's commit, an fsync's) whose `COMMIT` answer is lost after the
/// server had it is found to have committed, one lost before the server had it to have not, and
/// one whose answer does not come within the timeout to have committed: the store answers what
/// happened, not a failure that may hide a commit. Other transactions fail in doubt, as before.
/// The store's marker row goes with it.
#[test]
fn commits_in_doubt_are_settled() {
    let server = MariaDb::shared();
    let cutter = CommitCutter::start(server);
    let mut cfg = config(server, &server.unique_db_name("indoubt"));
    cfg.port = cutter.port;
    cfg.timeout = Duration::from_secs(2);
    let mut meta = MysqlMeta::open(&cfg).unwrap();
    commit(&mut meta, vec![TxnOp::InsertInode(file_row(2, 1))]).unwrap();
    let update = |version| {
        MetaRequest::Commit(Txn {
            ops: vec![TxnOp::UpdateInode {
                row: file_row(2, version),
                expect_version: version - 1,
            }],
            durable: true,
        })
    };

    cutter.arm(Cut::Answer);
    let r = meta.execute(&update(2));
    assert_eq!(
        cutter.armed(),
        Cut::Nothing,
        "the COMMIT went through the proxy"
    );
    assert!(
        matches!(r, Ok(IoReply::Done)),
        "committed, its answer lost: {r:?}"
    );
    assert!(!meta.last_in_doubt());
    assert_eq!(load(&mut meta, 2).unwrap().row.version, 2);

    cutter.arm(Cut::Commit);
    let err = meta
        .execute(&update(3))
        .expect_err("the COMMIT never reached the server");
    assert_eq!(cutter.armed(), Cut::Nothing);
    assert_eq!(err.kind, IoErrorKind::Other, "{err}");
    assert!(err.message.contains("did not commit"), "{err}");
    assert!(!meta.last_in_doubt());
    assert_no_secret(&err.message, &cfg);
    assert_eq!(load(&mut meta, 2).unwrap().row.version, 2);
    meta.execute(&update(3)).unwrap();

    cutter.arm(Cut::Stall);
    let started = Instant::now();
    let r = meta.execute(&update(4));
    assert_eq!(cutter.armed(), Cut::Nothing);
    assert!(
        matches!(r, Ok(IoReply::Done)),
        "committed, no answer within the timeout: {r:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "settled in {:?}",
        started.elapsed()
    );
    assert_eq!(load(&mut meta, 2).unwrap().row.version, 4);

    // Not durable: no marker, so the failure says the transaction may have committed (it did).
    cutter.arm(Cut::Answer);
    let err = commit(
        &mut meta,
        vec![TxnOp::UpdateInode {
            row: file_row(2, 5),
            expect_version: 4,
        }],
    )
    .unwrap_err();
    assert_eq!(cutter.armed(), Cut::Nothing);
    assert!(err.message.contains("may have committed"), "{err}");
    assert!(meta.last_in_doubt(), "the driver publishes it to the other hosts");
    assert_eq!(load(&mut meta, 2).unwrap().row.version, 5);
    assert!(!meta.last_in_doubt());

    let markers = || {
        server.sql(
            Some(&cfg.db),
            "SELECT count(*) FROM counters WHERE name LIKE 'commit/%'",
        )
    };
    assert_eq!(markers().trim(), "1");
    drop(meta);
    assert_eq!(
        markers().trim(),
        "0",
        "a store deletes its marker row when it closes"
    );
}

/// A transaction waiting on another host's lock longer than the timeout fails with `Timeout`,
/// rolls back, and the connection is usable afterwards.
#[test]
fn lock_waits_end() {
    let server = MariaDb::shared();
    let mut cfg = config(server, &server.unique_db_name("lockwait"));
    cfg.timeout = Duration::from_secs(2);
    let mut meta = MysqlMeta::open(&cfg).unwrap();
    commit(&mut meta, vec![TxnOp::InsertInode(file_row(2, 1))]).unwrap();
    // Another client holds the row lock for 3 s.
    let db = cfg.db.clone();
    let holder = thread::spawn(move || {
        MariaDb::shared().sql(
            Some(&db),
            "START TRANSACTION; UPDATE inodes SET size = 1 WHERE ino = 2; SELECT SLEEP(3); ROLLBACK;",
        )
    });
    // It holds the lock once it sleeps (InnoDB's lock tables are cached: ask the process list).
    let locked = |db: &str| {
        let sql = format!(
            "SELECT count(*) FROM information_schema.processlist \
             WHERE db = '{db}' AND info LIKE 'SELECT SLEEP%'"
        );
        server.sql(None, &sql).trim() != "0"
    };
    let deadline = Instant::now() + Duration::from_secs(4);
    while !locked(&cfg.db) {
        assert!(
            Instant::now() < deadline,
            "the other client never took the lock"
        );
        thread::sleep(Duration::from_millis(20));
    }
    let started = Instant::now();
    let err = commit(
        &mut meta,
        vec![
            TxnOp::InsertInode(file_row(3, 1)),
            TxnOp::UpdateInode {
                row: file_row(2, 2),
                expect_version: 1,
            },
        ],
    )
    .expect_err("the row is locked");
    assert!(matches!(err.kind, IoErrorKind::Timeout), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    holder.join().unwrap();
    assert!(load(&mut meta, 3).is_none(), "rolled back");
    commit(
        &mut meta,
        vec![TxnOp::UpdateInode {
            row: file_row(2, 2),
            expect_version: 1,
        }],
    )
    .unwrap();
}

/// Not a benchmark, but catches a hot path that reconnects or re-prepares: small transactions
/// (create, then unlink) and loads must each take a few milliseconds at most.
#[test]
fn many_small_transactions() {
    let (_cfg, mut meta) = fresh("many");
    let n = 300u64;
    let start = Instant::now();
    for i in 0..n {
        let ino = 10 + i;
        commit(
            &mut meta,
            vec![
                TxnOp::InsertInode(file_row(ino, 1)),
                TxnOp::InsertDentry(dentry(1, b"x", ino, ino)),
            ],
        )
        .unwrap();
        commit(
            &mut meta,
            vec![
                TxnOp::DeleteDentry {
                    parent: 1,
                    name: b"x".to_vec(),
                    ino,
                },
                TxnOp::UpdateInode {
                    row: file_row(ino, 2),
                    expect_version: 1,
                },
            ],
        )
        .unwrap();
    }
    let commits = start.elapsed();
    let start = Instant::now();
    for i in 0..n {
        assert!(load(&mut meta, 10 + i).is_some());
    }
    let loads = start.elapsed();
    eprintln!(
        "{:.0} transactions/s, {:.0} loads/s",
        (2 * n) as f64 / commits.as_secs_f64(),
        n as f64 / loads.as_secs_f64()
    );
    assert!(commits < Duration::from_secs(20), "{commits:?}");
}

/// Hosts without a coordination server take turns on a database; hosts with one share it. A
/// claim goes when its store is dropped (an unmount) — and with the connection, so a killed host
/// does not block the next.
#[test]
fn hosts_without_redis_take_turns_and_hosts_with_redis_share() {
    let (cfg, mut solo) = fresh("claim");
    solo.claim(&cfg, false).unwrap();
    let open = || MysqlMeta::open(&cfg).unwrap_or_else(|e| panic!("open: {e}"));
    let err = open().claim(&cfg, false).unwrap_err();
    assert!(err.contains("another host is using this metadata store"), "{err}");
    assert!(err.contains(&cfg.server()), "{err}");
    assert_no_secret(&err, &cfg);
    let err = open().claim(&cfg, true).unwrap_err();
    assert!(err.contains("without redis_host"), "{err}");
    solo.release_claim().unwrap();

    // Several hosts with Redis at once; then one without is refused until they are all gone.
    let mut shared: Vec<MysqlMeta> = (0..3).map(|_| open()).collect();
    for m in &mut shared {
        m.claim(&cfg, true).unwrap();
    }
    let err = open().claim(&cfg, false).unwrap_err();
    assert!(err.contains("another host is using this metadata store"), "{err}");
    // The refused host let go of every slot it got: the others still share, a fourth joins.
    let mut fourth = open();
    fourth.claim(&cfg, true).unwrap();
    shared.push(fourth);
    for mut m in shared {
        m.release_claim().unwrap();
    }
    let mut last = open();
    last.claim(&cfg, false).unwrap();
    // The claim is what lets it run: the store itself still answers.
    assert!(load(&mut last, ROOT_INO).is_some());
}
