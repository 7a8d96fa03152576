//! `tessera-server serve`.

use crate::cli::ServeArgs;
use crate::config::{self, FileConfig, ServeConfig};
use crate::db::{Store, redact_url};
use crate::startup::{Application, shutdown_signal};

pub async fn run(store: Store, file: &FileConfig, args: ServeArgs, url: &str) -> anyhow::Result<()> {
    let config = ServeConfig {
        radius_listen: config::layer(args.radius_listen, file.radius_listen, config::DEFAULT_RADIUS_LISTEN),
        token_listen: config::layer(args.token_listen, file.token_listen, config::DEFAULT_TOKEN_LISTEN),
        admin_listen: config::layer(args.admin_listen, file.admin_listen, config::DEFAULT_ADMIN_LISTEN),
    };
    let app = Application::build(store, &config).await?;
    tracing::info!(database = redact_url(url), "database ready");
    // One worker on SQLite, one per core otherwise (main.rs, `commands::serves_sqlite`).
    let workers = tokio::runtime::Handle::current().metrics().num_workers();
    tracing::info!(workers, "async runtime (token API, console) running");
    // One line per listener with its real address, on stdout, for operators and scripts.
    println!("radius listening on {}/udp", app.radius_addr());
    println!("token api listening on http://{}", app.token_addr());
    println!("admin console listening on http://{}", app.admin_addr());
    app.run_until_stopped(shutdown_signal()).await?;
    tracing::info!("stopped");
    Ok(())
}
