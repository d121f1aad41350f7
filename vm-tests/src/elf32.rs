//! A hand-assembled static i386 program for the VM tests: `exec32 PATH [ARGS...]` runs
//! `execve(PATH, &argv[1], envp)` through `int 0x80` as any 32-bit program would, and if
//! that returns exits with the errno (1 for EPERM, 2 for ENOENT, 14 when PATH is missing).
//!
//! No 32-bit toolchain or libc is needed to build it: the ELF header, the one `PT_LOAD`
//! program header and the machine code are written out here byte by byte.

/// Where the single segment (headers and code) is loaded.
const BASE: u32 = 0x0804_8000;
const EHDR_SIZE: u16 = 52;
const PHDR_SIZE: u16 = 32;

/// The code, entered with the kernel's initial stack: [esp] = argc, [esp+4] = argv[0], ...,
/// argv[argc] = NULL, then envp.
const CODE: &[u8] = &[
    0x89, 0xE1, //             mov  ecx, esp
    0x83, 0xC1, 0x08, //       add  ecx, 8              ; ecx = &argv[1]
    0x8B, 0x19, //             mov  ebx, [ecx]          ; ebx = argv[1]
    0x8B, 0x04, 0x24, //       mov  eax, [esp]          ; eax = argc
    0x8D, 0x54, 0x84, 0x08, // lea  edx, [esp+eax*4+8]  ; edx = envp
    0xB8, 0x0B, 0x00, 0x00, 0x00, // mov eax, 11        ; __NR_execve (i386)
    0xCD, 0x80, //             int  0x80
    0xF7, 0xD8, //             neg  eax                 ; eax = errno
    0x89, 0xC3, //             mov  ebx, eax
    0xB8, 0x01, 0x00, 0x00, 0x00, // mov eax, 1         ; __NR_exit (i386)
    0xCD, 0x80, //             int  0x80
    0xF4, //                   hlt
];

/// The complete ELF file (ELFCLASS32, `EM_386`, `ET_EXEC`, one read+execute `PT_LOAD`).
pub fn exec_trampoline() -> Vec<u8> {
    let code_offset = u32::from(EHDR_SIZE + PHDR_SIZE);
    let total = code_offset + CODE.len() as u32;
    let mut elf = Vec::with_capacity(total as usize);
    // e_ident: magic, ELFCLASS32, ELFDATA2LSB, EV_CURRENT, ELFOSABI_SYSV, padding.
    elf.extend_from_slice(&[0x7F, b'E', b'L', b'F', 1, 1, 1, 0]);
    elf.extend_from_slice(&[0; 8]);
    elf.extend_from_slice(&2u16.to_le_bytes()); // e_type: ET_EXEC
    elf.extend_from_slice(&3u16.to_le_bytes()); // e_machine: EM_386
    elf.extend_from_slice(&1u32.to_le_bytes()); // e_version
    elf.extend_from_slice(&(BASE + code_offset).to_le_bytes()); // e_entry
    elf.extend_from_slice(&u32::from(EHDR_SIZE).to_le_bytes()); // e_phoff
    elf.extend_from_slice(&0u32.to_le_bytes()); // e_shoff
    elf.extend_from_slice(&0u32.to_le_bytes()); // e_flags
    elf.extend_from_slice(&EHDR_SIZE.to_le_bytes()); // e_ehsize
    elf.extend_from_slice(&PHDR_SIZE.to_le_bytes()); // e_phentsize
    elf.extend_from_slice(&1u16.to_le_bytes()); // e_phnum
    elf.extend_from_slice(&40u16.to_le_bytes()); // e_shentsize
    elf.extend_from_slice(&0u16.to_le_bytes()); // e_shnum
    elf.extend_from_slice(&0u16.to_le_bytes()); // e_shstrndx
    debug_assert_eq!(elf.len(), usize::from(EHDR_SIZE));
    // Program header: PT_LOAD of the whole file at BASE, R+X.
    for word in [1, 0, BASE, BASE, total, total, 5, 0x1000] {
        elf.extend_from_slice(&u32::to_le_bytes(word));
    }
    elf.extend_from_slice(CODE);
    elf
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_shape() {
        let elf = exec_trampoline();
        assert_eq!(&elf[..7], &[0x7F, b'E', b'L', b'F', 1, 1, 1]);
        assert_eq!(u16::from_le_bytes([elf[18], elf[19]]), 3); // EM_386
        let entry = u32::from_le_bytes(elf[24..28].try_into().unwrap());
        assert_eq!(entry, BASE + 84);
        let filesz = u32::from_le_bytes(elf[68..72].try_into().unwrap());
        assert_eq!(filesz as usize, elf.len());
    }
}
