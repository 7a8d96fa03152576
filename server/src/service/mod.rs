//! Use-cases. The token API, RADIUS and the CLI are thin adapters over these functions, so
//! lockout, replay protection and audit happen in exactly one place.

pub mod admin;
pub mod admins;
pub mod console;
pub mod enroll;
pub mod issue;
pub mod limiter;
pub mod register;
pub mod throttle;
pub mod token;
pub mod verify;
