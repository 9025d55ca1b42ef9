//! A log record as one line of JSON (`serve --log-format json`), for log shippers: the
//! time, level, target and message, then the record's key-values (`log`'s `kv`: a
//! connection's id, peer, bytes, ...) as fields of their own.
//!
//! Every string is escaped, the message and each value alike: quotes and backslashes,
//! and every control, format or invisible character as `\uXXXX`, so that nothing a
//! client sent can end the line, add a field or hide text. Client bytes reach a record
//! already escaped by [`LogText`](crate::protocol::LogText); this escapes them again, as
//! any text, so the message reads as the text format's does.

use std::fmt::{self, Write as _};
use std::io;
use std::time::SystemTime;

use log::kv::{self, Key, ToValue, Value, VisitSource, VisitValue};

use crate::protocol::is_invisible;

/// Writes `record`, logged at `time`, as one line of JSON, its newline included: one
/// object with `time` (RFC 3339, UTC, milliseconds), `level`, `target`, `message`, then
/// each key-value of the record; a value without one (`None`) is left out.
pub fn write_line(
    out: &mut impl io::Write,
    time: SystemTime,
    record: &log::Record<'_>,
) -> io::Result<()> {
    let mut sink = IoSink { out, error: None };
    match json_line(&mut sink, time, record) {
        Ok(()) => Ok(()),
        Err(_) => Err(sink
            .error
            .unwrap_or_else(|| io::Error::other("a log record's value failed to format"))),
    }
}

/// [`write_line`] into any `fmt::Write`.
fn json_line(out: &mut impl fmt::Write, time: SystemTime, record: &log::Record<'_>) -> fmt::Result {
    out.write_str("{\"time\":")?;
    match jiff::Timestamp::try_from(time) {
        Ok(time) => write!(out, "\"{time:.3}\"")?,
        // A clock outside jiff's range (before year -9999 or after 9999).
        Err(_) => out.write_str("null")?,
    }
    write!(out, ",\"level\":\"{}\",\"target\":", record.level())?;
    string(out, format_args!("{}", record.target()))?;
    out.write_str(",\"message\":")?;
    string(out, *record.args())?;
    record
        .key_values()
        .visit(&mut Fields { out })
        .map_err(|_| fmt::Error)?;
    out.write_str("}\n")
}

/// `text` as a JSON string, quotes included.
fn string(out: &mut impl fmt::Write, text: fmt::Arguments<'_>) -> fmt::Result {
    out.write_char('"')?;
    Escaped(&mut *out).write_fmt(text)?;
    out.write_char('"')
}

/// Writes what it is given as the inside of a JSON string: `"` and `\` after a
/// backslash, every control, format and invisible character (see [`is_invisible`]) as
/// `\uXXXX` (a pair of them past the Basic Multilingual Plane), the rest as it is.
struct Escaped<'a, W>(&'a mut W);

impl<W: fmt::Write> fmt::Write for Escaped<'_, W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut plain = 0;
        for (at, c) in s.char_indices() {
            // Printable ASCII is most of a log line: no look-up of its category.
            let escape = match c {
                '"' | '\\' => true,
                ' '..='~' => false,
                _ => is_invisible(c),
            };
            if !escape {
                continue;
            }
            self.0.write_str(&s[plain..at])?;
            plain = at + c.len_utf8();
            if c == '"' || c == '\\' {
                self.0.write_char('\\')?;
                self.0.write_char(c)?;
            } else {
                for unit in c.encode_utf16(&mut [0; 2]) {
                    write!(self.0, "\\u{unit:04x}")?;
                }
            }
        }
        self.0.write_str(&s[plain..])
    }
}

/// Writes each key-value of a record as a field: `,"key":value`.
struct Fields<'a, W> {
    out: &'a mut W,
}

impl<'kvs, W: fmt::Write> VisitSource<'kvs> for Fields<'_, W> {
    fn visit_pair(&mut self, key: Key<'kvs>, value: Value<'kvs>) -> Result<(), kv::Error> {
        value.visit(Field {
            out: &mut *self.out,
            key: key.as_str(),
        })
    }
}

/// One field, written once its value shows it is not empty: numbers and booleans as
/// JSON's, anything else as a string of its text.
struct Field<'a, W> {
    out: &'a mut W,
    key: &'a str,
}

