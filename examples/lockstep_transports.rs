//! The lockstep step round trip between two processes over candidate local transports
//! (issue 14, "measure before choosing").
//!
//! One step is what the replayer and a strategy exchange in the simple lockstep form: the
//! parent (the replayer) sends one event (a 100-byte payload, the size of a binary book
//! delta) and a step marker; the child (the strategy, this same executable re-executed with
//! `child ...`) reads both and answers a 32-byte ack. The parent waits for the ack before
//! the next step. The *lookahead* figure instead sends batches of 64 events, each followed
//! by a marker, and waits only when two markers are outstanding (the pipelined form that
//! the 1 ms lookahead allows when the data has no holes): it gives events/s.
//!
//! ```sh
//! cargo run --release --example lockstep_transports --features iceoryx2 -- 200000
//! cargo run --release --example lockstep_transports -- 200000 2000000 zmq-pubsub,ring-futex
//! ```
//!
//! Arguments: steps (default 200,000), lookahead events (default 2,000,000), and a
//! comma-separated list of transports (default: all built in). Each form stops after
//! 30 s and reports what it did (pure spinning on a shared machine is that slow).
//! Transports:
//!
//! - `zmq-pubsub`: libzmq over `ipc://`, PUB/SUB for events and markers, DEALER → ROUTER
//!   for acks, as ticktape's bus and gateway do;
//! - `zmq-pair`: one PAIR socket each way over `ipc://`, the floor of libzmq;
//! - `iceoryx2-event` (with `--features iceoryx2`): iceoryx2 0.10 publish-subscribe
//!   services (events, acks), each side woken by an iceoryx2 event service (notifier →
//!   listener, a Unix datagram socket underneath);
//! - `iceoryx2-futex`: the same services, woken by a futex word in a shared page instead;
//! - `iceoryx2-spin`: the same services, the reader polls `receive()` without sleeping;
//! - `ring-spin`, `ring-spin-futex`, `ring-futex`: a single-producer single-consumer ring
//!   each way in one `memfd` mapping shared by both processes (the fd is inherited, so no
//!   name exists anywhere), whose reader spins, spins for up to 50 µs then sleeps on a
//!   futex, or sleeps on the futex at once (the writer wakes it only if it sleeps);
//! - `ring-futex-always`: the futex ring, the writer waking after every marker whether
//!   or not the reader sleeps (no flag, no fence: what a Python reader can do).
//!
//! Output: one JSON line per transport with the round trip's median and p99 in µs, steps
//! per second, CPU (user + system, both processes, all threads) per step, the lookahead
//! form's events per second and CPU per event, and the load average when it started.
//! Every run checks that the child received every event sent.
//!
//! `lockstep_transports sigkill` (with `--features iceoryx2`) shows what iceoryx2 leaves
//! in `/dev/shm` and `/tmp/iceoryx2` when either side is killed with SIGKILL, and whether
//! its dead-node cleanup removes it.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// Bytes of an event's payload (a binary-encoded book delta is about this size).
const EVENT_BYTES: usize = 100;
/// Events between markers in the lookahead form (ticktape marks every 64 events).
const BATCH: u64 = 64;
/// Markers the lookahead form lets run ahead of the acks.
const WINDOW: u64 = 2;
/// Step number of the handshake marker (the child acks the first one it sees).
const HELLO: u64 = 0;
/// Each form of each transport stops after this long (pure spinning on a busy machine can
/// take milliseconds per step) and reports what it did.
const TIME_CAP: Duration = Duration::from_secs(30);
/// How long the spin-then-futex reader spins before it sleeps.
const SPIN_BEFORE_SLEEP: Duration = Duration::from_micros(50);

/// What the child receives.
#[derive(Debug)]
enum Msg {
    Event([u8; EVENT_BYTES]),
    Marker(u64),
    Stop,
}

/// The replayer's side of a transport.
trait ParentSide {
    fn send_event(&mut self, payload: &[u8; EVENT_BYTES]) -> Result<()>;
    /// Sends the marker and wakes the child.
    fn send_marker(&mut self, step: u64) -> Result<()>;
    /// The next ack; `None` when `timeout` passed first.
    fn recv_ack(&mut self, timeout: Option<Duration>) -> Result<Option<Ack>>;
    fn send_stop(&mut self) -> Result<()>;
}

/// The strategy's side of a transport.
trait ChildSide {
    fn recv(&mut self) -> Result<Msg>;
    fn send_ack(&mut self, ack: [u8; 32]) -> Result<()>;
}

/// An ack on the wire: the step, then (only in the ack to `Stop`) the child's CPU time in
/// ns and the number of events it received, so the parent can check that none was lost.
fn encode_ack(step: u64, cpu_ns: u64, events: u64) -> [u8; 32] {
    let mut a = [0u8; 32];
    a[..8].copy_from_slice(&step.to_le_bytes());
    a[8..16].copy_from_slice(&cpu_ns.to_le_bytes());
    a[16..24].copy_from_slice(&events.to_le_bytes());
    a
}

/// `(step, cpu_ns, events)` of an ack.
type Ack = (u64, u64, u64);

fn decode_ack(a: &[u8]) -> Result<Ack> {
    if a.len() < 24 {
        bail!("short ack: {} bytes", a.len());
    }
    let word = |i: usize| -> Result<u64> { Ok(u64::from_le_bytes(a[i..i + 8].try_into()?)) };
    Ok((word(0)?, word(8)?, word(16)?))
}

