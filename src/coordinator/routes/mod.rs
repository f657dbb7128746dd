//! Which handler answers a request: the route table, the method check, the
//! unsigned pages (`/`, `/metrics`, `/healthz`) and the signed `/v1/*`
//! (among them `/v1/status`, the detailed status page)
//! endpoints, one file per group. `docs/coordinator-api.md` is the contract.

mod admin;
mod cache;
mod detail;
mod evidence;
mod heartbeat;
mod host_list;
mod link;
mod report;

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW};
use hyper::{Method, Request, StatusCode};

use super::http::{error_response, read_signed, text_response, ApiError, HttpResponse};
use super::state::{Endpoint, Shared};
use super::{metrics_page, status};

/// The endpoint at `path` and the one method it takes.
fn route(path: &str) -> (Endpoint, Method) {
    match path {
        "/" => (Endpoint::Status, Method::GET),
        "/metrics" => (Endpoint::Metrics, Method::GET),
        "/healthz" => (Endpoint::Health, Method::GET),
        crate::network::api::COORDINATOR_KEY_PATH => (Endpoint::CoordinatorKey, Method::GET),
        "/v1/heartbeat" => (Endpoint::Heartbeat, Method::POST),
        "/v1/hosts" => (Endpoint::Hosts, Method::POST),
        "/v1/link" => (Endpoint::Link, Method::POST),
        "/v1/unlink" => (Endpoint::Unlink, Method::POST),
        "/v1/whoami" => (Endpoint::Whoami, Method::POST),
        "/v1/report" => (Endpoint::Report, Method::POST),
        "/v1/status" => (Endpoint::Detail, Method::GET),
        "/v1/admin/blacklist" => (Endpoint::AdminBlacklist, Method::GET),
        "/v1/admin/blacklist/add" => (Endpoint::AdminBlacklistAdd, Method::POST),
        "/v1/admin/blacklist/lift" => (Endpoint::AdminLift, Method::POST),
        "/v1/admin/blacklist/lift-network" => (Endpoint::AdminLiftNetwork, Method::POST),
        "/v1/admin/vouch" => (Endpoint::AdminVouch, Method::POST),
        "/v1/admin/unvouch" => (Endpoint::AdminUnvouch, Method::POST),
        crate::network::cache_api::CLAIMS_PATH => (Endpoint::CacheClaims, Method::POST),
        crate::network::cache_api::LOOKUP_PATH => (Endpoint::CacheLookup, Method::POST),
        crate::network::cache_api::DISPUTE_PATH => (Endpoint::CacheDispute, Method::POST),
        crate::network::cache_api::WITHDRAWN_PATH => (Endpoint::CacheWithdrawn, Method::POST),
        p if p.starts_with(crate::network::api::EVIDENCE_PATH_PREFIX) => {
            (Endpoint::Evidence, Method::PUT)
        }
        _ => (Endpoint::Other, Method::GET),
    }
}

/// The client's address: the connection's peer, unless the peer is a trusted
/// reverse proxy; then the address that proxy saw, which it appended last to
/// `X-Forwarded-For` (entries further left are whatever the client claimed,
/// except where they too were appended by trusted proxies in a chain). A
/// proxy's own request without the header (a health check) is the proxy's.
fn client_ip(peer: IpAddr, trusted: &[IpAddr], forwarded_for: &[&str]) -> IpAddr {
    if !trusted.contains(&peer) {
        return peer;
    }
    let mut client = peer;
    let entries = forwarded_for.iter().flat_map(|h| h.split(',')).rev();
    for entry in entries {
        match entry.trim().parse::<IpAddr>() {
            Ok(ip) => {
                client = ip;
                if !trusted.contains(&ip) {
                    break;
                }
            }
            // Something a proxy would not write (a port, a name): stop at
            // the last address we can vouch for.
            Err(_) => break,
        }
    }
    client
}

/// Answer one request; every request is counted, whatever the answer.
pub(super) async fn handle(
    shared: Arc<Shared>,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Result<HttpResponse, Infallible> {
    let start = Instant::now();
    let peer = if shared.cfg.trusted_proxies.is_empty() {
        peer
    } else {
        let forwarded: Vec<&str> = req
            .headers()
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        let ip = client_ip(peer.ip(), &shared.cfg.trusted_proxies, &forwarded);
        SocketAddr::new(ip, peer.port())
    };
    let (ep, method) = route(req.uri().path());
    let resp = if ep == Endpoint::Other {
        error_response(&ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!(
                "no such endpoint {:?}; see docs/coordinator-api.md",
                req.uri().path()
            ),
        ))
    } else if req.method() != method {
        let mut r = error_response(&ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("{} takes {method}, not {}", req.uri().path(), req.method()),
        ));
        if let Ok(v) = HeaderValue::from_str(method.as_str()) {
            r.headers_mut().insert(ALLOW, v);
        }
        r
    } else {
        match ep {
            Endpoint::Status => {
                text_response("text/html; charset=utf-8", status::render_public(&shared))
            }
            Endpoint::Metrics => text_response(
                "text/plain; version=0.0.4; charset=utf-8",
                metrics_page::render(&shared),
            ),
            Endpoint::Health => text_response("text/plain; charset=utf-8", "ok\n".into()),
            Endpoint::CoordinatorKey => coordinator_key(&shared, req.uri().query()),
            _ => match signed(&shared, ep, peer, req).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::debug!("{} from {peer}: {} {}", ep.label(), e.status, e.message);
                    error_response(&e)
                }
            },
        }
    };
    shared
        .counters
        .record(ep, resp.status().as_u16(), start.elapsed());
    Ok(resp)
}

