//! TLS for the coordinator link: the client's trust roots, the coordinator's
//! certificate, and what to tell a person whose handshake failed.
//!
//! rustls on ring (no OpenSSL, no cmake). The client trusts the system's
//! roots (`rustls-native-certs`, which honours `SSL_CERT_FILE` and
//! `SSL_CERT_DIR` in place of the system store) plus the PEM certificates in
//! `DPORTAGE_CA_FILE` if set (added to the roots: a private network's CA
//! without giving up the public ones).

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Extra CA certificates (PEM) the client trusts besides the system's.
pub const CA_FILE_ENV: &str = "DPORTAGE_CA_FILE";

#[derive(Debug, Clone, thiserror::Error)]
pub enum TlsError {
    #[error("{}: {why}", path.display())]
    Pem { path: PathBuf, why: String },
    #[error(
        "no trusted certificate authorities (system store: {why}); install the system's CA \
         certificates, or point SSL_CERT_FILE or {CA_FILE_ENV} at a PEM file of CAs"
    )]
    NoRoots { why: String },
    #[error("TLS set-up: {0}")]
    Config(String),
}

// ring rather than aws-lc-rs: it builds without cmake or a C toolchain
// beyond cc. Its deprecation is about post-quantum key exchange, which the
// coordinator link (signed requests, signed host lists) does not rely on.
#[allow(deprecated)]
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = |why: String| TlsError::Pem {
        path: path.to_owned(),
        why,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| pem(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem(e.to_string()))?;
    if certs.is_empty() {
        return Err(pem("no PEM certificate in it".into()));
    }
    Ok(certs)
}

/// The client's configuration, built once per process (reading the system
/// store takes milliseconds and the environment does not change).
pub fn client_config() -> Result<Arc<rustls::ClientConfig>, TlsError> {
    static CONFIG: OnceLock<Result<Arc<rustls::ClientConfig>, TlsError>> = OnceLock::new();
    CONFIG.get_or_init(build_client_config).clone()
}

