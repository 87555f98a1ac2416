//! The topic exchange's trie of binding patterns.
//!
//! Semantics are RabbitMQ's (`rabbit_db_topic_exchange`):
//! - Keys and patterns split on every `.` into words; the empty string has no words
//!   at all, so `"a..b"` is `a`, ``, `b`, `"a."` is `a`, `` and `""` is nothing.
//! - `*` matches exactly one word (an empty word too), `#` matches zero or more words.
//!   So the key `""` matches only the pattern `""` and patterns made of `#`s, and the
//!   key `"."` (two empty words) matches `*.*` but not `*`.
//! - A routing key word that is literally `*` or `#` matches what any word matches.
//!
//! The trie keeps one node per pattern prefix, with `*` and `#` children held apart
//! from literal words. Consecutive `#`s are merged on insertion (`#.#` matches exactly
//! what `#` matches), which keeps no `#` node directly under another. Matching follows
//! RabbitMQ's walk — literal child, `*` child, and the `#` child tried at every
//! remaining suffix — but remembers, per `#` node, the earliest key position it was
//! entered at: every later entry is already covered, so matching stays polynomial
//! (nodes × key words) for patterns like `#.a.#.a.#.a` that make RabbitMQ's walk
//! exponential.

use std::collections::HashMap;

use super::binding::Destination;
use super::dests::Dests;

#[derive(Clone, Debug, Default)]
struct Node {
    words: HashMap<Box<str>, Node>,
    star: Option<Box<Node>>,
    hash: Option<Box<Node>>,
    dests: Dests,
}

impl Node {
    fn is_empty(&self) -> bool {
        self.words.is_empty() && self.star.is_none() && self.hash.is_none() && self.dests.is_empty()
    }
}

/// The words of a pattern, with runs of `#` merged into one.
fn pattern_words(pattern: &str) -> Vec<&str> {
    let mut words: Vec<&str> = Vec::new();
    if pattern.is_empty() {
        return words;
    }
    for w in pattern.split('.') {
        if w == "#" && words.last() == Some(&"#") {
            continue;
        }
        words.push(w);
    }
    words
}

/// The first word of a non-empty remainder and what follows it (`None` once the last
/// word is taken).
fn split_first(rest: &str) -> (&str, Option<&str>) {
    match rest.split_once('.') {
        Some((word, tail)) => (word, Some(tail)),
        None => (rest, None),
    }
}

/// Binding patterns of one topic exchange, each leading to its destinations.
#[derive(Clone, Debug, Default)]
pub struct TopicTrie {
    root: Node,
}

impl TopicTrie {
    /// A trie without patterns.
    pub fn new() -> Self {
        TopicTrie::default()
    }

    /// Adds one binding of `dest` under `pattern`.
    ///
    /// The trie is as deep as the pattern has words: callers bound pattern length
    /// (bindings are checked against [`super::binding::MAX_KEY_LEN`]).
    pub fn insert(&mut self, pattern: &str, dest: Destination) {
        let mut node = &mut self.root;
        for w in pattern_words(pattern) {
            node = match w {
                "*" => &mut **node.star.get_or_insert_with(Default::default),
                "#" => &mut **node.hash.get_or_insert_with(Default::default),
                _ => node.words.entry(w.into()).or_default(),
            };
        }
        node.dests.add(dest);
    }

    /// Removes one binding of `dest` under `pattern`, pruning nodes left empty.
    /// False if there was no such binding.
    pub fn remove(&mut self, pattern: &str, dest: &Destination) -> bool {
        remove_at(&mut self.root, &pattern_words(pattern), dest)
    }

    /// Whether it holds no binding.
    pub fn is_empty(&self) -> bool {
        self.root.is_empty()
    }

    /// Calls `f` with the destinations of every pattern that matches `key`. A
    /// destination bound under several matching patterns is reported once per pattern.
    pub fn for_each_match<'a>(&'a self, key: &str, f: &mut impl FnMut(&'a Destination)) {
        let mut walk = Walk {
            key_len: key.len(),
            memo: HashMemo::default(),
            f,
        };
        walk.at(&self.root, if key.is_empty() { None } else { Some(key) });
    }
}

