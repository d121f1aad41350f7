//! A minimal writer for the "newc" cpio format the kernel unpacks as its initramfs.
//! Writing it ourselves sets owners and modes exactly, with no root or cpio tool needed.

use std::{collections::BTreeSet, io::Write, path::Path};

use anyhow::{Context as _, Result};

#[derive(Default)]
pub struct Archive {
    data: Vec<u8>,
    inode: u32,
    dirs: BTreeSet<String>,
}

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;

impl Archive {
    pub fn new() -> Archive {
        Archive { inode: 1000, ..Default::default() }
    }

    fn entry(&mut self, name: &str, mode: u32, uid: u32, gid: u32, body: &[u8]) {
        let name = name.trim_start_matches('/');
        self.inode += 1;
        let header = format!(
            "070701{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
            self.inode,
            mode,
            uid,
            gid,
            1,
            0,
            body.len(),
            0,
            0,
            0,
            0,
            name.len() + 1,
            0
        );
        self.data.extend_from_slice(header.as_bytes());
        self.data.extend_from_slice(name.as_bytes());
        self.data.push(0);
        self.pad();
        self.data.extend_from_slice(body);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.data.len().is_multiple_of(4) {
            self.data.push(0);
        }
    }

    /// Creates `path` and its parents (root-owned, 0755) unless already present.
    pub fn dir(&mut self, path: &str) -> &mut Self {
        self.dir_with(path, 0o755, 0, 0)
    }

    pub fn dir_with(&mut self, path: &str, mode: u32, uid: u32, gid: u32) -> &mut Self {
        let path = path.trim_matches('/');
        if path.is_empty() || self.dirs.contains(path) {
            return self;
        }
        if let Some((parent, _)) = path.rsplit_once('/') {
            self.dir(parent);
        }
        self.dirs.insert(path.to_string());
        self.entry(path, S_IFDIR | mode, uid, gid, &[]);
        self
    }

    fn parent_of(&mut self, path: &str) {
        if let Some((parent, _)) = path.trim_start_matches('/').rsplit_once('/') {
            self.dir(parent);
        }
    }

    pub fn file(&mut self, path: &str, mode: u32, body: &[u8]) -> &mut Self {
        self.parent_of(path);
        self.entry(path, S_IFREG | mode, 0, 0, body);
        self
    }

    pub fn copy(&mut self, path: &str, mode: u32, from: &Path) -> Result<&mut Self> {
        let body = std::fs::read(from).with_context(|| format!("cannot read {}", from.display()))?;
        Ok(self.file(path, mode, &body))
    }

    pub fn symlink(&mut self, path: &str, target: &str) -> &mut Self {
        self.parent_of(path);
        self.entry(path, S_IFLNK | 0o777, 0, 0, target.as_bytes());
        self
    }

    /// The archive with its trailer. Several archives may be concatenated into one initrd.
    pub fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, 0, 0, &[]);
        while !self.data.len().is_multiple_of(512) {
            self.data.push(0);
        }
        self.data
    }

    pub fn write_to(self, path: &Path) -> Result<()> {
        let mut file =
            std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
        file.write_all(&self.finish())?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newc_layout() {
        let mut archive = Archive::new();
        archive.file("/etc/passwd", 0o644, b"root:x:0:0::/:/bin/sh\n");
        let data = archive.finish();
        let text = String::from_utf8_lossy(&data);
        assert!(data.starts_with(b"070701"));
        // The parent directory comes first, then the file, then the trailer.
        let etc = text.find("etc\0").unwrap();
        let passwd = text.find("etc/passwd\0").unwrap();
        let trailer = text.find("TRAILER!!!\0").unwrap();
        assert!(etc < passwd && passwd < trailer);
        assert_eq!(data.len() % 512, 0);
        // Mode field of the file entry (second header): regular file 0644.
        assert_eq!(&data[passwd - 110 + 14..passwd - 110 + 22], b"000081a4");
    }
}
