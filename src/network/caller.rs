//! A small signed-HTTP client for the coordinator, used by the daemon's
//! heartbeat, the environment printer, mismatch reports, the admin CLI and the
//! tests. One connection per call: none of these callers is chatty.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::Request;
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::api::*;
use super::auth;
use super::clock::unix_now;
use super::identity::{Identity, IdentityId, MembershipToken};
use super::NetworkError;

/// Largest answer we read from a coordinator.
const MAX_RESPONSE: usize = 1 << 20;
/// At least this long for an evidence upload (up to [`MAX_EVIDENCE_BYTES`]).
const EVIDENCE_TIMEOUT: Duration = Duration::from_secs(60);
const JSON: &str = "application/json";

/// `http://HOST[:PORT][/PREFIX]` or `https://…` (no scheme: http).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoordinatorUrl {
    /// `https://`: TLS, the server's certificate checked against the roots
    /// of [`super::tls::client_config`].
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// Path prefix without a trailing slash ("" for the root).
    pub prefix: String,
}

impl CoordinatorUrl {
    pub fn parse(url: &str) -> Result<Self, NetworkError> {
        let bad = |why: &str| NetworkError::BadUrl {
            url: url.to_string(),
            why: why.to_string(),
        };
        let url = url.trim();
        let (tls, rest) = match url.strip_prefix("https://") {
            Some(rest) => (true, rest),
            None => (false, url.strip_prefix("http://").unwrap_or(url)),
        };
        if rest.contains("://") {
            return Err(bad("the scheme must be http:// or https://"));
        }
        let default_port = if tls { 443 } else { 80 };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if authority.is_empty() {
            return Err(bad("no host"));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) = v6
                .split_once(']')
                .ok_or_else(|| bad("unclosed [ in IPv6 address"))?;
            let port = match after.strip_prefix(':') {
                Some(p) => p.parse().map_err(|_| bad("port is not a number"))?,
                None if after.is_empty() => default_port,
                None => return Err(bad("junk after IPv6 address")),
            };
            (h.to_string(), port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (
                    h.to_string(),
                    p.parse().map_err(|_| bad("port is not a number"))?,
                ),
                None => (authority.to_string(), default_port),
            }
        };
        check_host_name(&host).map_err(|e| bad(&e.to_string()))?;
        Ok(Self {
            tls,
            host,
            port,
            prefix: path.trim_end_matches('/').to_string(),
        })
    }

    /// The warning to print before talking to this coordinator, if any:
    /// plain http beyond loopback.
    pub fn plain_http_warning(&self) -> Option<String> {
        if self.tls {
            return None;
        }
        super::tls::plain_http_warning(&self.host)
    }

    fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl std::fmt::Display for CoordinatorUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.tls { "https" } else { "http" };
        write!(f, "{scheme}://{}{}", self.authority(), self.prefix)
    }
}

/// Where the key a coordinator must have came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// `--coordinator-key`.
    Given,
    /// Pinned at first contact in this `coordinator-keys.json`.
    Pinned(std::path::PathBuf),
}

impl KeySource {
    pub fn what(&self) -> String {
        match self {
            KeySource::Given => "given with --coordinator-key".into(),
            KeySource::Pinned(path) => format!("pinned at first contact in {}", path.display()),
        }
    }

    pub fn fix(&self) -> String {
        match self {
            KeySource::Given => "give the new key with --coordinator-key".into(),
            KeySource::Pinned(path) => format!(
                "delete the coordinator's line from {} (or give the new key with \
                 --coordinator-key)",
                path.display()
            ),
        }
    }
}

/// Signed calls to one coordinator as one identity. Every request is signed
/// for the coordinator's key (see [`auth`]), learnt from the coordinator at
/// the first call (`GET /v1/coordinator-key`, a signed proof) and checked
/// against the key it must have, if one is known ([`Self::expecting_key`]).
#[derive(Clone)]
pub struct CoordinatorClient {
    url: CoordinatorUrl,
    identity: Arc<Identity>,
    source_ip: Option<IpAddr>,
    timeout: Duration,
    expected_key: Option<(IdentityId, KeySource)>,
    /// The coordinator's key once learnt (shared by clones).
    coordinator_key: Arc<tokio::sync::OnceCell<IdentityId>>,
}

