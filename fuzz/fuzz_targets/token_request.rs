//! The token API's request decoding: the JSON `SealedBody` and
//! `tessera_protocol::request::open_signed` with a fixed domain key. The first input byte
//! picks the layer: 0 feeds the bytes as the HTTP body (as a network peer can); otherwise
//! the rest is sealed to the key first, as a token would, so the fuzzer reaches what lies
//! behind the HPKE envelope: the `SignedRequest` JSON, the request bodies and the device
//! key's DER decoding and signature check.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use tessera_protocol::DomainCode;
use tessera_protocol::device::DevicePublicKey;
use tessera_protocol::envelope::{Purpose, Sealer, ServerKeyPair, info};
use tessera_protocol::request::open_signed;
use tessera_protocol::wire::{PasscodeBody, RegisterBody, SealedBody, b64, unb64};

static KEYS: LazyLock<ServerKeyPair> = LazyLock::new(ServerKeyPair::generate);
static DOMAIN: LazyLock<DomainCode> = LazyLock::new(|| DomainCode::parse("127000000001").unwrap());

fn open(sealed: &SealedBody) {
    let _ = DomainCode::parse(&sealed.domain);
    for purpose in [Purpose::Register, Purpose::Passcode] {
        let Ok(opened) = open_signed(purpose, *DOMAIN, &KEYS, sealed) else { continue };
        if let Ok(body) = serde_json::from_str::<RegisterBody>(&opened.body)
            && let Ok(der) = unb64(&body.device_public_key)
            && let Ok(key) = DevicePublicKey::from_der(&der)
        {
            let _ = opened.verify(&key);
        }
        let _ = serde_json::from_str::<PasscodeBody>(&opened.body);
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    if mode == 0 {
        if let Ok(sealed) = serde_json::from_slice::<SealedBody>(rest) {
            open(&sealed);
        }
        return;
    }
    let purpose = if mode & 1 == 1 { Purpose::Register } else { Purpose::Passcode };
    let Ok(sealer) = Sealer::new(&KEYS.public_bytes(), &info(purpose, *DOMAIN)) else { return };
    let Ok((request, _)) = sealer.seal(rest) else { return };
    let sealed =
        SealedBody { domain: DOMAIN.to_string(), enc: b64(&request.enc), ciphertext: b64(&request.ciphertext) };
    open(&sealed);
});
