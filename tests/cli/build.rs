//! `huxley build`: goldens, determinism, whole-or-nothing output, `--check`,
//! and quotas.

use std::fs;
use std::path::{Path, PathBuf};

use crate::fixtures::blessing;
use crate::fixtures::report;
use crate::support::{Output, Test, root};

/// A fresh directory for one test, under cargo's scratch space.
fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("build")
        .join(name);
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

fn examples() -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(root().join("examples"))
        .expect("examples/")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    names.sort();
    names
}

/// Reads every file under `dir` as (relative path, bytes), sorted.
fn tree(dir: &Path) -> Vec<(String, Vec<u8>)> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, Vec<u8>)>) {
        for entry in fs::read_dir(dir).expect("read dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                let rel = path
                    .strip_prefix(root)
                    .expect("under root")
                    .display()
                    .to_string();
                out.push((rel, fs::read(&path).expect("read")));
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// `huxley build -f FILE -o OUT`.
fn build(file: &Path, out: &Path) -> Output {
    Test::new(&[
        "build",
        "-f",
        file.to_str().expect("utf-8"),
        "-o",
        out.to_str().expect("utf-8"),
    ])
    .run()
}

#[test]
fn goldens_match_the_build_of_every_example() {
    let mut failures = Vec::new();
    for example in examples() {
        let file = format!("examples/{example}/huxley.toml");
        let golden = format!("golden/{example}");
        if blessing() {
            Test::new(&["build", "-f", &file, "-o", &golden])
                .run()
                .code(0);
            continue;
        }
        let out = Test::new(&["build", "-f", &file, "--check", &golden]).run();
        if out.code != 0 {
            failures.push(format!(
                "{golden} is stale (HUXLEY_BLESS=1 cargo test rewrites it):\n{}{}",
                out.stdout, out.stderr
            ));
        }
    }
    if blessing() {
        // Goldens of examples that no longer exist are stale.
        for entry in fs::read_dir(root().join("golden")).expect("golden/") {
            let path = entry.expect("entry").path();
            if !root()
                .join("examples")
                .join(path.file_name().expect("name"))
                .exists()
            {
                fs::remove_dir_all(&path).expect("remove stale golden");
            }
        }
    }
    report(failures);
}

#[test]
fn the_platform_build_writes_all_four_kinds_and_is_deterministic() {
    let dir = scratch("deterministic");
    let (a, b) = (dir.join("a"), dir.join("b"));
    for out in [&a, &b] {
        let run = Test::new(&[
            "build",
            "-f",
            "examples/platform/huxley.toml",
            "-o",
            out.to_str().expect("utf-8"),
        ])
        .run();
        run.code(0);
        assert!(run.stdout.contains("53 resources"), "{}", run.stdout);
    }
    let first = tree(&a);
    assert_eq!(first, tree(&b), "two builds of the same input differ");
    let paths: Vec<&str> = first.iter().map(|(p, _)| p.as_str()).collect();
    for expected in [
        "cloudformation/cluster.json",
        "ignition/node.ign",
        "ignition/control.ign",
        "units/shop-storefront@.service",
        "units/huxley-kick.service",
        "hooks/shop/pre-receive",
        "kick/kick.toml",
    ] {
        assert!(paths.contains(&expected), "missing {expected} in {paths:?}");
    }
    use std::os::unix::fs::PermissionsExt;
    let mode = fs::metadata(a.join("hooks/shop/pre-receive"))
        .expect("hook")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o755);
}

#[test]
fn the_template_boots_nodes_with_exactly_the_ignition_config() {
    let template: serde_json::Value = serde_json::from_str(
        &fs::read_to_string(root().join("golden/blog/cloudformation/cluster.json"))
            .expect("golden"),
    )
    .expect("JSON");
    // Each group boots with its own config: the nodes run the node agent
    // only, the control plane the kick and hook servers.
    for (template_id, file, runs, never) in [
        (
            "NodeLaunchTemplate",
            "node.ign",
            "huxley-node.service",
            "huxley-kick.service",
        ),
        (
            "ControlLaunchTemplate",
            "control.ign",
            "huxley-kick.service",
            "huxley-git",
        ),
    ] {
        let user_data = &template["Resources"][template_id]["Properties"]["LaunchTemplateData"]["UserData"]
            ["Fn::Base64"]["Fn::Sub"];
        let ignition =
            fs::read_to_string(root().join("golden/blog/ignition").join(file)).expect("golden");
        assert_eq!(user_data.as_str(), Some(ignition.as_str()));
        assert!(ignition.contains("s3://${ArtifactBucket}/bin/huxley-"));
        assert!(ignition.contains(runs), "{file} runs {runs}");
        if file == "node.ign" {
            assert!(!ignition.contains(never), "{file} must not have {never}");
        }
    }
}

#[test]
fn secrets_stay_references_in_every_artifact() {
    // A plain env value goes to its service's env file and nowhere else; a
    // secret is a parameter name everywhere, and its value is never known.
    let dir = scratch("secrets");
    let file = dir.join("huxley.toml");
    let source = fs::read_to_string(root().join("examples/minimal/huxley.toml")).expect("example");
    fs::write(
        &file,
        format!(
            "{source}env = {{ GREETING = \"plain-value-1234\" }}\nsecrets = {{ DATABASE_URL = \"ssm:/hello/site/database-url\" }}\n"
        ),
    )
    .expect("write");
    let out = dir.join("out");
    build(&file, &out).code(0);
    for (path, bytes) in tree(&out) {
        let text = String::from_utf8(bytes).expect("text");
        assert_eq!(
            text.contains("plain-value-1234"),
            path == "units/site-web.env",
            "{path}: the plain value belongs in the env file only"
        );
        if text.contains("DATABASE_URL") {
            assert!(
                text.contains("/hello/site/database-url") && !text.contains("DATABASE_URL="),
                "{path} must name the secret's parameter, never assign it"
            );
        }
    }
    let template = fs::read_to_string(root().join("golden/platform/cloudformation/cluster.json"))
        .expect("golden");
    assert!(
        template.contains(":parameter/platform/auth/postgres-password"),
        "IAM names the parameter"
    );
    let unit = fs::read_to_string(root().join("golden/platform/units/auth-store@.service"))
        .expect("golden");
    assert!(unit.contains("huxley node secrets --unit auth-store"));
}

#[test]
fn check_reports_missing_extra_and_changed_files_with_a_diff() {
    let dir = scratch("check");
    let out = dir.join("out");
    let out_str = out.to_str().expect("utf-8");
    Test::new(&["build", "-f", "examples/blog/huxley.toml", "-o", out_str])
        .run()
        .code(0);
    Test::new(&[
        "build",
        "-f",
        "examples/blog/huxley.toml",
        "--check",
        out_str,
    ])
    .run()
    .code(0);

    fs::remove_file(out.join("units/blog-api@.service")).expect("remove");
    fs::write(out.join("units/stray.service"), "x").expect("write");
    let kick = out.join("kick/kick.toml");
    let text = fs::read_to_string(&kick)
        .expect("read")
        .replace("min = 2", "min = 3");
    fs::write(&kick, text).expect("write");

    let run = Test::new(&[
        "build",
        "-f",
        "examples/blog/huxley.toml",
        "--check",
        out_str,
    ])
    .run();
    run.code(1);
    assert!(
        run.stdout.contains("missing: ") && run.stdout.contains("units/blog-api@.service"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("extra:   ") && run.stdout.contains("units/stray.service"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("-min = 3\n+min = 2"), "{}", run.stdout);
    assert!(run.stderr.contains("3 files differ"), "{}", run.stderr);
}

#[test]
fn a_failed_build_leaves_the_old_output_untouched() {
    let dir = scratch("atomic");
    let out = dir.join("out");
    let out_str = out.to_str().expect("utf-8");
    Test::new(&["build", "-f", "examples/blog/huxley.toml", "-o", out_str])
        .run()
        .code(0);
    let before = tree(&out);
    Test::new(&[
        "build",
        "-f",
        "tests/invalid/host-port-clash.toml",
        "-o",
        out_str,
    ])
    .run()
    .code(1);
    assert_eq!(tree(&out), before);
    let leftovers: Vec<_> = fs::read_dir(&dir)
        .expect("dir")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name())
        .collect();
    assert_eq!(
        leftovers.len(),
        1,
        "temporary directories left behind: {leftovers:?}"
    );
}

#[test]
fn a_rebuild_replaces_the_whole_directory() {
    let dir = scratch("replace");
    let out = dir.join("out");
    let out_str = out.to_str().expect("utf-8");
    Test::new(&[
        "build",
        "-f",
        "examples/platform/huxley.toml",
        "-o",
        out_str,
    ])
    .run()
    .code(0);
    Test::new(&["build", "-f", "examples/minimal/huxley.toml", "-o", out_str])
        .run()
        .code(0);
    assert!(
        !out.join("hooks/shop").exists(),
        "files of the old build remain"
    );
    assert!(out.join("hooks/site/pre-receive").exists());
}

#[test]
fn build_refuses_to_replace_a_directory_it_did_not_write() {
    let dir = scratch("refuse");
    fs::write(dir.join("precious.txt"), "keep me").expect("write");
    let run = Test::new(&[
        "build",
        "-f",
        "examples/blog/huxley.toml",
        "-o",
        dir.to_str().expect("utf-8"),
    ])
    .run();
    run.code(2);
    assert!(run.stderr.contains("refusing to replace"), "{}", run.stderr);
    assert_eq!(
        fs::read_to_string(dir.join("precious.txt")).expect("kept"),
        "keep me"
    );
}

#[test]
fn two_hundred_services_fit_in_one_stack() {
    let dir = scratch("two-hundred");
    let file = dir.join("huxley.toml");
    fs::write(&file, huxley::testing::synth::config(10, 20)).expect("write");
    let out = dir.join("out");
    let run = build(&file, &out);
    run.code(0);
    assert_eq!(
        fs::read_dir(out.join("units")).expect("units").count(),
        200 * 2 + 3
    );
    let template: serde_json::Value = serde_json::from_str(
        &fs::read_to_string(out.join("cloudformation/cluster.json")).expect("template"),
    )
    .expect("JSON");
    let resources = template["Resources"].as_object().expect("resources").len();
    assert!(
        resources < 100,
        "the stack grew with the services: {resources} resources"
    );
}

#[test]
fn quotas_are_checked_before_anything_is_written() {
    let dir = scratch("quota");
    let file = dir.join("huxley.toml");
    // 7 apps × 50 services: 70 public host-ports, none adjacent, over the
    // 60 rules a security group holds.
    let synth = huxley::testing::synth::Synth {
        apps: 7,
        services_per_app: 50,
        host_port_step: 2,
        secret_per_service: false,
    };
    fs::write(&file, synth.render()).expect("write");
    let out = dir.join("out");
    let run = build(&file, &out);
    run.code(1);
    assert!(
        run.stderr.contains("EC2: inbound rules per security group"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("75 IPv4 inbound rules"),
        "{}",
        run.stderr
    );
    assert!(
        !out.exists(),
        "nothing may be written when a quota is exceeded"
    );
}

#[test]
fn more_nodes_than_the_route_table_holds_are_refused_with_the_limit() {
    let dir = scratch("routes");
    let file = dir.join("huxley.toml");
    let source = fs::read_to_string(crate::support::root().join("examples/minimal/huxley.toml"))
        .expect("the minimal example");
    fs::write(&file, source.replace("max = 3", "max = 60")).expect("write");
    let out = dir.join("out");
    let run = build(&file, &out);
    run.code(1);
    assert!(
        run.stderr.contains("VPC: routes per route table")
            && run.stderr.contains("nodes.max = 60 needs 62 routes")
            && run.stderr.contains("lower nodes.max to 48"),
        "{}",
        run.stderr
    );
    assert!(
        !out.exists(),
        "nothing may be written when a quota is exceeded"
    );
    fs::write(&file, source.replace("max = 3", "max = 48")).expect("write");
    build(&file, &out).code(0);
}

#[test]
fn yaml_templates_are_offered() {
    let dir = scratch("yaml");
    let out = dir.join("out");
    Test::new(&[
        "build",
        "-f",
        "examples/minimal/huxley.toml",
        "-o",
        out.to_str().expect("utf-8"),
        "--format",
        "yaml",
    ])
    .run()
    .code(0);
    let yaml = fs::read_to_string(out.join("cloudformation/cluster.yaml")).expect("yaml");
    assert!(
        yaml.starts_with("AWSTemplateFormatVersion: \"2010-09-09\"\n"),
        "{}",
        &yaml[..80]
    );
    assert!(yaml.contains("Fn::Sub:"));
}
