//! The contracts shared by the compiler, the control plane, the node agent
//! and the hook server: kick.toml's type, the API's wire types, the
//! artifact bucket's keys and the OpenAPI document. No I/O.

pub mod assignment;
pub mod description;
pub mod envfile;
pub mod integral;
pub mod keys;
pub mod kick;
pub mod manifest;
pub mod names;
pub mod openapi;
pub mod quantity;
pub mod registry;
pub mod release;
pub mod run;
pub mod secrets;
