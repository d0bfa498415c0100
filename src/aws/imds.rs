//! Who this node is, from the instance metadata service (IMDSv2, through
//! the SDK's client). `AWS_EC2_METADATA_SERVICE_ENDPOINT` points it
//! elsewhere, as the SDK documents (the tests use a loopback stand-in).

use std::net::IpAddr;

use super::AwsError;

/// What the instance metadata says of this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub instance_id: String,
    pub zone: String,
    pub private_address: IpAddr,
    /// The public IPv4 address, when the node has one.
    pub public_address: Option<IpAddr>,
}

/// Reads this node's identity.
pub async fn identity() -> Result<Identity, AwsError> {
    let client = aws_config::imds::Client::builder().build();
    let get = async |path: &str| {
        client
            .get(path)
            .await
            .map(|v| v.as_ref().trim().to_owned())
            .map_err(|e| AwsError::Other {
                action: format!("reading {path} from the instance metadata"),
                detail: aws_sdk_s3::error::DisplayErrorContext(&e).to_string(),
            })
    };
    let instance_id = get("/latest/meta-data/instance-id").await?;
    let zone = get("/latest/meta-data/placement/availability-zone").await?;
    let private = get("/latest/meta-data/local-ipv4").await?;
    let private_address = private.parse().map_err(|_| AwsError::Other {
        action: "reading the node's address from the instance metadata".into(),
        detail: format!("`{private}` is not an IP address"),
    })?;
    // A node in a subnet without public addresses has none: not an error.
    let public_address = get("/latest/meta-data/public-ipv4")
        .await
        .ok()
        .and_then(|a| a.parse().ok());
    Ok(Identity {
        instance_id,
        zone,
        private_address,
        public_address,
    })
}
