//! Reading a run's Parquet files with arrow-rs (the crate's one Parquet stack): only the
//! columns asked for, decoded batch by batch into plain vectors that the report turns into
//! polars frames or walks in Rust.
//!
//! Owns the "file missing", "column missing" and "column of the wrong type" errors. Never
//! computes anything.

use std::fs::File;
use std::path::{Path, PathBuf};

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type, TimestampMicrosecondType,
    TimestampMillisecondType, TimestampNanosecondType, TimestampSecondType, UInt8Type, UInt16Type,
    UInt32Type, UInt64Type,
};
use arrow_array::{Array, ArrayRef};
use arrow_schema::{DataType, TimeUnit};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use super::{ReportError, Result};

/// Rows decoded per batch.
const BATCH_ROWS: usize = 64 * 1024;

/// Some columns of one Parquet file, as the batches arrow-rs decoded.
pub(super) struct Table {
    path: PathBuf,
    names: Vec<String>,
    columns: Vec<Vec<ArrayRef>>,
    rows: usize,
}

/// Reads columns `names` of the Parquet file at `path` (a missing file is
/// [`ReportError::MissingInput`], a missing column [`ReportError::BadInput`] naming it).
pub(super) fn read(path: &Path, names: &[&str]) -> Result<Table> {
    if !path.is_file() {
        return Err(ReportError::MissingInput {
            path: path.to_path_buf(),
        });
    }
    let bad = |reason: String| ReportError::BadInput {
        path: path.to_path_buf(),
        reason,
    };
    let file = File::open(path).map_err(|source| ReportError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| bad(e.to_string()))?;
    let schema = builder.schema().clone();
    let mut roots = Vec::with_capacity(names.len());
    for name in names {
        let Ok(i) = schema.index_of(name) else {
            let found: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
            return Err(bad(format!(
                "no column \"{name}\" (it has: {})",
                found.join(", ")
            )));
        };
        roots.push(i);
    }
    let mask = ProjectionMask::roots(builder.parquet_schema(), roots);
    let reader = builder
        .with_projection(mask)
        .with_batch_size(BATCH_ROWS)
        .build()
        .map_err(|e| bad(e.to_string()))?;
    let mut columns: Vec<Vec<ArrayRef>> = vec![Vec::new(); names.len()];
    let mut rows = 0;
    for batch in reader {
        let batch = batch.map_err(|e| bad(e.to_string()))?;
        rows += batch.num_rows();
        for (k, name) in names.iter().enumerate() {
            let column = batch
                .column_by_name(name)
                .ok_or_else(|| bad(format!("no column \"{name}\" in a row group")))?;
            columns[k].push(column.clone());
        }
    }
    Ok(Table {
        path: path.to_path_buf(),
        names: names.iter().map(|n| (*n).to_owned()).collect(),
        columns,
        rows,
    })
}

/// A column of identifiers (`order_id`, `fill_id`, …): integers or text, as written.
pub(super) enum Ids {
    /// Unsigned integers.
    Unsigned(Vec<Option<u64>>),
    /// Signed integers.
    Signed(Vec<Option<i64>>),
    /// Text.
    Text(Vec<Option<String>>),
}

/// One identifier of an [`Ids`] column, ordered like the column's type orders it (nulls
/// first).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) enum Id {
    Null,
    Unsigned(u64),
    Signed(i64),
    Text(String),
}

impl Ids {
    pub(super) fn get(&self, row: usize) -> Id {
        match self {
            Ids::Unsigned(v) => v[row].map_or(Id::Null, Id::Unsigned),
            Ids::Signed(v) => v[row].map_or(Id::Null, Id::Signed),
            Ids::Text(v) => v[row].clone().map_or(Id::Null, Id::Text),
        }
    }

