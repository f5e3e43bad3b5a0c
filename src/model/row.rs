//! A row as the source hands it over: its key, its order value and its
//! extra columns, each a typed [`Datum`], read by name with typed getters.

use std::fmt;
use std::sync::Arc;

use serde::ser::{Serialize, Serializer};
use serde_json::value::RawValue;

/// Microseconds from the Unix epoch for `+infinity` timestamps.
pub const TIMESTAMP_INFINITY: i64 = i64::MAX;
/// Microseconds from the Unix epoch for `-infinity` timestamps.
pub const TIMESTAMP_NEG_INFINITY: i64 = i64::MIN;
/// Days from the Unix epoch for `+infinity` dates.
pub const DATE_INFINITY: i32 = i32::MAX;
/// Days from the Unix epoch for `-infinity` dates.
pub const DATE_NEG_INFINITY: i32 = i32::MIN;

/// One value of a row, typed as the database typed it.
///
/// # JSON form
///
/// A [`Datum`] serializes (serde, so JSON with `serde_json`) as:
///
/// | Database type | `Datum` | JSON |
/// |---|---|---|
/// | NULL (any type) | `Null` | `null` |
/// | `smallint`, `integer`, `bigint`, `oid`; SQLite INTEGER | `Int` | a number: `42` |
/// | `real`, `double precision`; SQLite REAL | `Float` | a number: `0.5`; NaN and infinities as the strings `"NaN"`, `"Infinity"`, `"-Infinity"` |
/// | `boolean` | `Bool` | `true` / `false` |
/// | `numeric` / `decimal` | `Numeric` | its exact decimal text, a string: `"12.50"` (`"NaN"`, `"Infinity"`, `"-Infinity"`) |
/// | `text`, `varchar`, `char`, `name`, `uuid`; SQLite TEXT | `Text` | a string (a `uuid` in its hyphenated form) |
/// | `json`, `jsonb` | `Json` | the document itself, nested |
/// | `timestamp`, `timestamptz` | `Timestamp` | RFC 3339 in UTC, microseconds when there are any: `"2024-05-01T12:00:00.250Z"`; `"infinity"`, `"-infinity"` |
/// | `date` | `Date` | `"2024-05-01"`; `"infinity"`, `"-infinity"` |
/// | `bytea`; SQLite BLOB | `Bytes` | standard base64 with padding: `"3q2+7w=="` |
/// | any other PostgreSQL type (arrays, enums, `interval`, `citext`, ...), or every column with [`Source::columns_as_text`](crate::Source::columns_as_text) | `Text` | PostgreSQL's text form of the value |
///
/// A `timestamp without time zone` is read as if it were UTC. SQLite has
/// no column types to speak of: each value is read by the storage class it
/// has (an INTEGER column holding `'abc'` yields `Text`). Years outside
/// 0000 to 9999 are written with a sign (`"+12024-01-01"`), as RFC 3339
/// cannot write them.
///
/// A value that cannot be read at all (text that is not UTF-8, a date
/// beyond the range kept here) makes its row a poison row: it goes to dead
/// letters with its key and the column named, and the rest of its page is
/// delivered.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Datum {
    /// SQL NULL.
    Null,
    /// A boolean.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A floating-point number (a `real` is widened by its shortest
    /// decimal form, so `0.1` stays `0.1`).
    Float(f64),
    /// An exact decimal, as its text (`"-12.50"`, `"NaN"`, `"Infinity"`).
    Numeric(String),
    /// Text.
    Text(String),
    /// A JSON document, kept as the database wrote it.
    Json(Box<RawValue>),
    /// Microseconds since 1970-01-01T00:00:00Z;
    /// [`TIMESTAMP_INFINITY`] and [`TIMESTAMP_NEG_INFINITY`] stand for
    /// PostgreSQL's infinities.
    Timestamp(i64),
    /// Days since 1970-01-01; [`DATE_INFINITY`] and [`DATE_NEG_INFINITY`]
    /// stand for PostgreSQL's infinities.
    Date(i32),
    /// Bytes.
    Bytes(Vec<u8>),
}

impl PartialEq for Datum {
    fn eq(&self, other: &Self) -> bool {
        use Datum as D;
        match (self, other) {
            (D::Null, D::Null) => true,
            (D::Bool(a), D::Bool(b)) => a == b,
            (D::Int(a), D::Int(b)) => a == b,
            (D::Float(a), D::Float(b)) => a == b || (a.is_nan() && b.is_nan()),
            (D::Numeric(a), D::Numeric(b)) | (D::Text(a), D::Text(b)) => a == b,
            (D::Json(a), D::Json(b)) => a.get() == b.get(),
            (D::Timestamp(a), D::Timestamp(b)) => a == b,
            (D::Date(a), D::Date(b)) => a == b,
            (D::Bytes(a), D::Bytes(b)) => a == b,
            _ => false,
        }
    }
}

