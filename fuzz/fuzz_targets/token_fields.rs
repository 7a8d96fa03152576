//! Structure-aware companion of `token_request`: every input is a well-formed token request
//! built from `arbitrary` values, so the fuzzer spends its time on Tessera's own request
//! logic rather than on JSON syntax.
//!
//! One execution: build a `RegisterBody` or `PasscodeBody` (arbitrary PIN, timestamp, nonce,
//! enrollment code, device id, device key DER from a structured SubjectPublicKeyInfo), sign
//! it (right key, other key, signature over another purpose / envelope / body, edited,
//! replayed or arbitrary signature), seal it to a fixed server key as the token does
//! (`seal_signed`, or `Sealer` by hand when the signature is not the token's), optionally
//! for another purpose, domain or server key or with a tampered envelope; then do what the
//! server does: parse the domain code, `open_signed` for the endpoint's purpose, parse the
//! body, decode the device key and verify the signature. Every step's outcome is predicted
//! from the input and asserted, and the sealed reply must round-trip to the token.
#![no_main]

use std::sync::LazyLock;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use rsa::RsaPublicKey;
use rsa::pkcs8::{DecodePublicKey, EncodePublicKey};
use rsa::traits::PublicKeyParts;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tessera_protocol::DomainCode;
use tessera_protocol::code::DomainCodeError;
use tessera_protocol::device::{DeviceKey, DevicePublicKey, device_id, registration_code, signed_message};
use tessera_protocol::envelope::{Purpose, ResponseKey, Sealer, ServerKeyPair, info};
use tessera_protocol::request::{open_reply, open_signed, seal_reply, seal_signed};
use tessera_protocol::wire::{
    ErrorKind, Passcode, PasscodeBody, RegisterBody, Registered, Reply, SealedBody, SealedReply, SignedRequest,
    TokenError, b64, unb64,
};

/// Length of a device key's modulus and of its signatures.
const KEY_BYTES: usize = tessera_protocol::DEVICE_KEY_BITS / 8;
const RSA_ENCRYPTION: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
const RSASSA_PSS: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0a];
const F4: &[u8] = &[0x01, 0x00, 0x01];

/// A device key pair and what the assertions need of it.
struct Device {
    key: DeviceKey,
    der: Vec<u8>,
    id: String,
    modulus: Vec<u8>,
}

impl Device {
    fn generate() -> Self {
        let key = DeviceKey::generate();
        let der = key.public_key_der();
        let public = RsaPublicKey::from_public_key_der(&der).expect("a generated key parses");
        let modulus = minimal(&public.n().as_ref().to_be_bytes()).to_vec();
        assert_eq!(modulus.len(), KEY_BYTES);
        // The DER builder below must produce exactly what the token sends.
        assert_eq!(spki(&Alg::RsaEncryption, &modulus, F4, false, 0), der);
        Self { id: device_id(&der), key, der, modulus }
    }
}

static SERVER: LazyLock<ServerKeyPair> = LazyLock::new(ServerKeyPair::generate);
static OTHER_SERVER: LazyLock<ServerKeyPair> = LazyLock::new(ServerKeyPair::generate);
static DOMAIN: LazyLock<DomainCode> = LazyLock::new(|| DomainCode::parse("127000000001").unwrap());
/// The token's key, and a second registered device's.
static DEVICE: LazyLock<Device> = LazyLock::new(Device::generate);
static OTHER: LazyLock<Device> = LazyLock::new(Device::generate);
/// A signature of DEVICE taken from another envelope (a replay).
static STALE: LazyLock<(Vec<u8>, Vec<u8>)> = LazyLock::new(|| {
    let msg = signed_message(Purpose::Passcode, &[9; 32], b"{}");
    let sig = DEVICE.key.sign(&msg);
    (msg, sig)
});

#[derive(Arbitrary, Debug)]
struct Input {
    body: Body,
    /// Seal with the other purpose than the body's (a token never does).
    seal_flip: bool,
    /// Post to the other endpoint than the body's: the server opens with that purpose.
    endpoint_flip: bool,
    /// Seal for this domain code instead of the server's.
    seal_domain: Option<[u8; 4]>,
    /// Seal to another server key.
    other_server: bool,
    /// The `domain` field of the sealed body.
    domain_text: DomainText,
    signature: Sig,
    tamper: Tamper,
    reply: ReplyInput,
}

