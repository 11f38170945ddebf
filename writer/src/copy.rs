//! Binary COPY streams written straight into a byte buffer.
//!
//! A batch writes a few rows per payment into every table; encoding each cell through a
//! boxed `ToSql` value cost an allocation per cell and showed in profiles. Here the
//! fields are appended to one buffer in PostgreSQL's binary COPY format, which is handed
//! to the server in pieces of [`FLUSH_BYTES`] while the rest is still being encoded.
//!
//! Format: the signature `PGCOPY\n\xff\r\n\0`, a 32-bit flags field and a 32-bit header
//! extension length (both zero); per row a 16-bit field count and per field a 32-bit
//! length (-1 for NULL) followed by the value in the type's binary send format; a 16-bit
//! -1 at the end.

use std::io::Cursor;

use futures_util::SinkExt as _;
use tokio_postgres::{CopyInSink, Transaction};

/// Buffered bytes handed to the server at a time.
pub const FLUSH_BYTES: usize = 1 << 20;

const SIGNATURE: &[u8] = b"PGCOPY\n\xff\r\n\0";
/// Seconds from the Unix epoch to PostgreSQL's (2000-01-01 UTC).
const POSTGRES_EPOCH_UNIX: i64 = 946_684_800;
/// The `text` type's oid (array elements).
const TEXT_OID: u32 = 25;

/// A binary COPY into one table, in progress.
pub struct CopyIn {
    sink: std::pin::Pin<Box<CopyInSink<Cursor<Vec<u8>>>>>,
    buf: Vec<u8>,
    columns: i16,
    rows: u64,
}

impl std::fmt::Debug for CopyIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CopyIn")
            .field("columns", &self.columns)
            .field("rows", &self.rows)
            .field("buffered", &self.buf.len())
            .finish()
    }
}

impl CopyIn {
    /// Starts `statement` (a `COPY ... FROM STDIN BINARY` of `columns` columns).
    pub async fn start(
        tx: &Transaction<'_>,
        statement: &str,
        columns: i16,
    ) -> Result<Self, tokio_postgres::Error> {
        let sink = Box::pin(tx.copy_in(statement).await?);
        let mut buf = Vec::with_capacity(FLUSH_BYTES + 64 * 1024);
        buf.extend_from_slice(SIGNATURE);
        buf.extend_from_slice(&0i32.to_be_bytes());
        buf.extend_from_slice(&0i32.to_be_bytes());
        Ok(Self {
            sink,
            buf,
            columns,
            rows: 0,
        })
    }

    /// Begins a row; exactly `columns` fields must follow. Sends what is buffered first
    /// once it passes [`FLUSH_BYTES`].
    pub async fn row(&mut self) -> Result<Fields<'_>, tokio_postgres::Error> {
        if self.buf.len() >= FLUSH_BYTES {
            let full =
                std::mem::replace(&mut self.buf, Vec::with_capacity(FLUSH_BYTES + 64 * 1024));
            self.sink.send(Cursor::new(full)).await?;
        }
        self.rows += 1;
        self.buf.extend_from_slice(&self.columns.to_be_bytes());
        Ok(Fields { buf: &mut self.buf })
    }

    /// Ends the stream; returns the rows copied.
    pub async fn finish(mut self) -> Result<u64, tokio_postgres::Error> {
        self.buf.extend_from_slice(&(-1i16).to_be_bytes());
        let rest = std::mem::take(&mut self.buf);
        self.sink.send(Cursor::new(rest)).await?;
        self.sink.as_mut().finish().await
    }
}

/// The fields of one row, appended in column order.
#[derive(Debug)]
pub struct Fields<'a> {
    buf: &'a mut Vec<u8>,
}

