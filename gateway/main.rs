//! The `gateway` command: `run` (default), `check`, `--version`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use gateway::config;

#[derive(Parser)]
#[command(
    name = "gateway",
    version,
    about = "One HTTPS front door for many local AI web apps"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Configuration file
    #[arg(short, long, global = true, default_value = "routes.yaml")]
    config: PathBuf,
}

#[derive(Subcommand)]
enum Command {
    /// Serve (the default)
    Run,
    /// Validate the configuration and the certificates it names, then exit
    Check,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    match cli.command.unwrap_or(Command::Run) {
        Command::Check => check(&cli.config),
        Command::Run => run(&cli.config),
    }
}

fn run(path: &std::path::Path) -> ExitCode {
    let result = config::load(path).and_then(gateway::server::run);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(errors) => {
            eprint!("{}", config::render(&errors));
            ExitCode::FAILURE
        }
    }
}

fn check(path: &std::path::Path) -> ExitCode {
    let result = config::load(path).and_then(|config| {
        let default = gateway::server::default_cert(&config, false)?;
        let self_signed = config.tls.default_cert.is_none();
        // A self-signed default is generated on first start: nothing to load before that.
        let default = (!self_signed || default.cert.exists()).then_some(&default);
        let store = gateway::tls::CertStore::build(&config, default)?;
        Ok((config, store.route_certs(), self_signed))
    });
    match result {
        Ok((config, route_certs, self_signed)) => {
            let listeners = [
                Some(format!("https {}", config.listen.https)),
                config.listen.http.map(|a| format!("http {a}")),
                config.listen.metrics.map(|a| format!("metrics {a}")),
            ];
            let listeners: Vec<String> = listeners.into_iter().flatten().collect();
            println!(
                "{}: ok: {} routes, {} route certificates{}, listeners: {}",
                path.display(),
                config.routes.len(),
                route_certs,
                if self_signed {
                    " (default certificate self-signed)"
                } else {
                    ""
                },
                listeners.join(", ")
            );
            ExitCode::SUCCESS
        }
        Err(errors) => {
            eprint!("{}", config::render(&errors));
            ExitCode::FAILURE
        }
    }
}
