//! Interop with real third-party TFTP peers, run as subprocesses on loopback:
//!
//! * our server (`tftp-proto serve`) with the clients tftp-hpa, atftp, busybox tftp and curl;
//! * our client (`tftp-proto get` / `put`) with the servers tftpd-hpa, atftpd and dnsmasq.
//!
//! Downloads and (where the peer can) uploads of 0, 1, 511, 512, 513 and 1 MiB + 1 bytes with
//! every blksize (512, 1468, 65464) and windowsize (1, 4, 16, 64) the peer supports, over IPv4
//! and IPv6 (::1), plus 40 MiB (81,920 blocks of 512: the block number wraps past 65535) once per
//! peer and direction. Every file is compared byte for byte, and the parameters actually
//! negotiated are checked: our server's log line for each transfer, our client's summary line.
//! Known peer limitations are asserted as the documented behaviour, never skipped; the support
//! table they produce is in `tests/interop/README.md`, and each test writes its matrix to
//! `target/tmp/interop-results/TEST.txt` (and prints it with `--nocapture`).
//!
//! Peers: `sudo bash tests/interop/peers.sh peers_install` (Debian 12). Under CI (`CI` set) or
//! with `TFTP_INTEROP_REQUIRED=1` a missing peer fails its test; otherwise the test prints
//! `SKIPPED: <peer> not installed` and passes. dnsmasq serves TFTP on port 69 only, so its test
//! needs root (the same rule: a failure under CI, a loud skip elsewhere).
//!
//! Every subprocess runs in its own process group under a watchdog ([`CLIENT_LIMIT`]); every
//! server is stopped (the whole group, SIGKILL as a last resort) when its guard drops, also on
//! panic. Tests use their own ports and directories and may run in parallel; the dnsmasq test
//! holds [`PORT_69`], and moves to another 127/8 address when some other process holds
//! 127.0.0.1:69.
#![cfg(all(feature = "cli", target_os = "linux"))]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Mutex};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_tftp-proto");

/// Wall-clock limit of one client run (a 40 MiB transfer takes a few seconds).
const CLIENT_LIMIT: Duration = Duration::from_secs(120);

/// Limit for a server to start answering or to exit after SIGTERM.
const SERVER_LIMIT: Duration = Duration::from_secs(10);

/// The files of every matrix: name and size.
const SMALL: &[(&str, usize)] = &[
    ("f0", 0),
    ("f1", 1),
    ("f511", 511),
    ("f512", 512),
    ("f513", 513),
    ("f1M1", (1 << 20) + 1),
];

/// The files of option sets that take long per transfer.
const FEW: &[&str] = &["f0", "f513", "f1M1"];

/// 81,920 blocks of 512 and an empty final one: block numbers wrap from 65535 to 0.
const BIG: (&str, usize) = ("f40M", 40 << 20);

/// dnsmasq can only serve on port 69: one instance at a time.
static PORT_69: Mutex<()> = Mutex::new(());

const V4: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const V6: IpAddr = IpAddr::V6(Ipv6Addr::LOCALHOST);

// ---- peers ------------------------------------------------------------------------------------

/// Whether a missing peer is a failure (CI) rather than a skip.
fn required() -> bool {
    let set = |v: &str| std::env::var(v).is_ok_and(|s| !s.is_empty() && s != "0" && s != "false");
    set("CI") || set("TFTP_INTEROP_REQUIRED")
}

/// Something the interop tests need is not there: panics under CI, else prints a loud skip.
fn unavailable(msg: &str) {
    if required() {
        panic!("interop: {msg} (a failure under CI / TFTP_INTEROP_REQUIRED)");
    }
    eprintln!("\n!!!!! SKIPPED: {msg}\n");
}

/// A missing peer: see [`unavailable`].
fn missing<T>(peer: &str, why: &str) -> Option<T> {
    unavailable(&format!(
        "{peer} not installed ({why}); install the interop peers with \
         `sudo bash tests/interop/peers.sh peers_install`"
    ));
    None
}

/// `name` on PATH or in the sbin directories.
fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    let found = path
        .split(':')
        .chain(["/usr/sbin", "/sbin"])
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file());
    found
}

/// Where `peers.sh` unpacks atftpd (it conflicts with tftpd-hpa, so it is not installed).
fn atftpd_path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("ATFTPD_BIN") {
        return Some(PathBuf::from(p)).filter(|p| p.is_file());
    }
    let dir = std::env::var_os("PEERS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("tftp-proto-peers"));
    Some(dir.join("atftpd/root/usr/sbin/atftpd"))
        .filter(|p| p.is_file())
        .or_else(|| which("atftpd"))
}

/// The program of a peer, or `None` (after [`missing`]) when it is not installed.
fn program(peer: Peer) -> Option<PathBuf> {
    let found = match peer {
        Peer::TftpHpa => which("tftp").filter(|p| {
            // Other packages ship a `tftp` with another command line (netkit, BSD).
            output_of(Command::new(p).arg("-V")).contains("tftp-hpa")
        }),
        Peer::Busybox => which("busybox").filter(|p| {
            output_of(Command::new(p).arg("--list"))
                .lines()
                .any(|l| l == "tftp")
        }),
        Peer::Atftpd => atftpd_path(),
        Peer::Dnsmasq => which("dnsmasq"),
        Peer::Atftp | Peer::Curl | Peer::TftpdHpa => which(peer.program_name()),
    };
    found.or_else(|| missing(peer.name(), &format!("no `{}` found", peer.program_name())))
}

fn output_of(cmd: &mut Command) -> String {
    cmd.stdin(Stdio::null())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr))
        .unwrap_or_default()
}

/// The plan without its IPv6 part when ::1 cannot be used (some containers disable IPv6).
fn usable(plan: &[(IpAddr, Vec<Cfg>)]) -> Vec<(IpAddr, Vec<Cfg>)> {
    let v6 = UdpSocket::bind((V6, 0)).is_ok();
    if !v6 && plan.iter().any(|(ip, _)| ip.is_ipv6()) {
        unavailable("IPv6 transfers: cannot bind ::1 (IPv6 disabled?)");
    }
    plan.iter()
        .filter(|(ip, _)| v6 || ip.is_ipv4())
        .cloned()
        .collect()
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { nix::libc::geteuid() == 0 }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Peer {
    TftpHpa,
    Atftp,
    Busybox,
    Curl,
    TftpdHpa,
    Atftpd,
    Dnsmasq,
}

impl Peer {
    fn name(self) -> &'static str {
        match self {
            Peer::TftpHpa => "tftp-hpa",
            Peer::Atftp => "atftp",
            Peer::Busybox => "busybox tftp",
            Peer::Curl => "curl",
            Peer::TftpdHpa => "tftpd-hpa",
            Peer::Atftpd => "atftpd",
            Peer::Dnsmasq => "dnsmasq",
        }
    }

    fn program_name(self) -> &'static str {
        match self {
            Peer::TftpHpa => "tftp",
            Peer::Atftp => "atftp",
            Peer::Busybox => "busybox",
            Peer::Curl => "curl",
            Peer::TftpdHpa => "in.tftpd",
            Peer::Atftpd => "atftpd",
            Peer::Dnsmasq => "dnsmasq",
        }
    }

    /// Servers: whether RFC 7440 windowsize is negotiated (the others ignore it: lockstep).
    fn server_windowsize(self) -> bool {
        self == Peer::Atftpd
    }
}

