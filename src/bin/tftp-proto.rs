//! `tftp-proto`: serve a directory over TFTP, or get and put files.
//!
//! ```text
//! tftp-proto serve [--root DIR] [--bind ADDR:PORT]... [--allow-write] [--allow-overwrite] ...
//! tftp-proto get [OPTIONS] HOST[:PORT] REMOTE [LOCAL]     (or tftp://host[:port]/file [LOCAL])
//! tftp-proto put [OPTIONS] HOST[:PORT] LOCAL [REMOTE]     (or tftp://host[:port]/file LOCAL)
//! ```

use std::io::{IsTerminal, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use tftp_proto::adapter::client::{Client, ClientError, Summary};
use tftp_proto::adapter::mio_server::{
    format_refusal, format_refusal_json, format_report, format_report_json, Refusal, ServerConfig,
    ServerThreads, MAX_SESSIONS,
};
use tftp_proto::engine::{Config, Event, ServerPolicy, TransferMode};
use tftp_proto::options::{MAX_BLKSIZE, MIN_BLKSIZE};
use tftp_proto::server::TransferReport;
use tftp_proto::Options;

#[derive(Parser)]
#[command(
    name = "tftp-proto",
    version,
    about = "A TFTP server and client (RFC 1350, 2347-2349, 7440)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve a directory.
    Serve(ServeArgs),
    /// Download a file: HOST[:PORT] REMOTE [LOCAL], or tftp://host[:port]/file [LOCAL].
    Get(TransferArgs),
    /// Upload a file: HOST[:PORT] LOCAL [REMOTE], or tftp://host[:port]/file LOCAL.
    Put(TransferArgs),
}

#[derive(Args)]
struct ServeArgs {
    /// Directory to serve.
    #[arg(long, default_value = ".")]
    root: PathBuf,
    /// Address to listen on (repeatable). Default 0.0.0.0:69.
    #[arg(long = "bind", value_name = "ADDR:PORT")]
    binds: Vec<String>,
    /// Let uploads create new files.
    #[arg(long)]
    allow_write: bool,
    /// Let uploads replace existing files (needs --allow-write).
    #[arg(long)]
    allow_overwrite: bool,
    /// Largest upload accepted, in bytes.
    #[arg(long, value_name = "BYTES")]
    max_upload: Option<u64>,
    /// Cap on the block size granted. Default: what fits the MTU of the interface each
    /// request arrives on (1468 on a 1500-byte Ethernet, 65464 on loopback), so ROMs that
    /// cannot reassemble IP fragments work; a value given here applies everywhere instead.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(i64::from(MIN_BLKSIZE)..=i64::from(MAX_BLKSIZE)))]
    max_blksize: Option<u16>,
    /// Cap on the window size granted.
    #[arg(long, value_name = "N", default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..))]
    max_windowsize: u16,
    /// Concurrent transfers allowed. At the cap, a request displaces the oldest transfer whose
    /// client never answered (a spoofed request); when every client has answered, ERROR 0.
    #[arg(long, value_name = "N", default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..=MAX_SESSIONS as u64))]
    max_sessions: u64,
    /// Serve every transfer from the listening port (NAT, containers).
    #[arg(long)]
    single_port: bool,
    /// When a requested file is not found, serve the one whose name differs only in ASCII case
    /// (per path component; the first in byte order when several do).
    #[arg(long)]
    ignore_case: bool,
    /// inetd "wait" mode: serve on the UDP socket given as standard input, and exit once idle
    /// (see --idle-exit, default 900 s here). Without --bind and --inetd, sockets passed by
    /// systemd socket activation (LISTEN_FDS) are served if there are any.
    #[arg(long)]
    inetd: bool,
    /// Exit once no transfer has been in progress and no datagram has arrived for SECS seconds
    /// (inetd takes the socket back; systemd can start the server again on the next request).
    #[arg(long, value_name = "SECS")]
    idle_exit: Option<u64>,
    /// Rewrite requested names with the rules in FILE before looking them up (tftp-hpa's -m
    /// format: `FLAGS REGEX [REPLACEMENT]` per line, flags r g i e s a G P 4 6 ~, \0-\9 in
    /// replacements). A file that does not parse stops the server at startup.
    #[arg(long, value_name = "FILE")]
    map_file: Option<std::path::PathBuf>,
    /// Bind every transfer's port (TID) within LOW:HIGH (firewalls, NAT); when all are in use,
    /// a request gets ERROR 0. Unused with --single-port.
    #[arg(long, value_name = "LOW:HIGH", value_parser = parse_port_range)]
    port_range: Option<(u16, u16)>,
    /// Look for a download beneath ROOT/<client IP>/ first, then beneath ROOT (per-machine
    /// files beside shared ones).
    #[arg(long)]
    per_client_root: bool,
    /// Event-loop threads (Linux): each serves the requests the kernel hands its copy of the
    /// listening sockets (spread by client address and port); --max-sessions is one budget for
    /// them all. Default: one per available CPU (1 elsewhere than Linux).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=256))]
    threads: Option<u16>,
    /// Pin each event-loop thread to a CPU of its own (Linux, with at least as many CPUs as
    /// threads; otherwise ignored). Helps a machine given over to serving; not with --runtime
    /// tokio.
    #[arg(long)]
    pin_threads: bool,
    /// Pin the event loops as --pin-threads does and hand each request to the loop on the CPU
    /// that received it (Linux 4.5+, two threads or more), so a transfer stays on one CPU: for
    /// clients on the same host (loopback, local VMs and containers) or a network card with
    /// several receive queues. Not for a card with a single queue: every request would go to
    /// one loop. Off with --single-port; not with --runtime tokio
    #[arg(long)]
    steer_by_cpu: bool,
    /// Initial retransmission timeout in seconds (adaptive afterwards).
    #[arg(long, value_name = "SECS", default_value_t = 1.0)]
    timeout: f64,
    /// Retransmissions without progress before a transfer is abandoned (once --total-timeout
    /// has passed too).
    #[arg(long, value_name = "N", default_value_t = 6)]
    retries: u8,
    /// Least time in seconds a transfer waits without progress before it is abandoned,
    /// however quickly its retries run out (0: right after the last retry).
    #[arg(long, value_name = "SECS", default_value_t = 25.0)]
    total_timeout: f64,
    /// After binding the ports and opening the root, switch to this user and its group
    /// (dropping root: bind port 69 as root, serve as NAME). Startup fails if the switch does.
    #[arg(long, value_name = "NAME")]
    user: Option<String>,
    /// Log more (startup details).
    #[arg(short, long)]
    verbose: bool,
    /// How each request is logged on stderr: `text` (one line for people) or `json` (one JSON
    /// object per line: event, peer, local, op, file, asked, granted, outcome, error_code,
    /// error, bytes, duration_s, retransmissions, spurious). Refused requests are logged too.
    #[arg(long, value_enum, default_value = "text")]
    log_format: LogFormat,
    /// The event loop: the std adapter's mio server, or the tokio server (its runtime gets
    /// --threads workers).
    #[cfg(feature = "tokio")]
    #[arg(long, value_enum, default_value = "std")]
    runtime: RuntimeArg,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, Copy, ValueEnum)]
