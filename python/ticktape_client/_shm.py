"""The shared-memory transport of docs/SHM.md, in pure Python (mmap, struct, ctypes).

`ticktape run` with `transport = "shm"` hands each strategy process its segment as an
inherited descriptor and passes `shm:fd=N` where a ZeroMQ endpoint would be. The segment
holds a header and two single-producer single-consumer rings: "down" (replay -> strategy:
bus messages and gateway replies, in one order) and "up" (strategy -> replay: the hello,
orders and lockstep acks). Records are `u32 len, u16 kind, u16 topic_len`, topic,
payload, padded to 8 bytes; `len = 0xFFFFFFFF` marks a wrap to the start of the ring.

Cursors are read and written as single native 8-byte words through a memoryview cast
(one load or store each). The "always wake" protocol needs only that stores become
visible in program order and loads are not reordered, which x86-64 guarantees; on other
machines this module refuses to run.

Before sleeping on the futex, a reader polls for up to `TICKTAPE_SHM_SPIN_US` (default
50 µs, 0 never), backing off after spins that saw nothing (`ShmLink._spin`).
"""
import ctypes
import mmap
import os
import platform
import struct
import time

_MAGIC = b"TICKSHM\0"
_LAYOUT_VERSION = 1
_HEADER = struct.Struct("<8sIIQQQQ")  # magic, version, header bytes, down off/cap, up off/cap
_RECORD = struct.Struct("<IHH")
_WRAP = 0xFFFFFFFF
_SYS_FUTEX = 202  # x86-64
_FUTEX_WAIT, _FUTEX_WAKE = 0, 1
# Offsets in the segment header.
_REPLAY_PID, _STRATEGY_PID, _REPLAY_START, _STRATEGY_START, _STRATEGY_BEAT, _CLOSED = (
    48, 52, 56, 64, 80, 88)
# Offsets in a ring header: head, tail, data_seq, space_seq, writer_waiting; data follows.
_HEAD, _TAIL, _DATA_SEQ, _SPACE_SEQ, _WRITER_WAITING, _READER_SLEEPING, _RING_HEADER = (
    0, 64, 128, 132, 136, 140, 256)


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


