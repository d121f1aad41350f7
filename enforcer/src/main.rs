//! enforcer: denies chosen docker CLI commands to restricted users, in the kernel.

mod bpf;
mod btf;
mod check;
mod compile;
mod control;
mod daemon;
mod discovery;
mod dynamic;
mod events;
mod exit;
mod follow;
mod gate;
mod grammar;
mod identity;
mod kernel;
mod logging;
mod metrics;
mod policy;
mod routing;
mod state;
mod status;
mod users;

use std::{path::PathBuf, process::ExitCode};

use anyhow::Context as _;
use clap::{CommandFactory as _, Parser, Subcommand};

const DEFAULT_STATE_DIR: &str = "/var/lib/enforcer";

// The daemon's own constant is what the unit's SuccessExitStatus= names.
const _: () = assert!(exit::DETACHED == daemon::EXIT_DETACHED);

#[derive(Parser)]
#[command(
    name = "enforcer",
    version,
    about = "Denies chosen docker CLI commands to restricted users, in the kernel (BPF LSM)",
    after_help = exit::HELP
)]
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
    /// Show whether the policy is enforced, the counters and the recent denials. Exits 0
    /// when enforcing, 1 when nothing enforces, 70 when it cannot tell.
    #[command(after_help = exit::HELP)]
    Status {
        /// Print JSON instead of a table (with --follow: one JSON object per line).
        #[arg(long)]
        json: bool,
        /// How many recent denials to show (with --follow: before the new ones).
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Stream denials as they are logged, with the same filters, until interrupted.
        #[arg(long, short)]
        follow: bool,
        /// Only denials since this time: RFC 3339 (2026-11-27T10:00:00Z) or an age (10m, 2h).
        #[arg(long)]
        since: Option<String>,
        /// Only denials of this user (name or uid).
        #[arg(long)]
        user: Option<String>,
    },
    /// Ask the running daemon to reload its policy file. A bad file is rejected with its
    /// <file:line> and the policy in force stays (exit 65); no daemon: exit 69.
    #[command(after_help = exit::HELP)]
    Reload,
    /// Detach: remove the pinned programs and maps, and stop the daemon if it runs.
    Stop,
    /// Decide an argv as the kernel would: prints the verdict, the rule and the command;
    /// exits 0 (allow), 1 (deny) or 2 (undecidable); 65 for a policy it cannot read.
    #[command(after_help = exit::HELP)]
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
        #[arg(last = true, required_unless_present = "container")]
        argv: Vec<String>,
        /// Instead of an argv: ask dockerd who this container (name, id or id prefix) is and
        /// print its owner and what the rule's API gate would decide for it.
        #[arg(long, conflicts_with = "argv")]
        container: Option<String>,
        /// With --container: the docker command to judge (`exec`, `logs`, ...).
        #[arg(long, requires = "container")]
        command: Option<String>,
    },
    /// Load and verify the BPF programs without attaching them; print the instructions
    /// the kernel's verifier processed for each.
    Verify,
    /// Check a policy file as the daemon reads it, without the machine: syntax, keys, modes,
    /// docker commands, limits (not whether its users, binaries and cgroups exist here).
    /// Exits 0 when valid, 65 with <file:line:column> when not. The NixOS module runs it at
    /// build time.
    #[command(after_help = exit::HELP)]
    Validate {
        /// Policy file [default: /etc/enforcer/policy.toml if present, else the embedded default]
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// The counters (per rule, per hook, drops, races, program runs) in the Prometheus text
    /// format: on stdout, into a node-exporter textfile, or served on a local address.
    Metrics {
        /// Serve <http://ADDRESS/metrics> until stopped (e.g. 127.0.0.1:9477).
        #[arg(long, value_name = "ADDRESS", conflicts_with = "textfile")]
        listen: Option<String>,
        /// Write the metrics to this file atomically (a rename), for node-exporter's
        /// textfile collector, and exit.
        #[arg(long, value_name = "PATH")]
        textfile: Option<PathBuf>,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell) on stdout.
    Completions { shell: clap_complete::Shell },
    /// Write the man pages (enforcer.1, enforcer-status.1, ...) into a directory.
    #[command(hide = true)]
    Manpages { directory: PathBuf },
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // --help and --version print on stdout and succeed; a bad command line is EX_USAGE
        // (clap's own 2 would read as "undecidable" from `check`).
        Err(error) => {
            let _ = error.print();
            return ExitCode::from(if error.use_stderr() { exit::USAGE } else { exit::OK });
        }
    };
    if !matches!(cli.command, Command::Run { .. }) {
        // A report piped into `head` or a closed pipe ends the command quietly, as in
        // any Unix tool, instead of a panic on the failed write. (The daemon keeps Rust's
        // default: SIGPIPE ignored, a write error handled.)
        // SAFETY: setting a signal's disposition to the default has no preconditions.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    logging::init(matches!(cli.command, Command::Run { verbose: true, .. }));
    let result = match cli.command {
        Command::Run { config, detach_on_exit, log_max_bytes, log_keep, verbose: _ } => {
            let options =
                daemon::Options { config, state_dir: cli.state_dir, detach_on_exit, log_max_bytes, log_keep };
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")
                .and_then(|rt| rt.block_on(daemon::run(options)))
                .map(|stopped| if stopped { ExitCode::from(exit::DETACHED) } else { ExitCode::SUCCESS })
        }
        Command::Status { json, limit, follow, since, user } => {
            let query = status::Query { json, limit, since, user };
            if follow {
                follow::follow(&query, &cli.state_dir)
            } else {
                status::status(&query, &cli.state_dir)
            }
        }
        Command::Reload => control::reload(),
        Command::Stop => control::stop(),
        Command::Check { config, user, client, argv, container: Some(container), command } => {
            let _ = (client, argv);
            check::check_container(config.as_deref(), user.as_deref(), &container, command.as_deref())
        }
        Command::Check { config, user, client, argv, container: None, .. } => {
            check::check(config.as_deref(), user.as_deref(), client.as_deref(), &argv)
        }
        Command::Verify => daemon::verify(),
        Command::Validate { config } => validate(config.as_deref()),
        Command::Metrics { listen, textfile } => {
            metrics::metrics(&cli.state_dir, listen.as_deref(), textfile.as_deref())
        }
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "enforcer", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
        Command::Manpages { directory } => manpages(&directory),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            log::error!("{error:#}");
            ExitCode::from(exit::code_of(&error))
        }
    }
}

/// `enforcer validate`: parse and check the policy, nothing resolved against this machine.
fn validate(config: Option<&std::path::Path>) -> anyhow::Result<ExitCode> {
    let policy = policy::Policy::load(config)?;
    println!(
        "valid: {} ({} rule{}, mode {})",
        policy.source,
        policy.rules.len(),
        if policy.rules.len() == 1 { "" } else { "s" },
        match policy.mode {
            policy::Mode::Enforce => "enforce",
            policy::Mode::Audit => "audit",
        }
    );
    Ok(ExitCode::SUCCESS)
}

/// One page per command, from the same definitions as `--help`.
fn manpages(directory: &std::path::Path) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(directory).with_context(|| format!("cannot create {}", directory.display()))?;
    // Hidden commands (this generator) get no page.
    clap_mangen::generate_to(Cli::command(), directory)
        .with_context(|| format!("cannot write the man pages into {}", directory.display()))?;
    Ok(ExitCode::SUCCESS)
}