impl CoordinatorClient {
    pub fn new(url: &str, identity: Arc<Identity>) -> Result<Self, NetworkError> {
        let url = CoordinatorUrl::parse(url)?;
        if let Some(warning) = url.plain_http_warning() {
            // Once per process (a run may make several clients), through the
            // log: a detached daemon's stderr goes nowhere.
            static WARNED: std::sync::Once = std::sync::Once::new();
            WARNED.call_once(|| tracing::warn!("{warning}"));
        }
        Ok(Self {
            url,
            identity,
            source_ip: None,
            timeout: Duration::from_secs(15),
            expected_key: None,
            coordinator_key: Arc::new(tokio::sync::OnceCell::new()),
        })
    }

    /// Refuse to talk to a coordinator whose key is not `key`.
    pub fn expecting_key(mut self, key: IdentityId, source: KeySource) -> Self {
        self.expected_key = Some((key, source));
        self
    }

    /// [`Self::expecting_key`] the key pinned for this coordinator's URL in
    /// `dir` (`coordinator-keys.json`), if there is one.
    pub fn expecting_pinned_key(self, dir: &std::path::Path) -> Result<Self, NetworkError> {
        let url = self.url.to_string();
        let pinned = super::host_list::pinned_key(dir, &url).map_err(|e| {
            NetworkError::Usage(format!("reading the pinned coordinator keys: {e}"))
        })?;
        Ok(match pinned {
            Some(key) => {
                let path = dir.join(super::host_list::PINS_FILE);
                self.expecting_key(key, KeySource::Pinned(path))
            }
            None => self,
        })
    }

    /// The coordinator's key: asked for at the first call (a signed proof
    /// over a fresh challenge), then remembered.
    pub async fn coordinator_key(&self) -> Result<IdentityId, NetworkError> {
        self.coordinator_key
            .get_or_try_init(|| self.fetch_coordinator_key())
            .await
            .copied()
    }

