pub mod bench;
pub mod bypass;
pub mod cpio;
pub mod elf32;
pub mod elf64;
pub mod scenarios;
pub mod subvert;
pub mod vm;
