//! Durable state: identities, person↔daemon links, mismatch reports, the
//! blacklist. SQLite in WAL mode with `synchronous=FULL`: a commit returns after
//! the WAL is fsynced, and the coordinator acknowledges a write only after its
//! commit returned, so acknowledged writes survive `kill -9` and power loss.
//!
//! Why SQLite (rusqlite, bundled) and not redb: the operator's
//! `dportage coordinator blacklist list|lift --data DIR` opens the same database
//! while the coordinator runs (redb holds an exclusive lock on its file), WAL
//! gives readers that never block the writer, and `sqlite3 DIR/coordinator.db`
//! lets an operator inspect reports with plain SQL.
//!
//! One writer thread owns the write connection and commits in groups: it takes
//! every queued operation (up to [`MAX_BATCH`]), applies each in its own
//! savepoint, commits once, then answers each. Under load many writes share one
//! fsync; alone, a write waits for exactly one.

use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc};

use rusqlite::{params, Connection, OptionalExtension};

use crate::network::api::BlacklistEntry;
use crate::network::identity::{IdentityId, IdentityIdError};

pub const DB_FILE: &str = "coordinator.db";
const MAX_BATCH: usize = 512;
const SCHEMA_VERSION: i64 = 1;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database {path}: {source}")]
    Sqlite {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("cannot create data directory {path}: {source}")]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("database {0} was written by a newer dportage (schema {1}); upgrade dportage")]
    NewerSchema(PathBuf, i64),
    #[error("cannot start the writer thread of {path}: {source}; the system is out of threads or memory")]
    WriterThread {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the store's writer thread has stopped; the change was not saved")]
    WriterGone,
    /// One failure answers every write of a batch, hence the shared source.
    #[error("could not save the change to {path} ({source}); it was not applied, retry later")]
    NotSaved {
        path: PathBuf,
        source: Arc<rusqlite::Error>,
    },
    #[error("bad row in table {table} of {path}: {why}; fix or delete it with sqlite3")]
    BadRow {
        path: PathBuf,
        table: &'static str,
        why: String,
    },
}

/// How a blacklisting is decided from the reports against one host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlacklistRule {
    /// Distinct reporter owner groups needed.
    pub min_reporters: u32,
    /// When all those reporters share fewer networks than this, one more
    /// reporter is needed ("prefer distinct networks"). The default, 1, lets
    /// two owners on one LAN (or on 127.0.0.x) blacklist a liar; a public
    /// coordinator raises it with `--reporter-networks 2`.
    pub min_networks: u32,
}

impl Default for BlacklistRule {
    fn default() -> Self {
        Self {
            min_reporters: 2,
            min_networks: 1,
        }
    }
}

impl BlacklistRule {
    pub fn decide(&self, reporters: u32, networks: u32) -> bool {
        reporters >= self.min_reporters
            && (networks >= self.min_networks || reporters > self.min_reporters)
    }
}

/// A write the coordinator must not acknowledge before it is durable.
#[derive(Debug, Clone)]
pub enum WriteOp {
    Register {
        id: IdentityId,
        daemon: bool,
        now: u64,
        network: String,
    },
    RegisterMany(Vec<(IdentityId, bool, String)>, u64),
    Link {
        person: IdentityId,
        daemon: IdentityId,
        now: u64,
        /// The two owner groups merge: reports filed under the owner `.0` now
        /// count under `.1`, so one owner stays one reporter.
        merge_owners: Option<(IdentityId, IdentityId)>,
    },
    Report(ReportRow),
    Lift {
        id: IdentityId,
    },
}

#[derive(Debug, Clone)]
pub struct ReportRow {
    pub reported: IdentityId,
    pub reporter: IdentityId,
    pub reporter_owner: IdentityId,
    pub reporter_network: String,
    pub received: u64,
    pub report_time: u64,
    pub input_hash: String,
    pub body: String,
    pub rule: BlacklistRule,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteResult {
    Done,
    Report {
        report_id: i64,
        reporters: u32,
        networks: u32,
        newly_blacklisted: Option<BlacklistEntry>,
        blacklisted: bool,
    },
    Lifted(bool),
}

type Reply = tokio::sync::oneshot::Sender<Result<WriteResult, StoreError>>;

/// What the coordinator loads at start.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub identities: Vec<(IdentityId, bool)>,
    pub links: Vec<(IdentityId, IdentityId)>,
    pub blacklist: Vec<BlacklistEntry>,
}

/// Handle to the writer thread. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    tx: mpsc::Sender<(WriteOp, Reply)>,
    path: PathBuf,
}

