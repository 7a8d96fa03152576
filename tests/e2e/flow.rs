//! The WiKID-style flow end to end: register, validate, passcode, RADIUS.

use std::time::Duration;

use crate::console_support::Console;
use crate::helpers::{DOMAIN, Fixture, PIN, RadclientAnswer, Token, eventually, radclient};
use crate::radius_client::{Answer, Client, Ma};

#[test]
fn a_validated_token_gets_a_passcode_that_radclient_accepts_exactly_once() {
    let f = Fixture::new(&[]);
    let passcode = f.alice.passcode(PIN);
    assert_eq!(passcode.len(), 6);
    assert!(passcode.bytes().all(|b| b.is_ascii_digit()));
    assert_eq!(radclient(f.server.radius, "alice", &passcode, false), RadclientAnswer::Accept);
    assert_eq!(radclient(f.server.radius, "alice", &passcode, false), RadclientAnswer::Reject);
    let log = f.server.cli_ok(&["user", "list", "--domain", DOMAIN]);
    assert!(log.contains("alice  enabled"), "{log}");
}

#[test]
fn a_passcode_sent_under_another_users_name_is_rejected() {
    let f = Fixture::new(&[]);
    let bob = Token::new(&f.server);
    let rc = bob.register("135791");
    f.server.validate(&rc, "bob");
    let passcode = f.alice.passcode(PIN);
    assert_eq!(radclient(f.server.radius, "bob", &passcode, false), RadclientAnswer::Reject);
    assert_eq!(radclient(f.server.radius, "carol", &passcode, false), RadclientAnswer::Reject);
    // Rejections under other names did not burn alice's passcode.
    assert_eq!(radclient(f.server.radius, "alice", &passcode, false), RadclientAnswer::Accept);
}

#[test]
fn a_wrong_pin_gets_no_passcode_and_says_how_many_attempts_are_left() {
    let f = Fixture::new(&[]);
    let out = f.alice.passcode_output("999999");
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty(), "no passcode on stdout");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("wrong PIN") && err.contains("4 attempts left"), "{err}");
}

#[test]
fn a_device_locks_after_the_limit_and_the_cli_unlocks_it() {
    let f = Fixture::new(&["--max-pin-failures", "3"]);
    for _ in 0..3 {
        assert_eq!(f.alice.passcode_output("000000").status.code(), Some(1));
    }
    // Locked: even the right PIN gets nothing.
    let out = f.alice.passcode_output(PIN);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("locked"), "{}", String::from_utf8_lossy(&out.stderr));
    let listing = f.server.cli_ok(&["user", "list", "--domain", DOMAIN]);
    assert!(listing.contains("locked"), "{listing}");

    f.server.cli_ok(&["user", "unlock", "alice", "--domain", DOMAIN]);
    let passcode = f.alice.passcode(PIN);
    assert_eq!(radclient(f.server.radius, "alice", &passcode, false), RadclientAnswer::Accept);
}

#[test]
fn an_expired_passcode_is_rejected() {
    let f = Fixture::new(&["--passcode-lifetime", "2"]);
    let passcode = f.alice.passcode(PIN);
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(radclient(f.server.radius, "alice", &passcode, false), RadclientAnswer::Reject);
    assert!(f.server.log().contains("passcode expired"), "the log says why");
}

#[test]
fn a_disabled_user_is_rejected_until_enabled_again() {
    let f = Fixture::new(&[]);
    let client = Client::new(f.server.radius, crate::helpers::SECRET);
    f.server.cli_ok(&["user", "disable", "alice", "--domain", DOMAIN]);
    let p = f.alice.passcode_output(PIN);
    assert_eq!(p.status.code(), Some(1), "a disabled user's token gets no passcode");
    f.server.cli_ok(&["user", "enable", "alice", "--domain", DOMAIN]);
    let passcode = f.alice.passcode(PIN);
    f.server.cli_ok(&["user", "disable", "alice", "--domain", DOMAIN]);
    assert_eq!(client.auth("alice", &passcode, Ma::Valid), Answer::Reject);
    f.server.cli_ok(&["user", "enable", "alice", "--domain", DOMAIN]);
    assert_eq!(client.auth("alice", &passcode, Ma::Valid), Answer::Accept);
}

#[test]
fn a_disabled_devices_passcode_is_rejected_until_the_device_is_enabled_again() {
    let f = Fixture::new(&[]);
    let client = Client::new(f.server.radius, crate::helpers::SECRET);
    let console = Console::signed_in(&f.server);
    let id = alices_device(&console);
    let change = |action: &str| post_device_form(&console, &format!("/devices/{id}"), ("action", action));
    let passcode = f.alice.passcode(PIN);
    // A wrong passcode matches nothing and reads no device: still a plain wrong passcode.
    assert_eq!(client.auth("alice", "000000", Ma::Valid), Answer::Reject);
    change("disable");
    assert_eq!(client.auth("alice", &passcode, Ma::Valid), Answer::Reject);
    assert!(f.server.log().contains("device disabled"), "rejected for the device, not the passcode");
    change("enable");
    assert_eq!(client.auth("alice", &passcode, Ma::Valid), Answer::Accept);
}

