//! fake_kubernetes (in progress).
