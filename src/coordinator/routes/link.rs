//! `POST /v1/link` (a person joins a daemon's owner group with its membership
//! token) and `POST /v1/whoami` (what the coordinator knows of the caller).

use std::sync::Arc;

use hyper::StatusCode;

use crate::coordinator::http::{json_response, parse_json, ApiError, HttpResponse};
use crate::coordinator::pool::MAX_GROUP;
use crate::coordinator::state::Shared;
use crate::coordinator::store::WriteOp;
use crate::network::api::{LinkRequest, LinkResponse, WhoamiResponse};
use crate::network::clock::unix_now;
use crate::network::identity::IdentityId;

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