fn remove_at(node: &mut Node, words: &[&str], dest: &Destination) -> bool {
    let Some((&w, rest)) = words.split_first() else {
        return node.dests.remove(dest);
    };
    match w {
        "*" | "#" => {
            let slot = if w == "*" {
                &mut node.star
            } else {
                &mut node.hash
            };
            let Some(child) = slot.as_deref_mut() else {
                return false;
            };
            let removed = remove_at(child, rest, dest);
            if child.is_empty() {
                *slot = None;
            }
            removed
        }
        _ => {
            let Some(child) = node.words.get_mut(w) else {
                return false;
            };
            let removed = remove_at(child, rest, dest);
            if child.is_empty() {
                node.words.remove(w);
            }
            removed
        }
    }
}

/// One match of a key against the trie.
struct Walk<'m, F> {
    key_len: usize,
    memo: HashMemo,
    f: &'m mut F,
}

impl<'a, F: FnMut(&'a Destination)> Walk<'_, F> {
    /// The key position of a remainder: bytes consumed, with "no words left" after
    /// the end (distinct from one empty word left at the end).
    fn pos(&self, rest: Option<&str>) -> usize {
        match rest {
            Some(s) => self.key_len - s.len(),
            None => self.key_len + 1,
        }
    }

    fn at(&mut self, node: &'a Node, rest: Option<&str>) {
        match rest {
            None => {
                for d in node.dests.iter() {
                    (self.f)(d);
                }
                if let Some(hash) = node.hash.as_deref() {
                    self.skip(hash, None);
                }
            }
            Some(s) => {
                let (word, tail) = split_first(s);
                if let Some(child) = node.words.get(word) {
                    self.at(child, tail);
                }
                if let Some(star) = node.star.as_deref() {
                    self.at(star, tail);
                }
                if let Some(hash) = node.hash.as_deref() {
                    self.skip(hash, rest);
                }
            }
        }
    }

    /// `#` at `hash`: continue from every suffix of `from`, the empty one included.
    fn skip(&mut self, hash: &'a Node, from: Option<&str>) {
        // Recursion only descends, so no other entry into `hash` is in progress: an
        // earlier entry at position p has already explored every suffix from p on.
        let stop = self
            .memo
            .enter(hash as *const Node as usize, self.pos(from));
        let mut rest = from;
        while self.pos(rest) < stop {
            self.at(hash, rest);
            match rest {
                Some(s) => rest = split_first(s).1,
                None => break,
            }
        }
    }
}

/// Per `#` node of one walk, the earliest key position it was entered at. A handful of
/// entries live inline so that ordinary routes do not allocate.
#[derive(Default)]
struct HashMemo {
    inline: [(usize, usize); 8],
    len: usize,
    spill: HashMap<usize, usize>,
}

