//! Value rules that hold whatever protocol delivered the value: identifiers, civic
//! numbers and EPPNs. Each returns the rule it broke; callers attach the attribute path.

use chrono::NaiveDate;

use super::error::RuleId;

/// Parses an RFC 4122 UUID in the 8-4-4-4-12 hyphenated form (either case) and returns it
/// in lower case, the form ids are stored and compared in.
pub fn normalise_uuid(s: &str) -> Result<String, RuleId> {
    let b = s.as_bytes();
    if b.len() != 36 {
        return Err(RuleId::Uuid);
    }
    for (i, c) in b.iter().enumerate() {
        let ok = match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        };
        if !ok {
            return Err(RuleId::Uuid);
        }
    }
    Ok(s.to_ascii_lowercase())
}

/// The result of checking a Swedish civic number (personnummer, samordningsnummer or a
/// pupil register's temporary number).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CivicNoCheck {
    Valid,
    /// A temporary number `YYYYMMDDTFnn` with a real date: a school's pupil register
    /// issues it when a pupil has neither a personnummer nor a samordningsnummer. It has
    /// no check digit.
    Temporary,
    /// Format is right (12 digits) but the date or the checksum is not.
    Suspect(RuleId),
}

/// Checks a civic number: 12 digits `YYYYMMDDNNNC` with a real date (samordningsnummer:
/// day plus 60) and the Luhn checksum over the last ten digits, or a temporary number
/// `YYYYMMDDTFnn` (upper-case `TF`, two digits) with a real date. A wrong format is an
/// error; a bad date or checksum is returned as [`CivicNoCheck::Suspect`] so the tenant's
/// policy can decide. (Which protocols may carry temporary numbers is their schemas'
/// business: EGIL's allows 12 digits only.)
pub fn check_civic_no(s: &str) -> Result<CivicNoCheck, RuleId> {
    let b = s.as_bytes();
    let temporary = b.len() == 12
        && b[..8].iter().all(u8::is_ascii_digit)
        && &b[8..10] == b"TF"
        && b[10..].iter().all(u8::is_ascii_digit);
    if !temporary && (b.len() != 12 || !b.iter().all(u8::is_ascii_digit)) {
        return Err(RuleId::CivicNoFormat);
    }
    let num = |from: usize, to: usize| -> u32 {
        b[from..to]
            .iter()
            .fold(0u32, |acc, d| acc * 10 + u32::from(d - b'0'))
    };
    let (year, month, mut day) = (num(0, 4) as i32, num(4, 6), num(6, 8));
    if day > 60 && !temporary {
        day -= 60;
    }
    if NaiveDate::from_ymd_opt(year, month, day).is_none() {
        return Ok(CivicNoCheck::Suspect(RuleId::CivicNoDate));
    }
    if temporary {
        return Ok(CivicNoCheck::Temporary);
    }
    if !luhn_ok(&b[2..]) {
        return Ok(CivicNoCheck::Suspect(RuleId::CivicNoChecksum));
    }
    Ok(CivicNoCheck::Valid)
}

fn luhn_ok(digits: &[u8]) -> bool {
    let sum: u32 = digits
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let v = u32::from(d - b'0') * if i % 2 == 0 { 2 } else { 1 };
            v / 10 + v % 10
        })
        .sum();
    sum.is_multiple_of(10)
}

/// Normalises an eduPersonPrincipalName (`local@scope`): trimmed, lower case (EPPN
/// equality is caseIgnoreMatch), exactly one `@`, a non-empty local part without spaces
/// or control characters, and a DNS-style scope with at least two labels.
pub fn normalise_eppn(s: &str) -> Result<String, RuleId> {
    let t = s.trim().to_lowercase();
    if t.is_empty() || t.len() > 254 {
        return Err(RuleId::EppnFormat);
    }
    let mut parts = t.split('@');
    let (Some(local), Some(scope), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err(RuleId::EppnFormat);
    };
    if local.is_empty() || local.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(RuleId::EppnFormat);
    }
    if !is_dns_name(scope) {
        return Err(RuleId::EppnFormat);
    }
    Ok(t)
}

