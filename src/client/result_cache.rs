//! The verified result cache, member side (issue 16). Before a verified job
//! is sent anywhere its key ([`CacheKey`]: toolchain, canonical argv,
//! preprocessed input) is looked up
//!
//! 1. in this member's own cache, `$DPORTAGE_DIR/cache/results` (a bounded
//!    LRU [`ResultStore`] keyed by the job's key, holding the reply of a
//!    result this member verified or fetched and checked), then
//! 2. in the network's index (`POST /v1/cache/lookup`), whose answer must be
//!    signed by the pinned coordinator for this key and this member; the
//!    reply is then fetched by `CGET` from a holder and written only when
//!    its result hash is the entry's.
//!
//! Every hit of the network's cache is logged in `cache/fetched.jsonl` with
//! the object it wrote, so `dportage cache audit` can say which objects to
//! rebuild when an entry is withdrawn later.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::network::api::result_hash;
use crate::network::cache_api::{CacheDispute, CacheEntryView, MAX_HOLDERS};
use crate::network::caller::CoordinatorClient;
use crate::network::clock::unix_now;
use crate::network::host_list;
use crate::network::identity::Identity;
use crate::network::ticket::Ticket;
use crate::protocol::reply::Reply;
use crate::protocol::ProtocolVersion;
use crate::result_store::ResultStore;
use crate::trust::cache_entry::CacheKey;

use super::output::{strip_terminal_controls, write_output_atomically};
use super::remote::{reply_limits, Connection, NetTimeouts, RemoteHost, RemoteReply, TicketHolder};
use super::settings::Settings;
use super::trace::{write_stderr, write_stdout};

/// The cache's directory under `$DPORTAGE_DIR`.
pub const CACHE_DIR: &str = "cache";
/// The members' own results, keyed by job key.
const RESULTS_DIR: &str = "results";
/// One line per hit of the network's cache: what `dportage cache audit` reads.
pub const FETCHED_LOG: &str = "fetched.jsonl";
/// The fetch log is cut to its newer half past this size.
const FETCHED_LOG_MAX: u64 = 16 * 1024 * 1024;
/// How long the coordinator may take to answer a lookup: a lookup that is
/// slower than compiling is worse than none.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

/// The job being looked up.
#[derive(Debug, Clone)]
pub struct CacheJob {
    pub key: CacheKey,
    pub key_hex: String,
    /// Fingerprint id of the toolchain.
    pub toolchain: String,
    /// blake3 (hex) of the preprocessed input.
    pub input_hash: String,
}

impl CacheJob {
    pub fn new(toolchain: String, argv: &[String], input: &[u8]) -> CacheJob {
        let input_hash = blake3::hash(input);
        let key = CacheKey::of(&toolchain, argv, input_hash.as_bytes());
        CacheJob {
            key,
            key_hex: key.to_hex(),
            toolchain,
            input_hash: input_hash.to_hex().to_string(),
        }
    }
}

/// A line of [`FETCHED_LOG`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fetched {
    pub time: u64,
    pub key: String,
    pub result: String,
    /// The object written, absolute.
    pub output: String,
    /// The holder it came from (`HOST:PORT`).
    pub holder: String,
}

/// The result hash of a reply's status and object (what votes and entries
/// compare).
pub fn result_of(status: u32, object: &[u8]) -> String {
    let object: &[u8] = if status == 0 { object } else { &[] };
    result_hash(&blake3::hash(object).to_hex(), status)
}

fn results_store(settings: &Settings) -> Option<ResultStore> {
    let dir = settings
        .dportage_dir
        .as_ref()?
        .join(CACHE_DIR)
        .join(RESULTS_DIR);
    match ResultStore::open(&dir, settings.cache_size) {
        Ok(store) => Some(store),
        Err(e) => {
            tracing::warn!("{e}; the local result cache is not used");
            None
        }
    }
}

