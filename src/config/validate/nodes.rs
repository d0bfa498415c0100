//! The `[cluster.nodes]` table: instance type, image, size, cost, consolidation.

use std::time::Duration;

use super::Checker;
use crate::config::names;
use crate::config::raw::{RawBudget, RawConsolidation, RawControl, RawNodes};
use crate::config::spanned::Spanned;
use crate::diagnostic::Diagnostic;
use crate::model::{self, Consolidation, Control, FlatcarChannel, NodeImage, Nodes, aws};
use crate::spec::kick::Budget;
use crate::spec::quantity;

impl Checker<'_> {
    pub(super) fn nodes(&mut self, spanned: &Spanned<RawNodes>) -> Option<Nodes> {
        let table = &spanned.span;
        let head = self.header(table);
        let raw = &spanned.value;
        let place = "`[cluster.nodes]`";
        let instance_type = self
            .required(
                &raw.instance_type,
                table,
                head.clone(),
                "instance-type",
                place,
                "instance-type = \"m6i.large\"",
            )
            .and_then(|t| self.instance_type(t));
        let min = self
            .required(&raw.min, table, head.clone(), "min", place, "min = 2")
            .and_then(|v| self.int_in::<u32>(v, 1..=1000, "nodes.min"));
        let max = self
            .required(&raw.max, table, head, "max", place, "max = 10")
            .and_then(|v| self.int_in::<u32>(v, 1..=1000, "nodes.max"));
        let desired = raw
            .desired
            .as_ref()
            .map(|v| (v, self.int_in::<u32>(v, 1..=1000, "nodes.desired")));
        if let (Some(lo), Some(hi), Some(min_raw), Some(max_raw)) = (min, max, &raw.min, &raw.max)
            && lo > hi
        {
            self.push(
                Diagnostic::error("nodes.min is greater than nodes.max")
                    .at(min_raw.span.clone(), format!("min = {lo}"))
                    .also(max_raw.span.clone(), format!("max = {hi}"))
                    .help("make min at most max"),
            );
        }
        let desired = match desired {
            None => min,
            Some((raw_desired, Some(d))) => {
                if let (Some(lo), Some(hi)) = (min, max)
                    && !(lo..=hi).contains(&d)
                {
                    self.push(Diagnostic::error("nodes.desired is outside min..max").at(
                        raw_desired.span.clone(),
                        format!("{d} is not between {lo} and {hi}"),
                    ));
                }
                Some(d)
            }
            Some((_, None)) => None,
        };
        let disk_gb = match &raw.disk_gb {
            None => Some(30),
            Some(v) => self.int_in::<u32>(v, 8..=16384, "nodes.disk-gb"),
        };
        let image = match &raw.image {
            None => Some(NodeImage::Flatcar(FlatcarChannel::Stable)),
            Some(image) => self.node_image(image),
        };
        let hourly_cost = match &raw.hourly_cost {
            Some(cost) => self.money(cost, "nodes.hourly-cost"),
            None => instance_type.map(aws::hourly_cost),
        };
        let consolidation = self.consolidation(raw.consolidation.as_ref());
        Some(Nodes {
            instance_type: instance_type?,
            min: min?,
            max: max?,
            desired: desired?,
            disk_gb: disk_gb?,
            image: image?,
            hourly_cost: hourly_cost?,
            consolidation: consolidation?,
        })
    }

    /// The `[cluster.control]` table, every key defaulted.
    pub(super) fn control(&mut self, spanned: Option<&Spanned<RawControl>>) -> Option<Control> {
        let raw = spanned.map(|s| &s.value);
        let instance_type = match raw.and_then(|r| r.instance_type.as_ref()) {
            Some(name) => self.instance_type(name),
            None => aws::instance_type(model::DEFAULT_CONTROL_TYPE),
        };
        let count = match raw.and_then(|r| r.count.as_ref()) {
            Some(v) => self.int_in::<u32>(v, 1..=3, "control.count"),
            None => Some(2),
        };
        let disk_gb = match raw.and_then(|r| r.disk_gb.as_ref()) {
            Some(v) => self.int_in::<u32>(v, 8..=16384, "control.disk-gb"),
            None => Some(30),
        };
        Some(Control {
            instance_type: instance_type?,
            count: count?,
            disk_gb: disk_gb?,
        })
    }

    /// `[cluster.logs] retention-days`: one of the periods CloudWatch
    /// Logs accepts (default 30), or the nearest ones suggested.
    pub(super) fn log_retention(
        &mut self,
        spanned: Option<&Spanned<crate::config::raw::RawLogs>>,
    ) -> Option<u32> {
        let Some(days) = spanned.and_then(|s| s.value.retention_days.as_ref()) else {
            return Some(30);
        };
        if let Some(valid) = u32::try_from(days.value)
            .ok()
            .filter(|d| model::LOG_RETENTION_DAYS.contains(d))
        {
            return Some(valid);
        }
        let below = model::LOG_RETENTION_DAYS
            .iter()
            .rev()
            .find(|d| i64::from(**d) < days.value);
        let above = model::LOG_RETENTION_DAYS
            .iter()
            .find(|d| i64::from(**d) > days.value);
        let nearest: Vec<String> = below.into_iter().chain(above).map(u32::to_string).collect();
        self.push(
            Diagnostic::error("`logs.retention-days` is not a period CloudWatch Logs keeps")
                .at(days.span.clone(), format!("{} days", days.value))
                .note(format!(
                    "CloudWatch Logs keeps lines for one of {} days",
                    model::LOG_RETENTION_DAYS.map(|d| d.to_string()).join(", ")
                ))
                .help(format!("use {}", nearest.join(" or "))),
        );
        None
    }

    /// An amount of USD: finite and not negative.
    fn money(&mut self, value: &Spanned<f64>, what: &str) -> Option<f64> {
        if value.value.is_finite() && value.value >= 0.0 && value.value < 1e9 {
            return Some(value.value);
        }
        self.push(
            Diagnostic::error(format!("{what} is out of range"))
                .at(
                    value.span.clone(),
                    format!("{} is not an amount of USD", value.value),
                )
                .help("write a number of dollars, such as 0.096"),
        );
        None
    }

    /// A duration of at most an hour (kick multiplies some), or `default`.
    pub(super) fn duration_or(
        &mut self,
        value: Option<&Spanned<String>>,
        default: Duration,
        what: &str,
    ) -> Option<Duration> {
        let Some(value) = value else {
            return Some(default);
        };
        let duration = self.check(quantity::duration(&value.value), &value.span, || {
            format!("invalid duration for `{what}`")
        })?;
        if duration > Duration::from_secs(3600) {
            self.push(
                Diagnostic::error(format!("`{what}` is longer than an hour"))
                    .at(value.span.clone(), "too long")
                    .help("use at most \"1h\""),
            );
            return None;
        }
        Some(duration)
    }

    /// `consolidation`: `Some(None)` when turned off.
    pub(super) fn consolidation(
        &mut self,
        raw: Option<&Spanned<RawConsolidation>>,
    ) -> Option<Option<Consolidation>> {
        let defaults = Consolidation {
            budget: Budget::Percent(10),
            min_monthly_savings: 10.0,
            after: Duration::from_secs(600),
        };
        let Some(raw) = raw else {
            return Some(Some(defaults));
        };
        let settings = match &raw.value {
            RawConsolidation::Enabled(true) => return Some(Some(defaults)),
            RawConsolidation::Enabled(false) => return Some(None),
            RawConsolidation::Settings(settings) => settings,
        };
        // Inside a value that is either a boolean or a table, TOML keeps no
        // places: problems point at the table and name the key.
        let budget = match &settings.budget {
            None => Some(defaults.budget),
            Some(RawBudget::Count(n)) if (1..=1000).contains(n) => {
                u32::try_from(*n).ok().map(Budget::Nodes)
            }
            Some(RawBudget::Share(text))
                if text
                    .strip_suffix('%')
                    .and_then(|p| p.trim().parse::<u8>().ok())
                    .is_some_and(|p| (1..=100).contains(&p)) =>
            {
                text.strip_suffix('%')
                    .and_then(|p| p.trim().parse::<u8>().ok())
                    .map(Budget::Percent)
            }
            Some(other) => {
                let given = match other {
                    RawBudget::Count(n) => n.to_string(),
                    RawBudget::Share(text) => format!("\"{text}\""),
                };
                self.push(
                    Diagnostic::error("consolidation.budget is out of range")
                        .at(raw.span.clone(), format!("budget = {given}"))
                        .help(
                            "write a node count from 1 to 1000, or a share from \"1%\" to \"100%\"",
                        ),
                );
                None
            }
        };
        let min_monthly_savings = match settings.min_savings {
            None => Some(defaults.min_monthly_savings),
            Some(v) => self.money(
                &Spanned {
                    span: raw.span.clone(),
                    value: v,
                },
                "consolidation.min-savings",
            ),
        };
        let after_text = settings.after.as_ref().map(|a| Spanned {
            value: a.clone(),
            span: raw.span.clone(),
        });
        let after = self.duration_or(after_text.as_ref(), defaults.after, "consolidation.after");
        Some(Some(Consolidation {
            budget: budget?,
            min_monthly_savings: min_monthly_savings?,
            after: after?,
        }))
    }

    pub(super) fn instance_type(
        &mut self,
        name: &Spanned<String>,
    ) -> Option<&'static aws::InstanceType> {
        if let Some(t) = aws::instance_type(&name.value) {
            if t.memory_mib <= model::NODE_RESERVED_MEMORY_MIB {
                self.push(
                    Diagnostic::error(format!("`{}` is too small for a node", name.value))
                        .at(name.span.clone(), format!("{} MiB of memory", t.memory_mib))
                        .note(format!(
                            "each node keeps {} MiB for the OS and Huxley's agents",
                            model::NODE_RESERVED_MEMORY_MIB
                        ))
                        .help("use t3.small or larger"),
                );
                return None;
            }
            return Some(t);
        }
        let d = Diagnostic::error(format!("unknown instance type `{}`", name.value));
        let d = if aws::is_arm64(&name.value) {
            d.at(name.span.clone(), "an arm64 (Graviton) type")
                .note("Huxley resolves x86_64 Flatcar images; arm64 nodes are not supported yet")
                .help("pick the x86_64 sibling, such as m6i for m6g")
        } else {
            let d = d.at(
                name.span.clone(),
                "not in Huxley's table of EC2 instance types",
            );
            match names::did_you_mean(&name.value, aws::instance_types().map(|t| t.name)) {
                Some(s) => d.help(format!("did you mean `{s}`?")),
                None => d.help("use a t3, m5, m6i, m7i, c5, c6i, c7i, r5, r6i or r7i type (and their `a` variants)"),
            }
        };
        self.push(d);
        None
    }

    fn node_image(&mut self, image: &Spanned<String>) -> Option<NodeImage> {
        let value = image.value.as_str();
        let channel = match value {
            "flatcar-stable" => Some(FlatcarChannel::Stable),
            "flatcar-beta" => Some(FlatcarChannel::Beta),
            "flatcar-alpha" => Some(FlatcarChannel::Alpha),
            _ => None,
        };
        if let Some(channel) = channel {
            return Some(NodeImage::Flatcar(channel));
        }
        let ami_ok = value.strip_prefix("ami-").is_some_and(|hex| {
            (hex.len() == 8 || hex.len() == 17)
                && hex
                    .chars()
                    .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
        });
        if ami_ok {
            return Some(NodeImage::Ami(value.to_owned()));
        }
        let d = Diagnostic::error(format!("`{value}` is not a node image")).at(
            image.span.clone(),
            "expected a Flatcar channel or an AMI id",
        );
        let d = match names::did_you_mean(value, ["flatcar-stable", "flatcar-beta", "flatcar-alpha"]) {
            Some(s) => d.help(format!("did you mean `{s}`?")),
            None => d.help("use \"flatcar-stable\", \"flatcar-beta\", \"flatcar-alpha\" or \"ami-0123456789abcdef0\""),
        };
        self.push(d);
        None
    }
}
