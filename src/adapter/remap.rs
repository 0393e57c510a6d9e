//! File-name remapping rules in tftp-hpa's `-m` format (`serve --map-file FILE`), applied to
//! each requested name before it is looked up; the root policy applies to the result, so no
//! rule can lead outside the root.
//!
//! One rule per line: `FLAGS REGEX [REPLACEMENT]`; blank lines and `#` comments are skipped,
//! `\` escapes a space or `#` in a field. The rules are tried in order on the name as it
//! stands. Flags:
//!
//! * `r`: replace the match with REPLACEMENT (`\0` the whole match, `\1`-`\9` its groups,
//!   `\i` the client's IP address, `\x` it in hex, `\\` a backslash);
//! * `g`: replace every match, not only the first;
//! * `i`: match ignoring case;
//! * `e`: when the rule matches, stop (no later rule runs);
//! * `s`: when the rule matches, start again from the first rule (at most 32 times);
//! * `a`: when the rule matches, refuse the request (ERROR 2);
//! * `G`, `P`: only for reads (GET), only for writes (PUT); `4`, `6`: only for IPv4, IPv6
//!   clients; `~` inverts those conditions.
//!
//! The expressions are those of the `regex` crate (POSIX extended syntax is mostly the same),
//! matched in linear time: a pathological rule cannot hang a request.

use std::borrow::Cow;
use std::fmt;
use std::net::IpAddr;
use std::path::Path;
use std::prelude::rust_2021::*;

use regex::bytes::{Captures, Regex, RegexBuilder};

use crate::wire::RequestKind;

/// Longest name a rewrite may produce (longer results refuse the request).
const MAX_NAME: usize = 4096;

/// Restarts (`s`) allowed while remapping one name.
const MAX_RESTARTS: usize = 32;

/// A rules file that does not parse: where and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemapError {
    /// The 1-based line number.
    pub line: usize,
    /// What is wrong with it.
    pub message: String,
}

impl fmt::Display for RemapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

impl std::error::Error for RemapError {}

#[derive(Debug, Clone)]
struct Rule {
    regex: Regex,
    replacement: Option<Vec<u8>>,
    global: bool,
    end: bool,
    restart: bool,
    abort: bool,
    get_only: bool,
    put_only: bool,
    v4_only: bool,
    v6_only: bool,
    invert: bool,
}

impl Rule {
    /// Whether the rule's conditions (`G`, `P`, `4`, `6`, `~`) let it apply.
    fn applies(&self, kind: RequestKind, client: IpAddr) -> bool {
        let conditioned = self.get_only || self.put_only || self.v4_only || self.v6_only;
        if !conditioned {
            return true;
        }
        let kind_ok =
            (!self.get_only || kind == RequestKind::Read) && (!self.put_only || kind == RequestKind::Write);
        let v4 = client.to_canonical().is_ipv4();
        let family_ok = (!self.v4_only || v4) && (!self.v6_only || !v4);
        (kind_ok && family_ok) != self.invert
    }
}

/// Parsed remapping rules.
#[derive(Debug, Clone, Default)]
pub struct Remap {
    rules: Vec<Rule>,
}

/// What the rules made of a name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Remapped<'a> {
    /// Look this name up.
    Name(Cow<'a, [u8]>),
    /// An `a` rule matched (or a rewrite grew too long): refuse the request.
    Refused,
}

/// Splits a rules line into its fields: whitespace separates them, `\` keeps the next
/// character (a space, a `#`, a backslash) in the field, an unescaped `#` ends the line.
fn fields(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_field = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '#' => break,
            '\\' => {
                in_field = true;
                match chars.next() {
                    // An escaped space or '#' is the character itself; other escapes stay
                    // for the regex or the replacement to read.
                    Some(n @ (' ' | '\t' | '#')) => cur.push(n),
                    Some(n) => {
                        cur.push('\\');
                        cur.push(n);
                    }
                    None => cur.push('\\'),
                }
            }
            c if c.is_whitespace() => {
                if in_field {
                    out.push(std::mem::take(&mut cur));
                    in_field = false;
                }
            }
            c => {
                in_field = true;
                cur.push(c);
            }
        }
    }
    if in_field {
        out.push(cur);
    }
    out
}