fn build_client_config() -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    let (_, ignored) = roots.add_parsable_certificates(native.certs);
    if ignored > 0 {
        tracing::debug!("{ignored} system CA certificate(s) could not be parsed");
    }
    if let Some(path) = std::env::var_os(CA_FILE_ENV).filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        for cert in read_certs(&path)? {
            roots.add(cert).map_err(|e| TlsError::Pem {
                path: path.clone(),
                why: e.to_string(),
            })?;
        }
    }
    if roots.is_empty() {
        let why = native
            .errors
            .iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join("; ");
        return Err(TlsError::NoRoots {
            why: if why.is_empty() { "empty".into() } else { why },
        });
    }
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The coordinator's configuration from a PEM certificate chain and a PEM
/// private key (PKCS#8, PKCS#1 or SEC1).
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let chain = read_certs(cert)?;
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Pem {
        path: key.to_owned(),
        why: format!("no readable private key: {e}"),
    })?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .map_err(|e| {
            TlsError::Config(format!(
                "{} and {} do not make a certificate and its key: {e}",
                cert.display(),
                key.display()
            ))
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// What went wrong in a client handshake with `host`, and what to do, for a
/// person: `err` is what tokio-rustls returned.
pub fn explain_handshake_failure(host: &str, err: &std::io::Error) -> String {
    let Some(tls) = err
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
    else {
        return format!(
            "TLS handshake with {host} failed: {err} (is it serving https on this port? \
             a plain-http coordinator needs an http:// URL)"
        );
    };
    explain_tls_error(host, tls)
}

fn explain_tls_error(host: &str, err: &rustls::Error) -> String {
    use rustls::CertificateError as C;
    let trust_hint = format!(
        "if the coordinator uses a private CA, put that CA's certificate (PEM) in \
         {CA_FILE_ENV} (added to the system's roots) or SSL_CERT_FILE (replaces them)"
    );
    match err {
        rustls::Error::InvalidCertificate(C::UnknownIssuer)
        | rustls::Error::InvalidCertificate(C::BadSignature) => format!(
            "TLS: the certificate of {host} is not signed by an authority this machine \
             trusts ({err}); {trust_hint}"
        ),
        rustls::Error::InvalidCertificate(C::NotValidForName)
        | rustls::Error::InvalidCertificate(C::NotValidForNameContext { .. }) => format!(
            "TLS: the certificate presented by {host} is not issued for that name ({err}); \
             use the name the certificate names in the coordinator URL, or fix the certificate"
        ),
        rustls::Error::InvalidCertificate(C::Expired)
        | rustls::Error::InvalidCertificate(C::ExpiredContext { .. })
        | rustls::Error::InvalidCertificate(C::NotValidYet)
        | rustls::Error::InvalidCertificate(C::NotValidYetContext { .. }) => format!(
            "TLS: the certificate of {host} is outside its validity period ({err}); check \
             this machine's clock, or ask the coordinator's operator to renew it"
        ),
        rustls::Error::InvalidCertificate(_) => {
            format!("TLS: the certificate of {host} was refused ({err}); {trust_hint}")
        }
        rustls::Error::InvalidMessage(_) => format!(
            "TLS handshake with {host} failed: {err} (is it serving https on this port? a \
             plain-http coordinator needs an http:// URL)"
        ),
        _ => format!("TLS handshake with {host} failed: {err}"),
    }
}

/// The warning for a plain-http coordinator URL naming `host`, or `None` when
/// that is fine: loopback never leaves the machine. Anything else (the LAN
/// included) crosses a wire where an observer reads, and an active attacker
/// can change, what is not signed.
pub fn plain_http_warning(host: &str) -> Option<String> {
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    (!loopback).then(|| {
        format!(
            "the coordinator {host} is reached over plain http: anyone on the path \
             sees the requests (host lists, reports, evidence) and can delay or drop them. \
             Requests and host lists are signed, so they cannot be forged, but use an \
             https:// coordinator URL outside a trusted network"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_is_fine_only_on_loopback() {
        for host in ["127.0.0.1", "127.3.4.5", "::1", "localhost", "LOCALHOST"] {
            assert_eq!(plain_http_warning(host), None, "{host}");
        }
        for host in ["10.0.0.1", "192.168.1.2", "coord.example.org", "::2"] {
            let w = plain_http_warning(host).unwrap_or_default();
            assert!(w.contains("https://") && w.contains(host), "{host}: {w}");
        }
    }

    #[test]
    fn handshake_failures_say_what_to_do() {
        use rustls::CertificateError as C;
        let table: &[(rustls::Error, &[&str])] = &[
            (
                rustls::Error::InvalidCertificate(C::UnknownIssuer),
                &["not signed by an authority", CA_FILE_ENV, "SSL_CERT_FILE"],
            ),
            (
                rustls::Error::InvalidCertificate(C::NotValidForName),
                &["not issued for that name"],
            ),
            (
                rustls::Error::InvalidCertificate(C::Expired),
                &["validity period", "clock"],
            ),
            (
                rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType),
                &["http://"],
            ),
        ];
        for (err, wanted) in table {
            let io = std::io::Error::new(std::io::ErrorKind::InvalidData, err.clone());
            let text = explain_handshake_failure("c.example", &io);
            assert!(text.contains("c.example"), "{text}");
            for w in *wanted {
                assert!(text.contains(w), "{err:?}: {text:?} lacks {w:?}");
            }
        }
        let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        assert!(explain_handshake_failure("h", &reset).contains("http://"));
    }

    #[test]
    fn server_config_names_the_unreadable_file() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("cert.pem");
        let key = dir.path().join("key.pem");
        std::fs::write(&cert, "not pem").unwrap();
        std::fs::write(&key, "not pem").unwrap();
        let e = server_config(&cert, &key).unwrap_err().to_string();
        assert!(e.contains("cert.pem"), "{e}");
    }
}
