//! Reading a source's extra columns as [`Datum`]s: PostgreSQL values by
//! the type the server names for each (its binary wire formats), MySQL
//! values by the type of their column (its binary protocol), SQLite values
//! by their storage class.
//!
//! A value that cannot be read becomes a [`Cell`] holding why, so that it
//! poisons its row alone, never the page.

use diesel::deserialize::{self, FromSql};
use diesel::pg::{Pg, PgValue};
use diesel::sqlite::{Sqlite, SqliteType, SqliteValue};

use crate::model::{Datum, DATE_INFINITY, DATE_NEG_INFINITY};

/// The SQL type of a column read whatever its type is: only [`Cell`]
/// deserializes from it.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct AnyValue;

/// One value of a page row, or why it cannot be read.
pub(crate) struct Cell(pub(crate) Result<Datum, String>);

/// Microseconds from the Unix epoch to PostgreSQL's, 2000-01-01.
const PG_EPOCH_US: i64 = 946_684_800_000_000;
/// Days from the Unix epoch to PostgreSQL's.
const PG_EPOCH_DAYS: i32 = 10_957;

impl FromSql<AnyValue, Pg> for Cell {
    fn from_sql(value: PgValue<'_>) -> deserialize::Result<Self> {
        Ok(Cell(pg_datum(value.get_oid().get(), value.as_bytes())))
    }

    fn from_nullable_sql(value: Option<PgValue<'_>>) -> deserialize::Result<Self> {
        match value {
            None => Ok(Cell(Ok(Datum::Null))),
            Some(v) => <Self as FromSql<AnyValue, Pg>>::from_sql(v),
        }
    }
}

fn fixed<const N: usize>(bytes: &[u8], what: &str) -> Result<[u8; N], String> {
    bytes
        .try_into()
        .map_err(|_| format!("holds a {what} of {} bytes, expected {N}", bytes.len()))
}

fn utf8(bytes: &[u8]) -> Result<String, String> {
    std::str::from_utf8(bytes)
        .map(str::to_owned)
        .map_err(|e| format!("is not valid UTF-8 (from byte {})", e.valid_up_to()))
}

/// A PostgreSQL value of type `oid` in binary format.
fn pg_datum(oid: u32, b: &[u8]) -> Result<Datum, String> {
    Ok(match oid {
        16 => Datum::Bool(fixed::<1>(b, "boolean")?[0] != 0),
        17 => Datum::Bytes(b.to_vec()),
        18 => {
            // "char": one byte, written as PostgreSQL writes it.
            let c = fixed::<1>(b, "\"char\"")?[0];
            Datum::Text(match c {
                0 => String::new(),
                1..=127 => char::from(c).to_string(),
                _ => format!("\\{c:03o}"),
            })
        }
        19 | 25 | 1042 | 1043 => Datum::Text(utf8(b)?),
        20 => Datum::Int(i64::from_be_bytes(fixed(b, "bigint")?)),
        21 => Datum::Int(i64::from(i16::from_be_bytes(fixed(b, "smallint")?))),
        23 => Datum::Int(i64::from(i32::from_be_bytes(fixed(b, "integer")?))),
        26 => Datum::Int(i64::from(u32::from_be_bytes(fixed(b, "oid")?))),
        114 => json(b)?,
        3802 => match b.split_first() {
            Some((1, text)) => json(text)?,
            _ => return Err("holds a jsonb of an unknown binary version".into()),
        },
        700 => {
            let f = f32::from_be_bytes(fixed(b, "real")?);
            // Widened by its shortest decimal form, so 0.1 stays 0.1.
            Datum::Float(if f.is_finite() {
                f.to_string().parse().unwrap_or(f64::from(f))
            } else {
                f64::from(f)
            })
        }
        701 => Datum::Float(f64::from_be_bytes(fixed(b, "double precision")?)),
        1082 => {
            let d = i32::from_be_bytes(fixed(b, "date")?);
            Datum::Date(match d {
                i32::MAX => DATE_INFINITY,
                i32::MIN => DATE_NEG_INFINITY,
                // PostgreSQL's dates end in 5874897 AD, short of i32::MAX
                // days from 2000.
                d => d.checked_add(PG_EPOCH_DAYS).ok_or_else(|| {
                    format!("holds a date {d} days from 2000 that cannot be kept")
                })?,
            })
        }
        1114 | 1184 => {
            let us = i64::from_be_bytes(fixed(b, "timestamp")?);
            Datum::Timestamp(match us {
                i64::MAX | i64::MIN => us,
                us => us.checked_add(PG_EPOCH_US).ok_or_else(|| {
                    format!("holds a timestamp {us} µs from 2000 that cannot be kept")
                })?,
            })
        }
        1700 => Datum::Numeric(numeric(b)?),
        2950 => {
            let u = fixed::<16>(b, "uuid")?;
            let hex: String = u.iter().map(|x| format!("{x:02x}")).collect();
            Datum::Text(format!(
                "{}-{}-{}-{}-{}",
                &hex[..8],
                &hex[8..12],
                &hex[12..16],
                &hex[16..20],
                &hex[20..]
            ))
        }
        other => {
            return Err(format!(
                "has a type (oid {other}) tranche does not read typed; \
                 read the source's columns as text"
            ))
        }
    })
}

