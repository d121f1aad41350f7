// Exists so that the userspace crate can name this package as a build dependency, which
// makes cargo rebuild the BPF object whenever its sources change.
#![no_std]
