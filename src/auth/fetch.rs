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

fn client() -> Result<&'static reqwest::Client, FetchError> {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    if let Some(c) = CLIENT.get() {
        return Ok(c);
    }
    let c = reqwest::Client::builder()
        .https_only(true)
        .user_agent(concat!("skolgrind/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| FetchError::Network(format!("http client: {e}")))?;
    Ok(CLIENT.get_or_init(|| c))
}

/// Fetches a document, refusing more than `max_bytes`.
pub async fn fetch(
    source: &Source,
    timeout: Duration,
    max_bytes: usize,
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
                let mut res = client()?
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
