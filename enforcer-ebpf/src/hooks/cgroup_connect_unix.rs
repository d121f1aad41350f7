//! `enforcer_route`: routes a restricted task's connect to a docker API socket path to its
//! rule's gate socket, so a plain `docker ps` (which dials `/var/run/docker.sock`) reaches
//! the gate with no `DOCKER_HOST`. Only for a task under exactly one gated rule (not in
//! audit mode), only to a name of the socket that rule's gate forwards to, only in the
//! host's mount namespace, never for the daemon itself.
//!
//! A `cgroup/connect_unix` program (6.7+) on the root cgroup, which runs before the kernel
//! looks the path up. The loader (enforcer/src/routing.rs) loads it itself: aya 0.14 knows
//! neither the attach type nor kfunc calls. Its section says `connect4` only so that aya's
//! parser accepts the object; nothing loads it as that.
//!
//! It never refuses: it only rewrites the path, and the `unix_stream_connect` LSM hook
//! stays the authority. A spelling it does not know (a symlink, `..`, a relative path)
//! is left alone, and the hook then refuses the real socket by its inode (`gate_only`).

use core::ffi::c_void;

use aya_ebpf::{helpers::bpf_get_current_pid_tgid, macros::cgroup_sock_addr, programs::SockAddrContext};
use enforcer_common::abi::{
    Counter, KFUNC_CAST_TO_KERN_CTX, KFUNC_SOCK_ADDR_SET_SUN_PATH, KernelOffsets, MAX_RULES, RuleConfig,
    SOCKET_NAME_LEN, SocketNameKey,
};
use enforcer_common::engine::Rules as _;

use crate::{
    kernel::{read_kernel, read_kernel_str_max},
    maps::{GATE_PATHS, KernelRules, OFFSETS, PROBE_TGID, ROUTE_NAMES, count, lookup},
    restricted::{policy, restricted_rules},
    task::current_task,
};

/// The connect goes on (a `cgroup/connect_unix` verdict of 0 would be `EPERM`).
const PROCEED: i32 = 1;

/// `offsetof(struct sockaddr_un, sun_path)`.
const SUN_PATH_OFFSET: u32 = 2;

#[cgroup_sock_addr(connect4)]
pub fn enforcer_route(ctx: SockAddrContext) -> i32 {
    // Hosts without a gated rule pay one array read; everyone else one hash lookup more.
    let Some((generation, state)) = policy() else { return PROCEED };
    let gate_rules = state.gate_rules[(generation & 1) as usize];
    if gate_rules == 0 {
        return PROCEED;
    }
    let gated = restricted_rules(&state, generation) & gate_rules;
    // No gated rule: nothing to route. Several: no one gate judges by all of them, and the
    // LSM hook refuses every API socket.
    if gated == 0 || gated & (gated - 1) != 0 {
        return PROCEED;
    }
    route(ctx.sock_addr.cast::<c_void>(), generation, gated);
    PROCEED
}

/// Rewrites the destination to the gate of `rule_bit` when it is a name of the docker
/// socket that rule's gate forwards to (`ROUTE_NAMES`).
#[inline(always)]
fn route(ctx: *mut c_void, generation: u32, rule_bit: u32) {
    let off = OFFSETS.load();
    // `uaddrlen` is never the struct's first field: 0 means this kernel has none.
    if off.valid == 0 || off.sock_addr_uaddrlen == 0 {
        return;
    }
    // The daemon's own connects (its gate's, to dockerd) are never routed, even when a
    // careless rule restricts it: the gate would loop into itself.
    if (bpf_get_current_pid_tgid() >> 32) as u32 == PROBE_TGID.load() {
        return;
    }
    // Paths name the listed sockets only in the initial mount namespace: in a sandbox of
    // the agent's own (a rootless daemon's socket mounted at /var/run/docker.sock), the
    // same path is another socket, and the LSM hook decides on it as it is.
    if !in_initial_mount_namespace(&off) {
        return;
    }
    // SAFETY: the kfunc takes the program's context (the verifier checks that) and returns
    // the same object typed as the kernel's `bpf_sock_addr_kern`.
    let kern = unsafe { cast_to_kern_ctx(ctx) };
    let Ok(uaddr) = read_kernel::<u64>(kern as u64, off.sock_addr_uaddr) else { return };
    let Ok(addr_len) = read_kernel::<u32>(kern as u64, off.sock_addr_uaddrlen) else { return };
    // The kernel's own reading of the path (`unix_mkname_bsd`): it ends at the first NUL
    // or at the address length, whichever comes first. A path that fills `sun_path` is no
    // listed socket (their names leave room for the NUL).
    let path_len = addr_len.saturating_sub(SUN_PATH_OFFSET);
    if path_len as usize >= SOCKET_NAME_LEN {
        return;
    }
    let mut key = SocketNameKey { generation, name: [0; SOCKET_NAME_LEN] };
    // At most `path_len` bytes and the NUL; the key stays NUL-padded past them. An
    // abstract address (a NUL first) or an empty one reads as "" and is no socket file.
    if read_kernel_str_max(&mut key.name, path_len + 1, uaddr + SUN_PATH_OFFSET as u64) <= 1 {
        return;
    }
    let Some(routed_rules) = lookup(&ROUTE_NAMES, &key) else { return };
    if routed_rules & rule_bit == 0 {
        return;
    }
    let mut index = 0;
    while index < MAX_RULES as u32 && rule_bit != 1 << index {
        index += 1;
    }
    // A rule in audit mode keeps the real socket (the LSM hook records the would-be
    // `gate_only`): audit mode changes nothing the agent does, on any kernel.
    let rules = KernelRules { generation };
    if rules.rule(index).is_none_or(RuleConfig::is_audit) {
        return;
    }
    let Some(gate) = GATE_PATHS.get(generation * MAX_RULES as u32 + index) else { return };
    // No gate: an empty path. The length is masked, then compared once: LLVM folds two
    // comparisons of it into one range check on a copy, which leaves the verifier no bound
    // on the length itself.
    if gate.path[0] == 0 {
        return;
    }
    let len = gate.len & 0x7f;
    if len as usize > SOCKET_NAME_LEN {
        return;
    }
    // SAFETY: `kern` is the context as the kfunc wants it; `gate.path` is map memory valid
    // for the program run, `len` bytes of it (checked above against its size).
    if unsafe { set_sun_path(kern, gate.path.as_ptr(), len) } == 0 {
        count(Counter::GateRouted);
    }
}

