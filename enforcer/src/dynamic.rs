//! What the kernel maps learn from the running system: the inodes of the gated docker API
//! sockets and the ids of the named cgroups. Both change when their owner re-creates them
//! (dockerd binds a new socket at each start, systemd makes a new cgroup at each unit
//! start), so the daemon looks again every second and updates the maps when they moved.

use std::{
    collections::BTreeMap,
    os::unix::fs::{FileTypeExt as _, MetadataExt as _},
    path::{Path, PathBuf},
};

use enforcer_common::abi::{CgroupKey, FileId, FileKey};

use crate::policy::Resolved;

/// What the kernel maps learn from the running system, and re-learn when it changes: the
/// identities of the gated sockets (dockerd re-creates its socket at each start) and the
/// ids of the named cgroups (systemd re-creates a unit's cgroup at each start).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Dynamic {
    pub sockets: BTreeMap<FileId, u32>,
    pub cgroups: BTreeMap<u64, u32>,
}

/// A [`Dynamic`]'s entries keyed for one generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DynamicEntries {
    pub sockets: Vec<(FileKey, u32)>,
    pub cgroups: Vec<(CgroupKey, u32)>,
}

impl Dynamic {
    /// The `SOCKETS` and `CGROUPS` entries, keyed for `generation`.
    pub fn entries(&self, generation: u32) -> DynamicEntries {
        let sockets = self
            .sockets
            .iter()
            .map(|(file, rules)| (FileKey { generation, _pad: 0, file: *file }, *rules))
            .collect();
        let cgroups = self
            .cgroups
            .iter()
            .map(|(id, rules)| (CgroupKey { generation, _pad: 0, id: *id }, *rules))
            .collect();
        DynamicEntries { sockets, cgroups }
    }
}

/// The path each listed socket path resolves to through symlinks (`/var/run` -> `/run`),
/// where it resolves now: the socket is bound to that name, which the policy gates too.
pub fn socket_aliases(resolved: &Resolved) -> BTreeMap<PathBuf, PathBuf> {
    resolved
        .sockets
        .keys()
        .filter_map(|path| Some((path.clone(), std::fs::canonicalize(path).ok()?)))
        .collect()
}

/// What `stat` says about each socket and cgroup path: when this has not changed, neither
/// has the kernel's view, and nothing needs probing.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Fingerprint(Vec<(PathBuf, Option<(u64, u64)>)>);

/// The mount point of the cgroup v2 hierarchy, from this process's mount table.
pub fn cgroup2_root() -> Option<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    cgroup2_root_in(&mounts)
}

fn cgroup2_root_in(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        // "ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS... - FSTYPE SOURCE SUPER"
        let (fields, fs) = line.split_once(" - ")?;
        if fs.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        fields.split_whitespace().nth(4).map(PathBuf::from)
    })
}

/// The socket files that exist now, by resolved path, with the rules gating them.
pub fn existing_sockets(resolved: &Resolved) -> BTreeMap<PathBuf, u32> {
    let mut sockets = BTreeMap::new();
    for (path, rules) in &resolved.sockets {
        let Ok(real) = std::fs::canonicalize(path) else { continue };
        if std::fs::metadata(&real).is_ok_and(|m| m.file_type().is_socket()) {
            *sockets.entry(real).or_default() |= rules;
        }
    }
    sockets
}

/// cgroup id (the directory's inode number in cgroupfs) -> rules, for the named cgroups
/// that exist now.
pub fn cgroup_ids(resolved: &Resolved, root: Option<&Path>) -> BTreeMap<u64, u32> {
    let mut ids = BTreeMap::new();
    let Some(root) = root else { return ids };
    for (path, rules) in &resolved.cgroups {
        if let Ok(meta) = std::fs::metadata(root.join(path.trim_start_matches('/'))) {
            *ids.entry(meta.ino()).or_default() |= rules;
        }
    }
    ids
}

pub fn fingerprint(resolved: &Resolved, root: Option<&Path>) -> Fingerprint {
    let stat = |path: &Path| std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()));
    let mut entries: Vec<_> = resolved.sockets.keys().map(|p| (p.clone(), stat(p))).collect();
    if let Some(root) = root {
        entries.extend(resolved.cgroups.keys().map(|c| {
            let path = root.join(c.trim_start_matches('/'));
            let id = stat(&path);
            (path, id)
        }));
    }
    Fingerprint(entries)
}

