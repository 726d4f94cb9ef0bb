//! A function's output line made fit for the log: text, without a terminal's escape sequences.
//!
//! Functions colour their output for a terminal (`\x1b[32mINFO\x1b[0m`); keygate's log is not
//! one, and its formatter would write those bytes as literal `\x1b[32m`. They are removed.

use std::borrow::Cow;

/// `line` as text: bytes that are not UTF-8 replaced, ANSI escape sequences removed.
pub(crate) fn loggable(line: &[u8]) -> Cow<'_, str> {
    let text = String::from_utf8_lossy(line);
    if line.contains(&0x1b) { Cow::Owned(strip_ansi_escapes::strip_str(&text)) } else { text }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colours_and_cursor_moves_are_removed() {
        assert_eq!(loggable(b"\x1b[32mINFO\x1b[0m started"), "INFO started");
        assert_eq!(loggable(b"\x1b[1;31merror\x1b[m: \x1b[2Kdone"), "error: done");
        assert_eq!(loggable(b"\x1b]0;title\x07plain"), "plain");
    }

    #[test]
    fn plain_text_and_bad_utf8_are_kept() {
        assert!(matches!(loggable(b"plain line"), Cow::Borrowed("plain line")));
        assert_eq!(loggable(b"caf\xff"), "caf\u{fffd}");
    }
}
