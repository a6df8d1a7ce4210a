//! Downloading trust documents (federation metadata, JWKS) from a file or an `https://`
//! URL, with a timeout and a size cap. HTTP error statuses count as network errors (short
//! retry), not as bad content.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

/// Where a trust document comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    File(PathBuf),
    Url(String),
}

impl Source {
    /// `https://…` is a URL; anything else a file path. Plain `http://` is refused.
    pub fn parse(s: &str) -> Result<Source, String> {
        if s.starts_with("https://") {
            Ok(Source::Url(s.to_owned()))
        } else if s.starts_with("http://") {
            Err("trust documents are only fetched over https".into())
        } else if s.is_empty() {
            Err("empty path".into())
        } else {
            Ok(Source::File(PathBuf::from(s)))
        }
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::File(p) => write!(f, "{}", p.display()),
            Source::Url(u) => f.write_str(u),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{0}")]
    Network(String),
    #[error("document larger than the limit")]
    TooLarge,
}

fn builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .https_only(true)
        .user_agent(concat!("skolgrind/", env!("CARGO_PKG_VERSION")))
}

/// The shared client (public web roots), or one that also trusts `extra_roots` (PEM).
fn client(extra_roots: Option<&[u8]>) -> Result<reqwest::Client, FetchError> {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    let fail = |e: reqwest::Error| FetchError::Network(format!("http client: {e}"));
    if let Some(pem) = extra_roots {
        let mut b = builder();
        for c in reqwest::Certificate::from_pem_bundle(pem).map_err(fail)? {
            b = b.add_root_certificate(c);
        }
        return b.build().map_err(fail);
    }
    if let Some(c) = CLIENT.get() {
        return Ok(c.clone());
    }
    let c = builder().build().map_err(fail)?;
    Ok(CLIENT.get_or_init(|| c).clone())
}

/// Checks that a PEM bundle holds at least one certificate (config validation).
pub fn check_roots(pem: &[u8]) -> Result<(), String> {
    match reqwest::Certificate::from_pem_bundle(pem) {
        Ok(v) if !v.is_empty() => Ok(()),
        Ok(_) => Err("no certificate".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// Fetches a document, refusing more than `max_bytes`.
pub async fn fetch(
    source: &Source,
    timeout: Duration,
    max_bytes: usize,
    extra_roots: Option<&[u8]>,
) -> Result<Vec<u8>, FetchError> {
    match source {
        Source::File(p) => {
            let meta = std::fs::metadata(p).map_err(|e| FetchError::Network(e.to_string()))?;
            if meta.len() > max_bytes as u64 {
                return Err(FetchError::TooLarge);
            }
            std::fs::read(p).map_err(|e| FetchError::Network(e.to_string()))
        }
        Source::Url(u) => {
            let fut = async {
                let mut res = client(extra_roots)?
                    .get(u)
                    .send()
                    .await
                    .map_err(|e| FetchError::Network(e.to_string()))?;
                if !res.status().is_success() {
                    return Err(FetchError::Network(format!("HTTP status {}", res.status())));
                }
                if res.content_length().is_some_and(|l| l > max_bytes as u64) {
                    return Err(FetchError::TooLarge);
                }
                let mut out = Vec::new();
                while let Some(chunk) = res
                    .chunk()
                    .await
                    .map_err(|e| FetchError::Network(e.to_string()))?
                {
                    if out.len() + chunk.len() > max_bytes {
                        return Err(FetchError::TooLarge);
                    }
                    out.extend_from_slice(&chunk);
                }
                Ok(out)
            };
            tokio::time::timeout(timeout, fut).await.map_err(|_| {
                FetchError::Network(format!("timed out after {} s", timeout.as_secs()))
            })?
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources() {
        assert_eq!(
            Source::parse("https://fed.example/md.jws"),
            Ok(Source::Url("https://fed.example/md.jws".into()))
        );
        assert!(Source::parse("http://fed.example/md.jws").is_err());
        assert!(Source::parse("").is_err());
        assert_eq!(
            Source::parse("/etc/x.jws"),
            Ok(Source::File(PathBuf::from("/etc/x.jws")))
        );
    }

    #[tokio::test]
    async fn https_client_builds_on_ring_and_reports_network_errors() {
        // Nothing listens on port 1: a network error (short retry), never bad content.
        let r = fetch(
            &Source::Url("https://127.0.0.1:1/md.jws".into()),
            Duration::from_secs(5),
            1024,
            None,
        )
        .await;
        assert!(matches!(r, Err(FetchError::Network(_))), "{r:?}");
    }

    #[tokio::test]
    async fn files_are_capped() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("big");
        std::fs::write(&p, vec![b'x'; 2048]).unwrap();
        let src = Source::File(p);
        assert!(matches!(
            fetch(&src, Duration::from_secs(1), 1024, None).await,
            Err(FetchError::TooLarge)
        ));
        assert_eq!(
            fetch(&src, Duration::from_secs(1), 4096, None)
                .await
                .unwrap()
                .len(),
            2048
        );
    }
}
