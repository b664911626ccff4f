//! Parsing helpers shared by the collectors: strict numbers, whitespace-separated fields, and
//! the agent's side of the protocol's string rules (what the server's validator would refuse
//! is cleaned here first, so a strange mount point or process name never costs a connection).

use crate::protocol::MAX_TEXT_LEN;

/// A decimal number of ASCII digits only; `None` for anything else or on overflow.
pub fn parse_u64(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &b| {
        b.is_ascii_digit()
            .then(|| n.checked_mul(10)?.checked_add(u64::from(b - b'0')))
            .flatten()
    })
}

/// A signed decimal integer (`-12`, `45000`).
pub fn parse_i64(text: &[u8]) -> Option<i64> {
    match text.strip_prefix(b"-") {
        Some(digits) => i64::try_from(parse_u64(digits)?).ok().map(|n| -n),
        None => i64::try_from(parse_u64(text)?).ok(),
    }
}

/// The whitespace-separated fields of a line.
pub fn fields(line: &[u8]) -> impl Iterator<Item = &[u8]> {
    line.split(|b| b.is_ascii_whitespace())
        .filter(|f| !f.is_empty())
}

/// Rounds to two decimals (percentages, load): shorter on the wire, nothing lost that a
/// person reads.
pub fn round2(v: f32) -> f32 {
    (v * 100.0).round() / 100.0
}

/// A string the protocol accepts: control characters replaced by `?`, at most
/// [`MAX_TEXT_LEN`] bytes (cut at a character boundary), invalid UTF-8 replaced.
pub fn clean_text(raw: &[u8]) -> String {
    let lossy = String::from_utf8_lossy(raw);
    let mut out = String::with_capacity(lossy.len().min(MAX_TEXT_LEN));
    for c in lossy.chars() {
        let c = if c.is_control() { '?' } else { c };
        if out.len() + c.len_utf8() > MAX_TEXT_LEN {
            break;
        }
        out.push(c);
    }
    out
}

/// Whether `name` matches `pattern`, where `*` stands for any run of characters (possibly
/// none), `?` for any one byte (names are ASCII in practice) and everything else for itself.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let (p, n) = (pattern.as_bytes(), name.as_bytes());
    // Iterative matcher with one backtrack point: linear in practice, no recursion.
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        match p.get(pi) {
            Some(b'*') => {
                star = Some((pi, ni));
                pi += 1;
            }
            Some(&c) if c == n[ni] || c == b'?' => {
                pi += 1;
                ni += 1;
            }
            _ => match star {
                Some((sp, sn)) => {
                    pi = sp + 1;
                    ni = sn + 1;
                    star = Some((sp, sn + 1));
                }
                None => return false,
            },
        }
    }
    p[pi.min(p.len())..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_parse_strictly() {
        assert_eq!(parse_u64(b"0"), Some(0));
        assert_eq!(parse_u64(b"18446744073709551615"), Some(u64::MAX));
        assert_eq!(parse_u64(b"18446744073709551616"), None);
        assert_eq!(parse_u64(b""), None);
        assert_eq!(parse_u64(b"12a"), None);
        assert_eq!(parse_i64(b"-12"), Some(-12));
        assert_eq!(parse_i64(b"45000"), Some(45000));
        assert_eq!(parse_i64(b"-"), None);
        assert_eq!(parse_i64(b"9223372036854775808"), None);
    }

    #[test]
    fn text_is_cleaned_to_what_the_validator_accepts() {
        assert_eq!(clean_text(b"/mnt/usb\nstick"), "/mnt/usb?stick");
        assert_eq!(clean_text(b"a\x1b[2Jb"), "a?[2Jb");
        assert_eq!(clean_text(b"caf\xc3\xa9"), "café");
        assert_eq!(clean_text(b"bad\xff"), "bad\u{fffd}");
        let long = "é".repeat(200); // 400 bytes
        let cut = clean_text(long.as_bytes());
        assert!(cut.len() <= MAX_TEXT_LEN && cut.len() >= MAX_TEXT_LEN - 1);
        assert!(cut.chars().all(|c| c == 'é'));
    }

    #[test]
    fn globs_match_stars_only() {
        assert!(glob_match("eth0", "eth0"));
        assert!(!glob_match("eth0", "eth01"));
        assert!(glob_match("eth*", "eth0"));
        assert!(glob_match("eth*", "eth"));
        assert!(glob_match("*", ""));
        assert!(glob_match("v*th*", "veth1234"));
        assert!(glob_match("*0", "loop10"));
        assert!(!glob_match("*0", "loop01"));
        assert!(glob_match("a*b*c", "aXXbYYc"));
        assert!(!glob_match("a*b*c", "aXXbYY"));
        assert!(glob_match("fuse.*", "fuse.sshfs"));
        assert!(glob_match("sd?", "sda"));
        assert!(!glob_match("sd?", "sda1"));
        assert!(!glob_match("sd?", "sd"));
    }
}
