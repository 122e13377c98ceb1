//! The operating system: the clock shared by publisher and subscribers, the fd limit, the
//! generator's own CPU time, and the server's CPU time and memory read from /proc.

use std::collections::BTreeSet;

/// Nanoseconds of `CLOCK_MONOTONIC`: the same clock in every thread and process of the machine,
/// so a send time written into a payload can be compared with a receive time anywhere here.
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Raises the soft RLIMIT_NOFILE to the hard limit; returns the limit now in force.
pub fn raise_nofile() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls on a struct we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        if lim.rlim_cur < lim.rlim_max {
            let want = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
    }
    lim.rlim_cur
}

/// CPU time (user + system) of this process, all threads, in microseconds.
pub fn self_cpu_us() -> u64 {
    // SAFETY: getrusage fills the struct we own.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// How many CPUs this process may run on (its affinity mask, e.g. from `taskset`).
pub fn allowed_cpus() -> usize {
    // SAFETY: sched_getaffinity fills the set we own.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) == 0 {
            return (libc::CPU_COUNT(&set) as usize).max(1);
        }
    }
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Lets the kernel pick the source port at connect time (`IP_BIND_ADDRESS_NO_PORT`), so a
/// socket bound to an address before connecting does not reserve a port per address.
pub fn bind_no_port(fd: std::os::fd::RawFd) {
    let one: libc::c_int = 1;
    // SAFETY: setsockopt reads an int we own; failure is harmless (the kernel then picks a
    // port at bind time).
    unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            &one as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

fn clock_ticks() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as u64
    } else {
        100
    }
}

/// The fields of /proc/PID/stat after the command name (which may contain spaces).
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &text[text.rfind(')')? + 2..];
    Some(after.split_whitespace().map(str::to_owned).collect())
}

/// The given pids and all their live descendants (nginx workers, uvicorn workers...).
pub fn with_descendants(roots: &[u32]) -> Vec<u32> {
    let mut parent_of = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            // Field 4 of stat (index 1 after the name) is the parent pid.
            if let Some(ppid) = stat_fields(pid).and_then(|f| f.get(1)?.parse::<u32>().ok()) {
                parent_of.push((pid, ppid));
            }
        }
    }
    let mut set: BTreeSet<u32> = roots.iter().copied().collect();
    loop {
        let before = set.len();
        for &(pid, ppid) in &parent_of {
            if set.contains(&ppid) {
                set.insert(pid);
            }
        }
        if set.len() == before {
            break;
        }
    }
    set.into_iter().collect()
}

/// CPU time (utime + stime, all threads) of a process, in microseconds; `None` when it is gone.
pub fn proc_cpu_us(pid: u32) -> Option<u64> {
    let f = stat_fields(pid)?;
    // utime and stime are fields 14 and 15: indexes 11 and 12 after the name.
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(ticks * 1_000_000 / clock_ticks())
}

/// Resident memory of a process (VmRSS), in KiB.
pub fn proc_rss_kib(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// A counter of the `TcpExt` section of /proc/net/netstat (machine-wide), e.g.
/// `ListenOverflows` (a SYN dropped because a listen backlog was full).
pub fn tcp_ext(name: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/net/netstat").ok()?;
    let mut lines = text.lines().filter(|l| l.starts_with("TcpExt:"));
    let names = lines.next()?.split_whitespace();
    let values = lines.next()?.split_whitespace();
    names
        .zip(values)
        .find(|(n, _)| *n == name)
        .and_then(|(_, v)| v.parse().ok())
}

/// A snapshot of the server's processes.
#[derive(Debug, Clone, Copy, Default)]
pub struct ServerSample {
    pub cpu_us: u64,
    pub rss_kib: u64,
    pub processes: usize,
}

/// Watches a set of server processes (the given pids and their descendants).
#[derive(Debug, Clone)]
pub struct Server {
    roots: Vec<u32>,
}

impl Server {
    pub fn new(roots: Vec<u32>) -> Option<Self> {
        (!roots.is_empty()).then_some(Self { roots })
    }

    /// CPU and memory summed over the processes alive now.
    pub fn sample(&self) -> ServerSample {
        let pids = with_descendants(&self.roots);
        let mut s = ServerSample::default();
        for pid in pids {
            if let Some(cpu) = proc_cpu_us(pid) {
                s.cpu_us += cpu;
                s.rss_kib += proc_rss_kib(pid).unwrap_or(0);
                s.processes += 1;
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_our_own_process() {
        let me = std::process::id();
        assert!(proc_rss_kib(me).unwrap() > 0);
        let spin = now_ns();
        while now_ns() - spin < 30_000_000 {}
        assert!(proc_cpu_us(me).unwrap() > 0);
        assert!(self_cpu_us() > 0);
        assert!(with_descendants(&[1]).len() > 1 || std::process::id() == 1);
        assert!(raise_nofile() > 0);
        assert!(tcp_ext("ListenOverflows").is_some());
    }
}
