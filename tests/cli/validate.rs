//! `huxley validate`, `huxley schema` and `huxley completions`.

use crate::fixtures::{blessing, compare_or_bless};
use crate::fixtures::{files, report};
use crate::support::{Test, root};

/// Runs every fixture of `dir` and compares its diagnostics with the
/// `.stderr` file beside it.
fn fixtures(dir: &str, expected_code: i32) -> Vec<String> {
    let dir_path = root().join(dir);
    let mut failures = Vec::new();
    let tomls = files(&dir_path, "toml");
    assert!(!tomls.is_empty(), "no fixtures in {dir}");
    for toml in &tomls {
        let name = toml.file_stem().and_then(|s| s.to_str()).expect("name");
        let relative = format!("{dir}/{name}.toml");
        let out = Test::new(&["validate", "--color", "never", "-f", &relative]).run();
        if out.code != expected_code {
            failures.push(format!(
                "{relative}: exit {} (expected {expected_code})\n{}",
                out.code, out.stderr
            ));
            continue;
        }
        let location = format!("{relative}:");
        if !out.stderr.contains(&location) {
            failures.push(format!(
                "{relative}: no file:line:column in\n{}",
                out.stderr
            ));
        }
        if let Err(diff) = compare_or_bless(&toml.with_extension("stderr"), &out.stderr) {
            failures.push(diff);
        }
    }
    if blessing() {
        for stale in files(&dir_path, "stderr") {
            if !stale.with_extension("toml").exists() {
                std::fs::remove_file(&stale).expect("remove stale snapshot");
            }
        }
    }
    failures
}

#[test]
fn every_invalid_fixture_exits_1_with_its_diagnostic() {
    report(fixtures("tests/invalid", 1));
}

#[test]
fn warnings_do_not_fail_validation() {
    report(fixtures("tests/warnings", 0));
}

/// Counts the `error:` headers in rendered diagnostics.
fn errors(stderr: &str) -> usize {
    stderr.lines().filter(|l| l.starts_with("error:")).count()
}

#[test]
fn three_independent_mistakes_give_three_diagnostics() {
    let out = Test::new(&["validate", "-f", "tests/invalid/three-mistakes.toml"]).run();
    out.code(1);
    assert_eq!(errors(&out.stderr), 3, "{}", out.stderr);
    for place in [":3:8", ":12:11", ":16:1"] {
        assert!(
            out.stderr.contains(place),
            "missing {place} in\n{}",
            out.stderr
        );
    }
    assert!(
        out.stderr
            .ends_with("tests/invalid/three-mistakes.toml: 3 errors\n")
    );
}

#[test]
fn secrets_written_in_plain_text_are_never_echoed() {
    for (fixture, secret) in [
        ("tests/invalid/secret-not-reference.toml", "hunter2"),
        (
            "tests/invalid/private-ssh-key.toml",
            "b3BlbnNzaC1rZXktdjEAAAAABG5vbmU",
        ),
        (
            "tests/warnings/env-looks-secret.toml",
            "tok_live_0123456789",
        ),
    ] {
        let source = std::fs::read_to_string(root().join(fixture)).expect("fixture");
        assert!(
            source.contains(secret),
            "the fixture {fixture} must hold the secret"
        );
        for format in ["text", "github", "sarif"] {
            let out = Test::new(&["validate", "--format", format, "-f", fixture]).run();
            assert!(
                !out.stderr.contains(secret) && !out.stdout.contains(secret),
                "{fixture} echoed its secret as {format}:\n{}{}",
                out.stdout,
                out.stderr
            );
        }
    }
}

/// For CI: GitHub Actions annotations, one per problem, where it is.
#[test]
fn github_annotations_name_every_problem_where_it_is() {
    let fixture = "tests/invalid/three-mistakes.toml";
    let out = Test::new(&["validate", "--format", "github", "-f", fixture]).run();
    out.code(1);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{}", out.stdout);
    for (line, (row, col)) in lines.iter().zip([(3, 8), (12, 11), (16, 1)]) {
        assert!(
            line.starts_with(&format!("::error file={fixture},line={row},col={col},")),
            "{line}"
        );
    }
    assert!(
        out.stderr.ends_with(&format!("{fixture}: 3 errors\n")),
        "{}",
        out.stderr
    );
    // A warning is an annotation too, and fails nothing.
    let out = Test::new(&[
        "validate",
        "--format",
        "github",
        "-f",
        "tests/warnings/env-looks-secret.toml",
    ])
    .run();
    out.code(0);
    assert!(out.stdout.starts_with("::warning file="), "{}", out.stdout);
}

