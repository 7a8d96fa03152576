//! RADIUS framing around the `radius` crate's codec: Message-Authenticator (RFC 3579 §3.2,
//! HMAC-MD5) checking and signing, and responses with Message-Authenticator first, the
//! BlastRADIUS (CVE-2024-3596) defence. The crate decodes attributes and User-Password.

use hmac::{Hmac, KeyInit, Mac};
use md5::{Digest, Md5};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// RFC 2865 header length; RFC 2865 §3 caps a packet at 4096 octets.
pub const HEADER_LEN: usize = 20;
pub const MAX_PACKET_LEN: usize = 4096;
pub const ACCESS_REQUEST: u8 = 1;
pub const ACCESS_ACCEPT: u8 = 2;
pub const ACCESS_REJECT: u8 = 3;
pub const STATUS_SERVER: u8 = 12;
const MESSAGE_AUTHENTICATOR: u8 = 80;
/// Every response Tessera sends: the header and a Message-Authenticator.
pub const RESPONSE_LEN: usize = HEADER_LEN + 18;
pub type Response = [u8; RESPONSE_LEN];

/// A network client's shared secret, with its HMAC-MD5 key schedule (the hashed inner and
/// outer pads) computed once, so checking or signing a packet hashes only the packet: two
/// MD5 blocks fewer per Message-Authenticator. The bytes are wiped when dropped, the key
/// schedule through the `hmac` crate's `zeroize` feature.
#[derive(Clone)]
pub struct Secret {
    bytes: Zeroizing<Vec<u8>>,
    mac: Hmac<Md5>,
}

impl Secret {
    pub fn new(bytes: Vec<u8>) -> Self {
        let bytes = Zeroizing::new(bytes);
        let mac = <Hmac<Md5> as KeyInit>::new_from_slice(&bytes).expect("HMAC takes any key length");
        Self { bytes, mac }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// HMAC-MD5 over the concatenation of `parts`.
    fn hmac(&self, parts: &[&[u8]]) -> [u8; 16] {
        let mut mac = self.mac.clone();
        for part in parts {
            mac.update(part);
        }
        mac.finalize().into_bytes().into()
    }
}

/// What the framing check found in a datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub code: u8,
    pub identifier: u8,
    pub authenticator: [u8; 16],
    /// The packet's own length; octets past it are padding and ignored (RFC 2865 §3).
    pub len: usize,
    /// Offset of the Message-Authenticator attribute, if present.
    pub message_authenticator: Option<usize>,
}

/// Why a datagram is not a well-formed RADIUS packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("shorter than a RADIUS header")]
    Short,
    #[error("length field out of range")]
    Length,
    #[error("attribute length invalid")]
    Attribute,
    #[error("Message-Authenticator malformed or repeated")]
    MessageAuthenticator,
}

/// Checks the header and every attribute length, and finds Message-Authenticator.
pub fn frame(datagram: &[u8]) -> Result<Frame, FrameError> {
    if datagram.len() < HEADER_LEN {
        return Err(FrameError::Short);
    }
    let len = usize::from(u16::from_be_bytes([datagram[2], datagram[3]]));
    if !(HEADER_LEN..=MAX_PACKET_LEN).contains(&len) || len > datagram.len() {
        return Err(FrameError::Length);
    }
    let mut message_authenticator = None;
    let mut i = HEADER_LEN;
    while i < len {
        if i + 2 > len {
            return Err(FrameError::Attribute);
        }
        let (typ, alen) = (datagram[i], usize::from(datagram[i + 1]));
        if alen < 2 || i + alen > len {
            return Err(FrameError::Attribute);
        }
        if typ == MESSAGE_AUTHENTICATOR {
            if alen != 18 || message_authenticator.is_some() {
                return Err(FrameError::MessageAuthenticator);
            }
            message_authenticator = Some(i);
        }
        i += alen;
    }
    let mut authenticator = [0u8; 16];
    authenticator.copy_from_slice(&datagram[4..20]);
    Ok(Frame { code: datagram[0], identifier: datagram[1], authenticator, len, message_authenticator })
}

