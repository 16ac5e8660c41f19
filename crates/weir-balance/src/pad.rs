//! A value alone on its cache line(s): a counter that every pick writes must not share a line
//! with the read-only data every pick reads (a write by one thread would evict that data from
//! the other threads' caches).

use std::ops::Deref;

/// `T` aligned (and so padded) to 128 bytes: two 64-byte lines, since some CPUs prefetch lines
/// in pairs.
#[derive(Debug, Default)]
#[repr(align(128))]
pub(crate) struct Padded<T>(pub(crate) T);

impl<T> Deref for Padded<T> {
    type Target = T;

    #[inline]
    fn deref(&self) -> &T {
        &self.0
    }
}
