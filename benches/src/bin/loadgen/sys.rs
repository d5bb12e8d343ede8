//! Process facts from `/proc` and the open-files limit.

use std::fs;

/// CPU time and memory of one process at one moment.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcSample {
    /// utime + stime, in seconds.
    pub cpu_s: f64,
    /// VmRSS in KiB.
    pub rss_kb: u64,
    /// VmHWM (peak RSS) in KiB.
    pub hwm_kb: u64,
    pub threads: u64,
}

/// Reads `/proc/<pid>/stat` and `/proc/<pid>/status`; `None` when the process
/// is gone or `/proc` is not there.
pub fn sample(pid: &str) -> Option<ProcSample> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let after = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // After ')': index 0 is field 3 (state); utime is field 14, stime 15, num_threads 20.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    let threads: u64 = fields.get(17)?.parse().ok()?;
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Some(ProcSample {
        cpu_s: (utime + stime) as f64 / clock_ticks_per_s(),
        rss_kb: kb("VmRSS:"),
        hwm_kb: kb("VmHWM:"),
        threads,
    })
}

/// The whole machine's CPU time, from the first line of `/proc/stat`, in
/// clock ticks: all of it, and the part the hypervisor gave to others
/// (`steal`), which on a shared VM is one source of run-to-run noise.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MachineCpu {
    pub total: u64,
    pub steal: u64,
}

pub fn machine_cpu() -> Option<MachineCpu> {
    parse_proc_stat(&fs::read_to_string("/proc/stat").ok()?)
}

/// `cpu  user nice system idle iowait irq softirq steal guest guest_nice`:
/// the total is the first eight (guest time is inside user already).
pub fn parse_proc_stat(text: &str) -> Option<MachineCpu> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    Some(MachineCpu {
        total: v.iter().sum(),
        steal: *v.get(7)?,
    })
}

/// Steal as a percentage of the machine's CPU time between two readings.
pub fn steal_pct(a: MachineCpu, b: MachineCpu) -> Option<f64> {
    let total = b.total.checked_sub(a.total)?;
    let steal = b.steal.checked_sub(a.steal)?;
    (total > 0).then(|| steal as f64 * 100.0 / total as f64)
}

fn clock_ticks_per_s() -> f64 {
    #[allow(unsafe_code)]
    // SAFETY: sysconf has no preconditions and only reads a constant.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

/// Raises the soft RLIMIT_NOFILE to the hard limit; returns the soft limit now
/// in force.
pub fn raise_nofile_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    #[allow(unsafe_code)]
    // SAFETY: `lim` is a valid, writable rlimit for the duration of the call.
    let got = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    if got != 0 {
        return 1024;
    }
    if lim.rlim_cur < lim.rlim_max {
        let want = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        #[allow(unsafe_code)]
        // SAFETY: `want` is a valid rlimit; raising the soft limit up to the hard one needs no privilege.
        let set = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &want) };
        if set == 0 {
            return want.rlim_cur;
        }
    }
    lim.rlim_cur
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat_gives_the_total_and_the_steal() {
        let text = "cpu  100 5 50 800 10 1 4 30 7 0\ncpu0 50 2 25 400 5 0 2 15 3 0\n";
        let m = parse_proc_stat(text).expect("parsed");
        assert_eq!(
            m,
            MachineCpu {
                total: 1000,
                steal: 30
            }
        );
        let later = MachineCpu {
            total: 1200,
            steal: 40,
        };
        assert_eq!(steal_pct(m, later), Some(5.0));
        assert_eq!(
            steal_pct(later, m),
            None,
            "a counter that went back is no reading"
        );
        // Kernels before 2.6.11 had no steal column.
        assert_eq!(parse_proc_stat("cpu  1 2 3 4 5 6 7\n"), None);
    }
}