enum ModeArg {
    Octet,
    Netascii,
}

#[derive(Args)]
struct TransferArgs {
    /// HOST[:PORT] or tftp://host[:port]/file, then the file names.
    #[arg(required = true, num_args = 1..=3, value_name = "ARGS")]
    args: Vec<String>,
    /// Block size to request (8-65464).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(i64::from(MIN_BLKSIZE)..=i64::from(MAX_BLKSIZE)))]
    blksize: Option<u16>,
    /// Window size to request (1-65535).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    windowsize: Option<u16>,
    /// Timeout to request, in whole seconds (1-255); also the initial retransmission timeout.
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u8).range(1..))]
    timeout: Option<u8>,
    /// Retransmissions without progress before giving up (once --total-timeout has passed too).
    #[arg(long, value_name = "N", default_value_t = 6)]
    retries: u8,
    /// Least time in seconds to wait without progress before giving up, however quickly the
    /// retries run out (0: right after the last retry).
    #[arg(long, value_name = "SECS", default_value_t = 25.0)]
    total_timeout: f64,
    /// After a download's final ACK, keep answering a repeated final DATA (our ACK was lost)
    /// for up to this long, in milliseconds (two retransmission intervals at most). 0 exits at
    /// once, as tftp-hpa, atftp, busybox and curl do: the file is complete either way, only the
    /// server may log a failure.
    #[arg(long, value_name = "MS", default_value_t = 0)]
    dally: u64,
    /// Ask for (get) or announce (put) the transfer size.
    #[arg(long)]
    tsize: bool,
    /// Transfer mode.
    #[arg(long, value_enum, default_value = "octet")]
    mode: ModeArg,
    /// Send no options at all (plain RFC 1350).
    #[arg(long)]
    no_options: bool,
    /// Print nothing but errors.
    #[arg(short, long)]
    quiet: bool,
    /// The event loop: the blocking std client, or the tokio client.
    #[cfg(feature = "tokio")]
    #[arg(long, value_enum, default_value = "std")]
    runtime: RuntimeArg,
}

