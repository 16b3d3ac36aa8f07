//! Deterministic pseudo-random values for the int8 op tests.

/// A xorshift generator.
pub struct TestRng(pub u64);

impl TestRng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub fn i8s(&mut self, n: usize) -> Vec<i8> {
        (0..n).map(|_| self.next() as i8).collect()
    }

    /// Uniform in `[low, high)`.
    pub fn f32_in(&mut self, low: f32, high: f32) -> f32 {
        low + (high - low) * (self.next() % 1_000_000) as f32 / 1e6
    }

    /// Counts the places where `ours` and `reference` differ, asserting they never differ by
    /// more than one step.
    pub fn steps_apart(ours: &[i8], reference: &[i8]) -> usize {
        assert_eq!(ours.len(), reference.len());
        ours.iter()
            .zip(reference)
            .filter(|(a, b)| {
                let gap = (i32::from(**a) - i32::from(**b)).abs();
                assert!(gap <= 1, "{a} against {b}");
                gap == 1
            })
            .count()
    }
}
