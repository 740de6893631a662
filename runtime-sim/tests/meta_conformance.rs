//! One conformance suite for the metadata stores: every check runs against the simulator's
//! in-memory store (`MemMeta`), the embedded SQLite store (`SqliteMeta`) and the MySQL/MariaDB
//! store (`MysqlMeta`, on a private MariaDB this test binary starts through
//! `truckeefs_tests::mariadb`, one database per store), and a random differential run compares
//! their answers request by request.

use bytes::Bytes;
use truckeefs_core::{
    DentryRow, FileKind, Ino, InodeRow, IoErrorKind, IoReply, IoResult, LoadedInode, MetaRequest, ObjectId, Timespec,
    Txn, TxnOp, ROOT_INO,
};
use truckeefs_runtime_sim::meta::MemMeta;
use truckeefs_runtime_smol::backends::Fence;
use truckeefs_runtime_sim::rng::Rng;
use truckeefs_runtime_smol::meta_mysql::{MysqlConfig, MysqlMeta};
use truckeefs_runtime_smol::meta_sqlite::SqliteMeta;
use truckeefs_tests::mariadb::MariaDb;

/// A store under test.
trait Store {
    fn exec(&mut self, req: &MetaRequest) -> IoResult;
    fn name(&self) -> &'static str;
}

impl Store for MemMeta {
    fn exec(&mut self, req: &MetaRequest) -> IoResult {
        self.execute(req)
    }
    fn name(&self) -> &'static str {
        "mem"
    }
}

struct Sqlite {
    _dir: tempfile::TempDir,
    meta: SqliteMeta,
}

impl Store for Sqlite {
    fn exec(&mut self, req: &MetaRequest) -> IoResult {
        self.meta.execute(req)
    }
    fn name(&self) -> &'static str {
        "sqlite"
    }
}

struct Mysql {
    meta: MysqlMeta,
}

impl Store for Mysql {
    fn exec(&mut self, req: &MetaRequest) -> IoResult {
        self.meta.execute(req)
    }
    fn name(&self) -> &'static str {
        "mysql"
    }
}

/// A MySQL store in a new database of the test binary's MariaDB, with `root` as its root row
/// (its own belongs to whoever ran the test, with its time of creation): an update as any host
/// would do it, so all stores start equal.
fn mysql_like(root: &InodeRow) -> Mysql {
    let server = MariaDb::shared();
    let config = MysqlConfig {
        host: server.host().to_string(),
        port: server.port(),
        db: server.unique_db_name("conformance"),
        user: server.user().to_string(),
        password: server.password().to_string(),
        ssl: false,
        timeout: std::time::Duration::from_secs(30),
    };
    let meta = MysqlMeta::open(&config).unwrap_or_else(|e| panic!("{e}"));
    let mut m = Mysql { meta };
    commit(&mut m, vec![TxnOp::UpdateInode { row: root.clone(), expect_version: 1 }]).unwrap();
    assert_eq!(load(&mut m, ROOT_INO).unwrap().row, *root, "the roots differ");
    m
}

fn sqlite() -> Sqlite {
    let dir = tempfile::tempdir().unwrap();
    let meta = SqliteMeta::open(&dir.path().join("meta.db")).unwrap();
    Sqlite { _dir: dir, meta }
}

/// An in-memory store with the same root as `s` (SQLite's root belongs to whoever runs the
/// test, with the time of creation).
fn mem_like(s: &mut Sqlite) -> MemMeta {
    let root = load(s, ROOT_INO).expect("root").row;
    let mut m = MemMeta::new(root.uid, root.gid, root.mtime);
    assert_eq!(load(&mut m, ROOT_INO).unwrap().row, root, "the roots differ");
    m
}

/// All three stores, fresh, with the same root.
fn all() -> (MemMeta, Sqlite, Mysql) {
    let mut s = sqlite();
    let m = mem_like(&mut s);
    let root = load(&mut s, ROOT_INO).expect("root").row;
    (m, s, mysql_like(&root))
}

fn ts(sec: i64, nsec: u32) -> Timespec {
    Timespec { sec, nsec }
}

fn file_row(ino: Ino, version: u64) -> InodeRow {
    InodeRow {
        ino,
        kind: FileKind::Regular,
        perm: 0o644,
        uid: 1000,
        gid: 100,
        nlink: 1,
        size: 12345,
        atime: ts(1, 2),
        mtime: ts(-3, 999_999_999),
        ctime: ts(5, 0),
        rdev: 0,
        version,
        object: Some(ObjectId("0123456789abcdef0123456789abcdef".into())),
        target: None,
    }
}

