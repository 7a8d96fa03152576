//! HTTP listeners.

pub mod admin;
pub mod api;
