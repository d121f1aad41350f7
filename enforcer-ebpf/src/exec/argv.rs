//! The two argv sources the exec checks scan: the caller's memory (early check) and the
//! kernel's copy (re-check). Each can log what it reads into the event's argv.

use enforcer_common::{
    abi::{ARG_BUF, ArgBuf, DenialEvent, EVENT_ARGV_LEN, MAX_SKIP_CHUNKS, SKIP_CHUNK},
    engine::{ArgSource, ReadError},
};

use super::loop_state::LoopState;
use crate::kernel::{read_kernel_bytes, read_user, read_user_str};

/// Which argv a `bpf_loop` callback reads, between iterations kept in the loop state.
pub trait LoopSource {
    /// The reader for one iteration, over the parts of the scratch space it writes.
    type Reader<'a>: ArgSource;
    fn load<'a>(
        state: &LoopState,
        event: &'a mut DenialEvent,
        skip: &'a mut [u8; SKIP_CHUNK],
        log: bool,
    ) -> Self::Reader<'a>;
    fn store(reader: &Self::Reader<'_>, state: &mut LoopState);
}

/// The caller's argv (early check).
pub enum Caller {}

/// The kernel's copy of argv (re-check).
pub enum KernelCopy {}

/// Reads argv[i] from the exec caller's memory; with `log`, copies each argument it reads
/// into the event's argv log (only done after a denial, so an allowed exec pays nothing).
pub struct UserArgv<'a> {
    argv: u64,
    event: &'a mut DenialEvent,
    log: bool,
}

/// Reads argv from the kernel's own copy at `bprm->p` (in the new mm, current at
/// `bprm_committing_creds`): NUL-terminated strings one after the other, so it can only
/// be read in order. `skip` is where it steps over the rest of a long one.
pub struct CopyArgv<'a> {
    cursor: u64,
    index: u32,
    skip: &'a mut [u8; SKIP_CHUNK],
    event: &'a mut DenialEvent,
    log: bool,
}

impl LoopSource for Caller {
    type Reader<'a> = UserArgv<'a>;

    #[inline(always)]
    fn load<'a>(
        state: &LoopState,
        event: &'a mut DenialEvent,
        _: &'a mut [u8; SKIP_CHUNK],
        log: bool,
    ) -> UserArgv<'a> {
        UserArgv { argv: state.argv, event, log }
    }

    #[inline(always)]
    fn store(_: &UserArgv<'_>, _: &mut LoopState) {}
}

impl LoopSource for KernelCopy {
    type Reader<'a> = CopyArgv<'a>;

    #[inline(always)]
    fn load<'a>(
        state: &LoopState,
        event: &'a mut DenialEvent,
        skip: &'a mut [u8; SKIP_CHUNK],
        log: bool,
    ) -> CopyArgv<'a> {
        CopyArgv { cursor: state.cursor, index: state.cursor_index, skip, event, log }
    }

    #[inline(always)]
    fn store(reader: &CopyArgv<'_>, state: &mut LoopState) {
        state.cursor = reader.cursor;
        state.cursor_index = reader.index;
    }
}

impl ArgSource for UserArgv<'_> {
    #[inline(always)]
    fn read(&mut self, index: u32, buf: &mut ArgBuf) -> Result<(), ReadError> {
        let index = index & 0xffff;
        let ptr: u64 = read_user(self.argv + 8 * index as u64).map_err(|_| ReadError)?;
        let n = read_user_str(&mut buf.bytes, ptr);
        fill_len(buf, n)?;
        if self.log {
            log_arg(self.event, buf);
        }
        Ok(())
    }
}

impl ArgSource for CopyArgv<'_> {
    #[inline(always)]
    fn read(&mut self, index: u32, buf: &mut ArgBuf) -> Result<(), ReadError> {
        if index != self.index {
            return Err(ReadError);
        }
        let n = read_user_str(&mut buf.bytes, self.cursor);
        fill_len(buf, n)?;
        self.cursor = if buf.complete != 0 {
            self.cursor + n as u64
        } else {
            string_end(self.cursor + ARG_BUF as u64 - 1, self.skip)?
        };
        self.index += 1;
        if self.log {
            log_arg(self.event, buf);
        }
        Ok(())
    }
}

/// Sets the buffer's length from what `bpf_probe_read_user_str` returned.
#[inline(always)]
fn fill_len(buf: &mut ArgBuf, n: i64) -> Result<(), ReadError> {
    if n <= 0 {
        return Err(ReadError);
    }
    let n = (n as u32).min(ARG_BUF as u32);
    buf.len = n - 1;
    // A full buffer cannot tell "exactly fits" from "cut short": treat as cut short.
    buf.complete = (n < ARG_BUF as u32) as u32;
    Ok(())
}

/// Appends the argument in `buf` to the event's argv log.
#[inline(always)]
fn log_arg(event: &mut DenialEvent, buf: &ArgBuf) {
    let offset = event.argv_len as usize;
    if offset >= EVENT_ARGV_LEN {
        event.argv_truncated = 1;
        return;
    }
    // The argument and its NUL: 1..=ARG_BUF bytes (a cut-short argument fills the buffer).
    let size = (buf.len as usize).min(ARG_BUF - 1) + 1;
    // SAFETY: the event's argv has ARG_BUF bytes of slack past EVENT_ARGV_LEN, so any
    // offset below EVENT_ARGV_LEN plus any size up to ARG_BUF stays inside it; `event` is
    // borrowed mutably, so nothing else refers to those bytes.
    let copied = unsafe {
        let dst = event.argv.as_mut_ptr().add(offset & (EVENT_ARGV_LEN - 1));
        read_kernel_bytes(dst, size as u32, buf.bytes.as_ptr() as u64)
    };
    if copied == 0 {
        event.argv_len = (offset + size) as u32;
    }
}

/// The address just past the NUL of the string at `pos` in the current mm, reading it in
/// `SKIP_CHUNK` pieces into `chunk`.
#[inline(always)]
pub(super) fn string_end(mut pos: u64, chunk: &mut [u8; SKIP_CHUNK]) -> Result<u64, ReadError> {
    let mut i = 0;
    while i < MAX_SKIP_CHUNKS {
        let n = read_user_str(chunk, pos);
        if n <= 0 {
            return Err(ReadError);
        }
        if (n as usize) < SKIP_CHUNK {
            return Ok(pos + n as u64);
        }
        // No NUL among the first SKIP_CHUNK - 1 bytes (the helper wrote its own last).
        pos += SKIP_CHUNK as u64 - 1;
        i += 1;
    }
    Err(ReadError)
}
