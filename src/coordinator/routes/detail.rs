//! `GET /v1/status`: the detailed status page (addresses, identities,
//! fingerprints, recent events) for a member or an admin key only. JSON by
//! default; HTML with `?format=html` or `Accept: text/html`.

use std::sync::Arc;

use hyper::StatusCode;

use crate::coordinator::http::{json_response, text_response, ApiError, HttpResponse};
use crate::coordinator::state::Shared;
use crate::coordinator::status;
use crate::network::identity::IdentityId;

pub(super) fn status(
    shared: &Arc<Shared>,
    id: IdentityId,
    html: bool,
) -> Result<HttpResponse, ApiError> {
    if !shared.cfg.admin_keys.contains(&id) {
        let (now, exp) = (shared.now_ms(), shared.expiry_ms());
        let pool = shared.pool_read();
        if pool.is_blacklisted(&id) {
            return Err(ApiError::blacklisted(&id));
        }
        // The details name where hosts are; only people who contribute one see them.
        pool.member_via(&id, now, exp)
            .ok_or_else(|| ApiError::not_member(&id))?;
    }
    Ok(if html {
        text_response("text/html; charset=utf-8", status::render_page(shared))
    } else {
        json_response(StatusCode::OK, &status::detail_json(shared))
    })
}
