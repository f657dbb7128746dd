//! `POST /v1/report`: a member reports a host that lost a vote. The report is
//! stored, and the host blacklisted if the rule says so, before the answer.

use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use hyper::StatusCode;

use crate::coordinator::http::{json_response, parse_json, ApiError, HttpResponse};
use crate::coordinator::pool::NetKey;
use crate::coordinator::state::Shared;
use crate::coordinator::store::{ReportRow, WriteOp, WriteResult};
use crate::network::api::{MismatchReport, ReportAck};
use crate::network::clock::unix_now;
use crate::network::identity::IdentityId;

pub(super) async fn report(
    shared: &Arc<Shared>,
    reporter: IdentityId,
    peer: IpAddr,
    body: &[u8],
) -> Result<HttpResponse, ApiError> {
    let rep: MismatchReport = parse_json(body)?;
    rep.validate()
        .map_err(|e| ApiError::bad_request(format!("invalid report: {e}")))?;
    let (now, exp) = (shared.now_ms(), shared.expiry_ms());
    let (reported, reporter_owner) = {
        let pool = shared.pool_read();
        if pool.is_blacklisted(&reporter) {
            return Err(ApiError::blacklisted(&reporter));
        }
        pool.member_via(&reporter, now, exp)
            .ok_or_else(|| ApiError::not_member(&reporter))?;
        let reported = match rep.host_id {
            Some(h) => h,
            None => pool.resolve_addr(&rep.host_addr).ok_or_else(|| {
                ApiError::new(
                    StatusCode::NOT_FOUND,
                    "unknown_host",
                    format!(
                        "no live host is advertised at {:?}; send host_id",
                        rep.host_addr
                    ),
                )
            })?,
        };
        if !pool.is_known(&reported) && pool.host(&reported).is_none() {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "unknown_host",
                format!("identity {reported} never registered here"),
            ));
        }
        let owner = pool.owner_of(&reporter);
        if pool.owner_of(&reported) == owner {
            return Err(ApiError::bad_request(format!(
                "host {reported} belongs to your own owner group; reports count only against other owners' hosts"
            )));
        }
        (reported, owner)
    };
    let net = NetKey::of(peer).display();
    let row = ReportRow {
        reported,
        reporter,
        reporter_owner,
        reporter_network: net.clone(),
        received: unix_now(),
        report_time: rep.time,
        input_hash: rep.input_hash.clone(),
        body: serde_json::to_string(&rep).unwrap_or_default(),
        rule: shared.cfg.blacklist_rule,
    };
    let WriteResult::Report {
        report_id,
        reporters,
        networks,
        newly_blacklisted,
        blacklisted,
    } = shared.store.write(WriteOp::Report(row)).await?
    else {
        return Err(ApiError::internal(
            "store answered a report with something else",
        ));
    };
    shared.counters.reports.fetch_add(1, Ordering::Relaxed);
    shared.event(format!(
        "report #{report_id} against {} by {} from {net} ({reporters} distinct reporter(s))",
        reported.short(),
        reporter.short()
    ));
    if let Some(entry) = newly_blacklisted {
        shared.pool_write().set_blacklisted(entry);
        shared
            .counters
            .blacklistings
            .fetch_add(1, Ordering::Relaxed);
        shared.event(format!(
            "host {} blacklisted: {reporters} members on {networks} network(s) reported it",
            reported.short()
        ));
    }
    let ack = ReportAck {
        report_id,
        host: reported,
        distinct_reporters: reporters,
        distinct_networks: networks,
        blacklisted,
        // Adjudication (which asks for the input) is not implemented yet.
        evidence_wanted: false,
    };
    Ok(json_response(StatusCode::OK, &ack))
}
