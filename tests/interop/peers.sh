#!/usr/bin/env bash
# peers.sh — install, start, stop and drive the third-party TFTP peers of the interop tests
# (tests/interop.rs). Debian 12 (bookworm); installing needs root; everything runs on loopback.
#
# As a command:   bash tests/interop/peers.sh FUNC [ARGS...]
# As a library:   source tests/interop/peers.sh; pid=$(server_start hpa /srv/dir 16901)
#
# Functions
#   peers_install                      apt-get the peers and unpack atftpd privately (root). Does nothing
#                                      when every peer is already there (PEERS_FORCE_INSTALL=1 to redo).
#   peers_missing                      print the peers not installed (one per line); status 1 if any
#   firmware_install                   apt-get what tests/firmware.rs boots under QEMU (root): qemu-system-x86,
#                                      ipxe-qemu, u-boot-qemu, ovmf, ipxe (and the peers above: dnsmasq,
#                                      tftpd-hpa). Does nothing when all is there.
#   firmware_missing                   print what tests/firmware.rs lacks; status 1 if anything
#   peers_versions                     print the versions of all peers
#   server_start NAME DIR PORT [ADDR]  NAME: hpa|atftpd|dnsmasq; ADDR default 127.0.0.1 (IPv6: ::1).
#                                      Prints the PID (also the process-group id).
#                                      Log: $PEERS_LOGDIR/NAME-PORT.log. dnsmasq: PORT must be 69.
#   server_stop PID                    SIGTERM the whole process group, SIGKILL after 3 s
#   client_get NAME HOST PORT REMOTE LOCAL [BLKSIZE] [WINDOWSIZE] [TSIZE]
#   client_put NAME HOST PORT LOCAL REMOTE [BLKSIZE] [WINDOWSIZE] [TSIZE]
#                                      NAME: hpa|atftp|busybox|curl; an empty arg = option not sent.
#                                      TSIZE: 1 = request tsize, empty/0 = don't (busybox and curl always
#                                      send it). Status 0 on success, non-zero on failure (normalised:
#                                      tftp-hpa itself exits 0 on server errors). Unsupported option: 3.
# Environment
#   PEERS_DIR             where atftpd is unpacked and logs go (default ${TMPDIR:-/tmp}/tftp-proto-peers;
#                         tests/interop.rs uses the same default)
#   PEERS_LOGDIR          default $PEERS_DIR/logs
#   ATFTPD_BIN            default $PEERS_DIR/atftpd/root/usr/sbin/atftpd
#   PEERS_CLIENT_TIMEOUT  wall-clock limit of one client run in seconds (default 600)
#   PEERS_ATFTPD_VERBOSE  atftpd --verbose level (default 5; 7 with PEERS_ATFTPD_TRACE=1 logs every packet)
#   PEERS_TASKSET         e.g. "taskset -c 0": prefix for clients; PEERS_SERVER_TASKSET for servers
#
# Peer versions verified (Debian 12): tftp-hpa/tftpd-hpa 5.2+20150808-1.4, atftp/atftpd 0.8.0-3,
# busybox 1:1.35.0-4+deb12u1, curl 7.88.1-10+deb12u15, dnsmasq-base 2.90-4~deb12u2.
# Their option support and quirks: tests/interop/README.md.

PEERS_DIR=${PEERS_DIR:-${TMPDIR:-/tmp}/tftp-proto-peers}
PEERS_LOGDIR=${PEERS_LOGDIR:-$PEERS_DIR/logs}
PEERS_CLIENT_TIMEOUT=${PEERS_CLIENT_TIMEOUT:-600}
ATFTPD_BIN=${ATFTPD_BIN:-$PEERS_DIR/atftpd/root/usr/sbin/atftpd}

_peers_err() { echo "peers.sh: $*" >&2; }

# Finds a program on PATH or in the sbin directories (not on a normal user's PATH).
_peers_which() {
  PATH="$PATH:/usr/sbin:/sbin" command -v "$1" 2>/dev/null
}

peers_missing() {
  local missing=0 p
  for p in tftp in.tftpd atftp busybox curl dnsmasq; do
    _peers_which "$p" >/dev/null || { echo "$p"; missing=1; }
  done
  if _peers_which busybox >/dev/null && ! busybox --list 2>/dev/null | grep -qx tftp; then
    echo "busybox-tftp-applet"; missing=1
  fi
  [ -x "$ATFTPD_BIN" ] || { echo "atftpd($ATFTPD_BIN)"; missing=1; }
  return $missing
}