// ---- processes --------------------------------------------------------------------------------

/// Sends `signal` to the process group `pgid`.
fn kill_group(pgid: u32, signal: i32) {
    if let Ok(pgid) = i32::try_from(pgid) {
        // SAFETY: kill has no memory-safety preconditions; a negative pid names a process group.
        unsafe {
            nix::libc::kill(-pgid, signal);
        }
    }
}

/// A finished (or killed) client run.
struct Run {
    status: Option<ExitStatus>,
    /// stdout then stderr.
    text: String,
    timed_out: bool,
    secs: f64,
}

impl Run {
    fn code(&self) -> Option<i32> {
        self.status.and_then(|s| s.code())
    }

    fn success(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }

    /// The end of the output, for a failure message.
    fn tail(&self) -> String {
        let t = self.text.trim();
        let start = t.len().saturating_sub(600);
        let start = (start..t.len())
            .find(|&i| t.is_char_boundary(i))
            .unwrap_or(t.len());
        t[start..].replace('\n', " | ")
    }

    fn describe(&self) -> String {
        if self.timed_out {
            format!("killed after {}s: {}", CLIENT_LIMIT.as_secs(), self.tail())
        } else {
            format!("exit {:?}: {}", self.code(), self.tail())
        }
    }
}

/// Runs `cmd` in its own process group, killed (the whole group) after [`CLIENT_LIMIT`].
fn run(cmd: &mut Command) -> Run {
    let start = Instant::now();
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let out = child.wait_with_output();
        let _ = tx.send(());
        out
    });
    let timed_out = rx.recv_timeout(CLIENT_LIMIT).is_err();
    if timed_out {
        kill_group(pid, nix::libc::SIGKILL);
    }
    let out = waiter.join().expect("waiter thread").expect("wait for client");
    Run {
        status: (!timed_out).then_some(out.status),
        text: String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
        timed_out,
        secs: start.elapsed().as_secs_f64(),
    }
}

/// A background server in its own process group, logging to a file; stopped when dropped.
struct Daemon {
    name: String,
    child: Option<Child>,
    log: PathBuf,
}

impl Daemon {
    fn spawn(name: &str, cmd: &mut Command, log: PathBuf) -> Daemon {
        let file = fs::File::create(&log).expect("create server log");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("clone log handle"))
            .stderr(file)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name} ({cmd:?}): {e}"));
        Daemon {
            name: name.to_string(),
            child: Some(child),
            log,
        }
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `Some(status)` once it has exited.
    fn exited(&mut self) -> Option<ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().ok().flatten())
    }

    /// SIGTERM to the group; SIGKILL after [`SERVER_LIMIT`]. `None` when it had to be killed.
    fn stop(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        let pid = child.id();
        kill_group(pid, nix::libc::SIGTERM);
        let deadline = Instant::now() + SERVER_LIMIT;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                // In case a per-transfer child (in.tftpd forks) outlived it.
                kill_group(pid, nix::libc::SIGKILL);
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        kill_group(pid, nix::libc::SIGKILL);
        let _ = child.wait();
        None
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A UDP port free right now on `ip` (the server started on it may still lose a race: retried).
fn free_port(ip: IpAddr) -> u16 {
    let s = UdpSocket::bind((ip, 0)).expect("bind a probe socket");
    s.local_addr().expect("local addr").port()
}

/// Waits until `addr` answers a TFTP request (an RRQ of a missing file: any reply will do).
fn wait_answering(daemon: &mut Daemon, addr: SocketAddr) -> Result<(), String> {
    let sock = UdpSocket::bind((addr.ip(), 0)).expect("bind probe");
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .expect("probe timeout");
    let probe = b"\x00\x01interop-readiness-probe\x00octet\x00";
    let deadline = Instant::now() + SERVER_LIMIT;
    let mut buf = [0u8; 1024];
    while Instant::now() < deadline {
        if let Some(status) = daemon.exited() {
            return Err(format!("{} exited ({status}): {}", daemon.name, daemon.log()));
        }
        let _ = sock.send_to(probe, addr);
        if sock.recv_from(&mut buf).is_ok() {
            return Ok(());
        }
    }
    Err(format!(
        "{} does not answer on {addr}: {}",
        daemon.name,
        daemon.log()
    ))
}

// ---- files ------------------------------------------------------------------------------------

/// A scratch directory under the target dir; removed when the test passes, kept for a look
/// when it fails.
struct Scratch(PathBuf);

impl Scratch {
    fn new(test: &str) -> Scratch {
        let path =
            Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("interop-{test}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        for sub in ["root", "out", "logs"] {
            fs::create_dir_all(path.join(sub)).expect("create scratch dir");
            // dnsmasq serves world-readable files only; servers dropping privileges need access.
            fs::set_permissions(path.join(sub), fs::Permissions::from_mode(0o755)).expect("chmod");
        }
        Scratch(path)
    }

    fn root(&self) -> PathBuf {
        self.0.join("root")
    }

    fn out(&self) -> PathBuf {
        self.0.join("out")
    }

    fn logs(&self) -> PathBuf {
        self.0.join("logs")
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("interop: kept {} for inspection", self.0.display());
        } else {
            let _ = fs::remove_dir_all(&self.0);
        }
    }
}

/// Deterministic, incompressible content (a misplaced block shows).
fn content(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

/// A text file for netascii: LF and CR LF lines, bare CRs, NULs, lines of every length so the
/// conversions straddle block boundaries. No CR NUL in the file: dnsmasq's netascii encoder
/// does not escape a bare CR (RFC 1350 wants CR NUL), so such a file cannot round-trip with it.
fn text_content() -> Vec<u8> {
    let ends: [&[u8]; 5] = [b"\n", b"\r\n", b"\r", b"\n\n", b"\0\n"];
    let mut v = Vec::new();
    for i in 0..400usize {
        v.extend(std::iter::repeat_n(b'a' + (i % 26) as u8, i % 37));
        v.extend_from_slice(ends[i % ends.len()]);
    }
    // The one pair dnsmasq cannot carry (see above).
    for i in 1..v.len() {
        if v[i - 1] == b'\r' && v[i] == 0 {
            v[i] = b'\n';
        }
    }
    v
}

/// The netascii test file.
const TEXT: &str = "text.txt";

/// The test files, written world-readable into `root`; returns their contents by name.
fn write_files(root: &Path, big: bool) -> BTreeMap<&'static str, Vec<u8>> {
    let mut files = BTreeMap::new();
    let list = SMALL.iter().copied().chain(big.then_some(BIG));
    for (i, (name, size)) in list.enumerate() {
        let data = content(size, i as u64 + 1);
        let path = root.join(name);
        fs::write(&path, &data).expect("write test file");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).expect("chmod");
        files.insert(name, data);
    }
    let path = root.join(TEXT);
    fs::write(&path, text_content()).expect("write test file");
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).expect("chmod");
    files.insert(TEXT, text_content());
    files
}

