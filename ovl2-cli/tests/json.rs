//! Issue 14 items 1 and 2: every command's `--json` output matches docs/cli-json.schema.json
//! (documented in docs/cli-json.md), keys are snake_case outside Docker's `metadata`, errors
//! are one JSON object on stderr, and every command exits 0 on success, 1 on failure and 2 on
//! a usage error.

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde_json::Value;

mod common;
use common::*;

/// The schema file, parsed.
fn schema() -> Value {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/cli-json.schema.json");
    serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap()
}

/// The keywords [`validate`] understands; the schema may use no others, so nothing in it is
/// silently unchecked.
const KEYWORDS: &[&str] =
    &["type", "properties", "required", "additionalProperties", "items", "enum", "minimum", "$ref", "description"];

fn keywords_known(s: &Value, at: &str) {
    let Some(o) = s.as_object() else { panic!("{at}: a schema is an object") };
    for (k, v) in o {
        assert!(KEYWORDS.contains(&k.as_str()), "{at}: keyword {k} is not checked by this test");
        match k.as_str() {
            "properties" => v.as_object().unwrap().iter().for_each(|(p, s)| keywords_known(s, &format!("{at}.{p}"))),
            "items" => keywords_known(v, &format!("{at}[]")),
            "additionalProperties" if v.is_object() => keywords_known(v, &format!("{at}.*")),
            _ => {}
        }
    }
}

/// A small JSON Schema (2020-12 subset) checker: returns what does not match, with its path.
fn validate(root: &Value, s: &Value, v: &Value, at: &str, errs: &mut Vec<String>) {
    if let Some(r) = s.get("$ref").and_then(Value::as_str) {
        let name = r.strip_prefix("#/$defs/").expect("local refs only");
        return validate(root, &root["$defs"][name], v, at, errs);
    }
    if let Some(t) = s.get("type") {
        let types: Vec<&str> = match t {
            Value::String(t) => vec![t.as_str()],
            Value::Array(ts) => ts.iter().map(|t| t.as_str().unwrap()).collect(),
            _ => panic!("bad type in schema"),
        };
        let is = |t: &str| match t {
            "object" => v.is_object(),
            "array" => v.is_array(),
            "string" => v.is_string(),
            "integer" => v.is_u64() || v.is_i64(),
            "number" => v.is_number(),
            "boolean" => v.is_boolean(),
            "null" => v.is_null(),
            _ => panic!("unknown type {t}"),
        };
        if !types.iter().any(|t| is(t)) {
            errs.push(format!("{at}: {v} is not of type {types:?}"));
            return;
        }
    }
    if let Some(e) = s.get("enum").and_then(Value::as_array) {
        if !e.contains(v) {
            errs.push(format!("{at}: {v} is not one of {e:?}"));
        }
    }
    if let (Some(m), Some(n)) = (s.get("minimum").and_then(Value::as_i64), v.as_i64()) {
        if n < m {
            errs.push(format!("{at}: {n} is below {m}"));
        }
    }
    if let Some(o) = v.as_object() {
        let props = s.get("properties").and_then(Value::as_object);
        for r in s.get("required").and_then(Value::as_array).into_iter().flatten() {
            if !o.contains_key(r.as_str().unwrap()) {
                errs.push(format!("{at}: required key {r} is missing"));
            }
        }
        for (k, x) in o {
            match (props.and_then(|p| p.get(k)), s.get("additionalProperties")) {
                (Some(ps), _) => validate(root, ps, x, &format!("{at}.{k}"), errs),
                (None, Some(Value::Bool(false))) => errs.push(format!("{at}: key {k} is not documented")),
                (None, Some(extra)) if extra.is_object() => validate(root, extra, x, &format!("{at}.{k}"), errs),
                (None, _) => {}
            }
        }
    }
    if let (Some(items), Some(a)) = (s.get("items"), v.as_array()) {
        for (i, x) in a.iter().enumerate() {
            validate(root, items, x, &format!("{at}[{i}]"), errs);
        }
    }
}

