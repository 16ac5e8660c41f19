//! Writing the Admin API's changes back into the YAML configuration file.
//!
//! The file mixes two things: process settings (`server`, `admin`, `control`, `config_source`,
//! `discovery`, ...), which an operator writes and comments by hand, and resource sections
//! ([`RESOURCE_SECTIONS`]), which the Admin API owns once it is used. [`rewrite`] replaces the
//! resource sections and keeps every other top-level section exactly as written (text,
//! comments, order, quoting, line endings); [`write_atomic`] puts the result in place so that a
//! reader sees the old file or the new one, never a torn one.
//!
//! # Why by hand
//!
//! No YAML crate edits a document and keeps its comments: `serde_yaml_ng`, `yaml-rust2` and
//! friends parse to values (or events) and emit fresh text, so a round trip through any of them
//! loses every comment and the operator's layout. The top level of a block-style configuration
//! file is simple enough to cut by lines, so this module does that, serialises only the
//! replaced sections, and then *proves* the edit by parsing the result.
//!
//! # How
//!
//! 1. The file is cut into lines and every line is classified. A top-level key line starts at
//!    column 0 with a plain (`routes:`) or quoted (`"routes":`, `'routes':`) key followed by
//!    `:` and a space, a tab or the end of the line; blank lines, comment lines, `---`, `...`
//!    and `%` directives are recognised; indented lines and `- ` list items at column 0 (valid
//!    under a top-level key: `routes:\n- id: r1`) belong to the section they are in. A section
//!    runs from its key line to the next key line. Anything else at column 0 (`{`, `?`, `&`,
//!    `!`, a stray scalar, ...) is a shape this module does not splice.
//! 2. The keys found by lines must be exactly the keys the YAML parser sees, in the same order
//!    (a continuation line of a multi-line flow value at column 0 would otherwise pass for a
//!    key); if not, the file is not spliced.
//! 3. Comments are attached so that each stays with what it describes:
//!    - column-0 comment lines *directly* above a key line (no blank line in between) lead that
//!      section: they stay above a replaced section and go away with a removed one, except the
//!      file's header (comments above the first section with no other comment before them),
//!      which is never removed;
//!    - comment lines inside a section (indented, or at column 0 between its lines) are part
//!      of it: kept with a kept section, dropped with a replaced or removed one;
//!    - blank lines and column-0 comments after a section's last line that do not lead the
//!      next section are between sections and always kept; removing a section also removes
//!      the blank lines just above it, so removals leave no double gaps.
//! 4. A replaced section keeps its key line when nothing but a comment follows the colon
//!    (`routes:   # managed by the Admin API` keeps its comment and its quoting) and gets the
//!    body `serde_yaml_ng` writes for `{kind: [...]}`; with a value on the key line
//!    (`routes: []`, `routes: [{...}]`) the whole section is replaced. Strings with line
//!    breaks (PEM certificates and keys) come out as literal blocks (`|`, `|-`, `|+`) or
//!    double-quoted strings, which read back exactly. New sections go after the last section
//!    (before a `...` end marker), in canonical order, each after a blank line. New text uses
//!    the file's line ending (that of its first line: CRLF files stay CRLF).
//! 5. The result is parsed with [`weir_config::yaml_to_value`] and compared with what it must
//!    hold: every settings section equal to the original's, each resource kind equal to what
//!    was asked (absent or empty kinds absent), nothing else. If the splice is impossible
//!    (flow-style top level, unusual shapes) or fails that check, the whole document is
//!    re-serialised from values (settings in their order, then resources), which loses
//!    comments and layout: that is logged as a warning, and checked the same way. The
//!    re-serialised file is block style, so the next rewrite splices it.

use serde_json::{Map, Value};
use std::borrow::Cow;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// The resource kinds, in canonical order.
pub const RESOURCE_SECTIONS: [&str; 6] = [
    "routes",
    "services",
    "upstreams",
    "consumers",
    "certificates",
    "ca_certificates",
];

fn is_resource(key: &str) -> bool {
    RESOURCE_SECTIONS.contains(&key)
}

/// `original` (the file's current text) with its resource sections replaced by `resources`
/// (kind -> JSON array; a kind absent from the map, or with an empty array, is removed from the
/// file).
///
/// Every other top-level section is kept exactly as written: same text, comments, order,
/// formatting. A replaced section stays where it was in the file; a new section goes after the
/// existing ones, in canonical order. Comments inside a replaced resource section are not kept.
/// See the [module documentation](self) for the details, and for the fallback (the whole
/// document re-serialised, with a warning) when the file's shape cannot be edited in place.
///
/// Errors: `original` is not valid YAML or its top level is not a mapping; `resources` has a
/// key that is not a resource kind, or a value that is not an array; or the result does not
/// read back as it must.
pub fn rewrite(original: &str, resources: &Map<String, Value>) -> Result<String, String> {
    rewrite_inner(original, resources).map(|(text, _)| text)
}

/// [`rewrite`], also saying whether the file was edited in place (`true`) or re-serialised.
fn rewrite_inner(original: &str, resources: &Map<String, Value>) -> Result<(String, bool), String> {
    let wanted = wanted_resources(resources)?;
    let doc = match weir_config::yaml_to_value(original) {
        Ok(Value::Object(map)) => map,
        Ok(Value::Null) => Map::new(),
        Ok(other) => {
            return Err(format!(
                "the configuration file's top level is {}, not a mapping",
                type_name(&other)
            ))
        }
        Err(e) => {
            return Err(format!(
                "the configuration file is not valid YAML: {}",
                e.joined()
            ))
        }
    };

    let mut expected = Map::new();
    for (key, value) in &doc {
        if !is_resource(key) {
            expected.insert(key.clone(), value.clone());
        }
    }
    for (kind, items) in &wanted {
        expected.insert((*kind).to_owned(), Value::Array((*items).clone()));
    }

    let eol = line_ending(original);
    let reason = match splice(original, &doc, &wanted, eol) {
        Ok(text) => match verify(&text, &expected) {
            Ok(()) => return Ok((text, true)),
            Err(why) => format!("the edited file did not read back as written ({why})"),
        },
        Err(why) => why,
    };
    log::warn!(
        "configuration file rewritten in full: its comments and formatting were not kept ({reason})"
    );
    let text = whole(&expected, eol)?;
    verify(&text, &expected).map_err(|why| {
        format!(
            "cannot write the configuration back: neither an in-place edit ({reason}) nor a \
             re-serialised file ({why}) reads back as written"
        )
    })?;
    Ok((text, false))
}

