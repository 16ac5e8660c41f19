//! dns_server (in progress).
