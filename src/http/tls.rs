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

/// The SHA-256 SPKI pin of the connection's client certificate (leaf).
#[derive(Debug, Clone)]
pub struct PeerPin(pub String);

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
    if let Some(pin) = server_conn
        .peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(spki_pin)
    {
        ext.insert(PeerPin(pin));
    }
}
