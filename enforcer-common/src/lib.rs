//! Code shared by the enforcer BPF programs and its userspace.
//!
//! Everything here is `no_std`, allocation-free and uses only bounded loops, because the
//! very same functions are compiled into the BPF object and checked by the kernel's
//! verifier. Userspace unit-tests them on the host and uses them for `enforcer check`.
#![no_std]

pub mod abi;
pub mod engine;
pub mod grammar;
pub mod tree;

#[cfg(test)]
mod test_grammar;
