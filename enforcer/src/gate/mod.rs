//! The API gate: one docker API socket per rule; every request of a restricted identity is
//! judged by its rule before it reaches dockerd.

pub mod judge;
pub mod route;