/// Which adapter runs a transfer or the server (`--runtime`, with the `tokio` feature).
#[cfg(feature = "tokio")]
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum RuntimeArg {
    /// The std adapter: blocking client, mio server.
    Std,
    /// The tokio adapter: `AsyncClient`, `AsyncServer` (multi-thread runtime, `--threads`
    /// workers).
    Tokio,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(a) => serve(a),
        Command::Get(a) => transfer(a, true),
        Command::Put(a) => transfer(a, false),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("tftp-proto: error: {msg}");
            ExitCode::FAILURE
        }
    }
}

/// The running server: the std adapter's threads, or the tokio server on its runtime.
enum Servers {
    Std(ServerThreads),
    #[cfg(feature = "tokio")]
    Tokio(
        Box<(
            tokio::runtime::Runtime,
            tftp_proto::adapter::tokio_server::AsyncServer,
        )>,
    ),
}

impl Servers {
    /// The tokio server on a multi-thread runtime of `threads` workers.
    #[cfg(feature = "tokio")]
    fn tokio(
        config: &ServerConfig,
        inherited: Option<Vec<std::net::UdpSocket>>,
        threads: usize,
    ) -> std::io::Result<Servers> {
        use tftp_proto::adapter::tokio_server::AsyncServer;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads.max(1))
            .enable_all()
            .build()?;
        let server = {
            let _inside = rt.enter();
            match inherited {
                Some(sockets) => AsyncServer::from_sockets(config, sockets)?,
                None => AsyncServer::bind(config)?,
            }
        };
        Ok(Servers::Tokio(Box::new((rt, server))))
    }

    fn local_addrs(&self) -> Vec<SocketAddr> {
        match self {
            Servers::Std(s) => s.local_addrs(),
            #[cfg(feature = "tokio")]
            Servers::Tokio(t) => t.1.local_addrs(),
        }
    }

    /// Serves until `stop` is set (a signal), logging every transfer and refusal.
    fn run_logged(
        self,
        stop: Arc<AtomicBool>,
        on_report: impl Fn(&TransferReport<()>) + Send + Sync + 'static,
        on_refusal: impl Fn(&Refusal) + Send + Sync + 'static,
    ) -> std::io::Result<()> {
        match self {
            Servers::Std(s) => s.run_logged(&stop, on_report, on_refusal),
            #[cfg(feature = "tokio")]
            Servers::Tokio(t) => {
                let (rt, s) = *t;
                let stopped = async move {
                    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                };
                // Spawned, not run on this thread by `block_on`: the server's task and its
                // sockets' reader tasks then share the runtime's workers (with one worker, one
                // thread, with no cross-thread wake-up per datagram).
                let task = rt.spawn(s.run_logged(stopped, on_report, on_refusal));
                rt.block_on(task).map_err(std::io::Error::other)?
            }
        }
    }
}

/// `serve`'s event loops when `--threads` is not given: one per CPU this process may use, on
/// Linux (where the loops share the listening ports with `SO_REUSEPORT`); one elsewhere.
fn default_threads() -> usize {
    if cfg!(target_os = "linux") {
        std::thread::available_parallelism().map_or(1, |n| n.get().min(256))
    } else {
        1
    }
}

/// `--total-timeout`: seconds, from 0 up to an hour.
fn total_timeout(secs: f64) -> Result<Duration, String> {
    if (0.0..=3600.0).contains(&secs) {
        Ok(Duration::from_secs_f64(secs))
    } else {
        Err(format!(
            "--total-timeout must be between 0 and 3600 seconds, not {secs}"
        ))
    }
}