#[derive(Arbitrary, Debug)]
enum Body {
    Register { key: KeyField, pin: String, timestamp: i64, nonce: Nonce, enrollment_code: Option<String> },
    Passcode { device: DeviceRef, pin: String, timestamp: i64, nonce: Nonce },
}

#[derive(Arbitrary, Debug)]
enum Nonce {
    Random([u8; 16]),
    Bytes(Vec<u8>),
    Text(String),
}

impl Nonce {
    fn render(&self) -> String {
        match self {
            Nonce::Random(b) => b64(b),
            Nonce::Bytes(b) => b64(b),
            Nonce::Text(t) => t.clone(),
        }
    }
}

/// `device_public_key` of a registration.
#[derive(Arbitrary, Debug)]
enum KeyField {
    Der(Der),
    Text(String),
}

/// `device_id` of a passcode request.
#[derive(Arbitrary, Debug)]
enum DeviceRef {
    Device,
    Other,
    Text(String),
}

#[derive(Arbitrary, Debug)]
enum Der {
    Device,
    Other,
    Built(Spki),
    Edited { other: bool, edit: Edit },
    Bytes(Vec<u8>),
}

impl Der {
    /// The DER, and whether `DevicePublicKey::from_der` must accept it when that is known.
    fn render(&self) -> (Vec<u8>, Option<bool>) {
        match self {
            Der::Device => (DEVICE.der.clone(), Some(true)),
            Der::Other => (OTHER.der.clone(), Some(true)),
            Der::Built(s) => s.render(),
            Der::Edited { other, edit } => {
                let base = if *other { &OTHER.der } else { &DEVICE.der };
                let der = edit.apply(base);
                let expected = if der == *base {
                    Some(true)
                } else if matches!(edit, Edit::Flip { .. }) {
                    None
                } else {
                    // A strict prefix, trailing bytes or leading bytes: never one SPKI.
                    Some(false)
                };
                (der, expected)
            }
            Der::Bytes(b) => (b.clone(), None),
        }
    }
}

/// A SubjectPublicKeyInfo built field by field.
#[derive(Arbitrary, Debug)]
struct Spki {
    alg: Alg,
    modulus: Modulus,
    exponent: Exponent,
    /// A superfluous leading zero octet in both INTEGERs (not DER).
    zero_padded: bool,
    unused_bits: Option<u8>,
}

#[derive(Arbitrary, Debug)]
enum Alg {
    RsaEncryption,
    RsaEncryptionNoParams,
    Pss,
    PssNull,
    Oid(Vec<u8>),
}

#[derive(Arbitrary, Debug)]
enum Modulus {
    Device,
    Other,
    Xor { at: u16, xor: u8 },
    Resized(u16),
    Bytes(Vec<u8>),
}

#[derive(Arbitrary, Debug)]
enum Exponent {
    F4,
    Value(u64),
    Bytes(Vec<u8>),
}

