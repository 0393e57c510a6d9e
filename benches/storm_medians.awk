# benches/storm_medians.awk — the summary rows of a boot storm run over several rounds
# (benches/storm.sh --rounds, benches/device_storm.sh ROUNDS).
#
#   awk -F'|' -v set="N x BYTES BLKxWIN" -f benches/storm_medians.awk ROWS
#
# ROWS: the storm's table rows of one set, `| set | server | ok/n | MB/s | ...`. Prints, per
# server in order of first appearance, its median MB/s over the rounds where every client got
# the whole file, then one row of each server's median against tftpd-hpa's ("hpa").
{
  srv = $3; gsub(/ /, "", srv)
  if (!(srv in seen)) { seen[srv] = 1; names[++m] = srv }
  # A round where clients failed moved less than it claims: it does not count.
  split($4, o, "/")
  if (o[1] + 0 != o[2] + 0) { failed[srv]++; next }
  v[srv, ++k[srv]] = $5 + 0
}
function median(srv,   i, j, t, a, c) {
  c = k[srv]
  for (i = 1; i <= c; i++) a[i] = v[srv, i]
  for (i = 2; i <= c; i++) for (j = i; j > 1 && a[j - 1] > a[j]; j--) { t = a[j]; a[j] = a[j - 1]; a[j - 1] = t }
  return c % 2 ? a[(c + 1) / 2] : (a[c / 2] + a[c / 2 + 1]) / 2
}
END {
  for (i = 1; i <= m; i++) {
    s = names[i]
    if (k[s] == 0) { printf "| %s | %s | (clients failed in every round) | | | | |\n", set, s; continue }
    med[s] = median(s)
    printf "| %s | %s median of %d%s | | %.1f | | | |\n", set, s, k[s],
      failed[s] ? sprintf(" (%d with failed clients left out)", failed[s]) : "", med[s]
  }
  if ("hpa" in med && med["hpa"] > 0) {
    line = ""
    for (i = 1; i <= m; i++) if (names[i] != "hpa" && names[i] in med) line = line sprintf(" %s/hpa %.2f", names[i], med[names[i]] / med["hpa"])
    if (line != "") printf "| %s | medians against hpa: |%s | | | | |\n", set, line
  }
}
