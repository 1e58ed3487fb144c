//! How every PostgreSQL connection is opened (pooled, `LISTEN`, `migrate`,
//! `seed`): a libpq connection string and TLS with rustls.
//!
//! tokio-postgres knows `sslmode` only as `disable`, `prefer` and
//! `require`, and no `sslrootcert`. [`PgTarget::parse`] takes both out of
//! the URL and gives them libpq's meaning:
//!
//! | `sslmode` | TLS | the server's certificate |
//! |---|---|---|
//! | `disable` | never | — |
//! | `prefer` (the default, as in libpq) | if the server offers it | not checked, unless `sslrootcert` is given: then as `verify-ca` |
//! | `require` | always; refused without it | as `prefer` |
//! | `verify-ca` | always | signed by a trusted CA |
//! | `verify-full` | always | signed by a trusted CA, and names the host |
//!
//! Trusted CAs are the system's roots plus the PEM file named by
//! `sslrootcert` (Supabase publishes its projects' CA as such a file);
//! `sslrootcert=system` means the system's roots alone.

use std::{path::PathBuf, str::FromStr, sync::Arc};

use percent_encoding::percent_decode_str;
use rustls::{
    client::{
        danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
        WebPkiServerVerifier,
    },
    crypto::{ring, CryptoProvider},
    pki_types::{pem::PemObject, CertificateDer, ServerName, UnixTime},
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio_postgres::{config::SslMode as DriverSslMode, Client};
use tokio_postgres_rustls::MakeRustlsConnect;

/// libpq's `sslmode`, the values that matter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

impl FromStr for SslMode {
    type Err = TargetError;

    fn from_str(value: &str) -> Result<Self, TargetError> {
        Ok(match value {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            other => return Err(TargetError::SslMode(other.to_string())),
        })
    }
}

/// Why a connection string cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("is not a valid PostgreSQL connection string: {0}")]
    Invalid(#[from] tokio_postgres::Error),
    #[error(
        "has sslmode={0:?}; use disable, prefer, require, verify-ca or verify-full (allow is not supported)"
    )]
    SslMode(String),
    #[error("names sslrootcert {path}, which cannot be read: {reason}")]
    RootCert { path: PathBuf, reason: String },
    #[error("has sslmode={0} but no trusted CA: the system has no root certificates and no sslrootcert is given")]
    NoRoots(&'static str),
}

/// Where to connect, and how to secure it.
#[derive(Clone)]
pub struct PgTarget {
    /// tokio-postgres's settings, `sslmode` mapped to what it knows.
    pub config: tokio_postgres::Config,
    /// The TLS connector for [`Self::mode`]; also used, unused, with
    /// `disable` (tokio-postgres then never starts TLS).
    pub tls: MakeRustlsConnect,
    pub mode: SslMode,
}

impl std::fmt::Debug for PgTarget {
    // the config holds the password
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgTarget")
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

impl PgTarget {
    /// Reads a libpq connection string, URL (`postgres://…?sslmode=…`) or
    /// `key=value` form.
    pub fn parse(connection_string: &str) -> Result<Self, TargetError> {
        let (rest, mode, root_cert) = take_tls_parameters(connection_string);
        let mode = mode.as_deref().map_or(Ok(SslMode::Prefer), str::parse)?;
        let mut config = tokio_postgres::Config::from_str(&rest)?;
        config.ssl_mode(match mode {
            SslMode::Disable => DriverSslMode::Disable,
            SslMode::Prefer => DriverSslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => DriverSslMode::Require,
        });
        let tls = MakeRustlsConnect::new(client_config(mode, root_cert.as_deref())?);
        Ok(Self { config, tls, mode })
    }

