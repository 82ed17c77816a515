//! Who a lossless publisher waits for: its subscriber connections by descriptor, the
//! kernel's send queue of each, and the address or process at the other end (Linux).

use std::collections::HashMap;
use std::time::Duration;

/// A subscriber a no-drop publisher had to wait for.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct SlowSubscriber {
    /// `tcp 127.0.0.1:53122` or, over ipc, `pid 4242 (python3)`.
    pub peer: String,
    /// Stalls charged to it.
    pub stalls: u64,
    /// Seconds waited for it.
    pub secs: f64,
}

/// The subscriber connections of a publisher, by file descriptor, to name who a stall
/// waits for: the one whose kernel send queue is fullest.
#[derive(Default)]
pub(super) struct Peers {
    open: HashMap<i32, SlowSubscriber>,
    closed: Vec<SlowSubscriber>,
}

impl Peers {
    pub(super) fn accepted(&mut self, fd: i32) {
        let peer = peer_name(fd);
        self.open.insert(
            fd,
            SlowSubscriber {
                peer,
                ..SlowSubscriber::default()
            },
        );
    }

    pub(super) fn disconnected(&mut self, fd: i32) {
        if let Some(p) = self.open.remove(&fd)
            && p.stalls > 0
        {
            self.closed.push(p);
        }
    }

    /// The connection with the most bytes the kernel has not sent yet (with a single
    /// subscriber, that one: its backlog may still sit in libzmq's queue).
    pub(super) fn fullest(&self) -> Option<i32> {
        if self.open.len() == 1 {
            return self.open.keys().next().copied();
        }
        self.open
            .keys()
            .map(|&fd| (unsent_bytes(fd), fd))
            .filter(|&(bytes, _)| bytes > 0)
            .max()
            .map(|(_, fd)| fd)
    }

    pub(super) fn charge(&mut self, fd: i32, waited: Duration) {
        if let Some(p) = self.open.get_mut(&fd) {
            p.stalls += 1;
            p.secs += waited.as_secs_f64();
        }
    }

    /// Connections with bytes still queued in the kernel, as `PEER (N bytes unsent)`.
    pub(super) fn behind(&self) -> Vec<String> {
        self.open
            .iter()
            .map(|(&fd, p)| (unsent_bytes(fd), &p.peer))
            .filter(|&(bytes, _)| bytes > 0)
            .map(|(bytes, peer)| format!("{peer} ({bytes} bytes unsent)"))
            .collect()
    }

    pub(super) fn slowest(&self) -> Vec<SlowSubscriber> {
        let mut all: Vec<SlowSubscriber> = self
            .open
            .values()
            .filter(|p| p.stalls > 0)
            .chain(&self.closed)
            .cloned()
            .collect();
        all.sort_by(|a, b| b.secs.total_cmp(&a.secs));
        all
    }
}

/// Bytes queued in the kernel for a socket and not yet sent (`SIOCOUTQ`); 0 if unknown.
/// The descriptor is libzmq's; asking about it changes nothing.
fn unsent_bytes(fd: i32) -> i64 {
    let mut queued: libc::c_int = 0;
    // SAFETY: TIOCOUTQ writes one int through the pointer; a stale descriptor only
    // makes the call fail.
    let rc = unsafe { libc::ioctl(fd, libc::TIOCOUTQ, &mut queued) };
    if rc == 0 { queued as i64 } else { 0 }
}

/// Who is at the other end of a subscriber connection: the address for TCP, the process
/// for a Unix socket (whose client address is anonymous).
fn peer_name(fd: i32) -> String {
    // SAFETY: both calls only write into the buffers given with their sizes.
    unsafe {
        let mut cred: libc::ucred = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
        let mut addr: libc::sockaddr_storage = std::mem::zeroed();
        let mut addr_len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        if libc::getpeername(
            fd,
            &mut addr as *mut _ as *mut libc::sockaddr,
            &mut addr_len,
        ) == 0
        {
            match addr.ss_family as i32 {
                libc::AF_INET => {
                    let a = &*(&addr as *const _ as *const libc::sockaddr_in);
                    let ip = std::net::Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
                    return format!("tcp {ip}:{}", u16::from_be(a.sin_port));
                }
                libc::AF_INET6 => {
                    let a = &*(&addr as *const _ as *const libc::sockaddr_in6);
                    let ip = std::net::Ipv6Addr::from(a.sin6_addr.s6_addr);
                    return format!("tcp [{ip}]:{}", u16::from_be(a.sin6_port));
                }
                _ => {}
            }
        }
        if libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            &mut cred as *mut _ as *mut libc::c_void,
            &mut len,
        ) == 0
            && cred.pid > 0
        {
            let comm = std::fs::read_to_string(format!("/proc/{}/comm", cred.pid))
                .map(|c| format!(" ({})", c.trim()))
                .unwrap_or_default();
            return format!("pid {}{comm}", cred.pid);
        }
    }
    format!("connection fd {fd}")
}