    /// The same column with rows in the order `rows`.
    pub(super) fn take(&self, rows: &[usize]) -> Ids {
        fn pick<T: Clone>(v: &[T], rows: &[usize]) -> Vec<T> {
            rows.iter().map(|&r| v[r].clone()).collect()
        }
        match self {
            Ids::Unsigned(v) => Ids::Unsigned(pick(v, rows)),
            Ids::Signed(v) => Ids::Signed(pick(v, rows)),
            Ids::Text(v) => Ids::Text(pick(v, rows)),
        }
    }

    /// As a polars column named `name`, of the type it was read as.
    pub(super) fn into_column(self, name: &str) -> polars::prelude::Column {
        use polars::prelude::Column;
        match self {
            Ids::Unsigned(v) => Column::new(name.into(), v),
            Ids::Signed(v) => Column::new(name.into(), v),
            Ids::Text(v) => Column::new(name.into(), v),
        }
    }
}

impl Table {
    /// Number of rows.
    pub(super) fn rows(&self) -> usize {
        self.rows
    }

    fn batches(&self, name: &str) -> &[ArrayRef] {
        let k = self
            .names
            .iter()
            .position(|n| n == name)
            .expect("a column that was read");
        &self.columns[k]
    }

    fn wrong_type(&self, name: &str, dtype: &DataType, wanted: &str) -> ReportError {
        ReportError::BadInput {
            path: self.path.clone(),
            reason: format!("column \"{name}\" is {dtype}, not {wanted}"),
        }
    }

    /// Integer or timestamp column `name` as `i64` (timestamps as stored, in their unit).
    pub(super) fn i64s(&self, name: &str) -> Result<Vec<Option<i64>>> {
        let mut out = Vec::with_capacity(self.rows);
        for a in self.batches(name) {
            macro_rules! push {
                ($t:ty) => {
                    out.extend(a.as_primitive::<$t>().iter().map(|v| v.map(i64::from)))
                };
            }
            match a.data_type() {
                DataType::Int64 => push!(Int64Type),
                DataType::Timestamp(TimeUnit::Nanosecond, _) => push!(TimestampNanosecondType),
                DataType::Timestamp(TimeUnit::Microsecond, _) => push!(TimestampMicrosecondType),
                DataType::Timestamp(TimeUnit::Millisecond, _) => push!(TimestampMillisecondType),
                DataType::Timestamp(TimeUnit::Second, _) => push!(TimestampSecondType),
                DataType::Int32 => push!(Int32Type),
                DataType::Int16 => push!(Int16Type),
                DataType::Int8 => push!(Int8Type),
                DataType::UInt32 => push!(UInt32Type),
                DataType::UInt16 => push!(UInt16Type),
                DataType::UInt8 => push!(UInt8Type),
                other => return Err(self.wrong_type(name, other, "integers or timestamps")),
            }
        }
        Ok(out)
    }

    /// Numeric column `name` as `f64`.
    pub(super) fn f64s(&self, name: &str) -> Result<Vec<Option<f64>>> {
        let mut out = Vec::with_capacity(self.rows);
        for a in self.batches(name) {
            macro_rules! push {
                ($t:ty) => {
                    out.extend(a.as_primitive::<$t>().iter().map(|v| v.map(|v| v as f64)))
                };
            }
            match a.data_type() {
                DataType::Float64 => out.extend(a.as_primitive::<Float64Type>().iter()),
                DataType::Float32 => push!(Float32Type),
                DataType::Int64 => push!(Int64Type),
                DataType::Int32 => push!(Int32Type),
                DataType::Int16 => push!(Int16Type),
                DataType::Int8 => push!(Int8Type),
                DataType::UInt64 => push!(UInt64Type),
                DataType::UInt32 => push!(UInt32Type),
                DataType::UInt16 => push!(UInt16Type),
                DataType::UInt8 => push!(UInt8Type),
                other => return Err(self.wrong_type(name, other, "numbers")),
            }
        }
        Ok(out)
    }