/// User + system CPU time of this process (all its threads) so far.
fn cpu_now() -> Duration {
    // SAFETY: getrusage fills the struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

// ---------------------------------------------------------------------------------------
// libzmq

mod zmq_transport {
    use super::*;

    const TOPIC: &[u8] = b"book.sim.BTC-USD";

    /// PUB/SUB + ROUTER/DEALER (ticktape's shape) or one PAIR each way.
    pub struct Parent {
        out: zmq::Socket,
        acks: zmq::Socket,
        router: bool,
        _ctx: zmq::Context,
    }

    pub fn parent(kind: &str, dir: &std::path::Path) -> Result<(Parent, Vec<String>)> {
        let ctx = zmq::Context::new();
        let bus = format!("ipc://{}/bus", dir.display());
        let gw = format!("ipc://{}/gw", dir.display());
        if kind == "zmq-pair" {
            let pair = ctx.socket(zmq::PAIR)?;
            pair.bind(&bus)?;
            let p = Parent {
                out: pair,
                acks: ctx.socket(zmq::PAIR)?,
                router: false,
                _ctx: ctx,
            };
            return Ok((p, vec![bus]));
        }
        let out = ctx.socket(zmq::PUB)?;
        out.set_sndhwm(0)?;
        out.bind(&bus)?;
        let acks = ctx.socket(zmq::ROUTER)?;
        acks.bind(&gw)?;
        let p = Parent {
            out,
            acks,
            router: true,
            _ctx: ctx,
        };
        Ok((p, vec![bus, gw]))
    }

    impl Parent {
        fn ack_socket(&self) -> &zmq::Socket {
            if self.router { &self.acks } else { &self.out }
        }
    }

    impl ParentSide for Parent {
        fn send_event(&mut self, payload: &[u8; EVENT_BYTES]) -> Result<()> {
            self.out.send(TOPIC, zmq::SNDMORE)?;
            self.out.send(&payload[..], 0)?;
            Ok(())
        }

        fn send_marker(&mut self, step: u64) -> Result<()> {
            self.out.send(&b"step"[..], zmq::SNDMORE)?;
            self.out.send(&step.to_le_bytes()[..], 0)?;
            Ok(())
        }

        fn recv_ack(&mut self, timeout: Option<Duration>) -> Result<Option<Ack>> {
            let s = self.ack_socket();
            if let Some(t) = timeout
                && s.poll(zmq::POLLIN, t.as_millis() as i64)? == 0
            {
                return Ok(None);
            }
            let frames = s.recv_multipart(0)?;
            let last = frames.last().context("empty ack")?;
            Ok(Some(decode_ack(last)?))
        }

        fn send_stop(&mut self) -> Result<()> {
            self.out.send(&b"eos."[..], zmq::SNDMORE)?;
            self.out.send(&b""[..], 0)?;
            Ok(())
        }
    }

    pub struct ChildEnd {
        inp: zmq::Socket,
        out: Option<zmq::Socket>,
        topic: zmq::Message,
        body: zmq::Message,
        _ctx: zmq::Context,
    }

    pub fn child(kind: &str, endpoints: &[String]) -> Result<ChildEnd> {
        let ctx = zmq::Context::new();
        let (inp, out) = if kind == "zmq-pair" {
            let pair = ctx.socket(zmq::PAIR)?;
            pair.connect(&endpoints[0])?;
            (pair, None)
        } else {
            let sub = ctx.socket(zmq::SUB)?;
            sub.set_rcvhwm(0)?;
            sub.set_subscribe(b"")?;
            sub.connect(&endpoints[0])?;
            let dealer = ctx.socket(zmq::DEALER)?;
            dealer.connect(&endpoints[1])?;
            (sub, Some(dealer))
        };
        Ok(ChildEnd {
            inp,
            out,
            topic: zmq::Message::new(),
            body: zmq::Message::new(),
            _ctx: ctx,
        })
    }

    impl ChildSide for ChildEnd {
        fn recv(&mut self) -> Result<Msg> {
            self.inp.recv(&mut self.topic, 0)?;
            self.inp.recv(&mut self.body, 0)?;
            Ok(match &self.topic[..] {
                b"step" => Msg::Marker(u64::from_le_bytes(self.body[..8].try_into()?)),
                b"eos." => Msg::Stop,
                _ => Msg::Event(self.body[..EVENT_BYTES].try_into()?),
            })
        }

        fn send_ack(&mut self, ack: [u8; 32]) -> Result<()> {
            let s = self.out.as_ref().unwrap_or(&self.inp);
            s.send(&ack[..], 0)?;
            Ok(())
        }
    }
}

// ---------------------------------------------------------------------------------------
// A home-made SPSC ring in a shared mapping, woken by a futex.

mod ring {
    use super::*;
    use std::sync::atomic::{AtomicU32, AtomicU64, Ordering, fence};

    /// Slots per ring (a power of two).
    const SLOTS: u64 = 1024;
    /// Bytes per slot: kind (u32), len (u32), step (u64), payload.
    const SLOT: usize = 128;

    /// How a reader waits for the writer.
    #[derive(Clone, Copy, Debug)]
    pub enum Wait {
        Spin,
        SpinThenFutex(Duration),
        Futex,
        /// Futex, but the writer wakes after every marker whether or not the reader
        /// sleeps: no `sleeping` flag and no fence (the protocol a Python reader could
        /// follow, with only plain loads and stores and a futex syscall through ctypes).
        FutexAlwaysWake,
    }

    impl Wait {
        pub fn parse(name: &str) -> Option<Wait> {
            match name {
                "ring-spin" => Some(Wait::Spin),
                "ring-spin-futex" => Some(Wait::SpinThenFutex(SPIN_BEFORE_SLEEP)),
                "ring-futex" => Some(Wait::Futex),
                "ring-futex-always" => Some(Wait::FutexAlwaysWake),
                _ => None,
            }
        }
    }

    /// The control block at the start of each ring; writer and reader fields on their own
    /// cache lines.
    #[repr(C, align(64))]
    struct Header {
        /// Records written (the writer's cursor).
        head: AtomicU64,
        _w: [u8; 56],
        /// Records read (the reader's cursor).
        tail: AtomicU64,
        _r: [u8; 56],
        /// Bumped by the writer to wake a sleeping reader (the futex word).
        wake_seq: AtomicU32,
        /// 1 while the reader is (about to be) asleep on `wake_seq`.
        sleeping: AtomicU32,
        _s: [u8; 56],
    }

    const HEADER: usize = std::mem::size_of::<Header>();
    const RING_BYTES: usize = HEADER + SLOTS as usize * SLOT;

    struct Ring {
        hdr: *const Header,
        slots: *mut u8,
        /// This end's copy of its own cursor.
        cursor: u64,
    }

    pub(crate) fn futex(word: &AtomicU32, op: i32, val: u32, timeout: Option<&libc::timespec>) {
        let ts = timeout.map_or(std::ptr::null(), |t| t as *const libc::timespec);
        // SAFETY: `word` lives in a shared mapping for the duration of the call; a
        // non-private futex op because the other process maps the same page.
        unsafe {
            libc::syscall(libc::SYS_futex, word.as_ptr(), op, val, ts, 0usize, 0u32);
        }
    }

    impl Ring {
        /// The ring at `base` (the mapping outlives the ring).
        unsafe fn at(base: *mut u8) -> Ring {
            Ring {
                hdr: base as *const Header,
                slots: unsafe { base.add(HEADER) },
                cursor: 0,
            }
        }

        fn hdr(&self) -> &'static Header {
            // SAFETY: the header lies in a shared mapping that is never unmapped, and is
            // accessed only atomically.
            unsafe { &*self.hdr }
        }

        fn slot(&self, i: u64) -> *mut u8 {
            // SAFETY: index masked into the ring.
            unsafe { self.slots.add((i & (SLOTS - 1)) as usize * SLOT) }
        }

        /// Writes one record (waiting while the ring is full) and publishes it.
        fn write(&mut self, kind: u32, step: u64, payload: &[u8]) {
            let h = self.cursor;
            let mut spins = 0u32;
            while h - self.hdr().tail.load(Ordering::Acquire) >= SLOTS {
                spins += 1;
                if spins > 1000 {
                    std::thread::yield_now();
                } else {
                    std::hint::spin_loop();
                }
            }
            let s = self.slot(h);
            // SAFETY: slot `h` is ours until head passes it; the reader reads it only
            // after the release store of head below.
            unsafe {
                (s as *mut u32).write(kind);
                (s.add(4) as *mut u32).write(payload.len() as u32);
                (s.add(8) as *mut u64).write(step);
                std::ptr::copy_nonoverlapping(payload.as_ptr(), s.add(16), payload.len());
            }
            self.cursor = h + 1;
            self.hdr().head.store(h + 1, Ordering::Release);
        }

        /// Wakes the reader if it sleeps (or is about to); `always`: whether or not.
        fn wake(&self, always: bool) {
            let hdr = self.hdr();
            if always {
                hdr.wake_seq.fetch_add(1, Ordering::Release);
                futex(&hdr.wake_seq, libc::FUTEX_WAKE, 1, None);
                return;
            }
            fence(Ordering::SeqCst);
            if hdr.sleeping.load(Ordering::Relaxed) != 0 {
                hdr.wake_seq.fetch_add(1, Ordering::Release);
                futex(&hdr.wake_seq, libc::FUTEX_WAKE, 1, None);
            }
        }

        /// Reads the next record into `out` (payload bytes), waiting as told, or gives
        /// up after `timeout`. Returns `(kind, step, len)`.
        fn read(
            &mut self,
            wait: Wait,
            out: &mut [u8],
            timeout: Option<Duration>,
        ) -> Option<(u32, u64, usize)> {
            let t = self.cursor;
            let hdr = self.hdr();
            let started = Instant::now();
            let mut spins = 0u64;
            loop {
                if hdr.head.load(Ordering::Acquire) != t {
                    break;
                }
                if timeout.is_some_and(|d| started.elapsed() >= d) {
                    return None;
                }
                let sleep = match wait {
                    Wait::Spin => false,
                    Wait::Futex | Wait::FutexAlwaysWake => true,
                    // Reading the clock every 64 spins keeps it off the fast path.
                    Wait::SpinThenFutex(d) => {
                        spins += 1;
                        spins.is_multiple_of(64) && started.elapsed() >= d
                    }
                };
                if !sleep {
                    std::hint::spin_loop();
                    continue;
                }
                let seq = hdr.wake_seq.load(Ordering::Acquire);
                let always = matches!(wait, Wait::FutexAlwaysWake);
                if !always {
                    hdr.sleeping.store(1, Ordering::Relaxed);
                    fence(Ordering::SeqCst);
                }
                if hdr.head.load(Ordering::Acquire) == t {
                    // A bounded sleep: a real reader checks its peer's liveness here.
                    let ts = libc::timespec {
                        tv_sec: 0,
                        tv_nsec: 100_000_000,
                    };
                    futex(&hdr.wake_seq, libc::FUTEX_WAIT, seq, Some(&ts));
                }
                hdr.sleeping.store(0, Ordering::Relaxed);
            }
            let s = self.slot(t);
            // SAFETY: head > t (acquire above), so the writer finished slot t.
            let rec = unsafe {
                let kind = (s as *const u32).read();
                let len = ((s.add(4) as *const u32).read() as usize).min(out.len());
                let step = (s.add(8) as *const u64).read();
                std::ptr::copy_nonoverlapping(s.add(16), out.as_mut_ptr(), len);
                (kind, step, len)
            };
            self.cursor = t + 1;
            hdr.tail.store(t + 1, Ordering::Release);
            Some(rec)
        }
    }

    /// Both rings in one mapping: events at offset 0, acks after them.
    pub struct End {
        out: Ring,
        inp: Ring,
        wait: Wait,
        buf: [u8; SLOT],
    }

    const KIND_EVENT: u32 = 1;
    const KIND_MARKER: u32 = 2;
    const KIND_STOP: u32 = 3;
    const KIND_ACK: u32 = 4;

    fn map(fd: i32) -> Result<*mut u8> {
        // SAFETY: mapping a file we own, shared, for the life of the process.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                2 * RING_BYTES,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            bail!("mmap: {}", std::io::Error::last_os_error());
        }
        Ok(p as *mut u8)
    }

    /// A zeroed memfd for both rings, inheritable by the child (no close-on-exec).
    pub fn create() -> Result<i32> {
        // SAFETY: plain syscalls on a name literal and the fd they return.
        let fd = unsafe { libc::memfd_create(c"ticktape-lockstep".as_ptr(), 0) };
        if fd < 0 {
            bail!("memfd_create: {}", std::io::Error::last_os_error());
        }
        if unsafe { libc::ftruncate(fd, (2 * RING_BYTES) as libc::off_t) } != 0 {
            bail!("ftruncate: {}", std::io::Error::last_os_error());
        }
        Ok(fd)
    }

    pub fn end(fd: i32, wait: Wait, parent: bool) -> Result<End> {
        let base = map(fd)?;
        // SAFETY: both rings lie inside the mapping.
        let (a, b) = unsafe { (Ring::at(base), Ring::at(base.add(RING_BYTES))) };
        let (out, inp) = if parent { (a, b) } else { (b, a) };
        Ok(End {
            out,
            inp,
            wait,
            buf: [0; SLOT],
        })
    }

    impl End {
        fn always(&self) -> bool {
            matches!(self.wait, Wait::FutexAlwaysWake)
        }
    }

    /// A page of two futex words for `iceoryx2-futex`'s wake-up, as a memfd to inherit.
    #[cfg(feature = "iceoryx2")]
    pub fn wake_page() -> Result<i32> {
        // SAFETY: plain syscalls on a name literal and the fd they return.
        let fd = unsafe { libc::memfd_create(c"ticktape-wake".as_ptr(), 0) };
        if fd < 0 || unsafe { libc::ftruncate(fd, 4096) } != 0 {
            bail!("wake page: {}", std::io::Error::last_os_error());
        }
        Ok(fd)
    }

    /// The two futex words of a wake page: (parent → child, child → parent).
    #[cfg(feature = "iceoryx2")]
    pub fn map_wake_page(fd: i32) -> Result<(&'static AtomicU32, &'static AtomicU32)> {
        // SAFETY: mapping a page we own, shared, never unmapped.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                4096,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            bail!("mmap: {}", std::io::Error::last_os_error());
        }
        // SAFETY: two aligned u32 words on separate cache lines of a live page.
        unsafe {
            Ok((
                &*(p as *const AtomicU32),
                &*((p as *const u8).add(64) as *const AtomicU32),
            ))
        }
    }

    impl ParentSide for End {
        fn send_event(&mut self, payload: &[u8; EVENT_BYTES]) -> Result<()> {
            self.out.write(KIND_EVENT, 0, payload);
            Ok(())
        }

        fn send_marker(&mut self, step: u64) -> Result<()> {
            self.out.write(KIND_MARKER, step, &[]);
            self.out.wake(self.always());
            Ok(())
        }

        fn recv_ack(&mut self, timeout: Option<Duration>) -> Result<Option<Ack>> {
            match self.inp.read(self.wait, &mut self.buf, timeout) {
                Some((_, _, len)) => Ok(Some(decode_ack(&self.buf[..len])?)),
                None => Ok(None),
            }
        }

        fn send_stop(&mut self) -> Result<()> {
            self.out.write(KIND_STOP, 0, &[]);
            self.out.wake(self.always());
            Ok(())
        }
    }

    impl ChildSide for End {
        fn recv(&mut self) -> Result<Msg> {
            let Some((kind, step, len)) = self.inp.read(self.wait, &mut self.buf, None) else {
                bail!("no timeout given, yet the read timed out");
            };
            Ok(match kind {
                KIND_EVENT => Msg::Event(self.buf[..len].try_into()?),
                KIND_MARKER => Msg::Marker(step),
                KIND_STOP => Msg::Stop,
                k => bail!("unknown record kind {k}"),
            })
        }

        fn send_ack(&mut self, ack: [u8; 32]) -> Result<()> {
            self.out.write(KIND_ACK, 0, &ack);
            self.out.wake(self.always());
            Ok(())
        }
    }
}

