//! `dportage coordinator …`: run the coordinator, or administer its blacklist.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use super::service::{Coordinator, CoordinatorConfig};
use super::store;
use crate::exitcode;
use crate::network::caller::CoordinatorClient;
use crate::network::identity::{self, Identity, IdentityId};

#[derive(Debug, Parser)]
#[command(
    name = "dportage coordinator",
    about = "Run the dportage network coordinator (JSON over HTTP), or administer its blacklist",
    after_help = "API: docs/coordinator-api.md. The bound address is printed on stdout as \
                  `dportage coordinator listening on http://ADDR:PORT`."
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, Args)]
struct RunArgs {
    /// Address to listen on, e.g. 0.0.0.0:3700 (port 0 picks a free port).
    #[arg(long, value_name = "ADDR:PORT")]
    listen: Option<SocketAddr>,
    /// Directory for the database (created if missing).
    #[arg(long, value_name = "DIR", global = true)]
    data: Option<PathBuf>,
    /// Seconds without a heartbeat after which a host leaves the pool.
    #[arg(long, value_name = "SECS", default_value_t = 600)]
    expiry: u64,
    /// Public key (64 hex digits, from identity.pub) allowed to use /v1/admin/*. Repeatable.
    #[arg(long = "admin-key", value_name = "HEX")]
    admin_keys: Vec<String>,
    /// Hosts each job is sent to, as told to clients.
    #[arg(long, default_value_t = 2)]
    redundancy: u32,
    /// Also write the bound address (ADDR:PORT) to this file once listening.
    #[arg(long, value_name = "FILE")]
    address_file: Option<PathBuf>,
    /// New identities accepted per /24 (IPv6 /48) network per hour.
    #[arg(long, default_value_t = 256)]
    registrations_per_network: u32,
    /// Distinct reporter networks (/24, IPv6 /48) needed for a blacklisting by
    /// two reporters; with fewer, a third reporter is needed.
    #[arg(long, value_name = "N", default_value_t = 1)]
    reporter_networks: u32,
    /// More log output (RUST_LOG overrides).
    #[arg(short, long)]
    verbose: bool,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// List or lift blacklist entries.
    Blacklist {
        #[command(subcommand)]
        action: BlacklistAction,
        /// Administer a running coordinator over HTTP, signing with the identity in
        /// $DPORTAGE_DIR (which must be one of its --admin-key). Without it, --data
        /// opens the database directly (works while the coordinator runs; it picks
        /// the change up within a second).
        #[arg(long, value_name = "URL", global = true)]
        coordinator: Option<String>,
    },
    /// Show the mismatch reports stored against an identity.
    Reports {
        /// The reported identity (64 hex digits).
        id: String,
    },
}

#[derive(Debug, Subcommand)]
enum BlacklistAction {
    /// Print blacklisted identities: ID, since (unix seconds), reason.
    List,
    /// Remove an identity from the blacklist; its old reports stop counting.
    Lift {
        /// The identity (64 hex digits).
        id: String,
    },
}

/// `dportage coordinator ARGS…`.
pub fn coordinator_main(args: Vec<OsString>) -> i32 {
    let argv = std::iter::once(OsString::from("dportage coordinator")).chain(args);
    let cli = match Cli::try_parse_from(argv) {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                exitcode::BAD_ARGUMENTS
            } else {
                0
            };
        }
    };
    crate::logging::init(cli.run.verbose, "warn");
    match cli.command {
        None => run(cli.run),
        Some(Command::Blacklist {
            action,
            coordinator,
        }) => blacklist(action, coordinator, cli.run.data),
        Some(Command::Reports { id }) => reports(&id, cli.run.data),
    }
}

fn run(args: RunArgs) -> i32 {
    let (Some(listen), Some(data)) = (args.listen, args.data) else {
        eprintln!(
            "dportage coordinator: --listen ADDR:PORT and --data DIR are required (see --help)"
        );
        return exitcode::BAD_ARGUMENTS;
    };
    if args.expiry == 0 {
        eprintln!("dportage coordinator: --expiry must be at least 1 second");
        return exitcode::BAD_ARGUMENTS;
    }
    let mut admin_keys = Vec::new();
    for k in &args.admin_keys {
        match k.parse::<IdentityId>() {
            Ok(id) => admin_keys.push(id),
            Err(e) => {
                eprintln!("dportage coordinator: --admin-key: {e}");
                return exitcode::BAD_ARGUMENTS;
            }
        }
    }
    let mut cfg = CoordinatorConfig::new(listen, data);
    cfg.expiry = Duration::from_secs(args.expiry);
    cfg.admin_keys = admin_keys;
    cfg.redundancy = args.redundancy.clamp(1, 8);
    cfg.registrations_per_network_per_hour = args.registrations_per_network;
    cfg.blacklist_rule.min_networks = args.reporter_networks.clamp(1, 8);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("dportage coordinator: cannot start the runtime: {e}");
            return exitcode::DISTCC_FAILED;
        }
    };
    rt.block_on(async move {
        let coordinator = match Coordinator::bind(cfg).await {
            Ok(c) => c,
            Err(e) => {
                eprintln!("dportage coordinator: {e}");
                return match e {
                    super::service::CoordinatorError::Bind { .. } => exitcode::BIND_FAILED,
                    _ => exitcode::IO_ERROR,
                };
            }
        };
        let addr = coordinator.local_addr();
        {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "dportage coordinator listening on http://{addr}");
            let _ = out.flush();
        }
        if let Some(path) = args.address_file {
            let tmp = path.with_extension("tmp");
            if let Err(e) =
                std::fs::write(&tmp, format!("{addr}\n")).and_then(|_| std::fs::rename(&tmp, &path))
            {
                eprintln!("dportage coordinator: cannot write {}: {e}", path.display());
            }
        }
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("dportage coordinator: cannot watch SIGTERM: {e}");
                    return exitcode::DISTCC_FAILED;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        coordinator.shutdown();
        0
    })
}

