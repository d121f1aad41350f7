//! `enforcer_inet_send`: the docker API gate for TCP fast open, which connects inside a
//! send.

use aya_ebpf::{macros::lsm, programs::LsmContext};
use enforcer_common::abi::Hook;

use crate::{gate::gate_host, kernel::read_kernel, maps::OFFSETS, restricted::restricted};

/// `sendto`/`sendmsg` with a destination: `MSG_FASTOPEN` on a TCP socket connects to it
/// inside the send (`tcp_sendmsg_fastopen`), never through `socket_connect`, so a gated
/// address is gated here too. Sends without a destination (nearly all) cost one read.
#[lsm(hook = "socket_sendmsg")]
pub fn enforcer_inet_send(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(3);
    if previous != 0 {
        return previous;
    }
    let msg: u64 = ctx.arg(1);
    let off = OFFSETS.load();
    let Ok(name) = read_kernel::<u64>(msg, off.msghdr_name) else { return 0 };
    if name == 0 {
        return 0;
    }
    let Some((generation, user_rules)) = restricted() else { return 0 };
    gate_host(name, generation, user_rules, Hook::InetSend as u32)
}