impl Spki {
    fn render(&self) -> (Vec<u8>, Option<bool>) {
        let n = match &self.modulus {
            Modulus::Device => DEVICE.modulus.clone(),
            Modulus::Other => OTHER.modulus.clone(),
            Modulus::Xor { at, xor } => Edit::Flip { at: *at, xor: *xor }.apply(&DEVICE.modulus),
            Modulus::Resized(len) => DEVICE.modulus.iter().copied().cycle().take(usize::from(*len) % 1100).collect(),
            Modulus::Bytes(b) => b.clone(),
        };
        let e = match &self.exponent {
            Exponent::F4 => F4.to_vec(),
            Exponent::Value(v) => v.to_be_bytes().to_vec(),
            Exponent::Bytes(b) => b.clone(),
        };
        let unused_bits = self.unused_bits.unwrap_or(0);
        let der = spki(&self.alg, &n, &e, self.zero_padded, unused_bits);
        // What rsa accepts (odd n; odd e in 2..2^33), the protocol's key size on top (the
        // modulus's bit length: its first byte's top bit set), and only the token's
        // algorithm identifier (rsaEncryption with NULL parameters): rsa also takes
        // id-RSASSA-PSS without parameters, which from_der refuses.
        let alg_ok = match &self.alg {
            Alg::RsaEncryption => true,
            Alg::Pss | Alg::Oid(_) | Alg::RsaEncryptionNoParams | Alg::PssNull => false,
        };
        let (n, e) = (minimal(&n), minimal(&e));
        let n_ok = n.len() == KEY_BYTES && n[0] & 0x80 != 0 && n[KEY_BYTES - 1] & 1 == 1;
        let e_value = (e.len() <= 8).then(|| e.iter().fold(0u64, |acc, b| acc << 8 | u64::from(*b)));
        let e_ok = e_value.is_some_and(|v| (2..1 << 33).contains(&v) && v & 1 == 1);
        let expected = alg_ok && !self.zero_padded && unused_bits == 0 && n_ok && e_ok;
        (der, Some(expected))
    }
}

/// DER tag-length-value with a minimal definite length.
fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    if content.len() < 0x80 {
        out.push(content.len() as u8);
    } else {
        let len = content.len().to_be_bytes();
        let len = minimal(&len);
        out.push(0x80 | len.len() as u8);
        out.extend_from_slice(len);
    }
    out.extend_from_slice(content);
    out
}

/// A non-negative INTEGER from big-endian magnitude bytes.
fn integer(value: &[u8], zero_padded: bool) -> Vec<u8> {
    let value = minimal(value);
    let mut content = Vec::with_capacity(value.len() + 2);
    if zero_padded {
        content.push(0);
    }
    if value.first().is_none_or(|b| b & 0x80 != 0) {
        content.push(0);
    }
    content.extend_from_slice(value);
    tlv(0x02, &content)
}

fn spki(alg: &Alg, n: &[u8], e: &[u8], zero_padded: bool, unused_bits: u8) -> Vec<u8> {
    let null = tlv(0x05, &[]);
    let alg_id = match alg {
        Alg::RsaEncryption => [tlv(0x06, RSA_ENCRYPTION), null].concat(),
        Alg::RsaEncryptionNoParams => tlv(0x06, RSA_ENCRYPTION),
        Alg::Pss => tlv(0x06, RSASSA_PSS),
        Alg::PssNull => [tlv(0x06, RSASSA_PSS), null].concat(),
        Alg::Oid(oid) => tlv(0x06, oid),
    };
    let pkcs1 = tlv(0x30, &[integer(n, zero_padded), integer(e, zero_padded)].concat());
    let bits = [&[unused_bits][..], &pkcs1].concat();
    tlv(0x30, &[tlv(0x30, &alg_id), tlv(0x03, &bits)].concat())
}

fn minimal(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    &bytes[start..]
}

#[derive(Arbitrary, Debug)]
enum Edit {
    Flip { at: u16, xor: u8 },
    Truncate(u16),
    Append(Vec<u8>),
    Prepend(Vec<u8>),
}

impl Edit {
    fn apply(&self, bytes: &[u8]) -> Vec<u8> {
        let mut out = bytes.to_vec();
        match self {
            Edit::Flip { at, xor } => {
                if !out.is_empty() {
                    let at = usize::from(*at) % out.len();
                    out[at] ^= (*xor).max(1);
                }
            }
            Edit::Truncate(len) => out.truncate(usize::from(*len) % bytes.len().max(1)),
            Edit::Append(tail) => out.extend_from_slice(tail),
            Edit::Prepend(head) => out.splice(0..0, head.iter().copied()).for_each(drop),
        }
        out
    }
}

/// The cheap choices come first: they are what `arbitrary` picks when the input runs out,
/// and only `Key` pays for an RSA-3072 signature (most of an execution's time).
#[derive(Arbitrary, Debug)]
enum Sig {
    Bytes(Vec<u8>),
    /// The `signature` field as arbitrary text.
    Text(String),
    /// A signature of the token's key from another envelope (a replay).
    Stale,
    /// A fresh RSA-PSS signature by the token's key or the other device's, over the message
    /// of this envelope unless told otherwise, then possibly edited.
    Key {
        other: bool,
        flip_label: bool,
        enc: Option<[u8; 32]>,
        body: Option<String>,
        edit: Option<SigEdit>,
    },
}

