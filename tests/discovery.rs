//! End-to-end tests of service discovery through the proxy (in progress).
