//! The HTTP side of every endpoint: reading a signed request (bounded in size
//! and time), JSON and text responses, and [`ApiError`], every non-2xx answer.

use std::net::IpAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER};
use hyper::{Request, Response, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::pool::{NetKey, PoolError};
use super::quota::{OverQuota, QuotaKind};
use super::state::{Endpoint, Limit, Shared};
use super::store::StoreError;
use crate::network::api::{ErrorBody, MAX_BODY, MAX_EVIDENCE_BYTES};
use crate::network::auth::{self, AuthError, Claimed};
use crate::network::clock::unix_now;
use crate::network::identity::IdentityId;

pub(super) type HttpResponse = Response<Full<Bytes>>;

/// An answer that is not 2xx: `{"error": message, "code": code}`.
#[derive(Debug)]
pub(super) struct ApiError {
    pub(super) status: StatusCode,
    pub(super) code: &'static str,
    pub(super) message: String,
    /// Seconds for a `Retry-After` header (429, 503).
    pub(super) retry_after: Option<u64>,
}

impl ApiError {
    pub(super) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    pub(super) fn with_retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }

    pub(super) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub(super) fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    pub(super) fn not_member(id: &IdentityId) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "not_member",
            format!(
                "identity {id} is not a member: no live daemon of its owner is heartbeating here. \
                 Run `dportage serve --coordinator URL` with this identity, or present your daemon's \
                 membership token (`dportage` does this automatically when it can read it)"
            ),
        )
    }

    /// Not a member because the group's live daemon has not passed a
    /// challenge job at its advertised address (membership is proven service).
    pub(super) fn not_member_unproven(id: &IdentityId, daemon: &IdentityId, addr: &str) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "not_member",
            format!(
                "identity {id} is not a member yet: its daemon {daemon} heartbeats, but has not \
                 passed a challenge job at its advertised address {addr} yet. The coordinator \
                 sends one soon after registration; the address must accept compile jobs from \
                 the coordinator (check --advertise and firewalls), and a host that fails two \
                 in a row is not listed"
            ),
        )
    }

    pub(super) fn blacklisted(id: &IdentityId) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "blacklisted",
            PoolError::Blacklisted(*id).to_string(),
        )
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::Overloaded => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "overloaded", e.to_string())
                    .with_retry_after(60)
            }
            // The key's oldest nonces leave the window within minutes.
            AuthError::KeyBusy(_) | AuthError::NetworkBusy(_) => {
                ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", e.to_string())
                    .with_retry_after(60)
            }
            _ => ApiError::new(StatusCode::UNAUTHORIZED, "unauthenticated", e.to_string()),
        }
    }
}

impl From<PoolError> for ApiError {
    fn from(e: PoolError) -> Self {
        match e {
            PoolError::Blacklisted(id) => ApiError::blacklisted(&id),
            e @ PoolError::AddressBlacklisted { .. } => {
                ApiError::new(StatusCode::FORBIDDEN, "blacklisted", e.to_string())
            }
            e => ApiError::internal(e.to_string()),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ApiError::internal(e.to_string())
    }
}

pub(super) fn json_response<T: Serialize>(status: StatusCode, value: &T) -> HttpResponse {
    let body = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
    let mut r = json_bytes_response(body);
    *r.status_mut() = status;
    r
}

/// 200 with a body that is JSON already.
pub(super) fn json_bytes_response(body: Vec<u8>) -> HttpResponse {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

pub(super) fn error_response(e: &ApiError) -> HttpResponse {
    let mut r = json_response(
        e.status,
        &ErrorBody {
            error: e.message.clone(),
            code: e.code.to_string(),
        },
    );
    if let Some(secs) = e.retry_after {
        r.headers_mut().insert(RETRY_AFTER, HeaderValue::from(secs));
    }
    r
}

/// The nonce cache's tag for the network (/24, IPv6 /48) a request came from.
fn network_tag(peer: IpAddr) -> u64 {
    use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
    BuildHasherDefault::<DefaultHasher>::default().hash_one(NetKey::of(peer))
}

/// What a signed request to `ep` spends of its key's quotas.
fn quota_kinds(ep: Endpoint) -> &'static [QuotaKind] {
    match ep {
        Endpoint::Heartbeat => &[QuotaKind::Request, QuotaKind::Heartbeat],
        Endpoint::Report => &[QuotaKind::Request, QuotaKind::Report],
        Endpoint::CacheLookup => &[QuotaKind::Lookup],
        _ => &[QuotaKind::Request],
    }
}

fn over_quota(shared: &Shared, e: OverQuota) -> ApiError {
    let Some(kind) = e.kind else {
        shared.counters.refused_by(Limit::TrackedKeys);
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            "too many identities are sending requests right now; retry later",
        )
        .with_retry_after(e.retry_after_secs);
    };
    let (limit, what, rate) = match kind {
        QuotaKind::Request => (
            Limit::RequestsPerKey,
            "requests",
            shared.cfg.requests_per_key,
        ),
        QuotaKind::Heartbeat => (
            Limit::HeartbeatsPerKey,
            "heartbeats",
            shared.cfg.heartbeats_per_key,
        ),
        QuotaKind::Report => (Limit::ReportsPerKey, "reports", shared.cfg.reports_per_key),
        QuotaKind::Lookup => (
            Limit::LookupsPerKey,
            "cache lookups",
            shared.cfg.lookups_per_key,
        ),
    };
    shared.counters.refused_by(limit);
    ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        format!(
            "this key sent more than {} {what} per {} s (--{}); retry in {} s",
            rate.n,
            rate.per.as_secs(),
            kind.label().replace('_', "-"),
            e.retry_after_secs
        ),
    )
    .with_retry_after(e.retry_after_secs)
}