/// The non-empty kinds of `resources`, in canonical order.
fn wanted_resources(
    resources: &Map<String, Value>,
) -> Result<Vec<(&'static str, &Vec<Value>)>, String> {
    if let Some(key) = resources.keys().find(|k| !is_resource(k)) {
        return Err(format!(
            "`{key}` is not a resource kind (expected one of {})",
            RESOURCE_SECTIONS.join(", ")
        ));
    }
    let mut out = Vec::new();
    for kind in RESOURCE_SECTIONS {
        match resources.get(kind) {
            None => {}
            Some(Value::Array(items)) if !items.is_empty() => out.push((kind, items)),
            Some(Value::Array(_)) => {}
            Some(other) => {
                return Err(format!(
                    "resources `{kind}` must be an array, got {}",
                    type_name(other)
                ))
            }
        }
    }
    Ok(out)
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a sequence",
        Value::Object(_) => "a mapping",
    }
}

/// The file's line ending: that of its first line (`\n` when it has none).
fn line_ending(text: &str) -> &'static str {
    match text.find('\n') {
        Some(i) if i.checked_sub(1).and_then(|j| text.as_bytes().get(j)) == Some(&b'\r') => "\r\n",
        _ => "\n",
    }
}

/// `line` without its line ending (`\n` or `\r\n`).
fn strip_eol(line: &str) -> &str {
    let line = line.strip_suffix('\n').unwrap_or(line);
    line.strip_suffix('\r').unwrap_or(line)
}

fn is_blank(line: &str) -> bool {
    line.trim_matches([' ', '\t', '\r', '\n']).is_empty()
}

/// What one line of the file is, seen from the top level.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Class {
    /// Empty or only spaces and tabs.
    Blank,
    /// A comment starting at column 0.
    Comment,
    /// Starts with a space (content or a comment of the section it is in).
    Indented,
    /// `- ` (or a bare `-`) at column 0: an item of a top-level key's sequence; or a line
    /// starting with `]` / `}`: the end of a multi-line flow value.
    Content,
    /// A top-level key; `bare`: nothing but a comment follows the colon.
    Key { key: String, bare: bool },
    /// `---`, optionally followed by a comment.
    DocStart,
    /// `...`, optionally followed by a comment.
    DocEnd,
    /// `%YAML`, `%TAG`.
    Directive,
    /// Anything else at column 0.
    Other,
}

fn classify(line: &str) -> Class {
    let c = strip_eol(line);
    if is_blank(c) {
        return Class::Blank;
    }
    let Some(first) = c.chars().next() else {
        return Class::Blank;
    };
    match first {
        ' ' => Class::Indented,
        '\t' if c.trim_start_matches([' ', '\t']).starts_with('#') => Class::Indented,
        '#' => Class::Comment,
        '%' => Class::Directive,
        ']' | '}' => Class::Content,
        '-' if c.starts_with("---") => marker(c, Class::DocStart),
        '-' => match c.chars().nth(1) {
            None | Some(' ') | Some('\t') => Class::Content,
            Some(_) => Class::Other,
        },
        '.' if c.starts_with("...") => match marker(c, Class::DocEnd) {
            Class::Other => plain_key(c),
            class => class,
        },
        '"' | '\'' => quoted_key(c, first).unwrap_or(Class::Other),
        '\t' | '?' | ':' | ',' | '[' | '{' | '&' | '*' | '!' | '|' | '>' | '@' | '`' => {
            Class::Other
        }
        _ => plain_key(c),
    }
}

/// `c` starts with a three-character document marker: `class` when nothing but a comment
/// follows it, else [`Class::Other`].
fn marker(c: &str, class: Class) -> Class {
    match c.get(3..) {
        Some("") => class,
        Some(rest) if rest.starts_with([' ', '\t']) && is_bare(rest) => class,
        _ => Class::Other,
    }
}

/// What follows a key's colon is empty or only a comment.
fn is_bare(rest: &str) -> bool {
    let rest = rest.trim_start_matches([' ', '\t']);
    rest.is_empty() || rest.starts_with('#')
}

fn plain_key(c: &str) -> Class {
    let mut prev = None;
    for (i, ch) in c.char_indices() {
        match ch {
            // ` #` starts a comment: a scalar line, not a key.
            '#' if matches!(prev, Some(' ') | Some('\t')) => return Class::Other,
            ':' => {
                let rest = c.get(i + 1..).unwrap_or("");
                if rest.is_empty() || rest.starts_with([' ', '\t']) {
                    let key = c.get(..i).unwrap_or("").trim_end_matches([' ', '\t']);
                    if key.is_empty() {
                        return Class::Other;
                    }
                    return Class::Key {
                        key: key.to_owned(),
                        bare: is_bare(rest),
                    };
                }
            }
            _ => {}
        }
        prev = Some(ch);
    }
    Class::Other
}

/// A `"..."` or `'...'` key on one line, followed by `:`; the key decoded by the YAML parser.
fn quoted_key(c: &str, quote: char) -> Option<Class> {
    let mut chars = c.char_indices().skip(1).peekable();
    let mut end = None;
    while let Some((i, ch)) = chars.next() {
        if quote == '"' && ch == '\\' {
            chars.next();
        } else if ch == quote {
            if quote == '\'' && chars.peek().map(|&(_, next)| next) == Some('\'') {
                chars.next();
            } else {
                end = Some(i);
                break;
            }
        }
    }
    let end = end?;
    let scalar = c.get(..=end)?;
    let rest = c.get(end + 1..)?.trim_start_matches([' ', '\t']);
    let rest = rest.strip_prefix(':')?;
    if !(rest.is_empty() || rest.starts_with([' ', '\t'])) {
        return None;
    }
    let key: String = serde_yaml_ng::from_str(scalar).ok()?;
    Some(Class::Key {
        key,
        bare: is_bare(rest),
    })
}

/// One top-level section, as line indices.
#[derive(Debug)]
struct Section {
    key: String,
    /// Nothing but a comment after the key's colon.
    bare: bool,
    /// First line of the comments that lead the section (`== line` when none).
    lead: usize,
    /// The key line.
    line: usize,
    /// One past the section's last line of content.
    body_end: usize,
    /// One past the blank lines and comments that follow it (the next section's `lead`).
    end: usize,
}

/// The file cut into top-level sections.
#[derive(Debug)]
struct Layout<'a> {
    /// A byte-order mark, kept in front.
    bom: &'static str,
    lines: Vec<&'a str>,
    /// Lines before the first section (or all lines before `tail`, without sections).
    head_end: usize,
    sections: Vec<Section>,
    /// First line of what follows the document (a `...` marker and anything after it).
    tail: usize,
}

impl<'a> Layout<'a> {
    fn span(&self, from: usize, to: usize) -> &[&'a str] {
        self.lines.get(from..to).unwrap_or(&[])
    }
}