fn blacklist(action: BlacklistAction, coordinator: Option<String>, data: Option<PathBuf>) -> i32 {
    if let Some(url) = coordinator {
        return blacklist_http(action, &url);
    }
    let Some(data) = data else {
        eprintln!("dportage coordinator blacklist: give --data DIR (the coordinator's database) or --coordinator URL");
        return exitcode::BAD_ARGUMENTS;
    };
    let path = data.join(store::DB_FILE);
    if !path.exists() {
        eprintln!("dportage coordinator blacklist: {} does not exist; is --data the coordinator's directory?", path.display());
        return exitcode::NO_SUCH_FILE;
    }
    let mut conn = match store::open_connection(&data) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("dportage coordinator blacklist: {e}");
            return exitcode::IO_ERROR;
        }
    };
    match action {
        BlacklistAction::List => match store::read_blacklist(&conn, &path) {
            Ok(entries) => {
                for e in entries {
                    println!("{}\t{}\t{}", e.id, e.since, e.reason);
                }
                0
            }
            Err(e) => {
                eprintln!("dportage coordinator blacklist: {e}");
                exitcode::IO_ERROR
            }
        },
        BlacklistAction::Lift { id } => {
            let id = match id.parse::<IdentityId>() {
                Ok(id) => id,
                Err(e) => {
                    eprintln!("dportage coordinator blacklist lift: {e}");
                    return exitcode::BAD_ARGUMENTS;
                }
            };
            match store::lift(&mut conn, &path, &id) {
                Ok(true) => {
                    println!("lifted {id}");
                    0
                }
                Ok(false) => {
                    eprintln!("dportage coordinator blacklist lift: {id} is not blacklisted");
                    exitcode::NO_SUCH_FILE
                }
                Err(e) => {
                    eprintln!("dportage coordinator blacklist lift: {e}");
                    exitcode::IO_ERROR
                }
            }
        }
    }
}

fn blacklist_http(action: BlacklistAction, url: &str) -> i32 {
    let dir = identity::dportage_dir();
    let result = (|| -> Result<i32, crate::network::NetworkError> {
        let me = Arc::new(Identity::load_or_create(&dir)?);
        let client = CoordinatorClient::new(url, me)?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| crate::network::NetworkError::io("starting a runtime".into(), e))?;
        rt.block_on(async {
            match action {
                BlacklistAction::List => {
                    for e in client.admin_blacklist().await?.entries {
                        println!("{}\t{}\t{}", e.id, e.since, e.reason);
                    }
                    Ok(0)
                }
                BlacklistAction::Lift { id } => {
                    let id = id
                        .parse::<IdentityId>()
                        .map_err(crate::network::NetworkError::Usage)?;
                    let r = client.admin_lift(id).await?;
                    if r.lifted {
                        println!("lifted {id}");
                        Ok(0)
                    } else {
                        eprintln!("dportage coordinator blacklist lift: {id} is not blacklisted");
                        Ok(exitcode::NO_SUCH_FILE)
                    }
                }
            }
        })
    })();
    result.unwrap_or_else(|e| {
        eprintln!("dportage coordinator blacklist: {e}");
        match e {
            crate::network::NetworkError::Api { code, .. } if code == "not_admin" => {
                exitcode::ACCESS_DENIED
            }
            crate::network::NetworkError::Unreachable { .. } => exitcode::CONNECT_FAILED,
            _ => exitcode::DISTCC_FAILED,
        }
    })
}

fn reports(id: &str, data: Option<PathBuf>) -> i32 {
    let Some(data) = data else {
        eprintln!("dportage coordinator reports: give --data DIR");
        return exitcode::BAD_ARGUMENTS;
    };
    let id = match id.parse::<IdentityId>() {
        Ok(id) => id,
        Err(e) => {
            eprintln!("dportage coordinator reports: {e}");
            return exitcode::BAD_ARGUMENTS;
        }
    };
    let path = data.join(store::DB_FILE);
    let result = store::open_connection(&data).and_then(|c| store::read_reports(&c, &path, &id));
    match result {
        Ok(rows) => {
            for r in rows {
                println!(
                    "{}\t{}\t{}\t{}\t{}",
                    r.received,
                    r.reporter,
                    r.network,
                    if r.cleared { "cleared" } else { "counts" },
                    r.body
                );
            }
            0
        }
        Err(e) => {
            eprintln!("dportage coordinator reports: {e}");
            exitcode::IO_ERROR
        }
    }
}