impl Datum {
    /// What kind of value this is, as errors name it.
    pub fn kind(&self) -> &'static str {
        match self {
            Datum::Null => "null",
            Datum::Bool(_) => "boolean",
            Datum::Int(_) => "integer",
            Datum::Float(_) => "float",
            Datum::Numeric(_) => "numeric",
            Datum::Text(_) => "text",
            Datum::Json(_) => "json",
            Datum::Timestamp(_) => "timestamp",
            Datum::Date(_) => "date",
            Datum::Bytes(_) => "bytes",
        }
    }

    /// Whether this is SQL NULL.
    pub fn is_null(&self) -> bool {
        matches!(self, Datum::Null)
    }

    /// A JSON document as a datum, checking that it is one.
    pub fn json(text: &str) -> Result<Self, serde_json::Error> {
        RawValue::from_string(text.to_owned()).map(Datum::Json)
    }
}

impl Serialize for Datum {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Datum::Null => s.serialize_none(),
            Datum::Bool(b) => s.serialize_bool(*b),
            Datum::Int(i) => s.serialize_i64(*i),
            Datum::Float(f) if f.is_nan() => s.serialize_str("NaN"),
            Datum::Float(f) if f.is_infinite() => {
                s.serialize_str(if *f > 0.0 { "Infinity" } else { "-Infinity" })
            }
            Datum::Float(f) => s.serialize_f64(*f),
            Datum::Numeric(t) | Datum::Text(t) => s.serialize_str(t),
            Datum::Json(raw) => raw.serialize(s),
            Datum::Timestamp(us) => s.collect_str(&Rfc3339(*us)),
            Datum::Date(d) => s.collect_str(&IsoDate(*d)),
            Datum::Bytes(b) => s.collect_str(&Base64(b)),
        }
    }
}

impl fmt::Display for Datum {
    /// The value as its JSON form would show it, without quotes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Datum::Null => f.write_str("null"),
            Datum::Bool(b) => write!(f, "{b}"),
            Datum::Int(i) => write!(f, "{i}"),
            Datum::Float(x) if x.is_nan() => f.write_str("NaN"),
            Datum::Float(x) if x.is_infinite() => {
                f.write_str(if *x > 0.0 { "Infinity" } else { "-Infinity" })
            }
            Datum::Float(x) => write!(f, "{x}"),
            Datum::Numeric(t) | Datum::Text(t) => f.write_str(t),
            Datum::Json(raw) => f.write_str(raw.get()),
            Datum::Timestamp(us) => Rfc3339(*us).fmt(f),
            Datum::Date(d) => IsoDate(*d).fmt(f),
            Datum::Bytes(b) => Base64(b).fmt(f),
        }
    }
}

/// A timestamp in RFC 3339, UTC.
struct Rfc3339(i64);

impl fmt::Display for Rfc3339 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            TIMESTAMP_INFINITY => return f.write_str("infinity"),
            TIMESTAMP_NEG_INFINITY => return f.write_str("-infinity"),
            _ => {}
        }
        let secs = self.0.div_euclid(1_000_000);
        let micros = self.0.rem_euclid(1_000_000);
        let days = secs.div_euclid(86_400);
        let in_day = secs.rem_euclid(86_400);
        write_civil(f, days)?;
        write!(
            f,
            "T{:02}:{:02}:{:02}",
            in_day / 3600,
            in_day / 60 % 60,
            in_day % 60
        )?;
        if micros != 0 {
            let mut digits = format!("{micros:06}");
            while digits.ends_with('0') {
                digits.pop();
            }
            write!(f, ".{digits}")?;
        }
        f.write_str("Z")
    }
}

/// A date as `YYYY-MM-DD`.
struct IsoDate(i32);

impl fmt::Display for IsoDate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            DATE_INFINITY => f.write_str("infinity"),
            DATE_NEG_INFINITY => f.write_str("-infinity"),
            d => write_civil(f, i64::from(d)),
        }
    }
}

/// Writes the proleptic Gregorian date `days` after 1970-01-01 (Howard
/// Hinnant's civil-from-days arithmetic), for any year an i64 of
/// microseconds reaches.
fn write_civil(f: &mut fmt::Formatter<'_>, days: i64) -> fmt::Result {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    if (0..=9999).contains(&year) {
        write!(f, "{year:04}-{month:02}-{day:02}")
    } else {
        write!(f, "{year:+05}-{month:02}-{day:02}")
    }
}

/// Bytes in standard base64 with padding.
struct Base64<'a>(&'a [u8]);