#[derive(Arbitrary, Debug)]
enum SigEdit {
    Edit(Edit),
    /// s + n: the same value modulo n, in a different octet string.
    AddModulus,
}

/// The signature as sent.
struct Signed {
    field: String,
    /// The field decoded, as the server will (None: not base64).
    bytes: Option<Vec<u8>>,
    signer: Option<&'static Device>,
    /// A correct signature by `signer` over this envelope's message for the sealing purpose.
    valid: bool,
}

impl Sig {
    fn sign(&self, purpose: Purpose, enc: &[u8], body: &str) -> Signed {
        let right = signed_message(purpose, enc, body.as_bytes());
        let (bytes, signer, valid) = match self {
            Sig::Key { other, flip_label, enc: other_enc, body: other_body, edit } => {
                let device = if *other { &*OTHER } else { &*DEVICE };
                let label = if *flip_label { flip(purpose) } else { purpose };
                let enc = other_enc.as_ref().map_or(enc, |e| &e[..]);
                let body = other_body.as_deref().unwrap_or(body);
                let msg = signed_message(label, enc, body.as_bytes());
                let sig = device.key.sign(&msg);
                let edited = match edit {
                    None => sig.clone(),
                    Some(SigEdit::Edit(e)) => e.apply(&sig),
                    Some(SigEdit::AddModulus) => add(&sig, &device.modulus),
                };
                let valid = msg == right && edited == sig;
                (edited, Some(device), valid)
            }
            Sig::Stale => {
                let (msg, sig) = &*STALE;
                (sig.clone(), Some(&*DEVICE), *msg == right)
            }
            Sig::Bytes(b) => (b.clone(), None, false),
            Sig::Text(t) => return Signed { field: t.clone(), bytes: unb64(t).ok(), signer: None, valid: false },
        };
        Signed { field: b64(&bytes), bytes: Some(bytes), signer, valid }
    }

    /// Whether the token's own `seal_signed` makes this signature.
    fn is_tokens(&self) -> Option<&'static Device> {
        match self {
            Sig::Key { other, flip_label: false, enc: None, body: None, edit: None } => {
                Some(if *other { &*OTHER } else { &*DEVICE })
            }
            _ => None,
        }
    }
}

/// Big-endian a + b.
fn add(a: &[u8], b: &[u8]) -> Vec<u8> {
    let len = a.len().max(b.len());
    let mut out = vec![0u8; len + 1];
    let mut carry = 0u16;
    for i in 0..len {
        let x = if i < a.len() { u16::from(a[a.len() - 1 - i]) } else { 0 };
        let y = if i < b.len() { u16::from(b[b.len() - 1 - i]) } else { 0 };
        let s = x + y + carry;
        out[len - i] = s as u8;
        carry = s >> 8;
    }
    out[0] = carry as u8;
    if carry == 0 { out[1..].to_vec() } else { out }
}

#[derive(Arbitrary, Debug)]
enum Tamper {
    None,
    Enc(Edit),
    Ciphertext(Edit),
    EncText(String),
    CiphertextText(String),
}

impl Tamper {
    /// Applies the change; returns whether anything changed.
    fn apply(&self, sealed: &mut SealedBody) -> bool {
        let (field, new) = match self {
            Tamper::None => return false,
            Tamper::Enc(e) => (&mut sealed.enc, Err(e)),
            Tamper::Ciphertext(e) => (&mut sealed.ciphertext, Err(e)),
            Tamper::EncText(t) => (&mut sealed.enc, Ok(t.clone())),
            Tamper::CiphertextText(t) => (&mut sealed.ciphertext, Ok(t.clone())),
        };
        let new = new.unwrap_or_else(|e| b64(&e.apply(&unb64(field).expect("the token's base64"))));
        let changed = *field != new;
        *field = new;
        changed
    }
}

