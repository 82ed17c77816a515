//! A core of its own for the paced replay thread (`[replay] own_core`, `--own-core`).
//!
//! On this project's 2-vCPU machines the kernel puts a strategy the replay has just woken
//! on the replay's own core in 97–98 % of wake-ups, even with the other core idle, and
//! in about half of them the strategy runs its whole burst before the replay runs again
//! (`docs/BENCHMARKS.md`, session 18). Real-time scheduling avoids that but needs
//! `CAP_SYS_NICE`. CPU affinity needs no privilege: [`OwnCore`] keeps the replay thread
//! on the last CPU the process may use and everything the run starts after it (the
//! dataset's read-ahead, libzmq's I/O threads, the strategy processes `ticktape run`
//! starts, through [`Others::apply`]) on the rest, so a woken strategy can only go to
//! another core.
//!
//! The split is computed from the calling thread's allowed CPUs
//! ([`Split::of_this_thread`]), so it honours `taskset` and cgroup limits.

use anyhow::{Result, bail};

/// The replay's core and the others, from the calling thread's allowed CPUs.
#[derive(Clone, Copy)]
pub struct Split {
    /// The CPU the replay thread takes: the highest allowed one.
    pub replay: usize,
    /// The rest.
    pub others: Others,
}

/// The CPUs left to everything but the replay thread: `Copy` and async-signal-safe to
/// apply, so it can be applied between `fork` and `exec` (`Command::pre_exec`).
#[derive(Clone, Copy)]
pub struct Others {
    #[cfg(target_os = "linux")]
    set: libc::cpu_set_t,
    /// How many CPUs are in it.
    pub count: usize,
}

impl Split {
    /// The split of the calling thread's allowed CPUs: the highest for the replay, the
    /// rest for the others. An error, saying what to change, with fewer than two.
    pub fn of_this_thread() -> Result<Split> {
        #[cfg(target_os = "linux")]
        {
            let cpus = cpus_of(&current()?);
            let Some((&replay, rest)) = cpus.split_last().filter(|(_, rest)| !rest.is_empty())
            else {
                bail!(
                    "own_core needs at least two CPUs for this process and it may use {} (taskset or the cgroup's cpuset limit it): drop own_core, or allow a second CPU",
                    cpus.len()
                );
            };
            // SAFETY: an all-zero cpu_set_t is the empty set.
            let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
            for &c in rest {
                // SAFETY: `c` came from a set of CPU_SETSIZE.
                unsafe { libc::CPU_SET(c, &mut set) };
            }
            Ok(Split {
                replay,
                others: Others {
                    set,
                    count: rest.len(),
                },
            })
        }
        #[cfg(not(target_os = "linux"))]
        bail!("own_core (CPU affinity for the replay thread) is only implemented on Linux")
    }
}

impl Others {
    /// Restricts the calling thread (and what it starts afterwards) to these CPUs. Only
    /// a system call: safe between `fork` and `exec`.
    pub fn apply(&self) -> std::io::Result<()> {
        #[cfg(target_os = "linux")]
        return set_raw(&self.set);
        #[cfg(not(target_os = "linux"))]
        Ok(())
    }
}

/// The CPUs in `set`, in increasing order.
#[cfg(target_os = "linux")]
fn cpus_of(set: &libc::cpu_set_t) -> Vec<usize> {
    (0..libc::CPU_SETSIZE as usize)
        // SAFETY: `c` is below CPU_SETSIZE, the set's size.
        .filter(|&c| unsafe { libc::CPU_ISSET(c, set) })
        .collect()
}

/// The calling thread's allowed CPUs.
#[cfg(target_os = "linux")]
fn current() -> Result<libc::cpu_set_t> {
    // SAFETY: pid 0 is the calling thread; the kernel fills the set of the size given.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            bail!(
                "cannot read this thread's CPU affinity: {}",
                std::io::Error::last_os_error()
            );
        }
        Ok(set)
    }
}

/// Sets the calling thread's allowed CPUs: one system call, async-signal-safe.
#[cfg(target_os = "linux")]
fn set_raw(cpus: &libc::cpu_set_t) -> std::io::Result<()> {
    // SAFETY: pid 0 is the calling thread; the set is plain data of the size given.
    if unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), cpus) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(target_os = "linux")]
fn set(cpus: &libc::cpu_set_t) -> Result<()> {
    set_raw(cpus).map_err(|e| anyhow::anyhow!("cannot set this thread's CPU affinity: {e}"))
}