impl Fields<'_> {
    fn value(&mut self, bytes: &[u8]) -> &mut Self {
        self.buf
            .extend_from_slice(&(bytes.len() as i32).to_be_bytes());
        self.buf.extend_from_slice(bytes);
        self
    }

    /// NULL.
    pub fn null(&mut self) -> &mut Self {
        self.buf.extend_from_slice(&(-1i32).to_be_bytes());
        self
    }

    /// `boolean`.
    pub fn bool(&mut self, v: bool) -> &mut Self {
        self.value(&[u8::from(v)])
    }

    /// `smallint`.
    pub fn i16(&mut self, v: i16) -> &mut Self {
        self.value(&v.to_be_bytes())
    }

    /// `integer`.
    pub fn i32(&mut self, v: i32) -> &mut Self {
        self.value(&v.to_be_bytes())
    }

    /// `bigint`.
    pub fn i64(&mut self, v: i64) -> &mut Self {
        self.value(&v.to_be_bytes())
    }

    /// `bigint` or NULL.
    pub fn opt_i64(&mut self, v: Option<i64>) -> &mut Self {
        match v {
            Some(v) => self.i64(v),
            None => self.null(),
        }
    }

    /// `text` (or `bytea`: the same wire form).
    pub fn bytes(&mut self, v: &[u8]) -> &mut Self {
        self.value(v)
    }

    /// `text`.
    pub fn text(&mut self, v: &str) -> &mut Self {
        self.value(v.as_bytes())
    }

    /// `text` or NULL.
    pub fn opt_text(&mut self, v: Option<&str>) -> &mut Self {
        match v {
            Some(v) => self.text(v),
            None => self.null(),
        }
    }

    /// `bytea` or NULL.
    pub fn opt_bytes(&mut self, v: Option<&[u8]>) -> &mut Self {
        match v {
            Some(v) => self.bytes(v),
            None => self.null(),
        }
    }

    /// `timestamptz` from whole Unix seconds: microseconds since 2000-01-01 UTC.
    pub fn timestamp(&mut self, unix_seconds: i64) -> &mut Self {
        let micros = unix_seconds
            .saturating_sub(POSTGRES_EPOCH_UNIX)
            .saturating_mul(1_000_000);
        self.i64(micros)
    }

    /// `jsonb` or NULL: format version 1, then the JSON text.
    pub fn opt_jsonb<T: serde::Serialize>(&mut self, v: Option<&T>) -> &mut Self {
        let Some(v) = v else {
            return self.null();
        };
        let at = self.buf.len();
        self.buf.extend_from_slice(&0i32.to_be_bytes());
        self.buf.push(1);
        // Writing into a Vec cannot fail, and the stored JSON types (strings, lists and
        // structs of them) always serialise.
        let _ = serde_json::to_writer(&mut *self.buf, v);
        let len = (self.buf.len() - at - 4) as i32;
        self.buf[at..at + 4].copy_from_slice(&len.to_be_bytes());
        self
    }

    /// `text[]` (one dimension, lower bound 1, no NULL elements) or NULL.
    pub fn opt_text_array<S: AsRef<str>>(&mut self, v: Option<&[S]>) -> &mut Self {
        let Some(items) = v else {
            return self.null();
        };
        let at = self.buf.len();
        self.buf.extend_from_slice(&0i32.to_be_bytes());
        self.buf.extend_from_slice(&1i32.to_be_bytes()); // dimensions
        self.buf.extend_from_slice(&0i32.to_be_bytes()); // no NULLs
        self.buf.extend_from_slice(&TEXT_OID.to_be_bytes());
        self.buf
            .extend_from_slice(&(items.len() as i32).to_be_bytes());
        self.buf.extend_from_slice(&1i32.to_be_bytes()); // lower bound
        for item in items {
            self.text(item.as_ref());
        }
        let len = (self.buf.len() - at - 4) as i32;
        self.buf[at..at + 4].copy_from_slice(&len.to_be_bytes());
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_postgres::types::{ToSql, Type};

    /// What tokio-postgres' own encoding writes for one field (length prefix included).
    fn reference<T: ToSql>(value: &T, ty: &Type) -> Vec<u8> {
        let mut bytes = tokio_postgres::types::private::BytesMut::new();
        let mut out = Vec::new();
        match value.to_sql_checked(ty, &mut bytes).expect("encodes") {
            tokio_postgres::types::IsNull::Yes => out.extend_from_slice(&(-1i32).to_be_bytes()),
            tokio_postgres::types::IsNull::No => {
                out.extend_from_slice(&(bytes.len() as i32).to_be_bytes());
                out.extend_from_slice(&bytes);
            }
        }
        out
    }

    fn ours(write: impl FnOnce(&mut Fields<'_>)) -> Vec<u8> {
        let mut buf = Vec::new();
        write(&mut Fields { buf: &mut buf });
        buf
    }

    #[test]
    fn fields_match_the_reference_encoding() {
        assert_eq!(
            ours(|f| {
                f.bool(true);
            }),
            reference(&true, &Type::BOOL)
        );
        assert_eq!(
            ours(|f| {
                f.i16(-3);
            }),
            reference(&-3i16, &Type::INT2)
        );
        assert_eq!(
            ours(|f| {
                f.i32(70_000);
            }),
            reference(&70_000i32, &Type::INT4)
        );
        assert_eq!(
            ours(|f| {
                f.i64(i64::MIN + 5);
            }),
            reference(&(i64::MIN + 5), &Type::INT8)
        );
        assert_eq!(
            ours(|f| {
                f.opt_i64(None);
            }),
            reference(&None::<i64>, &Type::INT8)
        );
        assert_eq!(
            ours(|f| {
                f.text("GABC:é");
            }),
            reference(&"GABC:é", &Type::TEXT)
        );
        assert_eq!(
            ours(|f| {
                f.opt_bytes(Some(&[0, 255, 7]));
            }),
            reference(&vec![0u8, 255, 7], &Type::BYTEA)
        );
        for unix in [0i64, 1_700_000_000, 946_684_800, 946_684_799] {
            let time = time::OffsetDateTime::from_unix_timestamp(unix).expect("in range");
            assert_eq!(
                ours(|f| {
                    f.timestamp(unix);
                }),
                reference(&time, &Type::TIMESTAMPTZ)
            );
        }
        let json =
            serde_json::json!({"kind": "invoke_contract", "args": [["u32", "7"]], "n": null});
        assert_eq!(
            ours(|f| {
                f.opt_jsonb(Some(&json));
            }),
            reference(&json, &Type::JSONB)
        );
        let path = vec!["native".to_owned(), "USD:GA".to_owned()];
        assert_eq!(
            ours(|f| {
                f.opt_text_array(Some(&path));
            }),
            reference(&path, &Type::TEXT_ARRAY)
        );
        let empty: Vec<String> = Vec::new();
        assert_eq!(
            ours(|f| {
                f.opt_text_array(Some(&empty));
            }),
            reference(&empty, &Type::TEXT_ARRAY)
        );
        assert_eq!(
            ours(|f| {
                f.opt_text_array(None::<&[String]>);
            }),
            reference(&None::<Vec<String>>, &Type::TEXT_ARRAY)
        );
    }
}
