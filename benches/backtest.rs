//! In-process backtest benchmark (issue 12): the [`Quoter`] market maker on the Binance
//! USD-M BTCUSDT capture, run by [`Backtest`] (Parquet reader → simulated exchange →
//! strategy; the reader on a second thread), Parquet read included. One JSON line per
//! round on stdout.
//!
//! ```sh
//! cargo bench --bench backtest -- [--rounds N] [--repeat K] [--file-per-copy] [--input FILE] [--read-only] [--single-thread]
//! ```
//!
//! - The capture is imported into `target/bench-data/usdm` (library importer) when that
//!   dataset is missing. `--repeat K` replays a dataset of K copies of it, each shifted in
//!   both clocks by the capture's span plus 1 s (built once into
//!   `target/bench-data/usdm-xK`), the way `benches/peer_hftbacktest.py --repeat K` feeds
//!   hftbacktest: it shows how time and memory scale with the data. The copies share a
//!   day's file; with `--file-per-copy` each is a file of its own (`usdm-fK`, as several
//!   captures imported into one dataset), so the reader opens files mid-run.
//! - The set-up is the peer's: [`Quoter`] (its doc comment holds the quoting rules) ticking
//!   every 100 ms of event time, 0.001 BTC quotes, cancel at |position| ≥ 0.01, 1 ms order
//!   latency, no extra market-data latency (`ts_recv` already carries the recorder's),
//!   risk-averse queue, maker 2 bp, taker 1.8 bp.
//! - Per round: `events` (book levels and trades read from Parquet), `secs` (the whole
//!   `run()`: opening the files, the loop, writing the run directory), `events_per_sec`,
//!   `cpu_secs` / `events_per_cpu_sec` (this process's CPU time over the same span: less
//!   noisy than wall time when other processes share the cores),
//!   allocations per event counted by this binary's global allocator (`allocs_per_event`:
//!   the whole `run()`; `loop_allocs_per_event`: from event 65,536 to the last multiple of
//!   65,536; `steady_allocs_per_event`: the second half of that;
//!   `engine_steady_allocs_per_event`: the same on the engine's thread alone, without the
//!   Parquet reader's and the run writer's threads), `peak_rss_mib` (VmHWM,
//!   reset before the round), fills, final position, PnL incl. fees marked at the last mid.
//! - `--read-only`: the same rounds, only iterating the Parquet reader (no exchange, no
//!   strategy), to tell reading from the rest.
//! - `--single-thread`: the same rounds with the Parquet decoding on the engine's thread
//!   ([`ticktape::backtest::BacktestBuilder::single_thread`]): the one-thread baseline of
//!   the read-ahead. Each line says which (`threads`: 1 or 2).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::{Cell, RefCell};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use serde_json::json;

use ticktape::backtest::Backtest;
use ticktape::book::L2Book;
use ticktape::event::{Event, Fixed, UnixNanos};
use ticktape::exchange::ExchangeSettings;
use ticktape::exchange::models::{FeeSchedule, LatencySpec, QueueSpec};
use ticktape::feeds::import::{self, ImportFormat, ImportOptions};
use ticktape::shutdown::Stop;
use ticktape::store::{EventReader, Selection, SpareIds, WriterOptions};
use ticktape::strategy::examples::Quoter;
use ticktape::strategy::{Context, Fill, OrderSide, OrderUpdate, Reply, Strategy};

/// Counts every allocation (and reallocation) of this process, and the bytes it holds.
struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
static LIVE_BYTES: AtomicU64 = AtomicU64::new(0);
static PEAK_BYTES: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// Allocations made by this thread (const-initialised, without a destructor: reading
    /// it from the allocator never allocates).
    static THIS_THREAD: Cell<u64> = const { Cell::new(0) };
}

/// Counts one allocation, in all and on this thread.
fn counted() {
    ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    THIS_THREAD.with(|c| c.set(c.get() + 1));
}

/// Allocations made so far by the calling thread.
fn this_thread_allocations() -> u64 {
    THIS_THREAD.with(Cell::get)
}