def _start_time(pid):
    """(start time in clock ticks, zombie?) of `pid` from /proc, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2:].split()
    return int(fields[19]), fields[0] in ("Z", "X")


def _spin_ns():
    """How long a wait polls before it sleeps, in ns: `TICKTAPE_SHM_SPIN_US` µs (the
    replay's variable), else 50 µs; 0 never spins."""
    try:
        return max(0, int(os.environ.get("TICKTAPE_SHM_SPIN_US", "").strip() or 50)) * 1000
    except ValueError:
        return 50_000


class ShmLink:
    """This process's end of a segment: reads the down ring, writes the up ring."""

    BUS, GATEWAY, CLOSED = 1, 2, 3

    def __init__(self, endpoint):
        if platform.machine() not in ("x86_64", "AMD64"):
            raise RuntimeError(f"the shared-memory client needs x86-64; "
                               f"use the zmq transport on {platform.machine()}")
        if endpoint.startswith("shm:/"):
            # A segment `ticktape replay --transport shm` printed (same user only).
            fd = os.open(endpoint[len("shm:"):], os.O_RDWR)
        elif endpoint.startswith("shm:fd="):
            fd = int(endpoint[len("shm:fd="):])
        else:
            raise ValueError(f"bad shared-memory endpoint {endpoint!r}: "
                             "expected shm:fd=N or shm:/proc/PID/fd/N")
        try:
            size = os.fstat(fd).st_size
        except OSError as e:
            raise RuntimeError(f"descriptor {fd} is not open: start this strategy from "
                               f"`ticktape run` (transport = \"shm\"), or use zmq") from e
        self.mm = mmap.mmap(fd, size)
        os.close(fd)
        magic, version, _, down_off, down_cap, up_off, up_cap = _HEADER.unpack_from(self.mm)
        if magic != _MAGIC:
            raise RuntimeError(f"descriptor {fd} is not a ticktape shared-memory segment")
        if version != _LAYOUT_VERSION:
            raise RuntimeError(f"shared-memory layout version {version}, this client reads "
                               f"{_LAYOUT_VERSION}: use the matching client or zmq")
        self.q = memoryview(self.mm).cast("Q")
        self.w = memoryview(self.mm).cast("I")
        # Attach: start time first, then the pid the replay watches.
        me = os.getpid()
        self.q[_STRATEGY_START // 8] = (_start_time(me) or (0, False))[0]
        self.w[_STRATEGY_PID // 4] = me
        self.replay_pid = self.w[_REPLAY_PID // 4]
        self.replay_start = self.q[_REPLAY_START // 8]
        self.down = (down_off, down_cap, down_off + _RING_HEADER)
        self.up = (up_off, up_cap, up_off + _RING_HEADER)
        self.tail = self.q[(down_off + _TAIL) // 8]
        self.head = self.q[(up_off + _HEAD) // 8]
        libc = ctypes.CDLL(None, use_errno=True)
        self._syscall = libc.syscall
        self._syscall.restype = ctypes.c_long
        base = ctypes.addressof(ctypes.c_char.from_buffer(self.mm))
        self._down_data_seq = ctypes.c_void_p(base + down_off + _DATA_SEQ)
        self._down_space_seq = ctypes.c_void_p(base + down_off + _SPACE_SEQ)
        self._up_data_seq = ctypes.c_void_p(base + up_off + _DATA_SEQ)
        self._up_space_seq = ctypes.c_void_p(base + up_off + _SPACE_SEQ)
        self._wait_100ms = _Timespec(0, 100_000_000)
        self._wait_1ms = _Timespec(0, 1_000_000)
        self._wait_100ms_ref = ctypes.byref(self._wait_100ms)
        self._spin_ns, self._spin_skip, self._spin_misses = _spin_ns(), 0, 0
        self._down_data_seq_i = (down_off + _DATA_SEQ) // 4
        self._down_sleeping_i = (down_off + _READER_SLEEPING) // 4
        # Word indexes of the cursors read or written per record, and the arguments of
        # the wake after each request, made once.
        self._down_head_i = (down_off + _HEAD) // 8
        self._up_head_i, self._up_tail_i = (up_off + _HEAD) // 8, (up_off + _TAIL) // 8
        self._up_data_seq_i = (up_off + _DATA_SEQ) // 4
        self._up_cap, self._up_largest, self._up_data = up_cap, up_cap // 4, up_off + _RING_HEADER
        # FUTEX_WAKE reads no timeout, second address or third value: four arguments,
        # ints but the address (a plain int would go as a C int), make the cheapest call.
        self._wake_up = (_SYS_FUTEX, self._up_data_seq, _FUTEX_WAKE, 1)

    def _futex(self, addr, op, val, timeout=None):
        self._syscall(ctypes.c_long(_SYS_FUTEX), addr, ctypes.c_int(op), ctypes.c_uint32(val),
                      ctypes.byref(timeout) if timeout is not None else None, None,
                      ctypes.c_uint32(0))

    def _replay_gone(self):
        seen = _start_time(self.replay_pid)
        return seen is None or seen[1] or seen[0] != self.replay_start

    def records(self, limit=1024):
        """Up to `limit` records waiting in the down ring, as (kind, topic, payload)
        bytes copies; their space goes back to the replay before this returns."""
        tail = self.tail
        head = self.q[self._down_head_i]
        if tail == head:
            return []
        off, cap, data = self.down
        mask, largest = cap - 1, cap // 4
        mm, unpack = self.mm, _RECORD.unpack_from
        out = []
        append = out.append
        n = 0
        while tail != head and n < limit:
            pos = tail & mask
            length, kind, topic_len = unpack(mm, data + pos)
            if length == _WRAP:
                tail += cap - pos
                continue
            if length + 8 > largest or topic_len > length:
                raise RuntimeError(f"corrupt shared-memory ring at byte {tail}")
            body = data + pos + 8
            split = body + topic_len
            append((kind, mm[body:split], mm[split:body + length]))
            tail += (length + 15) & ~7
            n += 1
        self.release(tail)
        return out

    def release(self, tail):
        """Gives the down ring's space up to `tail` (every record before it was read) back
        to the replay, waking it if it waits for space."""
        if tail == self.tail:
            return
        off = self.down[0]
        self.tail = tail
        self.q[(off + _TAIL) // 8] = tail
        if self.w[(off + _WRITER_WAITING) // 4]:
            i = (off + _SPACE_SEQ) // 4
            self.w[i] = (self.w[i] + 1) & 0xFFFFFFFF
            self._futex(self._down_space_seq, _FUTEX_WAKE, 1)

    def wait(self):
        """Spins for a while if that has been paying (`_spin`), then sleeps until the
        replay wakes us or 100 ms pass; raises if the replay died."""
        if self._spin_skip:
            self._spin_skip -= 1
        elif self._spin_ns and self._spin():
            return
        w, q, head_i = self.w, self.q, self._down_head_i
        seq = w[self._down_data_seq_i]
        # The hint that has the replay wake us at its next record rather than its next
        # step marker (docs/SHM.md): Python cannot fence here, so the replay may miss it,
        # which costs only that overlap, never a wake-up.
        sleeping = self._down_sleeping_i
        w[sleeping] = 1
        if q[head_i] != self.tail:
            w[sleeping] = 0
            return
        # futex(data_seq, FUTEX_WAIT, seq, 100 ms), the arguments but `seq` made once.
        self._syscall(_SYS_FUTEX, self._down_data_seq, _FUTEX_WAIT, seq, self._wait_100ms_ref,
                      None, 0)
        w[sleeping] = 0
        i = _STRATEGY_BEAT // 8
        q[i] = (q[i] + 1) & 0xFFFFFFFFFFFFFFFF
        if q[head_i] == self.tail and self._replay_gone():
            raise SystemExit(f"replay gone (pid {self.replay_pid}): the shared-memory peer died")

    def _spin(self):
        """Polls the down ring's head for up to `TICKTAPE_SHM_SPIN_US` (the replay's
        variable: default 50 µs, 0 never spins): true as soon as there is a record.

        When the replay runs on the other core, its next records come within a few tens
        of µs of our ack, and a poll sees them without the kernel wake-up across cores
        (tens of µs on these VMs) a sleep costs. When it shares our core, spinning only
        delays it: after a spin that saw nothing, the next 1, 2, 4 ... 64 waits sleep at
        once (doubling with each further miss), and a spin that paid starts over. (The
        replay's halving budget is not copied: once halved below the replay's turnaround,
        it never sees a record again.)"""
        q, i, tail, clock = self.q, self._down_head_i, self.tail, time.perf_counter_ns
        end = clock() + self._spin_ns
        while True:
            # The clock costs about as much as a poll: read it every 4 polls.
            if q[i] != tail or q[i] != tail or q[i] != tail or q[i] != tail:
                self._spin_misses = 0
                return True
            if clock() >= end:
                self._spin_skip = 1 << min(self._spin_misses, 6)
                self._spin_misses += 1
                return False

    def close(self):
        """Marks this side closed in order (the replay then expects it to exit)."""
        i = _CLOSED // 4
        self.w[i] = self.w[i] | 2

    def send(self, body, kind=GATEWAY):
        """Frames one gateway message into the up ring and wakes the replay."""
        n = len(body)
        size = (n + 15) & ~7
        head, cap = self.head, self._up_cap
        pos = head & (cap - 1)
        if size > cap - pos or size > self._up_largest \
                or head + size - self.q[self._up_tail_i] > cap:
            self._send_slow(body, kind)  # a wrap, a full ring or too large
            return
        # The common case: header and body in one copy.
        at = self._up_data + pos
        self.mm[at:at + 8 + n] = _RECORD.pack(n, kind, 0) + body
        # `_publish(head + size)`, inline.
        self.head = head = head + size
        self.q[self._up_head_i] = head
        w, i = self.w, self._up_data_seq_i
        w[i] = (w[i] + 1) & 0xFFFFFFFF
        if self._syscall(*self._wake_up) < 0:
            raise OSError(ctypes.get_errno(), "futex wake of the replay failed")

    def _send_slow(self, body, kind):
        off, cap, data = self.up
        n = len(body)
        size = (n + 15) & ~7
        if size > cap // 4:
            raise ValueError(f"a request of {n} bytes does not fit the up ring")
        head = self.head
        pos = head & (cap - 1)
        skip = cap - pos if size > cap - pos else 0
        if head + skip + size - self.q[self._up_tail_i] > cap:
            self._wait_for_space(head + skip + size)
        mm = self.mm
        if skip:
            struct.pack_into("<I", mm, data + pos, _WRAP)
            pos = 0
        at = data + pos
        _RECORD.pack_into(mm, at, n, kind, 0)
        mm[at + 8:at + 8 + n] = body
        self._publish(head + skip + size)

    def _publish(self, head):
        """Moves the up ring's head to `head` (the records before it written), bumps its
        `data_seq` and wakes the replay."""
        self.head = head
        self.q[self._up_head_i] = head
        w, i = self.w, self._up_data_seq_i
        w[i] = (w[i] + 1) & 0xFFFFFFFF
        if self._syscall(*self._wake_up) < 0:
            raise OSError(ctypes.get_errno(), "futex wake of the replay failed")

    def _wait_for_space(self, end):
        """Sleeps until the replay has read the up ring up to `end - capacity`."""
        off, cap, _ = self.up
        tail_i, waiting_i, space_i = self._up_tail_i, (off + _WRITER_WAITING) // 4, \
            (off + _SPACE_SEQ) // 4
        started = time.monotonic()
        while end - self.q[tail_i] > cap:
            seq = self.w[space_i]
            self.w[waiting_i] = 1
            if end - self.q[tail_i] > cap:
                self._futex(self._up_space_seq, _FUTEX_WAIT, seq, self._wait_1ms)
            self.w[waiting_i] = 0
            if self._replay_gone():
                raise SystemExit(f"replay gone (pid {self.replay_pid})")
            if time.monotonic() - started > 30:
                raise RuntimeError("the replay has not read this strategy's requests for 30 s")