fn dentry(parent: Ino, name: &[u8], ino: Ino, pos: u64) -> DentryRow {
    DentryRow { parent, name: name.to_vec(), ino, pos }
}

fn commit(s: &mut dyn Store, ops: Vec<TxnOp>) -> IoResult {
    s.exec(&MetaRequest::Commit(Txn { ops, durable: false }))
}

fn load(s: &mut dyn Store, ino: Ino) -> Option<LoadedInode> {
    match s.exec(&MetaRequest::LoadInode { ino }).unwrap() {
        IoReply::Inode(i) => i,
        other => panic!("unexpected reply {other:?}"),
    }
}

fn load_dir(s: &mut dyn Store, ino: Ino) -> Vec<(DentryRow, LoadedInode)> {
    match s.exec(&MetaRequest::LoadDir { ino }).unwrap() {
        IoReply::Dir(d) => d,
        other => panic!("unexpected reply {other:?}"),
    }
}

fn kind_of(r: IoResult) -> IoErrorKind {
    r.expect_err("must fail").kind
}

/// Runs `check` on every store.
fn on_all(check: impl Fn(&mut dyn Store)) {
    let (mut m, mut s, mut my) = all();
    check(&mut m);
    check(&mut s);
    check(&mut my);
}

#[test]
fn new_store_has_root_and_ids_from_two() {
    on_all(|s| {
        let root = load(s, ROOT_INO).unwrap();
        assert_eq!(root.row.kind, FileKind::Directory, "{}", s.name());
        assert_eq!((root.row.perm, root.row.nlink, root.row.version), (0o755, 2, 1));
        assert!(root.xattrs.is_empty());
        assert_eq!(s.exec(&MetaRequest::AllocIds { count: 5 }), Ok(IoReply::Ids { first: 2 }));
        assert_eq!(s.exec(&MetaRequest::AllocIds { count: 1 }), Ok(IoReply::Ids { first: 7 }));
        assert_eq!(kind_of(s.exec(&MetaRequest::AllocIds { count: u64::MAX })), IoErrorKind::Other);
        assert_eq!(s.exec(&MetaRequest::AllocIds { count: 0 }), Ok(IoReply::Ids { first: 8 }));
        assert_eq!(load(s, 99), None);
        assert!(load_dir(s, ROOT_INO).is_empty());
        assert!(load_dir(s, 99).is_empty());
        assert_eq!(s.exec(&MetaRequest::Usage), Ok(IoReply::Usage { files: 1, bytes: 0 }));
    });
}

