//! Facts about AWS the validator checks against, shipped as data: EC2
//! instance types with their size, and the known regions.
//!
//! The instance table covers the common x86_64 families (Flatcar images are
//! resolved for x86_64). Sizes are from the EC2 instance type pages; a type
//! missing here is reported with the nearest known names.

/// An EC2 instance type's capacity.
#[derive(Debug, PartialEq, Eq)]
pub struct InstanceType {
    pub name: &'static str,
    pub vcpus: u32,
    pub memory_mib: u64,
}

macro_rules! family {
    ($family:literal: $( $size:literal => ($vcpus:expr, $gib:expr) ),* $(,)?) => {
        [ $( InstanceType {
            name: concat!($family, ".", $size),
            vcpus: $vcpus,
            memory_mib: ($gib * 1024.0) as u64,
        } ),* ]
    };
}

/// General purpose sizes: 4 GiB per vCPU.
macro_rules! general {
    ($family:literal, [$($size:literal => $vcpus:expr),*]) => {
        family!($family: $( $size => ($vcpus, $vcpus as f64 * 4.0) ),*)
    };
}
/// Compute optimised sizes: 2 GiB per vCPU.
macro_rules! compute {
    ($family:literal, [$($size:literal => $vcpus:expr),*]) => {
        family!($family: $( $size => ($vcpus, $vcpus as f64 * 2.0) ),*)
    };
}
/// Memory optimised sizes: 8 GiB per vCPU.
macro_rules! memory {
    ($family:literal, [$($size:literal => $vcpus:expr),*]) => {
        family!($family: $( $size => ($vcpus, $vcpus as f64 * 8.0) ),*)
    };
}

static T3: [InstanceType; 7] = family!("t3":
    "nano" => (2, 0.5), "micro" => (2, 1.0), "small" => (2, 2.0), "medium" => (2, 4.0),
    "large" => (2, 8.0), "xlarge" => (4, 16.0), "2xlarge" => (8, 32.0));
static T3A: [InstanceType; 7] = family!("t3a":
    "nano" => (2, 0.5), "micro" => (2, 1.0), "small" => (2, 2.0), "medium" => (2, 4.0),
    "large" => (2, 8.0), "xlarge" => (4, 16.0), "2xlarge" => (8, 32.0));
static M5: [InstanceType; 8] = general!("m5", ["large" => 2, "xlarge" => 4, "2xlarge" => 8,
    "4xlarge" => 16, "8xlarge" => 32, "12xlarge" => 48, "16xlarge" => 64, "24xlarge" => 96]);
static M5A: [InstanceType; 8] = general!("m5a", ["large" => 2, "xlarge" => 4, "2xlarge" => 8,
    "4xlarge" => 16, "8xlarge" => 32, "12xlarge" => 48, "16xlarge" => 64, "24xlarge" => 96]);
static M6I: [InstanceType; 9] = general!("m6i", ["large" => 2, "xlarge" => 4, "2xlarge" => 8,
    "4xlarge" => 16, "8xlarge" => 32, "12xlarge" => 48, "16xlarge" => 64, "24xlarge" => 96,
    "32xlarge" => 128]);
static M6A: [InstanceType; 10] = general!("m6a", ["large" => 2, "xlarge" => 4, "2xlarge" => 8,
    "4xlarge" => 16, "8xlarge" => 32, "12xlarge" => 48, "16xlarge" => 64, "24xlarge" => 96,
    "32xlarge" => 128, "48xlarge" => 192]);
static M7I: [InstanceType; 9] = general!("m7i", ["large" => 2, "xlarge" => 4, "2xlarge" => 8,
    "4xlarge" => 16, "8xlarge" => 32, "12xlarge" => 48, "16xlarge" => 64, "24xlarge" => 96,
    "48xlarge" => 192]);
static M7A: [InstanceType; 10] = general!("m7a", ["medium" => 1, "large" => 2, "xlarge" => 4,
    "2xlarge" => 8, "4xlarge" => 16, "8xlarge" => 32, "12xlarge" => 48, "16xlarge" => 64,
    "24xlarge" => 96, "48xlarge" => 192]);
static C5: [InstanceType; 8] = compute!("c5", ["large" => 2, "xlarge" => 4, "2xlarge" => 8,
    "4xlarge" => 16, "9xlarge" => 36, "12xlarge" => 48, "18xlarge" => 72, "24xlarge" => 96]);
static C6I: [InstanceType; 9] = compute!("c6i", ["large" => 2, "xlarge" => 4, "2xlarge" => 8,
    "4xlarge" => 16, "8xlarge" => 32, "12xlarge" => 48, "16xlarge" => 64, "24xlarge" => 96,
    "32xlarge" => 128]);
static C6A: [InstanceType; 10] = compute!("c6a", ["large" => 2, "xlarge" => 4, "2xlarge" => 8,
    "4xlarge" => 16, "8xlarge" => 32, "12xlarge" => 48, "16xlarge" => 64, "24xlarge" => 96,
    "32xlarge" => 128, "48xlarge" => 192]);