/// Compares a transferred file with what it should hold.
fn same_file(path: &Path, want: &[u8]) -> Result<(), String> {
    let got = fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if got == want {
        return Ok(());
    }
    let at = got
        .iter()
        .zip(want)
        .position(|(a, b)| a != b)
        .unwrap_or(got.len().min(want.len()));
    Err(format!(
        "{}: {} bytes, want {}; first difference at offset {at}",
        path.display(),
        got.len(),
        want.len()
    ))
}

// ---- transfers --------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Dir {
    Get,
    Put,
}

/// What a client is told to request. `None` = option not sent.
#[derive(Clone, Copy, Default, Debug)]
struct Opts {
    blksize: Option<u16>,
    windowsize: Option<u16>,
    /// Ask for (RRQ) or announce (WRQ) the transfer size.
    tsize: bool,
    timeout: Option<u8>,
    /// curl: `--tftp-no-options` (curl otherwise always sends tsize, blksize 512, timeout 6).
    no_options: bool,
    /// Mode netascii (else octet).
    netascii: bool,
}

impl Opts {
    const NONE: Opts = Opts {
        blksize: None,
        windowsize: None,
        tsize: false,
        timeout: None,
        no_options: false,
        netascii: false,
    };

    fn blk(blksize: u16) -> Opts {
        Opts {
            blksize: Some(blksize),
            ..Opts::NONE
        }
    }

    fn win(blksize: u16, windowsize: u16) -> Opts {
        Opts {
            blksize: Some(blksize),
            windowsize: Some(windowsize),
            ..Opts::NONE
        }
    }

    fn tsize(self) -> Opts {
        Opts { tsize: true, ..self }
    }

    fn label(&self) -> String {
        let mut s = String::new();
        if self.netascii {
            s += "netascii ";
        }
        if self.no_options {
            s += "no-options ";
        }
        if let Some(b) = self.blksize {
            let _ = write!(s, "blksize={b} ");
        }
        if let Some(w) = self.windowsize {
            let _ = write!(s, "windowsize={w} ");
        }
        if self.tsize {
            s += "tsize ";
        }
        if let Some(t) = self.timeout {
            let _ = write!(s, "timeout={t} ");
        }
        if s.is_empty() {
            s += "default";
        }
        s.trim_end().to_string()
    }
}

/// The options a peer client actually sends with `o` (busybox and curl add their own).
fn sent_label(peer: Peer, o: Opts) -> String {
    match peer {
        Peer::Curl if o.no_options => "--tftp-no-options".to_string(),
        Peer::Curl => format!("tsize blksize={} timeout=6", o.blksize.unwrap_or(512)),
        Peer::Busybox => match o.blksize {
            Some(b) => format!("blksize={b} tsize"),
            None => "tsize".to_string(),
        },
        _ => o.label(),
    }
}

/// One option set of a matrix: `big` adds the 40 MiB file, `few` keeps only [`FEW`]. Netascii
/// option sets transfer the text file [`TEXT`] only.
#[derive(Clone, Copy, Debug)]
struct Cfg {
    opts: Opts,
    big: bool,
    few: bool,
}

fn cfg(opts: Opts) -> Cfg {
    Cfg {
        opts,
        big: false,
        few: false,
    }
}

/// Netascii mode, the text file.
fn netascii(opts: Opts) -> Cfg {
    cfg(Opts {
        netascii: true,
        ..opts
    })
}

fn big(opts: Opts) -> Cfg {
    Cfg {
        big: true,
        ..cfg(opts)
    }
}

/// With a negotiated `timeout` our client dallies min(4 × timeout, 5 s) after a download (see
/// tests/interop/README.md), so those option sets use fewer files.
fn few(opts: Opts) -> Cfg {
    Cfg {
        few: true,
        ..cfg(opts)
    }
}

/// tsize and timeout, no blksize.
fn tsize_timeout(secs: u8) -> Opts {
    Opts {
        timeout: Some(secs),
        ..Opts::NONE.tsize()
    }
}

/// blksize 512, 1468, 65464 × windowsize 1, 4, 16, 64.
fn option_grid() -> Vec<Cfg> {
    let mut v = Vec::new();
    for b in [512, 1468, 65464] {
        for w in [1, 4, 16, 64] {
            v.push(cfg(Opts::win(b, w)));
        }
    }
    v
}

/// `ip PORT` as the peer clients take it (bare IPv6 literal; curl wants a URL).
fn host(addr: SocketAddr) -> String {
    addr.ip().to_string()
}

/// A third-party client command.
fn peer_client(
    peer: Peer,
    prog: &Path,
    dir: Dir,
    addr: SocketAddr,
    remote: &str,
    local: &Path,
    o: Opts,
) -> Command {
    let mut c = Command::new(prog);
    let port = addr.port().to_string();
    match peer {
        Peer::TftpHpa => {
            assert!(
                o.blksize.is_none() && o.windowsize.is_none() && !o.tsize,
                "tftp-hpa sends no options"
            );
            // -m binary: the default mode is netascii.
            let mode = if o.netascii { "netascii" } else { "binary" };
            c.args([&host(addr), &port, "-m", mode, "-c"]);
            match dir {
                Dir::Get => c.arg("get").arg(remote).arg(local),
                Dir::Put => c.arg("put").arg(local).arg(remote),
            };
        }
        Peer::Atftp => {
            assert!(!o.netascii, "atftp: no mode on its command line");
            c.arg(if dir == Dir::Get { "--get" } else { "--put" });
            c.arg("-r").arg(remote).arg("-l").arg(local);
            // atftp sends only the options given; "tsize 0" (not "enable", sent literally).
            if o.tsize {
                c.args(["--option", "tsize 0"]);
            }
            if let Some(t) = o.timeout {
                c.args(["--option", &format!("timeout {t}")]);
            }
            if let Some(b) = o.blksize {
                c.args(["--option", &format!("blksize {b}")]);
            }
            if let Some(w) = o.windowsize {
                c.args(["--option", &format!("windowsize {w}")]);
            }
            c.args([&host(addr), &port]);
        }
        Peer::Busybox => {
            // Always sends tsize; -b N adds blksize; no windowsize or timeout.
            assert!(
                o.windowsize.is_none() && o.timeout.is_none(),
                "busybox tftp: blksize only"
            );
            assert!(!o.netascii, "busybox tftp: octet only");
            c.args(["tftp", if dir == Dir::Get { "-g" } else { "-p" }]);
            c.arg("-r").arg(remote).arg("-l").arg(local);
            if let Some(b) = o.blksize {
                c.args(["-b", &b.to_string()]);
            }
            c.args([&host(addr), &port]);
        }
        Peer::Curl => {
            // Sends tsize, blksize 512 and timeout 6 unless --tftp-no-options; no windowsize.
            // --max-time: without it curl hangs for minutes when the server goes away.
            assert!(
                o.windowsize.is_none() && o.timeout.is_none(),
                "curl: blksize only"
            );
            c.args(["-sS", "--max-time", &(CLIENT_LIMIT.as_secs() - 10).to_string()]);
            if o.no_options {
                c.arg("--tftp-no-options");
            }
            if let Some(b) = o.blksize {
                c.args(["--tftp-blksize", &b.to_string()]);
            }
            match dir {
                Dir::Get => c.arg("-o").arg(local),
                Dir::Put => c.arg("-T").arg(local),
            };
            c.arg(format!("tftp://{addr}/{remote}"));
        }
        _ => unreachable!("{peer:?} is a server"),
    }
    c
}

