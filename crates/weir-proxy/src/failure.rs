//! Classification of attempt failures (docs/data-path.md).

use pingora::prelude::*;

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