/// For code scanning: a SARIF log with a result and a region per problem
/// (scripts/check-artifacts.sh checks it against the SARIF 2.1.0 schema).
#[test]
fn a_sarif_log_has_every_problem_with_its_region() {
    let fixture = "tests/invalid/three-mistakes.toml";
    let out = Test::new(&["validate", "--format", "sarif", "-f", fixture]).run();
    out.code(1);
    let log: serde_json::Value = serde_json::from_str(&out.stdout).expect("SARIF is JSON");
    assert_eq!(log["version"], "2.1.0");
    let results = log["runs"][0]["results"].as_array().expect("results");
    let places: Vec<(u64, u64)> = results
        .iter()
        .map(|r| {
            let region = &r["locations"][0]["physicalLocation"]["region"];
            (
                region["startLine"].as_u64().unwrap_or(0),
                region["startColumn"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(places, [(3, 8), (12, 11), (16, 1)], "{}", out.stdout);
    assert!(results.iter().all(|r| r["level"] == "error"));
    assert_eq!(
        results[0]["locations"][0]["physicalLocation"]["artifactLocation"]["uri"],
        fixture
    );
    // A valid file: an empty log, and exit 0.
    let out = Test::new(&[
        "validate",
        "--format",
        "sarif",
        "-f",
        "examples/blog/huxley.toml",
    ])
    .run();
    out.code(0);
    let log: serde_json::Value = serde_json::from_str(&out.stdout).expect("SARIF is JSON");
    assert_eq!(log["runs"][0]["results"], serde_json::json!([]));
}

#[test]
fn every_example_validates_and_points_at_the_schema() {
    let examples = root().join("examples");
    let mut dirs: Vec<_> = std::fs::read_dir(&examples)
        .expect("examples/")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.join("huxley.toml").exists())
        .collect();
    dirs.sort();
    let names: Vec<_> = dirs
        .iter()
        .filter_map(|d| d.file_name()?.to_str())
        .collect();
    assert!(names.contains(&"minimal") && names.contains(&"blog") && names.contains(&"platform"));
    for dir in &dirs {
        let name = dir.file_name().and_then(|n| n.to_str()).expect("name");
        let file = format!("examples/{name}/huxley.toml");
        let out = Test::new(&["validate", "-f", &file]).run();
        out.code(0);
        assert!(
            out.stderr.is_empty(),
            "{file} has warnings:\n{}",
            out.stderr
        );
        assert!(
            out.stdout.starts_with(&format!("{file}: valid")),
            "{}",
            out.stdout
        );
        let first = std::fs::read_to_string(dir.join("huxley.toml")).expect("read");
        assert!(
            first.starts_with("#:schema ../../schemas/huxley.schema.json\n"),
            "{file}"
        );
    }
}

#[test]
fn the_platform_example_is_as_big_as_promised() {
    let out = Test::new(&["validate", "-f", "examples/platform/huxley.toml"]).run();
    out.code(0);
    assert!(out.stdout.contains("3 apps, 11 services"), "{}", out.stdout);
}

#[test]
fn a_missing_file_is_an_io_error() {
    let out = Test::new(&["validate", "-f", "no/such/huxley.toml"]).run();
    out.code(2);
    assert!(
        out.stderr.contains("cannot read no/such/huxley.toml"),
        "{}",
        out.stderr
    );
}

#[test]
fn usage_errors_exit_2() {
    Test::new(&["validate", "--no-such-flag"]).run().code(2);
    Test::new(&["no-such-verb"]).run().code(2);
}

#[test]
fn blessing_is_refused_in_ci() {
    use crate::fixtures::bless_decision;
    use std::ffi::OsStr;
    let one = Some(OsStr::new("1"));
    assert_eq!(bless_decision(one, None), Ok(true));
    assert_eq!(bless_decision(None, Some(OsStr::new("true"))), Ok(false));
    assert!(
        bless_decision(one, Some(OsStr::new("true")))
            .expect_err("refused")
            .contains("refused when CI=true")
    );
}

#[test]
fn a_huge_wait_timeout_is_a_usage_error_not_a_panic() {
    // Regression: `--wait-timeout 9999999999999h` overflowed the clock and
    // panicked.
    for verb in ["apply", "destroy"] {
        let out = Test::new(&[
            verb,
            "-f",
            "examples/minimal/huxley.toml",
            "--wait-timeout",
            "9999999999999h",
        ])
        .run();
        out.code(2);
        assert!(
            out.stderr
                .contains("is longer than Huxley waits for anything; give at most \"24h\""),
            "{}",
            out.stderr
        );
        assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
    }
}

#[test]
fn colour_is_off_when_piped_and_on_when_asked() {
    let plain = Test::new(&["validate", "-f", "tests/invalid/unknown-key.toml"]).run();
    assert!(!plain.stderr.contains('\u{1b}'));
    let coloured = Test::new(&[
        "validate",
        "--color",
        "always",
        "-f",
        "tests/invalid/unknown-key.toml",
    ])
    .run();
    assert!(coloured.stderr.contains('\u{1b}'));
}

#[test]
fn schema_command_prints_the_checked_in_schema() {
    let out = Test::new(&["schema"]).run();
    out.code(0);
    let path = root().join("schemas/huxley.schema.json");
    if let Err(diff) = compare_or_bless(&path, &out.stdout) {
        panic!("{diff}");
    }
    let schema: serde_json::Value = serde_json::from_str(&out.stdout).expect("valid JSON");
    let service = &schema["$defs"]["RawService"]["properties"];
    assert!(
        service["host-port"]["description"]
            .as_str()
            .is_some_and(|d| d.contains("published"))
    );
    assert_eq!(schema["$defs"]["RawService"]["additionalProperties"], false);
    assert!(
        schema["required"]
            .as_array()
            .is_some_and(|r| r.iter().any(|v| v == "cluster"))
    );
}

#[test]
fn the_plan_schema_is_checked_in() {
    let out = Test::new(&["schema", "plan"]).run();
    out.code(0);
    let path = root().join("schemas/plan.schema.json");
    if let Err(diff) = compare_or_bless(&path, &out.stdout) {
        panic!("{diff}");
    }
    let schema: serde_json::Value = serde_json::from_str(&out.stdout).expect("valid JSON");
    for key in [
        "summary",
        "resources",
        "artifacts",
        "records",
        "drift",
        "base",
        "desired",
    ] {
        assert!(
            schema["required"]
                .as_array()
                .is_some_and(|r| r.iter().any(|v| v == key)),
            "{key}"
        );
    }
}

/// Regression guard: a resource type the compiler starts emitting must be
/// in the replacement table, or plans would guess.
#[test]
fn the_replacement_table_covers_every_emitted_type() {
    for example in ["minimal", "blog", "platform"] {
        let path = root().join(format!("golden/{example}/cloudformation/cluster.json"));
        let template: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).expect("golden")).expect("JSON");
        for resource in template["Resources"]
            .as_object()
            .expect("resources")
            .values()
        {
            let kind = resource["Type"].as_str().expect("type");
            assert!(
                huxley::plan::diff::knows(kind),
                "{kind} is not in schemas/cfn-replacement.json: run .venv/bin/python scripts/gen-replacement-table.py"
            );
        }
    }
}

#[test]
fn completions_for_every_shell() {
    for shell in ["bash", "zsh", "fish"] {
        let out = Test::new(&["completions", shell]).run();
        out.code(0);
        assert!(out.stdout.contains("validate"), "{shell}");
    }
}

#[test]
fn help_comes_from_doc_comments() {
    let out = Test::new(&["validate", "--help"]).run();
    out.code(0);
    assert!(
        out.stdout.contains("report every problem"),
        "{}",
        out.stdout
    );
}

#[test]
fn simulate_prints_the_packing_and_a_day_the_same_for_the_same_seed() {
    let run = || {
        let out = Test::new(&[
            "simulate",
            "--workloads",
            "5",
            "--services",
            "12",
            "--seed",
            "7",
        ])
        .run();
        out.code(0);
        out.stdout
    };
    let first = run();
    assert!(
        first.contains("5 random workloads of 12 services")
            && first.contains("x the lower bound on average")
            && first.contains("drains below the $10 threshold: 0"),
        "{first}"
    );
    let hours: Vec<&str> = first
        .lines()
        .filter(|l| l.trim_end().ends_with(" ms"))
        .collect();
    assert_eq!(hours.len(), 24, "{first}");
    assert!(hours[0].trim_start().starts_with("00 "), "{first}");
    // The same numbers again, decision times aside.
    let strip = |text: &str| -> Vec<String> {
        text.lines()
            .map(|l| match l.trim_end().strip_suffix(" ms") {
                Some(rest) => rest.rsplit_once("  ").map_or(rest, |(r, _)| r).to_owned(),
                None => l.to_owned(),
            })
            .collect()
    };
    assert_eq!(strip(&first), strip(&run()));
    // A bad count is a usage error.
    Test::new(&["simulate", "--workloads", "0"]).run().code(2);
}