// ---------------------------------------------------------------------------------------
// iceoryx2

#[cfg(feature = "iceoryx2")]
mod ice {
    use super::*;
    use iceoryx2::port::listener::Listener;
    use iceoryx2::port::notifier::Notifier;
    use iceoryx2::port::publisher::Publisher;
    use iceoryx2::port::subscriber::Subscriber;
    use iceoryx2::prelude::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// An event or marker: byte 0 the kind, bytes 8..16 the step, then the payload.
    type Frame = [u8; 128];
    type AckFrame = [u8; 32];

    fn err<E: std::fmt::Debug>(what: &'static str) -> impl FnOnce(E) -> anyhow::Error {
        move |e| anyhow::anyhow!("iceoryx2: {what}: {e:?}")
    }

    /// One side: a publisher and notifier towards the peer, a subscriber and listener
    /// from it. `spin` readers never sleep and writers never notify.
    pub struct End<
        Out: std::fmt::Debug + ZeroCopySend + 'static,
        In: std::fmt::Debug + ZeroCopySend + 'static,
    > {
        publisher: Publisher<ipc::Service, Out, ()>,
        notifier: Notifier<ipc::Service>,
        subscriber: Subscriber<ipc::Service, In, ()>,
        listener: Listener<ipc::Service>,
        spin: bool,
        /// Futex words (out, in) that replace the notifier and listener, if set.
        futex: Option<(&'static AtomicU32, &'static AtomicU32)>,
        _node: Node<ipc::Service>,
    }