# The firmware and emulator files tests/firmware.rs uses (Debian 12 paths).
FIRMWARE_FILES=(
  /usr/bin/qemu-system-x86_64
  /usr/lib/u-boot/qemu-x86_64/u-boot.rom
  /usr/share/ovmf/OVMF.fd
  /usr/lib/ipxe/ipxe.efi
  /usr/lib/ipxe/qemu/pxe-e1000.rom
  /usr/lib/ipxe/qemu/efi-e1000.rom
)

firmware_missing() {
  local missing=0 f
  for f in "${FIRMWARE_FILES[@]}"; do
    [ -e "$f" ] || { echo "$f"; missing=1; }
  done
  return $missing
}

firmware_install() {
  peers_install || return 1
  if [ "${PEERS_FORCE_INSTALL:-0}" != 1 ] && firmware_missing >/dev/null; then
    echo "peers.sh: all firmware present"
    return 0
  fi
  if [ "$(id -u)" != 0 ]; then
    _peers_err "firmware_install needs root (apt-get); missing: $(firmware_missing | tr '\n' ' ')"
    return 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  timeout 600 apt-get update || return 1
  timeout 1200 apt-get install -y --no-install-recommends \
    qemu-system-x86 ipxe-qemu u-boot-qemu ovmf ipxe iproute2 || return 1
  if firmware_missing >/dev/null; then
    echo "peers.sh: all firmware installed: $(dpkg-query -W -f='${Package} ${Version}, ' \
      qemu-system-x86 ipxe-qemu u-boot-qemu ovmf ipxe)"
  else
    _peers_err "still missing after install: $(firmware_missing | tr '\n' ' ')"
    return 1
  fi
}

peers_install() {
  if [ "${PEERS_FORCE_INSTALL:-0}" != 1 ] && peers_missing >/dev/null; then
    echo "peers.sh: all interop peers present (atftpd: $ATFTPD_BIN)"
    return 0
  fi
  if [ "$(id -u)" != 0 ]; then
    _peers_err "peers_install needs root (apt-get); missing: $(peers_missing | tr '\n' ' ')"
    return 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  # Keep maintainer scripts from starting daemons (tftpd-hpa would grab :69).
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d
  fi
  timeout 600 apt-get update || return 1
  # dnsmasq-base: the binary only (package "dnsmasq" would add a service on :53).
  timeout 1200 apt-get install -y --no-install-recommends \
    tftp-hpa tftpd-hpa atftp busybox curl dnsmasq-base iproute2 || return 1
  # atftpd Conflicts: tftpd, so it is not installed but unpacked privately; it runs in place.
  mkdir -p "$PEERS_DIR/atftpd" && (
    cd "$PEERS_DIR/atftpd" || exit 1
    rm -f atftpd_*.deb
    timeout 300 apt-get download atftpd || exit 1
    rm -rf root && dpkg -x atftpd_*.deb root
  ) || return 1
  # Its runtime libraries (libc6, libpcre2-8-0, libwrap0) come with tftpd-hpa/atftp; check.
  if ldd "$ATFTPD_BIN" | grep -q 'not found'; then
    _peers_err "atftpd misses libraries:"; ldd "$ATFTPD_BIN" | grep 'not found' >&2
    timeout 600 apt-get install -y --no-install-recommends libpcre2-8-0 libwrap0 || return 1
  fi
  # Stop anything the packages may have started anyway (policy-rc.d should prevent it).
  command -v systemctl >/dev/null 2>&1 && timeout 20 systemctl stop tftpd-hpa 2>/dev/null
  "$ATFTPD_BIN" -V
  if peers_missing >/dev/null; then
    echo "peers.sh: all interop peers installed"
  else
    _peers_err "still missing after install: $(peers_missing | tr '\n' ' ')"
    return 1
  fi
}

peers_versions() {
  dpkg-query -W -f='${Package} ${Version}\n' tftp-hpa tftpd-hpa atftp busybox curl dnsmasq-base 2>/dev/null
  echo "atftpd(private) $(dpkg-deb -f "$PEERS_DIR"/atftpd/atftpd_*.deb Version 2>/dev/null) -> $ATFTPD_BIN"
}

