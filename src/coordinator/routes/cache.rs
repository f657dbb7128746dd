//! The result cache's endpoints (issue 16, `network::cache_api`):
//!
//! * `POST /v1/cache/claims`: a registered, unblacklisted host identity
//!   with a heartbeat held states what it compiled. The facts that weigh a
//!   claim (owner group, network, standing) are the coordinator's, never the
//!   claim's. Entries and new holders are stored before the answer.
//! * `POST /v1/cache/lookup`: members only (as `/v1/hosts` decides); the
//!   answer is signed for the caller and names live, unblacklisted holders
//!   with a fresh ticket each. An entry without such holders answers none.
//! * `POST /v1/cache/dispute`: a member's spot check disagrees with an
//!   entry; the coordinator checks the key is the job's, asks for the input
//!   (`PUT /v1/evidence/<input_hash>`) and the adjudicator re-runs it.
//! * `POST /v1/cache/withdrawn`: which of the keys were withdrawn.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use hyper::StatusCode;
use rand::seq::SliceRandom;

use crate::coordinator::cache_index::{hash_bytes, Claim, ClaimOutcome, HostFacts};
use crate::coordinator::disputes::{evidence_file, CachePending};
use crate::coordinator::http::{json_response, parse_json, ApiError, HttpResponse};
use crate::coordinator::state::Shared;
use crate::coordinator::store::WriteOp;
use crate::network::cache_api::{
    CacheAnswer, CacheClaims, CacheClaimsAck, CacheDispute, CacheDisputeAck, CacheEntryView,
    CacheHolder, CacheLookup, CacheWithdrawnQuery, CacheWithdrawnResponse, SignedCacheAnswer,
    WithdrawnEntry, MAX_HOLDERS,
};
use crate::network::clock::unix_now;
use crate::network::identity::IdentityId;
use crate::network::ticket::Ticket;
use crate::trust::cache_entry::CacheKey;
use crate::trust::standing::Standing;

fn key_of(hex_text: &str) -> Result<CacheKey, ApiError> {
    hash_bytes(hex_text)
        .map(CacheKey)
        .ok_or_else(|| ApiError::bad_request(format!("{hex_text:?} is not a 64-digit hex key")))
}

/// Refuse `id` unless it is a member, exactly as `/v1/hosts` decides.
fn require_member(shared: &Shared, id: &IdentityId) -> Result<(), ApiError> {
    let (now, exp) = (shared.now_ms(), shared.expiry_ms());
    let pool = shared.pool_read();
    if pool.is_blacklisted(id) {
        return Err(ApiError::blacklisted(id));
    }
    pool.member_via(id, now, exp)
        .ok_or_else(|| match pool.unproven_daemon(id, now, exp) {
            Some((daemon, addr)) => ApiError::not_member_unproven(id, &daemon, &addr),
            None => ApiError::not_member(id),
        })?;
    Ok(())
}