static C7I: [InstanceType; 9] = compute!("c7i", ["large" => 2, "xlarge" => 4, "2xlarge" => 8,
    "4xlarge" => 16, "8xlarge" => 32, "12xlarge" => 48, "16xlarge" => 64, "24xlarge" => 96,
    "48xlarge" => 192]);
static R5: [InstanceType; 8] = memory!("r5", ["large" => 2, "xlarge" => 4, "2xlarge" => 8,
    "4xlarge" => 16, "8xlarge" => 32, "12xlarge" => 48, "16xlarge" => 64, "24xlarge" => 96]);
static R6I: [InstanceType; 9] = memory!("r6i", ["large" => 2, "xlarge" => 4, "2xlarge" => 8,
    "4xlarge" => 16, "8xlarge" => 32, "12xlarge" => 48, "16xlarge" => 64, "24xlarge" => 96,
    "32xlarge" => 128]);
static R7I: [InstanceType; 9] = memory!("r7i", ["large" => 2, "xlarge" => 4, "2xlarge" => 8,
    "4xlarge" => 16, "8xlarge" => 32, "12xlarge" => 48, "16xlarge" => 64, "24xlarge" => 96,
    "48xlarge" => 192]);

static FAMILIES: [&[InstanceType]; 15] = [
    &T3, &T3A, &M5, &M5A, &M6I, &M6A, &M7I, &M7A, &C5, &C6I, &C6A, &C7I, &R5, &R6I, &R7I,
];

/// Every known instance type.
pub fn instance_types() -> impl Iterator<Item = &'static InstanceType> {
    FAMILIES.iter().flat_map(|family| family.iter())
}

/// Looks up an instance type by name.
pub fn instance_type(name: &str) -> Option<&'static InstanceType> {
    instance_types().find(|t| t.name == name)
}

/// A type's on-demand Linux price an hour in us-east-1, USD: an estimate
/// for consolidation's savings when `hourly-cost` is not set. Burstable
/// types are priced by memory, the others by vCPU within their family.
pub fn hourly_cost(t: &InstanceType) -> f64 {
    let family = t.name.split('.').next().unwrap_or("");
    let per_gib = match family {
        "t3" => Some(0.0104),
        "t3a" => Some(0.0094),
        _ => None,
    };
    if let Some(per_gib) = per_gib {
        return per_gib * t.memory_mib as f64 / 1024.0;
    }
    let per_vcpu = match family {
        "m5" | "m6i" => 0.048,
        "m5a" => 0.043,
        "m6a" => 0.0432,
        "m7i" => 0.0504,
        "m7a" => 0.05796,
        "c5" | "c6i" => 0.0425,
        "c6a" => 0.03825,
        "c7i" => 0.044_625,
        "r5" | "r6i" => 0.063,
        "r7i" => 0.066_15,
        _ => 0.05,
    };
    per_vcpu * f64::from(t.vcpus)
}

/// Whether a type belongs to an arm64 (Graviton) family, which Huxley does
/// not support yet: its `g` suffix sits after the generation digit.
pub fn is_arm64(name: &str) -> bool {
    let family = name.split('.').next().unwrap_or("");
    let after_digit = family.trim_start_matches(|c: char| c.is_ascii_alphabetic());
    let suffix = after_digit.trim_start_matches(|c: char| c.is_ascii_digit());
    suffix.starts_with('g')
}

/// AWS commercial regions known when this table was written. A region of
/// the right shape that is missing here draws a warning, not an error, so a
/// new region works before Huxley learns its name.
pub const REGIONS: &[&str] = &[
    "af-south-1",
    "ap-east-1",
    "ap-east-2",
    "ap-northeast-1",
    "ap-northeast-2",
    "ap-northeast-3",
    "ap-south-1",
    "ap-south-2",
    "ap-southeast-1",
    "ap-southeast-2",
    "ap-southeast-3",
    "ap-southeast-4",
    "ap-southeast-5",
    "ap-southeast-7",
    "ca-central-1",
    "ca-west-1",
    "eu-central-1",
    "eu-central-2",
    "eu-north-1",
    "eu-south-1",
    "eu-south-2",
    "eu-west-1",
    "eu-west-2",
    "eu-west-3",
    "il-central-1",
    "me-central-1",
    "me-south-1",
    "mx-central-1",
    "sa-east-1",
    "us-east-1",
    "us-east-2",
    "us-west-1",
    "us-west-2",
];

