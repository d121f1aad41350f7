//! The command grammar for userspace: the same (scope, word) entries the kernel's map
//! holds, in a hash map built once.

use std::{collections::HashMap, sync::OnceLock};

use enforcer_common::{
    abi::{Profile, Token, TokenInfo},
    grammar::{self, Grammar},
};

pub struct HashGrammar(HashMap<Token, TokenInfo>);

impl Grammar for HashGrammar {
    fn lookup(&self, token: &Token) -> Option<TokenInfo> {
        self.0.get(token).copied()
    }
}

impl HashGrammar {
    /// Every entry, for filling the kernel's map.
    pub fn entries(&self) -> impl Iterator<Item = (&Token, &TokenInfo)> {
        self.0.iter()
    }
}

/// The grammar, built on first use.
pub fn get() -> &'static HashGrammar {
    static GRAMMAR: OnceLock<HashGrammar> = OnceLock::new();
    GRAMMAR.get_or_init(|| {
        let mut map = HashMap::new();
        grammar::entries(|scope, word, info| {
            let token = Token::from_bytes(scope, word).expect("grammar words fit a token (unit-tested)");
            map.insert(token, info);
        });
        HashGrammar(map)
    })
}

/// The name a policy uses for a client profile.
pub fn profile_name(profile: u32) -> &'static str {
    match Profile::try_from(profile) {
        Ok(Profile::Compose) => "docker-compose",
        Ok(Profile::Docker) | Err(_) => "docker",
    }
}

/// The profile a policy names, if it is one.
pub fn profile_by_name(name: &str) -> Option<u32> {
    match name {
        "docker" => Some(Profile::Docker as u32),
        "docker-compose" => Some(Profile::Compose as u32),
        _ => None,
    }
}

/// Canonical command path of a node id, for logs and `enforcer check`.
pub fn command_path(node: u32) -> Option<&'static str> {
    let path = grammar::node_path(node);
    (!path.is_empty()).then_some(path)
}