pub(super) async fn claims(
    shared: &Arc<Shared>,
    id: IdentityId,
    body: &[u8],
) -> Result<HttpResponse, ApiError> {
    let req: CacheClaims = parse_json(body)?;
    req.validate()
        .map_err(|e| ApiError::bad_request(format!("invalid cache claims: {e}")))?;
    let now_unix = unix_now();
    let facts = {
        let pool = shared.pool_read();
        if pool.is_blacklisted(&id) {
            return Err(ApiError::blacklisted(&id));
        }
        if !pool.is_known_daemon(&id) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "not_a_host",
                format!(
                    "identity {id} is not a registered host: only daemons claim cache results \
                     (they heartbeat with this identity first)"
                ),
            ));
        }
        let host = pool.host(&id).ok_or_else(|| {
            ApiError::new(
                StatusCode::CONFLICT,
                "not_live",
                format!(
                    "host {id} has no heartbeat held here: send a heartbeat, then claim again \
                     (a claim is weighed by the network the heartbeat came from)"
                ),
            )
        })?;
        HostFacts {
            id,
            owner: pool.owner_of(&id),
            network: host.network,
            standing: pool
                .standing_of(&id, now_unix)
                .unwrap_or(Standing::Probationary),
        }
    };
    // Queued under the index's lock, so that a holder added by another
    // request is never written before the entry it joins; one commit for all.
    let mut pending_writes = Vec::new();
    let mut queue = |op: WriteOp| -> Result<(), ApiError> {
        pending_writes.push(shared.store.submit(op)?);
        Ok(())
    };
    let (mut accepted, mut made, mut conflicts) = (0u32, 0u32, 0u64);
    {
        let mut index = shared.cache();
        for c in &req.claims {
            let Some(claim) = Claim::from_api(c) else {
                continue;
            };
            match index.claim(facts, claim, now_unix) {
                ClaimOutcome::Pending | ClaimOutcome::Agrees => accepted += 1,
                ClaimOutcome::HolderAdded => {
                    accepted += 1;
                    queue(WriteOp::CacheHolder {
                        key: claim.key,
                        holder: id,
                    })?;
                }
                ClaimOutcome::Made(row) => {
                    accepted += 1;
                    made += 1;
                    queue(WriteOp::CacheEntry(row))?;
                }
                ClaimOutcome::Conflict { entry_result } => {
                    conflicts += 1;
                    tracing::info!(
                        "cache claim by {id} for key {} says {}, the entry {}",
                        c.key,
                        c.result,
                        hex::encode(entry_result)
                    );
                }
                ClaimOutcome::Withdrawn => {}
            }
        }
    }
    let counters = &shared.cache_counters;
    counters
        .claims
        .fetch_add(req.claims.len() as u64, Ordering::Relaxed);
    counters.conflicts.fetch_add(conflicts, Ordering::Relaxed);
    counters
        .entries_made
        .fetch_add(u64::from(made), Ordering::Relaxed);
    for w in pending_writes {
        w.await?;
    }
    if made > 0 {
        shared.event(format!(
            "cache: {made} entr{} made by a claim of host {}",
            if made == 1 { "y" } else { "ies" },
            id.short()
        ));
    }
    if conflicts > 0 {
        shared.event(format!(
            "cache: {conflicts} claim(s) of host {} contradict existing entries (counted; entries unchanged)",
            id.short()
        ));
    }
    Ok(json_response(
        StatusCode::OK,
        &CacheClaimsAck {
            accepted,
            entries_made: made,
        },
    ))
}

pub(super) fn lookup(
    shared: &Arc<Shared>,
    id: IdentityId,
    body: &[u8],
) -> Result<HttpResponse, ApiError> {
    let req: CacheLookup = parse_json(body)?;
    req.validate()
        .map_err(|e| ApiError::bad_request(format!("invalid cache lookup: {e}")))?;
    require_member(shared, &id)?;
    let key = key_of(&req.key)?;
    shared
        .cache_counters
        .lookups
        .fetch_add(1, Ordering::Relaxed);
    let found = shared
        .cache()
        .get(&key)
        .filter(|e| !e.is_withdrawn())
        .map(|e| (e.result, e.holders().to_vec(), e.made_at));
    let now = unix_now();
    let entry = found.and_then(|(result, mut holders, made_at)| {
        holders.shuffle(&mut rand::thread_rng());
        let (now_ms, exp) = (shared.now_ms(), shared.expiry_ms());
        let live: Vec<(IdentityId, String, u16, bool)> = {
            let pool = shared.pool_read();
            holders
                .iter()
                .filter(|h| !pool.is_blacklisted(h))
                .filter_map(|h| pool.host(h))
                .filter(|h| now_ms.saturating_sub(h.last_seen_ms) <= exp)
                .take(MAX_HOLDERS)
                .map(|h| (h.id, h.host.to_string(), h.port, h.tickets))
                .collect()
        };
        if live.is_empty() {
            return None;
        }
        let lifetime = shared.cfg.ticket_lifetime.as_secs();
        let holders = live
            .into_iter()
            .map(|(hid, host, port, tickets)| CacheHolder {
                id: hid,
                host,
                port,
                ticket: tickets
                    .then(|| Ticket::issue(&shared.key, id, hid, now, lifetime).to_hex()),
            })
            .collect();
        Some(CacheEntryView {
            result: hex::encode(result),
            holders,
            made_at,
        })
    });
    if entry.is_some() {
        shared.cache().record_hit(&key);
        shared.cache_counters.hits.fetch_add(1, Ordering::Relaxed);
    }
    let answer = CacheAnswer {
        key: req.key,
        issued_to: id,
        issued_at: now,
        entry,
    };
    Ok(json_response(
        StatusCode::OK,
        &SignedCacheAnswer::sign(&shared.key, &answer),
    ))
}