#[derive(Arbitrary, Debug)]
enum DomainText {
    Server,
    Padded {
        before: Vec<Space>,
        after: Vec<Space>,
    },
    Sealed,
    /// Four three-digit groups (each taken modulo 1000), so that groups above 255 occur.
    Groups([u16; 4]),
    Text(String),
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Space {
    Space,
    Tab,
    Newline,
    Return,
    NoBreak,
    Em,
    Ideographic,
    NextLine,
    LineSeparator,
}

impl Space {
    fn char(self) -> char {
        match self {
            Space::Space => ' ',
            Space::Tab => '\t',
            Space::Newline => '\n',
            Space::Return => '\r',
            Space::NoBreak => '\u{a0}',
            Space::Em => '\u{2003}',
            Space::Ideographic => '\u{3000}',
            Space::NextLine => '\u{85}',
            Space::LineSeparator => '\u{2028}',
        }
    }
}

#[derive(Arbitrary, Debug)]
struct ReplyInput {
    answer: Answer,
    tamper: Option<Edit>,
}

#[derive(Arbitrary, Debug)]
enum Answer {
    Passcode { passcode: String, expires_in_secs: u64 },
    Registered { device_id: String, server_nonce: Vec<u8>, expires_in_secs: u64, validated_username: Option<String> },
    Error { kind: u8, message: String, attempts_left: Option<u32> },
}

const KINDS: [ErrorKind; 11] = [
    ErrorKind::WrongPin,
    ErrorKind::Locked,
    ErrorKind::PendingValidation,
    ErrorKind::Disabled,
    ErrorKind::UnknownDevice,
    ErrorKind::Replay,
    ErrorKind::ClockSkew,
    ErrorKind::BadRequest,
    ErrorKind::PinPolicy,
    ErrorKind::RateLimited,
    ErrorKind::Internal,
];

impl ReplyInput {
    /// The server seals an answer under its response key; the token must open exactly that,
    /// and nothing altered.
    fn check(&self, server: &ResponseKey, token: &ResponseKey) {
        let tamper = self.tamper.as_ref();
        match &self.answer {
            Answer::Passcode { passcode, expires_in_secs } => round_trip(
                server,
                token,
                Reply::Ok(Passcode { passcode: passcode.clone(), expires_in_secs: *expires_in_secs }),
                tamper,
            ),
            Answer::Registered { device_id, server_nonce, expires_in_secs, validated_username } => round_trip(
                server,
                token,
                Reply::Ok(Registered {
                    device_id: device_id.clone(),
                    server_nonce: b64(server_nonce),
                    expires_in_secs: *expires_in_secs,
                    validated_username: validated_username.clone(),
                }),
                tamper,
            ),
            Answer::Error { kind, message, attempts_left } => round_trip::<Passcode>(
                server,
                token,
                Reply::Error(TokenError {
                    kind: KINDS[usize::from(*kind) % KINDS.len()],
                    message: message.clone(),
                    attempts_left: *attempts_left,
                }),
                tamper,
            ),
        }
    }
}

fn round_trip<T: Serialize + DeserializeOwned>(
    server: &ResponseKey,
    token: &ResponseKey,
    reply: Reply<T>,
    tamper: Option<&Edit>,
) {
    let json = serde_json::to_string(&reply).unwrap();
    let sealed = seal_reply(server, &reply);
    let opened = open_reply::<T>(token, &sealed).expect("the token opens the server's reply");
    assert_eq!(serde_json::to_string(&opened).unwrap(), json);
    if let Some(edit) = tamper {
        let raw = unb64(&sealed.sealed).unwrap();
        let bad = edit.apply(&raw);
        if bad != raw {
            assert!(open_reply::<T>(token, &SealedReply { sealed: b64(&bad) }).is_err(), "an altered reply opened");
        }
    }
}

fn flip(purpose: Purpose) -> Purpose {
    match purpose {
        Purpose::Register => Purpose::Passcode,
        Purpose::Passcode => Purpose::Register,
    }
}

/// What a domain code parse must satisfy.
fn check_domain<E>(text: &str, parsed: &Result<DomainCode, E>) {
    if let Ok(code) = *parsed {
        let trimmed = text.trim();
        assert_eq!(code.to_string(), trimmed, "{text:?} parsed as {code}");
        assert_eq!(DomainCode::parse(&code.to_string()), Ok(code));
        assert_eq!(DomainCode::from_ipv4(code.ipv4()), code);
    }
}

/// What `DevicePublicKey::from_der` must satisfy.
fn check_key(der: &[u8], accepted: bool, expected: Option<bool>) {
    if let Some(expected) = expected {
        assert_eq!(accepted, expected, "from_der of {der:02x?}");
    }
    if accepted {
        let public = RsaPublicKey::from_public_key_der(der).expect("from_der accepted it");
        assert_eq!(public.n().bits() as usize, tessera_protocol::DEVICE_KEY_BITS);
        // One encoding of a key is accepted, the token's, so one key has one device id.
        let canonical = public.to_public_key_der().unwrap();
        assert!(der == canonical.as_bytes(), "another encoding accepted: {der:02x?}");
    }
}

/// The key a DER stands for, in the token's encoding.
fn canonical(der: &[u8]) -> Option<Vec<u8>> {
    let public = RsaPublicKey::from_public_key_der(der).ok()?;
    Some(public.to_public_key_der().ok()?.as_bytes().to_vec())
}

fuzz_target!(|input: Input| {
    // The token's side.
    let (kind, body, key_expected) = match &input.body {
        Body::Register { key, pin, timestamp, nonce, enrollment_code } => {
            let (field, expected) = match key {
                KeyField::Der(der) => {
                    let (der, expected) = der.render();
                    (b64(&der), expected)
                }
                KeyField::Text(t) => (t.clone(), None),
            };
            let body = RegisterBody {
                device_public_key: field,
                pin: pin.clone(),
                timestamp: *timestamp,
                nonce: nonce.render(),
                enrollment_code: enrollment_code.clone(),
            };
            (Purpose::Register, serde_json::to_string(&body).unwrap(), expected)
        }
        Body::Passcode { device, pin, timestamp, nonce } => {
            let device_id = match device {
                DeviceRef::Device => DEVICE.id.clone(),
                DeviceRef::Other => OTHER.id.clone(),
                DeviceRef::Text(t) => t.clone(),
            };
            let body = PasscodeBody { device_id, pin: pin.clone(), timestamp: *timestamp, nonce: nonce.render() };
            (Purpose::Passcode, serde_json::to_string(&body).unwrap(), Some(true))
        }
    };
    let seal_purpose = if input.seal_flip { flip(kind) } else { kind };
    let endpoint = if input.endpoint_flip { flip(kind) } else { kind };
    let seal_domain = input.seal_domain.map_or(*DOMAIN, |o| DomainCode::from_ipv4(o.into()));
    assert_eq!(DomainCode::parse(&seal_domain.to_string()), Ok(seal_domain));
    let server_public = if input.other_server { OTHER_SERVER.public_bytes() } else { SERVER.public_bytes() };

    let (mut sealed, token_key, signed) = match input.signature.is_tokens() {
        Some(device) => {
            let (sealed, key) = seal_signed(seal_purpose, seal_domain, &server_public, &body, &device.key)
                .expect("sealing to a valid key");
            (sealed, key, Signed { field: String::new(), bytes: None, signer: Some(device), valid: true })
        }
        None => {
            let sealer = Sealer::new(&server_public, &info(seal_purpose, seal_domain)).expect("a valid key");
            let signed = input.signature.sign(seal_purpose, sealer.enc(), &body);
            let inner = SignedRequest { body: body.clone(), signature: signed.field.clone() };
            let (request, key) = sealer.seal(&serde_json::to_vec(&inner).unwrap()).expect("sealing");
            let sealed =
                SealedBody { domain: String::new(), enc: b64(&request.enc), ciphertext: b64(&request.ciphertext) };
            (sealed, key, signed)
        }
    };
    let tampered = input.tamper.apply(&mut sealed);
    sealed.domain = match &input.domain_text {
        DomainText::Server => DOMAIN.to_string(),
        DomainText::Padded { before, after } => {
            let pad = |s: &[Space]| s.iter().map(|c| c.char()).collect::<String>();
            format!("{}{}{}", pad(before), *DOMAIN, pad(after))
        }
        DomainText::Sealed => seal_domain.to_string(),
        DomainText::Groups(g) => g.iter().map(|g| format!("{:03}", g % 1000)).collect(),
        DomainText::Text(t) => t.clone(),
    };

    // The server's side: the domain named in clear, then the envelope.
    let named = DomainCode::parse(&sealed.domain);
    match input.domain_text {
        DomainText::Server | DomainText::Padded { .. } => assert_eq!(named, Ok(*DOMAIN)),
        DomainText::Sealed => assert_eq!(named, Ok(seal_domain)),
        DomainText::Groups(g) => match g.map(|g| u8::try_from(g % 1000)) {
            [Ok(a), Ok(b), Ok(c), Ok(d)] => assert_eq!(named, Ok(DomainCode::from_ipv4([a, b, c, d].into()))),
            _ => assert_eq!(named, Err(DomainCodeError::Octet)),
        },
        DomainText::Text(_) => {}
    }
    check_domain(&sealed.domain, &named);
    if named != Ok(*DOMAIN) {
        return; // unknown domain: refused in clear
    }
    let opened = open_signed(endpoint, *DOMAIN, &SERVER, &sealed);
    let signature_field_ok = signed.signer.is_some() || signed.bytes.is_some();
    let should_open =
        seal_purpose == endpoint && seal_domain == *DOMAIN && !input.other_server && !tampered && signature_field_ok;
    assert_eq!(opened.is_ok(), should_open, "open_signed");
    let Ok(opened) = opened else { return };
    assert_eq!(opened.body, body);
    let enc = unb64(&sealed.enc).unwrap();
    assert_eq!(opened.signed_message(), signed_message(endpoint, &enc, body.as_bytes()));
    if let Some(bytes) = &signed.bytes {
        assert_eq!(opened.signature(), &bytes[..]);
    }
    input.reply.check(&opened.response_key, &token_key);

    // The body the endpoint expects, and the key the server verifies with.
    let der = match endpoint {
        Purpose::Register => {
            let parsed = serde_json::from_str::<RegisterBody>(&opened.body);
            assert_eq!(parsed.is_ok(), kind == Purpose::Register, "a registration body is exactly a RegisterBody");
            let Ok(parsed) = parsed else { return };
            assert_eq!(serde_json::to_string(&parsed).unwrap(), opened.body);
            let Ok(der) = unb64(&parsed.device_public_key) else {
                assert!(matches!(input.body, Body::Register { key: KeyField::Text(_), .. }));
                return;
            };
            der
        }
        Purpose::Passcode => {
            let parsed = serde_json::from_str::<PasscodeBody>(&opened.body);
            assert_eq!(parsed.is_ok(), kind == Purpose::Passcode, "a passcode body is exactly a PasscodeBody");
            let Ok(parsed) = parsed else { return };
            assert_eq!(serde_json::to_string(&parsed).unwrap(), opened.body);
            // The devices the server knows.
            match [&*DEVICE, &*OTHER].into_iter().find(|d| d.id == parsed.device_id) {
                Some(device) => device.der.clone(),
                None => return, // unknown device
            }
        }
    };
    let key = DevicePublicKey::from_der(&der);
    check_key(&der, key.is_ok(), key_expected);
    let Ok(key) = key else { return };
    let verified = opened.verify(&key).is_ok();
    let same_key = signed.signer.is_some_and(|d| canonical(&der).is_some_and(|c| c == d.der));
    assert_eq!(verified, signed.valid && same_key, "signature check (signer {:?})", signed.signer.map(|d| &d.id));
    if verified && endpoint == Purpose::Register {
        let id = device_id(&der);
        assert!(id.len() == 64 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')));
        let code = registration_code(&SERVER.public_bytes(), &id, opened.body.as_bytes());
        assert!(code.len() == 12 && code.bytes().all(|b| b.is_ascii_digit()));
    }
});
