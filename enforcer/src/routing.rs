//! Connect routing (kernels with `cgroup/connect_unix`, 6.7+): the program
//! `enforcer_route` rewrites a restricted task's connect to a docker API socket path into
//! its rule's gate socket, so the agent's plain `docker ps` is served by the gate without
//! `DOCKER_HOST`.
//!
//! aya 0.14 cannot load it: it has no `BPF_CGROUP_UNIX_CONNECT` attach type (the verifier
//! needs it as the expected attach type at load time) and no relocation of kfunc calls
//! (aya-rs/aya#432). So this module takes the program from the same object with aya's own
//! object crate, relocates its map references to the maps aya created (the same
//! descriptors the LSM hooks use), turns the program's two placeholder helper calls into
//! kfunc calls with the running kernel's BTF ids, and loads and attaches it with the bpf
//! syscall.
//!
//! Routing is a convenience, not a defence: the `unix_stream_connect` hook refuses the real
//! sockets to a gated rule's identities whether or not their connect was routed.

use std::{
    collections::HashSet,
    ffi::CString,
    os::fd::{AsFd as _, AsRawFd as _, FromRawFd as _, OwnedFd, RawFd},
    path::Path,
};

use anyhow::{Context as _, Result, anyhow, bail};
use aya::{Ebpf, maps::Map};
use aya_obj::generated::bpf_insn;
use enforcer_common::abi::KFUNCS;

use crate::btf::Btf;

/// The routing program's function name in the object.
pub const ROUTE_PROGRAM: &str = "enforcer_route";

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_OBJ_PIN: libc::c_long = 6;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_PROG_TYPE_CGROUP_SOCK_ADDR: u32 = 18;
const BPF_CGROUP_UNIX_CONNECT: u32 = 49;
/// `BPF_JMP | BPF_CALL`, and the source register value that makes a call a kfunc call.
const CALL: u8 = 0x85;
const BPF_PSEUDO_KFUNC_CALL: u8 = 2;
/// Where the program attaches: the cgroup v2 root, so it runs for every socket.
const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// The kernel's BTF ids of the kfuncs the program calls, by placeholder id.
#[derive(Clone, Debug)]
pub struct Kfuncs(Vec<(u32, u32)>);

impl Kfuncs {
    /// The ids in this kernel's BTF, or why this kernel cannot route (a missing kfunc or
    /// a missing `bpf_sock_addr_kern.uaddrlen`: a kernel before 6.7).
    pub fn find(btf: &Btf, offsets: &enforcer_common::abi::KernelOffsets) -> Result<Kfuncs, String> {
        if offsets.sock_addr_uaddrlen == 0 {
            return Err("this kernel has no cgroup/connect_unix hook (Linux 6.7 and later do)".to_owned());
        }
        let found = btf.func_ids(KFUNCS.map(|(_, name)| name));
        let mut ids = Vec::new();
        for ((placeholder, name), id) in KFUNCS.into_iter().zip(found) {
            let id = id.ok_or_else(|| format!("this kernel's BTF has no kfunc {name}"))?;
            ids.push((placeholder, id));
        }
        Ok(Kfuncs(ids))
    }
}

/// Loads `enforcer_route` from `object` (the object `ebpf` was loaded from), with its map
/// references bound to `ebpf`'s maps. The verifier runs here.
pub fn load(ebpf: &Ebpf, object: &[u8], kfuncs: &Kfuncs) -> Result<OwnedFd> {
    let mut insns = relocated_instructions(ebpf, object)?;
    patch_kfunc_calls(&mut insns, kfuncs)?;
    prog_load(&insns)
}

/// The program's instructions (its subprograms linked in), map references relocated.
fn relocated_instructions(ebpf: &Ebpf, object: &[u8]) -> Result<Vec<bpf_insn>> {
    let mut obj = aya_obj::Object::parse(object).context("cannot parse the BPF object")?;
    // Relocation changes the object it reads the maps from: each map goes in as a copy.
    let maps: Vec<(String, RawFd, aya_obj::Map)> = ebpf
        .maps()
        .map(|(name, map)| {
            let parsed =
                obj.maps.get(name).ok_or_else(|| anyhow!("map {name} missing from the parsed object"))?;
            Ok((name.to_owned(), map_data(map).fd().as_fd().as_raw_fd(), parsed.clone()))
        })
        .collect::<Result<_>>()?;
    let text_sections: HashSet<usize> = obj.functions.keys().map(|(section, _)| *section).collect();
    obj.relocate_maps(maps.iter().map(|(name, fd, map)| (name.as_str(), *fd, map)), &text_sections)
        .context("cannot relocate the routing program's maps")?;
    obj.relocate_calls(&text_sections).context("cannot link the routing program's functions")?;
    let program =
        obj.programs.get(ROUTE_PROGRAM).ok_or_else(|| anyhow!("{ROUTE_PROGRAM} missing from the object"))?;
    let function = obj
        .functions
        .get(&program.function_key())
        .ok_or_else(|| anyhow!("{ROUTE_PROGRAM}'s function missing from the object"))?;
    Ok(function.instructions.clone())
}

