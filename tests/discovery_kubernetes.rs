//! End-to-end tests of the kubernetes registry (in progress).
