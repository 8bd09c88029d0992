//! The `portcullis` command line: `run` (the default), `check-config`, `--version`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use portcullis::config::{CliOverrides, Config, LogFormat};

#[derive(Parser)]
#[command(
    name = "portcullis",
    version,
    about = "Reverse-proxy authentication gateway: OAuth 2.0 + PKCE + OpenID Connect login in front of apps that know nothing about login",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway (the default when no subcommand is given).
    Run(RunArgs),
    /// Validate the configuration and print it with secrets redacted.
    CheckConfig(RunArgs),
    /// Try it: the gateway plus an embedded demo identity provider and dashboard, on loopback.
    Demo(DemoArgs),
}

#[derive(Args)]
struct DemoArgs {
    /// Where the gateway listens (loopback only).
    #[arg(long, default_value = "127.0.0.1:4180")]
    listen: String,
    /// Log format: text or json.
    #[arg(long, value_parser = ["text", "json"])]
    log_format: Option<String>,
}

#[derive(Args, Clone)]
struct RunArgs {
    /// Configuration file (TOML). Environment variables PORTCULLIS__SECTION__KEY override it.
    #[arg(
        long,
        short,
        env = "PORTCULLIS_CONFIG",
        default_value = "/etc/portcullis/portcullis.toml"
    )]
    config: PathBuf,
    /// Listen address (host:port), overriding server.listen.
    #[arg(long)]
    listen: Option<String>,
    /// Log format: text or json, overriding log.format.
    #[arg(long, value_parser = ["text", "json"])]
    log_format: Option<String>,
}

impl RunArgs {
    fn load(&self) -> Result<Config, ExitCode> {
        let overrides = CliOverrides {
            listen: self.listen.clone(),
            log_format: self
                .log_format
                .as_deref()
                .and_then(|f| f.parse::<LogFormat>().ok()),
        };
        Config::load(&self.config, &overrides).map_err(|e| {
            eprintln!("portcullis: invalid configuration: {e}");
            ExitCode::from(2)
        })
    }
}

fn main() -> ExitCode {
    portcullis::install_crypto_provider();
    let cli = Cli::parse();
    match cli.command {
        Some(Command::CheckConfig(args)) => match args.load() {
            Ok(config) => {
                println!(
                    "# configuration is valid; effective values (secrets redacted):\n{config}"
                );
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        Some(Command::Run(args)) => run(args),
        Some(Command::Demo(args)) => demo(args),
        None => run(cli.run),
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    started(
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build(),
    )
}

/// `run`'s own runtime, on the main thread, for the background work (discovery, JWKS,
/// Redis, signals); requests are served on `server.workers` threads of their own.
fn background_runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    started(
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
    )
}

fn started(
    runtime: std::io::Result<tokio::runtime::Runtime>,
) -> Result<tokio::runtime::Runtime, ExitCode> {
    runtime.map_err(|e| {
        eprintln!("portcullis: cannot start the runtime: {e}");
        ExitCode::FAILURE
    })
}

fn demo(args: DemoArgs) -> ExitCode {
    let Ok(listen) = args.listen.parse() else {
        eprintln!("portcullis: --listen: {:?} is not host:port", args.listen);
        return ExitCode::from(2);
    };
    let overrides = CliOverrides {
        listen: None,
        log_format: args
            .log_format
            .as_deref()
            .and_then(|f| f.parse::<LogFormat>().ok()),
    };
    let runtime = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    match runtime.block_on(portcullis::demo::run(listen, &overrides)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("portcullis: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: RunArgs) -> ExitCode {
    let config = match args.load() {
        Ok(c) => c,
        Err(code) => return code,
    };
    // Held to the end: the log writer is a background thread (telemetry.rs).
    let log = portcullis::telemetry::init(&config.log);
    // Likewise the span exporter ([telemetry] otlp_endpoint; nothing when unset).
    let spans = match portcullis::otel::init(&config.telemetry, &config.server) {
        Ok(spans) => spans,
        Err(e) => {
            eprintln!("portcullis: {e}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match background_runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let reload_args = args.clone();
    let reload: portcullis::Reloader = std::sync::Arc::new(move || {
        let overrides = CliOverrides {
            listen: reload_args.listen.clone(),
            log_format: None,
        };
        Config::load(&reload_args.config, &overrides)
    });
    let result = runtime.block_on(portcullis::run(config, Some(reload)));
    // After SIGTERM's drain (or a start-up error): stop the runtime's tasks, post the
    // spans still queued, then write out the queued log lines, so they reach stderr before
    // the exit message and the exit.
    drop(runtime);
    drop(spans);
    drop(log);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("portcullis: {e}");
            ExitCode::FAILURE
        }
    }
}
