//! The decision engine: finds the docker command in an argv the way the docker CLI does
//! and judges it against the policy's rules.
//!
//! The docker CLI parses its global options with pflag, interspersing off, so the first
//! positional word is the command. When that command is a group (`container`, `compose`),
//! cobra's `Traverse` takes over: the group's own flags, then the subcommand word, until
//! a command without subcommands (a leaf) is reached; what follows is the leaf's.
//!
//! Written for the BPF verifier as much as for people: one argument at a time, bounded
//! loops with constant limits, no allocation, no panics on any input. Anything it cannot
//! decide inside its limits is `Undecidable`, which the kernel denies.

use crate::abi::{
    ArgBuf, MAX_ARGS, MAX_RULES, MAX_SHORT_GROUP, RuleConfig, Start, TOKEN_LEN, Token, TokenKind, scope, tags,
};
use crate::grammar::Grammar;

tags! {
    /// Why the engine reached its verdict (`DenialEvent::reason`).
    pub enum Reason {
        /// The rule's command set decided (deny list hit, or allow list miss).
        Command = 1,
        /// A global option before the command that the docker CLI's grammar does not have.
        UnknownGlobalOption = 2,
        /// The word in command position is not a docker command.
        UnknownCommand = 3,
        /// The word in command position is longer than any command (or than `ARG_BUF`).
        CommandTooLong = 4,
        /// A group of short options longer than `MAX_SHORT_GROUP`.
        ShortGroupTooLong = 5,
        /// More than `MAX_ARGS` arguments before the command.
        TooManyArgs = 6,
        /// argv could not be read from memory.
        UnreadableArgv = 7,
        /// The exec came through a syscall or ABI whose argv the early check cannot locate.
        /// Such execs are deferred to the re-check on the kernel's copy, which decides them;
        /// kept so that old records still decode.
        UnsupportedExecPath = 8,
        /// The binary runs as an interpreter (`#!` or `binfmt_misc`): its argv is not the
        /// caller's. Deferred to the re-check like `UnsupportedExecPath`.
        Interpreter = 9,
        /// The kernel could not identify the executed file.
        UnreadableFile = 10,
        /// Load-time kernel offsets are missing, or a map holds what this build cannot read.
        NotConfigured = 11,
        /// A flag of a command group (`docker compose --x exec`) that the group does not have.
        UnknownGroupOption = 12,
        /// A process whose executable is not one of the rule's vetted clients connected to a
        /// gated docker API socket or TCP address.
        UnvettedClient = 13,
        /// A vetted client was executed under ptrace: its tracer could rewrite it.
        Traced = 14,
        /// A vetted client's environment sets a dynamic loader variable (`LD_PRELOAD`,
        /// `LD_AUDIT`, `LD_LIBRARY_PATH`) that would load code into it.
        LoaderEnvironment = 15,
        /// argv plus environment hold more strings than the kernel program walks.
        TooManyStrings = 16,
        /// ptrace, `/proc/PID/mem`, `process_vm_writev` or `pidfd_getfd` against a running
        /// vetted client.
        TamperClient = 17,
        /// A vetted client was executed under a seccomp filter with a user-notification
        /// listener: another process would answer its system calls (and could hand it a
        /// socket that process also holds).
        SeccompListener = 18,
        /// A vetted client was executed under a seccomp filter that can fake a system call's
        /// success (`SECCOMP_RET_ERRNO` with errno 0 makes `socket()` return fd 0, a socket
        /// the caller may share) or whose return value is computed (`BPF_RET | BPF_A`).
        SeccompFakeSuccess = 19,
        /// The seccomp filter chain of a vetted client's exec could not be read, or is longer
        /// than the kernel program walks.
        SeccompUnreadable = 20,
        /// `prctl(PR_SET_MM, ...)`: a restricted task would rewrite its memory map, including
        /// the executable the socket gate identifies it by.
        SetMm = 21,
        /// A vetted client was executed in a user namespace other than the initial one: there
        /// the caller may have mounted its own dynamic loader, libraries or NSS modules over the
        /// ones the client loads, or chrooted, so the client would run the caller's code.
        UserNamespace = 22,
        /// A restricted task whose rule has the API gate on connected to a docker API socket
        /// or address other than its rule's gate socket.
        GateOnly = 23,
        /// A restricted task connected to the gate socket of a rule other than its own, or is
        /// restricted by several gated rules (no single gate judges it).
        OtherGate = 24,
    }
}

impl Reason {
    /// Stable `snake_case` name used in logs and JSON.
    pub fn as_str(self) -> &'static str {
        use Reason::{
            Command, CommandTooLong, GateOnly, Interpreter, LoaderEnvironment, NotConfigured, OtherGate,
            SeccompFakeSuccess, SeccompListener, SeccompUnreadable, SetMm, ShortGroupTooLong, TamperClient,
            TooManyArgs, TooManyStrings, Traced, UnknownCommand, UnknownGlobalOption, UnknownGroupOption,
            UnreadableArgv, UnreadableFile, UnsupportedExecPath, UnvettedClient, UserNamespace,
        };
        match self {
            Command => "command",
            UnknownGlobalOption => "unknown_global_option",
            UnknownCommand => "unknown_command",
            CommandTooLong => "command_too_long",
            ShortGroupTooLong => "short_option_group_too_long",
            TooManyArgs => "too_many_args",
            UnreadableArgv => "unreadable_argv",
            UnsupportedExecPath => "unsupported_exec_path",
            Interpreter => "interpreter",
            UnreadableFile => "unreadable_file",
            NotConfigured => "not_configured",
            UnknownGroupOption => "unknown_group_option",
            UnvettedClient => "unvetted_client",
            Traced => "traced",
            LoaderEnvironment => "loader_environment",
            TooManyStrings => "too_many_strings",
            TamperClient => "tamper_client",
            SeccompListener => "seccomp_listener",
            SeccompFakeSuccess => "seccomp_fake_success",
            SeccompUnreadable => "seccomp_unreadable",
            SetMm => "set_mm",
            UserNamespace => "user_namespace",
            GateOnly => "gate_only",
            OtherGate => "other_gate",
        }
    }
}