/// The dynamic entries, given the kernel identities of the existing sockets.
pub fn dynamic(
    sockets: &BTreeMap<PathBuf, u32>,
    identities: &BTreeMap<PathBuf, FileId>,
    cgroups: BTreeMap<u64, u32>,
) -> Dynamic {
    let mut by_identity = BTreeMap::new();
    for (path, rules) in sockets {
        if let Some(identity) = identities.get(path) {
            *by_identity.entry(*identity).or_default() |= rules;
        }
    }
    Dynamic { sockets: by_identity, cgroups }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_cgroup2_mount() {
        let mounts = "22 1 0:21 / /proc rw,nosuid - proc proc rw\n\
                      30 25 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec shared:4 - cgroup2 cgroup2 rw,nsdelegate\n";
        assert_eq!(cgroup2_root_in(mounts), Some(PathBuf::from("/sys/fs/cgroup")));
        let hybrid = "31 30 0:27 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n";
        assert_eq!(cgroup2_root_in(hybrid), Some(PathBuf::from("/sys/fs/cgroup/unified")));
        assert_eq!(cgroup2_root_in("22 1 0:21 / /proc rw - proc proc rw\n"), None);
    }

    #[test]
    fn cgroup_ids_are_directory_inodes() {
        let root = std::env::temp_dir().join(format!("enforcer-cgroup-test-{}", std::process::id()));
        std::fs::create_dir_all(root.join("agent.slice/a.service")).unwrap();
        let policy = crate::policy::Policy::parse(
            "p.toml",
            "[[rule]]\nname = \"r\"\ncgroups = [\"/agent.slice/a.service\", \"/missing\"]\ndeny = [\"exec\"]\n",
        )
        .unwrap();
        let mut resolved = policy.resolve(&crate::discovery::discover(&policy, &NoBinaries)).unwrap();
        let ino = std::fs::metadata(root.join("agent.slice/a.service")).unwrap().ino();
        assert_eq!(cgroup_ids(&resolved, Some(&root)), BTreeMap::from([(ino, 1)]));
        assert_eq!(resolved.cgroup_levels(), 1 << 2 | 1 << 1);
        let before = fingerprint(&resolved, Some(&root));
        std::fs::remove_dir(root.join("agent.slice/a.service")).unwrap();
        std::fs::create_dir(root.join("agent.slice/a.service")).unwrap();
        // Re-created: the fingerprint moves (a new inode, or at least a new stat).
        let _ = std::fs::create_dir(root.join("missing"));
        assert_ne!(fingerprint(&resolved, Some(&root)), before);
        resolved.cgroups.clear();
        assert!(cgroup_ids(&resolved, Some(&root)).is_empty());
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn dynamic_entries_are_keyed_by_generation() {
        let file = FileId { dev: 1, ino: 2 };
        let learnt =
            Dynamic { sockets: BTreeMap::from([(file, 0b1)]), cgroups: BTreeMap::from([(77, 0b10)]) };
        assert_eq!(
            learnt.entries(1),
            DynamicEntries {
                sockets: vec![(FileKey { generation: 1, _pad: 0, file }, 0b1)],
                cgroups: vec![(CgroupKey { generation: 1, _pad: 0, id: 77 }, 0b10)],
            }
        );
        // Sockets by identity: two paths to one socket add up; one without an identity is left out.
        let sockets = BTreeMap::from([
            (PathBuf::from("/a"), 0b01),
            (PathBuf::from("/b"), 0b10),
            (PathBuf::from("/c"), 0b100),
        ]);
        let identities = BTreeMap::from([(PathBuf::from("/a"), file), (PathBuf::from("/b"), file)]);
        assert_eq!(dynamic(&sockets, &identities, BTreeMap::new()).sockets, BTreeMap::from([(file, 0b11)]));
    }

    /// Resolution without the host's docker: every binary "exists".
    struct NoBinaries;
    impl crate::discovery::System for NoBinaries {
        fn uid_of(&self, _: &str) -> Option<u32> {
            None
        }
        fn search_path(&self) -> Vec<PathBuf> {
            vec![PathBuf::from("/usr/bin")]
        }
        fn resolve_file(&self, path: &Path) -> Option<PathBuf> {
            Some(path.to_path_buf())
        }
    }
}