/// Keys are snake_case everywhere except inside an `inspect` entry's `metadata` (Docker's names).
fn snake_keys(v: &Value, at: &str) {
    match v {
        Value::Object(o) => {
            for (k, x) in o {
                let snake = k.chars().next().is_some_and(|c| c.is_ascii_lowercase())
                    && k.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
                assert!(snake, "{at}: key {k:?} is not snake_case");
                if k != "metadata" {
                    snake_keys(x, &format!("{at}.{k}"));
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| snake_keys(x, at)),
        _ => {}
    }
}

/// Checks `v` against `$defs/<def>`, panicking with every mismatch.
fn check_against(root: &Value, def: &str, v: &Value) {
    assert!(root["$defs"].get(def).is_some(), "the schema has no $defs/{def}");
    let mut errs = Vec::new();
    validate(root, &root["$defs"][def], v, def, &mut errs);
    assert!(errs.is_empty(), "{def} does not match the schema:\n{}\n{v:#}", errs.join("\n"));
    snake_keys(v, def);
}

/// The commands `ovl2 --help` lists, with `container`'s subcommands spelled out.
fn commands(h: &Home) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (prefix, help) in [("", h.ok(&["--help"])), ("container ", h.ok(&["container", "--help"]))] {
        let section = help.split("Commands:\n").nth(1).unwrap();
        for l in section.lines().take_while(|l| l.starts_with("  ")) {
            let name = l.split_whitespace().next().unwrap();
            if !["help", "container", "completions", "man"].contains(&name) {
                out.insert(format!("{prefix}{name}"));
            }
        }
    }
    out
}

#[test]
fn the_schema_uses_only_checked_keywords_and_the_validator_rejects_bad_shapes() {
    let root = schema();
    for (name, def) in root["$defs"].as_object().unwrap() {
        keywords_known(def, name);
    }
    // The checker itself catches what it must: the old `status` and `inspect` shapes.
    let mut errs = Vec::new();
    validate(&root, &root["$defs"]["cmd_status"], &serde_json::json!({"Layers": "0"}), "status", &mut errs);
    assert!(errs.iter().any(|e| e.contains("Layers")) && errs.iter().any(|e| e.contains("missing")), "{errs:?}");
    let mut errs = Vec::new();
    let old_inspect = serde_json::json!({"UpperDir": "/x"});
    validate(&root, &root["$defs"]["cmd_inspect"], &old_inspect, "inspect", &mut errs);
    assert!(!errs.is_empty());
    let mut errs = Vec::new();
    let old_change = serde_json::json!([{"path": "/a", "kind": "Add"}]);
    validate(&root, &root["$defs"]["cmd_changes"], &old_change, "changes", &mut errs);
    assert!(!errs.is_empty());
}

/// Every command, run with `--json` on a real store: its stdout matches its schema; the same
/// command against a home that is not a store fails with exit 1 (check: 2) and one JSON error
/// line; and an unknown flag is a usage error, exit 2, also as JSON.
#[test]
fn every_command_json_matches_the_documented_schema_and_exit_codes_are_distinct() {
    if !require_root() {
        return;
    }
    let root = schema();
    let h = Home::new("json");
    // A home that is a regular file: every command that opens a store fails on it.
    let bad = Home::new("json-bad");
    std::fs::write(bad.home(), "not a store").unwrap();
    let tar = h.tarball("l.tar", &[("etc/hostname", "box\n"), ("gone", "x")], Some("gzip"));
    let tar2 = h.tarball("l2.tar", &[(".wh.gone", ""), ("new", "n")], None);
    let out = h.scratch().join("out.tar");
    let (tar, tar2, out) = (tar.to_str().unwrap(), tar2.to_str().unwrap(), out.to_str().unwrap());
    // In order: each row is the command's name, its arguments, and the schema it must match.
    let rows: Vec<(&str, Vec<&str>)> = vec![
        ("init", vec!["init"]),
        ("create", vec!["create", "b"]),
        ("create", vec!["create", "app", "--parent", "b"]),
        ("apply", vec!["apply", "b", tar]),
        ("apply", vec!["apply", "app", tar2]),
        ("import", vec!["import", tar, tar2, "--top", "img"]),
        ("create", vec!["create", "c", "--parent", "app", "--rw"]),
        ("ls", vec!["ls"]),
        ("inspect", vec!["inspect", "b", "c"]),
        ("status", vec!["status"]),
        ("du", vec!["du"]),
        ("du", vec!["du", "b", "app"]),
        ("diff", vec!["diff", "app", "-o", out]),
        ("changes", vec!["changes", "app"]),
        ("diff-size", vec!["diff-size", "app"]),
        ("mount", vec!["mount", "c"]),
        ("mounts", vec!["mounts"]),
        ("umount", vec!["umount", "c"]),
        ("container create", vec!["container", "create", "ctr", "--image", "img"]),
        ("mount", vec!["mount", "ctr"]),
        ("cleanup", vec!["cleanup"]),
        ("container rm", vec!["container", "rm", "ctr"]),
        ("check", vec!["check"]),
        ("check", vec!["check", "--repair"]),
        ("rm", vec!["rm", "c", "img"]),
        ("rm", vec!["rm", "-r", "b", "img-1"]),
    ];
    let mut covered = BTreeSet::new();
    for (name, args) in &rows {
        let def = format!("cmd_{}", name.replace([' ', '-'], "_"));
        let o = h.run(&[args.as_slice(), &["--json"]].concat());
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(0), "ovl2 {args:?} --json: {stderr}");
        let v: Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
            panic!("ovl2 {args:?} --json printed no JSON ({e}): {}", String::from_utf8_lossy(&o.stdout))
        });
        check_against(&root, &def, &v);
        covered.insert(name.to_string());

        // The same command where it cannot work: exit 1 (check: 2), one JSON line on stderr.
        let o = bad.run(&[args.as_slice(), &["--json"]].concat());
        let want = if *name == "check" { 2 } else { 1 };
        assert_eq!(o.status.code(), Some(want), "ovl2 {args:?} --json on a non-store");
        assert!(o.stdout.is_empty(), "a failure prints nothing on stdout: {}", String::from_utf8_lossy(&o.stdout));
        let err = String::from_utf8(o.stderr).unwrap();
        assert_eq!(err.lines().count(), 1, "{err}");
        let e: Value = serde_json::from_str(&err).unwrap();
        check_against(&root, "error", &e);
        // Without --json the same failure is one "ovl2: " line.
        let o = bad.run(args);
        assert_eq!(o.status.code(), Some(want));
        assert!(String::from_utf8_lossy(&o.stderr).starts_with("ovl2: "));

        // A usage error: exit 2, for every command, as JSON with --json.
        let o = h.run(&[args.as_slice(), &["--no-such-flag", "--json"]].concat());
        assert_eq!(o.status.code(), Some(2), "ovl2 {args:?} --no-such-flag");
        let e: Value = serde_json::from_slice(&o.stderr).unwrap();
        check_against(&root, "error", &e);
        assert_eq!(e["error"]["kind"], "usage");
        assert_eq!(h.run(&[args.as_slice(), &["--no-such-flag"]].concat()).status.code(), Some(2));
    }
    assert_eq!(covered, commands(&h), "every command of --help is run with --json above");
    // The two text generators: 0, 1 on a failed write, 2 on a usage error (also --json).
    assert_eq!(h.run(&["completions", "bash"]).status.code(), Some(0));
    assert_eq!(h.run(&["man", "--out-dir", "/proc/version/x"]).status.code(), Some(1));
    assert_eq!(h.run(&["completions", "nosuchshell"]).status.code(), Some(2));
    assert_eq!(h.run(&["man", "--json"]).status.code(), Some(2));
    let o = h.run(&["--json"]);
    assert_eq!(o.status.code(), Some(2), "no command is a usage error");
    let e: Value = serde_json::from_slice(&o.stderr).unwrap();
    assert_eq!(e["error"]["message"], "'ovl2' requires a subcommand but one was not provided");
    assert_eq!(h.ok(&["ls", "--json"]).trim(), "[]");
}

