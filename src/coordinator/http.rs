//! The HTTP side of every endpoint: reading a signed request (bounded in size
//! and time), JSON and text responses, and [`ApiError`], every non-2xx answer.

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::{Request, Response, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::pool::PoolError;
use super::state::Shared;
use super::store::StoreError;
use crate::network::api::{ErrorBody, MAX_BODY};
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
}

impl ApiError {
    pub(super) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
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
        let (status, code) = match e {
            AuthError::Overloaded => (StatusCode::SERVICE_UNAVAILABLE, "overloaded"),
            _ => (StatusCode::UNAUTHORIZED, "unauthenticated"),
        };
        ApiError::new(status, code, e.to_string())
    }
}

impl From<PoolError> for ApiError {
    fn from(e: PoolError) -> Self {
        match e {
            PoolError::Blacklisted(id) => ApiError::blacklisted(&id),
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
    json_response(
        e.status,
        &ErrorBody {
            error: e.message.clone(),
            code: e.code.to_string(),
        },
    )
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
    req: Request<Incoming>,
) -> Result<(Claimed, Bytes), ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("request body larger than {MAX_BODY} bytes"),
        )
    };
    // A declared length over the limit is refused before reading a byte of it.
    if let Some(len) = req.headers().get(CONTENT_LENGTH) {
        let len: u64 = len
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .ok_or_else(|| ApiError::bad_request("Content-Length is not a number"))?;
        if len > MAX_BODY as u64 {
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
    let collected = tokio::time::timeout(
        shared.cfg.body_timeout,
        Limited::new(body, MAX_BODY).collect(),
    )
    .await;
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
    let result = (|| {
        auth::check_time(&claim, unix_now())?;
        let key = shared
            .keys
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&claim.key)?;
        auth::verify_claim(&key, &claim, &method, &path, &body)?;
        // The nonce is remembered only once the signature is good, so forged
        // requests cannot fill the cache.
        shared
            .nonces
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .check_and_insert(&claim, unix_now())
    })();
    result.inspect_err(|e| shared.counters.auth_failed(e))?;
    Ok((claim, body))
}