#[test]
fn round_trips() {
    on_all(|s| {
        let file = file_row(2, 1);
        let mut link = file_row(3, 1);
        link.kind = FileKind::Symlink;
        link.target = Some(b"../x".to_vec());
        link.object = None;
        commit(
            s,
            vec![
                TxnOp::InsertInode(file.clone()),
                TxnOp::InsertInode(link.clone()),
                TxnOp::InsertDentry(dentry(1, b"z-file", 2, 20)),
                TxnOp::InsertDentry(dentry(1, b"a-link", 3, 10)),
                TxnOp::InsertDentry(dentry(1, b"hard", 2, 30)),
                TxnOp::SetXattr { ino: 2, name: b"user.a".to_vec(), value: Bytes::from_static(b"1") },
                TxnOp::SetXattr { ino: 2, name: b"user.b".to_vec(), value: Bytes::from_static(b"\0\xff") },
                TxnOp::SetXattr { ino: 2, name: b"user.a".to_vec(), value: Bytes::from_static(b"2") },
            ],
        )
        .unwrap();
        let got = load(s, 2).unwrap();
        assert_eq!(got.row, file, "{}", s.name());
        assert_eq!(got.xattrs.len(), 2);
        assert_eq!(got.xattrs[&b"user.a"[..]], Bytes::from_static(b"2"));
        assert_eq!(load(s, 3).unwrap().row, link);
        // Listed by position, hard links with the same xattrs.
        let dir = load_dir(s, 1);
        let names: Vec<(&[u8], Ino, u64)> = dir.iter().map(|(d, _)| (d.name.as_slice(), d.ino, d.pos)).collect();
        assert_eq!(names, vec![(&b"a-link"[..], 3, 10), (&b"z-file"[..], 2, 20), (&b"hard"[..], 2, 30)], "{}", s.name());
        assert_eq!(dir[1].1.xattrs, dir[2].1.xattrs);
        assert_eq!(dir[1].1.row, file);
        assert_eq!(s.exec(&MetaRequest::Usage), Ok(IoReply::Usage { files: 3, bytes: 12345 }));
        // Update, remove xattrs (an absent one too), delete a dentry.
        let mut file2 = file.clone();
        file2.version = 2;
        file2.size = 7;
        file2.object = None;
        commit(
            s,
            vec![
                TxnOp::UpdateInode { row: file2.clone(), expect_version: 1 },
                TxnOp::RemoveXattr { ino: 2, name: b"user.a".to_vec() },
                TxnOp::RemoveXattr { ino: 2, name: b"user.absent".to_vec() },
                TxnOp::DeleteDentry { parent: 1, name: b"z-file".to_vec(), ino: 2 },
            ],
        )
        .unwrap();
        assert_eq!(load(s, 2).unwrap().row, file2);
        assert_eq!(load(s, 2).unwrap().xattrs.len(), 1);
        assert_eq!(load_dir(s, 1).len(), 2);
        // Deleting an inode deletes its xattrs (twice is fine), not the dentries naming it.
        commit(s, vec![TxnOp::DeleteInode { ino: 2 }, TxnOp::DeleteInode { ino: 2 }]).unwrap();
        assert_eq!(load(s, 2), None);
        assert_eq!(kind_of(s.exec(&MetaRequest::LoadDir { ino: 1 })), IoErrorKind::Corrupt, "{}", s.name());
        commit(s, vec![TxnOp::InsertInode(file.clone())]).unwrap();
        assert!(load(s, 2).unwrap().xattrs.is_empty(), "{}: a re-inserted inode starts clean", s.name());
        // Xattrs of an inode that does not exist may be set (no foreign keys).
        commit(s, vec![TxnOp::SetXattr { ino: 77, name: b"user.x".to_vec(), value: Bytes::new() }]).unwrap();
    });
}

#[test]
fn every_kind_and_extreme_values() {
    on_all(|s| {
        let kinds = [
            FileKind::Regular,
            FileKind::Directory,
            FileKind::Symlink,
            FileKind::Fifo,
            FileKind::Socket,
            FileKind::CharDevice,
            FileKind::BlockDevice,
        ];
        for (i, kind) in kinds.into_iter().enumerate() {
            let mut row = file_row(100 + i as u64, i64::MAX as u64);
            row.kind = kind;
            row.perm = 0o7777;
            row.uid = u32::MAX;
            row.gid = u32::MAX;
            row.nlink = u32::MAX;
            row.rdev = u32::MAX;
            row.size = i64::MAX as u64;
            row.atime = ts(i64::MIN, 0);
            row.mtime = ts(i64::MAX, 999_999_999);
            commit(s, vec![TxnOp::InsertInode(row.clone())]).unwrap();
            assert_eq!(load(s, row.ino).unwrap().row, row, "{}", s.name());
        }
        // What SQLite cannot hold is refused, not wrapped.
        assert_eq!(kind_of(commit(s, vec![TxnOp::InsertInode(file_row(u64::MAX, 1))])), IoErrorKind::Other);
        let mut big = file_row(9, 1);
        big.size = u64::MAX;
        assert_eq!(kind_of(commit(s, vec![TxnOp::InsertInode(big)])), IoErrorKind::Other);
        assert_eq!(kind_of(commit(s, vec![TxnOp::InsertInode(file_row(9, u64::MAX))])), IoErrorKind::Other);
        assert_eq!(
            kind_of(commit(s, vec![TxnOp::InsertDentry(dentry(1, b"x", 9, u64::MAX))])),
            IoErrorKind::Other
        );
        assert_eq!(kind_of(s.exec(&MetaRequest::LoadInode { ino: u64::MAX })), IoErrorKind::Other);
        // What SQLite stores but cannot decode is corrupt when loaded.
        let mut bad = file_row(10, 1);
        bad.perm = 0o17777;
        commit(s, vec![TxnOp::InsertInode(bad), TxnOp::InsertDentry(dentry(1, b"bad", 10, 5))]).unwrap();
        assert_eq!(kind_of(s.exec(&MetaRequest::LoadInode { ino: 10 })), IoErrorKind::Corrupt, "{}", s.name());
        assert_eq!(kind_of(s.exec(&MetaRequest::LoadDir { ino: 1 })), IoErrorKind::Corrupt);
        let mut bad_time = file_row(11, 1);
        bad_time.ctime = ts(0, 1_000_000_000);
        bad_time.nlink = 0;
        commit(s, vec![TxnOp::InsertInode(bad_time)]).unwrap();
        assert_eq!(kind_of(s.exec(&MetaRequest::LoadInode { ino: 11 })), IoErrorKind::Corrupt);
        assert_eq!(kind_of(s.exec(&MetaRequest::ListOrphans)), IoErrorKind::Corrupt);
    });
}

