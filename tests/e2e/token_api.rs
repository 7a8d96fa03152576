//! The token API under hostile input: garbage JSON, tampered HPKE ciphertexts, forged
//! signatures, replays and stale requests are refused and change nothing.

use tessera_protocol::device::DeviceKey;
use tessera_protocol::envelope::Purpose;
use tessera_protocol::request::open_reply;
use tessera_protocol::wire::{ErrorKind, Passcode, RegisterBody, Registered, Reply, SealedBody, b64, unb64};

use crate::helpers::{DOMAIN, Fixture, PIN, SECRET};
use crate::radius_client::{Answer, Client, Ma};
use crate::raw_token::{RawToken, nonce, now};

fn registered_raw_token() -> (Fixture, RawToken) {
    let f = Fixture::new(&[]);
    let raw = RawToken::new(&f.server);
    let rc = raw.register();
    f.server.validate(&rc, "rawuser");
    (f, raw)
}

fn error_kind(reply: &Reply<Passcode>) -> ErrorKind {
    match reply {
        Reply::Error(e) => e.kind,
        Reply::Ok(_) => panic!("expected a refusal"),
    }
}

#[test]
fn a_protocol_level_token_gets_a_passcode_that_radius_accepts() {
    let (f, raw) = registered_raw_token();
    let (sealed, key) = raw.seal(Purpose::Passcode, &raw.passcode_body(PIN, now()));
    let (status, reply) = raw.send(&sealed, &key);
    let Reply::Ok(p) = reply else { panic!("refused: {reply:?}") };
    assert_eq!(status, 200);
    assert_eq!(Client::new(f.server.radius, SECRET).auth("rawuser", &p.passcode, Ma::Valid), Answer::Accept);
}

#[test]
fn garbage_json_and_unknown_domains_are_refused_in_clear() {
    let (f, raw) = registered_raw_token();
    for path in ["/v1/passcode", "/v1/register"] {
        for body in ["", "{", "[]", "null", "{\"domain\":1}", "\u{0}\u{1}binary"] {
            let (status, text) = raw.post(path, body);
            assert_eq!(status, 400, "{path} {body:?}: {text}");
            assert!(text.contains("\"error\""), "{text}");
        }
    }
    let (sealed, _) = raw.seal(Purpose::Passcode, &raw.passcode_body(PIN, now()));
    let other = SealedBody { domain: "010000000001".into(), ..sealed };
    assert_eq!(raw.post("/v1/passcode", &serde_json::to_string(&other).unwrap()).0, 404);
    assert!(f.server.cli_ok(&["user", "list", "--domain", DOMAIN]).contains("0 wrong PIN"));
}

#[test]
fn tampered_hpke_ciphertexts_are_refused_and_count_nothing() {
    let (f, raw) = registered_raw_token();
    let (sealed, _) = raw.seal(Purpose::Passcode, &raw.passcode_body("000000", now()));
    let mut ct = unb64(&sealed.ciphertext).unwrap();
    ct[10] ^= 0x40;
    let tampered = SealedBody { ciphertext: b64(&ct), ..sealed.clone() };
    assert_eq!(raw.post("/v1/passcode", &serde_json::to_string(&tampered).unwrap()).0, 400);
    let mut enc = unb64(&sealed.enc).unwrap();
    enc[0] ^= 1;
    let tampered = SealedBody { enc: b64(&enc), ..sealed.clone() };
    assert_eq!(raw.post("/v1/passcode", &serde_json::to_string(&tampered).unwrap()).0, 400);
    let not_b64 = SealedBody { ciphertext: "!!!".into(), ..sealed.clone() };
    assert_eq!(raw.post("/v1/passcode", &serde_json::to_string(&not_b64).unwrap()).0, 400);
    // A passcode request sealed for registration is not accepted as one.
    let (as_register, _) = raw.seal(Purpose::Register, &raw.passcode_body(PIN, now()));
    assert_eq!(raw.post("/v1/passcode", &serde_json::to_string(&as_register).unwrap()).0, 400);
    let listing = f.server.cli_ok(&["user", "list", "--domain", DOMAIN]);
    assert!(listing.contains("rawuser  enabled") && listing.contains("0 wrong PIN"), "{listing}");
}

