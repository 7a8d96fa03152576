//! A token written against the protocol crate, so a test can bend every field and talk to
//! any node.

use tessera_protocol::DomainCode;
use tessera_protocol::device::{DeviceKey, device_id, registration_code};
use tessera_protocol::envelope::{Purpose, ResponseKey};
use tessera_protocol::request::{open_reply, seal_signed};
use tessera_protocol::wire::{
    DomainInfo, Passcode, PasscodeBody, RegisterBody, Registered, Reply, SealedBody, SealedReply, b64, unb64,
};

use crate::helpers::{DOMAIN, PIN, TestServer};

/// A token written against the protocol crate, so a test can bend every field.
pub struct RawToken {
    pub url: String,
    pub agent: ureq::Agent,
    pub key: DeviceKey,
    pub server_public: Vec<u8>,
}

pub fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

pub fn nonce() -> String {
    b64(&rand::random::<[u8; 16]>())
}

impl RawToken {
    /// The same device talking to another node.
    pub fn via(&self, server: &TestServer) -> Self {
        let key = DeviceKey::from_pkcs8_der(&self.key.to_pkcs8_der()).unwrap();
        Self { url: server.token_url(), agent: self.agent.clone(), key, server_public: self.server_public.clone() }
    }

    /// Asks for a passcode with `pin`; returns the HTTP status and the opened reply.
    pub fn passcode(&self, pin: &str) -> (u16, Reply<Passcode>) {
        let (sealed, key) = self.seal(Purpose::Passcode, &self.passcode_body(pin, now()));
        self.send(&sealed, &key)
    }

    pub fn new(server: &TestServer) -> Self {
        let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
        let url = server.token_url();
        let info: DomainInfo = serde_json::from_str(
            &agent.get(format!("{url}/v1/domains/{DOMAIN}")).call().unwrap().into_body().read_to_string().unwrap(),
        )
        .unwrap();
        Self { url, agent, key: DeviceKey::generate(), server_public: unb64(&info.public_key).unwrap() }
    }

    pub fn post(&self, path: &str, body: &str) -> (u16, String) {
        let r = self
            .agent
            .post(format!("{}{path}", self.url))
            .header("content-type", "application/json")
            .send(body)
            .unwrap();
        let status = r.status().as_u16();
        (status, r.into_body().read_to_string().unwrap())
    }

    pub fn seal(&self, purpose: Purpose, body: &str) -> (SealedBody, ResponseKey) {
        seal_signed(purpose, DomainCode::parse(DOMAIN).unwrap(), &self.server_public, body, &self.key).unwrap()
    }

    pub fn register(&self) -> String {
        let body = RegisterBody {
            device_public_key: b64(&self.key.public_key_der()),
            pin: PIN.into(),
            timestamp: now(),
            nonce: nonce(),
            enrollment_code: None,
        };
        let (sealed, key) = self.seal(Purpose::Register, &serde_json::to_string(&body).unwrap());
        let (status, text) = self.post("/v1/register", &serde_json::to_string(&sealed).unwrap());
        assert_eq!(status, 200, "{text}");
        let reply: SealedReply = serde_json::from_str(&text).unwrap();
        let Reply::Ok(r) = open_reply::<Registered>(&key, &reply).unwrap() else { panic!("refused") };
        registration_code(&self.server_public, &r.device_id, &unb64(&r.server_nonce).unwrap())
    }

    pub fn passcode_body(&self, pin: &str, timestamp: i64) -> String {
        let body = PasscodeBody {
            device_id: device_id(&self.key.public_key_der()),
            pin: pin.into(),
            timestamp,
            nonce: nonce(),
        };
        serde_json::to_string(&body).unwrap()
    }

    /// Posts a sealed passcode request; returns the HTTP status and the opened reply.
    pub fn send(&self, sealed: &SealedBody, key: &ResponseKey) -> (u16, Reply<Passcode>) {
        let (status, text) = self.post("/v1/passcode", &serde_json::to_string(sealed).unwrap());
        let reply: SealedReply = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not sealed: {status} {text}"));
        (status, open_reply(key, &reply).unwrap())
    }
}
