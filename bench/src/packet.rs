//! Access-Request encoding (PAP, RFC 2865 §5.2, with Message-Authenticator, RFC 3579 §3.2)
//! and response checking, written for a hot loop: no allocation per request. Mirrors the
//! reference client in tests/e2e/radius_client.rs.

use hmac::{Hmac, KeyInit, Mac};
use md5::{Digest, Md5};

pub const ACCESS_REQUEST: u8 = 1;
pub const ACCESS_ACCEPT: u8 = 2;
pub const ACCESS_REJECT: u8 = 3;
const USER_NAME: u8 = 1;
const USER_PASSWORD: u8 = 2;
const MESSAGE_AUTHENTICATOR: u8 = 80;

/// What a reply said, once its authenticators check out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Accept,
    Reject,
}

/// Why a reply was not counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bad {
    Malformed,
    ResponseAuthenticator,
    MessageAuthenticator,
    Code,
}

fn hmac_md5(key: &[u8], data: &[u8]) -> [u8; 16] {
    let mut m = <Hmac<Md5> as KeyInit>::new_from_slice(key).expect("HMAC takes any key length");
    m.update(data);
    m.finalize().into_bytes().into()
}

/// Writes an Access-Request into `out` (cleared first).
pub fn access_request(out: &mut Vec<u8>, id: u8, auth: &[u8; 16], user: &[u8], password: &[u8], secret: &[u8]) {
    out.clear();
    out.extend_from_slice(&[ACCESS_REQUEST, id, 0, 0]);
    out.extend_from_slice(auth);
    let user = &user[..user.len().min(253)];
    out.push(USER_NAME);
    out.push((2 + user.len()) as u8);
    out.extend_from_slice(user);
    // PAP: pad to a multiple of 16, XOR with MD5(secret + previous block) chained.
    let password = &password[..password.len().min(128)];
    let blocks = password.len().div_ceil(16).max(1);
    out.push(USER_PASSWORD);
    out.push((2 + blocks * 16) as u8);
    let mut prev: [u8; 16] = *auth;
    for b in 0..blocks {
        let mut h = Md5::new();
        h.update(secret);
        h.update(prev);
        let key: [u8; 16] = h.finalize().into();
        let mut block = [0u8; 16];
        for (i, k) in key.iter().enumerate() {
            let p = password.get(b * 16 + i).copied().unwrap_or(0);
            block[i] = p ^ k;
        }
        out.extend_from_slice(&block);
        prev = block;
    }
    let at = out.len();
    out.push(MESSAGE_AUTHENTICATOR);
    out.push(18);
    out.extend_from_slice(&[0; 16]);
    let len = out.len() as u16;
    out[2..4].copy_from_slice(&len.to_be_bytes());
    let ma = hmac_md5(secret, out);
    out[at + 2..at + 18].copy_from_slice(&ma);
}

/// Checks a reply to the request with authenticator `request_auth`: Response Authenticator
/// (RFC 2865 §3) and, when present, Message-Authenticator (RFC 3579 §3.2). `scratch` avoids
/// an allocation per reply.
pub fn check_response(
    resp: &[u8],
    request_auth: &[u8; 16],
    secret: &[u8],
    scratch: &mut Vec<u8>,
) -> Result<Verdict, Bad> {
    if resp.len() < 20 {
        return Err(Bad::Malformed);
    }
    let len = usize::from(u16::from_be_bytes([resp[2], resp[3]]));
    if len < 20 || len > resp.len() {
        return Err(Bad::Malformed);
    }
    let resp = &resp[..len];
    scratch.clear();
    scratch.extend_from_slice(resp);
    scratch[4..20].copy_from_slice(request_auth);
    let mut h = Md5::new();
    h.update(&scratch[..]);
    h.update(secret);
    let expected: [u8; 16] = h.finalize().into();
    if resp[4..20] != expected {
        return Err(Bad::ResponseAuthenticator);
    }
    if let Some(at) = find_attribute(resp, MESSAGE_AUTHENTICATOR) {
        if usize::from(resp[at + 1]) != 18 {
            return Err(Bad::MessageAuthenticator);
        }
        scratch[at + 2..at + 18].fill(0);
        if resp[at + 2..at + 18] != hmac_md5(secret, scratch) {
            return Err(Bad::MessageAuthenticator);
        }
    }
    match resp[0] {
        ACCESS_ACCEPT => Ok(Verdict::Accept),
        ACCESS_REJECT => Ok(Verdict::Reject),
        _ => Err(Bad::Code),
    }
}