impl<W: fmt::Write> Field<'_, W> {
    /// `,"key":` then `value`, written as it is.
    fn raw(&mut self, value: impl fmt::Display) -> Result<(), kv::Error> {
        self.out.write_char(',')?;
        string(self.out, format_args!("{}", self.key))?;
        write!(self.out, ":{value}")?;
        Ok(())
    }

    /// `,"key":` then `value` as a JSON string.
    fn text(&mut self, value: impl fmt::Display) -> Result<(), kv::Error> {
        self.out.write_char(',')?;
        string(self.out, format_args!("{}", self.key))?;
        self.out.write_char(':')?;
        string(self.out, format_args!("{value}"))?;
        Ok(())
    }
}

impl<W: fmt::Write> VisitValue<'_> for Field<'_, W> {
    fn visit_any(&mut self, value: Value<'_>) -> Result<(), kv::Error> {
        self.text(value)
    }

    fn visit_null(&mut self) -> Result<(), kv::Error> {
        Ok(())
    }

    fn visit_u64(&mut self, value: u64) -> Result<(), kv::Error> {
        self.raw(value)
    }

    fn visit_i64(&mut self, value: i64) -> Result<(), kv::Error> {
        self.raw(value)
    }

    fn visit_u128(&mut self, value: u128) -> Result<(), kv::Error> {
        self.raw(value)
    }

    fn visit_i128(&mut self, value: i128) -> Result<(), kv::Error> {
        self.raw(value)
    }

    fn visit_f64(&mut self, value: f64) -> Result<(), kv::Error> {
        // JSON has no NaN or infinity. Rust writes finite floats without an exponent,
        // which JSON reads as they are.
        if value.is_finite() {
            self.raw(value)
        } else {
            self.raw("null")
        }
    }

    fn visit_bool(&mut self, value: bool) -> Result<(), kv::Error> {
        self.raw(value)
    }

    fn visit_str(&mut self, value: &str) -> Result<(), kv::Error> {
        self.text(value)
    }
}

/// A value that may be absent, for a log record's key-values: its text if present; if
/// not, nothing, and the JSON line leaves the field out. (`log` takes an `Option` only of
/// its own value types.)
pub struct Optional<T>(pub Option<T>);

impl<T: fmt::Display> ToValue for Optional<T> {
    fn to_value(&self) -> Value<'_> {
        match &self.0 {
            Some(value) => Value::from_display(value),
            None => Value::null(),
        }
    }
}

/// Seconds to the millisecond, as a number: a duration as the close line shows it.
pub fn seconds(duration: std::time::Duration) -> f64 {
    (duration.as_secs_f64() * 1000.0).round() / 1000.0
}

/// An `io::Write` as a `fmt::Write`, keeping the error `fmt::Error` cannot carry.
struct IoSink<'a, W> {
    out: &'a mut W,
    error: Option<io::Error>,
}

