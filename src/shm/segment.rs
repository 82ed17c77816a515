//! One strategy's shared-memory segment: an anonymous `memfd` (no name anywhere, freed by
//! the kernel when the last process holding it exits, however it exits), its header, and
//! the two rings in it (`docs/SHM.md`, "Segments and layout").
//!
//! Owns creating, sizing, mapping and validating a segment, the pids and start times of
//! both sides and the liveness check that reads them. Never reads records.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use anyhow::{Result, bail};

use super::ring::{RING_HEADER_BYTES, Reader, Writer};

/// First bytes of every segment.
pub const MAGIC: [u8; 8] = *b"TICKSHM\0";
/// Layout version; a reader refuses another.
pub const LAYOUT_VERSION: u32 = 1;
/// Bytes reserved for the segment header.
pub const HEADER_BYTES: usize = 4096;
/// Data bytes of the replay → strategy ring (market data, markers, gateway replies).
pub const DOWN_CAPACITY: u64 = 4 << 20;
/// Data bytes of the strategy → replay ring (requests, acks).
pub const UP_CAPACITY: u64 = 256 << 10;

/// The segment header (`docs/SHM.md`). Little-endian; written once by the replay except
/// the strategy's pid and start time (written when it attaches) and the atomics.
#[repr(C)]
pub struct SegmentHeader {
    /// [`MAGIC`].
    pub magic: [u8; 8],
    /// [`LAYOUT_VERSION`].
    pub layout_version: u32,
    /// [`HEADER_BYTES`].
    pub header_bytes: u32,
    /// Offset of the down ring's header.
    pub down_offset: u64,
    /// Data bytes of the down ring.
    pub down_capacity: u64,
    /// Offset of the up ring's header.
    pub up_offset: u64,
    /// Data bytes of the up ring.
    pub up_capacity: u64,
    /// The replay's pid.
    pub replay_pid: AtomicU32,
    /// The strategy's pid (0 before it attached).
    pub strategy_pid: AtomicU32,
    /// The replay's start time (`/proc/<pid>/stat` field 22), to tell a reused pid apart.
    pub replay_start_time: AtomicU64,
    /// The strategy's start time.
    pub strategy_start_time: AtomicU64,
    /// Bumped by the replay while it runs (diagnostics).
    pub replay_beat: AtomicU64,
    /// Bumped by the strategy while it runs (diagnostics).
    pub strategy_beat: AtomicU64,
    /// Bit 0: the replay closed in order; bit 1: the strategy did.
    pub closed: AtomicU32,
}

/// A `MAP_SHARED` mapping of a whole segment, unmapped when the last ring end using it
/// is dropped.
pub struct Mapping {
    base: *mut u8,
    len: usize,
    fd: OwnedFd,
}

// SAFETY: the mapping is plain shared memory; every cross-thread or cross-process access
// goes through atomics or the ring protocol.
unsafe impl Send for Mapping {}
// SAFETY: as above.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// First byte of the mapping.
    pub fn base(&self) -> *mut u8 {
        self.base
    }

    /// Bytes mapped.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True for an empty mapping (never: segments have a header).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The segment's file descriptor (close-on-exec; see [`crate::shm::inherit_as`]).
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// The segment header.
    pub fn header(&self) -> &SegmentHeader {
        // SAFETY: every mapping is at least HEADER_BYTES long (checked on creation and
        // on open) and page-aligned; fields written by the peer are atomics.
        unsafe { &*(self.base as *const SegmentHeader) }
    }

    fn map(fd: OwnedFd, len: usize) -> Result<Mapping> {
        // SAFETY: maps `len` bytes of a file we hold; the result is checked.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            bail!(
                "cannot map the shared-memory segment ({len} bytes): {}",
                std::io::Error::last_os_error()
            );
        }
        Ok(Mapping {
            base: p as *mut u8,
            len,
            fd,
        })
    }
}

impl std::os::fd::AsFd for Mapping {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly what `map` mapped; no ring end outlives its Arc.
        unsafe { libc::munmap(self.base as *mut libc::c_void, self.len) };
    }
}

/// `/proc/<pid>/stat` field 22 (start time in clock ticks since boot) and whether the
/// process is a zombie; None when there is no such process.
pub fn proc_start(pid: u32) -> Option<(u64, bool)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: split after it.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    // `rest` starts at field 3 (state); field 22 is index 19.
    let zombie = matches!(fields.first(), Some(&"Z") | Some(&"X"));
    Some((fields.get(19)?.parse().ok()?, zombie))
}

/// True while process `pid` started at `start` runs (not gone, not a zombie, not a
/// reused pid).
pub fn alive(pid: u32, start: u64) -> bool {
    if pid == 0 {
        return false;
    }
    match proc_start(pid) {
        Some((s, zombie)) => s == start && !zombie,
        None => false,
    }
}

