//! `POST /v1/report`: a member reports a host that lost a vote. Only evidence
//! the coordinator can check is taken: the reported identity must be a
//! registered host (not a person's or member's key), and one the coordinator
//! handed to this reporter in a host list within `--report-window`. One
//! report per (reporter, host, input) is stored; a duplicate is acknowledged,
//! not counted again. A report never blacklists anyone by itself: keys are
//! free, so counting reporters proves nothing. It starts an adjudication
//! (the coordinator asks for the input and re-runs the job on unrelated
//! referees, `adjudicator`) when the reporter's owner group has an
//! established host; a probationary host's report is only stored. The
//! report is stored before the answer.

use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use hyper::StatusCode;

use crate::coordinator::disputes::{evidence_file, Pending};
use crate::coordinator::http::{json_response, parse_json, ApiError, HttpResponse};
use crate::coordinator::pool::NetKey;
use crate::coordinator::state::Shared;
use crate::coordinator::store::{ReportRow, WriteOp, WriteResult};
use crate::network::api::{is_input_hash, MismatchReport, ReportAck};
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
    let now_unix = unix_now();
    let (reported, reporter_owner, counts) = {
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
        if !pool.is_known_daemon(&reported) {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "not_a_host",
                format!(
                    "identity {reported} is not a host (it is a member's or person's key); \
                     a report names the host that returned the wrong result"
                ),
            ));
        }
        let owner = pool.owner_of(&reporter);
        if pool.owner_of(&reported) == owner {
            return Err(ApiError::bad_request(format!(
                "host {reported} belongs to your own owner group; reports count only against other owners' hosts"
            )));
        }
        if !shared
            .handed_out
            .was_given(&reporter, &reported, shared.now_secs())
        {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "not_handed_out",
                format!(
                    "host {reported} was not in a host list this coordinator gave identity {reporter} \
                     within the last {} (--report-window); only hosts you were given can be reported. \
                     (Hand-outs are remembered in memory only: after a coordinator restart, evidence \
                     about earlier lists cannot be reported.)",
                    crate::coordinator::units::duration_text(shared.cfg.report_window)
                ),
            ));
        }
        let counts = pool.group_is_established(&reporter, now_unix);
        (reported, owner, counts)
    };
    let net = NetKey::of(peer).display();
    let row = ReportRow {
        reported,
        reporter,
        reporter_owner,
        reporter_network: net.clone(),
        received: now_unix,
        report_time: rep.time,
        input_hash: rep.input_hash.clone(),
        body: serde_json::to_string(&rep).unwrap_or_default(),
        counts,
    };
    let WriteResult::Report {
        report_id,
        reporters,
        networks,
        blacklisted,
        duplicate,
    } = shared.store.write(WriteOp::Report(row)).await?
    else {
        return Err(ApiError::internal(
            "store answered a report with something else",
        ));
    };
    if duplicate {
        shared.event(format!(
            "report against {} by {} repeats report #{report_id} (same input): not counted again",
            reported.short(),
            reporter.short()
        ));
    } else {
        shared.counters.reports.fetch_add(1, Ordering::Relaxed);
        shared.event(format!(
            "report #{report_id} against {} by {} from {net}{} ({reporters} distinct established reporter(s); only an adjudication decides)",
            reported.short(),
            reporter.short(),
            if counts {
                ""
            } else {
                ", a probationary reporter: stored, not counted"
            }
        ));
    }
    // Ask for the input when an adjudication can decide this dispute: a
    // counted report with a toolchain against a registered host, over a
    // dispute (host, input) not decided or under way already.
    let evidence_wanted = counts && rep.toolchain.is_some() && is_input_hash(&rep.input_hash) && {
        let pending = Pending {
            report_id,
            reporter,
            accused: reported,
            report: rep.clone(),
            attempts: 0,
            not_before_ms: 0,
        };
        let stored = evidence_file(&shared.cfg.data_dir, &rep.input_hash).exists();
        let mut adj = shared.adjudications();
        if adj.is_settled_or_running(&reported, &rep.input_hash) {
            false
        } else if stored {
            // The input is here already (another member sent it).
            adj.enqueue(pending);
            false
        } else {
            adj.want(pending);
            true
        }
    };
    let ack = ReportAck {
        report_id,
        host: reported,
        distinct_reporters: reporters,
        distinct_networks: networks,
        blacklisted,
        duplicate,
        counted: counts && !duplicate,
        evidence_wanted,
    };
    Ok(json_response(StatusCode::OK, &ack))
}
