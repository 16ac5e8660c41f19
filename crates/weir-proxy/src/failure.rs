//! Classification of attempt failures (docs/data-path.md).

use crate::retry::Outcome;
use pingora::prelude::*;
use pingora_error::RetryType;

/// Whether the error is a timeout (504 class, `timeouts` health counter).
pub fn is_timeout(e: &Error) -> bool {
    matches!(
        e.etype(),
        ErrorType::ConnectTimedout
            | ErrorType::TLSHandshakeTimedout
            | ErrorType::ReadTimedout
            | ErrorType::WriteTimedout
    )
}

/// A malformed response from the upstream: never retried.
pub fn is_malformed_response(e: &Error) -> bool {
    matches!(
        e.etype(),
        ErrorType::InvalidHTTPHeader
            | ErrorType::H1Error
            | ErrorType::H2Error
            | ErrorType::InvalidH2
    )
}

/// Non-idempotent methods are POST, PATCH and LOCK (NGINX's definition).
pub fn is_idempotent(m: &http::Method) -> bool {
    !(m == http::Method::POST || m == http::Method::PATCH || m.as_str() == "LOCK")
}

/// The outcome of an attempt that failed after its connection was established, before the
/// response header started to be relayed (`error_while_proxy`).
///
/// A rejected certificate (the check after the handshake) is a connect failure. Errors that
/// are neither a write failure nor a malformed response — read errors, the read timeout, and
/// anything else that ends the exchange (an upstream request filter's error included) — count
/// as failures waiting for the response header; `closed` is Pingora's mark of a connection the
/// peer closed or reset (`RetryType::ReusedOnly`, set only on response-header reads).
pub(crate) fn exchange_outcome(e: &Error) -> Outcome {
    let timed_out = is_timeout(e);
    match e.etype() {
        ErrorType::InvalidCert => Outcome::Connect { timed_out },
        _ if is_malformed_response(e) => Outcome::MalformedHeader,
        ErrorType::WriteError | ErrorType::WriteTimedout => Outcome::Write { timed_out },
        _ => Outcome::ReadBeforeHeader {
            timed_out,
            closed: matches!(e.retry, RetryType::ReusedOnly),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(t: ErrorType) -> Box<Error> {
        Error::explain(t, "test")
    }

    #[test]
    fn exchange_failures_are_classified() {
        assert_eq!(
            exchange_outcome(&err(ErrorType::InvalidCert)),
            Outcome::Connect { timed_out: false }
        );
        assert_eq!(
            exchange_outcome(&err(ErrorType::InvalidHTTPHeader)),
            Outcome::MalformedHeader
        );
        assert_eq!(
            exchange_outcome(&err(ErrorType::WriteTimedout)),
            Outcome::Write { timed_out: true }
        );
        assert_eq!(
            exchange_outcome(&err(ErrorType::ReadTimedout)),
            Outcome::ReadBeforeHeader {
                timed_out: true,
                closed: false
            }
        );
        let mut closed = err(ErrorType::ConnectionClosed);
        closed.retry = RetryType::ReusedOnly;
        assert_eq!(
            exchange_outcome(&closed),
            Outcome::ReadBeforeHeader {
                timed_out: false,
                closed: true
            }
        );
    }
}
