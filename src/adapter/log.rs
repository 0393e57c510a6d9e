//! The server's log lines, one per request: a finished transfer ([`TransferReport`]) or a
//! refused request ([`Refusal`]), as text for people or as one JSON object per line
//! (`serve --log-format json`) for log pipelines.
//!
//! Every line names the client, the operation, the file, the options asked, the outcome and,
//! where an ERROR was sent or received, its code. Text lines of finished transfers keep their
//! historical field order (`PEER read|write "NAME" blksize=B windowsize=W bytes=N time=Ts
//! retransmissions=R spurious=S asked=OPTIONS RESULT`), refusals read
//! `PEER refused read|write "NAME" asked=OPTIONS ERROR CODE (TEXT)`.

use std::fmt::Write as _;
use std::prelude::rust_2021::*;

use super::mio_server::Refusal;
use crate::engine::TransferError;
use crate::error_code::ErrorCode;
use crate::options::Options;
use crate::server::{TransferReport, TransferResult};
use crate::wire::RequestKind;

fn op(kind: RequestKind) -> &'static str {
    match kind {
        RequestKind::Read => "read",
        RequestKind::Write => "write",
    }
}

/// The options present, by name, in a fixed order.
fn present(o: &Options) -> impl Iterator<Item = (&'static str, u64)> {
    [
        ("blksize", o.blksize.map(u64::from)),
        ("windowsize", o.windowsize.map(u64::from)),
        ("timeout", o.timeout.map(u64::from)),
        ("tsize", o.tsize),
        ("rollover", o.rollover.map(u64::from)),
    ]
    .into_iter()
    .filter_map(|(name, v)| Some((name, v?)))
}

/// The known options asked, as `name:value` pairs (`none` when there were none).
fn asked_text(o: &Options) -> String {
    let parts: Vec<String> = present(o).map(|(n, v)| format!("{n}:{v}")).collect();
    if parts.is_empty() {
        "none".to_string()
    } else {
        parts.join(",")
    }
}

/// The ERROR code a failed transfer sent or received, where there was one.
fn failure_code(e: &TransferError) -> Option<ErrorCode> {
    match e {
        TransferError::Peer(p) => Some(p.code),
        TransferError::Storage(s) => Some(s.error_code()),
        TransferError::Protocol(_) => Some(ErrorCode::IllegalOperation),
        TransferError::Oack(_) => Some(ErrorCode::OptionNegotiation),
        TransferError::Refused { code, .. } => Some(*code),
        TransferError::TooLarge => Some(ErrorCode::DiskFull),
        _ => None,
    }
}

/// A one-line log record of a finished transfer.
pub fn format_report(report: &TransferReport<()>) -> String {
    let name = String::from_utf8_lossy(&report.filename);
    let secs = (report.ended - report.stats.started).as_secs_f64();
    let p = report.params;
    let result = match &report.result {
        TransferResult::Completed(_) => "ok".to_string(),
        TransferResult::Declined => "declined (options probe)".to_string(),
        TransferResult::Displaced => "displaced (no answer from the client; the server was full)".to_string(),
        TransferResult::Failed(e) => match failure_code(e) {
            Some(code) => format!("failed: ERROR {}: {e}", code.as_u16()),
            None => format!("failed: {e}"),
        },
    };
    let ignored = if report.ignored_option.is_empty() {
        String::new()
    } else {
        format!(
            " (ignored option \"{}\" without a value)",
            String::from_utf8_lossy(&report.ignored_option).escape_debug()
        )
    };
    format!(
        "{peer} {dir} \"{name}\" blksize={bs} windowsize={ws} bytes={bytes} time={secs:.3}s retransmissions={rt} spurious={sp} asked={asked} {result}{ignored}",
        peer = report.peer,
        dir = op(report.kind),
        bs = p.blksize,
        ws = p.windowsize,
        bytes = report.stats.bytes,
        rt = report.stats.retransmissions,
        sp = report.stats.spurious_retransmissions,
        asked = asked_text(&report.requested),
    )
}

/// A one-line log record of a refused request.
pub fn format_refusal(r: &Refusal) -> String {
    format!(
        "{} refused {} \"{}\" asked={} ERROR {} ({})",
        r.peer,
        op(r.kind),
        String::from_utf8_lossy(&r.filename),
        asked_text(&r.requested),
        r.code.as_u16(),
        r.message
    )
}

/// `s` as a JSON string literal.
fn json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// The options as a JSON object (only those present).
fn json_options(out: &mut String, o: &Options) {
    let fields: Vec<String> = present(o).map(|(n, v)| format!("\"{n}\":{v}")).collect();
    out.push('{');
    out.push_str(&fields.join(","));
    out.push('}');
}

