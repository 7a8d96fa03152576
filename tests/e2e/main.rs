//! End-to-end tests: the real `tessera-server` and `tessera-token` binaries over real UDP and
//! HTTP sockets on 127.0.0.1 ephemeral ports, each test with its own SQLite file.
//!
//! Run through `scripts/test`, which builds the binaries first.

mod bench_issue;
mod bench_seed;
mod check;
mod concurrency;
mod console_browser;
mod console_enroll;
mod console_http;
mod console_support;
mod flow;
mod helpers;
mod malformed;
mod message_authenticator;
mod multinode;
mod pam;
mod pg_proxy;
mod pyrad;
mod radius_client;
mod raw_token;
mod resilience;
mod resilience_pg;
mod sshd;
mod throttle;
mod token_api;