    fn node() -> Result<Node<ipc::Service>> {
        // Without a config file iceoryx2 warns that it uses its defaults (which we want).
        set_log_level(LogLevel::Error);
        NodeBuilder::new()
            .signal_handling_mode(SignalHandlingMode::Disabled)
            .create::<ipc::Service>()
            .map_err(err("node"))
    }

    fn open<Out, In>(tag: &str, out_name: &str, in_name: &str, spin: bool) -> Result<End<Out, In>>
    where
        Out: std::fmt::Debug + ZeroCopySend + Copy + 'static,
        In: std::fmt::Debug + ZeroCopySend + Copy + 'static,
    {
        let node = node()?;
        let name = |s: &str| -> Result<ServiceName> {
            format!("ticktape/{tag}/{s}")
                .as_str()
                .try_into()
                .map_err(err("service name"))
        };
        let pubsub = |n: &str| name(n);
        let out_svc = node
            .service_builder(&pubsub(out_name)?)
            .publish_subscribe::<Out>()
            .enable_safe_overflow(false)
            .subscriber_max_buffer_size(256)
            .history_size(0)
            .open_or_create()
            .map_err(err("open out service"))?;
        let in_svc = node
            .service_builder(&pubsub(in_name)?)
            .publish_subscribe::<In>()
            .enable_safe_overflow(false)
            .subscriber_max_buffer_size(256)
            .history_size(0)
            .open_or_create()
            .map_err(err("open in service"))?;
        let out_ev = node
            .service_builder(&name(&format!("{out_name}-wake"))?)
            .event()
            .open_or_create()
            .map_err(err("open out event"))?;
        let in_ev = node
            .service_builder(&name(&format!("{in_name}-wake"))?)
            .event()
            .open_or_create()
            .map_err(err("open in event"))?;
        let publisher = out_svc
            .publisher_builder()
            .backpressure_strategy(BackpressureStrategy::RetryUntilDelivered)
            .create()
            .map_err(err("publisher"))?;
        let subscriber = in_svc
            .subscriber_builder()
            .buffer_size(256)
            .create()
            .map_err(err("subscriber"))?;
        let notifier = out_ev
            .notifier_builder()
            .create()
            .map_err(err("notifier"))?;
        let listener = in_ev.listener_builder().create().map_err(err("listener"))?;
        Ok(End {
            publisher,
            notifier,
            subscriber,
            listener,
            spin,
            futex: None,
            _node: node,
        })
    }

