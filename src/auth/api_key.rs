//! API keys: only SHA-256 hashes are configured; a presented key is hashed and compared
//! in constant time with every configured hash (no early exit, so timing does not tell
//! which or whether a key matched). Several keys per tenant allow rotation; each may have
//! an expiry date. The same table holds the keys of school owners (provisioning) and of
//! the supplier's products (login API); the owner of the matching key says which.

use chrono::NaiveDate;
use sha2::{Digest, Sha256};
use subtle::{ConditionallySelectable, ConstantTimeEq};

use super::{Credentials, Mechanism, Outcome};
use crate::domain::{ProductId, TenantId};

/// The config form of a key hash: `sha256:<64 hex digits>`.
pub fn hash_for_config(key: &str) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(key.as_bytes())))
}

/// Parses `sha256:<64 hex>`.
pub fn parse_hash(s: &str) -> Option<[u8; 32]> {
    let hex = s.strip_prefix("sha256:")?;
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex, &mut out).ok()?;
    Some(out)
}

/// Whose key it is: a school owner's (provisioning) or a product's (login API).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyOwner {
    Tenant(TenantId),
    Product(ProductId),
}

impl std::fmt::Display for KeyOwner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyOwner::Tenant(t) => write!(f, "{t}"),
            KeyOwner::Product(p) => write!(f, "product:{p}"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct ApiKey {
    pub owner: KeyOwner,
    pub hash: [u8; 32],
    pub label: String,
    pub expires: Option<NaiveDate>,
}

pub struct ApiKeys {
    keys: Vec<ApiKey>,
}

impl ApiKeys {
    pub fn new(keys: Vec<ApiKey>) -> Self {
        Self { keys }
    }
}

impl Mechanism for ApiKeys {
    fn authenticate(&self, creds: &Credentials<'_>, today: NaiveDate) -> Outcome {
        let Some(presented) = creds.api_key else {
            return Outcome::NotPresent;
        };
        let digest: [u8; 32] = Sha256::digest(presented).into();
        let mut found = subtle::Choice::from(0);
        let mut index = 0u64;
        for (i, k) in self.keys.iter().enumerate() {
            let eq = k.hash.ct_eq(&digest);
            index.conditional_assign(&(i as u64), eq);
            found |= eq;
        }
        if !bool::from(found) {
            return Outcome::Refused;
        }
        let Some(k) = usize::try_from(index).ok().and_then(|i| self.keys.get(i)) else {
            return Outcome::Refused;
        };
        if k.expires.is_some_and(|e| today > e) {
            tracing::warn!(owner = %k.owner, key = %k.label, "expired API key presented");
            return Outcome::Refused;
        }
        let credential = format!("api-key:{}#{}", k.owner, k.label);
        match &k.owner {
            KeyOwner::Tenant(t) => Outcome::Accepted {
                tenant: t.clone(),
                credential,
            },
            KeyOwner::Product(p) => Outcome::AcceptedProduct {
                product: p.clone(),
                credential,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> ApiKeys {
        let t = |s: &str| KeyOwner::Tenant(TenantId::parse(s).unwrap());
        ApiKeys::new(vec![
            ApiKey {
                owner: t("a"),
                hash: parse_hash(&hash_for_config("old")).unwrap(),
                label: "1".into(),
                expires: NaiveDate::from_ymd_opt(2026, 1, 31),
            },
            ApiKey {
                owner: t("a"),
                hash: parse_hash(&hash_for_config("new")).unwrap(),
                label: "2".into(),
                expires: None,
            },
            ApiKey {
                owner: t("b"),
                hash: parse_hash(&hash_for_config("bee")).unwrap(),
                label: "1".into(),
                expires: None,
            },
            ApiKey {
                owner: KeyOwner::Product(ProductId::parse("dnp").unwrap()),
                hash: parse_hash(&hash_for_config("prod")).unwrap(),
                label: "1".into(),
                expires: None,
            },
        ])
    }

    fn day(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    fn tenant_of(o: Outcome) -> Option<String> {
        match o {
            Outcome::Accepted { tenant, .. } => Some(tenant.to_string()),
            _ => None,
        }
    }

    #[test]
    fn rotation_and_expiry() {
        let k = keys();
        let c = |key: &'static str| Credentials {
            api_key: Some(key.as_bytes()),
            ..Default::default()
        };
        assert_eq!(
            tenant_of(k.authenticate(&c("old"), day("2026-01-31"))),
            Some("a".into())
        );
        assert_eq!(
            tenant_of(k.authenticate(&c("old"), day("2026-02-01"))),
            None
        );
        assert_eq!(
            tenant_of(k.authenticate(&c("new"), day("2030-01-01"))),
            Some("a".into())
        );
        assert_eq!(
            tenant_of(k.authenticate(&c("bee"), day("2030-01-01"))),
            Some("b".into())
        );
        assert!(matches!(
            k.authenticate(&c("prod"), day("2030-01-01")),
            Outcome::AcceptedProduct { product, .. } if product.as_str() == "dnp"
        ));
        assert!(matches!(
            k.authenticate(&c("nope"), day("2030-01-01")),
            Outcome::Refused
        ));
        assert!(matches!(
            k.authenticate(&c(""), day("2030-01-01")),
            Outcome::Refused
        ));
        assert!(matches!(
            k.authenticate(&Credentials::default(), day("2030-01-01")),
            Outcome::NotPresent
        ));
    }

    #[test]
    fn hash_format() {
        let h = hash_for_config("secret");
        assert!(h.starts_with("sha256:") && h.len() == 71);
        assert!(parse_hash(&h).is_some());
        assert!(parse_hash("sha256:zz").is_none());
        assert!(parse_hash("md5:00").is_none());
    }
}