/// The map's data, whatever its kind (every variant holds one).
fn map_data(map: &Map) -> &aya::maps::MapData {
    match map {
        Map::Array(d)
        | Map::ArrayOfMaps(d)
        | Map::BloomFilter(d)
        | Map::CgroupArray(d)
        | Map::CgroupStorage(d)
        | Map::CgrpStorage(d)
        | Map::CpuMap(d)
        | Map::DevMap(d)
        | Map::DevMapHash(d)
        | Map::HashMap(d)
        | Map::HashOfMaps(d)
        | Map::InodeStorage(d)
        | Map::LpmTrie(d)
        | Map::LruHashMap(d)
        | Map::PerCpuArray(d)
        | Map::PerCpuCgroupStorage(d)
        | Map::PerCpuHashMap(d)
        | Map::PerCpuLruHashMap(d)
        | Map::PerfEventArray(d)
        | Map::ProgramArray(d)
        | Map::Queue(d)
        | Map::ReusePortSockArray(d)
        | Map::RingBuf(d)
        | Map::SockHash(d)
        | Map::SockMap(d)
        | Map::SkStorage(d)
        | Map::Stack(d)
        | Map::StackTraceMap(d)
        | Map::Unsupported(d)
        | Map::XskMap(d) => d,
    }
}

/// Turns every helper call by a placeholder id into a call of its kfunc (BTF id in `imm`,
/// `off` 0: vmlinux's BTF). A placeholder without an id is an error: the verifier would
/// take it for an unknown helper.
pub fn patch_kfunc_calls(insns: &mut [bpf_insn], kfuncs: &Kfuncs) -> Result<usize> {
    let mut patched = 0;
    for insn in insns.iter_mut().filter(|insn| insn.code == CALL && insn.src_reg() == 0) {
        let Some(placeholder) = KFUNCS.iter().find(|(id, _)| insn.imm as u32 == *id) else { continue };
        let (_, btf_id) = kfuncs
            .0
            .iter()
            .find(|(id, _)| *id == placeholder.0)
            .ok_or_else(|| anyhow!("no BTF id for kfunc {}", placeholder.1))?;
        insn.set_src_reg(BPF_PSEUDO_KFUNC_CALL);
        insn.imm = *btf_id as i32;
        insn.off = 0;
        patched += 1;
    }
    if patched == 0 {
        bail!("{ROUTE_PROGRAM} calls no kfunc: the object is not the one this loader expects");
    }
    Ok(patched)
}

/// `union bpf_attr` for `BPF_PROG_LOAD`, up to `expected_attach_type` (the kernel zeroes
/// the rest).
#[repr(C)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// `union bpf_attr` for `BPF_LINK_CREATE`, up to `flags`.
#[repr(C)]
struct LinkCreateAttr {
    prog_fd: u32,
    target_fd: u32,
    attach_type: u32,
    flags: u32,
}

/// `union bpf_attr` for `BPF_OBJ_PIN`.
#[repr(C)]
struct ObjPinAttr {
    pathname: u64,
    bpf_fd: u32,
    file_flags: u32,
}