    pub fn parent(tag: &str, spin: bool, wake_fd: Option<i32>) -> Result<End<Frame, AckFrame>> {
        let mut end = open(tag, "events", "acks", spin)?;
        end.futex = wake_fd.map(ring::map_wake_page).transpose()?;
        Ok(end)
    }

    pub fn child(tag: &str, spin: bool, wake_fd: Option<i32>) -> Result<End<AckFrame, Frame>> {
        let mut end = open(tag, "acks", "events", spin)?;
        end.futex = wake_fd
            .map(ring::map_wake_page)
            .transpose()?
            .map(|(a, b)| (b, a));
        Ok(end)
    }

    /// Removes what dead nodes left behind; returns (cleaned, failed).
    pub fn cleanup_dead_nodes() -> Result<(u64, u64)> {
        let n = node()?;
        let state = n.try_cleanup_dead_nodes();
        Ok((state.cleanups as u64, state.failed_cleanups as u64))
    }

    impl<Out, In> End<Out, In>
    where
        Out: std::fmt::Debug + ZeroCopySend + Copy + 'static,
        In: std::fmt::Debug + ZeroCopySend + Copy + 'static,
    {
        fn send(&self, v: Out, wake: bool) -> Result<()> {
            self.publisher.send_copy(v).map_err(err("send"))?;
            if let Some((out, _)) = self.futex {
                if wake {
                    out.fetch_add(1, Ordering::Release);
                    ring::futex(out, libc::FUTEX_WAKE, 1, None);
                }
            } else if wake && !self.spin {
                self.notifier.notify().map_err(err("notify"))?;
            }
            Ok(())
        }

        fn recv(&self, timeout: Option<Duration>) -> Result<Option<In>> {
            let started = Instant::now();
            loop {
                let seq = self.futex.map(|(_, inp)| inp.load(Ordering::Acquire));
                if let Some(s) = self.subscriber.receive().map_err(err("receive"))? {
                    return Ok(Some(*s));
                }
                let left = timeout.map(|t| t.saturating_sub(started.elapsed()));
                if left == Some(Duration::ZERO) {
                    return Ok(None);
                }
                if let (Some((_, inp)), Some(seq)) = (self.futex, seq) {
                    let t = left.unwrap_or(Duration::from_millis(100));
                    let ts = libc::timespec {
                        tv_sec: t.as_secs() as libc::time_t,
                        tv_nsec: t.subsec_nanos() as libc::c_long,
                    };
                    ring::futex(inp, libc::FUTEX_WAIT, seq, Some(&ts));
                } else if self.spin {
                    std::hint::spin_loop();
                } else if let Some(left) = left {
                    self.listener
                        .timed_wait(|_| {}, left)
                        .map_err(err("timed_wait"))?;
                } else {
                    self.listener.blocking_wait(|_| {}).map_err(err("wait"))?;
                }
            }
        }
    }

