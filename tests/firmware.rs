//! Real firmware boots from `tftp-proto serve` under QEMU: iPXE (BIOS and UEFI), U-Boot, and
//! UEFI's own PXE client, each checked by what the firmware itself prints on its serial console,
//! and each run the same way against tftpd-hpa, so a failure can be told apart from a harness
//! problem.
//!
//! Every boot gets its own network: a fresh network namespace holding a tap device
//! (192.168.77.1/24) that QEMU's NIC is plugged into, a DHCP server there (dnsmasq with DNS and
//! TFTP off) naming 192.168.77.1 as next-server and the boot file, and the TFTP server under test
//! on port 69 of that address. Nothing leaves the namespace, and everything (QEMU, dnsmasq, the
//! server, the namespace and its tap) is torn down when the boot ends, also on failure. QEMU runs
//! without KVM (TCG); every boot is bounded in time ([`BOOT_LIMIT`]), and boots run one at a time
//! ([`ONE_AT_A_TIME`]) so that they do not starve each other of the machine's two CPUs.
//!
//! | test | firmware | checked on the console |
//! |---|---|---|
//! | `ipxe_bios_*` | SeaBIOS + iPXE ROM (`ipxe-qemu`), e1000 | the script ran; `imgstat` shows the 32 MiB image's exact size |
//! | `ipxe_uefi_*` | OVMF + iPXE EFI ROM, e1000 | the same |
//! | `uboot_*` | U-Boot `qemu-x86_64` (`u-boot-qemu`), e1000 | `dhcp`; `tftpboot` with the default block size, `tftpblocksize 1468` and `tftpwindowsize 8`; each `crc32` equal to the file's |
//! | `uefi_pxe_*` | OVMF's own network stack (virtio-net, no option ROM) | its PXE client downloads `ipxe.efi` (after its `tsize` probe) and iPXE's banner appears |
//!
//! Needs root (network namespaces and tap devices) and Debian's `qemu-system-x86`, `ipxe-qemu`,
//! `u-boot-qemu`, `ovmf`, `ipxe`, `dnsmasq-base` and `tftpd-hpa`
//! (`bash tests/interop/peers.sh firmware_install`). Under CI (`CI` set) or with
//! `TFTP_FIRMWARE_REQUIRED=1` anything missing fails the test; otherwise it prints a loud
//! `SKIPPED` and passes. The serial console of every boot and the servers' logs are kept under
//! `target/tmp/firmware/`.
#![cfg(all(feature = "cli", target_os = "linux"))]

use std::fs;
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_tftp-proto");

/// Longest one boot may take, from QEMU's start to the last thing checked.
const BOOT_LIMIT: Duration = Duration::from_secs(300);

/// One boot at a time: TCG emulation is CPU-bound.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// The tap device's address in every namespace: the DHCP server, next-server and TFTP server.
const HOST_IP: &str = "192.168.77.1";

/// The image every firmware fetches: 32 MiB.
const IMAGE_LEN: usize = 32 << 20;

const QEMU: &str = "qemu-system-x86_64";
const UBOOT_ROM: &str = "/usr/lib/u-boot/qemu-x86_64/u-boot.rom";
const OVMF: &str = "/usr/share/ovmf/OVMF.fd";
const IPXE_EFI: &str = "/usr/lib/ipxe/ipxe.efi";
const IPXE_ROMS: &[&str] = &[
    "/usr/lib/ipxe/qemu/pxe-e1000.rom",
    "/usr/lib/ipxe/qemu/efi-e1000.rom",
];

// ---- prerequisites ----------------------------------------------------------------------------

fn required() -> bool {
    let set = |v: &str| std::env::var(v).is_ok_and(|s| !s.is_empty() && s != "0" && s != "false");
    set("CI") || set("TFTP_FIRMWARE_REQUIRED")
}

fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default() + ":/usr/sbin:/sbin";
    path.split(':')
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// What this machine lacks for the firmware tests (empty when nothing).
fn missing() -> Vec<String> {
    let mut out = Vec::new();
    if !is_root() {
        out.push("root (network namespaces and tap devices)".to_string());
    }
    for prog in [QEMU, "dnsmasq", "in.tftpd", "ip"] {
        if which(prog).is_none() {
            out.push(prog.to_string());
        }
    }
    for file in [UBOOT_ROM, OVMF, IPXE_EFI].iter().chain(IPXE_ROMS) {
        if !Path::new(file).is_file() {
            out.push((*file).to_string());
        }
    }
    out
}

/// Whether the test can run: panics under CI when something is missing, else says so loudly.
fn ready(test: &str) -> bool {
    let missing = missing();
    if missing.is_empty() {
        return true;
    }
    let msg = format!(
        "{test}: missing {} (bash tests/interop/peers.sh firmware_install, as root)",
        missing.join(", ")
    );
    if required() {
        panic!("firmware: {msg} (a failure under CI / TFTP_FIRMWARE_REQUIRED)");
    }
    eprintln!("!!!!! SKIPPED: {msg}");
    false
}

// ---- files ------------------------------------------------------------------------------------

/// Deterministic bytes (xorshift): every block differs.
fn content(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// CRC-32 (IEEE, reflected), as U-Boot's `crc32` command computes it.
fn crc32(data: &[u8]) -> u32 {
    let mut table = [0u32; 256];
    for (i, t) in table.iter_mut().enumerate() {
        let mut c = i as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
        *t = c;
    }
    !data.iter().fold(!0u32, |c, &b| {
        table[((c ^ u32::from(b)) & 0xFF) as usize] ^ (c >> 8)
    })
}

/// A directory under `target/tmp/firmware/`, emptied first; kept afterwards for its logs.
fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("firmware").join(name);
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

// ---- processes --------------------------------------------------------------------------------

/// Sends SIGKILL to the process group `pgid`.
fn kill_group(pgid: u32) {
    if let Ok(pgid) = i32::try_from(pgid) {
        // SAFETY: kill has no memory-safety preconditions; a negative pid names a process group.
        unsafe {
            nix::libc::kill(-pgid, nix::libc::SIGKILL);
        }
    }
}

/// A process in its own group, killed with its group when dropped.
struct Proc {
    child: Child,
    /// Where its output goes (quoted when it dies early).
    log: PathBuf,
}

impl Proc {
    fn spawn(cmd: &mut Command, log: &Path) -> Proc {
        let file = fs::File::create(log).expect("create log");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log handle"))
            .stderr(file)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
        Proc {
            child,
            log: log.to_path_buf(),
        }
    }

    /// The end of its log.
    fn log_tail(&self) -> String {
        let log = fs::read_to_string(&self.log).unwrap_or_default();
        log.lines()
            .rev()
            .take(15)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn exited(&mut self) -> bool {
        self.child.try_wait().ok().flatten().is_some()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        kill_group(self.child.id());
        let _ = self.child.wait();
    }
}

// ---- the network ------------------------------------------------------------------------------

/// A network namespace with a tap device `tap0` at [`HOST_IP`]; deleted (with the tap) on drop.
struct Netns {
    name: String,
}

impl Netns {
    fn new() -> Netns {
        static N: AtomicUsize = AtomicUsize::new(0);
        let name = format!("tpfw-{}-{}", std::process::id(), N.fetch_add(1, Ordering::SeqCst));
        let ns = Netns { name };
        ns.ip(&["netns", "add", &ns.name]);
        for args in [
            &["link", "set", "lo", "up"][..],
            &["tuntap", "add", "dev", "tap0", "mode", "tap"],
            &["addr", "add", &format!("{HOST_IP}/24"), "dev", "tap0"],
            &["link", "set", "tap0", "up"],
        ] {
            let mut full = vec!["-n", &ns.name];
            full.extend_from_slice(args);
            ns.ip(&full);
        }
        ns
    }

    fn ip(&self, args: &[&str]) {
        let out = Command::new("ip").args(args).output().expect("run ip");
        assert!(
            out.status.success(),
            "ip {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A command that runs `program` inside the namespace.
    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, program]);
        cmd
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}

/// Waits until something in `ns` listens on UDP `port` (bounded).
fn wait_udp(ns: &Netns, port: u16, what: &str, proc: &mut Proc) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        assert!(!proc.exited(), "{what} exited at start:\n{}", proc.log_tail());
        let out = ns
            .command("ss")
            .args(["-Hlun", &format!("sport = :{port}")])
            .output()
            .expect("ss");
        if !String::from_utf8_lossy(&out.stdout).trim().is_empty() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{what} is not listening on port {port}");
}

// ---- the servers ------------------------------------------------------------------------------

/// The TFTP server a firmware boots from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Server {
    Ours,
    TftpdHpa,
}

