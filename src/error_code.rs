//! TFTP ERROR codes (RFC 1350 codes 0-7, RFC 2347 code 8) and their standard meanings.

/// The code carried by an ERROR packet.
///
/// ```
/// use tftp_proto::ErrorCode;
/// assert_eq!(ErrorCode::from_u16(1), ErrorCode::FileNotFound);
/// assert_eq!(ErrorCode::from_u16(42), ErrorCode::Other(42));
/// assert_eq!(ErrorCode::OptionNegotiation.as_u16(), 8);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum ErrorCode {
    /// 0: not defined, see the error message.
    NotDefined,
    /// 1: file not found.
    FileNotFound,
    /// 2: access violation.
    AccessViolation,
    /// 3: disk full or allocation exceeded.
    DiskFull,
    /// 4: illegal TFTP operation.
    IllegalOperation,
    /// 5: unknown transfer ID.
    UnknownTid,
    /// 6: file already exists.
    FileExists,
    /// 7: no such user.
    NoSuchUser,
    /// 8: option negotiation failed (RFC 2347).
    OptionNegotiation,
    /// Any other code, kept as received. Never holds 0-8 when built by [`ErrorCode::from_u16`].
    Other(u16),
}

impl ErrorCode {
    /// The code for a wire value.
    pub const fn from_u16(code: u16) -> Self {
        match code {
            0 => ErrorCode::NotDefined,
            1 => ErrorCode::FileNotFound,
            2 => ErrorCode::AccessViolation,
            3 => ErrorCode::DiskFull,
            4 => ErrorCode::IllegalOperation,
            5 => ErrorCode::UnknownTid,
            6 => ErrorCode::FileExists,
            7 => ErrorCode::NoSuchUser,
            8 => ErrorCode::OptionNegotiation,
            other => ErrorCode::Other(other),
        }
    }

    /// The wire value.
    pub const fn as_u16(self) -> u16 {
        match self {
            ErrorCode::NotDefined => 0,
            ErrorCode::FileNotFound => 1,
            ErrorCode::AccessViolation => 2,
            ErrorCode::DiskFull => 3,
            ErrorCode::IllegalOperation => 4,
            ErrorCode::UnknownTid => 5,
            ErrorCode::FileExists => 6,
            ErrorCode::NoSuchUser => 7,
            ErrorCode::OptionNegotiation => 8,
            ErrorCode::Other(c) => c,
        }
    }

    /// The standard meaning, usable as ERROR message text.
    pub const fn description(self) -> &'static str {
        match self {
            ErrorCode::NotDefined => "Not defined",
            ErrorCode::FileNotFound => "File not found",
            ErrorCode::AccessViolation => "Access violation",
            ErrorCode::DiskFull => "Disk full or allocation exceeded",
            ErrorCode::IllegalOperation => "Illegal TFTP operation",
            ErrorCode::UnknownTid => "Unknown transfer ID",
            ErrorCode::FileExists => "File already exists",
            ErrorCode::NoSuchUser => "No such user",
            ErrorCode::OptionNegotiation => "Option negotiation failed",
            ErrorCode::Other(_) => "Unknown error code",
        }
    }
}

impl From<u16> for ErrorCode {
    fn from(code: u16) -> Self {
        ErrorCode::from_u16(code)
    }
}

impl From<ErrorCode> for u16 {
    fn from(code: ErrorCode) -> u16 {
        code.as_u16()
    }
}

impl core::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{} ({})", self.description(), self.as_u16())
    }
}

#[cfg(feature = "arbitrary")]
impl<'a> arbitrary::Arbitrary<'a> for ErrorCode {
    fn arbitrary(u: &mut arbitrary::Unstructured<'a>) -> arbitrary::Result<Self> {
        Ok(ErrorCode::from_u16(u.arbitrary()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_round_trips() {
        for c in 0..=u16::MAX {
            assert_eq!(ErrorCode::from_u16(c).as_u16(), c);
        }
        assert_eq!(ErrorCode::from_u16(0), ErrorCode::NotDefined);
        assert_eq!(ErrorCode::from_u16(5), ErrorCode::UnknownTid);
        assert_eq!(ErrorCode::from_u16(8), ErrorCode::OptionNegotiation);
        assert_eq!(ErrorCode::from_u16(9), ErrorCode::Other(9));
        assert_eq!(
            ErrorCode::DiskFull.description(),
            "Disk full or allocation exceeded"
        );
    }
}
