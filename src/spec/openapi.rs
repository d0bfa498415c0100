//! The OpenAPI 3.1 document of the kick server's API, built from the same
//! types the handlers read and write, served at `/v1/openapi.json` and
//! checked in as `schemas/kick.openapi.json` (a test keeps it current).

use schemars::Schema;
use schemars::generate::SchemaSettings;
use serde_json::{Value, json};

use crate::spec::assignment::{Assignment, NodeReport};
use crate::spec::description::{AppDescription, ClusterDescription, ServiceDescription};
use crate::spec::registry::{RecordRequest, Registration};
use crate::spec::release::{DeployRequest, Release};
use crate::spec::run::{RunRequest, RunStatus, RunUpdate};

/// The schemas the paths refer to.
struct Schemas {
    registration: Schema,
    record: Schema,
    cluster: Schema,
    app: Schema,
    service: Schema,
    assignment: Schema,
    report: Schema,
    deploy: Schema,
    release: Schema,
    releases: Schema,
    run_request: Schema,
    run_status: Schema,
    run_update: Schema,
}

/// The document.
pub fn document() -> Value {
    let mut generator = SchemaSettings::draft2020_12()
        .with(|s| s.definitions_path = "/components/schemas".into())
        .into_generator();
    let s = Schemas {
        registration: generator.subschema_for::<Registration>(),
        record: generator.subschema_for::<RecordRequest>(),
        cluster: generator.subschema_for::<ClusterDescription>(),
        app: generator.subschema_for::<AppDescription>(),
        service: generator.subschema_for::<ServiceDescription>(),
        assignment: generator.subschema_for::<Assignment>(),
        report: generator.subschema_for::<NodeReport>(),
        deploy: generator.subschema_for::<DeployRequest>(),
        release: generator.subschema_for::<Release>(),
        releases: generator.subschema_for::<Vec<Release>>(),
        run_request: generator.subschema_for::<RunRequest>(),
        run_status: generator.subschema_for::<RunStatus>(),
        run_update: generator.subschema_for::<RunUpdate>(),
    };
    let mut schemas = generator.take_definitions(true);
    schemas.insert(
        "Error".into(),
        json!({ "type": "object", "required": ["error"], "properties": { "error": { "type": "string" } } }),
    );
    let mut paths = serde_json::Map::new();
    for part in [
        describe_paths(&s),
        deploy_paths(&s),
        run_paths(&s),
        instance_paths(&s),
    ] {
        if let Value::Object(part) = part {
            paths.extend(part);
        }
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Huxley kick server",
            "version": "1",
            "description": "The cluster's agent: instance registry, health, DNS records and the cluster's self-description. Every operation but /healthz needs a bearer token: the admin token reads everything; a service token acts on its own service only.",
        },
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } },
            "schemas": schemas,
        },
        "security": [{ "bearer": [] }],
        "paths": paths,
    })
}

/// Health, this document, metrics and the description.
fn describe_paths(s: &Schemas) -> Value {
    json!({
        "/healthz": { "get": {
            "operationId": "healthz", "summary": "Liveness.", "security": [],
            "responses": { "200": { "description": "alive", "content": { "text/plain": { "schema": { "type": "string" } } } } },
        } },
        "/v1/openapi.json": { "get": {
            "operationId": "openapi", "summary": "This document.",
            "responses": with_denied(json!({ "200": { "description": "the OpenAPI document", "content": { "application/json": { "schema": { "type": "object" } } } } })),
        } },
        "/metrics": { "get": {
            "operationId": "metrics", "summary": "Prometheus metrics.",
            "responses": with_denied(json!({ "200": { "description": "metrics", "content": { "text/plain": { "schema": { "type": "string" } } } } })),
        } },
        "/v1/cluster": { "get": {
            "operationId": "describeCluster", "summary": "The whole cluster (admin).",
            "responses": with_denied(json!({ "200": ok("the description", &s.cluster) })),
        } },
        "/v1/apps/{app}": { "get": {
            "operationId": "describeApp", "summary": "One app (admin).", "parameters": [parameter("app")],
            "responses": with_denied(json!({ "200": ok("the app", &s.app), "404": error_response("no such app") })),
        } },
        "/v1/apps/{app}/services/{service}": { "get": {
            "operationId": "describeService", "summary": "One service.", "parameters": [parameter("app"), parameter("service")],
            "responses": with_denied(json!({ "200": ok("the service", &s.service), "404": error_response("no such service") })),
        } },
    })
}