impl fmt::Display for Base64<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const ALPHABET: &[u8; 64] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::with_capacity(self.0.len().div_ceil(3) * 4);
        for chunk in self.0.chunks(3) {
            let b = [
                chunk[0],
                chunk.get(1).copied().unwrap_or(0),
                chunk.get(2).copied().unwrap_or(0),
            ];
            let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
                } else {
                    out.push('=');
                }
            }
        }
        f.write_str(&out)
    }
}

/// Why a processor rejected a row (or a typed getter could not read a
/// column): it goes to dead letters with this reason.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Poison(pub String);

/// A row read from the source: its key, its order value and the extra
/// columns of [`Source::columns`](crate::Source::columns), typed.
#[derive(Clone, Debug, PartialEq)]
pub struct SourceRow {
    /// Unique key.
    pub key: i64,
    /// Order value (for a timestamp column: microseconds since the epoch).
    pub order: i64,
    /// The extra columns, in the order of [`Source::columns`](crate::Source::columns).
    pub columns: Vec<Datum>,
    names: Arc<[String]>,
}

impl SourceRow {
    /// A row with the extra columns `names`, holding `columns` (one per
    /// name, in that order).
    pub fn new(key: i64, order: i64, names: Arc<[String]>, columns: Vec<Datum>) -> Self {
        debug_assert_eq!(names.len(), columns.len(), "one value per column");
        Self {
            key,
            order,
            columns,
            names,
        }
    }

    /// The extra columns' names, in order.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The columns as `(name, value)` pairs, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Datum)> {
        self.names.iter().map(String::as_str).zip(&self.columns)
    }

    /// The value of column `name`, or `None` when the source does not read
    /// such a column.
    pub fn get(&self, name: &str) -> Option<&Datum> {
        let i = self.names.iter().position(|n| n == name)?;
        self.columns.get(i)
    }

    fn typed<'a, T>(
        &'a self,
        name: &str,
        want: &str,
        read: impl FnOnce(&'a Datum) -> Option<T>,
    ) -> Result<Option<T>, Poison> {
        let value = self.get(name).ok_or_else(|| {
            Poison(format!(
                "column {name} is not read by the source (it reads {})",
                if self.names.is_empty() {
                    "no extra column".to_owned()
                } else {
                    self.names.join(", ")
                }
            ))
        })?;
        if value.is_null() {
            return Ok(None);
        }
        read(value).map(Some).ok_or_else(|| {
            Poison(format!(
                "column {name} holds the {} {}, not {want}",
                value.kind(),
                shown(value)
            ))
        })
    }

    /// Column `name` as an integer (`None` for NULL). Errors, as a
    /// [`Poison`] a processor can return with `?`, name the column and what
    /// it holds instead.
    pub fn int(&self, name: &str) -> Result<Option<i64>, Poison> {
        self.typed(name, "an integer", |d| match d {
            Datum::Int(i) => Some(*i),
            _ => None,
        })
    }

    /// Column `name` as a float (integers are widened).
    pub fn float(&self, name: &str) -> Result<Option<f64>, Poison> {
        self.typed(name, "a number", |d| match d {
            Datum::Float(f) => Some(*f),
            Datum::Int(i) => Some(*i as f64),
            _ => None,
        })
    }

    /// Column `name` as a boolean.
    pub fn bool(&self, name: &str) -> Result<Option<bool>, Poison> {
        self.typed(name, "a boolean", |d| match d {
            Datum::Bool(b) => Some(*b),
            _ => None,
        })
    }

    /// Column `name` as text.
    pub fn text(&self, name: &str) -> Result<Option<&str>, Poison> {
        self.typed(name, "text", |d| match d {
            Datum::Text(t) => Some(t.as_str()),
            _ => None,
        })
    }

    /// Column `name` as an exact decimal's text (integers too).
    pub fn numeric(&self, name: &str) -> Result<Option<String>, Poison> {
        self.typed(name, "a numeric", |d| match d {
            Datum::Numeric(t) => Some(t.clone()),
            Datum::Int(i) => Some(i.to_string()),
            _ => None,
        })
    }

    /// Column `name` as a parsed JSON document.
    pub fn json(&self, name: &str) -> Result<Option<serde_json::Value>, Poison> {
        self.typed(name, "a JSON document", |d| match d {
            Datum::Json(raw) => serde_json::from_str(raw.get()).ok(),
            _ => None,
        })
    }

    /// Column `name` as microseconds since the Unix epoch, UTC.
    pub fn timestamp(&self, name: &str) -> Result<Option<i64>, Poison> {
        self.typed(name, "a timestamp", |d| match d {
            Datum::Timestamp(us) => Some(*us),
            _ => None,
        })
    }

    /// Column `name` as days since 1970-01-01.
    pub fn date(&self, name: &str) -> Result<Option<i32>, Poison> {
        self.typed(name, "a date", |d| match d {
            Datum::Date(days) => Some(*days),
            _ => None,
        })
    }

    /// Column `name` as bytes.
    pub fn bytes(&self, name: &str) -> Result<Option<&[u8]>, Poison> {
        self.typed(name, "bytes", |d| match d {
            Datum::Bytes(b) => Some(b.as_slice()),
            _ => None,
        })
    }
}