/// This member's own verified result of `job`, if it kept one.
pub fn lookup_local(settings: &Settings, job: &CacheJob) -> Option<Reply> {
    let store = results_store(settings)?;
    let bytes = store.get(&job.key_hex)?;
    match Reply::decode_all(&bytes, ProtocolVersion::V1, &reply_limits()) {
        Ok(reply) if reply.status == 0 => Some(reply),
        Ok(_) => None,
        Err(e) => {
            tracing::warn!(
                "the local cache's entry {} is damaged ({e}); ignoring it",
                job.key_hex
            );
            let _ = store.remove(&job.key_hex);
            None
        }
    }
}

/// Keep a verified successful result for this member's next builds.
pub fn remember(settings: &Settings, job: &CacheJob, stderr: &[u8], stdout: &[u8], object: &[u8]) {
    if settings.cache_size == 0 {
        return;
    }
    let Some(store) = results_store(settings) else {
        return;
    };
    let reply = Reply {
        version: ProtocolVersion::V1,
        status: 0,
        stderr: stderr.to_vec(),
        stdout: stdout.to_vec(),
        object: object.to_vec(),
    };
    if let Err(e) = store.put(&job.key_hex, &reply.encode()) {
        tracing::warn!("cannot keep the result in the local cache: {e}");
    }
}

/// Write a cached reply as the job's result: the object in place, then its
/// diagnostics (stripped of terminal controls: a host wrote them).
pub fn write_local_hit(reply: &Reply, output: &Path) -> std::io::Result<()> {
    write_output_atomically(output, &reply.object)?;
    write_stdout(&reply.stdout);
    write_stderr(&strip_terminal_controls(&reply.stderr));
    Ok(())
}

/// A hit of the network's cache, its object still in a temporary file.
pub struct SharedHit {
    pub reply: RemoteReply,
    pub result: String,
    pub holder: String,
}

/// Ask the coordinator for `job` and fetch the entry's reply from a holder.
/// `None` when there is no entry, or no holder served bytes with the
/// entry's result hash (each such holder is named).
pub async fn lookup_shared(
    settings: &Settings,
    member: &Arc<Identity>,
    job: &CacheJob,
    timeouts: NetTimeouts,
    output: &Path,
) -> Option<SharedHit> {
    let entry = ask_index(settings, member, job).await?;
    let mut result = [0u8; 32];
    hex::decode_to_slice(&entry.result, &mut result).ok()?;
    for holder in entry.holders.iter().take(MAX_HOLDERS) {
        let label = format!("{}:{}", holder.host, holder.port);
        let ticket = holder
            .ticket
            .as_deref()
            .and_then(|hex| Ticket::from_hex(hex).ok())
            .filter(|t| t.member == member.id() && t.host == holder.id)
            .map(|ticket| {
                Arc::new(TicketHolder {
                    ticket,
                    member: Arc::clone(member),
                })
            });
        let host = RemoteHost {
            label: label.clone(),
            host: holder.host.clone(),
            port: holder.port,
            version: ProtocolVersion::V2,
            ticket,
        };
        match Connection::fetch_stored(&host, &result, timeouts, output).await {
            Ok(reply) => {
                let got = result_hash(&hex::encode(reply.object_hash()), reply.status);
                if got == entry.result && reply.status == 0 {
                    return Some(SharedHit {
                        reply,
                        result: got,
                        holder: label,
                    });
                }
                tracing::warn!(
                    "cache holder {label} sent a result that is not the entry's ({got}, not {}); \
                     ignoring it",
                    entry.result
                );
            }
            Err(e) => tracing::debug!("cache holder {label}: {e}"),
        }
    }
    tracing::debug!("no cache holder of {} answered", job.key_hex);
    None
}

