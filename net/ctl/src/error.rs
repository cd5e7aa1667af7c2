//! The one error type of `rtctl` and the one place where errors become exit
//! codes (documented in `rtctl --help`).

use std::fmt;
use std::io;

/// Result of anything `rtctl` does.
pub type Result<T> = std::result::Result<T, CtlError>;

/// Printed when the server wants `AUTH` and no token was found anywhere.
pub const AUTH_REQUIRED: &str = "authentication required: pass --token or build the image locally so target/rtedge/dev.token exists";

/// Why a command failed.
#[derive(Debug)]
pub enum CtlError {
    /// The server answered with an error reply; the text is the whole reply
    /// (`ERR ...`, `WRONGPASS ...`). Its code and text decide the exit code.
    Server(String),
    /// The server wants `AUTH` and we had no token to give it.
    AuthRequired,
    /// No connection: refused, timed out, unreachable, unresolvable.
    Connect {
        /// `host:port` as the user gave it.
        address: String,
        /// What went wrong, in lower case (`connection refused`).
        reason: String,
    },
    /// The connection broke or went silent after it was made.
    Connection {
        /// `host:port`.
        address: String,
        /// What happened.
        reason: String,
    },
    /// The server sent bytes that are no RESP reply, or a reply of a shape
    /// this command does not expect.
    Protocol(String),
    /// The server answered, but what was asked for does not exist (a
    /// `GET` of an unknown key replies null rather than an error).
    NotFound(String),
    /// A local failure: writing output or the plot file.
    Local(String),
    /// The command line cannot be acted on as given (exit code 2, as
    /// clap's usage errors).
    Usage(String),
    /// The appliance refused the token (`WRONGPASS`): `reply` is its
    /// text, `source` says where the token came from.
    WrongToken {
        /// The server's reply.
        reply: String,
        /// `--token`, `RTEDGE_TOKEN` or the token file's path.
        source: String,
        /// `host:port`.
        address: String,
    },
    /// Standard output was closed (`rtctl watch ... | head -3`): not a
    /// failure, the reader has what it wanted.
    OutputClosed,
}

impl CtlError {
    /// The exit code this error ends `rtctl` with.
    pub fn exit_code(&self) -> u8 {
        match self {
            CtlError::Server(text) => {
                if text.starts_with("WRONGPASS") || text.starts_with("NOAUTH") {
                    4
                } else if text.to_ascii_lowercase().contains("no such") {
                    5
                } else {
                    1
                }
            }
            CtlError::AuthRequired | CtlError::WrongToken { .. } => 4,
            CtlError::Usage(_) => 2,
            CtlError::Connect { .. } | CtlError::Connection { .. } => 3,
            CtlError::NotFound(_) => 5,
            CtlError::Protocol(_) | CtlError::Local(_) => 1,
            CtlError::OutputClosed => 0,
        }
    }

    /// A connection failure, with the reason worded as people say it.
    pub fn connect(address: &str, error: &io::Error) -> CtlError {
        CtlError::Connect { address: address.to_owned(), reason: io_reason(error) }
    }

    /// A failure on an established connection.
    pub fn connection(address: &str, error: &io::Error) -> CtlError {
        CtlError::Connection { address: address.to_owned(), reason: io_reason(error) }
    }
}

/// `connection refused`, `timed out`, ... rather than Rust's `Debug` forms.
fn io_reason(error: &io::Error) -> String {
    match error.kind() {
        io::ErrorKind::ConnectionRefused => "connection refused".into(),
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => "timed out".into(),
        io::ErrorKind::HostUnreachable => "host unreachable".into(),
        io::ErrorKind::NetworkUnreachable => "network unreachable".into(),
        io::ErrorKind::ConnectionReset => "reset by the server".into(),
        io::ErrorKind::UnexpectedEof | io::ErrorKind::BrokenPipe => "closed by the server".into(),
        _ => {
            // Drop the " (os error N)" tail; the words are enough.
            let text = error.to_string();
            let text = text.split(" (os error").next().unwrap_or(&text);
            text.to_lowercase()
        }
    }
}

impl fmt::Display for CtlError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CtlError::Server(text) => formatter.write_str(text),
            CtlError::AuthRequired => formatter.write_str(AUTH_REQUIRED),
            CtlError::Connect { address, reason } => {
                write!(formatter, "cannot connect to {address}: {reason}")
            }
            CtlError::Connection { address, reason } => {
                write!(formatter, "connection to {address}: {reason}")
            }
            CtlError::Protocol(text) => write!(formatter, "bad reply from the server: {text}"),
            CtlError::NotFound(text) | CtlError::Local(text) | CtlError::Usage(text) => formatter.write_str(text),
            CtlError::WrongToken { reply, source, address } => write!(
                formatter,
                "{}: the token {source} does not match the appliance on {address}; \
                 that appliance was built with another token (another checkout or image, or rebuilt since it booted): \
                 `rtctl ps` shows which instance owns the port; pass --token, or restart it (`rtctl stop NAME`, `make start`)",
                reply.trim_end_matches('.')
            ),
            CtlError::OutputClosed => formatter.write_str("standard output closed"),
        }
    }
}

impl CtlError {
    /// The error as `--json` prints it: `{"error": text, "exit_code": N}`.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({"error": self.to_string(), "exit_code": self.exit_code()})
    }
}

impl From<io::Error> for CtlError {
    /// Errors writing to standard output.
    fn from(error: io::Error) -> CtlError {
        if error.kind() == io::ErrorKind::BrokenPipe {
            CtlError::OutputClosed
        } else {
            CtlError::Local(format!("cannot write output: {error}"))
        }
    }
}

impl From<rtedge_proto::ProtocolError> for CtlError {
    fn from(error: rtedge_proto::ProtocolError) -> CtlError {
        CtlError::Protocol(error.message().to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_the_reply_text() {
        assert_eq!(CtlError::Server("ERR syntax error".into()).exit_code(), 1);
        assert_eq!(CtlError::Server("WRONGPASS invalid username-password pair".into()).exit_code(), 4);
        assert_eq!(CtlError::Server("NOAUTH Authentication required.".into()).exit_code(), 4);
        assert_eq!(CtlError::Server("ERR no such thread 'x'".into()).exit_code(), 5);
        assert_eq!(CtlError::AuthRequired.exit_code(), 4);
        let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
        let error = CtlError::connect("127.0.0.1:1", &refused);
        assert_eq!(error.exit_code(), 3);
        assert_eq!(error.to_string(), "cannot connect to 127.0.0.1:1: connection refused");
        assert_eq!(CtlError::Local("cannot write x".into()).exit_code(), 1);
    }
}
