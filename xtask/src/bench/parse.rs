//! Pure parsing of what the benchmarked tools print, and the statistics over rounds.

/// What one `ab` run reports.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AbRun {
    pub complete: u64,
    pub failed: u64,
    /// Absent from ab's output when every response was 2xx.
    pub non_2xx: u64,
    pub requests_per_s: f64,
}

/// Parses ab's result block ("Complete requests:", "Failed requests:",
/// "Non-2xx responses:", "Requests per second:").
pub fn parse_ab(out: &str) -> Result<AbRun, String> {
    let complete = ab_field(out, "Complete requests:")?
        .ok_or("no \"Complete requests:\" line in ab's output")?;
    let failed =
        ab_field(out, "Failed requests:")?.ok_or("no \"Failed requests:\" line in ab's output")?;
    let non_2xx = ab_field(out, "Non-2xx responses:")?.unwrap_or(0);
    let rps = ab_value(out, "Requests per second:")
        .ok_or("no \"Requests per second:\" line in ab's output")?;
    let requests_per_s: f64 = rps
        .parse()
        .map_err(|_| format!("ab's \"Requests per second:\" is not a number: {rps:?}"))?;
    if !requests_per_s.is_finite() || requests_per_s < 0.0 {
        return Err(format!(
            "ab's \"Requests per second:\" is not a rate: {rps:?}"
        ));
    }
    Ok(AbRun {
        complete,
        failed,
        non_2xx,
        requests_per_s,
    })
}

/// The first word after `label` at the start of a line.
fn ab_value<'a>(out: &'a str, label: &str) -> Option<&'a str> {
    out.lines()
        .find_map(|l| l.trim_start().strip_prefix(label))
        .and_then(|rest| rest.split_whitespace().next())
}

/// A count after `label`: `Ok(None)` when the line is missing.
fn ab_field(out: &str, label: &str) -> Result<Option<u64>, String> {
    match ab_value(out, label) {
        None => Ok(None),
        Some(v) => v
            .parse()
            .map(Some)
            .map_err(|_| format!("ab's {label:?} is not a count: {v:?}")),
    }
}

/// What `herdtrace load --json` reports (the fields the benchmark uses).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LoadRun {
    pub attempted: u64,
    pub errors: u64,
    pub non_2xx: u64,
    pub rate_per_s: f64,
}

/// Parses the one-object output of `herdtrace load --json`.
pub fn parse_load_json(out: &str) -> Result<LoadRun, String> {
    let text = out.trim();
    if !text.starts_with('{') {
        return Err(format!(
            "herdtrace load did not print a JSON object: {text:?}"
        ));
    }
    let count = |key: &str| -> Result<u64, String> {
        let raw = json_top_level_number(text, key)
            .ok_or_else(|| format!("no number {key:?} in herdtrace load's JSON"))?;
        raw.parse()
            .map_err(|_| format!("{key:?} in herdtrace load's JSON is not a count: {raw:?}"))
    };
    let raw = json_top_level_number(text, "rate_per_s")
        .ok_or("no number \"rate_per_s\" in herdtrace load's JSON")?;
    let rate_per_s: f64 = raw
        .parse()
        .map_err(|_| format!("\"rate_per_s\" in herdtrace load's JSON is not a number: {raw:?}"))?;
    if !rate_per_s.is_finite() || rate_per_s < 0.0 {
        return Err(format!("\"rate_per_s\" is not a rate: {raw:?}"));
    }
    Ok(LoadRun {
        attempted: count("attempted")?,
        errors: count("errors")?,
        non_2xx: count("non_2xx")?,
        rate_per_s,
    })
}

/// The raw number token of `key` in the outermost object of `json`; keys of
/// nested objects and look-alikes inside strings are skipped. A small scanner
/// instead of a JSON crate keeps xtask's dependencies to what setup needs.
pub fn json_top_level_number<'a>(json: &'a str, key: &str) -> Option<&'a str> {
    let raw = json_top_level_raw(json, key)?;
    raw.bytes()
        .all(|c| matches!(c, b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9'))
        .then_some(raw)
}

/// The raw text of `key`'s value in the outermost object of `json`: a number,
/// literal, "string" (with its quotes), {object} or [array].
pub fn json_top_level_raw<'a>(json: &'a str, key: &str) -> Option<&'a str> {
    let b = json.as_bytes();
    let mut depth = 0usize;
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'{' | b'[' => depth += 1,
            b'}' | b']' => depth = depth.checked_sub(1)?,
            b'"' => {
                let end = string_end(b, i)?;
                let is_key = depth == 1 && next_non_space(b, end + 1) == Some(b':');
                if is_key && &json[i + 1..end] == key {
                    let colon = skip_space(b, end + 1);
                    let start = skip_space(b, colon + 1);
                    let stop = value_end(b, start)?;
                    return (stop > start).then(|| &json[start..stop]);
                }
                i = end;
            }
            _ => {}
        }
        i += 1;
    }
    None
}