    /// One session, and the connection task that must be polled for it.
    pub async fn connect(
        &self,
    ) -> Result<
        (
            Client,
            tokio_postgres::Connection<
                tokio_postgres::Socket,
                <MakeRustlsConnect as tokio_postgres::tls::MakeTlsConnect<
                    tokio_postgres::Socket,
                >>::Stream,
            >,
        ),
        tokio_postgres::Error,
    > {
        self.config.connect(self.tls.clone()).await
    }
}

/// Why a connection's TLS cannot work.
#[derive(Debug, thiserror::Error)]
pub enum TlsCheckError {
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error("sslmode={mode} cannot work: {error}")]
    CannotWork { mode: &'static str, error: String },
}

/// Tries one connection to `connection_string` within `timeout`, and fails
/// only if its TLS cannot work (see [`is_tls_failure`]). A server that does
/// not answer is an outage, which the daemon starts through (reporting not
/// ready); a TLS setting that cannot work is a mistake to report at once.
pub async fn check_tls(
    connection_string: &str,
    timeout: std::time::Duration,
) -> Result<(), TlsCheckError> {
    let mut target = PgTarget::parse(connection_string)?;
    if target.mode == SslMode::Disable {
        return Ok(());
    }
    target.config.connect_timeout(timeout);
    match tokio::time::timeout(timeout, target.connect()).await {
        Ok(Err(error)) if is_tls_failure(&error) => {
            // tokio-postgres keeps the reason in the error's source
            let reason = std::error::Error::source(&error)
                .map(|cause| format!(": {cause}"))
                .unwrap_or_default();
            Err(TlsCheckError::CannotWork {
                mode: target.mode.as_str(),
                error: format!("{error}{reason}"),
            })
        }
        _ => Ok(()),
    }
}

/// Whether a connection failed in its TLS handshake: a server without TLS
/// under `require`, an untrusted certificate, a wrong host name. That is a
/// configuration to fix, not an outage to wait out. (tokio-postgres does not
/// expose its error kinds; every TLS failure is reported with this text.)
pub fn is_tls_failure(error: &tokio_postgres::Error) -> bool {
    error
        .to_string()
        .starts_with("error performing TLS handshake")
}

/// Splits `sslmode` and `sslrootcert` off a connection string.
fn take_tls_parameters(connection_string: &str) -> (String, Option<String>, Option<String>) {
    let (mut mode, mut root_cert) = (None, None);
    let mut take = |key: &str, value: String| match key {
        "sslmode" => {
            mode = Some(value);
            true
        }
        "sslrootcert" => {
            root_cert = Some(value);
            true
        }
        _ => false,
    };
    let is_url = ["postgres://", "postgresql://"]
        .iter()
        .any(|scheme| connection_string.starts_with(scheme));
    let rest = if is_url {
        match connection_string.split_once('?') {
            None => connection_string.to_string(),
            Some((base, query)) => {
                let kept: Vec<&str> = query
                    .split('&')
                    .filter(|pair| {
                        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                        let value = percent_decode_str(value).decode_utf8_lossy().into_owned();
                        !take(key, value)
                    })
                    .collect();
                if kept.is_empty() {
                    base.to_string()
                } else {
                    format!("{base}?{}", kept.join("&"))
                }
            }
        }
    } else {
        connection_string
            .split_whitespace()
            .filter(|pair| {
                let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                !take(key.trim(), value.trim_matches('\'').to_string())
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    (rest, mode, root_cert)
}

fn client_config(mode: SslMode, root_cert: Option<&str>) -> Result<ClientConfig, TargetError> {
    let provider = Arc::new(ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions");
    let checks_chain = match mode {
        SslMode::VerifyCa | SslMode::VerifyFull => true,
        // libpq: a root certificate given turns `require` into `verify-ca`
        SslMode::Disable | SslMode::Prefer | SslMode::Require => root_cert.is_some(),
    };
    let config = if checks_chain {
        let roots = Arc::new(trusted_roots(mode, root_cert)?);
        let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider)
            .build()
            .expect("the roots are not empty");
        if mode == SslMode::VerifyFull {
            builder.with_webpki_verifier(webpki)
        } else {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(ChainOnly(webpki)))
        }
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NotChecked(provider)))
    };
    Ok(config.with_no_client_auth())
}

/// The system's roots (unless `sslrootcert=system` alone is wanted, they
/// are always included) and those in the `sslrootcert` file.
fn trusted_roots(mode: SslMode, root_cert: Option<&str>) -> Result<RootCertStore, TargetError> {
    let mut roots = RootCertStore::empty();
    // unreadable system certificates are skipped, as every TLS client does
    let system = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(system.certs);
    if let Some(path) = root_cert.filter(|path| *path != "system") {
        let unreadable = |reason: String| TargetError::RootCert {
            path: path.into(),
            reason,
        };
        let pem = std::fs::read(path).map_err(|e| unreadable(e.to_string()))?;
        let certs = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| unreadable(e.to_string()))?;
        if certs.is_empty() {
            return Err(unreadable("it holds no PEM certificate".into()));
        }
        for cert in certs {
            roots
                .add(cert)
                .map_err(|e| unreadable(format!("a certificate is not usable: {e}")))?;
        }
    }
    if roots.is_empty() {
        return Err(TargetError::NoRoots(mode.as_str()));
    }
    Ok(roots)
}

/// `verify-ca`: the chain must lead to a trusted root; the host name is
/// not compared.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // the chain is checked first; only then the name
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// `prefer` and `require` without a root certificate, as libpq: the
/// connection is encrypted, the certificate is not checked. The handshake's
/// signatures still are.
#[derive(Debug)]
struct NotChecked(Arc<CryptoProvider>);

impl ServerCertVerifier for NotChecked {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_parameters_are_taken_out_of_urls_and_key_value_strings() {
        let (rest, mode, root) = take_tls_parameters(
            "postgres://u:p@db.example.com:6543/postgres?sslmode=verify-full&application_name=x&sslrootcert=%2Fetc%2Fca.crt",
        );
        assert_eq!(
            rest,
            "postgres://u:p@db.example.com:6543/postgres?application_name=x"
        );
        assert_eq!(mode.as_deref(), Some("verify-full"));
        assert_eq!(root.as_deref(), Some("/etc/ca.crt"));

        let (rest, mode, root) = take_tls_parameters("postgresql://h/db?sslmode=require");
        assert_eq!(
            (rest.as_str(), mode.as_deref(), root),
            ("postgresql://h/db", Some("require"), None)
        );

        let (rest, mode, root) =
            take_tls_parameters("host=h dbname=d sslmode=verify-ca sslrootcert='/ca.pem'");
        assert_eq!(rest, "host=h dbname=d");
        assert_eq!(mode.as_deref(), Some("verify-ca"));
        assert_eq!(root.as_deref(), Some("/ca.pem"));
    }

    #[test]
    fn every_libpq_mode_that_matters_is_understood_and_others_are_refused() {
        for (text, mode) in [
            ("disable", SslMode::Disable),
            ("prefer", SslMode::Prefer),
            ("require", SslMode::Require),
        ] {
            let target = PgTarget::parse(&format!("postgres://h/db?sslmode={text}")).unwrap();
            assert_eq!(target.mode, mode);
        }
        assert_eq!(
            PgTarget::parse("postgres://h/db").unwrap().mode,
            SslMode::Prefer,
            "libpq's default"
        );
        let error = PgTarget::parse("postgres://h/db?sslmode=allow").unwrap_err();
        assert!(error.to_string().contains("allow"), "{error}");
        let error =
            PgTarget::parse("postgres://h/db?sslmode=verify-full&sslrootcert=/nonexistent/ca.crt")
                .unwrap_err();
        assert!(error.to_string().contains("/nonexistent/ca.crt"), "{error}");
    }
}