    fn frame(kind: u8, step: u64, payload: &[u8]) -> Frame {
        let mut f = [0u8; 128];
        f[0] = kind;
        f[8..16].copy_from_slice(&step.to_le_bytes());
        f[16..16 + payload.len()].copy_from_slice(payload);
        f
    }

    impl ParentSide for End<Frame, AckFrame> {
        fn send_event(&mut self, payload: &[u8; EVENT_BYTES]) -> Result<()> {
            self.send(frame(1, 0, payload), false)
        }

        fn send_marker(&mut self, step: u64) -> Result<()> {
            self.send(frame(2, step, &[]), true)
        }

        fn recv_ack(&mut self, timeout: Option<Duration>) -> Result<Option<Ack>> {
            match self.recv(timeout)? {
                Some(a) => Ok(Some(decode_ack(&a)?)),
                None => Ok(None),
            }
        }

        fn send_stop(&mut self) -> Result<()> {
            self.send(frame(3, 0, &[]), true)
        }
    }

    impl ChildSide for End<AckFrame, Frame> {
        fn recv(&mut self) -> Result<Msg> {
            let f = End::recv(self, None)?.context("no frame")?;
            let step = u64::from_le_bytes(f[8..16].try_into()?);
            Ok(match f[0] {
                1 => Msg::Event(f[16..16 + EVENT_BYTES].try_into()?),
                2 => Msg::Marker(step),
                3 => Msg::Stop,
                k => bail!("unknown frame kind {k}"),
            })
        }

        fn send_ack(&mut self, ack: [u8; 32]) -> Result<()> {
            self.send(ack, true)
        }
    }
}

// ---------------------------------------------------------------------------------------
// The measurement.

/// All transports this build knows, in report order.
fn all_transports() -> Vec<&'static str> {
    let mut t = vec!["zmq-pubsub", "zmq-pair"];
    if cfg!(feature = "iceoryx2") {
        t.extend(["iceoryx2-event", "iceoryx2-futex", "iceoryx2-spin"]);
    }
    t.extend([
        "ring-spin",
        "ring-spin-futex",
        "ring-futex",
        "ring-futex-always",
    ]);
    t
}

/// What one mode of one transport measured.
struct Figures {
    /// Steps (simple form) or events (lookahead form) done.
    count: u64,
    round_trips_ns: Vec<u32>,
    seconds: f64,
    parent_cpu: Duration,
    child_cpu: Duration,
}

/// A parent end, its child process and whatever must outlive both.
struct Session {
    end: Box<dyn ParentSide>,
    child: Child,
    cleanup: Option<std::path::PathBuf>,
}

fn spawn(kind: &str, args: &[String]) -> Result<Child> {
    Command::new(std::env::current_exe()?)
        .arg("child")
        .arg(kind)
        .args(args)
        .stdin(Stdio::null())
        .spawn()
        .context("spawning the child")
}

/// Sets up `kind` and starts its child, handshake done.
fn start(kind: &str) -> Result<Session> {
    let mut cleanup = None;
    let (end, child): (Box<dyn ParentSide>, Child) = if kind.starts_with("zmq-") {
        let dir = tempfile::Builder::new().prefix("lockstep-").tempdir()?;
        let (end, endpoints) = zmq_transport::parent(kind, dir.path())?;
        cleanup = Some(dir.keep());
        (Box::new(end), spawn(kind, &endpoints)?)
    } else if let Some(wait) = ring::Wait::parse(kind) {
        let fd = ring::create()?;
        let end = ring::end(fd, wait, true)?;
        let child = spawn(kind, &[fd.to_string()])?;
        // SAFETY: the child has its copy; the mapping keeps the memory alive here.
        unsafe { libc::close(fd) };
        (Box::new(end), child)
    } else {
        start_iceoryx2(kind)?
    };
    let mut s = Session {
        end,
        child,
        cleanup,
    };
    // Handshake: mark step 0 until the child acks it (a SUB joins late).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        s.end.send_marker(HELLO)?;
        if let Some((HELLO, _, _)) = s.end.recv_ack(Some(Duration::from_millis(10)))? {
            break;
        }
        if Instant::now() > deadline {
            bail!("{kind}: no hello from the child in 10 s");
        }
    }
    Ok(s)
}

#[cfg(feature = "iceoryx2")]
fn start_iceoryx2(kind: &str) -> Result<(Box<dyn ParentSide>, Child)> {
    let spin = match kind {
        "iceoryx2-event" | "iceoryx2-futex" => false,
        "iceoryx2-spin" => true,
        _ => bail!("unknown transport {kind}"),
    };
    let tag = format!("{}-{kind}", std::process::id());
    let wake = (kind == "iceoryx2-futex")
        .then(ring::wake_page)
        .transpose()?;
    let end = ice::parent(&tag, spin, wake)?;
    let mut args = vec![tag];
    args.extend(wake.map(|fd| fd.to_string()));
    let child = spawn(kind, &args)?;
    if let Some(fd) = wake {
        // SAFETY: the child has its copy; the mapping keeps the page alive here.
        unsafe { libc::close(fd) };
    }
    Ok((Box::new(end), child))
}