fn coordinator_client(settings: &Settings, member: &Arc<Identity>) -> Option<CoordinatorClient> {
    let url = settings.coordinator.as_deref()?;
    let dir = settings.dportage_dir.as_deref()?;
    let client = CoordinatorClient::new(url.trim(), Arc::clone(member))
        .and_then(|c| c.expecting_pinned_key(dir))
        .map_err(|e| tracing::debug!("no cache lookup: {e}"))
        .ok()?;
    Some(client.with_timeout(LOOKUP_TIMEOUT))
}

async fn ask_index(
    settings: &Settings,
    member: &Arc<Identity>,
    job: &CacheJob,
) -> Option<CacheEntryView> {
    let client = coordinator_client(settings, member)?;
    let dir = settings.dportage_dir.as_deref()?;
    // The answer must be signed by the key pinned for this coordinator: no
    // pin, no trust.
    let pinned = host_list::pinned_key(dir, &client.url().to_string()).ok()??;
    let signed = match client.cache_lookup(&job.key_hex).await {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!("cache lookup of {}: {e}", job.key_hex);
            return None;
        }
    };
    match signed.open(&pinned, &job.key_hex, &member.id(), unix_now()) {
        Ok(answer) => answer.entry,
        Err(e) => {
            tracing::warn!("ignoring the coordinator's cache answer: {e}");
            None
        }
    }
}

/// Note a hit of the network's cache for `dportage cache audit`.
pub fn log_fetched(settings: &Settings, line: &Fetched) {
    let Some(dir) = settings.dportage_dir.as_ref().map(|d| d.join(CACHE_DIR)) else {
        return;
    };
    if let Err(e) = append_fetched(&dir, line) {
        tracing::warn!(
            "cannot note the cache hit in {}: {e}; `dportage cache audit` will not know of it",
            dir.join(FETCHED_LOG).display()
        );
    }
}

fn append_fetched(dir: &Path, line: &Fetched) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(FETCHED_LOG);
    if std::fs::metadata(&path).is_ok_and(|m| m.len() > FETCHED_LOG_MAX) {
        // Bytes, not text: the middle may fall inside a character.
        let bytes = std::fs::read(&path).unwrap_or_default();
        let half = bytes.len() / 2;
        let cut = bytes[half..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(bytes.len(), |i| half + i + 1);
        write_output_atomically(&path, &bytes[cut..])?;
    }
    let mut text = serde_json::to_string(line).map_err(std::io::Error::other)?;
    text.push('\n');
    // One write of one line: concurrent compiles append whole lines.
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)?
        .write_all(text.as_bytes())
}