/// Deploys and rollbacks.
fn deploy_paths(s: &Schemas) -> Value {
    json!({
        "/v1/apps/{app}/deployments": {
            "post": {
                "operationId": "deploy", "summary": "Roll out a release of the app's built services (the hook server after a push, or admin), or roll back to an earlier one (`rollback_to`, admin): health-gated batches, rolled back when a new replica fails. Follow it with GET .../deployments/{id}.",
                "parameters": [parameter("app")],
                "requestBody": json_body(&s.deploy),
                "responses": with_denied(json!({
                    "202": ok("the deploy started", &s.release),
                    "200": { "description": "nothing to deploy: the services already run these images (or, for a restart, nothing of them runs yet)", "content": { "application/json": { "schema": { "type": "object", "required": ["unchanged", "message"], "properties": { "unchanged": { "type": "boolean" }, "message": { "type": "string" } } } } } },
                    "400": error_response("malformed body, an image not pinned by digest, not one per built service, or a restart naming a service the app does not have"),
                    "404": error_response("no such app, or no such release to roll back to"),
                    "409": error_response("a deploy of the app is running (`holder` says which), or a restart names a built service with no release yet"),
                    "413": error_response("body over 64 KiB"),
                    "503": error_response("the deploy history is not read yet"),
                })),
            },
            "get": {
                "operationId": "deployments", "summary": "The app's deploys, newest first (admin or hook).",
                "parameters": [parameter("app")],
                "responses": with_denied(json!({ "200": ok("the deploys", &s.releases), "404": error_response("no such app") })),
            },
        },
        "/v1/apps/{app}/deployments/{id}": { "get": {
            "operationId": "deployment", "summary": "One deploy with its progress (admin or hook).",
            "parameters": [parameter("app"), { "name": "id", "in": "path", "required": true, "description": "The release number, e.g. 3 or v3.", "schema": { "type": "string" } }],
            "responses": with_denied(json!({ "200": ok("the deploy", &s.release), "400": error_response("the release is not a number"), "404": error_response("no such app or deploy") })),
        } },
    })
}

/// One-off runs.
fn run_paths(s: &Schemas) -> Value {
    json!({
        "/v1/apps/{app}/services/{service}/runs": { "post": {
            "operationId": "run", "summary": "Run a command once in a new container of the service (admin): its release's image (the one it runs, or `release`), its environment and secrets, on a node with room. Follow it with GET /v1/runs/{id}.",
            "parameters": [parameter("app"), parameter("service")],
            "requestBody": json_body(&s.run_request),
            "responses": with_denied(json!({
                "201": ok("the run, placed", &s.run_status),
                "400": error_response("malformed body, an empty command, a word with a NUL, a timeout out of range, or `release` for a prebuilt service"),
                "404": error_response("no such service, or no such release of it"),
                "409": error_response("no node has room for it, the service has no release yet, or a stateful service has no replica placed"),
                "413": error_response("body over 64 KiB"),
                "429": error_response("too many runs under way"),
                "503": error_response("this server is a standby, or the deploy history cannot be read"),
            })),
        } },
        "/v1/runs/{id}": {
            "get": {
                "operationId": "followRun", "summary": "A run and its output from line `after` (admin): at once when it has lines from there or ended, else when it does or after `wait` seconds.",
                "parameters": [
                    parameter("id"),
                    { "name": "after", "in": "query", "required": false, "schema": { "type": "integer", "minimum": 0 } },
                    { "name": "wait", "in": "query", "required": false, "schema": { "type": "integer", "minimum": 0, "maximum": 30 } },
                ],
                "responses": with_denied(json!({ "200": ok("the run", &s.run_status), "400": error_response("malformed query"), "404": error_response("no such run (not a number, ended over 10 minutes ago, or placed by another leader)"), "503": error_response("this server is a standby") })),
            },
            "delete": {
                "operationId": "stopRun", "summary": "Stop a run (admin): its node stops the container.",
                "parameters": [parameter("id")],
                "responses": with_denied(json!({ "200": ok("the run, stopped", &s.run_status), "404": error_response("no such run"), "503": error_response("this server is a standby") })),
            },
        },
        "/v1/nodes/{id}/runs/{run}": { "put": {
            "operationId": "runUpdate", "summary": "What a run printed since the last update, and its end (the node running it, by its proof of identity).",
            "parameters": [parameter("id"), parameter("run")],
            "requestBody": json_body(&s.run_update),
            "responses": with_denied(json!({ "204": { "description": "noted" }, "400": error_response("malformed body, or over 1,000 lines"), "404": error_response("no such run (the node stops it)"), "413": error_response("body over 64 KiB"), "503": error_response("this server is a standby") })),
        } },
    })
}