pub(super) fn text_response(content_type: &'static str, body: String) -> HttpResponse {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

pub(super) fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("malformed JSON request: {e}")))
}

/// Read the body (bounded in size and time) and authenticate the request.
pub(super) async fn read_signed(
    shared: &Shared,
    ep: Endpoint,
    peer: IpAddr,
    req: Request<Incoming>,
) -> Result<(Claimed, Bytes), ApiError> {
    // Reports are stored whole, so they have their own, smaller bound.
    // Evidence (a compressed preprocessed input) has its own, larger bound.
    let max = match ep {
        Endpoint::Report => shared.cfg.max_report_bytes.min(MAX_BODY),
        Endpoint::Evidence => MAX_EVIDENCE_BYTES,
        // MAX_CLAIMS claims of three hashes each run past MAX_BODY.
        Endpoint::CacheClaims => 2 * MAX_BODY,
        _ => MAX_BODY,
    };
    let too_large = || {
        if ep == Endpoint::Report {
            shared.counters.refused_by(Limit::ReportBytes);
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!("report larger than {max} bytes (--max-report-bytes)"),
            )
        } else {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!("request body larger than {max} bytes"),
            )
        }
    };
    // A declared length over the limit is refused before reading a byte of it.
    if let Some(len) = req.headers().get(CONTENT_LENGTH) {
        let len: u64 = len
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .ok_or_else(|| ApiError::bad_request("Content-Length is not a number"))?;
        if len > max as u64 {
            return Err(too_large());
        }
    }
    let method = req.method().as_str().to_string();
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    let (parts, body) = req.into_parts();
    let claim = auth::parse_claim(|name| parts.headers.get(name).and_then(|v| v.to_str().ok()));
    let collected =
        tokio::time::timeout(shared.cfg.body_timeout, Limited::new(body, max).collect()).await;
    let body = match collected {
        Err(_) => {
            return Err(ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "timeout",
                format!(
                    "request body not received within {} s",
                    shared.cfg.body_timeout.as_secs()
                ),
            ))
        }
        Ok(Err(e)) => {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                return Err(too_large());
            }
            return Err(ApiError::bad_request(format!(
                "reading the request body: {e}"
            )));
        }
        Ok(Ok(c)) => c.to_bytes(),
    };
    let claim = claim.inspect_err(|e| shared.counters.auth_failed(e))?;
    let now = unix_now();
    let verified = (|| {
        auth::check_time(&claim, now)?;
        let key = shared
            .keys
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&claim.key)?;
        auth::verify_claim(&key, &claim, &shared.key.id(), &method, &path, &body)
    })();
    verified.inspect_err(|e| shared.counters.auth_failed(e))?;
    // Only a good signature reaches the nonce cache and the quotas, so forged
    // requests can fill neither. Within one critical section: the nonce must
    // be new and the key under its caps, then the quotas are spent, and only
    // then is the nonce stored: a refused request leaves nothing behind.
    let mut nonces = shared.nonces.lock().unwrap_or_else(|p| p.into_inner());
    let network = network_tag(peer);
    nonces.check(&claim, network, now).map_err(|e| {
        shared.counters.auth_failed(&e);
        match e {
            AuthError::KeyBusy(_) => shared.counters.refused_by(Limit::NoncesPerKey),
            AuthError::NetworkBusy(_) => shared.counters.refused_by(Limit::NoncesPerNetwork),
            _ => {}
        }
        ApiError::from(e)
    })?;
    shared
        .quotas
        .admit(&claim.key, quota_kinds(ep), shared.now_ms())
        .map_err(|e| over_quota(shared, e))?;
    nonces.insert(&claim, network);
    drop(nonces);
    Ok((claim, body))
}
