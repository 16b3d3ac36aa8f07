//! When a frame is classified: on request (Enter, SIGUSR1 from a foot switch), automatically once
//! the picture is steady, or every frame (replays); always rate-limited.

use std::time::{Duration, Instant};

use image::imageops::FilterType;
use image::RgbImage;
use serde::{Deserialize, Serialize};

/// Thumbnail size used to measure motion between frames.
pub const MOTION_THUMB: (u32, u32) = (32, 24);

/// How frames are picked for classification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TriggerMode {
    /// When the user asks: Enter on the terminal or SIGUSR1.
    Manual,
    /// When the picture has been steady for `steady_frames` frames; again only after motion.
    Auto,
    /// Every frame (replays, tests); not rate-limited.
    Every,
}

/// The `[trigger]` table of the config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TriggerSettings {
    pub mode: TriggerMode,
    /// Consecutive still frames before an automatic trigger.
    pub steady_frames: u32,
    /// Mean absolute grey-level change between thumbnails above which the view is moving.
    pub motion_threshold: f32,
    /// Minimum time between two classifications in `manual` and `auto` modes.
    pub min_interval_ms: u64,
}

impl Default for TriggerSettings {
    fn default() -> Self {
        TriggerSettings {
            mode: TriggerMode::Manual,
            steady_frames: 5,
            motion_threshold: 3.0,
            min_interval_ms: 2000,
        }
    }
}

/// A frame reduced to a small grey thumbnail for motion measurement.
pub fn motion_thumbnail(image: &RgbImage) -> Vec<f32> {
    let small =
        image::imageops::resize(image, MOTION_THUMB.0, MOTION_THUMB.1, FilterType::Triangle);
    small
        .pixels()
        .map(|p| 0.299 * f32::from(p.0[0]) + 0.587 * f32::from(p.0[1]) + 0.114 * f32::from(p.0[2]))
        .collect()
}

/// Mean absolute difference of two thumbnails.
pub fn motion(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).sum::<f32>() / a.len().max(1) as f32
}

/// The trigger's state across frames.
#[derive(Debug)]
pub struct Trigger {
    settings: TriggerSettings,
    previous: Option<Vec<f32>>,
    steady: u32,
    armed: bool,
    last_fired: Option<Instant>,
}

impl Trigger {
    /// A trigger with no history.
    pub fn new(settings: TriggerSettings) -> Trigger {
        Trigger {
            settings,
            previous: None,
            steady: 0,
            armed: true,
            last_fired: None,
        }
    }

    /// The mode in use.
    pub fn mode(&self) -> TriggerMode {
        self.settings.mode
    }

    fn rate_allows(&self, now: Instant) -> bool {
        self.last_fired.is_none_or(|last| {
            now.saturating_duration_since(last)
                >= Duration::from_millis(self.settings.min_interval_ms)
        })
    }

    /// Feeds one frame's thumbnail; `requested` says the user asked since the last frame.
    /// Returns whether this frame should go to the quality gate and the ensemble.
    pub fn wants(&mut self, thumbnail: Vec<f32>, now: Instant, requested: bool) -> bool {
        let moving = self
            .previous
            .as_ref()
            .is_none_or(|p| motion(p, &thumbnail) > self.settings.motion_threshold);
        if moving {
            self.steady = 0;
            self.armed = true;
        } else {
            self.steady += 1;
        }
        self.previous = Some(thumbnail);
        let rate_ok = self.rate_allows(now);
        match self.settings.mode {
            TriggerMode::Manual => {
                if requested && !rate_ok {
                    log::info!(
                        "trigger ignored: less than {} ms since the last one",
                        self.settings.min_interval_ms
                    );
                }
                requested && rate_ok
            }
            TriggerMode::Auto => {
                self.armed && self.steady >= self.settings.steady_frames && rate_ok
            }
            TriggerMode::Every => true,
        }
    }

    /// Records that the wanted frame was classified: starts the rate limit and, in auto mode,
    /// waits for motion before the next trigger.
    pub fn fired(&mut self, now: Instant) {
        self.last_fired = Some(now);
        self.armed = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(mode: TriggerMode, min_interval_ms: u64) -> TriggerSettings {
        TriggerSettings {
            mode,
            steady_frames: 3,
            motion_threshold: 2.0,
            min_interval_ms,
        }
    }

    fn flat(level: f32) -> Vec<f32> {
        vec![level; 8]
    }

    #[test]
    fn auto_fires_once_per_steady_view_and_rearms_on_motion() {
        let t0 = Instant::now();
        let mut trigger = Trigger::new(settings(TriggerMode::Auto, 0));
        let frames = [10.0, 10.5, 11.0, 10.8, 10.9, 10.7, 50.0, 50.0, 50.0, 50.0];
        let mut fired_at = Vec::new();
        for (i, level) in frames.iter().enumerate() {
            if trigger.wants(flat(*level), t0, false) {
                trigger.fired(t0);
                fired_at.push(i);
            }
        }
        // Frame 0 is motion (no history); frames 1, 2, 3 are the three steady ones -> fire at 3;
        // stays disarmed until the jump at 6; steady again at 7, 8, 9 -> fire at 9.
        assert_eq!(fired_at, vec![3, 9]);
    }

    #[test]
    fn rate_limit_applies_to_manual_and_auto_but_not_every() {
        let t0 = Instant::now();
        let mut every = Trigger::new(settings(TriggerMode::Every, 1000));
        let mut fired = 0;
        for ms in [0, 300, 900, 1000, 1500, 2100] {
            let now = t0 + Duration::from_millis(ms);
            if every.wants(flat(ms as f32), now, false) {
                every.fired(now);
                fired += 1;
            }
        }
        assert_eq!(fired, 6);

        let mut auto = Trigger::new(settings(TriggerMode::Auto, 1000));
        let mut fired_at = Vec::new();
        for (i, level) in [10.0, 10.0, 10.0, 10.0, 50.0, 50.0, 50.0, 50.0, 50.0]
            .iter()
            .enumerate()
        {
            let now = t0 + Duration::from_millis(100 * i as u64);
            if auto.wants(flat(*level), now, false) {
                auto.fired(now);
                fired_at.push(i);
            }
        }
        // Steady at 3 fires; the view moves at 4 and is steady again at 7, but 700 ms is within
        // the 1000 ms limit: the next frame allowed is 3 + 10 = 13, beyond the sequence.
        assert_eq!(fired_at, vec![3]);

        let mut manual = Trigger::new(settings(TriggerMode::Manual, 1000));
        assert!(!manual.wants(flat(1.0), t0, false));
        assert!(manual.wants(flat(1.0), t0, true));
        manual.fired(t0);
        assert!(!manual.wants(flat(1.0), t0 + Duration::from_millis(500), true));
        assert!(manual.wants(flat(1.0), t0 + Duration::from_millis(1200), true));
    }
}