/// Instances, nodes' assignments and reports, and records.
fn instance_paths(s: &Schemas) -> Value {
    json!({
        "/v1/instances": { "post": {
            "operationId": "register", "summary": "Register an instance of the caller's service; answers once Route53 holds the registration (the service's replicas record), so a restarted kick finds it. Registering again is harmless.",
            "requestBody": json_body(&s.registration),
            "responses": with_denied(json!({
                "201": { "description": "registered and committed to Route53", "content": { "application/json": { "schema": { "type": "object", "required": ["id", "committed"], "properties": { "id": { "type": "string" }, "committed": { "type": "boolean" } } } } } },
                "400": error_response("malformed body, or a node or version kick cannot record"), "404": error_response("no such service, or no such node in the cluster"),
                "409": error_response("the service's replicas record is full"), "413": error_response("body over 64 KiB"),
                "503": error_response("Route53 or EC2 could not be reached: register again"),
            })),
        } },
        "/v1/instances/{id}": { "delete": {
            "operationId": "deregister", "summary": "Deregister an instance.", "parameters": [parameter("id")],
            "responses": with_denied(json!({ "204": { "description": "deregistered" }, "404": error_response("no such instance"), "503": error_response("deregistered, but Route53 could not be reached: a later change removes it") })),
        } },
        "/v1/instances/{id}/heartbeat": { "put": {
            "operationId": "heartbeat", "summary": "Say an instance is alive.", "parameters": [parameter("id")],
            "responses": with_denied(json!({ "204": { "description": "noted" }, "404": error_response("no such instance") })),
        } },
        "/v1/nodes/{id}/assignment": { "get": {
            "operationId": "assignment", "summary": "The replicas a node must run and its container subnet (the node itself, by its proof of identity, or the admin). With `after`, a long poll: answers when the generation differs from it, or after `wait` seconds with the same one.",
            "parameters": [
                parameter("id"),
                { "name": "after", "in": "query", "required": false, "schema": { "type": "integer", "minimum": 0 } },
                { "name": "wait", "in": "query", "required": false, "schema": { "type": "integer", "minimum": 0, "maximum": 60 } },
            ],
            "responses": with_denied(json!({ "200": ok("the node's assignment", &s.assignment), "400": error_response("malformed query"), "404": error_response("no such node in the cluster"), "503": error_response("EC2 could not be reached, or this server is a standby (`leader` names the leader)") })),
        } },
        "/v1/nodes/{id}/status": { "put": {
            "operationId": "nodeStatus", "summary": "What a node runs: each replica's state, why it failed, its address and use (the node itself, by its proof of identity, or the admin).",
            "parameters": [parameter("id")],
            "requestBody": json_body(&s.report),
            "responses": with_denied(json!({ "204": { "description": "noted" }, "400": error_response("malformed body"), "404": error_response("no such node in the cluster"), "413": error_response("body over 64 KiB"), "503": error_response("EC2 could not be reached, or this server is a standby") })),
        } },
        "/v1/nodes/{id}/secrets/{app}/{service}": { "get": {
            "operationId": "nodeSecrets", "summary": "The service's secrets as a Docker env file, for the node itself (by its proof of identity) while a replica of the service is placed on it; read from SSM by kick.",
            "parameters": [parameter("id"), parameter("app"), parameter("service")],
            "responses": with_denied(json!({ "200": { "description": "the env file", "content": { "text/plain": { "schema": { "type": "string" } } } }, "404": error_response("no such node or service in the cluster"), "422": error_response("a parameter SSM does not have, or a value an env file cannot carry (named, never shown)"), "503": error_response("SSM or EC2 could not be reached, or this server is a standby") })),
        } },
        "/v1/records": {
            "put": {
                "operationId": "putRecord", "summary": "Create or change one of the caller's records; answers once Route53 has committed it.",
                "requestBody": json_body(&s.record),
                "responses": with_denied(json!({
                    "200": { "description": "committed", "content": { "application/json": { "schema": { "type": "object" } } } },
                    "400": error_response("malformed body, or Route53 refused the record"), "409": error_response("the name exists and is not Huxley's"),
                    "413": error_response("body over 64 KiB"), "502": error_response("Route53 could not be reached"),
                })),
            },
            "delete": {
                "operationId": "deleteRecord", "summary": "Remove one of the caller's records.",
                "requestBody": json_body(&s.record),
                "responses": with_denied(json!({
                    "204": { "description": "removed" }, "400": error_response("malformed body"), "404": error_response("no such record"),
                    "409": error_response("the name is not Huxley's"), "413": error_response("body over 64 KiB"), "502": error_response("Route53 could not be reached"),
                })),
            },
        },
    })
}

/// A response with the error body.
fn error_response(description: &str) -> Value {
    json!({ "description": description, "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } })
}

/// A JSON request body of `schema`.
fn json_body(schema: &Schema) -> Value {
    json!({ "required": true, "content": { "application/json": { "schema": schema } } })
}

/// A JSON answer of `schema`.
fn ok(description: &str, schema: &Schema) -> Value {
    json!({ "description": description, "content": { "application/json": { "schema": schema } } })
}

/// `responses` with the answers to a missing or too narrow token.
fn with_denied(mut responses: Value) -> Value {
    if let Some(map) = responses.as_object_mut() {
        map.insert("401".into(), error_response("no valid bearer token"));
        map.insert(
            "403".into(),
            error_response("the token's scope does not cover this"),
        );
    }
    responses
}

/// A path parameter.
fn parameter(name: &str) -> Value {
    json!({ "name": name, "in": "path", "required": true, "schema": { "type": "string" } })
}

/// The document as pretty JSON with a trailing newline.
pub fn to_json() -> String {
    let mut text = serde_json::to_string_pretty(&document()).expect("the document serializes");
    text.push('\n');
    text
}
