//! Durable state: identities, person↔daemon links, mismatch reports, the
//! blacklist (identities, the addresses they covered, whole networks) and
//! each host's standing record. SQLite in WAL mode with `synchronous=FULL`: a commit returns after
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

use crate::coordinator::cache_index::{hash_bytes, EntryRow};
use crate::network::api::{BlacklistEntry, NetworkBlacklistEntry};
use crate::network::identity::{IdentityId, IdentityIdError};
use crate::trust::cache_entry::CacheKey;
use crate::trust::standing::HostRecord;

pub const DB_FILE: &str = "coordinator.db";
const MAX_BATCH: usize = 512;
const SCHEMA_VERSION: i64 = 3;

/// Schema 1 → 2: standing records (one per host identity, created at its
/// first registration; hosts registered before get one dated then), the
/// blacklist's network and addresses, blacklisted networks, and per report
/// whether it counts (its reporter was established) plus an index to find
/// duplicates.
const MIGRATION_2: &str = "
    ALTER TABLE blacklist ADD COLUMN network TEXT NOT NULL DEFAULT '';
    ALTER TABLE reports ADD COLUMN counts INTEGER NOT NULL DEFAULT 1;
    CREATE INDEX IF NOT EXISTS reports_dedup ON reports(reported, reporter, input_hash);
    CREATE TABLE IF NOT EXISTS blacklist_addresses(
        address TEXT NOT NULL, id TEXT NOT NULL, PRIMARY KEY(address, id));
    CREATE INDEX IF NOT EXISTS blacklist_addresses_by_id ON blacklist_addresses(id);
    CREATE TABLE IF NOT EXISTS blacklisted_networks(
        network TEXT PRIMARY KEY, since INTEGER NOT NULL, reason TEXT NOT NULL);
    CREATE TABLE IF NOT EXISTS host_records(
        id TEXT PRIMARY KEY, registered_at INTEGER NOT NULL,
        challenges_passed INTEGER NOT NULL DEFAULT 0,
        challenges_failed INTEGER NOT NULL DEFAULT 0,
        challenges_failed_in_a_row INTEGER NOT NULL DEFAULT 0,
        last_passed_at INTEGER NOT NULL DEFAULT 0,
        agreements INTEGER NOT NULL DEFAULT 0,
        strikes INTEGER NOT NULL DEFAULT 0,
        vouched INTEGER NOT NULL DEFAULT 0);
    INSERT OR IGNORE INTO host_records(id, registered_at)
        SELECT id, first_seen FROM identities WHERE daemon=1;
";

/// Schema 2 → 3: the result cache's entries (issue 16). Ids and hashes are
/// hex; witnesses and holders comma-separated ids; a withdrawn entry keeps
/// its row (members audit against it).
const MIGRATION_3: &str = "
    CREATE TABLE IF NOT EXISTS cache_entries(
        key TEXT PRIMARY KEY, toolchain TEXT NOT NULL, result TEXT NOT NULL,
        witnesses TEXT NOT NULL, holders TEXT NOT NULL DEFAULT '',
        made_at INTEGER NOT NULL, hits INTEGER NOT NULL DEFAULT 0,
        withdrawn_at INTEGER, withdrawn_reason TEXT);
";

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
    /// The daemon (or the person) ends a link; owner groups are rebuilt
    /// from the links that remain (here at the next start, in the pool now).
    Unlink {
        person: IdentityId,
        daemon: IdentityId,
    },
    Report(ReportRow),
    /// Lift an identity's blacklisting (and the addresses it covered).
    Lift {
        id: IdentityId,
    },
    /// Lift a network's blacklisting (`a.b.c.0/24`).
    LiftNetwork {
        network: String,
    },
    /// Set or clear the operator's vouching of a host.
    Vouch {
        id: IdentityId,
        vouched: bool,
    },
    /// A challenge job the coordinator sent `id` was answered correctly
    /// (`passed`), or wrongly or not at all.
    Challenge {
        id: IdentityId,
        passed: bool,
        now: u64,
    },
    /// `id` agreed with an established host on a verified job.
    Agreement {
        id: IdentityId,
    },
    /// Blacklist `id` by a decision (an adjudication's ruling): its addresses
    /// too, and its network at `network_strikes` blacklisted hosts.
    Blacklist(BlacklistRow),
    /// An adjudication decided (or given up): kept for the operator.
    Adjudication(AdjudicationRow),
    /// A cache entry was made.
    CacheEntry(EntryRow),
    /// A host claimed an entry's result after it was made.
    CacheHolder {
        key: CacheKey,
        holder: IdentityId,
    },
    /// An adjudication ruled the entry wrong.
    CacheWithdraw {
        key: CacheKey,
        at: u64,
        reason: String,
    },
    /// Hit counts (flushed in batches: a lost batch costs only statistics).
    CacheHits(Vec<(CacheKey, u64)>),
}

/// A blacklisting decided by an adjudication (not counted from reports).
#[derive(Debug, Clone)]
pub struct BlacklistRow {
    pub id: IdentityId,
    pub now: u64,
    pub reason: String,
    pub addresses: Vec<String>,
    /// The network it heartbeats from (`a.b.c.0/24`), empty if unknown.
    pub network: String,
    pub network_strikes: u32,
}