fn layout(text: &str) -> Result<Layout<'_>, String> {
    let (bom, body) = match text.strip_prefix('\u{feff}') {
        Some(rest) => ("\u{feff}", rest),
        None => ("", text),
    };
    let lines: Vec<&str> = body.split_inclusive('\n').collect();
    let classes: Vec<Class> = lines.iter().map(|l| classify(l)).collect();
    let is = |i: usize, class: &Class| classes.get(i) == Some(class);
    let tail = classes
        .iter()
        .position(|c| *c == Class::DocEnd)
        .unwrap_or(lines.len());

    let mut sections: Vec<Section> = Vec::new();
    for (i, class) in classes.iter().enumerate().take(tail) {
        match class {
            Class::Key { key, bare } => sections.push(Section {
                key: key.clone(),
                bare: *bare,
                lead: i,
                line: i,
                body_end: i + 1,
                end: tail,
            }),
            Class::Blank | Class::Comment => {}
            Class::Indented | Class::Content if !sections.is_empty() => {}
            Class::DocStart | Class::Directive if sections.is_empty() => {}
            // Not the line's text: it may hold a secret (`admin.api_key`), and this is logged.
            _ => {
                return Err(format!(
                    "line {} is not a shape this writer edits in place",
                    i + 1
                ))
            }
        }
    }

    // Each section's content ends at its last indented or item line.
    let mut next_line = tail;
    for s in sections.iter_mut().rev() {
        s.body_end = (s.line + 1..next_line)
            .rev()
            .find(|&i| is(i, &Class::Indented) || is(i, &Class::Content))
            .map_or(s.line + 1, |i| i + 1);
        next_line = s.line;
    }
    // Column-0 comments directly above a key lead its section.
    for n in 0..sections.len() {
        let floor = match n.checked_sub(1).and_then(|p| sections.get(p)) {
            Some(prev) => prev.body_end,
            None => 0,
        };
        let Some(s) = sections.get_mut(n) else {
            break;
        };
        let mut lead = s.line;
        while lead > floor && is(lead - 1, &Class::Comment) {
            lead -= 1;
        }
        // The file's header is not the first section's: it stays whatever becomes of it.
        if n == 0 && !(0..lead).any(|i| is(i, &Class::Comment)) {
            lead = s.line;
        }
        s.lead = lead;
        if let Some(prev) = n.checked_sub(1).and_then(|p| sections.get_mut(p)) {
            prev.end = lead;
        }
    }
    let head_end = sections.first().map_or(tail, |s| s.lead);
    Ok(Layout {
        bom,
        lines,
        head_end,
        sections,
        tail,
    })
}

/// The output, as lines (each with its line ending, but perhaps the last).
struct Out<'a> {
    lines: Vec<Cow<'a, str>>,
    eol: &'static str,
    /// Lines before this one are not taken back by [`Out::pop_blank`]: they end a `|+` block.
    fixed: usize,
}

impl<'a> Out<'a> {
    /// Append `line`, first ending the previous line if it has no line ending (the original's
    /// last line may not).
    fn push(&mut self, line: Cow<'a, str>) {
        if let Some(last) = self.lines.last_mut() {
            if !last.ends_with('\n') {
                last.to_mut().push_str(self.eol);
            }
        }
        self.lines.push(line);
    }

