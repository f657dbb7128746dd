//! `PUT /v1/evidence/<input_hash>`: a member uploads the preprocessed input of
//! a disputed job the coordinator asked it for (`ReportAck.evidence_wanted`).
//! The body is zstd (at most `MAX_EVIDENCE_BYTES`), decompressed with a hard
//! bound (`MAX_EVIDENCE_INPUT`), and must hash to `input_hash`. It is stored
//! under `DATA/evidence/<input_hash>.zst` (within `--evidence-quota`) and the
//! disputes waiting for it go to the adjudicator.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use hyper::StatusCode;

use crate::coordinator::disputes::{decompress_bounded, store_evidence, EvidenceError};
use crate::coordinator::http::{json_response, ApiError, HttpResponse};
use crate::coordinator::state::Shared;
use crate::network::api::{is_input_hash, EvidenceAck, MAX_EVIDENCE_INPUT};
use crate::network::identity::IdentityId;

pub(super) async fn evidence(
    shared: &Arc<Shared>,
    uploader: IdentityId,
    input_hash: &str,
    body: &[u8],
) -> Result<HttpResponse, ApiError> {
    if !is_input_hash(input_hash) {
        return Err(ApiError::bad_request(format!(
            "{:?} is not an input hash (64 lowercase hex digits)",
            input_hash.chars().take(80).collect::<String>()
        )));
    }
    if shared.pool_read().is_blacklisted(&uploader) {
        return Err(ApiError::blacklisted(&uploader));
    }
    if !shared.adjudications().is_wanted(&uploader, input_hash) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_wanted",
            format!(
                "no evidence for {input_hash} was asked of identity {uploader}: upload only \
                 after a report answered with evidence_wanted (pending requests are kept in \
                 memory; after a coordinator restart, report again)"
            ),
        ));
    }
    let compressed = body.to_vec();
    let checked = tokio::task::spawn_blocking(move || {
        decompress_bounded(&compressed).map(|input| (blake3::hash(&input), compressed))
    })
    .await
    .map_err(|e| ApiError::internal(format!("decompressing evidence: {e}")))?;
    let (hash, compressed) = match checked {
        Ok(v) => v,
        Err(EvidenceError::TooLarge) => {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!("evidence decompresses to more than {MAX_EVIDENCE_INPUT} bytes"),
            ))
        }
        Err(e) => return Err(ApiError::bad_request(e.to_string())),
    };
    if hash.to_hex().as_str() != input_hash {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "wrong_hash",
            format!(
                "the uploaded input hashes to {}, not {input_hash}",
                hash.to_hex()
            ),
        ));
    }
    let (dir, hash_text, quota) = (
        shared.cfg.data_dir.clone(),
        input_hash.to_string(),
        shared.cfg.evidence_quota,
    );
    let stored =
        tokio::task::spawn_blocking(move || store_evidence(&dir, &hash_text, &compressed, quota))
            .await
            .map_err(|e| ApiError::internal(format!("storing evidence: {e}")))?
            .map_err(|e| ApiError::internal(format!("storing evidence: {e}")))?;
    if !stored {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!(
                "evidence of {} bytes exceeds the coordinator's evidence quota (--evidence-quota)",
                body.len()
            ),
        ));
    }
    shared.adjudications().arrived(&uploader, input_hash);
    shared
        .adjudication_counters
        .evidence_stored
        .fetch_add(1, Ordering::Relaxed);
    shared.event(format!(
        "evidence for input {} stored ({} bytes) from {}; adjudication queued",
        &input_hash[..16],
        body.len(),
        uploader.short()
    ));
    Ok(json_response(
        StatusCode::OK,
        &EvidenceAck {
            input_hash: input_hash.to_string(),
            stored: true,
        },
    ))
}
