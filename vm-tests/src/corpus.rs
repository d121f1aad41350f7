//! The differential corpus (corpus/argv.txt): docker argument lists with the verdict the
//! default policy gives them. The commands group runs every line in the VM; enforcer's own
//! tests hold `decide_argv` to it on the host.

/// The differential corpus: `<verdict>\t<args after docker>` per line.
pub const CORPUS: &str = include_str!("../corpus/argv.txt");

/// Splits a corpus line's arguments: words separated by spaces, a word may be
/// single-quoted (`''` is an empty word, `'a b'` one word with a space).
pub fn split_words(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quoted = false;
    for c in text.chars() {
        match c {
            '\'' => {
                quoted = !quoted;
                in_word = true;
            }
            ' ' if !quoted => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                }
                in_word = false;
            }
            _ => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(word);
    }
    words
}

/// The corpus lines that are not comments: (line number, expected verdict, arguments).
pub fn corpus() -> Vec<(usize, String, String)> {
    CORPUS
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.starts_with('#') && !l.trim().is_empty())
        .map(|(i, l)| {
            let (verdict, args) = l.split_once('\t').unwrap_or((l, ""));
            (i + 1, verdict.to_string(), args.to_string())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corpus_words_split_like_the_vm_shell() {
        assert_eq!(split_words("exec -it web sh"), ["exec", "-it", "web", "sh"]);
        assert_eq!(split_words("'' exec"), ["", "exec"]);
        assert_eq!(split_words("--host='a b' ps"), ["--host=a b", "ps"]);
        assert!(split_words("").is_empty());
    }
}
