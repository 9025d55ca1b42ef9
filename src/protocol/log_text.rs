//! Client bytes made safe for a log line: nothing a client sends can forge, break or
//! hide text in the log.

/// Escapes client bytes for a log line: printable text stays, control characters,
/// escapes and invalid UTF-8 are written as `\n`, `\u{1b}`, `\xff`, so a client
/// cannot forge or corrupt log lines. So are the characters a viewer does not show as
/// themselves (see [`is_invisible`]).
pub struct LogText<'a>(pub &'a [u8]);

impl std::fmt::Display for LogText<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use std::fmt::Write;
        for chunk in self.0.utf8_chunks() {
            for c in chunk.valid().chars() {
                if c == '\\' || is_invisible(c) {
                    write!(f, "{}", c.escape_default())?;
                } else {
                    f.write_char(c)?;
                }
            }
            for b in chunk.invalid() {
                write!(f, "\\x{b:02x}")?;
            }
        }
        Ok(())
    }
}

/// Characters that break a line, reorder or hide text, or show as nothing in a viewer:
/// controls (Cc), every format character (Cf: bidirectional controls, zero-width
/// characters, the soft hyphen, the tag block, ...), line and paragraph separators,
/// code points Unicode has not assigned (a later version may make them any of these),
/// and the default-ignorable characters of other categories (variation selectors, the
/// combining grapheme joiner, Hangul fillers, Mongolian free variation selectors).
pub fn is_invisible(c: char) -> bool {
    use unicode_properties::{GeneralCategory as G, UnicodeGeneralCategory};
    matches!(
        c.general_category(),
        G::Control | G::Format | G::LineSeparator | G::ParagraphSeparator | G::Unassigned
    ) || matches!(
        c,
        '\u{034F}'
            | '\u{115F}'
            | '\u{1160}'
            | '\u{17B4}'
            | '\u{17B5}'
            | '\u{180B}'..='\u{180F}'
            | '\u{3164}'
            | '\u{FE00}'..='\u{FE0F}'
            | '\u{FFA0}'
            | '\u{E0100}'..='\u{E01EF}'
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_text_escapes_controls_and_invalid_bytes() {
        let s = LogText(b"evil\n2026 INFO forged\x1b[31m\xff").to_string();
        assert_eq!(s, "evil\\n2026 INFO forged\\u{1b}[31m\\xff");
        assert_eq!(LogText("张三".as_bytes()).to_string(), "张三");
        assert!(!s.contains('\n'));
        let s = LogText("a\u{2028}b\u{202E}c\u{200B}d\u{2066}e\u{FEFF}".as_bytes()).to_string();
        assert_eq!(s, "a\\u{2028}b\\u{202e}c\\u{200b}d\\u{2066}e\\u{feff}");
    }

    #[test]
    fn log_text_escapes_every_invisible_character() {
        // Easy to miss, as they are in no one category: a bidi control, the soft hyphen,
        // the Mongolian vowel separator, interlinear annotation, the tag block.
        for c in [
            '\u{061C}',
            '\u{00AD}',
            '\u{180E}',
            '\u{FFF9}',
            '\u{FFFA}',
            '\u{FFFB}',
            '\u{E0000}',
            '\u{E0001}',
            '\u{E0041}',
            '\u{E007F}',
            '\u{FE0F}',
            '\u{3164}',
            '\u{034F}',
        ] {
            let s = LogText(c.to_string().as_bytes()).to_string();
            assert_eq!(s, c.escape_default().to_string(), "U+{:04X}", c as u32);
        }
        // Every format character (Cf), whatever the Unicode version.
        use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};
        let format = (0..=0x10FFFF_u32)
            .filter_map(char::from_u32)
            .filter(|c| c.general_category() == GeneralCategory::Format);
        for c in format {
            assert!(is_invisible(c), "U+{:04X}", c as u32);
        }
        // Visible text, spaces and emoji stay as they are.
        for text in ["张三", "café", "a b", "e\u{301}", "🦀", "\u{00A0}"] {
            assert_eq!(LogText(text.as_bytes()).to_string(), text);
        }
    }
}
