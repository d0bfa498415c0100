//! The OpenAPI 3.1 document of the kick server's API, built from the same
//! types the handlers read and write, served at `/v1/openapi.json` and
//! checked in as `schemas/kick.openapi.json` (a test keeps it current).

use schemars::generate::SchemaSettings;
use serde_json::{Value, json};

use crate::spec::description::{AppDescription, ClusterDescription, ServiceDescription};

use crate::spec::assignment::{Assignment, NodeReport};
use crate::spec::registry::RecordRequest;
use crate::spec::registry::Registration;

/// The document.
pub fn document() -> Value {
    let mut generator = SchemaSettings::draft2020_12()
        .with(|s| s.definitions_path = "/components/schemas".into())
        .into_generator();
    let registration = generator.subschema_for::<Registration>();
    let record = generator.subschema_for::<RecordRequest>();
    let cluster = generator.subschema_for::<ClusterDescription>();
    let app = generator.subschema_for::<AppDescription>();
    let service = generator.subschema_for::<ServiceDescription>();
    let assignment = generator.subschema_for::<Assignment>();
    let report = generator.subschema_for::<NodeReport>();
    let deploy = generator.subschema_for::<crate::spec::release::DeployRequest>();
    let release = generator.subschema_for::<crate::spec::release::Release>();
    let releases = generator.subschema_for::<Vec<crate::spec::release::Release>>();
    let mut schemas = generator.take_definitions(true);
    schemas.insert(
        "Error".into(),
        json!({ "type": "object", "required": ["error"], "properties": { "error": { "type": "string" } } }),
    );
    let error = |description: &str| json!({ "description": description, "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } });
    let json_body = |schema: &schemars::Schema| json!({ "required": true, "content": { "application/json": { "schema": schema } } });
    let ok = |description: &str, schema: &schemars::Schema| json!({ "description": description, "content": { "application/json": { "schema": schema } } });
    let denied = json!({ "401": error("no valid bearer token"), "403": error("the token's scope does not cover this") });
    let with = |mut responses: Value| {
        if let (Some(map), Some(extra)) = (responses.as_object_mut(), denied.as_object()) {
            map.extend(extra.clone());
        }
        responses
    };
    let parameter = |name: &str| json!({ "name": name, "in": "path", "required": true, "schema": { "type": "string" } });
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
        "paths": {
            "/healthz": { "get": {
                "operationId": "healthz", "summary": "Liveness.", "security": [],
                "responses": { "200": { "description": "alive", "content": { "text/plain": { "schema": { "type": "string" } } } } },
            } },
            "/v1/openapi.json": { "get": {
                "operationId": "openapi", "summary": "This document.",
                "responses": with(json!({ "200": { "description": "the OpenAPI document", "content": { "application/json": { "schema": { "type": "object" } } } } })),
            } },
            "/metrics": { "get": {
                "operationId": "metrics", "summary": "Prometheus metrics.",
                "responses": with(json!({ "200": { "description": "metrics", "content": { "text/plain": { "schema": { "type": "string" } } } } })),
            } },
            "/v1/cluster": { "get": {
                "operationId": "describeCluster", "summary": "The whole cluster (admin).",
                "responses": with(json!({ "200": ok("the description", &cluster) })),
            } },
            "/v1/apps/{app}": { "get": {
                "operationId": "describeApp", "summary": "One app (admin).", "parameters": [parameter("app")],
                "responses": with(json!({ "200": ok("the app", &app), "404": error("no such app") })),
            } },
            "/v1/apps/{app}/services/{service}": { "get": {
                "operationId": "describeService", "summary": "One service.", "parameters": [parameter("app"), parameter("service")],
                "responses": with(json!({ "200": ok("the service", &service), "404": error("no such service") })),
            } },
            "/v1/apps/{app}/deployments": {
                "post": {
                    "operationId": "deploy", "summary": "Roll out a release of the app's built services (the hook server after a push, or admin), or roll back to an earlier one (`rollback_to`, admin): health-gated batches, rolled back when a new replica fails. Follow it with GET .../deployments/{id}.",
                    "parameters": [parameter("app")],
                    "requestBody": json_body(&deploy),
                    "responses": with(json!({
                        "202": ok("the deploy started", &release),
                        "200": { "description": "nothing to deploy: the services already run these images", "content": { "application/json": { "schema": { "type": "object", "required": ["unchanged", "message"], "properties": { "unchanged": { "type": "boolean" }, "message": { "type": "string" } } } } } },
                        "400": error("malformed body, an image not pinned by digest, or not one per built service"),
                        "404": error("no such app, or no such release to roll back to"),
                        "409": error("a deploy of the app is running (`holder` says which)"),
                        "413": error("body over 64 KiB"),
                        "503": error("the deploy history is not read yet"),
                    })),
                },
                "get": {
                    "operationId": "deployments", "summary": "The app's deploys, newest first (admin or hook).",
                    "parameters": [parameter("app")],
                    "responses": with(json!({ "200": ok("the deploys", &releases), "404": error("no such app") })),
                },
            },
            "/v1/apps/{app}/deployments/{id}": { "get": {
                "operationId": "deployment", "summary": "One deploy with its progress (admin or hook).",
                "parameters": [parameter("app"), { "name": "id", "in": "path", "required": true, "description": "The release number, e.g. 3 or v3.", "schema": { "type": "string" } }],
                "responses": with(json!({ "200": ok("the deploy", &release), "400": error("the release is not a number"), "404": error("no such app or deploy") })),
            } },
            "/v1/instances": { "post": {
                "operationId": "register", "summary": "Register an instance of the caller's service; answers once Route53 holds the registration (the service's replicas record), so a restarted kick finds it. Registering again is harmless.",
                "requestBody": json_body(&registration),
                "responses": with(json!({
                    "201": { "description": "registered and committed to Route53", "content": { "application/json": { "schema": { "type": "object", "required": ["id", "committed"], "properties": { "id": { "type": "string" }, "committed": { "type": "boolean" } } } } } },
                    "400": error("malformed body, or a node or version kick cannot record"), "404": error("no such service, or no such node in the cluster"),
                    "409": error("the service's replicas record is full"), "413": error("body over 64 KiB"),
                    "503": error("Route53 or EC2 could not be reached: register again"),
                })),
            } },
            "/v1/instances/{id}": { "delete": {
                "operationId": "deregister", "summary": "Deregister an instance.", "parameters": [parameter("id")],
                "responses": with(json!({ "204": { "description": "deregistered" }, "404": error("no such instance"), "503": error("deregistered, but Route53 could not be reached: a later change removes it") })),
            } },
            "/v1/instances/{id}/heartbeat": { "put": {
                "operationId": "heartbeat", "summary": "Say an instance is alive.", "parameters": [parameter("id")],
                "responses": with(json!({ "204": { "description": "noted" }, "404": error("no such instance") })),
            } },
            "/v1/nodes/{id}/assignment": { "get": {
                "operationId": "assignment", "summary": "The replicas a node must run and its container subnet (node agents' token, or admin). With `after`, a long poll: answers when the generation differs from it, or after `wait` seconds with the same one.",
                "parameters": [
                    parameter("id"),
                    { "name": "after", "in": "query", "required": false, "schema": { "type": "integer", "minimum": 0 } },
                    { "name": "wait", "in": "query", "required": false, "schema": { "type": "integer", "minimum": 0, "maximum": 60 } },
                ],
                "responses": with(json!({ "200": ok("the node's assignment", &assignment), "400": error("malformed query"), "404": error("no such node in the cluster"), "503": error("EC2 could not be reached, or this server is a standby (`leader` names the leader)") })),
            } },
            "/v1/nodes/{id}/status": { "put": {
                "operationId": "nodeStatus", "summary": "What a node runs: each replica's state, why it failed, its address and use (node agents' token, or admin).",
                "parameters": [parameter("id")],
                "requestBody": json_body(&report),
                "responses": with(json!({ "204": { "description": "noted" }, "400": error("malformed body"), "404": error("no such node in the cluster"), "413": error("body over 64 KiB"), "503": error("EC2 could not be reached, or this server is a standby") })),
            } },
            "/v1/records": {
                "put": {
                    "operationId": "putRecord", "summary": "Create or change one of the caller's records; answers once Route53 has committed it.",
                    "requestBody": json_body(&record),
                    "responses": with(json!({
                        "200": { "description": "committed", "content": { "application/json": { "schema": { "type": "object" } } } },
                        "400": error("malformed body, or Route53 refused the record"), "409": error("the name exists and is not Huxley's"),
                        "413": error("body over 64 KiB"), "502": error("Route53 could not be reached"),
                    })),
                },
                "delete": {
                    "operationId": "deleteRecord", "summary": "Remove one of the caller's records.",
                    "requestBody": json_body(&record),
                    "responses": with(json!({
                        "204": { "description": "removed" }, "400": error("malformed body"), "404": error("no such record"),
                        "409": error("the name is not Huxley's"), "413": error("body over 64 KiB"), "502": error("Route53 could not be reached"),
                    })),
                },
            },
        },
    })
}

/// The document as pretty JSON with a trailing newline.
pub fn to_json() -> String {
    let mut text = serde_json::to_string_pretty(&document()).expect("the document serializes");
    text.push('\n');
    text
}