impl Remap {
    /// Reads and parses a rules file.
    pub fn load(path: &Path) -> Result<Remap, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Remap::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Parses rules (see the module docs).
    pub fn parse(text: &str) -> Result<Remap, RemapError> {
        let mut rules = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let bad = |message: String| RemapError { line: n + 1, message };
            let f = fields(line);
            if f.is_empty() {
                continue;
            }
            let (flags, pattern) = match (f.first(), f.get(1)) {
                (Some(flags), Some(pattern)) => (flags, pattern),
                _ => return Err(bad(format!("expected FLAGS REGEX [REPLACEMENT], got {line:?}"))),
            };
            if f.len() > 3 {
                return Err(bad(format!(
                    "too many fields ({}): escape spaces inside a field with \\",
                    f.len()
                )));
            }
            let mut rewrite = false;
            let mut ignore_case = false;
            let mut flag = |c: char| -> Result<(), RemapError> {
                match c {
                    'r' => rewrite = true,
                    'i' => ignore_case = true,
                    'g' | 'e' | 's' | 'a' | 'G' | 'P' | '4' | '6' | '~' => {}
                    other => {
                        return Err(bad(format!(
                            "unknown flag {other:?} in {flags:?} (known: r g i e s a G P 4 6 ~)"
                        )))
                    }
                }
                Ok(())
            };
            for c in flags.chars() {
                flag(c)?;
            }
            let has = |c: char| flags.contains(c);
            let regex = RegexBuilder::new(pattern)
                .case_insensitive(ignore_case)
                .unicode(false)
                .build()
                .map_err(|e| bad(format!("regular expression {pattern:?}: {e}")))?;
            let replacement = match (rewrite, f.get(2)) {
                (true, Some(r)) => Some(r.as_bytes().to_vec()),
                (true, None) => return Err(bad("flag r needs a replacement".into())),
                (false, Some(r)) => return Err(bad(format!("a replacement ({r:?}) without flag r"))),
                (false, None) => None,
            };
            if let Some(r) = &replacement {
                check_replacement(r, regex.captures_len()).map_err(bad)?;
            }
            let rule = Rule {
                regex,
                replacement,
                global: has('g'),
                end: has('e'),
                restart: has('s'),
                abort: has('a'),
                get_only: has('G'),
                put_only: has('P'),
                v4_only: has('4'),
                v6_only: has('6'),
                invert: has('~'),
            };
            rules.push(rule);
        }
        Ok(Remap { rules })
    }

    /// Whether there are no rules.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Applies the rules to `name`, requested by `client` for `kind`.
    pub fn apply<'a>(&self, name: &'a [u8], kind: RequestKind, client: IpAddr) -> Remapped<'a> {
        let mut name = Cow::Borrowed(name);
        let mut restarts = 0;
        let mut i = 0;
        while i < self.rules.len() {
            let rule = &self.rules[i];
            i += 1;
            if !rule.applies(kind, client) || !rule.regex.is_match(&name) {
                continue;
            }
            if rule.abort {
                return Remapped::Refused;
            }
            if let Some(r) = &rule.replacement {
                let expand = |caps: &Captures<'_>| {
                    let mut out = Vec::new();
                    expand(r, caps, client, &mut out);
                    out
                };
                let next = if rule.global {
                    rule.regex.replace_all(&name, expand)
                } else {
                    rule.regex.replacen(&name, 1, expand)
                };
                let next = next.into_owned();
                if next.len() > MAX_NAME {
                    return Remapped::Refused;
                }
                name = Cow::Owned(next);
            }
            if rule.end {
                break;
            }
            if rule.restart && restarts < MAX_RESTARTS {
                restarts += 1;
                i = 0;
            }
        }
        Remapped::Name(name)
    }
}

/// Checks a replacement's escapes: groups that exist, known letters.
fn check_replacement(r: &[u8], groups: usize) -> Result<(), String> {
    let mut it = r.iter();
    while let Some(&b) = it.next() {
        if b != b'\\' {
            continue;
        }
        match it.next() {
            Some(d @ b'0'..=b'9') => {
                let g = usize::from(d - b'0');
                if g >= groups {
                    return Err(format!(
                        "replacement uses \\{g} but the expression has {} group(s)",
                        groups - 1
                    ));
                }
            }
            Some(b'i' | b'x' | b'\\') => {}
            Some(&other) => {
                return Err(format!(
                    "unknown escape \\{} in the replacement (known: \\0-\\9 \\i \\x \\\\)",
                    char::from(other)
                ))
            }
            None => return Err("the replacement ends with a lone \\".into()),
        }
    }
    Ok(())
}