/// The fetch log's lines, unreadable ones skipped.
pub fn read_fetched(dir: &Path) -> Vec<Fetched> {
    std::fs::read_to_string(dir.join(CACHE_DIR).join(FETCHED_LOG))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// A spot check of a hit got `verified` from hosts that agreed: tell the
/// coordinator, and give it the input when it asks, so referees decide.
pub async fn dispute(
    settings: &Settings,
    member: &Arc<Identity>,
    job: &CacheJob,
    args: &[String],
    verified: &str,
    input: &[u8],
) -> Result<String, String> {
    let client = coordinator_client(settings, member).ok_or("no coordinator to tell")?;
    let dispute = CacheDispute {
        key: job.key_hex.clone(),
        toolchain: job.toolchain.clone(),
        args: args.to_vec(),
        input_hash: job.input_hash.clone(),
        result: verified.to_owned(),
        time: unix_now(),
    };
    let ack = client
        .cache_dispute(&dispute)
        .await
        .map_err(|e| e.to_string())?;
    if ack.withdrawn {
        return Ok("the entry is withdrawn".into());
    }
    if !ack.evidence_wanted {
        return Ok("the coordinator did not ask for the input".into());
    }
    let body = zstd::bulk::compress(input, 19).map_err(|e| e.to_string())?;
    client
        .upload_evidence(&job.input_hash, body)
        .await
        .map_err(|e| e.to_string())?;
    Ok("the input went to the coordinator, whose referees will decide".into())
}

pub const CACHE_HELP: &str = "\
Usage: dportage cache stats
       dportage cache audit [--delete]
       dportage cache key COMPILER ARGS...

  stats   this member's hit rate (from DIR/monitor.log) and local cache size
  audit   which objects written from the network's cache came from entries
          withdrawn since (exit 1 when some must be rebuilt; --delete removes
          them so the next build makes them again)
  key     print the key, input hash and toolchain a verified compile would
          be looked up by (run it where the build runs, inside `dportage`),
          without compiling or asking anyone; a job that would not be looked
          up is compiled as usual instead

The cache is on by default in verified dispatch; DPORTAGE_CACHE=0 (or
`dportage --no-cache`) turns it off, DPORTAGE_CACHE_SIZE bounds DIR/cache.
";

/// Cache hits and jobs of this member's recent jobs, from the monitor log.
pub fn hit_rate(dir: &Path) -> (u64, u64) {
    let log = super::monitor_state::LOG_FILE;
    let text: String = [format!("{log}.1"), log.to_owned()]
        .iter()
        .map(|name| std::fs::read_to_string(dir.join(name)).unwrap_or_default())
        .collect();
    crate::jobstate::outcome::cache_hits(text.lines())
}

pub fn stats_main(settings: &Settings) -> i32 {
    let Some(dir) = settings.dportage_dir.clone() else {
        eprintln!("dportage cache stats: no DPORTAGE_DIR (or HOME)");
        return 2;
    };
    let (hits, jobs) = hit_rate(&dir);
    let percent = if jobs == 0 {
        0.0
    } else {
        100.0 * hits as f64 / jobs as f64
    };
    println!("verified jobs logged: {jobs}; cache hits: {hits} ({percent:.1} %)");
    println!(
        "objects from the network's cache: {}",
        read_fetched(&dir).len()
    );
    match results_store(settings) {
        Some(store) => println!(
            "local cache {}: {} result(s), {} of {} bytes",
            dir.join(CACHE_DIR).join(RESULTS_DIR).display(),
            store.len(),
            store.total_bytes(),
            settings.cache_size
        ),
        None => println!("local cache: not usable"),
    }
    if !settings.cache {
        println!("DPORTAGE_CACHE=0: the cache is off");
    }
    0
}

/// `dportage cache audit [--delete]`: which objects written from the
/// network's cache came from entries withdrawn since. Exit 0 when none, 1
/// when some must be rebuilt (listed on stdout), 2 when it cannot tell.
pub fn audit_main(args: &[String], settings: &Settings) -> i32 {
    let delete = args.iter().any(|a| a == "--delete");
    if let Some(bad) = args.iter().find(|a| *a != "--delete") {
        eprintln!("dportage cache audit: unknown argument {bad:?} (only --delete)");
        return 2;
    }
    let Some(dir) = settings.dportage_dir.clone() else {
        eprintln!("dportage cache audit: no DPORTAGE_DIR (or HOME): nothing to audit");
        return 2;
    };
    let fetched = read_fetched(&dir);
    if fetched.is_empty() {
        println!("no object came from the network's cache");
        return 0;
    }
    let member = match Identity::load(&dir) {
        Ok(me) => Arc::new(me),
        Err(e) => {
            eprintln!("dportage cache audit: {e}");
            return 2;
        }
    };
    let Some(client) = coordinator_client(settings, &member) else {
        eprintln!(
            "dportage cache audit: no coordinator (set DPORTAGE_COORDINATOR, or run it inside \
             `dportage`)"
        );
        return 2;
    };
    let mut keys: Vec<String> = fetched.iter().map(|f| f.key.clone()).collect();
    keys.sort();
    keys.dedup();
    let runtime = match crate::runtime::current_thread() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("dportage cache audit: {e}");
            return 2;
        }
    };
    let mut withdrawn = Vec::new();
    for chunk in keys.chunks(crate::network::cache_api::MAX_AUDIT_KEYS) {
        match runtime.block_on(client.cache_withdrawn(chunk.to_vec())) {
            Ok(answer) => withdrawn.extend(answer.withdrawn),
            Err(e) => {
                eprintln!("dportage cache audit: asking {}: {e}", client.url());
                return 2;
            }
        }
    }
    if withdrawn.is_empty() {
        println!(
            "{} object(s) came from the network's cache; none of their entries was withdrawn",
            fetched.len()
        );
        return 0;
    }
    let store = results_store(settings);
    let mut rebuild: Vec<&Fetched> = fetched
        .iter()
        .filter(|f| {
            withdrawn
                .iter()
                .any(|w| w.key == f.key && w.result == f.result)
        })
        .collect();
    rebuild.sort_by(|a, b| a.output.cmp(&b.output));
    rebuild.dedup_by(|a, b| a.output == b.output);
    for w in &withdrawn {
        if let Some(store) = &store {
            let _ = store.remove(&w.key);
        }
    }
    for f in &rebuild {
        let why = withdrawn
            .iter()
            .find(|w| w.key == f.key)
            .map(|w| w.reason.as_str())
            .unwrap_or("");
        println!(
            "rebuild {} (entry {} withdrawn: {why})",
            f.output,
            &f.key[..16]
        );
        if delete {
            match std::fs::remove_file(&f.output) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => eprintln!("dportage cache audit: cannot delete {}: {e}", f.output),
            }
        }
    }
    eprintln!(
        "dportage cache audit: {} object(s) came from withdrawn entries{}",
        rebuild.len(),
        if delete {
            "; deleted, so the next build makes them again"
        } else {
            "; delete them (or run with --delete) and build again"
        }
    );
    1
}

