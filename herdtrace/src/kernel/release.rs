//! The running kernel's release string and the version in it.
use anyhow::Context;

/// The kernel release string (`uname -r`), e.g. `6.18.44-fc-v782`.
pub fn release() -> anyhow::Result<String> {
    // SAFETY: utsname is plain old data; uname fills it or fails.
    let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: `uts` is a valid, writable utsname.
    if unsafe { libc::uname(&mut uts) } != 0 {
        return Err(std::io::Error::last_os_error()).context("uname");
    }
    let bytes: Vec<u8> = uts
        .release
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// Version triple from a release string: `"5.10.0-32-cloud-amd64"` → `(5, 10, 0)`,
/// `"7.2.13+deb14-cloud-amd64"` → `(7, 2, 13)`, `"6.1"` → `(6, 1, 0)`.
pub fn parse_version(release: &str) -> Option<(u32, u32, u32)> {
    let numeric = release
        .split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .next()?;
    let mut parts = numeric.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    let patch = match parts.next() {
        None | Some("") => 0,
        Some(p) => p.parse().ok()?,
    };
    Some((major, minor, patch))
}

/// (major, minor) of a release string, what version checks compare:
/// `"6.18.44-fc-v782"` → `(6, 18)`.
pub fn major_minor(release: &str) -> Option<(u32, u32)> {
    parse_version(release).map(|(major, minor, _)| (major, minor))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert_eq!(parse_version("6.18.44-fc-v782"), Some((6, 18, 44)));
        assert_eq!(parse_version("5.10.0-32-cloud-amd64"), Some((5, 10, 0)));
        assert_eq!(parse_version("7.2.13+deb14-cloud-amd64"), Some((7, 2, 13)));
        assert_eq!(
            parse_version("6.12.117+deb12-cloud-amd64"),
            Some((6, 12, 117))
        );
        assert_eq!(parse_version("6.1"), Some((6, 1, 0)));
        assert_eq!(parse_version("6.1-rc3"), Some((6, 1, 0)));
        assert_eq!(parse_version("4.19.0"), Some((4, 19, 0)));
        assert_eq!(parse_version(""), None);
        assert_eq!(parse_version("6"), None);
        assert_eq!(parse_version("linux-6.1"), None);
        assert_eq!(major_minor("6.18.44-fc-v782"), Some((6, 18)));
        assert_eq!(major_minor("4.4.0"), Some((4, 4)));
        assert_eq!(major_minor("x"), None);
        assert_eq!(parse_version("6.x.1"), None);
        assert_eq!(parse_version("99999999999.1.1"), None);
    }

    #[test]
    fn host_release_parses() {
        let r = release().expect("uname works");
        assert!(parse_version(&r).is_some(), "unparseable release {r:?}");
    }
}
