//! The kick server's parts that talk to AWS, against the local emulator.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use huxley::aws::RecordChange;
use huxley::kick::dns::{Settings, Writer};
use huxley::testing::{Emulator, aws, create_public_zone};

use crate::support::root;

const REGION: &str = "us-west-2";

fn a_record(name: &str, ip: &str) -> RecordChange {
    RecordChange {
        upsert: true,
        name: name.to_owned(),
        kind: "A".to_owned(),
        ttl: 60,
        values: vec![ip.to_owned()],
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime")
}

#[test]
fn a_thousand_concurrent_changes_commit_in_a_handful_of_requests() {
    let emulator = Emulator::shared(&root());
    let zone = create_public_zone(&emulator.endpoint(), REGION, "burst.internal");
    runtime().block_on(async {
        let aws = Arc::new(aws(&emulator.endpoint(), REGION).await);
        // The default pacing: 5 requests a second.
        let writer = Writer::spawn(Arc::clone(&aws), Settings::default());
        let tasks: Vec<_> = (0..1000)
            .map(|i| {
                let writer = writer.clone();
                let zone = zone.clone();
                let name = format!("i{i}.web.blog.burst.internal");
                let ip = format!("10.1.{}.{}", i / 250, i % 250 + 1);
                tokio::spawn(async move { writer.submit(&zone, a_record(&name, &ip)).await })
            })
            .collect();
        for task in tasks {
            assert_eq!(task.await.expect("join"), Ok(()));
        }
        let requests = writer.metrics.requests.load(Ordering::Relaxed);
        assert!(
            requests <= 5,
            "1,000 changes took {requests} ChangeResourceRecordSets calls"
        );
        let records = aws.list_records(&zone).await.expect("list");
        let written = records
            .iter()
            .filter(|r| r.kind == "A" && r.name.ends_with(".web.blog.burst.internal"))
            .count();
        assert_eq!(written, 1000, "every record is in the zone");
    });
}

#[test]
fn one_bad_change_fails_alone_and_the_rest_commit() {
    let emulator = Emulator::shared(&root());
    let zone = create_public_zone(&emulator.endpoint(), REGION, "bisect.internal");
    runtime().block_on(async {
        let aws = Arc::new(aws(&emulator.endpoint(), REGION).await);
        let writer = Writer::spawn(Arc::clone(&aws), Settings::default());
        let mut tasks = Vec::new();
        for i in 0..20 {
            let (writer, zone) = (writer.clone(), zone.clone());
            tasks.push(tokio::spawn(async move {
                writer
                    .submit(
                        &zone,
                        a_record(&format!("ok{i}.bisect.internal"), "10.0.0.1"),
                    )
                    .await
            }));
        }
        // A name outside the zone: Route53 rejects the batch that holds it.
        let bad = {
            let (writer, zone) = (writer.clone(), zone.clone());
            tokio::spawn(async move {
                writer
                    .submit(&zone, a_record("stray.example.org", "10.0.0.9"))
                    .await
            })
        };
        for task in tasks {
            assert_eq!(task.await.expect("join"), Ok(()));
        }
        let error = bad
            .await
            .expect("join")
            .expect_err("the stray name is rejected");
        assert!(error.contains("Route53 rejected the change"), "{error}");
        assert_eq!(writer.metrics.rejected.load(Ordering::Relaxed), 1);
        let records = aws.list_records(&zone).await.expect("list");
        assert_eq!(
            records.iter().filter(|r| r.name.starts_with("ok")).count(),
            20
        );
    });
}