    async fn fetch_coordinator_key(&self) -> Result<IdentityId, NetworkError> {
        let mut bytes = [0u8; 16];
        rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut bytes);
        let challenge = hex::encode(bytes);
        let path = format!(
            "{}{COORDINATOR_KEY_PATH}?challenge={challenge}",
            self.url.prefix
        );
        let proof: CoordinatorKeyProof = self
            .exchange_within(self.timeout, "GET", &path, JSON, &[], Vec::new())
            .await?;
        let key = proof
            .verify(&challenge)
            .map_err(|e| NetworkError::BadResponse {
                url: self.url.to_string(),
                why: format!("its key proof ({COORDINATOR_KEY_PATH}): {e}"),
            })?;
        if let Some((expected, source)) = &self.expected_key {
            if *expected != key {
                return Err(NetworkError::CoordinatorKeyMismatch {
                    url: self.url.to_string(),
                    got: key,
                    expected: *expected,
                    key_source: source.clone(),
                });
            }
        }
        Ok(key)
    }

    /// Connect from this local address (tests use 127.0.x.y to act as
    /// different networks).
    pub fn with_source_ip(mut self, ip: IpAddr) -> Self {
        self.source_ip = Some(ip);
        self
    }

    pub fn with_timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }

    pub fn url(&self) -> &CoordinatorUrl {
        &self.url
    }

    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    pub async fn heartbeat(&self, hb: &Heartbeat) -> Result<HeartbeatAck, NetworkError> {
        self.post("/v1/heartbeat", hb).await
    }

    /// A host list as the coordinator signed it (see [`SignedHostList`]).
    pub async fn hosts_signed(&self, req: &HostsRequest) -> Result<SignedHostList, NetworkError> {
        self.post("/v1/hosts", req).await
    }

    /// A host list whose signature verifies under the key it names (intact,
    /// but not pinned: `dportage` pins the key, see `member::env`).
    pub async fn hosts(&self, req: &HostsRequest) -> Result<HostsResponse, NetworkError> {
        self.hosts_signed(req)
            .await?
            .open(None)
            .map_err(|e| NetworkError::BadResponse {
                url: format!("{}/v1/hosts", self.url),
                why: e.to_string(),
            })
    }

    /// End the link between `person` and `daemon` (signed by either).
    pub async fn unlink(
        &self,
        person: IdentityId,
        daemon: IdentityId,
    ) -> Result<UnlinkResponse, NetworkError> {
        self.post("/v1/unlink", &UnlinkRequest { person, daemon })
            .await
    }

    pub async fn link(&self, token: &MembershipToken) -> Result<LinkResponse, NetworkError> {
        self.post(
            "/v1/link",
            &LinkRequest {
                token: token.clone(),
            },
        )
        .await
    }

    pub async fn whoami(&self) -> Result<WhoamiResponse, NetworkError> {
        self.post("/v1/whoami", &serde_json::json!({})).await
    }

    pub async fn report(&self, report: &MismatchReport) -> Result<ReportAck, NetworkError> {
        self.post("/v1/report", report).await
    }

    /// `PUT /v1/evidence/<input_hash>`: the preprocessed input of a disputed
    /// job, which a [`ReportAck::evidence_wanted`] asked for. `zstd_body` is
    /// the zstd compression of the input (sent as is, `application/zstd`, at
    /// most [`MAX_EVIDENCE_BYTES`]); the coordinator checks that it
    /// decompresses to bytes whose blake3 is `input_hash`. A coordinator
    /// without the route answers 404 (`NetworkError::Api`).
    pub async fn upload_evidence(
        &self,
        input_hash: &str,
        zstd_body: Vec<u8>,
    ) -> Result<EvidenceAck, NetworkError> {
        if !is_input_hash(input_hash) {
            return Err(NetworkError::Usage(format!(
                "evidence input hash {:?} is not 64 lowercase hex digits",
                input_hash.chars().take(80).collect::<String>()
            )));
        }
        if zstd_body.len() > MAX_EVIDENCE_BYTES {
            return Err(NetworkError::Usage(format!(
                "evidence for {input_hash} is {} bytes compressed; the coordinator takes at \
                 most {MAX_EVIDENCE_BYTES}",
                zstd_body.len()
            )));
        }
        // Up to 4 MiB on a slow uplink: more time than a JSON call.
        let timeout = self.timeout.max(EVIDENCE_TIMEOUT);
        self.call_as(
            "PUT",
            &evidence_path(input_hash),
            "application/zstd",
            zstd_body,
            timeout,
        )
        .await
    }

    pub async fn admin_blacklist(&self) -> Result<BlacklistResponse, NetworkError> {
        self.call("GET", "/v1/admin/blacklist", Vec::new()).await
    }

    /// Blacklist a host by the operator's decision.
    pub async fn admin_blacklist_add(
        &self,
        id: IdentityId,
        reason: &str,
    ) -> Result<BlacklistAddResponse, NetworkError> {
        let req = BlacklistAddRequest {
            id,
            reason: reason.to_string(),
        };
        self.post("/v1/admin/blacklist/add", &req).await
    }

    pub async fn admin_lift(&self, id: IdentityId) -> Result<LiftResponse, NetworkError> {
        self.post("/v1/admin/blacklist/lift", &LiftRequest { id })
            .await
    }

    /// Lift a network's blacklisting (`network`: `a.b.c.0/24` or any address in it).
    pub async fn admin_lift_network(
        &self,
        network: &str,
    ) -> Result<LiftNetworkResponse, NetworkError> {
        let req = LiftNetworkRequest {
            network: network.to_string(),
        };
        self.post("/v1/admin/blacklist/lift-network", &req).await
    }

    /// Vouch for a host (`vouched`), or withdraw it.
    pub async fn admin_vouch(
        &self,
        id: IdentityId,
        vouched: bool,
    ) -> Result<VouchResponse, NetworkError> {
        let path = if vouched {
            "/v1/admin/vouch"
        } else {
            "/v1/admin/unvouch"
        };
        self.post(path, &VouchRequest { id }).await
    }

    /// `POST /v1/cache/lookup`: the coordinator's signed answer for `key`
    /// (open it with [`super::cache_api::SignedCacheAnswer::open`]).
    pub async fn cache_lookup(
        &self,
        key: &str,
    ) -> Result<super::cache_api::SignedCacheAnswer, NetworkError> {
        let body = super::cache_api::CacheLookup {
            key: key.to_owned(),
        };
        self.post(super::cache_api::LOOKUP_PATH, &body).await
    }

    /// `POST /v1/cache/dispute`.
    pub async fn cache_dispute(
        &self,
        dispute: &super::cache_api::CacheDispute,
    ) -> Result<super::cache_api::CacheDisputeAck, NetworkError> {
        self.post(super::cache_api::DISPUTE_PATH, dispute).await
    }

    /// `POST /v1/cache/withdrawn`.
    pub async fn cache_withdrawn(
        &self,
        keys: Vec<String>,
    ) -> Result<super::cache_api::CacheWithdrawnResponse, NetworkError> {
        let body = super::cache_api::CacheWithdrawnQuery { keys };
        self.post(super::cache_api::WITHDRAWN_PATH, &body).await
    }

    async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, NetworkError> {
        let bytes = serde_json::to_vec(body).map_err(|e| NetworkError::BadResponse {
            url: self.url.to_string(),
            why: format!("cannot encode request: {e}"),
        })?;
        self.call("POST", path, bytes).await
    }

    /// Sign and send a JSON body; decode a 2xx JSON answer, turn others into
    /// [`NetworkError::Api`].
    pub async fn call<T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Vec<u8>,
    ) -> Result<T, NetworkError> {
        self.call_as(method, path, JSON, body, self.timeout).await
    }

    /// [`CoordinatorClient::call`] with any body: the signature covers the
    /// body's bytes whatever they are, and no size limit applies on this side
    /// (the coordinator's limit is per route).
    async fn call_as<T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<T, NetworkError> {
        let full_path = format!("{}{}", self.url.prefix, path);
        let coordinator = self.coordinator_key().await?;
        let signed = auth::sign_request(
            &self.identity,
            &coordinator,
            method,
            &full_path,
            &body,
            unix_now(),
        );
        self.exchange_within(
            timeout,
            method,
            &full_path,
            content_type,
            signed.pairs().as_slice(),
            body,
        )
        .await
    }

    /// Send one request; decode a 2xx JSON answer, turn others into
    /// [`NetworkError::Api`].
    async fn exchange_within<T: DeserializeOwned>(
        &self,
        timeout: Duration,
        method: &str,
        full_path: &str,
        content_type: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Result<T, NetworkError> {
        let (status, bytes) = tokio::time::timeout(
            timeout,
            send_as(
                &self.url,
                self.source_ip,
                method,
                full_path,
                content_type,
                headers,
                body,
            ),
        )
        .await
        .map_err(|_| NetworkError::Unreachable {
            url: self.url.to_string(),
            why: format!("no answer within {} s", timeout.as_secs()),
        })??;
        if (200..300).contains(&status) {
            return serde_json::from_slice(&bytes).map_err(|e| NetworkError::BadResponse {
                url: self.url.to_string(),
                why: e.to_string(),
            });
        }
        let (code, message) = match serde_json::from_slice::<ErrorBody>(&bytes) {
            Ok(e) => (e.code, e.error),
            Err(_) => (
                "unknown".to_string(),
                String::from_utf8_lossy(&bytes).chars().take(300).collect(),
            ),
        };
        Err(NetworkError::Api {
            url: self.url.to_string(),
            status,
            code,
            message,
        })
    }
}