#[test]
fn version_conflicts() {
    on_all(|s| {
        commit(s, vec![TxnOp::InsertInode(file_row(2, 1))]).unwrap();
        commit(s, vec![TxnOp::UpdateInode { row: file_row(2, 2), expect_version: 1 }]).unwrap();
        let stale = commit(s, vec![TxnOp::UpdateInode { row: file_row(2, 2), expect_version: 1 }]);
        assert_eq!(kind_of(stale), IoErrorKind::Conflict, "{}", s.name());
        let missing = commit(s, vec![TxnOp::UpdateInode { row: file_row(9, 2), expect_version: 1 }]);
        assert_eq!(kind_of(missing), IoErrorKind::Conflict);
        assert_eq!(load(s, 2).unwrap().row.version, 2);
        // The stored version is whatever the row says, even a jump.
        commit(s, vec![TxnOp::UpdateInode { row: file_row(2, 40), expect_version: 2 }]).unwrap();
        assert_eq!(load(s, 2).unwrap().row.version, 40);
        assert_eq!(
            kind_of(commit(s, vec![TxnOp::UpdateInode { row: file_row(2, 41), expect_version: u64::MAX }])),
            IoErrorKind::Other
        );
    });
}

/// The SQL stores, which check the fencing tokens of upload leases (`backends::Fence`); the
/// simulator's store has no leases (its token is always 0, which no store checks).
trait Fenced: Store {
    fn fenced(&mut self, ops: Vec<TxnOp>, fence: Fence) -> IoResult;
    fn max_fence(&mut self) -> u64;
}

impl Fenced for Sqlite {
    fn fenced(&mut self, ops: Vec<TxnOp>, fence: Fence) -> IoResult {
        self.meta.execute_fenced(&MetaRequest::Commit(Txn { ops, durable: true }), Some(fence))
    }
    fn max_fence(&mut self) -> u64 {
        self.meta.max_fence().unwrap()
    }
}

impl Fenced for Mysql {
    fn fenced(&mut self, ops: Vec<TxnOp>, fence: Fence) -> IoResult {
        self.meta.execute_fenced(&MetaRequest::Commit(Txn { ops, durable: true }), Some(fence))
    }
    fn max_fence(&mut self) -> u64 {
        self.meta.max_fence().unwrap()
    }
}

/// Runs `check` on the SQL stores.
fn on_sql(check: impl Fn(&mut dyn Fenced)) {
    let mut s = sqlite();
    let root = load(&mut s, ROOT_INO).expect("root").row;
    let mut my = mysql_like(&root);
    check(&mut s);
    check(&mut my);
}

fn update(ino: Ino, version: u64) -> Vec<TxnOp> {
    vec![TxnOp::UpdateInode { row: file_row(ino, version), expect_version: version - 1 }]
}