/// What scanning argv found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scan {
    /// The command, by node id: a leaf, or a group that argv ended in (`docker compose`).
    Command(u32),
    /// argv ended before any command (`docker`, `docker --version`): the CLI prints help,
    /// its version or an error, and never talks to the daemon.
    NoCommand,
    Undecidable(Reason),
}

/// The verdict for one exec under one rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    /// The rule's command set denies this command (node id).
    Deny {
        command: u32,
    },
    /// The engine could not decide; the kernel denies.
    Undecidable(Reason),
}

impl Verdict {
    /// The reason recorded for a non-Allow verdict.
    pub fn reason(self) -> Reason {
        match self {
            Verdict::Undecidable(reason) => reason,
            _ => Reason::Command,
        }
    }
}

/// Judges a scan result against one rule.
#[inline(always)]
pub fn judge(scan: Scan, rule: &RuleConfig) -> Verdict {
    match scan {
        Scan::Command(id) => {
            if rule.has_command(id) == rule.is_allow_list() {
                Verdict::Allow
            } else {
                Verdict::Deny { command: id }
            }
        }
        Scan::NoCommand => Verdict::Allow,
        Scan::Undecidable(reason) => Verdict::Undecidable(reason),
    }
}

/// The compiled rules of the active policy, by index.
pub trait Rules {
    fn rule(&self, index: u32) -> Option<&RuleConfig>;
}

/// The outcome of judging one exec against every rule that applies to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    pub verdict: Verdict,
    /// The rule that decided a non-Allow verdict (the lowest index that does not allow).
    pub rule: u32,
    /// That rule is in audit mode: record, do not deny.
    pub audit: bool,
}

/// One step of [`judge_rules`]: rule `index`, when it is in the bitmask `rules`. Returns
/// the decision once a rule does not allow. The kernel calls this from a `bpf_loop`
/// callback (one rule per iteration, which the verifier checks once); userspace from the
/// plain loop in `judge_rules`.
#[inline(always)]
pub fn judge_rule<R: Rules + ?Sized>(scan: Scan, rules: u32, index: u32, table: &R) -> Option<Decision> {
    let index = index & (MAX_RULES as u32 - 1);
    if rules & (1 << index) == 0 {
        return None;
    }
    let Some(rule) = table.rule(index) else {
        return Some(Decision {
            verdict: Verdict::Undecidable(Reason::NotConfigured),
            rule: index,
            audit: false,
        });
    };
    let verdict = judge(scan, rule);
    if verdict == Verdict::Allow {
        None
    } else {
        Some(Decision { verdict, rule: index, audit: rule.is_audit() })
    }
}

/// The decision when no rule objects.
pub const ALLOWED: Decision = Decision { verdict: Verdict::Allow, rule: 0, audit: false };

/// Judges `scan` against each rule in the bitmask `rules`, lowest index first; the first
/// rule that does not allow decides. A rule missing from `table` fails closed.
pub fn judge_rules<R: Rules + ?Sized>(scan: Scan, rules: u32, table: &R) -> Decision {
    for index in 0..MAX_RULES as u32 {
        if let Some(decision) = judge_rule(scan, rules, index, table) {
            return decision;
        }
    }
    ALLOWED
}

/// The decision for one exec: the command `start`'s client finds in argv (returned too,
/// for reports), judged by the rules in `rules`. Userspace (`enforcer check`, tests) calls
/// this; the kernel runs the same steps, [`ArgvScan::step`] and [`judge_rule`], from
/// `bpf_loop` callbacks.
pub fn decide<A: ArgSource, G: Grammar, R: Rules + ?Sized>(
    start: Start,
    source: &mut A,
    argc: u32,
    buf: &mut ArgBuf,
    grammar: &G,
    rules: u32,
    table: &R,
) -> (Scan, Decision) {
    let scan = scan_argv(start, source, argc, buf, grammar);
    (scan, judge_rules(scan, rules, table))
}

/// Rules in a slice, by index (userspace).
impl Rules for [RuleConfig] {
    fn rule(&self, index: u32) -> Option<&RuleConfig> {
        self.get(index as usize)
    }
}

/// argv as a slice of strings or byte strings, program name first (userspace).
pub struct SliceArgv<'a, T>(pub &'a [T]);

