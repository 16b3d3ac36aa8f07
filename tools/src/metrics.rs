//! Classification metrics: confusion matrix, accuracy, balanced accuracy (mean per-class recall,
//! the ISIC 2018 metric), top-k accuracy.

/// A `classes x classes` confusion matrix; rows are true classes, columns predictions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Confusion {
    pub counts: Vec<Vec<usize>>,
}

impl Confusion {
    /// An empty matrix.
    pub fn new(classes: usize) -> Confusion {
        Confusion {
            counts: vec![vec![0; classes]; classes],
        }
    }

    /// Counts one prediction.
    pub fn add(&mut self, truth: usize, predicted: usize) {
        self.counts[truth][predicted] += 1;
    }

    /// Samples counted.
    pub fn total(&self) -> usize {
        self.counts.iter().flatten().sum()
    }

    /// Share of samples predicted correctly.
    pub fn accuracy(&self) -> f64 {
        let correct: usize = (0..self.counts.len()).map(|c| self.counts[c][c]).sum();
        ratio(correct, self.total())
    }

    /// Recall of each class (`None` for a class with no sample).
    pub fn recalls(&self) -> Vec<Option<f64>> {
        self.counts
            .iter()
            .enumerate()
            .map(|(c, row)| {
                let n: usize = row.iter().sum();
                (n > 0).then(|| ratio(row[c], n))
            })
            .collect()
    }

    /// Precision of each class (`None` for a class never predicted).
    pub fn precisions(&self) -> Vec<Option<f64>> {
        (0..self.counts.len())
            .map(|c| {
                let n: usize = self.counts.iter().map(|row| row[c]).sum();
                (n > 0).then(|| ratio(self.counts[c][c], n))
            })
            .collect()
    }

    /// Mean recall over the classes present.
    pub fn balanced_accuracy(&self) -> f64 {
        let recalls: Vec<f64> = self.recalls().into_iter().flatten().collect();
        if recalls.is_empty() {
            0.0
        } else {
            recalls.iter().sum::<f64>() / recalls.len() as f64
        }
    }
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

/// Index of the largest value (the first on ties).
pub fn argmax(values: &[f32]) -> usize {
    values
        .iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |best, (i, &v)| {
            if v > best.1 {
                (i, v)
            } else {
                best
            }
        })
        .0
}

/// Whether `truth` is among the `k` largest of `scores`.
pub fn in_top_k(scores: &[f32], truth: usize, k: usize) -> bool {
    let target = scores[truth];
    let above = scores
        .iter()
        .enumerate()
        .filter(|&(i, &s)| s > target || (s == target && i < truth))
        .count();
    above < k
}

/// Balanced accuracy of always predicting the most frequent class in `labels`: `1 / classes
/// present`.
pub fn majority_baseline_balanced_accuracy(labels: &[usize], classes: usize) -> f64 {
    let present = (0..classes).filter(|c| labels.contains(c)).count();
    ratio(1, present)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn balanced_accuracy_is_the_mean_recall() {
        let mut m = Confusion::new(3);
        for _ in 0..8 {
            m.add(0, 0);
        }
        m.add(0, 1);
        m.add(0, 1);
        m.add(1, 1);
        m.add(2, 0);
        // Recalls 0.8, 1.0, 0.0.
        assert!((m.balanced_accuracy() - 0.6).abs() < 1e-12);
        assert!((m.accuracy() - 9.0 / 12.0).abs() < 1e-12);
        assert_eq!(m.precisions()[1], Some(1.0 / 3.0));
    }

    #[test]
    fn top_k_counts_ties_before_the_truth() {
        let s = [0.1, 0.5, 0.3, 0.1];
        assert!(in_top_k(&s, 1, 1));
        assert!(!in_top_k(&s, 2, 1));
        assert!(in_top_k(&s, 2, 2));
        assert!(!in_top_k(&s, 3, 3));
        assert!(in_top_k(&s, 0, 3));
        assert_eq!(argmax(&s), 1);
    }
}
