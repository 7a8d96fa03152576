//! End-to-end tests: the real `tessera-server` and `tessera-token` binaries over real UDP and
//! HTTP sockets on 127.0.0.1 ephemeral ports, each test with its own SQLite file.
//!
//! Run through `scripts/test`, which builds the binaries first.

mod concurrency;
mod flow;
mod helpers;
mod malformed;
mod message_authenticator;
mod radius_client;
mod token_api;
