//! Test helper: reads an OpenMetrics/Prometheus text exposition back into
//! samples, so tests assert values rather than the (unordered) text.
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// Every sample line of `text`; panics on a line it cannot read (a test failure).
pub fn parse(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| parse_line(l).unwrap_or_else(|| panic!("unreadable sample line {l:?}")))
        .collect()
}

fn parse_line(line: &str) -> Option<Sample> {
    let name_end = line.find(['{', ' '])?;
    let name = line[..name_end].to_string();
    let mut labels = BTreeMap::new();
    let mut rest = &line[name_end..];
    if let Some(body) = rest.strip_prefix('{') {
        let mut chars = body.char_indices();
        let mut key = String::new();
        let end;
        loop {
            let (i, c) = chars.next()?;
            match c {
                '}' => {
                    end = i + 1;
                    break;
                }
                ',' => {}
                '=' => {
                    if chars.next()?.1 != '"' {
                        return None;
                    }
                    let mut value = String::new();
                    loop {
                        match chars.next()?.1 {
                            '"' => break,
                            '\\' => match chars.next()?.1 {
                                'n' => value.push('\n'),
                                other => value.push(other),
                            },
                            other => value.push(other),
                        }
                    }
                    labels.insert(std::mem::take(&mut key), value);
                }
                other => key.push(other),
            }
        }
        rest = &body[end..];
    }
    let value = match rest.trim() {
        "+Inf" => f64::INFINITY,
        v => v.split(' ').next()?.parse().ok()?,
    };
    Some(Sample {
        name,
        labels,
        value,
    })
}

/// The value of the one sample named `name` whose labels include `want`.
pub fn value(samples: &[Sample], name: &str, want: &[(&str, &str)]) -> Option<f64> {
    let mut hits = samples.iter().filter(|s| {
        s.name == name
            && want
                .iter()
                .all(|(k, v)| s.labels.get(*k).is_some_and(|x| x == v))
    });
    let first = hits.next()?;
    assert!(
        hits.next().is_none(),
        "{name} {want:?} matches several samples"
    );
    Some(first.value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_names_labels_escapes_and_values() {
        let s = parse(
            "# TYPE a counter\na_total 3\nb{x=\"1\",y=\"q\\\"\\\\\\n,}\"} 2.5\nc_bucket{le=\"+Inf\"} 7\n# EOF\n",
        );
        assert_eq!(s.len(), 3);
        assert_eq!(value(&s, "a_total", &[]), Some(3.0));
        assert_eq!(s[1].labels["y"], "q\"\\\n,}");
        assert_eq!(value(&s, "b", &[("x", "1")]), Some(2.5));
        assert_eq!(value(&s, "c_bucket", &[("le", "+Inf")]), Some(7.0));
        assert_eq!(value(&s, "b", &[("x", "2")]), None);
    }
}
