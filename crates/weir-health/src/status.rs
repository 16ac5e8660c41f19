//! Status lists as bitsets, and the classification of an HTTP status into a report.

use crate::state::Report;

/// A set of HTTP statuses 200..599 (other values are never members).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct StatusSet([u64; 7]);

impl StatusSet {
    pub fn new(statuses: &[u16]) -> Self {
        let mut s = StatusSet::default();
        for &st in statuses {
            if (200..600).contains(&st) {
                let i = (st - 200) as usize;
                s.0[i / 64] |= 1 << (i % 64);
            }
        }
        s
    }

    #[inline]
    pub fn contains(&self, status: u16) -> bool {
        if !(200..600).contains(&status) {
            return false;
        }
        let i = (status - 200) as usize;
        self.0[i / 64] & (1 << (i % 64)) != 0
    }
}

/// `healthy.http_statuses` and `unhealthy.http_statuses` of a check.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct StatusClasses {
    pub healthy: StatusSet,
    pub unhealthy: StatusSet,
}

impl StatusClasses {
    /// The healthy list is checked first; a status in neither list reports nothing.
    #[inline]
    pub fn classify(&self, status: u16) -> Option<Report> {
        if self.healthy.contains(status) {
            Some(Report::Success)
        } else if self.unhealthy.contains(status) {
            Some(Report::HttpFailure)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn healthy_list_wins_and_unlisted_statuses_are_ignored() {
        let c = StatusClasses {
            healthy: StatusSet::new(&[200, 302, 500]),
            unhealthy: StatusSet::new(&[500, 503, 599]),
        };
        assert_eq!(c.classify(200), Some(Report::Success));
        assert_eq!(c.classify(500), Some(Report::Success));
        assert_eq!(c.classify(503), Some(Report::HttpFailure));
        assert_eq!(c.classify(599), Some(Report::HttpFailure));
        assert_eq!(c.classify(301), None);
        assert_eq!(c.classify(418), None);
        assert_eq!(c.classify(100), None);
        assert_eq!(c.classify(600), None);
    }
}