fn sql_err(path: &Path) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
    move |source| StoreError::Sqlite {
        path: path.to_path_buf(),
        source,
    }
}

/// Open (creating if needed) `dir/coordinator.db` with the durability settings.
pub fn open_connection(dir: &Path) -> Result<Connection, StoreError> {
    std::fs::create_dir_all(dir).map_err(|source| StoreError::Dir {
        path: dir.to_path_buf(),
        source,
    })?;
    let path = dir.join(DB_FILE);
    let e = sql_err(&path);
    let conn = Connection::open(&path).map_err(&e)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))
        .map_err(&e)?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(&e)?;
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(&e)?;
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value INTEGER NOT NULL);
         CREATE TABLE IF NOT EXISTS identities(
             id TEXT PRIMARY KEY, daemon INTEGER NOT NULL,
             first_seen INTEGER NOT NULL, first_network TEXT NOT NULL);
         CREATE TABLE IF NOT EXISTS links(
             person TEXT NOT NULL, daemon TEXT NOT NULL, created INTEGER NOT NULL,
             PRIMARY KEY(person, daemon));
         CREATE TABLE IF NOT EXISTS reports(
             id INTEGER PRIMARY KEY AUTOINCREMENT,
             reported TEXT NOT NULL, reporter TEXT NOT NULL, reporter_owner TEXT NOT NULL,
             reporter_network TEXT NOT NULL, received INTEGER NOT NULL,
             report_time INTEGER NOT NULL, input_hash TEXT NOT NULL, body TEXT NOT NULL,
             cleared INTEGER NOT NULL DEFAULT 0);
         CREATE INDEX IF NOT EXISTS reports_by_reported ON reports(reported, cleared);
         CREATE TABLE IF NOT EXISTS blacklist(
             id TEXT PRIMARY KEY, since INTEGER NOT NULL, reason TEXT NOT NULL);",
    )
    .map_err(&e)?;
    let version: Option<i64> = conn
        .query_row("SELECT value FROM meta WHERE key='schema'", [], |r| {
            r.get(0)
        })
        .optional()
        .map_err(&e)?;
    match version {
        None => {
            conn.execute(
                "INSERT INTO meta(key, value) VALUES('schema', ?1)",
                [SCHEMA_VERSION],
            )
            .map_err(&e)?;
        }
        Some(v) if v > SCHEMA_VERSION => return Err(StoreError::NewerSchema(path.clone(), v)),
        Some(_) => {}
    }
    Ok(conn)
}

fn parse_id(path: &Path, table: &'static str, s: &str) -> Result<IdentityId, StoreError> {
    s.parse()
        .map_err(|why: IdentityIdError| StoreError::BadRow {
            path: path.to_path_buf(),
            table,
            why: why.to_string(),
        })
}

/// The blacklist as stored, newest first.
pub fn read_blacklist(conn: &Connection, path: &Path) -> Result<Vec<BlacklistEntry>, StoreError> {
    let e = sql_err(path);
    let mut st = conn
        .prepare("SELECT id, since, reason FROM blacklist ORDER BY since DESC, id")
        .map_err(&e)?;
    let rows = st
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, String>(2)?,
            ))
        })
        .map_err(&e)?;
    let mut out = Vec::new();
    for row in rows {
        let (id, since, reason) = row.map_err(&e)?;
        out.push(BlacklistEntry {
            id: parse_id(path, "blacklist", &id)?,
            since: since.max(0) as u64,
            reason,
        });
    }
    Ok(out)
}

/// Lift a blacklist entry: delete it and mark the reports that led to it as
/// cleared, so the host starts from zero reports. Returns whether it was listed.
pub fn lift(conn: &mut Connection, path: &Path, id: &IdentityId) -> Result<bool, StoreError> {
    let e = sql_err(path);
    let tx = conn.transaction().map_err(&e)?;
    let n = tx
        .execute("DELETE FROM blacklist WHERE id=?1", [id.to_string()])
        .map_err(&e)?;
    tx.execute(
        "UPDATE reports SET cleared=1 WHERE reported=?1",
        [id.to_string()],
    )
    .map_err(&e)?;
    tx.commit().map_err(&e)?;
    Ok(n > 0)
}

/// One stored report, as the admin CLI shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredReport {
    pub received: u64,
    pub reporter: String,
    pub network: String,
    /// Lifted: no longer counts towards a blacklisting.
    pub cleared: bool,
    pub body: String,
}