/// `GET /v1/coordinator-key?challenge=HEX`: the key every signed request
/// must name, proven by a signature over the caller's challenge. Unsigned:
/// it is how a client learns what to sign for.
fn coordinator_key(shared: &Shared, query: Option<&str>) -> HttpResponse {
    use crate::network::api::CoordinatorKeyProof;
    let challenge = query
        .unwrap_or("")
        .split('&')
        .find_map(|kv| kv.strip_prefix("challenge="))
        .unwrap_or("");
    match CoordinatorKeyProof::sign(&shared.key, challenge) {
        Ok(proof) => super::http::json_response(StatusCode::OK, &proof),
        Err(e) => error_response(&ApiError::bad_request(format!(
            "challenge: {e} (GET {}?challenge=<32 lowercase hex digits>)",
            crate::network::api::COORDINATOR_KEY_PATH
        ))),
    }
}

/// The `/v1/*` endpoints: authenticate, then hand the body to the handler.
async fn signed(
    shared: &Arc<Shared>,
    ep: Endpoint,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Result<HttpResponse, ApiError> {
    // Decided before the body is read: the HTML form of the detailed status.
    let html = ep == Endpoint::Detail
        && (req
            .uri()
            .query()
            .is_some_and(|q| q.split('&').any(|kv| kv == "format=html"))
            || req
                .headers()
                .get(hyper::header::ACCEPT)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.contains("text/html")));
    let evidence_hash = req
        .uri()
        .path()
        .strip_prefix(crate::network::api::EVIDENCE_PATH_PREFIX)
        .unwrap_or("")
        .to_string();
    let (claim, body) = read_signed(shared, ep, peer.ip(), req).await?;
    let id = claim.key;
    match ep {
        Endpoint::Heartbeat => heartbeat::heartbeat(shared, id, peer.ip(), &body).await,
        Endpoint::Hosts => host_list::hosts(shared, id, &body),
        Endpoint::Link => link::link(shared, id, &body).await,
        Endpoint::Unlink => link::unlink(shared, id, &body).await,
        Endpoint::Whoami => Ok(link::whoami(shared, id)),
        Endpoint::Report => report::report(shared, id, peer.ip(), &body).await,
        Endpoint::Detail => detail::status(shared, id, html),
        Endpoint::AdminBlacklist => admin::blacklist(shared, id),
        Endpoint::AdminBlacklistAdd => admin::blacklist_add(shared, id, &body).await,
        Endpoint::AdminLift => admin::lift(shared, id, &body).await,
        Endpoint::AdminLiftNetwork => admin::lift_network(shared, id, &body).await,
        Endpoint::AdminVouch => admin::vouch(shared, id, &body, true).await,
        Endpoint::AdminUnvouch => admin::vouch(shared, id, &body, false).await,
        Endpoint::Evidence => evidence::evidence(shared, id, &evidence_hash, &body).await,
        Endpoint::CacheClaims => cache::claims(shared, id, &body).await,
        Endpoint::CacheLookup => cache::lookup(shared, id, &body),
        Endpoint::CacheDispute => cache::dispute(shared, id, &body),
        Endpoint::CacheWithdrawn => cache::withdrawn(shared, id, &body),
        Endpoint::Status
        | Endpoint::Metrics
        | Endpoint::Health
        | Endpoint::CoordinatorKey
        | Endpoint::Other => Err(ApiError::internal("unrouted endpoint")),
    }
}

#[cfg(test)]
mod tests {
    use super::client_ip;
    use std::net::IpAddr;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn forwarded_for_counts_only_from_trusted_proxies() {
        let proxies = [ip("10.0.0.1"), ip("10.0.0.2")];
        let table: &[(&str, &[&str], &str)] = &[
            // Not a proxy: the header is the client's word, ignored.
            ("192.0.2.7", &["198.51.100.1"], "192.0.2.7"),
            // The proxy appended the address it saw.
            ("10.0.0.1", &["198.51.100.1"], "198.51.100.1"),
            // A client's forged entry left of it is ignored.
            ("10.0.0.1", &["6.6.6.6, 198.51.100.1"], "198.51.100.1"),
            // Two header lines count as one list.
            ("10.0.0.1", &["6.6.6.6", "198.51.100.1"], "198.51.100.1"),
            // A chain of trusted proxies.
            (
                "10.0.0.1",
                &["6.6.6.6, 198.51.100.1, 10.0.0.2"],
                "198.51.100.1",
            ),
            // The proxy's own request (no header), or garbage: the proxy.
            ("10.0.0.1", &[], "10.0.0.1"),
            ("10.0.0.1", &["unknown"], "10.0.0.1"),
            ("10.0.0.1", &["2001:db8::1"], "2001:db8::1"),
        ];
        for (peer, header, want) in table {
            assert_eq!(
                client_ip(ip(peer), &proxies, header),
                ip(want),
                "{peer} {header:?}"
            );
        }
    }
}
