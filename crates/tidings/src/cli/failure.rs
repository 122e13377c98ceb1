//! How the `tidings` command fails: one line on stderr that says what to do, and an exit code
//! per kind of mistake, so scripts can tell them apart. Never a backtrace: a user's mistake is
//! not a crash, whatever `RUST_BACKTRACE` says.

/// The kinds of failure, each with its exit code (`clap` exits with 2 for a malformed command
/// line itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Anything else (1).
    Other,
    /// The configuration (flags, environment, config file) is invalid (2, like a bad flag).
    Config,
    /// The address to listen on cannot be bound: taken, or not allowed (3).
    Address,
    /// The store cannot be opened or reached (4).
    Store,
    /// The hub refused the request: a 4xx such as 401 (no or a bad token), 400, 409 (5).
    Refused,
    /// The hub cannot be reached (6).
    Unreachable,
}

impl Kind {
    /// The process exit code.
    pub fn code(self) -> u8 {
        match self {
            Self::Other => 1,
            Self::Config => 2,
            Self::Address => 3,
            Self::Store => 4,
            Self::Refused => 5,
            Self::Unreachable => 6,
        }
    }
}

/// A failure of a `tidings` command: its kind and what went wrong.
#[derive(Debug)]
pub struct Failure {
    pub kind: Kind,
    pub error: anyhow::Error,
}

impl Failure {
    pub fn new(kind: Kind, error: impl Into<anyhow::Error>) -> Self {
        Self {
            kind,
            error: error.into(),
        }
    }

    /// The one line to print: the error and its causes, joined by `: `, without line breaks.
    pub fn line(&self) -> String {
        let mut line = format!("{:#}", self.error);
        line = line.replace(['\n', '\r'], " ");
        line
    }
}

impl From<anyhow::Error> for Failure {
    fn from(error: anyhow::Error) -> Self {
        Self {
            kind: Kind::Other,
            error,
        }
    }
}

/// Tags an error with its kind: `result.kind(Kind::Store)?`.
pub trait ResultExt<T> {
    fn kind(self, kind: Kind) -> Result<T, Failure>;
}

impl<T, E: Into<anyhow::Error>> ResultExt<T> for Result<T, E> {
    fn kind(self, kind: Kind) -> Result<T, Failure> {
        self.map_err(|e| Failure::new(kind, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn the_line_joins_the_causes_on_one_line() {
        let err: Result<(), _> = Err(anyhow::anyhow!("unable to open\ndatabase file"));
        let f = err
            .context("opening the SQLite store at /x.db")
            .kind(Kind::Store)
            .unwrap_err();
        assert_eq!(
            f.line(),
            "opening the SQLite store at /x.db: unable to open database file"
        );
        assert_eq!(f.kind.code(), 4);
    }
}
