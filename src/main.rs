//! The `bqsteward` binary: parse arguments, set up logging, run the command, map to an exit code.

use bqsteward::cli::{self, Cli, Command, LogFormat};
use clap::Parser;
use std::io::IsTerminal;
use tracing_subscriber::EnvFilter;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn main() {
    bqsteward::cloud::install_crypto_provider();
    let args = Cli::parse();
    // The audit trail (one line per access change) is always on.
    let filter = EnvFilter::try_new(format!("{},bqsteward::audit=info", args.log))
        .unwrap_or_else(|_| EnvFilter::new("warn,bqsteward::audit=info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match args.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
    let result = match args.command {
        Command::Crds { out } => cli::crds(out).map(|()| 0),
        Command::Validate { paths, policy, output } => cli::validate(&paths, policy, output),
        Command::Plan { common, output } => Ok(runtime().block_on(bqsteward::commands::plan(&common, output))),
        Command::Bench { objects, loaded } => {
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
            match (policy, requeue, lease_duration) {
                (Ok(policy), Ok(requeue), Ok(lease_duration)) => {
                    let args = bqsteward::controller::run::RunArgs {
                        policy,
                        identity,
                        requeue,
                        listen,
                        leader_election: !no_leader_election,
                        lease_namespace,
                        lease_name,
                        lease_duration,
                    };
                    runtime().block_on(bqsteward::controller::run::run(args)).map(|()| 0)
                }
                (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => Err(e),
            }
        }
        Command::Apply {
            common,
            allow_large_removal,
        } => Ok(runtime().block_on(bqsteward::commands::apply(&common, allow_large_removal))),
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