    fn extend(&mut self, lines: &[&'a str]) {
        for line in lines {
            self.push(Cow::Borrowed(line));
        }
    }

    fn ends_blank(&self) -> bool {
        self.lines.last().is_some_and(|l| is_blank(l))
    }

    /// Take back the blank lines at the end (not those of a `|+` block).
    fn pop_blank(&mut self) {
        while self.lines.len() > self.fixed && self.ends_blank() {
            self.lines.pop();
        }
    }
}

/// `text` with every `\n` line ending turned into `eol`, as lines.
fn to_lines(text: &str, eol: &str) -> Vec<String> {
    text.split_inclusive('\n')
        .map(|line| match line.strip_suffix('\n') {
            Some(content) => format!("{content}{eol}"),
            None => line.to_owned(),
        })
        .collect()
}

/// `{kind: items}` as YAML lines.
fn section_yaml(kind: &str, items: &[Value], eol: &str) -> Result<Vec<String>, String> {
    let mut map = Map::new();
    map.insert(kind.to_owned(), Value::Array(items.to_vec()));
    let text =
        serde_yaml_ng::to_string(&map).map_err(|e| format!("cannot serialise {kind}: {e}"))?;
    Ok(to_lines(&text, eol))
}

fn splice(
    original: &str,
    doc: &Map<String, Value>,
    wanted: &[(&'static str, &Vec<Value>)],
    eol: &'static str,
) -> Result<String, String> {
    let layout = layout(original)?;
    let found: Vec<&str> = layout.sections.iter().map(|s| s.key.as_str()).collect();
    let parsed: Vec<&str> = doc.keys().map(String::as_str).collect();
    if found != parsed {
        return Err(format!(
            "the top-level keys found line by line ({}) are not the document's ({})",
            found.join(", "),
            parsed.join(", ")
        ));
    }

    let mut out = Out {
        lines: Vec::new(),
        eol,
        fixed: 0,
    };
    out.extend(layout.span(0, layout.head_end));
    for s in &layout.sections {
        if !is_resource(&s.key) {
            out.extend(layout.span(s.lead, s.end));
            continue;
        }
        let gap = layout.span(s.body_end, s.end);
        let gap_blanks = gap.iter().take_while(|l| is_blank(l)).count();
        match wanted.iter().find(|(kind, _)| *kind == s.key) {
            Some((kind, items)) => {
                out.extend(layout.span(s.lead, s.line));
                let yaml = section_yaml(kind, items, eol)?;
                let head = format!("{kind}:{eol}");
                match (s.bare, layout.lines.get(s.line), yaml.split_first()) {
                    (true, Some(key_line), Some((first, rest))) if *first == head => {
                        out.push(Cow::Borrowed(key_line));
                        for line in rest {
                            out.push(Cow::Owned(line.clone()));
                        }
                    }
                    _ => {
                        for line in yaml.iter() {
                            out.push(Cow::Owned(line.clone()));
                        }
                    }
                }
                // A section ending in a `|+` block (a string ending in blank lines) would take
                // the blank lines after it into that string.
                let absorbs = yaml.last().is_some_and(|l| is_blank(l));
                out.fixed = out.lines.len();
                out.extend(
                    gap.get(if absorbs { gap_blanks } else { 0 }..)
                        .unwrap_or(&[]),
                );
            }
            None => {
                // The blank lines above a removed section go with it; the ones below it
                // instead when those above cannot (nothing above, or the end of a `|+` block).
                out.pop_blank();
                let skip = if out.lines.is_empty() || out.ends_blank() {
                    gap_blanks
                } else {
                    0
                };
                out.extend(gap.get(skip..).unwrap_or(&[]));
            }
        }
    }
    for (kind, items) in wanted {
        if found.contains(kind) {
            continue;
        }
        if !out.lines.is_empty() && !out.ends_blank() {
            out.push(Cow::Borrowed(eol));
        }
        for line in section_yaml(kind, items, eol)? {
            out.push(Cow::Owned(line));
        }
        out.fixed = out.lines.len();
    }
    out.extend(layout.span(layout.tail, layout.lines.len()));

    let mut text = String::with_capacity(original.len() + 256);
    text.push_str(layout.bom);
    for line in &out.lines {
        text.push_str(line);
    }
    Ok(text)
}

/// The whole document from values: `expected` in its order.
fn whole(expected: &Map<String, Value>, eol: &str) -> Result<String, String> {
    if expected.is_empty() {
        return Ok(String::new());
    }
    let text = serde_yaml_ng::to_string(expected)
        .map_err(|e| format!("cannot serialise the configuration: {e}"))?;
    Ok(to_lines(&text, eol).concat())
}

/// `text` parses to exactly `expected`.
fn verify(text: &str, expected: &Map<String, Value>) -> Result<(), String> {
    let got = match weir_config::yaml_to_value(text) {
        Ok(Value::Object(map)) => map,
        Ok(Value::Null) => Map::new(),
        Ok(other) => return Err(format!("its top level is {}", type_name(&other))),
        Err(e) => return Err(e.joined()),
    };
    for (key, value) in expected {
        match got.get(key) {
            None => return Err(format!("`{key}` is missing")),
            Some(v) if v != value => return Err(format!("`{key}` differs")),
            Some(_) => {}
        }
    }
    match got.keys().find(|k| !expected.contains_key(*k)) {
        Some(key) => Err(format!("`{key}` appeared")),
        None => Ok(()),
    }
}

/// Write `text` to `path` atomically: a temporary file in the same directory (unique name,
/// `.<name>.weir-tmp-<pid>-<counter>`), written fully, fsync'd, given the original file's
/// permissions (when it exists), renamed over `path`, then the directory fsync'd. On any error
/// the temporary file is removed and `path` is untouched. Readers therefore see the old file
/// or the new one, never a torn one.
///
/// - When `path` is a symbolic link, the file it points to is replaced (the link stays).
/// - The permissions are set before any byte is written, so a file of mode `0600` (it holds
///   the Admin API key) is never readable by others, not even as a temporary file. A new file
///   gets the usual mode (`0666` less the umask). Ownership is not carried over (that needs
///   privileges): the new file belongs to the writing process.
/// - A failing directory fsync (some file systems do not support it) comes after the rename:
///   the new file is in place, so it is logged, not returned.
pub fn write_atomic(path: &Path, text: &str) -> io::Result<()> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);

    let target: PathBuf = match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_symlink() => fs::canonicalize(path)?,
        _ => path.to_path_buf(),
    };
    let name = target.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{}: not a file name", target.display()),
        )
    })?;
    let dir = match target.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let permissions = match fs::metadata(&target) {
        Ok(meta) => Some(meta.permissions()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };

    let tmp = dir.join(format!(
        ".{}.weir-tmp-{}-{}",
        name.to_string_lossy(),
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    if permissions.is_some() {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(&tmp)?;
    let written = (|| {
        if let Some(permissions) = permissions {
            file.set_permissions(permissions)?;
        }
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp, &target)
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    if let Err(e) = File::open(&dir).and_then(|d| d.sync_all()) {
        log::warn!(
            "{}: written, but syncing its directory failed: {e}",
            target.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn res(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => panic!("not an object"),
        }
    }

    fn parse(text: &str) -> Map<String, Value> {
        match weir_config::yaml_to_value(text).unwrap() {
            Value::Object(m) => m,
            Value::Null => Map::new(),
            other => panic!("not a mapping: {other}"),
        }
    }

    /// Rewrites in place (no fallback), checks the result reads back and is a fixed point.
    fn spliced(original: &str, resources: &Map<String, Value>) -> String {
        let (out, in_place) = rewrite_inner(original, resources).unwrap();
        assert!(in_place, "fell back to re-serialising:\n{original}");
        let (again, in_place) = rewrite_inner(&out, resources).unwrap();
        assert!(in_place);
        assert_eq!(again, out, "not idempotent");
        out
    }

    const PEM_CERT: &str = "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUYm9ndXMgY2VydGlmaWNhdGUgZm9yIHRlc3RzMAoGCCqG\nSM49BAMCMBQxEjAQBgNVBAMMCWxvY2FsaG9zdDAeFw0yNDAxMDEwMDAwMDBaFw0z\n-----END CERTIFICATE-----\n";
    const PEM_KEY: &str = "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgYm9ndXMga2V5IGZv\n-----END PRIVATE KEY-----\n";

    #[test]
    fn settings_survive_byte_for_byte_and_sections_stay_in_place() {
        let server = "server:   # the process\n  listen: [ \"127.0.0.1:9080\" ,  \"[::1]:9080\" ]\n\n  # threads: 8\n  threads:    2   # two is plenty\n  pid_file: '/tmp/weir.pid'\n";
        let discovery = "discovery:\n    dns:\n        servers:\n          - \"1.1.1.1:53\"   # cloudflare\n        # timeout: 5000\n        min_ttl: 1\n";
        let original = format!(
            "# Weir\n\n{server}\n# The routes.\nroutes:\n  - id: old\n    # an inner comment\n    uri: /old\n\n{discovery}\nupstreams:\n  - id: u1\n    nodes: {{\"127.0.0.1:1\": 1}}\n"
        );
        let r = res(json!({
            "routes": [{"id": "r1", "uri": "/a", "upstream_id": "u1"}],
            "upstreams": [{"id": "u1", "nodes": {"127.0.0.1:1": 1}}],
        }));
        let out = spliced(&original, &r);
        let expected = format!(
            "# Weir\n\n{server}\n# The routes.\nroutes:\n- id: r1\n  uri: /a\n  upstream_id: u1\n\n{discovery}\nupstreams:\n- id: u1\n  nodes:\n    127.0.0.1:1: 1\n"
        );
        assert_eq!(out, expected);
        let parsed = parse(&out);
        assert_eq!(parsed.get("server"), parse(&original).get("server"));
        let keys: Vec<&String> = parsed.keys().collect();
        assert_eq!(keys, ["server", "routes", "discovery", "upstreams"]);
    }

    #[test]
    fn removed_section_disappears_with_nothing_else_changing() {
        let original = "server:\n  threads: 2\n\n# Routes.\nroutes:\n  - id: r1\n    uri: /a\n\n# Between, kept.\n\nupstreams:\n  - id: u1\n    nodes: {\"a:1\": 1}\n\ncontrol:\n  listen: 127.0.0.1:9090\n";
        let r = res(json!({"upstreams": [{"id": "u1", "nodes": {"a:1": 1}}]}));
        let out = spliced(original, &r);
        assert_eq!(
            out,
            "server:\n  threads: 2\n\n# Between, kept.\n\nupstreams:\n- id: u1\n  nodes:\n    a:1: 1\n\ncontrol:\n  listen: 127.0.0.1:9090\n"
        );
        // Removing every resource leaves exactly the settings.
        let out = spliced(original, &Map::new());
        assert_eq!(
            out,
            "server:\n  threads: 2\n\n# Between, kept.\n\ncontrol:\n  listen: 127.0.0.1:9090\n"
        );
        // An empty array removes too; so does removing the last section.
        let original = "server:\n  threads: 2\n\nroutes:\n  - id: r1\n    uri: /a\n";
        let out = spliced(original, &res(json!({"routes": []})));
        assert_eq!(out, "server:\n  threads: 2\n");
    }

    #[test]
    fn first_section_removed_keeps_the_file_header() {
        let original = "# Header, line 1.\n# Header, line 2.\nroutes:\n- id: r1\n  uri: /a\n\nserver:\n  threads: 2\n";
        let out = spliced(original, &Map::new());
        assert_eq!(
            out,
            "# Header, line 1.\n# Header, line 2.\n\nserver:\n  threads: 2\n"
        );
        // Without a header the section's own comment goes with it; no blank line is left on top.
        let original =
            "# Header.\n\n# Routes.\nroutes:\n- id: r1\n  uri: /a\n\nserver:\n  threads: 2\n";
        let out = spliced(original, &Map::new());
        assert_eq!(out, "# Header.\n\nserver:\n  threads: 2\n");
        let original = "routes:\n- id: r1\n  uri: /a\n\nserver:\n  threads: 2\n";
        assert_eq!(spliced(original, &Map::new()), "server:\n  threads: 2\n");
    }

    #[test]
    fn leading_comment_stays_above_a_replaced_section() {
        let original = "server:\n  threads: 2\n\n# Managed by the Admin API.\nroutes:\n  - id: old\n    uri: /old\n";
        let r = res(json!({"routes": [{"id": "new", "uri": "/new"}]}));
        assert_eq!(
            spliced(original, &r),
            "server:\n  threads: 2\n\n# Managed by the Admin API.\nroutes:\n- id: new\n  uri: /new\n"
        );
    }

    #[test]
    fn new_sections_go_last_in_canonical_order() {
        let original = "server:\n  threads: 2\nroutes:\n- id: r1\n  uri: /a\n  upstream_id: u1\n";
        let r = res(json!({
            "consumers": [{"username": "jack"}],
            "routes": [{"id": "r1", "uri": "/a", "upstream_id": "u1"}],
            "upstreams": [{"id": "u1", "nodes": {"a:1": 1}}],
        }));
        let out = spliced(original, &r);
        assert_eq!(
            out,
            "server:\n  threads: 2\nroutes:\n- id: r1\n  uri: /a\n  upstream_id: u1\n\nupstreams:\n- id: u1\n  nodes:\n    a:1: 1\n\nconsumers:\n- username: jack\n"
        );
        let keys: Vec<String> = parse(&out).keys().cloned().collect();
        assert_eq!(keys, ["server", "routes", "upstreams", "consumers"]);
    }

    #[test]
    fn quoted_keys() {
        let original = "\"server\":\n  threads: 2\n\"routes\":   # quoted\n  - id: old\n'upstreams':\n  - {id: u1, nodes: {\"a:1\": 1}}\n\"ser\\x76ices\": []\n";
        let r = res(json!({
            "routes": [{"id": "r1", "uri": "/a"}],
            "services": [{"id": "s1"}],
        }));
        let out = spliced(original, &r);
        assert_eq!(
            out,
            "\"server\":\n  threads: 2\n\"routes\":   # quoted\n- id: r1\n  uri: /a\nservices:\n- id: s1\n"
        );
        // A single-quoted key with an escaped quote is still one key.
        let original = "'it''s': 1\nroutes: []\n";
        assert_eq!(
            spliced(original, &r),
            "'it''s': 1\nroutes:\n- id: r1\n  uri: /a\n\nservices:\n- id: s1\n"
        );
    }

    #[test]
    fn inline_comment_after_top_level_key() {
        let original = "server: # process settings\n  threads: 2 # two\nroutes:    # managed by the Admin API\n  - id: old\nupstreams: # soon gone\n  - id: u1\n    nodes: {\"a:1\": 1}\n";
        let r = res(json!({"routes": [{"id": "r1", "uri": "/a"}]}));
        assert_eq!(
            spliced(original, &r),
            "server: # process settings\n  threads: 2 # two\nroutes:    # managed by the Admin API\n- id: r1\n  uri: /a\n"
        );
    }

    #[test]
    fn list_items_at_column_zero_belong_to_their_section() {
        let original = "routes:\n- id: r1\n  uri: /a\n# a comment between items\n- id: r2\n  uri: /b\nserver:\n  threads: 2\nupstreams:\n- id: u1\n  nodes:\n  - {host: a, port: 1, weight: 1}\n";
        let r = res(json!({"routes": [{"id": "r3", "uri": "/c"}]}));
        assert_eq!(
            spliced(original, &r),
            "routes:\n- id: r3\n  uri: /c\nserver:\n  threads: 2\n"
        );
    }

    #[test]
    fn value_on_the_key_line() {
        let original = "server: {threads: 2}\nroutes: []\nupstreams: [{id: u1, nodes: {\"a:1\": 1}}]  # inline\nservices: [\n  {id: s1}\n]\ncontrol: {listen: \"127.0.0.1:9090\"}\n";
        let r = res(json!({"routes": [{"id": "r1", "uri": "/a"}], "services": [{"id": "s2"}]}));
        assert_eq!(
            spliced(original, &r),
            "server: {threads: 2}\nroutes:\n- id: r1\n  uri: /a\nservices:\n- id: s2\ncontrol: {listen: \"127.0.0.1:9090\"}\n"
        );
    }

    #[test]
    fn crlf_file_keeps_crlf() {
        let original = "# Weir\r\nserver:\r\n  threads: 2   # two\r\n\r\nroutes:\r\n  - id: old\r\n\r\ncontrol:\r\n  listen: 127.0.0.1:9090\r\n";
        let r = res(json!({
            "routes": [{"id": "r1", "uri": "/a"}],
            "certificates": [{"id": "c1", "cert": PEM_CERT, "key": PEM_KEY}],
        }));
        let out = spliced(original, &r);
        assert!(out.starts_with("# Weir\r\nserver:\r\n  threads: 2   # two\r\n\r\nroutes:\r\n- id: r1\r\n  uri: /a\r\n\r\ncontrol:\r\n  listen: 127.0.0.1:9090\r\n\r\ncertificates:\r\n"));
        assert!(
            !out.replace("\r\n", "").contains('\n'),
            "a bare LF in:\n{out:?}"
        );
        let parsed = parse(&out);
        assert_eq!(parsed.get("certificates"), r.get("certificates"));
    }

    #[test]
    fn file_without_final_newline() {
        let r = res(json!({"routes": [{"id": "r1", "uri": "/a"}]}));
        // The last line is kept; a new section starts on a new line.
        assert_eq!(
            spliced("server:\n  threads: 2", &r),
            "server:\n  threads: 2\n\nroutes:\n- id: r1\n  uri: /a\n"
        );
        // The last section is replaced.
        assert_eq!(
            spliced("server:\n  threads: 2\nroutes:\n  - id: old", &r),
            "server:\n  threads: 2\nroutes:\n- id: r1\n  uri: /a\n"
        );
        // A bare key with nothing after it, at the very end.
        assert_eq!(
            spliced("server:\n  threads: 2\nroutes:", &r),
            "server:\n  threads: 2\nroutes:\n- id: r1\n  uri: /a\n"
        );
        // Removing the last section of such a file.
        assert_eq!(
            spliced("server:\n  threads: 2\nroutes:\n  - id: old", &Map::new()),
            "server:\n  threads: 2\n"
        );
        // Nothing to change: a kept last line stays without its newline.
        assert_eq!(
            spliced("server:\n  threads: 2", &Map::new()),
            "server:\n  threads: 2"
        );
    }

    #[test]
    fn empty_file_and_comment_only_file() {
        let r = res(json!({"routes": [{"id": "r1", "uri": "/a"}]}));
        assert_eq!(spliced("", &r), "routes:\n- id: r1\n  uri: /a\n");
        assert_eq!(spliced("", &Map::new()), "");
        assert_eq!(spliced("\n\n", &Map::new()), "\n\n");
        assert_eq!(
            spliced("# only\n# comments\n", &r),
            "# only\n# comments\n\nroutes:\n- id: r1\n  uri: /a\n"
        );
        assert_eq!(
            spliced("# no newline", &r),
            "# no newline\n\nroutes:\n- id: r1\n  uri: /a\n"
        );
        assert_eq!(
            spliced("# c\r\n", &r),
            "# c\r\n\r\nroutes:\r\n- id: r1\r\n  uri: /a\r\n"
        );
    }

    #[test]
    fn document_markers_bom_and_directives() {
        let r = res(json!({"routes": [{"id": "r1", "uri": "/a"}]}));
        let original = "%YAML 1.1\n--- # the document\nserver:\n  threads: 2\nroutes:\n- id: old\n... # end\n# trailing\n";
        assert_eq!(
            spliced(original, &r),
            "%YAML 1.1\n--- # the document\nserver:\n  threads: 2\nroutes:\n- id: r1\n  uri: /a\n... # end\n# trailing\n"
        );
        let original = "---\nserver:\n  threads: 2\n...\n";
        assert_eq!(
            spliced(original, &r),
            "---\nserver:\n  threads: 2\n\nroutes:\n- id: r1\n  uri: /a\n...\n"
        );
        // serde_yaml_ng (so the loader) rejects a byte-order mark today; should that change,
        // the mark is kept in front and the file still cut by lines.
        let original = "\u{feff}routes:\n- id: old\nserver:\n  threads: 2\n";
        match rewrite(original, &r) {
            Ok(out) => assert_eq!(
                out,
                "\u{feff}routes:\n- id: r1\n  uri: /a\nserver:\n  threads: 2\n"
            ),
            Err(e) => assert!(e.contains("not valid YAML"), "{e}"),
        }
        let keys: Vec<String> = layout(original)
            .unwrap()
            .sections
            .into_iter()
            .map(|s| s.key)
            .collect();
        assert_eq!(keys, ["routes", "server"]);
    }

    #[test]
    fn flow_style_top_level_falls_back() {
        let original = "# lost\n{server: {threads: 2}, routes: [{id: old}], control: {listen: \"127.0.0.1:9090\"}}\n";
        let r = res(json!({"routes": [{"id": "r1", "uri": "/a"}]}));
        let (out, in_place) = rewrite_inner(original, &r).unwrap();
        assert!(!in_place);
        assert_eq!(
            out,
            "server:\n  threads: 2\ncontrol:\n  listen: 127.0.0.1:9090\nroutes:\n- id: r1\n  uri: /a\n"
        );
        // The result is block style: the next rewrite edits it in place.
        assert_eq!(spliced(&out, &r), out);
        // CRLF is kept by the fallback too.
        let (out, in_place) = rewrite_inner("{server: {threads: 2}}\r\n", &r).unwrap();
        assert!(!in_place);
        assert_eq!(
            out,
            "server:\r\n  threads: 2\r\nroutes:\r\n- id: r1\r\n  uri: /a\r\n"
        );
        // Everything removed from a flow document.
        let (out, _) = rewrite_inner("{routes: [{id: old}]}", &Map::new()).unwrap();
        assert_eq!(out, "");
    }

    #[test]
    fn unusual_shapes_fall_back_and_stay_correct() {
        let r = res(json!({"routes": [{"id": "r1", "uri": "/a"}]}));
        let cases = [
            // A complex key.
            "? server\n: {threads: 2}\nroutes: []\n",
            // An anchor in a removed section used by a kept one.
            "upstreams:\n- &u {id: u1, nodes: {\"a:1\": 1}}\nserver:\n  extra: *u\n",
            // A flow value continued at column 0.
            "server: {threads: 2,\nlisten: [\"127.0.0.1:9080\"]}\nroutes: []\n",
            // A tagged top-level mapping.
            "--- !!map\nserver: {threads: 2}\n",
        ];
        for original in cases {
            let parsed = parse(original);
            let (out, in_place) = rewrite_inner(original, &r).unwrap();
            assert!(!in_place, "{original}");
            let got = parse(&out);
            assert_eq!(got.get("server"), parsed.get("server"), "{original}");
            assert_eq!(got.get("routes"), r.get("routes"));
            assert_eq!(got.len(), 2);
        }
    }

    #[test]
    fn pem_strings_round_trip_as_literal_blocks() {
        let original = "server:\n  threads: 2\n";
        let r = res(json!({
            "certificates": [{"id": "c1", "cert": PEM_CERT, "key": PEM_KEY, "snis": ["a.example"]}],
            "ca_certificates": [{"id": "ca", "cert": PEM_CERT.trim_end()}],
        }));
        let out = spliced(original, &r);
        assert!(
            out.contains("  cert: |\n    -----BEGIN CERTIFICATE-----\n"),
            "{out}"
        );
        assert!(
            out.contains("  key: |\n    -----BEGIN PRIVATE KEY-----\n"),
            "{out}"
        );
        assert!(
            out.contains("  cert: |-\n    -----BEGIN CERTIFICATE-----\n"),
            "{out}"
        );
        let parsed = parse(&out);
        assert_eq!(parsed.get("certificates"), r.get("certificates"));
        assert_eq!(parsed.get("ca_certificates"), r.get("ca_certificates"));
        let Some(Value::String(cert)) = parsed
            .get("certificates")
            .and_then(|c| c.get(0))
            .and_then(|c| c.get("cert"))
        else {
            panic!("no cert");
        };
        assert_eq!(cert, PEM_CERT);
    }

    #[test]
    fn strings_ending_in_blank_lines_do_not_swallow_the_gap() {
        // `|+` blocks end in blank lines; the blank line after the section must not join them.
        let original = "routes:\n- id: r1\n\nserver:\n  threads: 2\n\nupstreams:\n- id: u\n";
        for tail in ["\n\n", "\n\n\n", "\n"] {
            let r = res(json!({
                "routes": [{"id": "r1", "desc": format!("x{tail}")}],
                "upstreams": [{"id": "u", "desc": tail}],
                "consumers": [{"username": "a", "desc": tail}],
                "certificates": [{"id": "c", "cert": format!("{PEM_CERT}{tail}")}],
            }));
            let out = spliced(original, &r);
            assert!(out.contains("\nserver:\n  threads: 2\n"), "{out}");
        }
    }

    #[test]
    fn block_ending_in_blank_lines_then_removed_section() {
        let original = "routes:\n- id: r1\n\nservices:\n- id: s1\n\nserver:\n  threads: 2\n\nupstreams:\n- id: u\n";
        let r = res(json!({"routes": [{"id": "r1", "desc": "x\n\n"}]}));
        let out = spliced(original, &r);
        assert_eq!(
            out,
            "routes:\n- id: r1\n  desc: |+\n    x\n\nserver:\n  threads: 2\n"
        );
    }

    #[test]
    fn errors() {
        let r = res(json!({"routes": [{"id": "r1"}]}));
        assert!(rewrite("server: [", &r)
            .unwrap_err()
            .contains("not valid YAML"));
        assert!(rewrite("- a\n- b\n", &r)
            .unwrap_err()
            .contains("not a mapping"));
        assert!(rewrite("just text", &r)
            .unwrap_err()
            .contains("not a mapping"));
        assert!(rewrite("", &res(json!({"server": []})))
            .unwrap_err()
            .contains("not a resource kind"));
        assert!(rewrite("", &res(json!({"routes": {}})))
            .unwrap_err()
            .contains("must be an array"));
        // A null document is an empty one.
        assert_eq!(rewrite("~\n", &Map::new()).unwrap(), "");
        // A null resource section is replaced like any other.
        assert_eq!(
            spliced("routes:\nserver: {}\n", &r),
            "routes:\n- id: r1\nserver: {}\n"
        );
    }

    #[test]
    fn never_panics() {
        let r = res(json!({"routes": [{"id": "r1"}], "upstreams": [{"id": "u"}]}));
        let inputs = [
            "\u{feff}",
            "\r",
            "\r\n",
            "\n\r",
            ":",
            ": x",
            "-",
            "- ",
            "---",
            "...",
            "--- x",
            "'",
            "\"",
            "'a",
            "\"a\\",
            "\"a\\\"\": 1",
            "a: 'b",
            "#",
            "routes",
            "routes:x",
            "routes :",
            "é: ü\n",
            "\u{2028}: 1",
            "a:\t1",
            "\ta: 1",
            "  a: 1",
            "a: 1\n  b: 2",
            "a: |\n  x\nb: >\n  y\n",
            "[1, 2]",
            "{a: 1",
            "!!str x",
            "&a a: *a",
            "a: *b",
            "%YAML 1.2\n---\na: 1",
            "a: 1\n---\nb: 2\n",
            "routes: &r [{id: x}]\nupstreams: *r\n",
            "'': 1",
            "\"\": 1",
            "? a\n? b\n",
            "a: 1\r\nb: 2\nc: 3\r",
            "a: 1\n...\n---\nb: 2\n",
            "\u{0}",
        ];
        for input in inputs {
            let _ = rewrite(input, &r);
            let _ = rewrite(input, &Map::new());
            if let Ok(out) = rewrite(input, &r) {
                assert_eq!(parse(&out).get("routes"), r.get("routes"), "{input:?}");
            }
        }
    }

    /// Every combination of a few file shapes and resource sets: the result reads back as
    /// settings + resources, is edited in place, keeps the settings' text, and is a fixed point.
    #[test]
    fn property_idempotent_and_exact() {
        let settings = [
            (
                "server",
                "server:   # keep-me\n  threads: 2\n  listen: [ \"127.0.0.1:9080\" ]\n",
            ),
            (
                "control",
                "# keep-me above control\ncontrol: {listen: \"127.0.0.1:9090\"}  # keep-me\n",
            ),
            (
                "discovery",
                "discovery:\n  dns:\n    # keep-me\n    servers:\n    - \"1.1.1.1:53\"\n",
            ),
        ];
        let styles: [fn(&str) -> String; 5] = [
            |k| format!("{k}:\n  - id: a1\n    desc: old # dropped\n"),
            |k| format!("{k}:\n- id: a1\n"),
            |k| format!("{k}: []\n"),
            |k| format!("\"{k}\": # c\n  - {{id: a1}}\n"),
            |k| format!("# about {k}\n{k}:\n\n  - id: a1\n\n"),
        ];
        let values = [
            json!([{"id": "x1", "uri": "/x"}]),
            json!([{"id": "c1", "cert": PEM_CERT, "key": PEM_KEY}, {"id": "c2", "desc": "a\n\n"}]),
            json!([{"id": "c3", "cert": PEM_CERT}]),
            json!([{"id": 7, "desc": "\n", "n": 1.5, "tags": ["yes", "1e3", "", "- x", "#"]}]),
        ];
        // xorshift64: a fixed, reproducible sequence.
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut cases = 0;
        for mask in 0usize..64 {
            for style in 0..styles.len() {
                for crlf in [false, true] {
                    for final_newline in [true, false] {
                        // Settings and the resource kinds in `mask`, interleaved.
                        let mut text = String::from("# header\n\n");
                        for (i, kind) in RESOURCE_SECTIONS.iter().enumerate() {
                            if i % 2 == 0 {
                                if let Some((_, s)) = settings.get(i / 2) {
                                    text.push_str(s);
                                    text.push('\n');
                                }
                            }
                            if mask & (1 << i) != 0 {
                                text.push_str(&styles[(style + i) % styles.len()](kind));
                                if (i + style) % 2 == 0 {
                                    text.push('\n');
                                }
                            }
                        }
                        if crlf {
                            text = text.replace('\n', "\r\n");
                        }
                        if !final_newline {
                            while text.ends_with(['\r', '\n']) {
                                text.pop();
                            }
                        }
                        let before = parse(&text);
                        for _ in 0..8 {
                            // Each kind: one of `values`, an empty array or absent.
                            let mut r = Map::new();
                            for kind in RESOURCE_SECTIONS {
                                let c = next() % (values.len() as u64 + 2);
                                if let Some(v) = values.get(c as usize) {
                                    r.insert(kind.to_owned(), v.clone());
                                } else if c == values.len() as u64 {
                                    r.insert(kind.to_owned(), json!([]));
                                }
                            }
                            cases += 1;
                            let out = spliced(&text, &r);
                            let got = parse(&out);
                            let mut want = 0;
                            for (k, _) in settings {
                                assert_eq!(got.get(k), before.get(k));
                                want += 1;
                            }
                            for kind in RESOURCE_SECTIONS {
                                match r.get(kind) {
                                    Some(Value::Array(a)) if !a.is_empty() => {
                                        assert_eq!(got.get(kind), r.get(kind));
                                        want += 1;
                                    }
                                    _ => assert!(!got.contains_key(kind), "{kind} in:\n{out}"),
                                }
                            }
                            assert_eq!(got.len(), want);
                            // The settings' text is all there, comments included.
                            let lf = out.replace("\r\n", "\n");
                            for (_, s) in settings {
                                assert!(lf.contains(s.trim_end()), "{s} lost in:\n{out}");
                            }
                            assert!(lf.starts_with("# header\n"));
                            if crlf {
                                assert!(!out.replace("\r\n", "").contains('\n'), "{out:?}");
                            }
                        }
                    }
                }
            }
        }
        assert_eq!(cases, 64 * 5 * 2 * 2 * 8);
    }

    /// A directory removed when the test ends.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> TempDir {
            static N: AtomicU64 = AtomicU64::new(0);
            let dir = std::env::temp_dir().join(format!(
                "weir-writeback-{name}-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }

        fn entries(&self) -> Vec<String> {
            let mut names: Vec<String> = fs::read_dir(&self.0)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            names
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                let _ = fs::set_permissions(&self.0, fs::Permissions::from_mode(0o755));
            }
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn write_atomic_writes_and_replaces() {
        let dir = TempDir::new("write");
        let path = dir.0.join("weir.yaml");
        write_atomic(&path, "a: 1\n").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "a: 1\n");
        write_atomic(&path, "b: 2\n").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "b: 2\n");
        assert_eq!(dir.entries(), ["weir.yaml"]);
    }

    #[cfg(unix)]
    #[test]
    fn write_atomic_keeps_the_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = TempDir::new("mode");
        let path = dir.0.join("weir.yaml");
        fs::write(&path, "old\n").unwrap();
        for mode in [0o640, 0o600, 0o444] {
            fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
            write_atomic(&path, "new\n").unwrap();
            let meta = fs::metadata(&path).unwrap();
            assert_eq!(meta.permissions().mode() & 0o7777, mode);
            assert_eq!(fs::read_to_string(&path).unwrap(), "new\n");
        }
        assert_eq!(dir.entries(), ["weir.yaml"]);
    }

    #[cfg(unix)]
    #[test]
    fn write_atomic_through_a_symlink() {
        let dir = TempDir::new("link");
        let real = dir.0.join("real.yaml");
        let link = dir.0.join("weir.yaml");
        fs::write(&real, "old\n").unwrap();
        std::os::unix::fs::symlink("real.yaml", &link).unwrap();
        write_atomic(&link, "new\n").unwrap();
        assert!(fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(fs::read_to_string(&real).unwrap(), "new\n");
        assert_eq!(dir.entries(), ["real.yaml", "weir.yaml"]);
    }

    #[test]
    fn write_atomic_onto_a_directory_fails_cleanly() {
        let dir = TempDir::new("isdir");
        let path = dir.0.join("weir.yaml");
        fs::create_dir(&path).unwrap();
        fs::write(path.join("inside"), "x").unwrap();
        assert!(write_atomic(&path, "new\n").is_err());
        assert!(path.is_dir());
        assert_eq!(fs::read_to_string(path.join("inside")).unwrap(), "x");
        assert_eq!(dir.entries(), ["weir.yaml"]);
    }

    #[cfg(unix)]
    #[test]
    fn write_atomic_in_a_read_only_directory_fails_cleanly() {
        use std::os::unix::fs::PermissionsExt;
        let dir = TempDir::new("rodir");
        let path = dir.0.join("weir.yaml");
        fs::write(&path, "old\n").unwrap();
        fs::set_permissions(&dir.0, fs::Permissions::from_mode(0o555)).unwrap();
        // A privileged process (root in a container) writes there anyway: nothing to test.
        let privileged = fs::write(dir.0.join("probe"), "").is_ok();
        if privileged {
            let _ = fs::remove_file(dir.0.join("probe"));
        } else {
            assert!(write_atomic(&path, "new\n").is_err());
            assert_eq!(fs::read_to_string(&path).unwrap(), "old\n");
            assert_eq!(dir.entries(), ["weir.yaml"]);
        }
        // Where no file can be created, whoever we are.
        let err = write_atomic(Path::new("/proc/weir-writeback-test.yaml"), "x").unwrap_err();
        assert_ne!(err.kind(), io::ErrorKind::Other, "{err}");
        assert!(!Path::new("/proc/weir-writeback-test.yaml").exists());
        // In a directory that does not exist.
        let missing = dir.0.join("missing").join("weir.yaml");
        assert!(write_atomic(&missing, "x").is_err());
        assert!(!dir.0.join("missing").exists());
    }
}
