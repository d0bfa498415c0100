//! Node identity: a node proves which instance it is through STS (its
//! instance role's session is named after it) and acts only for itself,
//! and gets its replicas' secrets from kick, for services placed on it.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::cluster::{Live, REGION, all_healthy, config};
use crate::support::Test;

/// `method` on `url` with `headers`; the status.
async fn send(
    method: reqwest::Method,
    url: &str,
    headers: &[(&str, String)],
    body: Option<Value>,
) -> u16 {
    huxley::tls::ensure_provider();
    let mut request = reqwest::Client::new()
        .request(method, url)
        .timeout(Duration::from_secs(10));
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    request
        .send()
        .await
        .expect("kick answers")
        .status()
        .as_u16()
}

/// The headers that carry the proof of whoever `credentials` are.
async fn proof_of(
    live: &Live,
    credentials: &[(String, String)],
    cluster: &str,
) -> Vec<(&'static str, String)> {
    use huxley::aws::identity::headers;
    let endpoint = live.aws.sts_endpoint();
    let aws = huxley::testing::aws_as(&endpoint, REGION, credentials).await;
    let proof = aws.prove_identity(cluster).await.expect("a signed proof");
    let mut sent = vec![
        (headers::AUTHORIZATION, proof.authorization),
        (headers::DATE, proof.date),
    ];
    if let Some(token) = proof.security_token {
        sent.push((headers::SECURITY_TOKEN, token));
    }
    sent
}