/// One adjudication as recorded in the `adjudications` table.
#[derive(Debug, Clone)]
pub struct AdjudicationRow {
    pub accused: IdentityId,
    pub input_hash: String,
    /// The reports it decided, comma separated ids.
    pub report_ids: String,
    /// `id=result_hash` per referee (or `id=error`), comma separated.
    pub referees: String,
    /// `accused_wrong`, `report_false`, `unconfirmed`, `inconclusive` or `dropped`.
    pub ruling: String,
    /// Who was struck, comma separated.
    pub struck: String,
    pub now: u64,
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
    /// The reporter's owner group has an established host: the report can
    /// start an adjudication. Otherwise it is only stored.
    pub counts: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteResult {
    Done,
    Report {
        report_id: i64,
        reporters: u32,
        networks: u32,
        /// The reported host is blacklisted (by an earlier decision: a
        /// report never blacklists by itself).
        blacklisted: bool,
        /// The reporter had reported this host for this input before: nothing
        /// was stored, `report_id` is the first report's.
        duplicate: bool,
    },
    Lifted(bool),
    /// A host's record after the change; `None`: no such host.
    Record(Option<HostRecord>),
    /// A [`WriteOp::Blacklist`]: the new entry (`None`: it was already
    /// blacklisted) and the network it blacklisted, if any.
    Blacklisted {
        newly: Option<BlacklistEntry>,
        network: Option<NetworkBlacklistEntry>,
    },
}

type Reply = tokio::sync::oneshot::Sender<Result<WriteResult, StoreError>>;

/// What the coordinator loads at start.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub identities: Vec<(IdentityId, bool)>,
    pub links: Vec<(IdentityId, IdentityId)>,
    pub blacklist: Blacklist,
    pub records: Vec<(IdentityId, HostRecord)>,
    pub cache_entries: Vec<EntryRow>,
}

/// Everything blacklisted: identities (with the addresses they cover) and
/// networks.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Blacklist {
    pub entries: Vec<BlacklistEntry>,
    pub networks: Vec<NetworkBlacklistEntry>,
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
             id TEXT PRIMARY KEY, since INTEGER NOT NULL, reason TEXT NOT NULL);
         CREATE TABLE IF NOT EXISTS adjudications(
             id INTEGER PRIMARY KEY AUTOINCREMENT, accused TEXT NOT NULL,
             input_hash TEXT NOT NULL, report_ids TEXT NOT NULL, referees TEXT NOT NULL,
             ruling TEXT NOT NULL, struck TEXT NOT NULL, time INTEGER NOT NULL);",
    )
    .map_err(&e)?;
    match schema_version(&conn).map_err(&e)? {
        Some(v) if v > SCHEMA_VERSION => return Err(StoreError::NewerSchema(path.clone(), v)),
        Some(SCHEMA_VERSION) => {}
        _ => migrate(&conn, &path)?,
    }
    Ok(conn)
}

fn schema_version(conn: &Connection) -> Result<Option<i64>, rusqlite::Error> {
    conn.query_row("SELECT value FROM meta WHERE key='schema'", [], |r| {
        r.get(0)
    })
    .optional()
}

/// Bring the schema to [`SCHEMA_VERSION`] in one write transaction. Another
/// process opening the database at the same time (the admin CLI) waits for
/// it and then finds nothing left to do.
fn migrate(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    let e = sql_err(path);
    conn.execute_batch("BEGIN IMMEDIATE").map_err(&e)?;
    let steps = || -> Result<(), StoreError> {
        let version = match schema_version(conn).map_err(&e)? {
            // A new database: the tables above are schema 1's.
            None => {
                conn.execute("INSERT INTO meta(key, value) VALUES('schema', 1)", [])
                    .map_err(&e)?;
                1
            }
            Some(v) if v > SCHEMA_VERSION => {
                return Err(StoreError::NewerSchema(path.to_path_buf(), v))
            }
            Some(v) => v,
        };
        if version < 2 {
            conn.execute_batch(MIGRATION_2).map_err(&e)?;
        }
        if version < 3 {
            conn.execute_batch(MIGRATION_3).map_err(&e)?;
        }
        conn.execute(
            "UPDATE meta SET value=?1 WHERE key='schema'",
            [SCHEMA_VERSION],
        )
        .map_err(&e)?;
        Ok(())
    };
    match steps() {
        Ok(()) => conn.execute_batch("COMMIT").map_err(&e),
        Err(err) => {
            let _ = conn.execute_batch("ROLLBACK");
            Err(err)
        }
    }
}

fn parse_id(path: &Path, table: &'static str, s: &str) -> Result<IdentityId, StoreError> {
    s.parse()
        .map_err(|why: IdentityIdError| StoreError::BadRow {
            path: path.to_path_buf(),
            table,
            why: why.to_string(),
        })
}

/// The blacklisted identities as stored, newest first, with the addresses
/// they cover.
pub fn read_blacklist(conn: &Connection, path: &Path) -> Result<Vec<BlacklistEntry>, StoreError> {
    let e = sql_err(path);
    let mut addresses: std::collections::HashMap<String, Vec<String>> = Default::default();
    {
        let mut st = conn
            .prepare("SELECT id, address FROM blacklist_addresses ORDER BY address")
            .map_err(&e)?;
        let rows = st
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
            .map_err(&e)?;
        for row in rows {
            let (id, address) = row.map_err(&e)?;
            addresses.entry(id).or_default().push(address);
        }
    }
    let mut st = conn
        .prepare("SELECT id, since, reason, network FROM blacklist ORDER BY since DESC, id")
        .map_err(&e)?;
    let rows = st
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
            ))
        })
        .map_err(&e)?;
    let mut out = Vec::new();
    for row in rows {
        let (id, since, reason, network) = row.map_err(&e)?;
        out.push(BlacklistEntry {
            addresses: addresses.remove(&id).unwrap_or_default(),
            id: parse_id(path, "blacklist", &id)?,
            since: since.max(0) as u64,
            reason,
            network,
        });
    }
    Ok(out)
}

/// The blacklisted networks, newest first.
pub fn read_blacklisted_networks(
    conn: &Connection,
    path: &Path,
) -> Result<Vec<NetworkBlacklistEntry>, StoreError> {
    let e = sql_err(path);
    let mut st = conn
        .prepare(
            "SELECT network, since, reason FROM blacklisted_networks ORDER BY since DESC, network",
        )
        .map_err(&e)?;
    let rows = st
        .query_map([], |r| {
            Ok(NetworkBlacklistEntry {
                network: r.get(0)?,
                since: r.get::<_, i64>(1)?.max(0) as u64,
                reason: r.get(2)?,
            })
        })
        .map_err(&e)?;
    rows.collect::<Result<Vec<_>, _>>().map_err(&e)
}

