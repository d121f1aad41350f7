//! enforcer: denies chosen docker CLI commands to restricted users, in the kernel.

mod bpf;
mod btf;
mod check;
mod control;
mod daemon;
mod dynamic;
mod events;
mod grammar;
mod kernel;
mod policy;
mod state;
mod status;
mod users;

use std::{path::PathBuf, process::ExitCode};

use anyhow::Context as _;
use clap::{Parser, Subcommand};

const DEFAULT_STATE_DIR: &str = "/var/lib/enforcer";

#[derive(Parser)]
#[command(version, about = "Denies chosen docker CLI commands to restricted users, in the kernel (BPF LSM)")]
struct Cli {
    /// Where the denial log and the daemon's state live.
    #[arg(long, global = true, default_value = DEFAULT_STATE_DIR, env = "ENFORCER_STATE_DIR")]
    state_dir: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Load the policy, attach and pin the LSM programs, and log denials. SIGHUP reloads
    /// the policy; SIGINT/SIGTERM stop the daemon but leave the pinned programs enforcing.
    Run {
        /// Policy file [default: /etc/enforcer/policy.toml if present, else the embedded default]
        #[arg(long)]
        config: Option<PathBuf>,
        /// Detach the programs (remove the pins) when the daemon exits.
        #[arg(long)]
        detach_on_exit: bool,
        /// Rotate the denial log when it would grow past this many bytes.
        #[arg(long, default_value_t = events::DEFAULT_LOG_MAX_BYTES)]
        log_max_bytes: u64,
        /// Rotated denial logs to keep.
        #[arg(long, default_value_t = events::DEFAULT_LOG_KEEP)]
        log_keep: usize,
        /// Print each start-up stage with its duration.
        #[arg(long, short)]
        verbose: bool,
    },
    /// Show whether the policy is enforced, the counters and the recent denials. Exits 1
    /// when nothing enforces (or it cannot tell).
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// How many recent denials to show.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Only denials since this time: RFC 3339 (2026-11-27T10:00:00Z) or an age (10m, 2h).
        #[arg(long)]
        since: Option<String>,
        /// Only denials of this user (name or uid).
        #[arg(long)]
        user: Option<String>,
    },
    /// Ask the running daemon to reload its policy file. A bad file is rejected with its
    /// file:line and the policy in force stays.
    Reload,
    /// Detach: remove the pinned programs and maps, and stop the daemon if it runs.
    Stop,
    /// Decide an argv as the kernel would: prints the verdict, the rule and the command;
    /// exits 0 (allow), 1 (deny) or 2 (undecidable).
    Check {
        /// Policy file [default: /etc/enforcer/policy.toml if present, else the embedded default]
        #[arg(long)]
        config: Option<PathBuf>,
        /// Judge as this user (name or uid): only the rules naming it apply. Without it,
        /// every rule applies.
        #[arg(long)]
        user: Option<String>,
        /// The client the argv is for: docker or docker-compose [default: from argv[0]'s name]
        #[arg(long)]
        client: Option<String>,
        /// The argv, program name first: `-- docker exec -it web sh`.
        #[arg(last = true, required = true)]
        argv: Vec<String>,
    },
    /// Load and verify the BPF programs without attaching them; print the instructions
    /// the kernel's verifier processed for each.
    Verify,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run { config, detach_on_exit, log_max_bytes, log_keep, verbose } => {
            let options = daemon::Options {
                config,
                state_dir: cli.state_dir,
                detach_on_exit,
                log_max_bytes,
                log_keep,
                verbose,
            };
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")
                .and_then(|rt| rt.block_on(daemon::run(options)))
                .map(
                    |stopped| if stopped { ExitCode::from(daemon::EXIT_DETACHED) } else { ExitCode::SUCCESS },
                )
        }
        Command::Status { json, limit, since, user } => {
            status::status(&status::Query { json, limit, since, user }, &cli.state_dir)
        }
        Command::Reload => control::reload(),
        Command::Stop => control::stop(),
        Command::Check { config, user, client, argv } => {
            check::check(config.as_deref(), user.as_deref(), client.as_deref(), &argv)
        }
        Command::Verify => daemon::verify(),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("enforcer: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