impl<W: io::Write> fmt::Write for IoSink<'_, W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.out.write_all(s.as_bytes()).map_err(|e| {
            self.error = Some(e);
            fmt::Error
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::LogText;
    use std::time::{Duration, UNIX_EPOCH};

    /// `record`'s line, at one second past the epoch.
    fn line(record: &log::Record<'_>) -> String {
        let mut out = Vec::new();
        write_line(&mut out, UNIX_EPOCH + Duration::from_millis(1_234), record).unwrap();
        String::from_utf8(out).unwrap()
    }

    /// The line of an info record with `message` and `kvs`, parsed back.
    fn parsed(message: fmt::Arguments<'_>, kvs: &[(&str, Value<'_>)]) -> serde_json::Value {
        let record = log::Record::builder()
            .level(log::Level::Info)
            .target("tcp_hello::server::setup")
            .args(message)
            .key_values(&kvs)
            .build();
        let line = line(&record);
        assert!(line.ends_with("}\n"), "{line:?}");
        assert_eq!(line.matches('\n').count(), 1, "one line: {line:?}");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"))
    }

    #[test]
    fn a_record_is_one_object_with_time_level_target_message_and_its_fields() {
        let peer: std::net::SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let absent = Optional::<std::net::SocketAddr>(None);
        let kvs = [
            ("id", Value::from(3u64)),
            ("peer", Value::from_display(&peer)),
            (
                "duration",
                Value::from(seconds(Duration::from_micros(503_499))),
            ),
            ("tls", Value::from(false)),
            ("via", absent.to_value()),
        ];
        assert_eq!(
            line(
                &log::Record::builder()
                    .level(log::Level::Info)
                    .target("tcp_hello::server::setup")
                    .args(format_args!("conn 3 closed: {peer}"))
                    .key_values(&kvs)
                    .build()
            ),
            "{\"time\":\"1970-01-01T00:00:01.234Z\",\"level\":\"INFO\",\
             \"target\":\"tcp_hello::server::setup\",\"message\":\"conn 3 closed: 127.0.0.1:5000\",\
             \"id\":3,\"peer\":\"127.0.0.1:5000\",\"duration\":0.503,\"tls\":false}\n"
        );
    }

    #[test]
    fn quotes_backslashes_newlines_and_controls_cannot_end_the_string_or_the_line() {
        let hostile = "Ann\", \"level\":\"ERROR\"}\n{\"forged\":1} \\\" \r\t\x00\x1b[31m\x7f\u{85}";
        let v = parsed(
            format_args!("name {hostile}"),
            &[
                ("name", Value::from(hostile)),
                ("shown", Value::from_display(&hostile)),
            ],
        );
        assert_eq!(v["message"], format!("name {hostile}"));
        assert_eq!(v["name"], hostile);
        assert_eq!(v["shown"], hostile);
        assert_eq!(v["level"], "INFO");
        let mut fields: Vec<&String> = v.as_object().unwrap().keys().collect();
        fields.sort();
        assert_eq!(
            fields,
            ["level", "message", "name", "shown", "target", "time"],
            "no field forged"
        );
        // Every control as \uXXXX, nothing raw.
        let line = line(
            &log::Record::builder()
                .args(format_args!("{hostile}"))
                .build(),
        );
        assert!(
            line.contains(r#"Ann\", \"level\":\"ERROR\"}\u000a{\"forged\":1} \\\" \u000d\u0009\u0000\u001b[31m\u007f\u0085"#),
            "{line}"
        );
        assert!(
            !line.trim_end_matches('\n').chars().any(char::is_control),
            "{line:?}"
        );
    }

    #[test]
    fn invisible_characters_are_escaped_and_visible_text_stays() {
        let text = "a\u{2028}b\u{202E}c\u{200B}d\u{E0041}e 张三 café 🦀";
        let line = line(&log::Record::builder().args(format_args!("{text}")).build());
        assert!(
            line.contains(r#""a\u2028b\u202ec\u200bd\udb40\udc41e 张三 café 🦀""#),
            "{line}"
        );
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["message"], text);
    }

    #[test]
    fn client_bytes_escaped_by_log_text_read_back_as_the_text_format_shows_them() {
        // Invalid UTF-8 and controls from a client: LogText makes them visible text
        // (`\xff`, `\n`), and JSON keeps that text exactly, its backslashes escaped.
        let name = b"Bob\xff\xfe\n\"}";
        let shown = LogText(name).to_string();
        let v = parsed(
            format_args!("conn 1: name {}", LogText(name)),
            &[("name", Value::from_display(&LogText(name)))],
        );
        assert_eq!(v["message"], format!("conn 1: name {shown}"));
        assert_eq!(v["name"], shown);
        assert_eq!(shown, "Bob\\xff\\xfe\\n\"}");
    }

    #[test]
    fn numbers_are_numbers_and_what_json_cannot_hold_is_null() {
        let v = parsed(
            format_args!("m"),
            &[
                ("u", Value::from(u64::MAX)),
                ("i", Value::from(-3i64)),
                ("f", Value::from(0.25f64)),
                ("whole", Value::from(2.0f64)),
                ("tiny", Value::from(1e-7f64)),
                ("nan", Value::from(f64::NAN)),
                ("c", Value::from('"')),
            ],
        );
        assert_eq!(v["u"], u64::MAX);
        assert_eq!(v["i"], -3);
        assert_eq!(v["f"], 0.25);
        assert_eq!(v["whole"], 2.0);
        assert_eq!(v["tiny"], 1e-7);
        assert!(v["nan"].is_null());
        assert_eq!(v["c"], "\"");
    }

    #[test]
    fn a_write_error_is_returned() {
        struct Full;
        impl io::Write for Full {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::ErrorKind::StorageFull.into())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let record = log::Record::builder().args(format_args!("m")).build();
        let e = write_line(&mut Full, UNIX_EPOCH, &record).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::StorageFull);
    }
}
