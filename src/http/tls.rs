//! The HTTPS listener: rustls 0.23 on the ring provider only, TLS 1.2 and 1.3, ALPN h2 and
//! http/1.1 (added by actix at bind), and the federated-TLS client-certificate verifier.
//! The pin of the client's leaf certificate is captured per connection and checked again
//! on every request (see `auth::federation`).

use std::sync::Arc;

use actix_web::dev::Extensions;
use rustls::server::danger::ClientCertVerifier;
use rustls::ServerConfig;

use crate::auth::config::{ClientCertMode, TlsRuntime};
use crate::auth::federation::metadata::spki_pin;
use crate::auth::federation::{Federation, FederationVerifier};

/// The SHA-256 SPKI pin of the connection's client certificate (leaf) and the end of its
/// validity (a resumed TLS session is not re-verified, so requests check the date again).
#[derive(Debug, Clone)]
pub struct PeerPin {
    pub pin: String,
    pub not_after: i64,
}

impl PeerPin {
    /// The pin while the certificate is still valid.
    pub fn current(&self, now: i64) -> Option<&str> {
        (now <= self.not_after).then_some(self.pin.as_str())
    }
}

/// The only crypto provider compiled in.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Builds the server config. Without federation no client certificate is requested.
pub fn server_config(
    tls: &TlsRuntime,
    federation: Option<Arc<Federation>>,
) -> Result<ServerConfig, String> {
    let builder = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| format!("tls: {e}"))?;
    let builder = match federation {
        Some(fed) => {
            let v: Arc<dyn ClientCertVerifier> = Arc::new(FederationVerifier::new(
                fed,
                tls.client_certificate == ClientCertMode::Required,
            ));
            builder.with_client_cert_verifier(v)
        }
        None => builder.with_no_client_auth(),
    };
    builder
        .with_single_cert(tls.cert_chain.clone(), tls.key.clone_key())
        .map_err(|e| format!("tls.cert_file/key_file: {e}"))
}

/// `HttpServer::on_connect` hook: remembers the client certificate's pin.
pub fn capture_peer_pin(conn: &dyn std::any::Any, ext: &mut Extensions) {
    type Tls = actix_tls::accept::rustls_0_23::TlsStream<actix_web::rt::net::TcpStream>;
    let Some(tls) = conn.downcast_ref::<Tls>() else {
        return;
    };
    let (_, server_conn) = tls.get_ref();
    // The leaf comes first.
    let Some(leaf) = server_conn.peer_certificates().and_then(|c| c.first()) else {
        return;
    };
    let not_after = x509_parser::parse_x509_certificate(leaf.as_ref())
        .map(|(_, c)| c.validity().not_after.timestamp())
        .unwrap_or(i64::MIN);
    if let Some(pin) = spki_pin(leaf) {
        ext.insert(PeerPin { pin, not_after });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pin_is_offered_only_while_the_certificate_is_valid() {
        let p = PeerPin {
            pin: "x".into(),
            not_after: 100,
        };
        assert_eq!(p.current(100), Some("x"));
        assert_eq!(p.current(101), None);
    }
}