#[test]
fn fencing_tokens_lower_refused_equal_or_higher_accepted_zero_unchecked() {
    on_sql(|s| {
        let name = s.name();
        let f = |token| Fence { ino: 2, token };
        commit(s, vec![TxnOp::InsertInode(file_row(2, 1))]).unwrap();
        assert_eq!(s.max_fence(), 0, "{name}");
        // Token 0 (no coordination server) is never checked.
        s.fenced(update(2, 2), f(0)).unwrap();
        s.fenced(update(2, 3), f(5)).unwrap();
        // Lower than the row's: refused at the right version, the row untouched.
        let err = s.fenced(update(2, 4), f(4)).unwrap_err();
        assert_eq!(err.kind, IoErrorKind::Conflict, "{name}");
        assert!(err.message.contains("fencing token"), "{name}: {}", err.message);
        assert!(!err.message.contains("0123456789abcdef"), "{name}: object id leaked: {}", err.message);
        assert_eq!(load(s, 2).unwrap().row.version, 3, "{name}");
        // Equal and higher: accepted; the higher one is the row's fence from then on.
        s.fenced(update(2, 4), f(5)).unwrap();
        s.fenced(update(2, 5), f(9)).unwrap();
        assert_eq!(kind_of(s.fenced(update(2, 6), f(8))), IoErrorKind::Conflict, "{name}");
        // 0, and a commit without a fence, are accepted and leave the fence as it is.
        s.fenced(update(2, 6), f(0)).unwrap();
        commit(s, update(2, 7)).unwrap();
        assert_eq!(kind_of(s.fenced(update(2, 8), f(8))), IoErrorKind::Conflict, "{name}");
        assert_eq!(s.max_fence(), 9, "{name}");
        // A fence applies to its own inode only.
        s.fenced(update(2, 8), Fence { ino: 3, token: 1 }).unwrap();
        // A refused fence rolls the whole transaction back.
        let mut ops = vec![TxnOp::InsertInode(file_row(4, 1))];
        ops.extend(update(2, 9));
        assert_eq!(kind_of(s.fenced(ops, f(2))), IoErrorKind::Conflict, "{name}");
        assert_eq!(load(s, 4), None, "{name}: the insert must be rolled back");
        // A stale version fails whatever the token.
        assert_eq!(kind_of(s.fenced(update(2, 8), f(100))), IoErrorKind::Conflict, "{name}");
        assert_eq!(load(s, 2).unwrap().row.version, 8, "{name}");
    });
}

/// Host A takes the upload lease (token 5) and is paused past it; host B takes it (token 6),
/// commits its version; A wakes with B's row re-read (so the version check passes) and commits:
/// refused. B's object stays; A uploads again under a new lease and commits on top.
#[test]
fn a_stale_token_cannot_overwrite_a_newer_row() {
    on_sql(|s| {
        let name = s.name();
        commit(s, vec![TxnOp::InsertInode(file_row(2, 1))]).unwrap();
        let with = |version: u64, object: &str| {
            let mut row = file_row(2, version);
            row.object = Some(ObjectId(object.into()));
            vec![TxnOp::UpdateInode { row, expect_version: version - 1 }]
        };
        s.fenced(with(2, "URI:CHK:from-b"), Fence { ino: 2, token: 6 }).unwrap();
        let err = s.fenced(with(3, "URI:CHK:from-a"), Fence { ino: 2, token: 5 }).unwrap_err();
        assert_eq!(err.kind, IoErrorKind::Conflict, "{name}");
        let row = load(s, 2).unwrap().row;
        assert_eq!((row.version, row.object), (2, Some(ObjectId("URI:CHK:from-b".into()))), "{name}");
        // A's retry, under a lease taken after B's.
        s.fenced(with(3, "URI:CHK:from-a"), Fence { ino: 2, token: 7 }).unwrap();
        assert_eq!(load(s, 2).unwrap().row.object, Some(ObjectId("URI:CHK:from-a".into())), "{name}");
    });
}

#[test]
fn unique_name_and_position_conflicts() {
    on_all(|s| {
        commit(s, vec![TxnOp::InsertInode(file_row(2, 1)), TxnOp::InsertDentry(dentry(1, b"a", 2, 5))]).unwrap();
        let e = |r| kind_of(r);
        assert_eq!(e(commit(s, vec![TxnOp::InsertDentry(dentry(1, b"a", 2, 6))])), IoErrorKind::Conflict, "{}", s.name());
        // Positions are unique across all directories.
        assert_eq!(e(commit(s, vec![TxnOp::InsertDentry(dentry(7, b"q", 2, 5))])), IoErrorKind::Conflict);
        commit(s, vec![TxnOp::InsertDentry(dentry(2, b"a", 2, 7))]).unwrap();
        assert_eq!(e(commit(s, vec![TxnOp::InsertInode(file_row(2, 1))])), IoErrorKind::Conflict);
        assert_eq!(
            e(commit(s, vec![TxnOp::DeleteDentry { parent: 1, name: b"b".to_vec(), ino: 2 }])),
            IoErrorKind::Conflict
        );
        assert_eq!(
            e(commit(s, vec![TxnOp::DeleteDentry { parent: 1, name: b"a".to_vec(), ino: 3 }])),
            IoErrorKind::Conflict
        );
        // Delete then re-insert the same name in one transaction is fine, also at a new position.
        commit(
            s,
            vec![
                TxnOp::DeleteDentry { parent: 1, name: b"a".to_vec(), ino: 2 },
                TxnOp::InsertDentry(dentry(1, b"a", 2, 5)),
            ],
        )
        .unwrap();
        assert_eq!(load_dir(s, 1).len(), 1);
    });
}

