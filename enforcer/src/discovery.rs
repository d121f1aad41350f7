//! Discovery: what resolution needs to know about this system, looked up once before it
//! runs: the uids of the user names a policy uses, and the files its binaries resolve to
//! (for a rule without `binaries`, the docker clients in PATH and the usual places).
//! [`Policy::resolve`] is then a pure function of the policy and the [`Discovery`].

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use enforcer_common::abi::Profile;

use crate::policy::{Policy, UserSpec};

/// Where docker CLI plugins live; a rule without `binaries` vets the compose and buildx
/// plugins found there (the docker CLI runs them as `docker-compose [GLOBAL OPTIONS]
/// compose ...` and `docker-buildx buildx ...`).
pub const PLUGIN_DIRS: &[&str] = &[
    "/usr/local/lib/docker/cli-plugins",
    "/usr/local/libexec/docker/cli-plugins",
    "/usr/lib/docker/cli-plugins",
    "/usr/libexec/docker/cli-plugins",
    "/run/current-system/sw/libexec/docker/cli-plugins",
];

/// Where docker is looked for when a rule lists no binaries: PATH, then these.
pub const USUAL_DOCKER_DIRS: &[&str] = &[
    "/run/current-system/sw/bin",
    "/nix/var/nix/profiles/default/bin",
    "/usr/local/bin",
    "/usr/bin",
    "/bin",
    "/usr/local/sbin",
    "/usr/sbin",
    "/snap/bin",
];

/// How the system answers the questions resolution asks; the real one reads the user
/// database and the file system, tests use fakes.
pub trait System {
    fn uid_of(&self, name: &str) -> Option<u32>;
    fn search_path(&self) -> Vec<PathBuf>;
    /// The path with symlinks resolved, if it exists and is a regular file.
    fn resolve_file(&self, path: &Path) -> Option<PathBuf>;
}

/// The real system.
pub struct HostSystem;

impl System for HostSystem {
    fn uid_of(&self, name: &str) -> Option<u32> {
        crate::users::uid_of(name)
    }

    fn search_path(&self) -> Vec<PathBuf> {
        std::env::var_os("PATH")
            .map(|path| std::env::split_paths(&path).filter(|p| p.is_absolute()).collect())
            .unwrap_or_default()
    }

    fn resolve_file(&self, path: &Path) -> Option<PathBuf> {
        let target = std::fs::canonicalize(path).ok()?;
        target.is_file().then_some(target)
    }
}

/// One place a rule without `binaries` looks for a docker client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub path: PathBuf,
    /// `Profile::Docker as u32` or `Profile::Compose as u32`.
    pub profile: u32,
    /// Finding it counts as finding docker: the docker CLI itself, not compose, a plugin
    /// or a wrapped client, which only come along with it.
    pub counts: bool,
}

/// What [`discover`] found on this system for a policy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Discovery {
    /// The uid of each user name the policy uses that the user database knows.
    pub uids: BTreeMap<String, u32>,
    /// Each path looked at that exists as a regular file -> that file, symlinks resolved.
    pub files: BTreeMap<PathBuf, PathBuf>,
    /// Where a rule without `binaries` looks for docker clients, in order (empty when
    /// every rule lists its binaries).
    pub docker_search: Vec<Candidate>,
}

/// Looks up, on `system`, everything [`Policy::resolve`] will ask about `policy`.
pub fn discover(policy: &Policy, system: &dyn System) -> Discovery {
    let mut discovery = Discovery::default();
    for rule in &policy.rules {
        for (user, _) in &rule.users {
            if let UserSpec::Name(name) = user
                && let Some(uid) = system.uid_of(name)
            {
                discovery.uids.insert(name.clone(), uid);
            }
        }
        for binary in rule.binaries.iter().flatten() {
            discovery.look_at(system, &binary.path);
        }
    }
    if policy.rules.iter().any(|rule| rule.binaries.is_none()) {
        discovery.search_docker(system);
    }
    discovery
}

impl Discovery {
    /// Records the file `path` resolves to, if it is one.
    fn look_at(&mut self, system: &dyn System, path: &Path) {
        if !self.files.contains_key(path)
            && let Some(target) = system.resolve_file(path)
        {
            self.files.insert(path.to_path_buf(), target);
        }
    }