/// Reports against `id` (all, newest first).
pub fn read_reports(
    conn: &Connection,
    path: &Path,
    id: &IdentityId,
) -> Result<Vec<StoredReport>, StoreError> {
    let e = sql_err(path);
    let mut st = conn
        .prepare("SELECT received, reporter, reporter_network, cleared, body FROM reports WHERE reported=?1 ORDER BY id DESC")
        .map_err(&e)?;
    let rows = st
        .query_map([id.to_string()], |r| {
            Ok(StoredReport {
                received: r.get::<_, i64>(0)?.max(0) as u64,
                reporter: r.get(1)?,
                network: r.get(2)?,
                cleared: r.get::<_, i64>(3)? != 0,
                body: r.get(4)?,
            })
        })
        .map_err(&e)?;
    rows.collect::<Result<Vec<_>, _>>().map_err(&e)
}

/// `PRAGMA data_version`: changes when another connection commits.
pub fn data_version(conn: &Connection) -> Option<i64> {
    conn.query_row("PRAGMA data_version", [], |r| r.get(0)).ok()
}

impl Store {
    /// Open the store under `dir`, load the snapshot, start the writer thread.
    pub fn open(dir: &Path) -> Result<(Store, Snapshot), StoreError> {
        let conn = open_connection(dir)?;
        let path = dir.join(DB_FILE);
        let snapshot = load(&conn, &path)?;
        let (tx, rx) = mpsc::channel::<(WriteOp, Reply)>();
        let wpath = path.clone();
        std::thread::Builder::new()
            .name("dportage-store".into())
            .spawn(move || writer(conn, wpath, rx))
            .map_err(|source| StoreError::WriterThread {
                path: path.clone(),
                source,
            })?;
        Ok((Store { tx, path }, snapshot))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Queue a write; resolves once it is committed (durable) or failed.
    pub async fn write(&self, op: WriteOp) -> Result<WriteResult, StoreError> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        self.tx
            .send((op, reply))
            .map_err(|_| StoreError::WriterGone)?;
        rx.await.map_err(|_| StoreError::WriterGone)?
    }
}

fn load(conn: &Connection, path: &Path) -> Result<Snapshot, StoreError> {
    let e = sql_err(path);
    let mut snap = Snapshot::default();
    {
        let mut st = conn
            .prepare("SELECT id, daemon FROM identities")
            .map_err(&e)?;
        let rows = st
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
            .map_err(&e)?;
        for row in rows {
            let (id, daemon) = row.map_err(&e)?;
            snap.identities
                .push((parse_id(path, "identities", &id)?, daemon != 0));
        }
    }
    {
        let mut st = conn
            .prepare("SELECT person, daemon FROM links ORDER BY created")
            .map_err(&e)?;
        let rows = st
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
            .map_err(&e)?;
        for row in rows {
            let (p, d) = row.map_err(&e)?;
            snap.links
                .push((parse_id(path, "links", &p)?, parse_id(path, "links", &d)?));
        }
    }
    snap.blacklist = read_blacklist(conn, path)?;
    Ok(snap)
}

fn writer(mut conn: Connection, path: PathBuf, rx: mpsc::Receiver<(WriteOp, Reply)>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let not_saved = |source| StoreError::NotSaved {
            path: path.clone(),
            source,
        };
        let mut results: Vec<Result<WriteResult, StoreError>> = Vec::with_capacity(batch.len());
        let committed = (|| -> Result<(), rusqlite::Error> {
            let tx = conn.transaction()?;
            for (op, _) in &batch {
                let sp_result = (|| {
                    let sp = tx.unchecked_transaction_savepoint()?;
                    let r = apply(&sp, op)?;
                    sp.commit()?;
                    Ok::<_, rusqlite::Error>(r)
                })();
                results.push(sp_result.map_err(|e| not_saved(Arc::new(e))));
            }
            tx.commit()
        })();
        match committed {
            Ok(()) => {
                for ((_, reply), r) in batch.into_iter().zip(results) {
                    let _ = reply.send(r);
                }
            }
            Err(err) => {
                tracing::error!("commit to {} failed: {err}", path.display());
                let err = Arc::new(err);
                for (_, reply) in batch {
                    let _ = reply.send(Err(not_saved(err.clone())));
                }
            }
        }
    }
}

/// Savepoints on a shared transaction reference (rusqlite only offers them on
/// `&mut Transaction`); this is the same SQL.
trait SavepointExt {
    fn unchecked_transaction_savepoint(&self) -> Result<Sp<'_>, rusqlite::Error>;
}

struct Sp<'a> {
    conn: &'a Connection,
    done: bool,
}

