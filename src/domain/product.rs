//! Products: the supplier's own services that call the login API (a test platform, a
//! learning-material portal). They are configured apart from school owners and see the
//! login view of every school owner's data, never the provisioning API.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::tenant::TenantId;

/// A stable product id, with the same character set as a tenant id (but its own
/// namespace: a product and a tenant may share a name without meaning each other).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ProductId(String);

impl ProductId {
    pub fn parse(s: &str) -> Result<Self, String> {
        if TenantId::is_valid(s) {
            Ok(Self(s.to_owned()))
        } else {
            Err("a product id is 1-64 characters of a-z, 0-9 and '-'".to_owned())
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ProductId {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        ProductId::parse(&s)
    }
}

impl From<ProductId> for String {
    fn from(p: ProductId) -> String {
        p.0
    }
}

impl fmt::Display for ProductId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Product {
    pub id: ProductId,
    pub name: String,
}