/// Verifies a request's Message-Authenticator (present per `frame`), in constant time.
pub fn message_authenticator_valid(packet: &[u8], frame: &Frame, secret: &Secret) -> bool {
    let Some(at) = frame.message_authenticator else { return false };
    let value = at + 2;
    // Computed with the attribute's value as zeros (RFC 3579 §3.2).
    let expected = secret.hmac(&[&packet[..value], &[0; 16], &packet[value + 16..frame.len]]);
    expected.ct_eq(&packet[value..value + 16]).into()
}

/// Builds a response (`code`) to a request: Message-Authenticator as the first and only
/// attribute, then the Response Authenticator over the finished packet.
pub fn response(code: u8, request: &Frame, secret: &Secret) -> Response {
    let mut out = [0u8; RESPONSE_LEN];
    out[0] = code;
    out[1] = request.identifier;
    out[2..4].copy_from_slice(&(RESPONSE_LEN as u16).to_be_bytes());
    out[4..HEADER_LEN].copy_from_slice(&request.authenticator);
    out[HEADER_LEN] = MESSAGE_AUTHENTICATOR;
    out[HEADER_LEN + 1] = 18;
    // RFC 3579 §3.2: computed with the Request Authenticator in the header.
    let ma = secret.hmac(&[&out]);
    out[HEADER_LEN + 2..].copy_from_slice(&ma);
    let mut h = Md5::new();
    h.update(out);
    h.update(secret.as_bytes());
    let response_authenticator: [u8; 16] = h.finalize().into();
    out[4..20].copy_from_slice(&response_authenticator);
    out
}

/// Decodes a framed Access-Request's PAP User-Name and User-Password with the `radius`
/// crate; the error is a reason for the log. Pure, so the fuzzer drives it directly.
pub fn decode_pap(datagram: &[u8], frame: &Frame, secret: &Secret) -> Result<(String, String), &'static str> {
    use radius::core::packet::Packet;
    use radius::core::rfc2865;
    let request = Packet::decode(&datagram[..frame.len], secret.as_bytes()).map_err(|_| "undecodable request")?;
    let Some(Ok(username)) = rfc2865::lookup_user_name(&request) else {
        return Err("no valid User-Name");
    };
    let Some(Ok(password)) = rfc2865::lookup_user_password(&request) else {
        return Err("no PAP User-Password");
    };
    let passcode = String::from_utf8(password).map_err(|_| "User-Password is not text (wrong shared secret?)")?;
    Ok((username, passcode))
}

/// What [`process_request`] made of a datagram.
#[derive(Debug)]
pub struct Processed {
    pub frame: Frame,
    /// User-Name and User-Password, when the request carries both and they decode.
    pub pap: Option<(String, String)>,
    /// The (reject) response Tessera would send.
    pub reply: Response,
}

