//! The docker API gate shared by the connect hooks: a connection to a gated endpoint is
//! admitted only from a client every gating rule vets.

use enforcer_common::{
    abi::{Counter, FileKey, HostKey, Scratch},
    engine::Reason,
};

use crate::{
    EPERM, event,
    kernel::{exe_identity, read_kernel},
    maps::{BINARIES, HOSTS, OFFSETS, lookup},
    restricted::gated_rules,
    scratch::{Claim, with_scratch},
    task::current_task,
};

const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;

/// Admits a connection to a gated docker API endpoint (gated by `gating`, the rules of the
/// restricted task that list it) only from a client every one of those rules vets.
/// `describe` writes what was connected to into the event (`scratch.event`).
#[inline(always)]
pub fn gate_client(
    claim: &mut Claim,
    generation: u32,
    gating: u32,
    hook: u32,
    describe: impl FnOnce(&mut Scratch),
) -> i32 {
    let off = OFFSETS.load();
    let identity = exe_identity(current_task(), &off);
    let vetted_for = match identity {
        Ok(file) => match lookup(&BINARIES, &FileKey { generation, _pad: 0, file }) {
            Some(binary) => binary.rules,
            None => 0,
        },
        Err(_) => 0,
    };
    if vetted_for & gating == gating {
        return 0;
    }
    let missing = gating & !vetted_for;
    event::refuse(
        claim,
        generation,
        missing,
        hook,
        Reason::UnvettedClient,
        Counter::ConnectsRefused,
        |scratch| {
            scratch.event.file = identity.unwrap_or_default();
            describe(scratch);
        },
    )
}

/// Refuses a restricted task's connection for `reason` (a gate rule's `GateOnly` or
/// `OtherGate`) on behalf of `rules`.
#[inline(always)]
pub fn refuse_connect(
    claim: &mut Claim,
    generation: u32,
    rules: u32,
    hook: u32,
    reason: Reason,
    describe: impl FnOnce(&mut Scratch),
) -> i32 {
    event::refuse(claim, generation, rules, hook, reason, Counter::ConnectsRefused, describe)
}

/// Admits a TCP connection (or fast-open send) to `address` (a kernel `sockaddr`) from a
/// restricted task only when the client is vetted for every rule that gates the address.
#[inline(always)]
pub fn gate_host(address: u64, generation: u32, user_rules: u32, hook: u32) -> i32 {
    let Some(key) = host_key(address, generation) else { return 0 };
    let mut host_rules = 0;
    if let Some(rules) = lookup(&HOSTS, &key) {
        host_rules |= rules;
    }
    let any = HostKey { generation, port: key.port, family: 0, addr: [0; 16] };
    if let Some(rules) = lookup(&HOSTS, &any) {
        host_rules |= rules;
    }
    let gating = host_rules & user_rules;
    if gating == 0 {
        return 0;
    }
    // A gated rule's identities reach the API only through their gate socket.
    let gate_only = gating & gated_rules(generation).0;
    with_scratch!(-EPERM, |claim| {
        let describe = |scratch: &mut Scratch| {
            let event = &mut scratch.event;
            let bytes = [key.port.to_ne_bytes(), key.family.to_ne_bytes()];
            event.target[0] = bytes[0][0];
            event.target[1] = bytes[0][1];
            event.target[2] = bytes[1][0];
            event.target[3] = bytes[1][1];
            let mut i = 0;
            while i < 16 {
                event.target[4 + i] = key.addr[i];
                i += 1;
            }
        };
        if gate_only != 0 {
            refuse_connect(&mut claim, generation, gate_only, hook, Reason::GateOnly, describe)
        } else {
            gate_client(&mut claim, generation, gating, hook, describe)
        }
    },)
}

/// The hosts-map key of a connect address, normalised the way the kernel routes it: an
/// IPv4-mapped IPv6 address is IPv4, and the unspecified address means this host.
#[inline(always)]
fn host_key(address: u64, generation: u32) -> Option<HostKey> {
    let family: u16 = read_kernel(address, 0).ok()?;
    let port: u16 = u16::from_be(read_kernel(address, 2).ok()?);
    let mut key = HostKey { generation, port, family: 4, addr: [0; 16] };
    if family == AF_INET {
        let v4: [u8; 4] = read_kernel(address, 4).ok()?;
        key.addr[..4].copy_from_slice(&v4);
    } else if family == AF_INET6 {
        let v6: [u8; 16] = read_kernel(address, 8).ok()?;
        let mapped = v6[..10].iter().all(|&b| b == 0) && v6[10] == 0xff && v6[11] == 0xff;
        if mapped {
            key.addr[..4].copy_from_slice(&v6[12..]);
        } else {
            key.family = 6;
            key.addr = v6;
            if v6.iter().all(|&b| b == 0) {
                key.addr[15] = 1;
            }
            return Some(key);
        }
    } else {
        return None;
    }
    if key.addr[..4] == [0, 0, 0, 0] {
        key.addr[..4].copy_from_slice(&[127, 0, 0, 1]);
    }
    Some(key)
}
