//! The coordinator's status pages rendered by a real headless browser
//! (Debian's chromium): a real `dportage coordinator` process, hosts
//! registered through the real signed API, one blacklisted by two reporters,
//! and one whose toolchain and architecture strings are markup meant to run
//! script in the page. The public page (`GET /`, unsigned) must show counts
//! only: no address, identity or fingerprint a stranger could harvest. The
//! detailed page (`GET /v1/status`, signed by a member) is fetched with a
//! signature and opened from a file. The assertions read the DOM chromium
//! built, not the bytes the coordinator sent, so they see what a visitor's
//! browser sees.

use std::fs;
use std::net::Ipv4Addr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use crate::support::network::*;
use crate::support::*;
use dportage::fingerprint::Toolchain;
use dportage::network::api::{HostResultHash, MismatchReport};
use dportage::network::auth;
use dportage::network::caller::{send, CoordinatorUrl};
use dportage::network::{unix_now, Identity, NetworkError};

const CHROMIUM: &str = "/usr/bin/chromium";
/// chromium starts slowly on a loaded 2-core machine; a page this small
/// renders in well under a second once it is up.
const BROWSER_LIMIT: Duration = Duration::from_secs(120);

/// Markup in every free-text field a heartbeat may carry onto the page. Each
/// would change the document title or the body if the browser ran it.
const HOSTILE_VERSION: &str = "gcc <script>document.title='PWNED';document.body.dataset.pwned='1'</script><img src=x onerror=\"document.title='PWNED-IMG'\">";
const HOSTILE_TARGET: &str = "x86_64</td></tr></table><script>document.title='PWNED-T'</script>";
const HOSTILE_ARCH: &str = "<svg onload=document.title=1>";

/// The chromium binary, or None when it is absent outside CI (under CI its
/// absence fails the test).
fn require_chromium(test: &str) -> Option<PathBuf> {
    require_peer(test, &peer::CHROMIUM).then(|| PathBuf::from(CHROMIUM))
}

/// Run headless chromium on `url` with `extra` arguments in its own process
/// group and a private profile; return its stdout. Killed (the whole group)
/// if it outlives [`BROWSER_LIMIT`], and its helpers are reaped either way.
fn run_chromium(bin: &Path, work: &Path, url: &str, extra: &[String]) -> String {
    let profile = tempfile::Builder::new()
        .prefix("chromium-profile-")
        .tempdir_in(work)
        .unwrap();
    let out_path = work.join(format!("chromium-{}.out", rand::random::<u32>()));
    let err_path = out_path.with_extension("err");
    let mut child = Command::new(bin)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--disable-dev-shm-usage",
            // Let the page's load events (an <img onerror>, an <svg onload>)
            // fire before the DOM is read.
            "--virtual-time-budget=3000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(extra)
        .arg(url)
        .env("HOME", profile.path())
        .stdin(Stdio::null())
        .stdout(fs::File::create(&out_path).unwrap())
        .stderr(fs::File::create(&err_path).unwrap())
        .process_group(0)
        .spawn()
        .expect("start chromium");
    let pgid = child.id() as i32;
    let status = poll_until(BROWSER_LIMIT, || child.try_wait().unwrap());
    // SAFETY: signals the process group of the chromium we started (its pid is
    // the group id); helpers it left behind go with it.
    unsafe { libc::kill(-pgid, libc::SIGKILL) };
    let _ = child.wait();
    let stdout = fs::read_to_string(&out_path).unwrap_or_default();
    let stderr = fs::read_to_string(&err_path).unwrap_or_default();
    let _ = fs::remove_file(&out_path);
    let _ = fs::remove_file(&err_path);
    match status {
        None => {
            panic!("chromium did not finish within {BROWSER_LIMIT:?} on {url}; stderr:\n{stderr}")
        }
        Some(st) if !st.success() => panic!("chromium failed ({st}) on {url}; stderr:\n{stderr}"),
        Some(_) => stdout,
    }
}

fn hostile_toolchain() -> Toolchain {
    let hex = |s: &str| blake3::hash(s.as_bytes()).to_hex().to_string();
    Toolchain {
        name: "gcc".into(),
        version: HOSTILE_VERSION.into(),
        target: HOSTILE_TARGET.into(),
        probe_hash: hex("hostile probe"),
        id: hex("hostile id"),
    }
}