#[test]
fn a_forged_signature_is_refused_without_touching_the_pin_count() {
    let (f, raw) = registered_raw_token();
    // Same device id, but signed by another key.
    let forger = RawToken { key: DeviceKey::generate(), ..RawToken::new(&f.server) };
    let body = raw.passcode_body("000000", now());
    let (sealed, key) = forger.seal(Purpose::Passcode, &body);
    let (status, reply) = forger.send(&sealed, &key);
    assert_eq!((status, error_kind(&reply)), (400, ErrorKind::BadRequest));
    let listing = f.server.cli_ok(&["user", "list", "--domain", DOMAIN]);
    assert!(listing.contains("0 wrong PIN"), "{listing}");
}

#[test]
fn a_replayed_request_is_refused_and_a_stale_one_too() {
    let (f, raw) = registered_raw_token();
    let (sealed, key) = raw.seal(Purpose::Passcode, &raw.passcode_body(PIN, now()));
    let (status, reply) = raw.send(&sealed, &key);
    assert_eq!(status, 200);
    let Reply::Ok(first) = reply else { panic!("refused") };
    let (status, reply) = raw.send(&sealed, &key);
    assert_eq!((status, error_kind(&reply)), (409, ErrorKind::Replay));

    let (stale, key) = raw.seal(Purpose::Passcode, &raw.passcode_body(PIN, now() - 3600));
    let (status, reply) = raw.send(&stale, &key);
    assert_eq!((status, error_kind(&reply)), (400, ErrorKind::ClockSkew));

    // The one passcode that was issued still works: the refusals changed nothing.
    assert_eq!(Client::new(f.server.radius, SECRET).auth("rawuser", &first.passcode, Ma::Valid), Answer::Accept);
}

#[test]
fn a_replayed_wrong_pin_is_refused_as_a_replay_and_takes_no_second_attempt() {
    let (f, raw) = registered_raw_token();
    let (sealed, key) = raw.seal(Purpose::Passcode, &raw.passcode_body("000000", now()));
    let (status, reply) = raw.send(&sealed, &key);
    assert_eq!((status, error_kind(&reply)), (403, ErrorKind::WrongPin));
    for _ in 0..2 {
        let (status, reply) = raw.send(&sealed, &key);
        assert_eq!((status, error_kind(&reply)), (409, ErrorKind::Replay));
    }
    let listing = f.server.cli_ok(&["user", "list", "--domain", DOMAIN]);
    let rawuser = listing.lines().find(|l| l.starts_with("rawuser")).unwrap_or_default();
    assert!(rawuser.contains("active, 1 wrong PIN"), "one attempt taken, not three: {listing}");
}

#[test]
fn an_unknown_device_is_told_so() {
    let f = Fixture::new(&[]);
    let stranger = RawToken::new(&f.server);
    let (sealed, key) = stranger.seal(Purpose::Passcode, &stranger.passcode_body(PIN, now()));
    let (status, reply) = stranger.send(&sealed, &key);
    assert_eq!((status, error_kind(&reply)), (404, ErrorKind::UnknownDevice));
}

#[test]
fn a_registration_with_a_short_pin_is_refused() {
    let f = Fixture::new(&[]);
    let raw = RawToken::new(&f.server);
    let body = RegisterBody {
        device_public_key: b64(&raw.key.public_key_der()),
        pin: "12".into(),
        timestamp: now(),
        nonce: nonce(),
        enrollment_code: None,
    };
    let (sealed, key) = raw.seal(Purpose::Register, &serde_json::to_string(&body).unwrap());
    let (status, text) = raw.post("/v1/register", &serde_json::to_string(&sealed).unwrap());
    assert_eq!(status, 422);
    let reply: Reply<Registered> = open_reply(&key, &serde_json::from_str(&text).unwrap()).unwrap();
    assert!(matches!(reply, Reply::Error(e) if e.kind == ErrorKind::PinPolicy));
}