/// Absolute form of `output` for the fetch log.
pub fn absolute(output: &Path) -> PathBuf {
    if output.is_absolute() {
        output.to_owned()
    } else {
        std::env::current_dir()
            .map(|d| d.join(output))
            .unwrap_or_else(|_| output.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_the_input_and_argv() {
        let argv = vec!["gcc".to_string(), "-c".into(), "x.i".into()];
        let a = CacheJob::new("f".repeat(64), &argv, b"int x;");
        let b = CacheJob::new("f".repeat(64), &argv, b"int y;");
        assert_ne!(a.key, b.key);
        assert_eq!(a.key_hex.len(), 64);
        assert_eq!(a.input_hash, blake3::hash(b"int x;").to_hex().to_string());
        assert_eq!(
            a.key,
            CacheKey::of(&"f".repeat(64), &argv, blake3::hash(b"int x;").as_bytes())
        );
    }

    #[test]
    fn fetch_log_round_trips_and_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let line = Fetched {
            time: 1,
            key: "a".repeat(64),
            result: "b".repeat(64),
            output: "/x/y.o".into(),
            holder: "127.0.0.1:1".into(),
        };
        let cache = dir.path().join(CACHE_DIR);
        append_fetched(&cache, &line).unwrap();
        append_fetched(&cache, &line).unwrap();
        assert_eq!(read_fetched(dir.path()), vec![line.clone(), line.clone()]);
        std::fs::write(
            cache.join(FETCHED_LOG),
            "junk\n".repeat(FETCHED_LOG_MAX as usize / 5 + 1),
        )
        .unwrap();
        append_fetched(&cache, &line).unwrap();
        assert!(std::fs::metadata(cache.join(FETCHED_LOG)).unwrap().len() < FETCHED_LOG_MAX);
        assert_eq!(read_fetched(dir.path()), vec![line]);
    }

    #[test]
    fn results_compare_status_and_object() {
        assert_eq!(
            result_of(0, b"o"),
            result_hash(&blake3::hash(b"o").to_hex(), 0)
        );
        assert_eq!(result_of(256, b"o"), result_of(256, b""));
        assert_ne!(result_of(0, b"o"), result_of(0, b"p"));
    }
}