fn grew(bytes: usize) {
    let live = LIVE_BYTES.fetch_add(bytes as u64, Ordering::Relaxed) + bytes as u64;
    PEAK_BYTES.fetch_max(live, Ordering::Relaxed);
}

fn shrank(bytes: usize) {
    LIVE_BYTES.fetch_sub(bytes as u64, Ordering::Relaxed);
}

// SAFETY: forwards every call to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        counted();
        grew(layout.size());
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        counted();
        grew(layout.size());
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        counted();
        shrank(layout.size());
        grew(new_size);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        shrank(layout.size());
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations() -> u64 {
    ALLOCATIONS.load(Ordering::Relaxed)
}

const STEP: Duration = Duration::from_millis(100);
const ORDER_LATENCY_NS: i64 = 1_000_000;
const MAKER_BPS: f64 = 2.0;
const TAKER_BPS: f64 = 1.8;

struct Args {
    rounds: u32,
    repeat: u32,
    input: PathBuf,
    read_only: bool,
    single_thread: bool,
    /// `--repeat K` as K files, one generation per copy (several captures imported
    /// into one dataset), instead of one file per day.
    file_per_copy: bool,
}

fn args() -> Result<Args> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut a = Args {
        rounds: 3,
        repeat: 1,
        input: manifest.join("../shared/data/real/hftbacktest/examples/usdm/btcusdt_20240808.gz"),
        read_only: false,
        file_per_copy: false,
        single_thread: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().with_context(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--rounds" => a.rounds = value("--rounds")?.parse()?,
            "--repeat" => a.repeat = value("--repeat")?.parse()?,
            "--input" => a.input = value("--input")?.into(),
            "--read-only" => a.read_only = true,
            "--single-thread" => a.single_thread = true,
            "--file-per-copy" => a.file_per_copy = true,
            // `cargo bench` passes --bench to harness-less benches.
            "--bench" => {}
            other => bail!(
                "unknown argument {other:?}; expected --rounds N, --repeat K, --input FILE, --read-only, --single-thread, --file-per-copy"
            ),
        }
    }
    if a.rounds == 0 || a.repeat == 0 {
        bail!("--rounds and --repeat must be at least 1");
    }
    Ok(a)
}

fn bench_data() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("bench-data")
}

/// Builds `dir` as `generations` generations (files), generation `g` filled by
/// `fill(g, writer)`, into a temporary sibling renamed into place when done, so an
/// interrupted build is never taken for a finished dataset.
fn build_once(
    dir: &Path,
    generations: i64,
    mut fill: impl FnMut(i64, &mut ticktape::store::DatasetWriter) -> Result<()>,
) -> Result<()> {
    if dir.exists() {
        return Ok(());
    }
    let tmp = dir.with_extension("building");
    let _ = std::fs::remove_dir_all(&tmp);
    for g in 0..generations {
        ticktape::store::write_generation(&tmp, &WriterOptions::default(), |w| fill(g, w))?;
    }
    std::fs::rename(&tmp, dir)
        .with_context(|| format!("cannot rename {} to {}", tmp.display(), dir.display()))
}

/// The capture imported as a dataset (once).
fn base_dataset(input: &Path) -> Result<PathBuf> {
    let dir = bench_data().join("usdm");
    if !dir.exists() {
        if !input.is_file() {
            bail!(
                "capture {} not found (give --input, or fetch the shared data)",
                input.display()
            );
        }
        eprintln!(
            "backtest bench: importing {} into {}",
            input.display(),
            dir.display()
        );
        let files = [input.to_path_buf()];
        build_once(&dir, 1, |_, w| {
            let stats = import::import(
                ImportFormat::BinanceRaw,
                &files,
                &ImportOptions::default(),
                w,
                &|_| {},
            )?;
            eprintln!("backtest bench: {stats}");
            Ok(())
        })?;
    }
    Ok(dir)
}

