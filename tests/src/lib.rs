pub mod bench;
pub mod cpio;
pub mod scenarios;
pub mod vm;
