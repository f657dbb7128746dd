//! `POST /v1/link` (a person joins a daemon's owner group with its membership
//! token), `POST /v1/unlink` (the daemon or the person ends it) and
//! `POST /v1/whoami` (what the coordinator knows of the caller).
//!
//! A token bound to a person's key (v2) links that key only: a leaked copy
//! links nobody. An unbound token (v1, the `membership.json` a daemon writes
//! for the people of its machine) links at most [`MAX_UNBOUND_LINKS`]
//! identities to its daemon: a stranger holding a copy can take those few
//! places, never the owner's way to link people with bound tokens.

use std::sync::Arc;

use hyper::StatusCode;

use crate::coordinator::http::{json_response, parse_json, ApiError, HttpResponse};
use crate::coordinator::pool::MAX_GROUP;
use crate::coordinator::state::Shared;
use crate::coordinator::store::WriteOp;
use crate::network::api::{
    LinkRequest, LinkResponse, UnlinkRequest, UnlinkResponse, WhoamiResponse,
};
use crate::network::clock::unix_now;
use crate::network::identity::IdentityId;

/// Identities an unbound (v1) membership token may link to one daemon.
pub const MAX_UNBOUND_LINKS: usize = 8;

pub(super) async fn link(
    shared: &Arc<Shared>,
    person: IdentityId,
    body: &[u8],
) -> Result<HttpResponse, ApiError> {
    let req: LinkRequest = parse_json(body)?;
    let daemon = req.token.verify(unix_now()).map_err(|e| {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "bad_token",
            format!("membership token refused: {e}"),
        )
    })?;
    if let Some(bound) = req.token.person {
        if bound != person {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "token_for_another",
                format!(
                    "this membership token was issued to identity {bound}, not to {person}; \
                     ask the daemon's owner for one of your own (dportage membership-token --for {person})"
                ),
            ));
        }
    }
    let (already, merge_owners) = {
        let pool = shared.pool_read();
        if pool.is_blacklisted(&daemon) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "blacklisted",
                format!("daemon {daemon} is blacklisted; its membership cannot be shared"),
            ));
        }
        if pool.is_blacklisted(&person) {
            return Err(ApiError::blacklisted(&person));
        }
        // Only a daemon's token shares membership: a linked person's key must
        // not mint tokens the daemon's operator never handed out.
        if !pool.is_known_daemon(&daemon) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "unknown_daemon",
                format!("daemon {daemon} has never heartbeated to this coordinator; start it with --coordinator pointing here"),
            ));
        }
        if person != daemon
            && !pool.is_linked(&person, &daemon)
            && pool.link_would_overflow(&person, &daemon)
        {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "group_full",
                format!("linking would make an owner group larger than {MAX_GROUP}"),
            ));
        }
        let already = person == daemon || pool.is_linked(&person, &daemon);
        if !already && req.token.person.is_none() && pool.links_of(&daemon) >= MAX_UNBOUND_LINKS {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "unbound_links_full",
                format!(
                    "daemon {daemon} already has {MAX_UNBOUND_LINKS} linked identities; an unbound token \
                     links no more. Ask its owner for a token bound to your key \
                     (dportage membership-token --for {person})"
                ),
            ));
        }
        // The pool keeps the smaller representative when groups merge.
        let (a, b) = (pool.owner_of(&person), pool.owner_of(&daemon));
        let merge_owners = (a != b).then(|| if a < b { (b, a) } else { (a, b) });
        (already, merge_owners)
    };
    if !already {
        shared
            .store
            .write(WriteOp::Link {
                person,
                daemon,
                now: unix_now(),
                merge_owners,
            })
            .await?;
        let mut pool = shared.pool_write();
        pool.add_known(person, false);
        pool.add_link(person, daemon);
        drop(pool);
        shared.event(format!(
            "{} linked to daemon {}",
            person.short(),
            daemon.short()
        ));
    }
    let pool = shared.pool_read();
    let resp = LinkResponse {
        daemon,
        owner: pool.owner_of(&person),
        member: pool
            .member_via(&person, shared.now_ms(), shared.expiry_ms())
            .is_some(),
    };
    Ok(json_response(StatusCode::OK, &resp))
}

pub(super) async fn unlink(
    shared: &Arc<Shared>,
    signer: IdentityId,
    body: &[u8],
) -> Result<HttpResponse, ApiError> {
    let req: UnlinkRequest = parse_json(body)?;
    if signer != req.daemon && signer != req.person {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "not_a_party",
            format!(
                "identity {signer} is neither {} nor {}: only the daemon or the person ends a link",
                req.person, req.daemon
            ),
        ));
    }
    let linked = shared.pool_read().is_linked(&req.person, &req.daemon);
    if linked {
        shared
            .store
            .write(WriteOp::Unlink {
                person: req.person,
                daemon: req.daemon,
            })
            .await?;
        shared.pool_write().remove_link(&req.person, &req.daemon);
        shared.event(format!(
            "{} unlinked from daemon {} by {}",
            req.person.short(),
            req.daemon.short(),
            signer.short()
        ));
    }
    Ok(json_response(
        StatusCode::OK,
        &UnlinkResponse { unlinked: linked },
    ))
}

pub(super) fn whoami(shared: &Arc<Shared>, id: IdentityId) -> HttpResponse {
    let (now, exp) = (shared.now_ms(), shared.expiry_ms());
    let pool = shared.pool_read();
    let resp = WhoamiResponse {
        id,
        owner: pool.owner_of(&id),
        member: pool.member_via(&id, now, exp).is_some(),
        blacklisted: pool.is_blacklisted(&id),
        daemons: pool.daemons_of(&id, now, exp, unix_now()),
    };
    json_response(StatusCode::OK, &resp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coordinator::config::CoordinatorConfig;
    use crate::coordinator::pool::Pool;
    use crate::coordinator::store::Store;
    use crate::network::identity::Identity;

    #[tokio::test]
    async fn only_a_daemons_token_links() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = CoordinatorConfig::new("127.0.0.1:0".parse().unwrap(), dir.path().into());
        let (store, _) = Store::open(dir.path()).unwrap();
        let (daemon, person, stranger) = (
            Identity::generate(),
            Identity::generate(),
            Identity::generate(),
        );
        let mut pool = Pool::new();
        pool.add_known(daemon.id(), true);
        let shared = Arc::new(Shared::new(
            cfg,
            crate::network::identity::Identity::generate(),
            pool,
            store,
            Default::default(),
        ));
        let body = |signer: &Identity| {
            serde_json::to_vec(&LinkRequest {
                token: signer.membership_token(unix_now()),
            })
            .unwrap()
        };
        link(&shared, person.id(), &body(&daemon)).await.unwrap();
        assert!(shared.pool_read().is_linked(&person.id(), &daemon.id()));
        let refused = link(&shared, stranger.id(), &body(&person))
            .await
            .expect_err("a linked person's own token is not a daemon's");
        assert_eq!(refused.code, "unknown_daemon");
        assert!(!shared.pool_read().is_linked(&stranger.id(), &person.id()));
    }
}
