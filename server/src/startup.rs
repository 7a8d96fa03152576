//! Binding every listener (port 0 works) and running until a shutdown signal.

use std::future::Future;
use std::net::SocketAddr;

use anyhow::Context as _;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::watch;

use crate::config::ServeConfig;
use crate::db::Store;
use crate::http;
use crate::radius::Radius;
use crate::radius::clients::{ClientTable, REFRESH};
use crate::state::AppState;

/// A server with every socket bound, ready to run.
pub struct Application {
    state: AppState,
    clients: ClientTable,
    radius: UdpSocket,
    token: TcpListener,
    admin: TcpListener,
}

impl Application {
    /// Binds RADIUS, the token API and the admin listener.
    pub async fn build(store: Store, config: &ServeConfig) -> anyhow::Result<Self> {
        let state = AppState::new(store).await?;
        let clients = ClientTable::default();
        clients.reload(&state.store).await.context("loading network clients failed")?;
        let radius = UdpSocket::bind(config.radius_listen)
            .await
            .with_context(|| format!("cannot listen for RADIUS on {}/udp", config.radius_listen))?;
        enlarge_receive_buffer(&radius);
        let token = TcpListener::bind(config.token_listen)
            .await
            .with_context(|| format!("cannot listen for the token API on {}", config.token_listen))?;
        let admin = TcpListener::bind(config.admin_listen)
            .await
            .with_context(|| format!("cannot listen for the admin console on {}", config.admin_listen))?;
        Ok(Self { state, clients, radius, token, admin })
    }

    pub fn radius_addr(&self) -> SocketAddr {
        self.radius.local_addr().expect("bound socket has an address")
    }

    pub fn token_addr(&self) -> SocketAddr {
        self.token.local_addr().expect("bound socket has an address")
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin.local_addr().expect("bound socket has an address")
    }

    /// Serves until `shutdown` resolves, then lets requests in flight finish.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let (stop_tx, stop_rx) = watch::channel(false);
        let stopped = move || {
            let mut rx = stop_rx.clone();
            async move {
                let _ = rx.wait_for(|s| *s).await;
            }
        };

        let (cache, radius_task) = if self.state.engine.is_some() {
            serve_radius_on_own_thread(self.radius, self.state.clone(), self.clients.clone(), stopped())?
        } else {
            let radius = Radius::new(self.radius, self.state.clone(), self.clients.clone())
                .context("cannot set up the RADIUS socket")?;
            let cache = radius.cache();
            let stop = stopped();
            let task = tokio::spawn(async move {
                radius.run(stop).await;
                Ok(())
            });
            (cache, task)
        };
        tokio::spawn(maintain(self.state.clone(), self.clients.clone(), cache, stopped()));

        let api = http::api::router(self.state.clone()).into_make_service_with_connect_info::<SocketAddr>();
        let token_task = tokio::spawn(axum::serve(self.token, api).with_graceful_shutdown(stopped()).into_future());
        let console = http::admin::router(self.state.clone()).into_make_service_with_connect_info::<SocketAddr>();
        let admin_task = tokio::spawn(axum::serve(self.admin, console).with_graceful_shutdown(stopped()).into_future());

        shutdown.await;
        tracing::info!("shutting down: finishing requests in flight");
        let _ = stop_tx.send(true);
        let (r, t, a) = tokio::join!(radius_task, token_task, admin_task);
        r.context("RADIUS listener failed")?.context("RADIUS listener failed")?;
        t.context("token API failed")?.context("token API failed")?;
        a.context("admin listener failed")?.context("admin listener failed")?;
        // Nothing can be answered any more: a clean stop (db::runs) so the next start voids
        // no passcode even if the machine goes down in between.
        if let Some(engine) = &self.state.engine {
            engine.release().await.context("cannot record the clean stop in the database")?;
        }
        Ok(())
    }
}

type ReplyCache = std::sync::Arc<crate::radius::cache::ReplyCache>;

