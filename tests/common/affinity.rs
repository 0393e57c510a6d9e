//! Reading a thread's or process's CPU affinity from `/proc` (Linux), for the tests of
//! `pin_threads` / `serve --pin-threads`.

/// The CPUs the `Cpus_allowed_list` line of a `/proc/.../status` text names ("0-3,8,10-11").
pub fn allowed_cpus(status: &str) -> Vec<usize> {
    let list = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .expect("a Cpus_allowed_list line")
        .trim();
    let mut cpus = Vec::new();
    for part in list.split(',') {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        cpus.extend(a.parse::<usize>().unwrap()..=b.parse::<usize>().unwrap());
    }
    cpus
}
