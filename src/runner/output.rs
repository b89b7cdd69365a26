//! What a container prints: stdout split into event lines, the bound on stored lines, bounded
//! buffers for error messages.

use std::collections::VecDeque;

/// Longest event message; longer ones end with ` [trimmed]`.
pub const MAX_EVENT_CHARS: usize = 60_000;
/// Longest user error message; longer ones keep their head and tail around ` ... `.
pub const MAX_MESSAGE_CHARS: usize = 4_000;
/// Lines past `max_events_per_job` still stored at a container's end: its last ones.
pub const TAIL_LINES: usize = 1_000;

/// Splits a byte stream into lines, whatever the chunking.
#[derive(Default)]
pub struct LineSplitter {
    pending: Vec<u8>,
}

impl LineSplitter {
    /// A line longer than this is emitted in pieces rather than buffered without bound.
    const MAX_PENDING: usize = 4 * MAX_EVENT_CHARS;

    /// Feeds a chunk; returns the lines it completed, without their line breaks.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<String> {
        let mut lines = Vec::new();
        for &byte in chunk {
            if byte == b'\n' {
                lines.push(self.take());
            } else {
                self.pending.push(byte);
                if self.pending.len() >= Self::MAX_PENDING {
                    lines.push(self.take());
                }
            }
        }
        lines
    }

    /// The unfinished last line, if any.
    pub fn finish(&mut self) -> Option<String> {
        (!self.pending.is_empty()).then(|| self.take())
    }

    fn take(&mut self) -> String {
        let mut bytes = std::mem::take(&mut self.pending);
        if bytes.last() == Some(&b'\r') {
            bytes.pop();
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

/// Keeps a job's stored lines within `max_events_per_job`: a container's lines are stored as
/// they come while there is `room`; past it they are counted, and the last `TAIL_LINES` of
/// them held for the end of the log.
pub struct LineBound {
    room: usize,
    past: usize,
    tail: VecDeque<String>,
}

/// The lines a `LineBound` held back: `lines` (the last ones, oldest first) are still to be
/// stored; `dropped` lines before them never will be.
#[derive(Debug, PartialEq, Eq)]
pub struct Held {
    pub dropped: usize,
    pub lines: Vec<String>,
}

impl LineBound {
    /// A bound with `room` for so many more lines.
    pub fn new(room: usize) -> LineBound {
        LineBound {
            room,
            past: 0,
            tail: VecDeque::new(),
        }
    }

    /// The line back when it is to be stored now; otherwise it is counted and held.
    pub fn admit(&mut self, line: String) -> Option<String> {
        if self.room > 0 {
            self.room -= 1;
            return Some(line);
        }
        self.past += 1;
        if self.tail.len() == TAIL_LINES {
            self.tail.pop_front();
        }
        self.tail.push_back(line);
        None
    }

    /// What was held back, once the log ended.
    pub fn finish(self) -> Held {
        Held {
            dropped: self.past - self.tail.len(),
            lines: self.tail.into(),
        }
    }
}

/// The warning stored before a container's last lines when lines were dropped.
pub fn dropped_message(dropped: usize, max_events_per_job: usize, last: usize) -> String {
    format!(
        "The component printed more lines than a job keeps (max_events_per_job = \
         {max_events_per_job}): {dropped} lines were not stored; its last {last} lines follow."
    )
}

/// Keeps the first and the last bytes of a stream of any length.
#[derive(Default)]
pub struct HeadTail {
    head: Vec<u8>,
    tail: std::collections::VecDeque<u8>,
    dropped: bool,
}

impl HeadTail {
    /// Enough bytes on each side for `MAX_MESSAGE_CHARS / 2` characters of 4-byte UTF-8.
    const SIDE: usize = 4 * MAX_MESSAGE_CHARS;

    pub fn push(&mut self, chunk: &[u8]) {
        let room = Self::SIDE.saturating_sub(self.head.len());
        let (to_head, rest) = chunk.split_at(room.min(chunk.len()));
        self.head.extend_from_slice(to_head);
        self.tail.extend(rest);
        if self.tail.len() > Self::SIDE {
            self.tail.drain(..self.tail.len() - Self::SIDE);
            self.dropped = true;
        }
    }

    /// Whether the bytes pushed so far end with `suffix`, as far as the kept bytes tell: of a
    /// `suffix` longer than the kept tail, its end is compared with the tail.
    pub fn ends_with(&self, suffix: &[u8]) -> bool {
        if !self.dropped {
            let kept = self.head.len() + self.tail.len();
            if suffix.len() > kept {
                return false;
            }
            let (from_head, from_tail) =
                suffix.split_at(suffix.len().saturating_sub(self.tail.len()));
            let head_end = &self.head[self.head.len() - from_head.len()..];
            return head_end == from_head
                && self
                    .tail
                    .iter()
                    .rev()
                    .zip(from_tail.iter().rev())
                    .all(|(a, b)| a == b);
        }
        let compared = &suffix[suffix.len().saturating_sub(self.tail.len())..];
        self.tail
            .iter()
            .rev()
            .zip(compared.iter().rev())
            .all(|(a, b)| a == b)
    }

    /// The kept text, valid UTF-8; ` ... ` marks where bytes were dropped.
    pub fn text(&self) -> String {
        let head = String::from_utf8_lossy(&self.head);
        let tail: Vec<u8> = self.tail.iter().copied().collect();
        let tail = String::from_utf8_lossy(&tail);
        if self.dropped {
            format!("{head} ... {tail}")
        } else {
            format!("{head}{tail}")
        }
    }
}

/// An event message: at most `MAX_EVENT_CHARS`, then ` [trimmed]`.
pub fn event_text(text: &str) -> String {
    match text.char_indices().nth(MAX_EVENT_CHARS) {
        Some((cut, _)) => format!("{} [trimmed]", &text[..cut]),
        None => text.to_string(),
    }
}

/// A user error message: at most `MAX_MESSAGE_CHARS`, keeping head and tail around ` ... `.
pub fn message_text(text: &str) -> String {
    const SEPARATOR: &str = " ... ";
    let count = text.chars().count();
    if count <= MAX_MESSAGE_CHARS {
        return text.to_string();
    }
    let keep = MAX_MESSAGE_CHARS - SEPARATOR.len();
    let head: String = text.chars().take(keep / 2).collect();
    let tail: String = text.chars().skip(count - (keep - keep / 2)).collect();
    format!("{head}{SEPARATOR}{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_survive_any_chunking() {
        let mut splitter = LineSplitter::default();
        let mut lines = splitter.push(b"first li");
        lines.extend(splitter.push(b"ne\r\nsecond\nthi"));
        lines.extend(splitter.push(b"rd"));
        lines.extend(splitter.finish());
        assert_eq!(lines, ["first line", "second", "third"]);
        assert_eq!(splitter.finish(), None);
    }

    #[test]
    fn invalid_utf8_becomes_replacement_characters() {
        let mut splitter = LineSplitter::default();
        assert_eq!(splitter.push(b"a\xffb\n"), ["a\u{fffd}b"]);
    }

    #[test]
    fn an_endless_line_is_emitted_in_pieces() {
        let mut splitter = LineSplitter::default();
        let lines = splitter.push(&vec![b'x'; LineSplitter::MAX_PENDING * 2 + 5]);
        assert_eq!(lines.len(), 2);
        assert_eq!(splitter.finish().unwrap().len(), 5);
    }

    #[test]
    fn event_text_is_trimmed_at_60000_characters() {
        assert_eq!(event_text("short"), "short");
        let long = "é".repeat(MAX_EVENT_CHARS + 1);
        let trimmed = event_text(&long);
        assert!(trimmed.ends_with("é [trimmed]"));
        assert_eq!(
            trimmed.chars().count(),
            MAX_EVENT_CHARS + " [trimmed]".len()
        );
    }

    #[test]
    fn message_text_keeps_head_and_tail_within_4000_characters() {
        let text = format!(
            "{}{}{}",
            "a".repeat(3000),
            "b".repeat(3000),
            "c".repeat(3000)
        );
        let cut = message_text(&text);
        assert_eq!(cut.chars().count(), MAX_MESSAGE_CHARS);
        assert!(cut.starts_with("aaa") && cut.ends_with("ccc"));
        assert!(cut.contains("a ... c"));
        assert_eq!(message_text("exact"), "exact");
    }

    #[test]
    fn the_bound_stores_the_first_lines_and_holds_the_last() {
        let mut bound = LineBound::new(3);
        let admitted: Vec<Option<String>> = (1..=TAIL_LINES + 13)
            .map(|i| bound.admit(format!("line {i}")))
            .collect();
        let stored: Vec<&str> = admitted.iter().flatten().map(String::as_str).collect();
        assert_eq!(stored, ["line 1", "line 2", "line 3"]);
        let held = bound.finish();
        assert_eq!(held.dropped, 10);
        assert_eq!(held.lines.len(), TAIL_LINES);
        assert_eq!(held.lines[0], "line 14");
        assert_eq!(
            held.lines[TAIL_LINES - 1],
            format!("line {}", TAIL_LINES + 13)
        );
    }

    #[test]
    fn the_bound_drops_nothing_when_the_rest_fits_in_the_tail() {
        let mut bound = LineBound::new(1);
        assert_eq!(bound.admit("a".into()), Some("a".into()));
        assert_eq!(bound.admit("b".into()), None);
        assert_eq!(bound.admit("c".into()), None);
        let held = bound.finish();
        assert_eq!(
            (held.dropped, held.lines),
            (0, vec!["b".into(), "c".into()])
        );
        let none = LineBound::new(5).finish();
        assert_eq!((none.dropped, none.lines.len()), (0, 0));
        let message = dropped_message(1950, 50, 1000);
        assert_eq!(
            message,
            "The component printed more lines than a job keeps (max_events_per_job = 50): 1950 \
             lines were not stored; its last 1000 lines follow."
        );
    }

    #[test]
    fn head_tail_tells_how_the_stream_ends() {
        let mut short = HeadTail::default();
        short.push(b"one\ntwo\n");
        assert!(
            short.ends_with(b"two\n") && short.ends_with(b"one\ntwo\n") && short.ends_with(b"")
        );
        assert!(!short.ends_with(b"three\n") && !short.ends_with(b"zero\none\ntwo\n"));

        let mut long = HeadTail::default();
        for i in 0..10_000 {
            long.push(format!("line {i}\n").as_bytes());
        }
        assert!(long.ends_with(b"line 9998\nline 9999\n"));
        assert!(!long.ends_with(b"line 9998\n"));
        // Longer than the kept tail: its end is what counts.
        let mut window = Vec::new();
        for i in 0..10_000 {
            window.extend_from_slice(format!("line {i}\n").as_bytes());
        }
        assert!(long.ends_with(&window));
        window.extend_from_slice(b"line 10000\n");
        assert!(!long.ends_with(&window));
        // Head and tail together, not yet dropping.
        let mut both = HeadTail::default();
        both.push(&vec![b'a'; HeadTail::SIDE]);
        both.push(b"bc");
        let mut expected = vec![b'a'; 10];
        expected.extend_from_slice(b"bc");
        assert!(both.ends_with(&expected) && !both.ends_with(b"ac"));
    }

    #[test]
    fn head_tail_keeps_both_ends_of_a_long_stream() {
        let mut buffer = HeadTail::default();
        buffer.push(b"BEGIN");
        for _ in 0..10_000 {
            buffer.push(b"middle middle middle ");
        }
        buffer.push(b"END");
        let text = buffer.text();
        assert!(text.starts_with("BEGIN") && text.ends_with("END"));
        assert!(text.len() <= 2 * HeadTail::SIDE + 5);
        let message = message_text(&text);
        assert!(message.starts_with("BEGIN") && message.ends_with("END"));
    }
}