/// `k` copies of `base`, copy i shifted in both clocks by i × (span + 1 s) (once); with
/// `file_per_copy` each copy is a generation of its own (a file of its own, as when
/// several captures are imported into one dataset), else copies share a day's file.
fn repeated_dataset(base: &Path, k: u32, file_per_copy: bool) -> Result<PathBuf> {
    if k == 1 {
        return Ok(base.to_path_buf());
    }
    let name = if file_per_copy { "usdm-f" } else { "usdm-x" };
    let dir = bench_data().join(format!("{name}{k}"));
    if dir.exists() {
        return Ok(dir);
    }
    eprintln!(
        "backtest bench: writing {k} shifted copies of {} into {}",
        base.display(),
        dir.display()
    );
    let (mut lo, mut hi) = (i64::MAX, i64::MIN);
    for event in EventReader::open(base, Selection::default())? {
        let event = event?;
        lo = lo.min(event.ts_recv.min(event.ts_event));
        hi = hi.max(event.ts_recv.max(event.ts_event));
    }
    let shift = hi - lo + 1_000_000_000;
    let copy = |i: i64, w: &mut ticktape::store::DatasetWriter| -> Result<()> {
        for event in EventReader::open(base, Selection::default())? {
            let mut event: Event = event?;
            event.ts_recv += i * shift;
            event.ts_event += i * shift;
            w.write(&event)?;
        }
        Ok(())
    };
    if file_per_copy {
        build_once(&dir, i64::from(k), copy)?;
    } else {
        build_once(&dir, 1, |_, w| {
            (0..i64::from(k)).try_for_each(|i| copy(i, w))
        })?;
    }
    Ok(dir)
}

/// The quoter plus what the benchmark reports about its trading: fills booked at their
/// price and fee, marked at the last mid the quoter's clock saw.
struct Tally {
    quoter: Quoter,
    fills: u64,
    volume: f64,
    cash: f64,
    fees: f64,
    position: Fixed,
    mid: Option<f64>,
}

/// Hands the engine the quoter while the benchmark keeps a handle on its tally.
struct Shared(Rc<RefCell<Tally>>);

impl Strategy for Shared {
    fn on_book(&mut self, ctx: &mut Context, event: &Event, book: &L2Book) -> Result<()> {
        self.0.borrow_mut().quoter.on_book(ctx, event, book)
    }
    fn on_trade(&mut self, ctx: &mut Context, event: &Event) -> Result<()> {
        self.0.borrow_mut().quoter.on_trade(ctx, event)
    }
    fn on_fill(&mut self, ctx: &mut Context, fill: &Fill) -> Result<()> {
        let mut t = self.0.borrow_mut();
        let (price, size) = (fill.price.to_f64(), fill.size.to_f64());
        let signed = match fill.side {
            OrderSide::Buy => fill.size,
            OrderSide::Sell => Fixed::new(-fill.size.mantissa, fill.size.scale),
        };
        t.fills += 1;
        t.volume += size;
        t.cash -= fill.side.sign() as f64 * price * size;
        t.fees += fill.fee;
        t.position = t
            .position
            .checked_add(signed)
            .context("position overflow")?;
        t.quoter.on_fill(ctx, fill)
    }
    fn on_order(&mut self, ctx: &mut Context, update: &OrderUpdate) -> Result<()> {
        self.0.borrow_mut().quoter.on_order(ctx, update)
    }
    fn on_reply(&mut self, ctx: &mut Context, reply: &Reply) -> Result<()> {
        self.0.borrow_mut().quoter.on_reply(ctx, reply)
    }
    fn on_gap(&mut self, ctx: &mut Context, event: &Event) -> Result<()> {
        self.0.borrow_mut().quoter.on_gap(ctx, event)
    }
    fn on_timer(&mut self, ctx: &mut Context) -> Result<()> {
        let t = &mut *self.0.borrow_mut();
        if let Some(mid) = ctx
            .book(&t.quoter.venue, &t.quoter.symbol)
            .and_then(L2Book::mid)
        {
            t.mid = Some(mid);
        }
        t.quoter.on_timer(ctx)
    }
}