/// Whether a peer client run succeeded: tftp-hpa exits 0 on a server ERROR and on local file
/// errors, so its output decides.
fn peer_client_ok(peer: Peer, r: &Run) -> bool {
    r.success()
        && !(peer == Peer::TftpHpa
            && r.text.lines().any(|l| {
                l.starts_with("Error code") || l.starts_with("Transfer timed out") || l.starts_with("tftp: ")
            }))
}

/// Our client: `tftp-proto get|put [options] ADDR ...`.
fn our_client(dir: Dir, addr: SocketAddr, remote: &str, local: &Path, o: Opts) -> Command {
    let mut c = Command::new(BIN);
    c.arg(if dir == Dir::Get { "get" } else { "put" });
    if o.netascii {
        c.args(["--mode", "netascii"]);
    }
    if o.no_options {
        c.arg("--no-options");
    }
    if let Some(b) = o.blksize {
        c.args(["--blksize", &b.to_string()]);
    }
    if let Some(w) = o.windowsize {
        c.args(["--windowsize", &w.to_string()]);
    }
    if o.tsize {
        c.arg("--tsize");
    }
    if let Some(t) = o.timeout {
        c.args(["--timeout", &t.to_string()]);
    }
    c.arg(addr.to_string());
    match dir {
        Dir::Get => c.arg(remote).arg(local),
        Dir::Put => c.arg(local).arg(remote),
    };
    c
}

/// `tftp-proto: received N bytes in ..., blksize B, windowsize W` -> (N, B, W).
fn parse_summary(text: &str) -> Option<(u64, u16, u16)> {
    let line = text
        .lines()
        .find(|l| l.contains(" bytes in ") && l.contains("blksize"))?;
    let num_after = |key: &str| -> Option<u64> {
        let rest = &line[line.find(key)? + key.len()..];
        rest.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
    };
    let bytes = num_after("received ").or_else(|| num_after("sent "))?;
    Some((
        bytes,
        u16::try_from(num_after("blksize ")?).ok()?,
        u16::try_from(num_after("windowsize ")?).ok()?,
    ))
}

// ---- our server -------------------------------------------------------------------------------

/// `tftp-proto serve` on the OS-chosen ports of `ips`, read-write.
struct OurServer {
    daemon: Daemon,
    addrs: Vec<SocketAddr>,
}

/// One line of our server's transfer log.
#[derive(Debug, Clone)]
struct Report {
    dir: Dir,
    blksize: u16,
    windowsize: u16,
    bytes: u64,
    retransmissions: u64,
    spurious: u64,
    result: String,
}

impl OurServer {
    /// Our server with `extra` arguments (`--runtime tokio`).
    fn start(root: &Path, logs: &Path, ips: &[IpAddr], extra: &[&str]) -> OurServer {
        let mut cmd = Command::new(BIN);
        cmd.arg("serve").arg("--root").arg(root).args(extra);
        for ip in ips {
            cmd.args(["--bind", &SocketAddr::new(*ip, 0).to_string()]);
        }
        cmd.args(["--allow-write", "--allow-overwrite"]);
        let mut daemon = Daemon::spawn("tftp-proto serve", &mut cmd, logs.join("tftp-proto-serve.log"));
        let deadline = Instant::now() + SERVER_LIMIT;
        let line = loop {
            let log = daemon.log();
            if let Some(l) = log.lines().find(|l| l.starts_with("tftp-proto: serving ")) {
                break l.to_string();
            }
            if let Some(status) = daemon.exited() {
                panic!("tftp-proto serve exited ({status}): {log}");
            }
            assert!(
                Instant::now() < deadline,
                "tftp-proto serve printed no serving line: {log}"
            );
            std::thread::sleep(Duration::from_millis(10));
        };
        // `tftp-proto: serving ROOT on A, B (read-write)`
        let list = line.rsplit_once(" on ").map(|(_, r)| r).unwrap_or_default();
        let list = list.rsplit_once(" (").map_or(list, |(l, _)| l);
        let addrs: Vec<SocketAddr> = list
            .split(", ")
            .map(|a| {
                a.parse()
                    .unwrap_or_else(|e| panic!("address {a:?} in {line:?}: {e}"))
            })
            .collect();
        assert_eq!(addrs.len(), ips.len(), "{line}");
        OurServer { daemon, addrs }
    }

    fn addr(&self, ip: IpAddr) -> SocketAddr {
        *self
            .addrs
            .iter()
            .find(|a| a.ip() == ip)
            .expect("bound on that address")
    }

