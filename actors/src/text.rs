//! Agent-controlled text shown to people: the one place that decides which characters may
//! reach a terminal or a log line ([`for_terminal`]) and which a name may hold ([`is_hidden`],
//! used by [`crate::validate`]).
//!
//! Two kinds of characters are dangerous there. Controls — C0 (`\0`–`\x1f`: ESC starts the
//! CSI/OSC sequences that move the cursor, clear the screen, set the window title or write a
//! hyperlink; CR overwrites a line), DEL and C1 (`\u{80}`–`\u{9f}`, which some terminals take
//! as 8-bit CSI) — change what the terminal does. Hidden format characters — the bidi
//! embeddings, overrides, isolates and marks, and the zero-width ones — change what a reader
//! sees: `web-1\u{202e}1-bew` is displayed reversed, `web\u{200b}-1` looks like `web-1`.
//! [`for_terminal`] writes each of them as a visible escape (`\r`, `\u{1b}`, `\u{202e}`), so
//! the text stays readable and nothing in it acts.

use std::borrow::Cow;
use std::fmt::Write as _;

/// Bidi controls and invisible format characters: nothing a name needs, and every one of them
/// can make a name look like another (see the module docs).
pub fn is_hidden(c: char) -> bool {
    matches!(
        c,
        '\u{00ad}'              // soft hyphen
        | '\u{061c}'            // Arabic letter mark
        | '\u{115f}' | '\u{1160}' // Hangul fillers
        | '\u{180e}'            // Mongolian vowel separator
        | '\u{200b}'..='\u{200f}' // zero-width space, non-joiner, joiner; LRM, RLM
        | '\u{202a}'..='\u{202e}' // bidi embeddings and overrides
        | '\u{2060}'..='\u{2064}' // word joiner, invisible operators
        | '\u{2066}'..='\u{206f}' // bidi isolates; deprecated format characters
        | '\u{3164}'            // Hangul filler
        | '\u{feff}'            // zero-width no-break space (BOM)
        | '\u{ffa0}'            // halfwidth Hangul filler
        | '\u{fff9}'..='\u{fffb}' // interlinear annotation
        | '\u{e0000}'..='\u{e007f}' // tag characters (invisible ASCII)
    )
}

/// Whether `c` must not reach a terminal as it is: a control (C0, DEL, C1) or [`is_hidden`].
pub fn is_unsafe(c: char) -> bool {
    c.is_control() || is_hidden(c)
}

/// `s` with every [`is_unsafe`] character written as a visible escape (`\n`, `\r`, `\t`, else
/// `\u{…}`); borrowed when there is none (the usual case).
pub fn for_terminal(s: &str) -> Cow<'_, str> {
    if !s.chars().any(is_unsafe) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if is_unsafe(c) => {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_borrowed_unchanged() {
        let s = "web-1 (Debian GNU/Linux 12) ünïcödé 名前";
        assert!(matches!(for_terminal(s), Cow::Borrowed(t) if t == s));
    }

    #[test]
    fn controls_and_hidden_characters_become_visible_escapes() {
        let hostile = "a\x1b]0;title\x07b\rc\nd\te\u{7f}f\u{9b}g\u{202e}h\u{200b}i\u{e0041}";
        let safe = for_terminal(hostile);
        assert_eq!(
            safe,
            "a\\u{1b}]0;title\\u{7}b\\rc\\nd\\te\\u{7f}f\\u{9b}g\\u{202e}h\\u{200b}i\\u{e0041}"
        );
        assert!(!safe.chars().any(is_unsafe), "{safe}");
    }

    #[test]
    fn hidden_covers_bidi_and_zero_width_but_not_letters() {
        for c in [
            '\u{202a}', '\u{202e}', '\u{2066}', '\u{2069}', '\u{200d}', '\u{feff}',
        ] {
            assert!(is_hidden(c), "{c:?}");
        }
        for c in ['a', 'é', 'ß', '名', '-', ' ', '😀'] {
            assert!(!is_unsafe(c), "{c:?}");
        }
    }
}