/// On SQLite, RADIUS runs on a thread of its own (`tessera-radius`) with a single-threaded
/// runtime: receiving, checking and answering a request, and the hand-over to the engine
/// thread, never cross to another runtime worker, and the token API and the console keep
/// the main runtime. Alternated runs (10 pairs, 300,000 users, BENCHMARKS.md): Accepts at
/// 16 in flight +8 % (medians 43,350 -> 47,000/s, more in 9 pairs of 10), at 64 unchanged;
/// p99 at 16 0.62 -> 0.66 ms. On PostgreSQL the checks go through the sqlx pool, whose
/// connections belong to the main runtime, so RADIUS stays there.
fn serve_radius_on_own_thread(
    socket: UdpSocket,
    state: AppState,
    clients: ClientTable,
    stop: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<(ReplyCache, tokio::task::JoinHandle<anyhow::Result<()>>)> {
    let socket = socket.into_std().context("cannot move the RADIUS socket to its thread")?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the RADIUS runtime")?;
    // Registered with the new runtime's reactor (entered here, driven by its thread below).
    let socket = {
        let _inside = runtime.enter();
        UdpSocket::from_std(socket)?
    };
    let radius = Radius::new(socket, state, clients).context("cannot set up the RADIUS socket")?;
    let cache = radius.cache();
    let thread = std::thread::Builder::new()
        .name("tessera-radius".into())
        .spawn(move || {
            make_way_for_the_engine();
            runtime.block_on(radius.run(stop))
        })
        .context("cannot start the RADIUS thread")?;
    let joined =
        tokio::task::spawn_blocking(move || thread.join().map_err(|_| anyhow::anyhow!("the RADIUS thread panicked")));
    Ok((cache, joined))
}

/// How much lower the RADIUS thread's priority is than the rest of the server's, in nice steps.
const RADIUS_NICE_STEPS: i32 = 3;

/// Lowers the RADIUS thread's priority a little below the engine's. The engine decides every
/// request and is the busiest thread; at equal priority, each time the RADIUS thread handed
/// it a batch the engine waited for a core behind the thread that had just woken it (on
/// average 0.12 ms per wake-up at 16 requests in flight, `perf sched`). Three steps lower,
/// the engine gets the core when it wakes, and the RADIUS thread still runs ahead of the
/// `SCHED_IDLE` crypto threads. Alternated on copies of a 1,000,000-user database: Accepts
/// at 16 in flight +12 % and at 64 +8 % (6 pairs, BENCHMARKS.md); one step gained less, six
/// lost. Raising one's own nice value needs no privilege. (On PostgreSQL there is no engine,
/// and RADIUS is served on the runtime's threads, at the server's priority.)
fn make_way_for_the_engine() {
    use rustix::process::{getpriority_process, setpriority_process};
    let result = getpriority_process(None).and_then(|now| setpriority_process(None, (now + RADIUS_NICE_STEPS).min(19)));
    if let Err(e) = result {
        tracing::debug!(error = %e, "cannot lower the priority of the RADIUS thread");
    }
}

/// Asks for a RADIUS receive buffer of [`RADIUS_RECEIVE_BUFFER`]: with Linux's default
/// (about 208 KiB) a burst of a few hundred requests overflows it and datagrams are dropped
/// before the server sees them. The kernel caps the request at `net.core.rmem_max`.
fn enlarge_receive_buffer(socket: &UdpSocket) {
    let socket = socket2::SockRef::from(socket);
    if let Err(e) = socket.set_recv_buffer_size(RADIUS_RECEIVE_BUFFER) {
        tracing::warn!(error = %e, "cannot enlarge the RADIUS receive buffer");
    }
    match socket.recv_buffer_size() {
        Ok(n) if n < RADIUS_RECEIVE_BUFFER => tracing::info!(
            bytes = n,
            "RADIUS receive buffer capped by net.core.rmem_max; raise it for bursts of thousands of requests"
        ),
        _ => {}
    }
}

/// Receive buffer asked for on the RADIUS socket.
const RADIUS_RECEIVE_BUFFER: usize = 4 << 20;

/// Background upkeep: reload network clients, expire cached answers, prune old rows.
async fn maintain(
    state: AppState,
    clients: ClientTable,
    cache: std::sync::Arc<crate::radius::cache::ReplyCache>,
    stop: impl Future<Output = ()>,
) {
    tokio::pin!(stop);
    let mut tick = tokio::time::interval(REFRESH);
    let mut ticks: u64 = 0;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = &mut stop => return,
        }
        ticks += 1;
        if let Err(e) = clients.reload(&state.store).await {
            tracing::warn!(error = format!("{e:#}"), "reloading network clients failed; keeping the previous table");
        }
        if ticks.is_multiple_of(20) {
            cache.expire();
        }
        if ticks.is_multiple_of(120) {
            let idle_before = crate::now() - crate::service::admins::IDLE_SECS;
            if let Err(e) = state.store.prune_sessions(idle_before).await {
                tracing::warn!(error = format!("{e:#}"), "pruning console sessions failed");
            }
            // Sign-in failures count for 15 minutes; a day of history is plenty for operators.
            if let Err(e) = state.store.prune_login_failures(crate::now() - 24 * 3600).await {
                tracing::warn!(error = format!("{e:#}"), "pruning sign-in failures failed");
            }
            match state.store.prune(crate::now()).await {
                Ok(n) if n > 0 => tracing::debug!(rows = n, "pruned expired rows"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = format!("{e:#}"), "pruning failed"),
            }
        }
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