#[cfg(not(feature = "iceoryx2"))]
fn start_iceoryx2(kind: &str) -> Result<(Box<dyn ParentSide>, Child)> {
    bail!("unknown transport {kind} (iceoryx2 needs --features iceoryx2)")
}

/// Ends the session: stop, collect the child's CPU from its last ack, check that it got
/// every event sent, reap it.
fn finish(mut s: Session, sent: u64) -> Result<Duration> {
    s.end.send_stop()?;
    let cpu = loop {
        match s.end.recv_ack(Some(Duration::from_secs(10)))? {
            Some((u64::MAX, cpu, got)) if got == sent => break Duration::from_nanos(cpu),
            Some((u64::MAX, _, got)) => bail!("the child received {got} of {sent} events"),
            Some(_) => continue,
            None => bail!("the child did not answer the stop"),
        }
    };
    let status = s.child.wait()?;
    if !status.success() {
        bail!("child exited with {status}");
    }
    drop(s.end);
    if let Some(dir) = s.cleanup {
        std::fs::remove_dir_all(dir).ok();
    }
    Ok(cpu)
}

/// Waits for the ack of `step`.
fn await_ack(end: &mut dyn ParentSide, step: u64) -> Result<()> {
    loop {
        match end.recv_ack(None)? {
            Some((s, _, _)) if s == step => return Ok(()),
            Some(_) => continue,
            None => bail!("no ack"),
        }
    }
}

/// The simple form: `steps` times event + marker out, ack back (or fewer, if [`TIME_CAP`]
/// passes first).
fn simple(kind: &str, steps: u64) -> Result<Figures> {
    let mut s = start(kind)?;
    let mut payload = [0x5au8; EVENT_BYTES];
    let mut rtt = Vec::with_capacity(steps as usize);
    let cpu0 = cpu_now();
    let t0 = Instant::now();
    for step in 1..=steps {
        if step.is_multiple_of(1024) && t0.elapsed() > TIME_CAP {
            break;
        }
        payload[..8].copy_from_slice(&step.to_le_bytes());
        let t = Instant::now();
        s.end.send_event(&payload)?;
        s.end.send_marker(step)?;
        await_ack(s.end.as_mut(), step)?;
        rtt.push(t.elapsed().as_nanos().min(u32::MAX as u128) as u32);
    }
    let seconds = t0.elapsed().as_secs_f64();
    let parent_cpu = cpu_now() - cpu0;
    let child_cpu = finish(s, rtt.len() as u64)?;
    Ok(Figures {
        count: rtt.len() as u64,
        round_trips_ns: rtt,
        seconds,
        parent_cpu,
        child_cpu,
    })
}

/// The pipelined form: batches of [`BATCH`] events and a marker, at most [`WINDOW`]
/// markers unacknowledged.
fn pipelined(kind: &str, events: u64) -> Result<Figures> {
    let mut s = start(kind)?;
    let mut payload = [0x5au8; EVENT_BYTES];
    let mut batches = events.div_ceil(BATCH);
    let cpu0 = cpu_now();
    let t0 = Instant::now();
    for b in 1..=batches {
        if t0.elapsed() > TIME_CAP {
            batches = b - 1;
            break;
        }
        for i in 0..BATCH {
            payload[..8].copy_from_slice(&(b * BATCH + i).to_le_bytes());
            s.end.send_event(&payload)?;
        }
        s.end.send_marker(b)?;
        if b >= WINDOW {
            await_ack(s.end.as_mut(), b + 1 - WINDOW)?;
        }
    }
    for b in (batches + 2).saturating_sub(WINDOW).max(1)..=batches {
        await_ack(s.end.as_mut(), b)?;
    }
    let seconds = t0.elapsed().as_secs_f64();
    let parent_cpu = cpu_now() - cpu0;
    let child_cpu = finish(s, batches * BATCH)?;
    Ok(Figures {
        count: batches * BATCH,
        round_trips_ns: Vec::new(),
        seconds,
        parent_cpu,
        child_cpu,
    })
}

/// The child: reads events, acks markers, answers the stop with its CPU time.
fn child(kind: &str, args: &[String]) -> Result<()> {
    let mut end: Box<dyn ChildSide> = if kind.starts_with("zmq-") {
        Box::new(zmq_transport::child(kind, args)?)
    } else if let Some(wait) = ring::Wait::parse(kind) {
        let fd: i32 = args.first().context("fd")?.parse()?;
        Box::new(ring::end(fd, wait, false)?)
    } else {
        child_iceoryx2(kind, args)?
    };
    let mut said_hello = false;
    let mut cpu0 = None;
    let (mut events, mut checksum) = (0u64, 0u64);
    loop {
        match end.recv()? {
            Msg::Event(p) => {
                events += 1;
                checksum = checksum.wrapping_add(p.iter().map(|&b| b as u64).sum());
            }
            Msg::Marker(HELLO) => {
                if !said_hello {
                    end.send_ack(encode_ack(HELLO, 0, 0))?;
                    said_hello = true;
                }
            }
            Msg::Marker(step) => {
                cpu0.get_or_insert_with(cpu_now);
                end.send_ack(encode_ack(step, 0, 0))?;
            }
            Msg::Stop => {
                let used = cpu_now() - cpu0.unwrap_or_else(cpu_now);
                end.send_ack(encode_ack(u64::MAX, used.as_nanos() as u64, events))?;
                std::hint::black_box(checksum);
                // Let the ack leave before the sockets close.
                std::thread::sleep(Duration::from_millis(50));
                return Ok(());
            }
        }
    }
}

