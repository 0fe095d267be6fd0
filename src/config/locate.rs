//! Finding where in the TOML text an error is: the line (and key) that a
//! parse error, a failed check or a zones error is about, so every message
//! names file, line and key.

/// The line of the TOML text that a zones error is about, found by
/// following the quoted names in its context (zone origin, pool name,
/// member value) through the text, then the key within that block.
pub fn zone_error_line(text: &str, err: &crate::zones::ZonesError) -> usize {
    use crate::zones::ZonesError;
    let (context, key): (Vec<String>, &str) = match err {
        ZonesError::Invalid { context, key, .. } => (quoted(context), key),
        ZonesError::ZoneFile { zone, .. } => (vec![zone.clone()], "file"),
        ZonesError::Overlap { inner, .. } => (vec![inner.clone()], ""),
        ZonesError::Mmdb { .. } => (vec![], "mmdb"),
    };
    let mut pos = 0;
    for tok in &context {
        if let Some(i) = text.get(pos..).and_then(|t| t.find(&format!("\"{tok}\""))) {
            pos += i;
        }
    }
    let key = key.rsplit('.').next().unwrap_or("");
    if !key.is_empty() {
        let block_end = text
            .get(pos..)
            .and_then(|t| t.get(1..).and_then(|r| r.find("[[")).map(|i| pos + 1 + i))
            .unwrap_or(text.len());
        let found = text.get(pos..block_end).and_then(|block| {
            let mut at = 0;
            while let Some(i) = block.get(at..).and_then(|b| b.find(key)) {
                let after = block.get(at + i + key.len()..).unwrap_or("").trim_start();
                let before = block.get(..at + i).and_then(|b| b.chars().last());
                if after.starts_with('=') && before.is_none_or(|c| !c.is_alphanumeric() && c != '_')
                {
                    return Some(at + i);
                }
                at += i + key.len();
            }
            None
        });
        if let Some(i) = found {
            pos += i;
        }
    }
    line_of_offset(text, pos)
}

/// The strings between double quotes in a message.
fn quoted(s: &str) -> Vec<String> {
    s.split('"')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

pub(super) fn line_of_offset(text: &str, offset: usize) -> usize {
    text.get(..offset)
        .map(|t| t.matches('\n').count() + 1)
        .unwrap_or(1)
}

/// The key assigned on a line (`key = value`), for messages.
pub(super) fn key_at_line(text: &str, line: usize) -> Option<String> {
    let l = text.lines().nth(line.checked_sub(1)?)?;
    let (k, _) = l.split_once('=')?;
    let k = k.trim();
    (!k.is_empty() && !k.starts_with('#')).then(|| k.to_string())
}

/// The line of a `[table]` header (1 when absent).
pub(super) fn line_of_table(text: &str, table: &str) -> usize {
    let want = format!("[{table}]");
    text.lines()
        .position(|l| l.trim() == want)
        .map(|i| i + 1)
        .unwrap_or(1)
}

/// The line assigning `key` in the `index`-th `[[table]]` block (the
/// block's header line when the key is not written in it).
pub(super) fn line_in_array_table(text: &str, table: &str, index: usize, key: &str) -> usize {
    let header = format!("[[{table}]]");
    let lines: Vec<&str> = text.lines().collect();
    let Some(start) = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l.trim() == header)
        .map(|(i, _)| i)
        .nth(index)
    else {
        return 1;
    };
    for (i, l) in lines.iter().enumerate().skip(start + 1) {
        let t = l.trim_start();
        if t.starts_with('[') {
            break;
        }
        if l.split_once('=').is_some_and(|(k, _)| k.trim() == key) && !t.starts_with('#') {
            return i + 1;
        }
    }
    start + 1
}

/// The first line assigning `key`, for errors found after parsing.
pub fn line_of_key(text: &str, key: &str) -> usize {
    text.lines()
        .position(|l| {
            l.split_once('=')
                .is_some_and(|(k, _)| k.trim() == key && !l.trim_start().starts_with('#'))
        })
        .map(|i| i + 1)
        .unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use std::path::Path;

    #[test]
    fn zone_errors_are_located_in_the_toml() {
        let text = "[geo.regions]\neu = [\"10.0.0.0/8\"]\n\n[[zone]]\norigin = \"a.test.\"\n\n[[zone.pool]]\nname = \"www\"\ntype = \"A\"\nanswers = 0\nmembers = [\n  { value = \"192.0.2.1\", weight = 1 },\n  { value = \"::1\", weight = 1, region = \"mars\" },\n]\n";
        let cfg = Config::parse(text, "x.toml").unwrap();
        let errs =
            crate::zones::LocalZones::from_config(&cfg.zone, &cfg.geo, Path::new(".")).unwrap_err();
        let lines: Vec<(usize, String)> = errs
            .iter()
            .map(|e| (zone_error_line(text, e), e.to_string()))
            .collect();
        let find = |needle: &str| {
            lines
                .iter()
                .find(|(_, m)| m.contains(needle))
                .map(|(l, _)| *l)
        };
        assert_eq!(find("answers"), Some(10), "{lines:?}");
        assert_eq!(find("mars"), Some(13), "{lines:?}");
        assert_eq!(find("IPv4"), Some(13), "{lines:?}");
    }
}