fn serve(a: ServeArgs) -> Result<(), String> {
    if a.allow_overwrite && !a.allow_write {
        return Err("--allow-overwrite needs --allow-write".into());
    }
    if !(a.timeout > 0.0 && a.timeout <= 255.0) {
        return Err("--timeout must be between 0 and 255 seconds".into());
    }
    if a.inetd && !a.binds.is_empty() {
        return Err("--inetd serves the socket on standard input: give no --bind".into());
    }
    // Sockets handed over by inetd (standard input) or systemd (LISTEN_FDS).
    let inherited = if a.inetd {
        Some(vec![inetd_socket()?])
    } else if a.binds.is_empty() {
        systemd_sockets()?
    } else {
        None
    };
    let binds = if a.binds.is_empty() {
        vec![SocketAddr::from(([0, 0, 0, 0], 69))]
    } else {
        a.binds.iter().map(|b| parse_bind(b)).collect::<Result<_, _>>()?
    };
    let idle_exit = a.idle_exit.or(a.inetd.then_some(900)).map(Duration::from_secs);
    let engine = Config {
        initial_rto: Duration::from_secs_f64(a.timeout),
        max_retries: a.retries,
        total_timeout: total_timeout(a.total_timeout)?,
        ..Config::default()
    };
    let remap = match &a.map_file {
        Some(path) => {
            Some(tftp_proto::adapter::remap::Remap::load(path).map_err(|e| format!("--map-file {e}"))?)
        }
        None => None,
    };
    let config = ServerConfig {
        root: a.root.clone(),
        binds,
        allow_write: a.allow_write,
        allow_overwrite: a.allow_overwrite,
        policy: ServerPolicy {
            max_blksize: a.max_blksize.unwrap_or(MAX_BLKSIZE),
            max_windowsize: a.max_windowsize,
            max_write_size: a.max_upload,
            ..ServerPolicy::default()
        },
        engine,
        max_sessions: a.max_sessions as usize,
        single_port: a.single_port,
        max_blksize_from_mtu: a.max_blksize.is_none(),
        ignore_case: a.ignore_case,
        per_client_root: a.per_client_root,
        port_range: a.port_range,
        remap,
        idle_exit,
        hook: None,
        reuse_port: false,
    };
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop)).map_err(|e| format!("signal handler: {e}"))?;
    }
    let threads = a.threads.map_or_else(default_threads, usize::from);
    // A socket and a file per session (one per session in single-port mode).
    let per_session = if a.single_port { 1 } else { 2 };
    let wanted = a.max_sessions.saturating_mul(per_session).saturating_add(64);
    let limit = raise_open_file_limit(wanted);
    #[cfg(feature = "tokio")]
    let tokio_runtime = a.runtime == RuntimeArg::Tokio;
    #[cfg(not(feature = "tokio"))]
    let tokio_runtime = false;
    // Both place the std runtime's event loops; tokio's workers are its own.
    for (set, flag) in [
        (a.pin_threads, "--pin-threads"),
        (a.steer_by_cpu, "--steer-by-cpu"),
    ] {
        if tokio_runtime && set {
            return Err(format!(
                "{flag} is for the std runtime's event loops; tokio's workers are its own"
            ));
        }
    }
    let servers = if tokio_runtime {
        #[cfg(feature = "tokio")]
        {
            Servers::tokio(&config, inherited, threads)
        }
        #[cfg(not(feature = "tokio"))]
        unreachable!("--runtime tokio needs the tokio feature")
    } else {
        match inherited {
            Some(sockets) => ServerThreads::from_sockets(&config, sockets),
            None => ServerThreads::bind(&config, threads),
        }
        .map(|s| {
            let s = s.pin_threads(a.pin_threads);
            Servers::Std(if a.steer_by_cpu { s.steer_by_cpu() } else { s })
        })
    }
    .map_err(|e| format!("cannot start server: {e}"))?;
    if let Some(name) = &a.user {
        drop_privileges(name)?;
    }
    let addrs: Vec<String> = servers.local_addrs().iter().map(ToString::to_string).collect();
    eprintln!(
        "tftp-proto: serving {} on {} ({}{})",
        a.root.display(),
        addrs.join(", "),
        if a.allow_write { "read-write" } else { "read-only" },
        a.user
            .as_ref()
            .map_or(String::new(), |u| format!(", as user {u}"))
    );
    if limit < wanted {
        eprintln!(
            "tftp-proto: warning: the open-file limit ({limit}) allows about {} concurrent sessions, \
             fewer than --max-sessions {}; requests beyond it get \"Server out of sockets\" \
             (raise it with ulimit -n or LimitNOFILE=)",
            limit.saturating_sub(64) / per_session,
            a.max_sessions
        );
    }
    if a.steer_by_cpu {
        match &servers {
            Servers::Std(s) if s.steers_by_cpu() => {
                if a.verbose {
                    eprintln!("tftp-proto: requests go to the event loop on the CPU that received them");
                }
            }
            _ => eprintln!(
                "tftp-proto: warning: --steer-by-cpu is off: it needs Linux 4.5+, two threads or more \
                 on as many CPUs, the listening sockets bound here (not inherited) and a port per \
                 transfer (not --single-port); requests are spread by client address and port"
            ),
        }
    }
    if a.verbose {
        eprintln!(
            "tftp-proto: max blksize {}, max windowsize {}, max sessions {}, {}, {} thread(s)",
            a.max_blksize
                .map_or_else(|| "the link's MTU less headers".to_string(), |b| b.to_string()),
            a.max_windowsize,
            a.max_sessions,
            if a.single_port {
                "single port"
            } else {
                "one port per transfer"
            },
            threads
        );
    }
    let json = matches!(a.log_format, LogFormat::Json);
    // One line per transfer and per refusal on stderr.
    let log = |line: String| {
        let _ = writeln!(std::io::stderr().lock(), "{line}");
    };
    let on_report = move |r: &TransferReport<()>| {
        log(if json {
            format_report_json(r)
        } else {
            format_report(r)
        })
    };
    let on_refusal = move |r: &Refusal| {
        log(if json {
            format_refusal_json(r)
        } else {
            format_refusal(r)
        })
    };
    servers
        .run_logged(stop, on_report, on_refusal)
        .map_err(|e| format!("server failed: {e}"))?;
    eprintln!("tftp-proto: stopped");
    Ok(())
}

