//! The decision engine: finds the docker command in an argv the way the docker CLI does
//! (pflag parses the global options with interspersing off, the first positional word is
//! the command) and judges it against a rule.
//!
//! Written for the BPF verifier as much as for people: one argument at a time, bounded
//! loops with constant limits, no allocation, no panics on any input. Anything it cannot
//! decide inside its limits is `Undecidable`, which the kernel denies.

use crate::abi::*;
use crate::grammar::Grammar;

/// Why the engine reached its verdict. Stored as u32 in events.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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
    /// The exec came through a syscall or ABI whose argv the kernel program cannot locate.
    UnsupportedExecPath = 8,
    /// The binary runs as an interpreter (`#!` or binfmt_misc): its argv is not the caller's.
    Interpreter = 9,
    /// The kernel could not identify the executed file.
    UnreadableFile = 10,
    /// Load-time kernel offsets are missing.
    NotConfigured = 11,
}

impl Reason {
    pub fn from_u32(value: u32) -> Option<Reason> {
        use Reason::*;
        Some(match value {
            1 => Command,
            2 => UnknownGlobalOption,
            3 => UnknownCommand,
            4 => CommandTooLong,
            5 => ShortGroupTooLong,
            6 => TooManyArgs,
            7 => UnreadableArgv,
            8 => UnsupportedExecPath,
            9 => Interpreter,
            10 => UnreadableFile,
            11 => NotConfigured,
            _ => return None,
        })
    }

    /// Stable snake_case name used in logs and JSON.
    pub fn as_str(self) -> &'static str {
        use Reason::*;
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
        }
    }
}

/// What scanning argv found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scan {
    /// The command word, by id.
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
    /// The rule's command set denies this command.
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
            if rule.has_command(id) != rule.is_allow_list() {
                Verdict::Deny { command: id }
            } else {
                Verdict::Allow
            }
        }
        Scan::NoCommand => Verdict::Allow,
        Scan::Undecidable(reason) => Verdict::Undecidable(reason),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Reading global options; the first positional word is the command.
    Globals,
    /// The previous argument was a global option that takes the next one as its value.
    OptionValue,
    /// After `--`: the next argument is the command, whatever it looks like.
    CommandNext,
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
}

impl Default for Scanner {
    fn default() -> Self {
        Self::new()
    }
}

impl Scanner {
    pub const fn new() -> Self {
        Scanner { state: State::Globals }
    }

    /// What the scan means when argv ends here.
    pub fn finish(&self) -> Scan {
        Scan::NoCommand
    }

    #[inline(always)]
    pub fn feed<G: Grammar>(&mut self, arg: &ArgBuf, grammar: &G) -> Step {
        match self.state {
            State::OptionValue => {
                // pflag takes the next argument as the value whatever it is, even `--x`.
                self.state = State::Globals;
                Step::Continue
            }
            State::CommandNext => Step::Done(command_word(arg, grammar)),
            State::Globals => self.global_or_command(arg, grammar),
        }
    }

    #[inline(always)]
    fn global_or_command<G: Grammar>(&mut self, arg: &ArgBuf, grammar: &G) -> Step {
        let len = arg.len as usize;
        // pflag: "", "-" and words not starting with '-' are positional; with interspersing
        // off the first positional is the command.
        if len < 2 || byte_at(&arg.bytes, 0) != b'-' {
            return Step::Done(command_word(arg, grammar));
        }
        if byte_at(&arg.bytes, 1) == b'-' {
            if len == 2 {
                self.state = State::CommandNext;
                return Step::Continue;
            }
            return self.long_option(arg, grammar);
        }
        self.short_group(arg, grammar)
    }