impl<T: AsRef<[u8]>> ArgSource for SliceArgv<'_, T> {
    fn read(&mut self, index: u32, buf: &mut ArgBuf) -> Result<(), ReadError> {
        buf.set(self.0.get(index as usize).ok_or(ReadError)?.as_ref());
        Ok(())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Reading options; the first positional word is the (sub)command.
    Options,
    /// The previous argument was an option that takes the next one as its value.
    OptionValue,
    /// At the root after `--`: the next argument is the command, whatever it looks like.
    CommandNext,
    /// After a leaf that has power flags (`scope` is the leaf): its arguments are read
    /// for them until argv ends.
    LeafArguments,
}

/// Outcome of feeding one argument.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    Continue,
    Done(Scan),
}

/// The streaming argv scanner: feed argv[1], argv[2], ... until it returns `Done`.
#[derive(Clone, Copy, Debug)]
pub struct Scanner {
    state: State,
    /// Where words are looked up: the root, a group's node id, or an entry scope.
    scope: u32,
    /// The command reached so far (the root, or a group).
    node: u32,
}

impl Scanner {
    pub const fn new(start: Start) -> Self {
        Scanner { state: State::Options, scope: start.scope, node: start.node }
    }

    /// What the scan means when argv ends here: no command at the root, else the group
    /// reached (which prints its help or an error).
    pub fn finish(&self) -> Scan {
        if self.scope == scope::ROOT { Scan::NoCommand } else { Scan::Command(self.node) }
    }

    #[inline(always)]
    pub fn feed<G: Grammar>(&mut self, arg: &ArgBuf, grammar: &G) -> Step {
        match self.state {
            State::OptionValue => {
                // pflag and cobra take the next argument as the value whatever it is.
                self.state = State::Options;
                Step::Continue
            }
            State::CommandNext => self.command_word(arg, grammar),
            State::LeafArguments => self.leaf_argument(arg, grammar),
            State::Options => {
                let len = arg.len as usize;
                // "", "-" and words not starting with '-' are positional: the command.
                if len < 2 || byte_at(&arg.bytes, 0) != b'-' {
                    return self.command_word(arg, grammar);
                }
                if self.scope == scope::ROOT {
                    self.root_option(arg, grammar)
                } else {
                    self.group_option(arg, grammar)
                }
            }
        }
    }

    /// pflag at the root: `--`, `--name`, `--name value`, `--name=value`, short groups.
    #[inline(always)]
    fn root_option<G: Grammar>(&mut self, arg: &ArgBuf, grammar: &G) -> Step {
        if byte_at(&arg.bytes, 1) == b'-' {
            if arg.len == 2 {
                self.state = State::CommandNext;
                return Step::Continue;
            }
            return self.long_option(arg, grammar, Reason::UnknownGlobalOption);
        }
        self.short_group(arg, grammar, true, Reason::UnknownGlobalOption)
    }

    /// cobra's `Traverse` inside a group: `--name` takes the next argument unless it is a
    /// boolean; `-x` alone likewise; `--name=v` and `-xyz` are one argument each. `--`
    /// is an unknown flag to `Traverse`, and a value letter ending a group of short flags
    /// is a parse error of the CLI: both undecidable.
    #[inline(always)]
    fn group_option<G: Grammar>(&mut self, arg: &ArgBuf, grammar: &G) -> Step {
        if byte_at(&arg.bytes, 1) == b'-' {
            if arg.len == 2 {
                return Step::Done(Scan::Undecidable(Reason::UnknownGroupOption));
            }
            return self.long_option(arg, grammar, Reason::UnknownGroupOption);
        }
        self.short_group(arg, grammar, false, Reason::UnknownGroupOption)
    }

    /// The flag name of a long option (`--name` of `--name=value`) as a token of the
    /// current scope; whether a `=value` followed; and how many bytes the name took
    /// (at most `TOKEN_LEN - 1`: a longer name fills the token and runs on).
    #[inline(always)]
    fn long_token(&self, arg: &ArgBuf) -> (Token, bool, usize) {
        let len = arg.len as usize;
        let mut token = Token::empty(self.scope);
        let mut i = 0;
        while i < TOKEN_LEN - 1 {
            if i >= len {
                break;
            }
            let c = byte_at(&arg.bytes, i);
            if c == b'=' {
                return (token, true, i);
            }
            set_byte(&mut token, i, c);
            i += 1;
        }
        (token, false, i)
    }

    /// The token of short flag `letter` (`-x`) in the current scope.
    #[inline(always)]
    fn short_token(&self, letter: u8) -> Token {
        let mut token = Token::empty(self.scope);
        token.bytes[0] = b'-';
        token.bytes[1] = letter;
        token
    }

    /// `--name`, `--name value`, `--name=value`.
    #[inline(always)]
    fn long_option<G: Grammar>(&mut self, arg: &ArgBuf, grammar: &G, unknown: Reason) -> Step {
        let len = arg.len as usize;
        let (token, has_value, i) = self.long_token(arg);
        if !has_value && i < len {
            // Longer than any option name: not one the CLI knows.
            return Step::Done(Scan::Undecidable(unknown));
        }
        match grammar.lookup(&token) {
            Some(info) if info.kind == TokenKind::FlagBool as u32 => Step::Continue,
            Some(info) if info.kind == TokenKind::FlagValue as u32 => {
                if !has_value {
                    self.state = State::OptionValue;
                }
                Step::Continue
            }
            _ => Step::Done(Scan::Undecidable(unknown)),
        }
    }

