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
    Deny { command: u32 },
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
        if j >= len {
            Step::Continue
        } else {
            Step::Done(Scan::Undecidable(Reason::ShortGroupTooLong))
        }
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

/// Where the engine gets argv[i] from: the caller's memory in the kernel, a `Vec` in
/// userspace. `read` fills `buf` with argument `index` or fails.
pub trait ArgSource {
    fn read(&mut self, index: u32, buf: &mut ArgBuf) -> Result<(), ()>;
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
pub fn scan_argv<A: ArgSource, G: Grammar>(
    source: &mut A,
    argc: u32,
    buf: &mut ArgBuf,
    grammar: &G,
) -> Scan {
    let mut scan = ArgvScan::new();
    let mut index = 1;
    loop {
        if let Some(result) = scan.step(source, argc, index, buf, grammar) {
            return result;
        }
        index += 1;
    }
}
