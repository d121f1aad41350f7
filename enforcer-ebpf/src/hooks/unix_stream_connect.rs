//! `enforcer_unix_connect`: the docker API gate for unix sockets, by the socket file's
//! inode and by the path it was bound to.

use aya_ebpf::{macros::lsm, programs::LsmContext};
use enforcer_common::abi::{FileKey, Hook, SOCKET_NAME_LEN};

use crate::{
    EPERM,
    gate::gate_client,
    kernel::{inode_identity, read_kernel, read_kernel_str},
    maps::{OFFSETS, SOCKET_NAMES, SOCKETS, lookup},
    restricted::restricted,
    scratch::{Claim, with_scratch},
};

#[lsm(hook = "unix_stream_connect")]
pub fn enforcer_unix_connect(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(3);
    if previous != 0 {
        return previous;
    }
    let Some((generation, user_rules)) = restricted() else { return 0 };
    let other: u64 = ctx.arg(1);
    with_scratch!(-EPERM, |claim| unix_connect(&mut claim, other, generation, user_rules))
}

/// `enforcer_unix_connect` for a restricted task, with the scratch space claimed.
#[inline(always)]
fn unix_connect(claim: &mut Claim, other: u64, generation: u32, user_rules: u32) -> i32 {
    let off = OFFSETS.load();
    let mut socket_rules = 0;
    // The socket file's inode: symlinks, hard links and bind mounts all lead to it.
    if let Ok(dentry) = read_kernel::<u64>(other, off.unix_path_dentry)
        && dentry != 0
        && let Ok(inode) = read_kernel::<u64>(dentry, off.dentry_inode)
        && let Ok(identity) = inode_identity(inode, &off)
        && let Some(rules) = lookup(&SOCKETS, &FileKey { generation, _pad: 0, file: identity })
    {
        socket_rules |= rules;
    }
    // The path it was bound to: covers a socket re-created since the daemon learnt its
    // inode.
    let Some(scratch) = claim.scratch() else { return -EPERM };
    let key = &mut scratch.socket_name;
    key.generation = generation;
    key.name = [0; SOCKET_NAME_LEN];
    if let Ok(addr) = read_kernel::<u64>(other, off.unix_addr)
        && addr != 0
    {
        let path = addr + off.unix_address_name as u64 + 2;
        let n = read_kernel_str(&mut key.name, path);
        if n > 1
            && let Some(rules) = lookup(&SOCKET_NAMES, key)
        {
            socket_rules |= rules;
        }
    }
    let gating = socket_rules & user_rules;
    if gating == 0 {
        return 0;
    }
    gate_client(claim, generation, gating, Hook::UnixConnect as u32, |scratch| {
        let event = &mut scratch.event;
        let Some(target) = event.target.first_chunk_mut::<SOCKET_NAME_LEN>() else { return };
        let n = read_kernel_str(target, scratch.socket_name.name.as_ptr() as u64);
        if n <= 0 {
            event.target[0] = 0;
        }
    })
}
