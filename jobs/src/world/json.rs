//! A tiny allocation-free JSON object writer for the generator's hot path. Only for values the
//! generator controls (identifiers and numbers without characters that need escaping).

/// Writes `{"k":v,...}` into a byte buffer.
pub(crate) struct Obj<'a> {
    buf: &'a mut Vec<u8>,
    first: bool,
}

impl<'a> Obj<'a> {
    pub(crate) fn open(buf: &'a mut Vec<u8>) -> Self {
        buf.push(b'{');
        Obj { buf, first: true }
    }
    fn key(&mut self, k: &str) {
        if !self.first {
            self.buf.push(b',');
        }
        self.first = false;
        self.buf.push(b'"');
        self.buf.extend_from_slice(k.as_bytes());
        self.buf.extend_from_slice(b"\":");
    }
    pub(crate) fn str(&mut self, k: &str, v: &str) -> &mut Self {
        self.key(k);
        self.buf.push(b'"');
        self.buf.extend_from_slice(v.as_bytes());
        self.buf.push(b'"');
        self
    }
    /// A string value assembled from parts (prefix + number), e.g. `card-42`.
    pub(crate) fn id(&mut self, k: &str, prefix: &str, n: u64) -> &mut Self {
        self.key(k);
        self.buf.push(b'"');
        self.buf.extend_from_slice(prefix.as_bytes());
        self.buf
            .extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
        self.buf.push(b'"');
        self
    }
    pub(crate) fn int(&mut self, k: &str, v: i64) -> &mut Self {
        self.key(k);
        self.buf
            .extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
        self
    }
    pub(crate) fn bool(&mut self, k: &str, v: bool) -> &mut Self {
        self.key(k);
        self.buf
            .extend_from_slice(if v { b"true" } else { b"false" });
        self
    }
    pub(crate) fn raw(&mut self, k: &str, f: impl FnOnce(&mut Vec<u8>)) -> &mut Self {
        self.key(k);
        f(self.buf);
        self
    }
    pub(crate) fn close(&mut self) {
        self.buf.push(b'}');
    }
}

/// Appends RFC 3339 UTC with milliseconds (`2026-01-01T00:00:00.000Z`) for epoch ms `t`,
/// caching the date part of the last day seen.
pub(crate) struct TsFormatter {
    day: u64,
    date: [u8; 10],
}

impl TsFormatter {
    pub(crate) fn new() -> Self {
        TsFormatter {
            day: u64::MAX,
            date: *b"1970-01-01",
        }
    }
    pub(crate) fn push(&mut self, buf: &mut Vec<u8>, t: u64) {
        let day = t / 86_400_000;
        if day != self.day {
            let s = tidemark_operators::time::fmt_rfc3339_millis(day * 86_400_000);
            self.date.copy_from_slice(&s.as_bytes()[..10]);
            self.day = day;
        }
        let ms_of_day = t % 86_400_000;
        let (h, m, s, ms) = (
            ms_of_day / 3_600_000,
            (ms_of_day / 60_000) % 60,
            (ms_of_day / 1000) % 60,
            ms_of_day % 1000,
        );
        buf.push(b'"');
        buf.extend_from_slice(&self.date);
        buf.push(b'T');
        let two = |buf: &mut Vec<u8>, v: u64| {
            buf.push(b'0' + (v / 10) as u8);
            buf.push(b'0' + (v % 10) as u8);
        };
        two(buf, h);
        buf.push(b':');
        two(buf, m);
        buf.push(b':');
        two(buf, s);
        buf.push(b'.');
        buf.push(b'0' + (ms / 100) as u8);
        buf.push(b'0' + ((ms / 10) % 10) as u8);
        buf.push(b'0' + (ms % 10) as u8);
        buf.extend_from_slice(b"Z\"");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ts_matches_reference_formatter() {
        let mut f = TsFormatter::new();
        for t in [
            0u64,
            1_767_225_600_000,
            1_767_225_600_000 + 86_399_999,
            1_709_210_096_789,
        ] {
            let mut buf = Vec::new();
            f.push(&mut buf, t);
            let expect = format!("\"{}\"", tidemark_operators::time::fmt_rfc3339_millis(t));
            assert_eq!(String::from_utf8(buf).unwrap(), expect);
        }
    }
}
