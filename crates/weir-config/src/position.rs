//! Where each value of a YAML document is written, so that errors can say
//! `upstreams[0] (id "demo").retires (line 14, column 5): unknown field`.
//!
//! The document is validated from a `serde_json::Value` tree (see [`crate::reader`]), which
//! keeps no positions. This module reads the same text a second time with `yaml-rust2`'s event
//! parser, which reports a line and column for every event, and indexes them by the path of
//! the value: a mapping member by the position of its key, a sequence item by the position of
//! the item. It runs only when there is an error or a warning to place, so a valid file pays
//! nothing for it.

use crate::path::{Path, Seg};
use std::collections::HashMap;
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// A line and column in a file, both counted from 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position {
    pub line: usize,
    pub column: usize,
}

/// One step of an indexed path: the text of a mapping key, or a sequence index.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Step {
    Member(String),
    Item(usize),
}

/// The position of every mapping member and sequence item of a document.
#[derive(Debug, Default)]
pub struct Positions {
    at: HashMap<Vec<Step>, Position>,
}

impl Positions {
    /// Index the first document of `text`. A document that does not parse yields an empty
    /// index (its syntax error already carries a position).
    pub fn of(text: &str) -> Positions {
        let mut b = Builder::default();
        let mut parser = Parser::new_from_str(text);
        if parser.load(&mut b, false).is_err() {
            return Positions::default();
        }
        Positions { at: b.at }
    }

    /// Where `path` is written: its own position, or that of its deepest written ancestor
    /// when it is not in the file (a missing required field is placed at its parent).
    /// `None` for the document root and for paths that start outside the file.
    pub fn find(&self, path: &Path) -> Option<Position> {
        let mut key = Vec::with_capacity(path.segments().len());
        let mut found = None;
        for seg in path.segments() {
            key.push(match seg {
                Seg::Field(k) | Seg::Key(k) => Step::Member(k.clone()),
                Seg::Index(i, _) => Step::Item(*i),
            });
            match self.at.get(&key) {
                Some(p) => found = Some(*p),
                None => break,
            }
        }
        found
    }
}

/// A node being read: a mapping (waiting for a key, or for the value of `key`) or a sequence
/// (and the index of its next item).
enum Frame {
    Mapping {
        key: Option<Step>,
        waiting_value: bool,
        /// A mapping that is a sequence item: the parser marks a block mapping at its first
        /// `:`, so the item is placed at its first key instead.
        place_item: bool,
    },
    Sequence {
        next: usize,
    },
}

#[derive(Default)]
struct Builder {
    path: Vec<Step>,
    stack: Vec<Frame>,
    at: HashMap<Vec<Step>, Position>,
}

impl Builder {
    /// A node starts at `mark`: a mapping key (returns `true`, the node is consumed as the key)
    /// or a value whose path is pushed.
    fn node_starts(&mut self, mark: Marker, scalar_key: Option<&str>) -> bool {
        let pos = Position {
            line: mark.line(),
            column: mark.col() + 1,
        };
        match self.stack.last_mut() {
            None => false,
            Some(Frame::Mapping {
                key,
                waiting_value,
                place_item,
            }) => {
                if !*waiting_value {
                    // This node is a key. Non-scalar keys cannot be named in a path.
                    if std::mem::take(place_item) {
                        self.at.insert(self.path.clone(), pos);
                    }
                    let step = Step::Member(scalar_key.unwrap_or("?").to_owned());
                    let mut p = self.path.clone();
                    p.push(step.clone());
                    self.at.entry(p).or_insert(pos);
                    *key = Some(step);
                    *waiting_value = true;
                    return true;
                }
                *waiting_value = false;
                if let Some(k) = key.take() {
                    self.path.push(k);
                }
                false
            }
            Some(Frame::Sequence { next }) => {
                let step = Step::Item(*next);
                *next += 1;
                self.path.push(step);
                self.at.entry(self.path.clone()).or_insert(pos);
                false
            }
        }
    }

    /// A value node ended: leave its path.
    fn value_ends(&mut self) {
        if !self.stack.is_empty() {
            self.path.pop();
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        match ev {
            Event::Scalar(text, ..) if !self.node_starts(mark, Some(&text)) => self.value_ends(),
            Event::Alias(_) if !self.node_starts(mark, None) => self.value_ends(),
            Event::Scalar(..) | Event::Alias(_) => {}
            Event::MappingStart(..) | Event::SequenceStart(..) => {
                // A container used as a mapping key is consumed as an unnamed key; its
                // contents are skipped by tracking it as an ordinary frame under "?".
                let in_sequence = matches!(self.stack.last(), Some(Frame::Sequence { .. }));
                let is_key = self.node_starts(mark, None);
                if is_key {
                    if let Some(Frame::Mapping { key: Some(k), .. }) = self.stack.last() {
                        self.path.push(k.clone());
                    }
                }
                self.stack.push(match ev {
                    Event::MappingStart(..) => Frame::Mapping {
                        key: None,
                        waiting_value: false,
                        place_item: in_sequence,
                    },
                    _ => Frame::Sequence { next: 0 },
                });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
                self.value_ends();
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(line: usize, column: usize) -> Option<Position> {
        Some(Position { line, column })
    }

    #[test]
    fn places_members_and_items() {
        let text = "upstreams:\n  - id: u1\n    nodes: {\"10.0.0.1:80\": 1}\n    retires: 2\n  - id: u2\nroutes: [{id: r, uri: /}]\n";
        let p = Positions::of(text);
        let ups = Path::root().field("upstreams");
        assert_eq!(p.find(&ups), at(1, 1));
        assert_eq!(p.find(&ups.index(0)), at(2, 5));
        assert_eq!(p.find(&ups.index(0).field("retires")), at(4, 5));
        assert_eq!(
            p.find(&ups.index(0).field("nodes").key("10.0.0.1:80")),
            at(3, 13)
        );
        assert_eq!(p.find(&ups.index(1).field("id")), at(5, 5));
        let r = Path::root().field("routes").index(0);
        assert_eq!(p.find(&r.field("uri")), at(6, 18));
    }

    #[test]
    fn a_missing_field_is_placed_at_its_parent() {
        let p = Positions::of("upstreams:\n  - nodes: {}\n");
        let u = Path::root().field("upstreams").index(0);
        assert_eq!(p.find(&u.field("id")), at(2, 5));
        assert_eq!(p.find(&Path::root()), None);
        assert_eq!(p.find(&Path::root().field("routes")), None);
    }

    #[test]
    fn survives_odd_documents() {
        for text in [
            "",
            "a",
            "[1, 2]",
            "? [a, b]\n: 1\nc: {d: [1, {e: 2}]}\n",
            "a: &x {b: 1}\nc: *x\n",
            "{",
            "a: 1\n---\nb: 2\n",
        ] {
            let p = Positions::of(text);
            let _ = p.find(&Path::root().field("c").field("d").index(1).field("e"));
        }
        let p = Positions::of("? [a, b]\n: 1\nc: {d: [1, {e: 2}]}\n");
        let e = Path::root().field("c").field("d").index(1).field("e");
        assert_eq!(p.find(&e), at(3, 13));
    }
}
