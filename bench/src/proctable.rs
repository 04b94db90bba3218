//! One snapshot of `/proc` for questions about many processes at once: who descends from
//! whom, what each is called, which TCP connections reach a port. Scanning once per
//! measurement keeps a thousand tunnels' worth of processes cheap to count.

use std::collections::{BTreeSet, HashMap, HashSet};

use mytunnel_test_support::{cmdline, parent_of, pids};

use crate::procs::{memory_of, Memory};

/// Every process's parent and name at one moment.
#[derive(Debug, Default)]
pub struct ProcTable {
    children: HashMap<i32, Vec<i32>>,
    names: HashMap<i32, String>,
}

impl ProcTable {
    /// Reads `/proc` now.
    pub fn snapshot() -> ProcTable {
        let mut table = ProcTable::default();
        for pid in pids() {
            let Some(parent) = parent_of(pid) else {
                continue;
            };
            table.children.entry(parent).or_default().push(pid);
            let name = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            table.names.insert(pid, name.trim().to_owned());
        }
        table
    }

    /// `roots` and every process below them, each once.
    pub fn trees(&self, roots: &[i32]) -> BTreeSet<i32> {
        let mut seen: BTreeSet<i32> = BTreeSet::new();
        let mut next: Vec<i32> = roots.to_vec();
        while let Some(pid) = next.pop() {
            if seen.insert(pid) {
                next.extend(self.children.get(&pid).into_iter().flatten().copied());
            }
        }
        seen
    }

    /// The process's name (`/proc/<pid>/comm`), empty when unknown.
    pub fn name(&self, pid: i32) -> &str {
        self.names.get(&pid).map_or("", String::as_str)
    }

    /// Every process named `name` whose command line has an argument containing `needle`.
    pub fn named_with_argument(&self, name: &str, needle: &str) -> BTreeSet<i32> {
        self.names
            .iter()
            .filter(|(_, n)| n.as_str() == name)
            .map(|(pid, _)| *pid)
            .filter(|pid| cmdline(*pid).iter().any(|arg| arg.contains(needle)))
            .collect()
    }
}

/// The summed memory of `pids` and how many of them there were.
pub fn memory_of_all(pids: impl IntoIterator<Item = i32>) -> (Memory, usize) {
    pids.into_iter()
        .fold((Memory::default(), 0), |(sum, n), pid| {
            (sum + memory_of(pid), n + 1)
        })
}

/// Established TCP connections whose local port is `port` (for sshd's port: the SSH
/// connections it holds), over IPv4 and IPv6.
pub fn established_to(port: u16) -> usize {
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .map(|table| {
            std::fs::read_to_string(table).map_or(0, |text| count_established(&text, port))
        })
        .sum()
}

/// Whether `pid` holds a listening TCP socket (the client's relay, say).
pub fn listens_on_tcp(pid: i32) -> bool {
    let listening: HashSet<u64> = ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|table| std::fs::read_to_string(table).ok())
        .flat_map(|text| listening_inodes(&text))
        .collect();
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.filter_map(std::result::Result::ok).any(|fd| {
        std::fs::read_link(fd.path())
            .ok()
            .and_then(|target| {
                let target = target.to_string_lossy().into_owned();
                target
                    .strip_prefix("socket:[")?
                    .strip_suffix(']')?
                    .parse::<u64>()
                    .ok()
            })
            .is_some_and(|inode| listening.contains(&inode))
    })
}

/// The socket inodes of a `/proc/net/tcp` table's rows in state LISTEN (`0A`).
fn listening_inodes(table: &str) -> Vec<u64> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            (words.get(3) == Some(&"0A"))
                .then(|| words.get(9)?.parse().ok())
                .flatten()
        })
        .collect()
}

/// The rows of a `/proc/net/tcp` table with local port `port` in state ESTABLISHED (`01`).
fn count_established(table: &str, port: u16) -> usize {
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            let local_port = words
                .get(1)
                .and_then(|addr| addr.rsplit_once(':'))
                .and_then(|(_, hex)| u16::from_str_radix(hex, 16).ok());
            local_port == Some(port) && words.get(3) == Some(&"01")
        })
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_established_connections_to_a_port() {
        // Port 0x1F90 = 8080: one listener (0A), two established server sides, one
        // client side (remote 8080) that must not count, one TIME_WAIT (06).
        let table = "\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1
   1: 0100007F:1F90 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 2 1
   2: 0100007F:1F90 0100007F:D432 01 00000000:00000000 00:00000000 00000000     0        0 3 1
   3: 0100007F:D431 0100007F:1F90 01 00000000:00000000 00:00000000 00000000     0        0 4 1
   4: 0100007F:1F90 0100007F:D433 06 00000000:00000000 00:00000000 00000000     0        0 5 1
";
        assert_eq!(count_established(table, 8080), 2);
        assert_eq!(count_established(table, 8081), 0);
        assert_eq!(count_established("", 8080), 0);
        assert_eq!(listening_inodes(table), [1]);
    }

    #[test]
    fn finds_trees_in_one_snapshot() {
        let table = ProcTable {
            children: HashMap::from([(1, vec![2, 3]), (2, vec![4]), (9, vec![10])]),
            names: HashMap::new(),
        };
        assert_eq!(table.trees(&[2]), BTreeSet::from([2, 4]));
        assert_eq!(table.trees(&[1, 9]), BTreeSet::from([1, 2, 3, 4, 9, 10]));
        assert_eq!(table.trees(&[]), BTreeSet::new());
    }
}
