//! The container network's routes: each node's container subnet routed to
//! it in the VPC's route table.

use super::{Aws, AwsError};

impl Aws {
    /// Routes `cidr` to the node `instance` (replacing a route to another
    /// node), and lets the node forward traffic that is not its own (source
    /// and destination check off), as a router must.
    pub async fn route_to_node(
        &self,
        table: &str,
        cidr: &str,
        instance: &str,
    ) -> Result<(), AwsError> {
        self.count();
        self.ec2
            .modify_instance_attribute()
            .instance_id(instance)
            .source_dest_check(
                aws_sdk_ec2::types::AttributeBooleanValue::builder()
                    .value(false)
                    .build(),
            )
            .send()
            .await
            .map_err(|e| self.err("ec2:ModifyInstanceAttribute", e))?;
        self.count();
        let created = self
            .ec2
            .create_route()
            .route_table_id(table)
            .destination_cidr_block(cidr)
            .instance_id(instance)
            .send()
            .await;
        match created {
            Ok(_) => Ok(()),
            Err(err) => {
                use aws_sdk_s3::error::ProvideErrorMetadata as _;
                if err.code() != Some("RouteAlreadyExists") {
                    return Err(self.err("ec2:CreateRoute", err));
                }
                self.count();
                self.ec2
                    .replace_route()
                    .route_table_id(table)
                    .destination_cidr_block(cidr)
                    .instance_id(instance)
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(|e| self.err("ec2:ReplaceRoute", e))
            }
        }
    }

    /// Removes the route of `cidr`; one that is gone is no error.
    pub async fn delete_route(&self, table: &str, cidr: &str) -> Result<(), AwsError> {
        self.count();
        match self
            .ec2
            .delete_route()
            .route_table_id(table)
            .destination_cidr_block(cidr)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(err) => {
                use aws_sdk_s3::error::ProvideErrorMetadata as _;
                if err.code() == Some("InvalidRoute.NotFound") {
                    Ok(())
                } else {
                    Err(self.err("ec2:DeleteRoute", err))
                }
            }
        }
    }

    /// The routes of `table` that lead to an instance: (destination, instance).
    pub async fn instance_routes(&self, table: &str) -> Result<Vec<(String, String)>, AwsError> {
        self.count();
        let output = self
            .ec2
            .describe_route_tables()
            .route_table_ids(table)
            .send()
            .await
            .map_err(|e| self.err("ec2:DescribeRouteTables", e))?;
        let mut routes: Vec<(String, String)> = output
            .route_tables()
            .iter()
            .flat_map(|t| t.routes())
            .filter_map(|r| {
                Some((
                    r.destination_cidr_block()?.to_owned(),
                    r.instance_id()?.to_owned(),
                ))
            })
            .collect();
        routes.sort();
        Ok(routes)
    }
}
