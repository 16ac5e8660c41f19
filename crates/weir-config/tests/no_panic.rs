//! Nothing in an input file may make validation panic: every example, mutated line by line
//! (deleted, or its value replaced by a hostile one), must validate or fail with errors.

use std::path::Path;

const HOSTILE: &[&str] = &[
    "-1",
    "0",
    "1.5",
    "1e309",
    "99999999999999999999999",
    "\"\"",
    "\"::1\"",
    "\"[::1\"",
    "\"a:b:c\"",
    "\"${\"",
    "null",
    "true",
    "[]",
    "{}",
    "[1, [2], {a: 3}]",
    "\"\\u0000\"",
    "&a [*a]",
    "!!binary aGVsbG8=",
];

fn check(name: &str, text: &str) {
    let r = std::panic::catch_unwind(|| weir_config::parse_yaml(text).map(|_| ()));
    assert!(r.is_ok(), "{name}: validation panicked on:\n{text}");
}

#[test]
fn mutated_examples_never_panic() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../conf/examples");
    let mut cases = 0;
    for entry in std::fs::read_dir(dir).expect("examples") {
        let path = entry.expect("entry").path();
        // The examples, not the files beside them (etcd-tls/ holds their PEM files).
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("read");
        let lines: Vec<&str> = text.lines().collect();
        let name = path.display().to_string();
        for i in 0..lines.len() {
            let mut deleted = lines.clone();
            deleted.remove(i);
            check(&name, &deleted.join("\n"));
            cases += 1;
            let Some(colon) = lines[i].find(": ") else {
                continue;
            };
            if lines[i].contains("BEGIN") {
                continue;
            }
            for h in HOSTILE {
                let mut m = lines.clone();
                let replaced = format!("{}: {h}", &lines[i][..colon]);
                m[i] = &replaced;
                check(&name, &m.join("\n"));
                cases += 1;
            }
        }
    }
    assert!(cases > 1000, "only {cases} cases");
}

#[test]
fn arbitrary_documents_never_panic() {
    for text in [
        "", "---", "[]", "42", "\"x\"", "routes", "routes: 5", "upstreams: [5, null, [], {}]",
        "routes: [{id: r, uri: /, upstream: {nodes: {\"[::1]:99999999\": 1}}}]",
        "upstreams: [{id: u, nodes: {\":\": 1, \"]\": 1, \"[\": 1, \"[]:\": 1, \"a:\": 1}}]",
        "upstreams: [{id: u, type: chash, key: \"$\", nodes: {}}]",
        "upstreams: [{id: u, type: chash, hash_on: vars_combinations, key: \"${ ?? }\", nodes: {}}]",
        "upstreams: [{id: u, timeout: {connect: 1e308, send: 1e-300, read: 5}, nodes: {}}]",
        "certificates: [{id: c, cert: \"-----BEGIN CERTIFICATE-----\", key: 5}]",
        "{a: 1, a: 2}",
        "? [complex, key]\n: value\n",
    ] {
        check("inline", text);
    }
}