/// A value as an error shows it: quoted, and cut short when long.
fn shown(value: &Datum) -> String {
    let text = value.to_string();
    let cut: String = text.chars().take(60).collect();
    let more = if cut.len() < text.len() { "..." } else { "" };
    format!("{cut:?}{more}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(d: &Datum) -> String {
        serde_json::to_string(d).expect("serializes")
    }

    #[test]
    fn each_kind_has_its_documented_json_form() {
        assert_eq!(json(&Datum::Null), "null");
        assert_eq!(json(&Datum::Bool(true)), "true");
        assert_eq!(json(&Datum::Int(-42)), "-42");
        assert_eq!(json(&Datum::Float(0.5)), "0.5");
        assert_eq!(json(&Datum::Float(f64::NAN)), "\"NaN\"");
        assert_eq!(json(&Datum::Float(f64::NEG_INFINITY)), "\"-Infinity\"");
        assert_eq!(json(&Datum::Numeric("-12.50".into())), "\"-12.50\"");
        assert_eq!(json(&Datum::Text("a \"b\"".into())), r#""a \"b\"""#);
        assert_eq!(
            json(&Datum::json(r#"{"a": [1, null]}"#).expect("JSON")),
            r#"{"a": [1, null]}"#
        );
        assert_eq!(json(&Datum::Timestamp(0)), "\"1970-01-01T00:00:00Z\"");
        assert_eq!(
            json(&Datum::Timestamp(1_714_564_800_250_000)),
            "\"2024-05-01T12:00:00.25Z\""
        );
        assert_eq!(
            json(&Datum::Timestamp(-1)),
            "\"1969-12-31T23:59:59.999999Z\""
        );
        assert_eq!(json(&Datum::Timestamp(TIMESTAMP_INFINITY)), "\"infinity\"");
        assert_eq!(json(&Datum::Date(19_844)), "\"2024-05-01\"");
        assert_eq!(json(&Datum::Date(-719_529)), "\"-0001-12-31\"");
        assert_eq!(json(&Datum::Date(2_932_897)), "\"+10000-01-01\"");
        assert_eq!(json(&Datum::Date(DATE_NEG_INFINITY)), "\"-infinity\"");
        assert_eq!(json(&Datum::Bytes(vec![])), "\"\"");
        assert_eq!(json(&Datum::Bytes(b"f".to_vec())), "\"Zg==\"");
        assert_eq!(json(&Datum::Bytes(b"fo".to_vec())), "\"Zm8=\"");
        assert_eq!(
            json(&Datum::Bytes(vec![0xde, 0xad, 0xbe, 0xef])),
            "\"3q2+7w==\""
        );
    }

    #[test]
    fn leap_days_and_century_years_land_on_their_dates() {
        let days = |y: i64, m: i64, d: i64| {
            // Days from civil (the inverse), to check every day of 1600..2400.
            let y = if m <= 2 { y - 1 } else { y };
            let era = y.div_euclid(400);
            let yoe = y.rem_euclid(400);
            let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
            let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
            era * 146_097 + doe - 719_468
        };
        for (y, m, d) in [(2000, 2, 29), (1900, 3, 1), (2100, 2, 28), (1600, 12, 31)] {
            let n = i32::try_from(days(y, m, d)).expect("fits");
            assert_eq!(Datum::Date(n).to_string(), format!("{y:04}-{m:02}-{d:02}"));
        }
    }

    #[test]
    fn getters_read_their_kind_and_name_the_column_otherwise() {
        let names: Arc<[String]> = vec!["n".to_owned(), "t".to_owned(), "z".to_owned()].into();
        let row = SourceRow::new(
            1,
            1,
            names,
            vec![Datum::Int(7), Datum::Text("abc".into()), Datum::Null],
        );
        assert_eq!(row.int("n"), Ok(Some(7)));
        assert_eq!(row.float("n"), Ok(Some(7.0)));
        assert_eq!(row.text("t"), Ok(Some("abc")));
        assert_eq!(row.int("z"), Ok(None));
        assert_eq!(
            row.int("t"),
            Err(Poison(
                "column t holds the text \"abc\", not an integer".into()
            ))
        );
        assert_eq!(
            row.text("missing"),
            Err(Poison(
                "column missing is not read by the source (it reads n, t, z)".into()
            ))
        );
    }
}
