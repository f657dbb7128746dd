//! `dportage coordinator …`: run the coordinator, or administer its blacklist
//! and the hosts it vouches for.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use super::config::{self as defaults, CoordinatorConfig, TlsFiles};
use super::pool::network_key;
use super::quota::Rate;
use super::service::{Coordinator, CoordinatorError};
use super::store;
use super::units::{duration_text, parse_duration};
use crate::exitcode;
use crate::network::caller::CoordinatorClient;
use crate::network::identity::{self, Identity, IdentityId};
use crate::trust::standing::{Standing, StandingRules};

/// A span of time on the command line: `14d`, `36h`, `90min`, `0s`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span(Duration);

impl std::str::FromStr for Span {
    type Err = String;
    fn from_str(s: &str) -> Result<Span, String> {
        parse_duration(s).map(Span)
    }
}

impl std::fmt::Display for Span {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&duration_text(self.0))
    }
}

#[derive(Debug, Parser)]
#[command(
    name = "dportage coordinator",
    about = "Run the dportage network coordinator (JSON over HTTP), or administer its blacklist and vouching",
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
    /// Serve https with this certificate chain (PEM; the server's certificate
    /// first). Needs --tls-key. Without both: plain http, for loopback or
    /// behind a TLS-terminating reverse proxy (README: "Running the coordinator").
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key (PEM: PKCS#8, PKCS#1 or SEC1) of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// A reverse proxy (its address as the coordinator sees it) whose
    /// X-Forwarded-For header names the real client: per-address limits,
    /// network grouping and advertised addresses then use the client's
    /// address. Repeatable. The header from anyone else is ignored.
    #[arg(long = "trusted-proxy", value_name = "ADDR")]
    trusted_proxies: Vec<std::net::IpAddr>,
    /// Seconds the tickets given with a host list are good for: a member's
    /// client needs one to use a daemon outside that daemon's --allow.
    /// Shorter drops a blacklisted member sooner; longer outlasts longer
    /// builds (a client whose tickets expired compiles locally).
    #[arg(long, value_name = "SECS", default_value_t = crate::network::ticket::DEFAULT_LIFETIME_SECS)]
    ticket_lifetime: u64,
    /// Also write the bound address (ADDR:PORT) to this file once listening.
    #[arg(long, value_name = "FILE")]
    address_file: Option<PathBuf>,
    /// New host identities accepted per /24 (IPv6 /48) network, as N/PERIOD
    /// (4/day, 10/12h; 0: no limit). More get 429 with Retry-After. A real
    /// contributor adds a few machines; an attacker needing hundreds of
    /// identities needs many networks and weeks.
    #[arg(long, value_name = "N/PERIOD", default_value_t = defaults::DEFAULT_NEW_HOSTS_PER_NETWORK)]
    new_hosts_per_network: Rate,
    /// New host identities accepted per /16 (IPv6 /32), as N/PERIOD (0: no
    /// limit): many /24s of one provider do not multiply the allowance.
    #[arg(long, value_name = "N/PERIOD", default_value_t = defaults::DEFAULT_NEW_HOSTS_PER_WIDE_NETWORK)]
    new_hosts_per_wide_network: Rate,
    /// Blacklisted hosts in one /24 (IPv6 /48) after which the network is
    /// blacklisted: no new identity registers from it (0: never).
    #[arg(long, value_name = "N", default_value_t = defaults::DEFAULT_NETWORK_STRIKES)]
    network_strikes: u32,
    /// Challenge jobs a host must pass to become established. The defaults
    /// of the three --establish-* flags are for a real network: two weeks of
    /// honest, verified work. A small private network may lower them, or
    /// vouch for its first hosts (`dportage coordinator vouch ID`).
    #[arg(long, value_name = "N", default_value_t = StandingRules::default().challenges)]
    establish_challenges: u32,
    /// Verified agreements with established hosts a host needs to become established.
    #[arg(long, value_name = "N", default_value_t = StandingRules::default().agreements)]
    establish_agreements: u32,
    /// Age (since its first registration) a host needs to become
    /// established: 14d, 36h, 0s.
    #[arg(long, value_name = "DURATION", default_value_t = Span(Duration::from_secs(StandingRules::default().min_age_secs)))]
    establish_age: Span,
    /// Send every host challenge jobs at the address it advertises and list
    /// a host (and count it for its owner's membership) only after it passed
    /// one and while it has not failed two in a row. `off` is for private
    /// networks whose hosts the coordinator cannot reach: every live host is
    /// then listed.
    #[arg(long, value_name = "on|off", default_value = "on", value_parser = ["on", "off"])]
    challenges: String,
    /// Mean time between a host's challenge jobs (random, exponentially
    /// distributed, never more often than a quarter of it); the first is
    /// sent when a host registers: 6h, 30m, 2s.
    #[arg(long, value_name = "DURATION", default_value_t = Span(defaults::DEFAULT_CHALLENGE_INTERVAL))]
    challenge_interval: Span,
    /// How long a host may take over each step of a challenge job.
    #[arg(long, value_name = "DURATION", default_value_t = Span(defaults::DEFAULT_CHALLENGE_TIMEOUT))]
    challenge_timeout: Span,
    /// How long after handing a member a host the coordinator accepts the
    /// member's report against it (remembered in memory: a restart forgets).
    #[arg(long, value_name = "DURATION", default_value_t = Span(defaults::DEFAULT_REPORT_WINDOW))]
    report_window: Span,
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
    /// Cache lookups per identity per minute (also the burst), counted
    /// instead of --requests-per-key: a build looks up every job. 0: no limit.
    #[arg(long, value_name = "N", default_value_t = defaults::DEFAULT_LOOKUPS_PER_KEY_PER_MINUTE)]
    lookups_per_key: u32,
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
    /// Referees that re-run a disputed job; they must be unanimous (1..=5).
    /// The default, 3, is for a real network; a small test network with few
    /// unrelated established hosts may use 1.
    #[arg(long, value_name = "N", default_value_t = crate::trust::adjudication::REFEREES)]
    referees: usize,
    /// Referees need differ from the dispute's parties (and each other) by
    /// owner only, not by network: for a network in a box (every host on
    /// 127.0.0.0/24, like the demo) or one LAN. Never on a public network.
    #[arg(long)]
    referees_any_network: bool,
    /// Disk space for uploaded evidence (disputed inputs, zstd) under
    /// DATA/evidence: 512M, 1G, 100000 (bytes). Oldest files go first.
    #[arg(long, value_name = "BYTES", default_value = "1G", value_parser = parse_bytes)]
    evidence_quota: u64,
    /// More log output (RUST_LOG overrides).
    #[arg(short, long)]
    verbose: bool,
}

