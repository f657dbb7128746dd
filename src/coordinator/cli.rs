//! `dportage coordinator …`: run the coordinator, or administer its blacklist.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use super::config::{self as defaults, CoordinatorConfig};
use super::quota::Rate;
use super::service::{Coordinator, CoordinatorError};
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
    admin_keys: Vec<IdentityId>,
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
    /// Connections served at once; more are closed at accept.
    #[arg(long, value_name = "N", default_value_t = defaults::DEFAULT_MAX_CONNECTIONS)]
    max_connections: usize,
    /// Connections one client address (IPv4 address, IPv6 /64) may hold at
    /// once; more are closed at accept.
    #[arg(long, value_name = "N", default_value_t = defaults::DEFAULT_MAX_CONNECTIONS_PER_ADDRESS)]
    max_connections_per_address: usize,
    /// Signed requests per identity per minute (also the burst); more get 429
    /// with Retry-After. 0: no limit.
    #[arg(long, value_name = "N", default_value_t = defaults::DEFAULT_REQUESTS_PER_KEY_PER_MINUTE)]
    requests_per_key: u32,
    /// Heartbeats per identity per minute (also the burst). 0: no limit.
    #[arg(long, value_name = "N", default_value_t = defaults::DEFAULT_HEARTBEATS_PER_KEY_PER_MINUTE)]
    heartbeats_per_key: u32,
    /// Mismatch reports per identity per hour (also the burst). 0: no limit.
    #[arg(long, value_name = "N", default_value_t = defaults::DEFAULT_REPORTS_PER_KEY_PER_HOUR)]
    reports_per_key: u32,
    /// Nonces remembered per identity (replay protection); a key at the cap
    /// gets 429 until its oldest leave the 300 s window. Default: enough for
    /// --requests-per-key sustained.
    #[arg(long, value_name = "N")]
    max_nonces_per_key: Option<usize>,
    /// Nonces remembered per network (/24, IPv6 /48) within the 300 s window;
    /// past it, signed requests from that network get 429 (one machine
    /// minting fresh keys cannot fill the nonce cache).
    #[arg(long, value_name = "N", default_value_t = defaults::DEFAULT_MAX_NONCES_PER_NETWORK)]
    max_nonces_per_network: usize,
    /// Largest mismatch report accepted, in bytes (at most 65536); larger get 413.
    #[arg(long, value_name = "BYTES", default_value_t = defaults::DEFAULT_MAX_REPORT_BYTES)]
    max_report_bytes: usize,
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
        id: IdentityId,
    },
}

#[derive(Debug, Subcommand)]
enum BlacklistAction {
    /// Print blacklisted identities: ID, since (unix seconds), reason.
    List,
    /// Remove an identity from the blacklist; its old reports stop counting.
    Lift {
        /// The identity (64 hex digits).
        id: IdentityId,
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
    let (command, result) = match cli.command {
        None => ("dportage coordinator", run(cli.run)),
        Some(Command::Blacklist {
            action,
            coordinator,
        }) => (
            "dportage coordinator blacklist",
            blacklist(action, coordinator, cli.run.data),
        ),
        Some(Command::Reports { id }) => {
            ("dportage coordinator reports", reports(id, cli.run.data))
        }
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("{command}: {e}");
            e.exit_code()
        }
    }
}