/// Identities and networks, as the store watcher reloads them.
pub fn read_blacklist_state(conn: &Connection, path: &Path) -> Result<Blacklist, StoreError> {
    Ok(Blacklist {
        entries: read_blacklist(conn, path)?,
        networks: read_blacklisted_networks(conn, path)?,
    })
}

const RECORD_COLUMNS: &str = "registered_at, challenges_passed, challenges_failed, \
     challenges_failed_in_a_row, last_passed_at, agreements, strikes, vouched";

fn record_from_row(r: &rusqlite::Row<'_>, at: usize) -> Result<HostRecord, rusqlite::Error> {
    let u64_at = |i: usize| r.get::<_, i64>(at + i).map(|v| v.max(0) as u64);
    let u32_at = |i: usize| u64_at(i).map(|v| v.min(u64::from(u32::MAX)) as u32);
    Ok(HostRecord {
        registered_at: u64_at(0)?,
        challenges_passed: u32_at(1)?,
        challenges_failed: u32_at(2)?,
        challenges_failed_in_a_row: u32_at(3)?,
        last_passed_at: u64_at(4)?,
        agreements: u32_at(5)?,
        strikes: u32_at(6)?,
        vouched: r.get::<_, i64>(at + 7)? != 0,
    })
}

fn get_record(conn: &Connection, id: &IdentityId) -> Result<Option<HostRecord>, rusqlite::Error> {
    conn.query_row(
        &format!("SELECT {RECORD_COLUMNS} FROM host_records WHERE id=?1"),
        [id.to_string()],
        |r| record_from_row(r, 0),
    )
    .optional()
}

fn put_record(conn: &Connection, id: &IdentityId, rec: &HostRecord) -> Result<(), rusqlite::Error> {
    let i = |v: u64| v.min(i64::MAX as u64) as i64;
    conn.execute(
        "UPDATE host_records SET registered_at=?2, challenges_passed=?3, challenges_failed=?4,
             challenges_failed_in_a_row=?5, last_passed_at=?6, agreements=?7, strikes=?8, vouched=?9
         WHERE id=?1",
        params![
            id.to_string(),
            i(rec.registered_at),
            i64::from(rec.challenges_passed),
            i64::from(rec.challenges_failed),
            i64::from(rec.challenges_failed_in_a_row),
            i(rec.last_passed_at),
            i64::from(rec.agreements),
            i64::from(rec.strikes),
            rec.vouched as i64
        ],
    )?;
    Ok(())
}

/// Change the record of `id` with `f` and store it; `None` if it has none.
fn update_record(
    conn: &Connection,
    id: &IdentityId,
    f: impl FnOnce(&mut HostRecord),
) -> Result<Option<HostRecord>, rusqlite::Error> {
    let Some(mut rec) = get_record(conn, id)? else {
        return Ok(None);
    };
    f(&mut rec);
    put_record(conn, id, &rec)?;
    Ok(Some(rec))
}

/// One host's standing record, `None` if `id` is not a registered host.
pub fn read_record(
    conn: &Connection,
    path: &Path,
    id: &IdentityId,
) -> Result<Option<HostRecord>, StoreError> {
    get_record(conn, id).map_err(sql_err(path))
}

/// The hosts the operator vouched for (the store watcher's reload).
pub fn read_vouched(conn: &Connection, path: &Path) -> Result<Vec<IdentityId>, StoreError> {
    let e = sql_err(path);
    let mut st = conn
        .prepare("SELECT id FROM host_records WHERE vouched=1")
        .map_err(&e)?;
    let rows = st.query_map([], |r| r.get::<_, String>(0)).map_err(&e)?;
    let mut out = Vec::new();
    for row in rows {
        out.push(parse_id(path, "host_records", &row.map_err(&e)?)?);
    }
    Ok(out)
}

/// Set or clear `vouched` on a host's record, from the admin CLI's own
/// connection. `None`: `id` is not a registered host.
pub fn set_vouched(
    conn: &mut Connection,
    path: &Path,
    id: &IdentityId,
    vouched: bool,
) -> Result<Option<HostRecord>, StoreError> {
    let e = sql_err(path);
    let tx = conn.transaction().map_err(&e)?;
    let rec = update_record(&tx, id, |r| r.vouched = vouched).map_err(&e)?;
    tx.commit().map_err(&e)?;
    Ok(rec)
}

/// Hosts first registered at or after `since` (unix seconds): the network
/// they registered from and when, to restore the new-host quotas at start.
pub fn recent_host_registrations(
    conn: &Connection,
    path: &Path,
    since: u64,
) -> Result<Vec<(String, u64)>, StoreError> {
    let e = sql_err(path);
    let mut st = conn
        .prepare(
            "SELECT first_network, first_seen FROM identities WHERE daemon=1 AND first_seen>=?1",
        )
        .map_err(&e)?;
    let rows = st
        .query_map([since.min(i64::MAX as u64) as i64], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?.max(0) as u64))
        })
        .map_err(&e)?;
    rows.collect::<Result<Vec<_>, _>>().map_err(&e)
}

/// Lift a blacklist entry: delete it and mark the reports that led to it as
/// cleared, so the host starts from zero reports. Returns whether it was listed.
/// The addresses the entry covered are lifted with it; a network blacklisted
/// because of it is not (`lift_network`).
pub fn lift(conn: &mut Connection, path: &Path, id: &IdentityId) -> Result<bool, StoreError> {
    let e = sql_err(path);
    let tx = conn.transaction().map_err(&e)?;
    let lifted = apply_lift(&tx, id).map_err(&e)?;
    tx.commit().map_err(&e)?;
    Ok(lifted)
}

fn apply_lift(conn: &Connection, id: &IdentityId) -> Result<bool, rusqlite::Error> {
    let n = conn.execute("DELETE FROM blacklist WHERE id=?1", [id.to_string()])?;
    conn.execute(
        "DELETE FROM blacklist_addresses WHERE id=?1",
        [id.to_string()],
    )?;
    conn.execute(
        "UPDATE reports SET cleared=1 WHERE reported=?1",
        [id.to_string()],
    )?;
    Ok(n > 0)
}