/// One HTTP/1.1 request with a JSON body on a fresh connection; returns
/// status and body (bounded). Public so tests can send hand-made (e.g.
/// forged) requests.
pub async fn send(
    url: &CoordinatorUrl,
    source_ip: Option<IpAddr>,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Result<(u16, Bytes), NetworkError> {
    send_as(url, source_ip, method, path, JSON, headers, body).await
}

/// [`send`] with a body of type `content_type`.
pub async fn send_as(
    url: &CoordinatorUrl,
    source_ip: Option<IpAddr>,
    method: &str,
    path: &str,
    content_type: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Result<(u16, Bytes), NetworkError> {
    let unreachable = |why: String| NetworkError::Unreachable {
        url: url.to_string(),
        why,
    };
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((url.host.as_str(), url.port))
        .await
        .map_err(|e| unreachable(format!("cannot resolve {}: {e}", url.host)))?
        .collect();
    let mut last_err = String::from("no addresses");
    let mut stream = None;
    for addr in addrs {
        let sock = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()
        } else {
            tokio::net::TcpSocket::new_v6()
        }
        .map_err(|e| unreachable(e.to_string()))?;
        if let Some(ip) = source_ip {
            sock.bind(SocketAddr::new(ip, 0))
                .map_err(|e| unreachable(format!("binding {ip}: {e}")))?;
        }
        match sock.connect(addr).await {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last_err = format!("{addr}: {e}"),
        }
    }
    let stream = stream.ok_or_else(|| unreachable(last_err))?;
    let _ = stream.set_nodelay(true);
    if url.tls {
        let config = super::tls::client_config().map_err(|e| unreachable(e.to_string()))?;
        let name = rustls::pki_types::ServerName::try_from(url.host.clone())
            .map_err(|e| unreachable(format!("{:?} as a TLS server name: {e}", url.host)))?;
        let stream = tokio_rustls::TlsConnector::from(config)
            .connect(name, stream)
            .await
            .map_err(|e| unreachable(super::tls::explain_handshake_failure(&url.host, &e)))?;
        exchange(url, stream, method, path, content_type, headers, body).await
    } else {
        exchange(url, stream, method, path, content_type, headers, body).await
    }
}

/// One request and its answer on a connected stream (plain or TLS).
async fn exchange<S>(
    url: &CoordinatorUrl,
    stream: S,
    method: &str,
    path: &str,
    content_type: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Result<(u16, Bytes), NetworkError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let unreachable = |why: String| NetworkError::Unreachable {
        url: url.to_string(),
        why,
    };
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    let driver = tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", url.authority())
        .header("content-type", content_type)
        .header(
            "user-agent",
            concat!("dportage/", env!("CARGO_PKG_VERSION")),
        );
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| NetworkError::BadUrl {
            url: url.to_string(),
            why: e.to_string(),
        })?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    let status = resp.status().as_u16();
    let bytes = Limited::new(resp.into_body(), MAX_RESPONSE)
        .collect()
        .await
        .map_err(|e| NetworkError::BadResponse {
            url: url.to_string(),
            why: format!("reading the answer: {e}"),
        })?
        .to_bytes();
    driver.abort();
    Ok((status, bytes))
}

