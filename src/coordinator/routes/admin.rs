//! `GET /v1/admin/blacklist` and `POST /v1/admin/blacklist/lift`, for the keys
//! given with `--admin-key` only.

use std::sync::Arc;

use hyper::StatusCode;

use crate::coordinator::http::{json_response, parse_json, ApiError, HttpResponse};
use crate::coordinator::state::Shared;
use crate::coordinator::store::{WriteOp, WriteResult};
use crate::network::api::{BlacklistResponse, LiftRequest, LiftResponse};
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
    let entries = shared.pool_read().blacklist_entries();
    Ok(json_response(
        StatusCode::OK,
        &BlacklistResponse { entries },
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
            "blacklist entry {} lifted by admin {}",
            req.id.short(),
            id.short()
        ));
    }
    Ok(json_response(
        StatusCode::OK,
        &LiftResponse { id: req.id, lifted },
    ))
}