impl HashMemo {
    /// Records an entry into `node` at `pos`; returns the position from which the node
    /// has already been explored (`usize::MAX` if never).
    fn enter(&mut self, node: usize, pos: usize) -> usize {
        if let Some(entry) = self.inline[..self.len].iter_mut().find(|e| e.0 == node) {
            let stop = entry.1;
            entry.1 = entry.1.min(pos);
            return stop;
        }
        if self.len < self.inline.len() {
            self.inline[self.len] = (node, pos);
            self.len += 1;
            return usize::MAX;
        }
        let entry = self.spill.entry(node).or_insert(usize::MAX);
        let stop = *entry;
        *entry = stop.min(pos);
        stop
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(name: &str) -> Destination {
        Destination::Queue(name.into())
    }

    fn matches(trie: &TopicTrie, key: &str) -> Vec<String> {
        let mut out = Vec::new();
        trie.for_each_match(key, &mut |d| out.push(d.name().to_owned()));
        out.sort();
        out.dedup();
        out
    }

    fn table(t: &[&str]) -> Vec<String> {
        let mut v: Vec<String> = t.iter().map(|s| s.to_string()).collect();
        v.sort();
        v
    }

    /// RabbitMQ's `routing_SUITE:topic1` bindings: (pattern, queue).
    const RABBIT_BINDINGS: [(&str, &str); 27] = [
        ("a.b.c", "t1"),
        ("a.*.c", "t2"),
        ("a.#.b", "t3"),
        ("a.b.b.c", "t4"),
        ("#", "t5"),
        ("#.#", "t6"),
        ("#.b", "t7"),
        ("*.*", "t8"),
        ("a.*", "t9"),
        ("*.b.c", "t10"),
        ("a.#", "t11"),
        ("a.#.#", "t12"),
        ("b.b.c", "t13"),
        ("a.b.b", "t14"),
        ("a.b", "t15"),
        ("b.c", "t16"),
        ("", "t17"),
        ("*.*.*", "t18"),
        ("vodka.martini", "t19"),
        ("a.b.c", "t20"),
        ("*.#", "t21"),
        ("#.*.#", "t22"),
        ("*.#.#", "t23"),
        ("#.#.#", "t24"),
        ("*", "t25"),
        ("#.b.#", "t26"),
        ("args-test", "t27"),
    ];

    fn rabbit_trie() -> TopicTrie {
        let mut trie = TopicTrie::new();
        for (pattern, queue) in RABBIT_BINDINGS {
            trie.insert(pattern, q(queue));
        }
        // RabbitMQ binds t27 twice under "args-test", with different arguments.
        trie.insert("args-test", q("t27"));
        trie
    }

    #[test]
    fn rabbitmq_topic_suite_before_removals() {
        let trie = rabbit_trie();
        let expect: [(&str, &[&str]); 12] = [
            (
                "a.b.c",
                &[
                    "t1", "t2", "t5", "t6", "t10", "t11", "t12", "t18", "t20", "t21", "t22", "t23",
                    "t24", "t26",
                ],
            ),
            (
                "a.b",
                &[
                    "t3", "t5", "t6", "t7", "t8", "t9", "t11", "t12", "t15", "t21", "t22", "t23",
                    "t24", "t26",
                ],
            ),
            (
                "a.b.b",
                &[
                    "t3", "t5", "t6", "t7", "t11", "t12", "t14", "t18", "t21", "t22", "t23", "t24",
                    "t26",
                ],
            ),
            ("", &["t5", "t6", "t17", "t24"]),
            (
                "b.c.c",
                &["t5", "t6", "t18", "t21", "t22", "t23", "t24", "t26"],
            ),
            (
                "a.a.a.a.a",
                &["t5", "t6", "t11", "t12", "t21", "t22", "t23", "t24"],
            ),
            ("vodka.gin", &["t5", "t6", "t8", "t21", "t22", "t23", "t24"]),
            (
                "vodka.martini",
                &["t5", "t6", "t8", "t19", "t21", "t22", "t23", "t24"],
            ),
            (
                "b.b.c",
                &[
                    "t5", "t6", "t10", "t13", "t18", "t21", "t22", "t23", "t24", "t26",
                ],
            ),
            (
                "nothing.here.at.all",
                &["t5", "t6", "t21", "t22", "t23", "t24"],
            ),
            ("oneword", &["t5", "t6", "t21", "t22", "t23", "t24", "t25"]),
            (
                "args-test",
                &["t5", "t6", "t21", "t22", "t23", "t24", "t25", "t27"],
            ),
        ];
        for (key, expected) in expect {
            assert_eq!(matches(&trie, key), table(expected), "routing key {key:?}");
        }
    }

    #[test]
    fn rabbitmq_topic_suite_after_removals() {
        let mut trie = rabbit_trie();
        // RabbitMQ removes bindings 1, 5, 11, 19, 21 and the second t27 one.
        for n in [1, 5, 11, 19, 21] {
            let (pattern, queue) = RABBIT_BINDINGS[n - 1];
            assert!(trie.remove(pattern, &q(queue)), "remove {pattern}");
        }
        assert!(trie.remove("args-test", &q("t27")));
        let expect: [(&str, &[&str]); 12] = [
            (
                "a.b.c",
                &[
                    "t2", "t6", "t10", "t12", "t18", "t20", "t22", "t23", "t24", "t26",
                ],
            ),
            (
                "a.b",
                &[
                    "t3", "t6", "t7", "t8", "t9", "t12", "t15", "t22", "t23", "t24", "t26",
                ],
            ),
            (
                "a.b.b",
                &[
                    "t3", "t6", "t7", "t12", "t14", "t18", "t22", "t23", "t24", "t26",
                ],
            ),
            ("", &["t6", "t17", "t24"]),
            ("b.c.c", &["t6", "t18", "t22", "t23", "t24", "t26"]),
            ("a.a.a.a.a", &["t6", "t12", "t22", "t23", "t24"]),
            ("vodka.gin", &["t6", "t8", "t22", "t23", "t24"]),
            ("vodka.martini", &["t6", "t8", "t22", "t23", "t24"]),
            (
                "b.b.c",
                &["t6", "t10", "t13", "t18", "t22", "t23", "t24", "t26"],
            ),
            ("nothing.here.at.all", &["t6", "t22", "t23", "t24"]),
            ("oneword", &["t6", "t22", "t23", "t24", "t25"]),
            ("args-test", &["t6", "t22", "t23", "t24", "t25", "t27"]),
        ];
        for (key, expected) in expect {
            assert_eq!(matches(&trie, key), table(expected), "routing key {key:?}");
        }
    }

    #[test]
    fn empty_words_are_words() {
        let cases: [(&str, &str, bool); 22] = [
            ("a..b", "a..b", true),
            ("a.*.b", "a..b", true),
            ("a.b", "a..b", false),
            ("a.#.b", "a..b", true),
            ("*", "", false),
            ("*", ".", false),
            ("*.*", ".", true),
            ("#", ".", true),
            ("", "", true),
            ("", ".", false),
            ("*", "a.", false),
            ("a.*", "a.", true),
            ("a.#", "a.", true),
            ("a.#", "a", true),
            ("#.a", "a", true),
            ("#.a", ".a", true),
            ("*.a", ".a", true),
            ("a.", "a.", true),
            ("a.", "a", false),
            ("#.#", "", true),
            ("#.*", "", false),
            ("a.#.#.b", "a.b", true),
        ];
        for (pattern, key, expected) in cases {
            let mut trie = TopicTrie::new();
            trie.insert(pattern, q("q"));
            assert_eq!(
                !matches(&trie, key).is_empty(),
                expected,
                "{pattern:?} vs {key:?}"
            );
        }
    }

    #[test]
    fn key_words_that_are_wildcards_match_like_words() {
        let mut trie = TopicTrie::new();
        trie.insert("a.*", q("star"));
        trie.insert("a.b", q("literal"));
        trie.insert("a.#", q("hash"));
        assert_eq!(matches(&trie, "a.*"), table(&["hash", "star"]));
        assert_eq!(matches(&trie, "a.#"), table(&["hash", "star"]));
    }

    #[test]
    fn removal_prunes_and_keeps_other_counts() {
        let mut trie = TopicTrie::new();
        trie.insert("a.#.b", q("q"));
        trie.insert("a.#.b", q("q"));
        assert!(trie.remove("a.#.b", &q("q")));
        assert_eq!(matches(&trie, "a.x.b"), table(&["q"]));
        assert!(trie.remove("a.#.b", &q("q")));
        assert!(!trie.remove("a.#.b", &q("q")));
        assert!(!trie.remove("a.*.b", &q("q")));
        assert!(trie.is_empty());
        // Merged `#` runs are removed under either spelling.
        trie.insert("x.#.#", q("q"));
        assert!(trie.remove("x.#", &q("q")));
        assert!(trie.is_empty());
    }

    #[test]
    fn many_hashes_stay_fast() {
        // Without memoisation this walk visits C(120, 30) paths.
        let mut trie = TopicTrie::new();
        let pattern = vec!["#.a"; 30].join(".") + ".b";
        trie.insert(&pattern, q("q"));
        let key = vec!["a"; 120].join(".");
        assert!(matches(&trie, &key).is_empty());
        assert_eq!(matches(&trie, &(key + ".b")), table(&["q"]));
    }
}
