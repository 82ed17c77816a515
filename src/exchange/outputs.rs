//! Run outputs: the exchange's order updates, fills and marks as three Parquet files in a
//! run directory (`orders.parquet`, `fills.parquet`, `marks.parquet`), read by the report.
//!
//! Owns those files' Arrow schemas (the contract with `crate::report`; schema version in
//! the file metadata under `ticktape.schema`) and writing them in bounded memory. Never
//! reads them back (the report does) and never decides anything about orders.
//!
//! Files are written as `<name>.parquet.partial` and renamed on [`RunWriter::finish`], so
//! a reader never sees a file without its footer. Encoding and compressing happen on a
//! thread of the writer's own, by [`crate::store::table`], which allocates nothing once
//! its buffers have grown (batch buffers come back to the run loop emptied): a run's
//! steady state allocates nothing for its outputs.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;

use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use crossbeam_channel::{Receiver, Sender, bounded};
use parquet::file::metadata::KeyValue;

use crate::store::table::{Group, PageBuffers, TableError, TableWriter};

use super::protocol::{ExchangeOutput, Fill, Mark, OrderUpdate};

/// Version of the three schemas below, stored as `ticktape.schema` in each file.
pub const RUN_SCHEMA_VERSION: &str = "exchange-v1";

/// Rows buffered per table before the writing thread gets them: each batch becomes one
/// Parquet row group (one page a column), so this is also what the thread holds at most.
const BATCH_ROWS: usize = 4096;

/// Why run outputs could not be written.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    /// Creating, renaming or writing a file failed.
    #[error("cannot write run output {path}: {source} (is the run directory writable?)")]
    Io {
        /// The file concerned.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The Parquet/Arrow writer refused.
    #[error("cannot encode run output {path}: {message}")]
    Encode {
        /// The file concerned.
        path: PathBuf,
        /// What the writer said.
        message: String,
    },
    /// The thread writing the files stopped before the run finished.
    #[error("the thread writing the run files stopped unexpectedly")]
    Stopped,
}

/// Rows written per file, returned by [`RunWriter::finish`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct RunCounts {
    /// Rows in `orders.parquet`.
    pub orders: u64,
    /// Rows in `fills.parquet`.
    pub fills: u64,
    /// Rows in `marks.parquet`.
    pub marks: u64,
}

fn ts_field() -> Field {
    Field::new(
        "ts",
        DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
        false,
    )
}

fn utf8(name: &str) -> Field {
    Field::new(name, DataType::Utf8, false)
}

fn f64_field(name: &str, nullable: bool) -> Field {
    Field::new(name, DataType::Float64, nullable)
}

/// Schema of `fills.parquet`.
pub fn fills_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        ts_field(),
        utf8("strategy"),
        utf8("venue"),
        utf8("symbol"),
        Field::new("order_id", DataType::UInt64, false),
        utf8("client_order_id"),
        Field::new("fill_id", DataType::UInt64, false),
        utf8("side"),
        f64_field("price", false),
        f64_field("size", false),
        utf8("price_exact"),
        utf8("size_exact"),
        f64_field("fee", false),
        utf8("liquidity"),
    ]))
}

/// Schema of `orders.parquet`.
pub fn orders_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        ts_field(),
        utf8("strategy"),
        utf8("venue"),
        utf8("symbol"),
        Field::new("order_id", DataType::UInt64, false),
        utf8("client_order_id"),
        utf8("side"),
        utf8("order_type"),
        utf8("tif"),
        f64_field("price", true),
        f64_field("size", false),
        f64_field("filled", false),
        utf8("status"),
        Field::new("reason", DataType::Utf8, true),
    ]))
}

/// Schema of `marks.parquet`.
pub fn marks_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        ts_field(),
        utf8("strategy"),
        utf8("venue"),
        utf8("symbol"),
        f64_field("mid", false),
        f64_field("position", false),
    ]))
}