    /// Calls `f` with each row's text of column `name` in row order (without copying it).
    pub(super) fn for_each_str<'a>(
        &'a self,
        name: &str,
        mut f: impl FnMut(Option<&'a str>),
    ) -> Result<()> {
        for a in self.batches(name) {
            match a.data_type() {
                DataType::Utf8 => a.as_string::<i32>().iter().for_each(&mut f),
                DataType::LargeUtf8 => a.as_string::<i64>().iter().for_each(&mut f),
                DataType::Utf8View => a.as_string_view().iter().for_each(&mut f),
                other => return Err(self.wrong_type(name, other, "text")),
            }
        }
        Ok(())
    }

    /// Calls `f` with the texts of columns `names` of each row, in row order (without
    /// copying them).
    pub(super) fn for_each_row_strs<'a, const N: usize>(
        &'a self,
        names: [&str; N],
        mut f: impl FnMut([Option<&'a str>; N]),
    ) -> Result<()> {
        let columns = names.map(|name| self.batches(name));
        for b in 0..columns.first().map_or(0, |c| c.len()) {
            let mut arrays = Vec::with_capacity(N);
            for (name, batches) in names.iter().zip(&columns) {
                arrays.push(self.text(name, &batches[b])?);
            }
            for row in 0..arrays.first().map_or(0, Text::len) {
                f(std::array::from_fn(|k| arrays[k].get(row)));
            }
        }
        Ok(())
    }

    fn text<'a>(&self, name: &str, a: &'a ArrayRef) -> Result<Text<'a>> {
        Ok(match a.data_type() {
            DataType::Utf8 => Text::Utf8(a.as_string::<i32>()),
            DataType::LargeUtf8 => Text::Large(a.as_string::<i64>()),
            DataType::Utf8View => Text::View(a.as_string_view()),
            other => return Err(self.wrong_type(name, other, "text")),
        })
    }

    /// Text column `name`.
    pub(super) fn strs(&self, name: &str) -> Result<Vec<Option<String>>> {
        let mut out = Vec::with_capacity(self.rows);
        self.for_each_str(name, |v| out.push(v.map(str::to_owned)))?;
        Ok(out)
    }

    /// Identifier column `name` (integers or text).
    pub(super) fn ids(&self, name: &str) -> Result<Ids> {
        let dtype = self
            .batches(name)
            .first()
            .map(|a| a.data_type().clone())
            .unwrap_or(DataType::Utf8);
        match dtype {
            DataType::UInt64 | DataType::UInt32 | DataType::UInt16 | DataType::UInt8 => {
                let mut out = Vec::with_capacity(self.rows);
                for a in self.batches(name) {
                    macro_rules! push {
                        ($t:ty) => {
                            out.extend(a.as_primitive::<$t>().iter().map(|v| v.map(u64::from)))
                        };
                    }
                    match a.data_type() {
                        DataType::UInt64 => push!(UInt64Type),
                        DataType::UInt32 => push!(UInt32Type),
                        DataType::UInt16 => push!(UInt16Type),
                        DataType::UInt8 => push!(UInt8Type),
                        other => return Err(self.wrong_type(name, other, "integers")),
                    }
                }
                Ok(Ids::Unsigned(out))
            }
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
                Ok(Ids::Text(self.strs(name)?))
            }
            _ => Ok(Ids::Signed(self.i64s(name)?)),
        }
    }
}

/// One batch of a text column.
enum Text<'a> {
    Utf8(&'a arrow_array::StringArray),
    Large(&'a arrow_array::LargeStringArray),
    View(&'a arrow_array::StringViewArray),
}

impl<'a> Text<'a> {
    fn len(&self) -> usize {
        match self {
            Text::Utf8(a) => a.len(),
            Text::Large(a) => a.len(),
            Text::View(a) => a.len(),
        }
    }

    fn get(&self, row: usize) -> Option<&'a str> {
        match self {
            Text::Utf8(a) => a.is_valid(row).then(|| a.value(row)),
            Text::Large(a) => a.is_valid(row).then(|| a.value(row)),
            Text::View(a) => a.is_valid(row).then(|| a.value(row)),
        }
    }
}