/// Lift a network's blacklisting (`a.b.c.0/24`, as stored). Returns whether
/// it was listed. The identities blacklisted in it stay blacklisted, and
/// still count as strikes: one more blacklisting there blacklists it again.
pub fn lift_network(conn: &mut Connection, path: &Path, network: &str) -> Result<bool, StoreError> {
    let e = sql_err(path);
    let tx = conn.transaction().map_err(&e)?;
    let n = tx
        .execute(
            "DELETE FROM blacklisted_networks WHERE network=?1",
            [network],
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
    /// Its reporter was established when it was filed (else it never counts).
    pub counts: bool,
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
        .prepare("SELECT received, reporter, reporter_network, cleared, counts, body FROM reports WHERE reported=?1 ORDER BY id DESC")
        .map_err(&e)?;
    let rows = st
        .query_map([id.to_string()], |r| {
            Ok(StoredReport {
                received: r.get::<_, i64>(0)?.max(0) as u64,
                reporter: r.get(1)?,
                network: r.get(2)?,
                cleared: r.get::<_, i64>(3)? != 0,
                counts: r.get::<_, i64>(4)? != 0,
                body: r.get(5)?,
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

    /// Queue a write now (writes are applied in the order queued) and
    /// return what resolves once it is committed: a caller queues under its
    /// own lock to keep its order, and awaits after releasing it.
    pub fn submit(
        &self,
        op: WriteOp,
    ) -> Result<impl std::future::Future<Output = Result<WriteResult, StoreError>>, StoreError>
    {
        let (reply, rx) = tokio::sync::oneshot::channel();
        self.tx
            .send((op, reply))
            .map_err(|_| StoreError::WriterGone)?;
        Ok(async move { rx.await.map_err(|_| StoreError::WriterGone)? })
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
    {
        let mut st = conn
            .prepare(&format!("SELECT id, {RECORD_COLUMNS} FROM host_records"))
            .map_err(&e)?;
        let rows = st
            .query_map([], |r| Ok((r.get::<_, String>(0)?, record_from_row(r, 1)?)))
            .map_err(&e)?;
        for row in rows {
            let (id, rec) = row.map_err(&e)?;
            snap.records
                .push((parse_id(path, "host_records", &id)?, rec));
        }
    }
    snap.blacklist = read_blacklist_state(conn, path)?;
    snap.cache_entries = read_cache_entries(conn, path)?;
    Ok(snap)
}

fn ids_text(ids: &[IdentityId]) -> String {
    ids.iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// Every cache entry (withdrawn ones too).
pub fn read_cache_entries(conn: &Connection, path: &Path) -> Result<Vec<EntryRow>, StoreError> {
    let e = sql_err(path);
    let mut st = conn
        .prepare(
            "SELECT key, toolchain, result, witnesses, holders, made_at, hits, \
             withdrawn_at, withdrawn_reason FROM cache_entries",
        )
        .map_err(&e)?;
    type Raw = (
        String,
        String,
        String,
        String,
        String,
        i64,
        i64,
        Option<i64>,
        Option<String>,
    );
    let rows = st
        .query_map([], |r| {
            Ok::<Raw, rusqlite::Error>((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
                r.get(7)?,
                r.get(8)?,
            ))
        })
        .map_err(&e)?;
    let bad = |what: &str, v: &str| StoreError::BadRow {
        path: path.to_path_buf(),
        table: "cache_entries",
        why: format!("{what} {v:?} is not a 64-digit hex hash"),
    };
    let ids = |s: &str| -> Result<Vec<IdentityId>, StoreError> {
        s.split(',')
            .filter(|p| !p.is_empty())
            .map(|p| parse_id(path, "cache_entries", p))
            .collect()
    };
    let mut out = Vec::new();
    for row in rows {
        let (key, toolchain, result, witnesses, holders, made_at, hits, w_at, w_reason) =
            row.map_err(&e)?;
        out.push(EntryRow {
            key: CacheKey(hash_bytes(&key).ok_or_else(|| bad("key", &key))?),
            toolchain: hash_bytes(&toolchain).ok_or_else(|| bad("toolchain", &toolchain))?,
            result: hash_bytes(&result).ok_or_else(|| bad("result", &result))?,
            witnesses: ids(&witnesses)?,
            holders: ids(&holders)?,
            made_at: made_at as u64,
            hits: hits as u64,
            withdrawn: w_at.map(|at| (at as u64, w_reason.unwrap_or_default())),
        });
    }
    Ok(out)
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
            if *daemon {
                conn.execute(
                    "INSERT OR IGNORE INTO host_records(id, registered_at) VALUES(?1, ?2)",
                    params![id.to_string(), *now as i64],
                )?;
            }
            Ok(WriteResult::Done)
        }
        WriteOp::RegisterMany(rows, now) => {
            let mut st = conn.prepare_cached(
                "INSERT INTO identities(id, daemon, first_seen, first_network) VALUES(?1, ?2, ?3, ?4)
                 ON CONFLICT(id) DO UPDATE SET daemon = max(daemon, excluded.daemon)",
            )?;
            let mut rec = conn.prepare_cached(
                "INSERT OR IGNORE INTO host_records(id, registered_at) VALUES(?1, ?2)",
            )?;
            for (id, daemon, network) in rows {
                st.execute(params![
                    id.to_string(),
                    *daemon as i64,
                    *now as i64,
                    network
                ])?;
                if *daemon {
                    rec.execute(params![id.to_string(), *now as i64])?;
                }
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
        WriteOp::Unlink { person, daemon } => {
            conn.execute(
                "DELETE FROM links WHERE person=?1 AND daemon=?2",
                params![person.to_string(), daemon.to_string()],
            )?;
            Ok(WriteResult::Done)
        }
        WriteOp::Report(r) => apply_report(conn, r),
        WriteOp::Lift { id } => Ok(WriteResult::Lifted(apply_lift(conn, id)?)),
        WriteOp::LiftNetwork { network } => {
            let n = conn.execute(
                "DELETE FROM blacklisted_networks WHERE network=?1",
                [network],
            )?;
            Ok(WriteResult::Lifted(n > 0))
        }
        WriteOp::Vouch { id, vouched } => Ok(WriteResult::Record(update_record(conn, id, |r| {
            r.vouched = *vouched
        })?)),
        WriteOp::Challenge { id, passed, now } => {
            Ok(WriteResult::Record(update_record(conn, id, |r| {
                if *passed {
                    r.challenge_passed(*now)
                } else {
                    r.challenge_failed()
                }
            })?))
        }
        WriteOp::Agreement { id } => Ok(WriteResult::Record(update_record(conn, id, |r| {
            r.agreements = r.agreements.saturating_add(1)
        })?)),
        WriteOp::Blacklist(b) => apply_blacklist(conn, b),
        WriteOp::Adjudication(a) => {
            conn.execute(
                "INSERT INTO adjudications(accused, input_hash, report_ids, referees, ruling, struck, time)
                 VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    a.accused.to_string(),
                    a.input_hash,
                    a.report_ids,
                    a.referees,
                    a.ruling,
                    a.struck,
                    a.now as i64
                ],
            )?;
            Ok(WriteResult::Done)
        }
        WriteOp::CacheEntry(r) => {
            conn.execute(
                "INSERT OR REPLACE INTO cache_entries(key, toolchain, result, witnesses, holders, \
                 made_at, hits, withdrawn_at, withdrawn_reason) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![
                    r.key.to_hex(),
                    hex::encode(r.toolchain),
                    hex::encode(r.result),
                    ids_text(&r.witnesses),
                    ids_text(&r.holders),
                    r.made_at as i64,
                    r.hits as i64,
                    r.withdrawn.as_ref().map(|w| w.0 as i64),
                    r.withdrawn.as_ref().map(|w| w.1.clone()),
                ],
            )?;
            Ok(WriteResult::Done)
        }
        WriteOp::CacheHolder { key, holder } => {
            let id = holder.to_string();
            conn.execute(
                "UPDATE cache_entries SET holders = CASE WHEN holders='' THEN ?2 \
                 ELSE holders || ',' || ?2 END WHERE key=?1 AND instr(holders, ?2)=0",
                params![key.to_hex(), id],
            )?;
            Ok(WriteResult::Done)
        }
        WriteOp::CacheWithdraw { key, at, reason } => {
            conn.execute(
                "UPDATE cache_entries SET withdrawn_at=?2, withdrawn_reason=?3 \
                 WHERE key=?1 AND withdrawn_at IS NULL",
                params![key.to_hex(), *at as i64, reason],
            )?;
            Ok(WriteResult::Done)
        }
        WriteOp::CacheHits(hits) => {
            let mut st = conn.prepare_cached("UPDATE cache_entries SET hits=?2 WHERE key=?1")?;
            for (key, n) in hits {
                st.execute(params![key.to_hex(), *n as i64])?;
            }
            Ok(WriteResult::Done)
        }
    }
}

/// Blacklist one identity by decision (with its addresses, and its network
/// when that now holds `network_strikes` blacklisted hosts).
fn apply_blacklist(conn: &Connection, b: &BlacklistRow) -> Result<WriteResult, rusqlite::Error> {
    let id = b.id.to_string();
    let n = conn.execute(
        "INSERT OR IGNORE INTO blacklist(id, since, reason, network) VALUES(?1, ?2, ?3, ?4)",
        params![id, b.now as i64, b.reason, b.network],
    )?;
    if n == 0 {
        return Ok(WriteResult::Blacklisted {
            newly: None,
            network: None,
        });
    }
    let mut addresses = b.addresses.clone();
    addresses.sort();
    addresses.dedup();
    for a in &addresses {
        conn.execute(
            "INSERT OR IGNORE INTO blacklist_addresses(address, id) VALUES(?1, ?2)",
            params![a, id],
        )?;
    }
    let network = network_strike(conn, &b.network, b.network_strikes, &b.id, b.now)?;
    Ok(WriteResult::Blacklisted {
        newly: Some(BlacklistEntry {
            id: b.id,
            since: b.now,
            reason: b.reason.clone(),
            addresses,
            network: b.network.clone(),
        }),
        network,
    })
}

/// Store a report (once per reporter, host and input) and count the distinct
/// established reporter owner groups against the host, for the operator. A
/// report never blacklists: disputes are decided by re-running the evidence
/// (`adjudicator`), never by counting reporters, whose keys are free.
fn apply_report(conn: &Connection, r: &ReportRow) -> Result<WriteResult, rusqlite::Error> {
    let reported = r.reported.to_string();
    let first: Option<i64> = conn
        .query_row(
            "SELECT id FROM reports WHERE reported=?1 AND reporter=?2 AND input_hash=?3
             ORDER BY id LIMIT 1",
            params![reported, r.reporter.to_string(), r.input_hash],
            |row| row.get(0),
        )
        .optional()?;
    let duplicate = first.is_some();
    let report_id = match first {
        Some(id) => id,
        None => {
            conn.execute(
                "INSERT INTO reports(reported, reporter, reporter_owner, reporter_network, received,
                                     report_time, input_hash, body, counts)
                 VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![
                    reported,
                    r.reporter.to_string(),
                    r.reporter_owner.to_string(),
                    r.reporter_network,
                    r.received as i64,
                    r.report_time.min(i64::MAX as u64) as i64,
                    r.input_hash,
                    r.body,
                    r.counts as i64
                ],
            )?;
            conn.last_insert_rowid()
        }
    };
    let (reporters, networks): (i64, i64) = conn.query_row(
        "SELECT count(DISTINCT reporter_owner), count(DISTINCT reporter_network)
         FROM reports WHERE reported=?1 AND cleared=0 AND counts=1",
        [&reported],
        |row| Ok((row.get(0)?, row.get(1)?)),
    )?;
    let blacklisted = conn
        .query_row("SELECT 1 FROM blacklist WHERE id=?1", [&reported], |_| {
            Ok(())
        })
        .optional()?
        .is_some();
    Ok(WriteResult::Report {
        report_id,
        reporters: reporters.max(0) as u32,
        networks: networks.max(0) as u32,
        blacklisted,
        duplicate,
    })
}

/// After a blacklisting in `network`: blacklist the network when it now
/// holds `network_strikes` blacklisted identities (and is not blacklisted
/// already).
fn network_strike(
    conn: &Connection,
    network: &str,
    network_strikes: u32,
    latest: &IdentityId,
    now: u64,
) -> Result<Option<NetworkBlacklistEntry>, rusqlite::Error> {
    if network_strikes == 0 || network.is_empty() {
        return Ok(None);
    }
    let struck: i64 = conn.query_row(
        "SELECT count(*) FROM blacklist WHERE network=?1",
        [network],
        |row| row.get(0),
    )?;
    if struck < i64::from(network_strikes) {
        return Ok(None);
    }
    let reason = format!(
        "{struck} hosts in this network were blacklisted (the latest {}); no new identity registers from it",
        latest
    );
    let n = conn.execute(
        "INSERT OR IGNORE INTO blacklisted_networks(network, since, reason) VALUES(?1, ?2, ?3)",
        params![network, now as i64, reason],
    )?;
    Ok((n > 0).then(|| NetworkBlacklistEntry {
        network: network.to_string(),
        since: now,
        reason,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::identity::Identity;

    fn row(reported: IdentityId, reporter: IdentityId, net: &str, input: &str) -> ReportRow {
        ReportRow {
            reported,
            reporter,
            reporter_owner: reporter,
            reporter_network: net.into(),
            received: 100,
            report_time: 99,
            input_hash: blake3::hash(input.as_bytes()).to_hex().to_string(),
            body: "{}".into(),
            counts: true,
        }
    }

    /// An adjudication's blacklisting of `id` at 10.9.9.9 (10.9.9.0/24).
    fn decided(id: IdentityId) -> WriteOp {
        WriteOp::Blacklist(BlacklistRow {
            id,
            now: 100,
            reason: "lost an adjudication".into(),
            addresses: vec!["10.9.9.9".into()],
            network: "10.9.9.0/24".into(),
            network_strikes: 2,
        })
    }

    fn report(reported: IdentityId, reporter: IdentityId, net: &str, input: &str) -> WriteOp {
        WriteOp::Report(row(reported, reporter, net, input))
    }

    fn register(id: IdentityId, now: u64) -> WriteOp {
        WriteOp::Register {
            id,
            daemon: true,
            now,
            network: "10.9.9.0/24".into(),
        }
    }

    /// (reporters, blacklisted, duplicate) of a report's result.
    fn outcome(r: &WriteResult) -> (u32, bool, bool) {
        match r {
            WriteResult::Report {
                reporters,
                blacklisted,
                duplicate,
                ..
            } => (*reporters, *blacklisted, *duplicate),
            other => panic!("not a report result: {other:?}"),
        }
    }

    #[tokio::test]
    async fn reports_never_blacklist_decisions_do_and_lift_persists() {
        let dir = tempfile::tempdir().unwrap();
        let bad = Identity::generate().id();
        let (a, b) = (Identity::generate().id(), Identity::generate().id());
        {
            let (store, snap) = Store::open(dir.path()).unwrap();
            assert!(snap.blacklist.entries.is_empty());
            store.write(register(bad, 1)).await.unwrap();
            for i in 0..5 {
                let r = store
                    .write(report(bad, a, "10.0.0.0/24", &format!("job {i}")))
                    .await
                    .unwrap();
                assert_eq!(outcome(&r), (1, false, false), "{r:?}");
            }
            // However many reporters on however many networks: counted, and
            // nothing more.
            for (i, net) in ["10.0.1.0/24", "10.0.2.0/24", "10.0.3.0/24"]
                .iter()
                .enumerate()
            {
                let r = store
                    .write(report(bad, Identity::generate().id(), net, "job b"))
                    .await
                    .unwrap();
                assert_eq!(outcome(&r), (2 + i as u32, false, false), "{r:?}");
            }
            let r = store.write(decided(bad)).await.unwrap();
            assert!(
                matches!(
                    r,
                    WriteResult::Blacklisted {
                        newly: Some(_),
                        network: None
                    }
                ),
                "{r:?}"
            );
            let r = store
                .write(report(bad, b, "10.0.1.0/24", "job b2"))
                .await
                .unwrap();
            assert_eq!(outcome(&r), (5, true, false), "{r:?}");
        }
        // Reopen: the blacklist is there, with the address and network it covers.
        let mut conn = open_connection(dir.path()).unwrap();
        let path = dir.path().join(DB_FILE);
        let bl = read_blacklist(&conn, &path).unwrap();
        assert_eq!(bl.len(), 1);
        assert_eq!(bl[0].id, bad);
        assert_eq!(bl[0].addresses, vec!["10.9.9.9".to_string()]);
        assert_eq!(bl[0].network, "10.9.9.0/24");
        assert!(lift(&mut conn, &path, &bad).unwrap());
        assert!(!lift(&mut conn, &path, &bad).unwrap());
        assert!(read_blacklist(&conn, &path).unwrap().is_empty());
        let addresses: i64 = conn
            .query_row("SELECT count(*) FROM blacklist_addresses", [], |r| r.get(0))
            .unwrap();
        assert_eq!(addresses, 0, "the lift takes the addresses with it");
        // After a lift the old reports no longer count.
        let (store, snap) = Store::open(dir.path()).unwrap();
        assert_eq!(snap.identities, vec![(bad, true)]);
        let r = store
            .write(report(bad, a, "10.0.0.0/24", "job after"))
            .await
            .unwrap();
        assert_eq!(outcome(&r), (1, false, false), "{r:?}");
        assert_eq!(read_reports(&conn, &path, &bad).unwrap().len(), 10);
    }

    #[tokio::test]
    async fn one_report_per_reporter_host_and_input() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Store::open(dir.path()).unwrap();
        let (bad, a, b) = (
            Identity::generate().id(),
            Identity::generate().id(),
            Identity::generate().id(),
        );
        store.write(register(bad, 1)).await.unwrap();
        let first = store.write(report(bad, a, "n1", "same")).await.unwrap();
        let again = store.write(report(bad, a, "n1", "same")).await.unwrap();
        assert_eq!(outcome(&again), (1, false, true));
        let id_of = |r: &WriteResult| match r {
            WriteResult::Report { report_id, .. } => *report_id,
            _ => unreachable!(),
        };
        assert_eq!(id_of(&first), id_of(&again), "acknowledged as the first");
        // The same input by another reporter is another report.
        let other = store.write(report(bad, b, "n2", "same")).await.unwrap();
        assert_eq!(outcome(&other), (2, false, false));
        let conn = open_connection(dir.path()).unwrap();
        let path = dir.path().join(DB_FILE);
        assert_eq!(read_reports(&conn, &path, &bad).unwrap().len(), 2);
    }

    #[tokio::test]
    async fn probationary_reports_are_stored_but_never_count() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Store::open(dir.path()).unwrap();
        let honest = Identity::generate().id();
        store.write(register(honest, 1)).await.unwrap();
        // Any number of fresh keys, on any number of networks.
        for i in 0..10 {
            let mut r = row(honest, Identity::generate().id(), &format!("n{i}"), "x");
            r.counts = false;
            let got = store.write(WriteOp::Report(r)).await.unwrap();
            assert_eq!(outcome(&got), (0, false, false));
        }
        // One established reporter is still one.
        let got = store
            .write(report(honest, Identity::generate().id(), "n", "x"))
            .await
            .unwrap();
        assert_eq!(outcome(&got), (1, false, false));
        let conn = open_connection(dir.path()).unwrap();
        let path = dir.path().join(DB_FILE);
        let stored = read_reports(&conn, &path, &honest).unwrap();
        assert_eq!(stored.len(), 11);
        assert_eq!(stored.iter().filter(|r| r.counts).count(), 1);
    }

    #[tokio::test]
    async fn network_blacklisted_after_the_strikes_and_lifted_apart() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Store::open(dir.path()).unwrap();
        let (a, b) = (Identity::generate().id(), Identity::generate().id());
        let liars: Vec<IdentityId> = (0..2).map(|_| Identity::generate().id()).collect();
        let mut networks = Vec::new();
        for (i, liar) in liars.iter().enumerate() {
            store.write(register(*liar, 1)).await.unwrap();
            store.write(report(*liar, a, "n1", "j")).await.unwrap();
            store.write(report(*liar, b, "n2", "j")).await.unwrap();
            let r = store.write(decided(*liar)).await.unwrap();
            let WriteResult::Blacklisted {
                newly: Some(_),
                network,
            } = r
            else {
                panic!("liar {i} not blacklisted: {r:?}");
            };
            networks.push(network);
        }
        assert_eq!(networks[0], None, "one strike");
        let net = networks[1]
            .clone()
            .expect("the second strike blacklists the network");
        assert_eq!(net.network, "10.9.9.0/24");
        let (_, snap) = Store::open(dir.path()).unwrap();
        assert_eq!(snap.blacklist.networks, vec![net]);
        // Lifting a host leaves the network blacklisted; lift-network lifts it.
        let mut conn = open_connection(dir.path()).unwrap();
        let path = dir.path().join(DB_FILE);
        assert!(lift(&mut conn, &path, &liars[0]).unwrap());
        assert_eq!(read_blacklisted_networks(&conn, &path).unwrap().len(), 1);
        assert!(lift_network(&mut conn, &path, "10.9.9.0/24").unwrap());
        assert!(!lift_network(&mut conn, &path, "10.9.9.0/24").unwrap());
        assert!(read_blacklisted_networks(&conn, &path).unwrap().is_empty());
    }

    #[tokio::test]
    async fn cache_entries_and_withdrawals_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b, c) = (
            Identity::generate().id(),
            Identity::generate().id(),
            Identity::generate().id(),
        );
        let row = |k: u8| EntryRow {
            key: CacheKey([k; 32]),
            toolchain: [7; 32],
            result: [k; 32],
            witnesses: vec![a, b],
            holders: vec![],
            made_at: 100 + u64::from(k),
            hits: 0,
            withdrawn: None,
        };
        {
            let (store, snap) = Store::open(dir.path()).unwrap();
            assert!(snap.cache_entries.is_empty());
            store.write(WriteOp::CacheEntry(row(1))).await.unwrap();
            store.write(WriteOp::CacheEntry(row(2))).await.unwrap();
            for _ in 0..2 {
                let op = WriteOp::CacheHolder {
                    key: CacheKey([1; 32]),
                    holder: c,
                };
                store.write(op).await.unwrap();
            }
            store
                .write(WriteOp::CacheHits(vec![(CacheKey([1; 32]), 5)]))
                .await
                .unwrap();
            for reason in ["referees disagree", "later"] {
                let op = WriteOp::CacheWithdraw {
                    key: CacheKey([2; 32]),
                    at: 300,
                    reason: reason.into(),
                };
                store.write(op).await.unwrap();
            }
        }
        let (_store, snap) = Store::open(dir.path()).unwrap();
        let mut rows = snap.cache_entries;
        rows.sort_by_key(|r| r.key);
        let want_1 = EntryRow {
            holders: vec![c],
            hits: 5,
            ..row(1)
        };
        let want_2 = EntryRow {
            withdrawn: Some((300, "referees disagree".into())),
            ..row(2)
        };
        assert_eq!(rows, vec![want_1, want_2]);
    }

    #[tokio::test]
    async fn standing_records_are_created_at_registration_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let host = Identity::generate().id();
        let person = Identity::generate().id();
        {
            let (store, snap) = Store::open(dir.path()).unwrap();
            assert!(snap.records.is_empty());
            store.write(register(host, 1_000)).await.unwrap();
            // Registering again keeps the first date.
            store.write(register(host, 5_000)).await.unwrap();
            store
                .write(WriteOp::Link {
                    person,
                    daemon: host,
                    now: 2_000,
                    merge_owners: None,
                })
                .await
                .unwrap();
            let rec = |r: WriteResult| match r {
                WriteResult::Record(Some(rec)) => rec,
                other => panic!("{other:?}"),
            };
            let r = rec(store
                .write(WriteOp::Challenge {
                    id: host,
                    passed: true,
                    now: 1_500,
                })
                .await
                .unwrap());
            assert_eq!((r.challenges_passed, r.last_passed_at), (1, 1_500));
            let r = rec(store
                .write(WriteOp::Challenge {
                    id: host,
                    passed: false,
                    now: 1_600,
                })
                .await
                .unwrap());
            assert_eq!((r.challenges_failed, r.challenges_failed_in_a_row), (1, 1));
            store.write(WriteOp::Agreement { id: host }).await.unwrap();
            let r = rec(store.write(WriteOp::Agreement { id: host }).await.unwrap());
            assert_eq!(r.agreements, 2);
            // A person's key has no record: nothing to change.
            for op in [
                WriteOp::Agreement { id: person },
                WriteOp::Vouch {
                    id: person,
                    vouched: true,
                },
            ] {
                assert_eq!(store.write(op).await.unwrap(), WriteResult::Record(None));
            }
        }
        let (_, snap) = Store::open(dir.path()).unwrap();
        let want = HostRecord {
            registered_at: 1_000,
            challenges_passed: 1,
            challenges_failed: 1,
            challenges_failed_in_a_row: 1,
            last_passed_at: 1_500,
            agreements: 2,
            strikes: 0,
            vouched: false,
        };
        assert_eq!(snap.records, vec![(host, want)]);
        // The admin CLI's connection vouches; the watcher's query sees it.
        let mut conn = open_connection(dir.path()).unwrap();
        let path = dir.path().join(DB_FILE);
        let r = set_vouched(&mut conn, &path, &host, true).unwrap().unwrap();
        assert!(r.vouched);
        assert_eq!(read_vouched(&conn, &path).unwrap(), vec![host]);
        assert_eq!(set_vouched(&mut conn, &path, &person, true).unwrap(), None);
        set_vouched(&mut conn, &path, &host, false).unwrap();
        assert!(read_vouched(&conn, &path).unwrap().is_empty());
        assert_eq!(
            read_record(&conn, &path, &host).unwrap(),
            Some(want),
            "everything else untouched"
        );
        let recent = recent_host_registrations(&conn, &path, 500).unwrap();
        assert_eq!(recent, vec![("10.9.9.0/24".to_string(), 1_000)]);
        assert!(recent_host_registrations(&conn, &path, 1_001)
            .unwrap()
            .is_empty());
    }

    #[tokio::test]
    async fn a_schema_1_database_is_migrated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DB_FILE);
        let (host, person, bad) = (
            Identity::generate().id(),
            Identity::generate().id(),
            Identity::generate().id(),
        );
        {
            // What schema 1 wrote (the first dportage coordinator).
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(
                "CREATE TABLE meta(key TEXT PRIMARY KEY, value INTEGER NOT NULL);
                 INSERT INTO meta VALUES('schema', 1);
                 CREATE TABLE identities(id TEXT PRIMARY KEY, daemon INTEGER NOT NULL,
                     first_seen INTEGER NOT NULL, first_network TEXT NOT NULL);
                 CREATE TABLE links(person TEXT NOT NULL, daemon TEXT NOT NULL,
                     created INTEGER NOT NULL, PRIMARY KEY(person, daemon));
                 CREATE TABLE reports(id INTEGER PRIMARY KEY AUTOINCREMENT,
                     reported TEXT NOT NULL, reporter TEXT NOT NULL, reporter_owner TEXT NOT NULL,
                     reporter_network TEXT NOT NULL, received INTEGER NOT NULL,
                     report_time INTEGER NOT NULL, input_hash TEXT NOT NULL, body TEXT NOT NULL,
                     cleared INTEGER NOT NULL DEFAULT 0);
                 CREATE TABLE blacklist(id TEXT PRIMARY KEY, since INTEGER NOT NULL, reason TEXT NOT NULL);",
            )
            .unwrap();
            for (id, daemon, seen) in [(host, 1, 77), (person, 0, 78), (bad, 1, 79)] {
                conn.execute(
                    "INSERT INTO identities VALUES(?1, ?2, ?3, '10.1.2.0/24')",
                    params![id.to_string(), daemon, seen],
                )
                .unwrap();
            }
            conn.execute(
                "INSERT INTO blacklist VALUES(?1, 5, 'old')",
                [bad.to_string()],
            )
            .unwrap();
        }
        let (store, snap) = Store::open(dir.path()).unwrap();
        let mut records: Vec<_> = snap
            .records
            .iter()
            .map(|(id, r)| (*id, r.registered_at))
            .collect();
        records.sort();
        let mut want = vec![(host, 77), (bad, 79)];
        want.sort();
        assert_eq!(
            records, want,
            "hosts get records dated at their first registration"
        );
        assert_eq!(snap.blacklist.entries.len(), 1);
        assert_eq!(snap.blacklist.entries[0].network, "");
        // The old reports table takes the new columns.
        let r = store.write(report(host, person, "n", "x")).await.unwrap();
        assert_eq!(outcome(&r), (1, false, false));
        let conn = open_connection(dir.path()).unwrap();
        assert_eq!(schema_version(&conn).unwrap(), Some(SCHEMA_VERSION));
        // A newer schema is refused.
        conn.execute("UPDATE meta SET value=99 WHERE key='schema'", [])
            .unwrap();
        assert!(matches!(
            open_connection(dir.path()),
            Err(StoreError::NewerSchema(_, 99))
        ));
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
        assert_eq!(snap.records.len(), 300);
    }
}
