#[cfg(test)]
mod tests {
    #[test]
    fn explore() {
        let cases = [
            "\u{2028}", "a\u{2028}b\n", "\u{85}", "x\u{85}y", "\u{2029}", "\t", "\0", " ", "- x", "null", "~", "'", "\"", ": ", "#", "\u{feff}", "\u{feff}a\nb", "a\u{7f}", "\u{1b}[0m", "\u{fffe}", "\u{10ffff}",
            "a\n\u{0}\n", "x\n\u{2028}\n", "end \n", "\r", "a\rb\n",
        ];
        for c in cases {
            let mut m = serde_json::Map::new();
            m.insert("certificates".into(), serde_json::json!([{"cert": c, c: 1}]));
            let y = serde_yaml_ng::to_string(&m).unwrap();
            let back: Result<serde_json::Value, _> = serde_yaml_ng::from_str(&y);
            let ok = back.as_ref().ok() == Some(&serde_json::Value::Object(m.clone()));
            if !ok { println!("{c:?} =>\n{y:?}\n{back:?}\n"); }
        }
    }
}