impl SavepointExt for rusqlite::Transaction<'_> {
    fn unchecked_transaction_savepoint(&self) -> Result<Sp<'_>, rusqlite::Error> {
        self.execute_batch("SAVEPOINT op")?;
        Ok(Sp {
            conn: self,
            done: false,
        })
    }
}

impl Sp<'_> {
    fn commit(mut self) -> Result<(), rusqlite::Error> {
        self.done = true;
        self.conn.execute_batch("RELEASE op")
    }
}

impl Drop for Sp<'_> {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.conn.execute_batch("ROLLBACK TO op; RELEASE op");
        }
    }
}

impl std::ops::Deref for Sp<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        self.conn
    }
}

fn apply(conn: &Connection, op: &WriteOp) -> Result<WriteResult, rusqlite::Error> {
    match op {
        WriteOp::Register {
            id,
            daemon,
            now,
            network,
        } => {
            conn.execute(
                "INSERT INTO identities(id, daemon, first_seen, first_network) VALUES(?1, ?2, ?3, ?4)
                 ON CONFLICT(id) DO UPDATE SET daemon = max(daemon, excluded.daemon)",
                params![id.to_string(), *daemon as i64, *now as i64, network],
            )?;
            Ok(WriteResult::Done)
        }
        WriteOp::RegisterMany(rows, now) => {
            let mut st = conn.prepare_cached(
                "INSERT INTO identities(id, daemon, first_seen, first_network) VALUES(?1, ?2, ?3, ?4)
                 ON CONFLICT(id) DO UPDATE SET daemon = max(daemon, excluded.daemon)",
            )?;
            for (id, daemon, network) in rows {
                st.execute(params![
                    id.to_string(),
                    *daemon as i64,
                    *now as i64,
                    network
                ])?;
            }
            Ok(WriteResult::Done)
        }
        WriteOp::Link {
            person,
            daemon,
            now,
            merge_owners,
        } => {
            if let Some((from, into)) = merge_owners {
                conn.execute(
                    "UPDATE reports SET reporter_owner=?2 WHERE reporter_owner=?1",
                    params![from.to_string(), into.to_string()],
                )?;
            }
            conn.execute(
                "INSERT OR IGNORE INTO links(person, daemon, created) VALUES(?1, ?2, ?3)",
                params![person.to_string(), daemon.to_string(), *now as i64],
            )?;
            conn.execute(
                "INSERT OR IGNORE INTO identities(id, daemon, first_seen, first_network) VALUES(?1, 0, ?2, '')",
                params![person.to_string(), *now as i64],
            )?;
            Ok(WriteResult::Done)
        }
        WriteOp::Report(r) => {
            conn.execute(
                "INSERT INTO reports(reported, reporter, reporter_owner, reporter_network, received,
                                     report_time, input_hash, body)
                 VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    r.reported.to_string(),
                    r.reporter.to_string(),
                    r.reporter_owner.to_string(),
                    r.reporter_network,
                    r.received as i64,
                    r.report_time.min(i64::MAX as u64) as i64,
                    r.input_hash,
                    r.body
                ],
            )?;
            let report_id = conn.last_insert_rowid();
            let (reporters, networks): (i64, i64) = conn.query_row(
                "SELECT count(DISTINCT reporter_owner), count(DISTINCT reporter_network)
                 FROM reports WHERE reported=?1 AND cleared=0",
                [r.reported.to_string()],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )?;
            let (reporters, networks) = (reporters.max(0) as u32, networks.max(0) as u32);
            let already: bool = conn
                .query_row(
                    "SELECT 1 FROM blacklist WHERE id=?1",
                    [r.reported.to_string()],
                    |_| Ok(()),
                )
                .optional()?
                .is_some();
            let mut newly = None;
            if !already && r.rule.decide(reporters, networks) {
                let reason = format!(
                    "mismatch reports from {reporters} different members on {networks} network(s); latest input {}",
                    r.input_hash.chars().take(16).collect::<String>()
                );
                conn.execute(
                    "INSERT INTO blacklist(id, since, reason) VALUES(?1, ?2, ?3)",
                    params![r.reported.to_string(), r.received as i64, reason],
                )?;
                newly = Some(BlacklistEntry {
                    id: r.reported,
                    since: r.received,
                    reason,
                });
            }
            let blacklisted = already || newly.is_some();
            Ok(WriteResult::Report {
                report_id,
                reporters,
                networks,
                newly_blacklisted: newly,
                blacklisted,
            })
        }
        WriteOp::Lift { id } => {
            let n = conn.execute("DELETE FROM blacklist WHERE id=?1", [id.to_string()])?;
            conn.execute(
                "UPDATE reports SET cleared=1 WHERE reported=?1",
                [id.to_string()],
            )?;
            Ok(WriteResult::Lifted(n > 0))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::identity::Identity;

    fn report(reported: IdentityId, reporter: IdentityId, net: &str) -> WriteOp {
        WriteOp::Report(ReportRow {
            reported,
            reporter,
            reporter_owner: reporter,
            reporter_network: net.into(),
            received: 100,
            report_time: 99,
            input_hash: "ab".repeat(32),
            body: "{}".into(),
            rule: BlacklistRule::default(),
        })
    }

    #[test]
    fn rule() {
        let r = BlacklistRule::default();
        assert!(!r.decide(1, 1));
        assert!(!r.decide(1, 5), "one reporter never suffices");
        assert!(r.decide(2, 1), "two reporters suffice by default");
        let strict = BlacklistRule {
            min_networks: 2,
            ..r
        };
        assert!(!strict.decide(1, 5));
        assert!(
            !strict.decide(2, 1),
            "two reporters on one network need a third"
        );
        assert!(strict.decide(2, 2));
        assert!(strict.decide(3, 1));
    }

    #[tokio::test]
    async fn reports_blacklist_and_lift_persist() {
        let dir = tempfile::tempdir().unwrap();
        let bad = Identity::generate().id();
        let (a, b) = (Identity::generate().id(), Identity::generate().id());
        {
            let (store, snap) = Store::open(dir.path()).unwrap();
            assert!(snap.blacklist.is_empty());
            store
                .write(WriteOp::Register {
                    id: bad,
                    daemon: true,
                    now: 1,
                    network: "n".into(),
                })
                .await
                .unwrap();
            for _ in 0..5 {
                let r = store.write(report(bad, a, "10.0.0.0/24")).await.unwrap();
                assert!(
                    matches!(
                        r,
                        WriteResult::Report {
                            reporters: 1,
                            blacklisted: false,
                            ..
                        }
                    ),
                    "{r:?}"
                );
            }
            let r = store.write(report(bad, b, "10.0.1.0/24")).await.unwrap();
            assert!(
                matches!(
                    r,
                    WriteResult::Report {
                        reporters: 2,
                        networks: 2,
                        newly_blacklisted: Some(_),
                        ..
                    }
                ),
                "{r:?}"
            );
            let r = store.write(report(bad, b, "10.0.1.0/24")).await.unwrap();
            assert!(
                matches!(
                    r,
                    WriteResult::Report {
                        newly_blacklisted: None,
                        blacklisted: true,
                        ..
                    }
                ),
                "{r:?}"
            );
        }
        // Reopen: the blacklist is there.
        let mut conn = open_connection(dir.path()).unwrap();
        let path = dir.path().join(DB_FILE);
        let bl = read_blacklist(&conn, &path).unwrap();
        assert_eq!(bl.len(), 1);
        assert_eq!(bl[0].id, bad);
        assert!(lift(&mut conn, &path, &bad).unwrap());
        assert!(!lift(&mut conn, &path, &bad).unwrap());
        assert!(read_blacklist(&conn, &path).unwrap().is_empty());
        // After a lift the old reports no longer count.
        let (store, snap) = Store::open(dir.path()).unwrap();
        assert_eq!(snap.identities, vec![(bad, true)]);
        let r = store.write(report(bad, a, "10.0.0.0/24")).await.unwrap();
        assert!(
            matches!(
                r,
                WriteResult::Report {
                    reporters: 1,
                    blacklisted: false,
                    ..
                }
            ),
            "{r:?}"
        );
        assert_eq!(read_reports(&conn, &path, &bad).unwrap().len(), 8);
    }

    #[tokio::test]
    async fn group_commit_many_writers() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Store::open(dir.path()).unwrap();
        let ids: Vec<IdentityId> = (0..300).map(|_| Identity::generate().id()).collect();
        let futs: Vec<_> = ids
            .iter()
            .map(|id| {
                let s = store.clone();
                let id = *id;
                tokio::spawn(async move {
                    s.write(WriteOp::Register {
                        id,
                        daemon: true,
                        now: 5,
                        network: "x".into(),
                    })
                    .await
                })
            })
            .collect();
        for f in futs {
            assert_eq!(f.await.unwrap().unwrap(), WriteResult::Done);
        }
        drop(store);
        let (_, snap) = Store::open(dir.path()).unwrap();
        assert_eq!(snap.identities.len(), 300);
    }
}
