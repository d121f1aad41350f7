//! `enforcer_unix_connect`: the docker API gate for unix sockets, by the socket file's
//! inode and by the path it was bound to.

use aya_ebpf::{macros::lsm, programs::LsmContext};
use enforcer_common::{
    abi::{FileKey, Hook, SOCKET_NAME_LEN, Scratch},
    engine::Reason,
};

use crate::{
    EPERM,
    gate::{gate_client, refuse_connect},
    kernel::{inode_identity, read_kernel, read_kernel_str},
    maps::{GATES, OFFSETS, SOCKET_NAMES, SOCKETS, lookup},
    restricted::{gated_rules, restricted},
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
    let mut gate_owner = 0;
    // The socket file's inode: symlinks, hard links and bind mounts all lead to it.
    if let Ok(dentry) = read_kernel::<u64>(other, off.unix_path_dentry)
        && dentry != 0
        && let Ok(inode) = read_kernel::<u64>(dentry, off.dentry_inode)
        && let Ok(identity) = inode_identity(inode, &off)
    {
        let key = FileKey { generation, _pad: 0, file: identity };
        if let Some(rules) = lookup(&SOCKETS, &key) {
            socket_rules |= rules;
        }
        if let Some(owner) = lookup(&GATES, &key) {
            gate_owner = owner;
        }
    }
    let (gate_rules, any_client_rules) = gated_rules(generation);
    let gated = user_rules & gate_rules;
    if gate_owner != 0 {
        return gate_connect(claim, generation, user_rules, gated, gate_owner, any_client_rules);
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
    let hook = Hook::UnixConnect as u32;
    // A gated rule's identities reach the API only through their gate socket.
    let gate_only = gating & gated;
    if gate_only != 0 {
        return refuse_connect(claim, generation, gate_only, hook, Reason::GateOnly, describe_socket);
    }
    gate_client(claim, generation, gating, hook, describe_socket)
}

/// A restricted task's connection to the gate socket of `gate_owner` (one rule's bit):
/// admitted only when that rule is the task's one gated rule, from a client every other rule
/// of the task vets (and this one too, unless its gate admits any client).
#[inline(always)]
fn gate_connect(
    claim: &mut Claim,
    generation: u32,
    user_rules: u32,
    gated: u32,
    gate_owner: u32,
    any_client_rules: u32,
) -> i32 {
    let hook = Hook::UnixConnect as u32;
    if gated != gate_owner {
        // Another rule's gate would judge the task by that rule; several gated rules: no
        // single gate judges by all of them.
        let rules = if gated == 0 { user_rules } else { gated };
        return refuse_connect(claim, generation, rules, hook, Reason::OtherGate, describe_no_name);
    }
    let vetting = user_rules & !(gate_owner & any_client_rules);
    if vetting == 0 {
        return 0;
    }
    gate_client(claim, generation, vetting, hook, describe_no_name)
}

/// Puts the socket's bound path (read into the scratch space) in the event.
#[inline(always)]
fn describe_socket(scratch: &mut Scratch) {
    let event = &mut scratch.event;
    let Some(target) = event.target.first_chunk_mut::<SOCKET_NAME_LEN>() else { return };
    let n = read_kernel_str(target, scratch.socket_name.name.as_ptr() as u64);
    if n <= 0 {
        event.target[0] = 0;
    }
}

/// A gate socket's event names no path (the daemon knows its gates' paths).
#[inline(always)]
fn describe_no_name(scratch: &mut Scratch) {
    scratch.event.target[0] = 0;
}
