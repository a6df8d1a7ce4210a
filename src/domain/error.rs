//! The one domain error enum. Protocol adapters render it in their own wire format in one
//! function each; nothing in here carries storage or HTTP types, and no message carries
//! personal data (paths and rule names only, never values).

use std::borrow::Cow;
use std::fmt;

/// Stable identifiers of validation rules. They appear in error details and metrics, so
/// renaming one is a breaking change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RuleId {
    /// The body is not well-formed JSON (or not UTF-8, or nested too deeply).
    Syntax,
    /// A required attribute is missing.
    Required,
    /// An attribute has the wrong JSON type.
    Type,
    /// An identifier or reference value is not an RFC 4122 UUID.
    Uuid,
    /// A string does not match the pattern the schema requires.
    Pattern,
    /// A value is not in the allowed set.
    Enum,
    /// A string, number or array is outside its allowed size.
    Size,
    /// Any other JSON Schema keyword.
    Schema,
    /// A civic number is not 12 digits.
    CivicNoFormat,
    /// A civic number does not start with a valid date (samordningsnummer: day + 60).
    CivicNoDate,
    /// A civic number fails the Luhn checksum.
    CivicNoChecksum,
    /// A userName / EPPN is not of the form `local@domain`.
    EppnFormat,
    /// An EPPN's scope (domain) is not among the tenant's allowed scopes.
    EppnScope,
    /// The id in the URL and the id in the body differ.
    IdMismatch,
    /// No id could be found for the resource.
    MissingId,
    /// A query parameter (filter, paging) is not understood.
    Query,
}

impl RuleId {
    /// The stable name of the rule.
    pub fn as_str(self) -> &'static str {
        match self {
            RuleId::Syntax => "syntax",
            RuleId::Required => "required",
            RuleId::Type => "type",
            RuleId::Uuid => "uuid",
            RuleId::Pattern => "pattern",
            RuleId::Enum => "enum",
            RuleId::Size => "size",
            RuleId::Schema => "schema",
            RuleId::CivicNoFormat => "civic_no_format",
            RuleId::CivicNoDate => "civic_no_date",
            RuleId::CivicNoChecksum => "civic_no_checksum",
            RuleId::EppnFormat => "eppn_format",
            RuleId::EppnScope => "eppn_scope",
            RuleId::IdMismatch => "id_mismatch",
            RuleId::MissingId => "missing_id",
            RuleId::Query => "query",
        }
    }
}

impl fmt::Display for RuleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One refused attribute: where (`path`), which rule, and a short human explanation that
/// never repeats the offending value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Attribute path. Domain rules use canonical paths (`person.civic_no`); protocol
    /// adapters translate them to their wire paths before rendering.
    pub path: String,
    pub rule: RuleId,
    pub detail: Cow<'static, str>,
    /// Further violations found in the same input, reported together.
    pub also: Vec<Violation>,
}

impl Violation {
    pub fn new(
        path: impl Into<String>,
        rule: RuleId,
        detail: impl Into<Cow<'static, str>>,
    ) -> Self {
        Self {
            path: path.into(),
            rule,
            detail: detail.into(),
            also: Vec::new(),
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{} (rule {})", self.detail, self.rule)?;
        } else {
            write!(f, "{}: {} (rule {})", self.path, self.detail, self.rule)?;
        }
        for (i, v) in self.also.iter().enumerate() {
            f.write_str(if i == 0 { "; also: " } else { "; " })?;
            v.fmt(f)?;
        }
        Ok(())
    }
}

/// Why a write conflicts with what is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConflictKind {
    /// A create for an id that already exists.
    AlreadyExists,
    /// The id exists as another resource type.
    OtherType,
    /// A unique value (an EPPN) is held by another person, in this or another tenant.
    /// `path` is the canonical attribute path of the value.
    Unique { path: String },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    /// The input breaks a rule; nothing was changed.
    #[error("invalid input: {0}")]
    Invalid(Violation),
    /// The body was refused before parsing because it is too large.
    #[error("payload too large (limit {limit} bytes)")]
    PayloadTooLarge { limit: usize },
    /// The body's media type is not one the protocol accepts.
    #[error("unsupported media type")]
    UnsupportedMediaType,
    #[error("conflict: {0:?}")]
    Conflict(ConflictKind),
    #[error("not found")]
    NotFound,
    /// No or unknown credentials.
    #[error("unauthorized")]
    Unauthorized,
    /// Authenticated, but not allowed here.
    #[error("forbidden")]
    Forbidden,
    #[error("rate limited, retry after {retry_after_secs} s")]
    RateLimited { retry_after_secs: u64 },
    #[error("suspended: {reason}")]
    Suspended {
        reason: String,
        retry_after_secs: u64,
    },
    /// A dependency (the store) is temporarily unavailable.
    #[error("service unavailable")]
    Unavailable,
    /// A bug or an unexpected failure; details are in the log, never in the answer.
    #[error("internal error")]
    Internal,
}

impl DomainError {
    pub fn invalid(
        path: impl Into<String>,
        rule: RuleId,
        detail: impl Into<Cow<'static, str>>,
    ) -> Self {
        DomainError::Invalid(Violation::new(path, rule, detail))
    }

    /// The same error with its attribute path rewritten (canonical → wire path).
    pub fn map_path(self, f: impl Fn(&str) -> String) -> Self {
        match self {
            DomainError::Invalid(mut v) => {
                v.path = f(&v.path);
                for a in &mut v.also {
                    a.path = f(&a.path);
                }
                DomainError::Invalid(v)
            }
            DomainError::Conflict(ConflictKind::Unique { path }) => {
                DomainError::Conflict(ConflictKind::Unique { path: f(&path) })
            }
            other => other,
        }
    }
}