impl Server {
    const ALL: [Server; 2] = [Server::Ours, Server::TftpdHpa];

    fn name(self) -> &'static str {
        match self {
            Server::Ours => "tftp-proto",
            Server::TftpdHpa => "tftpd-hpa",
        }
    }
}

/// One boot's world: the namespace, DHCP, the TFTP server, the served files and the logs.
struct Lab {
    // Dropped in this order: server and DHCP first, then the namespace.
    _server: Proc,
    _dhcp: Proc,
    ns: Netns,
    kind: Server,
    dir: PathBuf,
}

impl Lab {
    /// Serves `root` with `kind` on port 69, DHCP naming `boot_file`.
    fn start(kind: Server, root: &Path, boot_file: &str, dir: &Path) -> Lab {
        let ns = Netns::new();
        let mut dhcp = Proc::spawn(
            ns.command("dnsmasq")
                .args([
                    "-k",
                    "-C",
                    "/dev/null",
                    "--port=0",
                    "--interface=tap0",
                    "--bind-interfaces",
                ])
                .args(["--dhcp-range=192.168.77.50,192.168.77.99,1h", "--log-dhcp"])
                .arg(format!("--dhcp-boot={boot_file},,{HOST_IP}"))
                .arg(format!("--dhcp-leasefile={}", dir.join("leases").display()))
                .args(["--pid-file=", "--log-facility=-", "--user=root", "--group=root"]),
            &dir.join("dhcp.log"),
        );
        wait_udp(&ns, 67, "dnsmasq", &mut dhcp);
        let mut cmd = match kind {
            Server::Ours => {
                let mut c = ns.command(BIN);
                c.args(["serve", "--bind", &format!("{HOST_IP}:69"), "--root"])
                    .arg(root);
                c
            }
            // -L foreground; -s chroot into the root; -u root: no privilege drop; -v verbose.
            Server::TftpdHpa => {
                let mut c = ns.command("in.tftpd");
                c.args(["-L", "-a", &format!("{HOST_IP}:69"), "-s", "-u", "root", "-v"])
                    .arg(root);
                c
            }
        };
        let mut server = Proc::spawn(&mut cmd, &dir.join("server.log"));
        wait_udp(&ns, 69, kind.name(), &mut server);
        Lab {
            _server: server,
            _dhcp: dhcp,
            ns,
            kind,
            dir: dir.to_path_buf(),
        }
    }

    /// The server's log (ours: a line per transfer with options, retransmissions and outcome;
    /// tftpd-hpa logs to syslog only).
    fn server_log(&self) -> String {
        fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }
}

// ---- QEMU and its serial console --------------------------------------------------------------

