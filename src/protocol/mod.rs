//! Protocol adapters. Each translates one wire format into the canonical model and
//! renders results and errors back in that format. Adapters know the domain, never the
//! store or each other.

pub mod egil;
pub mod login;
pub mod ss12000;
