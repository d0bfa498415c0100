//! Quantities a user writes as text: durations ("10s", "1m30s"), memory
//! sizes ("512Mi", "2Gi") and CPU ("500m", 0.5).
//!
//! Each parser returns `Err(reason)` with a reason that says how to fix it.

use std::time::Duration;

/// Parses "500ms", "10s", "2m", "1h", or a sum such as "1m30s".
pub fn duration(text: &str) -> Result<Duration, String> {
    const HINT: &str = "write a duration such as \"500ms\", \"10s\", \"2m\" or \"1m30s\"";
    if text.is_empty() {
        return Err(HINT.into());
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(HINT.into());
        }
        let amount: u64 = rest[..digits]
            .parse()
            .map_err(|_| "number too large".to_owned())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let part = match &rest[..unit_len] {
            "ms" => Duration::from_millis(amount),
            "s" => Duration::from_secs(amount),
            "m" => Duration::from_secs(amount.saturating_mul(60)),
            "h" => Duration::from_secs(amount.saturating_mul(3600)),
            "" => return Err(format!("missing unit; {HINT}")),
            unit => return Err(format!("unknown unit `{unit}`; {HINT}")),
        };
        total = total.saturating_add(part);
        rest = &rest[unit_len..];
    }
    Ok(total)
}

/// Formats a duration the way [`duration`] reads it, e.g. "1m30s", "500ms".
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    let (h, rem) = (ms / 3_600_000, ms % 3_600_000);
    let (m, rem) = (rem / 60_000, rem % 60_000);
    let (s, ms) = (rem / 1000, rem % 1000);
    for (n, unit) in [(h, "h"), (m, "m"), (s, "s"), (ms, "ms")] {
        if n > 0 {
            out.push_str(&format!("{n}{unit}"));
        }
    }
    out
}

/// Parses a memory size in Mi or Gi ("512Mi", "1.5Gi") into MiB.
pub fn memory_mib(text: &str) -> Result<u64, String> {
    let (number, factor) = if let Some(n) = text.strip_suffix("Gi") {
        (n, 1024.0)
    } else if let Some(n) = text.strip_suffix("Mi") {
        (n, 1.0)
    } else {
        let hint = match text.trim_start_matches(|c: char| c.is_ascii_digit() || c == '.') {
            "" => format!("add a unit: \"{text}Mi\""),
            "M" | "m" | "MB" => format!(
                "use binary units: \"{}Mi\"",
                text.trim_end_matches(['M', 'm', 'B'])
            ),
            "G" | "g" | "GB" => format!(
                "use binary units: \"{}Gi\"",
                text.trim_end_matches(['G', 'g', 'B'])
            ),
            _ => "write a size in Mi or Gi, such as \"512Mi\" or \"2Gi\"".into(),
        };
        return Err(hint);
    };
    let value: f64 = number
        .parse()
        .ok()
        .filter(|v: &f64| v.is_finite() && *v > 0.0 && !number.starts_with(['+', '-']))
        .ok_or_else(|| "write a positive size such as \"512Mi\" or \"2Gi\"".to_owned())?;
    let mib = value * factor;
    if mib.fract() != 0.0 {
        return Err("not a whole number of MiB".into());
    }
    Ok(mib as u64)
}

/// Parses CPU given as "500m" (millicores) or as a number of vCPUs
/// ("0.5", 0.5, 2) into millicores.
pub fn cpu_millis_text(text: &str) -> Result<u32, String> {
    if let Some(millis) = text.strip_suffix('m') {
        return millis
            .parse::<u32>()
            .ok()
            .filter(|m| *m > 0)
            .ok_or_else(|| "write millicores as a positive whole number, such as \"500m\"".into());
    }
    match text.parse::<f64>() {
        Ok(v) => cpu_millis_number(v),
        Err(_) => Err("write CPU as \"500m\" or as a number of vCPUs such as 0.5".into()),
    }
}

/// Converts a number of vCPUs into millicores.
pub fn cpu_millis_number(vcpus: f64) -> Result<u32, String> {
    let millis = vcpus * 1000.0;
    if !millis.is_finite() || millis <= 0.0 || millis > 1_000_000.0 {
        return Err("CPU must be a positive number of vCPUs".into());
    }
    if (millis - millis.round()).abs() > 1e-6 {
        return Err("finer than a millicore; round to three decimals".into());
    }
    Ok(millis.round() as u32)
}

/// Formats millicores the way Kubernetes users read them: "500m", "2".
pub fn format_cpu(millis: u32) -> String {
    if millis % 1000 == 0 {
        (millis / 1000).to_string()
    } else {
        format!("{millis}m")
    }
}

/// Formats MiB as "512Mi" or "2Gi".
pub fn format_memory(mib: u64) -> String {
    if mib % 1024 == 0 {
        format!("{}Gi", mib / 1024)
    } else {
        format!("{mib}Mi")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(duration("2h"), Ok(Duration::from_secs(7200)));
        assert!(duration("10").unwrap_err().starts_with("missing unit"));
        assert!(
            duration("10sec")
                .unwrap_err()
                .starts_with("unknown unit `sec`")
        );
        assert!(duration("").is_err());
        assert!(duration("s").is_err());
        assert_eq!(format_duration(Duration::from_secs(90)), "1m30s");
        assert_eq!(format_duration(Duration::from_millis(500)), "500ms");
        assert_eq!(format_duration(Duration::ZERO), "0s");
    }

    #[test]
    fn memory() {
        assert_eq!(memory_mib("512Mi"), Ok(512));
        assert_eq!(memory_mib("2Gi"), Ok(2048));
        assert_eq!(memory_mib("1.5Gi"), Ok(1536));
        assert_eq!(
            memory_mib("512M").unwrap_err(),
            "use binary units: \"512Mi\""
        );
        assert_eq!(memory_mib("512").unwrap_err(), "add a unit: \"512Mi\"");
        assert!(memory_mib("0Mi").is_err());
        assert!(memory_mib("-1Gi").is_err());
        assert!(memory_mib("0.5Mi").is_err());
        assert_eq!(format_memory(2048), "2Gi");
        assert_eq!(format_memory(512), "512Mi");
    }

    #[test]
    fn cpu() {
        assert_eq!(cpu_millis_text("500m"), Ok(500));
        assert_eq!(cpu_millis_text("0.5"), Ok(500));
        assert_eq!(cpu_millis_number(2.0), Ok(2000));
        assert_eq!(cpu_millis_number(0.25), Ok(250));
        assert!(cpu_millis_text("0m").is_err());
        assert!(cpu_millis_text("half").is_err());
        assert!(cpu_millis_number(-1.0).is_err());
        assert!(cpu_millis_number(0.0001).is_err());
        assert_eq!(format_cpu(500), "500m");
        assert_eq!(format_cpu(2000), "2");
    }
}
