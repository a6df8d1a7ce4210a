//! The SCIM `filter` expressions Skolgrind supports: `externalId eq "…"`, `id eq "…"` and
//! (on Users) `userName eq "…"`. Anything else is refused with `invalidFilter`.

use crate::domain::{DomainError, RuleId};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Filter {
    /// `id` or `externalId` (the same value in this profile).
    Id(String),
    UserName(String),
}

fn refuse(detail: &'static str) -> DomainError {
    DomainError::invalid("filter", RuleId::Query, detail)
}

pub fn parse(input: &str, users: bool) -> Result<Filter, DomainError> {
    const SUPPORTED: &str =
        "supported filters: externalId eq \"…\", id eq \"…\", userName eq \"…\" (Users)";
    let s = input.trim();
    let (attr, rest) = s
        .split_once(char::is_whitespace)
        .ok_or_else(|| refuse(SUPPORTED))?;
    let rest = rest.trim_start();
    let (op, value) = rest
        .split_once(char::is_whitespace)
        .ok_or_else(|| refuse(SUPPORTED))?;
    if !op.eq_ignore_ascii_case("eq") {
        return Err(refuse(SUPPORTED));
    }
    let value = value.trim();
    if !(value.len() >= 2 && value.starts_with('"') && value.ends_with('"')) {
        return Err(refuse("the filter value must be a quoted string"));
    }
    let value: String = serde_json::from_str(value)
        .map_err(|_| refuse("the filter value must be a quoted string"))?;
    match attr.to_ascii_lowercase().as_str() {
        "externalid" | "id" => Ok(Filter::Id(value)),
        "username" if users => Ok(Filter::UserName(value)),
        _ => Err(refuse(SUPPORTED)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn supported_forms() {
        assert_eq!(
            parse("externalId eq \"abc\"", false).unwrap(),
            Filter::Id("abc".into())
        );
        assert_eq!(
            parse(" ExternalID  EQ  \"a\\\"b\" ", false).unwrap(),
            Filter::Id("a\"b".into())
        );
        assert_eq!(
            parse("userName eq \"x@y.se\"", true).unwrap(),
            Filter::UserName("x@y.se".into())
        );
    }

    #[test]
    fn refused_forms() {
        for bad in [
            "",
            "userName",
            "userName eq",
            "displayName eq \"x\"",
            "id ne \"x\"",
            "id eq x",
            "id eq \"x\" and id eq \"y\"",
            "id eq \"x",
        ] {
            assert!(parse(bad, true).is_err(), "{bad}");
        }
        // userName is only a filter on Users.
        assert!(parse("userName eq \"x\"", false).is_err());
    }
}