    /// `-D`, `-Dl debug`, `-ldebug`, `-l=debug`, `-D=true`: pflag walks the group one
    /// letter at a time; a letter that takes a value takes the rest of the group, or (when
    /// `value_may_follow`, i.e. pflag at the root) the next argument when the group ends.
    #[inline(always)]
    fn short_group<G: Grammar>(
        &mut self,
        arg: &ArgBuf,
        grammar: &G,
        value_may_follow: bool,
        unknown: Reason,
    ) -> Step {
        let len = arg.len as usize;
        let mut j = 1;
        while j < MAX_SHORT_GROUP {
            if j >= len {
                return Step::Continue;
            }
            let Some(info) = grammar.lookup(&self.short_token(byte_at(&arg.bytes, j))) else {
                return Step::Done(Scan::Undecidable(unknown));
            };
            // `-x=value` assigns the rest to x, whatever x's kind.
            if j + 2 < len && byte_at(&arg.bytes, j + 1) == b'=' {
                return Step::Continue;
            }
            if info.kind == TokenKind::FlagValue as u32 {
                if j + 1 >= len {
                    // Alone (`-f x`) a value flag takes the next argument in both parsers;
                    // ending a group (`-Df x`) only pflag lets it.
                    if value_may_follow || len == 2 {
                        self.state = State::OptionValue;
                    } else {
                        return Step::Done(Scan::Undecidable(unknown));
                    }
                }
                return Step::Continue;
            }
            if info.kind != TokenKind::FlagBool as u32 {
                return Step::Done(Scan::Undecidable(unknown));
            }
            j += 1;
        }
        if j >= len { Step::Continue } else { Step::Done(Scan::Undecidable(Reason::ShortGroupTooLong)) }
    }

    /// The word in command position: a leaf ends the scan, a group is entered.
    #[inline(always)]
    fn command_word<G: Grammar>(&mut self, arg: &ArgBuf, grammar: &G) -> Step {
        self.state = State::Options;
        let len = arg.len as usize;
        if arg.complete == 0 || len >= TOKEN_LEN {
            return Step::Done(Scan::Undecidable(Reason::CommandTooLong));
        }
        let mut token = Token::empty(self.scope);
        let mut i = 0;
        while i < TOKEN_LEN - 1 {
            if i >= len {
                break;
            }
            set_byte(&mut token, i, byte_at(&arg.bytes, i));
            i += 1;
        }
        match grammar.lookup(&token) {
            Some(info) if info.kind == TokenKind::Leaf as u32 => Step::Done(Scan::Command(info.node)),
            Some(info) if info.kind == TokenKind::LeafPowerFlags as u32 => {
                self.scope = info.node;
                self.node = info.node;
                self.state = State::LeafArguments;
                Step::Continue
            }
            Some(info) if info.kind == TokenKind::Group as u32 => {
                self.scope = info.node;
                self.node = info.node;
                Step::Continue
            }
            _ => Step::Done(Scan::Undecidable(Reason::UnknownCommand)),
        }
    }
}

impl Scanner {
    /// One argument after a leaf with power flags. Every argument is read as pflag could
    /// read it (which arguments are values is not modelled): a power flag anywhere, in any
    /// spelling (`--attach`, `--attach=…`, `-a`, `-ia`, `-a=…`), gives the leaf that power,
    /// even where the CLI would take it as another flag's value: when in doubt, the
    /// stronger command. Not even `--` ends the search: it ends pflag's flags only when it
    /// is not itself a value (`--detach-keys -- -a` still attaches).
    #[inline(always)]
    fn leaf_argument<G: Grammar>(&mut self, arg: &ArgBuf, grammar: &G) -> Step {
        let len = arg.len as usize;
        if len < 2 || byte_at(&arg.bytes, 0) != b'-' {
            return Step::Continue;
        }
        if byte_at(&arg.bytes, 1) == b'-' {
            if len == 2 {
                return Step::Continue;
            }
            // A name longer than a token cannot be a power flag: its token matches none.
            let (token, _, _) = self.long_token(arg);
            return match grammar.lookup(&token) {
                Some(info) if info.kind == TokenKind::FlagPower as u32 => {
                    Step::Done(Scan::Command(info.node))
                }
                _ => Step::Continue,
            };
        }
        let mut j = 1;
        while j < MAX_SHORT_GROUP {
            if j >= len {
                return Step::Continue;
            }
            let c = byte_at(&arg.bytes, j);
            if c == b'=' {
                return Step::Continue;
            }
            if let Some(info) = grammar.lookup(&self.short_token(c))
                && info.kind == TokenKind::FlagPower as u32
            {
                return Step::Done(Scan::Command(info.node));
            }
            j += 1;
        }
        if j >= len { Step::Continue } else { Step::Done(Scan::Undecidable(Reason::ShortGroupTooLong)) }
    }
}

/// `bytes[index]`, or 0 past the end. Indexing through `get` keeps panics (which the BPF
/// verifier rejects) out of the compiled code even where LLVM cannot prove a bound.
#[inline(always)]
fn byte_at(bytes: &[u8], index: usize) -> u8 {
    match bytes.get(index) {
        Some(&b) => b,
        None => 0,
    }
}

#[inline(always)]
fn set_byte(token: &mut Token, index: usize, value: u8) {
    if let Some(slot) = token.bytes.get_mut(index) {
        *slot = value;
    }
}