#[cfg(feature = "iceoryx2")]
fn child_iceoryx2(kind: &str, args: &[String]) -> Result<Box<dyn ChildSide>> {
    let tag = args.first().context("service tag")?;
    let wake = args.get(1).map(|fd| fd.parse()).transpose()?;
    Ok(Box::new(ice::child(tag, kind == "iceoryx2-spin", wake)?))
}

#[cfg(not(feature = "iceoryx2"))]
fn child_iceoryx2(kind: &str, _: &[String]) -> Result<Box<dyn ChildSide>> {
    bail!("unknown transport {kind}")
}

/// iceoryx2's files: `/dev/shm/iox2_*` and everything under `/tmp/iceoryx2`.
#[cfg(feature = "iceoryx2")]
fn iceoryx2_files() -> Vec<String> {
    fn walk(dir: &std::path::Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else {
                out.push(p.display().to_string());
            }
        }
    }
    let mut out: Vec<String> = std::fs::read_dir("/dev/shm")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().display().to_string())
        .filter(|p| p.starts_with("/dev/shm/iox2_"))
        .collect();
    walk(std::path::Path::new("/tmp/iceoryx2"), &mut out);
    out.sort();
    out
}

/// What SIGKILL of either side leaves behind with iceoryx2, and whether its dead-node
/// cleanup removes it.
#[cfg(feature = "iceoryx2")]
fn sigkill() -> Result<()> {
    let before = iceoryx2_files();
    let left = |what: &str| {
        let now = iceoryx2_files();
        let new: Vec<&String> = now.iter().filter(|f| !before.contains(f)).collect();
        println!("{what}: {} new iceoryx2 files {new:?}", new.len());
    };
    let kill = |c: &mut Child| -> Result<()> {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(c.id() as i32, libc::SIGKILL) };
        c.wait()?;
        Ok(())
    };
    // The strategy dies: the replay side stays, then leaves normally.
    let mut s = start("iceoryx2-event")?;
    left("session running");
    kill(&mut s.child)?;
    left("strategy SIGKILLed, replay still open");
    drop(s.end);
    left("replay closed normally");
    println!(
        "dead-node cleanup (cleaned, failed): {:?}",
        ice::cleanup_dead_nodes()?
    );
    left("after cleanup");
    // The replay dies: a holder process plays the replay, a child the strategy.
    let tag = format!("{}-hold", std::process::id());
    let mut holder = spawn("hold", std::slice::from_ref(&tag))?;
    std::thread::sleep(Duration::from_millis(500));
    let mut strategy = spawn("iceoryx2-event", &[tag])?;
    std::thread::sleep(Duration::from_millis(500));
    left("both running");
    kill(&mut holder)?;
    std::thread::sleep(Duration::from_millis(1000));
    let blocked = strategy.try_wait()?.is_none();
    println!("replay SIGKILLed: strategy still blocked after 1 s: {blocked}");
    kill(&mut strategy)?;
    left("both SIGKILLed");
    println!(
        "dead-node cleanup (cleaned, failed): {:?}",
        ice::cleanup_dead_nodes()?
    );
    left("after cleanup");
    Ok(())
}

/// The replay side of [`sigkill`]: opens the parent end and waits to be killed.
#[cfg(feature = "iceoryx2")]
fn hold(tag: &str) -> Result<()> {
    let _end = ice::parent(tag, false, None)?;
    std::thread::sleep(Duration::from_secs(60));
    Ok(())
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize] as f64 / 1000.0
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    match (args.get(1).map(String::as_str), args.get(2)) {
        #[cfg(feature = "iceoryx2")]
        (Some("child"), Some(kind)) if kind == "hold" => return hold(&args[3]),
        (Some("child"), Some(kind)) => return child(kind, &args[3..]),
        #[cfg(feature = "iceoryx2")]
        (Some("sigkill"), _) => return sigkill(),
        #[cfg(not(feature = "iceoryx2"))]
        (Some("sigkill"), _) => bail!("sigkill checks iceoryx2: build with --features iceoryx2"),
        _ => {}
    }
    let steps: u64 = args.get(1).map_or(Ok(200_000), |s| s.parse())?;
    let events: u64 = args.get(2).map_or(Ok(2_000_000), |s| s.parse())?;
    let kinds: Vec<String> = match args.get(3) {
        Some(list) => list.split(',').map(str::to_string).collect(),
        None => all_transports().into_iter().map(str::to_string).collect(),
    };
    for kind in &kinds {
        let loadavg = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
        let load = loadavg.split_whitespace().next().unwrap_or("0").to_string();
        let f = simple(kind, steps).with_context(|| format!("{kind}: simple form"))?;
        let mut rtt = f.round_trips_ns;
        rtt.sort_unstable();
        let cpu_step = (f.parent_cpu + f.child_cpu).as_secs_f64() * 1e6 / f.count as f64;
        let p = pipelined(kind, events).with_context(|| format!("{kind}: lookahead form"))?;
        let cpu_event = (p.parent_cpu + p.child_cpu).as_secs_f64() * 1e6 / p.count as f64;
        println!(
            "{{\"transport\":\"{kind}\",\"steps\":{},\"rtt_p50_us\":{:.2},\"rtt_p99_us\":{:.2},\
             \"steps_per_sec\":{:.0},\"cpu_us_per_step\":{cpu_step:.2},\"lookahead_events\":{},\
             \"lookahead_events_per_sec\":{:.0},\"cpu_us_per_event\":{cpu_event:.3},\"load_before\":{load}}}",
            f.count,
            percentile(&rtt, 0.5),
            percentile(&rtt, 0.99),
            f.count as f64 / f.seconds,
            p.count,
            p.count as f64 / p.seconds,
        );
    }
    Ok(())
}
