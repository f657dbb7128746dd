//! `GET /v1/admin/blacklist`, `POST /v1/admin/blacklist/add`,
//! `POST /v1/admin/blacklist/lift`,
//! `POST /v1/admin/blacklist/lift-network`, `POST /v1/admin/vouch` and
//! `POST /v1/admin/unvouch`, for the keys given with `--admin-key` only.

use std::sync::Arc;

use hyper::StatusCode;

use crate::coordinator::http::{json_response, parse_json, ApiError, HttpResponse};
use crate::coordinator::pool::network_key;
use crate::coordinator::state::Shared;
use crate::coordinator::store::{WriteOp, WriteResult};
use crate::network::api::{
    BlacklistAddRequest, BlacklistAddResponse, BlacklistResponse, LiftNetworkRequest,
    LiftNetworkResponse, LiftRequest, LiftResponse, VouchRequest, VouchResponse,
};
use crate::network::clock::unix_now;
use crate::network::identity::IdentityId;

fn require_admin(shared: &Shared, id: &IdentityId) -> Result<(), ApiError> {
    if shared.cfg.admin_keys.contains(id) {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::FORBIDDEN,
        "not_admin",
        format!("identity {id} is not an admin key of this coordinator (--admin-key)"),
    ))
}

pub(super) fn blacklist(shared: &Arc<Shared>, id: IdentityId) -> Result<HttpResponse, ApiError> {
    require_admin(shared, &id)?;
    let (entries, networks) = {
        let pool = shared.pool_read();
        (pool.blacklist_entries(), pool.blacklisted_networks())
    };
    Ok(json_response(
        StatusCode::OK,
        &BlacklistResponse { entries, networks },
    ))
}

/// Longest reason kept with an operator's blacklisting.
const MAX_REASON: usize = 500;

/// The operator blacklists a host by hand: the operator's decision, like an
/// adjudication's (reports never blacklist by themselves).
pub(super) async fn blacklist_add(
    shared: &Arc<Shared>,
    id: IdentityId,
    body: &[u8],
) -> Result<HttpResponse, ApiError> {
    require_admin(shared, &id)?;
    let req: BlacklistAddRequest = parse_json(body)?;
    if !shared.pool_read().is_known_daemon(&req.id) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_a_host",
            format!(
                "{} is not a host registered here (a member's or person's key is not blacklisted: its hosts are)",
                req.id
            ),
        ));
    }
    let given: String = req
        .reason
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_REASON)
        .collect();
    let reason = format!("by admin {}: {}", id.short(), given.trim());
    let newly = crate::coordinator::adjudicator::blacklist(shared, req.id, &reason).await;
    let addresses = match &newly {
        Some(entry) => {
            shared.event(format!(
                "host {} blacklisted {reason}; address(es) {} blocked",
                req.id.short(),
                entry.addresses.join(", ")
            ));
            entry.addresses.clone()
        }
        None => shared
            .pool_read()
            .blacklist_entries()
            .into_iter()
            .find(|e| e.id == req.id)
            .map(|e| e.addresses)
            .unwrap_or_default(),
    };
    Ok(json_response(
        StatusCode::OK,
        &BlacklistAddResponse {
            id: req.id,
            added: newly.is_some(),
            addresses,
        },
    ))
}

pub(super) async fn lift(
    shared: &Arc<Shared>,
    id: IdentityId,
    body: &[u8],
) -> Result<HttpResponse, ApiError> {
    require_admin(shared, &id)?;
    let req: LiftRequest = parse_json(body)?;
    let result = shared.store.write(WriteOp::Lift { id: req.id }).await?;
    let lifted = matches!(result, WriteResult::Lifted(true));
    shared.pool_write().lift(&req.id);
    if lifted {
        shared.event(format!(
            "blacklist entry {} (and its addresses) lifted by admin {}",
            req.id.short(),
            id.short()
        ));
    }
    Ok(json_response(
        StatusCode::OK,
        &LiftResponse { id: req.id, lifted },
    ))
}

pub(super) async fn lift_network(
    shared: &Arc<Shared>,
    id: IdentityId,
    body: &[u8],
) -> Result<HttpResponse, ApiError> {
    require_admin(shared, &id)?;
    let req: LiftNetworkRequest = parse_json(body)?;
    let network = network_key(&req.network).ok_or_else(|| {
        ApiError::bad_request(format!(
            "{:?} is not a network like 10.1.2.0/24 (or an address in one)",
            req.network
        ))
    })?;
    let result = shared
        .store
        .write(WriteOp::LiftNetwork {
            network: network.clone(),
        })
        .await?;
    let lifted = matches!(result, WriteResult::Lifted(true));
    shared.pool_write().lift_network(&network);
    if lifted {
        shared.event(format!(
            "network {network} lifted from the blacklist by admin {}",
            id.short()
        ));
    }
    Ok(json_response(
        StatusCode::OK,
        &LiftNetworkResponse { network, lifted },
    ))
}

/// Vouch for a host (`vouched`) or withdraw it: the operator's shortcut to
/// established standing, for the first hosts of a new network.
pub(super) async fn vouch(
    shared: &Arc<Shared>,
    id: IdentityId,
    body: &[u8],
    vouched: bool,
) -> Result<HttpResponse, ApiError> {
    require_admin(shared, &id)?;
    let req: VouchRequest = parse_json(body)?;
    let changed = shared
        .change_record(WriteOp::Vouch {
            id: req.id,
            vouched,
        })
        .await?;
    if changed.is_none() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_a_host",
            format!(
                "{} is not a host registered here (has it heartbeated? a member's or person's key cannot be vouched for)",
                req.id
            ),
        ));
    }
    let standing = shared
        .pool_read()
        .standing_of(&req.id, unix_now())
        .unwrap_or(crate::trust::standing::Standing::Probationary);
    shared.event(format!(
        "host {} {} by admin {}: {}",
        req.id.short(),
        if vouched { "vouched for" } else { "unvouched" },
        id.short(),
        standing.name()
    ));
    Ok(json_response(
        StatusCode::OK,
        &VouchResponse {
            id: req.id,
            vouched,
            standing,
        },
    ))
}