/// Checks that `fd` is a datagram socket and makes it a `UdpSocket`.
#[cfg(unix)]
fn udp_socket(fd: std::os::fd::OwnedFd, what: &str) -> Result<std::net::UdpSocket, String> {
    use nix::sys::socket::{getsockopt, sockopt, SockType};
    match getsockopt(&fd, sockopt::SockType) {
        Ok(SockType::Datagram) => Ok(std::net::UdpSocket::from(fd)),
        Ok(other) => Err(format!("{what} is a {other:?} socket, not a UDP one")),
        Err(e) => Err(format!("{what} is not a socket ({e})")),
    }
}

/// inetd's socket: standard input.
#[cfg(unix)]
fn inetd_socket() -> Result<std::net::UdpSocket, String> {
    use std::os::fd::AsFd;
    let fd = std::io::stdin()
        .as_fd()
        .try_clone_to_owned()
        .map_err(|e| format!("--inetd: standard input: {e}"))?;
    udp_socket(fd, "--inetd: standard input")
}

/// The sockets systemd passed (socket activation: `LISTEN_PID` is this process and
/// `LISTEN_FDS` counts the descriptors from 3), if any.
#[cfg(unix)]
fn systemd_sockets() -> Result<Option<Vec<std::net::UdpSocket>>, String> {
    use std::os::fd::FromRawFd;
    let for_us = std::env::var("LISTEN_PID")
        .ok()
        .and_then(|p| p.parse::<u32>().ok())
        == Some(std::process::id());
    let count = std::env::var("LISTEN_FDS")
        .ok()
        .and_then(|n| n.parse::<i32>().ok());
    let (true, Some(n)) = (for_us, count) else {
        return Ok(None);
    };
    if !(1..=64).contains(&n) {
        return Err(format!("LISTEN_FDS={n}: expected 1 to 64 sockets"));
    }
    (3..3 + n)
        .map(|fd| {
            // SAFETY: systemd passes descriptors 3 .. 3 + LISTEN_FDS open to this process
            // (LISTEN_PID is ours), and each is taken exactly once, here.
            let owned = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
            udp_socket(owned, &format!("LISTEN_FDS descriptor {fd}"))
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// Switches the whole process (no thread runs yet) to user `name`: its group, no supplementary
/// groups but that one, then its user ID; fails if any step does, or if root could be regained.
#[cfg(unix)]
fn drop_privileges(name: &str) -> Result<(), String> {
    use nix::unistd::{getuid, setgid, setuid, User};
    let user = User::from_name(name)
        .map_err(|e| format!("--user {name}: cannot look the user up: {e}"))?
        .ok_or_else(|| format!("--user {name}: no such user"))?;
    let fail = |what: &str, e: nix::Error| {
        format!(
            "--user {name}: cannot switch to uid {} gid {} ({what}: {e}); run as root to use --user",
            user.uid, user.gid
        )
    };
    set_groups(user.gid).map_err(|e| fail("setgroups", e))?;
    setgid(user.gid).map_err(|e| fail("setgid", e))?;
    setuid(user.uid).map_err(|e| fail("setuid", e))?;
    if !user.uid.is_root() && setuid(nix::unistd::Uid::from_raw(0)).is_ok() {
        return Err(format!("--user {name}: root could be regained after the switch"));
    }
    debug_assert_eq!(getuid(), user.uid);
    Ok(())
}

/// Makes `gid` the only supplementary group.
#[cfg(all(unix, not(target_vendor = "apple")))]
fn set_groups(gid: nix::unistd::Gid) -> nix::Result<()> {
    nix::unistd::setgroups(&[gid])
}

/// Makes `gid` the only supplementary group (nix has no `setgroups` for macOS: libc's).
#[cfg(target_vendor = "apple")]
fn set_groups(gid: nix::unistd::Gid) -> nix::Result<()> {
    let list = [gid.as_raw()];
    // SAFETY: the pointer and count describe `list`, which outlives the call.
    let r = unsafe { nix::libc::setgroups(1, list.as_ptr()) };
    nix::errno::Errno::result(r).map(drop)
}

/// Raises the soft open-file limit towards `wanted`, up to the hard limit (the administrator's
/// ceiling, left alone); returns the soft limit in force.
#[cfg(unix)]
#[allow(clippy::useless_conversion)] // `rlim_t` is `u64` here, `i64` on FreeBSD
fn raise_open_file_limit(wanted: u64) -> u64 {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return u64::MAX;
    };
    // `rlim_t` is unsigned on Linux and macOS, signed on FreeBSD.
    let wanted = nix::sys::resource::rlim_t::try_from(wanted).unwrap_or(hard);
    if soft < wanted && soft < hard {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, wanted.min(hard), hard);
    }
    let soft = getrlimit(Resource::RLIMIT_NOFILE).map_or(soft, |(s, _)| s);
    u64::try_from(soft).unwrap_or(u64::MAX)
}

/// No descriptor limit to raise here (Windows has no `RLIMIT_NOFILE`).
#[cfg(not(unix))]
fn raise_open_file_limit(_wanted: u64) -> u64 {
    u64::MAX
}

/// `--inetd` needs a Unix system (the socket is standard input).
#[cfg(not(unix))]
fn inetd_socket() -> Result<std::net::UdpSocket, String> {
    Err("--inetd needs a Unix system (inetd passes the socket as standard input)".into())
}

/// Socket activation is systemd's (Linux): never here.
#[cfg(not(unix))]
fn systemd_sockets() -> Result<Option<Vec<std::net::UdpSocket>>, String> {
    Ok(None)
}

/// `--user` needs a Unix system.
#[cfg(not(unix))]
fn drop_privileges(name: &str) -> Result<(), String> {
    Err(format!("--user {name}: switching users needs a Unix system"))
}

/// `LOW:HIGH`, `1 <= LOW <= HIGH <= 65535`.
fn parse_port_range(s: &str) -> Result<(u16, u16), String> {
    let bad = || format!("expected LOW:HIGH with 1 <= LOW <= HIGH <= 65535, e.g. 50000:50999 (got {s:?})");
    let (low, high) = s.split_once(':').ok_or_else(bad)?;
    let low: u16 = low.trim().parse().map_err(|_| bad())?;
    let high: u16 = high.trim().parse().map_err(|_| bad())?;
    if low == 0 || low > high {
        return Err(bad());
    }
    Ok((low, high))
}

fn parse_bind(s: &str) -> Result<SocketAddr, String> {
    s.parse::<SocketAddr>()
        .or_else(|_| {
            s.to_socket_addrs()
                .map_err(|e| e.to_string())?
                .next()
                .ok_or_else(|| "no address".to_string())
        })
        .map_err(|e| format!("invalid --bind {s:?} (expected ADDR:PORT, e.g. 0.0.0.0:69 or [::]:69): {e}"))
}

/// Resolves `HOST`, `HOST:PORT`, `[V6]`, `[V6]:PORT` or a bare IPv6 literal (port 69 by default).
fn resolve_host(host: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = host.parse::<SocketAddr>() {
        return Ok(a);
    }
    if let Ok(ip) = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<std::net::IpAddr>()
    {
        return Ok(SocketAddr::new(ip, 69));
    }
    let with_port = if host
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        host.to_string()
    } else {
        format!("{host}:69")
    };
    with_port
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host:?}: {e}"))?
        .next()
        .ok_or_else(|| format!("cannot resolve {host:?}"))
}