    /// Waits (bounded) until a transfer of each of `names` is in the log.
    fn wait_logged(&self, names: &[&str]) {
        let deadline = Instant::now() + SERVER_LIMIT;
        while Instant::now() < deadline {
            let log = self.daemon.log();
            if names.iter().all(|n| log.contains(&format!(" \"{n}\" "))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops it (SIGTERM: a clean exit is asserted) and returns its transfer log by file name.
    fn stop(mut self) -> BTreeMap<String, Report> {
        let status = self.daemon.stop();
        let log = self.daemon.log();
        assert!(
            status.is_some_and(|s| s.success()),
            "tftp-proto serve did not exit cleanly on SIGTERM ({status:?}): {log}"
        );
        let mut reports = BTreeMap::new();
        // `PEER read|write "NAME" blksize=B windowsize=W bytes=N time=Ts retransmissions=R
        // spurious=S asked=OPTIONS RESULT` (refusals, `PEER refused ...`, are skipped)
        for line in log.lines() {
            let t: Vec<&str> = line.split_whitespace().collect();
            if t.len() < 11 || !(t[1] == "read" || t[1] == "write") {
                continue;
            }
            let field = |i: usize, key: &str| -> u64 {
                t[i].strip_prefix(key)
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_else(|| panic!("field {key} in {line:?}"))
            };
            reports.insert(
                t[2].trim_matches('"').to_string(),
                Report {
                    dir: if t[1] == "read" { Dir::Get } else { Dir::Put },
                    blksize: field(3, "blksize=") as u16,
                    windowsize: field(4, "windowsize=") as u16,
                    bytes: field(5, "bytes="),
                    retransmissions: field(7, "retransmissions="),
                    spurious: field(8, "spurious="),
                    result: t[10..].join(" "),
                },
            );
        }
        reports
    }
}

// ---- peer servers -----------------------------------------------------------------------------

/// A third-party server on `ip` (tftpd-hpa and atftpd on a free port, dnsmasq on 69).
fn start_peer_server(peer: Peer, prog: &Path, root: &Path, logs: &Path, ip: IpAddr) -> (Daemon, SocketAddr) {
    let ip = if peer == Peer::Dnsmasq {
        port_69_address(ip)
    } else {
        ip
    };
    let mut last = String::new();
    for _attempt in 0..5 {
        let port = if peer == Peer::Dnsmasq { 69 } else { free_port(ip) };
        let addr = SocketAddr::new(ip, port);
        let mut cmd = Command::new(prog);
        match peer {
            // -L foreground; -s chroot to root (bare names); -c uploads may create files;
            // -p no extra permission checks; -u root no privilege drop; -U 022 umask.
            Peer::TftpdHpa => cmd
                .args([
                    "-L",
                    "-a",
                    &addr.to_string(),
                    "-s",
                    "-c",
                    "-p",
                    "-u",
                    "root",
                    "-U",
                    "022",
                    "-v",
                ])
                .arg(root),
            // IPv4 only. Foreground, log to stdout, no privilege drop.
            Peer::Atftpd => cmd
                .args([
                    "--daemon",
                    "--no-fork",
                    "--port",
                    &port.to_string(),
                    "--bind-address",
                ])
                .arg(ip.to_string())
                .args([
                    "--logfile",
                    "-",
                    "--verbose=5",
                    "--user",
                    "root",
                    "--group",
                    "root",
                ])
                .arg(root),
            // No DNS, no config file, foreground, log to stderr; --edns-packet-max lifts its
            // default blksize cap (2263) to 65464. Read-only.
            Peer::Dnsmasq => cmd
                .args(["-k", "-C", "/dev/null", "--port=0", "--enable-tftp"])
                .arg(format!("--tftp-root={}", root.display()))
                .arg(format!("--listen-address={ip}"))
                .args(["--bind-interfaces", "--user=root", "--group=root", "--pid-file="])
                .args(["--log-facility=-", "--edns-packet-max=65535"]),
            _ => unreachable!("{peer:?} is a client"),
        };
        let log = logs.join(format!("{}-{port}.log", peer.program_name()));
        let mut daemon = Daemon::spawn(peer.name(), &mut cmd, log);
        match wait_answering(&mut daemon, addr) {
            Ok(()) => return (daemon, addr),
            Err(e) => last = e,
        }
        if peer == Peer::Dnsmasq {
            break;
        }
    }
    panic!("cannot start {}: {last}", peer.name());
}

/// A loopback address whose port 69 is free, for dnsmasq: `ip`, or for IPv4 another 127/8
/// address when something else (another test run's dnsmasq, a system tftpd) holds 127.0.0.1:69.
/// dnsmasq binds with SO_REUSEADDR, so it would start anyway and share the port with the other
/// server, which would then answer some of our requests.
fn port_69_address(ip: IpAddr) -> IpAddr {
    let candidates: Vec<IpAddr> = match ip {
        IpAddr::V4(_) => (1..=20)
            .map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 0, i)))
            .collect(),
        IpAddr::V6(_) => vec![ip],
    };
    for &candidate in &candidates {
        if UdpSocket::bind((candidate, 69)).is_ok() {
            return candidate;
        }
    }
    panic!("port 69 is in use on {candidates:?} (another TFTP server?): dnsmasq cannot be tested");
}

// ---- the matrix -------------------------------------------------------------------------------

/// What a cell must show.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    /// The transfer succeeds, the file is identical, and these were negotiated.
    Ok { blksize: u16, windowsize: u16 },
    /// curl 7.88 rejects an OACK with `tsize 0`: a GET of an empty file with options fails,
    /// exit 71 ("invalid tsize -:0:- value in OACK packet"; curl's bug, any server).
    CurlEmptyFileBug,
    /// dnsmasq is read-only: ERROR 4 to a WRQ, which our client reports, exiting non-zero.
    ReadOnly,
}

impl Expect {
    fn label(self) -> &'static str {
        match self {
            Expect::Ok { .. } => "ok",
            Expect::CurlEmptyFileBug => "curl-bug",
            Expect::ReadOnly => "read-only",
        }
    }
}

/// One transfer of a matrix.
struct Row {
    what: String,
    expect: Expect,
    secs: f64,
    /// `Ok(note)` or `Err(why)`.
    result: Result<String, String>,
}

/// The results of one test, printed and saved as a table; failures fail the test at the end.
struct Matrix {
    test: String,
    /// Lines printed above the rows (the servers' addresses).
    header: Vec<String>,
    rows: Vec<Row>,
    start: Instant,
}

impl Matrix {
    fn new(test: &str) -> Matrix {
        Matrix {
            test: test.to_string(),
            header: Vec::new(),
            rows: Vec::new(),
            start: Instant::now(),
        }
    }

    /// Records a cell; returns its index.
    fn record(&mut self, what: String, expect: Expect, secs: f64, result: Result<String, String>) -> usize {
        self.rows.push(Row {
            what,
            expect,
            secs,
            result,
        });
        self.rows.len() - 1
    }

    /// Fails a recorded cell after the fact (our server's log is read at the end).
    fn fail(&mut self, row: usize, why: String) {
        self.rows[row].result = Err(why);
    }

    /// Adds a remark to a passed cell.
    fn note(&mut self, row: usize, remark: String) {
        if let Ok(note) = &mut self.rows[row].result {
            if !note.is_empty() {
                note.push_str("; ");
            }
            note.push_str(&remark);
        }
    }

    fn finish(self) {
        let failed: Vec<&Row> = self.rows.iter().filter(|r| r.result.is_err()).collect();
        let line = |r: &Row| {
            let (verdict, detail) = match &r.result {
                Ok(d) => ("PASS", d),
                Err(d) => ("FAIL", d),
            };
            format!(
                "{verdict} {:<62} expect={:<9} {:6.2}s  {detail}",
                r.what,
                r.expect.label(),
                r.secs
            )
        };
        let mut text = format!(
            "== interop {}: {} transfers, {} failed, {:.1}s\n",
            self.test,
            self.rows.len(),
            failed.len(),
            self.start.elapsed().as_secs_f64()
        );
        for h in &self.header {
            text += h;
            text.push('\n');
        }
        for r in &self.rows {
            text += &line(r);
            text.push('\n');
        }
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("interop-results");
        let _ = fs::create_dir_all(&dir);
        let _ = fs::write(dir.join(format!("{}.txt", self.test)), &text);
        eprintln!("{text}");
        assert!(
            failed.is_empty(),
            "interop {}: {} of {} transfers failed:\n{}",
            self.test,
            failed.len(),
            self.rows.len(),
            failed.iter().map(|r| line(r)).collect::<Vec<_>>().join("\n")
        );
    }
}

