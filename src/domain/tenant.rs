//! Tenants: the school owners (huvudmän) whose data Skolgrind keeps apart.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A stable tenant id: 1–64 characters of `[a-z0-9-]`. It is a storage key prefix, so the
/// character set is what keeps every tenant's data a contiguous, unambiguous range.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TenantId(String);

impl TenantId {
    pub fn parse(s: &str) -> Result<Self, String> {
        if Self::is_valid(s) {
            Ok(Self(s.to_owned()))
        } else {
            Err("a tenant id is 1-64 characters of a-z, 0-9 and '-'".to_owned())
        }
    }

    pub fn is_valid(s: &str) -> bool {
        !s.is_empty()
            && s.len() <= 64
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for TenantId {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        TenantId::parse(&s)
    }
}

impl From<TenantId> for String {
    fn from(t: TenantId) -> String {
        t.0
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What to do with a civic number that fails the date or checksum test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CivicNoPolicy {
    /// Refuse the object (400).
    Strict,
    /// Store it and flag the object (the default: real registers hold odd numbers).
    #[default]
    Warn,
    /// Do not check beyond the 12-digit format.
    Off,
}

/// Which SS12000:2020 push validation rules apply to a tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Ss12000Profile {
    /// The SIS SS12000:2020 attribute set and enums; dangling references are warnings.
    #[default]
    Generic,
    /// Skolverket's DNP rules (one EPPN and a civic number per person, school types GR,
    /// SP, SAM, GY, VUXGY, Klass/Undervisning groups, Undervisning activities with a
    /// national-test parent activity, …).
    Dnp,
}

/// A school owner as the domain sees it (credentials live in `auth`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenant {
    pub id: TenantId,
    pub name: String,
    pub organisation_number: Option<String>,
    /// Allowed EPPN scopes (domains, lower case). Empty means "any scope".
    pub eppn_scopes: Vec<String>,
    pub civic_no_policy: CivicNoPolicy,
    /// Validation profile for SS12000:2020 pushes.
    pub ss12000_profile: Ss12000Profile,
}

impl Tenant {
    /// Whether an EPPN scope (already normalised) is allowed for this tenant. A configured
    /// scope also covers its sub-domains (`kommunen.se` allows `skola.kommunen.se`).
    pub fn allows_scope(&self, scope: &str) -> bool {
        self.eppn_scopes.is_empty()
            || self.eppn_scopes.iter().any(|s| {
                scope == s
                    || (scope.len() > s.len()
                        && scope.ends_with(s.as_str())
                        && scope.as_bytes()[scope.len() - s.len() - 1] == b'.')
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_ids() {
        assert!(TenantId::parse("kommunen-1").is_ok());
        for bad in ["", "Kommunen", "a/b", "a b", "å", &"x".repeat(65)] {
            assert!(TenantId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn scopes_cover_subdomains_only_at_label_boundaries() {
        let t = Tenant {
            id: TenantId::parse("t").unwrap(),
            name: "T".into(),
            organisation_number: None,
            eppn_scopes: vec!["kommunen.se".into()],
            civic_no_policy: CivicNoPolicy::Warn,
            ss12000_profile: Ss12000Profile::Generic,
        };
        assert!(t.allows_scope("kommunen.se"));
        assert!(t.allows_scope("skola.kommunen.se"));
        assert!(!t.allows_scope("annankommunen.se"));
        assert!(!t.allows_scope("kommunen.se.evil"));
    }
}