#[test]
fn transactions_are_atomic() {
    on_all(|s| {
        commit(s, vec![TxnOp::InsertInode(file_row(2, 1)), TxnOp::InsertDentry(dentry(1, b"a", 2, 5))]).unwrap();
        for second in [
            TxnOp::UpdateInode { row: file_row(2, 9), expect_version: 8 },
            // Deleted earlier in the same transaction.
            TxnOp::DeleteDentry { parent: 1, name: b"a".to_vec(), ino: 2 },
            TxnOp::DeleteDentry { parent: 1, name: b"nope".to_vec(), ino: 2 },
            TxnOp::InsertInode(file_row(2, 1)),
            TxnOp::InsertInode(file_row(u64::MAX, 1)),
        ] {
            let r = commit(
                s,
                vec![
                    TxnOp::InsertInode(file_row(3, 1)),
                    TxnOp::DeleteDentry { parent: 1, name: b"a".to_vec(), ino: 2 },
                    TxnOp::SetXattr { ino: 2, name: b"user.x".to_vec(), value: Bytes::new() },
                    TxnOp::UpdateInode { row: file_row(2, 2), expect_version: 1 },
                    TxnOp::DeleteInode { ino: 1 },
                    second,
                ],
            );
            assert!(r.is_err(), "{}", s.name());
            assert_eq!(load(s, 3), None, "{}: the first op must be rolled back", s.name());
            let two = load(s, 2).unwrap();
            assert!(two.xattrs.is_empty());
            assert_eq!(two.row.version, 1);
            assert!(load(s, ROOT_INO).is_some());
            assert_eq!(load_dir(s, 1).len(), 1);
        }
        // Still usable afterwards, also for a durable commit.
        s.exec(&MetaRequest::Commit(Txn { ops: vec![TxnOp::InsertInode(file_row(3, 1))], durable: true })).unwrap();
        assert!(load(s, 3).is_some());
        s.exec(&MetaRequest::Commit(Txn { ops: vec![], durable: true })).unwrap();
    });
}

#[test]
fn orphans_and_usage() {
    on_all(|s| {
        let mut orphan = file_row(4, 1);
        orphan.nlink = 0;
        let mut dir = file_row(5, 1);
        dir.kind = FileKind::Directory;
        dir.size = 999;
        commit(s, vec![TxnOp::InsertInode(file_row(2, 1)), TxnOp::InsertInode(orphan.clone()), TxnOp::InsertInode(dir)])
            .unwrap();
        assert_eq!(s.exec(&MetaRequest::ListOrphans), Ok(IoReply::Orphans(vec![orphan.clone()])), "{}", s.name());
        let mut unlinked = file_row(2, 2);
        unlinked.nlink = 0;
        commit(s, vec![TxnOp::UpdateInode { row: unlinked.clone(), expect_version: 1 }]).unwrap();
        assert_eq!(s.exec(&MetaRequest::ListOrphans), Ok(IoReply::Orphans(vec![unlinked, orphan])));
        // Only regular files count towards bytes.
        assert_eq!(s.exec(&MetaRequest::Usage), Ok(IoReply::Usage { files: 4, bytes: 2 * 12345 }));
        commit(s, vec![TxnOp::DeleteInode { ino: 2 }, TxnOp::DeleteInode { ino: 4 }]).unwrap();
        assert_eq!(s.exec(&MetaRequest::ListOrphans), Ok(IoReply::Orphans(vec![])));
    });
}

// ----- the random differential run -----

fn random_row(rng: &mut Rng) -> InodeRow {
    let mut row = file_row(rng.range(1, 8), rng.range(1, 4));
    row.kind = *rng.pick(&[FileKind::Regular, FileKind::Directory, FileKind::Symlink, FileKind::Fifo]);
    row.nlink = rng.range(0, 3) as u32;
    row.size = rng.below(1000);
    row.perm = if rng.chance(0.02) { 0o10000 } else { rng.below(0o7777) as u16 };
    row.object = rng.chance(0.5).then(|| ObjectId(format!("{:032x}", rng.below(5))));
    row.target = rng.chance(0.3).then(|| b"t".to_vec());
    if rng.chance(0.01) {
        row.ino = u64::MAX;
    }
    row
}