fn report_against(addr: &str, input: &str) -> MismatchReport {
    MismatchReport {
        host_id: None,
        host_addr: addr.to_string(),
        input_hash: blake3::hash(input.as_bytes()).to_hex().to_string(),
        args: vec!["gcc".into(), "-O2".into(), "-c".into(), "x.c".into()],
        results: vec![HostResultHash {
            host: addr.to_string(),
            id: None,
            hash: "cd".repeat(32),
        }],
        time: 1,
        evidence_id: None,
        toolchain: None,
    }
}

/// The text of `<section id="ID">…</section>` in the dumped DOM.
fn section<'a>(dom: &'a str, id: &str) -> &'a str {
    let open = format!("<section id=\"{id}\">");
    let start = dom
        .find(&open)
        .unwrap_or_else(|| panic!("no section {id:?} in the DOM:\n{dom}"));
    let rest = &dom[start..];
    let end = rest.find("</section>").expect("section is closed");
    &rest[..end]
}

/// The `<tr>` of `table` whose text contains `needle`.
fn row_with<'a>(table: &'a str, needle: &str) -> &'a str {
    table
        .split("<tr>")
        .find(|r| r.contains(needle))
        .unwrap_or_else(|| panic!("no row with {needle:?} in:\n{table}"))
}

/// How the DOM serialiser writes `s` as text: `&`, `<`, `>` escaped (quotes
/// are left as they are in text nodes).
fn as_dom_text(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn api_code(e: &NetworkError) -> String {
    match e {
        NetworkError::Api { code, status, .. } => format!("{status} {code}"),
        other => format!("not an API error: {other}"),
    }
}

#[test]
fn status_page_renders_the_pool_in_headless_chromium_and_runs_no_peer_markup() {
    let Some(chromium) = require_chromium("status_page_in_headless_chromium") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();

    // The browser must really run script here, or "no script ran" below would
    // prove nothing.
    // A file, not a data: URL: some chromium builds print nothing for a data:
    // URL with a raw quote in it.
    let control_page = tmp.path().join("control.html");
    fs::write(
        &control_page,
        "<title>before</title><script>document.title='RAN'</script>",
    )
    .unwrap();
    let control = run_chromium(
        &chromium,
        tmp.path(),
        &format!("file://{}", control_page.display()),
        &["--dump-dom".into()],
    );
    assert!(
        control.contains("<title>RAN</title>"),
        "this chromium does not run page script, so the page test would prove nothing:\n{control}"
    );

    let admin = Arc::new(Identity::generate());
    let admin_hex = admin.id().to_string();
    let mut args = [ESTABLISHED_AT_ONCE, NO_CHALLENGES].concat();
    args.extend(["--admin-key", admin_hex.as_str()]);
    let coord = CoordinatorProcess::start(&tmp.path().join("coord"), &args);
    let url = coord.url.clone();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (liar, m1, m2, hostile) = (
        Arc::new(Identity::generate()),
        Arc::new(Identity::generate()),
        Arc::new(Identity::generate()),
        Arc::new(Identity::generate()),
    );
    let l_liar = Listening::on(Ipv4Addr::new(127, 0, 0, 61));
    let l1 = Listening::on(Ipv4Addr::new(127, 0, 0, 62));
    let l2 = Listening::on(Ipv4Addr::new(127, 0, 0, 63));
    let l_hostile = Listening::on(Ipv4Addr::new(127, 0, 0, 64));
    rt.block_on(async {
        for (id, l) in [(&liar, &l_liar), (&m1, &l1), (&m2, &l2)] {
            client(&url, id).heartbeat(&l.heartbeat()).await.unwrap();
        }
        // A host name is refused outright unless it is an address or DNS name.
        let mut bad_name = heartbeat(&l_hostile.host(), l_hostile.addr.port());
        bad_name.host = Some("<script>document.title='PWNED-HOST'</script>".into());
        let e = client(&url, &hostile)
            .heartbeat(&bad_name)
            .await
            .unwrap_err();
        assert_eq!(api_code(&e), "400 bad_request", "{e}");
        // Free text is accepted, and must reach the page as text.
        let mut hb = heartbeat(&l_hostile.host(), l_hostile.addr.port());
        hb.toolchains = vec![hostile_toolchain()];
        hb.arch = HOSTILE_ARCH.into();
        client(&url, &hostile).heartbeat(&hb).await.unwrap();

        let liar_addr = l_liar.addr.to_string();
        // Members report only hosts they were given.
        for m in [&m1, &m2] {
            client(&url, m).hosts(&local_hosts_request()).await.unwrap();
        }
        let ack = client(&url, &m1)
            .report(&report_against(&liar_addr, "job one"))
            .await
            .unwrap();
        assert!(!ack.blacklisted, "a report never blacklists");
        let ack = client(&url, &m2)
            .report(&report_against(&liar_addr, "job two"))
            .await
            .unwrap();
        assert!(!ack.blacklisted, "nor do two");
        // The operator's decision, as a lost adjudication would be.
        assert!(
            client(&url, &admin)
                .admin_blacklist_add(liar.id(), "test")
                .await
                .unwrap()
                .added
        );
    });

    // The public page: what any stranger's browser gets.
    let public = run_chromium(
        &chromium,
        tmp.path(),
        &format!("{url}/"),
        &["--dump-dom".into()],
    );
    assert!(
        public.contains("<title>dportage coordinator</title>"),
        "document.title changed: a peer's markup ran:\n{public}"
    );
    for tag in ["<script", "<img", "<svg"] {
        assert!(
            !public.contains(tag),
            "a peer's {tag} became an element:\n{public}"
        );
    }
    assert!(
        !public.contains("127.0.0."),
        "the public page shows an address:\n{public}"
    );
    for id in [&liar, &m1, &m2, &hostile] {
        let id = id.id();
        assert!(
            !public.contains(&id.short()) && !public.contains(&id.to_string()),
            "the public page shows identity {id}:\n{public}"
        );
    }
    let fingerprints: Vec<String> = local_toolchains()
        .into_iter()
        .chain([hostile_toolchain()])
        .flat_map(|t| [t.id.clone(), t.probe_hash.clone()])
        .collect();
    for f in &fingerprints {
        assert!(
            !public.contains(&f[..12]),
            "the public page shows fingerprint {f}:\n{public}"
        );
    }
    assert!(
        !public.contains("joined") && !public.contains("report #"),
        "the public page shows per-host events:\n{public}"
    );
    // The counts are there: three live hosts, one blacklisted, by
    // architecture and by version string.
    let pool = section(&public, "pool");
    assert!(pool.contains("<b id=\"pool-size\">3</b>"), "{pool}");
    assert!(pool.contains("<b id=\"blacklist-size\">1</b>"), "{pool}");
    let arch = section(&public, "arch");
    let here = row_with(arch, &format!("<td>{}</td>", std::env::consts::ARCH));
    assert!(here.contains("<td class=\"n\">2</td>"), "{arch}");
    let odd = row_with(arch, &as_dom_text(HOSTILE_ARCH));
    assert!(odd.contains("<td class=\"n\">1</td>"), "{arch}");
    let tcs = section(&public, "toolchains");
    let bad = row_with(tcs, &as_dom_text(HOSTILE_VERSION));
    assert!(bad.contains("<td class=\"n\">1</td>"), "{bad}");
    for t in local_toolchains() {
        row_with(tcs, &as_dom_text(&t.version));
    }

    // The detailed page: unsigned or a stranger's signature gets nothing.
    let curl = CoordinatorUrl::parse(&url).unwrap();
    let path = "/v1/status?format=html";
    let ckey = rt.block_on(coordinator_key(&url));
    let get_signed = |who: Option<&Identity>| {
        let headers = who.map(|id| auth::sign_request(id, &ckey, "GET", path, b"", unix_now()));
        let pairs: Vec<(&str, &str)> = headers
            .as_ref()
            .map(|h| h.pairs().to_vec())
            .unwrap_or_default();
        rt.block_on(send(&curl, None, "GET", path, &pairs, Vec::new()))
            .unwrap()
    };
    assert_eq!(get_signed(None).0, 401, "unsigned detail");
    let (st, body) = get_signed(Some(&Identity::generate()));
    assert_eq!(st, 403, "a stranger: {}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("not_member"));
    let (st, body) = get_signed(Some(&m1));
    assert_eq!(st, 200, "a member: {}", String::from_utf8_lossy(&body));
    let detail_file = tmp.path().join("detail.html");
    fs::write(&detail_file, &body).unwrap();
    let dom = run_chromium(
        &chromium,
        tmp.path(),
        &format!("file://{}", detail_file.display()),
        &["--dump-dom".into()],
    );

    // No peer string ran or became markup.
    assert!(
        dom.contains("<title>dportage coordinator</title>"),
        "document.title changed: a peer's markup ran:\n{dom}"
    );
    assert!(
        !dom.contains("PWNED</title>") && !dom.contains("data-pwned"),
        "{dom}"
    );
    for tag in ["<script", "<img", "<svg"] {
        assert!(
            !dom.contains(tag),
            "a peer's {tag} became an element:\n{dom}"
        );
    }
    assert!(
        dom.contains(&as_dom_text(HOSTILE_VERSION)),
        "the hostile version is shown as text:\n{dom}"
    );
    assert!(
        dom.contains(&as_dom_text(HOSTILE_TARGET)),
        "the hostile target is shown as text:\n{dom}"
    );
    assert!(
        !dom.contains("PWNED-HOST"),
        "a refused heartbeat left a trace"
    );

    // Pool: three live hosts (the liar left when it was blacklisted), one entry.
    let pool = section(&dom, "pool");
    assert!(pool.contains("<b id=\"pool-size\">3</b>"), "{pool}");
    assert!(pool.contains("<b id=\"blacklist-size\">1</b>"), "{pool}");

    // By architecture: this machine's (two honest hosts) and the hostile one.
    let arch = section(&dom, "arch");
    let here = row_with(arch, &format!("<td>{}</td>", std::env::consts::ARCH));
    assert!(here.contains("<td class=\"n\">2</td>"), "{arch}");
    let odd = row_with(arch, &as_dom_text(HOSTILE_ARCH));
    assert!(odd.contains("<td class=\"n\">1</td>"), "{arch}");

    // By toolchain: each local compiler on the two honest hosts, and the
    // hostile toolchain on one, each with its fingerprint.
    let tcs = section(&dom, "toolchains");
    for t in local_toolchains() {
        let row = row_with(tcs, &as_dom_text(&t.version));
        assert!(row.contains(&format!("title=\"{}\"", t.id)), "{row}");
        assert!(row.contains("<td class=\"n\">2</td>"), "{row}");
    }
    let bad = row_with(tcs, &as_dom_text(HOSTILE_VERSION));
    assert!(bad.contains("<td class=\"n\">1</td>"), "{bad}");

    // Blacklist: the liar, by its short id, with the reason.
    let bl = section(&dom, "blacklist");
    let entry = row_with(bl, &format!("title=\"{}\"", liar.id()));
    assert!(entry.contains(&liar.id().short()), "{entry}");
    assert!(
        !bl.contains(&m1.id().to_string()),
        "only the liar is listed"
    );

    // Recent activity: joins, reports and the blacklisting, newest first.
    let activity = section(&dom, "activity");
    let blacklisted_at = activity
        .find(&format!("host {} blacklisted", liar.id().short()))
        .unwrap_or_else(|| panic!("blacklisting not in activity:\n{activity}"));
    let joined_at = activity
        .find(&format!("host {} joined", m1.id().short()))
        .unwrap_or_else(|| panic!("join not in activity:\n{activity}"));
    assert!(blacklisted_at < joined_at, "newest first:\n{activity}");
    assert!(
        activity.contains(&as_dom_text(HOSTILE_VERSION)),
        "the hostile join is listed as text:\n{activity}"
    );

    // And a picture of the public page, as a visitor would see it.
    let shot = tmp.path().join("status.png");
    run_chromium(
        &chromium,
        tmp.path(),
        &format!("{url}/"),
        &[
            format!("--screenshot={}", shot.display()),
            "--window-size=1280,900".into(),
            "--hide-scrollbars".into(),
        ],
    );
    let png = fs::read(&shot).expect("chromium wrote the screenshot");
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "a PNG");
    let dim = |at: usize| u32::from_be_bytes(png[at..at + 4].try_into().unwrap());
    assert_eq!((dim(16), dim(20)), (1280, 900), "IHDR size");
    if let Ok(keep) = std::env::var("DPORTAGE_KEEP_SCREENSHOT") {
        fs::copy(&shot, keep).unwrap();
    }
    drop(coord);
}
