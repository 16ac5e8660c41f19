//! End-to-end tests of the dns registry (in progress).
