//! A lean reader of the kernel's BTF, for the few struct offsets the programs need.
//!
//! A general BTF parser builds a name index and an owned value per string and per type
//! (hundreds of thousands of allocations for vmlinux): under emulation that was most of
//! the start-up time, and its heap stayed in the daemon's RSS. This keeps the raw bytes
//! and one offset per type id, and finds structs by a linear scan.

use anyhow::{Result, anyhow, bail};

const MAGIC: u16 = 0xeb9f;
const KIND_INT: u32 = 1;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_TYPE_TAG: u32 = 18;
const KIND_FUNC: u32 = 12;
/// Size of `struct btf_type` (`name_off`, info, size/type).
const TYPE_HEADER: usize = 12;

/// The raw BTF of one object (no split BTF: vmlinux is a base).
pub struct Btf {
    data: Vec<u8>,
    /// Byte offset in `data` of each type's record; index = type id (id 0 is void).
    types: Vec<u32>,
    strings: std::ops::Range<usize>,
}

/// One type record's header.
#[derive(Clone, Copy)]
struct TypeHeader {
    name_off: u32,
    kind: u32,
    vlen: usize,
    kind_flag: bool,
    /// `size` for ints, structs and unions; `type` for references.
    size_or_type: u32,
    /// Where the kind-specific data after the header starts.
    extra: usize,
}

fn u16_at(data: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(data.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(data: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(data.get(at..at + 4)?.try_into().ok()?))
}

impl Btf {
    pub fn from_file(path: &std::path::Path) -> Result<Btf> {
        Btf::parse(std::fs::read(path)?)
    }

    /// Checks the header and indexes the type section (one pass, no per-type allocation).
    pub fn parse(data: Vec<u8>) -> Result<Btf> {
        if u16_at(&data, 0) != Some(MAGIC) {
            bail!("not little-endian BTF (bad magic)");
        }
        let field = |at| u32_at(&data, at).ok_or_else(|| anyhow!("truncated BTF header"));
        let header_len = field(4)? as usize;
        let (type_off, type_len) = (field(8)? as usize, field(12)? as usize);
        let (str_off, str_len) = (field(16)? as usize, field(20)? as usize);
        let type_start = header_len + type_off;
        let type_end = type_start + type_len;
        let strings = header_len + str_off..header_len + str_off + str_len;
        if type_end > data.len() || strings.end > data.len() {
            bail!("BTF sections run past the end of the data");
        }
        let mut types = Vec::with_capacity(type_len / 24);
        types.push(0); // void
        let mut at = type_start;
        while at < type_end {
            types.push(at as u32);
            let info = u32_at(&data, at + 4).ok_or_else(|| anyhow!("truncated BTF type"))?;
            let vlen = (info & 0xffff) as usize;
            let extra = match (info >> 24) & 0x1f {
                1 | 14 | 17 => 4,             // int, var, decl_tag
                3 => 12,                      // array
                4 | 5 | 15 | 19 => 12 * vlen, // struct, union, datasec, enum64
                6 | 13 => 8 * vlen,           // enum, func_proto
                2 | 7..=12 | 16 | 18 => 0,    // ptr, fwd, typedef, qualifiers, func, float, type_tag
                kind => bail!("unknown BTF kind {kind} at byte {at}"),
            };
            at += TYPE_HEADER + extra;
        }
        if at != type_end {
            bail!("BTF type section does not end on a type boundary");
        }
        Ok(Btf { data, types, strings })
    }

    fn header(&self, id: u32) -> Result<TypeHeader> {
        let at =
            *self.types.get(id as usize).filter(|_| id != 0).ok_or_else(|| anyhow!("no BTF type {id}"))?
                as usize;
        let info = u32_at(&self.data, at + 4).unwrap_or_default();
        Ok(TypeHeader {
            name_off: u32_at(&self.data, at).unwrap_or_default(),
            kind: (info >> 24) & 0x1f,
            vlen: (info & 0xffff) as usize,
            kind_flag: info >> 31 == 1,
            size_or_type: u32_at(&self.data, at + 8).unwrap_or_default(),
            extra: at + TYPE_HEADER,
        })
    }

    /// The NUL-terminated string at `offset` of the string section (without the NUL).
    fn name(&self, offset: u32) -> &[u8] {
        let strings = &self.data[self.strings.clone()];
        let rest = strings.get(offset as usize..).unwrap_or_default();
        &rest[..rest.iter().position(|&b| b == 0).unwrap_or(rest.len())]
    }

    /// The first struct named `name` that has members (forward declarations have none).
    fn struct_by_name(&self, name: &str) -> Result<TypeHeader> {
        let mut declared = false;
        for id in 1..self.types.len() as u32 {
            let header = self.header(id)?;
            if header.kind == KIND_STRUCT && self.name(header.name_off) == name.as_bytes() {
                if header.vlen > 0 {
                    return Ok(header);
                }
                declared = true;
            }
        }
        if declared {
            bail!("struct {name} has no definition in BTF")
        }
        bail!("struct {name} not in BTF")
    }

    /// Byte offset of `member` in struct `name`, looking through anonymous unions and
    /// structs, and the byte size of the member's type when it is an integer.
    pub fn member(&self, name: &str, member: &str) -> Result<(u32, Option<usize>)> {
        let strukt = self.struct_by_name(name)?;
        self.find_member(&strukt, member, 0)?
            .ok_or_else(|| anyhow!("struct {name} has no member {member} in this kernel's BTF"))
    }

    fn find_member(
        &self,
        strukt: &TypeHeader,
        wanted: &str,
        base_bits: u32,
    ) -> Result<Option<(u32, Option<usize>)>> {
        for index in 0..strukt.vlen {
            let at = strukt.extra + index * 12;
            let (Some(name_off), Some(type_id), Some(offset)) =
                (u32_at(&self.data, at), u32_at(&self.data, at + 4), u32_at(&self.data, at + 8))
            else {
                bail!("truncated BTF member");
            };
            // With kind_flag set, the high byte is the bitfield size.
            let bit_size = if strukt.kind_flag { offset >> 24 } else { 0 };
            let bits = base_bits + if strukt.kind_flag { offset & 0xff_ffff } else { offset };
            let name = self.name(name_off);
            if name == wanted.as_bytes() {
                if bit_size != 0 || !bits.is_multiple_of(8) {
                    bail!("member {wanted} is a bitfield");
                }
                return Ok(Some((bits / 8, self.int_size(type_id))));
            }
            if name.is_empty() {
                let inner = self.header(type_id)?;
                if (inner.kind == KIND_STRUCT || inner.kind == KIND_UNION)
                    && let Some(found) = self.find_member(&inner, wanted, bits)?
                {
                    return Ok(Some(found));
                }
            }
        }
        Ok(None)
    }

    /// Size of an integer type, seen through typedefs and qualifiers.
    fn int_size(&self, mut id: u32) -> Option<usize> {
        for _ in 0..16 {
            let header = self.header(id).ok()?;
            match header.kind {
                KIND_INT => return Some(header.size_or_type as usize),
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                    id = header.size_or_type;
                }
                _ => return None,
            }
        }
        None
    }
}

