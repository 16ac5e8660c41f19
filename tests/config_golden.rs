//! Golden tests of `weir -t`: every `conf/examples/*.yaml` (and `conf/weir.yaml`) validates;
//! every `conf/invalid/*.yaml` fails with exactly the lines kept beside it in `*.err`.
//!
//! Set `WEIR_BLESS=1` to rewrite the `.err` files from the current output (then review the diff).

use std::path::{Path, PathBuf};
use std::process::Command;

/// The repository root: the manifest directory of the root package these tests belong to.
fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `weir -t -c FILE`, run from the repository root (so messages name `conf/...` paths).
fn weir_t(file: &Path) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["-t", "-c"])
        .arg(file)
        .current_dir(repo())
        .env("RUST_LOG", "off")
        .output()
        .expect("run weir");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The `.yaml` files of `dir`, as paths relative to the repository root.
fn yaml_files(dir: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(repo().join(dir))
        .expect("read dir")
        .map(|e| Path::new(dir).join(e.expect("entry").file_name()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    v.sort();
    v
}

#[test]
fn examples_validate() {
    let mut files = yaml_files("conf/examples");
    assert!(files.len() >= 10, "expected an example per feature area");
    files.push(PathBuf::from("conf/weir.yaml"));
    for f in files {
        let (ok, stdout, stderr) = weir_t(&f);
        assert!(ok, "{} failed validation:\n{stderr}", f.display());
        assert_eq!(stdout, "configuration OK\n", "{}", f.display());
        // Examples are meant to be copied: they carry no warning either.
        assert_eq!(stderr, "", "{}", f.display());
    }
}

#[test]
fn invalid_files_fail_with_golden_errors() {
    let files = yaml_files("conf/invalid");
    assert!(files.len() >= 30, "expected at least 30 invalid cases");
    let bless = std::env::var_os("WEIR_BLESS").is_some();
    let mut failures = Vec::new();
    for f in files {
        let (ok, stdout, stderr) = weir_t(&f);
        assert!(!ok, "{} unexpectedly validated", f.display());
        assert!(stdout.is_empty(), "{}: nothing on stdout", f.display());
        // The last line summarises: "<file>: N error(s)".
        let mut lines: Vec<&str> = stderr.lines().collect();
        let summary = lines.pop().unwrap_or_default();
        let n = lines.len();
        let plural = if n == 1 { "" } else { "s" };
        assert_eq!(
            summary,
            format!("{}: {n} error{plural}", f.display()),
            "{}: the summary counts every error",
            f.display()
        );
        // The golden file is what the user sees: every error line, then the summary.
        let got = stderr;
        let golden = repo().join(f.with_extension("err"));
        if bless {
            std::fs::write(&golden, &got).expect("write golden");
            continue;
        }
        let want = std::fs::read_to_string(&golden).unwrap_or_default();
        if got != want {
            failures.push(format!("{}:\n--- want\n{want}--- got\n{got}", f.display()));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn missing_file_is_a_clear_error() {
    let (ok, _, stderr) = weir_t(Path::new("/nonexistent/weir.yaml"));
    assert!(!ok);
    assert!(
        stderr.contains("cannot read /nonexistent/weir.yaml"),
        "{stderr}"
    );
}

#[test]
fn warnings_do_not_fail_validation() {
    let dir = std::env::temp_dir().join(format!("weir-golden-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    let f = dir.join("warn.yaml");
    std::fs::write(
        &f,
        "admin: {listen: \"0.0.0.0:9180\", api_key: k}\nupstreams:\n  - {id: u1, tls_verify: true, nodes: {\"127.0.0.1:80\": 1}}\n",
    )
    .expect("write");
    let (ok, stdout, stderr) = weir_t(&f);
    assert!(ok, "{stderr}");
    assert_eq!(stdout, "configuration OK\n");
    assert!(
        stderr.contains(
            "warning: admin.listen (line 1, column 9): the Admin API listens on 0.0.0.0:9180"
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains("warning: upstreams[0] (id \"u1\") (line 3, column 6): tls_verify"),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// `weir -t` on `text` written to a scratch file: (success, stdout, stderr).
fn weir_t_text(name: &str, text: &str) -> (bool, String, String) {
    let dir = std::env::temp_dir().join(format!("weir-golden-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    let f = dir.join("weir.yaml");
    std::fs::write(&f, text).expect("write");
    let out = weir_t(&f);
    let _ = std::fs::remove_dir_all(&dir);
    out
}

#[test]
fn a_file_without_routes_is_valid_with_a_warning() {
    let (ok, stdout, stderr) = weir_t_text("noroutes", "server: {threads: 1}\n");
    assert!(ok, "{stderr}");
    assert_eq!(stdout, "configuration OK\n");
    assert_eq!(stderr, "warning: no routes: every request will get 404\n");
    // Resources that arrive through the Admin API are not expected in the file.
    let (ok, _, stderr) = weir_t_text("noroutes-admin", "admin: {api_key: k}\n");
    assert!(ok, "{stderr}");
    assert_eq!(stderr, "");
}

#[test]
fn an_upstream_nothing_uses_is_valid_with_a_warning() {
    let text = "routes:\n  - {id: r, uri: /, upstream_id: used}\nupstreams:\n  - id: used\n    nodes: {\"127.0.0.1:1\": 1}\n  - id: spare\n    nodes: {\"127.0.0.1:2\": 1}\n";
    let (ok, stdout, stderr) = weir_t_text("unused", text);
    assert!(ok, "{stderr}");
    assert_eq!(stdout, "configuration OK\n");
    assert_eq!(
        stderr,
        "warning: upstreams[1] (id \"spare\") (line 6, column 5): not used by any route or service\n"
    );
}

#[test]
fn an_error_names_the_path_the_line_and_the_value() {
    let text = "routes:\n  - id: demo\n    uri: /demo/*\n    upstream_id: demo\nupstreams:\n  - id: demo\n    nodes: {\"127.0.0.1:1\": 1}\n    keepalive_pool: {size: 0}\n    retires: 1\n";
    let (ok, _, stderr) = weir_t_text("located", text);
    assert!(!ok);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(
        lines[..2],
        [
            "upstreams[0] (id \"demo\").keepalive_pool.size (line 8, column 22): must be >= 1, got 0",
            "upstreams[0] (id \"demo\").retires (line 9, column 5): unknown field",
        ],
        "{stderr}"
    );
    assert!(lines[2].ends_with("weir.yaml: 2 errors"), "{stderr}");
}