/// Writes replacement `r` for one match into `out`.
fn expand(r: &[u8], caps: &Captures<'_>, client: IpAddr, out: &mut Vec<u8>) {
    let mut it = r.iter();
    while let Some(&b) = it.next() {
        if b != b'\\' {
            out.push(b);
            continue;
        }
        match it.next() {
            Some(d @ b'0'..=b'9') => {
                if let Some(m) = caps.get(usize::from(d - b'0')) {
                    out.extend_from_slice(m.as_bytes());
                }
            }
            Some(b'i') => out.extend_from_slice(client.to_canonical().to_string().as_bytes()),
            Some(b'x') => {
                let hex = match client.to_canonical() {
                    IpAddr::V4(a) => a.octets().iter().map(|o| format!("{o:02X}")).collect::<String>(),
                    IpAddr::V6(a) => a.octets().iter().map(|o| format!("{o:02X}")).collect::<String>(),
                };
                out.extend_from_slice(hex.as_bytes());
            }
            Some(&other) => out.push(other),
            None => out.push(b'\\'),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Remap, Remapped};
    use crate::wire::RequestKind;
    use std::net::IpAddr;
    use std::prelude::rust_2021::{String, ToString};

    fn ip() -> IpAddr {
        "192.168.1.20".parse().unwrap()
    }

    fn map(rules: &str, name: &str) -> Option<String> {
        match Remap::parse(rules)
            .unwrap()
            .apply(name.as_bytes(), RequestKind::Read, ip())
        {
            Remapped::Name(n) => Some(String::from_utf8(n.into_owned()).unwrap()),
            Remapped::Refused => None,
        }
    }

    #[test]
    fn tftp_hpa_style_rules() {
        let rules = r"
# WinPE asks with backslashes and mixed case
rg  \\  /
ri  ^/?tftpboot/  /    # ROMs that send the server's path
r   ^pxelinux\.cfg/01-(..)-(..)  cfg/\2\1
re  ^stop$  stopped
r   ^stopped$  never
a   ^secret
r   ^(host)$  \1-\i-\x
";
        assert_eq!(map(rules, "\\Boot\\BCD").as_deref(), Some("/Boot/BCD"));
        assert_eq!(map(rules, "/TFTPBOOT/pxelinux.0").as_deref(), Some("/pxelinux.0"));
        assert_eq!(
            map(rules, "pxelinux.cfg/01-aa-bb-cc").as_deref(),
            Some("cfg/bbaa-cc")
        );
        assert_eq!(map(rules, "stop").as_deref(), Some("stopped"), "e ends the rules");
        assert_eq!(map(rules, "secret.txt"), None, "a refuses");
        assert_eq!(map(rules, "host").as_deref(), Some("host-192.168.1.20-C0A80114"));
        assert_eq!(map(rules, "plain").as_deref(), Some("plain"));
    }

    #[test]
    fn global_and_first_match_only() {
        assert_eq!(map("r a b", "aaa").as_deref(), Some("baa"));
        assert_eq!(map("rg a b", "aaa").as_deref(), Some("bbb"));
        assert_eq!(
            map(r"r ^(.*)\.EFI$ \1.efi", "BOOTX64.EFI").as_deref(),
            Some("BOOTX64.efi")
        );
        assert_eq!(
            map(r"ri ^(.*)\.efi$ \1.efi", "BOOTX64.EFI").as_deref(),
            Some("BOOTX64.efi")
        );
        assert_eq!(map(r"r a\ b c", "xa by").as_deref(), Some("xcy"), "escaped space");
    }

    #[test]
    fn conditions_and_restart() {
        let rules = "rG ^x$ read\nrP ^x$ write";
        let r = Remap::parse(rules).unwrap();
        let get = |k| match r.apply(b"x", k, ip()) {
            Remapped::Name(n) => n.into_owned(),
            Remapped::Refused => panic!(),
        };
        assert_eq!(get(RequestKind::Read), b"read");
        assert_eq!(get(RequestKind::Write), b"write");
        assert_eq!(map("r6 ^x$ six\nr4 ^x$ four", "x").as_deref(), Some("four"));
        assert_eq!(map("r~6 ^x$ notsix", "x").as_deref(), Some("notsix"));
        // s starts over, boundedly: a rule that always matches stops after the limit.
        assert_eq!(map("rs ^a a", "a").as_deref(), Some("a"));
        assert_eq!(map("r ^b$ c\nrs ^a$ b", "a").as_deref(), Some("c"));
    }

    #[test]
    fn broken_files_name_the_line() {
        for (text, line, what) in [
            ("r ^a$ b\nx ^a$ b", 2, "unknown flag 'x'"),
            ("\n\nr (unclosed b", 3, "regular expression"),
            ("r ^a$", 1, "needs a replacement"),
            ("e ^a$ b", 1, "without flag r"),
            (r"r ^(a)$ \2", 1, "group"),
            (r"r ^a$ \q", 1, "unknown escape"),
            ("r", 1, "expected FLAGS REGEX"),
            ("r a b c", 1, "too many fields"),
        ] {
            let e = Remap::parse(text).unwrap_err();
            assert_eq!(e.line, line, "{text:?}: {e}");
            assert!(e.to_string().contains(what), "{text:?}: {e}");
        }
    }

    #[test]
    fn a_pathological_expression_is_matched_in_linear_time() {
        // Exponential for a backtracking engine; immediate here.
        let long = "a".repeat(5000) + "c";
        assert_eq!(map("r ^(a*)*b$ x", &long).as_deref(), Some(long.as_str()));
        assert_eq!(map("r ^(a|aa)+$ x", &"a".repeat(5000)).as_deref(), Some("x"));
    }
}
