//! The status pages, small self-contained HTML. `GET /` is public and shows
//! aggregates only ([`render_public`]): anyone can load it, so it names no
//! address, identity or fingerprint that a stranger could harvest. The
//! detailed page ([`render_page`], and [`detail_json`]) is `GET /v1/status`,
//! signed by a member or an admin key. Every string that came from a peer is
//! HTML-escaped: toolchain versions, architectures and addresses are hostile input.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::Ordering;

use serde::Serialize;

use super::state::Shared;
use crate::network::clock::unix_now;

/// Escape text for HTML element content and double-quoted attributes.
fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

fn ago(unix: u64, now: u64) -> String {
    let d = now.saturating_sub(unix);
    match d {
        0..=59 => format!("{d} s ago"),
        60..=3599 => format!("{} min ago", d / 60),
        3600..=86399 => format!("{} h ago", d / 3600),
        _ => format!("{} d ago", d / 86400),
    }
}

const STYLE: &str = "
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;background:#f5f6f8;color:#1d2433}
header{background:#1d2433;color:#fff;padding:14px 24px}header h1{margin:0;font-size:20px}
header p{margin:4px 0 0;color:#b8c0d0;font-size:13px}
main{padding:16px 24px;display:grid;grid-template-columns:repeat(auto-fit,minmax(340px,1fr));gap:16px}
section{background:#fff;border-radius:8px;box-shadow:0 1px 3px rgba(0,0,0,.12);padding:12px 16px;min-width:0;overflow-x:auto}
h2{font-size:15px;margin:4px 0 10px;color:#394260}
.big{display:flex;gap:24px}.big div{font-size:12px;color:#5b6478}.big b{display:block;font-size:28px;color:#1d2433}
table{border-collapse:collapse;width:100%;font-size:13px}th,td{text-align:left;padding:4px 6px;border-bottom:1px solid #eceef2}
td,li{overflow-wrap:anywhere}th{color:#5b6478;font-weight:600}td.n{text-align:right;font-variant-numeric:tabular-nums}
code{font-size:12px;background:#eef0f4;padding:1px 4px;border-radius:3px;white-space:nowrap}
.empty{color:#8a93a6;font-style:italic}.bad{color:#b3261e}
ol{margin:0;padding-left:0;list-style:none;font-size:13px}li{padding:3px 0;border-bottom:1px solid #eceef2}
li time{color:#8a93a6;display:inline-block;min-width:90px}
";

fn duration_text(secs: u64) -> String {
    match secs {
        0..=59 => format!("{secs} s"),
        60..=3599 => format!("{} min", secs / 60),
        3600..=86399 => format!("{} h {} min", secs / 3600, secs % 3600 / 60),
        _ => format!("{} d {} h", secs / 86400, secs % 86400 / 3600),
    }
}

/// Live hosts per toolchain version string, most common first: the public
/// page's view of the toolchains, without the fingerprint ids (which, with a
/// host list, single hosts out).
fn hosts_by_version(toolchains: &[super::pool::ToolchainCount]) -> Vec<(String, usize)> {
    let mut by: BTreeMap<&str, usize> = BTreeMap::new();
    for t in toolchains {
        *by.entry(t.version.as_str()).or_default() += t.hosts;
    }
    let mut v: Vec<(String, usize)> = by.into_iter().map(|(k, n)| (k.to_string(), n)).collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    v
}

/// `GET /` without a signature: counts only. No address, identity id,
/// fingerprint or per-host event appears here, so the page cannot be
/// harvested for targets.
pub(super) fn render_public(shared: &Shared) -> String {
    let (now_ms, exp) = (shared.now_ms(), shared.expiry_ms());
    let (summary, blacklisted) = {
        let pool = shared.pool_read();
        (pool.summary(now_ms, exp), pool.blacklist_entries().len())
    };
    let c = &shared.counters;
    let mut h = String::with_capacity(4096);
    let _ = write!(
        h,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <title>dportage coordinator</title><style>{STYLE}</style></head><body>\
         <header><h1>dportage coordinator</h1><p>version {} &middot; up {} &middot; jobs go to {} hosts each \
         &middot; members see details with <code>dportage status --coordinator URL</code></p></header><main>",
        env!("CARGO_PKG_VERSION"),
        duration_text(now_ms / 1000),
        shared.cfg.redundancy
    );
    let _ = write!(
        h,
        "<section id=\"pool\"><h2>Pool</h2><div class=\"big\">\
         <div><b id=\"pool-size\">{}</b>live hosts</div><div><b>{}</b>job slots</div>\
         <div><b id=\"blacklist-size\">{}</b>blacklisted</div></div></section>",
        summary.live, summary.capacity, blacklisted
    );
    let _ = write!(
        h,
        "<section id=\"traffic\"><h2>Traffic</h2><div class=\"big\">\
         <div><b id=\"requests\">{}</b>requests answered</div>\
         <div><b id=\"reports\">{}</b>mismatch reports</div>\
         <div><b>{}</b>blacklistings</div></div></section>",
        c.requests_total(),
        c.reports.load(Ordering::Relaxed),
        c.blacklistings.load(Ordering::Relaxed)
    );
    arch_section(&mut h, &summary.by_arch);
    cache_section(&mut h, shared);
    h.push_str("<section id=\"toolchains\"><h2>Hosts by toolchain version</h2>");
    let versions = hosts_by_version(&summary.toolchains);
    if versions.is_empty() {
        h.push_str("<p class=\"empty\">no live hosts</p>");
    } else {
        h.push_str("<table><tr><th>compiler</th><th>hosts</th></tr>");
        for (v, n) in versions.iter().take(50) {
            let _ = write!(
                h,
                "<tr><td>{}</td><td class=\"n\">{n}</td></tr>",
                html_escape(v)
            );
        }
        if versions.len() > 50 {
            let _ = write!(
                h,
                "<tr><td colspan=\"2\" class=\"empty\">and {} more</td></tr>",
                versions.len() - 50
            );
        }
        h.push_str("</table>");
    }
    h.push_str("</section></main></body></html>\n");
    h
}

/// The result cache's counters (public: aggregate numbers only).
fn cache_section(h: &mut String, shared: &Shared) {
    let cache = cache_json(shared);
    let rate = if cache.lookups == 0 {
        "&ndash;".to_string()
    } else {
        format!("{:.1} %", 100.0 * cache.hits as f64 / cache.lookups as f64)
    };
    let _ = write!(
        h,
        "<section id=\"cache\"><h2>Result cache</h2><div class=\"big\">\
         <div><b id=\"cache-entries\">{}</b>entries</div><div><b>{}</b>pending claims</div>\
         <div><b id=\"cache-hit-rate\">{rate}</b>hit rate ({} of {} lookups)</div>\
         <div><b>{}</b>conflicting claims</div><div><b>{}</b>disputes</div>\
         <div><b id=\"cache-withdrawn\">{}</b>withdrawn</div></div></section>",
        cache.entries,
        cache.pending_claims,
        cache.hits,
        cache.lookups,
        cache.conflicts,
        cache.disputes,
        cache.withdrawn
    );
}

fn arch_section(h: &mut String, by_arch: &BTreeMap<String, usize>) {
    h.push_str("<section id=\"arch\"><h2>Hosts by architecture</h2>");
    if by_arch.is_empty() {
        h.push_str("<p class=\"empty\">no live hosts</p>");
    } else {
        h.push_str("<table><tr><th>architecture</th><th>hosts</th></tr>");
        for (arch, n) in by_arch.iter().take(50) {
            let _ = write!(
                h,
                "<tr><td>{}</td><td class=\"n\">{n}</td></tr>",
                html_escape(arch)
            );
        }
        h.push_str("</table>");
    }
    h.push_str("</section>");
}

/// `GET /v1/status` as JSON: what the detailed page shows.
#[derive(Debug, Serialize)]
pub(super) struct DetailJson {
    version: &'static str,
    uptime_secs: u64,
    live_hosts: usize,
    job_slots: u64,
    known_identities: usize,
    /// Live hosts by standing, and how many have proven service (`serves`:
    /// passed a challenge job; shown, not yet enforced).
    established_hosts: usize,
    probationary_hosts: usize,
    serving_hosts: usize,
    requests: u64,
    reports: u64,
    by_arch: BTreeMap<String, usize>,
    toolchains: Vec<ToolchainJson>,
    blacklist: Vec<crate::network::api::BlacklistEntry>,
    blacklisted_networks: Vec<crate::network::api::NetworkBlacklistEntry>,
    /// The result cache (issue 16): what `dportage status` shows as hit rate.
    cache: CacheJson,
    recent_events: Vec<EventJson>,
}

#[derive(Debug, Serialize)]
struct CacheJson {
    entries: usize,
    pending_claims: usize,
    withdrawn: usize,
    claims: u64,
    conflicts: u64,
    lookups: u64,
    hits: u64,
    disputes: u64,
    disputes_upheld: u64,
    disputes_rejected: u64,
}

fn cache_json(shared: &Shared) -> CacheJson {
    let stats = shared.cache().stats();
    let k = &shared.cache_counters;
    let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    CacheJson {
        entries: stats.entries,
        pending_claims: stats.pending,
        withdrawn: stats.withdrawn,
        claims: load(&k.claims),
        conflicts: load(&k.conflicts),
        lookups: load(&k.lookups),
        hits: load(&k.hits),
        disputes: load(&k.disputes),
        disputes_upheld: load(&k.disputes_upheld),
        disputes_rejected: load(&k.disputes_rejected),
    }
}

#[derive(Debug, Serialize)]
struct ToolchainJson {
    id: String,
    version: String,
    target: String,
    hosts: usize,
}

#[derive(Debug, Serialize)]
struct EventJson {
    unix: u64,
    text: String,
}

pub(super) fn detail_json(shared: &Shared) -> DetailJson {
    let (now_ms, exp) = (shared.now_ms(), shared.expiry_ms());
    let (summary, blacklist, networks, identities, (established, probationary, serving)) = {
        let pool = shared.pool_read();
        (
            pool.summary(now_ms, exp),
            pool.blacklist_entries(),
            pool.blacklisted_networks(),
            pool.known_count(),
            pool.standing_counts(now_ms, exp),
        )
    };
    DetailJson {
        version: env!("CARGO_PKG_VERSION"),
        uptime_secs: now_ms / 1000,
        live_hosts: summary.live,
        job_slots: summary.capacity,
        known_identities: identities,
        established_hosts: established,
        probationary_hosts: probationary,
        serving_hosts: serving,
        requests: shared.counters.requests_total(),
        reports: shared.counters.reports.load(Ordering::Relaxed),
        by_arch: summary.by_arch,
        toolchains: summary
            .toolchains
            .into_iter()
            .map(|t| ToolchainJson {
                id: t.id,
                version: t.version,
                target: t.target,
                hosts: t.hosts,
            })
            .collect(),
        blacklist,
        blacklisted_networks: networks,
        cache: cache_json(shared),
        recent_events: shared
            .recent_events_newest_first()
            .into_iter()
            .map(|e| EventJson {
                unix: e.unix,
                text: e.text,
            })
            .collect(),
    }
}

/// The detailed page (`GET /v1/status?format=html`, members and admins only).
pub(super) fn render_page(shared: &Shared) -> String {
    let (now_ms, exp) = (shared.now_ms(), shared.expiry_ms());
    let now = unix_now();
    let (summary, blacklist, identities, (established, _, serving)) = {
        let pool = shared.pool_read();
        (
            pool.summary(now_ms, exp),
            pool.blacklist_entries(),
            pool.known_count(),
            pool.standing_counts(now_ms, exp),
        )
    };
    let events = shared.recent_events_newest_first();
    let mut h = String::with_capacity(8192);
    let _ = write!(
        h,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <title>dportage coordinator</title><style>{STYLE}</style></head><body>\
         <header><h1>dportage coordinator</h1><p>version {} &middot; hosts expire after {} s without a heartbeat \
         &middot; jobs go to {} hosts each</p></header><main>",
        env!("CARGO_PKG_VERSION"),
        shared.cfg.expiry.as_secs(),
        shared.cfg.redundancy
    );
    let _ = write!(
        h,
        "<section id=\"pool\"><h2>Pool</h2><div class=\"big\">\
         <div><b id=\"pool-size\">{}</b>live hosts</div><div><b>{}</b>job slots</div>\
         <div><b id=\"established\">{}</b>established</div><div><b>{}</b>serving (challenge passed)</div>\
         <div><b>{}</b>known identities</div><div><b id=\"blacklist-size\">{}</b>blacklisted</div></div></section>",
        summary.live,
        summary.capacity,
        established,
        serving,
        identities,
        blacklist.len()
    );
    arch_section(&mut h, &summary.by_arch);
    cache_section(&mut h, shared);
    h.push_str("<section id=\"toolchains\"><h2>Hosts by toolchain</h2>");
    if summary.toolchains.is_empty() {
        h.push_str("<p class=\"empty\">no live hosts</p>");
    } else {
        h.push_str(
            "<table><tr><th>compiler</th><th>target</th><th>fingerprint</th><th>hosts</th></tr>",
        );
        for t in summary.toolchains.iter().take(50) {
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td><code title=\"{}\">{}</code></td><td class=\"n\">{}</td></tr>",
                html_escape(&t.version),
                html_escape(&t.target),
                html_escape(&t.id),
                html_escape(&t.id.chars().take(12).collect::<String>()),
                t.hosts
            );
        }
        if summary.toolchains.len() > 50 {
            let _ = write!(
                h,
                "<tr><td colspan=\"4\" class=\"empty\">and {} more</td></tr>",
                summary.toolchains.len() - 50
            );
        }
        h.push_str("</table>");
    }
    h.push_str("</section><section id=\"blacklist\"><h2>Blacklist</h2>");
    if blacklist.is_empty() {
        h.push_str("<p class=\"empty\">nobody is blacklisted</p>");
    } else {
        h.push_str("<table><tr><th>identity</th><th>since</th><th>reason</th></tr>");
        for e in blacklist.iter().take(100) {
            let _ = write!(
                h,
                "<tr><td class=\"bad\"><code title=\"{}\">{}</code></td><td>{}</td><td>{}</td></tr>",
                e.id,
                e.id.short(),
                ago(e.since, now),
                html_escape(&e.reason)
            );
        }
        h.push_str("</table>");
    }
    h.push_str("</section><section id=\"activity\"><h2>Recent activity</h2>");
    if events.is_empty() {
        h.push_str("<p class=\"empty\">nothing yet</p>");
    } else {
        h.push_str("<ol>");
        for e in events.iter().take(30) {
            let _ = write!(
                h,
                "<li><time>{}</time> {}</li>",
                ago(e.unix, now),
                html_escape(&e.text)
            );
        }
        h.push_str("</ol>");
    }
    h.push_str("</section></main></body></html>\n");
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_controls() {
        assert_eq!(
            html_escape("<script>alert('x')</script>&\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;&quot;"
        );
        assert_eq!(html_escape("a\u{1b}[31mb"), "a\u{fffd}[31mb");
    }
}
