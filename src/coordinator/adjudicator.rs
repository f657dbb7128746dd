//! Disputes decided by re-running the evidence (`trust::adjudication`): the
//! report route asks for a disputed job's input, the evidence route stores
//! it under `DATA/evidence/<input_hash>.zst`, and the adjudicator task (spawned
//! with the coordinator) sends the job to `--referees` unrelated established
//! hosts serving the report's toolchain and applies their unanimous ruling.
//! The same job goes to the parties' hosts (the accused, and the hosts that
//! sided with the reporter): a host is struck only for a wrong result the
//! coordinator saw itself, never on the reporter's word.
//!
//! What is pending (evidence asked for, disputes waiting for referees) is
//! kept in memory: a restart forgets it, and a member reporting again is
//! asked again. Decided adjudications are recorded durably (the
//! `adjudications` table) and the blacklistings they cause are the usual
//! durable ones.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Weak;
use std::time::Duration;

use super::cache_index::hash_bytes;
use super::disputes::{decompress_bounded, evidence_file, CachePending, Pending, MAX_ATTEMPTS};
use super::state::Shared;
use super::store::{AdjudicationRow, BlacklistRow, WriteOp, WriteResult};
use crate::job_call::{self, JobCall};
use crate::network::api::{result_hash_of, MismatchReport};
use crate::network::clock::unix_now;
use crate::network::identity::IdentityId;
use crate::protocol::ProtocolVersion;
use crate::trust::adjudication::{pick_referees, rule_with, Dispute, Ruling};
use crate::trust::cache_entry::CacheKey;
use crate::trust::pairing::Listed;

/// A candidate referee.
struct Candidate {
    id: IdentityId,
    host: String,
    port: u16,
    lzo: bool,
    tickets: bool,
}

/// The hash the reporter accepted and the hosts that returned it: the most
/// common result among the report's results other than the accused's.
fn reporter_side(
    report: &MismatchReport,
    accused: &IdentityId,
    resolve: impl Fn(&str) -> Option<IdentityId>,
) -> (Option<String>, Option<String>, Vec<IdentityId>) {
    let is_accused = |r: &crate::network::api::HostResultHash| {
        r.id.as_ref() == Some(accused)
            || (r.id.is_none()
                && (r.host == report.host_addr || resolve(&r.host).as_ref() == Some(accused)))
    };
    let accused_hash = report
        .results
        .iter()
        .find(|r| is_accused(r))
        .map(|r| r.hash.clone());
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for r in report.results.iter().filter(|r| !is_accused(r)) {
        if Some(&r.hash) != accused_hash.as_ref() {
            *counts.entry(r.hash.as_str()).or_default() += 1;
        }
    }
    let accepted = counts
        .into_iter()
        .max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(a.0)))
        .map(|(h, _)| h.to_string());
    let side = report
        .results
        .iter()
        .filter(|r| Some(&r.hash) == accepted.as_ref() && !is_accused(r))
        .filter_map(|r| r.id.or_else(|| resolve(&r.host)))
        .collect();
    (accused_hash, accepted, side)
}

/// A host as the referee draw sees it: its owner, and its network made
/// distinct by an index under `--referees-any-network`.
type RefereeListing = Listed<IdentityId, (crate::network::selection::NetKey, usize)>;

/// Who may re-run a job of `toolchain`: the live, unblacklisted hosts
/// serving it, as calls and as the pairing rules see them (with
/// `--referees-any-network` every host is its own network).
fn serving(
    s: &Shared,
    pool: &super::pool::Pool,
    toolchain: &str,
    now: u64,
    exp: u64,
    now_unix: u64,
) -> (Vec<Candidate>, Vec<RefereeListing>) {
    let mut candidates = Vec::new();
    let mut listed = Vec::new();
    for h in pool.hosts() {
        let live = now.saturating_sub(h.last_seen_ms) <= exp;
        if !live || pool.is_blacklisted(&h.id) || !h.fps.iter().any(|f| **f == *toolchain) {
            continue;
        }
        candidates.push(Candidate {
            id: h.id,
            host: h.host.to_string(),
            port: h.port,
            lzo: h.lzo,
            tickets: h.tickets,
        });
        let distinct = if s.cfg.referees_any_network {
            listed.len()
        } else {
            0
        };
        listed.push(Listed {
            owner: h.owner,
            network: (h.network, distinct),
            standing: pool.standing_of(&h.id, now_unix).unwrap_or(h.standing),
            weight: 1,
        });
    }
    (candidates, listed)
}

