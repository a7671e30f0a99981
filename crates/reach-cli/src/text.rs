//! Text from the server (script output, comments, paths, agent errors,
//! names) made safe to print on a terminal: C0 and C1 control characters,
//! DEL included, become visible escapes (`\x1b`, `\u{9b}`), except newline
//! and tab. A script or a hostile device can otherwise clear the screen,
//! hide lines, set the window title or write the clipboard (OSC 52). `--raw`
//! prints text as received; `--json` is never touched (JSON escapes them).

use std::borrow::Cow;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

static RAW: AtomicBool = AtomicBool::new(false);

/// `--raw`: print text exactly as the server sent it.
pub fn set_raw(raw: bool) {
    RAW.store(raw, Ordering::Relaxed);
}

/// `text` as it may be printed: escaped, unless `--raw`.
pub fn clean(text: &str) -> Cow<'_, str> {
    if RAW.load(Ordering::Relaxed) {
        return Cow::Borrowed(text);
    }
    escape(text)
}

fn is_control(c: char) -> bool {
    (c.is_control() && c != '\n' && c != '\t') || ('\u{80}'..='\u{9f}').contains(&c)
}

/// Every control character but newline and tab, written as an escape.
pub fn escape(text: &str) -> Cow<'_, str> {
    if !text.chars().any(is_control) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if !is_control(c) {
            out.push(c);
        } else if (c as u32) < 0x80 {
            out.push_str(&format!("\\x{:02x}", c as u32));
        } else {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        }
    }
    Cow::Owned(out)
}

/// A writer for a file shown on a terminal: bytes pass escaped as `clean`
/// would escape them (unless `--raw`), and bytes that are not UTF-8 (a lone
/// C1 byte among them) as `\xNN`. A character split between two writes is
/// joined first.
pub struct Escaping<W: Write> {
    inner: W,
    pending: Vec<u8>,
}

impl<W: Write> Escaping<W> {
    pub fn new(inner: W) -> Self {
        Self {
            inner,
            pending: Vec::new(),
        }
    }

    /// Writes what `pending` holds up to an incomplete character at its end
    /// (all of it when `all`).
    fn drain(&mut self, all: bool) -> std::io::Result<()> {
        let mut out = String::new();
        let mut start = 0;
        while start < self.pending.len() {
            match std::str::from_utf8(&self.pending[start..]) {
                Ok(text) => {
                    out.push_str(&clean(text));
                    start = self.pending.len();
                }
                Err(err) => {
                    let valid = err.valid_up_to();
                    let text = std::str::from_utf8(&self.pending[start..start + valid])
                        .expect("checked as UTF-8");
                    out.push_str(&clean(text));
                    start += valid;
                    let bad = match err.error_len() {
                        Some(n) => n,
                        None if all => self.pending.len() - start,
                        None => break,
                    };
                    for byte in &self.pending[start..start + bad] {
                        out.push_str(&format!("\\x{byte:02x}"));
                    }
                    start += bad;
                }
            }
        }
        self.pending.drain(..start);
        self.inner.write_all(out.as_bytes())
    }
}

impl<W: Write> Write for Escaping<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if RAW.load(Ordering::Relaxed) {
            return self.inner.write(buf);
        }
        self.pending.extend_from_slice(buf);
        self.drain(false)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.drain(true)?;
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::{Escaping, escape};
    use std::io::Write;

    #[test]
    fn a_file_on_a_terminal_is_escaped_across_writes() {
        let mut out = Escaping::new(Vec::new());
        let bytes = "ok \x1b[2J é \u{9b}".as_bytes();
        for byte in bytes {
            out.write_all(std::slice::from_ref(byte)).unwrap();
        }
        out.write_all(&[0x9b, b'!', 0xc3]).unwrap();
        out.flush().unwrap();
        assert_eq!(
            String::from_utf8(out.inner).unwrap(),
            "ok \\x1b[2J é \\u{9b}\\x9b!\\xc3"
        );
    }

    #[test]
    fn terminal_controls_become_visible_and_text_stays() {
        assert_eq!(escape("plain text\n\tindented"), "plain text\n\tindented");
        assert_eq!(
            escape("\x1b[2J\x1b]0;title\x07"),
            "\\x1b[2J\\x1b]0;title\\x07"
        );
        assert_eq!(
            escape("\x1b]52;c;aGk=\x1b\\"),
            "\\x1b]52;c;aGk=\\x1b\\",
            "OSC 52 clipboard writes"
        );
        assert_eq!(escape("over\rwrite"), "over\\x0dwrite");
        assert_eq!(escape("csi \u{9b}2J del \x7f"), "csi \\u{9b}2J del \\x7f");
        assert_eq!(escape("héllo → ✓"), "héllo → ✓");
    }
}