/// Generations of parents looked through for the host's init (pid 1).
const MAX_ANCESTORS: u32 = 64;

/// Whether the current task resolves paths in the mount namespace of the host's init (pid
/// 1, found through its parents: the daemon cannot read `/proc/1/ns/mnt` under its unit's
/// capabilities). Unknown: no.
#[inline(always)]
fn in_initial_mount_namespace(off: &KernelOffsets) -> bool {
    if off.task_nsproxy == 0 || off.nsproxy_mnt_ns == 0 || off.task_real_parent == 0 {
        return false;
    }
    let current = current_task();
    let mut task = current;
    let mut depth = 0;
    while depth < MAX_ANCESTORS {
        match read_kernel::<u32>(task, off.task_tgid) {
            Ok(1) => {
                return mount_namespace(task, off)
                    .is_some_and(|init| Some(init) == mount_namespace(current, off));
            }
            Ok(_) => {}
            Err(_) => return false,
        }
        match read_kernel::<u64>(task, off.task_real_parent) {
            Ok(parent) if parent != 0 && parent != task => task = parent,
            _ => return false,
        }
        depth += 1;
    }
    false
}

/// The address of `task`'s mount namespace.
#[inline(always)]
fn mount_namespace(task: u64, off: &KernelOffsets) -> Option<u64> {
    let nsproxy = read_kernel::<u64>(task, off.task_nsproxy).ok().filter(|&p| p != 0)?;
    read_kernel::<u64>(nsproxy, off.nsproxy_mnt_ns).ok().filter(|&m| m != 0)
}

/// `bpf_cast_to_kern_ctx`, called through the placeholder the loader turns into the kfunc.
///
/// # Safety
/// `ctx` must be the program's context.
#[inline(always)]
unsafe fn cast_to_kern_ctx(ctx: *mut c_void) -> *mut c_void {
    // SAFETY: a call by number, as aya-ebpf calls helpers; the loader rewrites it into a
    // call of the kfunc with this signature, and refuses to load the program if it cannot.
    let kfunc: unsafe extern "C" fn(*mut c_void) -> *mut c_void =
        unsafe { core::mem::transmute(KFUNC_CAST_TO_KERN_CTX as usize) };
    // SAFETY: the caller passes the context.
    unsafe { kfunc(ctx) }
}

/// `bpf_sock_addr_set_sun_path`: replaces the destination path (`len` <= 108 bytes).
///
/// # Safety
/// `kern` must come from [`cast_to_kern_ctx`]; `path` must be valid for `len` bytes.
#[inline(always)]
unsafe fn set_sun_path(kern: *mut c_void, path: *const u8, len: u32) -> i32 {
    // SAFETY: as in `cast_to_kern_ctx`.
    let kfunc: unsafe extern "C" fn(*mut c_void, *const u8, u32) -> i32 =
        unsafe { core::mem::transmute(KFUNC_SOCK_ADDR_SET_SUN_PATH as usize) };
    // SAFETY: the caller's contract; the kfunc copies the bytes and sets the length.
    unsafe { kfunc(kern, path, len) }
}