fn settings() -> ExchangeSettings {
    ExchangeSettings {
        order_latency: LatencySpec::Constant {
            ns: ORDER_LATENCY_NS,
        },
        md_latency: LatencySpec::Constant { ns: 0 },
        queue: QueueSpec::RiskAverse,
        fees: FeeSchedule {
            maker_bps: MAKER_BPS,
            taker_bps: TAKER_BPS,
            fixed_per_fill: 0.0,
        },
        seed: 0,
    }
}

/// CPU seconds (user + system) this process has used: unlike wall time, not inflated
/// while other processes hold the cores.
fn cpu_secs() -> f64 {
    // SAFETY: getrusage only writes the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above; RUSAGE_SELF is always valid.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return f64::NAN;
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

fn status_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Resets VmHWM to the current RSS (Linux ≥ 4.0), so each round reports its own peak.
fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

fn mib(kib: Option<u64>) -> Option<f64> {
    kib.map(|k| (k as f64 / 1024.0 * 10.0).round() / 10.0)
}

/// Allocations per event between two progress points.
fn per_event(a: (u64, u64), b: (u64, u64)) -> Option<f64> {
    (b.0 > a.0).then(|| (b.1 - a.1) as f64 / (b.0 - a.0) as f64)
}

/// Allocations per event from the first point at or past half of `events` to the last.
fn second_half(points: &[(u64, u64)], events: u64) -> Option<f64> {
    points
        .iter()
        .find(|(e, _)| *e >= events / 2)
        .zip(points.last())
        .and_then(|(&a, &b)| per_event(a, b))
}

fn round(
    dataset: &Path,
    venue: &str,
    symbol: &str,
    run_dir: &Path,
    single_thread: bool,
) -> Result<serde_json::Value> {
    let tally = Rc::new(RefCell::new(Tally {
        quoter: Quoter::new(venue, symbol, "0.001".parse()?, "0.01".parse()?),
        fills: 0,
        volume: 0.0,
        cash: 0.0,
        fees: 0.0,
        position: Fixed::ZERO,
        mid: None,
    }));
    let backtest = Backtest::builder()
        .dataset(dataset)
        .exchange(settings())
        .timer(STEP)
        .strategy("quoter", Shared(tally.clone()))
        .run_dir(run_dir)
        .single_thread(single_thread)
        .build()?;
    // (events, allocations) at each progress call; sized up front so pushing never allocates.
    let mut points: Vec<(u64, u64)> = Vec::with_capacity(1 << 12);
    // The same on the engine's thread alone (this one; `--single-thread`: with the reader).
    let mut engine_points: Vec<(u64, u64)> = Vec::with_capacity(1 << 12);
    let mut heap_last_point = 0u64;
    let rss_reset = reset_peak_rss();
    PEAK_BYTES.store(LIVE_BYTES.load(Ordering::Relaxed), Ordering::Relaxed);
    let a0 = allocations();
    let cpu0 = cpu_secs();
    let started = Instant::now();
    let summary = backtest.run_with_progress(&Stop::new(), |p| {
        if points.len() < points.capacity() {
            points.push((p.events, allocations()));
            engine_points.push((p.events, this_thread_allocations()));
        }
        heap_last_point = LIVE_BYTES.load(Ordering::Relaxed);
    })?;
    let secs = started.elapsed().as_secs_f64();
    let cpu = cpu_secs() - cpu0;
    let a1 = allocations();
    let peak = status_kib("VmHWM:");
    let events = summary.replay.events;
    let loop_allocs = match (points.first(), points.last()) {
        (Some(&a), Some(&b)) => per_event(a, b),
        _ => None,
    };
    let steady = second_half(&points, events);
    let engine_steady = second_half(&engine_points, events);
    let t = tally.borrow();
    let position = t.position.to_f64();
    let mid = t.mid.unwrap_or(0.0);
    Ok(json!({
        "engine": "ticktape",
        "threads": if single_thread { 1 } else { 2 },
        "events": events,
        "secs": secs,
        "events_per_sec": (events as f64 / secs).round(),
        "cpu_secs": cpu,
        "events_per_cpu_sec": (events as f64 / cpu).round(),
        "allocs": a1 - a0,
        "allocs_per_event": (a1 - a0) as f64 / events.max(1) as f64,
        "loop_allocs_per_event": loop_allocs,
        "steady_allocs_per_event": steady,
        "engine_steady_allocs_per_event": engine_steady,
        "peak_rss_mib": if rss_reset { mib(peak) } else { None },
        "heap_peak_mib": mib(Some(PEAK_BYTES.load(Ordering::Relaxed) / 1024)),
        "heap_at_last_progress_mib": mib(Some(heap_last_point / 1024)),
        "process_peak_rss_mib": mib(peak),
        "fills": t.fills,
        "fills_engine": summary.fills,
        "volume_btc": t.volume,
        "position": position,
        "fees": t.fees,
        "pnl_quote": t.cash + position * mid - t.fees,
        "pnl_wo_fee": t.cash + position * mid,
        "mid_end": mid,
        "orders_submitted": summary.replay.requests - t.quoter.cancels,
        "cancels": t.quoter.cancels,
        "steps": t.quoter.ticks,
        "quoting_steps": t.quoter.quoting_ticks,
        "digest": summary.digest,
    }))
}

fn read_round(dataset: &Path) -> Result<serde_json::Value> {
    let rss_reset = reset_peak_rss();
    let a0 = allocations();
    let cpu0 = cpu_secs();
    let started = Instant::now();
    let mut events = 0u64;
    let mut reader = EventReader::open(dataset, Selection::default())?;
    // Batches of 1,024 events, read as the read-ahead reads them (the same decoding path).
    let mut batch: Vec<Event> = (0..1024).map(|_| Event::blank()).collect();
    let mut spares = SpareIds::for_events(batch.len());
    let mut last: UnixNanos = 0;
    // (events, allocations) every 65,536 events, as the backtest's progress points.
    let mut points: Vec<(u64, u64)> = Vec::with_capacity(1 << 12);
    loop {
        let n = reader.read_many_into(&mut batch, &mut spares)?;
        if n == 0 {
            break;
        }
        if (events + n as u64) >> 16 != events >> 16 && points.len() < points.capacity() {
            points.push((events + n as u64, allocations()));
        }
        events += n as u64;
        last = batch[n - 1].ts_recv;
    }
    let secs = started.elapsed().as_secs_f64();
    let cpu = cpu_secs() - cpu0;
    let a1 = allocations();
    let steady = second_half(&points, events);
    Ok(json!({
        "engine": "ticktape-reader",
        "events": events,
        "secs": secs,
        "events_per_sec": (events as f64 / secs).round(),
        "cpu_secs": cpu,
        "events_per_cpu_sec": (events as f64 / cpu).round(),
        "allocs_per_event": (a1 - a0) as f64 / events.max(1) as f64,
        "steady_allocs_per_event": steady,
        "peak_rss_mib": if rss_reset { mib(status_kib("VmHWM:")) } else { None },
        "last_ts": last,
    }))
}

fn main() -> Result<()> {
    let args = args()?;
    let base = base_dataset(&args.input)?;
    let dataset = repeated_dataset(&base, args.repeat, args.file_per_copy)?;
    let (venue, symbol) = ticktape::store::reader::partitions(&dataset)?
        .into_iter()
        .next()
        .with_context(|| format!("{} holds no data", dataset.display()))?;
    let run_dir = bench_data()
        .join("runs")
        .join(format!("quoter-x{}", args.repeat));
    for r in 1..=args.rounds {
        let mut line = if args.read_only {
            read_round(&dataset)?
        } else {
            round(&dataset, &venue, &symbol, &run_dir, args.single_thread)?
        };
        line["round"] = r.into();
        line["repeat"] = args.repeat.into();
        println!("{line}");
    }
    Ok(())
}