/// One past the end of the value starting at `start`.
fn value_end(b: &[u8], start: usize) -> Option<usize> {
    match b.get(start)? {
        b'"' => string_end(b, start).map(|e| e + 1),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut i = start;
            while i < b.len() {
                match b[i] {
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(i + 1);
                        }
                    }
                    b'"' => i = string_end(b, i)?,
                    _ => {}
                }
                i += 1;
            }
            None
        }
        _ => Some(
            start
                + b[start..]
                    .iter()
                    .take_while(|c| !matches!(c, b',' | b'}' | b']') && !c.is_ascii_whitespace())
                    .count(),
        ),
    }
}

/// The text of a raw JSON string value (quotes removed, simple escapes undone).
pub fn json_string(raw: &str) -> Option<String> {
    let inner = raw.strip_prefix('"')?.strip_suffix('"')?;
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next()? {
            'n' => out.push('\n'),
            't' => out.push('\t'),
            'u' => {
                let hex: String = chars.by_ref().take(4).collect();
                out.push(char::from_u32(u32::from_str_radix(&hex, 16).ok()?).unwrap_or('?'));
            }
            other => out.push(other),
        }
    }
    Some(out)
}

/// A count of `key` in the outermost object of `json`.
pub fn json_count(json: &str, key: &str) -> Result<u64, String> {
    let raw = json_top_level_number(json, key).ok_or_else(|| format!("no number {key:?}"))?;
    raw.parse()
        .map_err(|_| format!("{key:?} is not a count: {raw:?}"))
}

/// Index of the quote closing the string that opens at `open`.
fn string_end(b: &[u8], open: usize) -> Option<usize> {
    let mut i = open + 1;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 2,
            b'"' => return Some(i),
            _ => i += 1,
        }
    }
    None
}

fn skip_space(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && b[i].is_ascii_whitespace() {
        i += 1;
    }
    i
}

fn next_non_space(b: &[u8], i: usize) -> Option<u8> {
    b.get(skip_space(b, i)).copied()
}

/// The median (mean of the middle two for an even count); `None` when empty.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(v[n / 2]),
        _ => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AB_OK: &str = "\
This is ApacheBench, Version 2.3 <$Revision$>
Benchmarking 127.0.0.1 (be patient).....done


Server Software:        
Server Hostname:        127.0.0.1
Server Port:            43451

Document Path:          /
Document Length:        3 bytes

