//! Bounded label values: a [`Folder`] passes the first `cap` distinct values
//! through and maps every later new one to [`OTHER`], so a server that churns
//! through threads (or ports, or process names) cannot grow the number of
//! series without bound.
use std::collections::HashSet;

/// The value that stands for every value beyond the cap.
pub const OTHER: &str = "other";

/// Remembers up to `cap` distinct label values.
#[derive(Debug, Clone)]
pub struct Folder {
    cap: usize,
    known: HashSet<String>,
}

impl Folder {
    pub fn new(cap: usize) -> Folder {
        Folder {
            cap,
            known: HashSet::new(),
        }
    }

    /// `value` itself if it was seen before or there is still room for it,
    /// else [`OTHER`]. A value equal to [`OTHER`] passes through without
    /// taking a slot (it already names the folded series).
    pub fn fold(&mut self, value: &str) -> String {
        if value == OTHER || self.known.contains(value) {
            return value.to_string();
        }
        if self.known.len() < self.cap {
            self.known.insert(value.to_string());
            return value.to_string();
        }
        OTHER.to_string()
    }

    /// Distinct values kept so far (never more than the cap).
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.known.len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.known.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_up_to_the_cap_pass_through_and_stay_stable() {
        let mut f = Folder::new(2);
        assert!(f.is_empty());
        assert_eq!(f.fold("a"), "a");
        assert_eq!(f.fold("b"), "b");
        assert_eq!(f.fold("c"), OTHER);
        assert_eq!(f.fold("d"), OTHER);
        // Known values keep their own series after the cap is reached.
        assert_eq!(f.fold("a"), "a");
        assert_eq!(f.fold("b"), "b");
        assert_eq!(f.len(), 2);
    }

    #[test]
    fn other_passes_through_without_taking_a_slot() {
        let mut f = Folder::new(1);
        assert_eq!(f.fold(OTHER), OTHER);
        assert_eq!(f.fold("x"), "x");
        assert_eq!(f.fold("y"), OTHER);
        assert_eq!(f.len(), 1);
    }

    #[test]
    fn a_zero_cap_folds_everything() {
        let mut f = Folder::new(0);
        assert_eq!(f.fold("a"), OTHER);
        assert_eq!(f.fold(""), OTHER);
        assert!(f.is_empty());
    }

    #[test]
    fn the_empty_value_is_a_value_like_any_other() {
        let mut f = Folder::new(1);
        assert_eq!(f.fold(""), "");
        assert_eq!(f.fold("a"), OTHER);
    }
}
