//! Checks of the raw file before it is parsed: size, encoding and characters.
//!
//! The YAML scanner reads a NUL as the end of the input, so whatever follows one (a
//! `private: true`, say) would silently vanish; other control characters are not YAML either.
//! The file is refused, with the position of the first offending byte, before any parsing:
//! larger than [`MAX_BYTES`], a byte order mark other than UTF-8's, invalid UTF-8, or a character
//! outside YAML's printable set (tab, line feed and carriage return are the only controls
//! allowed).

use crate::diag::{Diag, FieldPath, Mark};

/// The largest `serverless.yml` keygate reads (1 MiB). Real files are a few KiB; the limit
/// bounds the work any file can cause.
pub(crate) const MAX_BYTES: usize = 1024 * 1024;

/// Byte order marks of encodings other than UTF-8, longest first.
const OTHER_BOMS: &[(&[u8], &str)] = &[
    (&[0x00, 0x00, 0xFE, 0xFF], "UTF-32 (big-endian)"),
    (&[0xFF, 0xFE, 0x00, 0x00], "UTF-32 (little-endian)"),
    (&[0xFE, 0xFF], "UTF-16 (big-endian)"),
    (&[0xFF, 0xFE], "UTF-16 (little-endian)"),
];

/// The 1-based line and column (in characters) just before byte `offset` of `bytes`.
fn position(bytes: &[u8], offset: usize) -> Mark {
    let before = &bytes[..offset.min(bytes.len())];
    let line_start = before.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let col = String::from_utf8_lossy(&before[line_start..]).chars().count() + 1;
    Mark { line, col }
}

fn refuse(mark: Mark, message: String) -> Diag {
    Diag::new(mark, &FieldPath::root(), message)
}

/// The size check, shared by files and texts: a diagnostic at the first byte past the limit.
fn size(bytes: &[u8]) -> Result<(), Diag> {
    if bytes.len() <= MAX_BYTES {
        return Ok(());
    }
    Err(refuse(
        position(bytes, MAX_BYTES),
        format!(
            "the file is larger than {} KiB, the most keygate reads; a serverless.yml this large \
             is not a service definition (split it, or remove what keygate does not use)",
            MAX_BYTES / 1024
        ),
    ))
}

/// The text of a file's bytes: UTF-8, at most [`MAX_BYTES`]. Every other character check is
/// [`check`]'s.
pub(crate) fn decode(bytes: &[u8]) -> Result<&str, Diag> {
    size(bytes)?;
    if let Some((_, name)) = OTHER_BOMS.iter().find(|(bom, _)| bytes.starts_with(bom)) {
        return Err(refuse(
            Mark::START,
            format!(
                "the file is encoded as {name} (it starts with that byte order mark); save it as \
                 UTF-8"
            ),
        ));
    }
    std::str::from_utf8(bytes).map_err(|e| {
        let at = e.valid_up_to();
        refuse(
            position(bytes, at),
            format!("invalid UTF-8 (byte 0x{:02X}); save the file as UTF-8", bytes[at]),
        )
    })
}

/// Whether YAML allows `c` in a document (its printable set, YAML 1.2 § 5.1), less NEL, which
/// YAML 1.1 and 1.2 read differently.
fn printable(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | ' '..='~' | '\u{A0}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}')
        || c >= '\u{10000}'
}

/// A short name for a refused character.
fn describe(c: char) -> String {
    let name = match c {
        '\0' => " (NUL)",
        '\u{7F}' => " (DEL)",
        '\u{1B}' => " (ESC)",
        '\u{85}' => " (NEL)",
        _ => "",
    };
    format!("U+{:04X}{name}", u32::from(c))
}

/// Checks a text before it is parsed and returns it without its UTF-8 byte order mark.
pub(crate) fn check(text: &str) -> Result<&str, Diag> {
    size(text.as_bytes())?;
    let text = text.strip_prefix('\u{FEFF}').unwrap_or(text);
    let mut bad = text.char_indices().filter(|(_, c)| !printable(*c));
    let Some((at, c)) = bad.next() else { return Ok(text) };
    let more = bad.count();
    let more = match more {
        0 => String::new(),
        1 => " (and 1 more after it)".to_owned(),
        n => format!(" (and {n} more after it)"),
    };
    Err(refuse(
        position(text.as_bytes(), at),
        format!(
            "the control character {} is not allowed in serverless.yml{more}; remove it (YAML \
             allows only tab, line feed and carriage return; a NUL would end the document early \
             and drop what follows)",
            describe(c)
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_count_lines_and_characters() {
        let text = "ab\nçd\u{0}";
        let d = check(text).unwrap_err();
        assert_eq!(d.mark, Mark { line: 2, col: 3 });
        assert!(d.message.contains("U+0000 (NUL)"), "{}", d.message);
    }

    #[test]
    fn tabs_and_line_ends_pass_and_the_utf8_bom_is_dropped() {
        assert_eq!(check("\u{FEFF}a:\tb\r\n").unwrap(), "a:\tb\r\n");
        assert!(check("a: \u{7F}").is_err());
        assert!(check("a: \u{9B}").is_err());
        assert!(check("a: \u{FFFE}").is_err());
        assert!(check("a: é 😀 \u{A0}").is_ok());
    }

    #[test]
    fn other_encodings_are_refused() {
        let d = decode(b"\xFF\xFEs\x00").unwrap_err();
        assert!(d.message.contains("UTF-16 (little-endian)"), "{}", d.message);
        let d = decode(b"a: 1\nb: \xC3(").unwrap_err();
        assert_eq!(d.mark, Mark { line: 2, col: 4 });
        assert!(d.message.contains("0xC3"), "{}", d.message);
    }
}
