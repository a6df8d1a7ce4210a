//! The seven EGIL resource types.

use crate::domain::service::TypeSel;
use crate::domain::{Kind, OrgType};

pub const CORE_USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
pub const USER_EXTENSION: &str = "urn:scim:schemas:extension:sis:school:1.0:User";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EgilType {
    Organisations,
    SchoolUnitGroups,
    SchoolUnits,
    Users,
    Employments,
    StudentGroups,
    Activities,
}

impl EgilType {
    pub const ALL: [EgilType; 7] = [
        EgilType::Organisations,
        EgilType::SchoolUnitGroups,
        EgilType::SchoolUnits,
        EgilType::Users,
        EgilType::Employments,
        EgilType::StudentGroups,
        EgilType::Activities,
    ];

    /// Parses an endpoint name (`Users`), exactly as the EGIL client sends it.
    pub fn from_endpoint(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.endpoint() == s)
    }

    pub fn endpoint(self) -> &'static str {
        match self {
            EgilType::Organisations => "Organisations",
            EgilType::SchoolUnitGroups => "SchoolUnitGroups",
            EgilType::SchoolUnits => "SchoolUnits",
            EgilType::Users => "Users",
            EgilType::Employments => "Employments",
            EgilType::StudentGroups => "StudentGroups",
            EgilType::Activities => "Activities",
        }
    }

    /// The SCIM resource type name (`meta.resourceType`).
    pub fn resource_type(self) -> &'static str {
        match self {
            EgilType::Organisations => "Organisation",
            EgilType::SchoolUnitGroups => "SchoolUnitGroup",
            EgilType::SchoolUnits => "SchoolUnit",
            EgilType::Users => "User",
            EgilType::Employments => "Employment",
            EgilType::StudentGroups => "StudentGroup",
            EgilType::Activities => "Activity",
        }
    }

    /// The main schema URN of the type.
    pub fn schema_urn(self) -> &'static str {
        match self {
            EgilType::Organisations => "urn:scim:schemas:extension:sis:school:1.0:Organisation",
            EgilType::SchoolUnitGroups => {
                "urn:scim:schemas:extension:sis:school:1.0:SchoolUnitGroup"
            }
            EgilType::SchoolUnits => "urn:scim:schemas:extension:sis:school:1.0:SchoolUnit",
            EgilType::Users => CORE_USER_SCHEMA,
            EgilType::Employments => "urn:scim:schemas:extension:sis:school:1.0:Employment",
            EgilType::StudentGroups => "urn:scim:schemas:extension:sis:school:1.0:StudentGroup",
            EgilType::Activities => "urn:scim:schemas:extension:sis:school:1.0:Activity",
        }
    }

    /// The `schemas` value of a resource of this type.
    pub fn schemas(self) -> Vec<&'static str> {
        match self {
            EgilType::Users => vec![CORE_USER_SCHEMA, USER_EXTENSION],
            t => vec![t.schema_urn()],
        }
    }

    /// Which canonical objects this endpoint reads and writes.
    pub fn sel(self) -> TypeSel {
        match self {
            EgilType::Organisations => TypeSel::org(OrgType::Huvudman),
            EgilType::SchoolUnitGroups => TypeSel::org(OrgType::SchoolUnitGroup),
            EgilType::SchoolUnits => TypeSel::org(OrgType::SchoolUnit),
            EgilType::Users => TypeSel::of(Kind::Person),
            EgilType::Employments => TypeSel::of(Kind::Duty),
            EgilType::StudentGroups => TypeSel::of(Kind::Group),
            EgilType::Activities => TypeSel::of(Kind::Activity),
        }
    }
}