fn run(args: RunArgs) -> Result<(), CoordinatorError> {
    let (Some(listen), Some(data)) = (args.listen, args.data) else {
        return Err(CoordinatorError::Usage {
            option: "--listen ADDR:PORT and --data DIR",
            why: "both are required".into(),
        });
    };
    if args.expiry == 0 {
        return Err(CoordinatorError::Usage {
            option: "--expiry",
            why: "must be at least 1 second".into(),
        });
    }
    let mut cfg = CoordinatorConfig::new(listen, data);
    cfg.expiry = Duration::from_secs(args.expiry);
    cfg.admin_keys = args.admin_keys;
    cfg.redundancy = args.redundancy.clamp(1, 8);
    cfg.registrations_per_network_per_hour = args.registrations_per_network;
    cfg.blacklist_rule.min_networks = args.reporter_networks.clamp(1, 8);
    for (option, v) in [
        ("--max-connections", args.max_connections),
        (
            "--max-connections-per-address",
            args.max_connections_per_address,
        ),
        ("--max-report-bytes", args.max_report_bytes),
    ] {
        if v == 0 {
            return Err(CoordinatorError::Usage {
                option,
                why: "must be at least 1".into(),
            });
        }
    }
    if args.max_report_bytes > crate::network::api::MAX_BODY {
        return Err(CoordinatorError::Usage {
            option: "--max-report-bytes",
            why: format!(
                "at most {} (the limit of every request body)",
                crate::network::api::MAX_BODY
            ),
        });
    }
    cfg.max_connections = args.max_connections;
    cfg.max_connections_per_address = args.max_connections_per_address;
    cfg.requests_per_key = Rate::per_minute(args.requests_per_key);
    cfg.heartbeats_per_key = Rate::per_minute(args.heartbeats_per_key);
    cfg.reports_per_key = Rate::per_hour(args.reports_per_key);
    cfg.max_nonces_per_key = match (args.max_nonces_per_key, args.requests_per_key) {
        (Some(n), _) => n.max(1),
        // No request limit: only the global cap bounds a key.
        (None, 0) => cfg.nonce_cache_cap,
        (None, n) => defaults::nonces_per_key_for(n),
    };
    cfg.max_report_bytes = args.max_report_bytes;
    cfg.max_nonces_per_network = args.max_nonces_per_network.max(1);
    let rt = crate::runtime::multi_thread(None)?;
    rt.block_on(async move {
        let coordinator = Coordinator::bind(cfg).await?;
        let addr = coordinator.local_addr();
        {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "dportage coordinator listening on http://{addr}");
            let _ = out.flush();
        }
        if let Some(path) = args.address_file {
            // Written whole under another name, then renamed: a reader never
            // sees half an address.
            let tmp = path.with_extension("tmp");
            if let Err(e) =
                std::fs::write(&tmp, format!("{addr}\n")).and_then(|_| std::fs::rename(&tmp, &path))
            {
                eprintln!("dportage coordinator: cannot write {}: {e}", path.display());
            }
        }
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(CoordinatorError::Signals)?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        coordinator.shutdown();
        Ok(())
    })
}

fn blacklist(
    action: BlacklistAction,
    coordinator: Option<String>,
    data: Option<PathBuf>,
) -> Result<(), CoordinatorError> {
    if let Some(url) = coordinator {
        return blacklist_http(action, &url);
    }
    let Some(data) = data else {
        return Err(CoordinatorError::Usage {
            option: "--data DIR or --coordinator URL",
            why: "give the coordinator's database directory or its address".into(),
        });
    };
    let path = data.join(store::DB_FILE);
    if !path.exists() {
        return Err(CoordinatorError::NoDatabase(path));
    }
    let mut conn = store::open_connection(&data)?;
    match action {
        BlacklistAction::List => {
            for e in store::read_blacklist(&conn, &path)? {
                println!("{}\t{}\t{}", e.id, e.since, e.reason);
            }
        }
        BlacklistAction::Lift { id } => {
            if !store::lift(&mut conn, &path, &id)? {
                return Err(CoordinatorError::NotBlacklisted(id));
            }
            println!("lifted {id}");
        }
    }
    Ok(())
}

fn blacklist_http(action: BlacklistAction, url: &str) -> Result<(), CoordinatorError> {
    let dir = identity::dportage_dir();
    let me = Arc::new(Identity::load_or_create(&dir)?);
    let client = CoordinatorClient::new(url, me)?;
    let rt = crate::runtime::current_thread()?;
    rt.block_on(async {
        match action {
            BlacklistAction::List => {
                for e in client.admin_blacklist().await?.entries {
                    println!("{}\t{}\t{}", e.id, e.since, e.reason);
                }
            }
            BlacklistAction::Lift { id } => {
                if !client.admin_lift(id).await?.lifted {
                    return Err(CoordinatorError::NotBlacklisted(id));
                }
                println!("lifted {id}");
            }
        }
        Ok(())
    })
}

fn reports(id: IdentityId, data: Option<PathBuf>) -> Result<(), CoordinatorError> {
    let Some(data) = data else {
        return Err(CoordinatorError::Usage {
            option: "--data DIR",
            why: "required: the coordinator's database directory".into(),
        });
    };
    let path = data.join(store::DB_FILE);
    let conn = store::open_connection(&data)?;
    for r in store::read_reports(&conn, &path, &id)? {
        println!(
            "{}\t{}\t{}\t{}\t{}",
            r.received,
            r.reporter,
            r.network,
            if r.cleared { "cleared" } else { "counts" },
            r.body
        );
    }
    Ok(())
}