impl Btf {
    /// The type ids of functions `names` (the kfuncs the routing program calls), in one pass
    /// over the types; None for a function this kernel does not have.
    pub fn func_ids<const N: usize>(&self, names: [&str; N]) -> [Option<u32>; N] {
        let mut ids = [None; N];
        for id in 1..self.types.len() as u32 {
            let Ok(header) = self.header(id) else { continue };
            if header.kind != KIND_FUNC {
                continue;
            }
            let name = self.name(header.name_off);
            for (slot, wanted) in ids.iter_mut().zip(names) {
                if slot.is_none() && name == wanted.as_bytes() {
                    *slot = Some(id);
                }
            }
            if ids.iter().all(Option::is_some) {
                break;
            }
        }
        ids
    }

    /// A BTF that keeps only the kernel's `bpf_lsm_*` functions, at their ids (every other
    /// type is a placeholder). Loading an LSM program needs nothing else from BTF: the id
    /// of its hook's function. aya's full parse of vmlinux is the slowest step of start-up
    /// after verification, and its loader already does one of its own.
    pub fn lsm_hooks(&self) -> Vec<u8> {
        const KIND_PTR: u32 = 2;
        let mut strings = vec![0u8];
        let mut types = Vec::new();
        let mut put = |words: [u32; 3]| words.iter().for_each(|w| types.extend_from_slice(&w.to_le_bytes()));
        let hooks: Vec<(u32, TypeHeader)> = (1..self.types.len() as u32)
            .filter_map(|id| Some((id, self.header(id).ok()?)))
            .filter(|(_, h)| h.kind == KIND_FUNC && self.name(h.name_off).starts_with(b"bpf_lsm_"))
            .collect();
        let mut next = 1;
        for (id, hook) in hooks {
            // "void *" placeholders keep the ids of the functions in between.
            for _ in next..id {
                put([0, KIND_PTR << 24, 0]);
            }
            let name_off = strings.len() as u32;
            strings.extend_from_slice(self.name(hook.name_off));
            strings.push(0);
            put([name_off, (KIND_FUNC << 24) | hook.vlen as u32, 0]);
            next = id + 1;
        }
        let mut out = Vec::with_capacity(24 + types.len() + strings.len());
        for word in [u32::from(MAGIC) | (1 << 16), 24, 0, types.len() as u32, types.len() as u32] {
            out.extend_from_slice(&word.to_le_bytes());
        }
        out.extend_from_slice(&(strings.len() as u32).to_le_bytes());
        out.extend_from_slice(&types);
        out.extend_from_slice(&strings);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hand-made BTF: `struct s { int a; union { long b; }; }` plus a forward `struct f`.
    fn sample() -> Vec<u8> {
        let strings = b"\0s\0a\0b\0int\0long\0f\0";
        let name = |s: &str| {
            let needle = format!("\0{s}\0");
            strings.windows(needle.len()).position(|w| w == needle.as_bytes()).unwrap() as u32 + 1
        };
        let mut types = Vec::new();
        let mut put = |words: &[u32]| words.iter().for_each(|w| types.extend_from_slice(&w.to_le_bytes()));
        put(&[name("int"), KIND_INT << 24, 4, 32]); // 1: int
        put(&[name("long"), KIND_INT << 24, 8, 64]); // 2: long
        put(&[0, KIND_TYPEDEF << 24, 2]); // 3: typedef -> long (anonymous, fine here)
        put(&[0, (KIND_UNION << 24) | 1, 8, name("b"), 3, 0]); // 4: union { b }
        put(&[name("s"), (KIND_STRUCT << 24) | 2, 16, name("a"), 1, 0, 0, 4, 64]); // 5: struct s
        put(&[name("f"), KIND_STRUCT << 24, 0]); // 6: forward-ish struct f (no members)
        let mut data = Vec::new();
        for word in [u32::from(MAGIC) | (1 << 16), 24, 0, types.len() as u32, types.len() as u32] {
            data.extend_from_slice(&word.to_le_bytes());
        }
        data.extend_from_slice(&(strings.len() as u32).to_le_bytes());
        data.extend_from_slice(&types);
        data.extend_from_slice(strings);
        data
    }

    #[test]
    fn members_through_anonymous_unions_and_typedefs() {
        let btf = Btf::parse(sample()).unwrap();
        assert_eq!(btf.member("s", "a").unwrap(), (0, Some(4)));
        assert_eq!(btf.member("s", "b").unwrap(), (8, Some(8)));
        assert_eq!(
            btf.member("s", "c").unwrap_err().to_string(),
            "struct s has no member c in this kernel's BTF"
        );
        assert_eq!(btf.member("f", "a").unwrap_err().to_string(), "struct f has no definition in BTF");
        assert_eq!(btf.member("g", "a").unwrap_err().to_string(), "struct g not in BTF");
    }

    #[test]
    fn truncated_or_foreign_data_is_an_error() {
        let data = sample();
        assert!(Btf::parse(data[..data.len() - 30].to_vec()).is_err());
        assert!(Btf::parse(vec![0; 32]).is_err());
    }

    /// The host kernel's BTF: this reader and btf-rs (a general parser) agree.
    #[test]
    fn agrees_with_a_general_parser_on_the_host_btf() {
        let path = std::path::Path::new(crate::kernel::VMLINUX_BTF);
        let ours = Btf::from_file(path).unwrap();
        let reference = btf_rs::Btf::from_file(path).unwrap();
        for (strukt, member) in [
            ("linux_binprm", "file"),
            ("linux_binprm", "argc"),
            ("linux_binprm", "filename"),
            ("file", "f_inode"),
            ("inode", "i_ino"),
            ("inode", "i_sb"),
            ("super_block", "s_dev"),
            ("pt_regs", "orig_ax"),
            ("task_struct", "real_cred"),
            ("cred", "uid"),
        ] {
            let types = reference.resolve_types_by_name(strukt).unwrap();
            let definition = types
                .iter()
                .find_map(|t| match t {
                    btf_rs::Type::Struct(s) if !s.members.is_empty() => Some(s.clone()),
                    _ => None,
                })
                .unwrap();
            let expected = reference_member(&reference, &definition, member, 0).unwrap();
            assert_eq!(ours.member(strukt, member).unwrap().0, expected, "{strukt}.{member}");
        }
    }

    /// The trimmed hook BTF gives aya the same function ids as the full one.
    #[test]
    fn lsm_hooks_keep_the_kernel_ids() {
        use aya::{Btf as AyaBtf, Endianness};
        use aya_obj::btf::BtfKind;
        let path = std::path::Path::new(crate::kernel::VMLINUX_BTF);
        let hooks = AyaBtf::parse(&Btf::from_file(path).unwrap().lsm_hooks(), Endianness::default()).unwrap();
        let full = AyaBtf::from_sys_fs().unwrap();
        for hook in ["bpf_lsm_bprm_check_security", "bpf_lsm_file_open", "bpf_lsm_bprm_committing_creds"] {
            assert_eq!(
                hooks.id_by_type_name_kind(hook, BtfKind::Func).unwrap(),
                full.id_by_type_name_kind(hook, BtfKind::Func).unwrap(),
                "{hook}"
            );
        }
        assert!(hooks.id_by_type_name_kind("vfs_read", BtfKind::Func).is_err());
    }

    fn reference_member(btf: &btf_rs::Btf, strukt: &btf_rs::Struct, wanted: &str, base: u32) -> Option<u32> {
        for m in &strukt.members {
            let name = btf.resolve_name(m).unwrap_or_default();
            let bits = base + m.bit_offset();
            if name == wanted {
                return Some(bits / 8);
            }
            if name.is_empty()
                && let Ok(btf_rs::Type::Struct(inner) | btf_rs::Type::Union(inner)) =
                    btf.resolve_chained_type(m)
                && let Some(found) = reference_member(btf, &inner, wanted, bits)
            {
                return Some(found);
            }
        }
        None
    }
}
