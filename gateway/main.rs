//! The `gateway` command: `run` (default), `check`, `reload`, `hash-password`,
//! `--version`. A configuration error exits with 78 (`gateway::exit`), any other
//! failure with 1.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use gateway::config;
use gateway::exit::StartError;
use gateway::logging::chain;

/// glibc's allocator serialises Pingora's per-request buffers on its arena locks (seen as
/// futex waits in perf); mimalloc's per-thread heaps do not. See docs/performance.md.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "gateway",
    version,
    about = "One HTTPS front door for many local AI web apps"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    file: File,
}

/// The configuration file, for the commands that read one.
#[derive(clap::Args)]
struct File {
    /// Configuration file [default: routes.yaml]
    #[arg(short, long)]
    config: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve (the default)
    Run {
        /// Take the listening sockets over from the running gateway (binary upgrade):
        /// start this, then send SIGQUIT to the old process within 5 s
        #[arg(long)]
        upgrade: bool,
        #[command(flatten)]
        file: File,
    },
    /// Validate the configuration and the certificates it names, then exit
    Check {
        #[command(flatten)]
        file: File,
    },
    /// Ask the running gateway to reload its configuration (POST /-/reload on the
    /// metrics listener named in the configuration)
    Reload {
        #[command(flatten)]
        file: File,
    },
    /// List the managed apps (state, PID, uptime, idle time, GPU), or start or stop one
    /// (GET /-/apps, POST /-/apps/NAME/start|stop on the metrics listener)
    Apps {
        /// `start` or `stop`
        #[arg(value_parser = ["start", "stop"], requires = "name")]
        action: Option<String>,
        /// The app to start or stop
        name: Option<String>,
        #[command(flatten)]
        file: File,
    },
    /// API keys for programs (docs/access.md)
    #[command(subcommand)]
    Key(KeyCommand),
    /// Read a password from standard input (not echoed on a terminal) and print its
    /// argon2id hash, for `basic_auth.users` or an htpasswd file (`NAME:HASH`)
    HashPassword,
}

#[derive(Subcommand)]
enum KeyCommand {
    /// Make a new key: print it once, and the entry (its SHA-256 only) to add to
    /// `api_keys`
    New {
        /// The key's name: in logs and metrics, and to revoke it (letters, digits, `-`,
        /// `_`, `.`)
        name: String,
        /// The routes it may use, by name or host pattern, separated by commas [default:
        /// every route that accepts keys]
        #[arg(long, value_delimiter = ',')]
        routes: Vec<String>,
        /// The last day it is valid, like 2027-06-30
        #[arg(long)]
        expires: Option<String>,
    },
}

fn main() -> ExitCode {
    // Before anything sizeable is allocated, and before OpenSSL's first allocation.
    gateway::memory::setup();
    let cli = Cli::parse();
    gateway::logging::init();
    // `gateway -c FILE` runs, as does `gateway run -c FILE`.
    let path = |file: File| {
        file.config
            .or(cli.file.config.clone())
            .unwrap_or_else(|| PathBuf::from("routes.yaml"))
    };
    let command = cli.command.unwrap_or(Command::Run {
        upgrade: false,
        file: File { config: None },
    });
    match command {
        Command::Check { file } => check(&path(file)),
        Command::Run { upgrade, file } => run(&path(file), upgrade),
        Command::Reload { file } => reload(&path(file)),
        Command::Apps { action, name, file } => {
            let action = action.as_deref().zip(name.as_deref());
            answer(gateway::client::apps(&path(file), action))
        }
        Command::HashPassword => hash_password(),
        Command::Key(KeyCommand::New {
            name,
            routes,
            expires,
        }) => new_key(&name, &routes, expires.as_deref()),
    }
}

