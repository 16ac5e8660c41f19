//! Golden tests of `weir -t`: every `conf/examples/*.yaml` (and `conf/weir.yaml`) validates;
//! every `conf/invalid/*.yaml` fails with exactly the lines kept beside it in `*.err`.
//!
//! Set `WEIR_BLESS=1` to rewrite the `.err` files from the current output (then review the diff).

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn weir_t(file: &Path) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["-t", "-c"])
        .arg(file)
        .env("RUST_LOG", "off")
        .output()
        .expect("run weir");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn yaml_files(dir: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(repo().join(dir))
        .expect("read dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    v.sort();
    v
}

#[test]
fn examples_validate() {
    let mut files = yaml_files("conf/examples");
    assert!(files.len() >= 10, "expected an example per feature area");
    files.push(repo().join("conf/weir.yaml"));
    for f in files {
        let (ok, stdout, stderr) = weir_t(&f);
        assert!(ok, "{} failed validation:\n{stderr}", f.display());
        assert_eq!(stdout, "configuration OK\n", "{}", f.display());
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
        assert!(
            summary.ends_with(&format!(": {n} error{plural}")),
            "{}: summary {summary:?} does not count {n} errors",
            f.display()
        );
        let got = lines.iter().map(|l| format!("{l}\n")).collect::<String>();
        let golden = f.with_extension("err");
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
        stderr.contains("warning: admin.listen: the Admin API listens on 0.0.0.0:9180"),
        "{stderr}"
    );
    assert!(
        stderr.contains("warning: upstreams[0] (id \"u1\"): tls_verify"),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