/// Offset of the first attribute of type `typ`, if the attribute list is well formed.
fn find_attribute(packet: &[u8], typ: u8) -> Option<usize> {
    let mut i = 20;
    while i + 2 <= packet.len() {
        let alen = usize::from(packet[i + 1]);
        if alen < 2 || i + alen > packet.len() {
            return None;
        }
        if packet[i] == typ {
            return Some(i);
        }
        i += alen;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reply built the way the server builds one (server/src/radius/packet.rs).
    fn reply(code: u8, request: &[u8], secret: &[u8]) -> Vec<u8> {
        let mut out = vec![code, request[1], 0, 38];
        out.extend_from_slice(&request[4..20]);
        out.extend_from_slice(&[MESSAGE_AUTHENTICATOR, 18]);
        out.extend_from_slice(&[0; 16]);
        let ma = hmac_md5(secret, &out);
        out[22..38].copy_from_slice(&ma);
        let mut h = Md5::new();
        h.update(&out);
        h.update(secret);
        let ra: [u8; 16] = h.finalize().into();
        out[4..20].copy_from_slice(&ra);
        out
    }

    #[test]
    fn a_request_carries_a_valid_message_authenticator_and_decodable_password() {
        let (secret, auth) = (b"s3cret-s3cret", [7u8; 16]);
        let mut p = Vec::new();
        access_request(&mut p, 9, &auth, b"alice", b"123456", secret);
        assert_eq!(usize::from(u16::from_be_bytes([p[2], p[3]])), p.len());
        let at = find_attribute(&p, MESSAGE_AUTHENTICATOR).unwrap();
        let mut zeroed = p.clone();
        zeroed[at + 2..at + 18].fill(0);
        assert_eq!(p[at + 2..at + 18], hmac_md5(secret, &zeroed));
        let pw = find_attribute(&p, USER_PASSWORD).unwrap();
        let mut h = Md5::new();
        h.update(secret);
        h.update(auth);
        let key: [u8; 16] = h.finalize().into();
        let clear: Vec<u8> = p[pw + 2..pw + 18].iter().zip(key).map(|(c, k)| c ^ k).collect();
        assert_eq!(&clear[..6], b"123456");
        assert!(clear[6..].iter().all(|b| *b == 0));
    }

    #[test]
    fn replies_are_verified_and_forgeries_refused() {
        let (secret, auth) = (b"s3cret-s3cret", [1u8; 16]);
        let mut p = Vec::new();
        access_request(&mut p, 3, &auth, b"bob", b"x", secret);
        let mut scratch = Vec::new();
        let ok = reply(ACCESS_ACCEPT, &p, secret);
        assert_eq!(check_response(&ok, &auth, secret, &mut scratch), Ok(Verdict::Accept));
        let no = reply(ACCESS_REJECT, &p, secret);
        assert_eq!(check_response(&no, &auth, secret, &mut scratch), Ok(Verdict::Reject));
        assert_eq!(check_response(&ok, &[2; 16], secret, &mut scratch), Err(Bad::ResponseAuthenticator));
        assert_eq!(check_response(&ok, &auth, b"other", &mut scratch), Err(Bad::ResponseAuthenticator));
        assert_eq!(check_response(&ok[..10], &auth, secret, &mut scratch), Err(Bad::Malformed));
    }
}