fn json(b: &[u8]) -> Result<Datum, String> {
    let text = utf8(b)?;
    Datum::json(&text).map_err(|e| format!("is not a JSON document: {e}"))
}

/// A `numeric` in binary format (`ndigits`, `weight`, `sign`, `dscale`,
/// then base-10000 digits, the first at 10000^weight), as the exact text
/// PostgreSQL writes for it.
fn numeric(b: &[u8]) -> Result<String, String> {
    let short = || {
        format!(
            "holds a numeric of {} bytes, too short for its digits",
            b.len()
        )
    };
    let word = |i: usize| -> Result<u16, String> {
        b.get(i * 2..i * 2 + 2)
            .map(|w| u16::from_be_bytes([w[0], w[1]]))
            .ok_or_else(short)
    };
    let ndigits = usize::from(word(0)?);
    let weight = i64::from(word(1)? as i16);
    let sign = word(2)?;
    let dscale = i64::from(word(3)?);
    match sign {
        0xC000 => return Ok("NaN".into()),
        0xD000 => return Ok("Infinity".into()),
        0xF000 => return Ok("-Infinity".into()),
        0x0000 | 0x4000 => {}
        other => {
            return Err(format!(
                "holds a numeric with the unknown sign {other:#06x}"
            ))
        }
    }
    let digits = (0..ndigits)
        .map(|i| word(4 + i))
        .collect::<Result<Vec<u16>, String>>()?;
    // The base-10000 digit at 10000^(weight - i), zero outside the ones stored.
    let at = |i: i64| -> u16 {
        usize::try_from(i)
            .ok()
            .and_then(|i| digits.get(i).copied())
            .unwrap_or(0)
    };
    let mut out = String::with_capacity(ndigits * 4 + 4);
    if sign == 0x4000 {
        out.push('-');
    }
    if weight < 0 {
        out.push('0');
    } else {
        for i in 0..=weight {
            let d = at(i);
            if i == 0 {
                out.push_str(&d.to_string());
            } else {
                out.push_str(&format!("{d:04}"));
            }
        }
    }
    if dscale > 0 {
        out.push('.');
        let mut frac = String::with_capacity(dscale as usize + 4);
        let mut i = weight + 1;
        while (frac.len() as i64) < dscale {
            frac.push_str(&format!("{:04}", at(i)));
            i += 1;
        }
        frac.truncate(dscale as usize);
        out.push_str(&frac);
    }
    Ok(out)
}

impl FromSql<AnyValue, Sqlite> for Cell {
    fn from_sql(mut value: SqliteValue<'_, '_, '_>) -> deserialize::Result<Self> {
        Ok(Cell(match value.value_type() {
            None => Ok(Datum::Null),
            Some(SqliteType::Double | SqliteType::Float) => Ok(Datum::Float(value.read_double())),
            Some(SqliteType::Text) => utf8(value.read_blob()).map(Datum::Text),
            Some(SqliteType::Binary) => Ok(Datum::Bytes(value.read_blob().to_vec())),
            Some(_) => Ok(Datum::Int(value.read_long())),
        }))
    }

    fn from_nullable_sql(value: Option<SqliteValue<'_, '_, '_>>) -> deserialize::Result<Self> {
        match value {
            None => Ok(Cell(Ok(Datum::Null))),
            Some(v) => <Self as FromSql<AnyValue, Sqlite>>::from_sql(v),
        }
    }
}

#[cfg(feature = "mysql")]
mod mysql {
    use diesel::deserialize::{self, FromSql};
    use diesel::mysql::data_types::MysqlTime;
    use diesel::mysql::{Mysql, MysqlType, MysqlValue};
    use diesel::sql_types::{BigInt, Date, Datetime, Double};

    use super::{utf8, AnyValue, Cell};
    use crate::model::Datum;

    impl FromSql<AnyValue, Mysql> for Cell {
        fn from_sql(value: MysqlValue<'_>) -> deserialize::Result<Self> {
            Ok(Cell(mysql_datum(value)))
        }

        fn from_nullable_sql(value: Option<MysqlValue<'_>>) -> deserialize::Result<Self> {
            match value {
                None => Ok(Cell(Ok(Datum::Null))),
                Some(v) => <Self as FromSql<AnyValue, Mysql>>::from_sql(v),
            }
        }
    }

