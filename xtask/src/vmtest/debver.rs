//! Debian version ordering (dpkg's algorithm), to pick the newest kernel package.
use std::cmp::Ordering;

/// Compares two Debian versions `[epoch:]upstream[-revision]` like `dpkg --compare-versions`.
pub fn compare(a: &str, b: &str) -> Ordering {
    let (ea, ua, ra) = split(a);
    let (eb, ub, rb) = split(b);
    ea.cmp(&eb)
        .then_with(|| verrevcmp(ua.as_bytes(), ub.as_bytes()))
        .then_with(|| verrevcmp(ra.as_bytes(), rb.as_bytes()))
}

/// Splits into (epoch, upstream, revision); a missing or malformed epoch is 0.
fn split(v: &str) -> (u64, &str, &str) {
    let (epoch, rest) = match v.split_once(':') {
        Some((e, rest)) => (e.parse().unwrap_or(0), rest),
        None => (0, v),
    };
    match rest.rsplit_once('-') {
        Some((upstream, revision)) => (epoch, upstream, revision),
        None => (epoch, rest, ""),
    }
}

/// Sort weight of a non-digit position: `~` before end-of-part, letters before other symbols.
fn order(c: Option<u8>) -> i32 {
    match c {
        None => 0,
        Some(b'~') => -1,
        Some(c) if c.is_ascii_digit() => 0,
        Some(c) if c.is_ascii_alphabetic() => i32::from(c),
        Some(c) => i32::from(c) + 256,
    }
}

/// dpkg's `verrevcmp`: alternating non-digit and numeric runs.
fn verrevcmp(a: &[u8], b: &[u8]) -> Ordering {
    let (mut i, mut j) = (0, 0);
    let digit = |s: &[u8], k: usize| s.get(k).is_some_and(u8::is_ascii_digit);
    while i < a.len() || j < b.len() {
        while (i < a.len() && !digit(a, i)) || (j < b.len() && !digit(b, j)) {
            let (ac, bc) = (order(a.get(i).copied()), order(b.get(j).copied()));
            if ac != bc {
                return ac.cmp(&bc);
            }
            i += 1;
            j += 1;
        }
        while a.get(i) == Some(&b'0') {
            i += 1;
        }
        while b.get(j) == Some(&b'0') {
            j += 1;
        }
        let mut first_diff = Ordering::Equal;
        while digit(a, i) && digit(b, j) {
            if first_diff == Ordering::Equal {
                first_diff = a[i].cmp(&b[j]);
            }
            i += 1;
            j += 1;
        }
        if digit(a, i) {
            return Ordering::Greater;
        }
        if digit(b, j) {
            return Ordering::Less;
        }
        if first_diff != Ordering::Equal {
            return first_diff;
        }
    }
    Ordering::Equal
}

#[cfg(test)]
mod tests {
    use super::*;
    use Ordering::*;

    #[track_caller]
    fn check(a: &str, b: &str, expected: Ordering) {
        assert_eq!(compare(a, b), expected, "{a} vs {b}");
        assert_eq!(compare(b, a), expected.reverse(), "{b} vs {a}");
    }

    #[test]
    fn numeric_parts_compare_as_numbers() {
        check("6.1.158-1", "6.1.153-1", Greater);
        check("6.1.9-1", "6.1.10-1", Less);
        check("5.10.237-1", "5.10.244-1", Less);
        check("1.0", "1.0.0", Less);
        check("01", "1", Equal);
        check("1.002", "1.2", Equal);
        check("6.12.117-1", "6.12.117-1", Equal);
    }

    #[test]
    fn tilde_sorts_before_everything_and_letters_before_symbols() {
        check("1.0~rc1", "1.0", Less);
        check("1.0~rc1", "1.0~rc2", Less);
        check("1.0~~", "1.0~", Less);
        check("6.12.117-1~deb12u1", "6.12.117-1", Less);
        check("1.0a", "1.0", Greater);
        check("1.0a", "1.0+", Less);
        check("1.0+b1", "1.0", Greater);
        check("2.13+dfsg-7.1", "2.13+dfsg-7", Greater);
    }

    #[test]
    fn epoch_and_revision() {
        check("1:0.1", "2.0", Greater);
        check("0:2.0", "2.0", Equal);
        check("1.0", "1.0-1", Less);
        check("1.0-2", "1.0-10", Less);
        // Only the last hyphen starts the revision.
        check("7.1.0+6.1.192-2", "7.1.0+6.1.176-1", Greater);
        check("1:7.2+dfsg-7+deb12u18+b3", "1:7.2+dfsg-7+deb12u15", Greater);
    }
}
