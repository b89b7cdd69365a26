//! Redaction: decrypted values, and their base64 and JSON-escaped forms, replaced with
//! `[hidden]` in events (a job's `Redactor`) and in the daemon's log (the values `register`ed
//! while their job runs, applied by the `Redacting` writer).

use std::io::{self, Write};
use std::sync::{Arc, PoisonError, RwLock};

use aho_corasick::{AhoCorasick, MatchKind};
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine;
use tracing_subscriber::fmt::MakeWriter;

/// What a secret is replaced with.
pub const HIDDEN: &str = "[hidden]";

/// Secrets shorter than this many characters are left in the text, to keep it readable.
const MIN_LEN: usize = 4;

/// Replaces secrets in text.
pub struct Redactor {
    /// `None` when there is nothing to replace.
    matcher: Option<AhoCorasick>,
}

impl Redactor {
    /// A redactor of each secret (of at least 4 characters) in its plain form, JSON-escaped
    /// (`a"b\c` as `a\"b\\c`) and base64-encoded (standard and URL-safe, with and without
    /// padding).
    pub fn new<S: AsRef<str>>(secrets: impl IntoIterator<Item = S>) -> Redactor {
        let mut needles: Vec<String> = Vec::new();
        for secret in secrets {
            let secret = secret.as_ref();
            if secret.chars().count() < MIN_LEN {
                continue;
            }
            let escaped = serde_json::to_string(secret).expect("strings serialize");
            needles.push(escaped[1..escaped.len() - 1].to_string());
            for engine in [&STANDARD, &STANDARD_NO_PAD, &URL_SAFE, &URL_SAFE_NO_PAD] {
                needles.push(engine.encode(secret));
            }
            needles.push(secret.to_string());
        }
        needles.sort();
        needles.dedup();
        let matcher = (!needles.is_empty()).then(|| {
            // The longest match wins, so a padded base64 form is hidden whole.
            AhoCorasick::builder()
                .match_kind(MatchKind::LeftmostLongest)
                .build(&needles)
                .expect("a matcher of a few secrets always builds")
        });
        Redactor { matcher }
    }

    /// `text` with every secret replaced by `[hidden]`.
    pub fn redact(&self, text: &str) -> String {
        let Some(matcher) = &self.matcher else {
            return text.to_string();
        };
        let mut redacted = String::with_capacity(text.len());
        matcher.replace_all_with(text, &mut redacted, |_, _, out| {
            out.push_str(HIDDEN);
            true
        });
        redacted
    }

    /// Whether there is nothing to replace.
    pub fn is_empty(&self) -> bool {
        self.matcher.is_none()
    }
}

/// Keeps values registered for the daemon's log until it is dropped.
#[must_use = "the values are unregistered when the registration is dropped"]
pub struct Registration {
    id: u64,
}

/// Registers `values` (a running job's decrypted secrets) to be hidden in every log line
/// written through [`Redacting`] until the returned registration is dropped.
pub fn register(values: &[String]) -> Registration {
    let mut registry = REGISTRY.write().unwrap_or_else(PoisonError::into_inner);
    registry.next_id += 1;
    let id = registry.next_id;
    registry.sets.push((id, values.to_vec()));
    registry.rebuild();
    Registration { id }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut registry = REGISTRY.write().unwrap_or_else(PoisonError::into_inner);
        registry.sets.retain(|(id, _)| *id != self.id);
        registry.rebuild();
    }
}

/// A `tracing_subscriber` writer maker whose writers hold each formatted log line and write it,
/// with every registered secret hidden, when flushed or dropped.
pub struct Redacting<M> {
    inner: M,
}

impl<M> Redacting<M> {
    /// Redacts what `inner` (such as `std::io::stderr`) would write.
    pub fn new(inner: M) -> Redacting<M> {
        Redacting { inner }
    }
}

impl<'a, M: MakeWriter<'a>> MakeWriter<'a> for Redacting<M> {
    type Writer = RedactedLine<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        RedactedLine::new(self.inner.make_writer())
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> Self::Writer {
        RedactedLine::new(self.inner.make_writer_for(meta))
    }
}

/// One log line on its way to `W`: buffered whole, so a secret split across writes is found.
pub struct RedactedLine<W: Write> {
    buffer: Vec<u8>,
    inner: W,
}

impl<W: Write> RedactedLine<W> {
    fn new(inner: W) -> RedactedLine<W> {
        RedactedLine {
            buffer: Vec::new(),
            inner,
        }
    }