# Waits until something is bound to UDP ADDR:PORT (bounded, 5 s).
_peers_wait_udp() {
  local addr=$1 port=$2
  local pat="$addr:$port"
  [[ $addr == *:* ]] && pat="[$addr]:$port"
  for _ in $(seq 50); do
    ss -Hlun 2>/dev/null | awk '{print $4}' | grep -qxF "$pat" && return 0
    sleep 0.1
  done
  return 1
}

server_start() {
  local name=$1 dir=$2 port=$3 addr=${4:-127.0.0.1} log pid
  [ -d "$dir" ] || { _peers_err "no dir $dir"; return 1; }
  dir=$(cd "$dir" && pwd)
  mkdir -p "$PEERS_LOGDIR"
  log=$PEERS_LOGDIR/$name-$port.log
  local hostport="$addr:$port"
  [[ $addr == *:* ]] && hostport="[$addr]:$port"
  local ts=()
  [ -n "$PEERS_SERVER_TASKSET" ] && read -ra ts <<<"$PEERS_SERVER_TASKSET"
  case $name in
    hpa)
      # -L foreground; -s chroot into dir (clients use bare names); -c allow creating files;
      # -p no extra o+r/o+w checks; -u root: no privilege drop (default nobody); -U 022 umask.
      # It logs only to syslog (without /dev/log: dropped). Forks a child per transfer.
      setsid "${ts[@]}" "$(_peers_which in.tftpd)" -L -a "$hostport" -s -c -p -u root -U 022 -v "$dir" \
        </dev/null >"$log" 2>&1 &
      pid=$! ;;
    atftpd)
      [ -x "$ATFTPD_BIN" ] || { _peers_err "atftpd not unpacked: $ATFTPD_BIN (run peers_install)"; return 1; }
      # atftpd 0.8.0 is IPv4-only: --bind-address ::1 silently binds 0.0.0.0 (IPv4!).
      [[ $addr == *:* ]] && { _peers_err "atftpd 0.8.0 has no IPv6 support"; return 1; }
      local trace=()
      [ "${PEERS_ATFTPD_TRACE:-0}" = 1 ] && trace=(--trace)
      # --daemon --no-fork = foreground; --logfile - = stdout; --user/--group root = no drop
      # (as nobody.nogroup, files must be readable and the dir writable by nobody).
      setsid "${ts[@]}" "$ATFTPD_BIN" --daemon --no-fork --port "$port" --bind-address "$addr" \
        --logfile - --verbose="${PEERS_ATFTPD_VERBOSE:-5}" "${trace[@]}" \
        --user root --group root "$dir" </dev/null >"$log" 2>&1 &
      pid=$! ;;
    dnsmasq)
      [ "$port" = 69 ] || { _peers_err "dnsmasq's TFTP port is fixed at 69"; return 1; }
      # --port=0 no DNS; -C /dev/null no /etc/dnsmasq.conf; -k foreground; --pid-file= none;
      # --log-facility=- log to stderr; --user/--group root no drop (it still serves only
      # world-readable files); --edns-packet-max=65535 lifts its default blksize cap of 2263.
      # Read-only server (WRQ -> ERROR 4).
      setsid "${ts[@]}" "$(_peers_which dnsmasq)" -k -C /dev/null --port=0 --enable-tftp --tftp-root="$dir" \
        --listen-address="$addr" --bind-interfaces --user=root --group=root --pid-file= \
        --log-facility=- --edns-packet-max=65535 </dev/null >"$log" 2>&1 &
      pid=$! ;;
    *) _peers_err "unknown server $name (hpa|atftpd|dnsmasq)"; return 2 ;;
  esac
  if ! _peers_wait_udp "$addr" "$port"; then
    _peers_err "$name did not bind $hostport; log:"
    cat "$log" >&2
    server_stop "$pid"
    return 1
  fi
  echo "$pid"
}

server_stop() {
  local pid=$1
  [ -n "$pid" ] || return 0
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null
  for _ in $(seq 30); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL -- "-$pid" 2>/dev/null
  wait "$pid" 2>/dev/null
  return 0
}