Concurrency Level:      32
Time taken for tests:   0.132 seconds
Complete requests:      2000
Failed requests:        0
Total transferred:      172000 bytes
HTML transferred:       6000 bytes
Requests per second:    15132.14 [#/sec] (mean)
Time per request:       2.115 [ms] (mean)
";

    #[test]
    fn ab_clean_run() {
        let r = parse_ab(AB_OK).expect("parse");
        assert_eq!(
            r,
            AbRun {
                complete: 2000,
                failed: 0,
                non_2xx: 0,
                requests_per_s: 15132.14
            }
        );
    }

    #[test]
    fn ab_failures_and_non_2xx() {
        let out = AB_OK
            .replace(
                "Failed requests:        0\n",
                "Failed requests:        7\n   (Connect: 0, Receive: 0, Length: 7, Exceptions: 0)\nNon-2xx responses:      3\n",
            )
            .replace("Complete requests:      2000", "Complete requests:      1990");
        let r = parse_ab(&out).expect("parse");
        assert_eq!((r.complete, r.failed, r.non_2xx), (1990, 7, 3));
    }

    #[test]
    fn ab_missing_or_bad_fields_are_errors() {
        for (from, to, what) in [
            (
                "Requests per second:",
                "Requests per sec:",
                "Requests per second",
            ),
            ("Failed requests:", "Fail:", "Failed requests"),
            ("Complete requests:", "Done:", "Complete requests"),
            ("15132.14 [#/sec]", "fast [#/sec]", "not a number"),
            ("15132.14 [#/sec]", "inf [#/sec]", "not a rate"),
            (
                "Failed requests:        0",
                "Failed requests:        -1",
                "not a count",
            ),
        ] {
            let err = parse_ab(&AB_OK.replace(from, to)).expect_err(from);
            assert!(err.contains(what), "{from}: {err}");
        }
        assert!(parse_ab("").is_err());
        // A label with nothing after it is missing, not zero.
        let err = parse_ab(&AB_OK.replace("Failed requests:        0", "Failed requests:"))
            .expect_err("empty");
        assert!(err.contains("Failed requests"), "{err}");
    }

    const LOAD_OK: &str = r#"{"connections":2000,"attempted":2000,"errors":0,"errors_by_kind":{"connect_refused":0,"connect_timeout":0,"reset":0,"short_response":0,"timeout":0,"other":0},"non_2xx":0,"rate_per_s":18666.740387846705,"elapsed_s":0.107142434,"connect_us":{"p50":343,"p99":3775,"max":5375},"total_us":{"p50":1311,"p99":6271,"max":9854},"threads":2,"concurrency":32}
"#;

    #[test]
    fn load_json_clean_run() {
        let r = parse_load_json(LOAD_OK).expect("parse");
        assert_eq!(
            r,
            LoadRun {
                attempted: 2000,
                errors: 0,
                non_2xx: 0,
                rate_per_s: 18666.740387846705
            }
        );
    }

    #[test]
    fn load_json_with_errors_and_other_error_text() {
        let json = r#"{"connections":10, "attempted" : 15,"errors":5,"errors_by_kind":{"errors":99,"reset":5},"non_2xx":2,"rate_per_s":1.5e3,"first_other_error":"\"errors\":77 in a string"}"#;
        let r = parse_load_json(json).expect("parse");
        assert_eq!(
            r,
            LoadRun {
                attempted: 15,
                errors: 5,
                non_2xx: 2,
                rate_per_s: 1500.0
            }
        );
    }

    #[test]
    fn load_json_bad_input_is_an_error() {
        assert!(parse_load_json("").is_err());
        assert!(parse_load_json("error: connection refused").is_err());
        assert!(parse_load_json(&LOAD_OK.replace("\"errors\":0,", "")).is_err());
        assert!(parse_load_json(&LOAD_OK.replace("\"errors\":0", "\"errors\":-1")).is_err());
        assert!(parse_load_json(&LOAD_OK.replace("\"errors\":0", "\"errors\":1.5")).is_err());
        let err = parse_load_json(
            &LOAD_OK.replace("\"rate_per_s\":18666.740387846705", "\"rate_per_s\":null"),
        )
        .expect_err("null rate");
        assert!(err.contains("rate_per_s"), "{err}");
    }

    #[test]
    fn json_scanner_only_sees_outer_keys() {
        let j = r#"{"a":{"b":1},"s":"\"b\":2","list":[{"b":3}],"b" : -4.5e1}"#;
        assert_eq!(json_top_level_number(j, "b"), Some("-4.5e1"));
        assert_eq!(json_top_level_number(j, "a"), None, "object, not number");
        assert_eq!(json_top_level_number(j, "s"), None, "string, not number");
        assert_eq!(json_top_level_number(j, "missing"), None);
        assert_eq!(json_top_level_number(r#"{"b":"#, "b"), None, "truncated");
        assert_eq!(
            json_top_level_number(r#"{"b"#, "b"),
            None,
            "unterminated string"
        );
        assert_eq!(
            json_top_level_number(r#"}{"b":1}"#, "b"),
            None,
            "unbalanced"
        );
        // A value string equal to the key is not a key.
        assert_eq!(json_top_level_number(r#"{"x":"b","b":7}"#, "b"), Some("7"));
    }

    #[test]
    fn json_raw_values_and_strings() {
        let j = r#"{"a": {"s": "x\"y", "n": [1, {"k": "]"}]}, "t": true, "u": "\u00e9\n", "n": 3}"#;
        assert_eq!(
            json_top_level_raw(j, "a"),
            Some(r#"{"s": "x\"y", "n": [1, {"k": "]"}]}"#)
        );
        let a = json_top_level_raw(j, "a").expect("a");
        assert_eq!(
            json_top_level_raw(a, "s").and_then(json_string),
            Some("x\"y".into())
        );
        assert_eq!(json_top_level_raw(a, "n"), Some(r#"[1, {"k": "]"}]"#));
        assert_eq!(json_top_level_raw(j, "t"), Some("true"));
        assert_eq!(json_top_level_number(j, "t"), None);
        assert_eq!(
            json_top_level_raw(j, "u").and_then(json_string),
            Some("\u{e9}\n".into())
        );
        assert_eq!(json_count(j, "n"), Ok(3));
        assert!(json_count(j, "t").is_err());
        assert!(json_count(r#"{"n":-2}"#, "n").is_err());
        assert_eq!(json_string("x"), None, "not a string");
        assert_eq!(
            json_top_level_raw(r#"{"a":{"b":1"#, "a"),
            None,
            "unclosed object"
        );
    }

    #[test]
    fn median_odd_even_empty_unsorted() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[4.0]), Some(4.0));
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[5.0, 5.0, 1.0, 100.0, 5.0]), Some(5.0));
    }
}
