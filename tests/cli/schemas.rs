//! The checked-in contracts: the kick API's OpenAPI document is what the
//! code builds (`HUXLEY_BLESS=1 cargo test` rewrites it).

use serde_json::Value;

use crate::fixtures::compare_or_bless;
use crate::support::root;

#[test]
fn the_openapi_document_is_checked_in() {
    let text = huxley::spec::openapi::to_json();
    if let Err(diff) = compare_or_bless(&root().join("schemas/kick.openapi.json"), &text) {
        panic!("{diff}");
    }
    let document: Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(document["openapi"], "3.1.0");
    for path in [
        "/v1/cluster",
        "/v1/instances",
        "/v1/records",
        "/healthz",
        "/metrics",
    ] {
        assert!(
            document["paths"][path].is_object(),
            "{path} is not documented"
        );
    }
    assert!(document["components"]["schemas"]["Registration"].is_object());
}
