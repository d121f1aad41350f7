//! `enforcer_inet_connect`: the docker API gate for TCP addresses.

use aya_ebpf::{macros::lsm, programs::LsmContext};
use enforcer_common::abi::Hook;

use crate::{gate::gate_host, restricted::restricted};

#[lsm(hook = "socket_connect")]
pub fn enforcer_inet_connect(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(3);
    if previous != 0 {
        return previous;
    }
    let Some((generation, user_rules)) = restricted() else { return 0 };
    let address: u64 = ctx.arg(1);
    gate_host(address, generation, user_rules, Hook::InetConnect as u32)
}
