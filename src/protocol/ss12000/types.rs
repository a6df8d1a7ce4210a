//! The five resource types of the push API and their paths.

use crate::domain::service::TypeSel;
use crate::domain::Kind;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Ss12Type {
    Organisations,
    Persons,
    Duties,
    Groups,
    Activities,
}

impl Ss12Type {
    pub const ALL: [Ss12Type; 5] = [
        Ss12Type::Organisations,
        Ss12Type::Persons,
        Ss12Type::Duties,
        Ss12Type::Groups,
        Ss12Type::Activities,
    ];

    /// The path segment (`persons`).
    pub fn path(self) -> &'static str {
        match self {
            Ss12Type::Organisations => "organisations",
            Ss12Type::Persons => "persons",
            Ss12Type::Duties => "duties",
            Ss12Type::Groups => "groups",
            Ss12Type::Activities => "activities",
        }
    }

    pub fn from_path(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.path() == s)
    }

    /// The SS12000 object type name (`Person`), as in LogEntry `resourceType`.
    pub fn object_type(self) -> &'static str {
        match self {
            Ss12Type::Organisations => "Organisation",
            Ss12Type::Persons => "Person",
            Ss12Type::Duties => "Duty",
            Ss12Type::Groups => "Group",
            Ss12Type::Activities => "Activity",
        }
    }

    pub fn kind(self) -> Kind {
        match self {
            Ss12Type::Organisations => Kind::OrgUnit,
            Ss12Type::Persons => Kind::Person,
            Ss12Type::Duties => Kind::Duty,
            Ss12Type::Groups => Kind::Group,
            Ss12Type::Activities => Kind::Activity,
        }
    }

    /// Organisations cover every org-unit type (EGIL's three endpoints included).
    pub fn sel(self) -> TypeSel {
        TypeSel::of(self.kind())
    }
}