/// The whole request path short of the database, for the fuzzer and tests: framing,
/// Message-Authenticator, PAP decoding, and a response signed as Tessera signs it.
pub fn process_request(datagram: &[u8], secret: &[u8]) -> Result<Processed, FrameError> {
    let secret = &Secret::new(secret.to_vec());
    let frame = frame(datagram)?;
    if frame.message_authenticator.is_some() && !message_authenticator_valid(datagram, &frame, secret) {
        return Err(FrameError::MessageAuthenticator);
    }
    let pap = decode_pap(datagram, &frame, secret).ok();
    let reply = response(ACCESS_REJECT, &frame, secret);
    Ok(Processed { frame, pap, reply })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// HMAC-MD5 computed from scratch, to check [`Secret`]'s precomputed key schedule.
    fn hmac_md5(secret: &[u8], data: &[u8]) -> [u8; 16] {
        let mut mac = <Hmac<Md5> as KeyInit>::new_from_slice(secret).unwrap();
        mac.update(data);
        mac.finalize().into_bytes().into()
    }

    fn secret(bytes: &[u8]) -> Secret {
        Secret::new(bytes.to_vec())
    }

    fn request(with_ma: bool, secret: &[u8]) -> Vec<u8> {
        let mut p = vec![ACCESS_REQUEST, 7, 0, 0];
        p.extend_from_slice(&[0x11; 16]);
        p.extend_from_slice(&[1, 7, b'a', b'l', b'i', b'c', b'e']);
        if with_ma {
            p.extend_from_slice(&[80, 18]);
            p.extend_from_slice(&[0; 16]);
        }
        let len = p.len() as u16;
        p[2..4].copy_from_slice(&len.to_be_bytes());
        if with_ma {
            let at = p.len() - 16;
            let ma = hmac_md5(secret, &p);
            p[at..].copy_from_slice(&ma);
        }
        p
    }

    #[test]
    fn message_authenticator_is_found_and_verified() {
        let p = request(true, b"secret");
        let f = frame(&p).unwrap();
        assert_eq!(f.message_authenticator, Some(27));
        assert!(message_authenticator_valid(&p, &f, &secret(b"secret")));
        assert!(!message_authenticator_valid(&p, &f, &secret(b"other")));
        let mut tampered = p.clone();
        tampered[22] ^= 1;
        assert!(!message_authenticator_valid(&tampered, &frame(&tampered).unwrap(), &secret(b"secret")));
        let plain = request(false, b"secret");
        assert_eq!(frame(&plain).unwrap().message_authenticator, None);
    }

    #[test]
    fn malformed_frames_are_refused() {
        let p = request(true, b"s");
        assert_eq!(frame(&p[..10]), Err(FrameError::Short));
        assert_eq!(frame(&p[..30]), Err(FrameError::Length));
        let mut bad = p.clone();
        bad[21] = 1;
        assert_eq!(frame(&bad), Err(FrameError::Attribute));
        let mut bad = p.clone();
        bad[21] = 200;
        assert_eq!(frame(&bad), Err(FrameError::Attribute));
        let mut big = p.clone();
        big[2..4].copy_from_slice(&5000u16.to_be_bytes());
        big.resize(5000, 0);
        assert_eq!(frame(&big), Err(FrameError::Length));
        let mut twice = request(false, b"s");
        for _ in 0..2 {
            twice.extend_from_slice(&[80, 18]);
            twice.extend_from_slice(&[0; 16]);
        }
        let len = twice.len() as u16;
        twice[2..4].copy_from_slice(&len.to_be_bytes());
        assert_eq!(frame(&twice), Err(FrameError::MessageAuthenticator));
    }

    #[test]
    fn the_fuzzed_request_path_refuses_forgeries_and_answers_the_rest() {
        let p = request(true, b"secret");
        let done = process_request(&p, b"secret").unwrap();
        assert_eq!(done.pap, None, "no User-Password in this request");
        assert_eq!(done.reply.len(), HEADER_LEN + 18);
        assert_eq!(process_request(&p, b"other").unwrap_err(), FrameError::MessageAuthenticator);
        // Inputs the fuzzer starts from that must not panic: empty, header only, zero length.
        assert!(process_request(&[], b"s").is_err());
        assert!(process_request(&[1; HEADER_LEN], b"s").is_err());
        let mut header = vec![1, 0, 0, 20];
        header.extend_from_slice(&[0; 16]);
        assert!(process_request(&header, b"s").unwrap().pap.is_none());
    }

    #[test]
    fn responses_carry_a_valid_message_authenticator_and_response_authenticator() {
        let req = request(true, b"secret");
        let f = frame(&req).unwrap();
        let resp = response(ACCESS_ACCEPT, &f, &secret(b"secret"));
        assert_eq!(resp[0], ACCESS_ACCEPT);
        assert_eq!(resp[1], 7);
        assert_eq!(resp[20], 80);
        // Response Authenticator = MD5(Code+ID+Length+RequestAuth+Attributes+Secret).
        let mut check = resp;
        check[4..20].copy_from_slice(&f.authenticator);
        let mut h = Md5::new();
        h.update(check);
        h.update(b"secret");
        assert_eq!(&resp[4..20], &<[u8; 16]>::from(h.finalize()));
        // Message-Authenticator over the packet with the Request Authenticator and MA zeroed.
        let mut zeroed = check;
        zeroed[22..38].fill(0);
        assert_eq!(&resp[22..38], &hmac_md5(b"secret", &zeroed));
    }
}
