//! Unit tests of the keystore file: round trips, refusals, permissions and atomic writes.

use super::*;

/// Argon2's minimum cost, so the tests stay fast; production cost is checked separately.
const CHEAP: KdfCost = KdfCost { m_cost: 8, t_cost: 1, p_cost: 1 };

fn domain(code: &str) -> Domain {
    Domain {
        code: code.to_owned(),
        name: "Example".to_owned(),
        device_name: "example.com".to_owned(),
        server_url: "http://127.0.0.1:8388".to_owned(),
        server_public_key: b64(&[7u8; 32]),
        fingerprint: "abcd:ef01".to_owned(),
        device_id: "00ff".to_owned(),
        private_key: b64(b"not really a key"),
        registered_at: 1_700_000_000,
    }
}

fn saved_store(dir: &Path) -> PathBuf {
    let path = dir.join("sub").join("keystore.json");
    let contents = Contents { domains: vec![domain("127000000001"), domain("192168001010")] };
    save(&path, "correct horse", &contents, CHEAP).unwrap();
    path
}

fn rewrite(path: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let mut value: serde_json::Value = serde_json::from_slice(&fs::read(path).unwrap()).unwrap();
    edit(&mut value);
    fs::write(path, serde_json::to_vec(&value).unwrap()).unwrap();
}

#[test]
fn a_saved_store_opens_with_its_passphrase() {
    let dir = tempfile::tempdir().unwrap();
    let path = saved_store(dir.path());
    let contents = open(&path, "correct horse").unwrap();
    let codes: Vec<_> = contents.domains.iter().map(|d| d.code.as_str()).collect();
    assert_eq!(codes, ["127000000001", "192168001010"]);
    let d = contents.find("192168001010").unwrap();
    assert_eq!(d.private_key, b64(b"not really a key"));
    assert_eq!(d.registered_at, 1_700_000_000);
}

#[test]
fn production_cost_is_stored_and_used_to_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keystore.json");
    save(&path, "pass phrase", &Contents::default(), KdfCost::PRODUCTION).unwrap();
    let value: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    assert_eq!(value["version"], 1);
    assert_eq!(value["kdf"]["algorithm"], "argon2id");
    assert_eq!(value["kdf"]["m_cost"], 19456);
    assert_eq!(value["kdf"]["t_cost"], 2);
    assert_eq!(value["kdf"]["p_cost"], 1);
    assert_eq!(unb64(value["kdf"]["salt"].as_str().unwrap()).unwrap().len(), 16);
    assert!(open(&path, "pass phrase").unwrap().domains.is_empty());
}

#[test]
fn a_wrong_passphrase_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = saved_store(dir.path());
    let err = open(&path, "correct horse battery").unwrap_err();
    assert!(matches!(err, OpenError::WrongPassphrase), "{err}");
    assert_eq!(err.to_string(), "wrong passphrase (or the keystore was modified)");
}

#[test]
fn a_missing_store_says_how_to_create_one() {
    let dir = tempfile::tempdir().unwrap();
    let err = open(&dir.path().join("nope.json"), "x").unwrap_err();
    assert!(matches!(err, OpenError::Missing(_)));
    assert!(err.to_string().contains("run `tessera-token add-domain CODE` first"), "{err}");
}

#[test]
fn garbage_and_truncated_files_are_reported_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let path = saved_store(dir.path());
    let full = fs::read(&path).unwrap();
    for bad in [b"garbage \x00\xff".to_vec(), Vec::new(), full[..full.len() / 2].to_vec()] {
        fs::write(&path, &bad).unwrap();
        let err = open(&path, "correct horse").unwrap_err();
        assert!(matches!(err, OpenError::Corrupt(..)), "{err}");
        assert!(err.to_string().starts_with(&format!("keystore at {} is corrupt: ", path.display())));
    }
}

#[test]
fn a_tampered_ciphertext_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = saved_store(dir.path());
    rewrite(&path, |v| {
        let mut ct = unb64(v["ciphertext"].as_str().unwrap()).unwrap();
        ct[3] ^= 0x01;
        v["ciphertext"] = b64(&ct).into();
    });
    assert!(matches!(open(&path, "correct horse"), Err(OpenError::WrongPassphrase)));
    rewrite(&path, |v| v["ciphertext"] = b64(b"short").into());
    assert!(matches!(open(&path, "correct horse"), Err(OpenError::WrongPassphrase)));
}

#[test]
fn tampered_headers_are_refused_without_panicking() {
    let dir = tempfile::tempdir().unwrap();
    let path = saved_store(dir.path());
    let original = fs::read(&path).unwrap();
    let edits: [fn(&mut serde_json::Value); 9] = [
        |v| v["version"] = 2.into(),
        |v| v["kdf"]["algorithm"] = "scrypt".into(),
        |v| v["kdf"]["m_cost"] = u32::MAX.into(),
        |v| v["kdf"]["m_cost"] = 0.into(),
        |v| v["kdf"]["p_cost"] = 0.into(),
        |v| v["kdf"]["salt"] = "!!".into(),
        |v| v["kdf"]["salt"] = b64(b"abc").into(),
        |v| v["nonce"] = b64(&[0u8; 5]).into(),
        |v| v["extra"] = 1.into(),
    ];
    for edit in edits {
        fs::write(&path, &original).unwrap();
        rewrite(&path, edit);
        let err = open(&path, "correct horse").unwrap_err();
        assert!(matches!(err, OpenError::Corrupt(..)), "{err}");
    }
}

#[cfg(unix)]
#[test]
fn the_store_is_private_to_its_owner() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let path = saved_store(dir.path());
    assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    assert_eq!(fs::metadata(path.parent().unwrap()).unwrap().permissions().mode() & 0o777, 0o700);
}

#[test]
fn rewriting_replaces_the_file_and_leaves_no_temporary_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = saved_store(dir.path());
    let before = fs::read(&path).unwrap();
    let mut contents = open(&path, "correct horse").unwrap();
    contents.domains.retain(|d| d.code != "127000000001");
    save(&path, "correct horse", &contents, CHEAP).unwrap();
    assert_ne!(before, fs::read(&path).unwrap(), "fresh salt and nonce on every write");
    let names: Vec<_> = fs::read_dir(path.parent().unwrap()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, ["keystore.json"]);
    assert_eq!(open(&path, "correct horse").unwrap().domains.len(), 1);
}

#[test]
fn debug_output_hides_the_private_key() {
    let shown = format!("{:?}", domain("127000000001"));
    assert!(!shown.contains(&b64(b"not really a key")), "{shown}");
    assert!(shown.contains("<redacted>"));
}
