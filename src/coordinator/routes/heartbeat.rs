//! `POST /v1/heartbeat`: a daemon says it is alive. A known daemon touches
//! only memory; a new identity is stored (durably) before it is acknowledged.

use std::net::IpAddr;
use std::sync::Arc;

use hyper::StatusCode;

use crate::coordinator::http::{json_response, parse_json, ApiError, HttpResponse};
use crate::coordinator::pool::{HeartbeatOutcome, NetKey};
use crate::coordinator::state::Shared;
use crate::coordinator::store::WriteOp;
use crate::network::api::{Heartbeat, HeartbeatAck};
use crate::network::clock::unix_now;
use crate::network::identity::IdentityId;

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
        let net = NetKey::of(peer);
        check_registration_limit(shared, net)?;
        shared
            .store
            .write(WriteOp::Register {
                id,
                daemon: true,
                now: unix_now(),
                network: net.display(),
            })
            .await?;
        shared.pool_write().add_known(id, true);
        shared.event(format!(
            "new daemon {} registered from {}",
            id.short(),
            net.display()
        ));
    }
    let (outcome, advertised) = shared
        .pool_write()
        .heartbeat(id, &hb, peer, shared.now_ms())?;
    if outcome == HeartbeatOutcome::Joined {
        let tc = hb
            .toolchains
            .first()
            .map(|t| t.version.as_str())
            .unwrap_or("");
        shared.event(format!(
            "host {} joined at {advertised} ({tc}, {} jobs)",
            id.short(),
            hb.capacity
        ));
    }
    let expiry = shared.cfg.expiry.as_secs().max(1);
    let ack = HeartbeatAck {
        id,
        expiry_secs: expiry,
        heartbeat_within_secs: (expiry / 2).max(1),
        pool_size: shared.pool_read().held_count(),
        advertised,
    };
    Ok(json_response(StatusCode::OK, &ack))
}

/// New identities per network and hour are bounded, so one machine cannot
/// mint an army of daemons. The sweeper forgets past hours.
fn check_registration_limit(shared: &Shared, net: NetKey) -> Result<(), ApiError> {
    let hour = unix_now() / 3600;
    let mut regs = shared
        .registrations
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    let e = regs.entry(net).or_insert((hour, 0));
    if e.0 != hour {
        *e = (hour, 0);
    }
    if e.1 >= shared.cfg.registrations_per_network_per_hour {
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_registrations",
            format!(
                "{} new identities from {} this hour already (limit {}); retry next hour",
                e.1,
                net.display(),
                shared.cfg.registrations_per_network_per_hour
            ),
        ));
    }
    e.1 += 1;
    Ok(())
}