fn family(ip: IpAddr) -> &'static str {
    if ip.is_ipv4() {
        "v4"
    } else {
        "v6"
    }
}

fn arrow(dir: Dir) -> &'static str {
    match dir {
        Dir::Get => "GET <-",
        Dir::Put => "PUT ->",
    }
}

/// The files of a configuration.
fn files_of(cfg: &Cfg) -> Vec<&'static str> {
    if cfg.opts.netascii {
        return vec![TEXT];
    }
    let mut v: Vec<_> = SMALL
        .iter()
        .map(|&(name, _)| name)
        .filter(|name| !cfg.few || FEW.contains(name))
        .collect();
    if cfg.big {
        v.push(BIG.0);
    }
    v
}

/// Whether big test files are in the plan.
fn has_big(plan: &[(IpAddr, Vec<Cfg>)]) -> bool {
    plan.iter().any(|(_, cfgs)| cfgs.iter().any(|c| c.big))
}

/// Frees the disk space of a 40 MiB result.
fn discard_if_big(path: &Path, size: usize) {
    if size == BIG.1 {
        let _ = fs::remove_file(path);
    }
}

/// Our server with one third-party client: every cfg × file, GET and PUT, on every family.
/// Checks the client's result and file, then (after stopping the server) our server's log line
/// of each transfer: result, size and the blksize/windowsize negotiated.
fn our_server_with(test: &str, client: Peer, plan: &[(IpAddr, Vec<Cfg>)]) {
    our_server_with_args(test, client, plan, &[]);
}

/// [`our_server_with`], our server started with `extra` arguments.
fn our_server_with_args(test: &str, client: Peer, plan: &[(IpAddr, Vec<Cfg>)], extra: &[&str]) {
    let Some(prog) = program(client) else { return };
    let plan = &usable(plan);
    let ips: Vec<IpAddr> = plan.iter().map(|(ip, _)| *ip).collect();
    let scratch = Scratch::new(test);
    let (root, out) = (scratch.root(), scratch.out());
    let files = write_files(&root, has_big(plan));
    let server = OurServer::start(&root, &scratch.logs(), &ips, extra);
    let mut m = Matrix::new(test);
    m.header.push(format!("tftp-proto serve on {:?}", server.addrs));
    // Our server's log line each passed cell must have: (row, remote name, direction, size, expect).
    let mut to_check = Vec::new();
    let mut id = 0;
    for (ip, cfgs) in plan {
        let addr = server.addr(*ip);
        for cfg in cfgs {
            let o = cfg.opts;
            for file in files_of(cfg) {
                let size = files[file].len();
                for dir in [Dir::Get, Dir::Put] {
                    id += 1;
                    let expect = if client == Peer::Curl && dir == Dir::Get && size == 0 && !o.no_options {
                        Expect::CurlEmptyFileBug
                    } else {
                        Expect::Ok {
                            // curl sends blksize 512 when given no --tftp-blksize.
                            blksize: o.blksize.unwrap_or(512),
                            windowsize: o.windowsize.unwrap_or(1),
                        }
                    };
                    let what = format!(
                        "{} {} ours {} {file:<5} [{}]",
                        client.name(),
                        arrow(dir),
                        family(*ip),
                        sent_label(client, o)
                    );
                    // Names unique per cell, to find our server's log line of each transfer.
                    let (remote, local, result) = match dir {
                        Dir::Get => {
                            let remote = format!("g{id}-{file}");
                            fs::hard_link(root.join(file), root.join(&remote)).expect("link test file");
                            let local = out.join(&remote);
                            (remote, local.clone(), local)
                        }
                        Dir::Put => {
                            let remote = format!("p{id}-{file}");
                            (remote.clone(), root.join(file), root.join(&remote))
                        }
                    };
                    let r = run(&mut peer_client(client, &prog, dir, addr, &remote, &local, o));
                    let verdict = match expect {
                        Expect::Ok { .. } if peer_client_ok(client, &r) => {
                            // Our server commits an upload before its final ACK: no grace.
                            same_file(&result, &files[file]).map(|()| String::new())
                        }
                        Expect::Ok { .. } => Err(r.describe()),
                        Expect::CurlEmptyFileBug if r.code() == Some(71) => {
                            Ok("curl exit 71 as documented".into())
                        }
                        Expect::CurlEmptyFileBug => Err(format!("expected curl's exit 71: {}", r.describe())),
                        Expect::ReadOnly => unreachable!("our server accepts uploads"),
                    };
                    let passed = verdict.is_ok();
                    let row = m.record(what, expect, r.secs, verdict);
                    if passed && matches!(expect, Expect::Ok { .. }) {
                        to_check.push((row, remote, dir, (!o.netascii).then_some(size), expect));
                    }
                    discard_if_big(&result, size);
                }
            }
        }
    }
    // The last transfers' final ACKs may still be on their way: SIGTERM would abort them.
    let names: Vec<&str> = to_check.iter().map(|c| c.1.as_str()).collect();
    server.wait_logged(&names);
    let reports = server.stop();
    for (row, name, dir, size, expect) in to_check {
        let Expect::Ok { blksize, windowsize } = expect else {
            continue;
        };
        match reports.get(&name) {
            None => m.fail(row, format!("our server logged no transfer of {name:?}")),
            // Netascii: the log counts bytes on the wire.
            Some(r) if r.dir != dir || r.result != "ok" || size.is_some_and(|n| r.bytes != n as u64) => {
                m.fail(row, format!("our server logged {r:?}"));
            }
            Some(r) if (r.blksize, r.windowsize) != (blksize, windowsize) => m.fail(
                row,
                format!(
                    "our server negotiated blksize {} windowsize {}, want {blksize} / {windowsize}",
                    r.blksize, r.windowsize
                ),
            ),
            Some(r) if r.retransmissions > 0 => {
                m.note(
                    row,
                    format!(
                        "our server retransmitted {} times ({} spurious)",
                        r.retransmissions, r.spurious
                    ),
                );
            }
            Some(_) => {}
        }
    }
    m.finish();
}

