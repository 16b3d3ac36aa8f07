//! Where the channels of an int8 activation tensor sit in memory.

use tract_core::internal::*;

/// The memory order of an int8 activation tensor of one image.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Layout {
    /// `[.., channels, height, width]`: one plane per channel, as the ONNX graph has it.
    #[default]
    ChannelsFirst,
    /// `[.., height, width, channels]`: the channels of one position side by side. The rewrite
    /// uses it between a pointwise and a depthwise convolution, where the depthwise kernel
    /// convolves the channels of a position in one vector.
    ChannelsLast,
}

impl Layout {
    /// The shape of a tensor of channels-first `shape` (channels third from the end) in this
    /// layout.
    pub fn shape(self, shape: &[usize]) -> TVec<usize> {
        let mut shape: TVec<usize> = shape.into();
        if self == Layout::ChannelsLast && shape.len() >= 3 {
            let channel_axis = shape.len() - 3;
            let channels = shape.remove(channel_axis);
            shape.push(channels);
        }
        shape
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_last_moves_the_channel_axis_to_the_end() {
        assert_eq!(
            &*Layout::ChannelsLast.shape(&[1, 96, 30, 40]),
            &[1, 30, 40, 96]
        );
        assert_eq!(
            &*Layout::ChannelsFirst.shape(&[1, 96, 30, 40]),
            &[1, 96, 30, 40]
        );
        assert_eq!(&*Layout::ChannelsLast.shape(&[96, 1]), &[96, 1]);
    }
}