    /// Fills `docker_search`: every docker and docker-compose in PATH and the usual places,
    /// the compose and buildx plugins, then the client each docker found wraps.
    fn search_docker(&mut self, system: &dyn System) {
        let mut dirs = system.search_path();
        dirs.extend(USUAL_DOCKER_DIRS.iter().map(PathBuf::from));
        let candidate = |path: PathBuf, profile, counts| Candidate { path, profile, counts };
        let mut candidates: Vec<Candidate> =
            dirs.iter().map(|d| candidate(d.join("docker"), Profile::Docker as u32, true)).collect();
        candidates
            .extend(dirs.iter().map(|d| candidate(d.join("docker-compose"), Profile::Compose as u32, false)));
        candidates.extend(
            PLUGIN_DIRS
                .iter()
                .map(|d| candidate(Path::new(d).join("docker-compose"), Profile::Compose as u32, false)),
        );
        // `docker build` runs the buildx plugin as `docker-buildx buildx build ...`: the
        // docker CLI's own grammar reads that argv. Unvetted, the socket gate would refuse
        // the plugin's connection and break `docker build`.
        candidates.extend(
            PLUGIN_DIRS
                .iter()
                .map(|d| candidate(Path::new(d).join("docker-buildx"), Profile::Docker as u32, false)),
        );
        for found in &candidates {
            self.look_at(system, &found.path);
        }
        // nixpkgs' bin/docker is a shell wrapper that runs libexec/docker/docker: a docker
        // found without `binaries` brings its wrapped client along.
        let wrapped: Vec<Candidate> = candidates
            .iter()
            .filter(|c| c.profile == Profile::Docker as u32 && c.counts)
            .filter_map(|c| self.files.get(&c.path)?.parent()?.parent().map(Path::to_path_buf))
            .map(|prefix| candidate(prefix.join("libexec/docker/docker"), Profile::Docker as u32, false))
            .collect();
        for found in &wrapped {
            self.look_at(system, &found.path);
        }
        candidates.extend(wrapped);
        self.docker_search = candidates;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A system with these files (path -> target) and users, and `/opt/bin` in PATH.
    struct Fake {
        files: Vec<(&'static str, &'static str)>,
        users: Vec<(&'static str, u32)>,
    }

    impl System for Fake {
        fn uid_of(&self, name: &str) -> Option<u32> {
            self.users.iter().find(|(n, _)| *n == name).map(|(_, uid)| *uid)
        }
        fn search_path(&self) -> Vec<PathBuf> {
            vec![PathBuf::from("/opt/bin")]
        }
        fn resolve_file(&self, path: &Path) -> Option<PathBuf> {
            self.files.iter().find(|(p, _)| Path::new(p) == path).map(|(_, t)| PathBuf::from(t))
        }
    }

    fn policy(text: &str) -> Policy {
        Policy::parse("policy.toml", text).unwrap()
    }

    #[test]
    fn listed_binaries_and_named_users_only() {
        let system =
            Fake { files: vec![("/usr/bin/docker", "/usr/bin/docker")], users: vec![("ai-worker", 1001)] };
        let found = discover(
            &policy(
                "[[rule]]\nname = \"r\"\nusers = [\"ai-worker\", \"nobody-here\", 7]\n\
                 binaries = [\"/usr/bin/docker\", \"/nope\"]\ndeny = [\"exec\"]\n",
            ),
            &system,
        );
        assert_eq!(
            found,
            Discovery {
                uids: BTreeMap::from([("ai-worker".into(), 1001)]),
                files: BTreeMap::from([("/usr/bin/docker".into(), "/usr/bin/docker".into())]),
                docker_search: vec![],
            }
        );
    }

    #[test]
    fn the_docker_search_order() {
        let system = Fake {
            files: vec![
                ("/opt/bin/docker", "/nix/store/a-docker/bin/docker"),
                ("/usr/bin/docker-compose", "/usr/bin/docker-compose"),
                ("/nix/store/a-docker/libexec/docker/docker", "/nix/store/a-docker/libexec/docker/docker"),
            ],
            users: vec![],
        };
        let found = discover(&policy("[[rule]]\nname = \"r\"\nusers = [7]\ndeny = [\"exec\"]\n"), &system);
        let search: Vec<(String, u32, bool)> =
            found.docker_search.iter().map(|c| (c.path.display().to_string(), c.profile, c.counts)).collect();
        let dirs = 1 + USUAL_DOCKER_DIRS.len();
        // docker in PATH then the usual places, docker-compose in the same, the plugins.
        assert_eq!(search[0], ("/opt/bin/docker".into(), Profile::Docker as u32, true));
        assert_eq!(search[dirs], ("/opt/bin/docker-compose".into(), Profile::Compose as u32, false));
        assert_eq!(search.len(), 2 * dirs + 2 * PLUGIN_DIRS.len() + 1);
        assert!(
            search[2 * dirs..2 * dirs + PLUGIN_DIRS.len()].iter().all(|c| c.1 == Profile::Compose as u32)
        );
        assert!(
            search[2 * dirs + PLUGIN_DIRS.len()..][..PLUGIN_DIRS.len()]
                .iter()
                .all(|c| c.1 == Profile::Docker as u32)
        );
        // Last, the client the docker found wraps (nixpkgs), which does not count as docker.
        assert_eq!(
            search.last().unwrap(),
            &("/nix/store/a-docker/libexec/docker/docker".into(), Profile::Docker as u32, false)
        );
        assert_eq!(found.files.len(), 3);
    }
}
