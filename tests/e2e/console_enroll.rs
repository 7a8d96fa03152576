//! Enrollment codes: issued with the CLI, a token registering with one is validated at once,
//! and the code works only once.

use crate::helpers::{DOMAIN, Fixture, PIN, RadclientAnswer, Token, radclient};

#[test]
fn an_enrollment_code_validates_a_registration_at_once_and_cannot_be_reused() {
    let f = Fixture::new(&[]);
    let code = f.server.cli_ok(&["enroll", "issue", "--domain", DOMAIN, "--username", "bob"]).trim().to_owned();
    assert_eq!(code.len(), 24, "the code alone on stdout: {code:?}");

    let bob = Token::new(&f.server);
    let url = f.server.token_url();
    let args = ["add-domain", DOMAIN, "--server", &url, "--enrollment-code", &code, "--pin-stdin"];
    let out = bob.run(&args, &format!("{PIN}\n"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("validated automatically as bob"), "{err}");
    let passcode = bob.passcode(PIN);
    assert_eq!(radclient(f.server.radius, "bob", &passcode, false), RadclientAnswer::Accept);

    let mallory = Token::new(&f.server);
    let again = mallory.run(&args, &format!("{PIN}\n"));
    assert!(!again.status.success(), "a used code must be refused");
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(err.contains("enrollment code"), "{err}");
    assert!(!f.server.cli_ok(&["user", "list", "--domain", DOMAIN]).contains("(pending)"), "nothing left pending");
}

#[test]
fn a_lowercase_code_typed_without_dashes_works_and_a_wrong_code_is_refused() {
    let f = Fixture::new(&[]);
    let code = f.server.cli_ok(&["enroll", "issue", "--domain", DOMAIN, "--username", "carol"]).trim().to_owned();
    let url = f.server.token_url();
    let wrong = Token::new(&f.server);
    let out = wrong.run(
        &["add-domain", DOMAIN, "--server", &url, "--enrollment-code", "AAAA-BBBB-CCCC-DDDD-EEEE", "--pin-stdin"],
        &format!("{PIN}\n"),
    );
    assert!(!out.status.success());
    let carol = Token::new(&f.server);
    let typed = code.replace('-', "").to_lowercase();
    let out = carol.run(
        &["add-domain", DOMAIN, "--server", &url, "--enrollment-code", &typed, "--pin-stdin"],
        &format!("{PIN}\n"),
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(carol.passcode(PIN).len(), 6);
}