/// The accounts Elastic Load Balancing writes access logs from, in the
/// regions that opened before August 2022: an access-log bucket's policy
/// names the one of its region. Regions opened since have none; there the
/// policy names the service principal [`ELB_LOG_DELIVERY`] instead.
///
/// From AWS's "Enable access logs for your Application Load Balancer"
/// (step 2, the bucket policy), read 2026-12-02 and matched entry by entry
/// against the same table in terraform-provider-aws
/// (`aws_elb_service_account`) and aws-cdk (`region-info`). AWS adds no
/// region to it, so it is complete.
pub const ELB_LOG_ACCOUNTS: &[(&str, &str)] = &[
    ("af-south-1", "098369216593"),
    ("ap-east-1", "754344448648"),
    ("ap-northeast-1", "582318560864"),
    ("ap-northeast-2", "600734575887"),
    ("ap-northeast-3", "383597477331"),
    ("ap-south-1", "718504428378"),
    ("ap-southeast-1", "114774131450"),
    ("ap-southeast-2", "783225319266"),
    ("ap-southeast-3", "589379963580"),
    ("ca-central-1", "985666609251"),
    ("cn-north-1", "638102146993"),
    ("cn-northwest-1", "037604701340"),
    ("eu-central-1", "054676820928"),
    ("eu-north-1", "897822967062"),
    ("eu-south-1", "635631232127"),
    ("eu-west-1", "156460612806"),
    ("eu-west-2", "652711504416"),
    ("eu-west-3", "009996457667"),
    ("me-south-1", "076674570225"),
    ("sa-east-1", "507241528517"),
    ("us-east-1", "127311923021"),
    ("us-east-2", "033677994240"),
    ("us-gov-east-1", "190560391635"),
    ("us-gov-west-1", "048591011584"),
    ("us-west-1", "027434742980"),
    ("us-west-2", "797873946194"),
];

/// Who writes a load balancer's access logs in regions opened since
/// August 2022.
pub const ELB_LOG_DELIVERY: &str = "logdelivery.elasticloadbalancing.amazonaws.com";

/// The account that writes a region's load balancer access logs, if the
/// region has one (see [`ELB_LOG_ACCOUNTS`]).
pub fn elb_log_account(region: &str) -> Option<&'static str> {
    ELB_LOG_ACCOUNTS
        .binary_search_by(|(r, _)| (*r).cmp(region))
        .ok()
        .map(|i| ELB_LOG_ACCOUNTS[i].1)
}

/// Whether a string has the shape of a region name: `us-west-2`,
/// `us-gov-west-1`.
pub fn is_region_shaped(name: &str) -> bool {
    let parts: Vec<&str> = name.split('-').collect();
    parts.len() >= 3
        && parts[0].len() == 2
        && parts[..parts.len() - 1]
            .iter()
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_lowercase()))
        && parts[parts.len() - 1].chars().all(|c| c.is_ascii_digit())
        && !parts[parts.len() - 1].is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_table_is_consistent() {
        let mut names: Vec<_> = instance_types().map(|t| t.name).collect();
        let count = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), count, "duplicate instance type names");
        let m6i = instance_type("m6i.large").expect("m6i.large");
        assert_eq!((m6i.vcpus, m6i.memory_mib), (2, 8192));
        let c5 = instance_type("c5.9xlarge").expect("c5.9xlarge");
        assert_eq!((c5.vcpus, c5.memory_mib), (36, 73728));
        assert_eq!(instance_type("t3.nano").map(|t| t.memory_mib), Some(512));
        assert!(instance_type("m6i.huge").is_none());
    }

    #[test]
    fn arm_families_are_recognised() {
        assert!(is_arm64("m6g.large"));
        assert!(is_arm64("c7gn.large"));
        assert!(is_arm64("t4g.small"));
        assert!(!is_arm64("m6i.large"));
        let cost = |name| hourly_cost(instance_type(name).expect(name));
        assert!((cost("m6i.large") - 0.096).abs() < 1e-9);
        assert!((cost("t3.micro") - 0.0104).abs() < 1e-9);
        assert!((cost("c6i.4xlarge") - 0.68).abs() < 1e-9);
        assert!(!is_arm64("m5a.large"));
    }

    #[test]
    fn elb_log_accounts_are_sorted_and_only_for_older_regions() {
        let regions: Vec<&str> = ELB_LOG_ACCOUNTS.iter().map(|(r, _)| *r).collect();
        let mut sorted = regions.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted, regions, "keep ELB_LOG_ACCOUNTS sorted, once each");
        for (region, account) in ELB_LOG_ACCOUNTS {
            assert!(is_region_shaped(region), "{region}");
            assert!(
                account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit()),
                "{region}: {account}"
            );
        }
        assert_eq!(elb_log_account("eu-central-1"), Some("054676820928"));
        assert_eq!(elb_log_account("us-west-2"), Some("797873946194"));
        // Opened after August 2022: the service principal writes there.
        for newer in [
            "me-central-1",
            "il-central-1",
            "ca-west-1",
            "ap-southeast-4",
        ] {
            assert!(REGIONS.contains(&newer));
            assert_eq!(elb_log_account(newer), None, "{newer}");
        }
    }

    #[test]
    fn region_shapes() {
        assert!(is_region_shaped("us-west-2"));
        assert!(is_region_shaped("us-gov-west-1"));
        assert!(!is_region_shaped("us-west"));
        assert!(!is_region_shaped("US-west-2"));
        assert!(!is_region_shaped("uswest2"));
        let mut sorted = REGIONS.to_vec();
        sorted.sort_unstable();
        assert_eq!(sorted, REGIONS, "keep REGIONS sorted");
    }
}
