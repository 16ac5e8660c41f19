//! fake_nacos (in progress).