/// The bpf syscall with one command's attribute struct; a new descriptor on success.
fn bpf<T>(cmd: libc::c_long, attr: &T) -> std::io::Result<OwnedFd> {
    // SAFETY: `attr` is a live `#[repr(C)]` prefix of `union bpf_attr` for `cmd`, of the
    // size passed; every pointer in it points to memory that outlives the call.
    let fd = unsafe {
        libc::syscall(libc::SYS_bpf, cmd, std::ptr::from_ref(attr), size_of::<T>() as libc::c_uint)
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Loads the instructions as a `cgroup/connect_unix` program; on a refusal, loads again
/// with the verifier's log for the error.
fn prog_load(insns: &[bpf_insn]) -> Result<OwnedFd> {
    let license = c"GPL";
    let mut name = [0u8; 16];
    name[..ROUTE_PROGRAM.len()].copy_from_slice(ROUTE_PROGRAM.as_bytes());
    let attr = |log: &mut [u8]| ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_CGROUP_SOCK_ADDR,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: u32::from(!log.is_empty()),
        log_size: log.len() as u32,
        log_buf: if log.is_empty() { 0 } else { log.as_mut_ptr() as u64 },
        kern_version: 0,
        prog_flags: 0,
        prog_name: name,
        prog_ifindex: 0,
        expected_attach_type: BPF_CGROUP_UNIX_CONNECT,
    };
    match bpf(BPF_PROG_LOAD, &attr(&mut [])) {
        Ok(fd) => Ok(fd),
        Err(error) => {
            let mut log = vec![0u8; 1 << 20];
            let _ = bpf(BPF_PROG_LOAD, &attr(&mut log));
            let log = String::from_utf8_lossy(&log[..log.iter().position(|&b| b == 0).unwrap_or(log.len())])
                .into_owned();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            bail!(
                "the kernel refused program {ROUTE_PROGRAM}: {error}\nverifier log (last lines):\n{}",
                tail.join("\n")
            )
        }
    }
}

/// Attaches the loaded program to the cgroup v2 root; the link's descriptor.
pub fn attach(program: &OwnedFd) -> Result<OwnedFd> {
    let root = std::fs::File::open(CGROUP_ROOT)
        .with_context(|| format!("cannot open the cgroup v2 root {CGROUP_ROOT}"))?;
    let attr = LinkCreateAttr {
        prog_fd: program.as_raw_fd() as u32,
        target_fd: root.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_UNIX_CONNECT,
        flags: 0,
    };
    bpf(BPF_LINK_CREATE, &attr).with_context(|| format!("cannot attach {ROUTE_PROGRAM} to {CGROUP_ROOT}"))
}

/// Pins a program or link at `path` in bpffs.
pub fn pin(fd: &OwnedFd, path: &Path) -> Result<()> {
    let c_path = CString::new(path.as_os_str().as_encoded_bytes())?;
    let attr = ObjPinAttr { pathname: c_path.as_ptr() as u64, bpf_fd: fd.as_raw_fd() as u32, file_flags: 0 };
    bpf(BPF_OBJ_PIN, &attr).map(drop).with_context(|| format!("cannot pin {}", path.display()))
}

#[cfg(test)]
mod tests {
    use enforcer_common::abi::{KFUNC_CAST_TO_KERN_CTX, KFUNC_SOCK_ADDR_SET_SUN_PATH};

    use super::*;

    fn call(imm: u32, src_reg: u8) -> bpf_insn {
        // SAFETY: an instruction is plain integers; all zeroes is a valid value.
        let mut insn: bpf_insn = unsafe { std::mem::zeroed() };
        insn.code = CALL;
        insn.imm = imm as i32;
        insn.set_src_reg(src_reg);
        insn
    }

    #[test]
    fn placeholder_calls_become_kfunc_calls_and_helpers_stay() {
        let kfuncs = Kfuncs(vec![(KFUNC_CAST_TO_KERN_CTX, 1111), (KFUNC_SOCK_ADDR_SET_SUN_PATH, 2222)]);
        let mut insns = vec![
            call(KFUNC_CAST_TO_KERN_CTX, 0),
            call(113, 0),
            call(KFUNC_SOCK_ADDR_SET_SUN_PATH, 0),
            call(7, 1),
        ];
        assert_eq!(patch_kfunc_calls(&mut insns, &kfuncs).unwrap(), 2);
        assert_eq!((insns[0].src_reg(), insns[0].imm), (BPF_PSEUDO_KFUNC_CALL, 1111));
        assert_eq!((insns[1].src_reg(), insns[1].imm), (0, 113), "a real helper call is left alone");
        assert_eq!((insns[2].src_reg(), insns[2].imm), (BPF_PSEUDO_KFUNC_CALL, 2222));
        assert_eq!((insns[3].src_reg(), insns[3].imm), (1, 7), "a bpf-to-bpf call is left alone");
    }

    #[test]
    fn a_placeholder_without_an_id_or_no_placeholder_is_an_error() {
        let only_cast = Kfuncs(vec![(KFUNC_CAST_TO_KERN_CTX, 1111)]);
        let mut insns = vec![call(KFUNC_SOCK_ADDR_SET_SUN_PATH, 0)];
        assert!(
            patch_kfunc_calls(&mut insns, &only_cast)
                .unwrap_err()
                .to_string()
                .contains("bpf_sock_addr_set_sun_path")
        );
        let mut plain = vec![call(113, 0)];
        assert!(patch_kfunc_calls(&mut plain, &only_cast).is_err());
    }

    /// The object really calls both kfuncs through their placeholders: what the loader
    /// patches is what the BPF crate emits.
    #[test]
    fn the_object_calls_both_kfuncs_by_placeholder() {
        let mut obj = aya_obj::Object::parse(crate::bpf::BPF_OBJECT).unwrap();
        let text_sections: HashSet<usize> = obj.functions.keys().map(|(section, _)| *section).collect();
        obj.relocate_calls(&text_sections).unwrap();
        let program = &obj.programs[ROUTE_PROGRAM];
        let insns = &obj.functions[&program.function_key()].instructions;
        for (placeholder, name) in KFUNCS {
            assert!(
                insns.iter().any(|i| i.code == CALL && i.src_reg() == 0 && i.imm as u32 == placeholder),
                "{ROUTE_PROGRAM} has no placeholder call of {name}"
            );
        }
    }
}
