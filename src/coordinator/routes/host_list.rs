//! `POST /v1/hosts`: a member asks for hosts with its toolchain. The hot path:
//! one read lock, and host entries serialised once per heartbeat (or change of
//! standing), not per request. The hosts handed out are remembered for the
//! member: it may report only those (`handed_out`).

use std::sync::Arc;

use hyper::StatusCode;

use crate::coordinator::http::{json_response, parse_json, ApiError, HttpResponse};
use crate::coordinator::state::Shared;
use crate::network::api::{HostsRequest, SignedHostList, MAX_HOSTS_PER_RESPONSE};
use crate::network::clock::unix_now;
use crate::network::identity::IdentityId;
use crate::network::ticket::Ticket;

pub(super) fn hosts(
    shared: &Arc<Shared>,
    id: IdentityId,
    body: &[u8],
) -> Result<HttpResponse, ApiError> {
    let req: HostsRequest = parse_json(body)?;
    req.validate()
        .map_err(|e| ApiError::bad_request(format!("invalid host request: {e}")))?;
    let max = req
        .max
        .unwrap_or(32)
        .clamp(1, MAX_HOSTS_PER_RESPONSE as u32) as usize;
    let (now, exp) = (shared.now_ms(), shared.expiry_ms());
    let (body, given, takes_tickets) = {
        let pool = shared.pool_read();
        if pool.is_blacklisted(&id) {
            return Err(ApiError::blacklisted(&id));
        }
        let via = pool.member_via(&id, now, exp).ok_or_else(|| {
            match pool.unproven_daemon(&id, now, exp) {
                Some((daemon, addr)) => ApiError::not_member_unproven(&id, &daemon, &addr),
                None => ApiError::not_member(&id),
            }
        })?;
        let hosts = pool.select_json(
            &req.fingerprints,
            req.tz_offset_secs,
            max,
            now,
            exp,
            req.include_unconfined,
            &mut rand::thread_rng(),
        );
        let given: Vec<IdentityId> = hosts.iter().map(|(h, _)| *h).collect();
        let takes_tickets: Vec<IdentityId> = given
            .iter()
            .copied()
            .filter(|h| pool.takes_tickets(h))
            .collect();
        let body = hosts_response_json(
            hosts.into_iter().map(|(_, json)| json),
            shared.cfg.redundancy,
            &via,
            &id,
            unix_now(),
        );
        (body, given, takes_tickets)
    };
    // Signed outside the pool's lock, like the list.
    let now = unix_now();
    let lifetime = shared.cfg.ticket_lifetime.as_secs();
    let tickets: Vec<String> = takes_tickets
        .into_iter()
        .map(|host| Ticket::issue(&shared.key, id, host, now, lifetime).to_hex())
        .collect();
    let body = with_tickets(body, &tickets);
    shared.handed_out.record(&id, &given, shared.now_secs());
    // Signed outside the pool's lock: the list is the member's, the
    // signature the coordinator's word on it.
    let list = String::from_utf8(body)
        .map_err(|_| ApiError::internal("a host list is not UTF-8 (cannot happen)"))?;
    let signed = SignedHostList::sign(&shared.key, list);
    Ok(json_response(StatusCode::OK, &signed))
}

/// `list` (the JSON of [`hosts_response_json`]) with its `tickets` field:
/// what `serde_json` makes of the struct, which leaves an empty one out.
fn with_tickets(mut list: Vec<u8>, tickets: &[String]) -> Vec<u8> {
    if tickets.is_empty() || list.last() != Some(&b'}') {
        return list;
    }
    list.pop();
    list.extend_from_slice(b",\"tickets\":[");
    for (i, t) in tickets.iter().enumerate() {
        if i > 0 {
            list.push(b',');
        }
        // Hex: nothing to escape.
        list.push(b'"');
        list.extend_from_slice(t.as_bytes());
        list.push(b'"');
    }
    list.extend_from_slice(b"]}");
    list
}

/// A [`HostsResponse`](crate::network::api::HostsResponse) serialised from
/// hosts' cached entry JSON: the same bytes `serde_json` makes of the struct,
/// without rebuilding and re-serialising every entry per request.
fn hosts_response_json<'a>(
    entries: impl ExactSizeIterator<Item = &'a [u8]>,
    redundancy: u32,
    member_via: &IdentityId,
    issued_to: &IdentityId,
    issued_at: u64,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(96 + entries.len() * 320);
    out.extend_from_slice(b"{\"hosts\":[");
    for (i, e) in entries.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(e);
    }
    out.extend_from_slice(b"],\"redundancy\":");
    out.extend_from_slice(redundancy.to_string().as_bytes());
    out.extend_from_slice(b",\"member_via\":\"");
    let mut hex = [0u8; 64];
    // Infallible: the buffer is exactly twice the key's length.
    let _ = hex::encode_to_slice(member_via.0, &mut hex);
    out.extend_from_slice(&hex);
    out.extend_from_slice(b"\",\"issued_to\":\"");
    let _ = hex::encode_to_slice(issued_to.0, &mut hex);
    out.extend_from_slice(&hex);
    out.extend_from_slice(b"\",\"issued_at\":");
    out.extend_from_slice(issued_at.to_string().as_bytes());
    out.push(b'}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::api::{HostEntry, HostsResponse};
    use crate::network::identity::Identity;

    #[test]
    fn cached_host_list_json_is_what_serde_makes_of_the_response() {
        let entries: Vec<HostEntry> = (0..3u8)
            .map(|i| HostEntry {
                id: Identity::generate().id(),
                host: format!("10.0.{i}.1"),
                port: 3632 + u16::from(i),
                capacity: u32::from(i) + 1,
                lzo: i % 2 == 0,
                tickets: i != 0,
                tz_offset_secs: -3600 * i32::from(i),
                owner: Identity::generate().id(),
                network: format!("10.0.{i}.0/24"),
                arch: "x86_64 \"<odd>\"".into(),
                standing: if i == 1 {
                    crate::trust::standing::Standing::Established
                } else {
                    crate::trust::standing::Standing::Probationary
                },
                confined: i != 2,
            })
            .collect();
        let via = Identity::generate().id();
        let me = Identity::generate().id();
        let coordinator = Identity::generate();
        for n in [0, 1, 3] {
            let cached: Vec<Vec<u8>> = entries[..n]
                .iter()
                .map(|e| serde_json::to_vec(e).unwrap())
                .collect();
            let tickets: Vec<String> = entries[..n]
                .iter()
                .filter(|e| e.tickets)
                .map(|e| Ticket::issue(&coordinator, me, e.id, 77, 3600).to_hex())
                .collect();
            let fast = with_tickets(
                hosts_response_json(cached.iter().map(Vec::as_slice), 2, &via, &me, 77),
                &tickets,
            );
            let want = serde_json::to_vec(&HostsResponse {
                hosts: entries[..n].to_vec(),
                redundancy: 2,
                member_via: via,
                issued_to: me,
                issued_at: 77,
                tickets,
            })
            .unwrap();
            assert_eq!(
                String::from_utf8(fast).unwrap(),
                String::from_utf8(want).unwrap()
            );
        }
    }
}
