//! The RADIUS request path short of the database: framing and attribute lengths,
//! Message-Authenticator verification, the `radius` crate's decoding and PAP
//! User-Password decryption, and the signed response. No input may panic, and every
//! accepted frame must produce a well-formed 38-octet response.
#![no_main]

use libfuzzer_sys::fuzz_target;

/// The server's own source file, compiled here (see Cargo.toml).
#[path = "../../server/src/radius/packet.rs"]
#[allow(dead_code)]
mod packet;

use packet::MAX_PACKET_LEN;

const SECRET: &[u8] = b"a-long-shared-secret";

fuzz_target!(|data: &[u8]| {
    if data.len() > MAX_PACKET_LEN + 1 {
        return;
    }
    if let Ok(packet::Processed { frame, pap, reply }) = packet::process_request(data, SECRET) {
        assert!(frame.len <= data.len() && frame.len >= packet::HEADER_LEN);
        assert_eq!(reply.len(), packet::HEADER_LEN + 18);
        assert_eq!(reply[1], frame.identifier);
        if let Some((user, password)) = pap {
            assert!(user.len() <= 253 && password.len() <= 128);
        }
    }
});