/// For the compile client: send a mismatch report signed with the identity in
/// `$DPORTAGE_DIR` to `coordinator` (blocking; runs its own small runtime).
/// Returns the coordinator's acknowledgement, which comes only after the report
/// is durable.
pub fn send_report_blocking(
    coordinator: &str,
    report: &MismatchReport,
) -> Result<ReportAck, NetworkError> {
    let dir = super::identity::dportage_dir();
    let identity = Arc::new(Identity::load_or_create(&dir)?);
    let client = CoordinatorClient::new(coordinator, identity)?.expecting_pinned_key(&dir)?;
    let rt = crate::runtime::current_thread()?;
    rt.block_on(client.report(report))
}

/// Async form of [`send_report_blocking`] for callers already on a runtime.
pub async fn send_report(
    coordinator: &str,
    identity: Arc<Identity>,
    report: &MismatchReport,
) -> Result<ReportAck, NetworkError> {
    CoordinatorClient::new(coordinator, identity)?
        .report(report)
        .await
}

/// Send several mismatch reports (e.g. the pending records of the client's
/// evidence log) with one identity; one result per report, in order. A report
/// the coordinator refused (`Api` error) does not stop the others; an
/// unreachable coordinator does (the rest would fail the same way).
pub async fn send_reports(
    coordinator: &str,
    identity: Arc<Identity>,
    reports: &[MismatchReport],
) -> Vec<Result<ReportAck, NetworkError>> {
    let client = match CoordinatorClient::new(coordinator, identity) {
        Ok(c) => c,
        Err(e) => return vec![Err(e)],
    };
    let mut out = Vec::with_capacity(reports.len());
    for r in reports {
        let result = client.report(r).await;
        let stop = matches!(result, Err(NetworkError::Unreachable { .. }));
        out.push(result);
        if stop {
            break;
        }
    }
    out
}

