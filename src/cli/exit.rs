//! Exit statuses, and a failure that carries one.

/// Success.
pub const EXIT_OK: u8 = 0;
/// Any other failure.
pub const EXIT_ERROR: u8 = 1;
/// The command line was wrong.
pub const EXIT_USAGE: u8 = 2;
/// The daemon refused: unauthenticated, denied or rate limited.
pub const EXIT_DENIED: u8 = 3;
/// The daemon could not be reached.
pub const EXIT_UNREACHABLE: u8 = 4;
/// A log or bundle failed verification.
pub const EXIT_VERIFY_FAILED: u8 = 5;

/// A failure with its exit status.
#[derive(Debug)]
pub struct Exit {
    /// The status to exit with.
    pub code: u8,
    /// What went wrong, printed once by `main`.
    pub error: anyhow::Error,
}

impl Exit {
    /// A failure with a status other than [`EXIT_ERROR`].
    pub fn new(code: u8, error: impl Into<anyhow::Error>) -> Self {
        Self {
            code,
            error: error.into(),
        }
    }
}

impl<E: Into<anyhow::Error>> From<E> for Exit {
    fn from(error: E) -> Self {
        Exit {
            code: EXIT_ERROR,
            error: error.into(),
        }
    }
}