/// The fields every record starts with.
fn json_head(
    out: &mut String,
    event: &str,
    peer: &std::net::SocketAddr,
    local: &std::net::SocketAddr,
    kind: RequestKind,
    name: &[u8],
) {
    out.push_str("{\"event\":");
    json_str(out, event);
    out.push_str(",\"peer\":");
    json_str(out, &peer.to_string());
    out.push_str(",\"local\":");
    json_str(out, &local.to_string());
    out.push_str(",\"op\":");
    json_str(out, op(kind));
    out.push_str(",\"file\":");
    json_str(out, &String::from_utf8_lossy(name));
}

/// A finished transfer as one JSON object: `event` "transfer", `peer`, `local`, `op`, `file`,
/// `asked` and `granted` (option objects), `outcome` ("ok", "declined", "displaced" or
/// "failed"), `error_code` and `error` (null unless it failed), `bytes`, `duration_s`,
/// `retransmissions`, `spurious`.
pub fn format_report_json(report: &TransferReport<()>) -> String {
    let mut out = String::with_capacity(320);
    json_head(
        &mut out,
        "transfer",
        &report.peer,
        &report.local,
        report.kind,
        &report.filename,
    );
    out.push_str(",\"asked\":");
    json_options(&mut out, &report.requested);
    let p = report.params;
    let granted = Options {
        blksize: Some(p.blksize),
        windowsize: Some(p.windowsize),
        timeout: p.timeout,
        tsize: p.tsize,
        rollover: p.rollover,
    };
    out.push_str(",\"granted\":");
    json_options(&mut out, &granted);
    let (outcome, code, error) = match &report.result {
        TransferResult::Completed(_) => ("ok", None, None),
        TransferResult::Declined => ("declined", Some(ErrorCode::OptionNegotiation), None),
        TransferResult::Displaced => ("displaced", Some(ErrorCode::NotDefined), None),
        TransferResult::Failed(e) => ("failed", failure_code(e), Some(e.to_string())),
    };
    out.push_str(",\"outcome\":");
    json_str(&mut out, outcome);
    match code {
        Some(c) => {
            let _ = write!(out, ",\"error_code\":{}", c.as_u16());
        }
        None => out.push_str(",\"error_code\":null"),
    }
    out.push_str(",\"error\":");
    match error {
        Some(e) => json_str(&mut out, &e),
        None => out.push_str("null"),
    }
    let secs = (report.ended - report.stats.started).as_secs_f64();
    let _ = write!(
        out,
        ",\"bytes\":{},\"duration_s\":{secs:.6},\"retransmissions\":{},\"spurious\":{}}}",
        report.stats.bytes, report.stats.retransmissions, report.stats.spurious_retransmissions
    );
    out
}

/// A refused request as one JSON object: `event` "refused", `peer`, `local`, `op`, `file`,
/// `asked`, `granted` (null), `outcome` "refused", `error_code`, `error`, `bytes` 0,
/// `duration_s` 0.
pub fn format_refusal_json(r: &Refusal) -> String {
    let mut out = String::with_capacity(256);
    json_head(&mut out, "refused", &r.peer, &r.local, r.kind, &r.filename);
    out.push_str(",\"asked\":");
    json_options(&mut out, &r.requested);
    out.push_str(",\"granted\":null,\"outcome\":\"refused\"");
    let _ = write!(out, ",\"error_code\":{},\"error\":", r.code.as_u16());
    json_str(&mut out, &r.message);
    out.push_str(",\"bytes\":0,\"duration_s\":0,\"retransmissions\":0,\"spurious\":0}");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_strings_are_escaped() {
        let mut out = String::new();
        json_str(&mut out, "a\"b\\c\nd\u{1}é");
        assert_eq!(out, "\"a\\\"b\\\\c\\nd\\u0001é\"");
    }

    #[test]
    fn refusal_lines_in_both_formats() {
        let r = Refusal {
            peer: "10.0.0.2:40000".parse().unwrap(),
            local: "10.0.0.1:69".parse().unwrap(),
            kind: RequestKind::Read,
            filename: b"pxelinux.\"0".to_vec(),
            requested: Options {
                blksize: Some(1468),
                tsize: Some(0),
                ..Options::NONE
            },
            code: ErrorCode::FileNotFound,
            message: "File not found".into(),
        };
        assert_eq!(
            format_refusal(&r),
            "10.0.0.2:40000 refused read \"pxelinux.\"0\" asked=blksize:1468,tsize:0 ERROR 1 (File not found)"
        );
        assert_eq!(
            format_refusal_json(&r),
            "{\"event\":\"refused\",\"peer\":\"10.0.0.2:40000\",\"local\":\"10.0.0.1:69\",\"op\":\"read\",\
             \"file\":\"pxelinux.\\\"0\",\"asked\":{\"blksize\":1468,\"tsize\":0},\"granted\":null,\
             \"outcome\":\"refused\",\"error_code\":1,\"error\":\"File not found\",\"bytes\":0,\
             \"duration_s\":0,\"retransmissions\":0,\"spurious\":0}"
        );
    }
}