pub(super) fn dispute(
    shared: &Arc<Shared>,
    id: IdentityId,
    body: &[u8],
) -> Result<HttpResponse, ApiError> {
    let d: CacheDispute = parse_json(body)?;
    d.validate()
        .map_err(|e| ApiError::bad_request(format!("invalid cache dispute: {e}")))?;
    require_member(shared, &id)?;
    if !d.key_matches() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "key_mismatch",
            format!(
                "key {} is not the cache key of this toolchain, argv and input hash; \
                 send the job exactly as it was dispatched",
                d.key
            ),
        ));
    }
    let key = key_of(&d.key)?;
    let state = {
        let index = shared.cache();
        index.get(&key).map(|e| {
            (
                e.is_withdrawn(),
                hex::encode(index.toolchain_of(e)) == d.toolchain,
                hex::encode(e.result) == d.result,
            )
        })
    };
    let no = |withdrawn| {
        Ok(json_response(
            StatusCode::OK,
            &CacheDisputeAck {
                evidence_wanted: false,
                withdrawn,
            },
        ))
    };
    match state {
        None => return no(false),
        Some((true, _, _)) => return no(true),
        Some((false, same_toolchain, same_result)) if !same_toolchain || same_result => {
            return no(false)
        }
        Some(_) => {}
    }
    shared
        .cache_counters
        .disputes
        .fetch_add(1, Ordering::Relaxed);
    let stored = evidence_file(&shared.cfg.data_dir, &d.input_hash).exists();
    let input = d.input_hash.clone();
    let pending = CachePending {
        member: id,
        dispute: d,
        attempts: 0,
        not_before_ms: 0,
    };
    let evidence_wanted = {
        let mut adj = shared.adjudications();
        if adj.cache_is_open_or_settled(&pending.dispute.key) {
            false
        } else if stored {
            adj.cache_enqueue(pending);
            false
        } else {
            adj.cache_want(pending);
            true
        }
    };
    shared.event(format!(
        "cache: member {} disputes entry {} (input {}){}",
        id.short(),
        &req_short(&key.to_hex()),
        req_short(&input),
        if evidence_wanted {
            "; evidence asked for"
        } else {
            ""
        }
    ));
    Ok(json_response(
        StatusCode::OK,
        &CacheDisputeAck {
            evidence_wanted,
            withdrawn: false,
        },
    ))
}

fn req_short(hash: &str) -> &str {
    hash.get(..16).unwrap_or(hash)
}

pub(super) fn withdrawn(
    shared: &Arc<Shared>,
    id: IdentityId,
    body: &[u8],
) -> Result<HttpResponse, ApiError> {
    let q: CacheWithdrawnQuery = parse_json(body)?;
    q.validate()
        .map_err(|e| ApiError::bad_request(format!("invalid withdrawn query: {e}")))?;
    require_member(shared, &id)?;
    let mut out = Vec::new();
    let index = shared.cache();
    for k in &q.keys {
        let key = key_of(k)?;
        if let Some(e) = index.get(&key) {
            if let Some(w) = &e.withdrawn {
                out.push(WithdrawnEntry {
                    key: k.clone(),
                    result: hex::encode(e.result),
                    at: w.0,
                    reason: w.1.clone(),
                });
            }
        }
    }
    drop(index);
    Ok(json_response(
        StatusCode::OK,
        &CacheWithdrawnResponse { withdrawn: out },
    ))
}
