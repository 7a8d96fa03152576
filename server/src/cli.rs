//! The `tessera-server` command line (the interface contract in PRODUCT.md).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::domain::MessageAuthenticatorMode;

/// Tessera: two-factor authentication with public-key software tokens and RADIUS.
///
/// Users register a software token (`tessera-token`) with a domain and get one-time
/// passcodes; network clients (SSH via pam_radius_auth, VPNs, gateways) check them over
/// RADIUS. Every command works while `serve` runs on the same database.
#[derive(Debug, Parser)]
#[command(name = "tessera-server", version, propagate_version = true)]
pub struct Cli {
    /// Database URL: sqlite://FILE (created if missing) or postgres://USER@HOST/DB
    /// [default: sqlite://tessera.db]
    #[arg(long, global = true, env = "TESSERA_DATABASE_URL", value_name = "URL", hide_env_values = true)]
    pub database: Option<String>,
    /// TOML configuration file; every key optional, command-line flags win
    #[arg(long, global = true, env = "TESSERA_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Apply migrations, then serve RADIUS, the token API and the admin listener
    Serve(ServeArgs),
    /// Create and list domains
    #[command(subcommand)]
    Domain(DomainCommand),
    /// Add, list and remove RADIUS network clients
    #[command(subcommand)]
    Client(ClientCommand),
    /// Validate registrations and manage users
    #[command(subcommand)]
    User(UserCommand),
    /// Issue one-time enrollment codes (automated validation of a registration)
    #[command(subcommand)]
    Enroll(EnrollCommand),
    /// Manage web console administrators
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Check the configuration and the database and report what is wrong
    Check(CheckArgs),
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// RADIUS address (UDP) [default: 0.0.0.0:1812]; port 0 picks a free port
    #[arg(long, env = "TESSERA_RADIUS_LISTEN", value_name = "ADDR")]
    pub radius_listen: Option<SocketAddr>,
    /// Token API address (HTTP) [default: 0.0.0.0:8388]
    #[arg(long, env = "TESSERA_TOKEN_LISTEN", value_name = "ADDR")]
    pub token_listen: Option<SocketAddr>,
    /// Admin listener address (HTTP) [default: 127.0.0.1:8080]
    #[arg(long, env = "TESSERA_ADMIN_LISTEN", value_name = "ADDR")]
    pub admin_listen: Option<SocketAddr>,
}

#[derive(Debug, Subcommand)]
pub enum DomainCommand {
    /// Create a domain and its server key
    Add(DomainAddArgs),
    /// One line per domain: code, name, settings, server key fingerprint
    List,
}

#[derive(Debug, Args)]
pub struct DomainAddArgs {
    /// Domain name shown to administrators
    #[arg(long)]
    pub name: String,
    /// 12-digit domain code: the token API's IPv4 address, each octet zero-padded
    /// (127.0.0.1 is 127000000001)
    #[arg(long)]
    pub code: String,
    /// Seconds a passcode stays valid
    #[arg(long, default_value_t = 60, value_name = "SECS")]
    pub passcode_lifetime: u32,
    /// Minimum PIN length (at least 4)
    #[arg(long, default_value_t = 6, value_name = "N")]
    pub pin_min_length: u32,
    /// Digits in a passcode
    #[arg(long, default_value_t = 6, value_name = "N")]
    pub passcode_length: u32,
    /// Wrong PINs before a device locks
    #[arg(long, default_value_t = 5, value_name = "N")]
    pub max_pin_failures: u32,
    /// Name tokens show for this domain [default: the domain name]
    #[arg(long, value_name = "NAME")]
    pub device_name: Option<String>,
    /// Hours an unvalidated registration stays pending
    #[arg(long, default_value_t = 24, value_name = "HOURS")]
    pub registration_lifetime: u32,
    /// Wrong passcodes within the window before RADIUS rejects a user without checking
    #[arg(long, default_value_t = crate::service::throttle::DEFAULT_MAX_FAILURES, value_name = "N")]
    pub max_passcode_failures: u32,
    /// Seconds over which wrong passcodes are counted (throttling lifts as they age out)
    #[arg(long, default_value_t = crate::service::throttle::DEFAULT_WINDOW_SECS, value_name = "SECS")]
    pub passcode_failure_window: u32,
}

#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Add a RADIUS network client
    Add(ClientAddArgs),
    /// List network clients (secrets are not shown)
    List,
    /// Remove a network client; its requests are dropped from then on
    Remove {
        /// Client name
        name: String,
    },
}

#[derive(Debug, Args)]
pub struct ClientAddArgs {
    /// Client name
    #[arg(long)]
    pub name: String,
    /// Source address: one IP or a CIDR block
    #[arg(long, value_name = "IP_OR_CIDR")]
    pub address: String,
    /// RADIUS shared secret (12 to 128 characters; prefer 16 or more)
    #[arg(long, env = "TESSERA_CLIENT_SECRET", hide_env_values = true)]
    pub secret: String,
    /// Code of the domain whose users this client may check
    #[arg(long, value_name = "CODE")]
    pub domain: String,
    /// Message-Authenticator policy: require, auto (required once the client has sent one)
    /// or off
    #[arg(long, default_value = "auto", value_name = "MODE", value_parser = parse_mode)]
    pub message_authenticator: MessageAuthenticatorMode,
}

fn parse_mode(s: &str) -> Result<MessageAuthenticatorMode, String> {
    s.parse()
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Bind a pending registration to a username (manual validation)
    Validate {
        /// Domain code
        #[arg(long, value_name = "CODE")]
        domain: String,
        /// The registration code the user's token printed
        #[arg(long, value_name = "RC")]
        registration_code: String,
        /// Username the network clients will send
        #[arg(long, value_name = "NAME")]
        username: String,
    },
    /// Users, their devices and states, and pending registrations
    List {
        /// Domain code
        #[arg(long, value_name = "CODE")]
        domain: String,
    },
    /// Refuse passcodes for a user from now on
    Disable(UserArgs),
    /// Allow a disabled user again
    Enable(UserArgs),
    /// Clear the wrong-PIN count of a user's devices
    Unlock(UserArgs),
}

#[derive(Debug, Args)]
pub struct UserArgs {
    /// Username
    pub name: String,
    /// Domain code
    #[arg(long, value_name = "CODE")]
    pub domain: String,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Also try binding the listeners' addresses (fails while a server runs on them)
    #[arg(long)]
    pub bind: bool,
}

#[derive(Debug, Subcommand)]
pub enum EnrollCommand {
    /// Print a one-time enrollment code for USERNAME: a token registering with it
    /// (`tessera-token add-domain CODE --enrollment-code EC`) is validated at once
    Issue {
        /// Domain code
        #[arg(long, value_name = "CODE")]
        domain: String,
        /// Username the registration will be bound to
        #[arg(long, value_name = "NAME")]
        username: String,
        /// Days the code stays valid
        #[arg(long, default_value_t = crate::service::enroll::DEFAULT_DAYS, value_name = "DAYS")]
        days: u32,
    },
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Create a console administrator; the password is asked twice on the terminal, or read
    /// as one line of stdin when stdin is not a terminal (at least 12 characters)
    Add {
        /// Administrator name for the console's sign-in page
        username: String,
    },
}