/// The replay thread's claim on a core of its own, in two steps: [`OwnCore::prepare`]
/// moves the calling thread onto the other CPUs, so that the threads it starts next
/// inherit them; [`OwnCore::take`] then moves it alone onto its own CPU. Dropping it
/// gives the thread back the CPUs it had.
///
/// Preparations nest: `ticktape run` prepares before it starts the exchange host's
/// writer thread and the strategies, the replay again before its own threads, and the
/// inner one keeps the outer one's split (the thread's CPUs are by then only the
/// others).
pub struct OwnCore {
    split: Split,
    /// The outermost preparation on this thread: it ends the thread's split on drop.
    outer: bool,
    #[cfg(target_os = "linux")]
    previous: libc::cpu_set_t,
    /// Restored on the thread that set it: not `Send`.
    _thread: std::marker::PhantomData<*const ()>,
}

impl OwnCore {
    /// Puts the calling thread on the other CPUs until [`OwnCore::take`].
    pub fn prepare() -> Result<OwnCore> {
        #[cfg(target_os = "linux")]
        {
            let previous = current()?;
            let (split, outer) = match PREPARED.get() {
                Some(split) => (split, false),
                None => (Split::of_this_thread()?, true),
            };
            set(&split.others.set)?;
            PREPARED.set(Some(split));
            Ok(OwnCore {
                split,
                outer,
                previous,
                _thread: std::marker::PhantomData,
            })
        }
        #[cfg(not(target_os = "linux"))]
        bail!("own_core (CPU affinity for the replay thread) is only implemented on Linux")
    }

    /// Moves the calling thread onto its own CPU.
    pub fn take(&self) -> Result<()> {
        #[cfg(target_os = "linux")]
        {
            // SAFETY: an all-zero cpu_set_t is the empty set; `replay` < CPU_SETSIZE.
            let mut own: libc::cpu_set_t = unsafe { std::mem::zeroed() };
            unsafe { libc::CPU_SET(self.split.replay, &mut own) };
            set(&own)
        }
        #[cfg(not(target_os = "linux"))]
        Ok(())
    }

    /// The split it made.
    pub fn split(&self) -> Split {
        self.split
    }
}

impl Drop for OwnCore {
    fn drop(&mut self) {
        #[cfg(target_os = "linux")]
        let _ = set(&self.previous);
        if self.outer {
            PREPARED.set(None);
        }
    }
}

thread_local! {
    /// The split of this thread's outermost [`OwnCore`], while it lives.
    static PREPARED: std::cell::Cell<Option<Split>> = const { std::cell::Cell::new(None) };
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    fn allowed() -> Vec<usize> {
        cpus_of(&current().unwrap())
    }

    #[test]
    fn the_replay_thread_gets_its_core_the_threads_it_starts_the_rest_and_drop_restores() {
        // On a thread of its own: the test changes its thread's affinity.
        std::thread::spawn(|| {
            let before = allowed();
            if before.len() < 2 {
                let e = OwnCore::prepare()
                    .err()
                    .expect("one CPU: refused")
                    .to_string();
                assert!(e.contains("at least two CPUs"), "{e}");
                eprintln!("skipped: one CPU allowed, only the refusal was checked");
                return;
            }
            let own = OwnCore::prepare().unwrap();
            let split = own.split();
            assert_eq!(split.replay, *before.last().unwrap());
            assert_eq!(split.others.count, before.len() - 1);
            assert_eq!(allowed(), before[..before.len() - 1]);
            // A thread started now inherits the others.
            let child = std::thread::spawn(allowed).join().unwrap();
            assert_eq!(child, before[..before.len() - 1]);
            // A nested preparation keeps the split, and gives back what it found.
            let inner = OwnCore::prepare().unwrap();
            assert_eq!(inner.split().replay, split.replay);
            inner.take().unwrap();
            assert_eq!(allowed(), vec![split.replay]);
            drop(inner);
            assert_eq!(allowed(), before[..before.len() - 1]);
            own.take().unwrap();
            assert_eq!(allowed(), vec![split.replay]);
            drop(own);
            assert_eq!(allowed(), before);
            // Ended: the next preparation starts from the thread's CPUs again.
            let again = OwnCore::prepare().unwrap();
            assert_eq!(again.split().replay, split.replay);
            drop(again);
            assert_eq!(allowed(), before);
        })
        .join()
        .unwrap();
    }
}
