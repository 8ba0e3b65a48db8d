//! The `bqsteward` binary: parse arguments, set up logging, run the command, map to an exit code.

use bqsteward::cli::{self, Cli, Command, LogFormat};
use clap::Parser;
use std::io::IsTerminal;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, filter::Targets};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn main() {
    bqsteward::cloud::install_crypto_provider();
    let args = Cli::parse();
    if let Err(e) = init_logging(&args) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
    let result = match args.command {
        Command::Crds { out } => cli::crds(out).map(|()| 0),
        Command::StandIns {
            cloud_identity_port,
            resource_manager_port,
        } => runtime()
            .block_on(bqsteward::standins::serve(cloud_identity_port, resource_manager_port))
            .map(|()| 0)
            .map_err(anyhow::Error::from),
        Command::Validate { paths, policy, output } => cli::validate(&paths, policy, output),
        Command::ImportSchema {
            engine,
            url_file,
            table,
        } => Ok(runtime().block_on(cli::import_schema(&engine, &url_file, &table))),
        Command::Status { common, output } => Ok(runtime().block_on(bqsteward::commands::status(&common, output))),
        Command::Check { common, table, output } => {
            Ok(runtime().block_on(bqsteward::commands::check(&common, table.as_deref(), output)))
        }
        Command::Plan { common, output } => Ok(runtime().block_on(bqsteward::commands::plan(&common, output))),
        Command::Bench {
            what: Some(cli::BenchWhat::Extract { db, file_size_mib }),
            ..
        } => Ok(runtime().block_on(cli::bench_extract(&db.engine, &db.url_file, db.rows, file_size_mib))),
        Command::Bench {
            what: Some(cli::BenchWhat::Controller { objects }),
            ..
        } => {
            print!("{}", bqsteward::controller::bench::report(&objects));
            Ok(0)
        }
        Command::Bench {
            what: Some(cli::BenchWhat::Listing { histories, new }),
            ..
        } => {
            print!("{}", bqsteward::ingest::bench_listing::report(&histories, new));
            Ok(0)
        }
        Command::Bench {
            what:
                Some(cli::BenchWhat::Day {
                    tables,
                    files,
                    cycle_seconds,
                    late_arrival_seconds,
                    load_seconds,
                }),
            ..
        } => {
            let cycles: Vec<i64> = cycle_seconds.iter().map(|s| s * 1000).collect();
            print!(
                "{}",
                bqsteward::ingest::bench_day::report(
                    tables,
                    files,
                    &cycles,
                    late_arrival_seconds * 1000,
                    load_seconds * 1000
                )
            );
            Ok(0)
        }
        Command::Bench {
            what: Some(cli::BenchWhat::Check { db }),
            ..
        } => Ok(runtime().block_on(cli::bench_check(&db.engine, &db.url_file, db.rows))),
        Command::Bench {
            what: None,
            objects,
            loaded,
        } => {
            let f = bqsteward::ingest::bench::run(objects, loaded.min(objects));
            println!(
                "load planner: {} objects listed, {} already in the ledger -> {} files in {} batches\n\
                 cpu {:.2} s, wall {:.2} s, peak memory {:.0} MiB (synthetic input included)\n\
                 targets: cpu < 2 s, peak < 300 MB",
                f.objects, f.loaded, f.to_load, f.batches, f.cpu_s, f.wall_s, f.peak_mib
            );
            Ok(0)
        }
        Command::Run {
            policy,
            identity,
            requeue,
            listen,
            no_leader_election,
            lease_namespace,
            lease_name,
            lease_duration,
            db_connections,
            audit,
            audit_flush_interval,
        } => {
            let policy = bqsteward::policy::Policy::load(policy.as_deref()).map_err(anyhow::Error::from);
            let duration = |flag: &str, text: &str, example: &str| {
                text.parse::<kube::core::Duration>()
                    .map(std::time::Duration::from)
                    .map_err(|e| anyhow::anyhow!("{flag} {text:?}: {e}; write e.g. {example}"))
            };
            let requeue = duration("--requeue", &requeue, "10m");
            let lease_duration = duration("--lease-duration", &lease_duration, "30s").and_then(|d| {
                if d.as_secs() < 5 {
                    Err(anyhow::anyhow!("--lease-duration must be at least 5s"))
                } else {
                    Ok(d)
                }
            });
            let flush = duration("--audit-flush-interval", &audit_flush_interval, "60s");
            match (policy, requeue, lease_duration, flush) {
                (Ok(policy), Ok(requeue), Ok(lease_duration), Ok(audit_flush_interval)) => {
                    let args = bqsteward::controller::run::RunArgs {
                        policy,
                        identity,
                        requeue,
                        listen,
                        leader_election: !no_leader_election,
                        lease_namespace,
                        lease_name,
                        lease_duration,
                        db_connections,
                        audit,
                        audit_flush_interval,
                    };
                    runtime().block_on(bqsteward::controller::run::run(args)).map(|()| 0)
                }
                (Err(e), _, _, _) | (_, Err(e), _, _) | (_, _, Err(e), _) | (_, _, _, Err(e)) => Err(e),
            }
        }
        Command::Apply {
            common,
            allow_large_removal,
            show_sql,
        } => Ok(runtime().block_on(bqsteward::commands::apply(&common, allow_large_removal, show_sql))),
    };
    match result {
        Ok(code) => std::process::exit(code),
        // The reader went away (`bqsteward crds | head`): stop quietly, as other tools do.
        Err(e)
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) =>
        {
            std::process::exit(0)
        }
        Err(e) => {
            eprintln!("error: {}", chain_text(&e));
            std::process::exit(1);
        }
    }
}

/// An error and its causes, `: `-separated, each cause said once (libraries often repeat their
/// source's text in their own message).
fn chain_text(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

/// Logs on stderr filtered by `--log`; the audit trail (target `bqsteward::audit`) apart, where
/// `--audit-log` says: stderr (compact, or JSON with `--log-format json`), a file (JSON lines,
/// appended) or nowhere.
fn init_logging(args: &Cli) -> Result<(), String> {
    let filter = EnvFilter::try_new(format!("{},bqsteward::audit=off", args.log))
        .unwrap_or_else(|_| EnvFilter::new("warn,bqsteward::audit=off"));
    let ansi = std::io::stderr().is_terminal();
    let logs = match args.log_format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
            .boxed(),
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_ansi(ansi)
            .with_writer(std::io::stderr)
            .boxed(),
    }
    .with_filter(filter);
    let only_audit = || Targets::new().with_target("bqsteward::audit", tracing::Level::INFO);
    let audit = match args.audit_log.as_str() {
        "off" => None,
        "stderr" => Some(match args.log_format {
            LogFormat::Json => tracing_subscriber::fmt::layer()
                .json()
                .with_writer(std::io::stderr)
                .boxed(),
            LogFormat::Text => tracing_subscriber::fmt::layer()
                .compact()
                .without_time()
                .with_target(false)
                .with_level(false)
                .with_ansi(ansi)
                .with_writer(std::io::stderr)
                .boxed(),
        }),
        path => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| format!("--audit-log {path}: {e}"))?;
            Some(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_ansi(false)
                    .with_writer(std::sync::Mutex::new(file))
                    .boxed(),
            )
        }
    }
    .map(|l| l.with_filter(only_audit()));
    tracing_subscriber::registry().with(logs).with(audit).init();
    Ok(())
}
