//! `POST /v1/heartbeat`: a daemon says it is alive. A known daemon touches
//! only memory; a new identity is stored (durably, with a fresh standing
//! record) before it is acknowledged, and only if its network may register
//! one more: not blacklisted, not at a blacklisted address, within the
//! new-host quotas.

use std::net::IpAddr;
use std::sync::Arc;

use hyper::StatusCode;

use crate::coordinator::http::{json_response, parse_json, ApiError, HttpResponse};
use crate::coordinator::pool::{address_key, HeartbeatOutcome, NetKey, PoolError};
use crate::coordinator::state::{Limit, Shared};
use crate::coordinator::store::WriteOp;
use crate::network::api::{Heartbeat, HeartbeatAck};
use crate::network::clock::unix_now;
use crate::network::identity::IdentityId;
use crate::trust::standing::HostRecord;

pub(super) async fn heartbeat(
    shared: &Arc<Shared>,
    id: IdentityId,
    peer: IpAddr,
    body: &[u8],
) -> Result<HttpResponse, ApiError> {
    let hb: Heartbeat = parse_json(body)?;
    hb.validate()
        .map_err(|e| ApiError::bad_request(format!("invalid heartbeat: {e}")))?;
    let known_daemon = {
        let pool = shared.pool_read();
        if pool.is_blacklisted(&id) {
            return Err(ApiError::blacklisted(&id));
        }
        pool.host(&id).is_some() || pool.is_known_daemon(&id)
    };
    if !known_daemon {
        check_new_host(shared, &hb, peer)?;
        let now = unix_now();
        let net = NetKey::of(peer);
        shared
            .store
            .write(WriteOp::Register {
                id,
                daemon: true,
                now,
                network: net.display(),
            })
            .await?;
        let mut pool = shared.pool_write();
        pool.add_known(id, true);
        if pool.record(&id).is_none() {
            pool.set_record(id, HostRecord::new(now), now);
        }
        drop(pool);
        shared.event(format!(
            "new daemon {} registered from {}",
            id.short(),
            net.display()
        ));
    }
    let (outcome, advertised, standing) = {
        let mut pool = shared.pool_write();
        let (outcome, advertised) = pool.heartbeat(id, &hb, peer, shared.now_ms())?;
        // Standing changes with age: every heartbeat brings the listed one up to date.
        let standing = pool.refresh_standing(&id, unix_now());
        (outcome, advertised, standing)
    };
    if outcome == HeartbeatOutcome::Joined {
        let tc = hb
            .toolchains
            .first()
            .map(|t| t.version.as_str())
            .unwrap_or("");
        shared.event(format!(
            "host {} joined at {advertised} ({tc}, {} jobs, {})",
            id.short(),
            hb.capacity,
            standing.map(|s| s.name()).unwrap_or("probationary")
        ));
    }
    let expiry = shared.cfg.expiry.as_secs().max(1);
    let ack = HeartbeatAck {
        id,
        expiry_secs: expiry,
        heartbeat_within_secs: (expiry / 2).max(1),
        pool_size: shared.pool_read().held_count(),
        advertised,
        coordinator: Some(shared.key.id()),
    };
    Ok(json_response(StatusCode::OK, &ack))
}

/// May a new host identity register from `peer`, advertising what `hb` says?
/// Keys are free, so a blacklisting sticks to what is not: the address the
/// host advertised (and, for repeat offences, its whole network), and new
/// identities per network are few (`--new-hosts-per-network`,
/// `--new-hosts-per-wide-network`). A refusal spends nothing.
fn check_new_host(shared: &Shared, hb: &Heartbeat, peer: IpAddr) -> Result<(), ApiError> {
    let net = NetKey::of(peer).display();
    {
        let pool = shared.pool_read();
        if let Some(entry) = pool.network_blacklisted(&net) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "blacklisted",
                format!(
                    "network {net} is blacklisted ({}), so no new identity registers from it. \
                     If your machine there is honest, ask the coordinator's operator to review it \
                     (`dportage coordinator blacklist lift-network {net}`)",
                    entry.reason
                ),
            ));
        }
        let from = address_key(&peer.to_string());
        if let Some(by) = pool.address_blacklisted_by(&from) {
            return Err(ApiError::from(PoolError::AddressBlacklisted {
                address: from,
                id: by,
            }));
        }
        if let Some(h) = hb.host.as_deref().filter(|h| !h.is_empty()) {
            if let Some(by) = pool.address_blacklisted_by(&address_key(h)) {
                return Err(ApiError::from(PoolError::AddressBlacklisted {
                    address: h.to_string(),
                    id: by,
                }));
            }
        }
    }
    shared
        .new_hosts
        .admit(peer, shared.now_ms())
        .map_err(|refusal| {
            let (limit, flag) = if refusal.wide {
                (
                    Limit::NewHostsPerWideNetwork,
                    "--new-hosts-per-wide-network",
                )
            } else {
                (Limit::NewHostsPerNetwork, "--new-hosts-per-network")
            };
            shared.counters.refused_by(limit);
            ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_registrations",
                format!(
                    "{} new hosts from {} already (limit {}, {flag}); retry in {} s. \
                     Hosts registered before keep heartbeating; only new identities wait",
                    refusal.rate.n, refusal.network, refusal.rate, refusal.retry_after_secs
                ),
            )
            .with_retry_after(refusal.retry_after_secs)
        })
}