/// The id of alice's device, from the console's users page.
fn alices_device(console: &Console) -> String {
    let page = console.get(&format!("/users?domain={DOMAIN}")).body;
    let (_, after) = page.split_once("action=\"/devices/").expect("alice's device on the users page");
    after.split('"').next().unwrap().to_owned()
}

/// Posts a device form of the console (its CSRF token, the domain and `field`) to `path`;
/// the console must answer with its redirect.
fn post_device_form(console: &Console, path: &str, field: (&str, &str)) {
    let form = [("csrf", console.csrf()), ("domain", DOMAIN.to_owned()), (field.0, field.1.to_owned())];
    let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
    assert_eq!(console.post(path, &form).status, 303, "{path} {field:?}");
}

/// The engine reads a device's flag from the index of disabled devices, where a removed
/// device is not: its outstanding passcode must be gone with it.
#[test]
fn a_deleted_devices_outstanding_passcode_is_rejected() {
    let f = Fixture::new(&[]);
    let client = Client::new(f.server.radius, crate::helpers::SECRET);
    let console = Console::signed_in(&f.server);
    let id = alices_device(&console);
    let passcode = f.alice.passcode(PIN);
    post_device_form(&console, &format!("/devices/{id}/delete"), ("confirm", "yes"));
    assert_eq!(client.auth("alice", &passcode, Ma::Valid), Answer::Reject);
    assert!(f.server.log().contains("wrong passcode"), "rejected as matching nothing: {}", f.server.log());
}

#[test]
fn a_network_client_removed_while_serving_is_dropped_within_a_second() {
    let f = Fixture::new(&[]);
    assert_eq!(Client::new(f.server.radius, crate::helpers::SECRET).auth("alice", "000000", Ma::Valid), Answer::Reject);
    let client = Client::new(f.server.radius, crate::helpers::SECRET).with_timeout(Duration::from_millis(500));
    f.server.cli_ok(&["client", "remove", "loopback"]);
    let took = eventually(Duration::from_secs(3), || client.auth("alice", "000000", Ma::Valid) == Answer::Dropped);
    let took = took.expect("requests of a removed client must be dropped");
    assert!(took < Duration::from_millis(1500), "dropped only after {took:?}");
    // And a passcode is not accepted through the removed client.
    let passcode = f.alice.passcode(PIN);
    assert_eq!(client.auth("alice", &passcode, Ma::Valid), Answer::Dropped);
}

#[test]
fn a_network_client_added_while_serving_is_answered_within_a_second() {
    let f = Fixture::new(&[]);
    f.server.cli_ok(&["client", "remove", "loopback"]);
    let client = Client::new(f.server.radius, crate::helpers::SECRET).with_timeout(Duration::from_millis(500));
    f.server.add_client("again", "auto");
    let took = eventually(Duration::from_secs(3), || client.auth("alice", "000000", Ma::Valid) == Answer::Reject);
    assert!(took.expect("the new client must be answered") < Duration::from_millis(1500));
}

#[test]
fn a_pending_registration_gets_no_passcode_until_validated() {
    let f = Fixture::new(&[]);
    let dave = Token::new(&f.server);
    let rc = dave.register("112233");
    let out = dave.passcode_output("112233");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not validated"), "{}", String::from_utf8_lossy(&out.stderr));
    let wrong = f.server.cli(&[
        "user",
        "validate",
        "--domain",
        DOMAIN,
        "--registration-code",
        "000000000000",
        "--username",
        "dave",
    ]);
    assert_eq!(wrong.status.code(), Some(1));
    f.server.validate(&rc, "dave");
    let passcode = dave.passcode("112233");
    assert_eq!(radclient(f.server.radius, "dave", &passcode, true), RadclientAnswer::Accept);
}

#[test]
fn two_registrations_at_once_on_one_keystore_keep_both_domains() {
    let f = Fixture::new(&[]);
    f.server.cli_ok(&["domain", "add", "--name", "Second", "--code", "127000000002"]);
    f.server.cli_ok(&["domain", "add", "--name", "Third", "--code", "127000000003"]);
    let url = f.server.token_url();
    // alice's keystore already holds the first domain; two tokens add the others at once.
    // Each reads the keystore, spends a second or so on its key and the server, then
    // writes: without the keystore's lock the second write drops the first one's domain.
    let (pin1, pin2) = (format!("{PIN}\n"), format!("{PIN}\n"));
    let second = f.alice.spawn(&["add-domain", "127000000002", "--server", &url, "--pin-stdin"], &pin1);
    let third = f.alice.spawn(&["add-domain", "127000000003", "--server", &url, "--pin-stdin"], &pin2);
    for child in [second, third] {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "add-domain failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let list = f.alice.run(&["list"], "");
    assert!(list.status.success(), "{}", String::from_utf8_lossy(&list.stderr));
    let listed = String::from_utf8_lossy(&list.stdout);
    for code in [DOMAIN, "127000000002", "127000000003"] {
        assert!(listed.contains(code), "domain {code} missing from the keystore:\n{listed}");
    }
    // The first domain's device key is still there and works.
    let out = f.alice.run(&["passcode", DOMAIN, "--pin-stdin"], &format!("{PIN}\n"));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}