/// An argument could not be read (memory fault, missing pointer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadError;

/// Where the engine gets argv[i] from: the caller's memory in the kernel, a `Vec` in
/// userspace. `read` fills `buf` with argument `index` or fails.
pub trait ArgSource {
    fn read(&mut self, index: u32, buf: &mut ArgBuf) -> Result<(), ReadError>;
}

/// Drives a [`Scanner`] over argv one index at a time. The kernel calls `step` from a
/// `bpf_loop` callback (so the verifier checks one iteration, not 64); userspace from a
/// plain loop in [`scan_argv`]. Both get the same verdicts.
#[derive(Clone, Copy, Debug)]
pub struct ArgvScan {
    scanner: Scanner,
}

impl ArgvScan {
    pub const fn new(start: Start) -> Self {
        ArgvScan { scanner: Scanner::new(start) }
    }

    /// Scans argument `index` (1-based; argv[0] is the program name, which docker
    /// ignores). Returns the result once the scan is decided. Reads at most one argument;
    /// decides by index `MAX_ARGS + 1` at the latest.
    #[inline(always)]
    pub fn step<A: ArgSource, G: Grammar>(
        &mut self,
        source: &mut A,
        argc: u32,
        index: u32,
        buf: &mut ArgBuf,
        grammar: &G,
    ) -> Option<Scan> {
        if index >= argc {
            return Some(self.scanner.finish());
        }
        if index > MAX_ARGS {
            return Some(Scan::Undecidable(Reason::TooManyArgs));
        }
        if source.read(index, buf).is_err() {
            return Some(Scan::Undecidable(Reason::UnreadableArgv));
        }
        match self.scanner.feed(buf, grammar) {
            Step::Done(scan) => Some(scan),
            Step::Continue => None,
        }
    }
}