/// Run the adjudicator until the coordinator is dropped.
pub(super) fn spawn_adjudicator(weak: Weak<Shared>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut ticks: u64 = 0;
        loop {
            tick.tick().await;
            ticks += 1;
            let Some(s) = weak.upgrade() else { return };
            if s.stopping.load(Ordering::SeqCst) {
                return;
            }
            let batch = s.adjudications().take_due(s.now_ms());
            for p in batch {
                adjudicate(&s, p).await;
            }
            let batch = s.adjudications().cache_take_due(s.now_ms());
            for p in batch {
                adjudicate_cache(&s, p).await;
            }
            // Hit counts are statistics: stored every few seconds, in one
            // write; claims past their day go too when no claim arrives.
            if ticks % HIT_FLUSH_TICKS == 0 {
                s.cache().expire(unix_now());
                flush_hits(&s).await;
            }
        }
    });
}

/// Ticks (of 250 ms) between two writes of the cache's hit counts.
const HIT_FLUSH_TICKS: u64 = 20;

async fn flush_hits(s: &Shared) {
    let hits = s.cache().take_dirty_hits();
    if hits.is_empty() {
        return;
    }
    if let Err(e) = s.store.write(WriteOp::CacheHits(hits)).await {
        tracing::warn!("storing cache hit counts: {e}");
    }
}

/// Send `source` with `argv` to each of `calls` (id, address, lzo, takes
/// tickets) with the coordinator's own ticket pass; each one's result hash.
/// Send one job to `target` (`HOST:PORT`) and return the result hash of
/// its answer, or why there is none.
async fn rerun(
    target: &str,
    lzo: bool,
    ticket_pass: Option<Vec<u8>>,
    argv: &[String],
    source: &[u8],
    timeout: Duration,
) -> Result<String, String> {
    let addr: Option<SocketAddr> = tokio::net::lookup_host(target)
        .await
        .ok()
        .and_then(|mut a| a.next());
    let Some(addr) = addr else {
        return Err(format!("cannot resolve {target}"));
    };
    let job = JobCall {
        addr,
        version: if lzo {
            ProtocolVersion::V2
        } else {
            ProtocolVersion::V1
        },
        argv,
        source,
        timeout,
        ticket_pass,
    };
    job_call::call(&job)
        .await
        .map(|d| result_hash_of(&d))
        .map_err(|e| e.to_string())
}

async fn run_job(
    s: &Shared,
    calls: Vec<(IdentityId, String, bool, bool)>,
    argv: &[String],
    source: &[u8],
) -> Vec<(IdentityId, Result<String, String>)> {
    let mut set = tokio::task::JoinSet::new();
    for (id, target, lzo, tickets) in calls {
        let ticket_pass = tickets.then(|| s.own_ticket_pass(id));
        let argv = argv.to_vec();
        let source = source.to_vec();
        let timeout = s.cfg.referee_timeout;
        set.spawn(async move {
            let r = rerun(&target, lzo, ticket_pass, &argv, &source, timeout).await;
            (id, r)
        });
    }
    let mut out = Vec::new();
    while let Some(r) = set.join_next().await {
        if let Ok(answer) = r {
            out.push(answer);
        }
    }
    out
}