fn this_process() -> (u32, u64) {
    let pid = std::process::id();
    (pid, proc_start(pid).map_or(0, |(s, _)| s))
}

/// The replay's end of a new segment: it writes the down ring, reads the up ring.
pub struct ReplayEnd {
    /// The mapping (its fd is handed to the strategy).
    pub map: Arc<Mapping>,
    /// Replay → strategy.
    pub down: Writer,
    /// Strategy → replay.
    pub up: Reader,
}

/// The strategy's end of a segment: it reads the down ring, writes the up ring.
pub struct StrategyEnd {
    /// The mapping.
    pub map: Arc<Mapping>,
    /// Replay → strategy.
    pub down: Reader,
    /// Strategy → replay.
    pub up: Writer,
}

/// Creates a segment named `ticktape-<name>` (a label in `/proc/<pid>/fd`, not a file)
/// with close-on-exec set, and writes its header.
pub fn create(name: &str) -> Result<ReplayEnd> {
    create_with(name, DOWN_CAPACITY, UP_CAPACITY)
}

/// [`create`] with other ring sizes (powers of two; tests use small ones to wrap often).
pub fn create_with(name: &str, down_capacity: u64, up_capacity: u64) -> Result<ReplayEnd> {
    if !down_capacity.is_power_of_two() || !up_capacity.is_power_of_two() {
        bail!("ring capacities must be powers of two (got {down_capacity} and {up_capacity})");
    }
    let label = std::ffi::CString::new(format!("ticktape-{name}").replace('\0', ""))?;
    // SAFETY: a plain syscall on a NUL-terminated label; the result is checked.
    let fd = unsafe { libc::memfd_create(label.as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        bail!(
            "memfd_create failed: {} (shared memory needs Linux ≥ 3.17; use transport = \"zmq\")",
            std::io::Error::last_os_error()
        );
    }
    // SAFETY: `fd` was just returned to us and is owned by nothing else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let down_offset = HEADER_BYTES;
    let up_offset = down_offset + RING_HEADER_BYTES + down_capacity as usize;
    let len = up_offset + RING_HEADER_BYTES + up_capacity as usize;
    // SAFETY: sizes the file we own; the result is checked.
    if unsafe { libc::ftruncate(fd.as_raw_fd(), len as libc::off_t) } != 0 {
        bail!(
            "cannot size the shared-memory segment to {len} bytes: {}",
            std::io::Error::last_os_error()
        );
    }
    let map = Mapping::map(fd, len)?;
    // SAFETY: the fresh mapping is zeroed, at least HEADER_BYTES long, and nobody else
    // maps it yet: plain writes of the header's fixed fields.
    unsafe {
        let h = map.base as *mut SegmentHeader;
        (*h).magic = MAGIC;
        (*h).layout_version = LAYOUT_VERSION;
        (*h).header_bytes = HEADER_BYTES as u32;
        (*h).down_offset = down_offset as u64;
        (*h).down_capacity = down_capacity;
        (*h).up_offset = up_offset as u64;
        (*h).up_capacity = up_capacity;
    }
    let (pid, start) = this_process();
    let h = map.header();
    h.replay_start_time.store(start, Ordering::Relaxed);
    h.replay_pid.store(pid, Ordering::Release);
    let map = Arc::new(map);
    let down = Writer::new(map.clone(), down_offset, down_capacity).map_err(anyhow::Error::msg)?;
    let up = Reader::new(map.clone(), up_offset, up_capacity).map_err(anyhow::Error::msg)?;
    Ok(ReplayEnd { map, down, up })
}

/// Attaches to the segment behind `fd` (inherited or received), checks its header and
/// writes this process's pid into it.
pub fn attach(fd: OwnedFd) -> Result<StrategyEnd> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstat writes one stat struct we own; the result is checked.
    if unsafe { libc::fstat(fd.as_raw_fd(), st.as_mut_ptr()) } != 0 {
        bail!(
            "fd {} is not an open shared-memory segment: {}",
            fd.as_raw_fd(),
            std::io::Error::last_os_error()
        );
    }
    // SAFETY: fstat succeeded, so the struct is initialized.
    let size = unsafe { st.assume_init() }.st_size;
    let len = usize::try_from(size).unwrap_or(0);
    if len < HEADER_BYTES {
        bail!(
            "fd {} holds {len} bytes, not a ticktape shared-memory segment (was the strategy started by `ticktape run` with transport = \"shm\"?)",
            fd.as_raw_fd()
        );
    }
    let map = Mapping::map(fd, len)?;
    let h = map.header();
    if h.magic != MAGIC {
        bail!(
            "fd {} is not a ticktape shared-memory segment (bad magic)",
            map.fd()
        );
    }
    if h.layout_version != LAYOUT_VERSION {
        bail!(
            "shared-memory layout version {} (this ticktape reads {LAYOUT_VERSION}): use the same ticktape build for replay and strategy, or transport = \"zmq\"",
            h.layout_version
        );
    }
    let (down_offset, down_capacity, up_offset, up_capacity) = (
        usize::try_from(h.down_offset)?,
        h.down_capacity,
        usize::try_from(h.up_offset)?,
        h.up_capacity,
    );
    let (pid, start) = this_process();
    h.strategy_start_time.store(start, Ordering::Relaxed);
    h.strategy_pid.store(pid, Ordering::Release);
    let map = Arc::new(map);
    let down = Reader::new(map.clone(), down_offset, down_capacity).map_err(anyhow::Error::msg)?;
    let up = Writer::new(map.clone(), up_offset, up_capacity).map_err(anyhow::Error::msg)?;
    Ok(StrategyEnd { map, down, up })
}