    fn emit(&mut self) -> io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let redactor = REGISTRY
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .redactor
            .clone();
        let written = match redactor {
            Some(redactor) => {
                let text = String::from_utf8_lossy(&self.buffer);
                self.inner.write_all(redactor.redact(&text).as_bytes())
            }
            None => self.inner.write_all(&self.buffer),
        };
        self.buffer.clear();
        written
    }
}

impl<W: Write> Write for RedactedLine<W> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.buffer.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.emit()?;
        self.inner.flush()
    }
}

impl<W: Write> Drop for RedactedLine<W> {
    fn drop(&mut self) {
        let _ = self.emit();
    }
}

/// The values registered for the log, and a redactor of them all (`None`: none registered).
struct Registry {
    next_id: u64,
    sets: Vec<(u64, Vec<String>)>,
    redactor: Option<Arc<Redactor>>,
}

static REGISTRY: RwLock<Registry> = RwLock::new(Registry {
    next_id: 0,
    sets: Vec::new(),
    redactor: None,
});

impl Registry {
    fn rebuild(&mut self) {
        let redactor = Redactor::new(self.sets.iter().flat_map(|(_, values)| values));
        self.redactor = (!redactor.is_empty()).then(|| Arc::new(redactor));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn plain_escaped_and_base64_forms_are_hidden() {
        let secret = "p@ss\"w\\rd?>~~";
        let redactor = Redactor::new(vec![secret.to_string()]);
        assert!(!redactor.is_empty());
        let escaped = r#"p@ss\"w\\rd?>~~"#;
        let base64 = STANDARD.encode(secret);
        let url_safe = URL_SAFE_NO_PAD.encode(secret);
        assert_ne!(
            base64.trim_end_matches('='),
            url_safe,
            "the alphabets differ here"
        );
        let text = format!(
            "plain {secret}; json {{\"#p\":\"{escaped}\"}}; base64 {base64}; url {url_safe}."
        );
        assert_eq!(
            redactor.redact(&text),
            "plain [hidden]; json {\"#p\":\"[hidden]\"}; base64 [hidden]; url [hidden]."
        );
    }

    #[test]
    fn short_secrets_are_left_and_an_empty_redactor_changes_nothing() {
        let redactor = Redactor::new(["abc", "", "zzzz"]);
        assert_eq!(redactor.redact("abc abcd zzzz"), "abc abcd [hidden]");
        let empty = Redactor::new(["abc"]);
        assert!(empty.is_empty());
        assert_eq!(empty.redact("abc"), "abc");
    }

    #[test]
    fn overlapping_secrets_hide_the_longest() {
        let redactor = Redactor::new(["secret", "secret-longer", "ret-lo"]);
        assert_eq!(
            redactor.redact("a secret-longer b secret c"),
            "a [hidden] b [hidden] c"
        );
    }

    /// A shared buffer that log lines are written into.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    #[test]
    fn log_lines_hide_registered_values_until_unregistered() {
        let captured = Captured::default();
        let sink = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(Redacting::new(move || sink.clone()))
            .with_ansi(false)
            .finish();
        // Values unique to this test: other tests may register their own meanwhile.
        let secret = "log-secret-5e1f".to_string();
        let encoded = STANDARD.encode(&secret);
        tracing::subscriber::with_default(subscriber, || {
            let registration = register(&[secret.clone(), "ab".to_string()]);
            tracing::info!(token = %secret, "calling with {encoded} and ab");
            drop(registration);
            tracing::info!("after: {secret}");
        });
        let text = captured.text();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(
            lines[0].ends_with("calling with [hidden] and ab token=[hidden]"),
            "{text}"
        );
        assert!(lines[1].ends_with("after: log-secret-5e1f"), "{text}");
    }

    #[test]
    fn a_line_written_in_pieces_is_redacted_whole() {
        let registration = register(&["piece-secret-91c2".to_string()]);
        let captured = Captured::default();
        let maker = Redacting::new({
            let sink = captured.clone();
            move || sink.clone()
        });
        let mut line = maker.make_writer();
        line.write_all(b"a piece-sec").unwrap();
        line.write_all(b"ret-91c2 b\n").unwrap();
        assert_eq!(captured.text(), "", "held until flushed or dropped");
        drop(line);
        assert_eq!(captured.text(), "a [hidden] b\n");
        drop(registration);
    }
}
