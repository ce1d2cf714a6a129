// SPDX-License-Identifier: GPL-2.0

//! Launcher errors: a one-line message for the user and the process exit status it maps to.

use std::fmt;

/// Exit statuses of launcher errors. Guests own 0..=128 (their exit-port status) and shells
/// use 128 + signal number up to 159, so launcher errors are 160..=165 and guest outcomes
/// other than an exit-port status are 170..=180 (`runloop::Outcome::exit_status`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Bad command line.
    Usage = 160,
    /// The guest image is malformed or does not fit.
    Image = 161,
    /// The guest image cannot be read.
    NoInput = 162,
    /// The backend device is missing or refused the VM.
    Unavailable = 163,
    /// A backend call failed while running.
    Os = 164,
    /// Output could not be written.
    Output = 165,
}

/// An error with the message shown to the user.
#[derive(Debug, PartialEq, Eq)]
pub struct Error {
    pub kind: Kind,
    pub msg: String,
}

impl Error {
    pub fn new(kind: Kind, msg: impl Into<String>) -> Self {
        Self {
            kind,
            msg: msg.into(),
        }
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