fn hash_password() -> ExitCode {
    match gateway::auth::hash_password::read_and_hash() {
        Ok(hash) => {
            println!("{hash}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("gateway hash-password: {}", chain(&e));
            ExitCode::FAILURE
        }
    }
}

fn new_key(name: &str, routes: &[String], expires: Option<&str>) -> ExitCode {
    match gateway::keys::issue::new_key(name, routes, expires) {
        Ok(issued) => {
            println!("# The key, shown this once: give it to the program (Authorization: Bearer KEY, or X-API-Key: KEY).");
            println!("{}", issued.secret);
            println!("# The entry for api_keys (its file, or api_keys.keys in routes.yaml): only the key's SHA-256.");
            println!("{}", issued.entry);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("gateway key new: {}", chain(&e));
            // As for any other mistake on the command line (clap exits with 2).
            ExitCode::from(2)
        }
    }
}

fn run(path: &std::path::Path, upgrade: bool) -> ExitCode {
    // SIGHUP (reload) and SIGUSR1 (reopen the access log) would end the process until
    // their handlers are installed, a moment after start: ignore them until then.
    // SAFETY: setting a signal disposition to SIG_IGN has no preconditions.
    unsafe {
        libc::signal(libc::SIGHUP, libc::SIG_IGN);
        libc::signal(libc::SIGUSR1, libc::SIG_IGN);
    }
    let result = config::load(path)
        .map_err(StartError::Config)
        .and_then(|config| gateway::server::run(path, config, upgrade));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(StartError::Config(errors)) => {
            eprint!("{}", config::render(&errors));
            ExitCode::from(gateway::exit::CONFIG)
        }
        Err(e) => {
            eprintln!("{}: {}", path.display(), chain(&e));
            e.exit_code()
        }
    }
}

fn reload(path: &std::path::Path) -> ExitCode {
    answer(gateway::client::reload(path))
}

/// Prints the admin endpoint's answer, or why there is none.
fn answer(result: Result<String, gateway::client::ReloadError>) -> ExitCode {
    match result {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{}", chain(&e));
            e.exit_code()
        }
    }
}

fn check(path: &std::path::Path) -> ExitCode {
    let result = config::load(path)
        .map_err(StartError::Config)
        .and_then(|config| {
            let default = gateway::tls::default_cert(&config, false)?;
            let self_signed = config.tls.default_cert.is_none();
            // A self-signed default is made on start when missing, stale or for other
            // hosts: only one that run would serve as it is can be loaded now.
            let reused = self_signed && gateway::tls::self_signed_reusable(&config);
            let default = (!self_signed || reused).then_some(&default);
            let store = gateway::tls::CertStore::build(&config, default)?;
            Ok((config, store.route_certs(), self_signed))
        });
    let (config, route_certs, self_signed) = match result {
        Ok(checked) => checked,
        Err(StartError::Config(errors)) => {
            eprint!("{}", config::render(&errors));
            return ExitCode::from(gateway::exit::CONFIG);
        }
        Err(e) => {
            eprintln!("{}: {}", path.display(), chain(&e));
            return e.exit_code();
        }
    };
    println!(
        "{}: ok: {} routes, {route_certs} route certificates{}, listeners: {}",
        path.display(),
        config.routes.len(),
        summary(&config, self_signed),
        listeners(&config).join(", ")
    );
    // Warnings, not errors: the file is valid, but something in it (or in the apps'
    // setup) does not do what it seems to.
    eprint!("{}", config::render(&config.warnings));
    let addresses = gateway::exposure::local_addresses();
    for exposed in gateway::exposure::check(&config.upstreams(), &addresses) {
        eprintln!("{}: warning: {}", path.display(), exposed.warning());
    }
    ExitCode::SUCCESS
}

/// `check`'s words on ACME, the shared limits store and the default certificate.
fn summary(config: &config::Config, self_signed: bool) -> String {
    let acme = gateway::acme::Plan::of(config)
        .filter(|p| !p.hosts.is_empty())
        .map(|p| {
            format!(
                ", ACME for {} ({})",
                p.hosts.join(" "),
                p.settings.directory
            )
        })
        .unwrap_or_default();
    let store = config
        .limits_store
        .as_ref()
        .map(|s| {
            format!(
                ", limits shared through {} (timeout {}, on_error: {})",
                s.shown,
                humantime::format_duration(s.timeout),
                s.on_error.as_str()
            )
        })
        .unwrap_or_default();
    let default = match self_signed {
        true => " (default certificate self-signed)",
        false => "",
    };
    format!("{acme}{store}{default}")
}

/// The listeners `check` names.
fn listeners(config: &config::Config) -> Vec<String> {
    let listeners = [
        Some(format!("https {}", config.listen.https)),
        config.listen.http.map(|a| match config.listen.http_mode {
            config::HttpMode::Redirect => format!("http {a}"),
            config::HttpMode::Proxy => format!("http {a} (proxy)"),
        }),
        config.listen.metrics.map(|a| format!("metrics {a}")),
    ];
    listeners.into_iter().flatten().collect()
}