/// Decide a cache dispute: unanimous referees unrelated to the entry's
/// witnesses (and to the disputing member) re-run the job. A result other
/// than the entry's withdraws it and strikes the witnesses (their signed
/// claims of the wrong result are the evidence); the entry's own result
/// rejects the dispute; anything else is retried later.
async fn adjudicate_cache(s: &Shared, mut p: CachePending) {
    p.attempts += 1;
    let d = p.dispute.clone();
    let short_key = short(&d.key).to_string();
    let Some(key) = hash_bytes(&d.key).map(CacheKey) else {
        s.adjudications().cache_finish(&p, true);
        return;
    };
    let entry = s
        .cache()
        .get(&key)
        .map(|e| (e.result, e.witnesses().to_vec(), e.is_withdrawn()));
    let Some((entry_result, witnesses, false)) = entry else {
        // Gone or withdrawn meanwhile: nothing left to decide.
        s.adjudications().cache_finish(&p, true);
        return;
    };
    let entry_result = hex::encode(entry_result);
    let path = evidence_file(&s.cfg.data_dir, &d.input_hash);
    let source = match tokio::fs::read(&path)
        .await
        .map_err(|e| e.to_string())
        .and_then(|c| decompress_bounded(&c).map_err(|e| e.to_string()))
    {
        Ok(v) => v,
        Err(why) => {
            s.event(format!(
                "cache dispute of entry {short_key} dropped: evidence {} unreadable ({why})",
                path.display()
            ));
            s.adjudications().cache_finish(&p, false);
            return;
        }
    };
    let now_unix = unix_now();
    let (now, exp) = (s.now_ms(), s.expiry_ms());
    let (candidates, chosen) = {
        let pool = s.pool_read();
        let (candidates, mut listed) = serving(s, &pool, &d.toolchain, now, exp, now_unix);
        let member_owner = pool.owner_of(&p.member);
        let witness_owners: Vec<IdentityId> = witnesses.iter().map(|w| pool.owner_of(w)).collect();
        let mut parties: Vec<usize> = candidates
            .iter()
            .enumerate()
            .filter(|(_, c)| {
                let o = pool.owner_of(&c.id);
                witnesses.contains(&c.id) || witness_owners.contains(&o) || o == member_owner
            })
            .map(|(i, _)| i)
            .collect();
        // Witnesses not live any more still rule out their owners and networks.
        let n = candidates.len();
        for w in &witnesses {
            if candidates.iter().any(|c| c.id == *w) {
                continue;
            }
            if let Some(h) = pool.host(w) {
                parties.push(listed.len());
                let distinct = if s.cfg.referees_any_network {
                    listed.len()
                } else {
                    0
                };
                listed.push(Listed {
                    owner: h.owner,
                    network: (h.network, distinct),
                    standing: crate::trust::standing::Standing::Probationary,
                    weight: 1,
                });
            }
        }
        let chosen = {
            let mut rng = rand::thread_rng();
            pick_referees(&listed, &parties, s.cfg.referees, |i| i < n, &mut rng)
        };
        (candidates, chosen)
    };
    let calls = chosen
        .iter()
        .map(|&i| {
            let c = &candidates[i];
            (c.id, format!("{}:{}", c.host, c.port), c.lzo, c.tickets)
        })
        .collect();
    let answers = run_job(s, calls, &d.args, &source).await;
    let results: Vec<&String> = answers
        .iter()
        .filter_map(|(_, r)| r.as_ref().ok())
        .collect();
    let referees_text = answers
        .iter()
        .map(|(id, r)| match r {
            Ok(h) => format!("{id}={h}"),
            Err(e) => format!("{id}=error: {e}"),
        })
        .collect::<Vec<_>>()
        .join(",");
    let needed = s.cfg.referees.max(1);
    let unanimous = (results.len() >= needed && results.iter().all(|r| *r == results[0]))
        .then(|| results[0].clone());
    let counters = &s.cache_counters;
    match unanimous {
        Some(r) if r != entry_result => {
            let reason = format!(
                "cache entry {short_key} withdrawn: {} referee(s) agreed on {}, the entry said {}",
                results.len(),
                short(&r),
                short(&entry_result)
            );
            let at = unix_now();
            let op = WriteOp::CacheWithdraw {
                key,
                at,
                reason: reason.clone(),
            };
            if let Err(e) = s.store.write(op).await {
                tracing::error!("withdrawing cache entry {}: {e}", d.key);
                let delay = 60_000 * u64::from(p.attempts);
                s.adjudications().cache_requeue(p, s.now_ms(), delay);
                return;
            }
            let strike = format!(
                "claimed a wrong result for cache entry {short_key} (referees agreed on {})",
                short(&r)
            );
            for w in &witnesses {
                blacklist(s, *w, &strike).await;
            }
            // Shown withdrawn once its witnesses are struck: whoever sees the
            // withdrawal sees the whole ruling.
            s.cache().withdraw(&key, at, &reason);
            counters.withdrawals.fetch_add(1, Ordering::Relaxed);
            counters.disputes_upheld.fetch_add(1, Ordering::Relaxed);
            s.event(format!(
                "cache: entry {short_key} withdrawn after a dispute by {}; witnesses {} blacklisted",
                p.member.short(),
                witnesses
                    .iter()
                    .map(|w| w.short())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
            record_cache(
                s,
                &p,
                &witnesses,
                &referees_text,
                "cache_withdrawn",
                &witnesses,
            )
            .await;
            s.adjudications().cache_finish(&p, true);
        }
        Some(_) => {
            counters.disputes_rejected.fetch_add(1, Ordering::Relaxed);
            s.event(format!(
                "cache: dispute of entry {short_key} by {} rejected: the referees agree with the entry",
                p.member.short()
            ));
            record_cache(s, &p, &witnesses, &referees_text, "cache_upheld", &[]).await;
            s.adjudications().cache_finish(&p, true);
        }
        None => {
            counters
                .disputes_inconclusive
                .fetch_add(1, Ordering::Relaxed);
            record_cache(s, &p, &witnesses, &referees_text, "cache_inconclusive", &[]).await;
            if p.attempts >= MAX_ATTEMPTS {
                s.event(format!(
                    "cache: dispute of entry {short_key} inconclusive {} times; dropped",
                    p.attempts
                ));
                s.adjudications().cache_finish(&p, false);
            } else {
                s.event(format!(
                    "cache: dispute of entry {short_key} inconclusive ({} of {needed} referee answer(s), not unanimous or missing); retrying later",
                    results.len()
                ));
                let delay = 60_000 * u64::from(p.attempts);
                s.adjudications().cache_requeue(p, s.now_ms(), delay);
            }
        }
    }
}

async fn record_cache(
    s: &Shared,
    p: &CachePending,
    witnesses: &[IdentityId],
    referees: &str,
    ruling: &str,
    struck: &[IdentityId],
) {
    let op = WriteOp::Adjudication(AdjudicationRow {
        accused: witnesses.first().copied().unwrap_or(p.member),
        input_hash: p.dispute.input_hash.clone(),
        report_ids: format!("cache {}", p.dispute.key),
        referees: referees.to_string(),
        ruling: ruling.to_string(),
        struck: struck
            .iter()
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(","),
        now: unix_now(),
    });
    if let Err(e) = s.store.write(op).await {
        tracing::error!("recording a cache adjudication: {e}");
    }
}

async fn adjudicate(s: &Shared, mut p: Pending) {
    p.attempts += 1;
    let input = p.report.input_hash.clone();
    let path = evidence_file(&s.cfg.data_dir, &input);
    let source = match tokio::fs::read(&path)
        .await
        .map_err(|e| e.to_string())
        .and_then(|c| decompress_bounded(&c).map_err(|e| e.to_string()))
    {
        Ok(v) => v,
        Err(why) => {
            s.event(format!(
                "adjudication of report #{} dropped: evidence {} unreadable ({why})",
                p.report_id,
                path.display()
            ));
            s.adjudication_counters
                .dropped
                .fetch_add(1, Ordering::Relaxed);
            record(s, &p, "", "dropped", &[]).await;
            s.adjudications().finish(&p, true);
            return;
        }
    };
    let toolchain = p.report.toolchain.clone().unwrap_or_default();
    let now_unix = unix_now();
    let (now, exp) = (s.now_ms(), s.expiry_ms());
    // The pool of candidate referees, and the parties' indices in it.
    let (candidates, listed, parties, dispute, named) = {
        let pool = s.pool_read();
        let (candidates, listed) = serving(s, &pool, &toolchain, now, exp, now_unix);
        let (accused_hash, accepted, side) =
            reporter_side(&p.report, &p.accused, |a| pool.resolve_addr(a));
        let reporter_owner = pool.owner_of(&p.reporter);
        let mut party_ids: Vec<IdentityId> = vec![p.accused];
        party_ids.extend(side.iter().copied());
        let parties: Vec<usize> = candidates
            .iter()
            .enumerate()
            .filter(|(_, c)| party_ids.contains(&c.id) || pool.owner_of(&c.id) == reporter_owner)
            .map(|(i, _)| i)
            .collect();
        // The hosts the report names are asked for the job themselves.
        let named: Vec<IdentityId> = std::iter::once(p.accused)
            .chain(side.iter().copied())
            .collect();
        // The reporter's own hosts side with its report.
        let mut reporter_side: Vec<IdentityId> = side;
        for c in &candidates {
            if pool.owner_of(&c.id) == reporter_owner && !reporter_side.contains(&c.id) {
                reporter_side.push(c.id);
            }
        }
        let dispute = match (accused_hash, accepted) {
            (Some(a), Some(r)) => Some(Dispute {
                accused: p.accused,
                accused_result: a,
                reporter_side,
                reported_result: r,
            }),
            _ => None,
        };
        (candidates, listed, parties, dispute, named)
    };
    let Some(dispute) = dispute else {
        s.event(format!(
            "adjudication of report #{} dropped: its results name no accused and accepted result",
            p.report_id
        ));
        s.adjudication_counters
            .dropped
            .fetch_add(1, Ordering::Relaxed);
        record(s, &p, "", "dropped", &[]).await;
        s.adjudications().finish(&p, true);
        return;
    };
    let chosen = {
        let mut rng = rand::thread_rng();
        pick_referees(&listed, &parties, s.cfg.referees, |_| true, &mut rng)
    };
    // The referees, then the hosts the report names (what they return to
    // the coordinator itself is the only evidence against them; the
    // reporter's other hosts are struck with it for a false report anyway).
    // (referee?, host, address, lzo, takes tickets)
    let mut calls: Vec<(bool, IdentityId, String, bool, bool)> = chosen
        .iter()
        .map(|&i| {
            let c = &candidates[i];
            (
                true,
                c.id,
                format!("{}:{}", c.host, c.port),
                c.lzo,
                c.tickets,
            )
        })
        .collect();
    {
        let pool = s.pool_read();
        for id in &named {
            if let Some(h) = pool.host(id) {
                calls.push((
                    false,
                    h.id,
                    format!("{}:{}", h.host, h.port),
                    h.lzo,
                    h.tickets,
                ));
            }
        }
    }
    let mut set = tokio::task::JoinSet::new();
    for (referee, id, target, lzo, tickets) in calls {
        let ticket_pass = tickets.then(|| s.own_ticket_pass(id));
        let argv = p.report.args.clone();
        let source = source.clone();
        let timeout = s.cfg.referee_timeout;
        set.spawn(async move {
            let r = rerun(&target, lzo, ticket_pass, &argv, &source, timeout).await;
            (referee, id, r)
        });
    }
    let mut answers: Vec<(IdentityId, Result<String, String>)> = Vec::new();
    let mut seen: Vec<(IdentityId, String)> = Vec::new();
    let mut parties_text = Vec::new();
    while let Some(r) = set.join_next().await {
        match r {
            Ok((true, id, answer)) => answers.push((id, answer)),
            Ok((false, id, answer)) => {
                parties_text.push(match &answer {
                    Ok(h) => format!("{id}={h}"),
                    Err(e) => format!("{id}=error: {e}"),
                });
                if let Ok(h) = answer {
                    seen.push((id, h));
                }
            }
            Err(_) => {}
        }
    }
    let results: Vec<String> = answers
        .iter()
        .filter_map(|(_, r)| r.as_ref().ok().cloned())
        .collect();
    let referees_text = answers
        .iter()
        .map(|(id, r)| match r {
            Ok(h) => format!("{id}={h}"),
            Err(e) => format!("{id}=error: {e}"),
        })
        .collect::<Vec<_>>()
        .join(",");
    let referees_text = if parties_text.is_empty() {
        referees_text
    } else {
        format!("{referees_text}; parties {}", parties_text.join(","))
    };
    let ruling = rule_with(&dispute, &p.reporter, &results, s.cfg.referees, &seen);
    match ruling {
        Ruling::AccusedWrong { struck } => {
            s.adjudication_counters
                .accused_wrong
                .fetch_add(1, Ordering::Relaxed);
            let reason = format!(
                "adjudication of report #{} (input {}): {} referee(s) agreed with the reporter",
                p.report_id,
                short(&input),
                results.len()
            );
            blacklist(s, struck, &reason).await;
            s.event(format!(
                "adjudication: host {} returned a wrong result for input {} (report #{}); blacklisted",
                struck.short(),
                short(&input),
                p.report_id
            ));
            record(s, &p, &referees_text, "accused_wrong", &[struck]).await;
            s.adjudications().finish(&p, true);
        }
        Ruling::ReportFalse { struck } => {
            s.adjudication_counters
                .report_false
                .fetch_add(1, Ordering::Relaxed);
            let reason = format!(
                "adjudication of report #{} (input {}): the referees agreed with the accused host; a false report",
                p.report_id,
                short(&input)
            );
            // The reporter's whole owner group (its reports and its hosts),
            // and the hosts of its side seen returning a wrong result.
            let mut all = struck.clone();
            {
                let pool = s.pool_read();
                let owner = pool.owner_of(&p.reporter);
                for h in pool.hosts() {
                    if pool.owner_of(&h.id) == owner && !all.contains(&h.id) {
                        all.push(h.id);
                    }
                }
            }
            for id in &all {
                blacklist(s, *id, &reason).await;
            }
            s.event(format!(
                "adjudication: report #{} against {} was false (input {}); blacklisted {}",
                p.report_id,
                p.accused.short(),
                short(&input),
                all.iter().map(|i| i.short()).collect::<Vec<_>>().join(", ")
            ));
            record(s, &p, &referees_text, "report_false", &all).await;
            s.adjudications().finish(&p, true);
        }
        Ruling::Unconfirmed => {
            s.adjudication_counters
                .unconfirmed
                .fetch_add(1, Ordering::Relaxed);
            s.event(format!(
                "adjudication of report #{} (input {}): the referees side with the reporter, but host {} \
                 returned no wrong result to the coordinator; nobody is struck on a reporter's word",
                p.report_id,
                short(&input),
                p.accused.short()
            ));
            record(s, &p, &referees_text, "unconfirmed", &[]).await;
            s.adjudications().finish(&p, true);
        }
        Ruling::Inconclusive => {
            s.adjudication_counters
                .inconclusive
                .fetch_add(1, Ordering::Relaxed);
            record(s, &p, &referees_text, "inconclusive", &[]).await;
            if p.attempts >= MAX_ATTEMPTS {
                s.adjudication_counters
                    .dropped
                    .fetch_add(1, Ordering::Relaxed);
                s.event(format!(
                    "adjudication of report #{} inconclusive {} times ({} referee answer(s) of {} needed); dropped",
                    p.report_id, p.attempts, results.len(), s.cfg.referees
                ));
                s.adjudications().finish(&p, false);
            } else {
                s.event(format!(
                    "adjudication of report #{} inconclusive ({} referee answer(s) of {} needed); retrying later",
                    p.report_id,
                    results.len(),
                    s.cfg.referees
                ));
                // Other referees may come up meanwhile: a minute, then two.
                let delay = 60_000 * u64::from(p.attempts);
                s.adjudications().requeue(p, s.now_ms(), delay);
            }
        }
    }
}

fn short(hash: &str) -> &str {
    hash.get(..16).unwrap_or(hash)
}

/// Blacklist `id` by a decision (an adjudication's ruling, or the operator's):
/// its live addresses too, and its network at `--network-strikes`. The new
/// entry, or `None` when it was blacklisted already (or the write failed,
/// which is logged).
pub(super) async fn blacklist(
    s: &Shared,
    id: IdentityId,
    reason: &str,
) -> Option<crate::network::api::BlacklistEntry> {
    let (addresses, network) = s
        .pool_read()
        .host(&id)
        .map(|h| (h.blacklist_addresses(), h.network.display()))
        .unwrap_or_default();
    let op = WriteOp::Blacklist(BlacklistRow {
        id,
        now: unix_now(),
        reason: reason.to_string(),
        addresses,
        network,
        network_strikes: s.cfg.network_strikes,
    });
    match s.store.write(op).await {
        Ok(WriteResult::Blacklisted { newly, network }) => {
            if let Some(entry) = &newly {
                s.pool_write().set_blacklisted(entry.clone());
                s.counters.blacklistings.fetch_add(1, Ordering::Relaxed);
            }
            if let Some(entry) = network {
                let net = entry.network.clone();
                s.pool_write().set_network_blacklisted(entry);
                s.event(format!(
                    "network {net} blacklisted after {} blacklisted hosts in it",
                    s.cfg.network_strikes
                ));
            }
            newly
        }
        Ok(_) => None,
        Err(e) => {
            tracing::error!("blacklisting {id}: {e}");
            None
        }
    }
}

async fn record(s: &Shared, p: &Pending, referees: &str, ruling: &str, struck: &[IdentityId]) {
    let op = WriteOp::Adjudication(AdjudicationRow {
        accused: p.accused,
        input_hash: p.report.input_hash.clone(),
        report_ids: p.report_id.to_string(),
        referees: referees.to_string(),
        ruling: ruling.to_string(),
        struck: struck
            .iter()
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(","),
        now: unix_now(),
    });
    if let Err(e) = s.store.write(op).await {
        tracing::error!("recording an adjudication: {e}");
    }
}
