//! The grammar in a hash map, as the kernel holds it, for the unit tests. Building it
//! checks that every (scope, word) has one meaning and every word fits the kernel's token.

extern crate std;
use std::{collections::HashMap, format, string::String, vec::Vec};

use crate::{
    abi::{Token, TokenInfo},
    grammar::{self, Grammar},
};

pub(crate) struct MapGrammar(HashMap<Token, TokenInfo>);

impl MapGrammar {
    pub(crate) fn new() -> Self {
        let mut map: HashMap<Token, TokenInfo> = HashMap::new();
        let mut clashes: Vec<String> = Vec::new();
        grammar::entries(|scope, word, info| {
            let token = Token::from_bytes(scope, word)
                .unwrap_or_else(|| panic!("word {:?} does not fit a token", String::from_utf8_lossy(word)));
            if let Some(previous) = map.insert(token, info)
                && previous != info
            {
                clashes.push(format!("scope {scope}: {:?}", String::from_utf8_lossy(word)));
            }
        });
        assert!(clashes.is_empty(), "words with two meanings: {clashes:?}");
        MapGrammar(map)
    }
}

impl Grammar for MapGrammar {
    fn lookup(&self, token: &Token) -> Option<TokenInfo> {
        self.0.get(token).copied()
    }
}
