//! End-to-end tests of the nacos registry (in progress).