fn random_txn_op(rng: &mut Rng) -> TxnOp {
    let name = |rng: &mut Rng| rng.pick(&[&b"a"[..], b"b", b"c"]).to_vec();
    match rng.below(7) {
        0 => TxnOp::InsertInode(random_row(rng)),
        1 => {
            let row = random_row(rng);
            let expect = if rng.chance(0.7) { row.version.saturating_sub(1) } else { rng.below(4) };
            TxnOp::UpdateInode { row, expect_version: expect }
        }
        2 => TxnOp::DeleteInode { ino: rng.range(1, 8) },
        3 => TxnOp::InsertDentry(dentry(rng.range(1, 4), &name(rng), rng.range(1, 8), rng.range(1, 12))),
        4 => TxnOp::DeleteDentry { parent: rng.range(1, 4), name: name(rng), ino: rng.range(1, 8) },
        5 => TxnOp::SetXattr {
            ino: rng.range(1, 8),
            name: rng.pick(&[&b"user.a"[..], b"user.b"]).to_vec(),
            value: Bytes::from(vec![rng.below(256) as u8; rng.below(4) as usize]),
        },
        _ => TxnOp::RemoveXattr { ino: rng.range(1, 8), name: rng.pick(&[&b"user.a"[..], b"user.b"]).to_vec() },
    }
}

fn random_request(rng: &mut Rng) -> MetaRequest {
    match rng.below(10) {
        0 => MetaRequest::AllocIds { count: rng.range(0, 5) },
        1 | 2 => MetaRequest::LoadInode { ino: rng.range(1, 8) },
        3 => MetaRequest::LoadDir { ino: rng.range(1, 4) },
        4 => MetaRequest::ListOrphans,
        5 => MetaRequest::Usage,
        _ => {
            let n = rng.range(0, 4);
            MetaRequest::Commit(Txn { ops: (0..n).map(|_| random_txn_op(rng)).collect(), durable: rng.chance(0.1) })
        }
    }
}

/// Same answer, or both failing the same way (the messages differ).
fn same(a: &IoResult, b: &IoResult) -> bool {
    match (a, b) {
        (Ok(x), Ok(y)) => x == y,
        (Err(x), Err(y)) => x.kind == y.kind,
        _ => false,
    }
}

#[test]
fn random_requests_get_the_same_answers() {
    let mut outcomes: std::collections::BTreeMap<String, u64> = Default::default();
    for seed in 0..6 {
        let (mut m, mut s, mut my) = all();
        let mut rng = Rng::new(seed);
        for i in 0..600 {
            let req = random_request(&mut rng);
            let a = m.exec(&req);
            let b = s.exec(&req);
            let c = my.exec(&req);
            assert!(same(&a, &b), "seed {seed}, request {i}: {req:?}\n  mem:    {a:?}\n  sqlite: {b:?}");
            assert!(same(&a, &c), "seed {seed}, request {i}: {req:?}\n  mem:    {a:?}\n  mysql:  {c:?}");
            let what = match (&req, &a) {
                (MetaRequest::Commit(_), Ok(_)) => "commit ok".to_string(),
                (MetaRequest::LoadDir { .. }, Ok(IoReply::Dir(d))) if !d.is_empty() => "listing".to_string(),
                (_, Err(e)) => format!("{:?}", e.kind),
                _ => "other".to_string(),
            };
            *outcomes.entry(what).or_default() += 1;
        }
        // And the final states agree on every inode and directory.
        for ino in 1..=8 {
            for req in [MetaRequest::LoadInode { ino }, MetaRequest::LoadDir { ino }] {
                let a = m.exec(&req);
                let b = s.exec(&req);
                let c = my.exec(&req);
                assert!(same(&a, &b), "seed {seed}: {req:?}: {a:?} vs sqlite {b:?}");
                assert!(same(&a, &c), "seed {seed}: {req:?}: {a:?} vs mysql {c:?}");
            }
        }
    }
    // The run must have covered success and every way to fail.
    for what in ["commit ok", "listing", "Conflict", "Other", "Corrupt"] {
        assert!(outcomes.get(what).copied().unwrap_or(0) >= 5, "too few {what:?}: {outcomes:?}");
    }
}