/// Splits `tftp://host[:port]/file` (RFC 3617) into host and file (percent-decoded bytes).
fn parse_url(s: &str) -> Option<Result<(String, Vec<u8>), String>> {
    let rest = s.strip_prefix("tftp://").or_else(|| s.strip_prefix("TFTP://"))?;
    let Some((host, file)) = rest.split_once('/') else {
        return Some(Err(format!("URL {s:?} names no file")));
    };
    // RFC 3617 allows ";mode=..."; drop it (mode comes from --mode).
    let file = file.split(";mode=").next().unwrap_or(file);
    if host.is_empty() || file.is_empty() {
        return Some(Err(format!("URL {s:?} needs a host and a file")));
    }
    Some(Ok((host.to_string(), percent_decode(file))))
}

/// Decodes `%XX` escapes into bytes (file names are bytes, not necessarily UTF-8); a `%` not
/// followed by two hex digits stays itself.
fn percent_decode(s: &str) -> Vec<u8> {
    let hex = |c: u8| char::from(c).to_digit(16);
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            if let (Some(hi), Some(lo)) = (
                b.get(i + 1).copied().and_then(hex),
                b.get(i + 2).copied().and_then(hex),
            ) {
                out.push((hi * 16 + lo) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

fn transfer(a: TransferArgs, get: bool) -> Result<(), String> {
    let (host, remote, local) = match parse_url(&a.args[0]) {
        Some(url) => {
            let (host, file) = url?;
            if a.args.len() > 2 {
                return Err("with a tftp:// URL give at most one more argument (the local file)".into());
            }
            (host, file, a.args.get(1).cloned())
        }
        None => {
            let host = a.args[0].clone();
            let first = a.args.get(1).cloned().ok_or(if get {
                "missing REMOTE file name"
            } else {
                "missing LOCAL file name"
            })?;
            if get {
                (host, first.into_bytes(), a.args.get(2).cloned())
            } else {
                let remote = a.args.get(2).cloned();
                (host, remote.unwrap_or_default().into_bytes(), Some(first))
            }
        }
    };
    let server = resolve_host(&host)?;
    let options = if a.no_options {
        Options::NONE
    } else {
        Options {
            blksize: a.blksize,
            windowsize: a.windowsize,
            timeout: a.timeout,
            tsize: a.tsize.then_some(0),
            rollover: None,
        }
    };
    let mut config = Config {
        max_retries: a.retries,
        total_timeout: total_timeout(a.total_timeout)?,
        max_dally: Duration::from_millis(a.dally),
        ..Config::default()
    };
    if let Some(t) = a.timeout {
        config.initial_rto = Duration::from_secs(u64::from(t));
    }
    let mode = match a.mode {
        ModeArg::Octet => TransferMode::Octet,
        ModeArg::Netascii => TransferMode::Netascii,
    };
    let show_bar = !a.quiet && std::io::stderr().is_terminal();
    let (local, remote) = if get {
        let local = local.unwrap_or_else(|| default_local_name(&String::from_utf8_lossy(&remote)));
        (local, remote)
    } else {
        let local = local.ok_or("missing LOCAL file name")?;
        let remote = if remote.is_empty() {
            if local == "-" {
                return Err("uploading from stdin needs a REMOTE name".into());
            }
            Path::new(&local)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned().into_bytes())
                .ok_or("cannot derive REMOTE name from LOCAL")?
        } else {
            remote
        };
        (local, remote)
    };
    let size = (!get && local != "-")
        .then(|| std::fs::metadata(&local).map(|m| m.len()).ok())
        .flatten();
    let mut bar = Bar::new(show_bar, size);
    #[cfg(feature = "tokio")]
    let tokio_runtime = a.runtime == RuntimeArg::Tokio;
    #[cfg(not(feature = "tokio"))]
    let tokio_runtime = false;
    let result = if tokio_runtime {
        #[cfg(feature = "tokio")]
        {
            let client = tftp_proto::adapter::tokio_client::AsyncClient::new(server)
                .options(options)
                .mode(mode)
                .config(config);
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| format!("tokio runtime: {e}"))?;
            rt.block_on(transfer_tokio(&client, get, &remote, &local, &mut bar))
        }
        #[cfg(not(feature = "tokio"))]
        unreachable!("--runtime tokio needs the tokio feature")
    } else {
        let client = Client::new(server).options(options).mode(mode).config(config);
        match (get, local.as_str()) {
            // Standard output is line-buffered, and a binary file has a newline every few
            // hundred bytes: buffered here, a block costs one write call at most. The transfer
            // flushes it (a failure is its storage error) before it counts as done.
            (true, "-") => client
                .get_to_writer(
                    &remote,
                    std::io::BufWriter::with_capacity(64 * 1024, std::io::stdout().lock()),
                    |e| bar.on_event(e),
                )
                .map(|(_, s)| s),
            (true, _) => client.get_file(&remote, Path::new(&local), |e| bar.on_event(e)),
            (false, "-") => client.put_from_reader(std::io::stdin().lock(), &remote, |e| bar.on_event(e)),
            (false, _) => client.put_file(Path::new(&local), &remote, |e| bar.on_event(e)),
        }
    }
    .inspect(|_| bar.done())
    .map_err(|e| describe(&e, &remote));
    let summary: Summary = result?;
    if !a.quiet && !show_bar {
        let secs = summary.elapsed.as_secs_f64().max(1e-6);
        eprintln!(
            "tftp-proto: {} {} bytes in {:.3} s ({:.1} MB/s), blksize {}, windowsize {}",
            if get { "received" } else { "sent" },
            summary.bytes,
            secs,
            summary.bytes as f64 / secs / 1e6,
            summary.params.blksize,
            summary.params.windowsize
        );
    }
    Ok(())
}

/// `get` or `put` on the tokio client (`--runtime tokio`).
#[cfg(feature = "tokio")]
async fn transfer_tokio(
    client: &tftp_proto::adapter::tokio_client::AsyncClient,
    get: bool,
    remote: &[u8],
    local: &str,
    bar: &mut Bar,
) -> Result<Summary, tftp_proto::adapter::client::ClientError> {
    match (get, local) {
        // Each write to tokio's standard output is a trip to a blocking thread: buffered,
        // there is one per 64 KiB (the transfer flushes at its end).
        (true, "-") => client
            .get_to_writer(
                remote,
                tokio::io::BufWriter::with_capacity(64 * 1024, tokio::io::stdout()),
                |e| bar.on_event(e),
            )
            .await
            .map(|(_, s)| s),
        (true, _) => {
            client
                .get_file(remote, Path::new(local), |e| bar.on_event(e))
                .await
        }
        (false, "-") => {
            client
                .put_from_reader(tokio::io::stdin(), remote, |e| bar.on_event(e))
                .await
        }
        (false, _) => {
            client
                .put_file(Path::new(local), remote, |e| bar.on_event(e))
                .await
        }
    }
}

fn default_local_name(remote: &str) -> String {
    remote
        .rsplit(['/', '\\'])
        .find(|s| !s.is_empty())
        .unwrap_or("download")
        .to_string()
}

fn describe(e: &ClientError, remote: &[u8]) -> String {
    match e {
        ClientError::Transfer(t) => format!("{}: {t}", String::from_utf8_lossy(remote)),
        other => other.to_string(),
    }
}

/// A progress bar on a terminal; nothing otherwise.
struct Bar {
    bar: Option<ProgressBar>,
}

impl Bar {
    fn new(show: bool, total: Option<u64>) -> Self {
        let bar = show.then(|| {
            let bar = ProgressBar::new(total.unwrap_or(0));
            let style = if total.is_some() {
                ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
            } else {
                ProgressStyle::with_template("{spinner} {bytes} {bytes_per_sec}")
            };
            if let Ok(style) = style {
                bar.set_style(style);
            }
            bar
        });
        Bar { bar }
    }

    fn on_event(&mut self, e: &Event) {
        let Some(bar) = &self.bar else { return };
        match e {
            Event::Negotiated(p) => {
                if let Some(t) = p.tsize.filter(|&t| t > 0) {
                    bar.set_length(t);
                    if let Ok(style) = ProgressStyle::with_template(
                        "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
                    ) {
                        bar.set_style(style);
                    }
                }
            }
            Event::Progress { bytes } | Event::Finished { bytes } => bar.set_position(*bytes),
            _ => {}
        }
    }

    fn done(&self) {
        if let Some(bar) = &self.bar {
            bar.finish();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_hosts() {
        assert_eq!(
            parse_url("tftp://127.0.0.1:6969/dir/a%20b").unwrap().unwrap(),
            ("127.0.0.1:6969".into(), b"dir/a b".to_vec())
        );
        assert_eq!(percent_decode("caf%E9%2"), b"caf\xe9%2");
        assert_eq!(percent_decode("%a\u{e9}%"), "%a\u{e9}%".as_bytes());
        assert!(parse_url("tftp://host").unwrap().is_err());
        assert!(parse_url("host").is_none());
        assert_eq!(
            resolve_host("127.0.0.1").unwrap(),
            "127.0.0.1:69".parse().unwrap()
        );
        assert_eq!(resolve_host("[::1]:6969").unwrap(), "[::1]:6969".parse().unwrap());
        assert_eq!(resolve_host("[::1]").unwrap(), "[::1]:69".parse().unwrap());
        assert_eq!(resolve_host("::1").unwrap(), "[::1]:69".parse().unwrap());
        assert_eq!(default_local_name("/boot/pxelinux.0"), "pxelinux.0");
        assert_eq!(default_local_name("a\\b.cfg"), "b.cfg");
    }
}
