//! Opaque, tamper-proof page tokens: `base64url(cursor) "." base64url(HMAC-SHA256)`.
//! The cursor binds the tenant, the resource type and the last id returned, so a token
//! is useless to another tenant, on another type, or after any edit.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::hmac;
use serde::{Deserialize, Serialize};

use crate::domain::{DomainError, RuleId, TenantId};

#[derive(Serialize, Deserialize)]
struct Cursor {
    t: String,
    k: String,
    a: String,
}

pub struct PageTokens {
    key: hmac::Key,
}

fn bad() -> DomainError {
    DomainError::invalid(
        "pageToken",
        RuleId::Query,
        "the page token is not valid here",
    )
}

impl PageTokens {
    /// `secret`: at least 32 random bytes, kept across restarts so tokens stay valid.
    pub fn new(secret: &[u8]) -> Self {
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
        }
    }

    pub fn issue(&self, tenant: &TenantId, resource: &str, after: &str) -> String {
        let c = Cursor {
            t: tenant.to_string(),
            k: resource.into(),
            a: after.into(),
        };
        let body = serde_json::to_vec(&c).unwrap_or_default();
        let tag = hmac::sign(&self.key, &body);
        format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(&body),
            URL_SAFE_NO_PAD.encode(tag.as_ref())
        )
    }

    /// The last id of the previous page, if the token is genuine and was issued to this
    /// tenant for this resource type.
    pub fn verify(
        &self,
        tenant: &TenantId,
        resource: &str,
        token: &str,
    ) -> Result<String, DomainError> {
        let (body, tag) = token.split_once('.').ok_or_else(bad)?;
        let body = URL_SAFE_NO_PAD.decode(body).map_err(|_| bad())?;
        let tag = URL_SAFE_NO_PAD.decode(tag).map_err(|_| bad())?;
        hmac::verify(&self.key, &body, &tag).map_err(|_| bad())?;
        let c: Cursor = serde_json::from_slice(&body).map_err(|_| bad())?;
        if c.t != tenant.as_str() || c.k != resource {
            return Err(bad());
        }
        Ok(c.a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_bind_tenant_type_and_content() {
        let p = PageTokens::new(&[7u8; 32]);
        let a = TenantId::parse("a").unwrap();
        let b = TenantId::parse("b").unwrap();
        let t = p.issue(&a, "persons", "x");
        assert_eq!(p.verify(&a, "persons", &t).unwrap(), "x");
        assert!(p.verify(&b, "persons", &t).is_err());
        assert!(p.verify(&a, "groups", &t).is_err());
        let mut chars: Vec<char> = t.chars().collect();
        chars[3] = if chars[3] == 'A' { 'B' } else { 'A' };
        let tampered: String = chars.into_iter().collect();
        assert!(p.verify(&a, "persons", &tampered).is_err());
        assert!(p.verify(&a, "persons", "garbage").is_err());
        assert!(PageTokens::new(&[8u8; 32])
            .verify(&a, "persons", &t)
            .is_err());
    }
}
