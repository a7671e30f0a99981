//! The values a statement binds and a row holds, on both engines: what
//! Rust types bind to a placeholder (`Bind`), what a column may be read as
//! (`Decode`, an error naming what it holds instead), and how SQLite takes
//! them. Nothing here runs a statement.

use rusqlite::types::{ToSqlOutput, ValueRef};

/// A value bound to a placeholder or read from a column. A NULL keeps its
/// type, which PostgreSQL needs to plan the statement.
#[derive(Debug, Clone, PartialEq)]
pub(in crate::store::sql) enum Value {
    /// INTEGER / BIGINT (and booleans, stored as 0 or 1).
    Int(Option<i64>),
    /// REAL / DOUBLE PRECISION.
    Real(Option<f64>),
    /// TEXT.
    Text(Option<String>),
    /// BLOB / BYTEA.
    Blob(Option<Vec<u8>>),
}

impl Value {
    pub(super) fn is_null(&self) -> bool {
        matches!(
            self,
            Value::Int(None) | Value::Real(None) | Value::Text(None) | Value::Blob(None)
        )
    }
}

/// A Rust value that binds to a placeholder.
pub(in crate::store::sql) trait Bind {
    /// The value, owned.
    fn value(self) -> Value;
    /// NULL of this type.
    fn null() -> Value;
}

macro_rules! bind_as {
    ($variant:ident: $($ty:ty => $conv:expr),* $(,)?) => {$(
        impl Bind for $ty {
            fn value(self) -> Value {
                #[allow(clippy::redundant_closure_call)]
                Value::$variant(Some(($conv)(self)))
            }
            fn null() -> Value {
                Value::$variant(None)
            }
        }
    )*};
}

bind_as!(Int: i64 => |v| v, i32 => i64::from, u32 => i64::from, bool => i64::from);
bind_as!(Real: f64 => |v| v);
bind_as!(Text: String => |v| v, &str => str::to_owned, &String => String::clone);
bind_as!(Blob: Vec<u8> => |v| v, &[u8] => <[u8]>::to_vec, &Vec<u8> => Vec::clone);

impl<T: Bind> Bind for Option<T> {
    fn value(self) -> Value {
        match self {
            Some(v) => v.value(),
            None => T::null(),
        }
    }
    fn null() -> Value {
        T::null()
    }
}

impl<T: Bind + Clone> Bind for &Option<T> {
    fn value(self) -> Value {
        self.clone().value()
    }
    fn null() -> Value {
        T::null()
    }
}

/// A Rust value read from a column.
pub(in crate::store::sql) trait Decode<'r>: Sized {
    /// The value, or why it is not one of these.
    fn decode(value: &'r Value) -> Result<Self, String>;
}

fn mismatch(value: &Value, wanted: &str) -> String {
    if value.is_null() {
        format!("is NULL, not {wanted}")
    } else {
        format!("holds {value:?}, not {wanted}")
    }
}

impl Decode<'_> for i64 {
    fn decode(value: &Value) -> Result<Self, String> {
        match value {
            Value::Int(Some(n)) => Ok(*n),
            other => Err(mismatch(other, "an integer")),
        }
    }
}

impl Decode<'_> for f64 {
    fn decode(value: &Value) -> Result<Self, String> {
        match value {
            Value::Real(Some(n)) => Ok(*n),
            Value::Int(Some(n)) => Ok(*n as f64),
            other => Err(mismatch(other, "a number")),
        }
    }
}

impl Decode<'_> for bool {
    fn decode(value: &Value) -> Result<Self, String> {
        i64::decode(value).map(|n| n != 0)
    }
}

impl<'r> Decode<'r> for &'r str {
    fn decode(value: &'r Value) -> Result<Self, String> {
        match value {
            Value::Text(Some(text)) => Ok(text),
            other => Err(mismatch(other, "text")),
        }
    }
}

impl Decode<'_> for String {
    fn decode(value: &Value) -> Result<Self, String> {
        <&str>::decode(value).map(str::to_owned)
    }
}

impl<'r> Decode<'r> for &'r [u8] {
    fn decode(value: &'r Value) -> Result<Self, String> {
        match value {
            Value::Blob(Some(bytes)) => Ok(bytes),
            other => Err(mismatch(other, "bytes")),
        }
    }
}

impl Decode<'_> for Vec<u8> {
    fn decode(value: &Value) -> Result<Self, String> {
        <&[u8]>::decode(value).map(<[u8]>::to_vec)
    }
}

impl<'r, T: Decode<'r>> Decode<'r> for Option<T> {
    fn decode(value: &'r Value) -> Result<Self, String> {
        if value.is_null() {
            return Ok(None);
        }
        T::decode(value).map(Some)
    }
}

impl rusqlite::ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match self {
            Value::Int(Some(n)) => ValueRef::Integer(*n),
            Value::Real(Some(n)) => ValueRef::Real(*n),
            Value::Text(Some(text)) => ValueRef::Text(text.as_bytes()),
            Value::Blob(Some(bytes)) => ValueRef::Blob(bytes),
            _ => ValueRef::Null,
        }))
    }
}
