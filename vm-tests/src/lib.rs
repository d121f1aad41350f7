//! The VM test bench: the scenario groups booted on Debian kernels, the bench, and the
//! attack tools' building blocks (the host integration tests are under tests/).

pub mod bench;
pub mod checks;
pub mod corpus;
pub mod cpio;
pub mod elf32;
pub mod elf64;
pub mod fixtures;
pub mod groups;
pub mod report;
pub mod step;
pub mod suite;
pub mod vm;
