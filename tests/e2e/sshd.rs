//! The seed deployment end to end: a real OpenSSH `sshd` on a loopback port whose PAM
//! service uses `pam_radius_auth` pointed at Tessera, and a login with the passcode through
//! keyboard-interactive (driven by `sshpass`). Needs root and the Debian packages
//! openssh-server and sshpass (scripts/test installs them).
//!
//! sshd names its PAM service after the name it was started under, so this sshd runs
//! through a symlink called `tessera-e2e-sshd-<random>` and uses /etc/pam.d/ of that name;
//! the system's own sshd configuration is never touched. Unlike pamtester, sshd needs a
//! local account for the user, so the test creates one (and deletes it afterwards).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::helpers::{PIN, SECRET, TestServer, Token, eventually};
use crate::radius_client::{Answer, Client, Ma};

/// Everything the test puts on the system, removed on drop even when the test fails.
struct SshSetup {
    user: String,
    pam_file: PathBuf,
    sshd: Option<Child>,
    port: u16,
    log: PathBuf,
}

impl Drop for SshSetup {
    fn drop(&mut self) {
        if let Some(mut c) = self.sshd.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_file(&self.pam_file);
        let _ = Command::new("userdel").arg(&self.user).output();
    }
}

fn run_ok(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
}

impl SshSetup {
    fn start(server: &TestServer, dir: &Path) -> Self {
        let tag = format!("{:08x}", rand::random::<u32>());
        let name = format!("tessera-e2e-sshd-{tag}");
        let mut setup = Self {
            user: format!("te2e{tag}"),
            pam_file: PathBuf::from("/etc/pam.d").join(&name),
            sshd: None,
            port: 0,
            log: dir.join("sshd.log"),
        };
        run_ok(
            Command::new("useradd")
                .args(["--no-create-home", "--home-dir", "/nonexistent", "--shell", "/bin/sh"])
                .arg(&setup.user),
        );
        let conf = dir.join("pam_radius_auth.conf");
        std::fs::write(&conf, format!("{} {SECRET} 5\n", server.radius)).unwrap();
        let pam = format!(
            "auth required pam_radius_auth.so conf={}\naccount required pam_permit.so\nsession required pam_permit.so\n",
            conf.display()
        );
        std::fs::write(&setup.pam_file, pam).expect("the sshd test must run as root (CI does)");

        let key = dir.join("host_key");
        run_ok(Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", ""]).arg("-f").arg(&key));
        setup.port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let config = dir.join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "Port {}\nListenAddress 127.0.0.1\nHostKey {}\nPidFile {}\nUsePAM yes\n\
                 KbdInteractiveAuthentication yes\nPasswordAuthentication no\nPubkeyAuthentication no\n\
                 AuthenticationMethods keyboard-interactive\nPermitRootLogin no\nStrictModes no\nLogLevel VERBOSE\n",
                setup.port,
                key.display(),
                dir.join("sshd.pid").display()
            ),
        )
        .unwrap();
        // Privilege separation directory, which the openssh-server package creates at boot.
        std::fs::create_dir_all("/run/sshd").unwrap();
        let sshd = dir.join(&name);
        std::os::unix::fs::symlink(
            which("sshd").expect("sshd (Debian package openssh-server) must be installed; scripts/test installs it"),
            &sshd,
        )
        .unwrap();
        let log = std::fs::File::create(&setup.log).unwrap();
        setup.sshd = Some(
            Command::new(&sshd)
                .args(["-D", "-e", "-f"])
                .arg(&config)
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap(),
        );
        let up =
            eventually(Duration::from_secs(10), || std::net::TcpStream::connect(("127.0.0.1", setup.port)).is_ok());
        assert!(up.is_some(), "sshd did not start: {}", std::fs::read_to_string(&setup.log).unwrap_or_default());
        setup
    }

    /// `ssh user@127.0.0.1 echo tessera-ok`, answering the keyboard-interactive prompt with
    /// `passcode`; true when the command ran.
    fn login(&self, passcode: &str) -> bool {
        let out = Command::new("sshpass")
            .args(["-p", passcode, "ssh", "-p", &self.port.to_string()])
            .args(["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"])
            .args(["-o", "PreferredAuthentications=keyboard-interactive", "-o", "PubkeyAuthentication=no"])
            .args(["-o", "NumberOfPasswordPrompts=1", "-o", "ConnectTimeout=10"])
            .arg(format!("{}@127.0.0.1", self.user))
            .args(["echo", "tessera-ok"])
            .stdin(Stdio::null())
            .output()
            .expect("sshpass (Debian package sshpass) must be installed; scripts/test installs it");
        String::from_utf8_lossy(&out.stdout).contains("tessera-ok")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

fn which(program: &str) -> Option<PathBuf> {
    ["/usr/sbin", "/usr/bin", "/sbin", "/bin"].iter().map(|d| Path::new(d).join(program)).find(|p| p.exists())
}

#[test]
fn sshd_with_pam_radius_auth_logs_in_with_a_passcode_once() {
    let server = TestServer::start();
    server.add_domain(&[]);
    server.add_client("sshd", "auto");
    let dir = tempfile::tempdir().unwrap();
    let ssh = SshSetup::start(&server, dir.path());
    let token = Token::new(&server);
    let rc = token.register(PIN);
    server.validate(&rc, &ssh.user);
    // The new client is picked up within a second; until then its requests are dropped.
    let probe = Client::new(server.radius, SECRET).with_timeout(Duration::from_millis(300));
    eventually(Duration::from_secs(5), || probe.auth("nobody", "0", Ma::None) != Answer::Dropped).expect("client live");

    let passcode = token.passcode(PIN);
    assert!(ssh.login(&passcode), "a fresh passcode logs in; sshd log:\n{}\nserver log:\n{}", ssh.log(), server.log());
    assert!(ssh.log().contains("Accepted keyboard-interactive/pam"), "{}", ssh.log());
    assert!(!ssh.login(&passcode), "the same passcode again is refused");
    assert!(!ssh.login("000000"), "a guessed passcode is refused");
    let log = server.log();
    assert!(log.contains("passcode already used") && log.contains("wrong passcode"), "{log}");
}