/// Who the peer of a segment end is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The replay process.
    Replay,
    /// The strategy process.
    Strategy,
}

impl Mapping {
    /// The pid of `side` (0: not attached yet) and whether it still runs.
    pub fn peer(&self, side: Side) -> (u32, bool) {
        let h = self.header();
        let (pid, start) = match side {
            Side::Replay => (&h.replay_pid, &h.replay_start_time),
            Side::Strategy => (&h.strategy_pid, &h.strategy_start_time),
        };
        let pid = pid.load(Ordering::Acquire);
        (pid, alive(pid, start.load(Ordering::Relaxed)))
    }

    /// Marks `side` closed in order.
    pub fn close(&self, side: Side) {
        let bit = if side == Side::Replay { 1 } else { 2 };
        self.header().closed.fetch_or(bit, Ordering::Release);
    }

    /// True once `side` closed in order.
    pub fn closed(&self, side: Side) -> bool {
        let bit = if side == Side::Replay { 1 } else { 2 };
        self.header().closed.load(Ordering::Acquire) & bit != 0
    }

    /// Bumps `side`'s beat counter.
    pub fn beat(&self, side: Side) {
        let h = self.header();
        let beat = if side == Side::Replay {
            &h.replay_beat
        } else {
            &h.strategy_beat
        };
        beat.fetch_add(1, Ordering::Relaxed);
    }
}

/// Makes `fd` the child's descriptor `target` without close-on-exec. Call it only
/// between fork and exec (`CommandExt::pre_exec`): it uses only async-signal-safe calls.
pub fn inherit_as(fd: RawFd, target: RawFd) -> std::io::Result<()> {
    // SAFETY: dup2 and fcntl on descriptors of this (child) process; errors are returned.
    unsafe {
        if fd == target {
            let flags = libc::fcntl(fd, libc::F_GETFD);
            if flags < 0 || libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                return Err(std::io::Error::last_os_error());
            }
        } else if libc::dup2(fd, target) < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Opens the segment an endpoint names: `shm:fd=N` (a descriptor inherited from
/// `ticktape run`) or `shm:/proc/PID/fd/N` (a segment `ticktape replay --transport shm`
/// printed, opened through its descriptor: same user only, nothing named on disk).
/// None when `endpoint` is not a shared-memory endpoint.
pub fn open_endpoint(endpoint: &str) -> Option<Result<OwnedFd>> {
    let rest = endpoint.strip_prefix("shm:")?;
    if let Some(n) = rest.strip_prefix("fd=") {
        return Some(match n.parse::<RawFd>() {
            Ok(fd) if fd >= 0 => take_fd(fd),
            _ => Err(anyhow::anyhow!(
                "bad shared-memory endpoint {endpoint:?}: expected shm:fd=N or shm:/proc/PID/fd/N"
            )),
        });
    }
    if rest.starts_with('/') {
        return Some(
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(rest)
                .map(OwnedFd::from)
                .map_err(|e| {
                    anyhow::anyhow!(
                        "cannot open shared-memory segment {rest}: {e} (is the replay that printed it still running, as this user?)"
                    )
                }),
        );
    }
    Some(Err(anyhow::anyhow!(
        "bad shared-memory endpoint {endpoint:?}: expected shm:fd=N or shm:/proc/PID/fd/N"
    )))
}

/// Takes ownership of inherited descriptor `fd` after checking it is open.
pub fn take_fd(fd: RawFd) -> Result<OwnedFd> {
    // SAFETY: F_GETFD only queries the descriptor.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        bail!(
            "shared-memory descriptor {fd} is not open in this process: start the strategy from `ticktape run` (it passes the segment as fd {fd}), give it an endpoint `ticktape replay --transport shm` printed (shm:/proc/PID/fd/N), or use the zmq transport"
        );
    }
    // SAFETY: the descriptor is open and, by the hand-off contract, ours alone.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}