/// `512M`, `1G`, `64K`, `100000`.
fn parse_bytes(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let mult = match c.to_ascii_uppercase() {
                'K' => 1u64 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                'T' => 1 << 40,
                _ => return Err(format!("{s:?}: suffix must be K, M, G or T")),
            };
            (&s[..i], mult)
        }
        _ => (s, 1),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| format!("{s:?} is not a size (512M, 1G, 100000)"))
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
    /// Vouch for a host: it is established at once (the only shortcut past
    /// probation; for the first hosts of a new network, and machines you run
    /// or know). A host that lost an adjudication stays probationary.
    Vouch {
        /// The host's identity (64 hex digits, its identity.pub).
        id: IdentityId,
        /// Administer a running coordinator over HTTP (see `blacklist --help`).
        #[arg(long, value_name = "URL")]
        coordinator: Option<String>,
    },
    /// Withdraw a vouching: the host's standing is earned again.
    Unvouch {
        /// The host's identity (64 hex digits).
        id: IdentityId,
        /// Administer a running coordinator over HTTP (see `blacklist --help`).
        #[arg(long, value_name = "URL")]
        coordinator: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum BlacklistAction {
    /// Print blacklisted identities (ID, since in unix seconds, reason, the
    /// addresses the entry covers), then blacklisted networks (NETWORK,
    /// since, reason).
    List,
    /// Blacklist a host by your decision, with its live address (and its
    /// network at --network-strikes). Reports never blacklist by
    /// themselves; this and lost adjudications do. Needs --coordinator URL:
    /// only the running coordinator knows the host's live address.
    Add {
        /// The host's identity (64 hex digits).
        id: IdentityId,
        /// Why, kept with the entry.
        #[arg(long, value_name = "TEXT", default_value = "operator's decision")]
        reason: String,
    },
    /// Remove an identity and the addresses it covered from the blacklist;
    /// its old reports stop counting. A network blacklisted because of it
    /// stays blacklisted: lift that with lift-network.
    Lift {
        /// The identity (64 hex digits).
        id: IdentityId,
    },
    /// Let new identities register from a blacklisted network again. Its
    /// blacklisted hosts stay blacklisted and still count as strikes.
    LiftNetwork {
        /// The network (10.1.2.0/24, 2001:db8:1::/48) or any address in it.
        network: String,
    },
}

/// The command line this module parses, for help, completions and manual
/// pages (`tools::docs`).
pub fn command() -> clap::Command {
    <Cli as clap::CommandFactory>::command()
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
        Some(Command::Vouch { id, coordinator }) => (
            "dportage coordinator vouch",
            vouch(id, true, coordinator, cli.run.data),
        ),
        Some(Command::Unvouch { id, coordinator }) => (
            "dportage coordinator unvouch",
            vouch(id, false, coordinator, cli.run.data),
        ),
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
    if args.ticket_lifetime == 0 {
        return Err(CoordinatorError::Usage {
            option: "--ticket-lifetime",
            why: "must be at least 1 second".into(),
        });
    }
    let mut cfg = CoordinatorConfig::new(listen, data);
    cfg.expiry = Duration::from_secs(args.expiry);
    cfg.ticket_lifetime = Duration::from_secs(args.ticket_lifetime);
    cfg.admin_keys = args.admin_keys;
    cfg.redundancy = args.redundancy.clamp(1, 8);
    cfg.new_hosts_per_network = args.new_hosts_per_network;
    cfg.new_hosts_per_wide_network = args.new_hosts_per_wide_network;
    cfg.network_strikes = args.network_strikes;
    cfg.standing_rules = StandingRules {
        challenges: args.establish_challenges,
        agreements: args.establish_agreements,
        min_age_secs: args.establish_age.0.as_secs(),
    };
    if args.report_window.0.is_zero() {
        return Err(CoordinatorError::Usage {
            option: "--report-window",
            why: "must be longer than 0 (no report would be accepted)".into(),
        });
    }
    cfg.report_window = args.report_window.0;
    cfg.challenges = args.challenges == "on";
    for (option, v) in [
        ("--challenge-interval", args.challenge_interval.0),
        ("--challenge-timeout", args.challenge_timeout.0),
    ] {
        if v.is_zero() {
            return Err(CoordinatorError::Usage {
                option,
                why: "must be longer than 0".into(),
            });
        }
    }
    cfg.challenge_interval = args.challenge_interval.0;
    cfg.challenge_timeout = args.challenge_timeout.0;
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
    cfg.lookups_per_key = Rate::per_minute(args.lookups_per_key);
    cfg.max_nonces_per_key = match (
        args.max_nonces_per_key,
        args.requests_per_key,
        args.lookups_per_key,
    ) {
        (Some(n), _, _) => n.max(1),
        // No request limit: only the global cap bounds a key.
        (None, 0, _) | (None, _, 0) => cfg.nonce_cache_cap,
        (None, r, l) => defaults::nonces_per_key_for(r.saturating_add(l)),
    };
    cfg.max_report_bytes = args.max_report_bytes;
    if !(1..=5).contains(&args.referees) {
        return Err(CoordinatorError::Usage {
            option: "--referees",
            why: "must be 1 to 5".into(),
        });
    }
    cfg.referees = args.referees;
    cfg.evidence_quota = args.evidence_quota;
    cfg.referees_any_network = args.referees_any_network;
    cfg.max_nonces_per_network = args.max_nonces_per_network.max(1);
    cfg.trusted_proxies = args.trusted_proxies;
    cfg.tls = match (args.tls_cert, args.tls_key) {
        (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
        _ => None,
    };
    let rt = crate::runtime::multi_thread(None)?;
    rt.block_on(async move {
        let coordinator = Coordinator::bind(cfg).await?;
        let addr = coordinator.local_addr();
        {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            let _ = writeln!(
                out,
                "dportage coordinator listening on {}",
                coordinator.url()
            );
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
    let (mut conn, path) = open_database(data)?;
    match action {
        BlacklistAction::Add { .. } => {
            return Err(CoordinatorError::Usage {
                option: "--coordinator URL",
                why: "`blacklist add` talks to the running coordinator (it covers the host's live address, which only it knows)".into(),
            });
        }
        BlacklistAction::List => {
            let state = store::read_blacklist_state(&conn, &path)?;
            print_blacklist(&state.entries, &state.networks);
        }
        BlacklistAction::Lift { id } => {
            if !store::lift(&mut conn, &path, &id)? {
                return Err(CoordinatorError::NotBlacklisted(id));
            }
            println!("lifted {id}");
        }
        BlacklistAction::LiftNetwork { network } => {
            let net = parse_network(&network)?;
            if !store::lift_network(&mut conn, &path, &net)? {
                return Err(CoordinatorError::NetworkNotBlacklisted(net));
            }
            println!("lifted network {net}");
        }
    }
    Ok(())
}

/// The database under `--data` (for the commands that also take
/// `--coordinator URL`), and its path for messages.
fn open_database(
    data: Option<PathBuf>,
) -> Result<(rusqlite::Connection, PathBuf), CoordinatorError> {
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
    Ok((store::open_connection(&data)?, path))
}

fn parse_network(text: &str) -> Result<String, CoordinatorError> {
    network_key(text).ok_or_else(|| CoordinatorError::Usage {
        option: "NETWORK",
        why: format!("{text:?} is not a network like 10.1.2.0/24 (or an address in one)"),
    })
}

fn print_blacklist(
    entries: &[crate::network::api::BlacklistEntry],
    networks: &[crate::network::api::NetworkBlacklistEntry],
) {
    for e in entries {
        println!(
            "{}\t{}\t{}\t{}",
            e.id,
            e.since,
            e.reason,
            e.addresses.join(",")
        );
    }
    for n in networks {
        println!("{}\t{}\t{}", n.network, n.since, n.reason);
    }
}

fn blacklist_http(action: BlacklistAction, url: &str) -> Result<(), CoordinatorError> {
    let dir = identity::dportage_dir();
    let me = Arc::new(Identity::load_or_create(&dir)?);
    let client = CoordinatorClient::new(url, me)?.expecting_pinned_key(&dir)?;
    let rt = crate::runtime::current_thread()?;
    rt.block_on(async {
        match action {
            BlacklistAction::List => {
                let list = client.admin_blacklist().await?;
                print_blacklist(&list.entries, &list.networks);
            }
            BlacklistAction::Add { id, reason } => {
                let answer = client.admin_blacklist_add(id, &reason).await?;
                println!(
                    "{} {id} (addresses: {})",
                    if answer.added {
                        "blacklisted"
                    } else {
                        "already blacklisted:"
                    },
                    answer.addresses.join(", ")
                );
            }
            BlacklistAction::Lift { id } => {
                if !client.admin_lift(id).await?.lifted {
                    return Err(CoordinatorError::NotBlacklisted(id));
                }
                println!("lifted {id}");
            }
            BlacklistAction::LiftNetwork { network } => {
                let net = parse_network(&network)?;
                let answer = client.admin_lift_network(&net).await?;
                if !answer.lifted {
                    return Err(CoordinatorError::NetworkNotBlacklisted(answer.network));
                }
                println!("lifted network {}", answer.network);
            }
        }
        Ok(())
    })
}

/// `vouch ID` / `unvouch ID`: with `--coordinator`, over HTTP (an admin key);
/// otherwise in the database (a running coordinator picks it up within a
/// second).
fn vouch(
    id: IdentityId,
    vouched: bool,
    coordinator: Option<String>,
    data: Option<PathBuf>,
) -> Result<(), CoordinatorError> {
    let verb = if vouched { "vouched for" } else { "unvouched" };
    if let Some(url) = coordinator {
        let dir = identity::dportage_dir();
        let me = Arc::new(Identity::load_or_create(&dir)?);
        let client = CoordinatorClient::new(&url, me)?.expecting_pinned_key(&dir)?;
        let rt = crate::runtime::current_thread()?;
        let answer = rt.block_on(client.admin_vouch(id, vouched))?;
        println!("{verb} {id}: {}", answer.standing.name());
        return Ok(());
    }
    let (mut conn, path) = open_database(data)?;
    let Some(rec) = store::set_vouched(&mut conn, &path, &id, vouched)? else {
        return Err(CoordinatorError::NotAHost(id));
    };
    // Vouching decides alone (short of a lost adjudication), whatever the
    // coordinator's --establish-* values; without it, they decide, and
    // this command does not know them.
    let standing = match (vouched, rec.strikes) {
        (true, 0) => Standing::Established.name(),
        (true, _) => "probationary (it lost an adjudication)",
        (false, _) => "earned again under the coordinator's --establish-* rules",
    };
    println!("{verb} {id}: {standing}");
    Ok(())
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
            match (r.cleared, r.counts) {
                (true, _) => "cleared",
                (false, true) => "counts",
                (false, false) => "stored (probationary reporter)",
            },
            r.body
        );
    }
    Ok(())
}
