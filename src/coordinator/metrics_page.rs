//! `GET /metrics`: the pool, the counters of [`Counters`](super::state::Counters)
//! and the request latency, in the Prometheus text format.

use std::sync::atomic::Ordering;

use super::state::{Endpoint, Shared, AUTH_LABELS, CODES, LATENCY_BUCKETS, LIMIT_LABELS};
use crate::metrics::{Exposition, Histogram};

pub(super) fn render(shared: &Shared) -> String {
    let (now_ms, exp) = (shared.now_ms(), shared.expiry_ms());
    let (live, held, known, blacklisted, networks, (established, probationary, serving)) = {
        let pool = shared.pool_read();
        (
            pool.live_count(now_ms, exp),
            pool.held_count(),
            pool.known_count(),
            pool.blacklist_entries().len(),
            pool.blacklisted_networks().len(),
            pool.standing_counts(now_ms, exp),
        )
    };
    let nonces = shared
        .nonces
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .len();
    let c = &shared.counters;
    let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let mut page = Exposition::new();
    page.gauge(
        "dportage_pool_live_hosts",
        "Hosts heard from within the expiry.",
    )
    .sample(&[], live);
    page.gauge(
        "dportage_pool_held_hosts",
        "Host entries in memory (live or awaiting the sweeper).",
    )
    .sample(&[], held);
    page.gauge("dportage_identities", "Identities in the durable store.")
        .sample(&[], known);
    page.gauge("dportage_blacklisted", "Blacklisted identities.")
        .sample(&[], blacklisted);
    page.gauge(
        "dportage_blacklisted_networks",
        "Networks (/24, IPv6 /48) from which no new identity registers.",
    )
    .sample(&[], networks);
    page.gauge("dportage_pool_hosts_by_standing", "Live hosts by standing.")
        .sample(&[("standing", "established")], established)
        .sample(&[("standing", "probationary")], probationary);
    page.gauge(
        "dportage_pool_serving_hosts",
        "Live hosts that have proven service (passed a challenge job, not failed the last two).",
    )
    .sample(&[], serving);
    page.gauge(
        "dportage_new_host_networks",
        "Networks and wide networks whose new-host quota is being tracked.",
    )
    .sample(&[], shared.new_hosts.tracked());
    page.gauge(
        "dportage_handed_out_members",
        "Members whose recent host lists are remembered (reports name only those hosts).",
    )
    .sample(&[], shared.handed_out.members());
    page.counter(
        "dportage_challenges_total",
        "Challenge jobs sent to hosts, by result.",
    )
    .sample(&[("result", "passed")], load(&c.challenges_passed))
    .sample(&[("result", "failed")], load(&c.challenges_failed));
    page.gauge("dportage_connections_open", "HTTP connections open.")
        .sample(&[], load(&c.connections_open));
    page.counter(
        "dportage_connections_refused_total",
        "Connections closed at accept because the global connection limit was reached.",
    )
    .sample(&[], load(&c.connections_refused));
    let mut limits = page.counter(
        "dportage_limit_refusals_total",
        "Connections and requests refused by a configured limit (each a command-line flag).",
    );
    for (label, n) in LIMIT_LABELS.iter().zip(&c.limit_refusals) {
        limits.sample(&[("limit", label)], load(n));
    }
    page.gauge(
        "dportage_connection_addresses",
        "Client addresses (IPv4, IPv6 /64) holding a connection.",
    )
    .sample(&[], shared.address_slots.addresses());
    page.gauge(
        "dportage_quota_keys",
        "Identities whose request quotas are being tracked.",
    )
    .sample(&[], shared.quotas.tracked_keys());
    page.gauge("dportage_nonces", "Nonces remembered against replay.")
        .sample(&[], nonces);
    page.counter("dportage_reports_total", "Mismatch reports stored.")
        .sample(&[], load(&c.reports));
    page.counter("dportage_blacklistings_total", "Hosts blacklisted.")
        .sample(&[], load(&c.blacklistings));
    let a = &shared.adjudication_counters;
    page.counter(
        "dportage_evidence_stored_total",
        "Evidence uploads (disputed inputs) accepted and stored.",
    )
    .sample(&[], load(&a.evidence_stored));
    let mut rulings = page.counter(
        "dportage_adjudications_total",
        "Adjudications by ruling (dropped: given up after retries or unusable).",
    );
    for (label, n) in [
        ("accused_wrong", &a.accused_wrong),
        ("report_false", &a.report_false),
        ("unconfirmed", &a.unconfirmed),
        ("inconclusive", &a.inconclusive),
        ("dropped", &a.dropped),
    ] {
        rulings.sample(&[("ruling", label)], load(n));
    }
    let cache = shared.cache().stats();
    let k = &shared.cache_counters;
    page.gauge(
        "dportage_cache_entries",
        "Result cache entries in force (not withdrawn).",
    )
    .sample(&[], cache.entries as u64);
    page.gauge(
        "dportage_cache_pending_claims",
        "Cache claims waiting for an agreeing claim of an unrelated host.",
    )
    .sample(&[], cache.pending as u64);
    page.gauge(
        "dportage_cache_withdrawn_entries",
        "Result cache entries withdrawn by an adjudication.",
    )
    .sample(&[], cache.withdrawn as u64);
    for (name, help, n) in [
        (
            "dportage_cache_claims_total",
            "Cache claims received from hosts.",
            &k.claims,
        ),
        (
            "dportage_cache_conflicts_total",
            "Cache claims contradicting an existing entry (counted, never applied).",
            &k.conflicts,
        ),
        (
            "dportage_cache_entries_made_total",
            "Result cache entries made by agreeing claims.",
            &k.entries_made,
        ),
        (
            "dportage_cache_lookups_total",
            "Cache lookups answered to members.",
            &k.lookups,
        ),
        (
            "dportage_cache_hits_total",
            "Cache lookups answered with an entry and live holders.",
            &k.hits,
        ),
        (
            "dportage_cache_withdrawals_total",
            "Result cache entries withdrawn since start.",
            &k.withdrawals,
        ),
    ] {
        page.counter(name, help).sample(&[], load(n));
    }
    let mut disputes = page.counter(
        "dportage_cache_disputes_total",
        "Cache disputes by outcome (received: taken for adjudication).",
    );
    for (label, n) in [
        ("received", &k.disputes),
        ("upheld", &k.disputes_upheld),
        ("rejected", &k.disputes_rejected),
        ("inconclusive", &k.disputes_inconclusive),
    ] {
        disputes.sample(&[("outcome", label)], load(n));
    }
    page.counter(
        "dportage_hosts_expired_total",
        "Hosts that left the pool by expiry.",
    )
    .sample(&[], load(&c.expired));

    let mut requests = page.counter(
        "dportage_http_requests_total",
        "HTTP requests by endpoint and status.",
    );
    // Only the (endpoint, code) pairs seen: most of the 132 never happen.
    for ep in Endpoint::ALL {
        for (ci, code) in CODES.iter().enumerate() {
            let n = c.request_count(ep, ci);
            if n > 0 {
                let code = match code {
                    0 => "other".to_string(),
                    code => code.to_string(),
                };
                requests.sample(&[("endpoint", ep.label()), ("code", &code)], n);
            }
        }
    }

    let mut auth = page.counter(
        "dportage_auth_failures_total",
        "Requests refused by signature checks.",
    );
    for (label, n) in AUTH_LABELS.iter().zip(&c.auth_failures) {
        auth.sample(&[("reason", label)], load(n));
    }

    let per_bucket: Vec<u64> = c.latency.iter().map(load).collect();
    let latency = Histogram::from_bucket_counts(
        &LATENCY_BUCKETS,
        &per_bucket,
        load(&c.latency_sum_us) as f64 / 1e6,
    );
    page.histogram(
        "dportage_http_request_duration_seconds",
        "Time to answer a request.",
    )
    .sample(&[], &latency);
    page.finish()
}