/// Writes one row group of a table's rows, column by column in schema order.
type Columns<R> = fn(&mut Group<'_>, &[R]) -> Result<(), TableError>;

/// One Parquet file being written (on the writing thread).
struct Table<R> {
    path: PathBuf,
    partial: PathBuf,
    writer: TableWriter,
    columns: Columns<R>,
}

impl<R> Table<R> {
    fn create(
        dir: &Path,
        name: &str,
        schema: SchemaRef,
        columns: Columns<R>,
    ) -> Result<Table<R>, OutputError> {
        let path = dir.join(name);
        let partial = dir.join(format!("{name}.partial"));
        let version = KeyValue::new(
            "ticktape.schema".to_string(),
            RUN_SCHEMA_VERSION.to_string(),
        );
        let writer = TableWriter::create(&partial, schema, vec![version])
            .map_err(|e| output_error(&partial, e))?;
        Ok(Table {
            path,
            partial,
            writer,
            columns,
        })
    }

    /// The rows as one row group, encoded in `buffers`.
    fn write_rows(&mut self, buffers: &mut PageBuffers, rows: &[R]) -> Result<(), OutputError> {
        if rows.is_empty() {
            return Ok(());
        }
        let mut group = self.writer.group(buffers, rows.len());
        (self.columns)(&mut group, rows)
            .and_then(|()| group.end())
            .map_err(|e| output_error(&self.partial, e))
    }

    fn finish(self) -> Result<u64, OutputError> {
        let Table {
            path,
            partial,
            writer,
            ..
        } = self;
        let written = writer.finish().map_err(|e| output_error(&partial, e))?;
        std::fs::rename(&partial, &path).map_err(|source| OutputError::Io { path, source })?;
        Ok(written)
    }
}

fn output_error(path: &Path, e: TableError) -> OutputError {
    match e {
        TableError::Io(source) => OutputError::Io {
            path: path.to_path_buf(),
            source,
        },
        TableError::Encode(message) => OutputError::Encode {
            path: path.to_path_buf(),
            message,
        },
    }
}

/// The columns every run file starts with: `ts`, `strategy`, `venue`, `symbol`.
fn key_columns<R>(
    g: &mut Group<'_>,
    rows: &[R],
    key: impl for<'r> Fn(&'r R) -> (i64, &'r str, &'r str, &'r str),
) -> Result<(), TableError> {
    g.ints(rows.iter().map(|r| key(r).0))?;
    g.texts(rows.iter().map(|r| key(r).1))?;
    g.texts(rows.iter().map(|r| key(r).2))?;
    g.texts(rows.iter().map(|r| key(r).3))
}

fn fills_columns(g: &mut Group<'_>, rows: &[Fill]) -> Result<(), TableError> {
    key_columns(g, rows, |r| (r.ts, &r.strategy, &r.venue, &r.symbol))?;
    g.uints(rows.iter().map(|r| r.order_id))?;
    g.texts(rows.iter().map(|r| r.client_order_id.as_str()))?;
    g.uints(rows.iter().map(|r| r.fill_id))?;
    g.texts(rows.iter().map(|r| r.side.name()))?;
    g.floats(rows.iter().map(|r| Some(r.price.to_f64())))?;
    g.floats(rows.iter().map(|r| Some(r.size.to_f64())))?;
    g.displayed(rows.iter().map(|r| Some(r.price)))?;
    g.displayed(rows.iter().map(|r| Some(r.size)))?;
    g.floats(rows.iter().map(|r| Some(r.fee)))?;
    g.texts(rows.iter().map(|r| r.liquidity.name()))
}

fn orders_columns(g: &mut Group<'_>, rows: &[OrderUpdate]) -> Result<(), TableError> {
    key_columns(g, rows, |r| (r.ts, &r.strategy, &r.venue, &r.symbol))?;
    g.uints(rows.iter().map(|r| r.order_id))?;
    g.texts(rows.iter().map(|r| r.client_order_id.as_str()))?;
    g.texts(rows.iter().map(|r| r.side.name()))?;
    g.texts(rows.iter().map(|r| r.order_type.name()))?;
    g.texts(rows.iter().map(|r| r.tif.name()))?;
    g.floats(rows.iter().map(|r| r.price.map(|p| p.to_f64())))?;
    g.floats(rows.iter().map(|r| Some(r.size.to_f64())))?;
    g.floats(rows.iter().map(|r| Some(r.filled.to_f64())))?;
    g.texts(rows.iter().map(|r| r.status.name()))?;
    // A rejection's reason is put into words straight into the page.
    g.displayed(rows.iter().map(|r| r.reason.as_ref()))
}

fn marks_columns(g: &mut Group<'_>, rows: &[Mark]) -> Result<(), TableError> {
    key_columns(g, rows, |r| (r.ts, &r.strategy, &r.venue, &r.symbol))?;
    g.floats(rows.iter().map(|r| Some(r.mid)))?;
    g.floats(rows.iter().map(|r| Some(r.position.to_f64())))
}

/// A batch of rows for the writing thread, or the word to close the files.
enum ToWriter {
    Orders(Vec<OrderUpdate>),
    Fills(Vec<Fill>),
    Marks(Vec<Mark>),
    Finish,
}

/// The three files, owned by the writing thread, and the page buffers they share.
struct Tables {
    orders: Table<OrderUpdate>,
    fills: Table<Fill>,
    marks: Table<Mark>,
    buffers: PageBuffers,
}

/// Batch buffers on their way back from the writing thread, emptied, to be filled again:
/// the run loop allocates none once a few are in circulation.
struct Returns {
    orders: Sender<Vec<OrderUpdate>>,
    fills: Sender<Vec<Fill>>,
    marks: Sender<Vec<Mark>>,
}

/// Hands an emptied batch buffer back (dropped when enough are waiting already).
fn give_back<R>(to: &Sender<Vec<R>>, mut rows: Vec<R>) {
    rows.clear();
    let _ = to.try_send(rows);
}

impl Tables {
    /// Writes what arrives until [`ToWriter::Finish`], then closes the files. A sender
    /// dropped without it leaves the `.partial` files (the run did not finish).
    fn serve(mut self, from: Receiver<ToWriter>, back: Returns) -> Result<RunCounts, OutputError> {
        for message in from {
            match message {
                ToWriter::Orders(rows) => {
                    self.orders.write_rows(&mut self.buffers, &rows)?;
                    give_back(&back.orders, rows);
                }
                ToWriter::Fills(rows) => {
                    self.fills.write_rows(&mut self.buffers, &rows)?;
                    give_back(&back.fills, rows);
                }
                ToWriter::Marks(rows) => {
                    self.marks.write_rows(&mut self.buffers, &rows)?;
                    give_back(&back.marks, rows);
                }
                ToWriter::Finish => {
                    return Ok(RunCounts {
                        orders: self.orders.finish()?,
                        fills: self.fills.finish()?,
                        marks: self.marks.finish()?,
                    });
                }
            }
        }
        Err(OutputError::Stopped)
    }
}

/// Batches in flight to the writing thread: bounds the rows held in memory.
const BATCHES_IN_FLIGHT: usize = 4;

/// Emptied batch buffers kept per table for the run loop to fill again: room for every
/// buffer that can be out at once (those in flight and the one being written), so when
/// the thread catches up after falling behind none is dropped and made again later.
/// Adds nothing to the peak: those buffers existed already.
const SPARE_BATCHES: usize = BATCHES_IN_FLIGHT + 1;

/// Writes a run's `orders.parquet`, `fills.parquet` and `marks.parquet`.
///
/// Rows are buffered [`BATCH_ROWS`](self) at a time and handed to a thread of their own,
/// which encodes and compresses them, so the run loop does not wait for Parquet. Memory
/// stays bounded: a few batches in flight, Parquet row groups capped. Call
/// [`RunWriter::finish`]; dropping the writer leaves only `*.parquet.partial` files
/// behind.
pub struct RunWriter {
    orders: Vec<OrderUpdate>,
    fills: Vec<Fill>,
    marks: Vec<Mark>,
    /// Emptied batch buffers coming back from the thread.
    spare_orders: Receiver<Vec<OrderUpdate>>,
    spare_fills: Receiver<Vec<Fill>>,
    spare_marks: Receiver<Vec<Mark>>,
    to_thread: Sender<ToWriter>,
    thread: Option<JoinHandle<Result<RunCounts, OutputError>>>,
}

impl RunWriter {
    /// Creates the three files in `dir` (which must exist) and starts their thread.
    pub fn create(dir: &Path) -> Result<RunWriter, OutputError> {
        let tables = Tables {
            orders: Table::create(dir, "orders.parquet", orders_schema(), orders_columns)?,
            fills: Table::create(dir, "fills.parquet", fills_schema(), fills_columns)?,
            marks: Table::create(dir, "marks.parquet", marks_schema(), marks_columns)?,
            buffers: PageBuffers::new().map_err(|e| output_error(dir, e))?,
        };
        let (to_thread, from) = bounded(BATCHES_IN_FLIGHT);
        let (orders_back, spare_orders) = bounded(SPARE_BATCHES);
        let (fills_back, spare_fills) = bounded(SPARE_BATCHES);
        let (marks_back, spare_marks) = bounded(SPARE_BATCHES);
        let back = Returns {
            orders: orders_back,
            fills: fills_back,
            marks: marks_back,
        };
        let thread = std::thread::Builder::new()
            .name("run-writer".into())
            .spawn(move || tables.serve(from, back))
            .map_err(|source| OutputError::Io {
                path: dir.to_path_buf(),
                source,
            })?;
        Ok(RunWriter {
            orders: Vec::with_capacity(BATCH_ROWS),
            fills: Vec::with_capacity(BATCH_ROWS),
            marks: Vec::with_capacity(BATCH_ROWS),
            spare_orders,
            spare_fills,
            spare_marks,
            to_thread,
            thread: Some(thread),
        })
    }

    /// Records one exchange output in the file it belongs to.
    pub fn write(&mut self, output: &ExchangeOutput) -> Result<(), OutputError> {
        self.write_owned(output.clone())
    }

    /// [`RunWriter::write`], taking the output instead of copying it.
    pub fn write_owned(&mut self, output: ExchangeOutput) -> Result<(), OutputError> {
        match output {
            ExchangeOutput::OrderUpdate(u) => {
                self.orders.push(u);
                if self.orders.len() >= BATCH_ROWS {
                    let batch = take_batch(&mut self.orders, &self.spare_orders);
                    self.send(ToWriter::Orders(batch))?;
                }
            }
            ExchangeOutput::Fill(f) => {
                self.fills.push(f);
                if self.fills.len() >= BATCH_ROWS {
                    let batch = take_batch(&mut self.fills, &self.spare_fills);
                    self.send(ToWriter::Fills(batch))?;
                }
            }
        }
        Ok(())
    }

    /// Records marks (from [`super::SimExchange::marks`]).
    pub fn write_marks(&mut self, marks: &[Mark]) -> Result<(), OutputError> {
        self.write_marks_owned(&mut marks.to_vec())
    }

    /// [`RunWriter::write_marks`], taking the marks out of `marks` (left empty, its
    /// capacity kept).
    pub fn write_marks_owned(&mut self, marks: &mut Vec<Mark>) -> Result<(), OutputError> {
        for m in marks.drain(..) {
            self.marks.push(m);
            if self.marks.len() >= BATCH_ROWS {
                let batch = take_batch(&mut self.marks, &self.spare_marks);
                self.send(ToWriter::Marks(batch))?;
            }
        }
        Ok(())
    }

    /// Hands a message to the thread; if it has stopped, its error.
    fn send(&mut self, message: ToWriter) -> Result<(), OutputError> {
        if self.to_thread.send(message).is_ok() {
            return Ok(());
        }
        Err(self.join().err().unwrap_or(OutputError::Stopped))
    }

    fn join(&mut self) -> Result<RunCounts, OutputError> {
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(result)) => result,
            _ => Err(OutputError::Stopped),
        }
    }

    /// Flushes, writes the footers and renames the files into place.
    pub fn finish(mut self) -> Result<RunCounts, OutputError> {
        let orders = std::mem::take(&mut self.orders);
        let fills = std::mem::take(&mut self.fills);
        let marks = std::mem::take(&mut self.marks);
        for message in [
            ToWriter::Orders(orders),
            ToWriter::Fills(fills),
            ToWriter::Marks(marks),
            ToWriter::Finish,
        ] {
            self.send(message)?;
        }
        self.join()
    }
}