/// The shapes carry what the issue asked for: typed status values, the id in `apply`, the
/// stats in a meaningful order in `import`, Docker's names only under `metadata`, changes
/// and check kinds both snake_case, and the errors' kind and errno.
#[test]
fn json_shapes_are_typed_and_ordered() {
    if !require_root() {
        return;
    }
    let h = Home::new("json-shapes");
    let tar = h.tarball("a.tar", &[("f", "x")], None);
    let tar2 = h.tarball("b.tar", &[("f", "longer")], None);
    let (tar, tar2) = (tar.to_str().unwrap(), tar2.to_str().unwrap());
    let v: Value = serde_json::from_str(&h.ok(&["import", tar, tar2, "--top", "t", "--json"])).unwrap();
    assert_eq!((v[0]["id"].as_str(), v[0]["parent"].as_str()), (Some("t-1"), None));
    assert_eq!((v[1]["id"].as_str(), v[1]["parent"].as_str()), (Some("t"), Some("t-1")));
    let raw = h.ok(&["status", "--json"]);
    let st: Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(st["layers"], 2);
    assert!(st["supports_d_type"].is_boolean() && st["max_depth"].is_u64());
    assert!(raw.find("backing_filesystem").unwrap() < raw.find("layers").unwrap(), "status keeps its order");
    h.ok(&["create", "x"]);
    let out = h.ok(&["apply", "x", tar, "--json"]);
    let keys: Vec<&str> = out.lines().filter_map(|l| l.trim().split('"').nth(1)).collect();
    assert_eq!(&keys[..5], ["id", "parent", "size", "digest", "tar_bytes"], "{out}");
    let out = h.ok(&["import", tar, "--top", "u", "--json"]);
    let keys: Vec<&str> = out.lines().filter_map(|l| l.trim().split('"').nth(1)).collect();
    assert_eq!(&keys[..3], ["id", "parent", "size"], "import is not alphabetical: {out}");
    let ins: Value = serde_json::from_str(&h.ok(&["inspect", "t", "--json"])).unwrap();
    let home = h.home().display().to_string();
    assert_eq!(ins[0]["metadata"]["LowerDir"], format!("{home}/t-1/diff"));
    assert_eq!(ins[0]["id"], "t");
    let ch: Value = serde_json::from_str(&h.ok(&["changes", "t", "--json"])).unwrap();
    assert_eq!(ch, serde_json::json!([{"path": "/f", "kind": "modify"}]));
    let o = h.run(&["inspect", "nope", "--json"]);
    assert_eq!(o.status.code(), Some(1));
    let e: Value = serde_json::from_slice(&o.stderr).unwrap();
    assert_eq!(e["error"]["kind"], "not_found");
    assert_eq!(e["error"]["errno"], 2);
    assert_eq!(e["error"]["message"], "layer \"nope\" does not exist");
}