/// Checks a download or upload our client made: exit status, file, summary line.
/// Netascii: the summary counts bytes on the wire, not checked.
fn check_our_client(
    r: &Run,
    result: &Path,
    want: &[u8],
    o: Opts,
    blksize: u16,
    windowsize: u16,
) -> Result<String, String> {
    if !r.success() {
        return Err(r.describe());
    }
    // atftpd acknowledges the final DATA of an upload before it closes the file: the file can
    // look short for a moment after our client is done (the note says when it did).
    let mut note = String::new();
    let start = Instant::now();
    while let Err(e) = same_file(result, want) {
        if start.elapsed() > Duration::from_secs(5) {
            return Err(e);
        }
        note = format!(
            "file complete {} ms after the client finished",
            start.elapsed().as_millis() + 20
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let bytes = want.len() as u64;
    match parse_summary(&r.text) {
        Some((n, b, w)) if (n == bytes || o.netascii) && (b, w) == (blksize, windowsize) => Ok(note),
        Some((n, b, w)) => Err(format!(
            "our client: {n} bytes, blksize {b}, windowsize {w}; want {} / {blksize} / {windowsize}",
            want.len()
        )),
        None => Err(format!("our client printed no summary: {}", r.tail())),
    }
}

/// Checks our client's upload to a read-only server: exit 1, the server's ERROR 4 in the message.
fn check_refused_upload(r: &Run, result: &Path) -> Result<String, String> {
    // dnsmasq: ERROR 4 "unsupported request from <ip>".
    let said = r.text.contains("tftp-proto: error:")
        && r.text.contains("peer error 4")
        && r.text.contains("unsupported request");
    if r.code() == Some(1) && said && !result.exists() {
        Ok(format!("refused: {}", r.tail()))
    } else {
        Err(format!(
            "expected exit 1 with dnsmasq's ERROR 4: {}",
            r.describe()
        ))
    }
}

/// Our client with one third-party server: every cfg × file, GET and PUT, on every family.
fn our_client_with(test: &str, server: Peer, plan: &[(IpAddr, Vec<Cfg>)]) {
    our_client_with_args(test, server, plan, &[]);
}

/// [`our_client_with`], our client run with `extra` arguments.
fn our_client_with_args(test: &str, server: Peer, plan: &[(IpAddr, Vec<Cfg>)], extra: &[&str]) {
    let Some(prog) = program(server) else { return };
    let plan = &usable(plan);
    let scratch = Scratch::new(test);
    let (root, out) = (scratch.root(), scratch.out());
    let files = write_files(&root, has_big(plan));
    let mut m = Matrix::new(test);
    let mut id = 0;
    for (ip, cfgs) in plan {
        let (mut daemon, addr) = start_peer_server(server, &prog, &root, &scratch.logs(), *ip);
        m.header.push(format!("{} serving on {addr}", server.name()));
        for cfg in cfgs {
            let o = cfg.opts;
            for file in files_of(cfg) {
                let size = files[file].len();
                for dir in [Dir::Get, Dir::Put] {
                    id += 1;
                    let read_only = server == Peer::Dnsmasq && dir == Dir::Put;
                    if read_only && file != "f513" {
                        continue; // one refused upload per option set is enough
                    }
                    // Servers without RFC 7440 ignore windowsize: lockstep.
                    let windowsize = if server.server_windowsize() {
                        o.windowsize.unwrap_or(1)
                    } else {
                        1
                    };
                    let expect = if read_only {
                        Expect::ReadOnly
                    } else {
                        Expect::Ok {
                            blksize: o.blksize.unwrap_or(512),
                            windowsize,
                        }
                    };
                    let what = format!(
                        "ours {} {} {} {file:<5} [{}]",
                        arrow(dir),
                        server.name(),
                        family(*ip),
                        o.label()
                    );
                    let (remote, local, result) = match dir {
                        Dir::Get => (
                            file.to_string(),
                            out.join(format!("g{id}-{file}")),
                            out.join(format!("g{id}-{file}")),
                        ),
                        Dir::Put => {
                            let remote = format!("p{id}-{file}");
                            (remote.clone(), root.join(file), root.join(&remote))
                        }
                    };
                    let r = run(our_client(dir, addr, &remote, &local, o).args(extra));
                    let verdict = match expect {
                        Expect::Ok { blksize, windowsize } => {
                            check_our_client(&r, &result, &files[file], o, blksize, windowsize)
                        }
                        Expect::ReadOnly => check_refused_upload(&r, &result),
                        Expect::CurlEmptyFileBug => unreachable!("not a server's"),
                    };
                    m.record(what, expect, r.secs, verdict);
                    discard_if_big(&result, size);
                }
            }
        }
        if let Some(status) = daemon.exited() {
            panic!(
                "{} died during the test ({status}): {}",
                server.name(),
                daemon.log()
            );
        }
        daemon.stop();
    }
    // Whatever happened, a download leaves no temporary file behind.
    let leftovers: Vec<String> = fs::read_dir(&out)
        .expect("list out dir")
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(
        leftovers.is_empty(),
        "temporary files left by our client: {leftovers:?}"
    );
    m.finish();
}

// ---- our server with their clients ------------------------------------------------------------

/// tftp-hpa's client sends no options at all: lockstep, blksize 512. Octet and netascii.
#[test]
fn our_server_with_tftp_hpa_client() {
    our_server_with(
        "our_server_with_tftp_hpa_client",
        Peer::TftpHpa,
        &[
            (V4, vec![big(Opts::NONE), netascii(Opts::NONE)]),
            (V6, vec![cfg(Opts::NONE), netascii(Opts::NONE)]),
        ],
    );
}

/// atftp: every blksize × windowsize (RFC 7440), tsize and timeout; IPv6.
#[test]
fn our_server_with_atftp_client() {
    let mut v4 = vec![big(Opts::NONE), cfg(tsize_timeout(2))];
    v4.extend(option_grid());
    v4.push(big(Opts::win(512, 16)));
    our_server_with(
        "our_server_with_atftp_client",
        Peer::Atftp,
        &[
            (V4, v4),
            (V6, vec![cfg(Opts::NONE), cfg(Opts::win(1468, 16).tsize())]),
        ],
    );
}

/// busybox tftp always sends tsize; `-b` adds blksize; no windowsize.
#[test]
fn our_server_with_busybox_client() {
    let blk = |b| cfg(Opts::blk(b).tsize());
    our_server_with(
        "our_server_with_busybox_client",
        Peer::Busybox,
        &[
            (V4, vec![big(Opts::NONE.tsize()), blk(512), blk(1468), blk(65464)]),
            (V6, vec![cfg(Opts::NONE.tsize()), blk(1468)]),
        ],
    );
}

/// curl: `--tftp-no-options`, its default options (tsize, blksize 512, timeout 6) and
/// `--tftp-blksize`; no windowsize. A GET of an empty file with options hits curl's tsize-0 bug.
#[test]
fn our_server_with_curl_client() {
    let no_options = Opts {
        no_options: true,
        ..Opts::NONE
    };
    // No flag: curl's own default options (tsize, blksize 512, timeout 6).
    let curl_default = Opts::NONE;
    let blk = |b| cfg(Opts::blk(b).tsize());
    our_server_with(
        "our_server_with_curl_client",
        Peer::Curl,
        &[
            (
                V4,
                vec![cfg(no_options), big(curl_default), blk(1468), blk(65464)],
            ),
            (V6, vec![cfg(no_options), blk(1468)]),
        ],
    );
}

/// Single-port mode (`serve --single-port`, the mode of the embassy-net server and of dnsmasq's
/// `--tftp-single-port`): every transfer answers from port the requests arrive at, and each
/// client still locks on to it as the server's transfer ID. Every peer client, lock-step and
/// windowed, IPv4 and IPv6.
#[test]
fn our_single_port_server_with_every_peer_client() {
    let single = ["--single-port"];
    our_server_with_args(
        "our_single_port_server_with_tftp_hpa_client",
        Peer::TftpHpa,
        &[
            (V4, vec![cfg(Opts::NONE), netascii(Opts::NONE)]),
            (V6, vec![cfg(Opts::NONE)]),
        ],
        &single,
    );
    our_server_with_args(
        "our_single_port_server_with_atftp_client",
        Peer::Atftp,
        &[
            (V4, vec![cfg(Opts::NONE), cfg(Opts::win(1468, 16).tsize())]),
            (V6, vec![cfg(Opts::win(1468, 4))]),
        ],
        &single,
    );
    our_server_with_args(
        "our_single_port_server_with_busybox_client",
        Peer::Busybox,
        &[(V4, vec![cfg(Opts::blk(1468).tsize())])],
        &single,
    );
    let no_options = Opts {
        no_options: true,
        ..Opts::NONE
    };
    our_server_with_args(
        "our_single_port_server_with_curl_client",
        Peer::Curl,
        &[(V4, vec![cfg(no_options), cfg(Opts::blk(1468).tsize())])],
        &single,
    );
}

// ---- our client with their servers ------------------------------------------------------------

/// tftpd-hpa negotiates blksize, tsize and timeout, ignores windowsize (lockstep); IPv4 + IPv6.
#[test]
fn our_client_with_tftpd_hpa_server() {
    let v4 = vec![
        big(Opts::NONE),
        few(tsize_timeout(2)),
        cfg(Opts::blk(512)),
        cfg(Opts::blk(1468).tsize()),
        cfg(Opts::blk(65464)),
        cfg(Opts::win(1468, 16)),
        cfg(Opts::win(65464, 64).tsize()),
        netascii(Opts::NONE),
        netascii(Opts::blk(1468)),
    ];
    our_client_with(
        "our_client_with_tftpd_hpa_server",
        Peer::TftpdHpa,
        &[
            (V4, v4),
            (
                V6,
                vec![
                    cfg(Opts::NONE),
                    cfg(Opts::blk(1468).tsize()),
                    cfg(Opts::win(65464, 16)),
                ],
            ),
        ],
    );
}

/// atftpd: every blksize × windowsize (it negotiates RFC 7440), tsize and timeout. IPv4 only
/// (0.8.0 has no IPv6: `--bind-address ::1` silently binds 0.0.0.0).
#[test]
fn our_client_with_atftpd_server() {
    let mut v4 = vec![big(Opts::NONE), few(tsize_timeout(2))];
    v4.extend(option_grid());
    v4.push(big(Opts::win(512, 16)));
    v4.push(netascii(Opts::NONE));
    v4.push(netascii(Opts::win(512, 4)));
    our_client_with("our_client_with_atftpd_server", Peer::Atftpd, &[(V4, v4)]);
}

/// dnsmasq (port 69, so root): downloads with blksize (its cap lifted by --edns-packet-max),
/// tsize; windowsize and timeout ignored. Read-only: uploads get ERROR 4. IPv4 + IPv6.
#[test]
fn our_client_with_dnsmasq_server() {
    if !is_root() {
        if required() {
            panic!("dnsmasq serves TFTP on port 69 only: this test must run as root under CI");
        }
        eprintln!("\n!!!!! SKIPPED: dnsmasq needs root (it serves TFTP on port 69 only)\n");
        return;
    }
    let _port69 = PORT_69.lock().unwrap_or_else(|e| e.into_inner());
    let v4 = vec![
        big(Opts::NONE),
        cfg(tsize_timeout(2)),
        cfg(Opts::blk(512)),
        cfg(Opts::blk(1468).tsize()),
        cfg(Opts::blk(65464)),
        cfg(Opts::win(1468, 16)),
        netascii(Opts::NONE),
    ];
    our_client_with(
        "our_client_with_dnsmasq_server",
        Peer::Dnsmasq,
        &[
            (V4, v4),
            (V6, vec![cfg(Opts::NONE), cfg(Opts::win(1468, 4).tsize())]),
        ],
    );
}

// ---- the tokio adapter (`--runtime tokio`) ------------------------------------------------------

/// The tokio server (`serve --runtime tokio`) with tftp-hpa's client (no options) and atftp's
/// (every blksize × windowsize), IPv4 and IPv6 where the client has it.
#[cfg(feature = "tokio")]
#[test]
fn our_tokio_server_with_tftp_hpa_and_atftp_clients() {
    our_server_with_args(
        "our_tokio_server_with_tftp_hpa_client",
        Peer::TftpHpa,
        &[
            (V4, vec![big(Opts::NONE), netascii(Opts::NONE)]),
            (V6, vec![cfg(Opts::NONE)]),
        ],
        &["--runtime", "tokio"],
    );
    let mut v4 = vec![big(Opts::NONE), few(tsize_timeout(2))];
    v4.extend(option_grid());
    our_server_with_args(
        "our_tokio_server_with_atftp_client",
        Peer::Atftp,
        &[(V4, v4)],
        &["--runtime", "tokio"],
    );
}

/// The tokio client (`get`/`put --runtime tokio`) with tftpd-hpa (IPv4 and IPv6) and atftpd
/// (every blksize × windowsize).
#[cfg(feature = "tokio")]
#[test]
fn our_tokio_client_with_tftpd_hpa_and_atftpd_servers() {
    our_client_with_args(
        "our_tokio_client_with_tftpd_hpa_server",
        Peer::TftpdHpa,
        &[
            (
                V4,
                vec![
                    big(Opts::NONE),
                    cfg(Opts::blk(1468).tsize()),
                    cfg(Opts::win(65464, 64).tsize()),
                    netascii(Opts::NONE),
                ],
            ),
            (V6, vec![cfg(Opts::blk(1468).tsize())]),
        ],
        &["--runtime", "tokio"],
    );
    let mut v4 = vec![big(Opts::NONE), few(tsize_timeout(2))];
    v4.extend(option_grid());
    our_client_with_args(
        "our_tokio_client_with_atftpd_server",
        Peer::Atftpd,
        &[(V4, v4)],
        &["--runtime", "tokio"],
    );
}