/// The rows of `buffer`, which gets an emptied buffer back from the thread, or a new one
/// of the same capacity when none has come back yet.
fn take_batch<R>(buffer: &mut Vec<R>, spares: &Receiver<Vec<R>>) -> Vec<R> {
    let fresh = spares
        .try_recv()
        .unwrap_or_else(|_| Vec::with_capacity(BATCH_ROWS));
    std::mem::replace(buffer, fresh)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exchange::protocol::{Liquidity, OrderSide, OrderStatus, OrderType, TimeInForce};
    use arrow_array::{
        Array, Float64Array, RecordBatch, StringArray, TimestampNanosecondArray, UInt64Array,
    };
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use std::fs::File;

    fn read(path: &Path) -> (SchemaRef, Vec<RecordBatch>, Option<String>) {
        let file = File::open(path).unwrap();
        let builder = ParquetRecordBatchReaderBuilder::try_new(file).unwrap();
        let version = builder
            .metadata()
            .file_metadata()
            .key_value_metadata()
            .and_then(|kv| kv.iter().find(|k| k.key == "ticktape.schema"))
            .and_then(|k| k.value.clone());
        let schema = builder.schema().clone();
        let batches = builder.build().unwrap().map(|b| b.unwrap()).collect();
        (schema, batches, version)
    }

    fn fill(i: u64) -> ExchangeOutput {
        ExchangeOutput::Fill(Fill {
            ts: 1_700_000_000_000_000_000 + i as i64,
            strategy: "mm".into(),
            venue: "binance".into(),
            symbol: "BTCUSDT".into(),
            order_id: i,
            client_order_id: format!("c{i}").into(),
            fill_id: i,
            side: OrderSide::Buy,
            price: "61000.10".parse().unwrap(),
            size: "0.0010".parse().unwrap(),
            fee: -0.01,
            liquidity: Liquidity::Maker,
        })
    }

    #[test]
    fn run_files_read_back_with_the_agreed_schemas() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = RunWriter::create(dir.path()).unwrap();
        // More than one batch of fills, to cross the buffering boundary.
        let n = BATCH_ROWS as u64 + 10;
        for i in 1..=n {
            w.write(&fill(i)).unwrap();
        }
        for (price, reason) in [
            (Some("100.5"), None),
            (None, Some("ioc: unfilled rest canceled")),
        ] {
            w.write(&ExchangeOutput::OrderUpdate(OrderUpdate {
                ts: 5,
                strategy: "mm".into(),
                venue: "binance".into(),
                symbol: "BTCUSDT".into(),
                order_id: 1,
                client_order_id: "c1".into(),
                side: OrderSide::Sell,
                order_type: if price.is_some() {
                    OrderType::Limit
                } else {
                    OrderType::Market
                },
                tif: TimeInForce::Ioc,
                price: price.map(|p| p.parse().unwrap()),
                size: "2".parse().unwrap(),
                filled: "0.5".parse().unwrap(),
                status: OrderStatus::Canceled,
                reason: reason.map(Into::into),
            }))
            .unwrap();
        }
        w.write_marks(&[Mark {
            ts: 9,
            strategy: "mm".into(),
            venue: "binance".into(),
            symbol: "BTCUSDT".into(),
            mid: 61000.05,
            position: "-0.25".parse().unwrap(),
        }])
        .unwrap();
        let counts = w.finish().unwrap();
        assert_eq!(
            counts,
            RunCounts {
                orders: 2,
                fills: n,
                marks: 1
            }
        );
        assert!(!dir.path().join("fills.parquet.partial").exists());

        let (schema, batches, version) = read(&dir.path().join("fills.parquet"));
        assert_eq!(schema.fields(), fills_schema().fields());
        assert_eq!(version.as_deref(), Some(RUN_SCHEMA_VERSION));
        assert_eq!(
            batches.iter().map(|b| b.num_rows()).sum::<usize>(),
            n as usize
        );
        let b = &batches[0];
        let col = |name: &str| b.column(b.schema().index_of(name).unwrap()).clone();
        let exact = col("price_exact");
        let exact = exact.as_any().downcast_ref::<StringArray>().unwrap();
        assert_eq!(exact.value(0), "61000.10");
        let size = col("size_exact");
        assert_eq!(
            size.as_any()
                .downcast_ref::<StringArray>()
                .unwrap()
                .value(0),
            "0.0010"
        );
        let ts = col("ts");
        let ts = ts
            .as_any()
            .downcast_ref::<TimestampNanosecondArray>()
            .unwrap();
        assert_eq!(ts.value(0), 1_700_000_000_000_000_001);
        let ids = col("order_id");
        assert_eq!(
            ids.as_any().downcast_ref::<UInt64Array>().unwrap().value(1),
            2
        );

        let (schema, batches, _) = read(&dir.path().join("orders.parquet"));
        assert_eq!(schema.fields(), orders_schema().fields());
        let b = &batches[0];
        let price = b.column(schema.index_of("price").unwrap());
        let price = price.as_any().downcast_ref::<Float64Array>().unwrap();
        assert_eq!(price.value(0), 100.5);
        assert!(price.is_null(1));
        let reason = b.column(schema.index_of("reason").unwrap());
        assert!(reason.is_null(0));
        assert!(!reason.is_null(1));

        let (schema, batches, _) = read(&dir.path().join("marks.parquet"));
        assert_eq!(schema.fields(), marks_schema().fields());
        let pos = batches[0].column(schema.index_of("position").unwrap());
        assert_eq!(
            pos.as_any()
                .downcast_ref::<Float64Array>()
                .unwrap()
                .value(0),
            -0.25
        );
    }
}