    fn mysql_datum(value: MysqlValue<'_>) -> Result<Datum, String> {
        let read = |e: Box<dyn std::error::Error + Send + Sync>| format!("cannot be read: {e}");
        Ok(match value.value_type() {
            MysqlType::Tiny
            | MysqlType::UnsignedTiny
            | MysqlType::Short
            | MysqlType::UnsignedShort
            | MysqlType::Long
            | MysqlType::UnsignedLong
            | MysqlType::LongLong => {
                Datum::Int(<i64 as FromSql<BigInt, Mysql>>::from_sql(value).map_err(read)?)
            }
            MysqlType::UnsignedLongLong => {
                let bytes: [u8; 8] = value
                    .as_bytes()
                    .try_into()
                    .map_err(|_| "holds a BIGINT UNSIGNED of the wrong width".to_owned())?;
                let v = u64::from_le_bytes(bytes);
                Datum::Int(i64::try_from(v).map_err(|_| {
                    format!("holds the BIGINT UNSIGNED {v}, beyond a signed 64-bit integer")
                })?)
            }
            MysqlType::Float | MysqlType::Double => {
                Datum::Float(<f64 as FromSql<Double, Mysql>>::from_sql(value).map_err(read)?)
            }
            // DECIMAL arrives as its exact decimal text.
            MysqlType::Numeric => Datum::Numeric(utf8(value.as_bytes())?),
            MysqlType::Date => {
                let t = <MysqlTime as FromSql<Date, Mysql>>::from_sql(value).map_err(read)?;
                Datum::Date(days_from_civil(t.year, t.month, t.day)?)
            }
            MysqlType::DateTime | MysqlType::Timestamp => {
                let t = <MysqlTime as FromSql<Datetime, Mysql>>::from_sql(value).map_err(read)?;
                let days = i64::from(days_from_civil(t.year, t.month, t.day)?);
                let secs = days * 86_400
                    + i64::from(t.hour) * 3_600
                    + i64::from(t.minute) * 60
                    + i64::from(t.second);
                Datum::Timestamp(secs * 1_000_000 + t.second_part as i64)
            }
            MysqlType::String | MysqlType::Enum | MysqlType::Set => {
                Datum::Text(utf8(value.as_bytes())?)
            }
            MysqlType::Blob | MysqlType::Bit => Datum::Bytes(value.as_bytes().to_vec()),
            other => {
                return Err(format!(
                    "has a type ({other:?}) tranche does not read typed; \
                     read the source's columns as text"
                ))
            }
        })
    }

    /// Days from 1970-01-01 to a proleptic Gregorian date (Howard
    /// Hinnant's algorithm); a zero date (0000-00-00) is refused.
    fn days_from_civil(year: u32, month: u32, day: u32) -> Result<i32, String> {
        if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
            return Err(format!(
                "holds the date {year:04}-{month:02}-{day:02}, which is no calendar date"
            ));
        }
        let y = i64::from(year) - i64::from(month <= 2);
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let m = i64::from(month);
        let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        Ok((era * 146_097 + doe - 719_468) as i32)
    }

    #[cfg(test)]
    #[test]
    fn civil_dates_count_days_from_the_epoch() {
        assert_eq!(days_from_civil(1970, 1, 1), Ok(0));
        assert_eq!(days_from_civil(2000, 1, 1), Ok(10_957));
        assert_eq!(days_from_civil(1969, 12, 31), Ok(-1));
        assert_eq!(days_from_civil(2024, 3, 1), Ok(19_783));
        assert!(days_from_civil(0, 0, 0).is_err());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn num(ndigits: u16, weight: i16, sign: u16, dscale: u16, digits: &[u16]) -> String {
        let mut b = Vec::new();
        for w in [ndigits, weight as u16, sign, dscale].iter().chain(digits) {
            b.extend_from_slice(&w.to_be_bytes());
        }
        numeric(&b).expect("reads")
    }

    #[test]
    fn numerics_are_written_exactly() {
        assert_eq!(num(0, 0, 0, 0, &[]), "0");
        assert_eq!(num(0, 0, 0, 2, &[]), "0.00");
        assert_eq!(num(2, 0, 0, 2, &[12, 5000]), "12.50");
        assert_eq!(num(2, 1, 0x4000, 0, &[1, 0]), "-10000");
        assert_eq!(num(1, -2, 0, 8, &[1234]), "0.00001234");
        assert_eq!(num(3, 2, 0, 3, &[1, 2, 3]), "100020003.000");
        assert_eq!(num(0, 0, 0xC000, 0, &[]), "NaN");
        assert_eq!(num(0, 0, 0xF000, 0, &[]), "-Infinity");
    }

    #[test]
    fn postgres_fixed_types_decode_from_their_wire_form() {
        assert_eq!(pg_datum(23, &(-5i32).to_be_bytes()), Ok(Datum::Int(-5)));
        assert_eq!(
            pg_datum(1184, &0i64.to_be_bytes()),
            Ok(Datum::Timestamp(PG_EPOCH_US))
        );
        assert_eq!(pg_datum(1082, &0i32.to_be_bytes()), Ok(Datum::Date(10_957)));
        assert_eq!(pg_datum(700, &0.1f32.to_be_bytes()), Ok(Datum::Float(0.1)));
        assert!(pg_datum(25, b"\xff").unwrap_err().contains("UTF-8"));
        assert!(pg_datum(20, b"\x01").unwrap_err().contains("expected 8"));
    }
}