/// Removes ANSI escape sequences (`ESC [ ... letter`, `ESC x`) so console text can be searched.
fn strip_ansi(raw: &[u8]) -> String {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == 0x1b {
            i += 1;
            if raw.get(i) == Some(&b'[') {
                i += 1;
                while i < raw.len() && !raw[i].is_ascii_alphabetic() {
                    i += 1;
                }
            }
            i += 1;
            continue;
        }
        if raw[i] != b'\r' {
            out.push(raw[i]);
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A QEMU guest with its serial console on a pipe.
struct Guest {
    proc: Proc,
    stdin: ChildStdin,
    /// Everything the console printed, escape sequences removed.
    console: Arc<Mutex<String>>,
    /// Where the search for the next expected text starts.
    seen: usize,
    started: Instant,
    what: String,
}

impl Guest {
    fn boot(lab: &Lab, args: &[&str], what: &str) -> Guest {
        let mut cmd = lab.ns.command(QEMU);
        cmd.args(["-m", "512", "-nographic", "-vga", "none", "-no-reboot"])
            .args(["-netdev", "tap,id=n0,ifname=tap0,script=no,downscript=no"])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
        let stdin = child.stdin.take().expect("stdin");
        let console = Arc::new(Mutex::new(String::new()));
        let log_path = lab.dir.join("console.log");
        for mut stream in [
            Box::new(child.stdout.take().expect("stdout")) as Box<dyn Read + Send>,
            Box::new(child.stderr.take().expect("stderr")),
        ] {
            let console = Arc::clone(&console);
            let mut log = fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log_path)
                .expect("console log");
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                // A partial escape sequence at the end of a read is kept for the next one.
                let mut pending = Vec::new();
                while let Ok(n) = stream.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    let _ = log.write_all(&buf[..n]);
                    pending.extend_from_slice(&buf[..n]);
                    let cut = pending
                        .iter()
                        .rposition(|&b| b == 0x1b)
                        .filter(|&p| !pending[p..].iter().skip(2).any(u8::is_ascii_alphabetic));
                    let keep = cut.map_or_else(Vec::new, |p| pending.split_off(p));
                    console.lock().unwrap().push_str(&strip_ansi(&pending));
                    pending = keep;
                }
            });
        }
        Guest {
            proc: Proc { child, log: log_path },
            stdin,
            console,
            seen: 0,
            started: Instant::now(),
            what: what.to_string(),
        }
    }

    fn text(&self) -> String {
        self.console.lock().unwrap().clone()
    }

    /// The console's last lines, for failure messages.
    fn tail(&self) -> String {
        let t = self.text();
        let lines: Vec<&str> = t.lines().filter(|l| !l.trim().is_empty()).collect();
        lines[lines.len().saturating_sub(25)..].join("\n")
    }

    /// Waits until the console, past what was already matched, shows `needle`; returns the text
    /// from the previous match up to and including it. While waiting, `poke` is sent every
    /// 200 ms when given (to interrupt an autoboot countdown).
    fn expect(&mut self, needle: &str, poke: Option<&str>) -> String {
        self.expect_any(&[needle], poke).1
    }

    /// Like [`expect`](Self::expect) for the first of several texts; returns which one came.
    fn expect_any(&mut self, needles: &[&str], poke: Option<&str>) -> (usize, String) {
        loop {
            {
                let text = self.console.lock().unwrap();
                let rest = &text[self.seen..];
                let first = needles
                    .iter()
                    .enumerate()
                    .filter_map(|(i, n)| rest.find(n).map(|at| (at, i)))
                    .min();
                if let Some((at, i)) = first {
                    let end = self.seen + at + needles[i].len();
                    let out = text[self.seen..end].to_string();
                    self.seen = end;
                    return (i, out);
                }
            }
            if self.started.elapsed() > BOOT_LIMIT {
                panic!(
                    "{}: no {needles:?} on the console within {}s; its last lines:\n{}",
                    self.what,
                    BOOT_LIMIT.as_secs(),
                    self.tail()
                );
            }
            if self.proc.exited() {
                std::thread::sleep(Duration::from_millis(200));
                panic!(
                    "{}: QEMU exited before {needles:?}; its last lines:\n{}",
                    self.what,
                    self.tail()
                );
            }
            if let Some(p) = poke {
                let _ = self.stdin.write_all(p.as_bytes());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Types `line` and Enter at the console.
    fn send(&mut self, line: &str) {
        self.stdin
            .write_all(format!("{line}\n").as_bytes())
            .expect("write to the console");
    }
}

// ---- the cases --------------------------------------------------------------------------------

/// Runs `case` once against each server, each in a fresh lab, printing the firmware's result and
/// our server's log of each transfer.
fn each_server(test: &str, boot_file: &str, files: &[(&str, &[u8])], case: impl Fn(&Lab) -> String) {
    if !ready(test) {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    for kind in Server::ALL {
        let dir = scratch(&format!("{test}-{}", kind.name()));
        let root = dir.join("root");
        fs::create_dir_all(&root).unwrap();
        for (name, data) in files {
            fs::write(root.join(name), data).unwrap();
        }
        let lab = Lab::start(kind, &root, boot_file, &dir);
        let started = Instant::now();
        let result = case(&lab);
        eprintln!(
            "firmware {test} from {}: {result} ({:.1}s)",
            kind.name(),
            started.elapsed().as_secs_f64()
        );
        if lab.kind == Server::Ours {
            for line in lab.server_log().lines().filter(|l| l.contains(" read \"")) {
                eprintln!("    server: {line}");
            }
        }
    }
}

/// The iPXE script every iPXE case chains: fetch the image, show its size, say it is done.
const IPXE_SCRIPT: &str = "#!ipxe\n\
    echo FWTEST script running\n\
    imgfetch -n image tftp://${next-server}/image.bin || goto failed\n\
    imgstat\n\
    echo FWTEST fetched\n\
    exit\n\
    :failed\n\
    echo FWTEST fetch failed\n";

/// Checks an iPXE boot (the script ran and the image arrived whole) and returns what it showed.
fn ipxe_case(lab: &Lab, machine: &[&str], what: &str) -> String {
    let mut g = Guest::boot(lab, machine, what);
    g.expect("FWTEST script running", None);
    let (outcome, shown) = g.expect_any(&["FWTEST fetched", "FWTEST fetch failed"], None);
    assert_eq!(outcome, 0, "{what}: the fetch failed:\n{}", g.tail());
    let line = shown
        .lines()
        .find(|l| l.trim_start().starts_with("image :"))
        .unwrap_or_else(|| panic!("{what}: no imgstat line:\n{}", g.tail()))
        .trim()
        .to_string();
    assert_eq!(line, format!("image : {IMAGE_LEN} bytes"), "{what}");
    line
}

/// An iPXE boot on `machine` chaining [`IPXE_SCRIPT`], against each server.
fn ipxe_test(test: &str, label: &str, seed: u64, machine: &[&str]) {
    let image = content(IMAGE_LEN, seed);
    let files: &[(&str, &[u8])] = &[("boot.ipxe", IPXE_SCRIPT.as_bytes()), ("image.bin", &image)];
    each_server(test, "boot.ipxe", files, |lab| {
        ipxe_case(lab, machine, &format!("{label} from {}", lab.kind.name()))
    });
}

#[test]
fn ipxe_bios_chains_a_script_and_fetches_32_mib() {
    ipxe_test(
        "ipxe_bios",
        "iPXE BIOS",
        1,
        &["-device", "e1000,netdev=n0", "-boot", "n"],
    );
}

#[test]
fn ipxe_uefi_chains_a_script_and_fetches_32_mib() {
    ipxe_test(
        "ipxe_uefi",
        "iPXE UEFI",
        2,
        &["-bios", OVMF, "-device", "e1000,netdev=n0"],
    );
}

/// U-Boot over its serial console: `dhcp`, then `tftpboot` of the image with U-Boot's default
/// block size, with `tftpblocksize 1468` and with `tftpwindowsize 8`, each followed by `crc32`
/// of what arrived, compared with the file's.
#[test]
fn uboot_dhcp_and_tftpboot_default_blksize_1468_and_windowsize_8() {
    let image = content(IMAGE_LEN, 3);
    let want = format!("==> {:08x}", crc32(&image));
    let files: &[(&str, &[u8])] = &[("image.bin", &image)];
    each_server("uboot", "image.bin", files, |lab| {
        let what = format!("U-Boot from {}", lab.kind.name());
        let mut g = Guest::boot(lab, &["-bios", UBOOT_ROM, "-device", "e1000,netdev=n0"], &what);
        g.expect("U-Boot 20", None);
        g.expect("=> ", Some("\n"));
        for cmd in ["setenv autoload no", "dhcp"] {
            g.send(cmd);
            g.expect(&format!("{cmd}\n"), None);
        }
        let bound = g.expect("=> ", None);
        assert!(bound.contains("DHCP client bound"), "{what}: {bound}");
        g.send(&format!("setenv serverip {HOST_IP}"));
        let mut results = Vec::new();
        for (label, setting) in [
            ("default", None),
            ("blksize 1468", Some("setenv tftpblocksize 1468")),
            ("windowsize 8", Some("setenv tftpwindowsize 8")),
        ] {
            if let Some(s) = setting {
                g.send(s);
            }
            g.send("tftpboot ${loadaddr} image.bin");
            g.expect("tftpboot ${loadaddr} image.bin\n", None);
            let out = g.expect("\n=> ", None);
            assert!(
                out.contains(&format!("Bytes transferred = {IMAGE_LEN} ")),
                "{what}, {label}: {out}"
            );
            g.send("crc32 ${loadaddr} ${filesize}");
            g.expect("crc32 ${loadaddr} ${filesize}\n", None);
            let out = g.expect("\n=> ", None);
            assert!(out.contains(&want), "{what}, {label}: {out} (want {want})");
            results.push(format!("{label}: crc32 ok"));
        }
        results.join(", ")
    });
}

/// UEFI's own PXE client (OVMF's network stack on virtio-net, the NIC's option ROM removed, no
/// disk): it probes `ipxe.efi`'s size (an OACK it declines with ERROR 8), downloads it, and the
/// program starts: its banner is on the console.
#[test]
fn uefi_pxe_client_downloads_and_starts_ipxe_efi() {
    let efi = fs::read(IPXE_EFI).unwrap_or_default();
    let files: &[(&str, &[u8])] = &[("ipxe.efi", &efi)];
    each_server("uefi_pxe", "ipxe.efi", files, |lab| {
        let what = format!("UEFI PXE from {}", lab.kind.name());
        let mut g = Guest::boot(
            lab,
            &["-bios", OVMF, "-device", "virtio-net-pci,netdev=n0,romfile="],
            &what,
        );
        g.expect(">>Start PXE over IPv4", None);
        g.expect("NBP filesize is ", None);
        let size = g.expect(" Bytes", None);
        assert_eq!(
            size,
            format!("{} Bytes", efi.len()),
            "{what}: the size probe's answer"
        );
        g.expect("Downloading NBP file", None);
        g.expect("NBP file downloaded successfully", None);
        let banner = g.expect("Open Source Network Boot Firmware", None);
        let line = banner
            .lines()
            .rev()
            .find(|l| l.contains("iPXE"))
            .unwrap_or_else(|| panic!("{what}: no iPXE banner: {banner}"))
            .trim()
            .to_string();
        if lab.kind == Server::Ours {
            // The size probe, then the download, in our server's log.
            let log = lab.server_log();
            let probe = log
                .find("read \"ipxe.efi\"")
                .filter(|_| log.contains("declined (options probe)"));
            assert!(
                probe.is_some(),
                "{what}: no declined size probe in the log:\n{log}"
            );
            assert!(
                log.lines().any(|l| l.contains("read \"ipxe.efi\"")
                    && l.contains(&format!("bytes={} ", efi.len()))
                    && l.ends_with(" ok")),
                "{what}: no complete download in the log:\n{log}"
            );
        }
        line
    });
}
