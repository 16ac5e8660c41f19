//! End-to-end tests of the consul registry (in progress).