    /// `--name`, `--name value`, `--name=value`.
    #[inline(always)]
    fn long_option<G: Grammar>(&mut self, arg: &ArgBuf, grammar: &G) -> Step {
        let len = arg.len as usize;
        let mut token = Token::empty();
        let mut has_value = false;
        let mut i = 0;
        while i < TOKEN_LEN - 1 {
            if i >= len {
                break;
            }
            let c = byte_at(&arg.bytes, i);
            if c == b'=' {
                has_value = true;
                break;
            }
            set_byte(&mut token, i, c);
            i += 1;
        }
        if !has_value && i < len {
            // Longer than any option name: not one the CLI knows.
            return Step::Done(Scan::Undecidable(Reason::UnknownGlobalOption));
        }
        match grammar.lookup(&token) {
            Some(info) if info.kind == TOKEN_GLOBAL_BOOL => Step::Continue,
            Some(info) if info.kind == TOKEN_GLOBAL_VALUE => {
                if !has_value {
                    self.state = State::OptionValue;
                }
                Step::Continue
            }
            _ => Step::Done(Scan::Undecidable(Reason::UnknownGlobalOption)),
        }
    }

    /// `-D`, `-Dl debug`, `-ldebug`, `-l=debug`, `-D=true`: pflag walks the group one
    /// letter at a time; a letter that takes a value takes the rest of the group, or the
    /// next argument when the group ends.
    #[inline(always)]
    fn short_group<G: Grammar>(&mut self, arg: &ArgBuf, grammar: &G) -> Step {
        let len = arg.len as usize;
        let mut j = 1;
        while j < MAX_SHORT_GROUP {
            if j >= len {
                return Step::Continue;
            }
            let mut token = Token::empty();
            token.bytes[0] = b'-';
            token.bytes[1] = byte_at(&arg.bytes, j);
            let info = match grammar.lookup(&token) {
                Some(info) => info,
                None => return Step::Done(Scan::Undecidable(Reason::UnknownGlobalOption)),
            };
            // `-x=value` assigns the rest to x, whatever x's kind.
            if j + 2 < len && byte_at(&arg.bytes, j + 1) == b'=' {
                return Step::Continue;
            }
            if info.kind == TOKEN_GLOBAL_VALUE {
                if j + 1 >= len {
                    self.state = State::OptionValue;
                }
                return Step::Continue;
            }
            if info.kind != TOKEN_GLOBAL_BOOL {
                return Step::Done(Scan::Undecidable(Reason::UnknownGlobalOption));
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

/// The word in command position.
#[inline(always)]
fn command_word<G: Grammar>(arg: &ArgBuf, grammar: &G) -> Scan {
    let len = arg.len as usize;
    if arg.complete == 0 || len >= TOKEN_LEN {
        return Scan::Undecidable(Reason::CommandTooLong);
    }
    let mut token = Token::empty();
    let mut i = 0;
    while i < TOKEN_LEN - 1 {
        if i >= len {
            break;
        }
        set_byte(&mut token, i, byte_at(&arg.bytes, i));
        i += 1;
    }
    match grammar.lookup(&token) {
        Some(info) if info.kind == TOKEN_COMMAND => Scan::Command(info.command),
        _ => Scan::Undecidable(Reason::UnknownCommand),
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
#[derive(Clone, Copy, Debug, Default)]
pub struct ArgvScan {
    scanner: Scanner,
}

impl ArgvScan {
    pub const fn new() -> Self {
        ArgvScan { scanner: Scanner::new() }
    }

    /// Scans argument `index` (1-based; argv[0] is the program name, which docker
    /// ignores). Returns the result once the scan is decided.
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
pub fn scan_argv<A: ArgSource, G: Grammar>(source: &mut A, argc: u32, buf: &mut ArgBuf, grammar: &G) -> Scan {
    let mut scan = ArgvScan::new();
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
    use std::{string::String, vec, vec::Vec};

    use super::*;
    use crate::grammar::{StaticGrammar, command_id};

    struct VecArgv<'a>(&'a [String]);

    impl ArgSource for VecArgv<'_> {
        fn read(&mut self, index: u32, buf: &mut ArgBuf) -> Result<(), ReadError> {
            buf.set(self.0.get(index as usize).ok_or(ReadError)?.as_bytes());
            Ok(())
        }
    }

    /// Scans `docker ARGS...`.
    fn scan(args: &[&str]) -> Scan {
        let argv: Vec<String> =
            core::iter::once("docker").chain(args.iter().copied()).map(String::from).collect();
        scan_argv(&mut VecArgv(&argv), argv.len() as u32, &mut ArgBuf::new(), &StaticGrammar)
    }

    fn command(name: &str) -> Scan {
        Scan::Command(command_id(name).unwrap())
    }

    const UNDECIDABLE_GLOBAL: Scan = Scan::Undecidable(Reason::UnknownGlobalOption);
    const UNKNOWN_COMMAND: Scan = Scan::Undecidable(Reason::UnknownCommand);

    #[test]
    fn finds_the_command_after_global_options() {
        let cases: &[(&[&str], &str)] = &[
            (&["exec", "-it", "web", "sh"], "exec"),
            (&["-D", "exec", "web"], "exec"),
            (&["--debug", "exec"], "exec"),
            (&["-H", "unix:///x.sock", "exec"], "exec"),
            (&["--host", "tcp://h:2375", "exec"], "exec"),
            (&["--host=tcp://h:2375", "exec"], "exec"),
            (&["-Htcp://h", "exec"], "exec"),
            (&["-H=tcp://h", "exec"], "exec"),
            (&["-l", "debug", "exec"], "exec"),
            (&["-ldebug", "exec"], "exec"),
            (&["--log-level=debug", "exec"], "exec"),
            (&["-c", "ctx", "exec"], "exec"),
            (&["--context", "ctx", "exec"], "exec"),
            (&["--config", "/tmp/cfg", "exec"], "exec"),
            (&["--tls", "--tlsverify", "--tlscacert", "a", "--tlscert=b", "--tlskey", "c", "exec"], "exec"),
            // Grouped short options: booleans, then one that takes the rest or the next arg.
            (&["-Dl", "debug", "exec"], "exec"),
            (&["-DlH", "exec"], "exec"),
            (&["-Dv", "exec"], "exec"),
            (&["-D=true", "exec"], "exec"),
            // A value is consumed whatever it looks like.
            (&["--host", "exec", "ps"], "ps"),
            (&["-H", "--", "exec"], "exec"),
            (&["-l", "-D", "exec"], "exec"),
            // `--` ends the options; the next word is the command.
            (&["--", "exec"], "exec"),
            (&["-D", "--", "cp", "a", "b"], "cp"),
            // Repeated flags and empty values.
            (&["-D", "-D", "--debug", "exec"], "exec"),
            (&["--host=", "exec"], "exec"),
            (&["-H=", "exec"], "exec"),
            // Look-alikes that are not exec.
            (&["ps", "--filter", "name=exec"], "ps"),
            (&["run", "alpine", "exec"], "run"),
            (&["logs", "exec"], "logs"),
            (&["container", "exec", "web"], "container"),
            (&["compose", "exec", "web"], "compose"),
        ];
        for (args, expected) in cases {
            assert_eq!(scan(args), command(expected), "docker {}", args.join(" "));
        }
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
            (&["--foo", "exec"], UNDECIDABLE_GLOBAL),
            (&["-x", "exec"], UNDECIDABLE_GLOBAL),
            (&["-Dx", "exec"], UNDECIDABLE_GLOBAL),
            (&["---host", "x", "exec"], UNDECIDABLE_GLOBAL),
            (&["--=x", "exec"], UNDECIDABLE_GLOBAL),
            (&["-D=", "exec"], UNDECIDABLE_GLOBAL),
            (&["--Host", "x", "exec"], UNDECIDABLE_GLOBAL),
            (&["frobnicate"], UNKNOWN_COMMAND),
            (&["EXEC"], UNKNOWN_COMMAND),
            (&[""], UNKNOWN_COMMAND),
            (&["-"], UNKNOWN_COMMAND),
            (&["--", "--help"], UNKNOWN_COMMAND),
            (&["exe"], UNKNOWN_COMMAND),
            (&["exec "], UNKNOWN_COMMAND),
        ];
        for (args, expected) in cases {
            assert_eq!(scan(args), *expected, "docker {}", args.join(" "));
        }
    }

    #[test]
    fn limits_are_enforced_exactly() {
        // 31 bytes fit a token, 32 do not.
        let long_word = "a".repeat(TOKEN_LEN);
        assert_eq!(scan(&[&long_word]), Scan::Undecidable(Reason::CommandTooLong));
        assert_eq!(scan(&[&"a".repeat(TOKEN_LEN - 1)]), UNKNOWN_COMMAND);
        let huge = "e".repeat(ARG_BUF * 2);
        assert_eq!(scan(&[&huge]), Scan::Undecidable(Reason::CommandTooLong));
        // A long option name is no option docker has; a long value is fine.
        assert_eq!(scan(&[&std::format!("--{}", "a".repeat(40)), "exec"]), UNDECIDABLE_GLOBAL);
        let long_value = std::format!("--host={}", "h".repeat(ARG_BUF * 2));
        assert_eq!(scan(&[&long_value, "exec"]), command("exec"));
        // Short groups: MAX_SHORT_GROUP-1 letters are walked, more are undecidable.
        let group_ok = std::format!("-{}", "D".repeat(MAX_SHORT_GROUP - 1));
        assert_eq!(scan(&[&group_ok, "exec"]), command("exec"));
        let group_long = std::format!("-{}", "D".repeat(MAX_SHORT_GROUP));
        assert_eq!(scan(&[&group_long, "exec"]), Scan::Undecidable(Reason::ShortGroupTooLong));
        // The command may be argument MAX_ARGS, not MAX_ARGS + 1.
        let mut args = vec!["-D"; MAX_ARGS as usize - 1];
        args.push("exec");
        assert_eq!(scan(&args), command("exec"));
        let mut args = vec!["-D"; MAX_ARGS as usize];
        args.push("exec");
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
        assert_eq!(
            scan_argv(&mut Broken, 3, &mut ArgBuf::new(), &StaticGrammar),
            Scan::Undecidable(Reason::UnreadableArgv)
        );
        assert_eq!(scan_argv(&mut Broken, 1, &mut ArgBuf::new(), &StaticGrammar), Scan::NoCommand);
    }

    #[test]
    fn judging_deny_and_allow_lists() {
        let exec = command_id("exec").unwrap();
        let ps = command_id("ps").unwrap();
        let mut deny = RuleConfig::default();
        deny.set_command(exec);
        assert_eq!(judge(Scan::Command(exec), &deny), Verdict::Deny { command: exec });
        assert_eq!(judge(Scan::Command(ps), &deny), Verdict::Allow);
        assert_eq!(judge(Scan::NoCommand, &deny), Verdict::Allow);
        assert_eq!(judge(UNKNOWN_COMMAND, &deny), Verdict::Undecidable(Reason::UnknownCommand));
        let mut allow = RuleConfig { flags: RULE_ALLOW_LIST, ..Default::default() };
        allow.set_command(ps);
        assert_eq!(judge(Scan::Command(ps), &allow), Verdict::Allow);
        assert_eq!(judge(Scan::Command(exec), &allow), Verdict::Deny { command: exec });
        assert_eq!(judge(Scan::NoCommand, &allow), Verdict::Allow);
    }

    #[test]
    fn reasons_round_trip() {
        for value in 0..20 {
            if let Some(reason) = Reason::from_u32(value) {
                assert_eq!(reason as u32, value);
                assert!(!reason.as_str().is_empty());
            }
        }
    }

    /// Random argv drawn from grammar words, flag shapes and junk: the engine never
    /// panics, and once it finds a command, what follows the command cannot change it.
    #[test]
    fn random_argv_never_panics_and_suffixes_do_not_matter() {
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
            "=",
            "-H=",
            "--tls",
            "a",
            "-DDDDDDDDDDDDDDDDDDD",
            "--config",
        ];
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..20_000 {
            let len = (next() % 12) as usize;
            let mut args: Vec<String> = Vec::new();
            for _ in 0..len {
                let r = next();
                if r % 5 == 0 {
                    let n = (r >> 8) as usize % (ARG_BUF + 40);
                    args.push((0..n).map(|i| (b' ' + ((r >> (i % 50)) % 90) as u8) as char).collect());
                } else {
                    args.push(String::from(WORDS[(r >> 8) as usize % WORDS.len()]));
                }
            }
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            let result = scan(&refs);
            if let Scan::Command(_) = result {
                let mut longer = refs.clone();
                longer.extend(["exec", "--foo", "-x"]);
                assert_eq!(scan(&longer), result, "{refs:?}");
            }
        }
    }
}