#[test]
fn a_node_acts_only_for_itself_proved_through_sts_and_reads_only_its_secrets() {
    let text = config("identity").replace(
        "depends-on = [\"api\"]\n",
        "depends-on = [\"api\"]\nsecrets = { DATABASE_URL = \"ssm:/identity/blog/database-url\" }\n",
    );
    assert!(text.contains("secrets ="), "{text}");
    let mut live = Live::with_config("identity", "127.87.0.0/16", &text, 3);
    // Applied with the secret stored; gone now, to see a node told so.
    live.rt()
        .block_on(
            live.aws
                .delete_parameters(&["/identity/blog/database-url".to_owned()]),
        )
        .expect("delete the secret");
    let kicks = vec![live.kick("kick-a")];
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    rt.block_on(live.until_leader(&kicks, Duration::from_secs(30), "no leader"));
    // The agents prove themselves with their instance role's sessions.
    live.agent(0, &kicks);
    live.agent(1, &kicks);
    let nodes: BTreeSet<String> = live.nodes[..2].iter().cloned().collect();
    let described = rt.block_on(live.describe_until(
        &kicks,
        Duration::from_secs(60),
        "every replica healthy on the two nodes",
        |d| all_healthy(d, &nodes),
    ));
    let (a, b) = (live.nodes[0].clone(), live.nodes[1].clone());
    let kick = &kicks[0];
    // B's subnet and one of its instances.
    let b_assignment: Value = rt
        .block_on(live.get(
            &format!("{kick}/v1/nodes/{b}/assignment"),
            Some(&live.admin),
        ))
        .and_then(|(_, text)| serde_json::from_str(&text).ok())
        .expect("B's assignment");
    let b_subnet: ipnet::Ipv4Net = b_assignment["subnet"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("B has a subnet");
    let b_instance = ["web", "api", "redis"]
        .iter()
        .flat_map(|s| {
            described["apps"]["blog"]["services"][*s]["instances"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .find(|i| i["node"] == b.as_str())
        .and_then(|i| i["id"].as_str().map(str::to_owned))
        .expect("an instance on B");
    let inside_b = b_subnet.hosts().nth(40).expect("an address").to_string();
    // A replica placed on B only, and an address of A's own.
    let on_b_only = ["web", "api", "redis"]
        .iter()
        .flat_map(|s| {
            described["apps"]["blog"]["services"][*s]["placed"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .map(move |p| ((*s).to_owned(), p))
        })
        .find(|(_, p)| p["node"] == b.as_str())
        .map(|(s, p)| (s, p["replica"].as_u64().expect("a number")))
        .expect("a replica on B");
    let inside_a = rt
        .block_on(live.get(
            &format!("{kick}/v1/nodes/{a}/assignment"),
            Some(&live.admin),
        ))
        .and_then(|(_, text)| serde_json::from_str::<Value>(&text).ok())
        .and_then(|v| {
            v["subnet"]
                .as_str()
                .and_then(|s| s.parse::<ipnet::Ipv4Net>().ok())
        })
        .and_then(|subnet| subnet.hosts().nth(40))
        .expect("A has a subnet")
        .to_string();
    rt.block_on(live.dns_until_described(&described));
    let records = rt.block_on(live.private_records());

    let a_credentials = rt.block_on(huxley::testing::instance_credentials(
        &live.aws, "identity", "NodeRole", &a,
    ));
    let as_a = rt.block_on(proof_of(&live, &a_credentials, "identity"));
    let get = reqwest::Method::GET;
    let put = reqwest::Method::PUT;
    let post = reqwest::Method::POST;
    let delete = reqwest::Method::DELETE;
    rt.block_on(async {
        // A is itself.
        assert_eq!(send(get.clone(), &format!("{kick}/v1/nodes/{a}/assignment"), &as_a, None).await, 200);
        // ... and nobody else.
        let on_b = json!({"app": "blog", "service": "web", "node": b, "address": inside_b, "port": 8080});
        assert_eq!(send(post.clone(), &format!("{kick}/v1/instances"), &as_a, Some(on_b)).await, 403);
        let in_b_subnet = json!({"app": "blog", "service": "web", "node": a, "address": inside_b, "port": 8080});
        assert_eq!(send(post.clone(), &format!("{kick}/v1/instances"), &as_a, Some(in_b_subnet)).await, 403);
        let outside = json!({"app": "blog", "service": "web", "node": a, "address": "10.0.9.9", "port": 8080});
        assert_eq!(send(post.clone(), &format!("{kick}/v1/instances"), &as_a, Some(outside)).await, 403);
        assert_eq!(send(delete.clone(), &format!("{kick}/v1/instances/{b_instance}"), &as_a, None).await, 403);
        assert_eq!(send(put.clone(), &format!("{kick}/v1/instances/{b_instance}/heartbeat"), &as_a, None).await, 403);
        let report = json!({"generation": 1, "replicas": []});
        assert_eq!(send(put.clone(), &format!("{kick}/v1/nodes/{b}/status"), &as_a, Some(report)).await, 403);
        assert_eq!(send(get.clone(), &format!("{kick}/v1/nodes/{b}/assignment"), &as_a, None).await, 403);
        // Nor a replica that is not placed on it, even on its own addresses:
        // it would join that service's answers, or pass for its rollout.
        let (service, number) = &on_b_only;
        let not_mine = json!({"app": "blog", "service": service, "node": a, "address": inside_a, "port": 8080, "replica": number});
        assert_eq!(send(post.clone(), &format!("{kick}/v1/instances"), &as_a, Some(not_mine)).await, 403);
        let unnumbered = json!({"app": "blog", "service": "web", "node": a, "address": inside_a, "port": 8080});
        assert_eq!(send(post.clone(), &format!("{kick}/v1/instances"), &as_a, Some(unnumbered)).await, 403);
        // A node is no admin.
        assert_eq!(send(get.clone(), &format!("{kick}/v1/cluster"), &as_a, None).await, 403);

        // Proofs that name no node of this cluster.
        let plain = huxley::testing::client_env("", REGION);
        let as_user = proof_of(&live, &plain, "identity").await;
        assert_eq!(send(get.clone(), &format!("{kick}/v1/nodes/{a}/assignment"), &as_user, None).await, 401);
        let other_role = huxley::testing::assume_role(&live.aws, "arn:aws:iam::123456789012:role/not-the-node-role", &a).await;
        let as_other_role = proof_of(&live, &other_role, "identity").await;
        assert_eq!(send(get.clone(), &format!("{kick}/v1/nodes/{a}/assignment"), &as_other_role, None).await, 401);
        let mut unsigned = as_a.clone();
        unsigned[0].1 = unsigned[0].1.replace(";x-huxley-server", "");
        assert_eq!(send(get.clone(), &format!("{kick}/v1/nodes/{a}/assignment"), &unsigned, None).await, 401);
    });

    // Secrets: a node asks kick, as itself, for those of a service placed
    // on it; kick reads SSM, nodes cannot.
    let file = live.dir.join("blog-web-1.env");
    // `huxley node secrets` as node `node` with `credentials`, asking the
    // kick server at `at`, writing `out`.
    let node_secrets = |at: &str,
                        out: &std::path::Path,
                        unit: &str,
                        node: &str,
                        credentials: &[(String, String)]| {
        Test::new(&[
            "node",
            "secrets",
            "--unit",
            unit,
            "--out",
            &out.display().to_string(),
            "--config",
            &live.kick_toml.display().to_string(),
            "--kick",
            at,
            "--node",
            node,
        ])
        .env(&live.env)
        .env(credentials)
        .run()
    };
    let secrets = |unit: &str, node: &str, credentials: &[(String, String)]| {
        node_secrets(kick, &file, unit, node, credentials)
    };
    let missing = secrets("blog-web", &a, &a_credentials);
    missing.code(1);
    assert!(
        missing.stderr.contains(
            "SSM has no parameter /identity/blog/database-url (for DATABASE_URL); nothing was written"
        ),
        "{}",
        missing.stderr
    );
    assert!(
        !file.exists(),
        "nothing is written when a parameter is missing"
    );
    rt.block_on(live.aws.create_secure_parameter(
        "/identity/blog/database-url",
        "postgres://blog:s3cret@db/blog",
        "test",
    ))
    .expect("put the parameter");
    let written = secrets("blog-web", &a, &a_credentials);
    written.code(0);
    assert!(!written.stderr.contains("s3cret") && !written.stdout.contains("s3cret"));
    assert_eq!(
        std::fs::read_to_string(&file).expect("the env file"),
        "DATABASE_URL=postgres://blog:s3cret@db/blog\n"
    );
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&file).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    // With the control plane away, a restart keeps the file it has; with
    // none, it cannot start.
    let nowhere = format!("http://127.0.0.1:{}", huxley::testing::free_port());
    let away = |out: &std::path::Path| node_secrets(&nowhere, out, "blog-web", &a, &a_credentials);
    let kept = away(&file);
    kept.code(0);
    assert!(
        kept.stderr
            .contains("starting with the secrets written at its last start"),
        "{}",
        kept.stderr
    );
    assert_eq!(
        std::fs::read_to_string(&file).expect("the env file"),
        "DATABASE_URL=postgres://blog:s3cret@db/blog\n"
    );
    away(&live.dir.join("never-written.env")).code(1);
    std::fs::remove_file(&file).expect("remove");
    // Not for another node, nor for a service not placed on the node.
    let as_b = secrets("blog-web", &b, &a_credentials);
    as_b.code(1);
    assert!(as_b.stderr.contains("403"), "{}", as_b.stderr);
    let placed_on = |service: &str| -> BTreeSet<String> {
        described["apps"]["blog"]["services"][service]["instances"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|i| i["node"].as_str().map(str::to_owned))
            .collect()
    };
    let (unit, elsewhere) = ["api", "redis"]
        .iter()
        .flat_map(|s| [(s, &a), (s, &b)])
        .find(|(s, n)| !placed_on(s).contains(n.as_str()))
        .map(|(s, n)| (format!("blog-{s}"), n.clone()))
        .expect("a service not on one of the two nodes");
    let credentials = rt.block_on(huxley::testing::instance_credentials(
        &live.aws, "identity", "NodeRole", &elsewhere,
    ));
    let not_placed = secrets(&unit, &elsewhere, &credentials);
    not_placed.code(1);
    assert!(
        not_placed.stderr.contains("is placed on this node"),
        "{}",
        not_placed.stderr
    );
    assert!(!file.exists());
    let unknown = secrets("blog-nope", &a, &a_credentials);
    unknown.code(1);
    assert!(
        unknown.stderr.contains("no service runs as unit blog-nope"),
        "{}",
        unknown.stderr
    );

    // Nothing changed: DNS, and B's instance is still there and healthy.
    assert_eq!(rt.block_on(live.private_records()), records);
    let after = rt.block_on(live.describe_until(
        &kicks,
        Duration::from_secs(30),
        "the cluster as it was",
        |d| all_healthy(d, &nodes),
    ));
    let ids = |d: &Value| -> BTreeSet<String> {
        ["web", "api", "redis"]
            .iter()
            .flat_map(|s| {
                d["apps"]["blog"]["services"][*s]["instances"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
            })
            .filter_map(|i| i["id"].as_str().map(str::to_owned))
            .collect()
    };
    assert!(ids(&after).contains(&b_instance), "{after}");
    assert_eq!(ids(&after), ids(&described));
}