/// Scans argv[1..argc] and returns the command. `buf` is scratch space for one argument.
pub fn scan_argv<A: ArgSource, G: Grammar>(
    start: Start,
    source: &mut A,
    argc: u32,
    buf: &mut ArgBuf,
    grammar: &G,
) -> Scan {
    let mut scan = ArgvScan::new(start);
    let mut index = 1;
    loop {
        if let Some(result) = scan.step(source, argc, index, buf, grammar) {
            return result;
        }
        index += 1;
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::{format, string::String, vec, vec::Vec};

    use super::*;
    use crate::{
        abi::{ARG_BUF, Profile, RuleKind, rule_flag},
        grammar::{self, ROOT, node_by_path, node_path, profile_start},
        test_grammar::MapGrammar,
    };

    fn scan_as(profile: u32, program: &str, args: &[&str]) -> Scan {
        let argv: Vec<String> =
            core::iter::once(program).chain(args.iter().copied()).map(String::from).collect();
        let start = profile_start(profile).unwrap();
        scan_argv(start, &mut SliceArgv(&argv), argv.len() as u32, &mut ArgBuf::new(), &MapGrammar::new())
    }

    /// Scans `docker ARGS...`.
    fn scan(args: &[&str]) -> Scan {
        scan_as(Profile::Docker as u32, "docker", args)
    }

    fn node(path: &str) -> u32 {
        node_by_path(path).unwrap_or_else(|| panic!("no node {path:?} in the tree"))
    }

    fn command(path: &str) -> Scan {
        Scan::Command(node(path))
    }

    fn show(scan: Scan) -> String {
        match scan {
            Scan::Command(id) => format!("command {:?}", node_path(id)),
            other => format!("{other:?}"),
        }
    }

    const UNKNOWN_GLOBAL: Scan = Scan::Undecidable(Reason::UnknownGlobalOption);
    const UNKNOWN_GROUP_OPTION: Scan = Scan::Undecidable(Reason::UnknownGroupOption);
    const UNKNOWN_COMMAND: Scan = Scan::Undecidable(Reason::UnknownCommand);

    #[test]
    fn finds_the_command_after_global_options() {
        let cases: &[(&[&str], &str)] = &[
            (&["exec", "-it", "web", "sh"], "container exec"),
            (&["-D", "exec", "web"], "container exec"),
            (&["--debug", "exec"], "container exec"),
            (&["-H", "unix:///x.sock", "exec"], "container exec"),
            (&["--host", "tcp://h:2375", "exec"], "container exec"),
            (&["--host=tcp://h:2375", "exec"], "container exec"),
            (&["-Htcp://h", "exec"], "container exec"),
            (&["-H=tcp://h", "exec"], "container exec"),
            (&["-l", "debug", "exec"], "container exec"),
            (&["-ldebug", "exec"], "container exec"),
            (&["--log-level=debug", "exec"], "container exec"),
            (&["-c", "ctx", "exec"], "container exec"),
            (&["--context", "ctx", "exec"], "container exec"),
            (&["--config", "/tmp/cfg", "exec"], "container exec"),
            (
                &["--tls", "--tlsverify", "--tlscacert", "a", "--tlscert=b", "--tlskey", "c", "exec"],
                "container exec",
            ),
            // Grouped short options: booleans, then one that takes the rest or the next arg.
            (&["-Dl", "debug", "exec"], "container exec"),
            (&["-DlH", "exec"], "container exec"),
            (&["-Dv", "exec"], "container exec"),
            (&["-D=true", "exec"], "container exec"),
            // A value is consumed whatever it looks like.
            (&["--host", "exec", "ps"], "container ls"),
            (&["-H", "--", "exec"], "container exec"),
            (&["-l", "-D", "exec"], "container exec"),
            // `--` ends the options; the next word is the command.
            (&["--", "exec"], "container exec"),
            (&["-D", "--", "cp", "a", "b"], "container cp"),
            // Repeated flags and empty values.
            (&["-D", "-D", "--debug", "exec"], "container exec"),
            (&["--host=", "exec"], "container exec"),
            (&["-H=", "exec"], "container exec"),
            // Help and version flags do not stop the CLI from running the command.
            (&["-h", "exec", "web"], "container exec"),
            (&["--version", "cp", "a", "b"], "container cp"),
        ];
        for (args, expected) in cases {
            assert_eq!(show(scan(args)), show(command(expected)), "docker {}", args.join(" "));
        }
    }

    #[test]
    fn every_spelling_of_a_command_is_the_same_node() {
        let cases: &[(&[&str], &str)] = &[
            (&["container", "exec", "web", "sh"], "container exec"),
            (&["container", "--help", "exec", "web"], "container exec"),
            (&["container", "-h", "exec", "web"], "container exec"),
            (&["image", "push", "x"], "image push"),
            (&["push", "x"], "image push"),
            (&["image", "tag", "a", "b"], "image tag"),
            (&["tag", "a", "b"], "image tag"),
            (&["container", "cp", "a", "b"], "container cp"),
            (&["container", "attach", "web"], "container attach"),
            (&["attach", "web"], "container attach"),
            (&["image", "load"], "image load"),
            (&["image", "save", "x"], "image save"),
            (&["image", "import", "x"], "image import"),
            (&["container", "export", "web"], "container export"),
            (&["container", "commit", "web"], "container commit"),
            (&["container", "diff", "web"], "container diff"),
            (&["ps"], "container ls"),
            (&["container", "ps"], "container ls"),
            (&["container", "list"], "container ls"),
            (&["images"], "image ls"),
            (&["network", "create", "n"], "network create"),
            (&["compose", "exec", "web", "sh"], "compose exec"),
            (&["compose", "-f", "x.yml", "exec", "web"], "compose exec"),
            (&["compose", "--file", "x.yml", "exec", "web"], "compose exec"),
            (&["compose", "--file=x.yml", "-p", "proj", "cp", "a", "b"], "compose cp"),
            (&["compose", "-px", "exec"], "compose exec"),
            (&["compose", "--dry-run", "exec"], "compose exec"),
            (&["-D", "compose", "-h", "exec"], "compose exec"),
            (&["compose", "ps", "exec"], "compose ps"),
            (&["system", "dial-stdio"], "system dial-stdio"),
        ];
        for (args, expected) in cases {
            assert_eq!(show(scan(args)), show(command(expected)), "docker {}", args.join(" "));
        }
    }

    #[test]
    fn look_alikes_are_other_commands() {
        let cases: &[(&[&str], &str)] = &[
            (&["ps", "--filter", "name=exec"], "container ls"),
            (&["run", "alpine", "exec"], "container run"),
            (&["logs", "exec"], "container logs"),
            (&["container", "ls", "exec"], "container ls"),
            (&["image", "ls", "push"], "image ls"),
            (&["network", "create", "exec"], "network create"),
            (&["inspect", "exec"], "inspect"),
            (&["help", "exec"], "help"),
        ];
        for (args, expected) in cases {
            assert_eq!(show(scan(args)), show(command(expected)), "docker {}", args.join(" "));
        }
    }

    #[test]
    fn a_group_without_subcommand_is_the_group() {
        assert_eq!(scan(&["container"]), command("container"));
        assert_eq!(scan(&["compose"]), command("compose"));
        assert_eq!(scan(&["compose", "-f", "x.yml"]), command("compose"));
        assert_eq!(scan(&["container", "--help"]), command("container"));
    }

    #[test]
    fn no_command_is_harmless() {
        for args in [&[][..], &["--version"], &["-v"], &["-h"], &["--host"], &["-D", "-l"], &["--"]] {
            assert_eq!(scan(args), Scan::NoCommand, "docker {}", args.join(" "));
        }
    }

    #[test]
    fn what_docker_would_not_accept_is_undecidable() {
        let cases: &[(&[&str], Scan)] = &[
            (&["--foo", "exec"], UNKNOWN_GLOBAL),
            (&["-x", "exec"], UNKNOWN_GLOBAL),
            (&["-Dx", "exec"], UNKNOWN_GLOBAL),
            (&["---host", "x", "exec"], UNKNOWN_GLOBAL),
            (&["--=x", "exec"], UNKNOWN_GLOBAL),
            (&["-D=", "exec"], UNKNOWN_GLOBAL),
            (&["--Host", "x", "exec"], UNKNOWN_GLOBAL),
            (&["frobnicate"], UNKNOWN_COMMAND),
            (&["EXEC"], UNKNOWN_COMMAND),
            (&[""], UNKNOWN_COMMAND),
            (&["-"], UNKNOWN_COMMAND),
            (&["--", "--help"], UNKNOWN_COMMAND),
            (&["exe"], UNKNOWN_COMMAND),
            (&["exec "], UNKNOWN_COMMAND),
            // Inside a group: cobra's rules, the group's own flags only.
            (&["container", "frobnicate"], UNKNOWN_COMMAND),
            (&["container", ""], UNKNOWN_COMMAND),
            (&["container", "--foo", "exec"], UNKNOWN_GROUP_OPTION),
            (&["container", "-D", "exec"], UNKNOWN_GROUP_OPTION),
            (&["container", "--", "exec"], UNKNOWN_GROUP_OPTION),
            (&["compose", "--frobnicate", "exec"], UNKNOWN_GROUP_OPTION),
            (&["compose", "--dry-runf", "ps"], UNKNOWN_GROUP_OPTION),
            // A value flag ending a short group: Traverse reads the next word as a command.
            (&["compose", "-hf", "exec", "web"], UNKNOWN_GROUP_OPTION),
            (&["compose", "exce"], UNKNOWN_COMMAND),
        ];
        for (args, expected) in cases {
            assert_eq!(show(scan(args)), show(*expected), "docker {}", args.join(" "));
        }
    }

    #[test]
    fn standalone_compose_starts_in_compose() {
        let compose = |args: &[&str]| scan_as(Profile::Compose as u32, "docker-compose", args);
        assert_eq!(compose(&["exec", "web", "sh"]), command("compose exec"));
        assert_eq!(compose(&["-f", "x.yml", "cp", "a", "b"]), command("compose cp"));
        assert_eq!(compose(&["ps"]), command("compose ps"));
        assert_eq!(compose(&[]), command("compose"));
        // As the docker CLI runs its plugin: `docker-compose [GLOBAL OPTIONS] compose ...`.
        assert_eq!(compose(&["compose", "exec", "web"]), command("compose exec"));
        assert_eq!(compose(&["-D", "compose", "ps"]), command("compose ps"));
        assert_eq!(compose(&["--frobnicate", "ps"]), UNKNOWN_GROUP_OPTION);
        assert_eq!(compose(&["frobnicate"]), UNKNOWN_COMMAND);
        // The root's commands are not compose's.
        assert_eq!(compose(&["container", "exec"]), UNKNOWN_COMMAND);
    }

    #[test]
    fn limits_are_enforced_exactly() {
        // 31 bytes fit a token, 32 do not.
        let long_word = "a".repeat(TOKEN_LEN);
        assert_eq!(scan(&[&long_word]), Scan::Undecidable(Reason::CommandTooLong));
        assert_eq!(scan(&[&"a".repeat(TOKEN_LEN - 1)]), UNKNOWN_COMMAND);
        let huge = "e".repeat(ARG_BUF * 2);
        assert_eq!(scan(&[&huge]), Scan::Undecidable(Reason::CommandTooLong));
        assert_eq!(scan(&["container", &huge]), Scan::Undecidable(Reason::CommandTooLong));
        // A long option name is no option docker has; a long value is fine.
        assert_eq!(scan(&[&format!("--{}", "a".repeat(40)), "exec"]), UNKNOWN_GLOBAL);
        let long_value = format!("--host={}", "h".repeat(ARG_BUF * 2));
        assert_eq!(scan(&[&long_value, "exec"]), command("container exec"));
        // Short groups: MAX_SHORT_GROUP-1 letters are walked, more are undecidable.
        let group_ok = format!("-{}", "D".repeat(MAX_SHORT_GROUP - 1));
        assert_eq!(scan(&[&group_ok, "exec"]), command("container exec"));
        let group_long = format!("-{}", "D".repeat(MAX_SHORT_GROUP));
        assert_eq!(scan(&[&group_long, "exec"]), Scan::Undecidable(Reason::ShortGroupTooLong));
        // The command may be argument MAX_ARGS, not MAX_ARGS + 1.
        let mut args = vec!["-D"; MAX_ARGS as usize - 1];
        args.push("exec");
        assert_eq!(scan(&args), command("container exec"));
        let mut args = vec!["-D"; MAX_ARGS as usize];
        args.push("exec");
        assert_eq!(scan(&args), Scan::Undecidable(Reason::TooManyArgs));
        // The same bound holds for group flags: the subcommand must be within MAX_ARGS.
        let mut args = vec!["-D"; MAX_ARGS as usize - 3];
        args.extend(["container", "-h", "exec"]);
        assert_eq!(scan(&args), command("container exec"));
        args.insert(0, "-D");
        assert_eq!(scan(&args), Scan::Undecidable(Reason::TooManyArgs));
        // Exactly MAX_ARGS options and nothing else: argv is fully scanned.
        assert_eq!(scan(&vec!["-D"; MAX_ARGS as usize]), Scan::NoCommand);
    }

    #[test]
    fn unreadable_argv_is_undecidable() {
        struct Broken;
        impl ArgSource for Broken {
            fn read(&mut self, _: u32, _: &mut ArgBuf) -> Result<(), ReadError> {
                Err(ReadError)
            }
        }
        let start = profile_start(Profile::Docker as u32).unwrap();
        let grammar = MapGrammar::new();
        assert_eq!(
            scan_argv(start, &mut Broken, 3, &mut ArgBuf::new(), &grammar),
            Scan::Undecidable(Reason::UnreadableArgv)
        );
        assert_eq!(scan_argv(start, &mut Broken, 1, &mut ArgBuf::new(), &grammar), Scan::NoCommand);
    }

    #[test]
    fn judging_deny_and_allow_lists() {
        let exec = node("container exec");
        let ps = node("container ls");
        let mut deny = RuleConfig::default();
        deny.set_command(exec);
        assert_eq!(judge(Scan::Command(exec), &deny), Verdict::Deny { command: exec });
        assert_eq!(judge(Scan::Command(ps), &deny), Verdict::Allow);
        assert_eq!(judge(Scan::NoCommand, &deny), Verdict::Allow);
        assert_eq!(judge(UNKNOWN_COMMAND, &deny), Verdict::Undecidable(Reason::UnknownCommand));
        let mut allow = RuleConfig { flags: RuleKind::AllowList as u32, ..Default::default() };
        allow.set_command(ps);
        assert_eq!(judge(Scan::Command(ps), &allow), Verdict::Allow);
        assert_eq!(judge(Scan::Command(exec), &allow), Verdict::Deny { command: exec });
        assert_eq!(judge(Scan::NoCommand, &allow), Verdict::Allow);

        // Several rules: the lowest that does not allow decides; a missing rule fails closed.
        let audit = RuleConfig { flags: RuleKind::DenyList as u32 | rule_flag::AUDIT, ..deny };
        let table: &[RuleConfig] = &[RuleConfig::default(), audit, deny];
        let decided = judge_rules(Scan::Command(exec), 0b111, table);
        assert_eq!(decided, Decision { verdict: Verdict::Deny { command: exec }, rule: 1, audit: true });
        let decided = judge_rules(Scan::Command(exec), 0b101, table);
        assert_eq!(decided, Decision { verdict: Verdict::Deny { command: exec }, rule: 2, audit: false });
        assert_eq!(judge_rules(Scan::Command(ps), 0b111, table).verdict, Verdict::Allow);
        let missing = judge_rules(Scan::Command(ps), 0b1000, table);
        assert_eq!(missing.verdict, Verdict::Undecidable(Reason::NotConfigured));
        assert_eq!(judge_rules(Scan::Command(ps), 0, table).verdict, Verdict::Allow);
    }

    #[test]
    fn reasons_round_trip() {
        for value in 0..32 {
            if let Ok(reason) = Reason::try_from(value) {
                assert_eq!(reason as u32, value);
                assert!(!reason.as_str().is_empty());
            }
        }
    }

    /// Counts the arguments the engine reads, to hold it to its bound.
    struct Counting<'a> {
        argv: &'a [String],
        reads: u32,
    }

    impl ArgSource for Counting<'_> {
        fn read(&mut self, index: u32, buf: &mut ArgBuf) -> Result<(), ReadError> {
            self.reads += 1;
            buf.set(self.argv.get(index as usize).ok_or(ReadError)?.as_bytes());
            Ok(())
        }
    }

    /// Random argv drawn from grammar words, flag shapes and junk: the engine never
    /// panics, reads each argument at most once and never more than `MAX_ARGS`, and once
    /// it finds a leaf command, what follows cannot change it.
    #[test]
    fn random_argv_never_panics_and_stays_within_its_bound() {
        const WORDS: &[&str] = &[
            "exec",
            "ps",
            "-D",
            "-H",
            "-l",
            "--host",
            "--host=x",
            "-Dl",
            "--",
            "-",
            "",
            "--debug",
            "-x",
            "container",
            "compose",
            "image",
            "-f",
            "--file",
            "-h",
            "--help",
            "=",
            "-H=",
            "--tls",
            "a",
            "-DDDDDDDDDDDDDDDDDDD",
            "--config",
            "push",
            "cp",
            "-p",
            "--dry-run",
            "ls",
            "network",
        ];
        let grammar = MapGrammar::new();
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for round in 0..30_000 {
            let len = (next() % if round % 100 == 0 { 90 } else { 12 }) as usize;
            let mut argv: Vec<String> = vec![String::from("docker")];
            for _ in 0..len {
                let r = next();
                if r % 5 == 0 {
                    let n = (r >> 8) as usize % (ARG_BUF + 40);
                    argv.push((0..n).map(|i| (b' ' + ((r >> (i % 50)) % 90) as u8) as char).collect());
                } else {
                    argv.push(String::from(WORDS[(r >> 8) as usize % WORDS.len()]));
                }
            }
            for profile in [Profile::Docker as u32, Profile::Compose as u32] {
                let start = profile_start(profile).unwrap();
                let mut source = Counting { argv: &argv, reads: 0 };
                let result = scan_argv(start, &mut source, argv.len() as u32, &mut ArgBuf::new(), &grammar);
                assert!(source.reads <= MAX_ARGS && source.reads < argv.len() as u32 + 1, "{argv:?}");
                if let Scan::Command(id) = result
                    && !grammar::is_group(id)
                {
                    let mut longer = argv.clone();
                    longer.extend(["exec", "--foo", "-x"].map(String::from));
                    let again = scan_argv(
                        start,
                        &mut SliceArgv(&longer),
                        longer.len() as u32,
                        &mut ArgBuf::new(),
                        &grammar,
                    );
                    assert_eq!(again, result, "{argv:?}");
                }
            }
        }
    }

    #[test]
    fn root_node_is_not_a_command() {
        assert_eq!(node_path(ROOT), "");
        assert!(grammar::is_group(ROOT));
    }
}