/// Blocking [`send_reports`] signed with the identity in `$DPORTAGE_DIR`, for
/// the compile client (which has no runtime of its own). Results may be
/// fewer than `reports` when the coordinator became unreachable: the missing
/// ones were not sent.
pub fn send_reports_blocking(
    coordinator: &str,
    reports: &[MismatchReport],
) -> Vec<Result<ReportAck, NetworkError>> {
    let identity = match Identity::load_or_create(&super::identity::dportage_dir()) {
        Ok(i) => Arc::new(i),
        Err(e) => return vec![Err(e)],
    };
    let rt = match crate::runtime::current_thread() {
        Ok(rt) => rt,
        Err(e) => return vec![Err(e.into())],
    };
    rt.block_on(send_reports(coordinator, identity, reports))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_parsing() {
        let u = CoordinatorUrl::parse("http://127.0.0.1:8080").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.prefix.as_str()),
            ("127.0.0.1", 8080, "")
        );
        let u = CoordinatorUrl::parse("coord.example.org/dp/").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.prefix.as_str()),
            ("coord.example.org", 80, "/dp")
        );
        let u = CoordinatorUrl::parse("http://[::1]:9").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 9));
        assert_eq!(u.to_string(), "http://[::1]:9");
        let u = CoordinatorUrl::parse("https://c.example/dp").unwrap();
        assert_eq!(
            (u.tls, u.host.as_str(), u.port, u.prefix.as_str()),
            (true, "c.example", 443, "/dp")
        );
        assert_eq!(u.to_string(), "https://c.example:443/dp");
        assert_eq!(u.plain_http_warning(), None);
        let u = CoordinatorUrl::parse("https://[::1]").unwrap();
        assert_eq!((u.tls, u.port), (true, 443));
        assert!(!CoordinatorUrl::parse("c.example").unwrap().tls);
        assert!(CoordinatorUrl::parse("http://c.example")
            .unwrap()
            .plain_http_warning()
            .is_some());
        assert!(CoordinatorUrl::parse("ftp://x")
            .unwrap_err()
            .to_string()
            .contains("scheme"));
        assert!(CoordinatorUrl::parse("http://:80").is_err());
        assert!(CoordinatorUrl::parse("http://h:port").is_err());
        assert!(CoordinatorUrl::parse("http://a b:1").is_err());
    }

    /// What a one-request test coordinator saw.
    struct Seen {
        method: String,
        path: String,
        content_type: String,
        body: Vec<u8>,
        signature: Result<(), String>,
    }

    /// Serve one request on 127.0.0.1: check its signature, answer
    /// `status` with `answer`, and hand over what was seen. Before it, the
    /// coordinator's key is asked for and given, as a coordinator does.
    async fn serve_once(
        status: u16,
        answer: String,
    ) -> (String, tokio::sync::oneshot::Receiver<Seen>) {
        use hyper::service::service_fn;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = tokio::sync::oneshot::channel();
        let coordinator = Arc::new(Identity::generate());
        let tx = Arc::new(std::sync::Mutex::new(Some(tx)));
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let tx = tx.clone();
                let answer = answer.clone();
                let coordinator = coordinator.clone();
                let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let answer = answer.clone();
                    let tx = tx.clone();
                    let coordinator = coordinator.clone();
                    async move {
                        if req.uri().path() == COORDINATOR_KEY_PATH {
                            let challenge =
                                req.uri().query().unwrap_or("").replace("challenge=", "");
                            let proof =
                                CoordinatorKeyProof::sign(&coordinator, &challenge).unwrap();
                            return Ok::<_, std::convert::Infallible>(hyper::Response::new(
                                Full::new(Bytes::from(serde_json::to_vec(&proof).unwrap())),
                            ));
                        }
                        let tx = tx.lock().unwrap().take();
                        let (parts, body) = req.into_parts();
                        let body = body.collect().await.unwrap().to_bytes().to_vec();
                        let header =
                            |h: &'static str| parts.headers.get(h).and_then(|v| v.to_str().ok());
                        let path = parts.uri.path().to_owned();
                        let method = parts.method.as_str().to_owned();
                        let signature = auth::parse_claim(header)
                            .and_then(|claim| {
                                let key = auth::KeyCache::default().get(&claim.key)?;
                                auth::verify_claim(
                                    &key,
                                    &claim,
                                    &coordinator.id(),
                                    &method,
                                    &path,
                                    &body,
                                )
                            })
                            .map_err(|e| e.to_string());
                        let seen = Seen {
                            content_type: header("content-type").unwrap_or("").to_owned(),
                            method,
                            path,
                            body,
                            signature,
                        };
                        if let Some(tx) = tx {
                            let _ = tx.send(seen);
                        }
                        Ok::<_, std::convert::Infallible>(
                            hyper::Response::builder()
                                .status(status)
                                .header("content-type", "application/json")
                                .body(Full::new(Bytes::from(answer)))
                                .unwrap(),
                        )
                    }
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service),
                );
            }
        });
        (url, rx)
    }

    fn client(url: &str) -> CoordinatorClient {
        let dir = tempfile::tempdir().unwrap();
        let identity = Arc::new(Identity::load_or_create(dir.path()).unwrap());
        CoordinatorClient::new(url, identity).unwrap()
    }

    /// An input that compresses badly, so its upload is larger than any
    /// JSON body may be.
    fn incompressible(len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len);
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        while out.len() < len {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            out.extend_from_slice(&x.to_le_bytes());
        }
        out.truncate(len);
        out
    }

    #[tokio::test]
    async fn evidence_is_put_signed_raw_and_larger_than_a_json_body() {
        let input = incompressible(256 * 1024);
        let hash = blake3::hash(&input).to_hex().to_string();
        let body = zstd::bulk::compress(&input, 3).unwrap();
        assert!(body.len() > MAX_BODY, "{} bytes", body.len());
        let answer = serde_json::to_string(&EvidenceAck {
            input_hash: hash.clone(),
            stored: true,
        })
        .unwrap();
        let (url, seen) = serve_once(200, answer).await;
        let ack = client(&url)
            .upload_evidence(&hash, body.clone())
            .await
            .unwrap();
        assert!(ack.stored);
        assert_eq!(ack.input_hash, hash);
        let seen = seen.await.unwrap();
        assert_eq!(seen.method, "PUT");
        assert_eq!(seen.path, format!("/v1/evidence/{hash}"));
        assert_eq!(seen.content_type, "application/zstd");
        assert_eq!(seen.signature, Ok(()));
        assert!(seen.body == body, "the body arrives as sent");
        let decompressed = zstd::bulk::decompress(&seen.body, MAX_EVIDENCE_INPUT).unwrap();
        assert_eq!(blake3::hash(&decompressed).to_hex().to_string(), hash);
    }

    #[tokio::test]
    async fn evidence_route_refusals_are_api_errors() {
        let not_found = serde_json::to_string(&ErrorBody {
            error: "no such route".into(),
            code: "not_found".into(),
        })
        .unwrap();
        let (url, _seen) = serve_once(404, not_found).await;
        let hash = "ab".repeat(32);
        match client(&url).upload_evidence(&hash, vec![1, 2, 3]).await {
            Err(NetworkError::Api { status, code, .. }) => {
                assert_eq!((status, code.as_str()), (404, "not_found"))
            }
            other => panic!("{other:?}"),
        }
        // Checked before anything is sent.
        let c = client("http://127.0.0.1:9");
        assert!(matches!(
            c.upload_evidence("../x", Vec::new()).await,
            Err(NetworkError::Usage(_))
        ));
        assert!(matches!(
            c.upload_evidence(&hash, vec![0; MAX_EVIDENCE_BYTES + 1])
                .await,
            Err(NetworkError::Usage(_))
        ));
    }
}