/// The scope (domain) of an already normalised EPPN.
pub fn eppn_scope(eppn: &str) -> &str {
    eppn.rsplit('@').next().unwrap_or("")
}

fn is_dns_name(s: &str) -> bool {
    let labels: Vec<&str> = s.split('.').collect();
    labels.len() >= 2
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Computes the Luhn check digit for nine digits.
    fn check_digit(nine: &[u8]) -> u8 {
        for c in 0..10u8 {
            let mut v = nine.to_vec();
            v.push(b'0' + c);
            if luhn_ok(&v) {
                return b'0' + c;
            }
        }
        unreachable!()
    }

    #[test]
    fn temporary_civic_numbers() {
        // The DNP spec's examples: a woman (even) and a man (odd).
        for t in ["20090127TF20", "20090127TF12", "20130101TF01"] {
            assert_eq!(check_civic_no(t), Ok(CivicNoCheck::Temporary), "{t}");
        }
        // A bad date is suspect as for any number; no day + 60 for temporary numbers.
        assert_eq!(
            check_civic_no("20091327TF20"),
            Ok(CivicNoCheck::Suspect(RuleId::CivicNoDate))
        );
        assert_eq!(
            check_civic_no("20090187TF20"),
            Ok(CivicNoCheck::Suspect(RuleId::CivicNoDate))
        );
        // Anything else around the letters is a format error.
        for bad in [
            "20090127tf20",
            "20090127TX20",
            "20090127TF2",
            "20090127TF2A",
            "2009012TF201",
            "20090127TF201",
            "TF0901272012",
        ] {
            assert_eq!(check_civic_no(bad), Err(RuleId::CivicNoFormat), "{bad}");
        }
    }

    #[test]
    fn known_civic_numbers() {
        // From the EGIL wire fixtures.
        for ok in [
            "200406042903",
            "197506014427",
            "201007032038",
            "197508236556",
        ] {
            assert_eq!(check_civic_no(ok), Ok(CivicNoCheck::Valid), "{ok}");
        }
        assert_eq!(
            check_civic_no("200406042904"),
            Ok(CivicNoCheck::Suspect(RuleId::CivicNoChecksum))
        );
        assert_eq!(
            check_civic_no("200413042903"),
            Ok(CivicNoCheck::Suspect(RuleId::CivicNoDate))
        );
        assert_eq!(check_civic_no("20040230290"), Err(RuleId::CivicNoFormat));
        assert_eq!(check_civic_no("2004060429031"), Err(RuleId::CivicNoFormat));
        assert_eq!(check_civic_no("20040604-2903"), Err(RuleId::CivicNoFormat));
        assert_eq!(
            check_civic_no("２００４０６０４２９０３"),
            Err(RuleId::CivicNoFormat)
        );
    }

    #[test]
    fn samordningsnummer_day_plus_sixty() {
        let mut base = b"200406640290".to_vec(); // 4 June + 60
        base.truncate(11);
        let d = check_digit(&base[2..11]);
        base.push(d);
        let s = String::from_utf8(base).unwrap();
        assert_eq!(check_civic_no(&s), Ok(CivicNoCheck::Valid), "{s}");
    }

    #[test]
    fn leap_days() {
        assert_ne!(check_civic_no("20000229000"), Ok(CivicNoCheck::Valid));
        let mk = |date: &str| {
            let mut v = format!("{date}123").into_bytes();
            let d = check_digit(&v[2..11]);
            v.push(d);
            String::from_utf8(v).unwrap()
        };
        assert_eq!(check_civic_no(&mk("20000229")), Ok(CivicNoCheck::Valid));
        assert_eq!(
            check_civic_no(&mk("19000229")),
            Ok(CivicNoCheck::Suspect(RuleId::CivicNoDate))
        );
    }

    #[test]
    fn eppn_examples() {
        assert_eq!(
            normalise_eppn(" StJo@Skola.Kommunen.SE ").unwrap(),
            "stjo@skola.kommunen.se"
        );
        for bad in [
            "",
            "nodomain",
            "@kommunen.se",
            "a@b@kommunen.se",
            "a b@kommunen.se",
            "a@kommunen",
            "a@-x.se",
            "a@x..se",
            "a@x_y.se",
        ] {
            assert_eq!(normalise_eppn(bad), Err(RuleId::EppnFormat), "{bad:?}");
        }
        assert_eq!(eppn_scope("a@skola.kommunen.se"), "skola.kommunen.se");
    }

    #[test]
    fn uuid_examples() {
        assert_eq!(
            normalise_uuid("39732DEA-E4A6-4D8F-96DE-925A679C56FF").unwrap(),
            "39732dea-e4a6-4d8f-96de-925a679c56ff"
        );
        for bad in [
            "",
            "39732dea",
            "{39732dea-e4a6-4d8f-96de-925a679c56ff}",
            "39732deae4a64d8f96de925a679c56ff",
            "39732dea-e4a6-4d8f-96de-925a679c56fg",
            "39732dea_e4a6-4d8f-96de-925a679c56ff",
        ] {
            assert_eq!(normalise_uuid(bad), Err(RuleId::Uuid), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn any_uuid_round_trips(bytes in any::<[u8; 16]>(), upper in any::<bool>()) {
            let u = uuid::Uuid::from_bytes(bytes).hyphenated().to_string();
            let input = if upper { u.to_uppercase() } else { u.clone() };
            prop_assert_eq!(normalise_uuid(&input).unwrap(), u);
        }

        #[test]
        fn non_uuid_strings_are_refused(s in "\\PC{0,40}") {
            prop_assume!(uuid::Uuid::try_parse(&s).map(|u| u.hyphenated().to_string() != s.to_lowercase()).unwrap_or(true));
            prop_assert!(normalise_uuid(&s).is_err());
        }

        #[test]
        fn valid_civic_numbers_pass_and_any_single_digit_change_fails(
            date in (1900i32..2030, 1u32..=12, 1u32..=28),
            serial in 0u32..1000,
            samordning in any::<bool>(),
            pos in 2usize..12,
            delta in 1u8..10,
        ) {
            let (y, m, d) = date;
            let day = if samordning { d + 60 } else { d };
            let mut v = format!("{y:04}{m:02}{day:02}{serial:03}").into_bytes();
            let c = check_digit(&v[2..11]);
            v.push(c);
            let s = String::from_utf8(v.clone()).unwrap();
            prop_assert_eq!(check_civic_no(&s), Ok(CivicNoCheck::Valid));
            // Luhn detects every single-digit error.
            v[pos] = b'0' + (v[pos] - b'0' + delta) % 10;
            let changed = String::from_utf8(v).unwrap();
            prop_assert_ne!(check_civic_no(&changed), Ok(CivicNoCheck::Valid));
        }

        #[test]
        fn civic_no_never_panics(s in "\\PC{0,20}") {
            let _ = check_civic_no(&s);
        }

        #[test]
        fn eppn_normalisation_is_idempotent_and_case_insensitive(
            local in "[A-Za-z0-9._+-]{1,20}",
            labels in proptest::collection::vec("[A-Za-z0-9]{1,10}", 2..4),
        ) {
            let e = format!("{local}@{}", labels.join("."));
            let n = normalise_eppn(&e).unwrap();
            prop_assert_eq!(normalise_eppn(&n).unwrap(), n.clone());
            prop_assert_eq!(normalise_eppn(&e.to_uppercase()).unwrap(), n.clone());
            prop_assert_eq!(n.matches('@').count(), 1);
        }

        #[test]
        fn eppn_never_panics_and_output_is_lowercase(s in "\\PC{0,60}") {
            if let Ok(n) = normalise_eppn(&s) {
                prop_assert_eq!(n.to_lowercase(), n.clone());
                prop_assert_eq!(n.matches('@').count(), 1);
            }
        }
    }
}
