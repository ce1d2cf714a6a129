// SPDX-License-Identifier: GPL-2.0

//! Launcher errors: a one-line message for the user and the process exit status it maps to.

use std::fmt;

/// Exit statuses of launcher errors, from sysexits.h so they are recognisable and stay clear
/// of the guest's own status codes (0..=63) and of the guest outcome codes (80..).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Bad command line (EX_USAGE).
    Usage = 64,
    /// The guest image is malformed or does not fit (EX_DATAERR).
    Image = 65,
    /// The guest image cannot be read (EX_NOINPUT).
    NoInput = 66,
    /// The backend device is missing or refused the VM (EX_UNAVAILABLE).
    Unavailable = 69,
    /// A backend call failed while running (EX_OSERR).
    Os = 71,
    /// Output could not be written (EX_IOERR).
    Output = 74,
}

/// An error with the message shown to the user.
#[derive(Debug, PartialEq, Eq)]
pub struct Error {
    pub kind: Kind,
    pub msg: String,
}

impl Error {
    pub fn new(kind: Kind, msg: impl Into<String>) -> Self {
        Self { kind, msg: msg.into() }
    }
    pub fn usage(msg: impl Into<String>) -> Self {
        Self::new(Kind::Usage, msg)
    }
    pub fn image(msg: impl Into<String>) -> Self {
        Self::new(Kind::Image, msg)
    }
    pub fn os(msg: impl Into<String>) -> Self {
        Self::new(Kind::Os, msg)
    }
    /// Process exit status for this error.
    pub fn status(&self) -> u8 {
        self.kind as u8
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.msg)
    }
}

impl std::error::Error for Error {}

pub type Result<T> = std::result::Result<T, Error>;