# _peers_client DIR(get|put) NAME HOST PORT REMOTE LOCAL BLKSIZE WINDOWSIZE TSIZE
_peers_client() {
  local dirn=$1 name=$2 host=$3 port=$4 remote=$5 local_=$6 blk=$7 win=$8 tsz=$9
  local to=$PEERS_CLIENT_TIMEOUT ts=()
  [ -n "$PEERS_TASKSET" ] && read -ra ts <<<"$PEERS_TASKSET"
  local rc out
  case $name in
    hpa)
      # The tftp-hpa 5.2 client sends no options at all (no blksize/tsize/windowsize).
      if [ -n "$blk$win" ] || [ "$tsz" = 1 ]; then
        _peers_err "tftp-hpa client: no option support"
        return 3
      fi
      local cmd=get a=$remote b=$local_
      [ "$dirn" = put ] && { cmd=put; a=$local_; b=$remote; }
      # -m binary is required (the default mode is netascii). The exit status is 0 on a server
      # ERROR and on local file errors: parse the output.
      out=$(timeout "$to" "${ts[@]}" tftp "$host" "$port" -m binary -c $cmd "$a" "$b" 2>&1)
      rc=$?
      [ -n "$out" ] && echo "$out" >&2
      [ $rc -ne 0 ] && return $rc
      grep -qE '^(Error code|Transfer timed out|tftp: )' <<<"$out" && return 1
      return 0 ;;
    atftp)
      local opt=()
      [ -n "$blk" ] && opt+=(--option "blksize $blk")
      [ -n "$win" ] && opt+=(--option "windowsize $win")
      # NB: "tsize enable" sends the literal value "enable" (tftpd-hpa ignores it): use "tsize 0".
      [ "$tsz" = 1 ] && opt+=(--option "tsize 0")
      if [ "$dirn" = get ]; then
        timeout "$to" "${ts[@]}" atftp --get -r "$remote" -l "$local_" "${opt[@]}" "$host" "$port"
      else
        timeout "$to" "${ts[@]}" atftp --put -l "$local_" -r "$remote" "${opt[@]}" "$host" "$port"
      fi ;;
    busybox)
      # busybox tftp: only -b BLKSIZE; always sends tsize; no windowsize.
      if [ -n "$win" ] && [ "$win" != 1 ]; then
        _peers_err "busybox tftp: no windowsize"
        return 3
      fi
      local opt=()
      [ -n "$blk" ] && opt=(-b "$blk")
      if [ "$dirn" = get ]; then
        timeout "$to" "${ts[@]}" busybox tftp -g -r "$remote" -l "$local_" "${opt[@]}" "$host" "$port"
      else
        timeout "$to" "${ts[@]}" busybox tftp -p -l "$local_" -r "$remote" "${opt[@]}" "$host" "$port"
      fi ;;
    curl)
      if [ -n "$win" ] && [ "$win" != 1 ]; then
        _peers_err "curl: no windowsize"
        return 3
      fi
      local h=$host
      [[ $h == *:* ]] && h="[$h]"
      local opt=()
      [ -n "$blk" ] && opt=(--tftp-blksize "$blk")
      # curl always sends tsize + blksize 512 + timeout 6 unless --tftp-no-options. It rejects
      # an OACK with tsize 0 (rc 71), so a 0-byte GET only works without options.
      if [ -z "$blk" ] && [ "$tsz" != 1 ]; then opt=(--tftp-no-options); fi
      # Without --max-time curl hangs for minutes when the server goes away.
      if [ "$dirn" = get ]; then
        rm -f "$local_"
        timeout "$to" "${ts[@]}" curl -sS --max-time "$to" "${opt[@]}" -o "$local_" "tftp://$h:$port/$remote"
        rc=$?
        [ $rc -eq 0 ] && [ ! -e "$local_" ] && : >"$local_"
        return $rc
      else
        timeout "$to" "${ts[@]}" curl -sS --max-time "$to" "${opt[@]}" -T "$local_" "tftp://$h:$port/$remote"
      fi ;;
    *) _peers_err "unknown client $name (hpa|atftp|busybox|curl)"; return 2 ;;
  esac
}

client_get() { _peers_client get "$1" "$2" "$3" "$4" "$5" "$6" "$7" "$8"; }
client_put() { _peers_client put "$1" "$2" "$3" "$5" "$4" "$6" "$7" "$8"; }

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
  [ $# -ge 1 ] || { sed -n '2,32p' "$0"; exit 2; }
  "$@"
fi
