//! fake_consul (in progress).
